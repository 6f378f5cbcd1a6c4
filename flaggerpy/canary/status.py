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
    previous = current.get("conditions")
    condition = promoted_condition(phase=phase, kind=kind, previous=previous, message=message)
    if current.get("phase") == phase.value and condition in (previous or []):
        return None
    others = [c for c in previous or [] if c.get("type") != PROMOTED]
    return {
        "status": {
            "phase": phase.value,
            "lastTransitionTime": condition["lastUpdateTime"],
            "conditions": [*others, condition],
        }
    }
