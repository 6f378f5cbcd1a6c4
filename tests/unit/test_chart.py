"""charts/flaggerpy: lint clean, Flagger's args, least-privilege RBAC per provider, a strict schema.

Rendered with the real helm binary that ``e2e/cluster/build`` provides. The container's command
line is run through ``flaggerpy``'s own parser, so a flag the chart passes and the CLI does not
know fails here, not in a pod. The integration test (tests/integration/test_chart.py) installs
the chart and runs the controller with its ServiceAccount.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from flaggerpy import app, cli, logs
from flaggerpy.models.canary import CANARY_PROVIDERS
from flaggerpy.settings import Settings, iter_flags
from flaggerpy.telemetry import Recorder

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "flaggerpy"
HELM = ROOT / "e2e" / "cluster" / "bin" / "helm"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
PROVIDERS: list[str] = ["", *CANARY_PROVIDERS]

pytestmark = pytest.mark.skipif(not HELM.exists(), reason="e2e/cluster/build has not built helm")

Objects = list[dict[str, Any]]


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=60,
                            check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def render(*sets: str, release: str = "flagger", namespace: str = "istio-system") -> Objects:
    args = ["template", release, str(CHART), "--namespace", namespace]
    for item in sets:
        args += ["--set", item]
    return [doc for doc in yaml.safe_load_all(helm(*args).stdout) if doc]


def one(objects: Objects, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind
             and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} in {[o['kind'] for o in objects]}"
    return found[0]


def kinds(objects: Objects) -> list[str]:
    return sorted(o["kind"] for o in objects)


def controller_role(objects: Objects) -> dict[str, Any]:
    """The controller's ClusterRole (the steering ClusterRole is the other one)."""
    [found] = [o for o in objects if o["kind"] == "ClusterRole"
               and not o["metadata"]["name"].endswith(("-steering", "-cluster-scoped"))]
    return found


def controller(objects: Objects) -> dict[str, Any]:
    """The controller's Deployment (prometheus.install adds a second one)."""
    [found] = [o for o in objects if o["kind"] == "Deployment"
               and not o["metadata"]["name"].endswith("-prometheus")]
    return found


def container(objects: Objects) -> dict[str, Any]:
    [only] = controller(objects)["spec"]["template"]["spec"]["containers"]
    return dict(only)


def args_of(objects: Objects) -> list[str]:
    return list(container(objects)["args"])


def grants(rules: list[dict[str, Any]]) -> Iterator[tuple[str, str, str]]:
    """Every (apiGroup, resource, verb) a list of rules allows."""
    for rule in rules:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule["verbs"]:
                    yield group, resource, verb


def cluster_role_grants(objects: Objects, name: str = "flagger") -> set[tuple[str, str, str]]:
    return set(grants(one(objects, "ClusterRole", name)["rules"]))


def settings_from(spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Runs the container's command line through the real CLI and returns what it would run."""
    seen: list[Settings] = []

    def fake_run(settings: Settings) -> int:
        seen.append(settings)
        return 0

    def no_logging(**kwargs: Any) -> None:
        pass

    monkeypatch.setattr(app, "run", fake_run)
    monkeypatch.setattr(logs, "configure", no_logging)
    for flag in iter_flags():
        monkeypatch.delenv(flag.env, raising=False)
        for name in flag.flag.legacy_env:
            monkeypatch.delenv(name, raising=False)
    assert spec["command"] == ["flaggerpy", "controller"]
    assert cli.main([*spec["command"][1:], *spec["args"]]) == 0
    return seen[0]


# --- lint and the provider list ------------------------------------------------------------


@pytest.mark.parametrize("sets", [
    pytest.param([], id="defaults"),
    pytest.param(["meshProvider=linkerd", "leaderElection.enabled=true",
                  "leaderElection.replicaCount=2", "podDisruptionBudget.enabled=true"], id="ha"),
    pytest.param(["meshProvider=nginx", "prometheus.install=true", "serviceMonitor.enabled=true",
                  "podMonitor.enabled=true", "grafanaDashboard.enabled=true",
                  "crd.create=true"], id="everything-optional"),
    pytest.param(["meshProvider=kuma", "namespace=apps"], id="one-namespace"),
])
def test_lint(sets: list[str]) -> None:
    result = helm("lint", "--strict", str(CHART), *(f"--set={s}" for s in sets), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_provider_field_documents_flaggers_providers_and_stays_open() -> None:
    field = SCHEMA["properties"]["meshProvider"]
    assert "enum" not in field  # a third-party router is a valid choice
    for provider in CANARY_PROVIDERS:
        assert provider in field["description"]


def test_a_third_party_provider_gets_only_the_extra_rules_it_is_given() -> None:
    objects = render("meshProvider=acme", "rbac.additionalProviders={acme-edge}",
                     "rbac.extraRules[0].apiGroups={acme.example.com}",
                     "rbac.extraRules[0].resources={splits}",
                     "rbac.extraRules[0].verbs={get,list,watch,create,update}")
    granted = {(g, r) for g, r, _ in cluster_role_grants(objects)}
    assert ("acme.example.com", "splits") in granted
    assert not granted & ALL_MESH_RESOURCES
    assert controller_role(objects)["metadata"]["annotations"]["flaggerpy.dev/providers"] == ""
    assert "-mesh-provider=acme" in args_of(objects)


# The objects each provider's router writes (spec §3.2), and nothing else a mesh could own.
MESH_RESOURCES: dict[str, set[tuple[str, str]]] = {
    "istio": {("networking.istio.io", "virtualservices"),
              ("networking.istio.io", "destinationrules")},
    "smi": {("split.smi-spec.io", "trafficsplits")},
    "appmesh": {("appmesh.k8s.aws", "virtualnodes"), ("appmesh.k8s.aws", "virtualrouters"),
                ("appmesh.k8s.aws", "virtualservices")},
    "contour": {("projectcontour.io", "httpproxies")},
    "gloo": {("gloo.solo.io", "upstreams"), ("gateway.solo.io", "routetables")},
    "nginx": {("networking.k8s.io", "ingresses")},
    "skipper": {("networking.k8s.io", "ingresses")},
    "traefik": {("traefik.io", "traefikservices")},
    "kuma": {("kuma.io", "trafficroutes")},
    "apisix": {("apisix.apache.org", "apisixroutes")},
    "gatewayapi": {("gateway.networking.k8s.io", "httproutes")},
    "knative": {("serving.knative.dev", "services"), ("serving.knative.dev", "revisions")},
    "kubernetes": set(),
}
ALL_MESH_RESOURCES = set().union(*MESH_RESOURCES.values())


def family(provider: str) -> str:
    name = (provider or "istio").split(":")[0]
    return "smi" if name in ("linkerd", "osm", "smi") else name


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p or "default")
def test_every_provider_renders_and_the_cli_accepts_its_args(
        provider: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(f"meshProvider={provider}")
    assert kinds(objects) == [
        "ClusterRole", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service",
        "ServiceAccount"]
    settings = settings_from(container(objects), monkeypatch)
    assert settings.mesh.provider == (provider or "istio")
    assert ("-mesh-provider=" + provider in args_of(objects)) == bool(provider)


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p or "default")
def test_the_cluster_role_grants_the_selected_mesh_only(provider: str) -> None:
    granted = {(g, r) for g, r, _ in cluster_role_grants(render(f"meshProvider={provider}"))}
    expected = MESH_RESOURCES[family(provider)]
    assert expected <= granted
    others = ALL_MESH_RESOURCES - expected
    if family(provider) == "nginx":  # skipper shares Ingresses (and adds delete)
        others -= MESH_RESOURCES["skipper"]
    assert not granted & others, f"{provider} grants another mesh's objects: {granted & others}"
    # The routers' shared apply path reads from caches, creates and replaces: no patch.
    mesh_verbs = {v for g, r, v in cluster_role_grants(render(f"meshProvider={provider}"))
                  if (g, r) in expected}
    assert mesh_verbs <= {"get", "list", "watch", "create", "update", "delete"}, mesh_verbs


def test_only_skipper_and_keptn_analyses_may_delete_anything() -> None:
    """Skipper's router deletes the canary Ingress; the keptn metrics provider the Analysis it
    created for one query. Nothing else is deleted: ownerReferences do it."""
    keptn = ("metrics.keptn.sh", "analyses")
    for provider in PROVIDERS:
        objects = render(f"meshProvider={provider}")
        deletes = {(g, r) for g, r, v in cluster_role_grants(objects) if v == "delete"}
        assert deletes == ({("networking.k8s.io", "ingresses"), keptn} if provider == "skipper"
                           else {keptn}), provider


@pytest.mark.parametrize("provider", ["kubernetes", "istio", "linkerd"])
def test_keptn_gets_exactly_what_its_provider_does_whatever_the_mesh(provider: str) -> None:
    grants = {(r, v) for g, r, v in cluster_role_grants(render(f"meshProvider={provider}"))
              if g == "metrics.keptn.sh"}
    assert grants == {("keptnmetrics", "get"), ("analyses", "create"), ("analyses", "get"),
                      ("analyses", "delete")}


# --- RBAC ----------------------------------------------------------------------------------

# What the controller itself does, whatever the mesh: flaggerpy/canary, flaggerpy/runtime.
CORE_GRANTS = {
    *(("flagger.app", "canaries", v) for v in ("get", "list", "watch", "patch")),
    ("flagger.app", "canaries/status", "patch"),
    ("flagger.app", "canaries/finalizers", "update"),
    *(("flagger.app", r, v) for r in ("metrictemplates", "alertproviders")
      for v in ("get", "list", "watch")),
    ("flagger.app", "metrictemplates/status", "patch"),
    ("flagger.app", "alertproviders/status", "patch"),
    ("flaggerpy.dev", "canarycommands", "get"),
    ("flaggerpy.dev", "canarycommands", "list"),
    ("flaggerpy.dev", "canarycommands", "watch"),
    ("flaggerpy.dev", "canarycommands/status", "patch"),
    *(("apps", r, v) for r in ("deployments", "daemonsets")
      for v in ("get", "list", "watch", "create", "update", "patch")),
    *(("autoscaling", "horizontalpodautoscalers", v)
      for v in ("get", "list", "watch", "create", "update")),
    *(("", "services", v) for v in ("get", "list", "watch", "create", "update")),
    *(("", r, v) for r in ("configmaps", "secrets")
      for v in ("get", "list", "watch", "create", "update")),
    ("", "events", "create"),
    ("", "events", "patch"),
    *(("keda.sh", "scaledobjects", v)
      for v in ("get", "list", "watch", "create", "update", "patch")),
    # MetricTemplate type externalmetrics: any metric (resource) of the external metrics API.
    ("external.metrics.k8s.io", "*", "get"),
    ("external.metrics.k8s.io", "*", "list"),
    # MetricTemplate type keptn: a KeptnMetric is read; an Analysis created, read and deleted.
    ("metrics.keptn.sh", "keptnmetrics", "get"),
    *(("metrics.keptn.sh", "analyses", v) for v in ("create", "get", "delete")),
}


def test_the_kubernetes_provider_gets_exactly_the_core_rules() -> None:
    objects = render("meshProvider=kubernetes")
    role = controller_role(objects)
    assert cluster_role_grants(objects) == CORE_GRANTS
    assert not any("nonResourceURLs" in rule for rule in role["rules"])
    # A star only where the names are not known: the external metrics API's metric names.
    assert all("*" not in rule["verbs"] and ("*" not in rule["resources"]
               or rule["apiGroups"] == ["external.metrics.k8s.io"])
               for rule in role["rules"])
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": "flagger"}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "flagger", "namespace": "istio-system"}]
    assert role["metadata"]["annotations"]["flaggerpy.dev/providers"] == ""


@pytest.mark.parametrize("provider", ["kubernetes", "istio", "linkerd"])
def test_external_metrics_are_read_only_whatever_the_mesh(provider: str) -> None:
    """MetricTemplates of type externalmetrics work with every mesh, and only read."""
    grants = {(r, v) for g, r, v in cluster_role_grants(render(f"meshProvider={provider}"))
              if g == "external.metrics.k8s.io"}
    assert grants == {("*", "get"), ("*", "list")}


def test_without_config_tracking_configmaps_and_secrets_are_only_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render("meshProvider=kubernetes", "configTracking.enabled=false")
    writes = {(r, v) for g, r, v in cluster_role_grants(objects)
              if r in ("configmaps", "secrets") and v not in ("get", "list", "watch")}
    assert writes == set()
    assert "-enable-config-tracking=false" in args_of(objects)
    assert settings_from(container(objects), monkeypatch).controller.enable_config_tracking is False


def test_additional_providers_add_their_rules_and_star_grants_all() -> None:
    objects = render("meshProvider=istio", "rbac.additionalProviders={gatewayapi:v1,linkerd}")
    granted = {(g, r) for g, r, _ in cluster_role_grants(objects)}
    assert MESH_RESOURCES["istio"] | MESH_RESOURCES["gatewayapi"] | MESH_RESOURCES["smi"] <= granted
    assert not granted & MESH_RESOURCES["contour"]
    role = controller_role(objects)
    assert role["metadata"]["annotations"]["flaggerpy.dev/providers"] == "gatewayapi,istio,smi"

    everything = {(g, r) for g, r, _ in cluster_role_grants(
        render("meshProvider=kubernetes", "rbac.additionalProviders={*}"))}
    assert everything >= ALL_MESH_RESOURCES


def test_extra_rules_are_appended() -> None:
    rule = {"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get"]}
    objects = render("meshProvider=kubernetes",
                     "rbac.extraRules[0].apiGroups={example.com}",
                     "rbac.extraRules[0].resources={widgets}",
                     "rbac.extraRules[0].verbs={get}")
    assert controller_role(objects)["rules"][-1] == rule


def test_one_namespace_is_granted_through_a_role_binding_there_only() -> None:
    objects = render("meshProvider=istio", "namespace=apps")
    assert "ClusterRoleBinding" not in kinds(objects)
    binding = one(objects, "RoleBinding")
    assert binding["metadata"]["namespace"] == "apps"
    assert binding["roleRef"]["kind"] == "ClusterRole"
    assert "-namespace=apps" in args_of(objects)


def test_one_namespace_with_kuma_binds_the_cluster_scoped_routes_cluster_wide() -> None:
    objects = render("meshProvider=kuma", "namespace=apps")
    scoped = one(objects, "ClusterRole", "flagger-cluster-scoped")
    assert {(g, r) for g, r, _ in grants(scoped["rules"])} == MESH_RESOURCES["kuma"]
    binding = one(objects, "ClusterRoleBinding", "flagger-cluster-scoped")
    assert binding["roleRef"]["name"] == "flagger-cluster-scoped"
    assert one(objects, "RoleBinding")["metadata"]["namespace"] == "apps"


@pytest.mark.parametrize(("sets", "lease_namespace"), [
    pytest.param([], "flagger-system", id="release-namespace"),
    pytest.param(["namespace=apps"], "apps", id="watched-namespace"),
])
def test_leader_election_gets_a_role_for_its_lease(
        sets: list[str], lease_namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render("leaderElection.enabled=true", "leaderElection.replicaCount=2", *sets,
                     namespace="flagger-system")
    role = one(objects, "Role")
    assert role["metadata"]["namespace"] == lease_namespace
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": ["flagger-leader-election"], "verbs": ["get", "update"]},
    ]
    binding = one(objects, "RoleBinding", "flagger-leader-election")
    assert binding["metadata"]["namespace"] == lease_namespace
    assert binding["subjects"][0]["namespace"] == "flagger-system"
    assert not any(r == "leases" for _, r, _ in cluster_role_grants(objects))
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert "strategy" not in deployment["spec"]  # rolling: the standby takes over
    settings = settings_from(container(objects), monkeypatch)
    assert settings.controller.enable_leader_election is True
    assert settings.controller.election_namespace == lease_namespace


def test_the_steering_role_creates_canary_commands_and_only_reads_canaries_and_events() -> None:
    """docs/steering.md: steering is not editing; aggregated to edit unless turned off."""
    role = one(render(), "ClusterRole", "flagger-steering")
    assert set(grants(role["rules"])) == {
        ("flaggerpy.dev", "canarycommands", "create"),
        ("flaggerpy.dev", "canarycommands", "get"),
        ("flaggerpy.dev", "canarycommands", "list"),
        ("flaggerpy.dev", "canarycommands", "watch"),
        ("flagger.app", "canaries", "get"),
        ("flagger.app", "canaries", "list"),
        ("flagger.app", "canaries", "watch"),
        ("", "events", "get"),  # the run's timeline in kubectl flaggerpy status
        ("", "events", "list"),
        ("", "events", "watch"),
    }
    assert role["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    alone = one(render("rbac.steering.aggregateToEdit=false"), "ClusterRole", "flagger-steering")
    assert "rbac.authorization.k8s.io/aggregate-to-edit" not in alone["metadata"]["labels"]
    assert not [o for o in render("rbac.steering.create=false")
                if o["metadata"]["name"] == "flagger-steering"]


def test_no_rbac_and_an_existing_service_account() -> None:
    objects = render("rbac.create=false", "serviceAccount.create=false",
                     "serviceAccount.name=mine")
    assert kinds(objects) == ["Deployment", "Service"]
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mine"


def test_release_names_keep_cluster_scoped_names_apart() -> None:
    first = controller_role(render(release="team-a"))["metadata"]["name"]
    second = controller_role(render(release="team-b"))["metadata"]["name"]
    assert (first, second) == ("team-a-flagger", "team-b-flagger")


# --- the Deployment ------------------------------------------------------------------------


def test_defaults_are_flaggers(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render()
    deployment = one(objects, "Deployment")
    assert deployment["metadata"]["name"] == "flagger"
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "8080",
        "appmesh.k8s.aws/sidecarInjectorWebhook": "disabled", "linkerd.io/inject": "enabled"}
    assert pod["metadata"]["labels"] == {
        "app.kubernetes.io/name": "flagger", "app.kubernetes.io/instance": "flagger"}
    assert args_of(objects) == [
        "-log-level=info", "-metrics-server=http://prometheus:9090",
        "-enable-config-tracking=true", "-slack-user=flagger"]
    spec = container(objects)
    assert spec["image"] == "flaggerpy:0.1.0"
    assert spec["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert spec["resources"] == {"limits": {"memory": "512Mi", "cpu": "1000m"},
                                 "requests": {"memory": "32Mi", "cpu": "10m"}}
    settings = settings_from(spec, monkeypatch)
    assert settings.telemetry.port == 8080
    assert settings.controller.namespace == ""
    anti = pod["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["labelSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "flagger", "app.kubernetes.io/instance": "flagger"}
    service = one(objects, "Service")
    assert service["metadata"]["name"] == "flagger"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"] == pod["metadata"]["labels"]


def test_runs_as_non_root_with_a_read_only_root_and_no_capabilities() -> None:
    pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    context = container(render())["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == 10001
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["enableServiceLinks"] is False  # a Service "flagger" would inject FLAGGER_PORT
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    assert "securityContext" not in container(render("securityContext.enabled=false"))


def test_every_value_reaches_its_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(
        "meshProvider=nginx", "metricsServer=https://thanos.monitoring:9090",
        "selectorLabels=app\\,name", "includeLabelPrefix=app.kubernetes.io",
        "namespace=apps", "slack.url=https://hooks.slack.com/services/x",
        "slack.channel=general", "slack.user=deployer", "slack.proxyUrl=http://proxy:3128",
        "msteams.url=https://teams.example/hook", "msteams.proxy=http://proxy:3129",
        "eventWebhook=https://events.example/hook", "clusterName=prod",
        "dashboardUrl=https://dash.example/{namespace}/{name}",
        "ingressAnnotationsPrefix=custom.ingress.kubernetes.io", "ingressClass=contour",
        "kubeconfigQPS=50", "kubeconfigBurst=120", "threadiness=8",
        "noCrossNamespaceRefs=true", "logLevel=warning",
        "controlplane.kubeconfig.secretName=mesh", "controlplane.kubeconfig.key=config",
    )
    settings = settings_from(container(objects), monkeypatch)
    assert settings.mesh.provider == "nginx"
    assert settings.metrics.server == "https://thanos.monitoring:9090"
    assert settings.controller.selector_labels == ("app", "name")
    assert settings.controller.include_label_prefix == ("app.kubernetes.io",)
    assert settings.controller.namespace == "apps"
    slack = settings.notifications.slack
    assert slack.url.get_secret_value() == "https://hooks.slack.com/services/x"
    assert (slack.channel, slack.user, slack.proxy_url) == (
        "general", "deployer", "http://proxy:3128")
    msteams = settings.notifications.msteams
    assert msteams.url.get_secret_value() == "https://teams.example/hook"
    assert msteams.proxy_url == "http://proxy:3129"
    assert settings.notifications.event_webhook.get_secret_value() == "https://events.example/hook"
    assert settings.controller.cluster_name == "prod"
    assert settings.notifications.dashboard_url == "https://dash.example/{namespace}/{name}"
    assert settings.mesh.ingress_annotations_prefix == "custom.ingress.kubernetes.io"
    assert settings.mesh.ingress_class == "contour"
    assert (settings.kube.qps, settings.kube.burst) == (50, 120)
    assert settings.controller.workers == 8
    assert settings.controller.no_cross_namespace_refs is True
    assert settings.telemetry.log_level == "warn"
    assert settings.kube.service_mesh_kubeconfig == "/etc/flaggerpy/controlplane/config"
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "kubeconfig", "secret": {"secretName": "mesh"}} in pod["volumes"]
    assert {"name": "kubeconfig", "mountPath": "/etc/flaggerpy/controlplane",
            "readOnly": True} in container(objects)["volumeMounts"]


def test_slack_proxy_is_read_from_either_spelling() -> None:
    # Flagger's values document slack.proxy, its template reads slack.proxyUrl.
    for key in ("slack.proxy", "slack.proxyUrl"):
        assert "-slack-proxy-url=http://p:1" in args_of(render(f"{key}=http://p:1"))


def test_pod_placement_and_extras() -> None:
    objects = render(
        "podPriorityClassName=system-cluster-critical", "nodeSelector.role=infra",
        "tolerations[0].key=infra", "tolerations[0].operator=Exists",
        "env[0].name=SLACK_URL", "env[0].valueFrom.secretKeyRef.name=slack",
        "env[0].valueFrom.secretKeyRef.key=url", "podLabels.team=platform",
        "deploymentLabels.tier=control", "annotations.owner=platform",
        "image.repository=registry.example/flaggerpy", "image.tag=1.2.3",
        "image.pullPolicy=Always", "image.pullSecret=regcred",
        "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn",
        "additionalVolumes[0].name=extra", "additionalVolumes[0].emptyDir.medium=Memory",
        "additionalVolumeMounts[0].name=extra", "additionalVolumeMounts[0].mountPath=/extra",
    )
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["nodeSelector"] == {"role": "infra"}
    assert pod["tolerations"] == [{"key": "infra", "operator": "Exists"}]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert {"name": "extra", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
    spec = container(objects)
    assert spec["image"] == "registry.example/flaggerpy:1.2.3"
    assert spec["imagePullPolicy"] == "Always"
    assert spec["env"] == [{"name": "SLACK_URL",
                            "valueFrom": {"secretKeyRef": {"name": "slack", "key": "url"}}}]
    assert {"name": "extra", "mountPath": "/extra"} in spec["volumeMounts"]
    assert deployment["spec"]["template"]["metadata"]["labels"]["team"] == "platform"
    assert deployment["metadata"]["labels"]["tier"] == "control"
    assert deployment["metadata"]["annotations"] == {"owner": "platform"}
    account = one(objects, "ServiceAccount")
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn"}


# --- optional objects ----------------------------------------------------------------------


def test_monitors_pdb_and_linkerd_policy() -> None:
    objects = render("serviceMonitor.enabled=true", "serviceMonitor.labels.release=prom",
                     "serviceMonitor.honorLabels=true", "podMonitor.enabled=true",
                     "podMonitor.namespace=monitoring", "podMonitor.additionalLabels.team=sre",
                     "podDisruptionBudget.enabled=true", "linkerdAuthPolicy.create=true")
    monitor = one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"] == [{"path": "/metrics", "port": "http",
                                             "interval": "30s", "scrapeTimeout": "30s",
                                             "honorLabels": True}]
    assert monitor["spec"]["selector"]["matchLabels"] == one(objects, "Service")["spec"]["selector"]
    pod_monitor = one(objects, "PodMonitor")
    assert pod_monitor["metadata"]["namespace"] == "monitoring"
    assert pod_monitor["metadata"]["labels"]["team"] == "sre"
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["interval"] == "15s"
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 1
    policy = one(objects, "AuthorizationPolicy")
    assert policy["metadata"]["namespace"] == "linkerd-viz"
    assert policy["spec"]["requiredAuthenticationRefs"] == [
        {"kind": "ServiceAccount", "name": "flagger", "namespace": "istio-system"}]


def test_prometheus_install_points_the_controller_at_it() -> None:
    objects = render("prometheus.install=true", "prometheus.retention=6h")
    assert "-metrics-server=http://flagger-prometheus:9090" in args_of(objects)
    service = one(objects, "Service", "flagger-prometheus")
    assert service["spec"]["ports"][0]["port"] == 9090
    role = one(objects, "ClusterRole", "flagger-prometheus")
    assert set(grants(role["rules"])) == {("", "pods", v) for v in ("get", "list", "watch")}
    prometheus = one(objects, "Deployment", "flagger-prometheus")
    [spec] = prometheus["spec"]["template"]["spec"]["containers"]
    assert "--storage.tsdb.retention.time=6h" in spec["args"]
    config_map = one(objects, "ConfigMap", "flagger-prometheus")
    config = yaml.safe_load(config_map["data"]["prometheus.yml"])
    assert [job["job_name"] for job in config["scrape_configs"]] == [
        "appmesh-envoy", "kubernetes-pods"]


def test_crds_are_installed_from_crds_and_templated_only_with_crd_create() -> None:
    assert "CustomResourceDefinition" not in kinds(render())
    crds = [o for o in render("crd.create=true") if o["kind"] == "CustomResourceDefinition"]
    assert sorted(c["metadata"]["name"] for c in crds) == [
        "alertproviders.flagger.app", "canaries.flagger.app", "canarycommands.flaggerpy.dev",
        "metrictemplates.flagger.app"]
    generated = {d["metadata"]["name"]: d for d in
                 yaml.safe_load_all((CHART / "crds" / "crds.yaml").read_text()) if d}
    for crd in crds:
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["spec"] == generated[crd["metadata"]["name"]]["spec"]
    # Without crd.create, Helm installs crds/ itself (and never deletes them).
    with_crds = helm("template", "flagger", str(CHART), "--include-crds").stdout
    assert with_crds.count("kind: CustomResourceDefinition") == 4


def test_the_grafana_dashboard_plots_metrics_the_controller_exports() -> None:
    objects = render("grafanaDashboard.enabled=true", "grafanaDashboard.namespace=grafana")
    config_map = one(objects, "ConfigMap", "flagger-dashboard")
    assert config_map["metadata"]["namespace"] == "grafana"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["flaggerpy.json"])
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {re.sub(r"_(bucket|count|sum)$", "", name) for expr in exprs
            for name in re.findall(r"\b((?:flagger|workqueue|controller_runtime)_[a-z_]+)\{", expr)}
    exported = {metric.name for metric in Recorder().registry.collect()}
    exported |= {name.removesuffix("_total") for name in exported} | {
        f"{name}_total" for name in exported}
    assert used, exprs
    assert used <= exported, used - exported
    assert any("flagger_canary_weight" in e for e in exprs)
    assert any("flagger_canary_status" in e for e in exprs)


# --- the schema ----------------------------------------------------------------------------


@pytest.mark.parametrize(("sets", "message"), [
    pytest.param(["meshProvider=two words"], "at '/meshProvider'", id="mesh"),
    pytest.param(["logLevel=7"], "at '/logLevel': value must be one of", id="log-level-type"),
    pytest.param(["logLevel=verbose"], "at '/logLevel': value must be one of", id="log-level"),
    pytest.param(["meshprovider=istio"], "additional properties 'meshprovider' not allowed",
                 id="unknown-top-level-key"),
    pytest.param(["slack.channle=ops"], "at '/slack': additional properties 'channle'",
                 id="nested-typo"),
    pytest.param(["leaderElection.enabled=yes"],
                 "at '/leaderElection/enabled': got string, want boolean", id="bool"),
    pytest.param(["metricsServer=prometheus:9090"], "at '/metricsServer'", id="url"),
    pytest.param(["rbac.pspEnabled=true"], "at '/rbac/pspEnabled': value must be false",
                 id="psp"),
    pytest.param(["rbac.additionalProviders={a b}"], "at '/rbac/additionalProviders/0'",
                 id="additional-provider"),
    pytest.param(["threadiness=many"], "at '/threadiness'", id="threadiness"),
])
@pytest.mark.parametrize("command", ["template", "install"])
def test_the_schema_rejects_bad_values_with_a_clear_message(
        sets: list[str], message: str, command: str) -> None:
    args = [command, "flagger", str(CHART), *(f"--set={s}" for s in sets)]
    if command == "install":
        args.append("--dry-run=client")  # validation happens before any cluster is needed
    result = helm(*args, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


def test_values_yaml_documents_every_key_the_schema_allows() -> None:
    assert set(SCHEMA["properties"]) == set(VALUES) | {"global"}  # global: set by a parent
    assert SCHEMA["additionalProperties"] is False


def test_values_yaml_keeps_flaggers_keys() -> None:
    flagger_keys = {
        "image", "logLevel", "podAnnotations", "podPriorityClassName", "metricsServer",
        "serviceMonitor", "meshProvider", "namespace", "selectorLabels", "configTracking",
        "ingressAnnotationsPrefix", "ingressClass", "securityContext", "eventWebhook",
        "clusterName", "slack", "msteams", "podMonitor", "env", "leaderElection",
        "serviceAccount", "rbac", "crd", "linkerdAuthPolicy", "nameOverride",
        "fullnameOverride", "resources", "nodeSelector", "tolerations", "affinity",
        "prometheus", "kubeconfigQPS", "kubeconfigBurst", "controlplane",
        "podDisruptionBudget", "podLabels", "deploymentLabels", "noCrossNamespaceRefs",
        "additionalVolumes", "additionalVolumeMounts", "annotations", "includeLabelPrefix",
        "threadiness",
    }
    assert flagger_keys <= set(SCHEMA["properties"])
    assert VALUES["slack"]["user"] == "flagger"
    assert VALUES["leaderElection"] == {"enabled": False, "replicaCount": 1}
    assert VALUES["crd"] == {"create": False}
    assert VALUES["meshProvider"] == ""


# --- the image -----------------------------------------------------------------------------


HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
    "hadolint")


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (make lint installs it)")
def test_the_dockerfile_passes_hadolint() -> None:
    assert HADOLINT is not None
    result = subprocess.run([HADOLINT, str(ROOT / "Dockerfile")], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_runs_the_controller_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["flaggerpy"]' in text
    assert 'CMD ["controller"]' in text
    assert re.search(r"^USER 10001:10001$", text, re.MULTILINE)
    assert text.count("FROM ") == 2  # the wheel is built in its own stage


def test_shards_become_one_deployment_each_with_its_own_lease(
        monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render("shards=3", "leaderElection.enabled=true", "leaderElection.replicaCount=2",
                     namespace="flagger-system")
    deployments = sorted((o for o in objects if o["kind"] == "Deployment"),
                         key=lambda o: o["metadata"]["name"])
    leases: list[str] = []
    assert [d["metadata"]["name"] for d in deployments] == [
        "flagger-shard-0", "flagger-shard-1", "flagger-shard-2"]
    for index, deployment in enumerate(deployments):
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector["flaggerpy.dev/shard"] == str(index)
        assert deployment["spec"]["template"]["metadata"]["labels"]["flaggerpy.dev/shard"] == (
            str(index))
        assert deployment["spec"]["replicas"] == 2
        [spec] = deployment["spec"]["template"]["spec"]["containers"]
        settings = settings_from(spec, monkeypatch)
        assert settings.controller.shard_of == (index, 3)
        assert settings.controller.enable_leader_election is True
        leases.append(app.lease_name(settings))
    lease_rule = one(objects, "Role")["rules"][1]
    assert lease_rule["resourceNames"] == leases  # the Leases the processes take
    assert leases == [f"flagger-leader-election-shard-{k}-of-3" for k in range(3)]
    single = render()
    assert "flaggerpy.dev/shard" not in controller(single)["spec"]["selector"]["matchLabels"]
    assert not [a for a in args_of(single) if a.startswith("-shard")]
