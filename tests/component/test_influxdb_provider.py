"""The InfluxDB provider against a real InfluxDB 1.8 running Flux, and local servers for the rest.

``influxd`` is built from its Go module on first use and cached (``e2e/influxdb.py``); it runs
with authentication on, so tokens, values, types, empty answers and Flux errors are InfluxDB's
own. What a real server cannot be made to do on demand (record the request, answer 5xx, hang)
is checked on local aiohttp servers.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from e2e.influxdb import LocalInfluxDB
from flaggerpy.analysis import MetricsProvider
from flaggerpy.errors import MetricsError, NoValuesFoundError, ProviderOfflineError
from flaggerpy.metrics.influxdb import (
    DIALECT,
    ONLINE_QUERY,
    InfluxdbProvider,
    read_first_value,
)

RANGE = "range(start: 2023-01-01T00:00:00Z)"


def flux(field_: str, *, target: str = "a", tail: str = "") -> str:
    return (f'from(bucket: "canary") |> {RANGE} |> filter(fn: (r) => '
            f'r._measurement == "requests" and r.target == "{target}" and r._field == "{field_}")'
            + tail)


# --- a real InfluxDB ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def influxdb() -> Iterator[LocalInfluxDB]:
    with LocalInfluxDB() as server:
        server.create_database("default")
        server.create_database("canary")
        server.write("canary", "\n".join([
            "requests,target=a latency=1.5 1700000000",
            "requests,target=a latency=2.5 1700000060",
            "requests,target=a latency=3.5 1700000120",
            "requests,target=b errors=3i 1700000000",
            "requests,target=b name=\"slow\" 1700000000",
            "requests,target=b ok=true 1700000000",
        ]))
        yield server


@pytest.fixture
async def provider(influxdb: LocalInfluxDB) -> AsyncIterator[InfluxdbProvider]:
    secret = {"token": influxdb.token.encode(), "org": b"my-org"}
    async with InfluxdbProvider(address=influxdb.url, secret=secret, backoff=0.01) as client:
        yield client


async def test_a_double_answers_the_first_record(provider: InfluxdbProvider) -> None:
    with capture_logs() as logs:
        assert await provider.run_query(flux("latency")) == 1.5  # the first of three, as Flagger
    assert [e["event"] for e in logs] == ["metrics_query_several_records"]
    assert logs[0]["records"] == 3


async def test_an_aggregate_answers_its_value(provider: InfluxdbProvider) -> None:
    assert await provider.run_query(flux("latency", tail=" |> mean()")) == 2.5
    multi_line = f"""
        from(bucket: "canary")
          |> {RANGE}
          |> filter(fn: (r) => r._field == "latency")
          |> max()
    """
    assert await provider.run_query(multi_line) == 3.5


async def test_a_long_counts_as_a_number(provider: InfluxdbProvider) -> None:
    assert await provider.run_query(flux("errors", target="b")) == 3.0
    assert await provider.run_query(flux("latency", tail=" |> count()")) == 3.0


@pytest.mark.parametrize(("field_", "shown"), [
    pytest.param("name", "_value:slow", id="string"),
    pytest.param("ok", "_value:true", id="boolean"),
])
async def test_a_value_that_is_not_a_number_is_an_invalid_response(
        provider: InfluxdbProvider, field_: str, shown: str,
) -> None:
    with pytest.raises(MetricsError, match=r"^invalid response: \{.*") as caught:
        await provider.run_query(flux(field_, target="b"))
    assert shown in str(caught.value)
    assert not isinstance(caught.value, NoValuesFoundError)


async def test_no_records_is_no_values_not_zero(provider: InfluxdbProvider) -> None:
    # Flagger answers 0 here, which would pass a max threshold on no data at all.
    with pytest.raises(NoValuesFoundError, match=r"^no values found$"):
        await provider.run_query(flux("latency", target="absent"))


async def test_a_null_value_is_no_values(provider: InfluxdbProvider) -> None:
    table = ("#datatype,string,long,double\\n#group,false,false,false\\n#default,_result,,\\n"
             ",result,table,_value\\n,,0,\\n")
    with pytest.raises(NoValuesFoundError, match=r"no values found$"):
        await provider.run_query(f'import "csv"\ncsv.from(csv: "{table}")')


async def test_a_table_without_a_value_column_is_no_values(provider: InfluxdbProvider) -> None:
    with pytest.raises(NoValuesFoundError):
        await provider.run_query(flux("latency", tail=' |> keep(columns: ["_time"])'))


@pytest.mark.parametrize(("query", "words"), [
    pytest.param("from(bucket: ", "expected RPAREN", id="syntax"),
    pytest.param('from(bucket: "nothing-here") |> range(start: -1h)', "no database",
                 id="no-database"),
])
async def test_a_flux_error_is_an_error_in_influxdb_words(
        provider: InfluxdbProvider, query: str, words: str,
) -> None:
    with pytest.raises(MetricsError, match=r"^error accessing influxdb query api: ") as caught:
        await provider.run_query(query)
    assert words in str(caught.value)
    assert not isinstance(caught.value, ProviderOfflineError)  # InfluxDB answered: a bad query


async def test_is_online_with_a_default_bucket(provider: InfluxdbProvider) -> None:
    assert await provider.is_online() is True


@pytest.mark.parametrize(("token", "words"), [
    pytest.param(b"flaggerpy:wrong-password", "authorization failed", id="wrong"),
    pytest.param(b"", "unable to parse authentication credentials", id="empty"),
])
async def test_a_token_that_influxdb_refuses(
        influxdb: LocalInfluxDB, token: bytes, words: str,
) -> None:
    async with InfluxdbProvider(address=influxdb.url, secret={"token": token, "org": b"o"},
                                backoff=0.01) as client:
        with pytest.raises(MetricsError, match=f"^error accessing influxdb query api: {words}$"):
            await client.run_query(flux("latency"))
        with pytest.raises(ProviderOfflineError, match=f"^running query failed: .*{words}$"):
            await client.is_online()


async def test_is_online_needs_the_default_bucket_as_flaggers_does() -> None:
    with LocalInfluxDB() as server:
        secret = {"token": server.token.encode(), "org": b"o"}
        async with InfluxdbProvider(address=server.url, secret=secret, backoff=0.01) as client:
            with pytest.raises(ProviderOfflineError, match=r"no database"):
                await client.is_online()
            server.create_database("default")
            assert await client.is_online() is True


async def test_the_secret_never_shows(influxdb: LocalInfluxDB) -> None:
    token = "flaggerpy:a-very-secret-password"
    with capture_logs() as logs:
        async with InfluxdbProvider(address=influxdb.url, secret={"token": token.encode(),
                                    "org": b"o"}, backoff=0.01) as client:
            assert "secret-password" not in repr(client)
            with pytest.raises(MetricsError) as query_error:
                await client.run_query(flux("latency"))
            with pytest.raises(ProviderOfflineError) as online_error:
                await client.is_online()
    for shown in (str(query_error.value), repr(query_error.value), str(online_error.value),
                  repr(logs)):
        assert "secret-password" not in shown


# --- local servers: what arrives ------------------------------------------------------------------

CSV_42 = ("#datatype,string,long,double\r\n#group,false,false,false\r\n#default,_result,,\r\n"
          ",result,table,_value\r\n,,0,42\r\n\r\n")


@dataclass
class RecordingInfluxDB:
    """Answers /api/v2/query as scripted (status, content type, body) and records each request."""

    answers: list[tuple[int, str, str]] = field(
        default_factory=lambda: [(200, "text/csv", CSV_42)])
    requests: list[tuple[web.BaseRequest, bytes]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.BaseRequest) -> web.Response:
        self.requests.append((request, await request.read()))
        status, content_type, body = self.answers[min(len(self.requests), len(self.answers)) - 1]
        return web.Response(status=status, text=body, content_type=content_type)


Serve = Callable[..., Awaitable[RecordingInfluxDB]]


@pytest.fixture
def serve(aiohttp_raw_server: Any) -> Serve:
    async def start(*answers: tuple[int, str, str]) -> RecordingInfluxDB:
        fake = RecordingInfluxDB(answers=list(answers) or [(200, "text/csv", CSV_42)])
        server = await aiohttp_raw_server(fake.handle)
        fake.url = str(server.make_url("")).rstrip("/")
        return fake

    return start


async def test_the_request_is_the_go_clients(serve: Serve) -> None:
    fake = await serve()
    query = 'from(bucket: "b")\n  |> range(start: -5m)'
    async with InfluxdbProvider(address=fake.url + "/influx/",
                                secret={"token": b"t0ken", "org": b"my org&co"}) as client:
        assert await client.run_query(query) == 42.0
    ((request, body),) = fake.requests
    assert request.method == "POST"
    assert request.path == "/influx/api/v2/query"
    assert dict(request.query) == {"org": "my org&co"}
    assert request.headers.getall("Authorization") == ["Token t0ken"]
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"query": query, "type": "flux", "dialect": DIALECT}
    assert DIALECT == {"annotations": ["datatype", "group", "default"], "delimiter": ",",
                       "header": True}


async def test_without_a_secret_no_token_and_an_empty_org(serve: Serve) -> None:
    fake = await serve()
    async with InfluxdbProvider(address=fake.url, headers={"X-Ignored": ["1"]}) as client:
        await client.run_query("x")
    ((request, _),) = fake.requests
    assert "Authorization" not in request.headers
    assert "X-Ignored" not in request.headers  # Flagger sends no provider.headers either
    assert request.query_string == "org="


async def test_is_online_asks_flaggers_query(serve: Serve) -> None:
    fake = await serve((200, "text/csv", "\r\n"))
    async with InfluxdbProvider(address=fake.url) as client:
        assert await client.is_online() is True
    assert json.loads(fake.requests[0][1])["query"] == ONLINE_QUERY
    assert ONLINE_QUERY == 'from(bucket: "default") |> range(start: -2h)'


async def test_an_error_table_in_the_answer_is_a_query_error(serve: Serve) -> None:
    error = ("#datatype,string,string\r\n#group,true,true\r\n#default,,\r\n,error,reference\r\n"
             ",failed to create physical plan: out of memory,897\r\n\r\n")
    fake = await serve((200, "text/csv", error))
    async with InfluxdbProvider(address=fake.url) as client:  # Flagger: 0, nil
        with pytest.raises(MetricsError,
                           match=r"^query error: failed to create physical plan: .*,897$"):
            await client.run_query("x")


async def test_a_2x_error_body_gives_code_and_message(serve: Serve) -> None:
    body = json.dumps({"code": "invalid", "message": "error in query specification"})
    fake = await serve((400, "application/json", body))
    async with InfluxdbProvider(address=fake.url, backoff=0.01) as client:
        with pytest.raises(MetricsError, match=r"^error accessing influxdb query api: "
                                               r"invalid: error in query specification$"):
            await client.run_query("x")
    assert len(fake.requests) == 1


async def test_a_5xx_without_influxdb_words_is_retried_then_offline(serve: Serve) -> None:
    fake = await serve((503, "text/html", "<html>down</html>"), (502, "text/html", "gateway"))
    async with InfluxdbProvider(address=fake.url, attempts=2, backoff=0.01) as client:
        with pytest.raises(ProviderOfflineError, match=r"query api: gateway$"):
            await client.run_query("x")
    assert len(fake.requests) == 2


async def test_5xx_then_an_answer_succeeds(serve: Serve) -> None:
    fake = await serve((503, "text/plain", "busy"), (200, "text/csv", CSV_42))
    async with InfluxdbProvider(address=fake.url, backoff=0.01) as client:
        assert await client.run_query("x") == 42.0


async def test_nan_is_no_values(serve: Serve) -> None:
    fake = await serve((200, "text/csv", CSV_42.replace(",42", ",NaN")))
    async with InfluxdbProvider(address=fake.url) as client:
        with pytest.raises(NoValuesFoundError):
            await client.run_query("x")


def test_the_default_annotation_fills_an_empty_cell() -> None:
    text = ("#datatype,string,long,double\n#group,false,false,false\n#default,_result,,7.5\n"
            ",result,table,_value\n,,0,\n,,1,2\n\n"
            "#datatype,string,long,double\n#group,false,false,false\n#default,_result,,\n"
            ",result,table,_value\n,,2,3\n")
    first, count = read_first_value(text)
    assert first is not None
    assert first.cells["_value"] == "7.5"
    assert count == 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_no_server_is_offline() -> None:
    async with InfluxdbProvider(address=f"http://127.0.0.1:{free_port()}", attempts=2,
                                backoff=0.01) as client:
        with pytest.raises(ProviderOfflineError, match=r"^request failed: cannot connect to"):
            await client.run_query("x")
        with pytest.raises(ProviderOfflineError, match=r"^running query failed: request failed"):
            await client.is_online()


async def test_a_server_that_hangs_is_given_up_per_attempt(aiohttp_raw_server: Any) -> None:
    async def hang(request: web.BaseRequest) -> web.Response:
        await asyncio.sleep(60)
        return web.Response()

    server = await aiohttp_raw_server(hang)
    async with InfluxdbProvider(address=str(server.make_url("")), timeout=0.2, attempts=2,
                                backoff=0.01) as client:
        with pytest.raises(ProviderOfflineError, match=r"did not answer within 0.2s"):
            await asyncio.wait_for(client.run_query("x"), timeout=15)


def test_flaggers_timeout_is_the_default() -> None:
    provider = InfluxdbProvider(address="http://influxdb:8086")
    assert provider._timeout.total == 15.0


# --- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(("secret", "message"), [
    pytest.param({}, "influxdb credentials does not contain an authentication token", id="empty"),
    pytest.param({"token": b"t"}, "influxdb credentials does not contain an organisation",
                 id="no-org"),
])
def test_a_secret_needs_token_and_org(secret: dict[str, bytes], message: str) -> None:
    with pytest.raises(MetricsError, match=f"^{message}$"):
        InfluxdbProvider(address="http://influxdb:8086", secret=secret)


def test_a_token_with_a_line_break_is_refused_without_quoting_it() -> None:
    with pytest.raises(MetricsError) as caught:
        InfluxdbProvider(address="http://influxdb:8086",
                         secret={"token": b"hidden-value\n", "org": b"o"})
    assert "hidden-value" not in str(caught.value)


@pytest.mark.parametrize("address", [
    pytest.param("", id="empty"),
    pytest.param("influxdb:8086", id="no-scheme"),
    pytest.param("http://user:pw@:8086", id="no-host-with-credentials"),
])
def test_an_invalid_address_is_refused_without_repeating_it(address: str) -> None:
    with pytest.raises(MetricsError, match=r"^influxdb address .* is not a valid URL$") as caught:
        InfluxdbProvider(address=address)
    assert "pw" not in str(caught.value)


def test_a_variant_is_refused() -> None:
    with pytest.raises(MetricsError, match=r"no variants"):
        InfluxdbProvider(address="http://influxdb:8086", variant="v2")


def test_conformance_and_entry_point() -> None:
    import importlib.metadata

    (entry_point,) = importlib.metadata.entry_points(group="flaggerpy.metrics", name="influxdb")
    assert entry_point.load() is InfluxdbProvider
    conforming: type[MetricsProvider] = InfluxdbProvider
    assert isinstance(InfluxdbProvider(address="http://influxdb:8086"), conforming)
