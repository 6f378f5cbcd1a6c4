"""Kuma canary releases through a TrafficRoute, under simulated traffic.

The simulator (``--mesh kuma``) routes the requests to the apex Service's ``kuma.io/service``
tag by the TrafficRoute's split (tags resolved to Services as Kuma does) and exports Envoy's
``envoy_cluster_upstream_rq``/``envoy_cluster_upstream_rq_time`` labelled with each data plane's
service tag, which the controller's builtin kuma checks read through a real Prometheus.

TrafficRoutes are cluster-scoped and carry no owner reference (Flagger's), so deleting the
namespace leaves them: each test deletes its own, under a name no other test uses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from e2e.cluster.localcluster import LocalCluster
from e2e.receiver import WebhookReceiver
from e2e.scenario import Scenario, container_image, deployment
from e2e.scenarios.mesh import ROLLBACK_THRESHOLD, MeshStarter, mesh_canary, settled_share

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds")]

MESH = "kuma"


def split(route: dict[str, Any] | None) -> dict[str, int]:
    """``{kuma.io/service tag: weight}`` of a TrafficRoute."""
    assert route is not None, "the TrafficRoute does not exist"
    return {entry["destination"]["kuma.io/service"]: entry["weight"]
            for entry in route["spec"]["conf"]["split"]}


@pytest.fixture
async def kuma(start_mesh: MeshStarter, cluster: LocalCluster) -> AsyncIterator[Scenario]:
    mesh = await start_mesh(f"--mesh={MESH}")
    await mesh.start_controller(f"-mesh-provider={MESH}")
    try:
        yield mesh
    finally:
        for controller in mesh.controllers:
            controller.stop()  # first, or it writes the route again
        for name in ("kuma-good", "kuma-bad"):
            route = await mesh.get("trafficroutes.kuma.io", name)
            if route is not None and _tags_namespace(route, mesh.namespace):
                await cluster.akubectl("delete", "trafficroutes.kuma.io", name,
                                       "--ignore-not-found")


def _tags_namespace(route: dict[str, Any], namespace: str) -> bool:
    tags = [d["match"].get("kuma.io/service", "") for d in route["spec"].get("destinations", [])]
    return any(f"_{namespace}_svc_" in tag for tag in tags)


async def test_promotion_follows_the_traffic_route(
    kuma: Scenario, receiver: WebhookReceiver
) -> None:
    receiver.answer("/promote", 403)  # held at the last step: 40 % primary, 60 % canary
    hooks = [{"name": "hold", "type": "confirm-promotion", "url": receiver.url("/promote")}]
    metrics = [
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "30s"},
        {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "30s"},
    ]
    await kuma.apply(deployment("kuma-good", image="podinfo:6.0.0"),
                     mesh_canary("kuma-good", provider=MESH, maxWeight=60, stepWeight=30,
                                 metrics=metrics, webhooks=hooks))
    await kuma.wait_phase("kuma-good", "Initialized", within=60)
    await kuma.kubectl("set", "image", "deployment/kuma-good", "kuma-good=podinfo:6.0.1")
    await kuma.wait_phase("kuma-good", "WaitingPromotion", within=90)
    # What traffic did first: a wrong split fails here, whatever the object says.
    share = await settled_share(kuma, "kuma-good", 0.6, mesh=MESH)
    print(f"kuma canary share at weight 60: {share:.2f}")
    ns = kuma.namespace
    assert split(await kuma.get("trafficroutes.kuma.io", "kuma-good")) == {
        f"kuma-good-primary_{ns}_svc_9898": 40, f"kuma-good-canary_{ns}_svc_9898": 60}

    receiver.answer("/promote", 200)
    await kuma.wait_phase("kuma-good", "Succeeded", within=90)
    assert container_image(await kuma.get("deployment", "kuma-good-primary")) == "podinfo:6.0.1"
    share = await settled_share(kuma, "kuma-good", 0.0, mesh=MESH)
    print(f"kuma canary share after promotion: {share:.2f}")


async def test_a_failing_version_is_rolled_back_on_real_error_rates(kuma: Scenario) -> None:
    metrics = [{"name": "request-success-rate", "thresholdRange": {"min": 95}, "interval": "15s"}]
    await kuma.apply(deployment("kuma-bad", image="podinfo:6.0.0"),
                     mesh_canary("kuma-bad", provider=MESH, maxWeight=50, stepWeight=10,
                                 threshold=ROLLBACK_THRESHOLD, metrics=metrics))
    await kuma.wait_phase("kuma-bad", "Initialized", within=60)
    await kuma.kubectl("set", "image", "deployment/kuma-bad", "kuma-bad=podinfo:6.0.1")
    await kuma.kubectl("set", "env", "deployment/kuma-bad", "FAULT_RATE=0.4")
    status = await kuma.wait_phase("kuma-bad", ("Failed", "Succeeded"), within=120)
    assert status["phase"] == "Failed"
    assert "success rate" in status["conditions"][0]["message"]
    ns = kuma.namespace
    assert split(await kuma.get("trafficroutes.kuma.io", "kuma-bad")) == {
        f"kuma-bad-primary_{ns}_svc_9898": 100, f"kuma-bad-canary_{ns}_svc_9898": 0}
    assert container_image(await kuma.get("deployment", "kuma-bad-primary")) == "podinfo:6.0.0"
