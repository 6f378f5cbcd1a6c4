"""The Graphite provider against a real Graphite, and a local server for what it cannot do.

A real carbon-cache and graphite-web (Debian's packages, on loopback; ``e2e/graphite.py``) are
fed datapoints over carbon's plaintext protocol, so values, several targets, wildcards, empty
answers and Graphite's own error answers are Graphite's. Credentials, 5xx answers, malformed
bodies, timeouts and TLS are checked on a local aiohttp server that records what arrived
(graphite-web has no basic auth of its own: a proxy in front of it does that).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from structlog.testing import capture_logs

from e2e.graphite import LocalGraphite
from flaggerpy.analysis import MetricsProvider, MetricTemplateModel
from flaggerpy.errors import MetricsError, NoValuesFoundError, ProviderOfflineError
from flaggerpy.metrics.graphite import GraphiteProvider, render_parameters
from flaggerpy.templating import render

USERNAME = "flagger-reader"
PASSWORD = "gr4ph1te-p@ss"
SECRET = {"username": USERNAME.encode(), "password": PASSWORD.encode()}
ONE_TARGET = [{"target": "app.latency", "tags": {"name": "app.latency"},
               "datapoints": [[None, 1700000000], [42.0, 1700000001], [None, 1700000002]]}]


# --- a real Graphite ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graphite() -> Iterator[LocalGraphite]:
    with LocalGraphite() as server:
        now = time.time()
        server.send([
            ("flaggerpy.test.latency", 17.0, now - 3),
            ("flaggerpy.test.latency", 42.5, now - 2),  # the last non-null point
            ("flaggerpy.test.errors.a", 1.0, now - 2),
            ("flaggerpy.test.errors.b", 2.0, now - 2),
            ("flaggerpy.test.old", 9.0, now - 600),  # only outside a -2min window
        ])
        for path, value in [("flaggerpy.test.latency", 42.5), ("flaggerpy.test.errors.a", 1.0),
                            ("flaggerpy.test.errors.b", 2.0)]:
            server.wait_for(path, value)
        yield server


@pytest.fixture
async def provider(graphite: LocalGraphite) -> AsyncIterator[GraphiteProvider]:
    async with GraphiteProvider(address=graphite.url) as client:
        yield client


async def test_the_last_non_null_point_of_a_series(provider: GraphiteProvider) -> None:
    # graphite-web answers a null for every second of the window without a point
    assert await provider.run_query("target=flaggerpy.test.latency&from=-2min") == 42.5


async def test_a_function_written_over_several_lines(provider: GraphiteProvider) -> None:
    # as a YAML block scalar (``query: |``) hands it over: indentation gone, newlines kept
    query = ("target=sumSeries(\n  flaggerpy.test.errors.a,\n  flaggerpy.test.errors.b)\n"
             "&from=-2min\n")
    assert await provider.run_query(query) == 3.0


@pytest.mark.parametrize(("query", "expected"), [
    pytest.param("target=flaggerpy.test.errors.a&target=flaggerpy.test.errors.b", 2.0,
                 id="a-then-b"),
    pytest.param("target=flaggerpy.test.errors.b&target=flaggerpy.test.errors.a", 1.0,
                 id="b-then-a"),
    pytest.param("target=flaggerpy.test.errors.*", 2.0, id="wildcard"),
])
async def test_several_targets_answer_the_last_one_graphite_lists(
        provider: GraphiteProvider, query: str, expected: float,
) -> None:
    with capture_logs() as logs:
        assert await provider.run_query(f"{query}&from=-2min") == expected
    assert [e["series"] for e in logs if e["event"] == "metrics_query_several_series"] == [2]


@pytest.mark.parametrize("query", [
    pytest.param("target=flaggerpy.test.absent&from=-2min", id="no-series"),
    pytest.param("target=flaggerpy.test.old&from=-2min", id="only-older-points"),
    pytest.param("target=flaggerpy.test.nothing.*&from=-2min", id="wildcard-matching-nothing"),
])
async def test_no_point_is_no_values(provider: GraphiteProvider, query: str) -> None:
    with pytest.raises(NoValuesFoundError, match=r"^no values found$"):
        await provider.run_query(query)


async def test_a_wider_window_sees_the_older_point(provider: GraphiteProvider) -> None:
    assert await provider.run_query("target=flaggerpy.test.old&from=-15min") == 9.0


async def test_a_format_in_the_query_is_replaced_by_json(provider: GraphiteProvider) -> None:
    assert await provider.run_query(
        "target=flaggerpy.test.latency&format=png&from=-2min") == 42.5


@pytest.mark.parametrize(("query", "words"), [
    pytest.param("target=noSuchFunction(flaggerpy.test.latency)", "unknown function",
                 id="unknown-function"),
    pytest.param("target=flaggerpy.test.latency&from=yesterdayish", "Unknown day reference",
                 id="bad-from"),
])
async def test_graphite_refusing_a_query_is_an_error_in_its_own_words(
        provider: GraphiteProvider, query: str, words: str,
) -> None:
    with pytest.raises(MetricsError) as caught:
        await provider.run_query(query)
    assert not isinstance(caught.value, ProviderOfflineError)
    assert str(caught.value).startswith("error response: Invalid parameters")
    assert words in str(caught.value)


async def test_the_docs_example_query_is_valid_graphite(
        graphite: LocalGraphite, provider: GraphiteProvider,
) -> None:
    text = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text()
    section = re.search(r"^## Graphite .*?(?=^## )", text, re.M | re.S)
    assert section is not None
    (example,) = [doc for block in re.findall(r"```yaml\n(.*?)```", section.group(0), re.S)
                  for doc in yaml.safe_load_all(block) if doc and doc["kind"] == "MetricTemplate"]
    model = MetricTemplateModel(name="podinfo", namespace="docs", target="podinfo",
                                service="podinfo", ingress="podinfo", route="podinfo",
                                interval="1m")
    query = render(example["spec"]["query"], model)
    with pytest.raises(NoValuesFoundError):  # not refused by Graphite: no series yet
        await provider.run_query(query)
    stats = "stats.docs.podinfo-canary.http"
    graphite.send([(f"{stats}.5xx", 5.0, None), (f"{stats}.2xx", 95.0, None)])
    await asyncio.to_thread(graphite.wait_for, f"{stats}.2xx", 95.0)
    assert await provider.run_query(query) == 5.0  # percent of requests that failed


async def test_is_online_against_graphite(provider: GraphiteProvider) -> None:
    # target=test matches no series: graphite-web answers [], which is online
    assert await provider.is_online() is True


# --- a local server: what arrives -----------------------------------------------------------------


@dataclass
class FakeGraphite:
    """Answers /render as scripted (status, JSON or text) and records every request."""

    answers: list[tuple[int, Any]] = field(default_factory=lambda: [(200, ONE_TARGET)])
    requests: list[web.BaseRequest] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.BaseRequest) -> web.Response:
        self.requests.append(request)
        status, body = self.answers[min(len(self.requests), len(self.answers)) - 1]
        text = body if isinstance(body, str) else json.dumps(body)
        return web.Response(status=status, text=text, content_type="application/json")


Serve = Callable[..., Awaitable[FakeGraphite]]


@pytest.fixture
def serve(aiohttp_raw_server: Any) -> Serve:
    async def start(*answers: tuple[int, Any], **kwargs: Any) -> FakeGraphite:
        fake = FakeGraphite(answers=list(answers) or [(200, ONE_TARGET)])
        server = await aiohttp_raw_server(fake.handle, **kwargs)
        fake.url = str(server.make_url("")).rstrip("/")
        return fake

    return start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_the_request_is_flaggers(serve: Serve) -> None:
    fake = await serve()
    async with GraphiteProvider(address=fake.url + "/graphite/",
                                headers={"X-Not-Sent": ["1"]}) as client:
        assert await client.run_query(
            "target=sumSeries(app.*.errors, app.x)\n  &from=-2min&until=now") == 42.0
    (request,) = fake.requests
    assert (request.method, request.path) == ("GET", "/graphite/render")
    # Go's url.Values.Encode: sorted by name, each part escaped anew, a space as "+"
    assert request.raw_path.partition("?")[2] == (
        "format=json&from=-2min&target=sumSeries%28app.%2A.errors%2C+app.x%29+&until=now")
    assert "Authorization" not in request.headers
    assert "X-Not-Sent" not in request.headers  # provider.headers are Prometheus's only


@pytest.mark.parametrize(("query", "sent"), [
    pytest.param("target=a&target=b&from=-1min", "format=json&from=-1min&target=a&target=b",
                 id="values-of-one-name-keep-their-order"),
    pytest.param("target=a%3Benv%3Dprod&format=csv", "format=json&target=a%3Benv%3Dprod",
                 id="escaped-semicolon-and-format-replaced"),
    pytest.param("target=a;env=prod&from=-1min", "format=json&from=-1min",
                 id="semicolon-pair-dropped"),
    pytest.param("target=a%zz&from=-1min", "format=json&from=-1min", id="bad-escape-dropped"),
    pytest.param("target=a+b&&noValue", "format=json&noValue=&target=a+b",
                 id="plus-empty-pair-no-equals"),
    pytest.param("", "format=json", id="empty"),
    pytest.param("target=a&from=-1min#&until=now", "format=json&from=-1min&target=a",
                 id="hash-starts-a-fragment"),
    pytest.param("target=a%23b", "format=json&target=a%23b", id="escaped-hash"),
])
def test_the_query_string_as_go_rewrites_it(query: str, sent: str) -> None:
    assert render_parameters(query) == sent


def test_a_control_character_is_refused() -> None:
    with pytest.raises(MetricsError, match=r"invalid control character"):
        render_parameters("target=a\x00b")


async def test_basic_auth_from_the_secret(serve: Serve) -> None:
    fake = await serve()
    async with GraphiteProvider(address=fake.url, secret=SECRET) as client:
        await client.run_query("target=app.latency")
    (request,) = fake.requests
    expected = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    assert request.headers.getall("Authorization") == [f"Basic {expected}"]


async def test_an_empty_password_sends_no_auth(serve: Serve) -> None:
    fake = await serve()
    async with GraphiteProvider(address=fake.url,
                                secret={"username": b"u", "password": b""}) as client:
        await client.run_query("target=app.latency")
    assert "Authorization" not in fake.requests[0].headers


async def test_credentials_in_the_address_become_basic_auth_and_are_never_repeated(
        serve: Serve,
) -> None:
    fake = await serve((400, "Invalid parameters (nope)"))
    address = fake.url.replace("http://", "http://admin:hunter2@")
    async with GraphiteProvider(address=address, attempts=1) as client:
        assert "hunter2" not in repr(client)
        with pytest.raises(MetricsError) as caught:
            await client.run_query("target=x")
    assert "hunter2" not in str(caught.value)
    (request,) = fake.requests
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(
        b"admin:hunter2").decode()


async def test_the_secret_never_shows_in_errors_logs_or_repr(serve: Serve) -> None:
    fake = await serve((503, "down"), (503, "down"), (503, "down"))
    client = GraphiteProvider(address=fake.url, secret=SECRET, attempts=3, backoff=0.01)
    with capture_logs() as logs:
        with pytest.raises(ProviderOfflineError) as offline:
            await client.run_query("target=x")
        with pytest.raises(ProviderOfflineError) as not_online:
            await client.is_online()
    await client.aclose()
    assert len(fake.requests) == 6
    assert any(e["event"] == "metrics_request_retrying" for e in logs)
    encoded = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    for text in (repr(client), str(offline.value), str(not_online.value), repr(logs)):
        for secret in (PASSWORD, USERNAME, encoded):
            assert secret not in text


@pytest.mark.parametrize(("secret", "message"), [
    pytest.param({}, "graphite credentials does not contain a username", id="empty"),
    pytest.param({"username": b"u"}, "graphite credentials does not contain a password",
                 id="no-password"),
])
def test_a_secret_without_credentials_is_refused(secret: dict[str, bytes], message: str) -> None:
    with pytest.raises(MetricsError, match=f"^{message}$"):
        GraphiteProvider(address="http://graphite:8080", secret=secret)


@pytest.mark.parametrize("address", [
    pytest.param("", id="empty"),
    pytest.param(None, id="none"),
    pytest.param("graphite:8080", id="no-scheme"),
    pytest.param("http://user:pw@:8080", id="no-host-with-credentials"),
])
def test_an_invalid_address_is_refused_without_repeating_it(address: str | None) -> None:
    with pytest.raises(MetricsError, match=r"^graphite address .* is not a valid URL$") as caught:
        GraphiteProvider(address=address)
    assert "pw" not in str(caught.value)


def test_a_variant_is_refused() -> None:
    with pytest.raises(MetricsError, match=r"graphite takes no variant"):
        GraphiteProvider(address="http://graphite:8080", variant="v2")


@pytest.mark.parametrize(("body", "expected"), [
    pytest.param([{"target": "a", "datapoints": [["1.5", "1700000000"], [None, 1700000001]]}],
                 1.5, id="numeric-strings"),
    pytest.param([{"target": "a", "datapoints": [[3, 1700000000], ["NaN", 1700000001]]}],
                 3.0, id="nan-is-null"),
    pytest.param([{"target": "a", "datapoints": [[7, 1]]}, {"target": "b", "datapoints": None},
                  {"target": "c"}], 7.0, id="targets-without-points"),
])
async def test_values_graphite_compatible_servers_send(
        serve: Serve, body: Any, expected: float,
) -> None:
    fake = await serve((200, body))
    async with GraphiteProvider(address=fake.url) as client:
        assert await client.run_query("target=a") == expected


@pytest.mark.parametrize("body", [
    pytest.param([], id="empty-list"),
    pytest.param(None, id="null"),
    pytest.param([{"target": "a", "datapoints": []}], id="no-points"),
    pytest.param([{"target": "a", "datapoints": [[None, 1], [None, 2]]}], id="all-null"),
])
async def test_no_values(serve: Serve, body: Any) -> None:
    fake = await serve((200, body))
    async with GraphiteProvider(address=fake.url) as client:
        with pytest.raises(NoValuesFoundError, match=r"^no values found$"):
            await client.run_query("target=a")
        assert await client.is_online() is True


@pytest.mark.parametrize("body", [
    pytest.param("<html>login</html>", id="not-json"),
    pytest.param({"target": "a"}, id="an-object"),
    pytest.param([{"target": "a", "datapoints": [[1.0]]}], id="short-point"),
    pytest.param([{"target": "a", "datapoints": [["fast", 1]]}], id="value-not-a-number"),
    pytest.param([{"target": "a", "datapoints": [[True, 1]]}], id="value-a-bool"),
    pytest.param([{"target": "a", "datapoints": [[1.0, "noon"]]}], id="bad-timestamp"),
])
async def test_an_answer_that_is_not_a_render_answer_is_an_error(serve: Serve, body: Any) -> None:
    fake = await serve((200, body))
    async with GraphiteProvider(address=fake.url) as client:
        with pytest.raises(MetricsError, match=r"^error unmarshaling result: ") as caught:
            await client.run_query("target=a")
    assert not isinstance(caught.value, NoValuesFoundError)


async def test_5xx_is_retried_then_reported(serve: Serve) -> None:
    fake = await serve((503, "overloaded"), (502, "bad gateway"), (500, "still broken"))
    async with GraphiteProvider(address=fake.url, attempts=3, backoff=0.01) as client:
        with pytest.raises(ProviderOfflineError, match=r"^error response: still broken$"):
            await client.run_query("target=a")
    assert len(fake.requests) == 3


async def test_4xx_is_not_retried_and_is_not_online(serve: Serve) -> None:
    fake = await serve((401, "Unauthorized"))
    async with GraphiteProvider(address=fake.url, backoff=0.01) as client:
        with pytest.raises(MetricsError, match=r"^error response: Unauthorized$") as caught:
            await client.run_query("target=a")
        assert not isinstance(caught.value, ProviderOfflineError)
        with pytest.raises(ProviderOfflineError,
                           match=r"^running query failed: error response: Unauthorized$"):
            await client.is_online()
    assert len(fake.requests) == 2
    assert fake.requests[1].query["target"] == "test"


async def test_no_server_is_offline_after_the_retries() -> None:
    async with GraphiteProvider(address=f"http://127.0.0.1:{free_port()}", attempts=2,
                                backoff=0.01) as client:
        with pytest.raises(ProviderOfflineError, match=r"^request failed: cannot connect to"):
            await client.run_query("target=a")
        with pytest.raises(ProviderOfflineError, match=r"^running query failed: request failed"):
            await client.is_online()


async def test_a_server_that_hangs_is_given_up_per_attempt(aiohttp_raw_server: Any) -> None:
    async def hang(request: web.BaseRequest) -> web.Response:
        await asyncio.sleep(60)
        return web.Response()

    server = await aiohttp_raw_server(hang)
    async with GraphiteProvider(address=str(server.make_url("")), timeout=0.2, attempts=2,
                                backoff=0.01) as client:
        with pytest.raises(ProviderOfflineError, match=r"did not answer within 0.2s"):
            await asyncio.wait_for(client.run_query("target=a"), timeout=15)


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


async def test_insecure_skip_verify(serve: Serve, self_signed: ssl.SSLContext) -> None:
    fake = await serve(ssl=self_signed)
    async with GraphiteProvider(address=fake.url, backoff=0.01) as client:
        with pytest.raises(ProviderOfflineError, match=r"certificate .* not verified"):
            await client.run_query("target=a")
    assert fake.requests == []
    async with GraphiteProvider(address=fake.url, insecure_skip_verify=True) as client:
        assert await client.run_query("target=a") == 42.0


def test_conformance() -> None:
    conforming: type[MetricsProvider] = GraphiteProvider
    assert isinstance(GraphiteProvider(address="http://graphite:8080"), conforming)
