"""The CanaryCommand that steers a canary, as ``kubectl flaggerpy`` and the dashboard create it.

One builder for both (:mod:`flaggerpy.kubectl.steer` and :mod:`flaggerpy.dashboard.server`), so a
command from the browser is the same object as one from the terminal: the controller answers
both alike (docs/steering.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flaggerpy import kube
from flaggerpy.models import canary_command

__all__ = ["REQUESTED_BY", "command_body", "create", "outcome"]

REQUESTED_BY = "flaggerpy.dev/requested-by"
"""The annotation naming who asked, when the creator is not the asker (the dashboard creates
commands with the controller's identity, after the API server authorised the user)."""


def command_body(
        *,
        canary: str,
        action: canary_command.Action,
        revision: str | None,
        reason: str,
        requested_by: str | None = None,
) -> kube.JsonObject:
    """The CanaryCommand to create: named after the canary by the server (generateName)."""
    spec: dict[str, Any] = {"canary": canary, "action": action.value}
    if revision:
        spec["revision"] = revision
    if reason:
        spec["reason"] = reason
    metadata: dict[str, Any] = {"generateName": f"{canary}-{action.value}-"}
    if requested_by:
        metadata["annotations"] = {REQUESTED_BY: requested_by}
    return {
        "apiVersion": kube.CANARY_COMMANDS.api_version,
        "kind": kube.CANARY_COMMANDS.kind,
        "metadata": metadata,
        "spec": spec,
    }


def outcome(command: Mapping[str, Any]) -> tuple[canary_command.Phase, str] | None:
    """The command's answered phase and message; None while the controller has not answered."""
    status = command.get("status") or {}
    try:
        phase = canary_command.Phase(status.get("phase") or canary_command.Phase.PENDING)
    except ValueError:
        return None
    if phase is canary_command.Phase.PENDING:
        return None
    return phase, str(status.get("message") or "")


async def create(
        client: kube.KubeClient,
        canary: Mapping[str, Any],
        *,
        action: canary_command.Action,
        reason: str = "",
        requested_by: str | None = None,
) -> kube.JsonObject:
    """Creates the command for ``canary`` as read just before, for the revision it was at
    (its ``status.lastAppliedSpec``): a command that arrives after a new revision started is
    rejected instead of acting on it."""
    meta = canary.get("metadata") or {}
    revision = str((canary.get("status") or {}).get("lastAppliedSpec") or "") or None
    return await client.create(
        kube.CANARY_COMMANDS,
        command_body(canary=str(meta.get("name") or ""), action=action, revision=revision,
                     reason=reason, requested_by=requested_by),
        namespace=str(meta.get("namespace") or ""))
