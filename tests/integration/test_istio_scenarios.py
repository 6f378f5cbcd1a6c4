"""Istio scenarios: the VirtualServices flaggerpy writes carry real (simulated) traffic.

The traffic simulator routes requests through the VirtualServices in the namespace and exports
Istio's metrics; a real Prometheus scrapes them and the controller analyses them. So what these
tests check is what traffic actually did: a routing bug (weights swapped, a match lost) shows up
as the wrong share of requests, not only as a wrong field in an object.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from e2e.cluster.localcluster import LocalCluster
from e2e.receiver import WebhookReceiver
from e2e.scenario import Scenario, deployment

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]

SHARE_QUERY = (
    'sum(rate(istio_requests_total{{reporter="destination",'
    'destination_workload_namespace="{ns}",destination_workload="{workload}"}}[10s]))'
    ' / sum(rate(istio_requests_total{{reporter="destination",'
    'destination_workload_namespace="{ns}",destination_workload=~"{workload}|{workload}-primary"'
    '}}[10s]))'
)


@pytest.fixture
async def mesh(cluster: LocalCluster, namespace: str) -> AsyncIterator[Scenario]:
    running = await Scenario(cluster, namespace).start(
        mesh=True, simulator_args=["--rps=40", "--user-header=x-canary=insider:0.3"],
    )
    try:
        yield running
    finally:
        await running.aclose()


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    running = await WebhookReceiver().start()
    try:
        yield running
    finally:
        await running.aclose()


def istio_canary(name: str, **analysis: Any) -> dict[str, Any]:
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name},
        "spec": {
            "provider": "istio",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "progressDeadlineSeconds": 60,
            "service": {"port": 9898},
            "analysis": {"interval": "2s", "threshold": 3, **analysis},
        },
    }


async def canary_share(scenario: Scenario, workload: str) -> float | None:
    assert scenario.prometheus is not None
    query = SHARE_QUERY.format(ns=scenario.namespace, workload=workload)
    result = await asyncio.to_thread(scenario.prometheus.query, query)
    return float(result[0]["value"][1]) if result else None  # type: ignore[index]


async def settled_share(scenario: Scenario, workload: str, expected: float) -> float:
    """The canary's share of requests once a 10 s window lies entirely after the route change."""
    deadline = time.monotonic() + 40
    share = None
    await asyncio.sleep(12)
    while time.monotonic() < deadline:
        share = await canary_share(scenario, workload)
        if share is not None and abs(share - expected) <= 0.1:
            return share
        await asyncio.sleep(1)
    raise AssertionError(f"{workload} got {share} of the requests, expected {expected}")


async def test_canary_traffic_follows_the_weights(
    mesh: Scenario, receiver: WebhookReceiver
) -> None:
    await mesh.start_controller("-mesh-provider=istio")
    # Held at the last step by a confirm-promotion gate: 40 % primary, 60 % canary.
    receiver.answer("/promote", 403)
    hooks = [{"name": "hold", "type": "confirm-promotion", "url": receiver.url("/promote")}]
    metrics = [{"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "30s"}]
    await mesh.apply(deployment("backend", image="podinfo:6.0.0"),
                     istio_canary("backend", maxWeight=60, stepWeight=30, metrics=metrics,
                                  webhooks=hooks))
    await mesh.wait_phase("backend", "Initialized", within=60)
    await mesh.kubectl("set", "image", "deployment/backend", "backend=podinfo:6.0.1")
    await mesh.wait_phase("backend", "WaitingPromotion", within=90)

    virtual_service = await mesh.get("virtualservice", "backend")
    assert virtual_service is not None
    routes = {r["destination"]["host"]: r["weight"]
              for r in virtual_service["spec"]["http"][0]["route"]}
    assert routes == {"backend-primary": 40, "backend-canary": 60}
    share = await settled_share(mesh, "backend", 0.6)
    print(f"canary share at weight 60: {share:.2f}")

    receiver.answer("/promote", 200)
    await mesh.wait_phase("backend", "Succeeded", within=90)
    share = await settled_share(mesh, "backend", 0.0)
    print(f"canary share after promotion: {share:.2f}")


async def test_ab_testing_sends_only_matching_users_to_the_canary(mesh: Scenario) -> None:
    await mesh.start_controller("-mesh-provider=istio")
    match = [{"headers": {"x-canary": {"exact": "insider"}}}]
    metrics = [{"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "30s"}]
    await mesh.apply(deployment("frontend", image="podinfo:6.0.0"),
                     istio_canary("frontend", iterations=12, match=match, metrics=metrics))
    await mesh.wait_phase("frontend", "Initialized", within=60)
    await mesh.kubectl("set", "image", "deployment/frontend", "frontend=podinfo:6.0.1")
    await mesh.wait_phase("frontend", "Progressing", within=30)
    # 30 % of the simulated users send the header: about that share reaches the canary.
    share = await settled_share(mesh, "frontend", 0.3)
    print(f"A/B canary share with 30% insiders: {share:.2f}")


async def test_a_failing_version_is_rolled_back_on_real_error_rates(mesh: Scenario) -> None:
    await mesh.start_controller("-mesh-provider=istio")
    metrics = [{"name": "request-success-rate", "thresholdRange": {"min": 95}, "interval": "15s"}]
    await mesh.apply(deployment("backend", image="podinfo:6.0.0"),
                     istio_canary("backend", maxWeight=50, stepWeight=10, threshold=2,
                                  metrics=metrics))
    await mesh.wait_phase("backend", "Initialized", within=60)
    await mesh.kubectl("set", "image", "deployment/backend", "backend=podinfo:6.0.1")
    await mesh.kubectl("set", "env", "deployment/backend", "FAULT_RATE=0.4")
    status = await mesh.wait_phase("backend", ("Failed", "Succeeded"), within=120)
    assert status["phase"] == "Failed"
    assert "success rate" in status["conditions"][0]["message"]
    virtual_service = await mesh.get("virtualservice", "backend")
    assert virtual_service is not None
    routes = {r["destination"]["host"]: r["weight"]
              for r in virtual_service["spec"]["http"][0]["route"]}
    assert routes == {"backend-primary": 100, "backend-canary": 0}
