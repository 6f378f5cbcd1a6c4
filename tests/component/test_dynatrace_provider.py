"""The Dynatrace provider against a local Metrics API v2 written from Dynatrace's documentation.

``e2e/fakes/dynatrace.py`` checks every request as Dynatrace documents it (path, parameters,
``Authorization: Api-Token``) and answers ``MetricData`` or its ``ErrorEnvelope``; these tests
check what the provider sent and how it read each answer.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from e2e.fakes.dynatrace import FakeDynatrace
from flaggerpy.analysis import MetricsProvider
from flaggerpy.errors import MetricsError, NoValuesFoundError, ProviderOfflineError
from flaggerpy.metrics.dynatrace import DynatraceProvider

TOKEN = "dt0c01.SECRETTOKENVALUE.0123456789"
SECRET = {"dynatrace_token": TOKEN.encode()}
SELECTOR = 'builtin:service.response.time:filter(eq("dt.entity.service",SERVICE-1)):avg'


@pytest.fixture
async def fake() -> AsyncIterator[FakeDynatrace]:
    async with FakeDynatrace(token=TOKEN) as server:
        yield server


def provider(fake: FakeDynatrace, **kwargs: Any) -> DynatraceProvider:
    options: dict[str, Any] = {"address": fake.url, "secret": SECRET, "interval": "1m",
                               "backoff": 0.01}
    options.update(kwargs)
    return DynatraceProvider(**options)


async def test_the_request_is_flaggers(fake: FakeDynatrace) -> None:
    fake.set_series(SELECTOR, 123.5)
    before = int(time.time()) * 1000
    async with provider(fake, interval="30s") as client:
        assert await client.run_query(SELECTOR) == 123.5
    after = int(time.time()) * 1000
    (request,) = fake.requests
    assert request.method == "GET"
    assert request.path == "/api/v2/metrics/query"
    assert request.headers["Authorization"] == [f"Api-Token {TOKEN}"]
    assert request.one("metricSelector") == SELECTOR
    assert request.one("resolution") == "Inf"
    to = int(request.one("to"))
    assert before <= to <= after
    assert to % 1000 == 0  # whole seconds, in milliseconds
    assert int(request.one("from")) == to - 10 * 30_000  # ten intervals back
    # Go's url.Values.Encode: sorted keys, QueryEscape
    assert request.raw_query.split("&")[0].startswith("from=")
    assert [pair.split("=")[0] for pair in request.raw_query.split("&")] == [
        "from", "metricSelector", "resolution", "to"]
    assert "%28eq%28%22dt.entity.service%22%2CSERVICE-1%29%29" in request.raw_query


async def test_an_address_with_a_path_keeps_it() -> None:
    async with FakeDynatrace(token=TOKEN, prefix="/e/abc123") as fake:
        fake.set_series("builtin:host.cpu.usage", 7.0)
        async with provider(fake, address=fake.url + "/") as client:
            assert await client.run_query("builtin:host.cpu.usage") == 7.0
            assert await client.is_online() is True
    assert [r.path for r in fake.requests] == [
        "/e/abc123/api/v2/metrics/query", "/e/abc123/api/v2/metrics"]


async def test_is_online_lists_one_metric(fake: FakeDynatrace) -> None:
    async with provider(fake) as client:
        assert await client.is_online() is True
    (request,) = fake.requests
    assert request.path == "/api/v2/metrics"
    assert request.query == {"pageSize": ["1"]}
    assert request.headers["Authorization"] == [f"Api-Token {TOKEN}"]


async def test_several_series_answer_the_last_and_warn(fake: FakeDynatrace) -> None:
    fake.set_series(SELECTOR, 1.0, 2.0, 3.0)
    with capture_logs() as logs:
        async with provider(fake) as client:
            assert await client.run_query(SELECTOR) == 3.0
    assert [e["series"] for e in logs if e["event"] == "metrics_query_several_series"] == [3]


@pytest.mark.parametrize("values", [
    pytest.param((), id="no-series"),
    pytest.param((None,), id="null-value"),
])
async def test_no_data_is_no_values(fake: FakeDynatrace, values: tuple[None, ...]) -> None:
    fake.set_series(SELECTOR, *values)
    async with provider(fake) as client:
        with pytest.raises(NoValuesFoundError, match=r"^invalid response: .*: no values found$"):
            await client.run_query(SELECTOR)


async def test_an_unknown_metric_is_an_error_with_dynatraces_words(fake: FakeDynatrace) -> None:
    async with provider(fake) as client:
        with pytest.raises(MetricsError) as caught:
            await client.run_query("builtin:nope")
    assert not isinstance(caught.value, ProviderOfflineError | NoValuesFoundError)
    assert str(caught.value).startswith("error response: ")
    assert "matches no metric" in str(caught.value)
    assert len(fake.requests) == 1  # a 4xx is final


async def test_a_wrong_token_is_refused_and_never_repeated(fake: FakeDynatrace) -> None:
    wrong = "dt0c01.WRONGWRONGWRONG"
    fake.set_series(SELECTOR, 1.0)
    with capture_logs() as logs:
        async with provider(fake, secret={"dynatrace_token": wrong.encode()}) as client:
            assert wrong not in repr(client)
            with pytest.raises(MetricsError, match=r"Token Authentication failed") as query:
                await client.run_query(SELECTOR)
            with pytest.raises(ProviderOfflineError, match=r"Token Authentication") as online:
                await client.is_online()
    for text in (str(query.value), str(online.value), repr(logs)):
        assert wrong not in text
        assert TOKEN not in text


async def test_5xx_is_retried_then_reported(fake: FakeDynatrace) -> None:
    fake.set_series(SELECTOR, 1.0)
    fake.fail(503, "Service unavailable", times=3)
    async with provider(fake, attempts=3) as client:
        with pytest.raises(ProviderOfflineError, match=r"^error response: .*Service unavailable"):
            await client.run_query(SELECTOR)
    assert len(fake.requests) == 3


async def test_5xx_then_an_answer_succeeds(fake: FakeDynatrace) -> None:
    fake.set_series(SELECTOR, 4.25)
    fake.fail(502, "Bad gateway")
    async with provider(fake) as client:
        assert await client.run_query(SELECTOR) == 4.25
    assert len(fake.requests) == 2


async def test_an_answer_that_is_not_json_is_an_error(aiohttp_raw_server: Any) -> None:
    async def html(request: web.BaseRequest) -> web.Response:
        return web.Response(text="<html>login</html>", content_type="text/html")

    server = await aiohttp_raw_server(html)
    async with DynatraceProvider(address=str(server.make_url("")), secret=SECRET,
                                 interval="1m") as client:
        with pytest.raises(MetricsError, match=r"^error unmarshaling result: .*<html>login"):
            await client.run_query(SELECTOR)


async def test_a_server_that_hangs_is_given_up_per_attempt(aiohttp_raw_server: Any) -> None:
    async def hang(request: web.BaseRequest) -> web.Response:
        await asyncio.sleep(60)
        return web.Response()

    server = await aiohttp_raw_server(hang)
    async with DynatraceProvider(address=str(server.make_url("")), secret=SECRET, interval="1m",
                                 timeout=0.2, attempts=2, backoff=0.01) as client:
        with pytest.raises(ProviderOfflineError, match=r"did not answer within 0.2s"):
            await asyncio.wait_for(client.run_query(SELECTOR), timeout=15)


async def test_no_server_is_offline() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with DynatraceProvider(address=f"http://127.0.0.1:{port}", secret=SECRET,
                                 interval="1m", attempts=2, backoff=0.01) as client:
        with pytest.raises(ProviderOfflineError, match=r"^request failed: cannot connect"):
            await client.run_query(SELECTOR)
        with pytest.raises(ProviderOfflineError, match=r"^request failed: cannot connect"):
            await client.is_online()


@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param({"address": ""}, "dynatrace endpoint is not set", id="no-address"),
    pytest.param({"secret": None}, "dynatrace credentials does not contain dynatrace_token",
                 id="no-secret"),
    pytest.param({"secret": {"token": b"x"}},
                 "dynatrace credentials does not contain dynatrace_token", id="wrong-key"),
    pytest.param({"interval": ""}, "error parsing metric interval: time: invalid duration ''",
                 id="no-interval"),
    pytest.param({"interval": "1d"}, "error parsing metric interval: time: unknown unit", id="1d"),
    pytest.param({"address": "dynatrace.example"}, "dynatrace address <invalid URL> is not",
                 id="no-scheme"),
])
def test_what_flagger_refuses_is_refused(kwargs: dict[str, Any], message: str) -> None:
    options: dict[str, Any] = {"address": "https://abc.live.dynatrace.com", "secret": SECRET,
                               "interval": "1m"}
    options.update(kwargs)
    with pytest.raises(MetricsError) as caught:
        DynatraceProvider(**options)
    assert str(caught.value).startswith(message)
    assert TOKEN not in str(caught.value)


def test_the_window_is_ten_intervals() -> None:
    client = DynatraceProvider(address="https://abc.live.dynatrace.com", secret=SECRET,
                               interval="1m30s")
    url = client.query_url("m", now_ms=1_700_000_000_000)
    assert url.query["from"] == str(1_700_000_000_000 - 900_000)
    assert url.query["to"] == "1700000000000"


def test_conformance() -> None:
    conforming: type[MetricsProvider] = DynatraceProvider
    client = DynatraceProvider(address="https://abc.live.dynatrace.com", secret=SECRET,
                               interval="1m")
    assert isinstance(client, conforming)
    assert TOKEN not in repr(client)
