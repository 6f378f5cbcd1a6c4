"""The plugin contracts: value types, threshold semantics, and Protocol conformance.

The classes at the bottom are the smallest plugins that satisfy each
contract. The ``_: type[Router] = MinimalRouter`` lines are checked by mypy
(``MYPYPATH=build/typecheck mypy --strict tests/unit/test_contracts.py``), the
same line every plugin module ends with; the tests check them at run time.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
import structlog

from flaggerpy import kube
from flaggerpy.analysis import (
    MetricKind,
    MetricsProvider,
    MetricTemplateModel,
    Observer,
    ThresholdRange,
    evaluate,
    format_go_float,
)
from flaggerpy.errors import NoValuesFoundError
from flaggerpy.models.canary import Canary, CanaryThresholdRange
from flaggerpy.notifying import Field, Message, Notifier, Severity
from flaggerpy.routing import KubernetesRouter, ProviderContext, Router, RouterFactory, Weights
from flaggerpy.settings import Settings

# --- Weights -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("primary", "canary"),
    [pytest.param(100, 0, id="start"), pytest.param(90, 10, id="step"),
     pytest.param(0, 100, id="all-canary"), pytest.param(50, 50, id="half")],
)
def test_weights_that_add_up_to_100(primary: int, canary: int) -> None:
    weights = Weights(primary, canary)
    assert (weights.primary, weights.canary, weights.mirrored) == (primary, canary, False)


@pytest.mark.parametrize(
    ("primary", "canary", "error"),
    [
        pytest.param(90, 20, ValueError, id="over-100"),
        pytest.param(50, 40, ValueError, id="under-100"),
        pytest.param(0, 0, ValueError, id="zero-zero"),
        pytest.param(110, -10, ValueError, id="negative"),
        pytest.param(-10, 110, ValueError, id="over-range"),
        pytest.param(90.0, 10, TypeError, id="float"),
        pytest.param(True, 99, TypeError, id="bool"),
        pytest.param("90", "10", TypeError, id="str"),
    ],
)
def test_impossible_weights_fail(primary: Any, canary: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        Weights(primary, canary)


def test_weights_constructors_and_value_semantics() -> None:
    assert Weights.to_canary(30) == Weights(70, 30)
    assert Weights.all_primary() == Weights(100, 0)
    assert Weights.all_primary(mirrored=True) == Weights(100, 0, mirrored=True)
    assert Weights.all_canary() == Weights(0, 100)
    assert Weights(90, 10) != Weights(90, 10, mirrored=True)
    assert {Weights(90, 10), Weights(90, 10)} == {Weights(90, 10)}
    assert str(Weights(100, 0, mirrored=True)) == "100/0 mirrored"
    with pytest.raises(AttributeError):
        Weights(90, 10).canary = 20  # type: ignore[misc]
    with pytest.raises(TypeError):
        Weights(100, 0, mirrored=1)  # type: ignore[arg-type]


# --- thresholds --------------------------------------------------------------------------------

SUCCESS = MetricKind.REQUEST_SUCCESS_RATE
DURATION = MetricKind.REQUEST_DURATION
CUSTOM = MetricKind.CUSTOM


@pytest.mark.parametrize(
    ("value", "low", "high", "passes"),
    [
        pytest.param(99.0, 99, None, True, id="min-inclusive"),
        pytest.param(98.99, 99, None, False, id="below-min"),
        pytest.param(500.0, None, 500, True, id="max-inclusive"),
        pytest.param(500.1, None, 500, False, id="above-max"),
        pytest.param(5.0, 1, 10, True, id="inside"),
        pytest.param(0.0, 1, 10, False, id="under-both"),
        pytest.param(-1e9, None, None, True, id="empty-range-passes-all"),
    ],
)
def test_threshold_range_is_inclusive(value: float, low: float | None, high: float | None,
                                      passes: bool) -> None:
    breach = evaluate(value, kind=CUSTOM, threshold_range=ThresholdRange(min=low, max=high))
    assert (breach is None) is passes


def test_range_reports_which_bound_failed() -> None:
    low = evaluate(95.0, kind=SUCCESS, threshold_range=ThresholdRange(min=99, max=100))
    high = evaluate(101.0, kind=SUCCESS, threshold_range=ThresholdRange(min=99, max=100))
    assert low is not None
    assert (low.bound, low.limit, low.operator) == ("min", 99.0, "<")
    assert high is not None
    assert (high.bound, high.limit, high.operator) == ("max", 100.0, ">")


def test_the_canary_models_threshold_range_is_accepted() -> None:
    breach = evaluate(98.0, kind=SUCCESS, threshold_range=CanaryThresholdRange(min=99))
    assert breach is not None
    assert breach.bound == "min"


@pytest.mark.parametrize(
    ("kind", "value", "threshold", "passes"),
    [
        # success rate: `threshold > val` fails, so the threshold is a minimum
        pytest.param(SUCCESS, 99.0, 99, True, id="rate-equal"),
        pytest.param(SUCCESS, 98.0, 99, False, id="rate-below"),
        pytest.param(SUCCESS, 0.0, None, True, id="rate-unset"),
        # duration and custom: `val > threshold` fails, so it is a maximum
        pytest.param(DURATION, 500.0, 500, True, id="duration-equal"),
        pytest.param(DURATION, 501.0, 500, False, id="duration-above"),
        pytest.param(CUSTOM, 1.0, 1, True, id="custom-equal"),
        pytest.param(CUSTOM, 1.01, 1, False, id="custom-above"),
        # Go's zero value: an unset threshold on a custom metric fails any positive value
        pytest.param(CUSTOM, 0.5, None, False, id="custom-unset"),
        pytest.param(CUSTOM, 0.0, None, True, id="custom-unset-zero"),
    ],
)
def test_deprecated_threshold(kind: MetricKind, value: float, threshold: float | None,
                              passes: bool) -> None:
    assert (evaluate(value, kind=kind, threshold=threshold) is None) is passes


def test_range_wins_over_deprecated_threshold() -> None:
    assert evaluate(5.0, kind=CUSTOM, threshold=1, threshold_range=ThresholdRange(max=10)) is None


def test_durations_compare_in_whole_milliseconds() -> None:
    # 500.9 ms is 500 ms to Flagger (time.Duration truncation), and so is a 500.7 limit.
    assert evaluate(500.9, kind=DURATION, threshold_range=ThresholdRange(max=500)) is None
    assert evaluate(timedelta(milliseconds=500.9), kind=DURATION,
                    threshold_range=ThresholdRange(max=500)) is None
    breach = evaluate(timedelta(milliseconds=612), kind=DURATION,
                      threshold_range=ThresholdRange(max=500.7))
    assert breach is not None
    assert (breach.value, breach.limit) == (612.0, 500.0)
    # custom metrics keep their fractions
    assert evaluate(500.9, kind=CUSTOM, threshold_range=ThresholdRange(max=500)) is not None


def test_nan_is_no_values_found_not_a_pass() -> None:
    with pytest.raises(NoValuesFoundError):
        evaluate(math.nan, kind=SUCCESS, threshold_range=ThresholdRange(min=99))


@pytest.mark.parametrize(
    ("kind", "value", "limit_range", "text"),
    [
        pytest.param(SUCCESS, 95.123, ThresholdRange(min=99), "success rate 95.12% < 99%",
                     id="rate"),
        pytest.param(DURATION, 612.0, ThresholdRange(max=500), "request duration 612ms > 500ms",
                     id="duration"),
        pytest.param(DURATION, 1500.0, ThresholdRange(max=1000), "request duration 1.5s > 1s",
                     id="duration-seconds"),
        pytest.param(CUSTOM, 1.5, ThresholdRange(max=1), "error-rate 1.50 > 1", id="custom"),
        pytest.param(CUSTOM, 0.25, ThresholdRange(min=0.5), "error-rate 0.25 < 0.5",
                     id="custom-min"),
    ],
)
def test_breach_reads_like_flaggers_event(kind: MetricKind, value: float,
                                          limit_range: ThresholdRange, text: str) -> None:
    breach = evaluate(value, kind=kind, threshold_range=limit_range)
    assert breach is not None
    assert breach.describe("error-rate") == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(99.0, "99"), (99.5, "99.5"), (0.001, "0.001"), (0.00001, "1e-05"), (123456.0, "123456"),
     (1e6, "1e+06"), (1234567.0, "1.234567e+06"), (-2.5, "-2.5"), (0.0, "0")],
)
def test_go_float_formatting(value: float, text: str) -> None:
    assert format_go_float(value) == text


def test_metric_kind_of_a_metric_name() -> None:
    assert MetricKind.of("request-success-rate") is SUCCESS
    assert MetricKind.of("request-duration") is DURATION
    assert MetricKind.of("error-rate") is CUSTOM


def test_metric_template_model_is_read_only() -> None:
    variables = {"reporter": "destination"}
    model = make_model(variables=variables)
    variables["reporter"] = "source"
    assert model.variables["reporter"] == "destination"
    with pytest.raises(TypeError):
        model.variables["x"] = "y"  # type: ignore[index]
    assert hash(model) == hash(make_model())


# --- notifications -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("threshold", "sent"),
    [
        pytest.param(Severity.INFO, {"info", "warn", "error"}, id="info"),
        pytest.param(Severity.WARN, {"warn", "error"}, id="warn"),
        pytest.param(Severity.ERROR, {"error"}, id="error"),
    ],
)
def test_severity_filter(threshold: Severity, sent: set[str]) -> None:
    assert {str(s) for s in Severity if threshold.admits(s)} == sent


def test_severity_parse() -> None:
    assert Severity.parse("warn") is Severity.WARN
    assert Severity.parse("ERROR") is Severity.ERROR
    assert Severity.parse("") is Severity.INFO  # Flagger's docs; its code sent nothing
    assert Severity.parse(None) is Severity.INFO
    with pytest.raises(ValueError, match="critical"):
        Severity.parse("critical")


def test_message() -> None:
    message = Message(workload="podinfo", namespace="test", text="Canary failed",
                      fields=(Field("Cluster", "prod"),), severity=Severity.ERROR)
    assert message.subject == "podinfo.test"
    assert Message(workload="a", namespace="b", text="t").severity is Severity.INFO
    assert Message(workload="a", namespace="b", text="t").fields == ()


# --- Protocol conformance ----------------------------------------------------------------------


class MinimalRouter:
    def __init__(self, *, ctx: ProviderContext, variant: str = "") -> None:
        self.ctx = ctx
        self.variant = variant
        self.weights = Weights.all_primary()

    async def reconcile(self, canary: Canary) -> None:
        return None

    async def set_routes(self, canary: Canary, weights: Weights) -> None:
        self.weights = weights

    async def get_routes(self, canary: Canary) -> Weights:
        return self.weights

    async def finalize(self, canary: Canary) -> None:
        return None


class MinimalKubernetesRouter:
    async def initialize(self, canary: Canary) -> None:
        return None

    async def reconcile(self, canary: Canary) -> None:
        return None

    async def finalize(self, canary: Canary) -> None:
        return None


class MinimalProvider:
    async def run_query(self, query: str) -> float:
        return 1.0

    async def is_online(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


class MinimalObserver:
    async def get_request_success_rate(self, model: MetricTemplateModel) -> float:
        return 100.0

    async def get_request_duration(self, model: MetricTemplateModel) -> timedelta:
        return timedelta(milliseconds=12)


class MinimalNotifier:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def post(self, message: Message) -> None:
        self.sent.append(message)


# What every plugin module ends with: mypy checks the full signatures here.
_router: type[Router] = MinimalRouter
_kubernetes_router: type[KubernetesRouter] = MinimalKubernetesRouter
_provider: type[MetricsProvider] = MinimalProvider
_observer: type[Observer] = MinimalObserver
_notifier: type[Notifier] = MinimalNotifier
_factory: RouterFactory = MinimalRouter


class MissingFinalize:
    async def reconcile(self, canary: Canary) -> None:
        return None

    async def set_routes(self, canary: Canary, weights: Weights) -> None:
        return None

    async def get_routes(self, canary: Canary) -> Weights:
        return Weights.all_primary()


def make_context() -> ProviderContext:
    return ProviderContext(store=kube.ObjectStore(None),  # no I/O in these tests
                           settings=Settings(), log=structlog.get_logger("test"))


def make_model(**overrides: Any) -> MetricTemplateModel:
    values: dict[str, Any] = dict(name="podinfo", namespace="test", target="podinfo",
                                  service="podinfo", ingress="podinfo", route="podinfo",
                                  interval="1m")
    values.update(overrides)
    return MetricTemplateModel(**values)


def test_minimal_plugins_satisfy_their_protocols_at_run_time() -> None:
    assert isinstance(MinimalRouter(ctx=make_context()), Router)
    assert isinstance(MinimalKubernetesRouter(), KubernetesRouter)
    assert isinstance(MinimalProvider(), MetricsProvider)
    assert isinstance(MinimalObserver(), Observer)
    assert isinstance(MinimalNotifier(), Notifier)


def test_a_missing_method_is_caught_at_load_time() -> None:
    assert not isinstance(MissingFinalize(), Router)
    assert not isinstance(MinimalProvider(), Observer)


async def test_a_router_class_is_its_own_factory() -> None:
    factory: RouterFactory = MinimalRouter
    router = factory(ctx=make_context(), variant="v1beta1")
    canary = Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "analysis": {"interval": "1m", "threshold": 5, "stepWeight": 10}},
    })
    await router.set_routes(canary, Weights.to_canary(10))
    assert await router.get_routes(canary) == Weights(90, 10)


async def test_minimal_plugins_run() -> None:
    notifier = MinimalNotifier()
    await notifier.post(Message(workload="podinfo", namespace="test", text="hello"))
    assert notifier.sent[0].text == "hello"
    observer = MinimalObserver()
    assert await observer.get_request_duration(make_model()) == timedelta(milliseconds=12)


def test_provider_context() -> None:
    ctx = make_context()
    assert ctx.routing_store is ctx.store
    assert ctx.set_owner_refs is True
    remote = kube.ObjectStore(None)
    other = ProviderContext(store=ctx.store, settings=ctx.settings, log=ctx.log,
                            mesh_store=remote, set_owner_refs=False)
    assert other.routing_store is remote
    assert other.store is ctx.store
    with pytest.raises(TypeError):
        ProviderContext(ctx.store, Settings(), ctx.log)  # type: ignore[misc]
