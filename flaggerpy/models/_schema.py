"""Generate a CRD's structural OpenAPI v3 schema from the models, and list flaggerpy's additions.

The models are the single source of truth for the flagger.app CRDs: a field's Python type gives
its ``type`` (``list`` → array, ``dict`` → object with ``additionalProperties``, a model →
object with ``properties`` and ``required``, ``int | str`` → int-or-string, a ``StrEnum`` →
string with ``enum``), its ``Field(description=...)`` the description, and :class:`Crd`
metadata everything else. Pydantic's own JSON Schema is not used: it emits ``$ref``, ``anyOf``
for optionals and ``null`` types, none of which a structural CRD schema may contain.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic.fields import FieldInfo

from flaggerpy.models._base import Crd, FlaggerModel

__all__ = ["Addition", "collect_additions", "model_schema"]


@dataclass(frozen=True, slots=True)
class Addition:
    """One place where flaggerpy's schema goes beyond Flagger's, and why.

    ``path`` is dotted wire names from the object root, with ``[]`` for array items and ``{}``
    for map values (``spec.analysis.stepWeights``). ``keywords`` are the OpenAPI keywords
    added there; a ``new`` addition is a whole property Flagger's CRD lacks. ``changed`` are
    keywords of Flagger's schema there that flaggerpy drops or rewords on purpose.
    """

    path: str
    keywords: Mapping[str, Any]
    new: bool
    reason: str
    changed: tuple[str, ...] = ()


def merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """Deep-merge ``patch`` into ``target``: mappings merge, ``required`` unions, rest replaces."""
    for key, value in patch.items():
        current = target.get(key)
        if key == "required" and isinstance(current, list):
            target[key] = current + [item for item in value if item not in current]
        elif isinstance(value, Mapping) and isinstance(current, dict):
            merge(current, value)
        else:
            target[key] = copy.deepcopy(value)


def _apply(schema: dict[str, Any], crd: Crd) -> dict[str, Any]:
    if crd.replace is not None:
        schema = copy.deepcopy(dict(crd.replace))
    merge(schema, crd.schema)
    merge(schema, crd.added)
    return schema


def _crds(metadata: Iterable[object]) -> list[Crd]:
    return [item for item in metadata if isinstance(item, Crd)]


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _non_none(tp: Any) -> list[Any]:
    return [arg for arg in get_args(tp) if arg is not type(None)]


def wire_name(name: str, info: FieldInfo) -> str:
    """The key a field has on the wire: its alias (set by the alias generator or explicitly)."""
    return info.alias or name


def model_schema(model: type[FlaggerModel]) -> dict[str, Any]:
    """The object schema of a model: its fields as ``properties``, required ones listed."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, info in model.model_fields.items():
        wire = wire_name(name, info)
        properties[wire] = field_schema(info)
        if info.is_required():
            required.append(wire)
    schema: dict[str, Any] = {"type": "object"}
    if required:
        schema["required"] = required
    schema["properties"] = properties
    if model.crd_schema is not None:
        schema = _apply(schema, model.crd_schema)
    return schema


def field_schema(info: FieldInfo) -> dict[str, Any]:
    """The schema of one field: its type's, plus description and ``Crd`` metadata."""
    schema = type_schema(info.annotation)
    if info.description:
        schema = {"description": info.description, **schema}
    for crd in _crds(info.metadata):
        schema = _apply(schema, crd)
    return schema


def type_schema(tp: Any) -> dict[str, Any]:
    """The schema of a Python type as the models use them; anything else is a ``TypeError``."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *metadata = get_args(tp)
        schema = type_schema(base)
        for crd in _crds(metadata):
            schema = _apply(schema, crd)
        return schema
    if _is_union(tp):
        args = _non_none(tp)
        if len(args) == 1:
            return type_schema(args[0])
        if set(args) == {int, str}:
            return {"x-kubernetes-int-or-string": True}
        raise TypeError(f"no CRD schema for union {tp!r}")
    if tp is Any:
        return {"x-kubernetes-preserve-unknown-fields": True}
    if origin is list:
        (item,) = get_args(tp)
        return {"type": "array", "items": type_schema(item)}
    if origin is dict:
        key, value = get_args(tp)
        if key is not str:
            raise TypeError(f"CRD maps must have string keys: {tp!r}")
        if value is Any:
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        return {"type": "object", "additionalProperties": type_schema(value)}
    if isinstance(tp, type):
        if issubclass(tp, FlaggerModel):
            return model_schema(tp)
        if issubclass(tp, Enum):
            return {"type": "string", "enum": [member.value for member in tp]}
        if tp is bool:
            return {"type": "boolean"}
        if tp is int:
            return {"type": "integer"}
        if tp is float:
            return {"type": "number"}
        if tp is str:
            return {"type": "string"}
        if tp is datetime:
            return {"type": "string", "format": "date-time"}
    raise TypeError(f"no CRD schema for {tp!r}")


def collect_additions(model: type[FlaggerModel], path: str = "") -> list[Addition]:
    """Every :class:`Crd` with ``added`` or ``changed`` keywords, or ``new=True``, in ``model``."""
    return list(_model_additions(model, path))


def _model_additions(model: type[FlaggerModel], path: str) -> Iterator[Addition]:
    yield from _from_crds([model.crd_schema] if model.crd_schema else [], path)
    for name, info in model.model_fields.items():
        child = f"{path}.{wire_name(name, info)}" if path else wire_name(name, info)
        yield from _from_crds(_crds(info.metadata), child)
        yield from _type_additions(info.annotation, child)


def _type_additions(tp: Any, path: str) -> Iterator[Addition]:
    origin = get_origin(tp)
    if origin is Annotated:
        base, *metadata = get_args(tp)
        yield from _from_crds(_crds(metadata), path)
        yield from _type_additions(base, path)
    elif _is_union(tp):
        for arg in _non_none(tp):
            yield from _type_additions(arg, path)
    elif origin is list:
        yield from _type_additions(get_args(tp)[0], f"{path}[]")
    elif origin is dict:
        yield from _type_additions(get_args(tp)[1], f"{path}{{}}")
    elif isinstance(tp, type) and issubclass(tp, FlaggerModel):
        yield from _model_additions(tp, path)


def _from_crds(crds: Iterable[Crd], path: str) -> Iterator[Addition]:
    for crd in crds:
        if crd.added or crd.new or crd.changed:
            yield Addition(path=path, keywords=dict(crd.added), new=crd.new, reason=crd.reason,
                           changed=crd.changed)
