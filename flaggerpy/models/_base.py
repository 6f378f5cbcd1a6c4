"""The base every flagger.app model shares, and the hook the CRD schema is generated from.

Two promises hold for every model in this package:

* **Wire form is Flagger's.** Attributes are snake_case in Python and camelCase on the wire
  (``alias_generator=to_camel``); the few keys that ``to_camel`` cannot produce (``disableTLS``,
  ``from``, ``consecutive5xxErrors``) carry an explicit alias.
* **Nothing is lost on a round trip.** ``extra="allow"`` keeps fields we do not model, every
  field defaults to ``None`` and :meth:`FlaggerModel.to_dict` dumps with ``exclude_unset``, so
  ``Model.model_validate(obj).to_dict() == obj`` for anything the API server can hand us.
  Defaults that Flagger applies in code (an empty ``interval`` means 60 s, an unset
  ``progressDeadlineSeconds`` means 600, ...) are exposed as methods and properties that apply
  them on read; they are never written back into the object.

The CRD schema is generated from these classes (:mod:`flaggerpy.models._schema`), so a model
and its CRD cannot drift apart. What the Python type cannot say (Flagger's descriptions,
``type: number`` for integer fields, enums on plain strings, patterns, CEL rules) is attached
with :class:`Crd` metadata: ``Annotated[int | None, Crd(schema={"type": "number"})]`` on a
field, or a ``crd_schema`` class variable for keywords that belong to the object itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "API_VERSION",
    "GROUP",
    "PLUGIN_NAME_PATTERN",
    "VERSION",
    "Crd",
    "FlaggerModel",
    "FormatString",
    "KubeObject",
    "Number",
    "ObjectMeta",
    "plugin_description",
    "plugin_name",
]


GROUP = "flagger.app"
VERSION = "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"


@dataclass(frozen=True, slots=True, eq=False)
class Crd:
    """OpenAPI keywords for one node of the CRD schema, beyond what the Python type implies.

    ``schema`` holds keywords Flagger's own CRD has at this node; ``added`` holds the ones
    flaggerpy adds (validations that only reject nonsense). They are kept apart so the
    additions can be listed, tested against Flagger's CRD and documented one by one, each with
    its ``reason``. ``new`` marks a whole property Flagger's CRD does not have. ``changed``
    names keywords of Flagger's schema at this node that flaggerpy leaves out or rewords on
    purpose (the plugin-name enums, opened so that third-party plugins validate); they are
    listed and documented with the additions.

    Both mappings are deep-merged over the generated schema: nested mappings merge, a
    ``required`` list is unioned, any other value replaces the generated one. ``replace``
    discards the generated schema altogether (used for ``metadata``, which CRDs must leave
    as a bare ``type: object``).

    Instances compare and hash by identity (``eq=False``): ``typing`` hashes ``Annotated``
    metadata when it builds a union, and mappings are not hashable.
    """

    schema: Mapping[str, Any] = field(default_factory=dict)
    added: Mapping[str, Any] = field(default_factory=dict)
    new: bool = False
    changed: tuple[str, ...] = ()
    reason: str = ""
    replace: Mapping[str, Any] | None = None


Number = Annotated[int, Crd(schema={"type": "number"})]
"""An integer Flagger's CRD declares as ``type: number`` (its Go field is an ``int``)."""

FormatString = Annotated[str, Crd(schema={"format": "string"})]
"""A string Flagger's CRD (copying Istio's) marks with the no-op ``format: string``."""

PLUGIN_NAME_PATTERN = r"^\S+$"
"""A plugin name as a manifest spells it: not empty, no whitespace (``smi:v1alpha3:linkerd`` ok)."""


def plugin_name(group: str) -> Crd:
    """The schema of a field that names a plugin of the entry point group ``group``.

    Flagger's CRD closes these fields with an enum of its own names, which would refuse a
    third-party plugin (docs/plugins.md). flaggerpy's accepts any name without blanks; the
    controller reports a name nothing installed serves, and the field's description still
    lists Flagger's names.
    """
    return Crd(
        added={"pattern": PLUGIN_NAME_PATTERN},
        changed=("enum", "description"),
        reason=(
            f"open plugin family: any {group} plugin installed through entry points is"
            " accepted, not only Flagger's names (which the description lists)"
        ),
    )


def plugin_description(
        lead: str, *, group: str, flaggers: Iterable[str], variant: bool = False
) -> str:
    """A plugin-name field's description: what it is, where names come from, Flagger's names."""
    how = "by name, with an optional :variant" if variant else "by name"
    return (
        f"{lead}: a plugin installed in the {group} entry point group, {how}."
        f" Flagger's providers: {', '.join(flaggers)}"
    )


class FlaggerModel(BaseModel):
    """Base of every flagger.app model: camelCase on the wire, unknown fields kept."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="allow",
    )

    crd_schema: ClassVar[Crd | None] = None
    """Keywords for the object node itself (``oneOf``, CEL rules); see :class:`Crd`."""

    def to_dict(self) -> dict[str, Any]:
        """The wire form: JSON types, camelCase keys, only what was set (so defaults stay out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class ObjectMeta(FlaggerModel):
    """The parts of Kubernetes ``metadata`` the operator reads; everything else rides along.

    The CRD leaves ``metadata`` to the API server (a bare ``type: object``), so this model is
    deliberately permissive: ``managedFields``, ``ownerReferences`` and the rest are kept as
    extra fields, unvalidated.
    """

    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    finalizers: list[str] | None = None
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None


_METADATA = Crd(replace={"type": "object"})
_API_VERSION_DOC = (
    "APIVersion defines the versioned schema of this representation of an object. Servers should"
    " convert recognized schemas to the latest internal value, and may reject unrecognized"
    " values. More info:"
    " https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"
)
_KIND_DOC = (
    "Kind is a string value representing the REST resource this object represents. Servers may"
    " infer this from the endpoint the client submits requests to. Cannot be updated. In"
    " CamelCase. More info:"
    " https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
)


class KubeObject(FlaggerModel):
    """A top-level object: ``apiVersion``, ``kind`` and ``metadata`` around a spec."""

    api_version: str | None = Field(default=None, description=_API_VERSION_DOC)
    kind: str | None = Field(default=None, description=_KIND_DOC)
    metadata: Annotated[ObjectMeta | None, _METADATA] = None

    @property
    def name(self) -> str:
        """``metadata.name``, or ``""`` for an object not yet named."""
        return (self.metadata.name if self.metadata else None) or ""

    @property
    def namespace(self) -> str:
        """``metadata.namespace``, or ``""`` for an object built outside a namespace."""
        return (self.metadata.namespace if self.metadata else None) or ""
