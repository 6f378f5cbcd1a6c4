"""The kube client's wire contract, checked against a real local HTTP server.

What is checked here is what goes over the wire (content types, query
parameters, user agent, no request at all when fenced) and how answers and
transport failures come back. Kubernetes' own behaviour is checked against
the real API server in tests/integration/test_kube.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio.client import ApiClient, Configuration

from flaggerpy import kube


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeApi:
    """Records requests; answers with ``responder(request) -> web.StreamResponse`` or echoes."""

    seen: list[Seen] = field(default_factory=list)
    responder: Callable[[web.Request], Any] | None = None
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        self.seen.append(Seen(request.method, request.path, dict(request.query),
                              dict(request.headers), body))
        if self.responder is not None:
            response: web.StreamResponse = await self.responder(request)
            return response
        echoed = body if isinstance(body, dict) else {}
        return web.json_response({"metadata": {"name": "x", "resourceVersion": "1"}, **echoed})


@pytest.fixture
async def fake_api(aiohttp_raw_server: Any) -> FakeApi:
    api = FakeApi()
    server = await aiohttp_raw_server(api.handle)
    api.url = str(server.make_url("")).rstrip("/")
    return api


@pytest.fixture
async def client(fake_api: FakeApi) -> AsyncIterator[kube.KubeClient]:
    configuration = Configuration(host=fake_api.url)
    async with kube.KubeClient(ApiClient(configuration), owns_api=True) as kube_client:
        yield kube_client


SVC = {"metadata": {"name": "web", "namespace": "ns"}, "spec": {"ports": [{"port": 80}]}}


async def test_patch_is_a_merge_patch(client: kube.KubeClient, fake_api: FakeApi) -> None:
    await client.patch(kube.SERVICES, "web", {"spec": {"selector": None}}, namespace="ns")
    (request,) = fake_api.seen
    assert (request.method, request.path) == ("PATCH", "/api/v1/namespaces/ns/services/web")
    assert request.headers["Content-Type"] == "application/merge-patch+json"
    assert request.body == {"spec": {"selector": None}}
    assert request.query == {"fieldManager": "flaggerpy"}


async def test_patch_status_targets_the_subresource(
        client: kube.KubeClient, fake_api: FakeApi) -> None:
    await client.patch_status(kube.CANARIES, "c", {"status": {"phase": "Progressing"}},
                              namespace="ns")
    (request,) = fake_api.seen
    assert request.path == "/apis/flagger.app/v1beta1/namespaces/ns/canaries/c/status"
    assert request.headers["Content-Type"] == "application/merge-patch+json"


async def test_apply_is_server_side_apply(client: kube.KubeClient, fake_api: FakeApi) -> None:
    await client.apply(kube.SERVICES, SVC, force=True)
    (request,) = fake_api.seen
    assert request.method == "PATCH"
    assert request.headers["Content-Type"] == "application/apply-patch+yaml"
    assert request.query == {"fieldManager": "flaggerpy", "force": "true"}
    assert request.body["apiVersion"] == "v1"
    assert request.body["kind"] == "Service"


async def test_user_agent_names_flaggerpy(client: kube.KubeClient, fake_api: FakeApi) -> None:
    await client.get(kube.SERVICES, "web", namespace="ns")
    assert fake_api.seen[0].headers["User-Agent"] == kube.default_user_agent()
    assert kube.default_user_agent().startswith("flaggerpy/")


async def test_delete_sends_propagation_policy(client: kube.KubeClient, fake_api: FakeApi) -> None:
    await client.delete(kube.DEPLOYMENTS, "d", namespace="ns",
                        propagation_policy=kube.PropagationPolicy.FOREGROUND)
    (request,) = fake_api.seen
    assert request.method == "DELETE"
    assert request.body["propagationPolicy"] == "Foreground"


async def test_fenced_writes_never_reach_the_server(
        client: kube.KubeClient, fake_api: FakeApi) -> None:
    allowed = False
    fenced = client.fenced(lambda: allowed)
    for write in (
        fenced.create(kube.SERVICES, SVC),
        fenced.replace(kube.SERVICES, SVC),
        fenced.patch(kube.SERVICES, "web", {}, namespace="ns"),
        fenced.apply(kube.SERVICES, SVC),
        fenced.delete(kube.SERVICES, "web", namespace="ns"),
    ):
        with pytest.raises(kube.WriteFencedError):
            await write
    assert fake_api.seen == []
    await fenced.get(kube.SERVICES, "web", namespace="ns")  # reads are never fenced
    allowed = True
    await fenced.patch(kube.SERVICES, "web", {"a": 1}, namespace="ns")
    assert [r.method for r in fake_api.seen] == ["GET", "PATCH"]


async def test_status_errors_are_converted(client: kube.KubeClient, fake_api: FakeApi) -> None:
    async def invalid(request: web.Request) -> web.Response:
        return web.json_response(status=422, data={
            "kind": "Status", "code": 422, "reason": "Invalid", "message": "bad",
            "details": {"causes": [{"field": "spec.ports[0].port", "reason": "FieldValueInvalid",
                                    "message": "must be between 1 and 65535"}]}})

    fake_api.responder = invalid
    with pytest.raises(kube.UnprocessableError) as info:
        await client.create(kube.SERVICES, SVC)
    assert info.value.fields == ("spec.ports[0].port",)


async def test_ignore_not_found_awaitable(client: kube.KubeClient, fake_api: FakeApi) -> None:
    async def missing(request: web.Request) -> web.Response:
        return web.json_response(status=404, data={"kind": "Status", "code": 404,
                                                   "reason": "NotFound", "message": "nope"})

    fake_api.responder = missing
    assert await kube.ignore_not_found(client.get(kube.SERVICES, "web", namespace="ns")) is None


async def test_refused_connection_is_a_transport_error(unused_tcp_port: int) -> None:
    configuration = Configuration(host=f"http://127.0.0.1:{unused_tcp_port}")
    async with kube.KubeClient(ApiClient(configuration), owns_api=True) as refused:
        with pytest.raises(kube.TransportError) as info:
            await refused.get(kube.SERVICES, "web", namespace="ns")
    assert info.value.__cause__ is not None


def watch_lines(*events: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


async def test_watch_streams_events_until_the_server_ends(
        client: kube.KubeClient, fake_api: FakeApi) -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(watch_lines(
            {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "2"}}}))
        await response.write(b"\n")  # keep-alive blank line
        await response.write(watch_lines(
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "3"}}}))
        await response.write_eof()
        return response

    fake_api.responder = stream
    events = [e async for e in client.watch(kube.SERVICES, namespace="ns", resource_version="1",
                                            timeout_seconds=5)]
    assert [(e.type, e.resource_version) for e in events] == [
        (kube.EventType.ADDED, "2"), (kube.EventType.BOOKMARK, "3")]
    assert fake_api.seen[0].query == {"watch": "true", "allowWatchBookmarks": "true",
                                      "resourceVersion": "1", "timeoutSeconds": "5"}


async def test_watch_error_event_raises_gone(client: kube.KubeClient, fake_api: FakeApi) -> None:
    async def expired(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(watch_lines({"type": "ERROR", "object": {
            "kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}}))
        await response.write_eof()
        return response

    fake_api.responder = expired
    with pytest.raises(kube.GoneError):
        async for _ in client.watch(kube.SERVICES, resource_version="1"):
            pass


async def test_watch_closes_the_connection_when_abandoned(
        client: kube.KubeClient, fake_api: FakeApi) -> None:
    closed = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(watch_lines(
            {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "2"}}}))
        try:
            await asyncio.sleep(3600)
        finally:
            closed.set()
        return response

    fake_api.responder = endless
    events = client.watch(kube.SERVICES)
    async with contextlib.aclosing(events):
        async for _ in events:
            break
    await asyncio.wait_for(closed.wait(), 5)


# -- the client-side rate limit (-kubeconfig-qps / -kubeconfig-burst) ------------------------------


def frozen_bucket(*, burst: int, qps: float = 1.0) -> kube.TokenBucket:
    """A bucket whose clock never moves: no token comes back, so what is left is what was taken."""
    return kube.TokenBucket(qps=qps, burst=burst, clock=lambda: 0.0)


def limited(fake_api: FakeApi, bucket: kube.TokenBucket) -> kube.KubeClient:
    return kube.KubeClient(ApiClient(Configuration(host=fake_api.url)), owns_api=True,
                           rate_limiter=bucket)


def tokens_left(bucket: kube.TokenBucket) -> int:
    """Takes tokens until one would have to wait; how many were free."""
    free = 0
    while bucket.reserve() == 0:
        free += 1
    return free


async def test_every_request_takes_a_token_and_a_watch_only_one(fake_api: FakeApi) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            return web.json_response({"metadata": {"resourceVersion": "1"}, "items": []})
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(watch_lines(*(
            {"type": "ADDED", "object": {"metadata": {"name": f"s{i}", "resourceVersion": str(i)}}}
            for i in range(2, 12))))
        await response.write_eof()
        return response

    fake_api.responder = answer
    bucket = frozen_bucket(burst=10)
    async with limited(fake_api, bucket) as client:
        await client.get(kube.SERVICES, "web", namespace="ns")
        await client.list(kube.SERVICES, namespace="ns")
        events = [e async for e in client.watch(kube.SERVICES, namespace="ns")]
        fenced = client.fenced(lambda: False)  # shares the bucket
        await fenced.get(kube.SERVICES, "web", namespace="ns")
        with pytest.raises(kube.WriteFencedError):  # refused before it asks for a token
            await fenced.patch(kube.SERVICES, "web", {}, namespace="ns")
    assert len(events) == 10
    assert len(fake_api.seen) == 4
    assert tokens_left(bucket) == 10 - 4  # ten watch events cost one token, not ten


async def test_a_request_waits_for_its_token_before_it_is_sent(fake_api: FakeApi) -> None:
    bucket = frozen_bucket(burst=1, qps=0.001)  # the second token is 1000 s away
    async with limited(fake_api, bucket) as client:
        await client.get(kube.SERVICES, "web", namespace="ns")
        waiting = asyncio.create_task(client.get(kube.SERVICES, "web", namespace="ns"))
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(fake_api.seen) == 1
        assert not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    assert len(fake_api.seen) == 1
    assert bucket.reserve() == pytest.approx(1000.0)  # the abandoned wait gave its slot back


async def test_a_throttled_clone_has_a_bucket_of_its_own(fake_api: FakeApi) -> None:
    shared, own = frozen_bucket(burst=5), frozen_bucket(burst=5)
    async with limited(fake_api, shared) as client:
        elector = client.throttled(own)
        for _ in range(3):
            await elector.get(kube.LEASES, "flagger", namespace="ns")
        await client.throttled(None).get(kube.SERVICES, "web", namespace="ns")  # unlimited
    assert len(fake_api.seen) == 4
    assert (tokens_left(shared), tokens_left(own)) == (5, 2)


async def test_a_write_that_lost_its_lease_while_waiting_is_not_sent(fake_api: FakeApi) -> None:
    allowed = True
    bucket = frozen_bucket(burst=1, qps=20)  # the second request waits 50 ms
    async with limited(fake_api, bucket) as client:
        fenced = client.fenced(lambda: allowed)
        await fenced.get(kube.SERVICES, "web", namespace="ns")
        write = asyncio.create_task(fenced.patch(kube.SERVICES, "web", {"a": 1}, namespace="ns"))
        await asyncio.sleep(0)
        allowed = False  # the lease is lost while the write waits for its token
        with pytest.raises(kube.WriteFencedError):
            await write
    assert [r.method for r in fake_api.seen] == ["GET"]
