"""NGINX canary releases through ingress-nginx's canary Ingress, under simulated traffic.

The simulator (``--mesh nginx``) sends its requests to the user's Ingress host and routes each
one as ingress-nginx does with the canary Ingress ``<ingress>-canary`` the controller writes
(``canary-by-header``, then ``canary-by-cookie``, then ``canary-weight``); it exports
``nginx_ingress_controller_requests`` and the response-duration series labelled with the main
Ingress and the canary upstream, which the controller's builtin nginx checks read through a
real Prometheus. The canary Ingress is owned by its Canary: the namespace takes it away.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e.receiver import WebhookReceiver
from e2e.scenario import Scenario, container_image, deployment
from e2e.scenarios.mesh import ROLLBACK_THRESHOLD, MeshStarter, mesh_canary, settled_share

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds")]

MESH = "nginx"
N = "nginx.ingress.kubernetes.io"


def ingress(name: str) -> dict[str, Any]:
    """The user's Ingress ``name``: host ``<name>.example.com`` to the apex Service."""
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name},
        "spec": {"ingressClassName": "nginx", "rules": [{
            "host": f"{name}.example.com",
            "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
                "service": {"name": name, "port": {"number": 9898}}}}]}}]},
    }


def nginx_canary(name: str, **analysis: Any) -> dict[str, Any]:
    manifest = mesh_canary(name, provider=MESH, **analysis)
    manifest["spec"]["ingressRef"] = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                                      "name": name}
    return manifest


def canary_annotations(obj: dict[str, Any] | None) -> dict[str, str]:
    """The ``nginx.ingress.kubernetes.io/canary*`` annotations of the canary Ingress."""
    assert obj is not None, "the canary Ingress does not exist"
    return {k.removeprefix(f"{N}/"): v for k, v in obj["metadata"]["annotations"].items()
            if k.startswith(f"{N}/canary")}


async def start(start_mesh: MeshStarter, *simulator_args: str) -> Scenario:
    mesh = await start_mesh(f"--mesh={MESH}", *simulator_args)
    await mesh.start_controller(f"-mesh-provider={MESH}")
    return mesh


async def test_promotion_follows_the_canary_weight(
    start_mesh: MeshStarter, receiver: WebhookReceiver
) -> None:
    mesh = await start(start_mesh)
    receiver.answer("/promote", 403)  # held at the last step: 40 % primary, 60 % canary
    hooks = [{"name": "hold", "type": "confirm-promotion", "url": receiver.url("/promote")}]
    metrics = [
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "30s"},
        {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "30s"},
    ]
    await mesh.apply(ingress("nginx-good"), deployment("nginx-good", image="podinfo:6.0.0"),
                     nginx_canary("nginx-good", maxWeight=60, stepWeight=30, metrics=metrics,
                                  webhooks=hooks))
    await mesh.wait_phase("nginx-good", "Initialized", within=60)
    await mesh.kubectl("set", "image", "deployment/nginx-good", "nginx-good=podinfo:6.0.1")
    await mesh.wait_phase("nginx-good", "WaitingPromotion", within=90)
    # What traffic did first: a wrong split fails here, whatever the object says.
    share = await settled_share(mesh, "nginx-good", 0.6, mesh=MESH)
    print(f"nginx canary share at weight 60: {share:.2f}")
    assert canary_annotations(await mesh.get("ingress", "nginx-good-canary")) == {
        "canary": "true", "canary-weight": "60"}

    receiver.answer("/promote", 200)
    await mesh.wait_phase("nginx-good", "Succeeded", within=90)
    assert container_image(await mesh.get("deployment", "nginx-good-primary")) == "podinfo:6.0.1"
    share = await settled_share(mesh, "nginx-good", 0.0, mesh=MESH)
    print(f"nginx canary share after promotion: {share:.2f}")


async def test_ab_header_then_a_failing_version_is_rolled_back_on_real_error_rates(
    start_mesh: MeshStarter,
) -> None:
    """A/B: the 30 % of users that send ``x-canary: insider`` reach the canary, nobody else;
    then the canary starts failing and is rolled back on its real error rate."""
    mesh = await start(start_mesh, "--user-header=x-canary=insider:0.3")
    match = [{"headers": {"x-canary": {"exact": "insider"}}}]
    metrics = [{"name": "request-success-rate", "thresholdRange": {"min": 95}, "interval": "15s"}]
    await mesh.apply(ingress("nginx-ab"), deployment("nginx-ab", image="podinfo:6.0.0"),
                     nginx_canary("nginx-ab", iterations=60, match=match,
                                  threshold=ROLLBACK_THRESHOLD, metrics=metrics))
    await mesh.wait_phase("nginx-ab", "Initialized", within=60)
    await mesh.kubectl("set", "image", "deployment/nginx-ab", "nginx-ab=podinfo:6.0.1")
    await mesh.wait_phase("nginx-ab", "Progressing", within=30)
    share = await settled_share(mesh, "nginx-ab", 0.3, mesh=MESH)
    print(f"nginx A/B canary share with 30% insiders: {share:.2f}")
    assert canary_annotations(await mesh.get("ingress", "nginx-ab-canary")) == {
        "canary": "true", "canary-weight": "0", "canary-by-header": "x-canary",
        "canary-by-header-value": "insider"}

    await mesh.kubectl("set", "env", "deployment/nginx-ab", "FAULT_RATE=0.4")
    status = await mesh.wait_phase("nginx-ab", ("Failed", "Succeeded"), within=90)
    assert status["phase"] == "Failed"
    assert "success rate" in status["conditions"][0]["message"]
    assert canary_annotations(await mesh.get("ingress", "nginx-ab-canary")) == {
        "canary": "true", "canary-weight": "0"}
    assert container_image(await mesh.get("deployment", "nginx-ab-primary")) == "podinfo:6.0.0"
