"""Skipper canary releases through Flagger's canary Ingress, under simulated traffic.

The simulator (``--mesh skipper``) sends its requests to the user's Ingress host and routes each
one as Skipper does with the canary Ingress ``<ingress>-canary`` the controller writes: its
routes win over the user's while ``Weight(100)`` leads their predicate, and share the traffic
between the primary and canary backends by ``zalando.org/backend-weights``; ``False()`` gives
it back to the user's Ingress. It exports ``skipper_serve_route_duration_seconds`` and
``skipper_response_duration_seconds`` per route id, which the controller's builtin skipper
checks read through a real Prometheus. The canary Ingress is owned by its Canary: the namespace
takes it away.

Workload names have no ``-``: Skipper's route ids turn it into ``_``, and the share query of
``e2e/scenarios/mesh.py`` names the workload as it is.
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

MESH = "skipper"
WEIGHTS = "zalando.org/backend-weights"
PREDICATE = "zalando.org/skipper-predicate"


def ingress(name: str) -> dict[str, Any]:
    """The user's Ingress ``name``: host ``<name>.example.com`` to the apex Service."""
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "annotations": {
            "zalando.org/skipper-filter": 'setRequestHeader("X-Source", "skipper")'}},
        "spec": {"ingressClassName": "skipper", "rules": [{
            "host": f"{name}.example.com",
            "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
                "service": {"name": name, "port": {"number": 9898}}}}]}}]},
    }


def skipper_canary(name: str, **analysis: Any) -> dict[str, Any]:
    manifest = mesh_canary(name, provider=MESH, **analysis)
    manifest["spec"]["ingressRef"] = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                                      "name": name}
    return manifest


def skipper_annotations(obj: dict[str, Any] | None) -> tuple[str, str]:
    """The canary Ingress's backend weights and predicate."""
    assert obj is not None, "the canary Ingress does not exist"
    annotations = obj["metadata"]["annotations"]
    return annotations[WEIGHTS], annotations[PREDICATE]


def split(name: str, primary: int, canary: int) -> str:
    return f'{{"{name}-canary":{canary},"{name}-primary":{primary}}}'


async def user_route_serves_all(mesh: Scenario, name: str, *, within: float = 45) -> None:
    """Waits until the user's Ingress route serves every request (``False()`` switched the
    canary Ingress's routes off): nothing through the canary Ingress for a whole 10 s window."""
    assert mesh.prometheus is not None
    prometheus = mesh.prometheus
    series = "skipper_serve_route_duration_seconds_count"
    query = (f'sum(rate({series}{{route=~"kube_.+__{name}_canary__.+"}}[10s]))'
             f' / sum(rate({series}{{route=~"kube_.+__{name}__.+__{name}"}}[10s]))')
    deadline = time.monotonic() + within
    result: Any = None
    while time.monotonic() < deadline:
        result = await asyncio.to_thread(prometheus.query, query)
        if result and float(result[0]["value"][1]) == 0.0:
            return
        await asyncio.sleep(2)
    raise AssertionError(f"the canary Ingress still routes {name}'s requests: {result}")


async def start(start_mesh: MeshStarter) -> Scenario:
    mesh = await start_mesh(f"--mesh={MESH}")
    await mesh.start_controller(f"-mesh-provider={MESH}")
    return mesh


async def test_promotion_follows_the_backend_weights(
    start_mesh: MeshStarter, receiver: WebhookReceiver
) -> None:
    mesh = await start(start_mesh)
    receiver.answer("/promote", 403)  # held at the last step: 40 % primary, 60 % canary
    hooks = [{"name": "hold", "type": "confirm-promotion", "url": receiver.url("/promote")}]
    metrics = [
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "30s"},
        {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "30s"},
    ]
    await mesh.apply(ingress("skgood"), deployment("skgood", image="podinfo:6.0.0"),
                     skipper_canary("skgood", maxWeight=60, stepWeight=30, metrics=metrics,
                                    webhooks=hooks))
    await mesh.wait_phase("skgood", "Initialized", within=60)
    await mesh.kubectl("set", "image", "deployment/skgood", "skgood=podinfo:6.0.1")
    await mesh.wait_phase("skgood", "WaitingPromotion", within=90)
    # What traffic did first: a wrong split fails here, whatever the object says.
    share = await settled_share(mesh, "skgood", 0.6, mesh=MESH)
    print(f"skipper canary share at weight 60: {share:.2f}")
    assert skipper_annotations(await mesh.get("ingress", "skgood-canary")) == (
        split("skgood", 40, 60), "Weight(100)")

    receiver.answer("/promote", 200)
    await mesh.wait_phase("skgood", "Succeeded", within=90)
    assert container_image(await mesh.get("deployment", "skgood-primary")) == "podinfo:6.0.1"
    assert skipper_annotations(await mesh.get("ingress", "skgood-canary")) == (
        split("skgood", 100, 0), "False()")
    await user_route_serves_all(mesh, "skgood")


async def test_a_failing_version_is_rolled_back_on_real_error_rates(
    start_mesh: MeshStarter,
) -> None:
    mesh = await start(start_mesh)
    metrics = [{"name": "request-success-rate", "thresholdRange": {"min": 95}, "interval": "15s"}]
    await mesh.apply(ingress("skbad"), deployment("skbad", image="podinfo:6.0.0"),
                     skipper_canary("skbad", maxWeight=50, stepWeight=10,
                                    threshold=ROLLBACK_THRESHOLD, metrics=metrics))
    await mesh.wait_phase("skbad", "Initialized", within=60)
    await mesh.kubectl("set", "image", "deployment/skbad", "skbad=podinfo:6.0.1")
    await mesh.kubectl("set", "env", "deployment/skbad", "FAULT_RATE=0.4")
    status = await mesh.wait_phase("skbad", ("Failed", "Succeeded"), within=120)
    assert status["phase"] == "Failed"
    assert "success rate" in status["conditions"][0]["message"]
    assert skipper_annotations(await mesh.get("ingress", "skbad-canary")) == (
        split("skbad", 100, 0), "False()")
    assert container_image(await mesh.get("deployment", "skbad-primary")) == "podinfo:6.0.0"
