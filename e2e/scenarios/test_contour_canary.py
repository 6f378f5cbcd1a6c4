"""Contour canary releases through an HTTPProxy, under simulated traffic.

The simulator (``--mesh contour``) sends its requests to the apex Service's host, routes them
by the HTTPProxy's routes as Contour programs Envoy (conditions, most specific route first,
weighted services) and exports Envoy's ``envoy_cluster_upstream_rq`` /
``envoy_cluster_upstream_rq_time`` by ``envoy_cluster_name`` (``<ns>_<svc>_<port>``), which the
controller's builtin contour checks read through a real Prometheus.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e.receiver import WebhookReceiver
from e2e.scenario import Scenario, container_image, deployment
from e2e.scenarios.mesh import MeshStarter, mesh_canary, settled_share

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds")]

MESH = "contour"
PROXIES = "httpproxies.projectcontour.io"


def weights(proxy: dict[str, Any] | None, *, route: int = 0) -> dict[str, int]:
    """``{Service: weight}`` of one route of an HTTPProxy (a missing weight is 0)."""
    assert proxy is not None, "the HTTPProxy does not exist"
    return {s["name"]: s.get("weight", 0) for s in proxy["spec"]["routes"][route]["services"]}


async def start(start_mesh: MeshStarter, *simulator_args: str) -> Scenario:
    mesh = await start_mesh(f"--mesh={MESH}", *simulator_args)
    await mesh.start_controller(f"-mesh-provider={MESH}", "-ingress-class=contour")
    return mesh


async def test_promotion_follows_the_proxy_weights(
    start_mesh: MeshStarter, receiver: WebhookReceiver
) -> None:
    mesh = await start(start_mesh)
    receiver.answer("/promote", 403)  # held at the last step: 40 % primary, 60 % canary
    hooks = [{"name": "hold", "type": "confirm-promotion", "url": receiver.url("/promote")}]
    metrics = [
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "30s"},
        {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "30s"},
    ]
    await mesh.apply(deployment("contour-good", image="podinfo:6.0.0"),
                     mesh_canary("contour-good", provider=MESH, maxWeight=60, stepWeight=30,
                                 metrics=metrics, webhooks=hooks))
    await mesh.wait_phase("contour-good", "Initialized", within=60)
    await mesh.kubectl("set", "image", "deployment/contour-good", "contour-good=podinfo:6.0.1")
    await mesh.wait_phase("contour-good", "WaitingPromotion", within=90)
    # What traffic did first: a wrong split fails here, whatever the object says.
    share = await settled_share(mesh, "contour-good", 0.6, mesh=MESH)
    print(f"contour canary share at weight 60: {share:.2f}")
    proxy = await mesh.get(PROXIES, "contour-good")
    assert weights(proxy) == {"contour-good-primary": 40, "contour-good-canary": 60}
    assert proxy is not None
    assert proxy["spec"]["ingressClassName"] == "contour"

    receiver.answer("/promote", 200)
    await mesh.wait_phase("contour-good", "Succeeded", within=90)
    assert container_image(await mesh.get("deployment", "contour-good-primary")) == (
        "podinfo:6.0.1")
    share = await settled_share(mesh, "contour-good", 0.0, mesh=MESH)
    print(f"contour canary share after promotion: {share:.2f}")


async def test_ab_sends_only_matching_users_and_a_failing_version_is_rolled_back(
    start_mesh: MeshStarter,
) -> None:
    """A/B: the 30 % of users that send ``x-canary: insider`` reach the canary, nobody else;
    the canary answers 40 % errors, so the builtin success rate rolls it back."""
    mesh = await start(start_mesh, "--user-header=x-canary=insider:0.3")
    match = [{"headers": {"x-canary": {"exact": "insider"}}}]
    metrics = [{"name": "request-success-rate", "thresholdRange": {"min": 95}, "interval": "15s"}]
    await mesh.apply(deployment("contour-ab", image="podinfo:6.0.0"),
                     mesh_canary("contour-ab", provider=MESH, iterations=30, threshold=15,
                                 match=match, metrics=metrics))
    await mesh.wait_phase("contour-ab", "Initialized", within=60)
    await mesh.kubectl("set", "image", "deployment/contour-ab", "contour-ab=podinfo:6.0.1")
    await mesh.kubectl("set", "env", "deployment/contour-ab", "FAULT_RATE=0.4")
    await mesh.wait_phase("contour-ab", "Progressing", within=30)
    share = await settled_share(mesh, "contour-ab", 0.3, mesh=MESH)
    print(f"contour A/B canary share with 30% insiders: {share:.2f}")
    proxy = await mesh.get(PROXIES, "contour-ab")
    assert proxy is not None
    assert proxy["spec"]["routes"][0]["conditions"] == [
        {"prefix": "/", "header": {"name": "x-canary", "exact": "insider"}}]
    assert weights(proxy) == {"contour-ab-primary": 0, "contour-ab-canary": 100}
    assert weights(proxy, route=1) == {"contour-ab-primary": 100, "contour-ab-canary": 0}

    status = await mesh.wait_phase("contour-ab", ("Failed", "Succeeded"), within=120)
    assert status["phase"] == "Failed"
    assert "success rate" in status["conditions"][0]["message"]
    assert weights(await mesh.get(PROXIES, "contour-ab")) == {
        "contour-ab-primary": 100, "contour-ab-canary": 0}
    assert container_image(await mesh.get("deployment", "contour-ab-primary")) == (
        "podinfo:6.0.0")
