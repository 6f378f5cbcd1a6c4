"""Linkerd and Open Service Mesh canary releases through an SMI TrafficSplit, under simulated
traffic.

The simulator (``--mesh linkerd`` or ``--mesh osm``) splits the requests to the apex Service by
the TrafficSplit's backend weights (v1alpha1 quantities for Linkerd, v1alpha2 numbers for OSM)
and exports the mesh's own series: the Linkerd proxy's ``response_total``/``response_latency_ms``
or OSM's ``osm_request_total``/``osm_request_duration_ms``, which the controller's builtin checks
for that mesh read through a real Prometheus. So the canary's measured share follows the
weights the router wrote, and a bad version fails on its real error rate.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e.receiver import WebhookReceiver
from e2e.scenario import Scenario, container_image, deployment
from e2e.scenarios.mesh import ROLLBACK_THRESHOLD, MeshStarter, mesh_canary, settled_share

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds")]

METRICS = [
    {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "30s"},
    {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "30s"},
]


def backends(split: dict[str, Any] | None) -> dict[str, int]:
    """``{backend Service: weight}`` of a TrafficSplit (v1alpha1 weights are quantities)."""
    assert split is not None, "the TrafficSplit does not exist"
    return {b["service"]: int(b["weight"]) for b in split["spec"]["backends"]}


@pytest.fixture(params=["linkerd", "osm"])
def mesh_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def linkerd(start_mesh: MeshStarter, mesh_name: str) -> Scenario:
    mesh = await start_mesh(f"--mesh={mesh_name}")
    await mesh.start_controller(f"-mesh-provider={mesh_name}")
    return mesh


async def test_promotion_follows_the_traffic_split(
    linkerd: Scenario, receiver: WebhookReceiver, mesh_name: str
) -> None:
    receiver.answer("/promote", 403)  # held at the last step: 40 % primary, 60 % canary
    hooks = [{"name": "hold", "type": "confirm-promotion", "url": receiver.url("/promote")}]
    await linkerd.apply(deployment("backend", image="podinfo:6.0.0"),
                        mesh_canary("backend", provider=mesh_name, maxWeight=60, stepWeight=30,
                                    metrics=METRICS, webhooks=hooks))
    await linkerd.wait_phase("backend", "Initialized", within=60)
    await linkerd.kubectl("set", "image", "deployment/backend", "backend=podinfo:6.0.1")
    await linkerd.wait_phase("backend", "WaitingPromotion", within=90)
    # What traffic did first: a wrong split fails here, whatever the object says.
    share = await settled_share(linkerd, "backend", 0.6, mesh=mesh_name)
    print(f"{mesh_name} canary share at weight 60: {share:.2f}")
    assert backends(await linkerd.get("trafficsplits.split.smi-spec.io", "backend")) == {
        "backend-primary": 40, "backend-canary": 60}

    receiver.answer("/promote", 200)
    await linkerd.wait_phase("backend", "Succeeded", within=90)
    assert container_image(await linkerd.get("deployment", "backend-primary")) == "podinfo:6.0.1"
    share = await settled_share(linkerd, "backend", 0.0, mesh=mesh_name)
    print(f"{mesh_name} canary share after promotion: {share:.2f}")


async def test_a_failing_version_is_rolled_back_on_real_error_rates(
    linkerd: Scenario, mesh_name: str
) -> None:
    metrics = [{"name": "request-success-rate", "thresholdRange": {"min": 95}, "interval": "15s"}]
    await linkerd.apply(deployment("backend", image="podinfo:6.0.0"),
                        mesh_canary("backend", provider=mesh_name, maxWeight=50, stepWeight=10,
                                    threshold=ROLLBACK_THRESHOLD, metrics=metrics))
    await linkerd.wait_phase("backend", "Initialized", within=60)
    await linkerd.kubectl("set", "image", "deployment/backend", "backend=podinfo:6.0.1")
    await linkerd.kubectl("set", "env", "deployment/backend", "FAULT_RATE=0.4")
    status = await linkerd.wait_phase("backend", ("Failed", "Succeeded"), within=120)
    assert status["phase"] == "Failed"
    assert "success rate" in status["conditions"][0]["message"]
    assert backends(await linkerd.get("trafficsplits.split.smi-spec.io", "backend")) == {
        "backend-primary": 100, "backend-canary": 0}
    assert container_image(await linkerd.get("deployment", "backend-primary")) == "podinfo:6.0.0"
