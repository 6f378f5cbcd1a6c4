"""The engine reads what a router declares, never its provider name.

Tiny in-test routers stand in for third-party ones: a mesh router that imposes its observer on
every canary, a router whose objects must exist before the workload, a switch-only router. They
are registered in-process, as a plugin package's entry point would register them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

import pytest
import structlog

from flaggerpy import plugins
from flaggerpy.analysis import MetricTemplateModel
from flaggerpy.canary import lifecycle as lifecycle_module
from flaggerpy.canary.metrics_analysis import AnalysisOutcome, MetricsAnalyzer
from flaggerpy.canary.workloads import WorkloadMetadata
from flaggerpy.models import Canary
from flaggerpy.routing import Capabilities, Traffic, Weights
from flaggerpy.settings import Settings
from flaggerpy.telemetry import Recorder


def make_canary(**spec: Any) -> Canary:
    body: dict[str, Any] = {
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "service": {"port": 9898},
        "analysis": {"interval": "10s", "threshold": 5, "stepWeight": 10},
    }
    body.update(spec)
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test", "uid": "u-1"}, "spec": body,
    })


class StubRouter:
    """Routes nothing; subclasses declare capabilities."""

    def __init__(self, *, ctx: Any, variant: str = "") -> None:
        self.ctx = ctx

    async def reconcile(self, canary: Canary) -> None:
        """Nothing to reconcile."""

    async def set_routes(self, canary: Canary, weights: Weights) -> None:
        """Nothing to route."""

    async def get_routes(self, canary: Canary) -> Weights:
        return Weights.all_primary()

    async def finalize(self, canary: Canary) -> None:
        """Nothing to revert."""


# -- the mesh's observer ----------------------------------------------------------------------


class ImposingMeshRouter(StubRouter):
    """A mesh whose proxies measure every canary (Flagger's Linkerd)."""

    capabilities: ClassVar[Capabilities] = Capabilities(observer="meshmetrics",
                                                        observer_for_every_canary=True)


class NullProvider:
    """The builtin Prometheus client; the recording observer never asks it anything."""

    async def run_query(self, query: str) -> float:
        raise AssertionError("not used")

    async def is_online(self) -> bool:
        return True

    async def aclose(self) -> None:
        """Nothing to close."""


def analyzer_for(mesh_provider: str, asked: list[str]) -> MetricsAnalyzer:
    """An analyzer whose observers report which one was asked, with the in-test mesh router."""

    def observer(name: str) -> Any:
        class Recording:
            def __init__(self, *, client: Any, render: Any, variant: str) -> None:
                pass

            async def get_request_success_rate(self, model: MetricTemplateModel) -> float:
                asked.append(name)
                return 100.0

            async def get_request_duration(self, model: MetricTemplateModel) -> timedelta:
                asked.append(name)
                return timedelta(milliseconds=1)

        return Recording

    observers: plugins.Registry[plugins.Factory] = plugins.Registry("test.observers")
    for name in ("meshmetrics", "nginx"):
        observers.register(name, observer(name))
    metrics: plugins.Registry[plugins.Factory] = plugins.Registry("test.metrics")
    metrics.register("prometheus", lambda **_: NullProvider())
    routers: plugins.Registry[plugins.Factory] = plugins.Registry("test.routers")
    routers.register("imposing", ImposingMeshRouter)
    return MetricsAnalyzer(
        templates={}.get, secrets={}.get,  # type: ignore[arg-type]
        settings=Settings(mesh={"provider": mesh_provider},
                          metrics={"server": "http://127.0.0.1:1"}),
        telemetry=Recorder(process_collectors=False),
        metrics_registry=metrics, observer_registry=observers, router_registry=routers,
    )


async def test_the_mesh_routers_observer_measures_every_canary() -> None:
    asked: list[str] = []
    analyzer = analyzer_for("imposing", asked)
    metric = {"name": "request-success-rate", "interval": "1m", "thresholdRange": {"min": 99}}
    canary = make_canary(provider="nginx", analysis={"interval": "10s", "threshold": 5,
                                                     "stepWeight": 10, "metrics": [metric]})
    outcome = await analyzer.run(canary)
    await analyzer.aclose()
    assert outcome.passed
    assert asked == ["meshmetrics"]


async def test_a_mesh_without_a_router_lets_the_canarys_provider_choose() -> None:
    asked: list[str] = []
    analyzer = analyzer_for("not-installed", asked)
    metric = {"name": "request-duration", "interval": "1m", "thresholdRange": {"max": 500}}
    canary = make_canary(provider="nginx", analysis={"interval": "10s", "threshold": 5,
                                                     "stepWeight": 10, "metrics": [metric]})
    outcome = await analyzer.run(canary)
    await analyzer.aclose()
    assert outcome.passed
    assert asked == ["nginx"]


# -- the lifecycle ----------------------------------------------------------------------------
# The Lifecycle is driven through its public ``advance`` with recording stand-ins for what it
# calls (the workload controller, the status store, Events, webhooks, metrics, alerts), so the
# order of its calls to the router can be seen; the real objects are covered by the integration
# tests on the local control plane.

NAME, NAMESPACE = "podinfo", "test"


class Store:
    """Takes status patches (merged into the Canary) and refuses anything else."""

    def __init__(self, canary: dict[str, Any]) -> None:
        self.canary = canary

    async def patch(self, resource: Any, *, namespace: str, name: str, patch: dict[str, Any],
                    subresource: str | None = None) -> dict[str, Any]:
        assert subresource == "status", "only the Canary status is written here"
        status = {**(self.canary.get("status") or {}), **patch.get("status", {})}
        self.canary = {**self.canary, "status": status}
        return self.canary

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the store was asked for {name}: no Services without a need")


class Workload:
    """A workload controller that records its calls into the shared journal."""

    def __init__(self, journal: list[str]) -> None:
        self.journal = journal

    async def get_metadata(self, canary: Canary) -> WorkloadMetadata:
        return WorkloadMetadata(label="app", label_value=NAME)

    async def initialize(self, canary: Canary, *, wait_primary_ready: bool) -> None:
        self.journal.append("workload.initialize")

    async def scale_to_zero(self, canary: Canary) -> None:
        self.journal.append("workload.scale_to_zero")

    async def is_primary_ready(self, canary: Canary) -> None:
        """Ready."""

    async def is_canary_ready(self, canary: Canary) -> None:
        """Ready."""

    async def has_target_changed(self, canary: Canary) -> bool:
        return False

    async def have_dependencies_changed(self, canary: Canary) -> bool:
        return False

    async def target_hash(self, canary: Canary) -> str:
        return "hash-1"

    async def tracked_configs(self, canary: Canary) -> dict[str, str]:
        return {}


class Events:
    def __init__(self) -> None:
        self.recorded: list[tuple[str, str]] = []

    async def normal(self, obj: Any, message: str, **_: Any) -> None:
        self.recorded.append(("Normal", message))

    async def warning(self, obj: Any, message: str, **_: Any) -> None:
        self.recorded.append(("Warning", message))


class Webhooks:
    """Every gate open, no hook fails."""

    async def run(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def rollback_requested(self, *args: Any, **kwargs: Any) -> None:
        return None


class Analyzer:
    async def check_providers(self, canary: Canary) -> list[str]:
        return []

    async def check_run_start(self, canary: Canary, **options: Any) -> AnalysisOutcome:
        return AnalysisOutcome(passed=True, results=(), failure=None)

    async def run(self, canary: Canary, **options: Any) -> AnalysisOutcome:
        return AnalysisOutcome(passed=True, results=(), failure=None)


class Alerter:
    async def alert(self, canary: Canary, message: Any) -> None:
        """Nobody to tell."""


class RecordingRouter(StubRouter):
    """Journals its reconciles and remembers the routes it was given."""

    journal: ClassVar[list[str]] = []
    routes: ClassVar[list[Weights]] = []

    async def reconcile(self, canary: Canary) -> None:
        self.journal.append("router.reconcile")

    async def set_routes(self, canary: Canary, weights: Weights) -> None:
        self.routes.append(weights)


def canary_object(*, status: dict[str, Any] | None = None, **analysis: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": "u-1",
                     "resourceVersion": "1"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
                 "service": {"port": 9898},
                 "analysis": {"interval": "10s", "threshold": 5, **analysis}},
    }
    if status is not None:
        obj["status"] = status
    return obj


@dataclass
class Engine:
    lifecycle: lifecycle_module.Lifecycle
    store: Store
    events: Events
    journal: list[str]

    async def advance(self, provider: str) -> None:
        obj = self.store.canary
        await self.lifecycle.advance(obj, Canary.model_validate(obj), provider=provider)


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Engine]]:
    """Builds a Lifecycle around recording stand-ins, for a router class registered as
    ``provider`` (in-process, as an entry point would register it)."""
    registered: list[str] = []

    def build(provider: str, router: type[RecordingRouter], canary: dict[str, Any]) -> Engine:
        journal: list[str] = []
        router.journal, router.routes = journal, []
        plugins.routers.register(provider, router)
        registered.append(provider)
        monkeypatch.setattr(lifecycle_module, "workload_controller",
                            lambda canary, **_: Workload(journal))
        store, events = Store(canary), Events()
        lifecycle = lifecycle_module.Lifecycle(
            store=store, settings=Settings(), telemetry=Recorder(process_collectors=False),
            events=events, webhooks=Webhooks(), analyzer=Analyzer(), alerter=Alerter(),
        )
        return Engine(lifecycle, store, events, journal)

    yield build
    for provider in registered:
        plugins.routers.unregister(provider)


class EarlyRouter(RecordingRouter):
    """Its objects must exist before the workload's pods start (as App Mesh's did)."""

    capabilities: ClassVar[Capabilities] = Capabilities(reconciles_before_workload=True,
                                                        needs_services=False)


class LateRouter(RecordingRouter):
    capabilities: ClassVar[Capabilities] = Capabilities(needs_services=False)


async def test_a_router_that_reconciles_before_the_workload_comes_first(
        engine: Callable[..., Engine]) -> None:
    early = engine("early", EarlyRouter, canary_object(stepWeight=10))
    await early.advance("early")
    assert early.journal == ["router.reconcile", "workload.initialize",
                             "workload.scale_to_zero"]
    assert early.store.canary["status"]["phase"] == "Initialized"


async def test_a_router_reconciles_after_the_workload_by_default(
        engine: Callable[..., Engine]) -> None:
    late = engine("late", LateRouter, canary_object(stepWeight=10))
    await late.advance("late")
    assert late.journal == ["workload.initialize", "workload.scale_to_zero",
                            "router.reconcile"]
    assert late.store.canary["status"]["phase"] == "Initialized"


class SwitchingRouter(RecordingRouter):
    capabilities: ClassVar[Capabilities] = Capabilities(
        traffic=Traffic.SWITCH, ab_matches=False, mirroring=False, session_affinity=False,
        needs_services=False,
    )


PROGRESSING = {"phase": "Progressing", "canaryWeight": 0, "iterations": 0, "failedChecks": 0,
               "lastAppliedSpec": "hash-1", "lastPromotedSpec": "hash-0"}


@pytest.mark.parametrize("provider", ["kubernetes", "switcheroo"])
async def test_a_switch_only_router_runs_blue_green_with_flaggers_warnings(
        engine: Callable[..., Engine], provider: str) -> None:
    switch = engine(provider, SwitchingRouter, canary_object(
        status=PROGRESSING, stepWeight=10, mirror=True,
        match=[{"headers": {"x-canary": {"exact": "insider"}}}],
    ))
    await switch.advance(provider)
    assert switch.events.recorded == [
        ("Normal", f"Starting canary analysis for {NAME}.{NAMESPACE}"),
        ("Warning", f"A/B testing is not supported when using the {provider} provider"),
        ("Warning", f"Progressive traffic is not supported when using the {provider} provider"),
        ("Warning", "Setting canaryAnalysis.iterations: 10"),
        ("Warning", f"Traffic mirroring is not supported when using the {provider} provider"),
        ("Normal", f"Advance {NAME}.{NAMESPACE} canary iteration 1/10"),
    ]
    assert SwitchingRouter.routes == [Weights.all_primary()]  # blue/green, never mirrored
    assert switch.store.canary["status"]["iterations"] == 1


class PlainWeightedRouter(RecordingRouter):
    capabilities: ClassVar[Capabilities] = Capabilities(ab_matches=False, session_affinity=False,
                                                        needs_services=False)


async def test_what_a_weighted_router_cannot_do_is_said_where_flagger_has_no_event(
        engine: Callable[..., Engine]) -> None:
    weighted = engine("plain", PlainWeightedRouter, canary_object(
        status=PROGRESSING, iterations=2,
        match=[{"headers": {"x-canary": {"exact": "insider"}}}],
        sessionAffinity={"cookieName": "canary"},
    ))
    with structlog.testing.capture_logs() as logs:
        await weighted.advance("plain")
    assert weighted.events.recorded == [
        ("Normal", f"Starting canary analysis for {NAME}.{NAMESPACE}"),
        ("Warning", "Session affinity is not supported when using the plain provider"),
        ("Normal", f"Advance {NAME}.{NAMESPACE} canary iteration 1/2"),
    ]
    # A/B still runs, all traffic on the canary, as Flagger's SMI and Traefik routers do;
    # the missing matches are only logged, since Flagger records no Event for them.
    assert PlainWeightedRouter.routes == [Weights.all_canary()]
    assert [entry["provider"] for entry in logs
            if entry["event"] == "ab_matches_not_supported"] == ["plain"]
