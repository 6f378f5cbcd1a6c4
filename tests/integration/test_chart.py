"""charts/flaggerpy on the real control plane: install, run as its ServiceAccount, upgrade, remove.

The chart is installed with the real helm into the test's namespace. The controller then runs as a
local process with the chart's own args and a token of the chart's ServiceAccount (not the cluster
admin), and takes a blue/green canary from Initialized to Succeeded: the ClusterRole is enough.
The audit log shows it was never refused anything, and requests the chart does not grant are.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from e2e.cluster import audit
from e2e.cluster.localcluster import REPO_ROOT, LocalCluster
from e2e.scenario import Scenario, canary, container_image, deployment

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]

CHART = REPO_ROOT / "charts" / "flaggerpy"
CRDS = ("canaries.flagger.app", "metrictemplates.flagger.app", "alertproviders.flagger.app")
HPA = {
    "apiVersion": "autoscaling/v2",
    "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "podinfo"},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "minReplicas": 2,
        "maxReplicas": 4,
        "metrics": [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}],
    },
}
HPA_REF = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "podinfo"}


class Release:
    """One Helm release of the chart in a test namespace, driven with the real helm binary."""

    def __init__(self, cluster: LocalCluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        # Unique per test: the ClusterRole and its binding are named after the release.
        self.name = f"fp-{secrets.token_hex(3)}"
        self.fullname = f"{self.name}-flagger"
        self.installed = False

    @property
    def service_account(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.fullname}"

    async def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        process = await asyncio.create_subprocess_exec(
            str(self.cluster.bin_dir / "helm"), f"--kubeconfig={self.cluster.kubeconfig}",
            *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stdout, stderr = await process.communicate()
        result = subprocess.CompletedProcess(
            ["helm", *args], process.returncode or 0, stdout.decode(), stderr.decode())
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed: {result.stderr}")
        return result

    async def install(self, *sets: str, command: str = "install") -> str:
        args = [command, self.name, str(CHART), "--namespace", self.namespace,
                "--wait", "--timeout=90s"]
        for item in sets:
            args += ["--set", item]
        result = await self.helm(*args)
        self.installed = True
        return result.stdout

    async def uninstall(self) -> None:
        await self.helm("uninstall", self.name, "--namespace", self.namespace, "--wait")
        self.installed = False

    async def controller_args(self) -> list[str]:
        obj = await get(self.cluster, "deployment", self.fullname, namespace=self.namespace)
        assert obj is not None
        [container] = obj["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["flaggerpy", "controller"]
        return list(container["args"])

    async def token_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig holding a fresh token of the chart's ServiceAccount (TokenRequest)."""
        result = await self.cluster.akubectl(
            "create", "token", self.fullname, "-n", self.namespace, "--duration=1h")
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {
                "server": self.cluster.server,
                "certificate-authority": str(self.cluster.pki_dir / "ca.crt")}}],
            "users": [{"name": self.fullname, "user": {"token": result.stdout.strip()}}],
            "contexts": [{"name": "chart", "context": {
                "cluster": "local", "user": self.fullname, "namespace": self.namespace}}],
            "current-context": "chart",
        }
        await asyncio.to_thread(write_private, path, json.dumps(config))
        return path

    async def can_i(self, *args: str) -> bool:
        result = await self.cluster.akubectl(
            "auth", "can-i", *args, f"--as={self.service_account}", check=False)
        answer = result.stdout.strip()
        assert answer in ("yes", "no"), result.stderr
        return answer == "yes"


def write_private(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.write_text(text)


async def get(cluster: LocalCluster, kind: str, name: str, *,
              namespace: str | None = None) -> dict[str, Any] | None:
    scope = ["-n", namespace] if namespace else []
    result = await cluster.akubectl("get", kind, name, *scope, "-o", "json", check=False)
    if result.returncode != 0:
        assert "NotFound" in result.stderr, result.stderr
        return None
    obj: dict[str, Any] = json.loads(result.stdout)
    return obj


@pytest.fixture
async def release(cluster: LocalCluster, namespace: str) -> AsyncIterator[Release]:
    chart = Release(cluster, namespace)
    try:
        yield chart
    finally:
        if chart.installed:  # cluster-scoped objects would outlive the namespace
            await chart.helm("uninstall", chart.name, "--namespace", namespace, check=False)




def audit_size(cluster: LocalCluster) -> int:
    return cluster.audit_log.stat().st_size


def requests_since(cluster: LocalCluster, offset: int, user: str) -> list[audit.AuditRecord]:
    """The audit records of ``user`` written after ``offset`` bytes of the log."""
    tail = cluster.audit_log.parent / f".audit-tail-{secrets.token_hex(4)}.log"
    try:
        with cluster.audit_log.open("rb") as log:
            log.seek(offset)
            tail.write_bytes(log.read())
        return [r for r in audit.records(tail) if r.user == user]
    finally:
        tail.unlink(missing_ok=True)


async def test_the_service_account_reconciles_a_blue_green_release(
        release: Release, scenario: Scenario, cluster: LocalCluster, namespace: str,
        tmp_path: Path) -> None:
    # -namespace: the chart binds the ClusterRole in this namespace only, and the Lease gets a
    # Role: the narrowest grant the chart makes, so the strictest test of it.
    await release.install("meshProvider=kubernetes", f"namespace={namespace}",
                          "leaderElection.enabled=true", "logLevel=debug")
    for kind in ("deployment", "service", "serviceaccount", "rolebinding"):
        assert await get(cluster, kind, release.fullname, namespace=namespace), kind
    assert await get(cluster, "clusterrole", release.fullname)
    assert await get(cluster, "clusterrolebinding", release.fullname) is None
    assert await get(cluster, "role", f"{release.fullname}-leader-election", namespace=namespace)

    chart_args = await release.controller_args()
    assert "-mesh-provider=kubernetes" in chart_args
    assert "-enable-leader-election=true" in chart_args
    # The scenario's Prometheus replaces the chart's metrics server; the process logs at debug.
    args = [a for a in chart_args if not a.startswith(("-metrics-server=", "-log-level="))]
    kubeconfig = await release.token_kubeconfig(tmp_path / "sa.kubeconfig")
    offset = audit_size(cluster)
    controller = await scenario.start_controller(*args, kubeconfig=kubeconfig)

    # What the controller touches in a release: a tracked ConfigMap, a primary HPA, a finalizer.
    await scenario.set_success_rate("podinfo", 99)
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "podinfo-config"},
              "data": {"color": "blue"}}
    workload = deployment("podinfo", image="podinfo:6.0.0")
    workload["spec"]["template"]["spec"]["containers"][0]["envFrom"] = [
        {"configMapRef": {"name": "podinfo-config"}}]
    await scenario.apply(config, workload, HPA, canary(
        "podinfo", autoscalerRef=HPA_REF, revertOnDeletion=True))
    await scenario.wait_phase("podinfo", "Initialized", within=60)
    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
    seen: list[str] = []
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=120, seen=seen)

    assert status["phase"] == "Succeeded", (status, controller.output()[-4000:])
    assert "Progressing" in seen
    assert container_image(await scenario.get("deployment", "podinfo-primary")) == "podinfo:6.0.1"
    assert await scenario.get("configmap", "podinfo-config-primary") is not None
    assert await scenario.get("hpa", "podinfo-primary") is not None
    messages = [e["message"] for e in await scenario.events("podinfo")]
    assert f"Promotion completed! Scaling down podinfo.{namespace}" in messages
    lease = await get(cluster, "lease", "flagger-leader-election", namespace=namespace)
    assert lease is not None
    assert lease["spec"]["holderIdentity"]

    # revertOnDeletion: the finalizer gives the target back, then goes.
    await scenario.kubectl("delete", "canary", "podinfo", "--wait=false")
    for _ in range(240):
        if await scenario.get("canary", "podinfo") is None:
            break
        await asyncio.sleep(0.25)
    else:
        raise AssertionError(f"the Canary was not finalized: {controller.output()[-4000:]}")
    target = await scenario.get("deployment", "podinfo")
    assert target is not None
    assert target["spec"]["replicas"] == 2

    requests = requests_since(cluster, offset, release.service_account)
    assert len(requests) > 20, "the controller did not run as the chart's ServiceAccount"
    refused = sorted({f"{r.verb} {r.resource}/{r.subresource}".rstrip("/")
                      for r in requests if r.code == 403})
    assert refused == [], f"the chart's RBAC refused the controller: {refused}"
    written = {f"{r.verb} {r.resource}/{r.subresource}".rstrip("/")
               for r in requests if r.code < 300}
    assert {"create deployments", "create services", "create configmaps",
            "create horizontalpodautoscalers", "patch canaries", "patch canaries/status",
            "create leases"} <= written, written
    print("requests of the chart's ServiceAccount:", sorted(
        {f"{r.verb} {r.resource}/{r.subresource}".rstrip("/") for r in requests}))


async def test_the_service_account_runs_an_istio_canary_with_the_istio_rules(
        release: Release, scenario: Scenario, cluster: LocalCluster, namespace: str,
        tmp_path: Path) -> None:
    # The default install (ClusterRoleBinding) for Istio: the router's VirtualService and
    # DestinationRules are written with the istio rules and nothing more.
    await release.install("meshProvider=istio")
    args = [a for a in await release.controller_args()
            if not a.startswith(("-metrics-server=", "-log-level="))]
    assert "-mesh-provider=istio" in args
    kubeconfig = await release.token_kubeconfig(tmp_path / "sa.kubeconfig")
    offset = audit_size(cluster)
    controller = await scenario.start_controller(*args, kubeconfig=kubeconfig)

    await scenario.set_success_rate("podinfo", 99)
    metric = {"name": "app-success-rate", "templateRef": {"name": "app-success-rate"},
              "thresholdRange": {"min": 90}, "interval": "30s"}
    analysis = {"interval": "2s", "threshold": 2, "stepWeight": 50, "maxWeight": 50,
                "metrics": [metric]}
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"),
                         canary("podinfo", provider="istio", analysis=analysis))
    await scenario.wait_phase("podinfo", "Initialized", within=60)
    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=120)

    assert status["phase"] == "Succeeded", (status, controller.output()[-4000:])
    virtual_service = await scenario.get("virtualservices.networking.istio.io", "podinfo")
    assert virtual_service is not None
    weights = [r["weight"] for r in virtual_service["spec"]["http"][0]["route"]]
    assert weights == [100, 0]
    requests = requests_since(cluster, offset, release.service_account)
    refused = sorted({f"{r.verb} {r.resource}/{r.subresource}".rstrip("/")
                      for r in requests if r.code == 403})
    assert refused == [], f"the chart's RBAC refused the controller: {refused}"
    written = {f"{r.verb} {r.resource}" for r in requests if r.code < 300}
    assert {"create virtualservices", "update virtualservices",
            "create destinationrules"} <= written, written


async def test_the_service_account_runs_a_linkerd_canary_with_the_smi_rules(
        release: Release, scenario: Scenario, cluster: LocalCluster, namespace: str,
        tmp_path: Path) -> None:
    # meshProvider=linkerd: the TrafficSplit (v1alpha1) is written with the smi rules only.
    await release.install("meshProvider=linkerd")
    args = [a for a in await release.controller_args()
            if not a.startswith(("-metrics-server=", "-log-level="))]
    assert "-mesh-provider=linkerd" in args
    kubeconfig = await release.token_kubeconfig(tmp_path / "sa.kubeconfig")
    offset = audit_size(cluster)
    controller = await scenario.start_controller(*args, kubeconfig=kubeconfig)

    await scenario.set_success_rate("podinfo", 99)
    metric = {"name": "app-success-rate", "templateRef": {"name": "app-success-rate"},
              "thresholdRange": {"min": 90}, "interval": "30s"}
    analysis = {"interval": "2s", "threshold": 2, "stepWeight": 50, "maxWeight": 50,
                "metrics": [metric]}
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"),
                         canary("podinfo", provider="linkerd", analysis=analysis))
    await scenario.wait_phase("podinfo", "Initialized", within=60)
    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=120)

    assert status["phase"] == "Succeeded", (status, controller.output()[-4000:])
    split = await scenario.get("trafficsplits.v1alpha1.split.smi-spec.io", "podinfo")
    assert split is not None
    assert split["spec"]["backends"] == [{"service": "podinfo-canary", "weight": "0"},
                                         {"service": "podinfo-primary", "weight": "100"}]
    requests = requests_since(cluster, offset, release.service_account)
    refused = sorted({f"{r.verb} {r.resource}/{r.subresource}".rstrip("/")
                      for r in requests if r.code == 403})
    assert refused == [], f"the chart's RBAC refused the controller: {refused}"
    written = {f"{r.verb} {r.resource}" for r in requests if r.code < 300}
    assert {"create trafficsplits", "update trafficsplits"} <= written, written


async def test_the_service_account_runs_a_gatewayapi_canary_with_the_gatewayapi_rules(
        release: Release, scenario: Scenario, cluster: LocalCluster, namespace: str,
        tmp_path: Path) -> None:
    # meshProvider=gatewayapi:v1: the HTTPRoute is written with the gatewayapi rules only.
    await release.install("meshProvider=gatewayapi:v1")
    args = [a for a in await release.controller_args()
            if not a.startswith(("-metrics-server=", "-log-level="))]
    assert "-mesh-provider=gatewayapi:v1" in args
    kubeconfig = await release.token_kubeconfig(tmp_path / "sa.kubeconfig")
    offset = audit_size(cluster)
    controller = await scenario.start_controller(*args, kubeconfig=kubeconfig)

    await scenario.set_success_rate("podinfo", 99)
    metric = {"name": "app-success-rate", "templateRef": {"name": "app-success-rate"},
              "thresholdRange": {"min": 90}, "interval": "30s"}
    analysis = {"interval": "2s", "threshold": 2, "stepWeight": 50, "maxWeight": 50,
                "metrics": [metric]}
    service = {"port": 9898, "gatewayRefs": [{"name": "gateway"}]}
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"),
                         canary("podinfo", provider="gatewayapi:v1", analysis=analysis,
                                service=service))
    await scenario.wait_phase("podinfo", "Initialized", within=60)
    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=120)

    assert status["phase"] == "Succeeded", (status, controller.output()[-4000:])
    route = await scenario.get("httproutes.v1.gateway.networking.k8s.io", "podinfo")
    assert route is not None
    weights = [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]]
    assert weights == [100, 0]
    requests = requests_since(cluster, offset, release.service_account)
    refused = sorted({f"{r.verb} {r.resource}/{r.subresource}".rstrip("/")
                      for r in requests if r.code == 403})
    assert refused == [], f"the chart's RBAC refused the controller: {refused}"
    written = {f"{r.verb} {r.resource}" for r in requests if r.code < 300}
    assert {"create httproutes", "update httproutes"} <= written, written


async def test_the_service_account_runs_a_kuma_canary_in_one_namespace_with_the_kuma_rules(
        release: Release, scenario: Scenario, cluster: LocalCluster, namespace: str,
        tmp_path: Path) -> None:
    # meshProvider=kuma watching one namespace: the cluster-scoped TrafficRoute is written
    # through the chart's cluster-wide binding of the kuma rules, everything else through the
    # RoleBinding in the namespace.
    await release.install("meshProvider=kuma", f"namespace={namespace}")
    args = [a for a in await release.controller_args()
            if not a.startswith(("-metrics-server=", "-log-level=", "-namespace="))]
    assert "-mesh-provider=kuma" in args
    kubeconfig = await release.token_kubeconfig(tmp_path / "sa.kubeconfig")
    offset = audit_size(cluster)
    controller = await scenario.start_controller(*args, kubeconfig=kubeconfig)

    await scenario.set_success_rate("podinfo", 99)
    metric = {"name": "app-success-rate", "templateRef": {"name": "app-success-rate"},
              "thresholdRange": {"min": 90}, "interval": "30s"}
    analysis = {"interval": "2s", "threshold": 2, "stepWeight": 50, "maxWeight": 50,
                "metrics": [metric]}
    route = f"kuma-{secrets.token_hex(3)}"  # cluster-wide name: unique to this test
    try:
        await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"),
                             canary("podinfo", provider="kuma", analysis=analysis,
                                    service={"port": 9898, "name": route}))
        await scenario.wait_phase("podinfo", "Initialized", within=60)
        await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
        status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=120)

        assert status["phase"] == "Succeeded", (status, controller.output()[-4000:])
        stored = await get(cluster, "trafficroutes.v1alpha1.kuma.io", route)
        assert stored is not None
        assert [s["weight"] for s in stored["spec"]["conf"]["split"]] == [100, 0]
    finally:
        await cluster.akubectl("delete", "trafficroutes.kuma.io", route, "--ignore-not-found",
                               check=False)
    requests = requests_since(cluster, offset, release.service_account)
    refused = sorted({f"{r.verb} {r.resource}/{r.subresource}".rstrip("/")
                      for r in requests if r.code == 403})
    assert refused == [], f"the chart's RBAC refused the controller: {refused}"
    written = {f"{r.verb} {r.resource}" for r in requests if r.code < 300}
    assert {"create trafficroutes", "update trafficroutes"} <= written, written


async def test_what_the_chart_does_not_grant_is_denied(
        release: Release, cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    await release.install("meshProvider=kubernetes")
    granted = [
        ("list", "deployments", "--all-namespaces"),
        ("update", "deployments", "-n", "default"),
        ("patch", "canaries.flagger.app", "--subresource=status", "-n", "default"),
        ("patch", "metrictemplates.flagger.app", "--subresource=status", "-n", "default"),
        ("patch", "alertproviders.flagger.app", "--subresource=status", "-n", "default"),
        ("update", "canaries.flagger.app", "--subresource=finalizers", "-n", "default"),
        ("create", "events", "-n", "default"),
        ("watch", "secrets", "--all-namespaces"),
    ]
    denied = [
        ("delete", "nodes"),
        ("get", "nodes"),
        ("delete", "deployments", "-n", "default"),
        ("delete", "services", "-n", "default"),
        ("delete", "canaries.flagger.app", "-n", "default"),
        ("create", "metrictemplates.flagger.app", "-n", "default"),
        ("get", "pods", "-n", "default"),
        ("create", "pods", "-n", "default"),
        ("create", "virtualservices.networking.istio.io", "-n", "default"),
        ("create", "leases.coordination.k8s.io", "-n", namespace),  # no leader election
        ("create", "clusterrolebindings"),
        ("impersonate", "users"),
    ]
    for check in granted:
        assert await release.can_i(*check), check
    for check in denied:
        assert not await release.can_i(*check), check

    # A real request with the ServiceAccount's token: 403 from the API server.
    kubeconfig = await release.token_kubeconfig(tmp_path / "sa.kubeconfig")
    for request in (["get", "nodes"],
                    ["delete", "deployment", "nothing", "-n", namespace],
                    ["get", "pods", "-n", namespace]):
        result = await cluster.akubectl(f"--kubeconfig={kubeconfig}", *request, check=False)
        assert result.returncode != 0, request
        assert "Forbidden" in result.stderr, result.stderr
        assert release.service_account in result.stderr
    allowed = await cluster.akubectl(f"--kubeconfig={kubeconfig}", "get", "canaries",
                                     "--all-namespaces", check=False)
    assert allowed.returncode == 0, allowed.stderr


async def test_upgrade_changes_args_and_rbac_and_uninstall_keeps_the_crds(
        release: Release, cluster: LocalCluster, namespace: str) -> None:
    # The optional objects go through the real API too, with the upstream monitoring CRDs.
    await release.install("meshProvider=kubernetes", "serviceMonitor.enabled=true",
                          "podMonitor.enabled=true", "podDisruptionBudget.enabled=true",
                          "grafanaDashboard.enabled=true")
    for kind, name in (("servicemonitor", release.fullname), ("podmonitor", release.fullname),
                       ("poddisruptionbudget", release.fullname),
                       ("configmap", f"{release.fullname}-dashboard")):
        assert await get(cluster, kind, name, namespace=namespace), kind
    before = await release.controller_args()
    assert "-log-level=info" in before
    role = await get(cluster, "clusterrole", release.fullname)
    assert role is not None
    assert not any("networking.istio.io" in r.get("apiGroups", []) for r in role["rules"])

    await release.install("meshProvider=istio", "logLevel=debug", "clusterName=prod",
                          command="upgrade")
    after = await release.controller_args()
    assert "-log-level=debug" in after
    assert "-cluster-name=prod" in after
    assert "-mesh-provider=istio" in after
    assert await release.can_i("create", "virtualservices.networking.istio.io", "-n", "default")
    # Values not given again are back to their defaults (helm upgrade without --reuse-values).
    assert await get(cluster, "servicemonitor", release.fullname, namespace=namespace) is None

    await scenario_objects(cluster, namespace)
    await release.uninstall()
    assert await get(cluster, "deployment", release.fullname, namespace=namespace) is None
    assert await get(cluster, "clusterrole", release.fullname) is None
    assert await get(cluster, "clusterrolebinding", release.fullname) is None
    for crd in CRDS:
        kept = await get(cluster, "crd", crd)
        assert kept is not None, crd
        assert kept["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # ... and with them the Canaries of every team.
    assert await get(cluster, "canary", "podinfo", namespace=namespace) is not None


async def scenario_objects(cluster: LocalCluster, namespace: str) -> None:
    body = {"apiVersion": "v1", "kind": "List", "items": [
        deployment("podinfo", image="podinfo:6.0.0"), canary("podinfo")]}
    await cluster.akubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))


async def test_the_schema_refuses_a_typo_before_anything_is_installed(
        release: Release, cluster: LocalCluster, namespace: str) -> None:
    result = await release.helm("install", release.name, str(CHART), "--namespace", namespace,
                                "--set", "meshprovider=istio", check=False)
    assert result.returncode != 0
    assert "additional properties 'meshprovider' not allowed" in result.stderr
    listed = await release.helm("list", "--namespace", namespace, "--short")
    assert listed.stdout.strip() == ""


async def test_the_service_account_runs_an_apisix_canary_with_the_apisix_rules(
        release: Release, scenario: Scenario, cluster: LocalCluster, namespace: str,
        tmp_path: Path) -> None:
    # meshProvider=apisix: the user's ApisixRoute is read and the canary route written with the
    # apisix rules only.
    await release.install("meshProvider=apisix", f"namespace={namespace}")
    args = [a for a in await release.controller_args()
            if not a.startswith(("-metrics-server=", "-log-level=", "-namespace="))]
    assert "-mesh-provider=apisix" in args
    kubeconfig = await release.token_kubeconfig(tmp_path / "sa.kubeconfig")
    offset = audit_size(cluster)
    controller = await scenario.start_controller(*args, kubeconfig=kubeconfig)

    await scenario.set_success_rate("podinfo", 99)
    metric = {"name": "app-success-rate", "templateRef": {"name": "app-success-rate"},
              "thresholdRange": {"min": 90}, "interval": "30s"}
    analysis = {"interval": "2s", "threshold": 2, "stepWeight": 50, "maxWeight": 50,
                "metrics": [metric]}
    route = {"apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute",
             "metadata": {"name": "podinfo"},
             "spec": {"http": [{"name": "main", "match": {"paths": ["/*"]},
                                "backends": [{"serviceName": "podinfo", "servicePort": 9898}]}]}}
    await scenario.apply(route, deployment("podinfo", image="podinfo:6.0.0"),
                         canary("podinfo", provider="apisix", analysis=analysis,
                                routeRef={"apiVersion": "apisix.apache.org/v2",
                                          "kind": "ApisixRoute", "name": "podinfo"}))
    await scenario.wait_phase("podinfo", "Initialized", within=60)
    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=120)

    assert status["phase"] == "Succeeded", (status, controller.output()[-4000:])
    stored = await get(cluster, "apisixroutes.v2.apisix.apache.org", "podinfo-podinfo-canary",
                       namespace=namespace)
    assert stored is not None
    assert [b["weight"] for b in stored["spec"]["http"][0]["backends"]] == [100, 0]
    requests = requests_since(cluster, offset, release.service_account)
    refused = sorted({f"{r.verb} {r.resource}/{r.subresource}".rstrip("/")
                      for r in requests if r.code == 403})
    assert refused == [], f"the chart's RBAC refused the controller: {refused}"
    written = {f"{r.verb} {r.resource}" for r in requests if r.code < 300}
    assert {"create apisixroutes", "update apisixroutes"} <= written, written


async def test_the_service_account_runs_a_gloo_canary_with_the_gloo_rules(
        release: Release, scenario: Scenario, cluster: LocalCluster, namespace: str,
        tmp_path: Path) -> None:
    # meshProvider=gloo: the config Upstream of spec.upstreamRef is read, the two generated
    # Upstreams and the RouteTable written with the gloo rules only.
    await release.install("meshProvider=gloo", f"namespace={namespace}")
    args = [a for a in await release.controller_args()
            if not a.startswith(("-metrics-server=", "-log-level=", "-namespace="))]
    assert "-mesh-provider=gloo" in args
    kubeconfig = await release.token_kubeconfig(tmp_path / "sa.kubeconfig")
    offset = audit_size(cluster)
    controller = await scenario.start_controller(*args, kubeconfig=kubeconfig)

    await scenario.set_success_rate("podinfo", 99)
    metric = {"name": "app-success-rate", "templateRef": {"name": "app-success-rate"},
              "thresholdRange": {"min": 90}, "interval": "30s"}
    analysis = {"interval": "2s", "threshold": 2, "stepWeight": 50, "maxWeight": 50,
                "metrics": [metric]}
    config = {"apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
              "metadata": {"name": "config-upstream"},
              "spec": {"connectionConfig": {"maxRequestsPerConnection": 51},
                       "kube": {"serviceName": "placeholder", "serviceNamespace": namespace,
                                "servicePort": 9898}}}
    await scenario.apply(config, deployment("podinfo", image="podinfo:6.0.0"),
                         canary("podinfo", provider="gloo", analysis=analysis,
                                upstreamRef={"apiVersion": "gloo.solo.io/v1",
                                             "kind": "Upstream", "name": "config-upstream"}))
    await scenario.wait_phase("podinfo", "Initialized", within=60)
    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=120)

    assert status["phase"] == "Succeeded", (status, controller.output()[-4000:])
    table = await get(cluster, "routetables.v1.gateway.solo.io", "podinfo", namespace=namespace)
    assert table is not None
    destinations = table["spec"]["routes"][0]["routeAction"]["multi"]["destinations"]
    assert [d.get("weight", 0) for d in destinations] == [100, 0]
    upstream = await get(cluster, "upstreams.v1.gloo.solo.io",
                         f"{namespace}-podinfo-canaryupstream-9898", namespace=namespace)
    assert upstream is not None
    assert upstream["spec"]["connectionConfig"] == {"maxRequestsPerConnection": 51}
    requests = requests_since(cluster, offset, release.service_account)
    refused = sorted({f"{r.verb} {r.resource}/{r.subresource}".rstrip("/")
                      for r in requests if r.code == 403})
    assert refused == [], f"the chart's RBAC refused the controller: {refused}"
    written = {f"{r.verb} {r.resource}" for r in requests if r.code < 300}
    assert {"create upstreams", "create routetables", "update routetables"} <= written, written


async def test_the_service_account_runs_an_nginx_canary_with_the_nginx_rules(
        release: Release, scenario: Scenario, cluster: LocalCluster, namespace: str,
        tmp_path: Path) -> None:
    # meshProvider=nginx with a custom annotations prefix: the user's Ingress is read and the
    # canary Ingress written with the nginx rules only, its annotations under the chart's prefix.
    prefix = "custom.ingress.kubernetes.io"
    await release.install("meshProvider=nginx", f"namespace={namespace}",
                          f"ingressAnnotationsPrefix={prefix}")
    args = [a for a in await release.controller_args()
            if not a.startswith(("-metrics-server=", "-log-level=", "-namespace="))]
    assert "-mesh-provider=nginx" in args
    assert f"-ingress-annotations-prefix={prefix}" in args
    kubeconfig = await release.token_kubeconfig(tmp_path / "sa.kubeconfig")
    offset = audit_size(cluster)
    controller = await scenario.start_controller(*args, kubeconfig=kubeconfig)

    await scenario.set_success_rate("podinfo", 99)
    metric = {"name": "app-success-rate", "templateRef": {"name": "app-success-rate"},
              "thresholdRange": {"min": 90}, "interval": "30s"}
    analysis = {"interval": "2s", "threshold": 2, "stepWeight": 50, "maxWeight": 50,
                "metrics": [metric]}
    ingress = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
               "metadata": {"name": "podinfo"},
               "spec": {"ingressClassName": "nginx", "rules": [{"host": "app.example.com",
                        "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
                            "service": {"name": "podinfo", "port": {"number": 9898}}}}]}}]}}
    await scenario.apply(ingress, deployment("podinfo", image="podinfo:6.0.0"),
                         canary("podinfo", provider="nginx", analysis=analysis,
                                ingressRef={"apiVersion": "networking.k8s.io/v1",
                                            "kind": "Ingress", "name": "podinfo"}))
    await scenario.wait_phase("podinfo", "Initialized", within=60)
    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=120)

    assert status["phase"] == "Succeeded", (status, controller.output()[-4000:])
    stored = await get(cluster, "ingresses.v1.networking.k8s.io", "podinfo-canary",
                       namespace=namespace)
    assert stored is not None
    annotations = stored["metadata"]["annotations"]
    assert (annotations[f"{prefix}/canary"], annotations[f"{prefix}/canary-weight"]) == (
        "true", "0")
    requests = requests_since(cluster, offset, release.service_account)
    refused = sorted({f"{r.verb} {r.resource}/{r.subresource}".rstrip("/")
                      for r in requests if r.code == 403})
    assert refused == [], f"the chart's RBAC refused the controller: {refused}"
    written = {f"{r.verb} {r.resource}" for r in requests if r.code < 300}
    assert {"create ingresses", "update ingresses"} <= written, written


async def test_the_service_account_runs_a_traefik_canary_with_the_traefik_rules(
        release: Release, scenario: Scenario, cluster: LocalCluster, namespace: str,
        tmp_path: Path) -> None:
    # meshProvider=traefik: the TraefikService is written with the traefik rules only.
    await release.install("meshProvider=traefik")
    args = [a for a in await release.controller_args()
            if not a.startswith(("-metrics-server=", "-log-level="))]
    assert "-mesh-provider=traefik" in args
    kubeconfig = await release.token_kubeconfig(tmp_path / "sa.kubeconfig")
    offset = audit_size(cluster)
    controller = await scenario.start_controller(*args, kubeconfig=kubeconfig)

    await scenario.set_success_rate("podinfo", 99)
    metric = {"name": "app-success-rate", "templateRef": {"name": "app-success-rate"},
              "thresholdRange": {"min": 90}, "interval": "30s"}
    analysis = {"interval": "2s", "threshold": 2, "stepWeight": 50, "maxWeight": 50,
                "metrics": [metric]}
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"),
                         canary("podinfo", provider="traefik", analysis=analysis))
    await scenario.wait_phase("podinfo", "Initialized", within=60)
    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=120)

    assert status["phase"] == "Succeeded", (status, controller.output()[-4000:])
    stored = await scenario.get("traefikservices.v1alpha1.traefik.io", "podinfo")
    assert stored is not None
    assert [(s["name"], s["weight"]) for s in stored["spec"]["weighted"]["services"]] == [
        ("podinfo-primary", 100)]
    requests = requests_since(cluster, offset, release.service_account)
    refused = sorted({f"{r.verb} {r.resource}/{r.subresource}".rstrip("/")
                      for r in requests if r.code == 403})
    assert refused == [], f"the chart's RBAC refused the controller: {refused}"
    written = {f"{r.verb} {r.resource}" for r in requests if r.code < 300}
    assert {"create traefikservices", "update traefikservices"} <= written, written


async def test_the_service_account_runs_a_contour_canary_with_the_contour_rules(
        release: Release, scenario: Scenario, cluster: LocalCluster, namespace: str,
        tmp_path: Path) -> None:
    # meshProvider=contour with ingressClass: the HTTPProxy is written with the contour rules
    # only, with the chart's ingress class as its ingressClassName.
    await release.install("meshProvider=contour", "ingressClass=contour")
    args = [a for a in await release.controller_args()
            if not a.startswith(("-metrics-server=", "-log-level="))]
    assert "-mesh-provider=contour" in args
    assert "-ingress-class=contour" in args
    kubeconfig = await release.token_kubeconfig(tmp_path / "sa.kubeconfig")
    offset = audit_size(cluster)
    controller = await scenario.start_controller(*args, kubeconfig=kubeconfig)

    await scenario.set_success_rate("podinfo", 99)
    metric = {"name": "app-success-rate", "templateRef": {"name": "app-success-rate"},
              "thresholdRange": {"min": 90}, "interval": "30s"}
    analysis = {"interval": "2s", "threshold": 2, "stepWeight": 50, "maxWeight": 50,
                "metrics": [metric]}
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"),
                         canary("podinfo", provider="contour", analysis=analysis))
    await scenario.wait_phase("podinfo", "Initialized", within=60)
    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=120)

    assert status["phase"] == "Succeeded", (status, controller.output()[-4000:])
    stored = await scenario.get("httpproxies.v1.projectcontour.io", "podinfo")
    assert stored is not None
    assert stored["spec"]["ingressClassName"] == "contour"
    assert [(s["name"], s.get("weight")) for s in stored["spec"]["routes"][0]["services"]] == [
        ("podinfo-primary", 100), ("podinfo-canary", None)]
    requests = requests_since(cluster, offset, release.service_account)
    refused = sorted({f"{r.verb} {r.resource}/{r.subresource}".rstrip("/")
                      for r in requests if r.code == 403})
    assert refused == [], f"the chart's RBAC refused the controller: {refused}"
    written = {f"{r.verb} {r.resource}" for r in requests if r.code < 300}
    assert {"create httpproxies", "update httpproxies"} <= written, written


async def test_the_service_account_runs_a_skipper_canary_with_the_skipper_rules(
        release: Release, scenario: Scenario, cluster: LocalCluster, namespace: str,
        tmp_path: Path) -> None:
    # meshProvider=skipper with revertOnDeletion: the user's Ingress is read, the canary Ingress
    # written with the skipper rules only, and deleted when the Canary is (the one delete verb).
    await release.install("meshProvider=skipper")
    args = [a for a in await release.controller_args()
            if not a.startswith(("-metrics-server=", "-log-level="))]
    assert "-mesh-provider=skipper" in args
    kubeconfig = await release.token_kubeconfig(tmp_path / "sa.kubeconfig")
    offset = audit_size(cluster)
    controller = await scenario.start_controller(*args, kubeconfig=kubeconfig)

    await scenario.set_success_rate("podinfo", 99)
    metric = {"name": "app-success-rate", "templateRef": {"name": "app-success-rate"},
              "thresholdRange": {"min": 90}, "interval": "30s"}
    analysis = {"interval": "2s", "threshold": 2, "stepWeight": 50, "maxWeight": 50,
                "metrics": [metric]}
    ingress = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
               "metadata": {"name": "podinfo"},
               "spec": {"ingressClassName": "skipper", "rules": [{"host": "app.example.com",
                        "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
                            "service": {"name": "podinfo", "port": {"number": 9898}}}}]}}]}}
    await scenario.apply(ingress, deployment("podinfo", image="podinfo:6.0.0"),
                         canary("podinfo", provider="skipper", analysis=analysis,
                                revertOnDeletion=True,
                                ingressRef={"apiVersion": "networking.k8s.io/v1",
                                            "kind": "Ingress", "name": "podinfo"}))
    await scenario.wait_phase("podinfo", "Initialized", within=60)
    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=120)

    assert status["phase"] == "Succeeded", (status, controller.output()[-4000:])
    kind = "ingresses.v1.networking.k8s.io"
    stored = await get(cluster, kind, "podinfo-canary", namespace=namespace)
    assert stored is not None
    assert stored["metadata"]["annotations"]["zalando.org/skipper-predicate"] == "False()"
    await scenario.kubectl("delete", "canary", "podinfo", "--timeout=60s")
    assert await get(cluster, kind, "podinfo-canary", namespace=namespace) is None
    requests = requests_since(cluster, offset, release.service_account)
    refused = sorted({f"{r.verb} {r.resource}/{r.subresource}".rstrip("/")
                      for r in requests if r.code == 403})
    assert refused == [], f"the chart's RBAC refused the controller: {refused}"
    written = {f"{r.verb} {r.resource}" for r in requests if r.code < 300}
    assert {"create ingresses", "update ingresses", "delete ingresses"} <= written, written


async def test_the_service_account_runs_a_knative_canary_with_the_knative_rules(
        release: Release, scenario: Scenario, cluster: LocalCluster, namespace: str,
        tmp_path: Path) -> None:
    # meshProvider=knative: the target is a Knative Service, whose spec.traffic and annotation
    # are written and whose Revisions are read with the knative rules only. The test-side
    # stand-in plays Knative Serving (Revisions, the Service's status).
    from e2e.knative_standin import KnativeStandIn
    from flaggerpy import kube

    await release.install("meshProvider=knative")
    args = [a for a in await release.controller_args()
            if not a.startswith(("-metrics-server=", "-log-level="))]
    assert "-mesh-provider=knative" in args
    kubeconfig = await release.token_kubeconfig(tmp_path / "sa.kubeconfig")
    offset = audit_size(cluster)
    client = await kube.KubeClient.connect(kubeconfig=cluster.kubeconfig,
                                           user_agent="knative-standin")
    try:
        async with KnativeStandIn(client, namespaces=[namespace]):
            controller = await scenario.start_controller(*args, kubeconfig=kubeconfig)
            await scenario.set_success_rate("podinfo", 99)
            metric = {"name": "app-success-rate", "templateRef": {"name": "app-success-rate"},
                      "thresholdRange": {"min": 90}, "interval": "30s"}
            analysis = {"interval": "2s", "threshold": 2, "stepWeight": 50, "maxWeight": 50,
                        "metrics": [metric]}
            service = {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                       "metadata": {"name": "podinfo"},
                       "spec": {"template": {"spec": {"containers": [
                           {"name": "podinfo", "image": "podinfo:6.0.0"}]}}}}
            await scenario.apply(service, canary(
                "podinfo", provider="knative", analysis=analysis,
                targetRef={"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                           "name": "podinfo"}))
            await scenario.wait_phase("podinfo", "Initialized", within=60)
            await scenario.kubectl(
                "patch", "services.serving.knative.dev", "podinfo", "--type=merge", "-p",
                json.dumps({"spec": {"template": {"spec": {"containers": [
                    {"name": "podinfo", "image": "podinfo:6.0.1"}]}}}}))
            status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=120)
    finally:
        await client.aclose()

    assert status["phase"] == "Succeeded", (status, controller.output()[-4000:])
    stored = await get(cluster, "services.v1.serving.knative.dev", "podinfo",
                       namespace=namespace)
    assert stored is not None
    assert stored["metadata"]["annotations"]["flagger.app/primary-revision"] == "podinfo-00002"
    assert stored["spec"]["traffic"] == [{"latestRevision": True, "percent": 0},
                                         {"revisionName": "podinfo-00002", "percent": 100}]
    requests = requests_since(cluster, offset, release.service_account)
    refused = sorted({f"{r.verb} {r.resource}/{r.subresource}".rstrip("/")
                      for r in requests if r.code == 403})
    assert refused == [], f"the chart's RBAC refused the controller: {refused}"
    written = {f"{r.verb} {r.resource}" for r in requests if r.code < 300}
    assert "update services" in written, written
    assert not {"create services", "create deployments"} & written, written
