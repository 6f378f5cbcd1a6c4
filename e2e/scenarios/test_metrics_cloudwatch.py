"""CloudWatch end to end: a canary promoted, and one rolled back, on GetMetricData's answers.

The ``flaggerpy controller`` process runs on the local control plane with a blue/green
``provider: kubernetes`` Canary whose only metric is a ``type: cloudwatch`` MetricTemplate. The
CloudWatch API is moto's server on loopback with its IAM checks on: the controller finds it
and signs its requests the way Flagger's AWS SDK would, from its environment
(``AWS_ENDPOINT_URL_CLOUDWATCH``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` of an IAM user
allowed ``GetMetricData``), as a Deployment's ``env`` would give them. The test puts the
canary's error rate with ``PutMetricData``: a good value for the first new version, a bad one
for the second.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.cluster.localcluster import REPO_ROOT, LocalCluster
from e2e.moto import LocalMoto
from e2e.scenario import Scenario, canary, container_image, deployment

# The time limit covers the fixtures too: the upstream CRDs, moto and Prometheus start first.
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds"), pytest.mark.timeout(300)]

REGION = "eu-west-1"
NAMESPACE = "Flaggerpy/E2E"
QUERY = json.dumps([{
    "Id": "errors",
    "MetricStat": {
        "Metric": {"Namespace": NAMESPACE, "MetricName": "ErrorRate",
                   "Dimensions": [{"Name": "app", "Value": "{{ target }}"}]},
        "Period": 60, "Stat": "Maximum"},
}], indent=2)


@pytest.fixture
def moto() -> Iterator[LocalMoto]:
    with LocalMoto() as server:
        yield server


@pytest.fixture
def aws_user(moto: LocalMoto, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[str, str]:
    """An IAM user allowed GetMetricData, in the environment the controller inherits."""
    key, secret = moto.user("flagger", actions=["cloudwatch:GetMetricData",
                                                "monitoring:GetMetricData"])  # moto's prefix
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", moto.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    return key, secret




def template(name: str) -> dict[str, Any]:
    return {"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": name},
            "spec": {"provider": {"type": "cloudwatch", "region": REGION}, "query": QUERY}}


def analysis(template_name: str) -> dict[str, Any]:
    """Blue/green, two iterations of 2 s: the error rate must stay at most 1 (percent)."""
    return {"interval": "2s", "threshold": 2, "iterations": 2, "metrics": [{
        "name": "error-rate", "templateRef": {"name": template_name},
        "thresholdRange": {"max": 1}, "interval": "1m"}]}


def put_error_rate(moto: LocalMoto, value: float) -> None:
    moto.put_metric(region=REGION, namespace=NAMESPACE, name="ErrorRate",
                    points=[(datetime.now(UTC) - timedelta(seconds=5), value)],
                    dimensions={"app": "podinfo"})


async def test_cloudwatch_promotes_then_rolls_back(
        scenario: Scenario, moto: LocalMoto, aws_user: tuple[str, str]) -> None:
    key, secret = aws_user
    await asyncio.to_thread(put_error_rate, moto, 0.5)
    await asyncio.to_thread(moto.enforce_auth)
    await scenario.start_controller()
    await scenario.apply(
        template("error-rate"),
        deployment("podinfo", image="podinfo:6.0.0"),
        canary("podinfo", analysis=analysis("error-rate")),
    )
    await scenario.wait_phase("podinfo", "Initialized", within=60)

    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=60)
    assert status["phase"] == "Succeeded", status
    assert container_image(await scenario.get("deployment", "podinfo-primary")) == (
        "podinfo:6.0.1")
    queries = [r for r in moto.requests("GetMetricData") if r.json()["MetricDataQueries"]]
    assert queries, moto.requests()
    for sent in queries:
        body = sent.json()
        dimensions = body["MetricDataQueries"][0]["MetricStat"]["Metric"]["Dimensions"]
        assert dimensions == [{"Name": "app", "Value": "podinfo"}]
        assert body["MaxDatapoints"] == 20
        assert body["EndTime"] - body["StartTime"] == pytest.approx(600, abs=0.01)
        assert sent.credential_scope == (key, REGION, "monitoring")

    # The next version errs: a newer, worse point (the maximum of its minute).
    await asyncio.to_thread(moto.allow_anonymous)
    await asyncio.to_thread(put_error_rate, moto, 7.25)
    await asyncio.to_thread(moto.enforce_auth)
    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.2")
    await scenario.wait_phase("podinfo", "Progressing", within=30)
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=60)
    assert status["phase"] == "Failed", status
    assert container_image(await scenario.get("deployment", "podinfo-primary")) == (
        "podinfo:6.0.1")
    message = status["conditions"][0]["message"]
    assert "error-rate" in message, status
    assert "7.25" in message, status
    events = json.dumps(await scenario.events("podinfo"))
    assert "7.25" in events
    for shown in (events, json.dumps(status), scenario.controllers[0].output()):
        assert secret not in shown


def yaml_blocks(section: str) -> list[dict[str, Any]]:
    """The YAML examples under the ``## <section>`` heading of docs/metrics.md."""
    text = (REPO_ROOT / "docs" / "metrics.md").read_text()
    match = re.search(rf"^## {re.escape(section)}.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match is not None, f"docs/metrics.md has no section {section!r}"
    blocks = re.findall(r"```yaml\n(.*?)```", match.group(1), re.S)
    return [doc for block in blocks for doc in yaml.safe_load_all(block) if doc]


async def test_the_docs_example_is_accepted_by_the_crd(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    documents = yaml_blocks("CloudWatch")
    [example] = [d for d in documents if d["kind"] == "MetricTemplate"]
    assert example["spec"]["provider"]["type"] == "cloudwatch"
    assert isinstance(json.loads(example["spec"]["query"]), list)  # a JSON array, as sent
    manifest = tmp_path / "example.json"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": documents}))
    result = await cluster.akubectl("apply", "--dry-run=server", "--validate=strict",
                                    "-n", namespace, "-f", str(manifest))
    assert "metrictemplate.flagger.app/" in result.stdout, result.stdout
