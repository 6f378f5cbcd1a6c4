"""Informer faults the real API server cannot be made to produce on demand.

A connection cut in the middle of a watch, a server that answers 500 for a
while, a 410 arriving as an HTTP status rather than an ERROR event: these are
played by a scripted local HTTP server. The everyday behaviour (list, watch,
relist after a real etcd compaction) is tested against the real API server in
tests/integration/test_informer.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio.client import ApiClient, Configuration

from flaggerpy import kube
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.runtime import informer as informers

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def cm(name: str, rv: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}, "data": data}


def listing(rv: str, *items: dict[str, Any]) -> Handler:
    async def respond(request: web.Request) -> web.StreamResponse:
        return web.json_response({"kind": "ConfigMapList", "apiVersion": "v1",
                                  "metadata": {"resourceVersion": rv}, "items": list(items)})
    return respond


def stream(*events: dict[str, Any], cut: bool = False, hang: bool = False) -> Handler:
    async def respond(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for event in events:
            await response.write(json.dumps(event).encode() + b"\n")
        if cut:  # the connection dies without a proper end of the chunked body
            assert request.transport is not None
            request.transport.close()
            return response
        if hang:
            await asyncio.sleep(3600)
        await response.write_eof()
        return response
    return respond


def status(code: int, reason: str) -> Handler:
    async def respond(request: web.Request) -> web.StreamResponse:
        return web.json_response(status=code, data={
            "kind": "Status", "code": code, "reason": reason, "message": reason})
    return respond


class ScriptedApi:
    """Answers list and watch requests from two scripts, in order; the last entry repeats."""

    def __init__(self, *, lists: list[Handler], watches: list[Handler]) -> None:
        self.lists = lists
        self.watches = watches
        self.watch_versions: list[str] = []
        self.list_calls = 0
        self.watched = asyncio.Event()

    async def until_watches(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.watch_versions) < count:
                self.watched.clear()
                await self.watched.wait()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") == "true":
            self.watch_versions.append(request.query.get("resourceVersion", ""))
            self.watched.set()
            script = self.watches
        else:
            self.list_calls += 1
            script = self.lists
        handler = script.pop(0) if len(script) > 1 else script[0]
        return await handler(request)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.changed = asyncio.Event()

    def add(self, obj: dict[str, Any]) -> None:
        self._note("add", obj)

    def update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self._note("update", new)

    def delete(self, obj: dict[str, Any]) -> None:
        self._note("delete", obj)

    def _note(self, what: str, obj: dict[str, Any]) -> None:
        self.events.append((what, obj["metadata"]["name"], obj["metadata"]["resourceVersion"]))
        self.changed.set()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.events) < count:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def run(aiohttp_raw_server: Any) -> AsyncIterator[
        Callable[[ScriptedApi], Awaitable[tuple[informers.Informer, Recorder]]]]:
    tasks: list[asyncio.Task[None]] = []
    clients: list[kube.KubeClient] = []

    async def start(api: ScriptedApi) -> tuple[informers.Informer, Recorder]:
        server = await aiohttp_raw_server(api.handle)
        configuration = Configuration(host=str(server.make_url("")).rstrip("/"))
        client = kube.KubeClient(ApiClient(configuration), owns_api=True)
        clients.append(client)
        informer = informers.Informer(client, kube.CONFIGMAPS, namespace="ns",
                                      backoff_initial=0.01, backoff_max=0.05)
        recorder = Recorder()
        informer.add_handler(on_add=recorder.add, on_update=recorder.update,
                             on_delete=recorder.delete)
        tasks.append(asyncio.create_task(informer.start()))
        return informer, recorder

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for client in clients:
        await client.aclose()


async def test_cut_connection_resumes_from_last_version(run: Any) -> None:
    api = ScriptedApi(
        lists=[listing("10", cm("a", "10"))],
        watches=[
            stream({"type": "MODIFIED", "object": cm("a", "11", k="v")}, cut=True),
            stream({"type": "ADDED", "object": cm("b", "12")}, hang=True),
        ],
    )
    informer, recorder = await run(api)
    await recorder.until(3)
    await api.until_watches(2)
    assert recorder.events == [("add", "a", "10"), ("update", "a", "11"), ("add", "b", "12")]
    assert api.watch_versions[:2] == ["10", "11"]  # resumed, not relisted
    assert api.list_calls == 1
    assert informer.get(ObjectKey("ns", "a")) == cm("a", "11", k="v")


async def test_http_410_on_watch_relists_and_synthesizes_deletes(run: Any) -> None:
    api = ScriptedApi(
        lists=[listing("10", cm("a", "10"), cm("b", "10")),
               listing("20", cm("a", "15"), cm("c", "18"))],
        watches=[status(410, "Gone"), stream(hang=True)],
    )
    informer, recorder = await run(api)
    await recorder.until(5)
    assert sorted(recorder.events[2:]) == [
        ("add", "c", "18"), ("delete", "b", "10"), ("update", "a", "15")]
    assert sorted(obj["metadata"]["name"] for obj in informer.list()) == ["a", "c"]
    await api.until_watches(2)
    assert api.watch_versions == ["10", "20"]


async def test_server_errors_back_off_and_recover(run: Any) -> None:
    api = ScriptedApi(
        lists=[status(500, "InternalError"), status(503, "ServiceUnavailable"),
               listing("10", cm("a", "10"))],
        watches=[stream(hang=True)],
    )
    informer, recorder = await run(api)
    async with asyncio.timeout(5):
        await informer.wait_synced()
    assert api.list_calls == 3
    assert recorder.events == [("add", "a", "10")]


async def test_bookmarks_move_the_resume_point(run: Any) -> None:
    api = ScriptedApi(
        lists=[listing("10")],
        watches=[
            stream({"type": "BOOKMARK", "object": {"kind": "ConfigMap",
                                                   "metadata": {"resourceVersion": "99"}}}),
            stream({"type": "ADDED", "object": cm("z", "100")}, hang=True),
        ],
    )
    informer, recorder = await run(api)
    await recorder.until(1)
    await api.until_watches(2)
    assert api.watch_versions[:2] == ["10", "99"]
    assert informer.resource_version == "100"


async def test_a_failing_handler_does_not_stop_the_others(run: Any) -> None:
    api = ScriptedApi(lists=[listing("10", cm("a", "10"))], watches=[stream(hang=True)])
    informer, recorder = await run(api)
    await recorder.until(1)

    def broken(obj: dict[str, Any]) -> None:
        raise RuntimeError("handler bug")

    informer.add_handler(on_add=broken)  # told about "a" at once, and fails
    seen: list[str] = []
    informer.add_handler(on_add=lambda obj: seen.append(obj["metadata"]["name"]))
    assert seen == ["a"]


async def test_indexes_follow_changes() -> None:
    informer = informers.Informer(None, kube.CANARIES)  # type: ignore[arg-type]
    informer.add_indexer("target", informers.field_index("spec", "targetRef", "name"))

    def canary(name: str, ns: str, target: str, rv: str) -> kube.WatchEvent:
        return kube.WatchEvent(kube.EventType.MODIFIED, {
            "metadata": {"name": name, "namespace": ns, "resourceVersion": rv},
            "spec": {"targetRef": {"name": target}}})

    informer._apply(canary("c1", "a", "podinfo", "1"))
    informer._apply(canary("c2", "b", "podinfo", "2"))
    assert [c["metadata"]["name"] for c in informer.by_index("target", "podinfo")] == ["c1", "c2"]
    informer._apply(canary("c1", "a", "other", "3"))
    assert [c["metadata"]["name"] for c in informer.by_index("target", "podinfo")] == ["c2"]
    assert [c["metadata"]["name"] for c in informer.list(namespace="a")] == ["c1"]
    informer._apply(kube.WatchEvent(kube.EventType.DELETED, canary("c2", "b", "x", "4").object))
    assert informer.by_index("target", "podinfo") == []
    assert informer.list(namespace="b") == []
    assert informer.get(ObjectKey("a", "c1"))["kind"] == "Canary"  # type: ignore[index]


async def test_a_transform_shapes_what_is_cached_from_lists_and_watches(
    aiohttp_raw_server: Any,
) -> None:
    managed = [{"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:data": {}}}]

    def with_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
        return {**obj, "metadata": {**obj["metadata"], "managedFields": managed}}

    api = ScriptedApi(
        lists=[listing("10", with_managed_fields(cm("a", "10")))],
        watches=[stream({"type": "ADDED", "object": with_managed_fields(cm("b", "11"))},
                        hang=True)],
    )
    server = await aiohttp_raw_server(api.handle)
    client = kube.KubeClient(ApiClient(Configuration(host=str(server.make_url("")).rstrip("/"))),
                             owns_api=True)
    informer = informers.Informer(client, kube.CONFIGMAPS, namespace="ns",
                                  transform=informers.drop_managed_fields)
    recorder = Recorder()
    informer.add_handler(on_add=recorder.add)
    task = asyncio.create_task(informer.start())
    try:
        await recorder.until(2)
        for name in ("a", "b"):
            cached = informer.get(ObjectKey("ns", name))
            assert cached is not None
            assert "managedFields" not in cached["metadata"]
            assert cached["metadata"]["name"] == name  # the rest is kept
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()


def test_dropping_managed_fields_leaves_the_received_object_alone() -> None:
    received = cm("a", "1")
    received["metadata"]["managedFields"] = [{"manager": "x"}]
    kept = informers.drop_managed_fields(received)
    assert "managedFields" not in kept["metadata"]
    assert received["metadata"]["managedFields"] == [{"manager": "x"}]
    assert informers.drop_managed_fields(cm("b", "2")) == cm("b", "2")
