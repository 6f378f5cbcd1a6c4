"""How the golden replay compares Events: which differences are timing and which are real.

The replay runs on a loaded test cluster, Flagger's capture ran on an idle one; a comparison that
fails on timing makes CI flaky, one that ignores too much hides a wrong Event.
"""

from __future__ import annotations

from e2e.golden.compare import Report, compare_events
from e2e.golden.corpus import EventLine

NS = "istio-ab-cookie"
PRIMARY_WAIT = (f"podinfo-primary.{NS} not ready: waiting for rollout to finish: observed "
                "deployment generation less than desired generation")
CANARY_WAIT = (f"canary deployment podinfo.{NS} not ready: waiting for rollout to finish: 0 of 1 "
               "(readyThreshold 100%) updated replicas are available")


def warning(message: str) -> EventLine:
    return EventLine("Warning", "Synced", message)


def normal(message: str) -> EventLine:
    return EventLine("Normal", "Synced", message)


def differences(flagger: list[EventLine], ours: list[EventLine]) -> list[str]:
    report = Report("istio/ab-cookie")
    compare_events(flagger, ours, [], report)
    return [f"{d.at}: {d.flagger} | {d.ours}" for d in report.differences]


def test_a_rollout_wait_only_one_side_saw_is_timing() -> None:
    flagger = [warning(PRIMARY_WAIT), normal(f"New revision detected! Scaling up podinfo.{NS}")]
    ours = [warning(PRIMARY_WAIT), warning(PRIMARY_WAIT),
            normal(f"New revision detected! Scaling up podinfo.{NS}"), warning(CANARY_WAIT)]
    assert differences(flagger, ours) == []
    assert differences(ours, flagger) == []


def test_other_extra_or_missing_events_still_fail() -> None:
    started = normal(f"Starting canary analysis for podinfo.{NS}")
    rolled_back = warning(f"Canary failed! Scaling down podinfo.{NS}")
    found = differences([started], [started, rolled_back])
    assert found == [f"extra in ours: x0 | Warning\tCanary failed! Scaling down podinfo.{NS} (x1)"]
    assert differences([started, started], [started]) == [
        f"missing in ours: Normal\tStarting canary analysis for podinfo.{NS} (x2) | x1"]


def test_a_wait_for_something_else_than_a_rollout_is_not_timing() -> None:
    """Only the rollout wait is optional: a primary that never became ready is a real Warning."""
    failed = warning(f"podinfo-primary.{NS} not ready: deployment has exceeded its progress "
                     "deadline")
    assert len(differences([], [failed])) == 1
