"""Hypothesis strategies for Canary, MetricTemplate and AlertProvider manifests, from the CRDs.

The strategies are derived from the ``openAPIV3Schema`` of each CRD in
``charts/flaggerpy/crds/crds.yaml`` (what the API server validates against), not from the
models, so a model and its schema drifting apart shows up as an input the API server accepts
and the controller cannot read. :func:`manifests` draws either a spec the generator believes
valid (types, enums, bounds, patterns and required fields honoured; ``oneOf`` and CEL rules
are not, so some of these are rejected too) or one broken on purpose at one known place
(:class:`Breakage`): a wrong type, a value out of range, an unknown enum value or a missing
required field. The API server must reject a broken one naming that field.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from hypothesis import strategies as st

__all__ = ["KINDS", "Breakage", "Generated", "manifests", "spec_schema", "values"]

CRDS: Final = Path(__file__).resolve().parents[1] / "charts" / "flaggerpy" / "crds" / "crds.yaml"
KINDS: Final = ("Canary", "MetricTemplate", "AlertProvider")

Schema = dict[str, Any]
Path_ = tuple[str | int, ...]  # keys and list indexes from ``spec``

_TEXT: Final = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
_KEYS: Final = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-./_0123456789", min_size=1,
                       max_size=12)


@functools.cache
def _crds() -> dict[str, Schema]:
    documents = list(yaml.safe_load_all(CRDS.read_text()))
    return {doc["spec"]["names"]["kind"]: doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            for doc in documents if doc}


def spec_schema(kind: str) -> Schema:
    """The schema of ``spec`` for one flagger.app kind, as the chart installs it."""
    schema: Schema = _crds()[kind]["properties"]["spec"]
    return schema


def _type(schema: Schema) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    if schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema:
        return "any"
    return str(schema.get("type", "any"))


def _numbers(schema: Schema, *, integer: bool) -> st.SearchStrategy[Any]:
    low, high = schema.get("minimum"), schema.get("maximum")
    ints = st.integers(min_value=None if low is None else math.ceil(low),
                       max_value=None if high is None else math.floor(high))
    if integer:
        return ints
    # Mostly whole numbers: Flagger reads most "number" fields as Go ints, so a fraction fails
    # the whole spec and would hide the rest of it from the controller.
    small = st.integers(min_value=0 if low is None else math.ceil(low),
                        max_value=100 if high is None else math.floor(high))
    floats = st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)
    return st.integers(0, 19).flatmap(
        lambda pick: floats if pick == 0 else ints if pick < 4 else small)


def values(schema: Schema) -> st.SearchStrategy[Any]:
    """Values the schema's structural part accepts (``oneOf`` and CEL rules aside)."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = _type(schema)
    if kind == "int-or-string":
        return st.integers(min_value=0, max_value=65535) | _TEXT
    if kind == "any":
        return st.just({})
    if kind == "boolean":
        return st.booleans()
    if kind in ("integer", "number"):
        return _numbers(schema, integer=kind == "integer")
    if kind == "string":
        if "pattern" in schema:
            strings: st.SearchStrategy[str] = st.from_regex(str(schema["pattern"]))
        else:
            strings = _TEXT
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        return strings.filter(lambda s: low <= len(s) and (high is None or len(s) <= high))
    if kind == "array":
        return st.lists(values(schema["items"]), max_size=min(schema.get("maxItems", 3), 3))
    if kind == "object":
        if "properties" in schema:
            branches = _one_of_required(schema)
            if branches:
                return st.one_of(*(_object(schema, required, forbidden)
                                   for required, forbidden in branches))
            return _object(schema, frozenset(), frozenset())
        if isinstance(schema.get("additionalProperties"), dict):
            return st.dictionaries(_KEYS, values(schema["additionalProperties"]), max_size=2)
        return st.just({})
    raise ValueError(f"no strategy for schema type {kind!r}")


def _object(schema: Schema, required: frozenset[str],
            forbidden: frozenset[str]) -> st.SearchStrategy[dict[str, Any]]:
    """An object of ``schema`` with ``required`` keys too and none of ``forbidden``."""
    wanted = set(schema.get("required") or ()) | required
    properties = schema["properties"]
    return st.fixed_dictionaries(
        {k: values(v) for k, v in properties.items() if k in wanted},
        optional={k: values(v) for k, v in properties.items()
                  if k not in wanted and k not in forbidden},
    )


def _one_of_required(schema: Schema) -> list[tuple[frozenset[str], frozenset[str]]]:
    """The branches of a ``oneOf`` made of ``required`` lists (and a ``not anyOf`` of them,
    "none of these"), as (keys to add, keys to leave out); empty for any other ``oneOf``."""
    branches: list[frozenset[str] | None] = []  # None: the "none of them" branch
    for branch in schema.get("oneOf") or ():
        if "required" in branch:
            branches.append(frozenset(branch["required"]))
        elif "not" in branch:
            branches.append(None)
        else:
            return []
    every = frozenset().union(*(b for b in branches if b is not None))
    return [(b or frozenset(), every - (b or frozenset())) for b in branches]


@dataclass(frozen=True, slots=True)
class Breakage:
    """Where and how a generated spec was made invalid; ``field`` is the API server's path."""

    path: Path_
    how: str  # "wrong type", "out of range", "unknown enum value", "missing required field"

    @property
    def field(self) -> str:
        """``spec.analysis.metrics[0].name``: how the API server names the field."""
        out = "spec"
        for part in self.path:
            out += f"[{part}]" if isinstance(part, int) else f".{part}"
        return out

    @property
    def name(self) -> str:
        """The last property name on the path (what any message about the field contains)."""
        return next((p for p in reversed(self.path) if isinstance(p, str)), "spec")


@dataclass(frozen=True, slots=True)
class Generated:
    """One generated manifest and, when broken on purpose, where."""

    manifest: dict[str, Any]
    breakage: Breakage | None

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


def _walk(value: Any, schema: Schema, path: Path_ = ()) -> Iterator[tuple[Path_, Any, Schema]]:
    """Every node of a generated value with its schema, root first."""
    yield path, value, schema
    kind = _type(schema)
    if kind == "object" and isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, child in value.items():
            sub = (properties or {}).get(key) if properties else extra
            if isinstance(sub, dict):
                yield from _walk(child, sub, (*path, key))
    elif kind == "array" and isinstance(value, list):
        for index, child in enumerate(value):
            yield from _walk(child, schema["items"], (*path, index))


def _wrong_type(schema: Schema) -> Any | None:
    kind = _type(schema)
    return {
        "string": 42,
        "integer": "forty-two",
        "number": "forty-two",
        "boolean": "yes",
        "array": {"not": "a list"},
        "object": ["not", "an", "object"],
        "int-or-string": {"not": "int or string"},
    }.get(kind)


def _out_of_range(schema: Schema) -> Any | None:
    if "maximum" in schema:
        return schema["maximum"] + 1
    if "minimum" in schema:
        return schema["minimum"] - 1
    if "maxLength" in schema:
        return "x" * (schema["maxLength"] + 1)
    if schema.get("minLength"):
        return ""
    return None


def _replace(root: Any, path: Path_, value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(root, list):
        assert isinstance(head, int)
        return [_replace(v, rest, value) if i == head else v for i, v in enumerate(root)]
    return {k: _replace(v, rest, value) if k == head else v for k, v in root.items()}


def _remove(root: Any, path: Path_) -> Any:
    head, rest = path[0], path[1:]
    if not rest:
        return {k: v for k, v in root.items() if k != head}
    if isinstance(root, list):
        return [_remove(v, rest) if i == head else v for i, v in enumerate(root)]
    return {k: _remove(v, rest) if k == head else v for k, v in root.items()}


def _breakages(spec: Any, schema: Schema) -> list[tuple[Breakage, Any]]:
    """Every single-place breakage of ``spec``, each with the broken spec."""
    found: list[tuple[Breakage, Any]] = []
    for path, value, sub in _walk(spec, schema):
        if not path:
            continue
        wrong = _wrong_type(sub)
        if wrong is not None:
            found.append((Breakage(path, "wrong type"), _replace(spec, path, wrong)))
        bad = _out_of_range(sub)
        if bad is not None:
            found.append((Breakage(path, "out of range"), _replace(spec, path, bad)))
        if "enum" in sub:
            found.append((Breakage(path, "unknown enum value"),
                          _replace(spec, path, "NotInTheEnum")))
        if isinstance(value, dict) and _type(sub) == "object":
            for key in sub.get("required") or ():
                if key in value:
                    found.append((Breakage((*path, key), "missing required field"),
                                  _remove(spec, (*path, key))))
    for key in schema.get("required") or ():
        if key in spec:
            found.append((Breakage((key,), "missing required field"), _remove(spec, (key,))))
    return found


@st.composite
def manifests(draw: st.DrawFn, kind: str, name: str) -> Generated:
    """A ``kind`` manifest named ``name``: schema-valid as far as the generator knows, or
    broken at one place (about two in three)."""
    schema = spec_schema(kind)
    spec = draw(values(schema))
    breakage: Breakage | None = None
    if draw(st.integers(0, 2)):
        choices = _breakages(spec, schema)
        if choices:
            breakage, spec = draw(st.sampled_from(choices))
    manifest = {"apiVersion": "flagger.app/v1beta1", "kind": kind,
                "metadata": {"name": name}, "spec": spec}
    return Generated(manifest, breakage)
