"""Istio delegation: the Canary's VirtualService is a delegate of a root one the user owns.

The root VirtualService serves the public host through a gateway and hands ``/`` to the
delegate the controller writes (no hosts, no gateways). Generated traffic addresses only the
public host, so every request that reaches the canary went root → delegate → canary.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e.receiver import WebhookReceiver
from e2e.scenario import Scenario, container_image, deployment
from e2e.scenarios.mesh import gateway, istio_canary, routes, settled_share

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds")]


def root_virtual_service(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "root"},
        "spec": {
            "gateways": ["public-gateway"],
            "hosts": ["app.example.com"],
            "http": [{"match": [{"uri": {"prefix": "/"}}],
                      "delegate": {"name": "backend", "namespace": namespace}}],
        },
    }


async def test_delegate_virtual_service_carries_the_canary(
    mesh: Scenario, receiver: WebhookReceiver
) -> None:
    """Catalogue #7: initialised, analysed on the traffic the root delegates, promoted."""
    await mesh.start_controller("-mesh-provider=istio")
    receiver.answer("/promote", 403)
    metrics = [{"name": "request-success-rate", "thresholdRange": {"min": 99},
                "interval": "30s"}]
    hooks = [{"name": "hold", "type": "confirm-promotion", "url": receiver.url("/promote")}]
    await mesh.apply(gateway(), root_virtual_service(mesh.namespace),
                     deployment("backend", image="podinfo:6.0.0"),
                     istio_canary("backend", service={"port": 9898, "delegation": True},
                                  stepWeight=25, maxWeight=50, metrics=metrics,
                                  webhooks=hooks))
    await mesh.wait_phase("backend", "Initialized", within=60)
    delegate = await mesh.get("virtualservices.networking.istio.io", "backend")
    assert delegate is not None
    assert not delegate["spec"].get("hosts")
    assert not delegate["spec"].get("gateways")

    await mesh.kubectl("set", "image", "deployment/backend", "backend=podinfo:6.0.1")
    await mesh.wait_phase("backend", "WaitingPromotion", within=90)
    assert routes(await mesh.get("virtualservices.networking.istio.io", "backend")) == {
        "backend-primary": 50, "backend-canary": 50}
    share = await settled_share(mesh, "backend", 0.5)
    print(f"canary share through the root VirtualService at weight 50: {share:.2f}")

    receiver.answer("/promote", 200)
    status = await mesh.wait_phase("backend", ("Succeeded", "Failed"), within=90)
    assert status["phase"] == "Succeeded", status
    assert container_image(await mesh.get("deployment", "backend-primary")) == "podinfo:6.0.1"
