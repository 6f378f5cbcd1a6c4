"""The Canary status as Flagger writes it: the phase and its single ``Promoted`` condition.

Pure functions that build status patches, so the lifecycle code states *what* phase a canary is
in and this module decides the exact condition status, reason and message Flagger would show in
``kubectl describe canary`` (``pkg/canary/status.go MakeStatusConditions``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flaggerpy.models import CanaryPhase

PROMOTED = "Promoted"


def promoted_message(phase: CanaryPhase, kind: str) -> tuple[str, str]:
    """The ``Promoted`` condition's status and message for a phase, with Flagger's wording."""
    match phase:
        case CanaryPhase.INITIALIZED:
            return "True", f"{kind} initialization completed."
        case CanaryPhase.WAITING | CanaryPhase.WAITING_PROMOTION:
            return "Unknown", "Waiting for approval."
        case CanaryPhase.PROGRESSING:
            return "Unknown", "New revision detected, progressing canary analysis."
        case CanaryPhase.PROMOTING:
            return "Unknown", "Canary analysis completed, starting primary rolling update."
        case CanaryPhase.FINALISING:
            return "Unknown", "Canary analysis completed, routing all traffic to primary."
        case CanaryPhase.SUCCEEDED:
            return "True", "Canary analysis completed successfully, promotion finished."
        case CanaryPhase.FAILED:
            return "False", f"Canary analysis failed, {kind} scaled to zero."
        case _:
            return "Unknown", f"New {kind} detected, starting initialization."


def failed_message(kind: str, last_failed_check: str | None) -> str | None:
    """The ``Failed`` condition's message: Flagger's text, then what failed, when known.

    Flagger's message never says why; the last failed check is appended so that
    ``kubectl describe canary`` answers it while text matching on the prefix keeps working.
    """
    if not last_failed_check:
        return None
    return f"{promoted_message(CanaryPhase.FAILED, kind)[1]} Last failed check: {last_failed_check}"


def now_rfc3339() -> str:
    """Kubernetes' ``metav1.Time`` form: UTC, whole seconds, ``Z`` suffix."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def promoted_condition(
    *,
    phase: CanaryPhase,
    kind: str,
    previous: list[dict[str, Any]] | None,
    message: str | None = None,
    now: str | None = None,
) -> dict[str, Any]:
    """The ``Promoted`` condition for ``phase``; ``message`` overrides Flagger's default text.

    Like Flagger, ``lastTransitionTime`` is kept while the condition's status stays the same,
    and ``lastUpdateTime`` moves on every change of status, reason or message.
    """
    timestamp = now or now_rfc3339()
    status, default_message = promoted_message(phase, kind)
    condition = {
        "type": PROMOTED,
        "status": status,
        "reason": phase.value,
        "message": message or default_message,
        "lastUpdateTime": timestamp,
        "lastTransitionTime": timestamp,
    }
    for old in previous or []:
        if old.get("type") != PROMOTED:
            continue
        if all(old.get(k) == condition[k] for k in ("status", "reason", "message")):
            return old
        if old.get("status") == status and old.get("lastTransitionTime"):
            condition["lastTransitionTime"] = old["lastTransitionTime"]
    return condition


def _conditions(
    current: dict[str, Any], *, phase: CanaryPhase, kind: str, message: str | None
) -> list[dict[str, Any]]:
    """The status' conditions with the ``Promoted`` one set for ``phase``."""
    previous = current.get("conditions")
    condition = promoted_condition(phase=phase, kind=kind, previous=previous, message=message)
    return [*(c for c in previous or [] if c.get("type") != PROMOTED), condition]


def phase_patch(
    *,
    phase: CanaryPhase,
    kind: str,
    current: dict[str, Any] | None,
    message: str | None = None,
) -> dict[str, Any] | None:
    """A merge patch for ``status`` that moves the canary to ``phase``; None if nothing changes.

    Returning None when phase and condition already match keeps the controller from writing on
    every reconcile (design rule 3).
    """
    current = current or {}
    conditions = _conditions(current, phase=phase, kind=kind, message=message)
    if current.get("phase") == phase.value and conditions == current.get("conditions"):
        return None
    return {
        "status": {
            "phase": phase.value,
            "lastTransitionTime": now_rfc3339(),
            "conditions": conditions,
        }
    }


RUN_PHASES = frozenset({CanaryPhase.PROGRESSING, CanaryPhase.WAITING, CanaryPhase.PROMOTING})
"""Phases that keep the weight and iteration counters when entered (Flagger's SetStatusPhase)."""


def sync_status_patch(
    *,
    current: dict[str, Any] | None,
    phase: CanaryPhase,
    kind: str,
    last_applied_spec: str,
    tracked_configs: dict[str, str] | None,
    canary_weight: int = 0,
    failed_checks: int = 0,
    iterations: int = 0,
    message: str | None = None,
) -> dict[str, Any]:
    """Flagger's ``SyncStatus``: a new run's status, with the revision it is about.

    The counters are reset unless given (Flagger writes zero values for omitted ones), and
    ``Initialized`` also records the revision as promoted. Tracked configs that disappeared are
    removed with ``null``, because a merge patch only adds and replaces map keys.
    """
    current = current or {}
    status: dict[str, Any] = {
        "phase": phase.value,
        "canaryWeight": canary_weight,
        "failedChecks": failed_checks,
        "iterations": iterations,
        "lastAppliedSpec": last_applied_spec,
        "lastTransitionTime": now_rfc3339(),
        "conditions": _conditions(current, phase=phase, kind=kind, message=message),
    }
    if tracked_configs is not None:
        old = current.get("trackedConfigs") or {}
        gone = {key: None for key in old if key not in tracked_configs}
        status["trackedConfigs"] = {**gone, **tracked_configs} or None
    if phase == CanaryPhase.INITIALIZED:
        status["lastPromotedSpec"] = last_applied_spec
    return {"status": status}


def set_phase_patch(
    *,
    current: dict[str, Any] | None,
    phase: CanaryPhase,
    kind: str,
    analysis_iterations: int,
    message: str | None = None,
) -> dict[str, Any]:
    """Flagger's ``SetStatusPhase``: the phase and condition, and the counters it implies.

    Leaving a run resets weight and iterations; ``WaitingPromotion`` keeps the iteration before
    the last, so the last one runs again once the gate opens. Flagger writes -1 there for canary
    strategies (no iterations); that is clamped to 0 here.
    """
    current = current or {}
    status: dict[str, Any] = {
        "phase": phase.value,
        "lastTransitionTime": now_rfc3339(),
        "conditions": _conditions(current, phase=phase, kind=kind, message=message),
    }
    if phase not in RUN_PHASES:
        status["canaryWeight"] = 0
        status["iterations"] = 0
    if phase == CanaryPhase.WAITING_PROMOTION:
        status["iterations"] = max(0, analysis_iterations - 1)
    if phase in (CanaryPhase.INITIALIZED, CanaryPhase.SUCCEEDED):
        status["lastPromotedSpec"] = current.get("lastAppliedSpec")
    return {"status": status}


def counters_patch(
    *,
    canary_weight: int | None = None,
    failed_checks: int | None = None,
    iterations: int | None = None,
) -> dict[str, Any]:
    """Flagger's ``SetStatusWeight`` / ``SetStatusFailedChecks`` / ``SetStatusIterations``."""
    status: dict[str, Any] = {"lastTransitionTime": now_rfc3339()}
    if canary_weight is not None:
        status["canaryWeight"] = canary_weight
    if failed_checks is not None:
        status["failedChecks"] = failed_checks
    if iterations is not None:
        status["iterations"] = iterations
    return {"status": status}
