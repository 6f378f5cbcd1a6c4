"""A canary compared with its primary (``metrics[].compare``) through simulated traffic.

The simulator (``--mesh gatewayapi``) routes requests by the HTTPRoute the controller writes and
exports what the pods would: ``http_request_duration_seconds`` per pod, which a real Prometheus
scrapes. Each version's latency comes from its pod template (``LATENCY_JITTER_MS``: a uniform
0..jitter ms per request). The metric is the p99 of each workload's histogram, from one
MetricTemplate rendered for the canary and for the primary (``{{ target }}`` and
``<target>-primary``), judged by Mann-Whitney over the samples of a range query.

- A canary 30 % slower (requests up to 520 ms instead of 400 ms) stays under every absolute
  threshold (request-duration 1500 ms) and is rolled back by the comparison alone.
- A canary with the primary's latency is promoted.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e.scenario import Scenario, container_image, deployment, patch_workload
from e2e.scenarios.mesh import MeshStarter, mesh_canary

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds")]

MESH = "gatewayapi"
PROVIDER = "gatewayapi:v1"
SERVICE = {"port": 9898, "hosts": ["www.example.com"], "gatewayRefs": [{"name": "gateway"}]}
PRIMARY_JITTER_MS = 400
SLOWER_JITTER_MS = 520  # 30 % slower at every quantile

P99_MS = """
histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{
  kubernetes_namespace="{{ namespace }}",
  kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"
}[5s])) by (le)) * 1000
"""


def template(prometheus_url: str) -> dict[str, Any]:
    return {"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": "p99-ms"},
            "spec": {"provider": {"type": "prometheus", "address": prometheus_url},
                     "query": P99_MS}}


def backend(jitter_ms: int) -> dict[str, Any]:
    manifest = deployment("backend", image="podinfo:6.0.0")
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "LATENCY_JITTER_MS", "value": str(jitter_ms)}]
    return manifest


def analysis_metrics() -> list[dict[str, Any]]:
    return [
        {"name": "request-duration", "thresholdRange": {"max": 1500}, "interval": "15s"},
        {"name": "p99-vs-primary", "templateRef": {"name": "p99-ms"}, "interval": "20s",
         "compare": {"with": "primary", "direction": "increase", "tolerance": 0.1}},
    ]


async def start(start_mesh: MeshStarter) -> Scenario:
    mesh = await start_mesh(f"--mesh={MESH}")
    # A canary that has just got its first requests has too few samples for a verdict: hold.
    await mesh.start_controller(f"-mesh-provider={PROVIDER}", "-hold-on-no-values")
    await mesh.apply(template(mesh.prometheus_url), backend(PRIMARY_JITTER_MS),
                     mesh_canary("backend", provider=PROVIDER, service=SERVICE, maxWeight=50,
                                 stepWeight=25, threshold=2, metrics=analysis_metrics()))
    await mesh.wait_phase("backend", "Initialized", within=60)
    return mesh


async def release(mesh: Scenario, jitter_ms: int) -> None:
    """A new version with the given latency: image and env in one revision."""
    await patch_workload(mesh, "backend", {"spec": {"template": {"spec": {"containers": [
        {"name": "backend", "image": "podinfo:6.0.1",
         "env": [{"name": "LATENCY_JITTER_MS", "value": str(jitter_ms)}]}]}}}})


async def test_a_slower_canary_is_rolled_back_by_the_comparison(
        start_mesh: MeshStarter) -> None:
    mesh = await start(start_mesh)
    await release(mesh, SLOWER_JITTER_MS)
    status = await mesh.wait_phase("backend", ("Failed", "Succeeded"), within=120)
    assert status["phase"] == "Failed"
    assert container_image(await mesh.get("deployment", "backend-primary")) == "podinfo:6.0.0"
    halts = [e["message"] for e in await mesh.events("backend")
             if e["message"].startswith("Halt backend.")]
    print("\n".join(halts))
    compared = [m for m in halts if "p99-vs-primary compared with the primary over 20s: Fail" in m]
    assert compared, halts
    assert "Mann-Whitney U=" in compared[0]
    assert not [m for m in halts if "request duration" in m], halts  # under the threshold


async def test_a_canary_as_good_as_the_primary_is_promoted(start_mesh: MeshStarter) -> None:
    mesh = await start(start_mesh)
    await release(mesh, PRIMARY_JITTER_MS)
    status = await mesh.wait_phase("backend", ("Failed", "Succeeded"), within=120)
    assert status["phase"] == "Succeeded", [e["message"] for e in await mesh.events("backend")]
    assert container_image(await mesh.get("deployment", "backend-primary")) == "podinfo:6.0.1"
