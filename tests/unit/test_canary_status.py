"""Status patches as Flagger writes them: phase, Promoted condition, counters, revisions."""

from __future__ import annotations

from typing import Any

import pytest

from flaggerpy.canary import status
from flaggerpy.models import CanaryPhase


@pytest.mark.parametrize(
    ("phase", "condition_status", "message"),
    [
        (CanaryPhase.INITIALIZING, "Unknown", "New Deployment detected, starting initialization."),
        (CanaryPhase.INITIALIZED, "True", "Deployment initialization completed."),
        (CanaryPhase.WAITING, "Unknown", "Waiting for approval."),
        (CanaryPhase.PROGRESSING, "Unknown", "New revision detected, progressing canary analysis."),
        (CanaryPhase.PROMOTING, "Unknown",
         "Canary analysis completed, starting primary rolling update."),
        (CanaryPhase.FINALISING, "Unknown",
         "Canary analysis completed, routing all traffic to primary."),
        (CanaryPhase.SUCCEEDED, "True",
         "Canary analysis completed successfully, promotion finished."),
        (CanaryPhase.FAILED, "False", "Canary analysis failed, Deployment scaled to zero."),
        (CanaryPhase.TERMINATING, "Unknown", "New Deployment detected, starting initialization."),
    ],
)
def test_promoted_condition_per_phase(
    phase: CanaryPhase, condition_status: str, message: str
) -> None:
    condition = status.promoted_condition(phase=phase, kind="Deployment", previous=None)
    assert condition["type"] == "Promoted"
    assert (condition["status"], condition["reason"], condition["message"]) == (
        condition_status, phase.value, message
    )


def test_transition_time_kept_while_condition_status_stays() -> None:
    old = status.promoted_condition(phase=CanaryPhase.PROGRESSING, kind="Deployment",
                                    previous=None, now="2026-01-01T00:00:00Z")
    new = status.promoted_condition(phase=CanaryPhase.PROMOTING, kind="Deployment",
                                    previous=[old], now="2026-01-01T00:05:00Z")
    assert new["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert new["lastUpdateTime"] == "2026-01-01T00:05:00Z"
    done = status.promoted_condition(phase=CanaryPhase.SUCCEEDED, kind="Deployment",
                                     previous=[new], now="2026-01-01T00:09:00Z")
    assert done["lastTransitionTime"] == "2026-01-01T00:09:00Z"


def test_phase_patch_is_none_when_nothing_changes() -> None:
    first = status.phase_patch(phase=CanaryPhase.INITIALIZING, kind="Deployment", current=None)
    assert first is not None
    current: dict[str, Any] = first["status"]
    assert status.phase_patch(phase=CanaryPhase.INITIALIZING, kind="Deployment",
                              current=current) is None
    assert status.phase_patch(phase=CanaryPhase.FAILED, kind="Deployment",
                              current=current) is not None


def test_sync_status_resets_counters_and_records_the_revision() -> None:
    current = {"phase": "Progressing", "canaryWeight": 30, "failedChecks": 2, "iterations": 1,
               "trackedConfigs": {"configmap/old": "aa", "secret/kept": "bb"}}
    patch = status.sync_status_patch(
        current=current, phase=CanaryPhase.INITIALIZED, kind="Deployment",
        last_applied_spec="h1", tracked_configs={"secret/kept": "cc"},
    )["status"]
    assert (patch["canaryWeight"], patch["failedChecks"], patch["iterations"]) == (0, 0, 0)
    assert patch["lastAppliedSpec"] == patch["lastPromotedSpec"] == "h1"
    # merge patch: a config no longer referenced is removed with null
    assert patch["trackedConfigs"] == {"configmap/old": None, "secret/kept": "cc"}
    progressing = status.sync_status_patch(
        current=current, phase=CanaryPhase.PROGRESSING, kind="Deployment",
        last_applied_spec="h2", tracked_configs=None,
    )["status"]
    assert "lastPromotedSpec" not in progressing
    assert "trackedConfigs" not in progressing


def test_set_phase_resets_counters_outside_a_run() -> None:
    current = {"phase": "Progressing", "canaryWeight": 30, "lastAppliedSpec": "h2"}
    waiting = status.set_phase_patch(current=current, phase=CanaryPhase.WAITING,
                                     kind="Deployment", analysis_iterations=0)["status"]
    assert "canaryWeight" not in waiting
    succeeded = status.set_phase_patch(current=current, phase=CanaryPhase.SUCCEEDED,
                                       kind="Deployment", analysis_iterations=0)["status"]
    assert (succeeded["canaryWeight"], succeeded["iterations"]) == (0, 0)
    assert succeeded["lastPromotedSpec"] == "h2"
    parked = status.set_phase_patch(current=current, phase=CanaryPhase.WAITING_PROMOTION,
                                    kind="Deployment", analysis_iterations=0)["status"]
    assert parked["iterations"] == 0  # Flagger writes -1 for canary strategies
    ab = status.set_phase_patch(current=current, phase=CanaryPhase.WAITING_PROMOTION,
                                kind="Deployment", analysis_iterations=5)["status"]
    assert ab["iterations"] == 4


def test_counters_patch_writes_only_what_is_given() -> None:
    patch = status.counters_patch(failed_checks=3)["status"]
    assert set(patch) == {"failedChecks", "lastTransitionTime"}
