"""The routing objects carry ``service.apex``'s labels as Flagger writes them.

Flagger's Kubernetes router puts ``<selector label>: <apex name>`` into the Canary's own
``service.apex`` metadata, and its mesh routers read that metadata for their objects: with
``service.apex`` set, the VirtualService, HTTPProxy and HTTPRoute get the label too, and keep
it through the run. The real controller process, the routers' CRDs on the local control plane.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e.scenario import Scenario, canary, deployment

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]

ROUTING_OBJECTS = {
    "istio": "virtualservices.networking.istio.io",
    "contour": "httpproxies.projectcontour.io",
    "gatewayapi:v1": "httproutes.v1.gateway.networking.k8s.io",
}




def labelled_canary(target: str, provider: str) -> dict[str, Any]:
    """A canary run in one weight step, its apex Service named apart from its target."""
    service: dict[str, Any] = {"port": 9898, "name": f"{target}-svc",
                               "apex": {"labels": {"team": "checkout"}}}
    if provider.startswith("gatewayapi"):
        service["gatewayRefs"] = [{"name": "gateway"}]
    metric = {"name": "app-success-rate", "templateRef": {"name": "app-success-rate"},
              "thresholdRange": {"min": 90}, "interval": "30s"}
    analysis = {"interval": "2s", "threshold": 2, "stepWeight": 50, "maxWeight": 50,
                "metrics": [metric]}
    return canary(target, provider=provider, analysis=analysis, service=service)


async def labels_of(scenario: Scenario, provider: str, name: str) -> dict[str, str]:
    obj = await scenario.get(ROUTING_OBJECTS[provider], name)
    assert obj is not None, f"{provider}: no {ROUTING_OBJECTS[provider]} {name}"
    return dict(obj["metadata"].get("labels") or {})


async def test_routing_objects_carry_the_apex_selector_label(scenario: Scenario) -> None:
    controller = await scenario.start_controller()
    targets = {provider: f"app{i}" for i, provider in enumerate(ROUTING_OBJECTS)}
    for target in targets.values():
        await scenario.set_success_rate(target, 99)
    await scenario.apply(*(deployment(t, image="podinfo:6.0.0") for t in targets.values()))
    await scenario.apply(*(labelled_canary(t, p) for p, t in targets.items()))
    for target in targets.values():
        await scenario.wait_phase(target, "Initialized", within=90)
    # The selector label is the target's (app), its value the apex Service's name.
    expected = {p: {"team": "checkout", "app": f"{t}-svc"} for p, t in targets.items()}
    assert {p: await labels_of(scenario, p, f"{t}-svc") for p, t in targets.items()} == expected

    for target in targets.values():
        await scenario.kubectl("set", "image", f"deployment/{target}", f"{target}=podinfo:6.0.1")
    for target in targets.values():
        status = await scenario.wait_phase(target, ("Succeeded", "Failed"), within=120)
        assert status["phase"] == "Succeeded", (status, controller.output()[-4000:])
    assert {p: await labels_of(scenario, p, f"{t}-svc") for p, t in targets.items()} == expected


async def test_without_service_apex_routing_objects_get_no_labels(scenario: Scenario) -> None:
    await scenario.start_controller()
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"),
                         canary("podinfo", provider="istio"))
    await scenario.wait_phase("podinfo", "Initialized", within=90)
    assert await labels_of(scenario, "istio", "podinfo") == {}
