"""Steering after a restart between a command's two writes: answered as before, applied once.

The controller writes the Canary's ``status.steering`` first, then the command's answer, then the
Event. A controller killed after the first write leaves the command Pending with the Canary
already naming it; the next :meth:`Steering.answer` must not decide again (the state is written)
but give the answer and the Event the first would have. The end-to-end form, with the second write
held at the API server and the controller killed there, is
``tests/integration/test_steering_kill.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from flaggerpy import kube
from flaggerpy.canary import steering
from flaggerpy.models.canary_command import Action

REVISION = "5b7c9d"

APPLICABLE = {
    Action.PROMOTE: "Progressing",
    Action.ABORT: "Progressing",
    Action.DENY: "WaitingPromotion",
    Action.RETRY: "Failed",
    Action.PAUSE: "Progressing",
    Action.APPROVE: "Waiting",
}
"""A phase in which each action applies (resume: to a paused run, set up below)."""


class Store:
    """The two calls :class:`steering.Steering` makes, recorded; commands served from a dict."""

    def __init__(self, *commands: dict[str, Any]) -> None:
        self.commands = {c["metadata"]["name"]: c for c in commands}
        self.patches: list[tuple[str, str, dict[str, Any]]] = []

    async def get(self, resource: kube.Resource, *, namespace: str,
                  name: str) -> dict[str, Any] | None:
        assert resource == kube.CANARY_COMMANDS
        return self.commands.get(name)

    async def patch(self, resource: kube.Resource, *, namespace: str, name: str,
                    subresource: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.patches.append((resource.plural, name, patch))
        return {"metadata": {"name": name, "namespace": namespace}, **patch}


def command(name: str, action: Action) -> dict[str, Any]:
    return {"apiVersion": "flaggerpy.dev/v1alpha1", "kind": "CanaryCommand",
            "metadata": {"name": name, "namespace": "test",
                         "creationTimestamp": "2026-12-06T00:00:00Z"},
            "spec": {"canary": "podinfo", "action": action.value}}


def canary(status: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"}, "status": dict(status)}


async def answer(store: Store, obj: dict[str, Any]) -> list[str]:
    said: list[str] = []

    async def say(_: Mapping[str, Any], message: str, warning: bool) -> None:
        said.append(message)

    steerer = steering.Steering(store=store,  # type: ignore[arg-type]  # the two calls it makes
                                commands=lambda _: list(store.commands.values()))
    await steerer.answer(obj, say=say)
    return said


@pytest.mark.parametrize("action", [*APPLICABLE, Action.RESUME], ids=lambda a: a.value)
async def test_a_command_cut_short_gets_the_first_answer_and_event_once(action: Action) -> None:
    first_status: dict[str, Any] = {"phase": APPLICABLE.get(action, "Progressing"),
                                    "lastAppliedSpec": REVISION}
    if action is Action.RESUME:
        first_status["steering"] = {"revision": REVISION, "paused": True, "command": "hold"}

    # The first controller: state, answer and Event.
    first = Store(command("cmd-1", action))
    said_first = await answer(first, canary(first_status))
    [(_, _, state_patch), (_, _, reply)] = first.patches
    assert reply["status"]["phase"] == "Applied"

    # A second controller finds the state written and the command still Pending.
    resumed_status = {**first_status, **state_patch["status"]}
    second = Store(command("cmd-1", action))
    said_second = await answer(second, canary(resumed_status))

    [(plural, name, resumed_reply)] = second.patches  # the answer only: no second state write
    assert (plural, name) == ("canarycommands", "cmd-1")
    assert resumed_reply["status"]["phase"] == "Applied"
    assert resumed_reply["status"]["message"] == reply["status"]["message"]
    assert said_second == said_first
    assert len(said_second) == 1
