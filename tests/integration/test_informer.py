"""Informers against the real API server, including a real 410 after an etcd compaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import structlog
from kubernetes_asyncio.client import ApiClient

from e2e.cluster.localcluster import LocalCluster
from flaggerpy import kube
from flaggerpy.kube import config as kube_config
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.runtime import informer as informers

pytestmark = pytest.mark.integration

UNREACHABLE = "https://127.0.0.1:9"  # discard port: nothing listens, connections are refused


async def eventually(check: Callable[[], bool], *, what: str, within: float = 30) -> None:
    """Polls a condition that no event signals (log records, handler calls)."""
    for _ in range(int(within / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out after {within}s waiting for {what}")


class Seen:
    """Records handler calls as (what, name, value) with a value read from each object."""

    def __init__(self, value: Callable[[dict[str, Any]], str] | None = None) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.value = value or (lambda obj: str((obj.get("data") or {}).get("v", "")))

    def add(self, obj: dict[str, Any]) -> None:
        self.events.append(("add", obj["metadata"]["name"], self.value(obj)))

    def update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.events.append(("update", new["metadata"]["name"], self.value(new)))

    def delete(self, obj: dict[str, Any]) -> None:
        self.events.append(("delete", obj["metadata"]["name"], ""))

    def of(self, name: str) -> list[tuple[str, str]]:
        return [(what, v) for what, n, v in self.events if n == name]


def configmap(namespace: str, name: str, v: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "data": {"v": v}}


@pytest.fixture
def writer(api_client: ApiClient) -> kube.KubeClient:
    return kube.KubeClient(api_client)


@pytest.fixture
async def own_api(cluster: LocalCluster) -> AsyncIterator[ApiClient]:
    """An ApiClient of the informer's own, whose server address the test can cut."""
    api = await kube_config.new_api_client(kubeconfig=cluster.kubeconfig)
    try:
        yield api
    finally:
        await api.close()


@pytest.fixture
async def running() -> AsyncIterator[Callable[[informers.Informer], Awaitable[None]]]:
    tasks: list[asyncio.Task[None]] = []

    async def run(informer: informers.Informer) -> None:
        tasks.append(asyncio.create_task(informer.start()))
        async with asyncio.timeout(30):
            await informer.wait_synced()

    yield run
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_list_then_watch(
        writer: kube.KubeClient, namespace: str,
        running: Callable[[informers.Informer], Awaitable[None]]) -> None:
    await writer.create(kube.CONFIGMAPS, configmap(namespace, "before", "1"))
    informer = informers.Informer(writer, kube.CONFIGMAPS, namespace=namespace)
    seen = Seen()
    informer.add_handler(on_add=seen.add, on_update=seen.update, on_delete=seen.delete)
    await running(informer)
    assert seen.of("before") == [("add", "1")]

    await writer.create(kube.CONFIGMAPS, configmap(namespace, "after", "1"))
    await writer.patch(kube.CONFIGMAPS, "after", {"data": {"v": "2"}}, namespace=namespace)
    await writer.delete(kube.CONFIGMAPS, "before", namespace=namespace)
    await eventually(lambda: len(seen.of("after")) == 2 and len(seen.of("before")) == 2,
                     what="watch events")
    assert seen.of("after") == [("add", "1"), ("update", "2")]
    assert seen.of("before") == [("add", "1"), ("delete", "")]
    assert informer.get(ObjectKey(namespace, "before")) is None
    cached = informer.get(ObjectKey(namespace, "after"))
    assert cached is not None
    assert cached["data"] == {"v": "2"}
    assert cached["kind"] == "ConfigMap"


def event(namespace: str, name: str, message: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace},
            "involvedObject": {"kind": "ConfigMap", "name": "x", "namespace": namespace},
            "reason": "Test", "message": message, "type": "Normal"}


async def test_relist_after_compaction_misses_nothing(
        cluster: LocalCluster, writer: kube.KubeClient, own_api: ApiClient, namespace: str,
        running: Callable[[informers.Informer], Awaitable[None]]) -> None:
    """A real 410: the watch resumes from a resourceVersion that etcd compacted away.

    Core Events are watched straight from etcd (the API server keeps no watch cache for
    them), so a compaction makes an old resourceVersion unservable at once. Resources
    behind the watch cache may instead be resumed from it; either way nothing is missed.
    """
    for name in ("keep", "change", "remove"):
        await writer.create(kube.EVENTS, event(namespace, name, "1"))
    reader = kube.KubeClient(own_api)
    seen = Seen(lambda obj: str(obj["message"]))
    with structlog.testing.capture_logs() as logs:  # before the informer binds its logger
        informer = informers.Informer(reader, kube.EVENTS, namespace=namespace,
                                      watch_timeout=1, backoff_initial=0.1, backoff_max=0.3)
        informer.add_handler(on_add=seen.add, on_update=seen.update, on_delete=seen.delete)
        await running(informer)
        version_before = informer.resource_version

        # Cut the informer off: its current watch ends within its 1-2 s timeout, and every
        # reconnect is refused until the address is restored.
        server = own_api.configuration.host
        own_api.configuration.host = UNREACHABLE
        await eventually(lambda: any(e["event"] == "informer_watch_failed" for e in logs),
                         what="the informer to lose its watch")

        # Changes it cannot see, then a compaction that makes its resourceVersion unservable.
        await writer.patch(kube.EVENTS, "change", {"message": "2"}, namespace=namespace)
        await writer.delete(kube.EVENTS, "remove", namespace=namespace)
        await writer.create(kube.EVENTS, event(namespace, "new", "1"))
        await asyncio.to_thread(cluster.compact)

        own_api.configuration.host = server
        missed = [("add", "new", "1"), ("delete", "remove", ""), ("update", "change", "2")]
        await eventually(lambda: all(e in seen.events for e in missed), what="the missed changes")

    assert any(e["event"] == "informer_watch_expired" for e in logs), "no 410 was seen"
    assert [e for e in logs if e["event"] == "informer_listed" and not e["initial"]]
    ours = [e for e in seen.events if e[1] in ("keep", "change", "remove", "new")]
    assert sorted(ours) == sorted([("add", "keep", "1"), ("add", "change", "1"),
                                   ("add", "remove", "1"), *missed])  # each change exactly once
    assert int(informer.resource_version) > int(version_before)
    truth = await writer.list(kube.EVENTS, namespace=namespace)
    assert {kube.key_of(o): o["message"] for o in truth.items} == {
        kube.key_of(o): o["message"] for o in informer.list()}


async def test_shared_factory_hands_out_one_informer(
        writer: kube.KubeClient, namespace: str) -> None:
    factory = informers.SharedInformerFactory(writer, namespace=namespace)
    first = factory.informer(kube.CONFIGMAPS)
    assert factory.informer(kube.CONFIGMAPS) is first
    assert factory.informer(kube.CONFIGMAPS, label_selector="a=b") is not first
    cluster_scoped = factory.informer(kube.NAMESPACES)
    assert cluster_scoped.namespace is None

    task = asyncio.create_task(factory.start())
    try:
        late = factory.informer(kube.SERVICES)  # asked for after start: started too
        async with asyncio.timeout(30):
            await factory.wait_synced()
        assert factory.has_synced
        assert late.has_synced
        assert cluster_scoped.get(ObjectKey("", namespace)) is not None
        assert [o["metadata"]["name"] for o in cluster_scoped.by_index(
            informers.NAMESPACE_INDEX, "")]  # cluster-scoped objects index under ""
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_only_the_informers_asked_to_resync_do(
        writer: kube.KubeClient, namespace: str) -> None:
    """The controller resyncs the caches whose status controllers re-check, not the rest."""
    await writer.create(kube.CONFIGMAPS, {"metadata": {"name": "c"}, "data": {"v": "1"}},
                        namespace=namespace)
    await writer.create(kube.SECRETS, {"metadata": {"name": "s"}, "stringData": {"v": "1"}},
                        namespace=namespace)
    factory = informers.SharedInformerFactory(writer, namespace=namespace)
    updates = {"configmaps": 0, "secrets": 0}

    def counted(plural: str) -> Callable[[Any, Any], None]:
        def on_update(_old: Any, _new: Any) -> None:
            updates[plural] += 1
        return on_update

    factory.informer(kube.CONFIGMAPS, resync_period=0.2).add_handler(
        on_update=counted("configmaps"))
    factory.informer(kube.SECRETS).add_handler(on_update=counted("secrets"))
    task = asyncio.create_task(factory.start())
    try:
        async with asyncio.timeout(30):
            await factory.wait_synced()
        await asyncio.sleep(1.5)
        assert updates["configmaps"] >= 3  # its object re-delivered every 0.2 s
        assert updates["secrets"] == 0  # the factory's default: never
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_label_selector_and_custom_index(
        writer: kube.KubeClient, namespace: str,
        running: Callable[[informers.Informer], Awaitable[None]]) -> None:
    for name, team in (("a", "x"), ("b", "y"), ("c", "x")):
        body = configmap(namespace, name, "1")
        body["metadata"]["labels"] = {"team": team, "watched": "yes" if name != "c" else "no"}
        await writer.create(kube.CONFIGMAPS, body)
    informer = informers.Informer(writer, kube.CONFIGMAPS, namespace=namespace,
                                  label_selector="watched=yes")
    informer.add_indexer("team", informers.field_index("metadata", "labels", "team"))
    await running(informer)
    assert [o["metadata"]["name"] for o in informer.by_index("team", "x")] == ["a"]
    assert sorted(o["metadata"]["name"] for o in informer.list(namespace=namespace)) == ["a", "b"]
