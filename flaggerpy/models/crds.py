"""The CustomResourceDefinitions, generated from the models: Flagger's and flaggerpy's own.

What ``flaggerpy crds`` prints and what ``charts/flaggerpy/crds/crds.yaml`` holds (a unit test
keeps the two equal; regenerate the file with ``python -m flaggerpy.models.crds``). The schemas
come from the models (:mod:`flaggerpy.models._schema`); names, printer columns and the rest of
each CRD are the table below, copied from Flagger 1.44's ``artifacts/flagger/crd.yaml`` so that
``kubectl get canaries`` (and ``-o wide``) shows Flagger's columns.

The schemas are a superset of Flagger's: every property, enum, pattern, ``oneOf`` and
required field of Flagger's CRD is here, plus a few validations that only reject manifests
Flagger would fail on later. :func:`crd_additions` lists those, each with its reason.
flaggerpy's own kinds (CanaryCommand, ``flaggerpy.dev``, docs/steering.md) follow Flagger's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from flaggerpy.models import canary_command
from flaggerpy.models._base import API_VERSION, GROUP, VERSION, KubeObject
from flaggerpy.models._schema import Addition, collect_additions, model_schema
from flaggerpy.models.alert_provider import AlertProvider
from flaggerpy.models.canary import Canary
from flaggerpy.models.metric_template import MetricTemplate

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "Addition",
    "CrdKind",
    "crd_additions",
    "crd_documents",
    "crd_kinds",
    "render_crds_yaml",
]

_HEADER = """\
# flagger.app/v1beta1 CustomResourceDefinitions for flaggerpy.
# Generated from flaggerpy.models (`flaggerpy crds`, or python -m flaggerpy.models.crds).
# Do not edit.
# A superset of Flagger's CRDs: the additions are listed in docs/compatibility.md.
# Then flaggerpy's own: flaggerpy.dev/v1alpha1 CanaryCommand (docs/steering.md).
"""


@dataclass(frozen=True, slots=True)
class CrdKind:
    """Everything about one CRD that is not its schema."""

    model: type[KubeObject]
    kind: str
    plural: str
    singular: str
    description: str
    printer_columns: tuple[dict[str, Any], ...]
    group: str = GROUP
    version: str = VERSION
    categories: tuple[str, ...] = ("all",)

    @property
    def name(self) -> str:
        """The CRD's object name, ``<plural>.<group>``."""
        return f"{self.plural}.{self.group}"

    @property
    def flaggers(self) -> bool:
        """Whether the kind is one of Flagger's (flagger.app), not one flaggerpy adds."""
        return self.group == GROUP


def _column(name: str, type_: str, json_path: str, *, wide: bool = False) -> dict[str, Any]:
    column: dict[str, Any] = {"name": name, "type": type_, "jsonPath": json_path}
    if wide:
        column["priority"] = 1
    return column


_KINDS = (
    CrdKind(
        model=Canary,
        kind="Canary",
        plural="canaries",
        singular="canary",
        description="Canary is the Schema for the Canary API.",
        printer_columns=(
            _column("Status", "string", ".status.phase"),
            _column("Weight", "string", ".status.canaryWeight"),
            _column("Suspended", "boolean", ".spec.suspend", wide=True),
            _column("FailedChecks", "string", ".status.failedChecks", wide=True),
            _column("Interval", "string", ".spec.analysis.interval", wide=True),
            _column("Mirror", "boolean", ".spec.analysis.mirror", wide=True),
            _column("StepWeight", "string", ".spec.analysis.stepWeight", wide=True),
            _column("StepWeights", "string", ".spec.analysis.stepWeights", wide=True),
            _column("MaxWeight", "string", ".spec.analysis.maxWeight", wide=True),
            _column("LastTransitionTime", "string", ".status.lastTransitionTime"),
        ),
    ),
    CrdKind(
        model=MetricTemplate,
        kind="MetricTemplate",
        plural="metrictemplates",
        singular="metrictemplate",
        description="MetricTemplate is the Schema for the MetricTemplates API.",
        printer_columns=(_column("Provider", "string", ".spec.provider.type"),),
    ),
    CrdKind(
        model=AlertProvider,
        kind="AlertProvider",
        plural="alertproviders",
        singular="alertprovider",
        description="AlertProvider is the Schema for the AlertProvider API.",
        printer_columns=(_column("Type", "string", ".spec.type"),),
    ),
    CrdKind(
        model=canary_command.CanaryCommand,
        kind="CanaryCommand",
        plural="canarycommands",
        singular="canarycommand",
        description=(
            "CanaryCommand asks flaggerpy to steer one Canary of its namespace (promote, abort,"
            " retry, pause, resume, approve, deny); the controller answers in its status."
        ),
        printer_columns=(
            _column("Canary", "string", ".spec.canary"),
            _column("Action", "string", ".spec.action"),
            _column("Phase", "string", ".status.phase"),
            _column("Message", "string", ".status.message", wide=True),
            _column("Age", "date", ".metadata.creationTimestamp"),
        ),
        group=canary_command.GROUP,
        version=canary_command.VERSION,
        categories=(),
    ),
)


def crd_kinds() -> tuple[CrdKind, ...]:
    """The three flagger.app kinds, in the order Flagger's CRD file has them, then flaggerpy's."""
    return _KINDS


def _document(spec: CrdKind) -> dict[str, Any]:
    schema = {"description": spec.description, **model_schema(spec.model)}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": spec.name,
            "annotations": {"helm.sh/resource-policy": "keep"},
        },
        "spec": {
            "group": spec.group,
            "names": {
                "kind": spec.kind,
                "listKind": f"{spec.kind}List",
                "plural": spec.plural,
                "singular": spec.singular,
                **({"categories": list(spec.categories)} if spec.categories else {}),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": spec.version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [dict(column) for column in spec.printer_columns],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def crd_documents() -> list[dict[str, Any]]:
    """The CRDs for canaries, metrictemplates, alertproviders and canarycommands, as dicts."""
    return [_document(spec) for spec in _KINDS]


def render_crds_yaml() -> str:
    """The CRDs as one multi-document YAML stream, exactly as the Helm chart ships them."""
    body = yaml.safe_dump_all(
        crd_documents(),
        sort_keys=False,
        default_flow_style=False,
        explicit_start=True,
        width=100,
        allow_unicode=True,
    )
    return _HEADER + body


def crd_additions() -> list[tuple[str, Addition]]:
    """Every place the generated schemas go beyond Flagger's, as ``(kind, addition)`` pairs."""
    return [(spec.kind, addition) for spec in _KINDS if spec.flaggers
            for addition in collect_additions(spec.model)]


if __name__ == "__main__":  # pragma: no cover - regeneration entry point
    print(render_crds_yaml(), end="")
