"""The traffic simulator against the real control plane and a real Prometheus.

The simulator runs as a process, as scenarios run it; a real Prometheus scrapes it; the numbers
are read with the controller's own builtin Istio queries (``IstioObserver`` through the
``PrometheusProvider``). A VirtualService at 80/20 must show the canary at ~20 % of requests with
its pod template's 50 % failures; swapping the weights must visibly move the share; 0/100 must
leave the primary with no requests at all. Template changes replace a backend, scaling to zero
removes it, and no backend process outlives the simulator, stopped or killed.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest

from e2e.cluster.localcluster import LocalCluster
from e2e.cluster.pytest_plugin import eventually
from e2e.prometheus import LocalPrometheus, ScrapeJob
from e2e.simulator.process import SimulatorProcess, process_exists
from flaggerpy.analysis import MetricTemplateModel
from flaggerpy.metrics.prometheus import PrometheusProvider
from flaggerpy.providers.istio import IstioObserver
from flaggerpy.templating import render

pytestmark = pytest.mark.timeout(300)

RPS = 100
WINDOW = 15  # seconds of traffic each measurement covers


def deployment(name: str, *, image: str, replicas: int = 1, **env: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                     "name": "podinfo", "image": image,
                     "env": [{"name": k, "value": v} for k, v in env.items()]}]}}},
    }


def service(name: str, *, app: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 9898}]}}


def virtual_service(primary: int, canary: int) -> dict[str, Any]:
    """The VirtualService Flagger's Istio router writes for ``podinfo`` (spec §3.2)."""
    return {
        "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
        "metadata": {"name": "podinfo"},
        "spec": {"hosts": ["podinfo"], "gateways": ["mesh"], "http": [{"route": [
            {"destination": {"host": "podinfo-primary"}, "weight": primary},
            {"destination": {"host": "podinfo-canary"}, "weight": canary},
        ]}]},
    }


async def apply(cluster: LocalCluster, namespace: str, *objects: dict[str, Any]) -> None:
    body = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    await cluster.akubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))


class Mesh:
    """The simulator, a Prometheus scraping it, and the controller's Istio observer."""

    def __init__(self, cluster: LocalCluster, namespace: str) -> None:
        self.namespace = namespace
        self.simulator = SimulatorProcess(kubeconfig=cluster.kubeconfig, namespaces=[namespace],
                                          rps=RPS, args=["--seed=42"])
        self.prometheus = LocalPrometheus([ScrapeJob("simulator", [self.simulator.target])])
        self.provider: PrometheusProvider | None = None

    async def start(self) -> Mesh:
        await asyncio.to_thread(self.prometheus.start)
        self.simulator.start()
        await asyncio.to_thread(self.simulator.wait_ready)
        self.provider = PrometheusProvider(address=self.prometheus.url)
        return self

    async def aclose(self) -> None:
        if self.provider is not None:
            await self.provider.aclose()
        self.simulator.stop()
        await asyncio.to_thread(self.prometheus.stop)

    def observer(self) -> IstioObserver:
        assert self.provider is not None
        return IstioObserver(client=self.provider, render=render)

    def model(self, target: str) -> MetricTemplateModel:
        return MetricTemplateModel(name=target, namespace=self.namespace, target=target,
                                   service=target, ingress=target, route=target,
                                   interval=f"{WINDOW}s")

    async def query(self, promql: str) -> float:
        assert self.provider is not None
        return await self.provider.run_query(promql)

    async def canary_share(self) -> float:
        """The canary Deployment's share of the requests the destination proxies saw."""
        selector = f'reporter="destination",destination_workload_namespace="{self.namespace}"'
        return await self.query(
            f'sum(rate(istio_requests_total{{{selector},destination_workload="podinfo"}}'
            f'[{WINDOW}s])) / sum(rate(istio_requests_total{{{selector}}}[{WINDOW}s]))')

    async def requests_by_workload(self, seconds: int) -> dict[str, float]:
        selector = f'reporter="destination",destination_workload_namespace="{self.namespace}"'
        result = await asyncio.to_thread(
            self.prometheus.query,
            f"sum by (destination_workload) "
            f"(increase(istio_requests_total{{{selector}}}[{seconds}s]))")
        return {str(r["metric"]["destination_workload"]): float(r["value"][1])  # type: ignore[index]
                for r in result}

    async def backends(self) -> dict[str, dict[str, Any]]:
        found = await asyncio.to_thread(self.simulator.backends)
        return {b["deployment"]: b for b in found if b["alive"]}


@pytest.fixture
async def mesh(cluster: LocalCluster, namespace: str) -> AsyncIterator[Mesh]:
    await apply(
        cluster, namespace,
        deployment("podinfo-primary", image="podinfo:6.0.0", FAULT_RATE="0"),
        deployment("podinfo", image="podinfo:6.0.1", FAULT_RATE="0.5", LATENCY_MS="60"),
        service("podinfo", app="podinfo-primary"),
        service("podinfo-primary", app="podinfo-primary"),
        service("podinfo-canary", app="podinfo"),
        virtual_service(80, 20),
    )
    running = Mesh(cluster, namespace)
    try:
        await running.start()
        yield running
    finally:
        await running.aclose()


def ingress_get(url: str, host: str) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url + "/", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


async def test_split_success_rate_and_latency_follow_the_virtual_service(
    mesh: Mesh, cluster: LocalCluster, namespace: str
) -> None:
    async def both_backends() -> bool:
        return set(await mesh.backends()) == {"podinfo", "podinfo-primary"}

    await eventually(both_backends, within=60, what="a backend for each ready Deployment")

    # 80/20: the canary gets a fifth of the requests, and half of them fail.
    await asyncio.sleep(WINDOW + 3)
    share = await mesh.canary_share()
    assert share == pytest.approx(0.2, abs=0.06), f"canary share {share} at 80/20"
    observer = mesh.observer()
    success = await observer.get_request_success_rate(mesh.model("podinfo"))
    assert success == pytest.approx(50, abs=12), f"canary success rate {success} %"
    primary_success = await observer.get_request_success_rate(mesh.model("podinfo-primary"))
    assert primary_success == 100
    latency = await observer.get_request_duration(mesh.model("podinfo"))
    assert latency.total_seconds() * 1000 >= 60  # LATENCY_MS=60 in the canary's template
    primary_latency = await observer.get_request_duration(mesh.model("podinfo-primary"))
    assert primary_latency < latency

    # A routing mistake must show: with the weights swapped the canary gets ~80 %.
    await apply(cluster, namespace, virtual_service(20, 80))
    await asyncio.sleep(WINDOW + 3)
    swapped = await mesh.canary_share()
    assert swapped == pytest.approx(0.8, abs=0.06), f"canary share {swapped} at 20/80"
    assert swapped - share > 0.4

    # 0/100: not a single request reaches the primary any more.
    await apply(cluster, namespace, virtual_service(0, 100))
    await asyncio.sleep(13)
    counts = await mesh.requests_by_workload(10)
    assert counts.get("podinfo-primary", 0.0) == 0, counts
    assert counts["podinfo"] > 10 * RPS * 0.5, counts

    # The ingress port routes by Host: through the VirtualService for the apex host, straight
    # to the Service for the canary host.
    ingress = mesh.simulator.ingress_url
    for host in (f"podinfo.{namespace}", f"podinfo-canary.{namespace}"):
        status, headers = await asyncio.to_thread(ingress_get, ingress, host)
        assert status in (200, 500)
        assert headers.get("X-Version") == "podinfo:6.0.1"
    status, headers = await asyncio.to_thread(ingress_get, ingress, f"podinfo-primary.{namespace}")
    assert (status, headers.get("X-Version")) == (200, "podinfo:6.0.0")


async def test_backends_follow_templates_and_scale(
    mesh: Mesh, cluster: LocalCluster, namespace: str
) -> None:
    async def backends_ready() -> bool:
        return set(await mesh.backends()) == {"podinfo", "podinfo-primary"}

    await eventually(backends_ready, within=60, what="a backend for each ready Deployment")
    before = (await mesh.backends())["podinfo"]
    primary_pid = (await mesh.backends())["podinfo-primary"]["pid"]

    # kubectl set env: the canary's backend is replaced by one with the new behaviour.
    await cluster.akubectl("set", "env", "deployment/podinfo", "FAULT_RATE=0", "-n", namespace)

    async def replaced() -> bool:
        now = (await mesh.backends()).get("podinfo")
        return now is not None and now["fault_rate"] == 0 and now["pid"] != before["pid"]

    await eventually(replaced, within=60, what="the canary backend to be replaced")

    async def old_exited() -> bool:
        return not process_exists(before["pid"])

    await eventually(old_exited, within=20, what="the old canary backend to exit")
    assert (await mesh.backends())["podinfo-primary"]["pid"] == primary_pid  # untouched

    # Scaled to zero: no backend, and a request to it fails as with no endpoints.
    await cluster.akubectl("scale", "deployment/podinfo", "--replicas=0", "-n", namespace)

    async def gone() -> bool:
        return "podinfo" not in await mesh.backends()

    await eventually(gone, within=60, what="the canary backend to stop at 0 replicas")
    status, _ = await asyncio.to_thread(ingress_get, mesh.simulator.ingress_url,
                                        f"podinfo-canary.{namespace}")
    assert status == 503

    # SIGTERM: the simulator stops every backend before it exits.
    pids = [b["pid"] for b in (await mesh.backends()).values()]
    assert pids
    assert await asyncio.to_thread(mesh.simulator.terminate) == 0
    assert [pid for pid in pids if process_exists(pid)] == []


async def test_no_backend_outlives_a_killed_simulator(
    cluster: LocalCluster, namespace: str
) -> None:
    await apply(cluster, namespace,
                deployment("app-a", image="a:1"), deployment("app-b", image="b:1"),
                service("app-a", app="app-a"))
    simulator = SimulatorProcess(kubeconfig=cluster.kubeconfig, namespaces=[namespace],
                                 ingress=False)
    try:
        simulator.start()
        await asyncio.to_thread(simulator.wait_ready)

        async def two() -> bool:
            return len(await asyncio.to_thread(simulator.backends)) == 2

        await eventually(two, within=60, what="two backends")
        pids = [b["pid"] for b in await asyncio.to_thread(simulator.backends)]
        # SIGKILL runs no cleanup at all: the backends notice their stdin pipe close.
        await asyncio.to_thread(simulator.kill)

        async def all_exited() -> bool:
            return not any(process_exists(pid) for pid in pids)

        await eventually(all_exited, within=15, what=f"backends {pids} to exit")
    finally:
        simulator.stop()
