"""A CanaryCommand whose controller died between its two writes is applied exactly once.

Answering a command takes two writes (:mod:`flaggerpy.canary.steering`): the Canary's
``status.steering`` first, then the command's status. Here the API server itself stops the second
one: a validating admission webhook (:class:`e2e.chaos.admission.HeldWrites`) holds the update
of the command's status while the test checks that the first write is in, SIGKILLs the
controller, and refuses the held write. A new controller then finds the command still Pending
and the Canary already carrying it. What must follow: the command ends Applied with the message
its first answer had, the request is carried out once (one promotion: one write of the primary
Deployment in the audit log and one "Promotion of" Event; one "Retrying" Event for a retry), and
the command's Event is recorded once.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest

from e2e.chaos.admission import HeldWrites
from e2e.chaos.outcome import AuditWindow, primary_writes
from e2e.cluster.localcluster import LocalCluster
from e2e.scenario import Scenario, canary, deployment
from flaggerpy.kube.config import default_user_agent
from flaggerpy.testing import eventually

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds"),
              pytest.mark.timeout(300)]

LONG_RUN = {"interval": "2s", "threshold": 2, "iterations": 30}
"""A Blue/Green run of a minute, no metrics: nothing but a command ends it early."""


def command(name: str, action: str) -> dict[str, Any]:
    return {"apiVersion": "flaggerpy.dev/v1alpha1", "kind": "CanaryCommand",
            "metadata": {"name": name}, "spec": {"canary": "podinfo", "action": action}}




@pytest.fixture
async def held(cluster: LocalCluster, namespace: str) -> AsyncIterator[HeldWrites]:
    webhook = HeldWrites(cluster, namespace=namespace, group="flaggerpy.dev",
                         resource="canarycommands")
    try:
        yield await webhook.start(probe=command("probe", "pause"))
    finally:
        await webhook.aclose()


async def progressing(scenario: Scenario) -> None:
    """A controller, a Canary initialised and a new revision under analysis."""
    await scenario.start_controller()
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"),
                         canary("podinfo", analysis=LONG_RUN))
    await scenario.wait_phase("podinfo", "Initialized", within=90)
    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
    await scenario.wait_phase("podinfo", "Progressing", within=60)


async def killed_between_writes(scenario: Scenario, held: HeldWrites, name: str,
                                action: str) -> dict[str, Any]:
    """Sends the command, kills the controller with its first write done and its second held,
    refuses the held write and starts a new controller; the Canary's steering state as the
    first controller left it."""
    held.arm("status")
    await scenario.apply(command(name, action))
    await asyncio.wait_for(held.held.wait(), timeout=60)
    steering = (await scenario.status("podinfo")).get("steering") or {}
    assert steering.get("command") == name  # the first write is in
    assert steering.get("request") == action  # and not yet carried out
    [controller] = [c for c in scenario.controllers if c.exit_code() is None]
    controller.signal(signal.SIGKILL)
    assert controller.process is not None
    await asyncio.to_thread(controller.process.wait, 10)
    held.release()
    await eventually(lambda: _refused(held, name), within=10, what="the held write refused")
    stored = await scenario.get("canarycommand", name)
    assert stored is not None
    assert not (stored.get("status") or {}).get("phase")  # still Pending: the answer never landed
    await scenario.start_controller()
    return steering


async def _refused(held: HeldWrites, name: str) -> bool:
    return any(seen.name == name and not seen.allowed for seen in held.admitted)


async def answered(scenario: Scenario, name: str) -> dict[str, Any]:
    """The command's status once it has a phase."""
    found: dict[str, Any] = {}

    async def done() -> bool:
        obj = await scenario.get("canarycommand", name)
        found.update(((obj or {}).get("status")) or {})
        return bool(found.get("phase"))

    await eventually(done, within=60, what=f"an answer to CanaryCommand {name}")
    return found


async def said(scenario: Scenario, words: str) -> dict[str, int]:
    """The Canary's Events with ``words`` in their message, by message: how many times each was
    recorded."""
    found: dict[str, int] = {}
    for event in await scenario.events("podinfo"):
        if (event.get("involvedObject") or {}).get("kind") != "Canary":
            continue
        message = str(event.get("message"))
        if words in message:
            found[message] = found.get(message, 0) + int(event.get("count") or 1)
    return found


async def said_once(scenario: Scenario, words: str) -> None:
    """Exactly one Event of the Canary says ``words``, recorded once."""
    found = await said(scenario, words)
    assert list(found.values()) == [1], "\n".join([words, str(found), *await said(scenario, "")])


async def test_a_promote_cut_short_by_a_kill_is_answered_and_promotes_once(
        scenario: Scenario, held: HeldWrites) -> None:
    await progressing(scenario)
    audit = AuditWindow.open(scenario.cluster.audit_log, scenario.namespace)

    await killed_between_writes(scenario, held, "promote-now", "promote")

    await scenario.wait_phase("podinfo", "Succeeded", within=90)
    status = await answered(scenario, "promote-now")
    assert status["phase"] == "Applied"
    assert status["message"] == "promotion requested: the analysis is skipped"
    # One answer written after the refused one, and the request carried out once.
    writes = [seen.allowed for seen in held.admitted
              if seen.name == "promote-now" and seen.subresource == "status"]
    assert writes == [False, True]
    await said_once(scenario, "CanaryCommand promote-now promote applied")
    await said_once(scenario, "requested by CanaryCommand promote-now: canary analysis skipped")
    await said_once(scenario, "Promotion completed!")
    await said_once(scenario, "template spec to podinfo-primary")
    assert primary_writes(audit.events(), primary="podinfo-primary",
                          user_agent=default_user_agent()) == 1
    assert (await scenario.status("podinfo"))["steering"].get("request") is None


async def test_a_retry_cut_short_by_a_kill_is_answered_and_retries_once(
        scenario: Scenario, held: HeldWrites) -> None:
    await progressing(scenario)
    await scenario.apply(command("stop", "abort"))
    assert (await answered(scenario, "stop"))["phase"] == "Applied"
    await scenario.wait_phase("podinfo", "Failed", within=60)

    await killed_between_writes(scenario, held, "again", "retry")

    await scenario.wait_phase("podinfo", "Progressing", within=60)
    status = await answered(scenario, "again")
    assert status["phase"] == "Applied"
    assert status["message"].startswith("a new run of revision ")
    # A few analysis ticks later the run goes on, started once.
    await asyncio.sleep(6)
    assert (await scenario.status("podinfo"))["phase"] == "Progressing"
    writes = [seen.allowed for seen in held.admitted
              if seen.name == "again" and seen.subresource == "status"]
    assert writes == [False, True]
    await said_once(scenario, "CanaryCommand again retry applied")
    await said_once(scenario, "as requested by CanaryCommand again")
    assert (await scenario.status("podinfo"))["steering"].get("request") is None
