"""What initialising a batch of canaries costs in Events and reconciles.

Flagger 1.44, run side by side on the same control plane, writes 6 Events per blue/green canary
until it is Initialized (120 for 20). Each Event write -- a create, or a patch that bumps the
count of an identical one -- is an API request and an object in etcd, so a controller that
re-records the same message on every watch event during initialisation costs the API server
more than Flagger for nothing a user can read. The audit log counts the writes exactly.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from e2e.cluster import audit
from e2e.scenario import Scenario, canary, deployment

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]

CANARIES = 5
MAX_EVENT_WRITES_PER_CANARY = 3
"""What the controller needs: the providers are available, the primary is not ready yet (at
most once per analysis interval while it rolls out), initialisation done. Flagger's figure
is 6; before each watch event re-recorded them, it was 8 here (40 for these 5 canaries)."""




def slow_to_start(name: str) -> dict[str, Any]:
    """A target whose pods are available only seconds after they are ready, as on a real
    cluster: the primary's status then changes several times while initialisation waits."""
    target = deployment(name, image="podinfo:6.0.0")
    target["spec"]["minReadySeconds"] = 3
    return target


async def test_initialising_canaries_writes_each_event_once(scenario: Scenario) -> None:
    controller = await scenario.start_controller()
    names = [f"app{i}" for i in range(CANARIES)]
    since = datetime.now(UTC)
    await scenario.apply(*(slow_to_start(name) for name in names))
    # An interval longer than the test, so only initialisation is counted, never a tick.
    interval = {"interval": "1m", "threshold": 2, "iterations": 2}
    await scenario.apply(*(canary(name, analysis=interval) for name in names))
    await asyncio.gather(*(scenario.wait_phase(name, "Initialized", within=120)
                           for name in names))
    await asyncio.sleep(3)  # what a late watch event would still record, and the audit log
    until = datetime.now(UTC)
    counts = audit.count_requests(scenario.cluster.audit_log, user_agent="flaggerpy/",
                                  since=since, until=until, namespace=scenario.namespace)
    writes = counts.by_resource["create events"] + counts.by_resource["patch events"]
    # All reconciles (printed, not bounded: how many watch events a rollout produces depends
    # on the machine's speed).
    total = controller.reconciles()
    recorded = [e for name in names for e in await scenario.events(name)]
    print(f"{CANARIES} canaries initialised: {writes} Event writes "
          f"({dict(counts.by_resource)}), {total:.0f} reconciles; Events: "
          f"{sorted({(e['message'], e.get('count', 1)) for e in recorded})}")
    messages = {e["message"] for e in recorded}
    for name in names:
        assert f"Initialization done! {name}.{scenario.namespace}" in messages
    assert writes <= MAX_EVENT_WRITES_PER_CANARY * CANARIES, counts.by_resource
    assert controller.exit_code() is None
