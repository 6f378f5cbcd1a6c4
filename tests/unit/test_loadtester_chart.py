"""charts/loadtester: lint clean, renders what the CLI accepts, and keeps Flagger's Service name.

Rendered with the real helm binary that ``e2e/cluster/build`` provides; the
container's command line is then run through ``flaggerpy``'s own parser, so a
flag the chart passes and the CLI does not know fails here, not in a pod.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from flaggerpy import cli, logs
from flaggerpy.loadtester import app
from flaggerpy.loadtester.config import OPTIONS, LoadTesterSettings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "loadtester"
HELM = ROOT / "e2e" / "cluster" / "bin" / "helm"

pytestmark = pytest.mark.skipif(not HELM.exists(), reason="e2e/cluster/build has not built helm")


def render(*sets: str, release: str = "flagger-loadtester") -> dict[str, dict[str, Any]]:
    args = [str(HELM), "template", release, str(CHART), "--namespace", "test"]
    for item in sets:
        args += ["--set", item]
    result = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60)
    return {doc["kind"]: doc for doc in yaml.safe_load_all(result.stdout) if doc}


def container(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    [only] = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    return dict(only)


def settings_from(spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> LoadTesterSettings:
    """Runs the container's command line through the real CLI, with its environment."""
    seen: list[LoadTesterSettings] = []

    def fake_run(settings: LoadTesterSettings) -> int:
        seen.append(settings)
        return 0

    def no_logging(**kwargs: Any) -> None:
        pass

    monkeypatch.setattr(app, "run", fake_run)
    monkeypatch.setattr(logs, "configure", no_logging)
    for option in OPTIONS:
        monkeypatch.delenv(option.env, raising=False)
    for variable in spec.get("env", []):
        if "value" in variable and variable["name"].startswith("FLAGGERPY_LOADTESTER_"):
            monkeypatch.setenv(variable["name"], variable["value"])
    assert spec["command"] == ["flaggerpy", "loadtester"]
    assert cli.main([*spec["command"][1:], *spec["args"]]) == 0
    return seen[0]


def test_lint() -> None:
    for sets in ([], ["auth.token=s3cret", "cmd.allowCommands={hey,helm test}"]):
        args = [str(HELM), "lint", str(CHART), *(f"--set={s}" for s in sets)]
        result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_defaults_render_a_deployment_and_service_that_keep_flaggers_url(
        monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render()
    assert set(objects) == {"Deployment", "Service", "ServiceAccount"}
    service = objects["Service"]
    assert service["metadata"]["name"] == "flagger-loadtester"  # http://flagger-loadtester.test/
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    spec = container(objects)
    assert spec["ports"][0] == {"name": "http", "containerPort": 8080, "protocol": "TCP"}
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["enableServiceLinks"] is False
    assert spec["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in spec["volumeMounts"]

    settings = settings_from(spec, monkeypatch)
    assert settings.port == 8080
    assert settings.timeout == 3600
    assert settings.token == ""
    assert settings.allow_commands == ()


def test_safety_options_reach_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render("auth.token=s3cret", "cmd.allowCommands={hey,helm test}",
                     "cmd.namespaceRegexp=^(test|dev)$", "cmd.timeout=30m",
                     "cmd.helm=/usr/local/bin/helm")
    secret = objects["Secret"]
    assert secret["data"] == {"token": "czNjcmV0"}
    spec = container(objects)
    token = next(v for v in spec["env"] if v["name"] == "FLAGGERPY_LOADTESTER_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"],
                                                  "key": "token"}
    assert "s3cret" not in yaml.safe_dump(objects["Deployment"])

    settings = settings_from(spec, monkeypatch)
    assert settings.allow_commands == ("hey", "helm test")
    assert settings.namespace_regexp == "^(test|dev)$"
    assert settings.timeout == 1800
    assert settings.helm == "/usr/local/bin/helm"


def test_an_existing_secret_is_used_instead_of_creating_one() -> None:
    objects = render("auth.existingSecret=loadtester-token", "auth.secretKey=value",
                     release="canary-tools")
    assert "Secret" not in objects
    assert objects["Service"]["metadata"]["name"] == "canary-tools-loadtester"
    token = next(v for v in container(objects)["env"]
                 if v["name"] == "FLAGGERPY_LOADTESTER_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "loadtester-token", "key": "value"}


# --- Flagger's loadtester chart keys ------------------------------------------------------

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())


def render_all(*sets: str, release: str = "flagger-loadtester") -> list[dict[str, Any]]:
    """Every object, for charts that render two of one kind (Role and its binding, ...)."""
    args = [str(HELM), "template", release, str(CHART), "--namespace", "test"]
    for item in sets:
        args += ["--set", item]
    result = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_rbac_create_binds_the_rules_to_the_pods_service_account() -> None:
    objects = render("rbac.create=true", "serviceAccount.create=false",
                     "rbac.rules[0].apiGroups[0]=", "rbac.rules[0].resources[0]=pods",
                     "rbac.rules[0].verbs[0]=get", "rbac.rules[0].verbs[1]=list")
    assert objects["Role"]["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    binding = objects["RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "flagger-loadtester"}
    # As in Flagger, rbac.create makes the ServiceAccount even without serviceAccount.create.
    account = objects["ServiceAccount"]["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": "test"}]
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account


def test_rbac_cluster_scope_names_the_cluster_role_per_namespace() -> None:
    objects = render("rbac.create=true", "rbac.scope=cluster")
    assert "Role" not in objects
    assert objects["ClusterRole"]["metadata"]["name"] == "flagger-loadtester-test"
    assert objects["ClusterRole"]["rules"] == []
    assert objects["ClusterRoleBinding"]["roleRef"]["kind"] == "ClusterRole"
    assert objects["ClusterRoleBinding"]["roleRef"]["name"] == "flagger-loadtester-test"


def test_service_account_name_runs_as_an_existing_account_and_creates_none() -> None:
    objects = render("serviceAccountName=tester", "rbac.create=true")
    assert "ServiceAccount" not in objects
    assert objects["Deployment"]["spec"]["template"]["spec"]["serviceAccountName"] == "tester"
    assert objects["RoleBinding"]["subjects"][0]["name"] == "tester"
    objects = render("serviceAccount.create=false", "serviceAccount.name=other")
    assert "ServiceAccount" not in objects
    assert objects["Deployment"]["spec"]["template"]["spec"]["serviceAccountName"] == "other"


def test_pod_disruption_budget_selects_the_pods() -> None:
    assert "PodDisruptionBudget" not in render()
    objects = render("podDisruptionBudget.enabled=true", "podDisruptionBudget.minAvailable=2")
    pdb = objects["PodDisruptionBudget"]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 2
    pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_volumes_env_and_pod_placement_reach_the_pod() -> None:
    objects = render(
        "volumes[0].name=tests", "volumes[0].configMap.name=load-tests",
        "volumeMounts[0].name=tests", "volumeMounts[0].mountPath=/tests",
        "env[0].name=TARGET", "env[0].value=http://podinfo",
        "podAnnotations.a=b", "podLabels.team=sre", "nodeSelector.pool=tools",
        "tolerations[0].key=tools", "tolerations[0].operator=Exists",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms[0].matchExpressions[0].key=pool",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
        "podPriorityClassName=high", "image.pullSecret=registry",
        "imagePullSecrets[0].name=other")
    template = objects["Deployment"]["spec"]["template"]
    pod = template["spec"]
    spec = container(objects)
    assert {"name": "tests", "configMap": {"name": "load-tests"}} in pod["volumes"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]  # the read-only root needs it
    assert {"name": "tests", "mountPath": "/tests"} in spec["volumeMounts"]
    assert {"name": "TARGET", "value": "http://podinfo"} in spec["env"]
    assert template["metadata"]["annotations"]["a"] == "b"
    assert template["metadata"]["labels"]["team"] == "sre"
    assert pod["nodeSelector"] == {"pool": "tools"}
    assert pod["tolerations"] == [{"key": "tools", "operator": "Exists"}]
    assert "nodeAffinity" in pod["affinity"]
    assert pod["priorityClassName"] == "high"
    assert pod["imagePullSecrets"] == [{"name": "other"}, {"name": "registry"}]


def test_flaggers_security_context_spelling_is_honoured() -> None:
    spec = container(render("securityContext.enabled=true",
                            "securityContext.context.runAsUser=100"))
    assert spec["securityContext"] == {"runAsUser": 100}
    spec = container(render("securityContext.enabled=false"))
    assert "securityContext" not in spec
    spec = container(render())  # this chart's default: the context itself
    assert spec["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_istio_and_appmesh_objects() -> None:
    assert not {"VirtualService", "Gateway", "VirtualNode"} & set(render())
    objects = render("istio.enabled=true", "istio.host=tester.example.com",
                     "istio.gateway.enabled=true", "istio.tls.enabled=true",
                     "appmesh.enabled=true", "appmesh.backends={podinfo,podinfo-canary}")
    service = objects["VirtualService"]["spec"]
    assert service["hosts"] == ["tester.example.com"]
    assert service["gateways"] == ["flagger-loadtester"]
    assert service["http"][0]["route"][0]["destination"] == {
        "host": "flagger-loadtester", "port": {"number": 80}}
    servers = objects["Gateway"]["spec"]["servers"]
    assert [s["port"]["protocol"] for s in servers] == ["HTTP", "HTTPS"]
    assert servers[1]["tls"]["credentialName"] == "flagger-loadtester"
    node = objects["VirtualNode"]["spec"]
    assert [b["virtualService"]["virtualServiceRef"]["name"] for b in node["backends"]] == [
        "podinfo", "podinfo-canary"]
    assert node["serviceDiscovery"]["dns"]["hostname"].startswith("flagger-loadtester.test.")


def test_extra_deploy_renders_templated_manifests() -> None:
    kinds = [(doc["kind"], doc["metadata"]["name"]) for doc in render_all(
        "extraDeploy[0]=apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: "
        "{{ .Release.Name }}-scripts")]
    assert ("ConfigMap", "flagger-loadtester-scripts") in kinds


def test_flaggers_values_keys_are_all_accepted() -> None:
    flagger_keys = {
        "replicaCount", "image", "podAnnotations", "podLabels", "logLevel", "cmd",
        "nameOverride", "fullnameOverride", "service", "resources", "volumes", "volumeMounts",
        "env", "nodeSelector", "tolerations", "affinity", "rbac", "serviceAccountName",
        "appmesh", "istio", "podPriorityClassName", "securityContext", "podDisruptionBudget",
        "extraDeploy",
    }
    assert flagger_keys <= set(SCHEMA["properties"])
    assert set(SCHEMA["properties"]) == set(VALUES) | {"global"}  # values.yaml documents all
    assert SCHEMA["additionalProperties"] is False
    assert set(SCHEMA["properties"]["logLevel"]["enum"]) == set(logs.LEVELS)


@pytest.mark.parametrize(("sets", "message"), [
    pytest.param(["rbacc.create=true"], "additional properties 'rbacc'", id="typo"),
    pytest.param(["rbac.create=yes"], "at '/rbac/create': got string, want boolean", id="bool"),
    pytest.param(["rbac.scope=cluster-wide"], "at '/rbac/scope'", id="scope"),
    pytest.param(["volumes[0].mountPath=/x"], "at '/volumes/0'", id="volume-without-name"),
    pytest.param(["cmd.timeout=an hour"], "at '/cmd/timeout'", id="duration"),
    pytest.param(["replicaCount=two"], "at '/replicaCount'", id="int"),
])
def test_the_schema_rejects_bad_values(sets: list[str], message: str) -> None:
    args = [str(HELM), "template", "flagger-loadtester", str(CHART), *(f"--set={s}" for s in sets)]
    result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr
