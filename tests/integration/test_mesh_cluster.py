"""``-kubeconfig-service-mesh``: the routing objects live on a second control plane.

Two real clusters: the workloads and the Canary on the shared one, Istio's CRDs and the objects
the router writes on a mesh cluster of their own. As in Flagger, the mesh objects carry no
owner reference there (that cluster has no Canary to own them, and its garbage collector would
delete them), and none of them is written to the workload cluster.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from e2e.cluster.localcluster import LocalCluster
from e2e.cluster.pytest_plugin import eventually
from e2e.scenario import Scenario, canary, deployment

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]


@pytest.fixture(scope="module")
def mesh_cluster(cluster: LocalCluster) -> Iterator[LocalCluster]:
    mesh = LocalCluster(f"mesh-{secrets.token_hex(3)}", root=cluster.state_dir.parent)
    mesh.up(install_crds=True)
    try:
        yield mesh
    finally:
        mesh.down()


@pytest.fixture
async def scenario(cluster: LocalCluster, namespace: str,
                   mesh_cluster: LocalCluster) -> AsyncIterator[Scenario]:
    await mesh_cluster.akubectl("create", "namespace", namespace)
    running = await Scenario(cluster, namespace).start()
    try:
        yield running
    finally:
        await running.aclose()


async def get(cluster: LocalCluster, kind: str, namespace: str, name: str) -> Any:
    result = await cluster.akubectl("get", kind, name, "-n", namespace, "-o", "json",
                                    check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def weights(vs: dict[str, Any]) -> dict[str, int]:
    route = vs["spec"]["http"][0]["route"]
    return {d["destination"]["host"]: int(d.get("weight") or 0) for d in route}


async def test_routing_objects_are_written_to_the_mesh_cluster_only(
        scenario: Scenario, cluster: LocalCluster, mesh_cluster: LocalCluster) -> None:
    ns = scenario.namespace
    await scenario.start_controller(f"-kubeconfig-service-mesh={mesh_cluster.kubeconfig}")
    await scenario.set_success_rate("podinfo", 99)
    await scenario.apply(
        deployment("podinfo", image="podinfo:6.0.0"),
        canary("podinfo", provider="istio", analysis={
            "interval": "2s", "threshold": 2, "stepWeight": 50, "maxWeight": 50,
            "metrics": [{"name": "app-success-rate", "templateRef": {"name": "app-success-rate"},
                         "thresholdRange": {"min": 90}, "interval": "30s"}],
        }))
    await scenario.wait_phase("podinfo", "Initialized", within=60)

    vs = await get(mesh_cluster, "virtualservices.networking.istio.io", ns, "podinfo")
    assert vs is not None
    assert "ownerReferences" not in vs["metadata"]
    assert weights(vs) == {"podinfo-primary": 100, "podinfo-canary": 0}
    for rule in ("podinfo-primary", "podinfo-canary"):
        dr = await get(mesh_cluster, "destinationrules.networking.istio.io", ns, rule)
        assert dr is not None
        assert "ownerReferences" not in dr["metadata"]
    assert await get(cluster, "virtualservices.networking.istio.io", ns, "podinfo") is None
    # The Services stay with the workloads, owned by the Canary as always.
    apex = await scenario.get("service", "podinfo")
    assert apex is not None
    assert apex["metadata"]["ownerReferences"][0]["kind"] == "Canary"

    # A new revision is routed on the mesh cluster: the split reaches 50/50, then promotion
    # gives everything back to the primary.
    seen: list[dict[str, int]] = []

    async def split_seen(split: dict[str, int]) -> bool:
        now = await get(mesh_cluster, "virtualservices.networking.istio.io", ns, "podinfo")
        if now is not None and (not seen or seen[-1] != weights(now)):
            seen.append(weights(now))
        return split in seen

    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
    await eventually(lambda: split_seen({"podinfo-primary": 50, "podinfo-canary": 50}),
                     within=90, what="the 50/50 split on the mesh cluster")
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=90)
    assert status["phase"] == "Succeeded"
    final = await get(mesh_cluster, "virtualservices.networking.istio.io", ns, "podinfo")
    assert weights(final) == {"podinfo-primary": 100, "podinfo-canary": 0}
    assert await get(cluster, "virtualservices.networking.istio.io", ns, "podinfo") is None
