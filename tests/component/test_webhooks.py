"""Webhook calls against real HTTP(S) servers on 127.0.0.1, under fake loop time.

Each test starts a :class:`HookServer` (an aiohttp server in the test's own
event loop) that records every request and answers as scripted. Under
looptime the server's sleeps, the client's timeouts and the retry backoff
all run on the fake clock, so a 30 s backoff or a hung receiver costs no
real time and the elapsed loop time can be asserted exactly.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import itertools
import json
import socket
import ssl
import subprocess
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from flaggerpy.canary.webhooks import (
    ATTEMPT_HEADER,
    BODY_LIMIT,
    DELIVERY_HEADER,
    HookResult,
    WebhookCaller,
    checksum,
)
from flaggerpy.models import Canary, CanaryPhase, CanaryStatus, CanaryWebhook, HookType

pytestmark = pytest.mark.looptime

STATUS: dict[str, Any] = {
    "phase": "Progressing",
    "lastAppliedSpec": "5d8f6c9b7",
    "trackedConfigs": {"configmap/podinfo-config": "6b9c8d7e5"},
}


# --- a scriptable receiver ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hit:
    """One request as the server saw it, with the loop time it arrived at."""

    path: str
    headers: dict[str, str]
    body: Any
    at: float


@dataclass(frozen=True, slots=True)
class Answer:
    status: int = 200
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # never answer


HANG = Answer(hang=True)


class HookServer:
    """Answers each path from its own script (the last answer repeats); records every request."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self._scripts: dict[str, deque[Answer]] = {}
        self.url = ""

    def script(self, path: str, *answers: Answer | int) -> str:
        """Sets what ``path`` answers, in order; returns its URL."""
        self._scripts[path] = deque(a if isinstance(a, Answer) else Answer(a) for a in answers)
        return self.url + path

    def paths(self) -> list[str]:
        return [hit.path for hit in self.hits]

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        text = await request.text()
        self.hits.append(Hit(path=request.path, headers=dict(request.headers),
                             body=json.loads(text) if text else None,
                             at=asyncio.get_running_loop().time()))
        script = self._scripts.get(request.path) or deque([Answer(404, "no such hook")])
        answer = script.popleft() if len(script) > 1 else script[0]
        if answer.hang:
            await asyncio.Event().wait()
        return web.Response(status=answer.status, text=answer.body, headers=answer.headers)


Serve = Callable[..., Awaitable[HookServer]]


@pytest.fixture
def serve(aiohttp_raw_server: Any) -> Serve:
    async def start(**kwargs: Any) -> HookServer:
        hooks = HookServer()
        server = await aiohttp_raw_server(hooks.handle, **kwargs)
        hooks.url = str(server.make_url("")).rstrip("/")
        return hooks

    return start


@pytest.fixture
async def caller() -> Any:
    async with WebhookCaller() as webhooks:
        yield webhooks


def make_canary(*hooks: dict[str, Any], status: dict[str, Any] | None = STATUS) -> Canary:
    document: dict[str, Any] = {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {"interval": "1m", "threshold": 5, "webhooks": list(hooks)},
        },
    }
    if status is not None:
        document["status"] = status
    return Canary.model_validate(document)


def hook(name: str, url: str, type_: str | None = "pre-rollout", **fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"name": name, "url": url, **fields}
    if type_ is not None:
        document["type"] = type_
    return document


def only_hook(canary: Canary) -> CanaryWebhook:
    [webhook] = canary.spec.analysis.webhooks or []
    return webhook


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- payload and headers ------------------------------------------------------------------------


async def test_posts_flaggers_payload_as_json(serve: Serve, caller: WebhookCaller) -> None:
    hooks = await serve()
    url = hooks.script("/gate", 200)
    canary = make_canary(hook("load test", url, "rollout",
                              metadata={"type": "cmd", "cmd": "hey -z 1m http://podinfo"}))

    result = await caller.call(canary, only_hook(canary), phase=CanaryPhase.PROGRESSING)

    assert result.ok
    [hit] = hooks.hits
    assert hit.body == {
        "name": "podinfo",
        "namespace": "test",
        "phase": "Progressing",
        "checksum": checksum(canary.status),
        "metadata": {"type": "cmd", "cmd": "hey -z 1m http://podinfo"},
    }
    assert list(hit.body) == ["name", "namespace", "phase", "checksum", "metadata"]
    assert hit.headers["Content-Type"] == "application/json"
    assert hit.headers[ATTEMPT_HEADER] == "1"
    assert len(hit.headers[DELIVERY_HEADER]) == 32


@pytest.mark.parametrize("metadata", [
    pytest.param(None, id="absent"),
    pytest.param({}, id="empty"),
])
async def test_metadata_is_left_out_when_empty(
        serve: Serve, caller: WebhookCaller, metadata: dict[str, str] | None,
) -> None:
    hooks = await serve()
    fields = {} if metadata is None else {"metadata": metadata}
    canary = make_canary(hook("gate", hooks.script("/gate", 200), **fields), status=None)

    await caller.call(canary, only_hook(canary), phase="Initialized")

    [hit] = hooks.hits
    assert hit.body == {"name": "podinfo", "namespace": "test", "phase": "Initialized",
                        "checksum": checksum(None)}


# --- what counts as success ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202])
async def test_200_to_202_pass(serve: Serve, caller: WebhookCaller, status: int) -> None:
    hooks = await serve()
    canary = make_canary(hook("gate", hooks.script("/gate", Answer(status, "Approved"))))

    result = await caller.call(canary, only_hook(canary), phase="Progressing")

    assert result == HookResult(webhook=only_hook(canary), ok=True, status=status,
                                message="Approved", attempts=1)


@pytest.mark.parametrize(("answer", "message"), [
    pytest.param(Answer(203, "non-authoritative"), "non-authoritative", id="203"),
    pytest.param(Answer(204), "204 No Content", id="204-empty-body"),
    pytest.param(Answer(400, "metadata not found in payload"), "metadata not found in payload",
                 id="400"),
    pytest.param(Answer(403, "Forbidden"), "Forbidden", id="403"),
    pytest.param(Answer(404, "not here"), "not here", id="404"),
    pytest.param(Answer(409, ""), "409 Conflict", id="409-empty-body"),
])
async def test_anything_else_fails_with_the_body_as_message(
        serve: Serve, caller: WebhookCaller, answer: Answer, message: str,
) -> None:
    hooks = await serve()
    canary = make_canary(hook("gate", hooks.script("/gate", answer), retries=3))

    result = await caller.call(canary, only_hook(canary), phase="Progressing")

    assert not result.ok
    assert result.status == answer.status
    assert result.message == message
    assert len(hooks.hits) == 1  # an answer is final: not retried


async def test_a_large_body_is_cut_at_the_limit(serve: Serve, caller: WebhookCaller) -> None:
    hooks = await serve()
    canary = make_canary(hook("gate", hooks.script("/gate", Answer(400, "x" * (BODY_LIMIT * 3)))))

    result = await caller.call(canary, only_hook(canary), phase="Progressing")

    assert result.message == "x" * BODY_LIMIT


# --- retries ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
async def test_retries_on_5xx_and_429_then_fails_with_the_last_body(
        serve: Serve, caller: WebhookCaller, status: int, looptime: float,
) -> None:
    hooks = await serve()
    canary = make_canary(hook("helm test", hooks.script("/", Answer(status, "command failed")),
                              retries=3))

    result = await caller.call(canary, only_hook(canary), phase="Progressing")

    assert not result.ok
    assert (result.status, result.message, result.attempts) == (status, "command failed", 4)
    assert [hit.at for hit in hooks.hits] == [0, 1, 3, 7]  # waits of 1 s, 2 s, 4 s
    assert looptime == 7


async def test_a_retry_that_succeeds_passes(
        serve: Serve, caller: WebhookCaller, looptime: float,
) -> None:
    hooks = await serve()
    canary = make_canary(hook("gate", hooks.script("/", 503, 500, Answer(202, "queued")),
                              retries=5))

    result = await caller.call(canary, only_hook(canary), phase="Progressing")

    assert (result.ok, result.status, result.message, result.attempts) == (True, 202, "queued", 3)
    assert looptime == 3


@pytest.mark.parametrize("status", [501, 400, 401, 404, 422])
async def test_no_retry_on_501_or_4xx(serve: Serve, caller: WebhookCaller, status: int) -> None:
    hooks = await serve()
    canary = make_canary(hook("gate", hooks.script("/", Answer(status, "no")), retries=4))

    result = await caller.call(canary, only_hook(canary), phase="Progressing")

    assert (result.ok, result.status, result.attempts) == (False, status, 1)
    assert len(hooks.hits) == 1


async def test_no_retries_by_default(serve: Serve, caller: WebhookCaller) -> None:
    hooks = await serve()
    canary = make_canary(hook("gate", hooks.script("/", Answer(500, "boom"))))

    result = await caller.call(canary, only_hook(canary), phase="Progressing")

    assert (result.ok, result.message, result.attempts) == (False, "boom", 1)


async def test_backoff_doubles_up_to_30_seconds(
        serve: Serve, caller: WebhookCaller, looptime: float,
) -> None:
    hooks = await serve()
    canary = make_canary(hook("gate", hooks.script("/", 500), retries=7))

    await caller.call(canary, only_hook(canary), phase="Progressing")

    times = [hit.at for hit in hooks.hits]
    assert [b - a for a, b in itertools.pairwise(times)] == [1, 2, 4, 8, 16, 30, 30]


@pytest.mark.parametrize(("retry_after", "wait"), [
    pytest.param("7", 7, id="seconds"),
    pytest.param("0", 0, id="zero"),
    pytest.param("600", 30, id="capped-at-30s"),
    pytest.param("soon", 1, id="unparsable-falls-back-to-backoff"),
])
async def test_retry_after_is_honoured_on_429(
        serve: Serve, caller: WebhookCaller, retry_after: str, wait: float,
) -> None:
    hooks = await serve()
    busy = Answer(429, "slow down", headers={"Retry-After": retry_after})
    canary = make_canary(hook("gate", hooks.script("/", busy, 200), retries=1))

    result = await caller.call(canary, only_hook(canary), phase="Progressing")

    assert result.ok
    assert hooks.hits[1].at - hooks.hits[0].at == wait


async def test_retry_after_as_an_http_date_is_honoured_on_503(
        serve: Serve, caller: WebhookCaller,
) -> None:
    hooks = await serve()
    when = email.utils.formatdate(time.time() + 10, usegmt=True)
    busy = Answer(503, "maintenance", headers={"Retry-After": when})
    canary = make_canary(hook("gate", hooks.script("/", busy, 200), retries=1))

    assert (await caller.call(canary, only_hook(canary), phase="Progressing")).ok

    assert 8 < hooks.hits[1].at - hooks.hits[0].at <= 10  # the date has whole seconds


async def test_backoff_bounds_are_injectable(serve: Serve, looptime: float) -> None:
    hooks = await serve()
    canary = make_canary(hook("gate", hooks.script("/", 500), retries=3))

    async with WebhookCaller(backoff_min=0.01, backoff_max=0.02) as quick:
        result = await quick.call(canary, only_hook(canary), phase="Progressing")

    assert result.attempts == 4
    assert looptime == pytest.approx(0.05)  # 0.01 + 0.02 + 0.02


async def test_every_attempt_of_a_call_carries_the_same_delivery_id(
        serve: Serve, caller: WebhookCaller,
) -> None:
    hooks = await serve()
    canary = make_canary(hook("helm test", hooks.script("/", 500, 500, 200), retries=2,
                              metadata={"type": "bash", "cmd": "helm test podinfo"}))

    await caller.call(canary, only_hook(canary), phase="Progressing")
    await caller.call(canary, only_hook(canary), phase="Progressing")

    first, second = hooks.hits[:3], hooks.hits[3:]
    assert [hit.headers[ATTEMPT_HEADER] for hit in first] == ["1", "2", "3"]
    assert len({hit.headers[DELIVERY_HEADER] for hit in first}) == 1
    assert second[0].headers[ATTEMPT_HEADER] == "1"
    # without a tick, a second call is a new delivery: the receiver must run it again
    assert second[0].headers[DELIVERY_HEADER] != first[0].headers[DELIVERY_HEADER]


async def test_a_tick_makes_the_delivery_id_stable_across_calls(
        serve: Serve, caller: WebhookCaller,
) -> None:
    hooks = await serve()
    canary = make_canary(hook("helm test", hooks.script("/", 200)))
    webhook = only_hook(canary)

    await caller.call(canary, webhook, phase="Progressing", tick="iteration-3")
    await caller.call(canary, webhook, phase="Progressing", tick="iteration-3")  # a restart
    await caller.call(canary, webhook, phase="Progressing", tick="iteration-4")
    await caller.call(canary, webhook, phase="Failed", tick="iteration-3")
    changed = make_canary(hook("helm test", hooks.url + "/"),
                          status={**STATUS, "lastAppliedSpec": "new-revision"})
    await caller.call(changed, only_hook(changed), phase="Progressing", tick="iteration-3")

    ids = [hit.headers[DELIVERY_HEADER] for hit in hooks.hits]
    assert ids[0] == ids[1]
    assert len(set(ids)) == 4  # tick, phase and revision each make a new delivery


# --- timeouts and transport errors ------------------------------------------------------------


async def test_timeout_is_honoured(serve: Serve, caller: WebhookCaller, looptime: float) -> None:
    hooks = await serve()
    canary = make_canary(hook("slow", hooks.script("/", HANG), timeout="2s"))

    result = await caller.call(canary, only_hook(canary), phase="Progressing")

    assert not result.ok
    assert result.status is None
    assert result.message == (f"POST {hooks.url} giving up after 1 attempt(s): "
                              "timed out after 2s")
    assert looptime == 2


@pytest.mark.parametrize("given", [
    pytest.param(None, id="unset"),
    pytest.param("", id="empty"),
    pytest.param("5", id="one-character"),
])
async def test_default_timeout_is_10s(
        serve: Serve, caller: WebhookCaller, looptime: float, given: str | None,
) -> None:
    hooks = await serve()
    fields = {} if given is None else {"timeout": given}
    canary = make_canary(hook("slow", hooks.script("/", HANG), **fields))

    result = await caller.call(canary, only_hook(canary), phase="Progressing")

    assert result.message.endswith("timed out after 10s")
    assert looptime == 10


async def test_a_hung_server_cannot_stall_a_call_beyond_its_bound(
        serve: Serve, caller: WebhookCaller, looptime: float,
) -> None:
    """The bound is (retries + 1) x timeout plus the backoff between attempts."""
    hooks = await serve()
    canary = make_canary(hook("slow", hooks.script("/", HANG), timeout="3s", retries=2))

    result = await caller.call(canary, only_hook(canary), phase="Progressing")

    assert (result.ok, result.attempts) == (False, 3)
    assert result.message.endswith("giving up after 3 attempt(s): timed out after 3s")
    assert [hit.at for hit in hooks.hits] == [0, 4, 9]  # 3 s timeout, 1 s wait, 3 s, 2 s wait
    assert looptime == 12


async def test_a_slow_answer_within_the_timeout_passes(
        aiohttp_raw_server: Any, caller: WebhookCaller, looptime: float,
) -> None:
    async def slow(request: web.BaseRequest) -> web.Response:
        await asyncio.sleep(59)
        return web.Response(text="done")

    server = await aiohttp_raw_server(slow)
    canary = make_canary(hook("helm test", str(server.make_url("/")), timeout="1m"))

    result = await caller.call(canary, only_hook(canary), phase="Progressing")

    assert (result.ok, result.message) == (True, "done")
    assert looptime == 59


async def test_connection_refused_is_retried_then_reported(caller: WebhookCaller) -> None:
    port = free_port()
    canary = make_canary(hook("gone", f"http://127.0.0.1:{port}/hook", retries=1))

    result = await caller.call(canary, only_hook(canary), phase="Progressing")

    assert (result.ok, result.status, result.attempts) == (False, None, 2)
    assert result.message.startswith(
        f"POST http://127.0.0.1:{port}/… giving up after 2 attempt(s): "
        f"cannot connect to 127.0.0.1:{port}")


@pytest.mark.parametrize(("given", "url"), [
    pytest.param("10 seconds", "http://127.0.0.1:9/", id="bad-timeout"),
    pytest.param("10s", "ftp://127.0.0.1/x", id="unsupported-scheme"),
    pytest.param("10s", "http://", id="no-host"),
])
async def test_a_hook_that_cannot_be_called_fails_without_retrying(
        caller: WebhookCaller, given: str, url: str, looptime: float,
) -> None:
    canary = make_canary(hook("broken", url, timeout=given, retries=3))

    result = await caller.call(canary, only_hook(canary), phase="Progressing")

    assert not result.ok
    assert result.attempts <= 1
    assert looptime == 0


# --- hook lists ---------------------------------------------------------------------------------


async def test_hooks_run_in_list_order_and_stop_at_the_first_failure(
        serve: Serve, caller: WebhookCaller,
) -> None:
    hooks = await serve()
    canary = make_canary(
        hook("first", hooks.script("/first", 200)),
        hook("a gate", hooks.script("/gate", 200), "confirm-rollout"),
        hook("second", hooks.script("/second", Answer(403, "closed"))),
        hook("third", hooks.script("/third", 200)),
    )
    seen: list[HookResult] = []

    failed = await caller.run(canary, HookType.PRE_ROLLOUT, phase="Progressing",
                              on_result=seen.append)

    assert failed is not None
    assert (failed.webhook.name, failed.message) == ("second", "closed")
    assert hooks.paths() == ["/first", "/second"]
    assert [(r.webhook.name, r.ok) for r in seen] == [("first", True), ("second", False)]


async def test_all_passing_or_none_defined_is_none(serve: Serve, caller: WebhookCaller) -> None:
    hooks = await serve()
    canary = make_canary(
        hook("one", hooks.script("/one", 200), "confirm-promotion"),
        hook("two", hooks.script("/two", 202), "confirm-promotion"),
    )
    seen: list[str] = []

    async def record(result: HookResult) -> None:  # an async callback is awaited
        seen.append(result.webhook.name)

    assert await caller.run(canary, HookType.CONFIRM_PROMOTION, phase="Progressing",
                            on_result=record) is None
    assert await caller.run(canary, HookType.CONFIRM_TRAFFIC_INCREASE,
                            phase="Progressing") is None
    assert hooks.paths() == ["/one", "/two"]
    assert seen == ["one", "two"]


@pytest.mark.parametrize("asked", [HookType.ROLLOUT, HookType.UNSET])
async def test_untyped_hooks_are_rollout_hooks(
        serve: Serve, caller: WebhookCaller, asked: HookType,
) -> None:
    hooks = await serve()
    canary = make_canary(
        hook("typed", hooks.script("/typed", 200), "rollout"),
        hook("empty", hooks.script("/empty", 200), ""),
        hook("missing", hooks.script("/missing", 200), None),
        hook("pre", hooks.script("/pre", 200), "pre-rollout"),
    )

    assert await caller.run(canary, asked, phase="Progressing") is None
    assert hooks.paths() == ["/typed", "/empty", "/missing"]


async def test_run_takes_the_type_as_a_plain_string(serve: Serve, caller: WebhookCaller) -> None:
    hooks = await serve()
    canary = make_canary(hook("untyped", hooks.script("/u", 200), None),
                         hook("pre", hooks.script("/p", 200), "pre-rollout"))

    assert await caller.run(canary, "", phase="Progressing") is None
    assert await caller.run(canary, "pre-rollout", phase="Progressing") is None
    assert hooks.paths() == ["/u", "/p"]


@pytest.mark.parametrize("hook_type", [HookType.EVENT, HookType.ROLLBACK])
async def test_run_refuses_event_and_rollback_types(
        caller: WebhookCaller, hook_type: HookType,
) -> None:
    with pytest.raises(ValueError, match=hook_type.value):
        await caller.run(make_canary(), hook_type, phase="Progressing")


async def test_every_gate_type_is_run_with_the_phase_given(
        serve: Serve, caller: WebhookCaller,
) -> None:
    hooks = await serve()
    types = ["confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase",
             "confirm-promotion", "post-rollout"]
    canary = make_canary(*(hook(t, hooks.script(f"/{t}", 200), t) for t in types))

    for type_ in types:
        assert await caller.run(canary, HookType(type_), phase=f"phase-{type_}") is None

    assert [(hit.path, hit.body["phase"]) for hit in hooks.hits] == [
        (f"/{t}", f"phase-{t}") for t in types]


# --- rollback hooks -----------------------------------------------------------------------------


async def test_the_first_rollback_hook_that_passes_means_roll_back(
        serve: Serve, caller: WebhookCaller,
) -> None:
    hooks = await serve()
    canary = make_canary(
        hook("closed", hooks.script("/closed", Answer(403, "Forbidden")), "rollback"),
        hook("not a rollback hook", hooks.script("/other", 200), "rollout"),
        hook("open", hooks.script("/open", Answer(200, "Approved")), "rollback"),
        hook("later", hooks.script("/later", 200), "rollback"),
    )
    seen: list[HookResult] = []

    chosen = await caller.rollback_requested(canary, phase="WaitingPromotion",
                                             on_result=seen.append)

    assert chosen is not None
    assert chosen.name == "open"
    assert hooks.paths() == ["/closed", "/open"]
    assert hooks.hits[0].body["phase"] == "WaitingPromotion"
    assert [(r.webhook.name, r.ok) for r in seen] == [("closed", False), ("open", True)]


async def test_no_rollback_when_no_hook_signals_one(serve: Serve, caller: WebhookCaller) -> None:
    hooks = await serve()
    canary = make_canary(
        hook("forbidden", hooks.script("/a", 403), "rollback"),
        hook("no content", hooks.script("/b", 204), "rollback"),
        hook("down", f"http://127.0.0.1:{free_port()}/", "rollback"),
    )

    assert await caller.rollback_requested(canary, phase="Progressing") is None
    assert await caller.rollback_requested(make_canary(), phase="Progressing") is None
    assert hooks.paths() == ["/a", "/b"]


# --- event hooks --------------------------------------------------------------------------------


def canary_object(*hooks: dict[str, Any]) -> dict[str, Any]:
    return make_canary(*hooks).to_dict()


async def test_event_payload_has_the_event_fields_and_hook_metadata(
        serve: Serve, caller: WebhookCaller,
) -> None:
    hooks = await serve()
    obj = canary_object(
        hook("sink", hooks.script("/events", 202), "event",
             metadata={"eventMessage": "overridden?", "timestamp": "0",
                       "environment": "test", "cluster": "eu-1"}),
        hook("gate", hooks.script("/gate", 200), "confirm-rollout"),
    )
    before = time.time_ns() // 1_000_000

    await caller.event(obj, message="Starting canary analysis for podinfo.test",
                       event_type="Normal", global_url=hooks.url + "/global")

    after = time.time_ns() // 1_000_000
    [hit] = hooks.hits
    assert hit.path == "/events"
    timestamp = hit.body["metadata"].pop("timestamp")
    assert before <= int(timestamp) <= after
    assert hit.body == {
        "name": "podinfo",
        "namespace": "test",
        "phase": "Progressing",
        "checksum": checksum(CanaryStatus.model_validate(STATUS)),
        "metadata": {
            "eventMessage": "Starting canary analysis for podinfo.test",
            "eventType": "Normal",
            "environment": "test",
            "cluster": "eu-1",
        },
    }


async def test_all_event_hooks_of_the_canary_are_called_in_order(
        serve: Serve, caller: WebhookCaller,
) -> None:
    hooks = await serve()
    obj = canary_object(
        hook("first", hooks.script("/first", 500), "event"),
        hook("second", hooks.script("/second", 200), "event"),
    )

    with capture_logs() as logs:
        await caller.event(obj, message="Halt advancement", event_type="Warning",
                           global_url=None)

    assert hooks.paths() == ["/first", "/second"]
    [failure] = [line for line in logs if line["event"] == "event_webhook_failed"]
    assert (failure["webhook"], failure["status"], failure["canary"]) == (
        "first", 500, "podinfo.test")


async def test_the_global_event_webhook_serves_canaries_without_event_hooks(
        serve: Serve, caller: WebhookCaller,
) -> None:
    hooks = await serve()
    hooks.script("/global", 200)
    obj = canary_object(hook("gate", hooks.url + "/gate", "confirm-rollout"))
    del obj["status"]

    await caller.event(obj, message="Initialization done! podinfo.test", event_type="Normal",
                       global_url=hooks.url + "/global")
    await caller.event(canary_object(), message="no sink", event_type="Normal", global_url=None)
    await caller.event(canary_object(), message="no sink", event_type="Normal", global_url="")

    [hit] = hooks.hits
    assert hit.path == "/global"
    assert hit.body["phase"] == ""
    assert hit.body["checksum"] == checksum(None)
    assert hit.body["metadata"]["eventMessage"] == "Initialization done! podinfo.test"


async def test_a_malformed_event_hook_still_replaces_the_global_one(
        serve: Serve, caller: WebhookCaller,
) -> None:
    hooks = await serve()
    obj = canary_object()
    obj["spec"]["analysis"]["webhooks"] = [{"name": "no url", "type": "event"}]

    with capture_logs() as logs:
        await caller.event(obj, message="m", event_type="Normal",
                           global_url=hooks.script("/global", 200))

    assert hooks.hits == []
    assert [line["event"] for line in logs] == ["event_webhook_invalid"]


async def test_event_accepts_a_canary_model(serve: Serve, caller: WebhookCaller) -> None:
    hooks = await serve()
    canary = make_canary(hook("sink", hooks.script("/e", 200), "event"))

    await caller.event(canary, message="m", event_type="Normal", global_url=None)

    assert hooks.paths() == ["/e"]


async def test_event_errors_are_logged_never_raised(caller: WebhookCaller) -> None:
    port = free_port()
    obj = canary_object(hook("sink", f"http://127.0.0.1:{port}/e", "event"))
    obj["spec"]["analysis"]["webhooks"].append({"name": "bad", "type": "event"})  # no url

    with capture_logs() as logs:
        await caller.event(obj, message="m", event_type="Warning", global_url=None)
        await caller.event({"metadata": 7, "spec": []}, message="m", event_type="Normal",
                           global_url=f"http://127.0.0.1:{port}/g")

    events = [line["event"] for line in logs]
    assert events.count("event_webhook_failed") == 2
    assert "event_webhook_invalid" in events


async def test_event_hooks_use_their_retries(
        serve: Serve, caller: WebhookCaller, looptime: float,
) -> None:
    hooks = await serve()
    obj = canary_object(hook("sink", hooks.script("/e", 503, 200), "event", retries=1))

    await caller.event(obj, message="m", event_type="Normal", global_url=None)

    assert len(hooks.hits) == 2
    assert looptime == 1


async def test_event_hooks_read_a_short_timeout_as_10s(
        serve: Serve, caller: WebhookCaller, looptime: float,
) -> None:
    hooks = await serve()
    obj = canary_object(hook("sink", hooks.script("/e", HANG), "event", timeout="5"))

    with capture_logs() as logs:
        await caller.event(obj, message="m", event_type="Normal", global_url=None)

    assert len(hooks.hits) == 1
    assert looptime == 10
    [failure] = [line for line in logs if line["event"] == "event_webhook_failed"]
    assert failure["error"].endswith("timed out after 10s")


# --- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A server context with a self-signed certificate for 127.0.0.1, made by the openssl CLI."""
    folder: Path = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def test_a_self_signed_certificate_fails_verification_and_is_not_retried(
        serve: Serve, caller: WebhookCaller, self_signed: ssl.SSLContext,
) -> None:
    hooks = await serve(ssl=self_signed)
    assert hooks.url.startswith("https://")
    canary = make_canary(hook("tls", hooks.script("/", 200), retries=3))

    result = await caller.call(canary, only_hook(canary), phase="Progressing")

    assert (result.ok, result.attempts) == (False, 1)
    assert "certificate" in result.message
    assert hooks.hits == []


async def test_disable_tls_skips_certificate_verification(
        serve: Serve, caller: WebhookCaller, self_signed: ssl.SSLContext,
) -> None:
    hooks = await serve(ssl=self_signed)
    canary = make_canary(hook("tls", hooks.script("/", Answer(200, "ok")), disableTLS=True))

    result = await caller.call(canary, only_hook(canary), phase="Progressing")

    assert (result.ok, result.message) == (True, "ok")


# --- secrets and sessions -----------------------------------------------------------------------


def all_text(lines: Iterable[dict[str, Any]]) -> str:
    return json.dumps(list(lines), default=str)


async def test_credentials_in_urls_reach_neither_logs_nor_messages(
        serve: Serve, caller: WebhookCaller,
) -> None:
    hooks = await serve()
    hooks.script("/hook", Answer(500, "down"))
    secret_url = hooks.url.replace("http://", "http://admin:hunter2@") + "/hook?token=s3cr3t"
    canary = make_canary(hook("gate", secret_url, retries=1))
    gone = f"http://admin:hunter2@127.0.0.1:{free_port()}/x?token=s3cr3t"

    with capture_logs() as logs:
        failed = await caller.call(canary, only_hook(canary), phase="Progressing")
        refused = await caller.call(make_canary(hook("gone", gone)),
                                    CanaryWebhook(name="gone", url=gone), phase="Progressing")
        await caller.event(canary_object(hook("sink", gone, "event")), message="m",
                           event_type="Normal", global_url=None)

    text = all_text(logs) + failed.message + refused.message
    assert "webhook_retrying" in text
    assert "hunter2" not in text
    assert "s3cr3t" not in text


async def test_credentials_in_the_url_are_sent_as_basic_auth(
        serve: Serve, caller: WebhookCaller,
) -> None:
    """As Go's client does: how a token-protected load tester is addressed from a Canary."""
    hooks = await serve()
    url = hooks.script("/", 202).replace("http://", "http://token:s3cr3t@")
    canary = make_canary(hook("load test", url, "rollout"))

    assert (await caller.call(canary, only_hook(canary), phase="Progressing")).ok

    [hit] = hooks.hits
    assert hit.headers["Authorization"] == "Basic " + base64.b64encode(b"token:s3cr3t").decode()


async def test_a_shared_session_is_left_open(serve: Serve) -> None:
    hooks = await serve()
    canary = make_canary(hook("gate", hooks.script("/", 200)))
    async with aiohttp.ClientSession() as session:
        async with WebhookCaller(session=session) as shared:
            assert (await shared.call(canary, only_hook(canary), phase="Progressing")).ok
        assert not session.closed


async def test_an_owned_session_is_reopened_after_aclose(serve: Serve) -> None:
    hooks = await serve()
    canary = make_canary(hook("gate", hooks.script("/", 200)))
    webhooks = WebhookCaller()
    assert (await webhooks.call(canary, only_hook(canary), phase="Progressing")).ok
    await webhooks.aclose()
    assert (await webhooks.call(canary, only_hook(canary), phase="Progressing")).ok
    await webhooks.aclose()
    await webhooks.aclose()  # idempotent
