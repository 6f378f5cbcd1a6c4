"""Traefik canary releases through a TraefikService, under simulated traffic.

The simulator (``--mesh traefik``) sends the requests for the apex Service's host through the
TraefikService ``<svc>`` the controller writes (a weighted round robin, a missing weight read
as 1, as Traefik does) and exports Traefik's ``traefik_service_requests_total`` and
``traefik_service_request_duration_seconds`` labelled ``<ns>-<svc>-<port>@kubernetescrd``,
which the controller's builtin traefik checks read through a real Prometheus. The user's
IngressRoute sends ``Host(`<app>.example.com`)`` to that TraefikService, as Flagger's docs set
it up; the simulator does not read it.

Traefik has no header or cookie matches (Flagger's router ignores ``analysis.match``), so there
is no A/B scenario here.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e.receiver import WebhookReceiver
from e2e.scenario import Scenario, container_image, deployment
from e2e.scenarios.mesh import ROLLBACK_THRESHOLD, MeshStarter, mesh_canary, settled_share

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds")]

MESH = "traefik"
TRAEFIK_SERVICES = "traefikservices.v1alpha1.traefik.io"


def weights(service: dict[str, Any] | None) -> dict[str, int]:
    """``{service name: weight}`` of a TraefikService's round robin."""
    assert service is not None, "the TraefikService does not exist"
    return {entry["name"]: entry["weight"] for entry in service["spec"]["weighted"]["services"]}


def ingress_route(name: str) -> dict[str, Any]:
    """The user's IngressRoute: ``<name>.example.com`` to the TraefikService ``<name>``."""
    return {
        "apiVersion": "traefik.io/v1alpha1",
        "kind": "IngressRoute",
        "metadata": {"name": name},
        "spec": {"entryPoints": ["web"], "routes": [{
            "kind": "Rule", "match": f"Host(`{name}.example.com`)",
            "services": [{"kind": "TraefikService", "name": name}]}]},
    }


@pytest.fixture
async def traefik(start_mesh: MeshStarter) -> Scenario:
    mesh = await start_mesh(f"--mesh={MESH}")
    await mesh.start_controller(f"-mesh-provider={MESH}")
    return mesh


async def test_promotion_follows_the_traefik_service(
    traefik: Scenario, receiver: WebhookReceiver
) -> None:
    receiver.answer("/promote", 403)  # held at the last step: 40 % primary, 60 % canary
    hooks = [{"name": "hold", "type": "confirm-promotion", "url": receiver.url("/promote")}]
    metrics = [
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "30s"},
        {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "30s"},
    ]
    await traefik.apply(deployment("traefik-good", image="podinfo:6.0.0"),
                        ingress_route("traefik-good"),
                        mesh_canary("traefik-good", provider=MESH, maxWeight=60, stepWeight=30,
                                    metrics=metrics, webhooks=hooks))
    await traefik.wait_phase("traefik-good", "Initialized", within=60)
    await traefik.kubectl("set", "image", "deployment/traefik-good",
                          "traefik-good=podinfo:6.0.1")
    await traefik.wait_phase("traefik-good", "WaitingPromotion", within=90)
    # What traffic did first: a wrong split fails here, whatever the object says.
    share = await settled_share(traefik, "traefik-good", 0.6, mesh=MESH)
    print(f"traefik canary share at weight 60: {share:.2f}")
    assert weights(await traefik.get(TRAEFIK_SERVICES, "traefik-good")) == {
        "traefik-good-primary": 40, "traefik-good-canary": 60}

    receiver.answer("/promote", 200)
    await traefik.wait_phase("traefik-good", "Succeeded", within=90)
    assert container_image(await traefik.get("deployment", "traefik-good-primary")) == (
        "podinfo:6.0.1")
    assert weights(await traefik.get(TRAEFIK_SERVICES, "traefik-good")) == {
        "traefik-good-primary": 100}
    share = await settled_share(traefik, "traefik-good", 0.0, mesh=MESH)
    print(f"traefik canary share after promotion: {share:.2f}")


async def test_a_failing_version_is_rolled_back_on_real_error_rates(traefik: Scenario) -> None:
    metrics = [{"name": "request-success-rate", "thresholdRange": {"min": 95}, "interval": "15s"}]
    await traefik.apply(deployment("traefik-bad", image="podinfo:6.0.0"),
                        mesh_canary("traefik-bad", provider=MESH, maxWeight=50, stepWeight=10,
                                    threshold=ROLLBACK_THRESHOLD, metrics=metrics))
    await traefik.wait_phase("traefik-bad", "Initialized", within=60)
    await traefik.kubectl("set", "image", "deployment/traefik-bad", "traefik-bad=podinfo:6.0.1")
    await traefik.kubectl("set", "env", "deployment/traefik-bad", "FAULT_RATE=0.4")
    status = await traefik.wait_phase("traefik-bad", ("Failed", "Succeeded"), within=120)
    assert status["phase"] == "Failed"
    assert "success rate" in status["conditions"][0]["message"]
    assert weights(await traefik.get(TRAEFIK_SERVICES, "traefik-bad")) == {
        "traefik-bad-primary": 100}
    assert container_image(await traefik.get("deployment", "traefik-bad-primary")) == (
        "podinfo:6.0.0")
