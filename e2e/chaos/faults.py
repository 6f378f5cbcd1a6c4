"""The faults: each a coroutine that waits for its moment in a :class:`Release` and strikes.

A fault ends by itself (the release waits for it after the canary finished), so what it leaves
behind is known: a killed controller has been replaced, a stopped Prometheus resumed, a hung
endpoint answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from typing import Any

from e2e.bench.failover import current_leader
from e2e.chaos.release import CANARY, INTERVAL, Fault, Release
from e2e.simulator.sources import VIRTUAL_SERVICES
from flaggerpy import kube
from flaggerpy.kube.config import default_user_agent
from flaggerpy.testing import eventually

__all__ = ["KILL_MOMENTS", "conflict_storm", "hung_endpoint", "kill_after_gate_approval",
           "kill_after_primary_write", "kill_at", "kill_leader_at", "prometheus_stopped",
           "restarted"]

Status = dict[str, Any]


async def _exists(release: Release, kind: str, name: str) -> bool:
    return await release.scenario.get(kind, name) is not None


def _after_push(release: Release, check: Callable[[Status], bool]) -> Callable[[Status], bool]:
    return lambda status: release.pushed.is_set() and check(status)


KILL_MOMENTS: dict[str, Callable[[Status], bool]] = {
    "initializing": lambda s: s.get("phase") in ("", "Initializing", None),
    "weight-step": lambda s: s.get("phase") == "Progressing" and s.get("canaryWeight") == 25,
    "promoting": lambda s: s.get("phase") == "Promoting",
    "finalising": lambda s: s.get("phase") == "Finalising",
    "rollback": lambda s: s.get("phase") == "Progressing" and s.get("failedChecks", 0) >= 2,
}
"""Phase name -> when the controller is killed. ``initializing`` strikes before the first
status (the controller is killed while it creates the primary and the routes)."""


def kill_at(moment: str, *, delay: float = 0.0) -> Fault:
    """SIGKILL the controller ``delay`` seconds after the Canary is first seen at ``moment``."""
    wanted = KILL_MOMENTS[moment]

    async def fault(release: Release) -> None:
        if moment == "initializing":
            # The controller has started on the Canary: the primary Deployment appears.
            await eventually(lambda: _exists(release, "deployment", f"{CANARY}-primary"),
                             within=120, what="the primary Deployment")
        else:
            await release.wait_for(_after_push(release, wanted), within=150, poll=0.02)
        await asyncio.sleep(delay)
        await release.kill()

    return fault


def kill_after_gate_approval(path: str = "/confirm-promotion") -> Fault:
    """SIGKILL the controller the moment the gate at ``path`` answered yes (it always does
    here), before the controller can write the step the approval allows."""

    async def fault(release: Release) -> None:
        await release.wait_for(lambda s: release.pushed.is_set(), within=120)
        before = sum(1 for call in release.receiver.calls if call.path == path)
        deadline = time.monotonic() + 150
        while sum(1 for call in release.receiver.calls if call.path == path) == before:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} was never asked")
            await asyncio.sleep(0.005)
        await release.kill()

    return fault


def kill_leader_at(moment: str) -> Fault:
    """With two replicas electing a leader: SIGKILL the leader at ``moment``; a new standby
    joins (the one that was standing by takes over once the Lease expires)."""
    wanted = KILL_MOMENTS[moment]

    async def fault(release: Release) -> None:
        await release.wait_for(_after_push(release, wanted), within=150, poll=0.02)
        scenario = release.scenario
        async with await kube.KubeClient.connect(kubeconfig=scenario.cluster.kubeconfig) as client:
            leader = await current_leader(client, scenario.namespace, release.controllers)
        await release.kill(leader)

    return fault


def conflict_storm(*, period: float = 0.05) -> Fault:
    """A second writer: from the new revision until the end, patches an annotation of the Canary,
    its VirtualService and apex Service every ``period`` seconds, so that every conditional write
    of the controller races a newer resourceVersion (409 Conflict)."""

    async def fault(release: Release) -> None:
        scenario = release.scenario
        await release.wait_for(lambda s: release.pushed.is_set(), within=120)
        targets = [(kube.CANARIES, CANARY), (VIRTUAL_SERVICES, CANARY), (kube.SERVICES, CANARY)]
        async with await kube.KubeClient.connect(
            kubeconfig=scenario.cluster.kubeconfig, user_agent="chaos-second-writer",
            field_manager="chaos-second-writer",
        ) as client:
            beat = 0
            while release.status.get("phase") not in ("Succeeded", "Failed") or not (
                    release.status.get("lastPromotedSpec") == release.status.get(
                        "lastAppliedSpec") or release.status.get("phase") == "Failed"):
                beat += 1
                for resource, name in targets:
                    with contextlib.suppress(kube.NotFoundError):
                        await client.patch(resource, name, {"metadata": {"annotations": {
                            "chaos.flaggerpy.dev/beat": str(beat)}}},
                            namespace=scenario.namespace)
                await asyncio.sleep(period)

    return fault


def prometheus_stopped(*, intervals: float = 2.0) -> Fault:
    """Prometheus stops answering (SIGSTOP: connections hang, as a wedged server's do) for
    ``intervals`` analysis intervals from the first weight step, then resumes (SIGCONT)."""

    async def fault(release: Release) -> None:
        await release.wait_for(_after_push(release, KILL_MOMENTS["weight-step"]), within=150)
        prometheus = release.scenario.prometheus
        assert prometheus is not None
        process = prometheus._process  # the server's own process: nothing else to signal
        assert process is not None
        process.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(intervals * INTERVAL)
        finally:
            process.send_signal(signal.SIGCONT)

    return fault


def hung_endpoint(path: str, *, intervals: float | None = 2.0, hang: float = 60.0) -> Fault:
    """The receiver's ``path`` (a webhook or a notifier) takes ``hang`` seconds to answer,
    from the first weight step for ``intervals`` analysis intervals, then answers at once;
    with ``intervals=None``, every request of the run hangs."""

    async def fault(release: Release) -> None:
        if intervals is None:
            release.receiver.answer(path, 200, delay=hang)
            return
        await release.wait_for(_after_push(release, KILL_MOMENTS["weight-step"]), within=150)
        release.receiver.answer(path, 200, delay=hang)
        try:
            await asyncio.sleep(intervals * INTERVAL)
        finally:
            release.receiver.answer(path, 200)

    return fault


def restarted(component: str, *, down_for: float = INTERVAL) -> Fault:
    """At the first weight step, stop ``etcd`` or ``kube-apiserver`` for ``down_for`` seconds
    and start it again (the release's cluster must be one no other test uses)."""

    async def fault(release: Release) -> None:
        await release.wait_for(_after_push(release, KILL_MOMENTS["weight-step"]), within=150)
        await asyncio.to_thread(release.scenario.cluster.restart, component, down_for=down_for)

    return fault


def kill_after_primary_write() -> Fault:
    """SIGKILL the controller as soon as the audit log shows the promotion's write of the
    primary Deployment: most often before the status says Promoting, the instant at which a
    restarted controller could promote a second time."""

    async def fault(release: Release) -> None:
        await release.wait_for(lambda s: release.pushed.is_set(), within=120)
        scenario = release.scenario
        needle = (f'"resource":"deployments","namespace":"{scenario.namespace}",'
                  f'"name":"{CANARY}-primary"').encode()
        agent = f'"userAgent":"{default_user_agent()}'.encode()
        with scenario.cluster.audit_log.open("rb") as log:
            log.seek(0, 2)
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline:
                line = log.readline()
                if not line:
                    await asyncio.sleep(0.002)
                    continue
                if needle in line and agent in line and b"\"subresource\"" not in line and (
                        b'"verb":"patch"' in line or b'"verb":"update"' in line):
                    await release.kill()
                    return
        raise TimeoutError("the primary was never written")

    return fault
