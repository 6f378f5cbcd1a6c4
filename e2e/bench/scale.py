"""Benchmark: what N canaries cost one controller, for N at several levels.

For each provider and each N (a fresh namespace and a fresh ``flaggerpy controller`` per level,
in a local control plane of its own), N canaries are created in bulk with their Deployments
scheduled on kwok nodes: blue/green on the ``kubernetes`` provider, or canary releases on
``istio`` (its CRDs; the controller writes a VirtualService and two DestinationRules each). A
canary's analysis has no metrics and ``--iterations`` steps, so a revision runs that many ticks
before it is promoted. The report gives, per provider and N:

* initialisation: seconds until all N are ``Initialized``, and the controller's CPU for it (from
  ``/proc/<pid>/stat``), in total and per canary;
* the controller's RSS once initialised and idle (and, across levels, per canary as the slope);
* an idle window: API requests of the controller by verb per canary-hour (audit log), and its CPU
  as a share of one core;
* a wave: 10 % of the canaries get a new revision at once; seconds until all of them are
  Progressing (or past it) and until all are ``Succeeded``, and the controller's API requests
  per revision;
* tick lateness p50/p99 over the wave (how long after it was due each analysis tick started,
  from the controller's ``flaggerpy_canary_tick_lateness_seconds`` histogram, interpolated
  within its buckets as Prometheus' ``histogram_quantile`` does);
* then detection latency p50/p99 with all N canaries idle again (image change to
  ``Progressing`` as a watch delivers it, one canary at a time, as ``detection.py`` measures it);
* the API server's and etcd's RSS.

The phases are followed through one watch per level (an informer), not by listing N canaries
again and again, which would be the benchmark's own load on the API server. A level the machine
does not hold (initialisation not done within ``--init-timeout``) ends that provider's levels and
says so. Usage: ``python -m e2e.bench.scale [--n 100 1000 10000] [--provider kubernetes istio]
[--interval 1m] [--idle 60] [--json build/bench/scale.json]``. It always starts its own cluster:
N canaries are no load for a cluster others share.
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
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from e2e.bench.harness import percentile, run_in_cluster, wait_for_phase
from e2e.cluster import audit
from e2e.cluster.localcluster import LocalCluster
from e2e.cluster.pytest_plugin import CLUSTER_ENV
from e2e.processes import ControllerProcess
from e2e.scenario import deployment
from flaggerpy import kube
from flaggerpy.runtime.informer import Informer

PODS_PER_NODE = 250
"""What each kwok node admits; the cluster's own two nodes are no room for N primaries."""
CREATE_CONCURRENCY = 20
WORKLOAD_QPS = 500
"""The cluster's controller-manager rolls out N primaries and targets: at its default 20
requests a second, 10,000 Deployments take the better part of an hour whatever the operator
does (measured: 1,000 canaries Initialized after 530 s, bound by the controller-manager)."""
PAST_PROGRESSING = {"Progressing", "Promoting", "Finalising", "Succeeded"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    """Resident set size of process ``pid``, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def bench_canary(name: str, *, provider: str, interval: str, iterations: int) -> dict[str, Any]:
    """A Canary whose analysis is ``iterations`` ticks with no metrics, then a promotion."""
    analysis: dict[str, Any] = {"interval": interval, "threshold": 2, "iterations": iterations}
    if provider != "kubernetes":
        analysis = {"interval": interval, "threshold": 2, "maxWeight": 50,
                    "stepWeight": max(1, 50 // iterations)}
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name},
        "spec": {
            "provider": provider,
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "progressDeadlineSeconds": 600,
            "service": {"port": 9898},
            "analysis": analysis,
        },
    }


async def add_nodes(cluster: LocalCluster, pods: int) -> None:
    """kwok nodes enough for ``pods`` more pods (kwok manages nodes with its annotation)."""
    count = pods // PODS_PER_NODE + 1
    nodes = [{
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": f"kwok-scale-{index}",
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"kubernetes.io/hostname": f"kwok-scale-{index}", "type": "kwok",
                       "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"},
        },
        "status": {"allocatable": {"cpu": "256", "memory": "1Ti", "pods": str(PODS_PER_NODE)},
                   "capacity": {"cpu": "256", "memory": "1Ti", "pods": str(PODS_PER_NODE)}},
    } for index in range(count)]
    await cluster.akubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": nodes}))


async def create_all(
    client: kube.KubeClient, namespace: str, n: int, *, provider: str, interval: str,
    iterations: int,
) -> None:
    """Creates N Deployments and their Canaries, ``CREATE_CONCURRENCY`` requests at a time."""
    gate = asyncio.Semaphore(CREATE_CONCURRENCY)

    async def one(index: int) -> None:
        name = f"app-{index:05d}"
        async with gate:
            await client.create(kube.DEPLOYMENTS, deployment(name, image="podinfo:0", replicas=1),
                                namespace=namespace)
            await client.create(kube.CANARIES, bench_canary(
                name, provider=provider, interval=interval, iterations=iterations),
                namespace=namespace)

    await asyncio.gather(*(one(index) for index in range(n)))


class PhaseBook:
    """Every canary's phase in one namespace, kept by an informer's watch."""

    def __init__(self, client: kube.KubeClient, namespace: str) -> None:
        self._informer = Informer(client, kube.CANARIES, namespace=namespace)
        self._changed = asyncio.Event()
        self._informer.add_handler(on_add=self._seen, on_update=lambda _, new: self._seen(new),
                                   on_delete=self._seen)
        self._task: asyncio.Task[None] | None = None

    def _seen(self, _: Any) -> None:
        self._changed.set()

    async def __aenter__(self) -> PhaseBook:
        self._task = asyncio.create_task(self._informer.start())
        await self._informer.wait_synced()
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def phases(self) -> dict[str, str]:
        return {item["metadata"]["name"]: str((item.get("status") or {}).get("phase") or "")
                for item in self._informer.list()}

    async def wait_until(self, names: set[str], done: set[str], *, within: float) -> float | None:
        """Monotonic time at which every canary of ``names`` has a phase in ``done``; None if
        not within ``within`` seconds."""
        deadline = time.monotonic() + within
        while True:
            self._changed.clear()
            current = self.phases()
            if all(current.get(name) in done for name in names):
                return time.monotonic()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(left, 5.0))


def histogram(page: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts (upper bound -> count) of an unlabelled histogram on a page."""
    buckets: dict[float, float] = {}
    prefix = f"{name}_bucket{{le=\""
    for line in page.splitlines():
        if line.startswith(prefix):
            bound = line[len(prefix):].split('"', 1)[0]
            buckets[float(bound)] = float(line.split()[-1])
    return buckets


def histogram_quantile(share: float, before: dict[float, float],
                       after: dict[float, float]) -> float | None:
    """The ``share`` quantile of what was observed between two scrapes (linear within a bucket,
    as Prometheus' ``histogram_quantile``); None when nothing was observed."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = share * counts[-1]
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, count
    return lower


async def revise(client: kube.KubeClient, namespace: str, name: str, index: int) -> float:
    """Sets ``name``'s image to ``podinfo:<index>``; returns when the request was sent."""
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": name, "image": f"podinfo:{index}"}]}}}}
    sent_at = time.monotonic()
    await client.patch(kube.DEPLOYMENTS, name, patch, namespace=namespace)
    return sent_at


async def detection(
    client: kube.KubeClient, namespace: str, names: list[str]
) -> list[float]:
    """Seconds from an image change to a watch delivering ``Progressing``, one canary at a time."""
    latencies = []
    for name in names:
        # The collection's version, not the object's: an object untouched for a while has a
        # version older than the watch cache keeps (410 Gone).
        current = await client.list(kube.CANARIES, namespace=namespace,
                                    field_selector=f"metadata.name={name}")
        watcher = asyncio.create_task(wait_for_phase(
            client, namespace, name, "Progressing", since_version=current.resource_version))
        await asyncio.sleep(0.05)  # the watch is open before the change
        changed_at = await revise(client, namespace, name, 1)
        latencies.append(await watcher - changed_at)
    return latencies


LATENESS = "flaggerpy_canary_tick_lateness_seconds"


async def level(
    cluster: LocalCluster, client: kube.KubeClient, n: int, *, provider: str,
    interval: str, iterations: int, idle: float, samples: int, init_timeout: float,
    threadiness: int,
) -> dict[str, Any]:
    namespace = f"scale-{provider[:5]}-{n}-{secrets.token_hex(2)}"
    await cluster.akubectl("create", "namespace", namespace)
    await add_nodes(cluster, 2 * n)
    controller = ControllerProcess(kubeconfig=cluster.kubeconfig, name=f"scale-{n}", args=[
        f"-namespace={namespace}", "-min-analysis-interval=1s", "-log-level=info",
        f"-mesh-provider={provider}", f"-threadiness={threadiness}"])
    controller.start()
    try:
        await asyncio.to_thread(controller.wait_ready)
        assert controller.process is not None
        pid = controller.process.pid
        report: dict[str, Any] = {"provider": provider, "n": n, "threadiness": threadiness,
                                  "rss_mib_before": rss_mib(pid)}
        async with PhaseBook(client, namespace) as book:
            await measure(cluster, client, controller, book, report, namespace=namespace, n=n,
                          provider=provider, interval=interval, iterations=iterations,
                          idle=idle, samples=samples, init_timeout=init_timeout)
        pids = cluster.state().pids
        report["apiserver_rss_mib"] = rss_mib(pids["kube-apiserver"])
        report["etcd_rss_mib"] = rss_mib(pids["etcd"])
        return report
    finally:
        await asyncio.to_thread(controller.stop)
        await cluster.akubectl("delete", "namespace", namespace, "--wait=false", check=False)


async def measure(
    cluster: LocalCluster, client: kube.KubeClient, controller: ControllerProcess,
    book: PhaseBook, report: dict[str, Any], *, namespace: str, n: int, provider: str,
    interval: str, iterations: int, idle: float, samples: int, init_timeout: float,
) -> None:
    """Fills ``report`` for one level; stops early (with ``stopped``) when N do not initialise."""
    assert controller.process is not None
    pid = controller.process.pid
    cpu_before, started = cpu_seconds(pid), time.monotonic()
    await create_all(client, namespace, n, provider=provider, interval=interval,
                     iterations=iterations)
    report["create_seconds"] = round(time.monotonic() - started, 1)
    names = {f"app-{index:05d}" for index in range(n)}
    ready = await book.wait_until(names, {"Initialized"}, within=init_timeout)
    if ready is None:
        seen = Counter(book.phases().values())
        report["stopped"] = f"not all {n} Initialized within {init_timeout:g}s: {dict(seen)}"
        return
    init_cpu = cpu_seconds(pid) - cpu_before
    report["initialise_seconds"] = round(ready - started, 1)
    report["initialise_cpu_seconds"] = round(init_cpu, 2)
    report["cpu_ms_per_initialisation"] = round(1000 * init_cpu / n, 1)

    await asyncio.sleep(5)  # the last Events and status writes settle
    since, cpu_before = datetime.now(UTC), cpu_seconds(pid)
    await asyncio.sleep(idle)
    until, idle_cpu = datetime.now(UTC), cpu_seconds(pid) - cpu_before
    await asyncio.sleep(1)  # the audit log is written
    counts = audit.count_requests(cluster.audit_log, user_agent="flaggerpy/",
                                  since=since, until=until, namespace=namespace)
    canary_hours = n * idle / 3600
    report["rss_mib"] = rss_mib(pid)
    report["idle"] = {
        "window_seconds": idle,
        "cpu_percent_of_a_core": round(100 * idle_cpu / idle, 2),
        "requests_per_canary_hour": {verb: round(count / canary_hours, 2)
                                     for verb, count in sorted(counts.by_verb.items())},
        "reads": counts.reads,
    }

    ordered = sorted(names)
    wave, probes = ordered[:max(1, n // 10)], ordered[-samples:]
    before = histogram(controller.get("/metrics")[1], LATENESS)
    since = datetime.now(UTC)
    started = time.monotonic()
    await asyncio.gather(*(revise(client, namespace, name, 2) for name in wave))
    progressing = await book.wait_until(set(wave), PAST_PROGRESSING, within=init_timeout)
    succeeded = await book.wait_until(set(wave), {"Succeeded"}, within=init_timeout)
    until = datetime.now(UTC)
    after = histogram(controller.get("/metrics")[1], LATENESS)
    await asyncio.sleep(1)
    counts = audit.count_requests(cluster.audit_log, user_agent="flaggerpy/",
                                  since=since, until=until, namespace=namespace)
    ticks = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    p50, p99 = (histogram_quantile(q, before, after) for q in (0.5, 0.99))
    report["wave"] = {
        "canaries": len(wave),
        "all_progressing_seconds": None if progressing is None
        else round(progressing - started, 1),
        "all_succeeded_seconds": None if succeeded is None
        else round(succeeded - started, 1),
        "requests_per_revision": {verb: round(count / len(wave), 2)
                                  for verb, count in sorted(counts.by_verb.items())},
        "reads": counts.reads,
        "ticks": int(ticks),
        "tick_lateness_seconds": {
            "p50": None if p50 is None else round(p50, 4),
            "p99": None if p99 is None else round(p99, 4),
        },
    }

    # Detection once the wave is done, with all N idle again; the probes are not in the wave.
    latencies = await detection(client, namespace, probes)
    report["detection_seconds"] = {
        "samples": len(latencies),
        "p50": round(statistics.median(latencies), 4),
        "p99": round(percentile(latencies, 0.99), 4),
        "max": round(max(latencies), 4),
    }


async def run(
    cluster: LocalCluster, *, providers: list[str], levels: list[int], interval: str,
    iterations: int, idle: float, samples: int, init_timeout: float, threadiness: int,
) -> dict[str, Any]:
    client = await kube.KubeClient.connect(kubeconfig=cluster.kubeconfig,
                                           user_agent="flaggerpy-bench")
    results: list[dict[str, Any]] = []
    report: dict[str, Any] = {
        "interval": interval, "iterations": iterations, "load_average": os.getloadavg(),
        "cpus": os.cpu_count(), "levels": results, "stopped_at": [],
    }
    try:
        for provider in providers:
            for n in levels:
                print(f"scale: {provider} N = {n}", file=sys.stderr)
                try:
                    result = await level(cluster, client, n, provider=provider,
                                         interval=interval, iterations=iterations, idle=idle,
                                         samples=samples, init_timeout=init_timeout,
                                         threadiness=threadiness)
                except Exception as error:  # the levels measured so far still count
                    result = {"provider": provider, "n": n,
                              "stopped": f"{type(error).__name__}: {error}"}
                print(f"scale: {result}", file=sys.stderr)
                results.append(result)
                if "stopped" in result:
                    report["stopped_at"].append(
                        {"provider": provider, "n": n, "why": result["stopped"]})
                    break
    finally:
        await client.aclose()
    slopes = {}
    for provider in providers:
        held = [r for r in results if r.get("provider") == provider and "rss_mib" in r]
        if len(held) >= 2:
            first, last = held[0], held[-1]
            slopes[provider] = round(
                1024 * (last["rss_mib"] - first["rss_mib"]) / (last["n"] - first["n"]), 1)
    report["rss_kib_per_canary"] = slopes
    report["load_average_after"] = os.getloadavg()
    return report


COLUMNS = ("provider", "N", "workers", "all Initialized", "CPU per initialisation",
           "controller RSS", "idle CPU (% of a core)", "idle API requests per canary-hour",
           "detection p50 / p99",
           "wave (10 %): all Progressing / Succeeded", "tick lateness p50 / p99 (wave)",
           "API requests per revision", "API server / etcd RSS")


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{value:g} s"


def table(reports: list[dict[str, Any]]) -> str:
    """The reports' levels as a Markdown table (what ``e2e/bench/README.md`` shows)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for report in reports:
        for level in report["levels"]:
            if "rss_mib" not in level:
                lines.append(f"| {level.get('provider', '')} | {level['n']} | "
                             f"{level.get('threadiness', 2)} | "
                             f"stopped: {level.get('stopped', '')} |" + " |" * 9)
                continue
            idle, wave = level["idle"], level.get("wave", {})
            detection = level.get("detection_seconds", {})
            lateness = wave.get("tick_lateness_seconds", {})
            requests = ", ".join(f"{verb} {count:g}" for verb, count in
                                 wave.get("requests_per_revision", {}).items()) or "-"
            idle_requests = sum(idle["requests_per_canary_hour"].values())
            cells = [
                level.get("provider", "kubernetes"), str(level["n"]),
                str(level.get("threadiness", 2)), _seconds(level["initialise_seconds"]),
                f"{level['cpu_ms_per_initialisation']:g} ms", f"{level['rss_mib']:g} MiB",
                f"{idle['cpu_percent_of_a_core']:g} %", f"{idle_requests:g}",
                f"{_seconds(detection.get('p50'))} / {_seconds(detection.get('p99'))}",
                f"{_seconds(wave.get('all_progressing_seconds'))} / "
                f"{_seconds(wave.get('all_succeeded_seconds'))}",
                f"{_seconds(lateness.get('p50'))} / {_seconds(lateness.get('p99'))}",
                requests,
                f"{level['apiserver_rss_mib']:g} / {level['etcd_rss_mib']:g} MiB",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    for report in reports:
        for stop in report.get("stopped_at", []):
            lines.append(f"\nStopped at {stop['provider']} N = {stop['n']}: {stop['why']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100, 1000, 10000],
                        help="levels, smallest first")
    parser.add_argument("--provider", nargs="+", default=["kubernetes", "istio"],
                        choices=["kubernetes", "istio"], help="router providers, in turn")
    parser.add_argument("--interval", default="1m", help="each canary's analysis interval")
    parser.add_argument("--iterations", type=int, default=2,
                        help="analysis ticks of a revision before its promotion")
    parser.add_argument("--threadiness", type=int, default=2,
                        help="the controller's -threadiness (work queue workers; its default: 2)")
    parser.add_argument("--idle", type=float, default=60.0, help="idle window, seconds")
    parser.add_argument("--samples", type=int, default=10, help="detection samples per level")
    parser.add_argument("--init-timeout", type=float, default=900.0,
                        help="seconds a level may take to initialise before the run stops")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--table", type=Path, nargs="+", metavar="REPORT",
                        help="print these JSON reports as a Markdown table, and run nothing")
    args = parser.parse_args(argv)
    if args.table:
        print(table([json.loads(path.read_text()) for path in args.table]))
        return 0
    os.environ.pop(CLUSTER_ENV, None)  # a cluster of its own, never a shared one
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
    return run_in_cluster(
        lambda cluster: run(cluster, providers=args.provider, levels=sorted(args.n),
                            interval=args.interval, iterations=args.iterations,
                            idle=args.idle, samples=args.samples,
                            init_timeout=args.init_timeout, threadiness=args.threadiness),
        json_path=args.json, workload_qps=WORKLOAD_QPS)


if __name__ == "__main__":
    sys.exit(main())
