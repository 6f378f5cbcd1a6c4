"""externalmetrics end to end: a canary promoted, and one rolled back, on the external metrics API.

The ``flaggerpy controller`` process runs on the local control plane as the chart's
ServiceAccount (the chart installed with the real helm, the process given a token of it), with
a blue/green ``provider: kubernetes`` Canary whose only metric is a MetricTemplate of type
``externalmetrics`` with no address: the controller asks its own API server, which proxies
through the aggregation layer to the local adapter of ``e2e/fakes/external_metrics.py``
registered as ``v1beta1.external.metrics.k8s.io``. The adapter answers a good value for the
first new version and a bad one for the second, and records who asked what.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.cluster.localcluster import REPO_ROOT, LocalCluster
from e2e.fakes.external_metrics import FakeExternalMetrics, registered
from e2e.scenario import Scenario, canary, container_image, deployment
from tests.integration.test_chart import Release

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds"), pytest.mark.timeout(300)]

METRIC = "podinfo_error_rate"
QUERY = "{{ namespace }}/" + METRIC + "?labelSelector=deployment%3D{{ target }}-canary"


@pytest.fixture
async def adapter(cluster: LocalCluster) -> AsyncIterator[FakeExternalMetrics]:
    async with registered(cluster) as fake:
        yield fake




@pytest.fixture
async def release(cluster: LocalCluster, namespace: str) -> AsyncIterator[Release]:
    chart = Release(cluster, namespace)
    try:
        yield chart
    finally:
        if chart.installed:  # the ClusterRole and its binding would outlive the namespace
            await chart.helm("uninstall", chart.name, "--namespace", namespace, check=False)


def template() -> dict[str, Any]:
    return {"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": "error-rate"},
            "spec": {"provider": {"type": "externalmetrics"}, "query": QUERY}}


def analysis() -> dict[str, Any]:
    """Blue/green, two iterations of 2 s: the error rate must stay at most 1 (percent)."""
    return {"interval": "2s", "threshold": 2, "iterations": 2, "metrics": [{
        "name": "error-rate", "templateRef": {"name": "error-rate"},
        "thresholdRange": {"max": 1}, "interval": "1m"}]}


async def test_externalmetrics_promotes_then_rolls_back(
        adapter: FakeExternalMetrics, scenario: Scenario, release: Release,
        namespace: str, tmp_path: Path) -> None:
    await release.install("meshProvider=kubernetes")
    args = [a for a in await release.controller_args()
            if not a.startswith(("-metrics-server=", "-log-level="))]
    kubeconfig = await release.token_kubeconfig(tmp_path / "sa.kubeconfig")

    def measure(value: str) -> None:  # the canary's series, beside another deployment's
        adapter.set_metric(METRIC, ({"deployment": "podinfo-canary"}, value),
                           ({"deployment": "other"}, "90"), namespace=namespace)

    measure("500m")  # 0.5
    await scenario.start_controller(*args, kubeconfig=kubeconfig)
    await scenario.apply(template(), deployment("podinfo", image="podinfo:6.0.0"),
                         canary("podinfo", analysis=analysis()))
    await scenario.wait_phase("podinfo", "Initialized", within=60)

    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=60)
    assert status["phase"] == "Succeeded", status
    assert container_image(await scenario.get("deployment", "podinfo-primary")) == (
        "podinfo:6.0.1")

    measure("7250m")  # 7.25: the next version errs
    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.2")
    await scenario.wait_phase("podinfo", "Progressing", within=30)
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=60)
    assert status["phase"] == "Failed", status
    assert container_image(await scenario.get("deployment", "podinfo-primary")) == (
        "podinfo:6.0.1")
    assert "7.25" in json.dumps(await scenario.events("podinfo"))

    queries = [r for r in adapter.metric_requests() if r.path.endswith(f"/{METRIC}")]
    assert queries, adapter.requests
    assert {r.path for r in queries} == {
        f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{METRIC}"}
    assert {r.query["labelSelector"] for r in queries} == {"deployment=podinfo-canary"}
    # The API server authenticated the controller's token and authorized it by the chart's
    # ClusterRole before proxying; the adapter was told who asked.
    assert {r.user for r in adapter.metric_requests()} == {release.service_account}
    online = [r for r in adapter.metric_requests() if r.path.endswith("/dummy-metric")]
    assert online
    assert online[0].path.endswith("/namespaces/kube-system/dummy-metric")


def yaml_blocks(section: str) -> list[dict[str, Any]]:
    """The YAML examples under the ``## <section>`` heading of docs/metrics.md."""
    text = (REPO_ROOT / "docs" / "metrics.md").read_text()
    match = re.search(rf"^## {re.escape(section)}.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match is not None, f"docs/metrics.md has no section {section!r}"
    blocks = re.findall(r"```yaml\n(.*?)```", match.group(1), re.S)
    return [doc for block in blocks for doc in yaml.safe_load_all(block) if doc]


async def test_the_docs_example_is_accepted_by_the_crd(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    documents = yaml_blocks("Kubernetes external metrics")
    assert any(d["kind"] == "MetricTemplate" for d in documents), documents
    manifest = tmp_path / "example.json"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": documents}))
    result = await cluster.akubectl("apply", "--dry-run=server", "--validate=strict",
                                    "-n", namespace, "-f", str(manifest))
    assert "metrictemplate.flagger.app/" in result.stdout, result.stdout
