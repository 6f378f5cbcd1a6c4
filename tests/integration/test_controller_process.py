"""``flaggerpy controller`` as a process on the real control plane, scraped by a real Prometheus."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from e2e.cluster.localcluster import LocalCluster
from e2e.cluster.pytest_plugin import eventually
from e2e.processes import ControllerProcess
from e2e.prometheus import LocalPrometheus, ScrapeJob

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]


def canary(name: str, *, provider: str) -> dict[str, Any]:
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name},
        "spec": {
            "provider": provider,
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "service": {"port": 80},
            "analysis": {"interval": "10s", "threshold": 2, "maxWeight": 50, "stepWeight": 10},
        },
    }


async def canary_status(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    result = await cluster.akubectl("get", "canary", name, "-n", namespace, "-o", "json")
    status: dict[str, Any] = json.loads(result.stdout).get("status") or {}
    return status


async def test_controller_serves_metrics_to_prometheus_and_stops_on_sigterm(
    cluster: LocalCluster, processes: list[ControllerProcess]
) -> None:
    controller = ControllerProcess(kubeconfig=cluster.kubeconfig)
    processes.append(controller.start())
    await asyncio.to_thread(controller.wait_ready)
    assert controller.get("/healthz")[0] == 200
    synced = [line for line in controller.log_lines() if line.get("msg") == "informer_listed"]
    assert {line["resource"] for line in synced} >= {
        "canaries.v1beta1.flagger.app",
        "metrictemplates.v1beta1.flagger.app",
        "alertproviders.v1beta1.flagger.app",
    }

    job = ScrapeJob("flaggerpy", [f"127.0.0.1:{controller.port}"])
    with LocalPrometheus([job]) as prometheus:

        async def scraped() -> bool:
            result = await asyncio.to_thread(prometheus.query, 'flagger_info{job="flaggerpy"}')
            return bool(result)

        await eventually(scraped, within=30, what="Prometheus to scrape flagger_info")
        [info] = prometheus.query('flagger_info{job="flaggerpy"}')
        assert info["metric"]["mesh_provider"] == "istio"  # type: ignore[index]
        assert info["value"][1] == "1"  # type: ignore[index]
        reconciles = prometheus.query('controller_runtime_reconcile_total{controller="canary"}')
        assert {r["metric"]["result"] for r in reconciles} >= {"success", "error"}  # type: ignore[index]
        assert prometheus.query('workqueue_depth{name="canary"}')

    # A shutdown that hangs raises TimeoutExpired here instead of exiting 0.
    seconds = await asyncio.to_thread(controller.terminate, timeout=30)
    print(f"SIGTERM to exit: {seconds:.1f}s")
    assert controller.exit_code() == 0
    assert any(line.get("msg") == "controller_stopped" for line in controller.log_lines())


async def test_readyz_waits_for_the_caches(
    cluster: LocalCluster, processes: list[ControllerProcess], tmp_path: Any
) -> None:
    # A kubeconfig whose server does not answer: the process lives, but its caches never sync.
    config = json.loads(cluster.kubeconfig.read_text())
    closed = ControllerProcess(kubeconfig=cluster.kubeconfig).port  # a free port nobody serves
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{closed}"
    kubeconfig = tmp_path / "unreachable.kubeconfig"
    kubeconfig.write_text(json.dumps(config))
    controller = ControllerProcess(kubeconfig=kubeconfig)
    processes.append(controller.start())

    async def healthy() -> bool:
        return controller.get("/healthz")[0] == 200

    await eventually(healthy, within=20, what="the telemetry server to answer")
    await asyncio.sleep(2)
    assert controller.get("/readyz")[0] == 503
    assert controller.exit_code() is None


async def test_uninstalled_provider_fails_only_that_canary(
    cluster: LocalCluster, namespace: str, processes: list[ControllerProcess]
) -> None:
    manifests = {"apiVersion": "v1", "kind": "List", "items": [
        canary("good", provider="istio"), canary("unrouted", provider="acme-mesh"),
    ]}
    await cluster.akubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifests))
    controller = ControllerProcess(kubeconfig=cluster.kubeconfig, args=[f"-namespace={namespace}"])
    processes.append(controller.start())

    async def both_handled() -> bool:
        good = await canary_status(cluster, namespace, "good")
        bad = await canary_status(cluster, namespace, "unrouted")
        return bool(good.get("phase")) and bad.get("phase") == "Failed"

    await eventually(both_handled, within=30, what="both canaries to get a phase")
    bad = await canary_status(cluster, namespace, "unrouted")
    [condition] = bad["conditions"]
    assert condition["type"] == "Promoted"
    assert condition["status"] == "False"
    assert "'acme-mesh'" in condition["message"]
    assert "installed:" in condition["message"]

    good = await canary_status(cluster, namespace, "good")
    # The other canary is not held back by the bad one (it fails later for its own reason:
    # no router is installed in this test environment, so only the broken one is checked here).
    events = json.loads((await cluster.akubectl(
        "get", "events", "-n", namespace, "-o", "json",
        "--field-selector", "involvedObject.name=unrouted",
    )).stdout)["items"]
    assert [e["type"] for e in events] == ["Warning"]
    assert "'acme-mesh'" in events[0]["message"]
    assert good.get("phase")


async def test_a_process_serving_several_namespaces_leaves_the_others_alone(
    cluster: LocalCluster, namespace: str, processes: list[ControllerProcess]
) -> None:
    """``-namespace=a,b``: canaries in a and b are handled, one in c is never touched."""
    served, other = f"{namespace}-b", f"{namespace}-c"
    for extra in (served, other):
        await cluster.akubectl("create", "namespace", extra)
    try:
        for where in (namespace, served, other):
            await cluster.akubectl("apply", "-n", where, "-f", "-",
                                   input=json.dumps(canary("unrouted", provider="acme-mesh")))
        controller = ControllerProcess(kubeconfig=cluster.kubeconfig,
                                       args=[f"-namespace={namespace},{served}"])
        processes.append(controller.start())

        async def served_failed() -> bool:
            phases = [(await canary_status(cluster, ns, "unrouted")).get("phase")
                      for ns in (namespace, served)]
            return phases == ["Failed", "Failed"]

        await eventually(served_failed, within=30, what="both served canaries to fail")
        await asyncio.sleep(2)  # the third was listed with the others: nothing may follow
        # This process's own log, not the canary's status: a controller of another test that
        # serves every namespace may fail the third canary meanwhile.
        worked_on = {str(line.get("canary")) for line in controller.log_lines()}
        assert {f"unrouted.{namespace}", f"unrouted.{served}"} <= worked_on
        assert f"unrouted.{other}" not in worked_on
    finally:
        for extra in (served, other):
            await cluster.akubectl("delete", "namespace", extra, "--wait=false", check=False)


async def test_standby_takes_over_when_the_leader_dies(
    cluster: LocalCluster, namespace: str, processes: list[ControllerProcess]
) -> None:
    election = [
        "-enable-leader-election",
        f"-leader-election-namespace={namespace}",
        f"-namespace={namespace}",
        "-leader-election-lease-duration=6s",
        "-leader-election-renew-deadline=4s",
        "-leader-election-retry-period=1s",
    ]
    first = ControllerProcess(kubeconfig=cluster.kubeconfig, args=election, name="first").start()
    processes.append(first)
    second = ControllerProcess(kubeconfig=cluster.kubeconfig, args=election, name="second").start()
    processes.append(second)

    async def lease() -> dict[str, Any]:
        result = await cluster.akubectl("get", "lease", "-n", namespace, "-o", "json", check=False)
        items = json.loads(result.stdout or "{}").get("items") or []
        return dict(items[0]["spec"]) if items else {}

    async def holder() -> str:
        return str((await lease()).get("holderIdentity") or "")

    async def elected() -> bool:
        identity = await holder()
        return bool(identity) and (_leads(first, identity) or _leads(second, identity))

    await eventually(elected, within=30, what="a leader to be elected and say so")
    leader_identity = await holder()
    leader, standby = (first, second) if _leads(first, leader_identity) else (second, first)
    assert not _leads(standby, leader_identity)

    leader.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    # The dead leader's last renewal: the standby may not take the Lease before it expired.
    held = await lease()
    assert held["holderIdentity"] == leader_identity
    last_renewal = _micro_time(held["renewTime"])

    async def standby_leads() -> bool:
        identity = await holder()
        return bool(identity) and identity != leader_identity

    await eventually(standby_leads, within=30, what="the standby to take the Lease")
    print(f"takeover {time.monotonic() - killed_at:.1f}s after SIGKILL with a 6s lease")
    taken = await lease()
    new_identity = str(taken["holderIdentity"])
    waited = _micro_time(taken["acquireTime"]) - last_renewal
    # acquireTime is stamped when the winning attempt starts, a GET earlier than its expiry check.
    assert waited >= 6 - 0.5, f"the standby took the Lease {waited:.2f}s after its last renewal"

    async def standby_says_so() -> bool:
        return _leads(standby, new_identity)

    await eventually(standby_says_so, within=5, what="the standby to log its election")


async def test_paused_leader_stops_writing_after_losing_the_lease(
    cluster: LocalCluster, namespace: str, processes: list[ControllerProcess]
) -> None:
    election = [
        "-enable-leader-election",
        f"-leader-election-namespace={namespace}",
        f"-namespace={namespace}",
        "-leader-election-lease-duration=4s",
        "-leader-election-renew-deadline=3s",
        "-leader-election-retry-period=1s",
    ]
    old = ControllerProcess(kubeconfig=cluster.kubeconfig, args=election, name="old").start()
    processes.append(old)
    await asyncio.to_thread(old.wait_ready)

    async def old_leads() -> bool:
        return any(line.get("msg") == "leader_elected" for line in old.log_lines())

    await eventually(old_leads, within=20, what="the first process to lead")
    # A partition, as the process sees it: frozen, its lease expires, another takes over.
    old.signal(signal.SIGSTOP)
    new = ControllerProcess(kubeconfig=cluster.kubeconfig, args=election, name="new").start()
    processes.append(new)

    async def new_leads() -> bool:
        return any(line.get("msg") == "leader_elected" for line in new.log_lines())

    await eventually(new_leads, within=20, what="the second process to lead")
    await cluster.akubectl("apply", "-n", namespace, "-f", "-",
                           input=json.dumps(canary("after-partition", provider="acme-mesh")))
    old.signal(signal.SIGCONT)

    async def old_exited() -> bool:
        return old.exit_code() is not None

    await eventually(old_exited, within=15, what="the deposed leader to step down and exit")
    assert old.exit_code() != 0
    handled_by_old = [
        line for line in old.log_lines()
        if line.get("canary") == f"after-partition.{namespace}"
    ]
    assert handled_by_old == [], "the deposed leader acted on a canary"

    async def handled_by_new() -> bool:
        return (await canary_status(cluster, namespace, "after-partition")).get("phase") == "Failed"

    await eventually(handled_by_new, within=20, what="the new leader to reconcile the canary")


def _micro_time(stamp: str) -> float:
    """A Lease MicroTime (``2026-01-02T03:04:05.123456Z``) as epoch seconds."""
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def _leads(process: ControllerProcess, identity: str) -> bool:
    """Whether ``process`` logged that it acquired the Lease as ``identity``."""
    return any(
        line.get("msg") == "leader_elected" and line.get("identity") == identity
        for line in process.log_lines()
    )
