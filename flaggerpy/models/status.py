"""Status types: the Canary status (where all analysis state lives) and status conditions.

Design rule 2 says state lives in ``Canary.status``: a restarted controller continues from
what it finds here. The fields and their meaning are Flagger's (``pkg/apis/flagger/v1beta1/
status.go``), so a Canary moved from Flagger to flaggerpy, or back, resumes where it was.
MetricTemplate and AlertProvider get a conditions-only status as well; Flagger never writes
one (its CRD does not even declare it), flaggerpy may use it to report a broken template or
provider.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, TypeVar

from pydantic import Field

from flaggerpy.models._base import Crd, FlaggerModel, Number
from flaggerpy.models.canary_command import SteeringStatus

__all__ = [
    "ANALYSIS_HISTORY_LIMIT",
    "PROMOTED_CONDITION",
    "AnalysisDecision",
    "CanaryCondition",
    "CanaryPhase",
    "CanaryStatus",
    "Condition",
    "ConditionStatus",
    "ResourceCondition",
    "ResourceStatus",
]

PROMOTED_CONDITION = "Promoted"
"""The one condition type Flagger writes on a Canary."""


class CanaryPhase(StrEnum):
    """Where a Canary is in its life cycle (``status.phase``), in Flagger's spelling.

    ``UNSET`` is the empty string a brand-new Canary has before the first reconcile. Flagger
    never writes ``Terminated``; it is kept because the CRD enum allows it.
    """

    UNSET = ""
    INITIALIZING = "Initializing"
    INITIALIZED = "Initialized"
    WAITING = "Waiting"
    PROGRESSING = "Progressing"
    WAITING_PROMOTION = "WaitingPromotion"
    PROMOTING = "Promoting"
    FINALISING = "Finalising"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TERMINATING = "Terminating"
    TERMINATED = "Terminated"


class ConditionStatus(StrEnum):
    """Values of a condition's ``status`` (Kubernetes' ``ConditionStatus``)."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(FlaggerModel):
    """A status condition: Kubernetes' shape plus Flagger's ``lastUpdateTime``.

    ``status`` stays a plain string so an object written by another tool still parses;
    compare it with :class:`ConditionStatus` members.
    """

    last_transition_time: datetime | None = Field(
        default=None, description="LastTransitionTime of this condition"
    )
    last_update_time: datetime | None = Field(
        default=None, description="LastUpdateTime of this condition"
    )
    message: str | None = Field(default=None, description="Message associated with this condition")
    reason: str = Field(description="Reason for the current status of this condition")
    status: str = Field(description="Status of this condition")
    type: str = Field(description="Type of this condition")


CanaryCondition = Condition
"""Flagger's name for the condition type on a Canary."""

_C = TypeVar("_C", bound=Condition)


def _find(conditions: Sequence[_C] | None, type_: str) -> _C | None:
    for condition in conditions or ():
        if condition.type == type_:
            return condition
    return None


ANALYSIS_HISTORY_LIMIT = 20
"""How many metric decisions ``status.analysisHistory`` keeps, newest last."""

_HISTORY_REASON = (
    "why the analysis decided what it did, per metric check (flaggerpy); optional, written by"
    " the controller, ignored by Flagger"
)


class AnalysisDecision(FlaggerModel):
    """One metric check of one analysis tick, as ``kubectl get canary -o yaml`` shows it.

    Written by the controller (``flaggerpy.canary.decisions``) so a person can see why a
    canary advanced, held, failed a check or rolled back without reading the logs. Queries are
    shown as sent, with any credential redacted.
    """

    time: datetime = Field(description="When the check ran")
    metric: str = Field(description="analysis.metrics[].name")
    verdict: str = Field(description="What the check found: Pass, Fail, NoData or Error")
    action: str = Field(
        description=(
            "What the controller did with it: pass, fail (a failed check counted), hold (the"
            " weight kept, nothing counted), skip (not judged this tick) or dry-run (reported"
            " only)"
        )
    )
    value: float | None = Field(default=None, description="The value judged, if one was obtained")
    threshold_min: float | None = Field(
        default=None, description="The lowest value accepted (thresholdRange.min)"
    )
    threshold_max: float | None = Field(
        default=None, description="The highest value accepted (thresholdRange.max or threshold)"
    )
    samples: int | None = Field(
        default=None, description="Requests (or values) the verdict rests on, when counted"
    )
    query: str | None = Field(default=None, description="The query as sent, credentials redacted")
    message: str | None = Field(default=None, description="The reason, in words")


_STEERING_REASON = (
    "the steering state CanaryCommands leave (flaggerpy); optional, written by the controller in"
    " status so a re-applied manifest cannot undo it, ignored by Flagger"
)


class CanaryStatus(FlaggerModel):
    """Observed state of a Canary: phase, counters, spec hashes and the ``Promoted`` condition."""

    phase: CanaryPhase | None = Field(default=None, description="Analysis phase of this canary")
    failed_checks: Number | None = Field(
        default=None, description="Failed check count of the current canary analysis"
    )
    canary_weight: Number | None = Field(
        default=None, description="Traffic weight routed to canary"
    )
    iterations: Number | None = Field(
        default=None, description="Iteration count of the current canary analysis"
    )
    tracked_configs: dict[str, str] | None = Field(
        default=None, description="TrackedConfig of this canary"
    )
    last_applied_spec: str | None = Field(
        default=None, description="LastAppliedSpec of this canary"
    )
    last_promoted_spec: str | None = Field(
        default=None, description="LastPromotedSpec of this canary"
    )
    last_transition_time: datetime | None = Field(
        default=None, description="LastTransitionTime of this canary"
    )
    session_affinity_cookie: str | None = Field(
        default=None, description="Session affinity cookie of the current canary run"
    )
    primary_session_affinity_cookie: str | None = Field(
        default=None, description="Primary session affinity cookie of the current canary run"
    )
    previous_session_affinity_cookie: str | None = Field(
        default=None, description="Session affinity cookie of the previous canary run"
    )
    conditions: list[Condition] | None = Field(
        default=None, description="Status conditions of this canary"
    )
    analysis_history: Annotated[
        list[AnalysisDecision] | None, Crd(new=True, reason=_HISTORY_REASON)
    ] = Field(
        default=None,
        description=(
            "flaggerpy: the latest metric decisions (at most 20, newest last): query, value,"
            " threshold, samples, verdict and what was done"
        ),
    )

    steering: Annotated[SteeringStatus | None, Crd(new=True, reason=_STEERING_REASON)] = Field(
        default=None,
        description=(
            "flaggerpy: what CanaryCommands set for the current revision (paused, approved, a"
            " pending promote/abort/retry); see docs/steering.md"
        ),
    )

    def get_condition(self, type_: str = PROMOTED_CONDITION) -> Condition | None:
        """The condition of that type (``Promoted`` by default), or ``None``."""
        return _find(self.conditions, type_)


class ResourceCondition(Condition):
    """A MetricTemplate's or AlertProvider's condition: adds Kubernetes' ``observedGeneration``.

    The generation the controller had read when it set the condition, so ``kubectl wait`` and
    tools can tell a condition about an older spec from one about the current spec. A Canary's
    conditions keep Flagger's shape.
    """

    observed_generation: int | None = Field(
        default=None, ge=0,
        description="The metadata.generation of the object when this condition was set",
    )


class ResourceStatus(FlaggerModel):
    """Conditions-only status of a MetricTemplate or AlertProvider (a flaggerpy addition)."""

    conditions: list[ResourceCondition] | None = Field(
        default=None, description="Status conditions of this object"
    )

    def get_condition(self, type_: str) -> ResourceCondition | None:
        """The condition of that type, or ``None``."""
        return _find(self.conditions, type_)
