"""The generated flagger.app CRDs: a superset of Flagger's, true to the models."""

from __future__ import annotations

import json
import re
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
import yaml

from flaggerpy.models import AlertProvider, Canary, FlaggerModel, MetricTemplate
from flaggerpy.models.crds import crd_additions, crd_documents, crd_kinds, render_crds_yaml

ROOT = Path(__file__).parent.parent.parent
CHART_CRDS = ROOT / "charts" / "flaggerpy" / "crds" / "crds.yaml"
FLAGGER_CRDS = ROOT / "tests" / "fixtures" / "flagger" / "upstream" / "flagger-crd.yaml"
COMPATIBILITY_DOC = ROOT / "docs" / "compatibility.md"
CRD_SECTION = "## CRD differences from Flagger"


def crd_section() -> str:
    """The CRD part of docs/compatibility.md, up to the next section."""
    text = COMPATIBILITY_DOC.read_text()
    start = text.index(CRD_SECTION)
    end = text.find("\n## ", start + len(CRD_SECTION))
    return text[start:] if end < 0 else text[start:end]
MODELS: dict[str, type[FlaggerModel]] = {
    "Canary": Canary,
    "MetricTemplate": MetricTemplate,
    "AlertProvider": AlertProvider,
}

Flat = dict[tuple[str, ...], str]


def _by_kind(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {document["spec"]["names"]["kind"]: document for document in documents}


def _schema(document: Mapping[str, Any]) -> dict[str, Any]:
    (version,) = document["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


FLAGGER = _by_kind(list(yaml.safe_load_all(FLAGGER_CRDS.read_text())))
OURS = _by_kind(crd_documents())


def _flatten(node: Mapping[str, Any], path: str, out: Flat) -> Flat:
    """Every keyword of a schema as ``(path, keyword[, required-name]) -> JSON value``.

    ``properties``, ``items`` and ``additionalProperties`` recurse (``.name``, ``[]``, ``{}``);
    ``required`` contributes one entry per name so that lists compare as sets.
    """
    for key, value in node.items():
        if key == "properties":
            for name, child in value.items():
                _flatten(child, f"{path}.{name}" if path else name, out)
        elif key == "items" and isinstance(value, Mapping):
            _flatten(value, f"{path}[]", out)
        elif key == "additionalProperties" and isinstance(value, Mapping):
            _flatten(value, f"{path}{{}}", out)
        elif key == "required":
            for name in value:
                out[(path, "required", name)] = "true"
        else:
            out[(path, key)] = json.dumps(value, sort_keys=True)
    return out


def _is_harmless(key: tuple[str, ...], value: str) -> bool:
    """``format: string`` (Istio's no-op format) may appear where Flagger's copy dropped it."""
    return key[1] == "format" and value == '"string"'


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith((f"{prefix}.", f"{prefix}[", f"{prefix}{{"))


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_schema_is_a_superset_of_flaggers(kind: str) -> None:
    """Every keyword of Flagger's schema is ours, unchanged, except where a change is declared
    (the opened plugin-name enums); ours adds only what is declared."""
    flagger = _flatten(_schema(FLAGGER[kind]), "", {})
    ours = _flatten(_schema(OURS[kind]), "", {})
    declared: Flat = {}
    new_paths: list[str] = []
    relaxed: set[tuple[str, str]] = set()
    for addition_kind, addition in crd_additions():
        if addition_kind == kind:
            _flatten(dict(addition.keywords), addition.path, declared)
            relaxed.update((addition.path, keyword) for keyword in addition.changed)
            if addition.new:
                new_paths.append(addition.path)

    missing = {
        key: value for key, value in flagger.items()
        if key not in ours and key[:2] not in relaxed
    }
    changed = {
        key: (value, ours[key])
        for key, value in flagger.items()
        if key in ours and ours[key] != value and key[:2] not in relaxed
    }
    unchanged_after_all = [key for key in relaxed if flagger.get(key) == ours.get(key)]
    undeclared = {
        key: value
        for key, value in ours.items()
        if key not in flagger
        and declared.get(key) != value
        and not any(_under(key[0], path) for path in new_paths)
        and not _is_harmless(key, value)
    }
    stale = [key for key in declared if key not in ours]

    assert missing == {}
    assert changed == {}
    assert undeclared == {}
    assert stale == []
    assert unchanged_after_all == []


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_everything_but_the_schema_is_flaggers(kind: str) -> None:
    """Names, scope, printer columns, subresources, annotations: `kubectl get` looks the same."""
    flagger, ours = FLAGGER[kind], OURS[kind]
    (flagger_version,) = flagger["spec"]["versions"]
    (our_version,) = ours["spec"]["versions"]

    assert ours["apiVersion"] == flagger["apiVersion"]
    assert ours["metadata"] == flagger["metadata"]
    assert {k: v for k, v in ours["spec"].items() if k != "versions"} == {
        k: v for k, v in flagger["spec"].items() if k != "versions"
    }
    assert "shortNames" not in ours["spec"]["names"]
    assert {k: v for k, v in our_version.items() if k != "schema"} == {
        k: v for k, v in flagger_version.items() if k != "schema"
    }
    assert _schema(ours)["description"] == _schema(flagger)["description"]


def test_canary_printer_columns() -> None:
    (version,) = OURS["Canary"]["spec"]["versions"]
    columns = version["additionalPrinterColumns"]

    default = [c["name"] for c in columns if not c.get("priority")]
    wide = [c["name"] for c in columns]
    assert default == ["Status", "Weight", "LastTransitionTime"]
    assert wide == [
        "Status",
        "Weight",
        "Suspended",
        "FailedChecks",
        "Interval",
        "Mirror",
        "StepWeight",
        "StepWeights",
        "MaxWeight",
        "LastTransitionTime",
    ]


def test_chart_file_is_the_rendered_crds() -> None:
    """Regenerate with: python -m flaggerpy.models.crds > charts/flaggerpy/crds/crds.yaml"""
    assert CHART_CRDS.read_text() == render_crds_yaml()


def test_rendered_yaml_parses_back_to_the_documents() -> None:
    documents = list(yaml.safe_load_all(render_crds_yaml()))

    assert documents == crd_documents()
    assert [document["metadata"]["name"] for document in documents] == [
        "canaries.flagger.app",
        "metrictemplates.flagger.app",
        "alertproviders.flagger.app",
        "canarycommands.flaggerpy.dev",
    ]
    assert [spec.name for spec in crd_kinds()] == [d["metadata"]["name"] for d in documents]


def test_every_addition_is_documented() -> None:
    lines = crd_section().splitlines()
    for kind, addition in crd_additions():
        path = addition.path or "(root)"
        assert addition.reason, f"{kind} {path}: an addition needs a reason"
        assert any(f"`{kind}` `{path}`" in line for line in lines), f"{kind} {path} undocumented"


def test_every_documented_addition_exists() -> None:
    declared = {(kind, addition.path or "(root)") for kind, addition in crd_additions()}
    documented = set(re.findall(r"^- `(\w+)` `([^`]+)`", crd_section(), re.M))

    assert documented == declared


# --- the chart's schema against the models, both ways -----------------------------------------


def _strip(tp: Any) -> Any:
    """The type under ``Annotated`` and ``| None``."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif get_origin(tp) in (Union, types.UnionType):
            args = [arg for arg in get_args(tp) if arg is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _expected_type(tp: Any) -> str | None:
    tp = _strip(tp)
    origin = get_origin(tp)
    if origin is list:
        return "array"
    if origin is dict or (isinstance(tp, type) and issubclass(tp, FlaggerModel)):
        return "object"
    if tp is bool:
        return "boolean"
    if tp is int:
        return None  # integer, or number where Flagger's CRD says so
    if tp is float:
        return "number"
    return "string" if isinstance(tp, type) else None


def _walk(model: type[FlaggerModel], node: Mapping[str, Any], path: str) -> Iterator[str]:
    """Mismatches between a model and the schema node that should describe it."""
    properties: Mapping[str, Any] = node.get("properties", {})
    wire_names = {info.alias or name: info for name, info in model.model_fields.items()}
    for wire in properties.keys() - wire_names.keys():
        yield f"{path}.{wire}: in the schema, not in {model.__name__}"
    for wire, info in wire_names.items():
        child = f"{path}.{wire}"
        if wire not in properties:
            yield f"{child}: in {model.__name__}, not in the schema"
            continue
        if wire == "metadata" and path == "":
            continue
        yield from _walk_type(info.annotation, properties[wire], child)
        if info.is_required() and wire not in node.get("required", []):
            yield f"{child}: required in the model, optional in the schema"


def _walk_type(tp: Any, node: Mapping[str, Any], path: str) -> Iterator[str]:
    tp = _strip(tp)
    if get_origin(tp) in (Union, types.UnionType) and set(get_args(tp)) == {int, str}:
        if not node.get("x-kubernetes-int-or-string"):
            yield f"{path}: int-or-string in the model only"
        return
    expected = _expected_type(tp)
    actual = node.get("type")
    if tp is int and actual not in ("integer", "number"):
        yield f"{path}: int in the model, {actual} in the schema"
    elif expected is not None and actual != expected:
        yield f"{path}: {expected} in the model, {actual} in the schema"
    origin = get_origin(tp)
    if origin is list:
        yield from _walk_type(get_args(tp)[0], node.get("items", {}), f"{path}[]")
    elif origin is dict:
        yield from _walk_type(get_args(tp)[1], node.get("additionalProperties", {}), f"{path}{{}}")
    elif isinstance(tp, type) and issubclass(tp, FlaggerModel):
        yield from _walk(tp, node, path)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_chart_schema_matches_models_both_ways(kind: str) -> None:
    chart = _by_kind(list(yaml.safe_load_all(CHART_CRDS.read_text())))

    assert list(_walk(MODELS[kind], _schema(chart[kind]), "")) == []


def _structural_problems(node: Mapping[str, Any], path: str) -> Iterator[str]:
    """The structural-schema rules the API server enforces that a generator could break."""
    if not (
        "type" in node
        or node.get("x-kubernetes-int-or-string")
        or node.get("x-kubernetes-preserve-unknown-fields")
    ):
        yield f"{path}: no type"
    for forbidden in ("$ref", "nullable", "definitions", "anyOf"):
        if forbidden in node:
            yield f"{path}: {forbidden} outside a value validation"
    if "properties" in node and node.get("type") != "object":
        yield f"{path}: properties on a non-object"
    for name, child in node.get("properties", {}).items():
        yield from _structural_problems(child, f"{path}.{name}")
    if isinstance(node.get("items"), Mapping):
        yield from _structural_problems(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), Mapping):
        yield from _structural_problems(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_schema_is_structural(kind: str) -> None:
    assert list(_structural_problems(_schema(OURS[kind]), kind)) == []
