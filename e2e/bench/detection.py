"""Benchmark: how soon a new revision is seen, and what one analysis tick costs the API server.

Runs the real ``flaggerpy controller`` against the local control plane and a real Prometheus, with
one canary (``skipAnalysis``, so each revision is promoted within a tick or two) and reports:

* detection latency: from the image change (a PATCH of the Deployment, timestamped just before it
  is sent) to the Canary's ``Progressing`` phase as a watch delivers it, over N revisions, as
  p50 / p90 / p99 / max;
* API requests of the controller per revision cycle, by verb, from the audit log.

Usage: ``python -m e2e.bench.detection [--samples 30] [--json report.json]``. It starts its own
cluster unless ``FLAGGERPY_CLUSTER`` names a running one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from e2e.cluster import audit
from e2e.cluster.localcluster import LocalCluster
from e2e.cluster.pytest_plugin import CLUSTER_ENV, FLAGGERPY_CRDS, cluster_from_env
from e2e.scenario import Scenario, canary, deployment
from flaggerpy import kube


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
        field_selector=f"metadata.name={name}", timeout_seconds=60,
    )) as events:
        async for event in events:
            status = event.object.get("status") or {}
            if status.get("phase") == phase:
                return time.monotonic()
    raise TimeoutError(f"{name} never reached {phase}")


async def run(cluster: LocalCluster, *, samples: int) -> dict[str, Any]:
    namespace = f"bench-{secrets.token_hex(3)}"
    await cluster.akubectl("create", "namespace", namespace)
    scenario = await Scenario(cluster, namespace).start()
    client = await kube.KubeClient.connect(kubeconfig=cluster.kubeconfig,
                                           user_agent="flaggerpy-bench")
    try:
        await scenario.start_controller()
        await scenario.set_success_rate("podinfo", 99)
        await scenario.apply(deployment("podinfo", image="podinfo:0"),
                             canary("podinfo", skipAnalysis=True))
        await scenario.wait_phase("podinfo", "Initialized", within=60)
        latencies: list[float] = []
        since = datetime.now(UTC)
        for index in range(1, samples + 1):
            current = await client.get(kube.CANARIES, "podinfo", namespace=namespace)
            version = kube.resource_version(current)
            watcher = asyncio.create_task(wait_for_phase(
                client, namespace, "podinfo", "Progressing", since_version=version))
            await asyncio.sleep(0.05)  # the watch is open before the change
            patch = {"spec": {"template": {"spec": {"containers": [
                {"name": "podinfo", "image": f"podinfo:{index}"}]}}}}
            changed_at = time.monotonic()
            await client.patch(kube.DEPLOYMENTS, "podinfo", patch, namespace=namespace)
            latencies.append(await watcher - changed_at)
            await scenario.wait_phase("podinfo", "Succeeded", within=60)
        until = datetime.now(UTC)
        await asyncio.sleep(1)
        counts = audit.count_requests(cluster.audit_log, user_agent="flaggerpy/",
                                      since=since, until=until, namespace=namespace)
        return {
            "samples": samples,
            "detection_seconds": {
                "p50": round(statistics.median(latencies), 4),
                "p90": round(percentile(latencies, 0.90), 4),
                "p99": round(percentile(latencies, 0.99), 4),
                "max": round(max(latencies), 4),
                "mean": round(statistics.fmean(latencies), 4),
            },
            "controller_requests_per_revision": {
                verb: round(count / samples, 2) for verb, count in sorted(counts.by_verb.items())
            },
            "controller_reads_total": counts.reads,
            "controller_requests_by_resource": dict(sorted(counts.by_resource.items())),
        }
    finally:
        await client.aclose()
        await scenario.aclose()
        await cluster.akubectl("delete", "namespace", namespace, "--wait=false", check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    reuse = os.environ.get(CLUSTER_ENV)
    cluster = cluster_from_env(reuse) if reuse else LocalCluster(f"bench-{os.getpid()}")
    started_here = not reuse
    if started_here:
        cluster.up(install_crds=True)
    try:
        cluster.install_crds(sorted(FLAGGERPY_CRDS.glob("*.yaml")))
        report = asyncio.run(run(cluster, samples=args.samples))
    finally:
        if started_here:
            cluster.down()
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
