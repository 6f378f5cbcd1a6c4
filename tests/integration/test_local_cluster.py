"""The local control plane is real: scheduling, rollouts, CRD schemas, RBAC, 410s, audit."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from e2e.cluster import audit
from e2e.cluster.localcluster import SHARED_CRDS, UPSTREAM_CRDS_EXCLUDED, LocalCluster
from e2e.cluster.pytest_plugin import eventually

pytestmark = pytest.mark.integration




def deployment(name: str, image: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": name, "image": image}]},
            },
        },
    }


async def test_deployment_becomes_ready_and_rolls_out(
    api_client: k8s.ApiClient, namespace: str
) -> None:
    apps = k8s.AppsV1Api(api_client)
    await apps.create_namespaced_deployment(namespace, deployment("podinfo", "podinfo:6.0.0", 3))

    async def ready() -> bool:
        status = (await apps.read_namespaced_deployment("podinfo", namespace)).status
        return status.ready_replicas == 3

    await eventually(
        ready, what="3 ready replicas (controller-manager, scheduler and kwok at work)"
    )
    pods = await k8s.CoreV1Api(api_client).list_namespaced_pod(
        namespace, label_selector="app=podinfo"
    )
    assert {p.status.phase for p in pods.items} == {"Running"}
    assert all(p.spec.node_name and p.spec.node_name.startswith("kwok-node-") for p in pods.items)

    await apps.patch_namespaced_deployment(
        "podinfo",
        namespace,
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "podinfo", "image": "podinfo:6.0.1"}]}
                }
            }
        },
    )

    async def rolled_out() -> bool:
        sets = (
            await apps.list_namespaced_replica_set(namespace, label_selector="app=podinfo")
        ).items
        images = {rs.spec.template.spec.containers[0].image: rs for rs in sets}
        new, old = images.get("podinfo:6.0.1"), images.get("podinfo:6.0.0")
        return bool(
            new
            and old
            and new.status.ready_replicas == 3
            and old.spec.replicas == 0
            and not old.status.replicas
        )

    await eventually(rolled_out, what="the new ReplicaSet to take over and the old to scale to 0")


def test_every_upstream_crd_installs(cluster: LocalCluster) -> None:
    files = sorted(SHARED_CRDS.glob("*.yaml"))
    assert len(files) >= 10
    crds = json.loads(cluster.kubectl("get", "crds", "-o", "json").stdout)["items"]
    groups = {crd["spec"]["group"] for crd in crds}
    assert {
        "networking.istio.io",
        "gateway.networking.k8s.io",
        "traefik.io",
        "gateway.solo.io",
        "kuma.io",
        "projectcontour.io",
    } <= groups
    for path in files:
        if path.name in UPSTREAM_CRDS_EXCLUDED:
            # Flagger's own CRDs would replace ours in the shared test cluster: prove they apply.
            cluster.kubectl("apply", "--server-side", "--force-conflicts", "--dry-run=server",
                            "-f", str(path))
    established = [
        crd["metadata"]["name"]
        for crd in crds
        if any(
            c["type"] == "Established" and c["status"] == "True"
            for c in crd.get("status", {}).get("conditions", [])
        )
    ]
    assert len(established) == len(crds)
    # The golden corpus's patch: no upstream CRD serves TrafficSplit v1alpha3 (smi:v1alpha3).
    split = next(c for c in crds if c["metadata"]["name"] == "trafficsplits.split.smi-spec.io")
    served = {v["name"] for v in split["spec"]["versions"] if v["served"]}
    assert served == {"v1alpha1", "v1alpha2", "v1alpha3"}


async def test_wrongly_typed_virtual_service_is_rejected(
    api_client: k8s.ApiClient, namespace: str
) -> None:
    custom = k8s.CustomObjectsApi(api_client)
    body = {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "podinfo"},
        "spec": {"hosts": "podinfo", "http": [{"route": [{"destination": {"host": "podinfo"}}]}]},
    }
    with pytest.raises(ApiException) as caught:
        await custom.create_namespaced_custom_object(
            "networking.istio.io", "v1beta1", namespace, "virtualservices", body
        )
    assert caught.value.status == 422
    assert "spec.hosts" in json.loads(caught.value.body)["message"]

    body["spec"]["hosts"] = ["podinfo"]
    created = await custom.create_namespaced_custom_object(
        "networking.istio.io", "v1beta1", namespace, "virtualservices", body
    )
    assert created["spec"]["hosts"] == ["podinfo"]


async def test_rbac_forbids_until_granted(
    cluster: LocalCluster, api_client: k8s.ApiClient, namespace: str
) -> None:
    core = k8s.CoreV1Api(api_client)
    await core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    token = (
        await core.create_namespaced_service_account_token(
            "reader", namespace, {"spec": {"expirationSeconds": 600}}
        )
    ).status.token

    configuration = k8s.Configuration(host=cluster.server)
    configuration.ssl_ca_cert = str(cluster.state_dir / "pki" / "ca.crt")
    configuration.api_key = {"BearerToken": token}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    async with k8s.ApiClient(configuration) as as_reader:
        reader_apps = k8s.AppsV1Api(as_reader)
        with pytest.raises(ApiException) as caught:
            await reader_apps.list_namespaced_deployment(namespace)
        assert caught.value.status == 403
        assert (
            f"system:serviceaccount:{namespace}:reader" in json.loads(caught.value.body)["message"]
        )

        rbac = k8s.RbacAuthorizationV1Api(api_client)
        await rbac.create_namespaced_role(
            namespace,
            {
                "metadata": {"name": "deployment-reader"},
                "rules": [
                    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]}
                ],
            },
        )
        await rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": "reader"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "deployment-reader",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
            },
        )

        async def allowed() -> bool:
            try:
                await reader_apps.list_namespaced_deployment(namespace)
            except ApiException as error:
                if error.status != 403:
                    raise
                return False
            return True

        await eventually(allowed, within=15, what="the RoleBinding to take effect")


async def test_watch_from_before_compaction_is_gone(
    cluster: LocalCluster, api_client: k8s.ApiClient, namespace: str
) -> None:
    # PodTemplates are the resource the cluster serves without a watch cache (see localcluster.py).
    core = k8s.CoreV1Api(api_client)
    template = {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    await core.create_namespaced_pod_template(
        namespace, {"metadata": {"name": "first"}, **template}
    )
    old_version = (await core.list_namespaced_pod_template(namespace)).metadata.resource_version
    for index in range(3):
        await core.create_namespaced_pod_template(
            namespace, {"metadata": {"name": f"later-{index}"}, **template}
        )

    async def watch_first_event() -> dict[str, Any]:
        response = await api_client.call_api(
            f"/api/v1/namespaces/{namespace}/podtemplates",
            "GET",
            query_params=[
                ("watch", "true"),
                ("resourceVersion", old_version),
                ("timeoutSeconds", "5"),
            ],
            _preload_content=False,
            auth_settings=["BearerToken"],
        )
        try:
            event: dict[str, Any] = json.loads(await response.content.readline())
            return event
        finally:
            response.release()

    before = await watch_first_event()
    assert before["type"] == "ADDED"  # the history is still there before compaction

    revision = await asyncio.to_thread(cluster.compact)
    assert revision > int(old_version)
    after = await watch_first_event()
    assert after["type"] == "ERROR"
    assert after["object"]["code"] == 410
    assert after["object"]["reason"] in {"Expired", "Gone"}


async def test_audit_log_counts_one_clients_requests(
    cluster: LocalCluster, api_client: k8s.ApiClient, namespace: str
) -> None:
    agent = f"audit-probe-{secrets.token_hex(4)}"
    api_client.user_agent = agent
    core = k8s.CoreV1Api(api_client)
    since = datetime.now(UTC) - timedelta(seconds=1)
    await core.create_namespaced_config_map(namespace, {"metadata": {"name": "probe"}})
    for _ in range(3):
        await core.read_namespaced_config_map("probe", namespace)
    for _ in range(2):
        await core.list_namespaced_config_map(namespace)
    await core.patch_namespaced_config_map("probe", namespace, {"data": {"a": "b"}})
    until = datetime.now(UTC) + timedelta(seconds=1)

    async def all_logged() -> bool:
        counts = audit.count_requests(cluster.audit_log, user_agent=agent, since=since, until=until)
        return counts.total >= 7

    await eventually(all_logged, within=10, what="the audit log to hold the probe's requests")
    counts = audit.count_requests(cluster.audit_log, user_agent=agent, since=since, until=until)
    assert counts.by_verb == {"create": 1, "get": 3, "list": 2, "patch": 1}
    assert (counts.reads, counts.writes) == (5, 2)
    assert counts.by_resource["get configmaps"] == 3
    # The window excludes what happened before it.
    later = audit.count_requests(cluster.audit_log, user_agent=agent, since=until)
    assert later.total == 0
    # So does the namespace filter, for other namespaces.
    here = audit.count_requests(cluster.audit_log, user_agent=agent, namespace=namespace)
    elsewhere = audit.count_requests(cluster.audit_log, user_agent=agent, namespace="default")
    assert (here.total, elsewhere.total) == (7, 0)


def test_second_cluster_runs_beside_and_down_stops_only_its_own(cluster: LocalCluster) -> None:
    side = LocalCluster(f"side-{os.getpid()}", root=cluster.state_dir.parent)
    first = side.up()
    try:
        assert first.apiserver_port != cluster.state().apiserver_port
        again = side.up()  # idempotent: the running cluster is reused as it is
        assert again.pids == first.pids
        nodes = json.loads(side.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        assert len(nodes) == 2
    finally:
        side.down()
    assert not side.state_dir.exists()
    for pid in first.pids.values():
        cmdline = Path(f"/proc/{pid}/cmdline")
        assert not cmdline.exists() or side.state_dir.name.encode() not in cmdline.read_bytes()
    assert cluster.is_running()
