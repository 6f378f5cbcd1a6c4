"""Istio with ``revertOnDeletion``: deleting the Canary gives the application back as it was.

With objects the controller created, the target Deployment gets its replicas back and the
generated objects go with the Canary. With a user's own Service and VirtualService (applied with
kubectl before the Canary existed), both stay, with the user's selector and spec, and requests
through the user's gateway host reach the target again.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e.cluster.pytest_plugin import eventually
from e2e.scenario import Scenario, deployment
from e2e.scenarios.mesh import Client, gateway, istio_canary, routes

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds")]

FINALIZER = "finalizer.flagger.app"
PUBLIC_HOST = "backend.example.com"


def user_service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "backend"},
        "spec": {"selector": {"app": "backend"},
                 "ports": [{"name": "http", "port": 9898, "targetPort": 9898}]},
    }


def user_virtual_service() -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "backend"},
        "spec": {
            "gateways": ["public-gateway", "mesh"],
            "hosts": ["backend", PUBLIC_HOST],
            "http": [{"retries": {"attempts": 3, "perTryTimeout": "1s",
                                  "retryOn": "gateway-error,connect-failure"},
                      "route": [{"destination": {"host": "backend"}}]}],
        },
    }


def reverting_canary() -> dict[str, Any]:
    canary = istio_canary("backend", stepWeight=10, maxWeight=50,
                          service={"port": 9898, "gateways": ["public-gateway", "mesh"],
                                   "hosts": ["backend", PUBLIC_HOST]})
    canary["spec"]["revertOnDeletion"] = True
    return canary


async def replicas(mesh: Scenario, name: str) -> int | None:
    obj = await mesh.get("deployment", name)
    return None if obj is None else int(obj["spec"].get("replicas", 1))


async def delete_canary(mesh: Scenario) -> None:
    """``kubectl delete canary``, which waits for the finalizer to run."""
    canary = await mesh.get("canary", "backend")
    assert canary is not None
    assert FINALIZER in canary["metadata"].get("finalizers", [])
    await mesh.kubectl("delete", "canary", "backend", "--timeout=90s")
    assert await mesh.get("canary", "backend") is None


async def test_revert_with_objects_the_controller_created(mesh: Scenario) -> None:
    """Catalogue #4: the target's replicas come back; the generated objects are removed."""
    await mesh.start_controller("-mesh-provider=istio")
    await mesh.apply(deployment("backend", image="podinfo:6.0.0"), reverting_canary())
    await mesh.wait_phase("backend", "Initialized", within=60)
    assert await replicas(mesh, "backend") == 0

    await delete_canary(mesh)
    assert await replicas(mesh, "backend") == 2

    async def generated_objects_gone() -> bool:
        return all([await mesh.get(kind, name) is None for kind, name in (
            ("deployment", "backend-primary"),
            ("virtualservices.networking.istio.io", "backend"),
            ("service", "backend-canary"),
            ("destinationrules.networking.istio.io", "backend-canary"))])
    await eventually(generated_objects_gone, within=60,
                     what="the garbage collector to remove the generated objects")


async def test_revert_with_a_users_service_and_virtual_service(mesh: Scenario) -> None:
    """Catalogue #5: the user's Service and VirtualService are taken over, then given back."""
    await mesh.start_controller("-mesh-provider=istio")
    await mesh.apply(gateway(), user_service(), user_virtual_service(),
                     deployment("backend", image="podinfo:6.0.0"))
    original = await mesh.get("virtualservices.networking.istio.io", "backend")
    assert original is not None
    user = Client(mesh, PUBLIC_HOST)
    await user.get_served(version="podinfo:6.0.0")

    await mesh.apply(reverting_canary())
    await mesh.wait_phase("backend", "Initialized", within=60)
    service = await mesh.get("service", "backend")
    assert service is not None
    assert service["spec"]["selector"] == {"app": "backend-primary"}
    assert routes(await mesh.get("virtualservices.networking.istio.io", "backend")) == {
        "backend-primary": 100, "backend-canary": 0}
    await user.get_served(version="podinfo:6.0.0")

    await delete_canary(mesh)
    service = await mesh.get("service", "backend")
    assert service is not None, "the user's Service was deleted"
    assert service["spec"]["selector"] == {"app": "backend"}
    reverted = await mesh.get("virtualservices.networking.istio.io", "backend")
    assert reverted is not None, "the user's VirtualService was deleted"
    assert reverted["spec"] == original["spec"]
    assert await replicas(mesh, "backend") == 2

    async def primary_gone() -> bool:
        return await mesh.get("deployment", "backend-primary") is None
    await eventually(primary_gone, within=60, what="the garbage collector to remove the primary")
    # Only the target's pods are left to answer.
    await user.get_served(version="podinfo:6.0.0")
