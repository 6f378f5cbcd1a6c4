"""Knative canary releases through a Knative Service's traffic split, under simulated traffic.

No Knative Serving runs here: the test-side stand-in (``e2e/knative_standin.py``, with
``workloads=True``) makes a Revision per template, runs each as a Deployment behind a Service of
the revision's name, and resolves ``spec.traffic`` into ``status.traffic``. The simulator
(``--mesh knative``) routes the Service's requests by that resolved split to the revisions'
pods and exports Envoy's ``envoy_cluster_upstream_rq``/``envoy_cluster_upstream_rq_time`` with
the cluster ``<namespace>/<revision>``, which the controller's builtin knative checks read
through a real Prometheus for the latest created revision.

Knative has no header or cookie routing in Flagger's router, so there is no A/B scenario.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from e2e.cluster.localcluster import LocalCluster
from e2e.knative_standin import KnativeStandIn
from e2e.receiver import WebhookReceiver
from e2e.scenario import Scenario
from e2e.scenarios.mesh import ROLLBACK_THRESHOLD, MeshStarter, mesh_canary, settled_share
from flaggerpy import kube

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds")]

MESH = "knative"
KIND = "services.serving.knative.dev"


def knative_service(name: str, *, image: str = "podinfo:6.0.0") -> dict[str, Any]:
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": name},
            "spec": {"template": {"spec": {"containers": [
                {"image": image, "ports": [{"containerPort": 9898}]}]}}}}


def knative_canary(name: str, **analysis: Any) -> dict[str, Any]:
    manifest = mesh_canary(name, provider=MESH, **analysis)
    manifest["spec"]["targetRef"] = {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                                     "name": name}
    return manifest


def new_template(image: str, **env: str) -> str:
    container: dict[str, Any] = {"image": image, "ports": [{"containerPort": 9898}]}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return json.dumps({"spec": {"template": {"spec": {"containers": [container]}}}})


def traffic(service: dict[str, Any] | None) -> list[dict[str, Any]]:
    assert service is not None, "the Knative Service does not exist"
    return service["spec"]["traffic"]  # type: ignore[no-any-return]


@pytest.fixture
async def knative(start_mesh: MeshStarter, cluster: LocalCluster,
                  namespace: str) -> AsyncIterator[Scenario]:
    client = await kube.KubeClient.connect(kubeconfig=cluster.kubeconfig,
                                           user_agent="knative-standin")
    try:
        async with KnativeStandIn(client, namespaces=[namespace], workloads=True):
            mesh = await start_mesh(f"--mesh={MESH}")
            await mesh.start_controller(f"-mesh-provider={MESH}")
            yield mesh
    finally:
        await client.aclose()


async def test_promotion_follows_the_revision_traffic(
    knative: Scenario, receiver: WebhookReceiver
) -> None:
    receiver.answer("/promote", 403)  # held at the last step: 40 % primary, 60 % canary
    hooks = [{"name": "hold", "type": "confirm-promotion", "url": receiver.url("/promote")}]
    metrics = [
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "30s"},
        {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "30s"},
    ]
    await knative.apply(knative_service("kngood"),
                        knative_canary("kngood", maxWeight=60, stepWeight=30, metrics=metrics,
                                       webhooks=hooks))
    await knative.wait_phase("kngood", "Initialized", within=60)
    await knative.kubectl("patch", KIND, "kngood", "--type=merge",
                          "-p", new_template("podinfo:6.0.1"))
    await knative.wait_phase("kngood", "WaitingPromotion", within=90)
    # What traffic did first: a wrong split fails here, whatever the object says.
    share = await settled_share(knative, "kngood", 0.6, mesh=MESH)
    print(f"knative canary revision share at weight 60: {share:.2f}")
    assert traffic(await knative.get(KIND, "kngood")) == [
        {"latestRevision": True, "percent": 60},
        {"revisionName": "kngood-00001", "percent": 40}]

    receiver.answer("/promote", 200)
    await knative.wait_phase("kngood", "Succeeded", within=90)
    service = await knative.get(KIND, "kngood")
    assert service is not None
    assert service["metadata"]["annotations"]["flagger.app/primary-revision"] == "kngood-00002"
    assert traffic(service) == [{"latestRevision": True, "percent": 0},
                                {"revisionName": "kngood-00002", "percent": 100}]
    # The new revision is the primary now: it serves everything.
    share = await settled_share(knative, "kngood", 1.0, mesh=MESH)
    print(f"knative new revision share after promotion: {share:.2f}")


async def test_a_failing_revision_is_rolled_back_on_real_error_rates(knative: Scenario) -> None:
    metrics = [{"name": "request-success-rate", "thresholdRange": {"min": 95}, "interval": "15s"}]
    await knative.apply(knative_service("knbad"),
                        knative_canary("knbad", maxWeight=50, stepWeight=10,
                                       threshold=ROLLBACK_THRESHOLD, metrics=metrics))
    await knative.wait_phase("knbad", "Initialized", within=60)
    await knative.kubectl("patch", KIND, "knbad", "--type=merge",
                          "-p", new_template("podinfo:6.0.1", FAULT_RATE="0.4"))
    status = await knative.wait_phase("knbad", ("Failed", "Succeeded"), within=120)
    assert status["phase"] == "Failed"
    assert "success rate" in status["conditions"][0]["message"]
    service = await knative.get(KIND, "knbad")
    assert service is not None
    assert service["metadata"]["annotations"]["flagger.app/primary-revision"] == "knbad-00001"
    assert traffic(service) == [{"latestRevision": True, "percent": 0},
                                {"revisionName": "knbad-00001", "percent": 100}]
