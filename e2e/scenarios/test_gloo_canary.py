"""Gloo Edge canary releases through a RouteTable, under simulated traffic.

The simulator (``--mesh gloo``) routes the requests for the apex Service's host through the
RouteTable ``<svc>`` (route matchers, then the weighted Upstream destinations, resolved to the
``-primary`` and ``-canary`` Services) and exports the gateway proxy's Envoy
``envoy_cluster_upstream_rq``/``envoy_cluster_upstream_rq_time`` per Upstream cluster
(``<upstream>_<namespace>``), which the controller's builtin gloo checks read through a real
Prometheus. 30 % of the simulated users send ``x-canary: insider``.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e.receiver import WebhookReceiver
from e2e.scenario import Scenario, container_image, deployment
from e2e.scenarios.mesh import ROLLBACK_THRESHOLD, MeshStarter, mesh_canary, settled_share

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds")]

MESH = "gloo"
TABLE = "routetables.gateway.solo.io"


def split(table: dict[str, Any] | None) -> dict[str, int]:
    """``{upstream: weight}`` of a RouteTable's first route (a weight left out is 0)."""
    assert table is not None, "the RouteTable does not exist"
    return {d["destination"]["upstream"]["name"]: d.get("weight", 0)
            for d in table["spec"]["routes"][0]["routeAction"]["multi"]["destinations"]}


@pytest.fixture
async def gloo(start_mesh: MeshStarter) -> Scenario:
    mesh = await start_mesh(f"--mesh={MESH}", "--user-header=x-canary=insider:0.3")
    await mesh.start_controller(f"-mesh-provider={MESH}")
    return mesh


async def test_promotion_follows_the_route_table_and_ab_by_header(
    gloo: Scenario, receiver: WebhookReceiver
) -> None:
    receiver.answer("/promote", 403)  # held at the last step: 40 % primary, 60 % canary
    hooks = [{"name": "hold", "type": "confirm-promotion", "url": receiver.url("/promote")}]
    metrics = [
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "30s"},
        {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "30s"},
    ]
    await gloo.apply(deployment("gloo-good", image="podinfo:6.0.0"),
                     mesh_canary("gloo-good", provider=MESH, maxWeight=60, stepWeight=30,
                                 metrics=metrics, webhooks=hooks))
    await gloo.wait_phase("gloo-good", "Initialized", within=60)
    await gloo.kubectl("set", "image", "deployment/gloo-good", "gloo-good=podinfo:6.0.1")
    await gloo.wait_phase("gloo-good", "WaitingPromotion", within=90)
    # What traffic did first: a wrong split fails here, whatever the object says.
    share = await settled_share(gloo, "gloo-good", 0.6, mesh=MESH)
    print(f"gloo canary share at weight 60: {share:.2f}")
    ns = gloo.namespace
    assert split(await gloo.get(TABLE, "gloo-good")) == {
        f"{ns}-gloo-good-primaryupstream-9898": 40, f"{ns}-gloo-good-canaryupstream-9898": 60}

    receiver.answer("/promote", 200)
    await gloo.wait_phase("gloo-good", "Succeeded", within=90)
    assert container_image(await gloo.get("deployment", "gloo-good-primary")) == "podinfo:6.0.1"

    # A/B: the same Canary matching the header. Gloo routes only the requests that carry it
    # (the others find no route), all of them to the canary during the iterations; the closed
    # gate holds the routes there after them, for as long as the share takes to measure.
    receiver.answer("/promote", 403)
    ab = mesh_canary("gloo-good", provider=MESH, iterations=4, metrics=metrics[:1],
                     webhooks=hooks, match=[{"headers": {"x-canary": {"exact": "insider"}}}])
    await gloo.apply(ab)
    await gloo.kubectl("set", "image", "deployment/gloo-good", "gloo-good=podinfo:6.0.2")
    await gloo.wait_phase("gloo-good", "WaitingPromotion", within=90)
    share = await settled_share(gloo, "gloo-good", 1.0, tolerance=0.05, mesh=MESH)
    print(f"gloo canary share of x-canary requests during A/B: {share:.2f}")
    table = await gloo.get(TABLE, "gloo-good")
    assert table is not None
    assert table["spec"]["routes"][0]["matchers"] == [
        {"headers": [{"name": "x-canary", "value": "insider"}]}]
    receiver.answer("/promote", 200)
    await gloo.wait_phase("gloo-good", "Succeeded", within=90)
    assert container_image(await gloo.get("deployment", "gloo-good-primary")) == "podinfo:6.0.2"


async def test_a_failing_version_is_rolled_back_on_real_error_rates(gloo: Scenario) -> None:
    metrics = [{"name": "request-success-rate", "thresholdRange": {"min": 95}, "interval": "15s"}]
    await gloo.apply(deployment("gloo-bad", image="podinfo:6.0.0"),
                     mesh_canary("gloo-bad", provider=MESH, maxWeight=50, stepWeight=10,
                                 threshold=ROLLBACK_THRESHOLD, metrics=metrics))
    await gloo.wait_phase("gloo-bad", "Initialized", within=60)
    await gloo.kubectl("set", "image", "deployment/gloo-bad", "gloo-bad=podinfo:6.0.1")
    await gloo.kubectl("set", "env", "deployment/gloo-bad", "FAULT_RATE=0.4")
    status = await gloo.wait_phase("gloo-bad", ("Failed", "Succeeded"), within=120)
    assert status["phase"] == "Failed"
    assert "success rate" in status["conditions"][0]["message"]
    ns = gloo.namespace
    assert split(await gloo.get(TABLE, "gloo-bad")) == {
        f"{ns}-gloo-bad-primaryupstream-9898": 100, f"{ns}-gloo-bad-canaryupstream-9898": 0}
    assert container_image(await gloo.get("deployment", "gloo-bad-primary")) == "podinfo:6.0.0"
