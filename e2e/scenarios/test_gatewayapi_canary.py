"""Gateway API canary releases through an HTTPRoute, under simulated traffic.

The simulator (``--mesh gatewayapi``) sends its requests to the route's hostname, routes them
by the HTTPRoute's rules (match precedence, weighted backendRefs) and exports what the pods
themselves would: ``http_request_duration_seconds``, which the controller's builtin checks for
``gatewayapi`` (Flagger's http observer) read through a real Prometheus.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e.receiver import WebhookReceiver
from e2e.scenario import Scenario, container_image, deployment
from e2e.scenarios.mesh import ROLLBACK_THRESHOLD, MeshStarter, mesh_canary, settled_share

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds")]

MESH = "gatewayapi"
PROVIDER = "gatewayapi:v1"
HOST = "www.example.com"
SERVICE = {"port": 9898, "hosts": [HOST], "gatewayRefs": [{"name": "gateway"}]}
SUCCESS_RATE = [{"name": "request-success-rate", "thresholdRange": {"min": 99},
                 "interval": "30s"}]


def backend_refs(route: dict[str, Any] | None, *, rule: int = 0) -> dict[str, int]:
    """``{Service: weight}`` of one rule of an HTTPRoute."""
    assert route is not None, "the HTTPRoute does not exist"
    refs = route["spec"]["rules"][rule]["backendRefs"]
    return {ref["name"]: ref.get("weight", 1) for ref in refs}


async def start(start_mesh: MeshStarter, *simulator_args: str) -> Scenario:
    mesh = await start_mesh(f"--mesh={MESH}", *simulator_args)
    await mesh.start_controller(f"-mesh-provider={PROVIDER}")
    return mesh


async def test_promotion_follows_the_route_weights(
    start_mesh: MeshStarter, receiver: WebhookReceiver
) -> None:
    mesh = await start(start_mesh)
    receiver.answer("/promote", 403)  # held at the last step: 40 % primary, 60 % canary
    hooks = [{"name": "hold", "type": "confirm-promotion", "url": receiver.url("/promote")}]
    metrics = [*SUCCESS_RATE,
               {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "30s"}]
    await mesh.apply(deployment("backend", image="podinfo:6.0.0"),
                     mesh_canary("backend", provider=PROVIDER, service=SERVICE, maxWeight=60,
                                 stepWeight=30, metrics=metrics, webhooks=hooks))
    await mesh.wait_phase("backend", "Initialized", within=60)
    await mesh.kubectl("set", "image", "deployment/backend", "backend=podinfo:6.0.1")
    await mesh.wait_phase("backend", "WaitingPromotion", within=90)
    # What traffic did first: a wrong split fails here, whatever the object says.
    share = await settled_share(mesh, "backend", 0.6, mesh=MESH)
    print(f"gatewayapi canary share at weight 60: {share:.2f}")
    assert backend_refs(await mesh.get("httproutes.gateway.networking.k8s.io", "backend")) == {
        "backend-primary": 40, "backend-canary": 60}

    receiver.answer("/promote", 200)
    await mesh.wait_phase("backend", "Succeeded", within=90)
    assert container_image(await mesh.get("deployment", "backend-primary")) == "podinfo:6.0.1"
    share = await settled_share(mesh, "backend", 0.0, mesh=MESH)
    print(f"gatewayapi canary share after promotion: {share:.2f}")


async def test_a_failing_version_is_rolled_back_on_real_error_rates(
    start_mesh: MeshStarter,
) -> None:
    mesh = await start(start_mesh)
    metrics = [{"name": "request-success-rate", "thresholdRange": {"min": 95}, "interval": "15s"}]
    await mesh.apply(deployment("backend", image="podinfo:6.0.0"),
                     mesh_canary("backend", provider=PROVIDER, service=SERVICE, maxWeight=50,
                                 stepWeight=10, threshold=ROLLBACK_THRESHOLD, metrics=metrics))
    await mesh.wait_phase("backend", "Initialized", within=60)
    await mesh.kubectl("set", "image", "deployment/backend", "backend=podinfo:6.0.1")
    await mesh.kubectl("set", "env", "deployment/backend", "FAULT_RATE=0.4")
    status = await mesh.wait_phase("backend", ("Failed", "Succeeded"), within=120)
    assert status["phase"] == "Failed"
    assert "success rate" in status["conditions"][0]["message"]
    assert backend_refs(await mesh.get("httproutes.gateway.networking.k8s.io", "backend")) == {
        "backend-primary": 100, "backend-canary": 0}
    assert container_image(await mesh.get("deployment", "backend-primary")) == "podinfo:6.0.0"


async def test_header_match_sends_only_matching_users_to_the_canary(
    start_mesh: MeshStarter,
) -> None:
    """A/B: the 30 % of users that send ``x-canary: insider`` reach the canary, nobody else."""
    mesh = await start(start_mesh, "--user-header=x-canary=insider:0.3")
    match = [{"headers": {"x-canary": {"exact": "insider"}}}]
    await mesh.apply(deployment("frontend", image="podinfo:6.0.0"),
                     # Iterations that outlast the measurement on a busy machine.
                     mesh_canary("frontend", provider=PROVIDER, service=SERVICE, iterations=60,
                                 match=match, metrics=SUCCESS_RATE))
    await mesh.wait_phase("frontend", "Initialized", within=60)
    await mesh.kubectl("set", "image", "deployment/frontend", "frontend=podinfo:6.0.1")
    await mesh.wait_phase("frontend", "Progressing", within=30)
    share = await settled_share(mesh, "frontend", 0.3, mesh=MESH)
    print(f"gatewayapi A/B canary share with 30% insiders: {share:.2f}")
    route = await mesh.get("httproutes.gateway.networking.k8s.io", "frontend")
    assert route is not None
    assert route["spec"]["rules"][0]["matches"] == [
        {"headers": [{"name": "x-canary", "type": "Exact", "value": "insider"}],
         "path": {"type": "PathPrefix", "value": "/"}}]
    assert backend_refs(route) == {"frontend-primary": 0, "frontend-canary": 100}
    assert backend_refs(route, rule=1) == {"frontend-primary": 100}
