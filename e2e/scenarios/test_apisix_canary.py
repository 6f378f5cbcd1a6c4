"""APISIX canary releases through ApisixRoutes, under simulated traffic.

Each test stores its own ApisixRoute (the user's: one http route for its host to the apex
Service). The controller copies it into ``<route>-<svc>-canary`` with priority 10000 and
weighted ``-primary``/``-canary`` backends. The simulator (``--mesh apisix``) sends the host's
requests through the matching http route of highest priority (the canary route, once it
exists), picks a backend by weight, and exports APISIX's ``apisix_http_status`` /
``apisix_http_latency`` by route and upstream node, which the controller's builtin apisix checks
read through a real Prometheus: the success rate of every request of the canary route, the
primary's included (at canary weight 10, a canary failing 60 % of its requests makes the route
fail 6 %). APISIX's router has no header or cookie matches in Flagger (no
A/B), so there is no A/B scenario.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from e2e.receiver import WebhookReceiver
from e2e.scenario import Scenario, container_image, deployment
from e2e.scenarios.mesh import ROLLBACK_THRESHOLD, MeshStarter, mesh_canary, settled_share

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds")]

MESH = "apisix"
ROUTES = "apisixroutes.apisix.apache.org"


def user_route(name: str) -> dict[str, Any]:
    """The user's ApisixRoute ``name``: its own host, every path, to the apex Service."""
    return {"apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"http": [{
                "name": "main",
                "match": {"hosts": [f"{name}.example.com"], "paths": ["/*"]},
                "backends": [{"serviceName": name, "servicePort": 9898}],
                "plugins": [{"name": "prometheus", "enable": True,
                             "config": {"prefer_name": True}}],
            }]}}


def apisix_canary(name: str, **analysis: Any) -> dict[str, Any]:
    manifest = mesh_canary(name, provider=MESH, **analysis)
    manifest["spec"]["routeRef"] = {"apiVersion": "apisix.apache.org/v2",
                                    "kind": "ApisixRoute", "name": name}
    return manifest


def weights(route: dict[str, Any] | None) -> dict[str, int]:
    """``{serviceName: weight}`` of the canary route's one http route."""
    assert route is not None, "the canary ApisixRoute does not exist"
    [http] = route["spec"]["http"]
    assert http["priority"] == 10000
    return {b["serviceName"]: b["weight"] for b in http["backends"]}


async def primary_serving(scenario: Scenario, name: str) -> None:
    """Waits until a 10 s window of the canary route holds answers and no 5xx: APISIX counts
    every request of the route (the primary's 503s while it starts up too), so the analysis
    must not start on a window that holds them."""
    assert scenario.prometheus is not None
    route = f'route=~"{scenario.namespace}_{name}-{name}-canary_.+"'
    query = (f'sum(rate(apisix_http_status{{{route},code!~"5.."}}[10s]))'
             f' / sum(rate(apisix_http_status{{{route}}}[10s]))')
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        result = await asyncio.to_thread(scenario.prometheus.query, query)
        if result and float(result[0]["value"][1]) == 1.0:  # type: ignore[index]
            return
        await asyncio.sleep(1)
    raise AssertionError(f"the canary route of {name} did not answer without errors for 10 s")


@pytest.fixture
async def apisix(start_mesh: MeshStarter) -> Scenario:
    mesh = await start_mesh(f"--mesh={MESH}")
    await mesh.start_controller(f"-mesh-provider={MESH}")
    return mesh


async def test_promotion_follows_the_canary_route(
    apisix: Scenario, receiver: WebhookReceiver
) -> None:
    receiver.answer("/promote", 403)  # held at the last step: 40 % primary, 60 % canary
    hooks = [{"name": "hold", "type": "confirm-promotion", "url": receiver.url("/promote")}]
    metrics = [
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "10s"},
        {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "10s"},
    ]
    await apisix.apply(user_route("apisix-good"),
                       deployment("apisix-good", image="podinfo:6.0.0"),
                       apisix_canary("apisix-good", maxWeight=60, stepWeight=30,
                                     metrics=metrics, webhooks=hooks))
    await apisix.wait_phase("apisix-good", "Initialized", within=60)
    await primary_serving(apisix, "apisix-good")
    await apisix.kubectl("set", "image", "deployment/apisix-good", "apisix-good=podinfo:6.0.1")
    await apisix.wait_phase("apisix-good", "WaitingPromotion", within=90)
    # What traffic did first: a wrong split fails here, whatever the object says.
    share = await settled_share(apisix, "apisix-good", 0.6, mesh=MESH)
    print(f"apisix canary share at weight 60: {share:.2f}")
    canary_route = "apisix-good-apisix-good-canary"
    assert weights(await apisix.get(ROUTES, canary_route)) == {
        "apisix-good-primary": 40, "apisix-good-canary": 60}
    # The user's route is read, never written.
    user = await apisix.get(ROUTES, "apisix-good")
    assert user is not None
    assert user["spec"]["http"][0]["backends"] == [
        {"serviceName": "apisix-good", "servicePort": 9898}]

    receiver.answer("/promote", 200)
    await apisix.wait_phase("apisix-good", "Succeeded", within=90)
    assert container_image(await apisix.get("deployment", "apisix-good-primary")) == (
        "podinfo:6.0.1")
    share = await settled_share(apisix, "apisix-good", 0.0, mesh=MESH)
    print(f"apisix canary share after promotion: {share:.2f}")


async def test_a_failing_version_is_rolled_back_on_real_error_rates(apisix: Scenario) -> None:
    metrics = [{"name": "request-success-rate", "thresholdRange": {"min": 95}, "interval": "10s"}]
    await apisix.apply(user_route("apisix-bad"), deployment("apisix-bad", image="podinfo:6.0.0"),
                       apisix_canary("apisix-bad", maxWeight=50, stepWeight=10,
                                     threshold=ROLLBACK_THRESHOLD, metrics=metrics))
    await apisix.wait_phase("apisix-bad", "Initialized", within=60)
    await primary_serving(apisix, "apisix-bad")
    await apisix.kubectl("set", "image", "deployment/apisix-bad", "apisix-bad=podinfo:6.0.1")
    await apisix.kubectl("set", "env", "deployment/apisix-bad", "FAULT_RATE=0.6")
    status = await apisix.wait_phase("apisix-bad", ("Failed", "Succeeded"), within=120)
    assert status["phase"] == "Failed"
    assert "success rate" in status["conditions"][0]["message"]
    assert weights(await apisix.get(ROUTES, "apisix-bad-apisix-bad-canary")) == {
        "apisix-bad-primary": 100, "apisix-bad-canary": 0}
    assert container_image(await apisix.get("deployment", "apisix-bad-primary")) == (
        "podinfo:6.0.0")
