"""The analysis fields of docs/analysis.md against a real API server's CRD validation.

Every example of the page, Canaries and MetricTemplates, is created with a server-side dry run
(validated by the CRD schema, nothing stored) and must come back with nothing pruned; values
outside the documented ranges must be refused with 422 naming the field.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from flaggerpy.models import GROUP, VERSION, Canary, MetricTemplate

pytestmark = pytest.mark.integration

ANALYSIS_DOC = Path(__file__).parent.parent.parent / "docs" / "analysis.md"


def _examples(kind: str = "Canary") -> list[Any]:
    blocks = re.findall(r"```yaml\n(.*?)```", ANALYSIS_DOC.read_text(), re.S)
    documents = [yaml.safe_load(block) for block in blocks]
    return [pytest.param(document, id=document["metadata"]["name"]) for document in documents
            if document["kind"] == kind]


async def _dry_run_create(api_client: k8s.ApiClient, namespace: str, body: dict[str, Any],
                          plural: str = "canaries") -> Any:
    return await k8s.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, body, dry_run="All"
    )


@pytest.mark.usefixtures("flagger_crds")
@pytest.mark.parametrize("example", _examples())
async def test_documented_example_is_accepted_unpruned(
    example: dict[str, Any], api_client: k8s.ApiClient, namespace: str
) -> None:
    stored = await _dry_run_create(api_client, namespace, copy.deepcopy(example))

    assert stored["spec"]["analysis"] == example["spec"]["analysis"]
    assert Canary.model_validate(stored).to_dict() == stored


def test_the_page_shows_the_templates_its_canaries_refer_to() -> None:
    assert {p.id for p in _examples("MetricTemplate")} >= {"latency-samples", "error-ratio"}


@pytest.mark.usefixtures("flagger_crds")
@pytest.mark.parametrize("template", _examples("MetricTemplate"))
async def test_documented_metric_template_is_accepted_unpruned(
    template: dict[str, Any], api_client: k8s.ApiClient, namespace: str
) -> None:
    stored = await _dry_run_create(api_client, namespace, copy.deepcopy(template),
                                   plural="metrictemplates")

    assert stored["spec"] == template["spec"]
    assert MetricTemplate.model_validate(stored).to_dict() == stored


def _podinfo() -> dict[str, Any]:
    (document,) = [p.values[0] for p in _examples() if p.id == "podinfo"]
    return copy.deepcopy(document)  # type: ignore[no-any-return]


@pytest.mark.usefixtures("flagger_crds")
@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("confidence", 1, "compare.confidence"),
        ("confidence", 0, "compare.confidence"),
        ("tolerance", -0.5, "compare.tolerance"),
        ("test", "t-test", "compare.test"),
        ("direction", "up", "compare.direction"),
        ("with", "baseline", "compare.with"),
    ],
)
async def test_out_of_range_compare_is_refused(
    field: str, value: Any, expected: str, api_client: k8s.ApiClient, namespace: str
) -> None:
    body = _podinfo()
    body["spec"]["analysis"]["metrics"][1]["compare"][field] = value

    with pytest.raises(ApiException) as caught:
        await _dry_run_create(api_client, namespace, body)

    assert caught.value.status == 422
    assert expected in json.loads(caught.value.body)["message"]


@pytest.mark.usefixtures("flagger_crds")
@pytest.mark.parametrize(
    ("where", "field", "value"),
    [
        ("metric", "onNoData", "retry"),
        ("metric", "minSamples", -1),
        ("analysis", "onFailure", "ignore"),
    ],
)
async def test_out_of_range_policy_is_refused(
    where: str, field: str, value: Any, api_client: k8s.ApiClient, namespace: str
) -> None:
    body = _podinfo()
    analysis = body["spec"]["analysis"]
    (analysis["metrics"][1] if where == "metric" else analysis)[field] = value

    with pytest.raises(ApiException) as caught:
        await _dry_run_create(api_client, namespace, body)

    assert caught.value.status == 422
    assert field in json.loads(caught.value.body)["message"]
