"""Dynatrace and Splunk end to end: a canary promoted, and one rolled back, on their answers.

The ``flaggerpy controller`` process runs on the local control plane with a blue/green
``provider: kubernetes`` Canary whose only metric is a MetricTemplate of the provider's type,
pointed at the vendor's documented-API stand-in (``e2e/fakes/``) on loopback, with the token in
a Secret. The stand-in answers a good value for the first new version and a bad one for the
second; it also records what the controller asked, so the test checks the query arrived
rendered and authenticated.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.cluster.localcluster import REPO_ROOT, LocalCluster
from e2e.fakes.dynatrace import FakeDynatrace
from e2e.fakes.splunk import FakeSignalFlow
from e2e.scenario import Scenario, canary, container_image, deployment

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds"), pytest.mark.timeout(300)]

TOKEN = "dt0c01.E2ETOKEN.SECRETPART"
SELECTOR = ('builtin:service.errors.total.rate:filter(eq("k8s.workload.name",'
            '"{{ target }}-canary")):avg')
SF_TOKEN = "SFE2ETOKEN-secretpart"
PROGRAM = ("data('service.request.count', filter=filter('sf_environment', 'prod') and "
           "filter('sf_service', '{{ target }}-canary') and filter('sf_error', 'true'))"
           ".sum().publish()")




def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}}


def template(name: str, provider: dict[str, Any], query: str) -> dict[str, Any]:
    return {"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": name}, "spec": {"provider": provider, "query": query}}


def analysis(template_name: str) -> dict[str, Any]:
    """Blue/green, two iterations of 2 s: the error rate must stay at most 1 (percent)."""
    return {"interval": "2s", "threshold": 2, "iterations": 2, "metrics": [{
        "name": "error-rate", "templateRef": {"name": template_name},
        "thresholdRange": {"max": 1}, "interval": "1m"}]}


async def promote_then_roll_back(
        scenario: Scenario, *, provider: dict[str, Any], secret_data: dict[str, str],
        query: str, set_value: Callable[[float], None],
) -> None:
    """Version 6.0.1 is measured at 0.5 and promoted; 6.0.2 at 7.25 and rolled back."""
    set_value(0.5)
    await scenario.start_controller()
    await scenario.apply(
        secret("metrics-credentials", secret_data),
        template("error-rate", {**provider, "secretRef": {"name": "metrics-credentials"}},
                 query),
        deployment("podinfo", image="podinfo:6.0.0"),
        canary("podinfo", analysis=analysis("error-rate")),
    )
    await scenario.wait_phase("podinfo", "Initialized", within=60)

    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=60)
    assert status["phase"] == "Succeeded", status
    assert container_image(await scenario.get("deployment", "podinfo-primary")) == (
        "podinfo:6.0.1")

    set_value(7.25)  # the next version errs
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
    for token in secret_data.values():
        assert token not in events
        assert token not in json.dumps(status)
        assert token not in scenario.controllers[0].output()


async def test_dynatrace_promotes_then_rolls_back(scenario: Scenario) -> None:
    async with FakeDynatrace(token=TOKEN) as fake:
        rendered = SELECTOR.replace("{{ target }}", "podinfo")
        await promote_then_roll_back(
            scenario, provider={"type": "dynatrace", "address": fake.url},
            secret_data={"dynatrace_token": TOKEN}, query=SELECTOR,
            set_value=lambda value: fake.set_series(rendered, value))
        queries = [r for r in fake.requests if r.path == "/api/v2/metrics/query"]
        assert queries, fake.requests
        assert {r.one("metricSelector") for r in queries} == {rendered}
        assert {r.one("resolution") for r in queries} == {"Inf"}
        assert {int(r.one("to")) - int(r.one("from")) for r in queries} == {600_000}
        assert {tuple(r.headers["Authorization"]) for r in fake.requests} == {
            (f"Api-Token {TOKEN}",)}


async def test_splunk_promotes_then_rolls_back(scenario: Scenario) -> None:
    async with FakeSignalFlow(token=SF_TOKEN) as fake:
        rendered = PROGRAM.replace("{{ target }}", "podinfo")
        await promote_then_roll_back(
            scenario, provider={"type": "splunk", "address": fake.url},
            secret_data={"sf_token_key": SF_TOKEN}, query=PROGRAM,
            set_value=lambda value: fake.set_values(rendered, 3.0, value))
        executes = [e for c in fake.conversations for e in c.executes()]
        assert executes, fake.conversations
        assert {e["program"] for e in executes} == {rendered}
        assert {e["stop"] - e["start"] for e in executes} == {600_000}
        assert {e["immediate"] for e in executes} == {True}
        assert all(c.authenticated for c in fake.conversations)


def yaml_blocks(section: str) -> list[dict[str, Any]]:
    """The YAML examples under the ``## <section>`` heading of docs/metrics.md."""
    text = (REPO_ROOT / "docs" / "metrics.md").read_text()
    match = re.search(rf"^## {re.escape(section)}.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match is not None, f"docs/metrics.md has no section {section!r}"
    blocks = re.findall(r"```yaml\n(.*?)```", match.group(1), re.S)
    return [doc for block in blocks for doc in yaml.safe_load_all(block) if doc]


@pytest.mark.parametrize("section", ["Dynatrace", "Splunk"])
async def test_the_docs_example_is_accepted_by_the_crd(
        cluster: LocalCluster, namespace: str, section: str, tmp_path: Path,
) -> None:
    documents = yaml_blocks(section)
    assert any(d["kind"] == "MetricTemplate" for d in documents), documents
    manifest = tmp_path / "example.json"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": documents}))
    result = await cluster.akubectl("apply", "--dry-run=server", "--validate=strict",
                                    "-n", namespace, "-f", str(manifest))
    assert "metrictemplate.flagger.app/" in result.stdout, result.stdout
