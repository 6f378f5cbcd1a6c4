"""Istio canary releases: weighted steps under real (simulated) traffic, promoted or rolled back.

The traffic simulator routes requests through the VirtualServices in the namespace and exports
Istio's metrics; a real Prometheus scrapes them and the controller analyses them. So what these
scenarios check is what traffic actually did: a routing bug (weights swapped, a match lost)
shows up as the wrong share of requests, not only as a wrong field in an object.
"""

from __future__ import annotations

import pytest

from e2e.receiver import WebhookReceiver
from e2e.scenario import Scenario, container_image, deployment
from e2e.scenarios.mesh import ROLLBACK_THRESHOLD, istio_canary, routes, settled_share

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds")]

LATENCY_QUERY = (
    "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{"
    'reporter="{{ variables.reporter }}",'
    'destination_workload_namespace="{{ namespace }}",'
    'destination_workload=~"{{ target }}"}[{{ interval }}])) by (le))'
)


def latency_template(prometheus_url: str) -> dict[str, object]:
    """Flagger's e2e ``latency`` MetricTemplate: the reporter comes from templateVariables."""
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "MetricTemplate",
        "metadata": {"name": "latency"},
        "spec": {"provider": {"type": "prometheus", "address": prometheus_url},
                 "query": LATENCY_QUERY},
    }


async def test_promotion_with_builtin_and_template_metrics(
    mesh: Scenario, receiver: WebhookReceiver
) -> None:
    """Catalogue #1: apex metadata and selector, header operations, the split under load."""
    await mesh.start_controller("-mesh-provider=istio")
    # Held at the last step by a confirm-promotion gate: 40 % primary, 60 % canary.
    receiver.answer("/promote", 403)
    service = {
        "port": 9898,
        "portDiscovery": True,
        "apex": {"labels": {"test": "label"}, "annotations": {"test": "annotation"}},
        "headers": {"request": {"add": {"x-envoy-upstream-rq-timeout-ms": "15000"}}},
    }
    metrics = [
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "30s"},
        {"name": "latency", "templateRef": {"name": "latency"},
         "templateVariables": {"reporter": "destination"},
         "thresholdRange": {"max": 500}, "interval": "30s"},
    ]
    hooks = [{"name": "hold", "type": "confirm-promotion", "url": receiver.url("/promote")}]
    await mesh.apply(latency_template(mesh.prometheus_url),
                     deployment("backend", image="podinfo:6.0.0"),
                     istio_canary("backend", service=service, maxWeight=60, stepWeight=30,
                                  metrics=metrics, webhooks=hooks))
    await mesh.wait_phase("backend", "Initialized", within=60)
    apex = await mesh.get("service", "backend")
    assert apex is not None
    assert apex["metadata"]["labels"]["test"] == "label"
    assert apex["metadata"]["annotations"]["test"] == "annotation"
    assert apex["spec"]["selector"] == {"app": "backend-primary"}

    await mesh.kubectl("set", "image", "deployment/backend", "backend=podinfo:6.0.1")
    await mesh.wait_phase("backend", "WaitingPromotion", within=90)
    virtual_service = await mesh.get("virtualservices.networking.istio.io", "backend")
    assert routes(virtual_service) == {"backend-primary": 40, "backend-canary": 60}
    assert virtual_service is not None
    assert virtual_service["spec"]["http"][0]["headers"]["request"]["add"] == {
        "x-envoy-upstream-rq-timeout-ms": "15000"}
    share = await settled_share(mesh, "backend", 0.6)
    print(f"canary share at weight 60: {share:.2f}")

    receiver.answer("/promote", 200)
    await mesh.wait_phase("backend", "Succeeded", within=90)
    assert container_image(await mesh.get("deployment", "backend-primary")) == "podinfo:6.0.1"
    share = await settled_share(mesh, "backend", 0.0)
    print(f"canary share after promotion: {share:.2f}")


async def test_a_failing_version_is_rolled_back_on_real_error_rates(mesh: Scenario) -> None:
    """The simulator's error rate raised on the new version: Failed, all traffic to primary."""
    await mesh.start_controller("-mesh-provider=istio")
    metrics = [{"name": "request-success-rate", "thresholdRange": {"min": 95}, "interval": "15s"}]
    await mesh.apply(deployment("backend", image="podinfo:6.0.0"),
                     istio_canary("backend", maxWeight=50, stepWeight=10,
                                  threshold=ROLLBACK_THRESHOLD, metrics=metrics))
    await mesh.wait_phase("backend", "Initialized", within=60)
    await mesh.kubectl("set", "image", "deployment/backend", "backend=podinfo:6.0.1")
    await mesh.kubectl("set", "env", "deployment/backend", "FAULT_RATE=0.4")
    status = await mesh.wait_phase("backend", ("Failed", "Succeeded"), within=120)
    assert status["phase"] == "Failed"
    assert "success rate" in status["conditions"][0]["message"]
    assert routes(await mesh.get("virtualservices.networking.istio.io", "backend")) == {
        "backend-primary": 100, "backend-canary": 0}
    assert container_image(await mesh.get("deployment", "backend-primary")) == "podinfo:6.0.0"
