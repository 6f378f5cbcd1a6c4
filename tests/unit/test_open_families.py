"""Plugin families are open: a third-party plugin's name validates, in the models and the CRDs.

Flagger's CRD closes ``Canary.spec.provider``, MetricTemplate ``spec.provider.type`` and
AlertProvider ``spec.type`` with enums of its own names; flaggerpy's accepts any name without
blanks (docs/compatibility.md) and keeps Flagger's names in each field's description.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest
from pydantic import ValidationError

from flaggerpy.models import (
    CANARY_PROVIDERS,
    AlertProvider,
    AlertProviderType,
    Canary,
    KubeObject,
    MetricsProviderType,
    MetricTemplate,
)
from flaggerpy.models.crds import crd_documents


def metric_template(type_: str) -> dict[str, Any]:
    return {
        "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
        "metadata": {"name": "latency", "namespace": "test"},
        "spec": {"provider": {"type": type_, "address": "http://vm.example:8428"},
                 "query": "histogram_quantile(0.99, sum(rate(x[1m])) by (le))"},
    }


def alert_provider(type_: str) -> dict[str, Any]:
    return {
        "apiVersion": "flagger.app/v1beta1", "kind": "AlertProvider",
        "metadata": {"name": "chat", "namespace": "test"},
        "spec": {"type": type_, "address": "https://chat.example/hooks/abc"},
    }


def canary(provider: str) -> dict[str, Any]:
    return {
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "provider": provider,
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {"interval": "1m", "threshold": 5, "stepWeight": 10},
        },
    }


def _node(kind: str, *path: str) -> Mapping[str, Any]:
    """The schema node of a field, by wire names from the object root."""
    (document,) = [d for d in crd_documents() if d["spec"]["names"]["kind"] == kind]
    node: Mapping[str, Any] = document["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for name in path:
        node = node["properties"][name]
    return node


def matches(pattern: str, text: str) -> bool:
    """The API server's (Go RE2) reading of a pattern: ``$`` is the end of the text only,
    where Python's ``$`` also matches before a final newline."""
    return re.search(re.sub(r"\$$", r"\\Z", pattern), text) is not None


FIELDS = [
    pytest.param(MetricTemplate, metric_template, "MetricTemplate", ("spec", "provider", "type"),
                 list(MetricsProviderType), id="metrictemplate"),
    pytest.param(AlertProvider, alert_provider, "AlertProvider", ("spec", "type"),
                 list(AlertProviderType), id="alertprovider"),
    pytest.param(Canary, canary, "Canary", ("spec", "provider"), list(CANARY_PROVIDERS),
                 id="canary"),
]


@pytest.mark.parametrize(("model", "manifest", "name"), [
    pytest.param(MetricTemplate, metric_template, "victoriametrics", id="victoriametrics"),
    pytest.param(AlertProvider, alert_provider, "mattermost", id="mattermost"),
    pytest.param(Canary, canary, "acme-mesh", id="third-party-router"),
    pytest.param(Canary, canary, "smi:v1alpha3:linkerd", id="variant-with-colons"),
])
def test_a_plugin_name_flagger_does_not_know_validates(
        model: type[KubeObject], manifest: Any, name: str) -> None:
    obj = manifest(name)
    assert model.model_validate(obj).to_dict() == obj


@pytest.mark.parametrize(("model", "manifest", "kind", "path", "flaggers"), FIELDS)
@pytest.mark.parametrize("name", ["", "two words", "tab\there", "trailing\n"])
def test_an_empty_or_blank_containing_name_is_refused(
        model: type[KubeObject], manifest: Any, kind: str, path: tuple[str, ...],
        flaggers: list[str], name: str) -> None:
    with pytest.raises(ValidationError, match="pattern"):
        model.model_validate(manifest(name))
    assert not matches(_node(kind, *path)["pattern"], name)


@pytest.mark.parametrize(("model", "manifest", "kind", "path", "flaggers"), FIELDS)
def test_the_crd_field_is_open_and_documents_flaggers_names(
        model: type[KubeObject], manifest: Any, kind: str, path: tuple[str, ...],
        flaggers: list[str]) -> None:
    node = _node(kind, *path)
    assert node["type"] == "string"
    assert "enum" not in node
    pattern = node["pattern"]
    for name in [*flaggers, "victoriametrics", "mattermost", "smi:v1alpha3:linkerd"]:
        assert matches(pattern, name), name
    assert node["description"].endswith("Flagger's providers: " + ", ".join(flaggers))
    for name in flaggers:
        model.model_validate(manifest(name))
