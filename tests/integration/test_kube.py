"""The kube client against the real API server: verbs, patches, SSA, errors.

The object store's writes on top of it are tested in test_store.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from e2e.cluster.localcluster import LocalCluster
from flaggerpy import kube

pytestmark = pytest.mark.integration

CRDS = Path(__file__).resolve().parents[2] / "charts" / "flaggerpy" / "crds"


@pytest.fixture(scope="module")
def flagger_crds(cluster: LocalCluster) -> None:
    """Our own Canary CRD (the upstream copy is not installed by the cluster fixture)."""
    cluster.install_crds(sorted(CRDS.glob("*.yaml")))


@pytest.fixture
async def client(api_client: ApiClient) -> kube.KubeClient:
    # A user agent of its own, so the audit log tells this test's requests apart.
    return kube.KubeClient(api_client, user_agent=f"flaggerpy-test/{secrets.token_hex(4)}")


def configmap(namespace: str, name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace}, "data": data}


def deployment(namespace: str, name: str, *, replicas: int = 1) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": name, "image": "podinfo:6.0.0"}]}},
        },
    }


async def test_crud_round_trip(client: kube.KubeClient, namespace: str) -> None:
    created = await client.create(kube.CONFIGMAPS, configmap(namespace, "c", a="1"))
    assert created["kind"] == "ConfigMap"
    assert created["data"] == {"a": "1"}

    got = await client.get(kube.CONFIGMAPS, "c", namespace=namespace)
    assert got["metadata"]["uid"] == created["metadata"]["uid"]

    got["data"]["b"] = "2"
    replaced = await client.replace(kube.CONFIGMAPS, got)
    assert replaced["data"] == {"a": "1", "b": "2"}

    with pytest.raises(kube.ConflictError):
        await client.replace(kube.CONFIGMAPS, got)  # stale resourceVersion
    with pytest.raises(kube.AlreadyExistsError):
        await client.create(kube.CONFIGMAPS, configmap(namespace, "c"))

    listed = await client.list(kube.CONFIGMAPS, namespace=namespace)
    assert [o["metadata"]["name"] for o in listed.items if o["metadata"]["name"] == "c"] == ["c"]
    assert all(o["kind"] == "ConfigMap" for o in listed.items)
    assert listed.resource_version

    await client.delete(kube.CONFIGMAPS, "c", namespace=namespace)
    with pytest.raises(kube.NotFoundError):
        await client.get(kube.CONFIGMAPS, "c", namespace=namespace)
    with kube.ignore_not_found():
        await client.delete(kube.CONFIGMAPS, "c", namespace=namespace)
    missing = await kube.ignore_not_found(client.get(kube.CONFIGMAPS, "c", namespace=namespace))
    assert missing is None


async def test_list_follows_pages(client: kube.KubeClient, namespace: str) -> None:
    for index in range(7):
        await client.create(kube.CONFIGMAPS, configmap(namespace, f"p{index}"))
    listed = await client.list(kube.CONFIGMAPS, namespace=namespace, page_size=2,
                               label_selector=None)
    names = sorted(o["metadata"]["name"] for o in listed.items)
    assert [n for n in names if n.startswith("p")] == [f"p{i}" for i in range(7)]
    one = await client.list(kube.CONFIGMAPS, namespace=namespace, limit=1)
    assert len(one.items) == 1


async def test_merge_patch_sets_and_removes_keys(client: kube.KubeClient, namespace: str) -> None:
    await client.create(kube.CONFIGMAPS, configmap(namespace, "m", a="1", b="2"))
    patched = await client.patch(kube.CONFIGMAPS, "m", {"data": {"a": None, "c": "3"}},
                                 namespace=namespace)
    assert patched["data"] == {"b": "2", "c": "3"}


@pytest.mark.usefixtures("flagger_crds")
async def test_patch_status_writes_only_status(client: kube.KubeClient, namespace: str) -> None:
    canary = {
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": namespace},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "service": {"port": 9898},
                 "analysis": {"interval": "1m", "threshold": 5, "stepWeight": 10,
                              "maxWeight": 50}},
    }
    created = await client.create(kube.CANARIES, canary)
    patched = await client.patch_status(
        kube.CANARIES, "podinfo", {"status": {"phase": "Initializing", "canaryWeight": 0}},
        namespace=namespace)
    assert patched["status"]["phase"] == "Initializing"
    assert patched["metadata"]["generation"] == created["metadata"]["generation"]
    # The main resource ignores status: the status subresource is the only way in.
    ignored = await client.patch(kube.CANARIES, "podinfo", {"status": {"phase": "Failed"}},
                                 namespace=namespace)
    assert ignored["status"]["phase"] == "Initializing"


async def test_server_side_apply(
        client: kube.KubeClient, cluster: LocalCluster, namespace: str) -> None:
    applied = await client.apply(kube.CONFIGMAPS, configmap(namespace, "s", a="1", b="2"))
    assert applied["data"] == {"a": "1", "b": "2"}
    managers = {m["manager"]: m["operation"] for m in applied["metadata"]["managedFields"]}
    assert managers == {"flaggerpy": "Apply"}

    # Dropping a field we alone manage removes it.
    applied = await client.apply(kube.CONFIGMAPS, configmap(namespace, "s", a="1"))
    assert applied["data"] == {"a": "1"}

    # A field another manager owns is not taken without force.
    await cluster.akubectl("patch", "configmap", "s", "-n", namespace, "--type=merge",
                           "--field-manager=someone-else", "-p", '{"data":{"a":"theirs"}}')
    with pytest.raises(kube.ConflictError):
        await client.apply(kube.CONFIGMAPS, configmap(namespace, "s", a="ours"))
    forced = await client.apply(kube.CONFIGMAPS, configmap(namespace, "s", a="ours"), force=True)
    assert forced["data"] == {"a": "ours"}


async def test_invalid_object_is_unprocessable_with_its_field(
        client: kube.KubeClient, namespace: str) -> None:
    with pytest.raises(kube.UnprocessableError) as info:
        await client.create(kube.DEPLOYMENTS, deployment(namespace, "bad", replicas=-1))
    assert "spec.replicas" in info.value.fields
    assert info.value.status == 422
    assert info.value.reason == "Invalid"
    assert info.value.__cause__ is not None


async def test_delete_with_propagation_policy(client: kube.KubeClient, namespace: str) -> None:
    await client.create(kube.DEPLOYMENTS, deployment(namespace, "gone"))
    answer = await client.delete(kube.DEPLOYMENTS, "gone", namespace=namespace,
                                 propagation_policy=kube.PropagationPolicy.FOREGROUND)
    # Foreground: the object stays, marked for deletion, until its dependents are gone.
    assert answer.get("metadata", {}).get("deletionTimestamp") or answer.get("kind") == "Status"


async def test_watch_sees_changes(client: kube.KubeClient, namespace: str) -> None:
    listed = await client.list(kube.CONFIGMAPS, namespace=namespace)
    seen: list[tuple[str, str]] = []

    async def consume() -> None:
        events = client.watch(kube.CONFIGMAPS, namespace=namespace,
                              resource_version=listed.resource_version, timeout_seconds=30)
        async with contextlib.aclosing(events):
            async for event in events:
                if event.type is not kube.EventType.BOOKMARK:
                    seen.append((event.type.value, event.object["metadata"]["name"]))
                if len(seen) == 3:
                    return

    task = asyncio.create_task(consume())
    await client.create(kube.CONFIGMAPS, configmap(namespace, "w", a="1"))
    await client.patch(kube.CONFIGMAPS, "w", {"data": {"a": "2"}}, namespace=namespace)
    await client.delete(kube.CONFIGMAPS, "w", namespace=namespace)
    await asyncio.wait_for(task, 30)
    assert seen == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]


async def test_connect_from_kubeconfig(cluster: LocalCluster) -> None:
    async with await kube.KubeClient.connect(kubeconfig=cluster.kubeconfig) as connected:
        version = await connected.version()
        assert version["major"] == "1"
        assert connected.server == cluster.server
