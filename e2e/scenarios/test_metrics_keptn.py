"""keptn end to end: a canary promoted, and one rolled back, on Keptn's KeptnMetric and Analysis.

The ``flaggerpy controller`` process runs on the local control plane as the chart's
ServiceAccount (the chart installed with the real helm, the process given a token of it), so
the chart's ``metrics.keptn.sh`` rules are what let it work. The Canary (blue/green,
``provider: kubernetes``) has two MetricTemplates of type ``keptn``: a KeptnMetric's value
(at most 1) and the verdict of a Keptn Analysis (at least 1, a pass). Keptn's CRDs are
installed; ``e2e/keptn_standin.py`` plays Keptn's metrics operator, with a good KeptnMetric
value and a passing verdict for the first new version, and a failing verdict for the second.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from e2e.cluster.localcluster import LocalCluster
from e2e.keptn_standin import ANALYSES, KeptnStandIn
from e2e.scenario import Scenario, canary, container_image, deployment
from e2e.scenarios.test_metrics_externalmetrics import yaml_blocks
from flaggerpy import kube
from tests.integration.test_chart import Release

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds"), pytest.mark.timeout(300)]


@pytest.fixture
async def keptn(cluster: LocalCluster, namespace: str) -> AsyncIterator[KeptnStandIn]:
    client = await kube.KubeClient.connect(kubeconfig=cluster.kubeconfig)
    try:
        async with KeptnStandIn(client, namespaces=[namespace], delay=0.2) as running:
            yield running
    finally:
        await client.aclose()




@pytest.fixture
async def release(cluster: LocalCluster, namespace: str) -> AsyncIterator[Release]:
    chart = Release(cluster, namespace)
    try:
        yield chart
    finally:
        if chart.installed:  # the ClusterRole and its binding would outlive the namespace
            await chart.helm("uninstall", chart.name, "--namespace", namespace, check=False)


def templates() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
         "metadata": {"name": "error-rate"},
         "spec": {"provider": {"type": "keptn"},
                  "query": "keptnmetric/{{ namespace }}/{{ target }}-error-rate"}},
        {"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
         "metadata": {"name": "slo"},
         "spec": {"provider": {"type": "keptn"},
                  "query": "analysis/{{ namespace }}/{{ target }}-slo/2m/workload={{ target }}"}},
    ]


def analysis() -> dict[str, Any]:
    """Blue/green, two iterations of 2 s: the error rate at most 1, and Keptn's verdict a pass."""
    return {"interval": "2s", "threshold": 2, "iterations": 2, "metrics": [
        {"name": "error-rate", "templateRef": {"name": "error-rate"},
         "thresholdRange": {"max": 1}, "interval": "1m"},
        {"name": "slo", "templateRef": {"name": "slo"},
         "thresholdRange": {"min": 1}, "interval": "1m"}]}


async def test_keptn_promotes_then_rolls_back(
        keptn: KeptnStandIn, scenario: Scenario, release: Release, namespace: str,
        tmp_path: Path) -> None:
    await release.install("meshProvider=kubernetes")
    args = [a for a in await release.controller_args()
            if not a.startswith(("-metrics-server=", "-log-level="))]
    kubeconfig = await release.token_kubeconfig(tmp_path / "sa.kubeconfig")

    await keptn.set_metric(namespace, "podinfo-error-rate", "0.5")
    keptn.verdicts["podinfo-slo"] = True
    await scenario.start_controller(*args, kubeconfig=kubeconfig)
    await scenario.apply(*templates(), deployment("podinfo", image="podinfo:6.0.0"),
                         canary("podinfo", analysis=analysis()))
    await scenario.wait_phase("podinfo", "Initialized", within=60)

    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=90)
    assert status["phase"] == "Succeeded", status
    assert container_image(await scenario.get("deployment", "podinfo-primary")) == (
        "podinfo:6.0.1")
    passed = len(keptn.created)
    assert passed >= 2  # one Analysis per tick of the run

    keptn.verdicts["podinfo-slo"] = False  # Keptn judges the next version a failure
    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.2")
    await scenario.wait_phase("podinfo", "Progressing", within=30)
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=90)
    assert status["phase"] == "Failed", status
    assert container_image(await scenario.get("deployment", "podinfo-primary")) == (
        "podinfo:6.0.1")
    assert "advancement slo 0.00 < 1" in json.dumps(await scenario.events("podinfo"))
    assert len(keptn.created) > passed

    # What the controller asked Keptn for (as the chart's ServiceAccount: its rules sufficed).
    for created in keptn.created:
        assert created["metadata"]["name"].startswith("podinfo-slo-")
        assert created["spec"] == {"analysisDefinition": {"name": "podinfo-slo"},
                                   "timeframe": {"recent": "2m"},
                                   "args": {"workload": "podinfo"}}
    # Each Analysis was deleted once read.
    left = await scenario.kubectl("get", f"{ANALYSES.plural}.{ANALYSES.group}", "-o", "json")
    assert json.loads(left)["items"] == []


async def test_the_docs_example_is_accepted_by_the_crds(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    documents = yaml_blocks("Keptn")
    assert any(d["kind"] == "MetricTemplate" for d in documents), documents
    assert {"KeptnMetric", "AnalysisDefinition"} <= {d["kind"] for d in documents}, documents
    manifest = tmp_path / "example.json"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": documents}))
    result = await cluster.akubectl("apply", "--dry-run=server", "--validate=strict",
                                    "-n", namespace, "-f", str(manifest))
    assert "metrictemplate.flagger.app/" in result.stdout, result.stdout
    assert "keptnmetric.metrics.keptn.sh/" in result.stdout, result.stdout
    assert "analysisdefinition.metrics.keptn.sh/" in result.stdout, result.stdout
