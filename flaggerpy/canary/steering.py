"""Steering: pending CanaryCommands become the Canary's steering state and each command's answer.

A CanaryCommand (``flaggerpy.dev/v1alpha1``, docs/steering.md) is answered once, in creation
order, at the start of its Canary's reconcile: :func:`decide` (pure) says whether it applies to
the Canary as its status is now and what ``status.steering`` becomes; :class:`Steering` writes
that state into the Canary's status first, then the answer into the command's status, then an
Event on the Canary. If the process dies between the two writes, the next reconcile finds the
command still pending but named in ``status.steering.command``: it writes the answer the first
one would have (:func:`applied_message`) and the Event it never recorded, and does not decide
again, so nothing is applied twice.

What a command set is carried out by the lifecycle (:mod:`flaggerpy.canary.lifecycle`) on the
same reconcile: a pending ``request`` (promote, abort, deny, retry) is acted on and cleared, a
pause holds the run, an approval opens the run's manual gates. The state belongs to one
revision (``status.lastAppliedSpec``): a new revision starts without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog
from pydantic import ValidationError

from flaggerpy import kube
from flaggerpy.canary import status as canary_status
from flaggerpy.canary.alerting import AlertMessage
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.models import CanaryPhase
from flaggerpy.models.canary_command import Action, CanaryCommand, Phase, SteeringStatus
from flaggerpy.notifying import Severity

log = structlog.get_logger(__name__)

__all__ = [
    "CANARY_INDEX",
    "PAUSED_PREFIX",
    "Outcome",
    "Steering",
    "applied_message",
    "canary_of",
    "clear_request_patch",
    "decide",
    "pending",
    "rollback_alert",
    "served",
    "state_of",
    "with_revision",
]

PROBE_SECONDS: Final = 5.0
"""How long the start-up check for the CanaryCommand CRD waits for the API server."""

CANARY_INDEX: Final = "canary"
"""CanaryCommands by ``<namespace>/<spec.canary>``: the commands of one Canary."""

PAUSED_PREFIX: Final = "Paused by CanaryCommand"
"""How the ``Promoted`` condition of a paused run starts (and how a resume finds it)."""

RUNNING: Final = frozenset({CanaryPhase.PROGRESSING, CanaryPhase.WAITING_PROMOTION})
"""Phases of a run whose analysis a promote can cut short and a pause can hold."""
HOLDABLE: Final = RUNNING | {CanaryPhase.PROMOTING, CanaryPhase.FINALISING}
GATED: Final = RUNNING | {CanaryPhase.WAITING}
"""Phases in which a manual gate (confirm-rollout, -traffic-increase, -promotion) can be shut."""

Say = Callable[[Mapping[str, Any], str, bool], Awaitable[None]]
"""Records an Event on the Canary: the object, the message, whether it is a Warning."""


def canary_of(command: Mapping[str, Any]) -> str | None:
    """The index value of a CanaryCommand: its namespace and the Canary it names."""
    name = (command.get("spec") or {}).get("canary")
    namespace = (command.get("metadata") or {}).get("namespace") or ""
    return f"{namespace}/{name}" if name else None


def state_of(status: Mapping[str, Any] | None) -> SteeringStatus:
    """The steering state of the Canary's current revision; empty if it was set for another."""
    status = status or {}
    raw = status.get("steering") or {}
    try:
        state = SteeringStatus.model_validate(raw)
    except ValidationError:
        return SteeringStatus()
    if state.revision != (status.get("lastAppliedSpec") or None):
        # Only the name of the last command applied survives a new revision: it is what makes
        # re-answering that command idempotent.
        return SteeringStatus(command=state.command)
    return state


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer to one command and, when Applied, the Canary's steering state after it."""

    phase: Phase
    message: str
    state: SteeringStatus | None = None


def _rejected(message: str) -> Outcome:
    return Outcome(Phase.REJECTED, message)


def applied_message(action: Action, *, revision: str | None) -> str:
    """What an Applied answer to ``action`` says, for a Canary at ``revision``.

    It depends on nothing else, so a command whose answer a restart cut short is answered with
    the same words as it would have been.
    """
    messages = {
        Action.PROMOTE: "promotion requested: the analysis is skipped",
        Action.ABORT: "rollback requested",
        Action.DENY: "rollback requested",
        Action.RETRY: f"a new run of revision {revision} requested",
        Action.PAUSE: "the run is paused",
        Action.RESUME: "the run resumes",
        Action.APPROVE: "the manual gates of this run are open",
    }
    return messages[action]


def decide(
        command: CanaryCommand, *, status: Mapping[str, Any] | None,
) -> Outcome:
    """Whether ``command`` applies to a Canary whose status is ``status``, and what it sets."""
    status = status or {}
    spec = command.spec
    action = spec.action
    phase = CanaryPhase(status.get("phase") or "")
    revision = status.get("lastAppliedSpec") or None
    if spec.revision and spec.revision != revision:
        return _rejected(f"{action} was meant for revision {spec.revision}; the canary is at "
                         f"{revision or 'no revision yet'}")
    state = state_of(status)
    base = {"revision": revision, "command": command.name, "reason": spec.reason or None}
    shown = phase.value or "not initialized"

    def applied(**changes: Any) -> Outcome:
        return Outcome(Phase.APPLIED, applied_message(action, revision=revision),
                       state.model_copy(update={**base, **changes}))

    if state.request is not None and action in (Action.PROMOTE, Action.ABORT, Action.DENY,
                                                Action.RETRY):
        return _rejected(f"{state.request} (CanaryCommand {state.command}) is still being "
                         f"carried out")
    if action is Action.PROMOTE:
        if phase not in RUNNING:
            return _rejected(f"nothing to promote: the canary is {shown}, no analysis runs")
        # A paused run is promoted too: the pause would otherwise hold the promotion itself.
        return applied(request=Action.PROMOTE, paused=None)
    if action in (Action.ABORT, Action.DENY):
        if phase not in GATED:
            return _rejected(f"nothing to {action}: the canary is {shown}, no analysis runs")
        return applied(request=action)
    if action is Action.RETRY:
        if phase != CanaryPhase.FAILED:
            return _rejected(f"only a Failed canary can be retried; it is {shown}")
        return applied(request=Action.RETRY, paused=None, approved=None)
    if action is Action.PAUSE:
        if phase not in HOLDABLE:
            return _rejected(f"nothing to pause: the canary is {shown}, no analysis runs")
        if state.paused:
            return _rejected("the run is already paused")
        return applied(paused=True)
    if action is Action.RESUME:
        if not state.paused:
            return _rejected("the run is not paused")
        return applied(paused=None)
    if action is Action.APPROVE:
        if phase not in GATED:
            return _rejected(f"nothing to approve: the canary is {shown}, no analysis runs")
        return applied(approved=True)
    raise AssertionError(f"unhandled action {action}")  # pragma: no cover


def pending(commands: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The commands not yet answered, oldest first (creation time, then name)."""
    waiting = [c for c in commands
               if ((c.get("status") or {}).get("phase") or Phase.PENDING) == Phase.PENDING]
    return sorted(waiting, key=lambda c: (str((c.get("metadata") or {}).get(
        "creationTimestamp") or ""), str((c.get("metadata") or {}).get("name") or "")))


async def served(client: kube.KubeClient, *, namespace: str | None) -> bool:
    """Whether CanaryCommands can be read here: their CRD installed and our RBAC granting it.

    Asked once at start-up (one list of one item, as Flagger checks its own CRDs), so that a
    cluster upgraded without the new CRD (Helm leaves ``crds/`` alone on upgrade) or with an
    older ClusterRole still runs its canaries, without steering, instead of waiting for a cache
    that can never sync.
    """
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            await client.list(kube.CANARY_COMMANDS, namespace=namespace, limit=1)
    except (kube.NotFoundError, kube.ForbiddenError) as error:
        log.warning("canary_commands_unavailable", reason=str(error),
                    remedy="apply the chart's CRDs and ClusterRole, then restart")
        return False
    except (TimeoutError, kube.KubeError) as error:
        # No answer yet (the API server starting, unreachable, overloaded): the start must not
        # wait for it (the telemetry server comes after), and the cache waits like the others.
        log.info("canary_commands_probe_unanswered", reason=str(error) or "timeout",
                 seconds=PROBE_SECONDS)
    return True


class Steering:
    """Answers a Canary's pending commands; one instance per controller process."""

    def __init__(
            self,
            *,
            store: kube.ObjectStore,
            commands: Callable[[str], Sequence[Mapping[str, Any]]],  # by CANARY_INDEX value
    ) -> None:
        self._store = store
        self._commands = commands

    def has_pending(self, key: ObjectKey) -> bool:
        """Whether the Canary has commands not yet answered (a cache read, no request)."""
        return bool(pending(self._commands(f"{key.namespace}/{key.name}")))

    async def answer(self, obj: dict[str, Any], *, say: Say) -> dict[str, Any]:
        """Answers every pending command of the Canary ``obj``; the Canary as last written."""
        key = kube.key_of(obj)
        for raw in await self._pending(key):
            try:
                command = CanaryCommand.model_validate(raw)
            except ValidationError as error:
                await self._reply(raw, Outcome(Phase.REJECTED, f"invalid command: {error}"))
                continue
            status = obj.get("status") or {}
            steered = status.get("steering") or {}
            if steered.get("command") == command.name:
                # Applied before a restart cut the answer short: its state is written, its
                # answer and Event are not (they come after). Give those, decide nothing again.
                outcome = Outcome(Phase.APPLIED, applied_message(
                    command.spec.action,
                    revision=steered.get("revision") or status.get("lastAppliedSpec")))
            else:
                outcome = decide(command, status=status)
            if outcome.state is not None:
                obj = await self._store.patch(
                    kube.CANARIES, namespace=key.namespace, name=key.name, subresource="status",
                    patch={"status": {"steering": _wire(outcome.state)}})
            await self._reply(raw, outcome)
            reason = f" ({command.spec.reason})" if command.spec.reason else ""
            verb = "applied" if outcome.phase is Phase.APPLIED else "rejected"
            log.info("canary_command_answered", command=command.name,
                     action=command.spec.action.value, phase=outcome.phase.value,
                     message=outcome.message)
            await say(obj, f"CanaryCommand {command.name} {command.spec.action} {verb}: "
                           f"{outcome.message}{reason}", outcome.phase is Phase.REJECTED)
        return obj

    async def reject_all(self, key: ObjectKey, message: str) -> None:
        """Answers every pending command of a Canary that does not exist (or cannot be read)."""
        for raw in await self._pending(key):
            await self._reply(raw, Outcome(Phase.REJECTED, message))

    async def _pending(self, key: ObjectKey) -> list[Mapping[str, Any]]:
        """The Canary's unanswered commands as the store shows them: an answer written a moment
        ago and not yet in the cache counts as given."""
        found = []
        for cached in pending(self._commands(f"{key.namespace}/{key.name}")):
            ref = kube.key_of(cached)
            current = await self._store.get(kube.CANARY_COMMANDS, namespace=ref.namespace,
                                            name=ref.name)
            if current is not None and pending([current]):
                found.append(current)
        return found

    async def _reply(self, raw: Mapping[str, Any], outcome: Outcome) -> None:
        key = kube.key_of(raw)
        log.debug("canary_command_reply", command=key.name, phase=outcome.phase.value)
        try:
            await self._store.patch(
                kube.CANARY_COMMANDS, namespace=key.namespace, name=key.name,
                subresource="status", patch={"status": {
                    "phase": outcome.phase.value, "message": outcome.message,
                    "observedAt": canary_status.now_rfc3339()}})
        except kube.NotFoundError:
            log.info("canary_command_gone", command=key.name)


def rollback_alert(message: str) -> AlertMessage:
    """The alert of a run a person rolled back (abort, deny), as a failed analysis alerts."""
    return AlertMessage(text=message, severity=Severity.WARN, metadata=True)


def clear_request_patch() -> dict[str, Any]:
    """A status patch that drops the carried-out request (and its reason)."""
    return {"status": {"steering": {"request": None, "reason": None}}}


def with_revision(
        patch: dict[str, Any], *, state: SteeringStatus, revision: str,
) -> dict[str, Any]:
    """``patch`` (a status patch starting a run) keeping the approval for the run's revision.

    An approval given while the canary waits at confirm-rollout is for the run it starts, whose
    revision is only recorded when it starts.
    """
    steering = _wire(state.model_copy(update={"revision": revision, "request": None,
                                              "reason": None}))
    return {**patch, "status": {**patch.get("status", {}), "steering": steering}}


def _wire(state: SteeringStatus) -> dict[str, Any]:
    """The state as a merge patch: every field, the unset ones null so that they are removed."""
    return state.model_dump(mode="json", by_alias=True)
