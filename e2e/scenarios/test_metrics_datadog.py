"""Datadog and New Relic end to end: a canary promoted, and one rolled back, on their answers.

The ``flaggerpy controller`` process runs on the local control plane with a blue/green
``provider: kubernetes`` Canary whose only metric is a MetricTemplate of ``type: datadog`` or
``type: newrelic``, its keys in a Secret, pointed at the local stand-in for the vendor's API
(``e2e/fakes/datadog.py``, ``e2e/fakes/newrelic.py``, written from the vendors' API docs). The
stand-in answers a low error rate while the first new version runs and a high one for the
second; the tests check what the controller asked, and that the keys stay out of the Canary's
status, its Events and the controller's log.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.cluster.localcluster import REPO_ROOT, LocalCluster
from e2e.fakes.datadog import FakeDatadog
from e2e.fakes.newrelic import FakeNewRelic, split_since
from e2e.scenario import Scenario, canary, container_image, deployment

# The time limit covers the fixtures too: the upstream CRDs and Prometheus start first.
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds"), pytest.mark.timeout(300)]

DD_API_KEY = "e2e-dd-api-key-5f3a9c"
DD_APP_KEY = "e2e-dd-app-key-8b1e7d"
NR_ACCOUNT = "9081726354"
NR_QUERY_KEY = "NRIQ-e2e-query-key-2c4e6a"


@dataclass
class Vendor:
    """One provider type: its Secret, its template's query, and its stand-in's answers."""

    type: str
    secret: dict[str, str]
    query: str  # the MetricTemplate's query, a Go template
    rendered: Callable[[str], str]  # the query rendered for a namespace (target "podinfo")
    set_value: Callable[[str, float], None]  # the stand-in answers this for a rendered query
    asked: Callable[[], list[str]]  # the queries the stand-in was asked, as it received them
    address: str
    keys: tuple[str, ...]


DATADOG_QUERY = ("sum:trace.http.request.errors{env:{{ namespace }},service:{{ target }}}"
                 ".as_count() / sum:trace.http.request.hits{env:{{ namespace }},"
                 "service:{{ target }}}.as_count() * 100")
NEWRELIC_QUERY = ("SELECT filter(count(*), WHERE error IS true) / count(*) * 100"
                  " FROM Transaction WHERE appName = '{{ namespace }}.{{ target }}'")


def render(query: str, namespace: str) -> str:
    return query.replace("{{ namespace }}", namespace).replace("{{ target }}", "podinfo")


@pytest.fixture(params=["datadog", "newrelic"])
async def vendor(request: pytest.FixtureRequest) -> AsyncIterator[Vendor]:
    if request.param == "datadog":
        async with FakeDatadog(api_key=DD_API_KEY, application_key=DD_APP_KEY) as dd:
            yield Vendor(
                type="datadog",
                secret={"datadog_api_key": DD_API_KEY, "datadog_application_key": DD_APP_KEY},
                query=DATADOG_QUERY,
                rendered=lambda ns: render(DATADOG_QUERY, ns),
                set_value=lambda query, value: dd.set_series(query, value),
                asked=lambda: [r.query["query"] for r in dd.queries()],
                address=dd.url, keys=(DD_API_KEY, DD_APP_KEY),
            )
    else:
        async with FakeNewRelic(account_id=NR_ACCOUNT, query_key=NR_QUERY_KEY) as nr:
            yield Vendor(
                type="newrelic",
                secret={"newrelic_account_id": NR_ACCOUNT, "newrelic_query_key": NR_QUERY_KEY},
                query=NEWRELIC_QUERY,
                rendered=lambda ns: render(NEWRELIC_QUERY, ns),
                set_value=lambda query, value: nr.set_result(query, value),
                # the queries of the checks (not is_online's SELECT * FROM Metric), each with
                # the SINCE clause of the metric's 1m interval
                asked=lambda: [split_since(q)[0] if split_since(q)[1] == 60 else q
                               for q in nr.nrql_seen() if not q.startswith("SELECT * FROM ")],
                address=nr.url, keys=(NR_ACCOUNT, NR_QUERY_KEY),
            )




def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}}


def template(vendor: Vendor) -> dict[str, Any]:
    return {"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": "error-rate"},
            "spec": {"provider": {"type": vendor.type, "address": vendor.address,
                                  "secretRef": {"name": f"{vendor.type}-keys"}},
                     "query": vendor.query}}


def analysis() -> dict[str, Any]:
    """Blue/green, two iterations of 2 s: the error rate must stay at most 1 (percent)."""
    return {"interval": "2s", "threshold": 2, "iterations": 2, "metrics": [{
        "name": "error-rate", "templateRef": {"name": "error-rate"},
        "thresholdRange": {"max": 1}, "interval": "1m"}]}


async def test_promotes_then_rolls_back_on_the_vendors_answers(
        scenario: Scenario, vendor: Vendor, namespace: str,
) -> None:
    query = vendor.rendered(namespace)
    vendor.set_value(query, 0.5)
    await scenario.start_controller()
    await scenario.apply(
        secret(f"{vendor.type}-keys", vendor.secret),
        template(vendor),
        deployment("podinfo", image="podinfo:6.0.0"),
        canary("podinfo", analysis=analysis()),
    )
    await scenario.wait_phase("podinfo", "Initialized", within=60)

    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=60)
    assert status["phase"] == "Succeeded", status
    assert container_image(await scenario.get("deployment", "podinfo-primary")) == "podinfo:6.0.1"
    asked = vendor.asked()
    assert len(asked) >= 2, asked  # one per iteration at least
    assert set(asked) == {query}  # the rendered template, with the window of a 1m interval

    vendor.set_value(query, 7.25)  # the next version errs
    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.2")
    await scenario.wait_phase("podinfo", "Progressing", within=30)
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=60)
    assert status["phase"] == "Failed", status
    assert container_image(await scenario.get("deployment", "podinfo-primary")) == "podinfo:6.0.1"
    messages = [event["message"] for event in await scenario.events("podinfo")]
    assert any(re.search(r"error-rate .*7\.25 > 1", m) for m in messages), messages

    for key in vendor.keys:
        assert key not in json.dumps(status)
        assert key not in json.dumps(messages)
        assert key not in scenario.controllers[0].output()


def yaml_blocks(section: str) -> list[dict[str, Any]]:
    """The YAML examples under the ``## <section>`` heading of docs/metrics.md."""
    text = (REPO_ROOT / "docs" / "metrics.md").read_text()
    match = re.search(rf"^## {re.escape(section)}.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match is not None, f"docs/metrics.md has no section {section!r}"
    blocks = re.findall(r"```yaml\n(.*?)```", match.group(1), re.S)
    return [doc for block in blocks for doc in yaml.safe_load_all(block) if doc]


@pytest.mark.parametrize("section", ["Datadog", "New Relic"])
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
