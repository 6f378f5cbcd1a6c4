"""The conditions of MetricTemplates and AlertProviders: what they say, and when they are written.

The decision (status or reason changed, against what was written or what is there) and the
patch are pure; the writer is run against a recording store here and against the real API
server in tests/integration/test_template_status.py.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from flaggerpy import kube
from flaggerpy.canary.alerting import Delivery, DeliveryCause
from flaggerpy.canary.metrics_analysis import MetricResult, ProviderProblem, TemplateCause
from flaggerpy.canary.template_status import (
    ConditionWriter,
    Wanted,
    condition_changes,
    conditions_patch,
    delivery_conditions,
    template_condition,
    template_outcomes,
)
from flaggerpy.kube import ObjectKey
from flaggerpy.models import Canary

KEY = ObjectKey("test", "latency")
ANSWERED = Wanted("Answered", "True", "ProviderAnswered", "the metrics provider answered")
FAILED = Wanted("Answered", "False", "QueryFailed", "Metric query failed for latency: 500")
OTHER = {"type": "Ready", "status": "True", "reason": "ProviderInstalled", "message": "ok",
         "lastUpdateTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}


def condition(wanted: Wanted, *, at: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return {**wanted._asdict(), "lastUpdateTime": at, "lastTransitionTime": at}


def template_object(*conditions: dict[str, Any], version: str = "7") -> dict[str, Any]:
    return {"metadata": {"name": "latency", "namespace": "test", "uid": "u-1",
                         "resourceVersion": version, "generation": 3},
            "status": {"conditions": list(conditions)}}


# --- which condition an outcome gives -----------------------------------------------------------


@pytest.mark.parametrize(("cause", "status", "reason"), [
    (TemplateCause.ANSWERED, "True", "ProviderAnswered"),
    (TemplateCause.QUERY_FAILED, "False", "QueryFailed"),
    (TemplateCause.OFFLINE, "False", "ProviderUnavailable"),
    (TemplateCause.NOT_INSTALLED, "False", "ProviderNotInstalled"),
    (TemplateCause.PROVIDER_INVALID, "False", "ProviderInvalid"),
    (TemplateCause.SECRET_NOT_FOUND, "False", "SecretNotFound"),
    (TemplateCause.SECRET_INVALID, "False", "SecretInvalid"),
])
def test_each_provider_outcome_has_its_reason(
        cause: TemplateCause, status: str, reason: str) -> None:
    wanted = template_condition(cause, "what happened")
    assert wanted is not None
    assert (wanted.type, wanted.status, wanted.reason) == ("Answered", status, reason)
    assert wanted.message == (
        "the metrics provider answered" if status == "True" else "what happened")


@pytest.mark.parametrize("cause", [TemplateCause.RENDER_FAILED, TemplateCause.TEMPLATE_NOT_FOUND,
                                   TemplateCause.TEMPLATE_INVALID, None])
def test_what_says_nothing_about_the_provider_sets_nothing(cause: TemplateCause | None) -> None:
    assert template_condition(cause, "why") is None


def canary(*templates: str) -> Canary:
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {"interval": "10s", "threshold": 5, "metrics": [
                {"name": f"m-{t}", "templateRef": {"name": t}} for t in templates]},
        },
    })


def test_an_availability_check_answers_for_every_template_without_a_problem() -> None:
    problems = [
        ProviderProblem("down", "prometheus in metric template down.test not available: 503",
                        template=ObjectKey("test", "down"), cause=TemplateCause.OFFLINE),
        ProviderProblem("gone", "metric template gone.test error: not found",
                        template=ObjectKey("test", "gone"),
                        cause=TemplateCause.TEMPLATE_NOT_FOUND),
        ProviderProblem("metrics-server", "prometheus not available: refused"),
    ]
    outcomes = template_outcomes(canary("latency", "down", "gone"), problems=problems)
    assert outcomes == {
        ObjectKey("test", "latency"): ANSWERED,
        ObjectKey("test", "down"): Wanted(
            "Answered", "False", "ProviderUnavailable",
            "prometheus in metric template down.test not available: 503"),
    }


def test_a_ticks_results_set_the_templates_they_went_through() -> None:
    results = [
        MetricResult("request-success-rate", 99.0, True, ""),
        MetricResult("m-latency", 0.2, False, "Halt advancement latency 0.2 > 0.1",
                     template=KEY, cause=TemplateCause.ANSWERED),
        MetricResult("m-render", None, False, "query render error", error=True,
                     template=ObjectKey("test", "render"), cause=TemplateCause.RENDER_FAILED),
    ]
    assert template_outcomes(canary("latency"), results=results) == {KEY: ANSWERED}


def test_a_delivery_sets_the_secret_condition_only_when_the_secret_was_looked_at() -> None:
    provider = ObjectKey("test", "slack")
    without_secret = Delivery(provider=provider, cause=DeliveryCause.DELIVERED,
                              message="delivered to https://hooks.example")
    assert [(w.type, w.status, w.reason) for w in delivery_conditions(without_secret)] == [
        ("Delivered", "True", "NotificationDelivered")]

    missing = Delivery(provider=provider, cause=DeliveryCause.SECRET_NOT_FOUND,
                       message="Secret test/slack-url not found", secret=False)
    assert [(w.type, w.status, w.reason, w.message) for w in delivery_conditions(missing)] == [
        ("SecretValid", "False", "SecretNotFound", "Secret test/slack-url not found"),
        ("Delivered", "False", "SecretNotFound", "Secret test/slack-url not found"),
    ]

    refused = Delivery(provider=provider, cause=DeliveryCause.POST_FAILED,
                       message="status 500", secret=True)
    assert [(w.type, w.status, w.reason) for w in delivery_conditions(refused)] == [
        ("SecretValid", "True", "SecretFound"), ("Delivered", "False", "PostFailed")]


# --- when to write ------------------------------------------------------------------------------


def test_a_condition_never_written_nor_there_is_a_change() -> None:
    assert condition_changes([ANSWERED], remembered={}, current=[OTHER]) == [ANSWERED]


def test_the_same_status_and_reason_is_no_change_whatever_the_message() -> None:
    reworded = FAILED._replace(message="Metric query failed for latency: 502")
    assert condition_changes([reworded],
                             remembered={"Answered": ("False", "QueryFailed", None)},
                             current=[]) == []
    # After a restart nothing is remembered: the object's own condition counts.
    assert condition_changes([reworded], remembered={}, current=[condition(FAILED)]) == []


def test_what_was_written_counts_before_a_cache_that_lags() -> None:
    # The cache still shows the old condition; this process already wrote the new one.
    written = {"Answered": ("True", "ProviderAnswered", 3)}
    assert condition_changes([ANSWERED], remembered=written, current=[condition(FAILED)],
                             generation=3) == []
    assert condition_changes([FAILED], remembered=written, current=[condition(FAILED)],
                             generation=3) == [FAILED]


def test_a_condition_set_for_an_older_spec_is_a_change() -> None:
    set_for_3 = {**condition(ANSWERED), "observedGeneration": 3}
    assert condition_changes([ANSWERED], remembered={}, current=[set_for_3],
                             generation=3) == []
    assert condition_changes([ANSWERED], remembered={}, current=[set_for_3],
                             generation=4) == [ANSWERED]


def test_a_new_reason_with_the_same_status_is_a_change() -> None:
    offline = Wanted("Answered", "False", "ProviderUnavailable", "503")
    assert condition_changes([offline], remembered={}, current=[condition(FAILED)]) == [offline]


# --- the patch ----------------------------------------------------------------------------------


def test_the_patch_keeps_other_conditions_and_carries_a_precondition() -> None:
    patch = conditions_patch(template_object(OTHER), [ANSWERED], now="2026-02-02T00:00:00Z")
    assert patch["metadata"] == {"resourceVersion": "7"}
    assert patch["status"]["conditions"] == [OTHER, {
        "type": "Answered", "status": "True", "reason": "ProviderAnswered",
        "message": "the metrics provider answered", "observedGeneration": 3,
        "lastUpdateTime": "2026-02-02T00:00:00Z", "lastTransitionTime": "2026-02-02T00:00:00Z",
    }]


def test_the_transition_time_moves_only_with_the_status() -> None:
    offline = Wanted("Answered", "False", "ProviderUnavailable", "503")
    [same_status] = conditions_patch(template_object(condition(FAILED)), [offline],
                                     now="2026-02-02T00:00:00Z")["status"]["conditions"]
    assert same_status["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert same_status["lastUpdateTime"] == "2026-02-02T00:00:00Z"
    [flipped] = conditions_patch(template_object(condition(FAILED)), [ANSWERED],
                                 now="2026-02-02T00:00:00Z")["status"]["conditions"]
    assert flipped["lastTransitionTime"] == "2026-02-02T00:00:00Z"


# --- the writer, against a store that records its patches ---------------------------------------


class RecordingStore:
    """Serves one object and applies status merge patches to it, counting them."""

    def __init__(self, obj: dict[str, Any] | None, *, conflicts: int = 0) -> None:
        self.obj = obj
        self.patches: list[dict[str, Any]] = []
        self.conflicts = conflicts
        self.client = self

    async def get(self, resource: kube.Resource, *args: Any, **kwargs: Any) -> Any:
        return copy.deepcopy(self.obj)

    async def patch(self, resource: kube.Resource, *, namespace: str, name: str,
                    patch: dict[str, Any], subresource: str | None = None) -> dict[str, Any]:
        assert subresource == "status"
        assert self.obj is not None
        if self.conflicts:
            self.conflicts -= 1
            self.obj["metadata"]["resourceVersion"] = "8"  # someone else wrote meanwhile
            raise kube.ConflictError(409, "Conflict", "the object has been modified")
        assert patch["metadata"]["resourceVersion"] == self.obj["metadata"]["resourceVersion"]
        self.patches.append(patch)
        self.obj["status"] = patch["status"]
        return self.obj


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_second_identical_outcome_writes_nothing() -> None:
    store = RecordingStore(template_object(OTHER))
    clock = Clock()
    writer = ConditionWriter(store=store, clock=clock)  # type: ignore[arg-type]
    assert await writer.set(kube.METRIC_TEMPLATES, KEY, [FAILED])
    assert not await writer.set(kube.METRIC_TEMPLATES, KEY,
                                [FAILED._replace(message="another error text")])
    clock.now += 60
    assert await writer.set(kube.METRIC_TEMPLATES, KEY, [ANSWERED])
    assert not await writer.set(kube.METRIC_TEMPLATES, KEY, [ANSWERED])
    assert len(store.patches) == 2
    assert store.obj is not None
    assert [c["type"] for c in store.obj["status"]["conditions"]] == ["Ready", "Answered"]


async def test_a_template_whose_outcomes_keep_changing_is_written_once_per_interval() -> None:
    store = RecordingStore(template_object(OTHER))
    clock = Clock()
    writer = ConditionWriter(store=store, min_interval=10, clock=clock)  # type: ignore[arg-type]
    assert await writer.set(kube.METRIC_TEMPLATES, KEY, [FAILED])
    for _ in range(5):  # two canaries, one answered and one not, ticking each second
        clock.now += 1
        assert not await writer.set(kube.METRIC_TEMPLATES, KEY, [ANSWERED])
        assert not await writer.set(kube.METRIC_TEMPLATES, KEY, [FAILED])
    clock.now += 5
    assert await writer.set(kube.METRIC_TEMPLATES, KEY, [ANSWERED])  # the next one after
    assert len(store.patches) == 2
    # An alert's outcome is written at once: the next alert may be hours away.
    assert await writer.set(kube.METRIC_TEMPLATES, KEY, [FAILED], paced=False)


async def test_an_object_made_again_is_judged_by_its_own_conditions() -> None:
    store = RecordingStore(template_object(OTHER))
    writer = ConditionWriter(store=store, min_interval=0)  # type: ignore[arg-type]
    assert await writer.set(kube.METRIC_TEMPLATES, KEY, [FAILED])
    assert store.obj is not None
    store.obj = template_object(OTHER)
    store.obj["metadata"]["uid"] = "u-2"  # deleted and created again: no Answered yet
    assert await writer.set(kube.METRIC_TEMPLATES, KEY, [FAILED])
    assert len(store.patches) == 2


async def test_a_restarted_writer_does_not_rewrite_what_is_there() -> None:
    store = RecordingStore(template_object({**condition(FAILED), "observedGeneration": 3}))
    writer = ConditionWriter(store=store)  # type: ignore[arg-type]
    assert not await writer.set(kube.METRIC_TEMPLATES, KEY, [FAILED])
    assert store.patches == []


async def test_an_edited_spec_gets_its_condition_again_once() -> None:
    store = RecordingStore(template_object(OTHER))
    writer = ConditionWriter(store=store, min_interval=0)  # type: ignore[arg-type]
    assert await writer.set(kube.METRIC_TEMPLATES, KEY, [ANSWERED])
    assert store.obj is not None
    store.obj["metadata"]["generation"] = 4  # someone changed the address
    assert await writer.set(kube.METRIC_TEMPLATES, KEY, [ANSWERED])
    assert not await writer.set(kube.METRIC_TEMPLATES, KEY, [ANSWERED])
    assert [c.get("observedGeneration") for c in store.obj["status"]["conditions"]] == [None, 4]


async def test_a_conflict_is_retried_once_on_the_object_read_again() -> None:
    store = RecordingStore(template_object(OTHER), conflicts=1)
    writer = ConditionWriter(store=store)  # type: ignore[arg-type]
    assert await writer.set(kube.METRIC_TEMPLATES, KEY, [ANSWERED])
    assert [p["metadata"]["resourceVersion"] for p in store.patches] == ["8"]


async def test_a_write_that_keeps_failing_is_not_remembered() -> None:
    store = RecordingStore(template_object(OTHER), conflicts=2)
    writer = ConditionWriter(store=store)  # type: ignore[arg-type]
    assert not await writer.set(kube.METRIC_TEMPLATES, KEY, [ANSWERED])
    assert await writer.set(kube.METRIC_TEMPLATES, KEY, [ANSWERED])  # tried again
    assert len(store.patches) == 1


async def test_an_object_that_is_gone_is_left_alone() -> None:
    store = RecordingStore(None)
    writer = ConditionWriter(store=store)  # type: ignore[arg-type]
    assert not await writer.set(kube.ALERT_PROVIDERS, KEY, [ANSWERED])



async def test_a_broken_store_never_fails_the_tick() -> None:
    class Broken(RecordingStore):
        async def get(self, resource: kube.Resource, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("cache gone")

    store = Broken(template_object(OTHER))
    writer = ConditionWriter(store=store)  # type: ignore[arg-type]
    await writer.templates({KEY: ANSWERED})  # logged, not raised
    assert store.patches == []
    with pytest.raises(RuntimeError):
        await writer.set(kube.METRIC_TEMPLATES, KEY, [ANSWERED])
