"""InfluxDB end to end: a canary promoted, and one rolled back, on a real InfluxDB's answers.

The ``flaggerpy controller`` process runs on the local control plane with a blue/green
``provider: kubernetes`` Canary whose only metric is a MetricTemplate of ``type: influxdb``,
its token and org in a Secret, pointed at a real InfluxDB 1.8 running Flux (built from its Go
module, ``e2e/influxdb.py``) with authentication on. The test writes a low error rate for the
first new version and a high one for the second, with the line protocol; the Flux query
renders the Canary's namespace and target and takes the last point.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.cluster.localcluster import REPO_ROOT, LocalCluster
from e2e.influxdb import LocalInfluxDB
from e2e.scenario import Scenario, canary, container_image, deployment

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds"), pytest.mark.timeout(300)]

ORG = "e2e-org"
QUERY = """from(bucket: "canary")
  |> range(start: -1h)
  |> filter(fn: (r) => r._measurement == "errors" and r.namespace == "{{ namespace }}"
                       and r.target == "{{ target }}" and r._field == "rate")
  |> last()"""


@pytest.fixture(scope="module")
def influxdb() -> Iterator[LocalInfluxDB]:
    with LocalInfluxDB() as server:
        server.create_database("default")  # what the provider's is_online asks
        server.create_database("canary")
        yield server




def secret(token: str) -> dict[str, Any]:
    data = {"token": token, "org": ORG}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "influxdb-token"},
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}}


def template(address: str) -> dict[str, Any]:
    return {"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": "error-rate"},
            "spec": {"provider": {"type": "influxdb", "address": address,
                                  "secretRef": {"name": "influxdb-token"}},
                     "query": QUERY}}


def analysis() -> dict[str, Any]:
    """Blue/green, two iterations of 2 s: the error rate must stay at most 1 (percent)."""
    return {"interval": "2s", "threshold": 2, "iterations": 2, "metrics": [{
        "name": "error-rate", "templateRef": {"name": "error-rate"},
        "thresholdRange": {"max": 1}, "interval": "1m"}]}


async def test_promotes_then_rolls_back_on_influxdbs_answers(
        scenario: Scenario, influxdb: LocalInfluxDB, namespace: str,
) -> None:
    point = f"errors,namespace={namespace},target=podinfo rate={{}}"
    influxdb.write("canary", point.format(0.5), precision="ns")
    await scenario.start_controller()
    await scenario.apply(
        secret(influxdb.token),
        template(influxdb.url),
        deployment("podinfo", image="podinfo:6.0.0"),
        canary("podinfo", analysis=analysis()),
    )
    await scenario.wait_phase("podinfo", "Initialized", within=60)

    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=60)
    assert status["phase"] == "Succeeded", status
    assert container_image(await scenario.get("deployment", "podinfo-primary")) == "podinfo:6.0.1"

    influxdb.write("canary", point.format(7.25), precision="ns")  # the next version errs
    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.2")
    await scenario.wait_phase("podinfo", "Progressing", within=30)
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=60)
    assert status["phase"] == "Failed", status
    assert container_image(await scenario.get("deployment", "podinfo-primary")) == "podinfo:6.0.1"
    messages = [event["message"] for event in await scenario.events("podinfo")]
    assert any(re.search(r"error-rate .*7\.25 > 1", m) for m in messages), messages

    password = influxdb.token.split(":", 1)[1]
    assert password not in json.dumps(status)
    assert password not in json.dumps(messages)
    assert password not in scenario.controllers[0].output()


def yaml_blocks(section: str) -> list[dict[str, Any]]:
    """The YAML examples under the ``## <section>`` heading of docs/metrics.md."""
    text = (REPO_ROOT / "docs" / "metrics.md").read_text()
    match = re.search(rf"^## {re.escape(section)}.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match is not None, f"docs/metrics.md has no section {section!r}"
    blocks = re.findall(r"```yaml\n(.*?)```", match.group(1), re.S)
    return [doc for block in blocks for doc in yaml.safe_load_all(block) if doc]


async def test_the_docs_example_is_accepted_by_the_crd(
        cluster: LocalCluster, namespace: str, tmp_path: Path,
) -> None:
    documents = yaml_blocks("InfluxDB")
    assert any(d["kind"] == "MetricTemplate" for d in documents), documents
    manifest = tmp_path / "example.json"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": documents}))
    result = await cluster.akubectl("apply", "--dry-run=server", "--validate=strict",
                                    "-n", namespace, "-f", str(manifest))
    assert "metrictemplate.flagger.app/" in result.stdout, result.stdout
