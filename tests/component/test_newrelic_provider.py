"""The New Relic provider against a local server that follows the documented Insights query API.

``e2e/fakes/newrelic.py`` answers ``/v1/accounts/<id>/query?nrql=...`` as New Relic documents it
(``X-Query-Key``, ``{"results": [...]}``, ``{"error": ...}``) and records what arrived, so these
tests check the request Flagger sends and how each answer is read.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from e2e.fakes.newrelic import FakeNewRelic, split_since
from flaggerpy.analysis import MetricsProvider
from flaggerpy.errors import MetricsError, NoValuesFoundError, ProviderOfflineError
from flaggerpy.metrics.newrelic import NewRelicProvider

ACCOUNT = "4815162342"
QUERY_KEY = "NRIQ-0123456789abcdefABCDEF"
SECRET = {"newrelic_account_id": ACCOUNT.encode(), "newrelic_query_key": QUERY_KEY.encode()}
NRQL = ("SELECT filter(sum(nginx_ingress_controller_requests), WHERE status >= '500')"
        " / sum(nginx_ingress_controller_requests) * 100 FROM Metric"
        " WHERE metricName = 'nginx_ingress_controller_requests' AND ingress = 'podinfo'")


@pytest.fixture
async def newrelic() -> AsyncIterator[FakeNewRelic]:
    async with FakeNewRelic(account_id=ACCOUNT, query_key=QUERY_KEY) as fake:
        yield fake


def provider(fake: FakeNewRelic, **kwargs: Any) -> NewRelicProvider:
    options: dict[str, Any] = {"address": fake.url, "secret": SECRET, "interval": "1m",
                               "backoff": 0.01}
    options.update(kwargs)
    return NewRelicProvider(**options)


async def test_the_request_is_flaggers(newrelic: FakeNewRelic) -> None:
    newrelic.set_result(NRQL, 1.25)
    async with provider(newrelic) as client:
        assert await client.run_query(NRQL) == 1.25
    (request,) = newrelic.requests
    assert (request.method, request.path) == ("GET", f"/v1/accounts/{ACCOUNT}/query")
    assert request.query == {"nrql": f"{NRQL} SINCE 60 seconds ago"}
    assert request.raw_query.startswith("nrql=SELECT+filter%28sum%28")  # Go's QueryEscape
    assert request.headers["X-Query-Key"] == QUERY_KEY


async def test_the_window_is_the_interval_in_whole_seconds(newrelic: FakeNewRelic) -> None:
    newrelic.set_result(NRQL, 0.0)
    async with provider(newrelic, interval="2m30.9s") as client:
        assert await client.run_query(NRQL) == 0.0
    assert split_since(newrelic.nrql_seen()[0]) == (NRQL, 150)


@pytest.mark.parametrize("results", [
    pytest.param([], id="no-result"),
    pytest.param([{"result": None}], id="null"),
    pytest.param([{"average": 12.5}], id="named-after-its-function"),
    pytest.param([{"result": 1.0}, {"result": 2.0}], id="several"),
])
async def test_anything_but_one_result_is_no_values(
        newrelic: FakeNewRelic, results: list[dict[str, Any]]) -> None:
    newrelic.set_results(NRQL, results)
    async with provider(newrelic) as client:
        with pytest.raises(NoValuesFoundError, match=r"^no values found$"):
            await client.run_query(NRQL)


async def test_no_events_is_no_values(newrelic: FakeNewRelic) -> None:
    async with provider(newrelic) as client:
        with pytest.raises(NoValuesFoundError):
            await client.run_query("SELECT average(duration) / 1000 FROM Transaction")


async def test_a_result_that_is_not_a_number_is_an_error(newrelic: FakeNewRelic) -> None:
    newrelic.set_results(NRQL, [{"result": "12"}])
    async with provider(newrelic) as client:
        with pytest.raises(MetricsError, match=r'^error unmarshaling result: result "12"'):
            await client.run_query(NRQL)


@pytest.mark.parametrize("secret", [
    pytest.param({**SECRET, "newrelic_query_key": b"NRIQ-wrong"}, id="query-key"),
    pytest.param({**SECRET, "newrelic_account_id": b"1"}, id="account"),
])
async def test_a_wrong_key_or_account_is_new_relics_error(
        newrelic: FakeNewRelic, secret: dict[str, bytes]) -> None:
    async with provider(newrelic, secret=secret) as client:
        with pytest.raises(MetricsError,
                           match=r'^error response: \{"error": "Invalid query key"\}$'):
            await client.run_query(NRQL)
    assert len(newrelic.requests) == 1  # a 4xx is final


async def test_a_query_with_its_own_since_is_refused_by_new_relic(newrelic: FakeNewRelic) -> None:
    async with provider(newrelic) as client:
        with pytest.raises(MetricsError, match=r"^error response: .*NRQL Syntax Error") as caught:
            await client.run_query(NRQL + " SINCE 5 minutes ago")
    assert not isinstance(caught.value, ProviderOfflineError)


async def test_5xx_is_retried_then_offline(newrelic: FakeNewRelic) -> None:
    for _ in range(3):
        newrelic.fail_next(503, {"error": "Service Unavailable"})
    async with provider(newrelic, attempts=3) as client:
        with pytest.raises(ProviderOfflineError, match=r"^error response: .*Service Unavailable"):
            await client.run_query(NRQL)
    assert len(newrelic.requests) == 3


async def test_5xx_then_an_answer_succeeds(newrelic: FakeNewRelic) -> None:
    newrelic.fail_next(500, {"error": "Internal Server Error"})
    newrelic.set_result(NRQL, 3.0)
    async with provider(newrelic) as client:
        assert await client.run_query(NRQL) == 3.0
    assert len(newrelic.requests) == 2


async def test_429_is_not_retried(newrelic: FakeNewRelic) -> None:
    newrelic.fail_next(429, {"error": "Rate limit exceeded"})
    async with provider(newrelic) as client:
        with pytest.raises(MetricsError, match=r"Rate limit exceeded"):
            await client.run_query(NRQL)
    assert len(newrelic.requests) == 1


async def test_an_answer_without_results_is_no_values(newrelic: FakeNewRelic) -> None:
    newrelic.fail_next(200, None)  # JSON null decodes to no results, as in Flagger
    async with provider(newrelic) as client:
        with pytest.raises(NoValuesFoundError):
            await client.run_query(NRQL)


async def test_an_answer_that_is_not_json_is_an_error(newrelic: FakeNewRelic) -> None:
    newrelic.fail_next(200, b"<html>maintenance</html>")
    async with provider(newrelic) as client:
        with pytest.raises(MetricsError, match=r"^error unmarshaling result: .*maintenance"):
            await client.run_query(NRQL)


async def test_a_server_that_hangs_is_given_up_per_attempt(newrelic: FakeNewRelic) -> None:
    newrelic.fail_next(200, {"results": []}, hang=30)
    newrelic.fail_next(200, {"results": []}, hang=30)
    async with provider(newrelic, timeout=0.2, attempts=2) as client:
        with pytest.raises(ProviderOfflineError, match=r"did not answer within 0.2s"):
            await asyncio.wait_for(client.run_query(NRQL), timeout=15)


async def test_is_online_runs_select_star_from_metric(newrelic: FakeNewRelic) -> None:
    async with provider(newrelic, interval="30s") as client:
        assert await client.is_online() is True
    assert newrelic.nrql_seen() == ["SELECT * FROM Metric SINCE 30 seconds ago"]


async def test_is_online_with_a_wrong_key_says_why(newrelic: FakeNewRelic) -> None:
    async with provider(newrelic, secret={**SECRET, "newrelic_query_key": b"x"}) as client:
        with pytest.raises(ProviderOfflineError, match=r"^error response: .*Invalid query key"):
            await client.is_online()


async def test_no_server_is_offline(newrelic: FakeNewRelic) -> None:
    address = newrelic.url
    await newrelic.__aexit__(None, None, None)
    async with NewRelicProvider(address=address, secret=SECRET, attempts=2,
                                backoff=0.01) as client:
        with pytest.raises(ProviderOfflineError, match=r"^request failed: cannot connect"):
            await client.run_query(NRQL)
        with pytest.raises(ProviderOfflineError, match=r"^request failed: cannot connect"):
            await client.is_online()


def test_the_default_address_is_the_us_insights_api() -> None:
    client = NewRelicProvider(address="", secret=SECRET)
    assert client.endpoint == "https://insights-api.newrelic.com"
    assert repr(client) == "NewRelicProvider(https://insights-api.newrelic.com)"


@pytest.mark.parametrize(("secret", "message"), [
    pytest.param(None, "newrelic credentials does not contain newrelic_account_id",
                 id="no-secret"),
    pytest.param({"newrelic_query_key": b"x"},
                 "newrelic credentials does not contain newrelic_account_id", id="no-account"),
    pytest.param({"newrelic_account_id": b"1"},
                 "newrelic credentials does not contain newrelic_query_key", id="no-key"),
    pytest.param({**SECRET, "newrelic_query_key": QUERY_KEY.encode() + b"\r\n"},
                 "newrelic credentials newrelic_query_key holds a line break, which cannot be"
                 " sent in a header", id="newline"),
])
def test_a_secret_without_account_and_key_is_refused(
        secret: dict[str, bytes] | None, message: str) -> None:
    with pytest.raises(MetricsError, match=f"^{message}$") as caught:
        NewRelicProvider(address=None, secret=secret)
    assert QUERY_KEY not in str(caught.value)


@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param({"interval": "5"}, r"^error parsing metric interval: ", id="interval"),
    pytest.param({"address": "ftp://insights"}, r"^newrelic address .* is not a valid URL$",
                 id="not-http"),
    pytest.param({"variant": "eu"}, r"^newrelic takes no variant", id="variant"),
])
def test_a_configuration_it_cannot_use_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(MetricsError, match=message):
        NewRelicProvider(**{"address": None, "secret": SECRET, **kwargs})


async def test_the_key_and_account_never_appear_in_errors_logs_or_reprs(
        newrelic: FakeNewRelic) -> None:
    newrelic.fail_next(502, {"error": "Bad Gateway"})  # a retry is logged
    newrelic.set_result(NRQL, 1.0)
    seen: list[str] = []
    with capture_logs() as logs:
        async with provider(newrelic) as client:
            seen.append(repr(client))
            await client.run_query(NRQL)
            for answer in ((401, {"error": "Invalid query key"}), (503, {"error": "down"})):
                for _ in range(3):
                    newrelic.fail_next(*answer)
                with pytest.raises(MetricsError) as caught:
                    await client.run_query(NRQL)
                seen.extend([str(caught.value), repr(caught.value)])
        async with NewRelicProvider(address=newrelic.url + "/", secret=SECRET, attempts=1,
                                    timeout=0.2) as client:
            newrelic.fail_next(200, {}, hang=5)
            with pytest.raises(ProviderOfflineError) as offline:
                await client.is_online()
            seen.append(str(offline.value))
    assert any(log["event"] == "metrics_request_retrying" for log in logs), logs
    seen.extend(repr(log) for log in logs)
    for text in seen:
        assert QUERY_KEY not in text
        assert ACCOUNT not in text


def test_registered_and_conforming() -> None:
    (entry_point,) = [ep for ep in importlib.metadata.entry_points(group="flaggerpy.metrics")
                      if ep.name == "newrelic"]
    assert entry_point.load() is NewRelicProvider
    conforming: type[MetricsProvider] = NewRelicProvider
    assert isinstance(NewRelicProvider(address=None, secret=SECRET), conforming)
