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
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from e2e.bench.harness import (
    CANARY,
    initialized_canary,
    percentile,
    push_revision,
    run_in_cluster,
    wait_for_phase,
)
from e2e.cluster import audit
from e2e.cluster.localcluster import LocalCluster
from flaggerpy import kube


async def run(cluster: LocalCluster, *, samples: int) -> dict[str, Any]:
    async with initialized_canary(cluster) as (scenario, client, _):
        namespace = scenario.namespace
        latencies: list[float] = []
        since = datetime.now(UTC)
        for index in range(1, samples + 1):
            current = await client.get(kube.CANARIES, CANARY, namespace=namespace)
            watcher = asyncio.create_task(wait_for_phase(
                client, namespace, CANARY, "Progressing",
                since_version=kube.resource_version(current)))
            await asyncio.sleep(0.05)  # the watch is open before the change
            changed_at = await push_revision(client, namespace, index)
            latencies.append(await watcher - changed_at)
            await scenario.wait_phase(CANARY, "Succeeded", within=60)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    return run_in_cluster(lambda cluster: run(cluster, samples=args.samples),
                          json_path=args.json)


if __name__ == "__main__":
    sys.exit(main())
