"""The Splunk provider against a local SignalFlow server written from Splunk's documentation.

``e2e/fakes/splunk.py`` speaks SignalFlow's documented WebSocket protocol (authenticate,
execute, control, metadata, binary data and error messages) and the REST metric list; these
tests check what the provider sent and how it read each conversation.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import socket
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from e2e.fakes.splunk import FakeSignalFlow
from flaggerpy.analysis import MetricsProvider
from flaggerpy.errors import (
    MetricsError,
    MultipleValuesError,
    NoValuesFoundError,
    ProviderOfflineError,
)
from flaggerpy.metrics.splunk import CHANNEL, SplunkProvider, decode_data_message

TOKEN = "SFTOKEN-secret-0123456789abcdef"
SECRET = {"sf_token_key": TOKEN.encode()}
PROGRAM = "data('demo.trans.latency', filter=filter('demo_host', 'podinfo')).mean().publish()"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSignalFlow]:
    async with FakeSignalFlow(token=TOKEN) as server:
        yield server


def provider(fake: FakeSignalFlow, **kwargs: Any) -> SplunkProvider:
    options: dict[str, Any] = {"address": fake.url, "secret": SECRET, "interval": "1m",
                               "backoff": 0.01}
    options.update(kwargs)
    return SplunkProvider(**options)


async def test_the_conversation_is_flaggers(fake: FakeSignalFlow) -> None:
    fake.set_series(PROGRAM, 42.5)
    before = int(time.time() * 1000)
    async with provider(fake, interval="30s") as client:
        assert await client.run_query(PROGRAM) == 42.5
    after = int(time.time() * 1000)
    (conversation,) = fake.conversations
    authenticate, execute = conversation.received
    assert authenticate == {"type": "authenticate", "token": TOKEN}
    assert conversation.authenticated
    assert execute["type"] == "execute"
    assert execute["program"] == PROGRAM
    assert execute["channel"] == CHANNEL
    assert execute["immediate"] is True
    assert before <= execute["stop"] <= after
    assert execute["stop"] - execute["start"] == 10 * 30_000
    assert "X-SF-Token" not in conversation.headers  # the token goes in the message only


@pytest.mark.parametrize("compress", [False, True])
async def test_one_series_over_time_answers_its_last_value(compress: bool) -> None:
    async with FakeSignalFlow(token=TOKEN, compress=compress) as fake:
        fake.set_values(PROGRAM, 1.0, 2.5, 7)  # the last is a long
        async with provider(fake) as client:
            assert await client.run_query(PROGRAM) == 7.0


async def test_several_time_series_are_multiple_values(fake: FakeSignalFlow) -> None:
    fake.set_series(PROGRAM, 1.0, 2.0)
    async with provider(fake) as client:
        with pytest.raises(MultipleValuesError, match=r"^invalid response: multiple values"):
            await client.run_query(PROGRAM)


async def test_no_data_is_no_values(fake: FakeSignalFlow) -> None:
    async with provider(fake) as client:
        with pytest.raises(NoValuesFoundError, match=r"^invalid response: no values found$"):
            await client.run_query("data('nothing.here').publish()")


async def test_nan_is_no_values(fake: FakeSignalFlow) -> None:
    fake.set_series(PROGRAM, math.nan)
    async with provider(fake) as client:
        with pytest.raises(NoValuesFoundError):
            await client.run_query(PROGRAM)


async def test_a_refused_program_is_an_error_with_signalflows_words(
        fake: FakeSignalFlow,
) -> None:
    fake.refuse(PROGRAM, 400, "ANALYTICS_PROGRAM_ERROR", "syntax error at line 1")
    async with provider(fake) as client:
        with pytest.raises(MetricsError) as caught:
            await client.run_query(PROGRAM)
    assert str(caught.value) == ("error executing query: 400 (ANALYTICS_PROGRAM_ERROR): "
                                 "syntax error at line 1")
    assert not isinstance(caught.value, ProviderOfflineError)
    assert len(fake.conversations) == 1  # not retried


async def test_a_wrong_token_is_refused_never_retried_never_repeated(
        fake: FakeSignalFlow,
) -> None:
    wrong = "WRONG-token-value"
    fake.set_series(PROGRAM, 1.0)
    with capture_logs() as logs:
        async with provider(fake, secret={"sf_token_key": wrong.encode()}) as client:
            assert wrong not in repr(client)
            with pytest.raises(MetricsError, match=r"before authentication") as query:
                await client.run_query(PROGRAM)
            with pytest.raises(ProviderOfflineError, match=r"Unauthorized") as online:
                await client.is_online()
    assert not isinstance(query.value, ProviderOfflineError)
    assert len(fake.conversations) == 1
    assert not fake.conversations[0].authenticated
    for text in (str(query.value), str(online.value), repr(logs)):
        assert wrong not in text
        assert TOKEN not in text


async def test_is_online_lists_one_metric(fake: FakeSignalFlow) -> None:
    async with provider(fake) as client:
        assert await client.is_online() is True
    assert fake.metric_requests == [{"query": "limit=1", "X-SF-Token": TOKEN}]


def test_the_endpoints_are_flaggers() -> None:
    def urls(address: str) -> tuple[str, str]:
        client = SplunkProvider(address=address, secret=SECRET, interval="1m")
        return client.stream_url, client.api_url

    assert urls("https://api.us1.signalfx.com") == (
        "wss://stream.us1.signalfx.com/v2/signalflow", "https://api.us1.signalfx.com")
    assert urls("wss://stream.us1.signalfx.com/") == (
        "wss://stream.us1.signalfx.com/v2/signalflow", "https://api.us1.signalfx.com")
    # only the scheme and the host change, unlike Flagger's replace in the whole URL
    assert urls("http://127.0.0.1:8080/api") == (
        "ws://127.0.0.1:8080/api/v2/signalflow", "http://127.0.0.1:8080/api")


async def test_a_dropped_connection_is_retried_then_offline(aiohttp_raw_server: Any) -> None:
    connections = 0

    async def drop(request: web.BaseRequest) -> web.StreamResponse:
        nonlocal connections
        connections += 1
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()
        await ws.send_json({"type": "authenticated", "orgId": "o", "userId": "u"})
        await ws.close()
        return ws

    server = await aiohttp_raw_server(drop)
    async with SplunkProvider(address=str(server.make_url("")), secret=SECRET, interval="1m",
                              attempts=2, backoff=0.01) as client:
        with pytest.raises(ProviderOfflineError,
                           match=r"before the end of the computation"):
            await client.run_query(PROGRAM)
    assert connections == 2


async def test_a_5xx_handshake_is_retried(aiohttp_raw_server: Any) -> None:
    answers = 0

    async def unavailable(request: web.BaseRequest) -> web.Response:
        nonlocal answers
        answers += 1
        return web.Response(status=503, text="unavailable")

    server = await aiohttp_raw_server(unavailable)
    async with SplunkProvider(address=str(server.make_url("")), secret=SECRET, interval="1m",
                              attempts=3, backoff=0.01) as client:
        with pytest.raises(ProviderOfflineError, match=r"handshake answered 503"):
            await client.run_query(PROGRAM)
    assert answers == 3


async def test_a_server_that_never_ends_the_channel_is_given_up(aiohttp_raw_server: Any) -> None:
    async def silent(request: web.BaseRequest) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await asyncio.sleep(60)
        return ws

    server = await aiohttp_raw_server(silent)
    async with SplunkProvider(address=str(server.make_url("")), secret=SECRET, interval="1m",
                              timeout=0.3, attempts=2, backoff=0.01) as client:
        with pytest.raises(ProviderOfflineError, match=r"within 0.3s"):
            await asyncio.wait_for(client.run_query(PROGRAM), timeout=15)


async def test_no_server_is_offline() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with SplunkProvider(address=f"http://127.0.0.1:{port}", secret=SECRET, interval="1m",
                              attempts=2, backoff=0.01) as client:
        with pytest.raises(ProviderOfflineError, match=r"cannot connect"):
            await client.run_query(PROGRAM)
        with pytest.raises(ProviderOfflineError, match=r"cannot connect"):
            await client.is_online()


def test_data_messages_decode_as_documented() -> None:
    body = struct.pack(">QI", 1_700_000_000_000, 3)
    body += struct.pack(">B8sq", 1, b"AAAAAAAA", -5)
    body += struct.pack(">B8sd", 2, b"BBBBBBBB", 2.5)
    body += struct.pack(">B8si4x", 3, b"CCCCCCCC", 12)
    header = struct.pack(">BBBB16s", 1, 5, 1, 0, b"ch-7")
    channel, points = decode_data_message(header + gzip.compress(body))
    assert channel == "ch-7"
    assert [p.value for p in points] == [-5.0, 2.5, 12.0]
    assert len({p.tsid for p in points}) == 3
    json_body = json.dumps({"type": "data", "data": [{"tsId": "x", "value": 3}]}).encode()
    json_header = struct.pack(">BBBB16s", 1, 5, 2, 0, b"c")
    assert decode_data_message(json_header + json_body)[1][0].value == 3
    with pytest.raises(MetricsError, match=r"binary message of 4 bytes"):
        decode_data_message(b"\x01\x05\x00\x00")


@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param({"address": ""}, "splunk endpoint is not set", id="no-address"),
    pytest.param({"secret": None}, "splunk credentials does not contain sf_token_key",
                 id="no-secret"),
    pytest.param({"secret": {"token": b"x"}}, "splunk credentials does not contain sf_token_key",
                 id="wrong-key"),
    pytest.param({"interval": ""}, "error parsing metric interval: time: invalid duration ''",
                 id="no-interval"),
    pytest.param({"address": "api.us1.signalfx.com"}, "splunk address <invalid URL> is not",
                 id="no-scheme"),
])
def test_what_flagger_refuses_is_refused(kwargs: dict[str, Any], message: str) -> None:
    options: dict[str, Any] = {"address": "https://api.us1.signalfx.com", "secret": SECRET,
                               "interval": "1m"}
    options.update(kwargs)
    with pytest.raises(MetricsError) as caught:
        SplunkProvider(**options)
    assert str(caught.value).startswith(message)
    assert TOKEN not in str(caught.value)


def test_conformance() -> None:
    conforming: type[MetricsProvider] = SplunkProvider
    client = SplunkProvider(address="https://api.us1.signalfx.com", secret=SECRET, interval="1m")
    assert isinstance(client, conforming)
    assert TOKEN not in repr(client)
