"""Istio with ``skipAnalysis``: a new version is promoted without analysis, but one that never
becomes ready still fails, and the primary keeps serving."""

from __future__ import annotations

import pytest

from e2e.scenario import Scenario, container_image, deployment, patch_workload
from e2e.scenarios.mesh import Client, istio_canary, routes

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds")]


async def test_skip_analysis_promotes_then_an_unready_version_fails(mesh: Scenario) -> None:
    """Catalogue #6: analysis skipped even though the metric would fail; deadline still holds."""
    await mesh.start_controller("-mesh-provider=istio")
    metrics = [{"name": "request-success-rate", "thresholdRange": {"min": 99},
                "interval": "15s"}]
    canary = istio_canary("backend", stepWeight=10, maxWeight=50, metrics=metrics)
    canary["spec"]["skipAnalysis"] = True
    await mesh.apply(deployment("backend", image="podinfo:6.0.0"), canary)
    await mesh.wait_phase("backend", "Initialized", within=60)

    # Half of 6.0.1's answers are errors: an analysis would roll it back, skipAnalysis does not.
    await patch_workload(mesh, "backend", {"spec": {"template": {"spec": {"containers": [
        {"name": "backend", "image": "podinfo:6.0.1",
         "env": [{"name": "FAULT_RATE", "value": "0.5"}]}]}}}})
    status = await mesh.wait_phase("backend", ("Succeeded", "Failed"), within=60)
    assert status["phase"] == "Succeeded", status
    assert container_image(await mesh.get("deployment", "backend-primary")) == "podinfo:6.0.1"

    # A version whose pods can never be scheduled exceeds its progress deadline.
    await patch_workload(mesh, "backend", {"spec": {
        "progressDeadlineSeconds": 10,
        "template": {"spec": {"nodeSelector": {"flaggerpy.dev/no-such-node": "true"},
                              "containers": [{"name": "backend", "image": "potato:1.0.0"}]}}}})
    await mesh.wait_phase("backend", "Failed", within=90)
    messages = [event["message"] for event in await mesh.events("backend")]
    name = f"backend.{mesh.namespace}"
    assert any(m.startswith(f"canary deployment {name} not ready") for m in messages), messages
    assert f"Canary failed! Scaling down {name}" in messages, messages
    assert routes(await mesh.get("virtualservices.networking.istio.io", "backend")) == {
        "backend-primary": 100, "backend-canary": 0}
    primary = await mesh.get("deployment", "backend-primary")
    assert container_image(primary) == "podinfo:6.0.1"
    assert primary is not None
    assert primary["status"].get("readyReplicas") == 2
    user = Client(mesh, "backend")
    versions = {(await user.get()).version for _ in range(10)}
    assert versions == {"podinfo:6.0.1"}
