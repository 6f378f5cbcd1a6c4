"""The object store's read-your-writes, against the real API server and real informers.

A write is served from the store until the informer has delivered that very write; after that
the cache speaks again, so a change someone else makes later is never hidden by our memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from e2e.cluster.pytest_plugin import eventually
from flaggerpy import kube
from flaggerpy.runtime.informer import SharedInformerFactory

pytestmark = pytest.mark.integration


@pytest.fixture
def client(api_client: ApiClient) -> kube.KubeClient:
    return kube.KubeClient(api_client)


@contextlib.asynccontextmanager
async def running(factory: SharedInformerFactory) -> AsyncIterator[SharedInformerFactory]:
    task = asyncio.create_task(factory.start())
    try:
        yield factory
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def configmap(value: str) -> Callable[[dict[str, Any] | None], dict[str, Any]]:
    """A build that sets ``data.v``, creating the ConfigMap ``settings`` if needed."""
    def build(current: dict[str, Any] | None) -> dict[str, Any]:
        obj = current or {"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": "settings"}}
        obj["data"] = {"v": value}
        return obj
    return build


def value_of(obj: Any) -> str | None:
    return None if obj is None else str((obj.get("data") or {}).get("v"))


async def test_a_write_is_read_back_while_the_cache_has_not_seen_it(
        client: kube.KubeClient, namespace: str,
) -> None:
    factory = SharedInformerFactory(client, namespace=namespace)
    store = kube.ObjectStore(client, caches=factory)
    async with running(factory):
        assert await store.get(kube.CONFIGMAPS, namespace=namespace, name="settings") is None
    # The informer is stopped: its cache will never see what follows.
    created = await store.apply(kube.CONFIGMAPS, namespace=namespace, name="settings",
                                build=configmap("1"))
    assert created.result is kube.OperationResult.CREATED
    read = await store.get(kube.CONFIGMAPS, namespace=namespace, name="settings")
    assert value_of(read) == "1"
    assert factory.informer(kube.CONFIGMAPS).get(kube.key_of(created.obj or {})) is None

    # The next build starts from our write, not from the empty cache: an update, not a
    # second create that the API server would refuse.
    updated = await store.apply(kube.CONFIGMAPS, namespace=namespace, name="settings",
                                build=configmap("2"))
    assert updated.result is kube.OperationResult.UPDATED
    assert value_of(await store.get(kube.CONFIGMAPS, namespace=namespace,
                                    name="settings")) == "2"
    unchanged = await store.apply(kube.CONFIGMAPS, namespace=namespace, name="settings",
                                  build=configmap("2"))
    assert unchanged.result is kube.OperationResult.UNCHANGED
    live = await client.get(kube.CONFIGMAPS, "settings", namespace=namespace)
    assert value_of(live) == "2"


async def test_once_the_watch_delivers_the_write_later_changes_are_seen(
        client: kube.KubeClient, namespace: str,
) -> None:
    factory = SharedInformerFactory(client, namespace=namespace)
    store = kube.ObjectStore(client, caches=factory)
    async with running(factory):
        written = await store.apply(kube.CONFIGMAPS, namespace=namespace, name="settings",
                                    build=configmap("ours"))
        informer = factory.informer(kube.CONFIGMAPS)
        key = kube.key_of(written.obj or {})

        async def delivered(value: str) -> bool:
            return value_of(informer.get(key)) == value

        await eventually(lambda: delivered("ours"), within=30, what="our write in the cache")
        # Someone else changes it afterwards; our memory of the earlier write must not hide it.
        await client.patch(kube.CONFIGMAPS, "settings", {"data": {"v": "theirs"}},
                           namespace=namespace)
        await eventually(lambda: delivered("theirs"), within=30, what="their write in the cache")
        read = await store.get(kube.CONFIGMAPS, namespace=namespace, name="settings")
        assert value_of(read) == "theirs"


async def test_a_status_patch_is_read_back_at_once(
        client: kube.KubeClient, namespace: str,
) -> None:
    """The Canary status a reconcile writes is what the next step of it reads."""
    canary = await client.create(kube.CANARIES, {
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": namespace},
        "spec": {"suspend": True,
                 "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "service": {"port": 9898},
                 "analysis": {"interval": "10s", "threshold": 2, "iterations": 2}},
    })
    factory = SharedInformerFactory(client, namespace=namespace)
    store = kube.ObjectStore(client, caches=factory)
    async with running(factory):
        cached = await store.get(kube.CANARIES, namespace=namespace, name="podinfo")
        assert kube.resource_version(cached or {}) == kube.resource_version(canary)
    stored = await store.patch(kube.CANARIES, namespace=namespace, name="podinfo",
                               patch={"status": {"phase": "Initializing"}},
                               subresource="status")
    assert stored["status"]["phase"] == "Initializing"
    read = await store.get(kube.CANARIES, namespace=namespace, name="podinfo")
    assert (read or {}).get("status", {}).get("phase") == "Initializing"
