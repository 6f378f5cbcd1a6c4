"""flaggerpy's flagger.app CRDs in a real API server: Flagger's manifests in, unchanged out.

Installs ``charts/flaggerpy/crds`` into the local control plane, creates every manifest of
``tests/fixtures/flagger`` (Flagger's e2e catalogue and docs), reads each back and round-trips
it through the models; checks that ``kubectl get`` shows Flagger's columns, and that every
manifest of ``tests/fixtures/invalid`` is refused with 422 and a message naming the field.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from flaggerpy.models import GROUP, VERSION, AlertProvider, Canary, KubeObject, MetricTemplate
from flaggerpy.models.crds import crd_documents, crd_kinds

if TYPE_CHECKING:
    from e2e.cluster.localcluster import LocalCluster

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parent.parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
MODELS: dict[str, type[KubeObject]] = {
    "Canary": Canary,
    "MetricTemplate": MetricTemplate,
    "AlertProvider": AlertProvider,
}
PLURALS = {spec.kind: spec.plural for spec in crd_kinds()}
SCHEMAS = {
    document["spec"]["names"]["kind"]: document["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for document in crd_documents()
}


def _manifests(folder: str) -> list[Any]:
    """Each file of a fixture folder as a parameter (its text, read at collection time)."""
    paths = sorted((FIXTURES / folder).glob("*.yaml"))
    return [pytest.param(path.read_text(), id=path.stem) for path in paths]


def _expectations(manifest: str) -> list[str]:
    """The ``# expect: <text>`` header lines: what the API server's message must mention."""
    prefix = "# expect:"
    return [
        line.removeprefix(prefix).strip()
        for line in manifest.splitlines()
        if line.startswith(prefix)
    ]


def _fixture(name: str) -> str:
    return (FIXTURES / "flagger" / f"{name}.yaml").read_text()


STATUS_CANARY = _fixture("canary-status")
PROMETHEUS_TEMPLATES = _fixture("metrictemplate-prometheus")
SLACK_PROVIDERS = _fixture("alertprovider-slack")


def _with_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """``value`` with the schema's ``default``s filled in, as the API server does on create."""
    if isinstance(value, dict):
        result = dict(value)
        properties: Mapping[str, Any] = schema.get("properties", {})
        for name, child in properties.items():
            if name in result:
                result[name] = _with_defaults(child, result[name])
            elif "default" in child:
                result[name] = copy.deepcopy(child["default"])
        additional = schema.get("additionalProperties")
        if isinstance(additional, Mapping):
            for name in result.keys() - properties.keys():
                result[name] = _with_defaults(additional, result[name])
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [_with_defaults(schema["items"], item) for item in value]
    return value


@pytest.mark.usefixtures("flagger_crds")
@pytest.mark.parametrize("manifest", _manifests("flagger"))
async def test_fixture_is_accepted_and_read_back_unchanged(
    manifest: str, api_client: k8s.ApiClient, namespace: str
) -> None:
    custom = k8s.CustomObjectsApi(api_client)
    for document in yaml.safe_load_all(manifest):
        kind, name = document["kind"], document["metadata"]["name"]
        plural = PLURALS[kind]
        body = {key: value for key, value in document.items() if key != "status"}

        await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
        if "status" in document:
            current = await custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
            current["status"] = document["status"]
            await custom.replace_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, current
            )
        stored = await custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)

        # Nothing pruned, nothing changed: only the CRD's own defaults were added.
        assert stored["spec"] == _with_defaults(
            SCHEMAS[kind]["properties"]["spec"], document["spec"]
        )
        assert stored.get("status") == document.get("status")
        # And what the server hands back survives the models untouched, metadata included.
        model = MODELS[kind].model_validate(stored)
        assert model.to_dict() == stored
        assert model.name == name
        assert model.namespace == namespace


@pytest.mark.usefixtures("flagger_crds")
@pytest.mark.parametrize("manifest", _manifests("invalid"))
async def test_invalid_manifest_is_rejected_naming_the_field(
    manifest: str, api_client: k8s.ApiClient, namespace: str
) -> None:
    document = yaml.safe_load(manifest)
    expectations = _expectations(manifest)
    assert expectations, "the manifest lacks '# expect:' lines"

    with pytest.raises(ApiException) as caught:
        await k8s.CustomObjectsApi(api_client).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURALS[document["kind"]], document
        )

    assert caught.value.status == 422
    message = json.loads(caught.value.body)["message"]
    for expected in expectations:
        assert expected in message


def _header(output: str) -> list[str]:
    return output.splitlines()[0].split()


@pytest.mark.usefixtures("flagger_crds")
async def test_kubectl_get_shows_flaggers_columns(cluster: LocalCluster, namespace: str) -> None:
    canary = yaml.safe_load(STATUS_CANARY)
    status = canary.pop("status")
    await cluster.akubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump(canary))
    await cluster.akubectl(
        "patch",
        "canary",
        "podinfo",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    for manifest in (PROMETHEUS_TEMPLATES, SLACK_PROVIDERS):
        await cluster.akubectl("create", "-n", namespace, "-f", "-", input=manifest)

    default = (await cluster.akubectl("get", "canaries", "-n", namespace)).stdout
    wide = (await cluster.akubectl("get", "canaries", "-n", namespace, "-o", "wide")).stdout
    templates = (await cluster.akubectl("get", "metrictemplates", "-n", namespace)).stdout
    providers = (await cluster.akubectl("get", "alertproviders", "-n", namespace)).stdout
    everything = (await cluster.akubectl("get", "all", "-n", namespace)).stdout

    assert _header(default) == ["NAME", "STATUS", "WEIGHT", "LASTTRANSITIONTIME"]
    assert default.splitlines()[1].split() == [
        "podinfo",
        "Progressing",
        "20",
        "2026-11-20T10:15:30Z",
    ]
    assert _header(wide) == [
        "NAME",
        "STATUS",
        "WEIGHT",
        "SUSPENDED",
        "FAILEDCHECKS",
        "INTERVAL",
        "MIRROR",
        "STEPWEIGHT",
        "STEPWEIGHTS",
        "MAXWEIGHT",
        "LASTTRANSITIONTIME",
    ]
    assert _header(templates) == ["NAME", "PROVIDER"]
    assert templates.splitlines()[1].split() == ["latency", "prometheus"]
    assert _header(providers) == ["NAME", "TYPE"]
    assert providers.splitlines()[1].split() == ["slack", "slack"]
    # categories: [all], as in Flagger.
    assert "canary.flagger.app/podinfo" in everything
    assert "metrictemplate.flagger.app/latency" in everything
    assert "alertprovider.flagger.app/slack" in everything


@pytest.mark.usefixtures("flagger_crds")
async def test_crds_have_flaggers_names_and_no_short_names(cluster: LocalCluster) -> None:
    output = (await cluster.akubectl("api-resources", f"--api-group={GROUP}", "-o", "wide")).stdout

    rows = {line.split()[0]: line for line in output.splitlines()[1:]}
    assert set(rows) == {"canaries", "metrictemplates", "alertproviders"}
    header = _header(output)
    assert header[:5] == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    for plural, row in rows.items():
        fields = row.split()
        # No SHORTNAMES column value: APIVERSION follows the name directly.
        assert fields[1] == f"{GROUP}/{VERSION}", plural
        assert fields[2] == "true"
        assert "all" in row
