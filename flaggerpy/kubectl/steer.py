"""``kubectl flaggerpy`` promote, abort, retry, pause, resume, approve and deny.

Each one creates a ``CanaryCommand`` (``flaggerpy.dev/v1alpha1``) next to the Canary and waits for
the controller's answer in the command's status. It never writes the Canary itself: the right to
steer is the right to create CanaryCommands, not the right to edit the Canary (docs/steering.md).
The command carries the revision it is meant for (the Canary's ``status.lastAppliedSpec`` as read
here), so a command that arrives after a new revision started is rejected instead of acting on it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from typing import Final, TextIO

from flaggerpy import kube
from flaggerpy.dashboard import commands
from flaggerpy.dashboard.commands import command_body, outcome
from flaggerpy.models import canary_command

__all__ = ["DEFAULT_TIMEOUT", "command_body", "outcome", "register"]

DEFAULT_TIMEOUT: Final = 60.0
"""How long a command waits for the controller's answer unless ``--timeout`` says otherwise."""
POLL_SECONDS: Final = 0.5

_HELP: Final[Mapping[canary_command.Action, str]] = {
    canary_command.Action.PROMOTE: "skip the rest of the analysis and promote the canary now",
    canary_command.Action.ABORT: "roll the canary back now (phase Failed)",
    canary_command.Action.RETRY: "run a Failed canary's last revision again",
    canary_command.Action.PAUSE: "hold the current run where it is",
    canary_command.Action.RESUME: "let a paused run continue",
    canary_command.Action.APPROVE: "open the manual gates (confirm-*) of the current run",
    canary_command.Action.DENY: "refuse the manual gates of the current run: roll it back",
}


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds one subcommand per steering action."""
    for action, text in _HELP.items():
        sub = commands.add_parser(action.value, help=text,
                                  description=text[:1].upper() + text[1:] + ".")
        sub.add_argument("name", metavar="NAME", help="the Canary")
        sub.add_argument("--reason", default="", help="why (recorded in the command and the Event)")
        sub.add_argument("--no-wait", action="store_true",
                         help="create the command and return without waiting for its outcome")
        sub.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                         help=f"seconds to wait for the outcome (default {DEFAULT_TIMEOUT:g})")
        sub.set_defaults(handler=_steer, action=action)


async def _steer(args: argparse.Namespace, client: kube.KubeClient) -> int:
    return await steer(
        client, namespace=args.namespace or "default", name=args.name,
        action=args.action, reason=args.reason, wait=not args.no_wait,
        wait_seconds=args.timeout)


async def steer(
        client: kube.KubeClient,
        *,
        namespace: str,
        name: str,
        action: canary_command.Action,
        reason: str = "",
        wait: bool = True,
        wait_seconds: float = DEFAULT_TIMEOUT,
        out: TextIO | None = None,
) -> int:
    """Creates the command for ``name`` and (with ``wait``) prints its outcome; the exit status."""
    out = out or sys.stdout
    try:
        canary = await client.get(kube.CANARIES, name, namespace=namespace)
    except kube.NotFoundError:
        print(f"canary {namespace}/{name} not found", file=sys.stderr)
        return 1
    created = await commands.create(client, canary, action=action, reason=reason)
    command_name = created["metadata"]["name"]
    print(f"canarycommand {namespace}/{command_name} created ({action.value} {name})", file=out)
    if not wait:
        return 0
    answer = outcome(created)
    if answer is None:
        try:
            async with asyncio.timeout(wait_seconds):
                answer = await _answer(client, namespace=namespace, name=command_name)
        except TimeoutError:
            print(f"no answer from the controller within {wait_seconds:g}s "
                  f"(is flaggerpy running for namespace {namespace}?)", file=sys.stderr)
            return 1
    phase, message = answer
    print(f"{phase.value}: {message}", file=out)
    return 0 if phase is canary_command.Phase.APPLIED else 1


async def _answer(
        client: kube.KubeClient, *, namespace: str, name: str,
) -> tuple[canary_command.Phase, str]:
    """Reads the command until the controller answers; the caller bounds the wait.

    A GET every half second rather than a watch: one object for a minute at most, and a watch
    left early would leave its connection half-closed when the command's loop ends.
    """
    while True:
        current = await client.get(kube.CANARY_COMMANDS, name, namespace=namespace)
        answer = outcome(current)
        if answer is not None:
            return answer
        await asyncio.sleep(POLL_SECONDS)
