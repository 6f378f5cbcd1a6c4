"""The event webhook: Flagger's payload, hook selection and HTTP rules, against a local server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from flaggerpy.canary.eventhook import EventWebhooks, event_hooks, event_payload
from flaggerpy.models import Canary
from flaggerpy.settings import Settings


@pytest.fixture(autouse=True)
def _no_event_webhook_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENT_WEBHOOK_URL", raising=False)


@dataclass
class Sink:
    """An event webhook receiver: records JSON bodies, answers as scripted."""

    answers: list[int] = field(default_factory=list)
    delay: float = 0.0
    bodies: list[Any] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        assert request.method == "POST"
        assert request.content_type == "application/json"
        self.bodies.append(json.loads(await request.read()))
        self.paths.append(request.path_qs)
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.answers.pop(0) if len(self.answers) > 1 else (
            self.answers[0] if self.answers else 200)
        return web.Response(status=status, text=f"answer {status}")


Serve = Callable[[Sink], Awaitable[str]]


@pytest.fixture
async def serve(aiohttp_raw_server: Any) -> Serve:
    async def start(sink: Sink) -> str:
        server = await aiohttp_raw_server(sink.handle)
        return str(server.make_url("")).rstrip("/")

    return start


def make_canary(*, webhooks: list[dict[str, Any]] | None = None, phase: str | None = None
                ) -> Canary:
    body: dict[str, Any] = {
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "analysis": {"interval": "1m", "threshold": 5, "stepWeight": 10,
                              **({"webhooks": webhooks} if webhooks else {})}},
    }
    if phase:
        body["status"] = {"phase": phase}
    return Canary.model_validate(body)


def test_payload_is_flaggers() -> None:
    payload = event_payload(
        make_canary(phase="Progressing"), "New revision detected! Scaling up podinfo.test",
        event_type="Normal", checksum="abc123", now=1578607635.167,
        metadata={"eventType": "ignored", "team": "payments"},
    )
    assert payload == {
        "name": "podinfo",
        "namespace": "test",
        "phase": "Progressing",
        "checksum": "abc123",
        "metadata": {
            "eventMessage": "New revision detected! Scaling up podinfo.test",
            "eventType": "Normal",  # the hook's metadata never overrides these three
            "timestamp": "1578607635167",
            "team": "payments",
        },
    }


def test_a_canary_without_status_has_an_empty_phase() -> None:
    assert event_payload(make_canary(), "x", event_type="Warning")["phase"] == ""


def test_the_canarys_event_hooks_replace_the_global_one() -> None:
    hooks = [{"name": "a", "type": "event", "url": "http://a/"},
             {"name": "gate", "type": "confirm-rollout", "url": "http://gate/"}]
    assert [h.name for h in event_hooks(make_canary(webhooks=hooks),
                                        global_url="http://global/")] == ["a"]
    assert [h.url for h in event_hooks(make_canary(), global_url="http://global/")] == [
        "http://global/"]
    assert event_hooks(make_canary()) == []


async def test_events_go_to_the_global_webhook(serve: Serve) -> None:
    sink = Sink()
    url = await serve(sink) + "/flagger-events?token=sEcReT"
    async with EventWebhooks(settings=Settings.load({"event-webhook": url})) as hooks:
        await hooks.send(make_canary(phase="Succeeded"), "Promotion completed!",
                         event_type="Normal")
        await hooks.send(make_canary(phase="Succeeded"), "second", event_type="Warning")
        assert await hooks.flush(within=5)
    assert sink.paths == ["/flagger-events?token=sEcReT"] * 2
    assert [b["metadata"]["eventMessage"] for b in sink.bodies] == ["Promotion completed!",
                                                                     "second"]
    assert sink.bodies[1]["metadata"]["eventType"] == "Warning"
    assert sink.bodies[0]["phase"] == "Succeeded"


async def test_retries_follow_the_hook_and_skip_501(serve: Serve) -> None:
    flaky, not_implemented = Sink(answers=[503, 202]), Sink(answers=[501])
    flaky_url, ni_url = await serve(flaky), await serve(not_implemented)
    hooks_spec = [{"name": "flaky", "type": "event", "url": flaky_url, "retries": 1},
                  {"name": "ni", "type": "event", "url": ni_url, "retries": 3}]
    with capture_logs() as logs:
        async with EventWebhooks(settings=Settings.load()) as hooks:
            await hooks.send(make_canary(webhooks=hooks_spec), "x", event_type="Normal")
            assert await hooks.flush(within=10)
    assert len(flaky.bodies) == 2  # 503 retried once, 202 is success
    assert len(not_implemented.bodies) == 1  # 501 is final, as in go-retryablehttp
    [failed] = [e for e in logs if e["event"] == "event_webhook_failed"]
    assert failed["webhook"] == "ni"
    assert failed["canary"] == "podinfo.test"
    assert "HTTP 501 answer 501" in failed["error"]


async def test_203_is_a_failure_and_secrets_stay_out_of_logs(serve: Serve) -> None:
    sink = Sink(answers=[203])
    url = await serve(sink) + "/hook?token=sEcReT"
    with capture_logs() as logs:
        async with EventWebhooks(settings=Settings.load({"event-webhook": url})) as hooks:
            await hooks.send(make_canary(), "x", event_type="Normal")
            assert await hooks.flush(within=5)
    [failed] = [e for e in logs if e["event"] == "event_webhook_failed"]
    assert failed["error"] == "HTTP 203 answer 203"
    assert "sEcReT" not in repr(logs)


async def test_send_never_waits_for_the_webhook(serve: Serve) -> None:
    url = await serve(Sink(delay=30))
    hook = [{"name": "slow", "type": "event", "url": url, "timeout": "200ms"}]
    async with EventWebhooks(settings=Settings.load()) as hooks:
        started = time.monotonic()
        await hooks.send(make_canary(webhooks=hook), "x", event_type="Normal")
        assert time.monotonic() - started < 0.05
        assert await hooks.flush(within=5)
        assert time.monotonic() - started < 2
