"""Benchmark: how long a new revision waits when the leading replica goes away.

Two ``flaggerpy controller`` processes with leader election share one namespace and one canary
(``skipAnalysis``, so a revision is promoted within a tick or two). N times per way of stopping
(``SIGTERM``, as a rolling update stops a pod; ``SIGKILL``, as a crash or a lost node): stop the
leader and at once push a new revision, then measure

* takeover: from the stop to the standby holding the Lease (the Lease polled every 50 ms);
* detection: from the stop (the image change follows it within milliseconds) to the Canary in
  ``Progressing`` as a watch delivers it, which is what a user waits for;
* the Lease gap: the new holder's ``acquireTime`` minus the old holder's last ``renewTime``. After
  a SIGKILL it is never below the lease duration, the election's safety; after a SIGTERM the
  leader releases the Lease on its way out, so it is about a retry period or two.

After each sample a fresh replica joins as the next standby. Usage:
``python -m e2e.bench.failover [--samples 3] [--lease 15 --renew 10 --retry 2] [--json F]``. It
starts its own cluster unless ``FLAGGERPY_CLUSTER`` names a running one.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import time
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
from e2e.cluster.localcluster import LocalCluster
from e2e.processes import ControllerProcess
from e2e.scenario import Scenario
from flaggerpy import kube

LEASE = "flagger-leader-election"
STOPS = {"sigterm": signal.SIGTERM, "sigkill": signal.SIGKILL}


def micro_time(stamp: str) -> float:
    """A Lease MicroTime as epoch seconds."""
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def elected_as(process: ControllerProcess) -> str:
    """The identity under which ``process`` logged its election, or ``""``."""
    for line in process.log_lines():
        if line.get("msg") == "leader_elected":
            return str(line.get("identity") or "")
    return ""


async def lease_spec(client: kube.KubeClient, namespace: str) -> dict[str, Any]:
    try:
        lease = await client.get(kube.LEASES, LEASE, namespace=namespace)
    except kube.NotFoundError:
        return {}
    return dict(lease.get("spec") or {})


async def current_leader(
    client: kube.KubeClient, namespace: str, replicas: list[ControllerProcess]
) -> ControllerProcess:
    """The replica that holds the Lease and says so."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        spec = await lease_spec(client, namespace)
        holder = spec.get("holderIdentity")
        for replica in replicas:
            if holder and replica.exit_code() is None and elected_as(replica) == holder:
                return replica
        await asyncio.sleep(0.1)
    raise TimeoutError("no replica leads")


async def sample(
    scenario: Scenario, client: kube.KubeClient, replicas: list[ControllerProcess],
    *, stop: signal.Signals, index: int, election: list[str],
) -> dict[str, float]:
    namespace = scenario.namespace
    leader = await current_leader(client, namespace, replicas)
    current = await client.get(kube.CANARIES, CANARY, namespace=namespace)
    watcher = asyncio.create_task(wait_for_phase(
        client, namespace, CANARY, "Progressing", since_version=kube.resource_version(current)))
    await asyncio.sleep(0.05)  # the watch is open before the change

    stopped_at = time.monotonic()
    leader.signal(stop)
    before = await lease_spec(client, namespace)
    await push_revision(client, namespace, index)

    replicas.remove(leader)
    while True:
        after = await lease_spec(client, namespace)
        if after.get("holderIdentity") not in ("", None, before.get("holderIdentity")):
            break
        await asyncio.sleep(0.05)
    took_over = time.monotonic() - stopped_at
    detected = await watcher - stopped_at
    await scenario.wait_phase(CANARY, "Succeeded", within=120)
    await asyncio.to_thread(leader.stop)
    replicas.append(await scenario.start_controller(*election))
    return {
        "takeover": took_over,
        "detection": detected,
        "lease_gap": micro_time(after["acquireTime"]) - micro_time(before["renewTime"]),
    }


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values), 2),
        "p90": round(percentile(values, 0.90), 2),
        "max": round(max(values), 2),
        "min": round(min(values), 2),
    }


async def run(
    cluster: LocalCluster, *, samples: int, lease: float, renew: float, retry: float
) -> dict[str, Any]:
    timing = [f"-leader-election-lease-duration={lease:g}s",
              f"-leader-election-renew-deadline={renew:g}s",
              f"-leader-election-retry-period={retry:g}s"]
    # The Lease lives in the controllers' own namespace (-namespace, set by the scenario).
    election = ["-enable-leader-election", *timing]
    async with initialized_canary(cluster, *election, replicas=2) as (scenario, client, replicas):
        report: dict[str, Any] = {
            "samples_per_stop": samples,
            "lease_seconds": {"duration": lease, "renew_deadline": renew, "retry_period": retry},
        }
        index = 0
        for name, stop in STOPS.items():
            measured: dict[str, list[float]] = {"takeover": [], "detection": [], "lease_gap": []}
            for _ in range(samples):
                index += 1
                result = await sample(scenario, client, replicas, stop=stop, index=index,
                                      election=election)
                for key, value in result.items():
                    measured[key].append(value)
                print(f"{name} #{len(measured['takeover'])}: takeover "
                      f"{result['takeover']:.2f}s, detection {result['detection']:.2f}s",
                      file=sys.stderr)
            report[name] = {f"{key}_seconds": summary(values) for key, values in measured.items()}
        return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3, help="per way of stopping")
    parser.add_argument("--lease", type=float, default=15.0, help="lease duration, seconds")
    parser.add_argument("--renew", type=float, default=10.0, help="renew deadline, seconds")
    parser.add_argument("--retry", type=float, default=2.0, help="retry period, seconds")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    return run_in_cluster(lambda cluster: run(cluster, samples=args.samples, lease=args.lease,
                                              renew=args.renew, retry=args.retry),
                          json_path=args.json)


if __name__ == "__main__":
    sys.exit(main())
