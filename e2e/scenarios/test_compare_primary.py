"""A canary compared with its primary (``metrics[].compare``) through simulated traffic.

The simulator (``--mesh gatewayapi``) routes requests by the HTTPRoute the controller writes and
exports what the pods would: ``http_request_duration_seconds`` per pod, which a real Prometheus
scrapes. Each version's latency comes from its pod template (``LATENCY_MS`` plus a uniform
0..``LATENCY_JITTER_MS`` ms per request). The metric is the p99 of each workload's histogram,
from one MetricTemplate rendered for the canary and for the primary (``{{ target }}`` and
``<target>-primary``), judged by Mann-Whitney over the samples of a range query.

- A canary 30 % slower (requests of 390..520 ms instead of 300..400 ms) stays under every
  absolute threshold (request-duration 1500 ms) and is rolled back by the comparison alone.
  ``minSamples`` and ``-hold-on-no-values`` hold the weight until each side has 8 points, so
  a verdict never rests on the first few requests.
- A canary with the primary's latency is promoted.
- A canary failing 8 % of its requests where the primary fails none is rolled back by the
  comparison of the two error ratios (``proportion``, judged from 50 requests a side on).
- The same 30 % slower canary is rolled back by the builtin ``request-duration`` with
  ``compare``: the observer's own p99 query (Flagger's http observer for Gateway API) rendered
  for each workload, with no MetricTemplate at all.
- A canary failing 6 % of its requests where the primary fails none passes the builtin
  ``request-success-rate`` threshold (min 85) and is rolled back by its ``compare``, judged as
  the two proportions of errors; the next revision, failing no more than the primary, is
  promoted by the same metric once the rolled-back pods' errors are out of the metric's window
  (its pod-name regex selects every ``backend-<hash>-<id>``, old ones included).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from e2e.scenario import Scenario, container_image, deployment, patch_workload
from e2e.scenarios.mesh import MeshStarter, mesh_canary

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds")]

MESH = "gatewayapi"
PROVIDER = "gatewayapi:v1"
SERVICE = {"port": 9898, "hosts": ["www.example.com"], "gatewayRefs": [{"name": "gateway"}]}
PRIMARY_LATENCY = (300, 100)  # LATENCY_MS, LATENCY_JITTER_MS: 300..400 ms
SLOWER_LATENCY = (390, 130)  # 390..520 ms: 30 % slower at every quantile

P99_MS = """
histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{
  kubernetes_namespace="{{ namespace }}",
  kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"
}[5s])) by (le)) * 1000
"""


ERROR_RATIO = """
sum(increase(http_request_duration_seconds_count{
  kubernetes_namespace="{{ namespace }}",
  kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)",
  status=~"5.."
}[{{ interval }}]))
/
sum(increase(http_request_duration_seconds_count{
  kubernetes_namespace="{{ namespace }}",
  kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"
}[{{ interval }}]))
"""


def template(prometheus_url: str, name: str = "p99-ms", query: str = P99_MS) -> dict[str, Any]:
    return {"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": name},
            "spec": {"provider": {"type": "prometheus", "address": prometheus_url},
                     "query": query}}


def latency_env(latency: tuple[int, int]) -> list[dict[str, str]]:
    return [{"name": "LATENCY_MS", "value": str(latency[0])},
            {"name": "LATENCY_JITTER_MS", "value": str(latency[1])}]


def backend() -> dict[str, Any]:
    manifest = deployment("backend", image="podinfo:6.0.0")
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["env"] = latency_env(PRIMARY_LATENCY)
    return manifest


LATENCY_METRICS: list[dict[str, Any]] = [
    {"name": "request-duration", "thresholdRange": {"max": 1500}, "interval": "15s"},
    {"name": "p99-vs-primary", "templateRef": {"name": "p99-ms"}, "interval": "20s",
     "compare": {"with": "primary", "direction": "increase", "tolerance": 0.1},
     "minSamples": 8},
]
BUILTIN_METRICS: list[dict[str, Any]] = [
    {"name": "request-duration", "thresholdRange": {"max": 1500}, "interval": "20s",
     "compare": {"with": "primary", "tolerance": 0.1}, "minSamples": 8},
]
SUCCESS_RATE_METRICS: list[dict[str, Any]] = [
    # Loose enough that 6 % of errors stays above it (15 % would be needed to breach it).
    {"name": "request-success-rate", "thresholdRange": {"min": 85}, "interval": "20s",
     "compare": {"with": "primary"}, "minSamples": 150},
]
ERROR_METRICS: list[dict[str, Any]] = [
    {"name": "errors-vs-primary", "templateRef": {"name": "error-ratio"}, "interval": "20s",
     "compare": {"with": "primary", "test": "proportion", "tolerance": 0.5},
     "minSamples": 50},
]


async def start(start_mesh: MeshStarter,
                metrics: list[dict[str, Any]] = LATENCY_METRICS) -> Scenario:
    mesh = await start_mesh(f"--mesh={MESH}")
    # A canary that has just got its first requests has too few samples for a verdict: hold.
    await mesh.start_controller(f"-mesh-provider={PROVIDER}", "-hold-on-no-values")
    await mesh.apply(template(mesh.prometheus_url),
                     template(mesh.prometheus_url, "error-ratio", ERROR_RATIO),
                     backend(),
                     mesh_canary("backend", provider=PROVIDER, service=SERVICE, maxWeight=50,
                                 stepWeight=25, threshold=2, metrics=metrics))
    await mesh.wait_phase("backend", "Initialized", within=60)
    return mesh


async def release(mesh: Scenario, latency: tuple[int, int], fault_rate: float = 0.0) -> None:
    """A new version with the given latency and errors: image and env in one revision."""
    env = [*latency_env(latency), {"name": "FAULT_RATE", "value": str(fault_rate)}]
    await patch_workload(mesh, "backend", {"spec": {"template": {"spec": {"containers": [
        {"name": "backend", "image": "podinfo:6.0.1", "env": env}]}}}})


async def errors_gone(mesh: Scenario, *, window: str = "20s", within: float = 60) -> None:
    """Waits until no canary pod (``backend-<hash>-<id>``) has an error in the last ``window``."""
    assert mesh.prometheus is not None
    query = (f'sum(increase(http_request_duration_seconds_count{{kubernetes_namespace='
             f'"{mesh.namespace}",kubernetes_pod_name=~"backend-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)",'
             f'status=~"5.."}}[{window}]))')
    deadline = time.monotonic() + within
    while True:
        result = await asyncio.to_thread(mesh.prometheus.query, query)
        if not result or float(result[0]["value"][1]) == 0:  # type: ignore[index]
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"errors still in the last {window} after {within}s: {result}")
        await asyncio.sleep(1)


async def test_a_slower_canary_is_rolled_back_by_the_comparison(
        start_mesh: MeshStarter) -> None:
    mesh = await start(start_mesh)
    await release(mesh, SLOWER_LATENCY)
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
    await release(mesh, PRIMARY_LATENCY)
    status = await mesh.wait_phase("backend", ("Failed", "Succeeded"), within=120)
    assert status["phase"] == "Succeeded", [e["message"] for e in await mesh.events("backend")]
    assert container_image(await mesh.get("deployment", "backend-primary")) == "podinfo:6.0.1"


async def test_a_canary_failing_more_often_is_rolled_back_by_the_proportions(
        start_mesh: MeshStarter) -> None:
    mesh = await start(start_mesh, ERROR_METRICS)
    await release(mesh, PRIMARY_LATENCY, fault_rate=0.08)
    status = await mesh.wait_phase("backend", ("Failed", "Succeeded"), within=120)
    assert status["phase"] == "Failed"
    assert container_image(await mesh.get("deployment", "backend-primary")) == "podinfo:6.0.0"
    halts = [e["message"] for e in await mesh.events("backend")
             if e["message"].startswith("Halt backend.")]
    print("\n".join(halts))
    compared = [m for m in halts
                if "errors-vs-primary compared with the primary over 20s: Fail" in m]
    assert compared, halts
    assert " z=" in compared[0]


async def test_a_slower_canary_is_rolled_back_by_the_builtin_request_duration(
        start_mesh: MeshStarter) -> None:
    mesh = await start(start_mesh, BUILTIN_METRICS)
    await release(mesh, SLOWER_LATENCY)
    status = await mesh.wait_phase("backend", ("Failed", "Succeeded"), within=120)
    assert status["phase"] == "Failed"
    assert container_image(await mesh.get("deployment", "backend-primary")) == "podinfo:6.0.0"
    halts = [e["message"] for e in await mesh.events("backend")
             if e["message"].startswith("Halt backend.")]
    print("\n".join(halts))
    compared = [m for m in halts
                if "request-duration compared with the primary over 20s: Fail" in m]
    assert compared, halts
    assert "Mann-Whitney U=" in compared[0]
    assert not [m for m in halts if "request duration" in m], halts  # under the threshold


async def test_the_builtin_success_rate_compared_with_the_primary(
        start_mesh: MeshStarter) -> None:
    mesh = await start(start_mesh, SUCCESS_RATE_METRICS)
    await release(mesh, PRIMARY_LATENCY, fault_rate=0.06)
    status = await mesh.wait_phase("backend", ("Failed", "Succeeded"), within=120)
    halts = [e["message"] for e in await mesh.events("backend")
             if e["message"].startswith("Halt backend.")]
    print("\n".join(halts))
    assert status["phase"] == "Failed", halts
    assert container_image(await mesh.get("deployment", "backend-primary")) == "podinfo:6.0.0"
    compared = [m for m in halts
                if "request-success-rate compared with the primary over 20s: Fail" in m]
    assert compared, halts
    assert " z=" in compared[0]  # the two-proportion test, errors out of requests per side
    assert not [m for m in halts if "success rate" in m and "compare" not in m], halts
    failed = [e for e in status["analysisHistory"]
              if e["metric"] == "request-success-rate" and e["action"] == "fail"]
    assert failed, status["analysisHistory"]
    assert failed[-1]["verdict"] == "Fail"
    assert ": Fail: canary higher than the primary" in failed[-1]["message"], failed[-1]
    assert failed[-1]["samples"] >= 150  # requests on the smaller side: minSamples held

    await errors_gone(mesh)
    await release(mesh, PRIMARY_LATENCY, fault_rate=0.0)  # fails no more than the primary
    await mesh.wait_phase("backend", "Progressing", within=60)
    status = await mesh.wait_phase("backend", ("Failed", "Succeeded"), within=120)
    said = [e["message"] for e in await mesh.events("backend")]
    assert status["phase"] == "Succeeded", said
    assert container_image(await mesh.get("deployment", "backend-primary")) == "podinfo:6.0.1"
    passed = [e for e in status["analysisHistory"]
              if e["metric"] == "request-success-rate" and e["action"] == "pass"]
    assert passed, status["analysisHistory"]
    assert passed[-1]["verdict"] == "Pass", passed[-1]
