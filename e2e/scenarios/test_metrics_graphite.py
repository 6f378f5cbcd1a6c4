"""Graphite end to end: a canary promoted, and one rolled back, on a real Graphite's answers.

The ``flaggerpy controller`` process runs on the local control plane with a blue/green
``provider: kubernetes`` Canary whose only metric is a ``type: graphite`` MetricTemplate pointed
at a real carbon-cache + graphite-web on loopback (``e2e/graphite.py``), with basic-auth
credentials in a Secret. The test plays the application: every half second it sends the
current error rate over carbon's plaintext protocol, good while the first new version runs and
bad for the second. graphite-web's own log shows what the controller asked.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.cluster.localcluster import REPO_ROOT, LocalCluster
from e2e.graphite import LocalGraphite
from e2e.scenario import Scenario, canary, container_image, deployment

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds")]

PASSWORD = "e2e-graphite-p4ss"
QUERY = "target=flaggerpy.{{ namespace }}.{{ target }}.error_rate&from=-1min"


@pytest.fixture(scope="module")
def graphite() -> Iterator[LocalGraphite]:
    with LocalGraphite() as server:
        yield server




class ErrorRate:
    """The application's error rate, sent to carbon every half second while it runs."""

    def __init__(self, graphite: LocalGraphite, path: str) -> None:
        self.graphite, self.path, self.value = graphite, path, 0.0

    async def feed(self) -> None:
        while True:
            await asyncio.to_thread(self.graphite.send, [(self.path, self.value, None)])
            await asyncio.sleep(0.5)

    async def set(self, value: float) -> None:
        """Sets the rate and waits until graphite-web answers it."""
        self.value = value
        await asyncio.to_thread(self.graphite.wait_for, self.path, value)


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}}


def template(name: str, address: str) -> dict[str, Any]:
    return {"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": name},
            "spec": {"provider": {"type": "graphite", "address": address,
                                  "secretRef": {"name": "graphite-basic-auth"}},
                     "query": QUERY}}


def analysis(template_name: str) -> dict[str, Any]:
    """Blue/green, two iterations of 2 s: the error rate must stay at most 1 (percent)."""
    return {"interval": "2s", "threshold": 2, "iterations": 2, "metrics": [{
        "name": "error-rate", "templateRef": {"name": template_name},
        "thresholdRange": {"max": 1}, "interval": "1m"}]}


async def test_graphite_promotes_then_rolls_back(
        scenario: Scenario, graphite: LocalGraphite, namespace: str,
) -> None:
    path = f"flaggerpy.{namespace}.podinfo.error_rate"
    rate = ErrorRate(graphite, path)
    feeder = asyncio.create_task(rate.feed())
    try:
        await rate.set(0.5)
        await scenario.start_controller()
        await scenario.apply(
            secret("graphite-basic-auth", {"username": "flagger", "password": PASSWORD}),
            template("error-rate", graphite.url),
            deployment("podinfo", image="podinfo:6.0.0"),
            canary("podinfo", analysis=analysis("error-rate")),
        )
        await scenario.wait_phase("podinfo", "Initialized", within=60)

        await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
        status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=60)
        assert status["phase"] == "Succeeded", status
        assert container_image(await scenario.get("deployment", "podinfo-primary")) == (
            "podinfo:6.0.1")
        # what the controller asked graphite-web (the test's own reads put target first):
        # the rendered query, its parameters in Go's sorted order, as Flagger sends it
        asked = {q for q in graphite.render_requests() if path in q and q.startswith("format=")}
        assert asked == {f"format=json&from=-1min&target={path}"}, graphite.render_requests()

        await rate.set(7.25)  # the next version errs
        await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.2")
        await scenario.wait_phase("podinfo", "Progressing", within=30)
        status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=60)
    finally:
        feeder.cancel()
    assert status["phase"] == "Failed", status
    assert container_image(await scenario.get("deployment", "podinfo-primary")) == (
        "podinfo:6.0.1")
    message = status["conditions"][0]["message"]
    assert "error-rate" in message, status
    assert "7.25" in message, status
    events = json.dumps(await scenario.events("podinfo"))
    assert "7.25" in events
    for shown in (events, json.dumps(status), scenario.controllers[0].output()):
        assert PASSWORD not in shown


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
    documents = yaml_blocks("Graphite")
    kinds = sorted(d["kind"] for d in documents)
    assert kinds == ["MetricTemplate", "Secret"], kinds
    (example,) = [d for d in documents if d["kind"] == "MetricTemplate"]
    assert example["spec"]["provider"]["type"] == "graphite"
    manifest = tmp_path / "example.json"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": documents}))
    result = await cluster.akubectl("apply", "--dry-run=server", "--validate=strict",
                                    "-n", namespace, "-f", str(manifest))
    assert "metrictemplate.flagger.app/" in result.stdout, result.stdout
