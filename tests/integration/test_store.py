"""The object store's writes against the real API server: what it writes and what it leaves alone.

Each write is checked in what the API server stored, and every request of the store's client is
counted in the audit log (its user agent is its own): an unchanged object costs no request, a
stale cache costs one conflict and a re-read, never a lost update. When the store serves its own
write back, and when the cache speaks again, is in test_store_overlay.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from e2e.cluster import audit
from e2e.cluster.localcluster import LocalCluster
from e2e.cluster.pytest_plugin import eventually
from flaggerpy import kube
from flaggerpy.kube.objects import merge_owned
from flaggerpy.models import Canary
from flaggerpy.routing import canary_owner
from flaggerpy.runtime import informer as informers
from flaggerpy.runtime.informer import SharedInformerFactory

pytestmark = pytest.mark.integration


@pytest.fixture
def client(counted_client: kube.KubeClient) -> kube.KubeClient:
    """The store's client: a user agent no other client shares, for the audit log."""
    return counted_client


@pytest.fixture
def admin(api_client: ApiClient) -> kube.KubeClient:
    """What the test itself reads and writes with (not counted)."""
    return kube.KubeClient(api_client, user_agent=f"store-test-admin/{secrets.token_hex(4)}")


@pytest.fixture
async def caches(cluster: LocalCluster, namespace: str) -> AsyncIterator[SharedInformerFactory]:
    """Running informers for the test namespace, on a connection of their own (not counted)."""
    watcher = await kube.KubeClient.connect(
        kubeconfig=cluster.kubeconfig, user_agent=f"store-test-informer/{secrets.token_hex(4)}")
    factory = SharedInformerFactory(watcher, namespace=namespace)
    task = asyncio.create_task(factory.start())
    try:
        yield factory
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await watcher.aclose()


class Frozen:
    """A cache stuck at one moment: it always answers ``obj`` (None: "absent")."""

    has_synced = True
    lists_started = 0

    def __init__(self, obj: dict[str, Any] | None) -> None:
        self.obj = obj

    async def wait_synced(self) -> None:
        return None

    def get(self, key: kube.ObjectKey) -> dict[str, Any] | None:
        return self.obj

    def add_handler(self, **handlers: object) -> None:
        return None

    def listed_since(self, lists_started: int) -> bool:
        return False

    def informer(self, resource: kube.Resource) -> Frozen:
        return self


def service(namespace: str, name: str, *, port: int = 80, label: str = "a") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name, "l": label}},
        "spec": {"selector": {"app": name},
                 "ports": [{"name": "http", "port": port, "targetPort": 8080}]},
    }


def configmap(namespace: str, name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace}, "data": data}


def merged(desired: Mapping[str, Any]) -> kube.Build:
    """The build the engine uses for objects it shares with others: the fields of ``desired``
    merged into the live object (server defaults and others' fields stay), else ``desired``."""
    def build(current: dict[str, Any] | None) -> Mapping[str, Any]:
        return desired if current is None else merge_owned(current, desired)
    return build


async def requests_since(
        cluster: LocalCluster, client: kube.KubeClient, since: datetime, namespace: str,
) -> list[audit.AuditRecord]:
    """The client's requests from ``since`` up to a sentinel GET, which is excluded.

    The sentinel is sent after everything measured; once the audit log holds it, it holds every
    earlier request of that client too, so an empty list is a real zero.
    """
    await client.get(kube.NAMESPACES, namespace)

    def mine() -> list[audit.AuditRecord]:
        return [r for r in audit.records(cluster.audit_log)
                if r.user_agent == client.user_agent and r.received >= since]

    def is_sentinel(r: audit.AuditRecord) -> bool:
        return r.verb == "get" and r.resource == "namespaces" and r.name == namespace

    async def sentinel_logged() -> bool:
        return any(is_sentinel(r) for r in mine())

    await eventually(sentinel_logged, within=15, what="the audit log to hold the sentinel")
    records = sorted(mine(), key=lambda r: r.received)
    end = next(i for i, r in enumerate(records) if is_sentinel(r))
    return records[:end]


async def test_apply_writes_only_changes(
        cluster: LocalCluster, namespace: str, client: kube.KubeClient, admin: kube.KubeClient,
) -> None:
    store = kube.ObjectStore(client)  # no caches: every read is a GET
    since = datetime.now(UTC) - timedelta(milliseconds=10)
    desired = service(namespace, "web")
    created = await store.apply(kube.SERVICES, namespace=namespace, name="web",
                                build=merged(desired))
    assert created.result is kube.OperationResult.CREATED
    assert created.obj is not None
    first = await admin.get(kube.SERVICES, "web", namespace=namespace)
    assert first["spec"]["clusterIP"]  # the server filled in defaults we did not send
    assert kube.resource_version(created.obj) == kube.resource_version(first)

    for _ in range(3):
        again = await store.apply(kube.SERVICES, namespace=namespace, name="web",
                                  build=merged(desired))
        assert again.result is kube.OperationResult.UNCHANGED
        assert not again.changed
    same = await admin.get(kube.SERVICES, "web", namespace=namespace)
    assert kube.resource_version(same) == kube.resource_version(first)

    changed = service(namespace, "web", port=81)
    updated = await store.apply(kube.SERVICES, namespace=namespace, name="web",
                                build=merged(changed))
    assert updated.result is kube.OperationResult.UPDATED
    after = await admin.get(kube.SERVICES, "web", namespace=namespace)
    assert after["spec"]["ports"][0]["port"] == 81
    assert after["spec"]["clusterIP"] == first["spec"]["clusterIP"]

    def relabelled(current: dict[str, Any] | None) -> Mapping[str, Any]:
        obj = dict(merged(changed)(current) or {})
        obj["metadata"] = {**obj["metadata"],
                           "labels": {**obj["metadata"]["labels"], "l": "b"}}
        return obj

    for expected in (kube.OperationResult.UPDATED, kube.OperationResult.UNCHANGED):
        result = await store.apply(kube.SERVICES, namespace=namespace, name="web",
                                   build=relabelled)
        assert result.result is expected
    assert (await admin.get(kube.SERVICES, "web", namespace=namespace))["metadata"]["labels"][
        "l"] == "b"

    writes = [r.verb for r in await requests_since(cluster, client, since, namespace)
              if r.verb in ("create", "update", "patch")]
    assert writes == ["create", "update", "update"]


async def test_an_unchanged_object_costs_no_request(
        cluster: LocalCluster, namespace: str, client: kube.KubeClient, admin: kube.KubeClient,
        caches: SharedInformerFactory,
) -> None:
    store = kube.ObjectStore(client, caches=caches)
    desired = service(namespace, "web")
    await store.apply(kube.SERVICES, namespace=namespace, name="web", build=merged(desired))
    live = await admin.get(kube.SERVICES, "web", namespace=namespace)
    informer = caches.informer(kube.SERVICES)

    async def delivered() -> bool:
        cached = informer.get(kube.key_of(live))
        return cached is not None and kube.resource_version(cached) == kube.resource_version(live)

    await eventually(delivered, within=30, what="the Service in the cache")

    since = datetime.now(UTC) - timedelta(milliseconds=10)
    for _ in range(3):
        result = await store.apply(kube.SERVICES, namespace=namespace, name="web",
                                   build=merged(desired))
        assert result.result is kube.OperationResult.UNCHANGED
        assert await store.get(kube.SERVICES, namespace=namespace, name="web") is not None
    assert await requests_since(cluster, client, since, namespace) == []


async def test_a_write_is_read_back_at_once_with_the_watch_running(
        namespace: str, client: kube.KubeClient, caches: SharedInformerFactory,
) -> None:
    """The next read after a write sees it, whether or not the watch has delivered it yet."""
    store = kube.ObjectStore(client, caches=caches)
    await store.apply(kube.CONFIGMAPS, namespace=namespace, name="c",
                      build=merged(configmap(namespace, "c", v="1")))
    for value in ("2", "3", "4"):
        written = await store.apply(kube.CONFIGMAPS, namespace=namespace, name="c",
                                    build=merged(configmap(namespace, "c", v=value)))
        assert written.result is kube.OperationResult.UPDATED  # built on the last write
        read = await store.get(kube.CONFIGMAPS, namespace=namespace, name="c")
        assert read is not None
        assert read["data"] == {"v": value}


async def test_only_others_changes_are_reported(
        namespace: str, client: kube.KubeClient, admin: kube.KubeClient,
        cluster: LocalCluster,
) -> None:
    """Our writes (whether the watch or the response comes first) and resyncs are not
    reported; an update and a delete by someone else are, once each, with the object."""
    watcher = await kube.KubeClient.connect(kubeconfig=cluster.kubeconfig)
    factory = SharedInformerFactory(watcher, namespace=namespace, resync_period=0.5)
    task = asyncio.create_task(factory.start())
    reported: list[tuple[str, str]] = []
    store = kube.ObjectStore(
        client, caches=factory,
        on_changed_by_others=lambda resource, obj: reported.append(
            (resource.kind, str((obj.get("data") or {}).get("v")))))
    try:
        for value in ("1", "2", "3"):
            await store.apply(kube.CONFIGMAPS, namespace=namespace, name="c",
                              build=merged(configmap(namespace, "c", v=value)))
        await store.patch(kube.CONFIGMAPS, namespace=namespace, name="c",
                          patch={"data": {"v": "4"}})
        await asyncio.sleep(1.5)  # the watch delivered every write, and resyncs came
        assert reported == []

        await admin.patch(kube.CONFIGMAPS, "c", {"data": {"v": "edited"}}, namespace=namespace)

        async def edit_reported() -> bool:
            return reported == [("ConfigMap", "edited")]

        await eventually(edit_reported, within=10, what="the edit reported")
        await admin.delete(kube.CONFIGMAPS, "c", namespace=namespace)

        async def delete_reported() -> bool:
            return reported == [("ConfigMap", "edited"), ("ConfigMap", "edited")]

        await eventually(delete_reported, within=10, what="the delete reported")
        await asyncio.sleep(1)
        assert len(reported) == 2, reported
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await watcher.aclose()


async def test_a_stale_cache_costs_a_conflict_and_a_read_not_a_lost_update(
        cluster: LocalCluster, namespace: str, client: kube.KubeClient, admin: kube.KubeClient,
) -> None:
    await admin.create(kube.CONFIGMAPS, configmap(namespace, "stale", a="1"))
    old = await admin.get(kube.CONFIGMAPS, "stale", namespace=namespace)
    await admin.patch(kube.CONFIGMAPS, "stale", {"data": {"x": "y"}}, namespace=namespace)

    # The cache still holds the old version: the update conflicts, is re-read and built again.
    since = datetime.now(UTC) - timedelta(milliseconds=10)
    behind = kube.ObjectStore(client, caches=Frozen(old))
    result = await behind.apply(kube.CONFIGMAPS, namespace=namespace, name="stale",
                                build=merged(configmap(namespace, "stale", a="2")))
    assert result.result is kube.OperationResult.UPDATED
    assert (await admin.get(kube.CONFIGMAPS, "stale", namespace=namespace))["data"] == {"a": "2"}
    requests = await requests_since(cluster, client, since, namespace)
    assert [(r.verb, r.code) for r in requests] == [("update", 409), ("get", 200),
                                                    ("update", 200)]

    # The cache says absent, but it exists: the create fails, is re-read and becomes an update.
    absent = kube.ObjectStore(client, caches=Frozen(None))
    result = await absent.apply(kube.CONFIGMAPS, namespace=namespace, name="stale",
                                build=merged(configmap(namespace, "stale", a="3")))
    assert result.result is kube.OperationResult.UPDATED
    assert (await admin.get(kube.CONFIGMAPS, "stale", namespace=namespace))["data"] == {"a": "3"}


async def test_the_owner_reference_is_merged_with_those_the_object_has(
        flagger_crds: None, namespace: str, client: kube.KubeClient, admin: kube.KubeClient,
) -> None:
    canary = Canary.model_validate(await admin.create(kube.CANARIES, {
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": namespace},
        "spec": {"suspend": True,
                 "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "service": {"port": 9898},
                 "analysis": {"interval": "10s", "threshold": 2, "iterations": 2}},
    }))
    assert canary.metadata is not None
    flaggers = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo",
                "uid": canary.metadata.uid, "controller": True, "blockOwnerDeletion": True}
    owner = canary_owner(canary)
    store = kube.ObjectStore(client)
    created = await store.apply(kube.CONFIGMAPS, namespace=namespace, name="owned",
                                build=merged(configmap(namespace, "owned", a="1")), owner=owner)
    assert created.result is kube.OperationResult.CREATED
    stored = await admin.get(kube.CONFIGMAPS, "owned", namespace=namespace)
    assert stored["metadata"]["ownerReferences"] == [flaggers]

    # Someone else's owner reference stays; ours is not written twice.
    other = await admin.create(kube.CONFIGMAPS, configmap(namespace, "other"))
    theirs = {"apiVersion": "v1", "kind": "ConfigMap", "name": "other",
              "uid": other["metadata"]["uid"]}
    await admin.patch(kube.CONFIGMAPS, "owned", {"metadata": {
        "ownerReferences": [theirs, flaggers]}}, namespace=namespace)
    again = await store.apply(kube.CONFIGMAPS, namespace=namespace, name="owned",
                              build=merged(configmap(namespace, "owned", a="2")), owner=owner)
    assert again.result is kube.OperationResult.UPDATED
    stored = await admin.get(kube.CONFIGMAPS, "owned", namespace=namespace)
    assert stored["data"] == {"a": "2"}
    assert stored["metadata"]["ownerReferences"] == [theirs, flaggers]
    unchanged = await store.apply(kube.CONFIGMAPS, namespace=namespace, name="owned",
                                  build=merged(configmap(namespace, "owned", a="2")), owner=owner)
    assert unchanged.result is kube.OperationResult.UNCHANGED


async def test_a_fenced_write_reaches_no_server_and_says_so_unchanged(
        cluster: LocalCluster, namespace: str, client: kube.KubeClient,
) -> None:
    store = kube.ObjectStore(client.fenced(lambda: False))
    since = datetime.now(UTC) - timedelta(milliseconds=10)
    with pytest.raises(kube.WriteFencedError) as fenced:
        await store.apply(kube.CONFIGMAPS, namespace=namespace, name="c",
                          build=merged(configmap(namespace, "c", a="1")))
    assert fenced.value.message.startswith("POST ")  # the client's message, no store prefix
    with pytest.raises(kube.WriteFencedError):
        await store.patch(kube.CONFIGMAPS, namespace=namespace, name="c", patch={"data": {}})
    verbs = [r.verb for r in await requests_since(cluster, client, since, namespace)]
    assert verbs == ["get"]  # the read before the create; no write reached the server


async def test_writes_built_from_a_cache_without_managed_fields_keep_the_servers(
        cluster: LocalCluster, namespace: str, client: kube.KubeClient, admin: kube.KubeClient,
) -> None:
    """The controller's caches drop ``managedFields`` (memory); an update built from such a copy
    must not wipe the other managers' bookkeeping, or their next server-side apply would
    lose track of the fields they own."""
    await admin.apply(kube.CONFIGMAPS, configmap(namespace, "owned", theirs="1"),
                      namespace=namespace, field_manager="someone-else")
    live = await admin.get(kube.CONFIGMAPS, "owned", namespace=namespace)
    assert {entry["manager"] for entry in live["metadata"]["managedFields"]} == {"someone-else"}
    cached = informers.drop_managed_fields(live)
    store = kube.ObjectStore(client, caches=Frozen(cached))
    written = await store.apply(kube.CONFIGMAPS, namespace=namespace, name="owned",
                                build=merged(configmap(namespace, "owned", theirs="1",
                                                       ours="2")))
    assert written.result is kube.OperationResult.UPDATED
    after = await admin.get(kube.CONFIGMAPS, "owned", namespace=namespace)
    assert after["data"] == {"theirs": "1", "ours": "2"}
    managers = {entry["manager"] for entry in after["metadata"]["managedFields"]}
    assert "someone-else" in managers
    assert len(managers) == 2  # and the store's own update is recorded beside it
