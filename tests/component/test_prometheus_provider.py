"""The Prometheus provider against a real Prometheus, and local servers for what it cannot do.

A real Prometheus (Debian's package, on loopback) scrapes a local exporter, so values, NaN,
empty answers, matrices and parse errors are Prometheus's own. Credentials, headers, 5xx
answers and TLS are checked on local aiohttp servers that record exactly what arrived.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.metadata
import json
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from e2e.prometheus import LocalPrometheus, ScrapeJob
from flaggerpy.analysis import MetricsProvider, MetricTemplateModel
from flaggerpy.errors import (
    MetricsError,
    MultipleValuesError,
    NoValuesFoundError,
    ProviderOfflineError,
)
from flaggerpy.metrics.prometheus import PrometheusProvider, collapse_whitespace
from flaggerpy.templating import render
from tests.metrics_exporter import MetricsExporter

VECTOR_42 = {"status": "success", "data": {"resultType": "vector", "result": [
    {"metric": {}, "value": [1700000000.0, "42"]}]}}


# --- a real Prometheus ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exporter() -> Iterator[MetricsExporter]:
    with MetricsExporter() as running:
        running.gauge("provider_test_gauge", {"kind": "one"}, 7.5)
        running.gauge("provider_test_gauge", {"kind": "two"}, 2.5)
        running.counter("provider_test_requests_total", {"code": "200"}, per_second=4)
        yield running


@pytest.fixture(scope="module")
def prometheus(exporter: MetricsExporter) -> Iterator[LocalPrometheus]:
    with LocalPrometheus([ScrapeJob("exporter", [exporter.target])]) as server:
        deadline = time.monotonic() + 30
        while not server.query('up{job="exporter"} == 1'):  # scraped at least once
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus never scraped the exporter: {server.targets_up()}")
            time.sleep(0.2)
        yield server


@pytest.fixture
async def provider(prometheus: LocalPrometheus) -> AsyncIterator[PrometheusProvider]:
    async with PrometheusProvider(address=prometheus.url) as client:
        yield client


async def eventually(check: Callable[[], Awaitable[Any]], *, within: float = 30.0) -> Any:
    """Polls ``check`` until it returns without raising; re-raises its last error at the end."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await check()
        except (AssertionError, NoValuesFoundError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_a_vector_answers_its_sample(provider: PrometheusProvider) -> None:
    assert await provider.run_query('provider_test_gauge{kind="one"}') == 7.5
    assert await provider.run_query("vector(42)") == 42.0


async def test_a_rate_from_real_scrapes(provider: PrometheusProvider) -> None:
    async def rate() -> float:
        value = await provider.run_query("sum(rate(provider_test_requests_total[10s]))")
        assert value == pytest.approx(4.0, rel=0.05)
        return value

    await eventually(rate)


async def test_a_multi_line_query_is_sent_on_one_line(provider: PrometheusProvider) -> None:
    query = """
        sum(
            provider_test_gauge{
                kind=~"one|two"
            }
        )
    """
    assert collapse_whitespace(query) == ' sum( provider_test_gauge{ kind=~"one|two" } ) '
    assert await provider.run_query(query) == 10.0


async def test_several_series_answer_the_last_one(provider: PrometheusProvider) -> None:
    value = await provider.run_query("provider_test_gauge")
    assert value in (7.5, 2.5)  # Flagger keeps the last; Prometheus decides the order


async def test_a_matrix_is_multiple_values(provider: PrometheusProvider) -> None:
    with pytest.raises(MultipleValuesError, match=r"multiple values returned"):
        await provider.run_query('provider_test_gauge{kind="one"}[10s]')


@pytest.mark.parametrize("query", [
    pytest.param('provider_test_gauge{kind="absent"}', id="no-series"),
    pytest.param("vector(0) / vector(0)", id="nan"),
    pytest.param("scalar(vector(0) / vector(0))", id="nan-scalar"),
])
async def test_no_sample_or_nan_is_no_values(provider: PrometheusProvider, query: str) -> None:
    with pytest.raises(NoValuesFoundError, match=r"^no values found$"):
        await provider.run_query(query)


async def test_a_scalar_answers_its_value(provider: PrometheusProvider) -> None:
    assert await provider.run_query("scalar(vector(3)) + 0.5") == 3.5


async def test_a_bad_query_is_an_error_with_prometheus_own_words(
        provider: PrometheusProvider,
) -> None:
    with pytest.raises(MetricsError) as caught:
        await provider.run_query("sum(")
    assert not isinstance(caught.value, ProviderOfflineError)
    assert str(caught.value).startswith("error response: ")
    assert "bad_data" in str(caught.value)


async def test_is_online(provider: PrometheusProvider) -> None:
    assert await provider.is_online() is True


async def test_every_builtin_query_is_valid_promql(provider: PrometheusProvider) -> None:
    # No series match, so each answers "no values" -- but none is refused as bad_data.
    model = MetricTemplateModel(name="podinfo", namespace="test", target="podinfo",
                                service="podinfo", ingress="podinfo", route="podinfo",
                                interval="1m")
    observers = [ep for ep in importlib.metadata.entry_points(group="flaggerpy.observers")
                 if ep.value.startswith("flaggerpy.providers.")]
    assert len(observers) >= 13
    for entry_point in observers:
        observer = entry_point.load()(client=provider, render=render)
        for query in (observer.render_success_rate(model), observer.render_duration(model)):
            with pytest.raises(NoValuesFoundError):
                await provider.run_query(query)


# --- local servers: what arrives ------------------------------------------------------------------


@dataclass
class FakePrometheus:
    """Answers /api/v1/query as scripted (status, JSON) and records every request."""

    answers: list[tuple[int, Any]] = field(default_factory=lambda: [(200, VECTOR_42)])
    requests: list[web.BaseRequest] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.BaseRequest) -> web.Response:
        self.requests.append(request)
        status, body = self.answers[min(len(self.requests), len(self.answers)) - 1]
        text = body if isinstance(body, str) else json.dumps(body)
        return web.Response(status=status, text=text, content_type="application/json")


Serve = Callable[..., Awaitable[FakePrometheus]]


@pytest.fixture
def serve(aiohttp_raw_server: Any) -> Serve:
    async def start(*answers: tuple[int, Any], **kwargs: Any) -> FakePrometheus:
        fake = FakePrometheus(answers=list(answers) or [(200, VECTOR_42)])
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
    async with PrometheusProvider(address=fake.url + "/prom/") as client:
        assert await client.run_query('sum(rate(x{a="b c"}[1m]))\n  * 100') == 42.0
    (request,) = fake.requests
    assert request.method == "GET"
    assert request.path == "/prom/api/v1/query"
    assert request.query["query"] == 'sum(rate(x{a="b c"}[1m])) * 100'
    assert "+" in request.raw_path  # a space is encoded as Go's url.QueryEscape does
    assert "Authorization" not in request.headers


async def test_a_bearer_token_from_the_secret(serve: Serve) -> None:
    fake = await serve()
    async with PrometheusProvider(
        address=fake.url, secret={"token": b"s3cr3t-t0ken", "username": b"ignored"},
        headers={"X-Scope-OrgID": ["tenant-1"], "Authorization": ["Basic from-headers"]},
    ) as client:
        await client.run_query("vector(1)")
    (request,) = fake.requests
    assert request.headers.getall("Authorization") == ["Bearer s3cr3t-t0ken"]
    assert request.headers["X-Scope-OrgID"] == "tenant-1"


async def test_basic_auth_from_the_secret(serve: Serve) -> None:
    fake = await serve()
    async with PrometheusProvider(
        address=fake.url, secret={"username": b"flagger", "password": b"p@ss:word"},
    ) as client:
        await client.run_query("vector(1)")
    (request,) = fake.requests
    expected = base64.b64encode(b"flagger:p@ss:word").decode()
    assert request.headers.getall("Authorization") == [f"Basic {expected}"]


async def test_headers_with_several_values_are_all_sent(serve: Serve) -> None:
    fake = await serve()
    async with PrometheusProvider(
        address=fake.url, headers={"X-Many": ["one", "two"], "X-One": ["1"]},
    ) as client:
        await client.run_query("vector(1)")
    (request,) = fake.requests
    assert request.headers.getall("X-Many") == ["one", "two"]
    assert request.headers.getall("X-One") == ["1"]


async def test_credentials_in_the_address_become_basic_auth_and_are_never_repeated(
        serve: Serve,
) -> None:
    fake = await serve((400, {"status": "error", "error": "nope"}))
    address = fake.url.replace("http://", "http://admin:hunter2@")
    async with PrometheusProvider(address=address, attempts=1) as client:
        assert "hunter2" not in repr(client)
        with pytest.raises(MetricsError) as caught:
            await client.run_query("vector(1)")
    assert "hunter2" not in str(caught.value)
    (request,) = fake.requests
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(
        b"admin:hunter2").decode()


@pytest.mark.parametrize(("secret", "message"), [
    pytest.param({}, "prometheus credentials does not contain a username", id="empty"),
    pytest.param({"username": b"u"}, "prometheus credentials does not contain a password",
                 id="no-password"),
])
def test_a_secret_without_credentials_is_refused(secret: dict[str, bytes], message: str) -> None:
    with pytest.raises(MetricsError, match=f"^{message}$"):
        PrometheusProvider(address="http://prometheus:9090", secret=secret)


@pytest.mark.parametrize("address", [
    pytest.param("", id="empty"),
    pytest.param("prometheus:9090", id="no-scheme"),
    pytest.param("ftp://prometheus", id="not-http"),
    pytest.param("http://user:pw@:9090", id="no-host-with-credentials"),
])
def test_an_invalid_address_is_refused_without_repeating_it(address: str) -> None:
    with pytest.raises(MetricsError, match=r"^prometheus address .* is not a valid URL$") as caught:
        PrometheusProvider(address=address)
    assert "pw" not in str(caught.value)


async def test_5xx_is_retried_then_reported(serve: Serve) -> None:
    fake = await serve((503, "overloaded"), (502, "bad gateway"), (500, "still broken"))
    async with PrometheusProvider(address=fake.url, attempts=3, backoff=0.01) as client:
        with pytest.raises(ProviderOfflineError, match=r"^error response: still broken$"):
            await client.run_query("vector(1)")
    assert len(fake.requests) == 3


async def test_5xx_then_an_answer_succeeds(serve: Serve) -> None:
    fake = await serve((503, "overloaded"), (200, VECTOR_42))
    async with PrometheusProvider(address=fake.url, backoff=0.01) as client:
        assert await client.run_query("vector(1)") == 42.0
    assert len(fake.requests) == 2


async def test_4xx_is_not_retried(serve: Serve) -> None:
    fake = await serve((422, {"status": "error", "errorType": "execution", "error": "boom"}))
    async with PrometheusProvider(address=fake.url, backoff=0.01) as client:
        with pytest.raises(MetricsError, match=r'^error response: .*"boom"'):
            await client.run_query("vector(1)")
    assert len(fake.requests) == 1


async def test_an_answer_that_is_not_json_is_an_error(serve: Serve) -> None:
    fake = await serve((200, "<html>login</html>"))
    async with PrometheusProvider(address=fake.url) as client:
        with pytest.raises(MetricsError, match=r"^error unmarshaling result: .*<html>login"):
            await client.run_query("vector(1)")


async def test_no_server_is_offline_after_the_retries() -> None:
    async with PrometheusProvider(address=f"http://127.0.0.1:{free_port()}", attempts=2,
                                  backoff=0.01) as client:
        with pytest.raises(ProviderOfflineError, match=r"^request failed: cannot connect to"):
            await client.run_query("vector(1)")
        with pytest.raises(ProviderOfflineError, match=r"^running query failed: request failed"):
            await client.is_online()


async def test_a_server_that_hangs_is_given_up_per_attempt(aiohttp_raw_server: Any) -> None:
    async def hang(request: web.BaseRequest) -> web.Response:
        await asyncio.sleep(60)
        return web.Response()

    server = await aiohttp_raw_server(hang)
    async with PrometheusProvider(address=str(server.make_url("")), timeout=0.2, attempts=2,
                                  backoff=0.01) as client:
        with pytest.raises(ProviderOfflineError, match=r"did not answer within 0.2s"):
            # two attempts of 0.2 s, not the server's 60 s
            await asyncio.wait_for(client.run_query("vector(1)"), timeout=15)


async def test_is_online_is_false_when_vector_1_is_not_1(serve: Serve) -> None:
    zero = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [1700000000.0, "0"]}]}}
    fake = await serve((200, zero))
    async with PrometheusProvider(address=fake.url) as client:
        assert await client.is_online() is False
    assert fake.requests[0].query["query"] == "vector(1)"


async def test_a_closed_provider_refuses_queries(serve: Serve) -> None:
    fake = await serve()
    client = PrometheusProvider(address=fake.url)
    assert await client.run_query("vector(1)") == 42.0
    await client.aclose()
    with pytest.raises(ProviderOfflineError, match=r"is closed"):
        await client.run_query("vector(1)")


# --- TLS ------------------------------------------------------------------------------------------


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


async def test_a_self_signed_certificate_is_refused_at_once(
        serve: Serve, self_signed: ssl.SSLContext,
) -> None:
    fake = await serve(ssl=self_signed)
    assert fake.url.startswith("https://")
    async with PrometheusProvider(address=fake.url, backoff=0.01) as client:
        with pytest.raises(ProviderOfflineError, match=r"certificate .* not verified"):
            await client.run_query("vector(1)")
    assert fake.requests == []


async def test_insecure_skip_verify_accepts_it(serve: Serve, self_signed: ssl.SSLContext) -> None:
    fake = await serve(ssl=self_signed)
    async with PrometheusProvider(address=fake.url, insecure_skip_verify=True) as client:
        assert await client.run_query("vector(1)") == 42.0


def test_conformance() -> None:
    conforming: type[MetricsProvider] = PrometheusProvider
    assert isinstance(PrometheusProvider(address="http://prometheus:9090"), conforming)
