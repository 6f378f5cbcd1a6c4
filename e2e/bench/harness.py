"""What every benchmark needs: a cluster to run in, a watch on a Canary's phase, and statistics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

from e2e.cluster.localcluster import LocalCluster
from e2e.cluster.pytest_plugin import CLUSTER_ENV, FLAGGERPY_CRDS, cluster_from_env
from e2e.processes import ControllerProcess
from e2e.scenario import Scenario, canary, deployment
from flaggerpy import kube

CANARY = "podinfo"
"""The one canary a benchmark drives; its target starts at image ``podinfo:0``."""


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile: the value below which ``share`` of the samples fall."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(share * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def wait_for_phase(
    client: kube.KubeClient, namespace: str, name: str, phase: str, *, since_version: str
) -> float:
    """Monotonic time at which a watch delivers the Canary in ``phase``."""
    async with contextlib.aclosing(client.watch(
        kube.CANARIES, namespace=namespace, resource_version=since_version,
        field_selector=f"metadata.name={name}", timeout_seconds=120,
    )) as events:
        async for event in events:
            status = event.object.get("status") or {}
            if status.get("phase") == phase:
                return time.monotonic()
    raise TimeoutError(f"{name} never reached {phase}")


@contextlib.asynccontextmanager
async def initialized_canary(
    cluster: LocalCluster, *controller_args: str, replicas: int = 1
) -> AsyncIterator[tuple[Scenario, kube.KubeClient, list[ControllerProcess]]]:
    """A fresh namespace with ``replicas`` controllers and an Initialized ``podinfo`` canary.

    The canary skips analysis, so each revision is promoted within a tick or
    two and a benchmark measures the controller rather than the analysis.
    Everything is removed on the way out.
    """
    namespace = f"bench-{secrets.token_hex(3)}"
    await cluster.akubectl("create", "namespace", namespace)
    scenario = await Scenario(cluster, namespace).start()
    client = await kube.KubeClient.connect(kubeconfig=cluster.kubeconfig,
                                           user_agent="flaggerpy-bench")
    try:
        controllers = [await scenario.start_controller(*controller_args)
                       for _ in range(replicas)]
        await scenario.set_success_rate(CANARY, 99)
        await scenario.apply(deployment(CANARY, image=f"{CANARY}:0"),
                             canary(CANARY, skipAnalysis=True))
        await scenario.wait_phase(CANARY, "Initialized", within=120)
        yield scenario, client, controllers
    finally:
        await client.aclose()
        await scenario.aclose()
        await cluster.akubectl("delete", "namespace", namespace, "--wait=false", check=False)


async def push_revision(client: kube.KubeClient, namespace: str, index: int) -> float:
    """Sets the target's image to ``podinfo:<index>``; returns when the request was sent."""
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": CANARY, "image": f"{CANARY}:{index}"}]}}}}
    sent_at = time.monotonic()
    await client.patch(kube.DEPLOYMENTS, CANARY, patch, namespace=namespace)
    return sent_at


def run_in_cluster(
    measure: Callable[[LocalCluster], Coroutine[Any, Any, dict[str, Any]]], *,
    json_path: Path | None, workload_qps: int | None = None,
) -> int:
    """Runs ``measure`` in the cluster ``FLAGGERPY_CLUSTER`` names, or in one started for it.

    Prints the report as JSON (and writes it to ``json_path``); a cluster started
    here (with ``workload_qps``, see :class:`LocalCluster`) is stopped again whatever happens.
    """
    reuse = os.environ.get(CLUSTER_ENV)
    cluster = cluster_from_env(reuse) if reuse else LocalCluster(
        f"bench-{os.getpid()}", workload_qps=workload_qps)
    started_here = not reuse
    if started_here:
        cluster.up(install_crds=True)
    try:
        cluster.install_crds(sorted(FLAGGERPY_CRDS.glob("*.yaml")))
        report = asyncio.run(measure(cluster))
    finally:
        if started_here:
            cluster.down()
    text = json.dumps(report, indent=2)
    print(text)
    if json_path:
        json_path.write_text(text + "\n")
    return 0
