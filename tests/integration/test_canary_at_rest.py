"""A canary at rest costs nothing until something changes, and drift is repaired on the event.

Flagger reconciles every canary once per analysis interval whatever its phase, re-reading its
objects to repair drift: idle work that grows with the number of canaries. ``flaggerpy
controller`` watches the objects a Canary owns instead: a canary that is Initialized,
Succeeded or Failed is reconciled when a person or another controller changes or deletes one
of them (or its target, or the Canary), and otherwise only every ten minutes
(``REST_RESYNC_SECONDS``). Checked on the local control plane with the Istio router: the
reconcile count of a canary at rest with a 1 s interval stays flat, a deleted VirtualService
and Service come back within seconds, and a new revision still starts a run at once.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from e2e.scenario import Scenario, canary, deployment
from e2e.scenarios.mesh import routes

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]

VIRTUAL_SERVICES = "virtualservices.networking.istio.io"


async def present(scenario: Scenario, kind: str, name: str, *, within: float) -> float:
    """Seconds until ``kind``/``name`` exists again; fails after ``within``."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if await scenario.get(kind, name) is not None:
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise AssertionError(f"{kind} {name} not recreated within {within} s")


async def test_a_canary_at_rest_is_reconciled_only_when_something_changes(
    scenario: Scenario,
) -> None:
    controller = await scenario.start_controller("-mesh-provider=istio")
    analysis = {"interval": "1s", "threshold": 2, "iterations": 2}
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"),
                         canary("podinfo", provider="istio", analysis=analysis))
    await scenario.wait_phase("podinfo", "Initialized", within=60)
    await asyncio.sleep(3)  # the primary's rollout and its last watch events are over

    at_rest = controller.reconciles()
    await asyncio.sleep(8)  # eight analysis intervals: Flagger would have reconciled 8 times
    assert controller.reconciles() == at_rest

    # Drift: the routing objects deleted by hand come back on the delete event.
    await scenario.kubectl("delete", VIRTUAL_SERVICES, "podinfo")
    await scenario.kubectl("delete", "service", "podinfo-canary")
    virtual_service = await present(scenario, VIRTUAL_SERVICES, "podinfo", within=15)
    service = await present(scenario, "service", "podinfo-canary", within=15)
    print(f"recreated after {virtual_service:.1f} s (VirtualService), "
          f"{service:.1f} s (Service)")
    assert routes(await scenario.get(VIRTUAL_SERVICES, "podinfo")) == {
        "podinfo-primary": 100, "podinfo-canary": 0}
    repaired = controller.reconciles()
    assert repaired > at_rest
    await asyncio.sleep(4)  # our own writes of the repair do not wake the canary again
    assert controller.reconciles() == repaired

    # A new revision is still seen at once, and the run ticks at its interval.
    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
    await scenario.wait_phase("podinfo", "Progressing", within=10)
    await scenario.wait_phase("podinfo", "Succeeded", within=60)
    assert controller.exit_code() is None
