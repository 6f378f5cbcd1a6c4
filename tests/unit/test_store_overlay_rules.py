"""When the object store stops serving its own write: the rules, with a cache the test drives.

The real informer is exercised in tests/integration/test_store_overlay.py; here the cache is a
small stand-in so each delivery (the write's own event, an older event arriving late, a relist,
a delete) can be made to happen in exactly the order under test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from flaggerpy import kube

NS = "test"


class DrivenCache:
    """An informer whose deliveries the test makes by hand."""

    def __init__(self) -> None:
        self.objects: dict[kube.ObjectKey, dict[str, Any]] = {}
        self.handlers: list[dict[str, Callable[..., None] | None]] = []
        self.lists_started = 1
        self._listed = 1

    has_synced = True

    async def wait_synced(self) -> None:
        return None

    def get(self, key: kube.ObjectKey) -> dict[str, Any] | None:
        return self.objects.get(key)

    def add_handler(self, **handlers: Callable[..., None] | None) -> None:
        self.handlers.append(handlers)

    def listed_since(self, lists_started: int) -> bool:
        return self._listed > lists_started

    def deliver(self, obj: dict[str, Any]) -> None:
        key = kube.key_of(obj)
        before = self.objects.get(key)
        self.objects[key] = obj
        for handlers in self.handlers:
            if before is None and handlers.get("on_add"):
                handlers["on_add"](obj)  # type: ignore[misc]
            elif before is not None and handlers.get("on_update"):
                handlers["on_update"](before, obj)  # type: ignore[misc]

    def delete(self, obj: dict[str, Any]) -> None:
        self.objects.pop(kube.key_of(obj), None)
        for handlers in self.handlers:
            if handlers.get("on_delete"):
                handlers["on_delete"](obj)  # type: ignore[misc]

    def relist(self, *objects: dict[str, Any]) -> None:
        """A list started after everything so far, holding ``objects`` (no events for them)."""
        self.lists_started += 1
        self.objects = {kube.key_of(obj): obj for obj in objects}
        self._listed = self.lists_started

    def informer(self, resource: kube.Resource) -> DrivenCache:
        return self


def cm(version: str, value: str, uid: str = "u1") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": NS, "resourceVersion": version, "uid": uid},
            "data": {"v": value}}


async def read(store: kube.ObjectStore) -> str | None:
    obj = await store.get(kube.CONFIGMAPS, namespace=NS, name="c")
    return None if obj is None else str(obj["data"]["v"])


async def written(cache: DrivenCache, ours: dict[str, Any]) -> kube.ObjectStore:
    store = kube.ObjectStore(None, caches=cache)  # type: ignore[arg-type]  # no client calls
    await store.get(kube.CONFIGMAPS, namespace=NS, name="c")  # the store starts watching
    store.remember(kube.CONFIGMAPS, ours)
    return store


async def test_an_older_event_arriving_after_the_write_does_not_end_the_overlay() -> None:
    cache = DrivenCache()
    cache.deliver(cm("10", "old"))
    store = await written(cache, cm("12", "ours"))
    cache.deliver(cm("11", "in flight"))  # written by someone before us, delivered after
    assert await read(store) == "ours"
    cache.deliver(cm("12", "ours"))
    cache.deliver(cm("13", "theirs"))
    assert await read(store) == "theirs"


async def test_a_relist_started_after_the_write_ends_the_overlay() -> None:
    cache = DrivenCache()
    store = await written(cache, cm("12", "ours"))
    assert await read(store) == "ours"
    cache.relist(cm("14", "theirs"))  # our event was coalesced away by the relist
    assert await read(store) == "theirs"


async def test_only_the_deletion_of_the_object_we_wrote_ends_the_overlay() -> None:
    cache = DrivenCache()
    cache.deliver(cm("10", "old", uid="u0"))
    store = await written(cache, cm("12", "recreated", uid="u1"))
    cache.delete(cm("11", "old", uid="u0"))  # the previous incarnation's delete, delivered late
    assert await read(store) == "recreated"
    cache.delete(cm("13", "recreated", uid="u1"))
    assert await read(store) is None



class QuickWatchClient:
    """A client whose watch delivers each write, and ``then`` more, before the response."""

    def __init__(self, cache: DrivenCache, *then: dict[str, Any]) -> None:
        self.cache = cache
        self.then = then

    async def patch(self, resource: kube.Resource, name: str, patch: Any,
                    **options: Any) -> dict[str, Any]:
        stored = cm("12", str(patch["data"]["v"]))
        self.cache.deliver(stored)
        for obj in self.then:
            self.cache.deliver(obj)
        return stored


async def test_a_write_the_watch_delivered_before_its_response_is_not_overlaid() -> None:
    cache = DrivenCache()
    cache.deliver(cm("10", "old"))
    later = cm("13", "theirs")  # someone else's write, delivered before our response too
    store = kube.ObjectStore(QuickWatchClient(cache, later), caches=cache)  # type: ignore[arg-type]
    await store.get(kube.CONFIGMAPS, namespace=NS, name="c")  # the store starts watching
    stored = await store.patch(kube.CONFIGMAPS, namespace=NS, name="c",
                               patch={"data": {"v": "ours"}})
    assert stored["data"]["v"] == "ours"
    assert await read(store) == "theirs"  # not hidden by our older write
    cache.deliver(cm("14", "newest"))
    assert await read(store) == "newest"


class GatedClient:
    """A client whose write of each value waits for the test to let it through."""

    def __init__(self, *values: str) -> None:
        self.gates = {value: asyncio.Event() for value in values}
        self.version = 11

    async def patch(self, resource: kube.Resource, name: str, patch: Any,
                    **options: Any) -> dict[str, Any]:
        value = str(patch["data"]["v"])
        await self.gates[value].wait()
        self.version += 1
        return cm(str(self.version), value)


async def test_two_writes_of_one_object_in_flight_at_once_both_complete() -> None:
    cache = DrivenCache()
    cache.deliver(cm("10", "old"))
    client = GatedClient("a", "b")
    store = kube.ObjectStore(client, caches=cache)  # type: ignore[arg-type]
    await store.get(kube.CONFIGMAPS, namespace=NS, name="c")
    first, second = (asyncio.create_task(store.patch(
        kube.CONFIGMAPS, namespace=NS, name="c", patch={"data": {"v": v}})) for v in ("a", "b"))
    await asyncio.sleep(0)  # both are in flight
    client.gates["b"].set()
    assert (await second)["metadata"]["resourceVersion"] == "12"
    cache.deliver(cm("12", "b"))  # delivered while the first write is still in flight
    client.gates["a"].set()
    assert (await first)["metadata"]["resourceVersion"] == "13"
    assert await read(store) == "a"  # the last write, until the watch delivers it
    cache.deliver(cm("13", "a"))
    cache.deliver(cm("14", "theirs"))
    assert await read(store) == "theirs"
