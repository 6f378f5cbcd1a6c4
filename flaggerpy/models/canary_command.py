"""CanaryCommand (``flaggerpy.dev/v1alpha1``) and the steering state it leaves on a Canary.

A CanaryCommand asks the controller to steer one Canary of its namespace: promote, abort, retry,
pause, resume, approve or deny. It is a separate kind, not an annotation or a spec field, so that
the right to steer is ``create canarycommands`` (not ``update canaries``), so that each request
has its own answer (``status.phase``) and audit trail, and so that re-applying the Canary's
manifest (``kubectl apply``, GitOps) can neither replay nor undo one. The controller keeps what a
command changed in the Canary's ``status.steering`` (:class:`SteeringStatus`), where a restart
finds it. docs/steering.md has the design.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from flaggerpy.models._base import FlaggerModel, KubeObject

__all__ = [
    "GROUP",
    "VERSION",
    "Action",
    "CanaryCommand",
    "CanaryCommandSpec",
    "CanaryCommandStatus",
    "Phase",
    "SteeringStatus",
]

GROUP = "flaggerpy.dev"
VERSION = "v1alpha1"


class Action(StrEnum):
    """What a command asks for (``spec.action``)."""

    PROMOTE = "promote"
    ABORT = "abort"
    RETRY = "retry"
    PAUSE = "pause"
    RESUME = "resume"
    APPROVE = "approve"
    DENY = "deny"


class Phase(StrEnum):
    """The controller's answer (``status.phase``): not yet seen, done, or refused with a reason."""

    PENDING = "Pending"
    APPLIED = "Applied"
    REJECTED = "Rejected"


class CanaryCommandSpec(FlaggerModel):
    """Which Canary, what to do, for which revision, and why."""

    canary: str = Field(description="Name of the Canary, in the command's namespace", min_length=1)
    action: Action = Field(
        description="promote, abort, retry, pause, resume, approve or deny")
    revision: str | None = Field(
        default=None,
        description=(
            "The Canary's status.lastAppliedSpec the command is meant for; a command for another"
            " revision is rejected, so it never acts on a later run"
        ),
    )
    reason: str | None = Field(
        default=None, description="Why; recorded in the Canary's Event and the controller's log")


class CanaryCommandStatus(FlaggerModel):
    """The controller's answer to one command; a command is answered once."""

    phase: Phase | None = Field(default=None, description="Pending, Applied or Rejected")
    message: str | None = Field(default=None, description="What was done, or why not")
    observed_at: datetime | None = Field(default=None, description="When the controller answered")


class CanaryCommand(KubeObject):
    """A request to steer one Canary; see the module docstring."""

    spec: CanaryCommandSpec = Field(description="The request")
    status: CanaryCommandStatus | None = Field(default=None, description="The answer")


class SteeringStatus(FlaggerModel):
    """What CanaryCommands have set for one revision of a Canary (``status.steering``).

    It belongs to the run of ``revision``: when a new revision starts, the controller drops it,
    so a pause or an approval never leaks into the next run. A pending ``promote``, ``abort``
    or ``retry`` is carried here (not acted on inside the command handler) so that the canary's
    own reconcile does the work, with its Events and alerts, and a restart finds it undone.
    """

    revision: str | None = Field(
        default=None, description="The status.lastAppliedSpec this steering state applies to")
    paused: bool | None = Field(default=None, description="The run is held where it is")
    approved: bool | None = Field(
        default=None, description="The manual gates (confirm-*) of this run are open")
    request: Action | None = Field(
        default=None,
        description="A promote, abort or retry (or deny) not yet carried out by the controller")
    reason: str | None = Field(default=None, description="The reason the pending request gave")
    command: str | None = Field(
        default=None, description="The name of the last CanaryCommand applied")
