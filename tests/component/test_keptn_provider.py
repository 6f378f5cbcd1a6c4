"""The keptn provider without an API server: its query grammar, value parsing and set-up errors.

What it does with Keptn's resources on a real API server is in
``tests/integration/test_keptn_provider.py``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes_asyncio.client import Configuration
from structlog.testing import capture_logs

from flaggerpy.errors import MetricsError, ProviderOfflineError
from flaggerpy.kube.config import ApiServerAccess
from flaggerpy.metrics.keptn import KeptnProvider, KeptnQuery, parse_go_float, parse_query

FORMAT = "unexpected query format. query must be in the format"
KIND = ("unexpected resource kind provided in the query. must be one of: "
        "['keptnmetric', 'analysis']")


def unreachable() -> ApiServerAccess:
    """An API server nobody listens on: any request would fail as ProviderOfflineError."""
    configuration = Configuration(host="http://127.0.0.1:1")
    return ApiServerAccess(host="http://127.0.0.1:1", _configuration=configuration)


@pytest.fixture
async def provider() -> AsyncIterator[KeptnProvider]:
    async with KeptnProvider(kube=unreachable(), attempts=1) as built:
        yield built


@pytest.mark.parametrize(("query", "expected"), [
    ("keptnmetric/ns/my-metric", KeptnQuery("keptnmetrics", "ns", "my-metric")),
    ("keptnmetrics/ns/my-metric/5m/a=b", KeptnQuery("keptnmetrics", "ns", "my-metric")),
    ("KeptnMetric/NS/My-Metric\n", KeptnQuery("keptnmetrics", "ns", "my-metric")),
    ("  analysis/ns/slo  ", KeptnQuery("analyses", "ns", "slo", "1m", {})),
    ("analyses/ns/slo/5m", KeptnQuery("analyses", "ns", "slo", "5m", {})),
    # Pairs with exactly one "=" are kept, others dropped; lower-cased like the rest.
    ("analysis/ns/slo/30s/Foo=Bar;bar=foo;broken;a=b=c;=e",
     KeptnQuery("analyses", "ns", "slo", "30s", {"foo": "bar", "bar": "foo", "": "e"})),
    ("analysis/ns/slo/2m/a=1/ignored", KeptnQuery("analyses", "ns", "slo", "2m", {"a": "1"})),
])
def test_queries_are_read_as_flagger_reads_them(query: str, expected: KeptnQuery) -> None:
    assert parse_query(query) == expected


@pytest.mark.parametrize(("query", "message"), [
    ("keptnmetric/ns", FORMAT),
    ("", FORMAT),
    ("invalid/ns/my-metric", KIND),
    ("prometheus/ns/my-metric", KIND),
    ("keptnmetric//my-metric", "namespace and resource name cannot be empty"),
    ("analysis/ns/", "namespace and resource name cannot be empty"),
])
async def test_a_malformed_query_fails_before_any_request(
        provider: KeptnProvider, query: str, message: str) -> None:
    with pytest.raises(MetricsError, match=message.replace("[", r"\[")) as raised:
        await provider.run_query(query)
    assert not isinstance(raised.value, ProviderOfflineError)


async def test_an_unreachable_api_server_is_offline(provider: KeptnProvider) -> None:
    """The fixture's server really is unreachable: the cases above would have said so."""
    with pytest.raises(ProviderOfflineError, match="cannot connect"):
        await provider.run_query("keptnmetric/ns/m")
    with pytest.raises(ProviderOfflineError, match="cannot connect"):
        await provider.run_query("analysis/ns/slo")


@pytest.mark.parametrize(("text", "expected"), [
    ("3.0", 3.0), ("42", 42.0), ("-1.5", -1.5), ("+2", 2.0), (".5", 0.5), ("5.", 5.0),
    ("1e3", 1000.0), ("2.5E-2", 0.025), ("0x1p-2", 0.25), ("Inf", math.inf),
    ("-infinity", -math.inf),
])
def test_values_are_parsed_as_go_parses_them(text: str, expected: float) -> None:
    assert parse_go_float(text) == expected


def test_nan_is_a_value_the_analysis_judges() -> None:
    assert math.isnan(parse_go_float("NaN"))


@pytest.mark.parametrize("text", ["", " 1", "1 ", "1_000", "1,5", "0x10", "abc", "1e", "1e400"])
def test_what_go_refuses_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"strconv\.ParseFloat"):
        parse_go_float(text)


def test_without_the_controllers_api_server_it_cannot_work() -> None:
    with pytest.raises(MetricsError, match="could not initialize KeptnProvider: no KubeConfig"):
        KeptnProvider(address="https://ignored.example")
    with pytest.raises(MetricsError, match="no variant"):
        KeptnProvider(kube=unreachable(), variant="v2")
    with pytest.raises(ValueError, match="positive"):
        KeptnProvider(kube=unreachable(), analysis_timeout=0)


async def test_is_online_is_always_true(provider: KeptnProvider) -> None:
    assert await provider.is_online() is True
    assert repr(provider) == "KeptnProvider(http://127.0.0.1:1)"



# -- what a real API server rarely answers: 5xx, no answer, a lost create ---------------------
# The integration tests use the real kube-apiserver; these script an API server's answers, so
# the retries, the timeouts and the deletion after a failure are checked too.

TOKEN = "eyJhbGciOiJSUzI1NiJ9.c2VydmljZWFjY291bnQ.c2lnbmVk"
API = "/apis/metrics.keptn.sh/v1beta1/namespaces/ns"

Answer = tuple[int, dict[str, Any]]


@dataclass
class Seen:
    method: str
    path: str
    authorization: str
    body: Any


@dataclass
class ScriptedApiServer:
    """Answers each request with the next scripted answer for its method; records them all."""

    answers: dict[str, list[Answer]] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    hang: float = 0.0
    url: str = ""

    def then(self, method: str, status: int, body: dict[str, Any]) -> ScriptedApiServer:
        self.answers.setdefault(method, []).append((status, body))
        return self

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        self.requests.append(Seen(request.method, request.path,
                                  request.headers.get("Authorization", ""), body))
        if self.hang:
            await asyncio.sleep(self.hang)
        queue = self.answers.get(request.method) or []
        status, answer = queue.pop(0) if queue else (404, api_status(404, "not scripted"))
        return web.json_response(answer, status=status)

    def access(self) -> ApiServerAccess:
        configuration = Configuration(host=self.url, api_key={"BearerToken": TOKEN},
                                      api_key_prefix={"BearerToken": "Bearer"})
        return ApiServerAccess(host=self.url, _configuration=configuration)


def api_status(code: int, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "code": code}


def analysis(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "metrics.keptn.sh/v1beta1", "kind": "Analysis",
            "metadata": {"name": "slo-abcdef", "namespace": "ns"}, "status": status or {}}


@pytest.fixture
async def api() -> AsyncIterator[ScriptedApiServer]:
    scripted = ScriptedApiServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", scripted.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    scripted.url = str(server.make_url("")).rstrip("/")
    try:
        yield scripted
    finally:
        await server.close()


def scripted_provider(api: ScriptedApiServer, **kwargs: Any) -> KeptnProvider:
    options: dict[str, Any] = {"kube": api.access(), "backoff": 0.01, "poll_interval": 0.05}
    options.update(kwargs)
    return KeptnProvider(**options)


async def test_the_controllers_token_is_sent(api: ScriptedApiServer) -> None:
    api.then("GET", 200, {"kind": "KeptnMetric", "status": {"value": "2.5"}})
    async with scripted_provider(api) as provider:
        assert await provider.run_query("keptnmetric/ns/m") == 2.5
    [seen] = api.requests
    assert (seen.method, seen.path) == ("GET", f"{API}/keptnmetrics/m")
    assert seen.authorization == f"Bearer {TOKEN}"


async def test_a_5xx_is_retried_then_offline(api: ScriptedApiServer) -> None:
    api.then("GET", 503, api_status(503, "etcdserver: leader changed"))
    api.then("GET", 200, {"kind": "KeptnMetric", "status": {"value": "1"}})
    for _ in range(3):
        api.then("GET", 500, api_status(500, "etcdserver: request timed out"))
    with capture_logs() as logs:
        async with scripted_provider(api) as provider:
            assert await provider.run_query("keptnmetric/ns/m") == 1.0
            with pytest.raises(ProviderOfflineError, match=(
                    r"^could not retrieve KeptnMetric ns/m: etcdserver: request timed out$")):
                await provider.run_query("keptnmetric/ns/m")
    assert len(api.requests) == 5
    assert TOKEN not in repr(logs)


async def test_an_api_server_that_does_not_answer(api: ScriptedApiServer) -> None:
    api.hang = 2.0
    async with scripted_provider(api, timeout=0.5, attempts=1) as provider:
        with pytest.raises(ProviderOfflineError, match=r"did not answer within 0\.5s") as raised:
            await provider.run_query("keptnmetric/ns/m")
    assert TOKEN not in str(raised.value)


async def test_a_create_whose_answer_was_lost_goes_on_with_its_analysis(
        api: ScriptedApiServer) -> None:
    """The first create reached the API server but its answer did not come back (a 5xx from a
    proxy here); the retry meets the Analysis it made (409), which is then read and deleted."""
    api.then("POST", 502, api_status(502, "bad gateway"))
    api.then("POST", 409, api_status(409, 'analyses.metrics.keptn.sh "slo-abcdef" already exists'))
    api.then("GET", 200, analysis({"state": "Progressing"}))
    api.then("GET", 200, analysis({"state": "Completed"}))  # no verdict yet: read again
    api.then("GET", 200, analysis({"state": "Completed", "pass": True}))
    api.then("DELETE", 200, api_status(200, ""))
    async with scripted_provider(api) as provider:
        assert await provider.run_query("analysis/ns/slo/5m/app=podinfo") == 1.0
    methods = [r.method for r in api.requests]
    assert methods == ["POST", "POST", "GET", "GET", "GET", "DELETE"]
    first, retried = api.requests[0].body, api.requests[1].body
    assert first == retried  # the same Analysis, the same name
    name = first["metadata"]["name"]
    assert {r.path for r in api.requests[2:]} == {f"{API}/analyses/{name}"}
    assert first["spec"] == {"analysisDefinition": {"name": "slo"},
                             "timeframe": {"recent": "5m"}, "args": {"app": "podinfo"}}


async def test_a_verdict_that_is_not_a_boolean_is_an_error_and_the_analysis_is_deleted(
        api: ScriptedApiServer) -> None:
    api.then("POST", 201, analysis())
    api.then("GET", 200, analysis({"state": "Completed", "pass": "yes"}))
    api.then("DELETE", 200, api_status(200, ""))
    async with scripted_provider(api) as provider:
        with pytest.raises(MetricsError, match=(
                r"^could not check status of created Keptn Analysis ns/slo: \.status\.pass")):
            await provider.run_query("analysis/ns/slo")
    assert [r.method for r in api.requests] == ["POST", "GET", "DELETE"]


async def test_a_failed_deletion_is_logged_and_the_verdict_stands(
        api: ScriptedApiServer) -> None:
    api.then("POST", 201, analysis())
    api.then("GET", 200, analysis({"state": "Completed", "pass": False}))
    for _ in range(3):
        api.then("DELETE", 503, api_status(503, "the server is currently unable"))
    with capture_logs() as logs:
        async with scripted_provider(api) as provider:
            assert await provider.run_query("analysis/ns/slo") == 0.0
    [entry] = [e for e in logs if e["event"] == "keptn_analysis_not_deleted"]
    assert entry["log_level"] == "error"
    assert entry["analysis"].startswith("ns/slo-")
    assert "the server is currently unable" in entry["error"]
    assert TOKEN not in repr(logs)


async def test_a_create_refused_is_not_deleted(api: ScriptedApiServer) -> None:
    """Nothing was made: the DELETE that follows is answered 404 and is not an error."""
    api.then("POST", 422, api_status(422, 'Analysis.metrics.keptn.sh "slo-1" is invalid'))
    with capture_logs() as logs:
        async with scripted_provider(api) as provider:
            with pytest.raises(MetricsError, match=(
                    r"^could not create Keptn Analysis ns/slo: "
                    r'Analysis\.metrics\.keptn\.sh "slo-1" is invalid$')):
                await provider.run_query("analysis/ns/slo")
    assert [r.method for r in api.requests] == ["POST", "DELETE"]
    assert not [e for e in logs if e["event"] == "keptn_analysis_not_deleted"]
