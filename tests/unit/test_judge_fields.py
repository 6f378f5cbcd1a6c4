"""The analysis fields of docs/analysis.md: in the models and the CRD, additive to Flagger's.

Flagger's own manifests keep round-tripping unchanged (tests/unit/test_models.py); these tests
check that the documented examples parse, round-trip and reach the judge, and that none of
Flagger's manifests sets a field that now has a meaning.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from flaggerpy.judging import Comparison, Direction, StatTest
from flaggerpy.models import Canary
from flaggerpy.models.canary import CanaryMetric, FailurePolicy, NoDataPolicy
from flaggerpy.models.crds import crd_documents

ROOT = Path(__file__).parent.parent.parent
ANALYSIS_DOC = ROOT / "docs" / "analysis.md"
FLAGGER_FIXTURES = ROOT / "tests" / "fixtures" / "flagger"
NEW_METRIC_FIELDS = {"compare", "onNoData", "minSamples", "dryRun"}
NEW_ANALYSIS_FIELDS = {"dryRun", "onFailure"}


def doc_examples() -> list[dict[str, Any]]:
    """Every Canary in a ```yaml block of docs/analysis.md, parsed (not its MetricTemplate)."""
    blocks = re.findall(r"```yaml\n(.*?)```", ANALYSIS_DOC.read_text(), re.S)
    return [doc for doc in map(yaml.safe_load, blocks) if doc["kind"] == "Canary"]


def _canary_schema() -> dict[str, Any]:
    (canary,) = [d for d in crd_documents() if d["spec"]["names"]["kind"] == "Canary"]
    schema: dict[str, Any] = canary["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_the_page_has_examples_using_every_field() -> None:
    examples = doc_examples()
    metric_keys: set[str] = set()
    compare_keys: set[str] = set()
    analysis_keys: set[str] = set()
    for example in examples:
        analysis = example["spec"]["analysis"]
        analysis_keys |= analysis.keys()
        for metric in analysis.get("metrics", []):
            metric_keys |= metric.keys()
            compare_keys |= metric.get("compare", {}).keys()

    assert len(examples) >= 3
    assert metric_keys >= NEW_METRIC_FIELDS
    assert analysis_keys >= NEW_ANALYSIS_FIELDS
    assert {"with", "test", "direction", "tolerance", "confidence", "critical"} <= compare_keys


@pytest.mark.parametrize("example", doc_examples())
def test_example_round_trips_through_the_models(example: dict[str, Any]) -> None:
    canary = Canary.model_validate(example)

    assert canary.to_dict() == example
    assert Canary.model_validate(canary.to_dict()).to_dict() == example


@pytest.mark.parametrize("example", doc_examples())
def test_example_uses_only_properties_the_crd_declares(example: dict[str, Any]) -> None:
    """Nothing an API server would prune: every key is a property of the generated schema."""

    def walk(value: Any, schema: dict[str, Any], path: str) -> list[str]:
        unknown: list[str] = []
        if isinstance(value, dict) and "properties" in schema:
            for key, child in value.items():
                if key not in schema["properties"]:
                    unknown.append(f"{path}.{key}")
                else:
                    unknown += walk(child, schema["properties"][key], f"{path}.{key}")
        elif isinstance(value, list) and "items" in schema:
            for index, item in enumerate(value):
                unknown += walk(item, schema["items"], f"{path}[{index}]")
        return unknown

    assert walk(example, _canary_schema(), "") == []


def test_examples_reach_the_judge() -> None:
    examples = {
        example["metadata"]["name"]: Canary.model_validate(example) for example in doc_examples()
    }

    def metrics(name: str) -> list[CanaryMetric]:
        return examples[name].spec.analysis.metrics or []

    duration, latency = metrics("podinfo")
    (errors,) = metrics("checkout")
    cache = metrics("search")[1]

    assert Comparison.from_metric(duration) is None
    assert Comparison.from_metric(latency) == Comparison(
        test=StatTest.MANN_WHITNEY, direction=Direction.INCREASE, tolerance=0.2,
        confidence=0.95, critical=True, min_samples=30,
    )
    assert latency.on_no_data is NoDataPolicy.HOLD
    assert Comparison.from_metric(errors) == Comparison(
        test=StatTest.PROPORTION, tolerance=0.5, min_samples=100
    )
    # unset compare fields take the judge's defaults
    assert Comparison.from_metric(cache) == Comparison(direction=Direction.DECREASE, tolerance=0.05)
    assert cache.dry_run is True
    assert cache.on_no_data is NoDataPolicy.SKIP
    assert examples["search"].spec.analysis.on_failure is FailurePolicy.PAUSE
    assert examples["frontend"].spec.analysis.dry_run is True


def test_flaggers_manifests_set_none_of_the_new_fields() -> None:
    """The new fields are additive: no manifest Flagger accepts changes meaning."""
    for path in sorted(FLAGGER_FIXTURES.glob("canary*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            canary = Canary.model_validate(document)
            analysis = canary.spec.analysis
            assert (analysis.dry_run, analysis.on_failure) == (None, None), path.name
            for metric in analysis.metrics or []:
                new = (metric.compare, metric.on_no_data, metric.min_samples, metric.dry_run)
                assert new == (None, None, None, None), path.name


def test_crd_bounds_of_the_new_fields() -> None:
    metric = _canary_schema()["properties"]["spec"]["properties"]["analysis"]["properties"][
        "metrics"
    ]["items"]["properties"]
    compare = metric["compare"]["properties"]

    assert compare["confidence"] | {"description": ""} == {
        "description": "",
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "exclusiveMinimum": True,
        "exclusiveMaximum": True,
    }
    assert compare["tolerance"]["minimum"] == 0
    assert metric["minSamples"]["minimum"] == 0
    assert metric["onNoData"]["enum"] == ["fail", "hold", "skip"]
    assert compare["test"]["enum"] == ["mann-whitney", "proportion"]
    assert compare["direction"]["enum"] == ["increase", "decrease", "either"]
