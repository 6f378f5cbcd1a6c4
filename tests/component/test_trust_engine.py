"""The engine acting on each check's decision: hold, dry run, pause and resume, the history.

The real :class:`~flaggerpy.canary.metrics_analysis.MetricsAnalyzer` runs inline queries
against a scripted metrics provider (registered as a plugin would be), and the real
:class:`~flaggerpy.canary.lifecycle.Lifecycle` acts on the outcome, with the recording
stand-ins of ``test_engine_capabilities`` for the workload, the status store and Events. What
is asserted is what a person sees: the weight, ``failedChecks``, the ``Promoted`` condition,
``status.analysisHistory``, Events and alerts, and the threshold series.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from flaggerpy import plugins
from flaggerpy.canary import (
    alert_templates,
    decisions,
    lifecycle as lifecycle_module,
    metrics_analysis,
)
from flaggerpy.canary.metrics_analysis import MetricsAnalyzer
from flaggerpy.canary.webhooks import HookResult
from flaggerpy.errors import NoValuesFoundError
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.models import AlertKind, Canary, CanaryWebhook, HookType
from flaggerpy.routing import Capabilities, Weights
from flaggerpy.settings import Settings
from flaggerpy.telemetry import Recorder
from tests.component.test_engine_capabilities import (
    NAME,
    NAMESPACE,
    Events,
    RecordingRouter,
    Store,
    Webhooks,
    Workload,
    canary_object,
)

QUERY = 'sum(rate(requests{app="podinfo"}[1m]))'
PROVIDER = "trusty"


class Answers:
    """What the scripted Prometheus answers: a number, or nothing (no values found)."""

    value: float | None = None

    async def run_query(self, query: str) -> float:
        assert query == QUERY
        if self.value is None:
            raise NoValuesFoundError(f"no values found for query: {query}")
        return self.value

    async def is_online(self) -> bool:
        return True

    async def aclose(self) -> None:
        """Nothing to close."""


class MemoryRouter(RecordingRouter):
    """Remembers the weights it was given, as a mesh's routing objects would."""

    capabilities: ClassVar[Capabilities] = Capabilities(needs_services=False)
    current: ClassVar[Weights] = Weights(primary=90, canary=10)

    async def set_routes(self, canary: Canary, weights: Weights) -> None:
        type(self).current = weights

    async def get_routes(self, canary: Canary) -> Weights:
        return type(self).current


@dataclass
class Alerts:
    """The alerts a canary without alert templates gets (the opt-in kinds go only where a
    template asks for them, see flaggerpy.canary.alert_templates)."""

    sent: list[str] = field(default_factory=list)
    raised: list[Any] = field(default_factory=list)
    """Every message the engine raised, opt-in kinds included."""

    async def alert(self, canary: Canary, message: Any) -> None:
        self.raised.append(message)
        if getattr(message, "kind", None) not in alert_templates.OPT_IN_KINDS:
            self.sent.append(message.text)


@dataclass
class Run:
    lifecycle: lifecycle_module.Lifecycle
    store: Store
    events: Events
    alerts: Alerts
    answers: Answers
    recorder: Recorder

    async def tick(self) -> None:
        """One analysis tick, as the work queue brings it after the interval."""
        self.events.recorded.clear()
        self.lifecycle.forget(ObjectKey(NAMESPACE, NAME))  # the interval has passed
        obj = self.store.canary
        await self.lifecycle.advance(obj, Canary.model_validate(obj), provider=PROVIDER)

    @property
    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.store.canary["status"]
        return status

    @property
    def promoted(self) -> str:
        (condition,) = [c for c in self.status["conditions"] if c["type"] == "Promoted"]
        return str(condition["message"])

    @property
    def last(self) -> dict[str, Any]:
        entry: dict[str, Any] = self.status["analysisHistory"][-1]
        return entry


RUNNING = {"phase": "Progressing", "canaryWeight": 10, "iterations": 0, "failedChecks": 0,
           "lastAppliedSpec": "hash-1", "lastPromotedSpec": "hash-0",
           "conditions": [{"type": "Promoted", "status": "Unknown", "reason": "Progressing",
                           "message": "New revision detected, progressing canary analysis."}]}


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def build(metric: dict[str, Any], **analysis: Any) -> Run:
        answers = Answers()
        registry: plugins.Registry[plugins.Factory] = plugins.Registry("flaggerpy.metrics")
        registry.register("prometheus", lambda **_: answers)
        recorder = Recorder(process_collectors=False)
        analyzer = MetricsAnalyzer(
            templates=Store({}), secrets=lambda key: None,
            settings=Settings(metrics={"server": "http://prometheus:9090"}),
            telemetry=recorder, metrics_registry=registry,
        )
        monkeypatch.setattr(lifecycle_module, "workload_controller",
                            lambda canary, **_: Workload([]))
        MemoryRouter.current = Weights(primary=90, canary=10)
        store, events, alerts = Store(canary_object(
            status=dict(RUNNING), stepWeight=10, maxWeight=50,
            metrics=[{"name": "requests", "query": QUERY, "thresholdRange": {"min": 1},
                      **metric}],
            **analysis)), Events(), Alerts()
        lifecycle = lifecycle_module.Lifecycle(
            store=store, settings=Settings(), telemetry=recorder, events=events,
            webhooks=Webhooks(), analyzer=analyzer, alerter=alerts,
        )
        return Run(lifecycle, store, events, alerts, answers, recorder)

    plugins.routers.register(PROVIDER, MemoryRouter)
    yield build
    plugins.routers.unregister(PROVIDER)


async def test_no_traffic_holds_the_weight_with_a_reason_and_traffic_lets_it_proceed(
        run: Any) -> None:
    canary = run({"onNoData": "hold"})
    await canary.tick()
    assert MemoryRouter.current.canary == 10
    assert canary.status["failedChecks"] == 0
    assert canary.status["phase"] == "Progressing"
    assert canary.promoted == ("Holding at canary weight 10: Halt advancement no values found "
                               "for metric: requests")
    assert canary.last["action"] == "hold"
    assert canary.last["verdict"] == "NoData"
    assert canary.last["query"] == QUERY
    assert ("Warning", "Halt advancement no values found for metric: requests") in \
        canary.events.recorded

    canary.answers.value = 5.0
    await canary.tick()
    assert MemoryRouter.current.canary == 20
    assert canary.status["canaryWeight"] == 20
    assert canary.promoted == "New revision detected, progressing canary analysis."
    assert [e["action"] for e in canary.status["analysisHistory"]] == ["hold", "pass"]
    assert canary.last["value"] == 5.0


async def test_without_on_no_data_no_traffic_is_a_failed_check_as_in_flagger(run: Any) -> None:
    canary = run({})
    await canary.tick()
    assert canary.status["failedChecks"] == 1
    assert canary.last["action"] == "fail"
    assert not canary.promoted.startswith(decisions.HOLD_PREFIX)


async def test_a_failing_dry_run_metric_is_recorded_and_the_canary_advances(run: Any) -> None:
    canary = run({"dryRun": True})
    canary.answers.value = 0.5  # under thresholdRange.min 1
    await canary.tick()
    assert MemoryRouter.current.canary == 20
    assert canary.status["failedChecks"] == 0
    assert canary.last == {
        "time": canary.last["time"], "metric": "requests", "verdict": "Fail",
        "action": "dry-run", "value": 0.5, "thresholdMin": 1, "query": QUERY,
        "message": "Halt podinfo.test advancement requests 0.50 < 1",
    }
    assert ("Warning", "Dry run: metric requests Fail: Halt podinfo.test advancement requests "
                       "0.50 < 1 (podinfo.test)") in canary.events.recorded
    assert canary.recorder.registry.get_sample_value(
        "flaggerpy_canary_metric_threshold",
        {"name": NAME, "namespace": NAMESPACE, "metric": "requests", "bound": "min"}) == 1
    assert canary.recorder.registry.get_sample_value(
        "flaggerpy_canary_metric_checks_total",
        {"name": NAME, "namespace": NAMESPACE, "metric": "requests", "verdict": "Fail",
         "action": "dry-run"}) == 1


async def test_a_canary_in_dry_run_is_never_failed_by_a_metric(run: Any) -> None:
    canary = run({}, dryRun=True)
    canary.answers.value = 0.5
    for _ in range(3):
        await canary.tick()
    assert canary.status["failedChecks"] == 0
    assert MemoryRouter.current.canary == 40
    assert [e["action"] for e in canary.status["analysisHistory"]] == ["dry-run"] * 3


async def test_on_failure_pause_stops_at_the_weight_until_a_person_resumes(run: Any) -> None:
    canary = run({}, threshold=2, onFailure="pause")
    canary.answers.value = 0.5
    await canary.tick()
    await canary.tick()
    assert canary.status["failedChecks"] == 2
    assert canary.alerts.sent == []

    await canary.tick()  # the threshold is reached: paused, not rolled back
    assert canary.status["phase"] == "Progressing"
    assert MemoryRouter.current == Weights(primary=90, canary=10)
    assert canary.promoted.startswith(f"{decisions.PAUSED_PREFIX} at canary weight 10: failed "
                                      "checks threshold reached 2: Halt podinfo.test "
                                      "advancement requests 0.50 < 1.")
    assert canary.events.recorded == [
        ("Warning", "Pausing podinfo.test failed checks threshold reached 2: waiting for a "
                    "person")]
    assert len(canary.alerts.sent) == 1

    written = canary.store.canary
    await canary.tick()  # still paused: nothing said again, nothing written
    assert canary.events.recorded == []
    assert len(canary.alerts.sent) == 1
    assert canary.store.canary is written

    canary.answers.value = 5.0  # fixed; a person resumes as docs/analysis.md says
    canary.store.canary = {**written, "status": {**written["status"], "failedChecks": 0}}
    await canary.tick()
    assert MemoryRouter.current.canary == 20
    assert canary.status["phase"] == "Progressing"
    assert canary.promoted == "New revision detected, progressing canary analysis."


@pytest.mark.parametrize("on_failure", ["rollback", "pause"])
async def test_a_failed_critical_comparison_reaches_the_threshold_at_once(
        run: Any, monkeypatch: pytest.MonkeyPatch, on_failure: str) -> None:
    # Which results are critical failures is the analyzer's (test_compare_primary.py); here,
    # what the engine does with one.
    monkeypatch.setattr(metrics_analysis, "_critical_failure", lambda result: True)
    canary = run({}, threshold=5, onFailure=on_failure)
    canary.answers.value = 0.5
    await canary.tick()  # one failed check, not five
    if on_failure == "rollback":
        assert canary.status["phase"] == "Failed"
        assert MemoryRouter.current == Weights(primary=100, canary=0)
        assert ("Warning", "Rolling back podinfo.test failed checks threshold reached 5"
                ) in canary.events.recorded
    else:
        assert canary.status["failedChecks"] == 5
        assert canary.status["phase"] == "Progressing"
        assert MemoryRouter.current == Weights(primary=90, canary=10)
        assert canary.promoted.startswith(decisions.PAUSED_PREFIX)


async def test_a_paused_canary_rolls_back_once_on_failure_says_rollback(run: Any) -> None:
    canary = run({}, threshold=1, onFailure="pause")
    canary.answers.value = 0.5
    await canary.tick()
    await canary.tick()
    assert canary.promoted.startswith(decisions.PAUSED_PREFIX)
    obj = canary.store.canary
    analysis = {**obj["spec"]["analysis"], "onFailure": "rollback"}
    canary.store.canary = {**obj, "spec": {**obj["spec"], "analysis": analysis}}
    await canary.tick()
    assert canary.status["phase"] == "Failed"
    assert MemoryRouter.current == Weights(primary=100, canary=0)


async def test_failed_checks_and_steps_are_raised_for_alerts_that_template_them(
        run: Any) -> None:
    canary = run({})
    canary.answers.value = 0.5
    await canary.tick()
    [failed] = canary.alerts.raised
    assert failed.kind == AlertKind.FAILED_CHECK
    assert failed.check == alert_templates.CheckInfo(
        name="requests", value=0.5, message="Halt podinfo.test advancement requests 0.50 < 1")

    canary.answers.value = 5.0
    await canary.tick()
    [_, step] = canary.alerts.raised
    assert (step.kind, step.text) == (AlertKind.STEP, "Advance canary weight 20")
    assert canary.alerts.sent == []  # neither goes where no template asks for it


async def test_a_failed_rollout_webhook_is_raised_as_a_webhook_failure(run: Any) -> None:
    class FailingRolloutHook(Webhooks):
        async def run(self, canary: Canary, hook_type: Any, **kwargs: Any) -> Any:
            if hook_type != HookType.ROLLOUT:
                return None
            return HookResult(webhook=CanaryWebhook(name="acceptance", url="http://tester/"),
                              ok=False, status=500, message="exit status 1")

    canary = run({})
    canary.answers.value = 5.0
    canary.lifecycle._webhooks = FailingRolloutHook()  # the only seam; no constructor option
    await canary.tick()
    [failure] = canary.alerts.raised
    assert failure.kind == AlertKind.WEBHOOK_FAILURE
    assert failure.webhook == alert_templates.WebhookInfo(name="acceptance",
                                                          error="exit status 1")
    assert failure.text == "rollout check acceptance failed exit status 1"
    assert canary.status["failedChecks"] == 1
    assert canary.alerts.sent == []
