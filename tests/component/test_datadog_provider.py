"""The Datadog provider against a local server that follows Datadog's documented v1 API.

``e2e/fakes/datadog.py`` answers ``/api/v1/query`` and ``/api/v1/validate`` as Datadog's API
reference describes them (keys in headers, ``{"errors": [...]}`` answers) and records what
arrived, so these tests check the request Flagger sends and how each answer is read.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from e2e.fakes.datadog import FakeDatadog
from flaggerpy.analysis import MetricsProvider
from flaggerpy.errors import (
    MetricsError,
    NoValuesFoundError,
    ProviderOfflineError,
)
from flaggerpy.metrics.datadog import DatadogProvider

API_KEY = "dd-api-0123456789abcdef"
APP_KEY = "dd-app-fedcba9876543210"
SECRET = {"datadog_api_key": API_KEY.encode(), "datadog_application_key": APP_KEY.encode()}
NOW = 1_700_000_000
QUERY = "sum:trace.http.request.errors{service:podinfo,env:test}.as_count()"


@pytest.fixture
async def datadog() -> AsyncIterator[FakeDatadog]:
    async with FakeDatadog(api_key=API_KEY, application_key=APP_KEY) as fake:
        yield fake


def provider(fake: FakeDatadog, **kwargs: Any) -> DatadogProvider:
    options: dict[str, Any] = {"address": fake.url, "secret": SECRET, "interval": "1m",
                               "clock": lambda: NOW + 0.75, "backoff": 0.01}
    options.update(kwargs)
    return DatadogProvider(**options)


async def test_the_request_is_flaggers(datadog: FakeDatadog) -> None:
    datadog.set_series(QUERY, 2.5)
    async with provider(datadog) as client:
        assert await client.run_query(QUERY) == 2.5
    (request,) = datadog.requests
    assert (request.method, request.path) == ("GET", "/api/v1/query")
    # ten intervals back from now, in seconds; parameters in Go's sorted order
    assert request.query == {"from": str(NOW - 600), "query": QUERY, "to": str(NOW)}
    assert request.raw_query.startswith(f"from={NOW - 600}&query=sum%3Atrace.http")
    assert request.raw_query.endswith(f"&to={NOW}")
    assert request.headers["DD-API-KEY"] == API_KEY
    assert request.headers["DD-APPLICATION-KEY"] == APP_KEY


async def test_the_window_is_ten_intervals(datadog: FakeDatadog) -> None:
    datadog.set_series(QUERY, 1.0)
    async with provider(datadog, interval="90s") as client:
        await client.run_query(QUERY)
    assert datadog.requests[0].query["from"] == str(NOW - 900)


async def test_a_multi_line_query_is_sent_as_rendered(datadog: FakeDatadog) -> None:
    query = "sum:errors{service:podinfo}.as_count()\n  /\n  sum:hits{service:podinfo}.as_count()"
    datadog.set_series(query, 0.5)
    async with provider(datadog) as client:
        assert await client.run_query(query) == 0.5
    assert datadog.requests[0].query["query"] == query


async def test_the_first_point_of_the_first_series(datadog: FakeDatadog) -> None:
    # the oldest point: the newest bucket is usually incomplete
    datadog.set_pointlists(QUERY, [(1.0e12, 7.0), (1.00002e12, 8.0), (1.00004e12, 0.5)],
                           [(1.0e12, 3.0), (1.00002e12, 4.0)])
    with capture_logs() as logs:
        async with provider(datadog) as client:
            assert await client.run_query(QUERY) == 7.0
    assert {"event": "metrics_query_several_series", "provider": "datadog",
            "endpoint": datadog.url, "series": 2, "log_level": "warning"} in logs


@pytest.mark.parametrize("values", [
    pytest.param((), id="no-series"),
    pytest.param((None,), id="null-points"),
    pytest.param((float("nan"),), id="nan"),
])
async def test_no_series_or_no_point_is_no_values(
        datadog: FakeDatadog, values: tuple[float | None, ...]) -> None:
    if values:
        datadog.set_series(QUERY, *values)
    async with provider(datadog) as client:
        with pytest.raises(NoValuesFoundError, match=r"^no values found$"):
            await client.run_query(QUERY)


async def test_an_error_status_in_an_ok_answer_is_no_values_with_its_reason(
        datadog: FakeDatadog) -> None:
    datadog.fail_next(200, {"status": "error", "res_type": "time_series", "series": [],
                            "error": "Rate limit of 300 requests in 3600 seconds reached"})
    async with provider(datadog) as client:
        with pytest.raises(NoValuesFoundError, match=r"^no values found: Rate limit"):
            await client.run_query(QUERY)


@pytest.mark.parametrize("secret", [
    pytest.param({**SECRET, "datadog_api_key": b"wrong"}, id="api-key"),
    pytest.param({**SECRET, "datadog_application_key": b"wrong"}, id="application-key"),
])
async def test_a_wrong_key_is_datadogs_403(datadog: FakeDatadog, secret: dict[str, bytes]) -> None:
    async with provider(datadog, secret=secret) as client:
        with pytest.raises(MetricsError, match=r'^error response: \{"errors": \["Forbidden"\]\}$'):
            await client.run_query(QUERY)
    assert len(datadog.requests) == 1  # a 4xx is final


async def test_a_bad_request_is_an_error_with_datadogs_words(datadog: FakeDatadog) -> None:
    async with provider(datadog) as client:
        with pytest.raises(MetricsError, match=r"^error response: .*'query' is required") as caught:
            await client.run_query("   ")
    assert not isinstance(caught.value, ProviderOfflineError)


async def test_429_is_not_retried(datadog: FakeDatadog) -> None:
    datadog.fail_next(429, {"errors": ["Too many requests"]})
    async with provider(datadog) as client:
        with pytest.raises(MetricsError, match=r"Too many requests"):
            await client.run_query(QUERY)
    assert len(datadog.requests) == 1


async def test_5xx_is_retried_then_offline(datadog: FakeDatadog) -> None:
    for _ in range(3):
        datadog.fail_next(503, {"errors": ["Service Unavailable"]})
    async with provider(datadog, attempts=3) as client:
        with pytest.raises(ProviderOfflineError, match=r"^error response: .*Service Unavailable"):
            await client.run_query(QUERY)
    assert len(datadog.requests) == 3


async def test_5xx_then_an_answer_succeeds(datadog: FakeDatadog) -> None:
    datadog.fail_next(502, {"errors": ["Bad Gateway"]})
    datadog.set_series(QUERY, 4.0)
    async with provider(datadog) as client:
        assert await client.run_query(QUERY) == 4.0
    assert len(datadog.requests) == 2


async def test_an_answer_that_is_not_json_is_an_error(datadog: FakeDatadog) -> None:
    datadog.fail_next(200, None)  # JSON "null" is not an object
    async with provider(datadog) as client:
        with pytest.raises(MetricsError, match=r"^error unmarshaling result"):
            await client.run_query(QUERY)


async def test_a_server_that_hangs_is_given_up_per_attempt(datadog: FakeDatadog) -> None:
    datadog.fail_next(200, {"series": []}, hang=30)
    datadog.fail_next(200, {"series": []}, hang=30)
    async with provider(datadog, timeout=0.2, attempts=2) as client:
        with pytest.raises(ProviderOfflineError, match=r"did not answer within 0.2s"):
            await asyncio.wait_for(client.run_query(QUERY), timeout=15)


async def test_is_online_validates_the_api_key(datadog: FakeDatadog) -> None:
    async with provider(datadog) as client:
        assert await client.is_online() is True
    (request,) = datadog.requests
    assert (request.method, request.path, request.raw_query) == ("GET", "/api/v1/validate", "")
    assert request.headers["DD-API-KEY"] == API_KEY
    assert request.headers["DD-APPLICATION-KEY"] == APP_KEY


async def test_is_online_with_a_wrong_api_key_says_why(datadog: FakeDatadog) -> None:
    async with provider(datadog, secret={**SECRET, "datadog_api_key": b"wrong"}) as client:
        with pytest.raises(ProviderOfflineError, match=r"^error response: .*Forbidden"):
            await client.is_online()


async def test_is_online_is_false_when_datadog_says_invalid(datadog: FakeDatadog) -> None:
    datadog.fail_next(200, {"valid": False})
    async with provider(datadog) as client:
        assert await client.is_online() is False


async def test_no_server_is_offline(datadog: FakeDatadog) -> None:
    address = datadog.url
    await datadog.__aexit__(None, None, None)
    async with DatadogProvider(address=address, secret=SECRET, attempts=2,
                               backoff=0.01) as client:
        with pytest.raises(ProviderOfflineError, match=r"^request failed: cannot connect"):
            await client.run_query(QUERY)
        with pytest.raises(ProviderOfflineError, match=r"^request failed: cannot connect"):
            await client.is_online()


async def test_the_address_may_have_a_path_and_a_trailing_slash(datadog: FakeDatadog) -> None:
    async with provider(datadog, address=datadog.url + "/") as client:
        assert await client.is_online() is True
    assert datadog.requests[0].path == "/api/v1/validate"


def test_the_default_address_is_datadogs_us1_site() -> None:
    client = DatadogProvider(address=None, secret=SECRET)
    assert client.endpoint == "https://api.datadoghq.com"
    assert repr(client) == "DatadogProvider(https://api.datadoghq.com)"


@pytest.mark.parametrize(("secret", "message"), [
    pytest.param(None, "datadog credentials does not contain datadog_api_key", id="no-secret"),
    pytest.param({"datadog_application_key": b"x"},
                 "datadog credentials does not contain datadog_api_key", id="no-api-key"),
    pytest.param({"datadog_api_key": b"x"},
                 "datadog credentials does not contain datadog_application_key", id="no-app-key"),
    pytest.param({**SECRET, "datadog_api_key": API_KEY.encode() + b"\n"},
                 "datadog credentials datadog_api_key holds a line break, which cannot be sent"
                 " in a header", id="newline"),
])
def test_a_secret_without_both_keys_is_refused(
        secret: dict[str, bytes] | None, message: str) -> None:
    with pytest.raises(MetricsError, match=f"^{message}$") as caught:
        DatadogProvider(address=None, secret=secret)
    assert API_KEY not in str(caught.value)


@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param({"interval": "1d"}, r"^error parsing metric interval: .*'1d'", id="interval"),
    pytest.param({"address": "api.datadoghq.com"},
                 r"^datadog address <invalid URL> is not a valid URL$", id="no-scheme"),
    pytest.param({"variant": "eu"}, r"^datadog takes no variant", id="variant"),
])
def test_a_configuration_it_cannot_use_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(MetricsError, match=message):
        DatadogProvider(**{"address": None, "secret": SECRET, **kwargs})


async def test_the_keys_never_appear_in_errors_logs_or_reprs(datadog: FakeDatadog) -> None:
    datadog.set_series(QUERY, 1.0, 2.0)  # a warning is logged
    datadog.fail_next(500, {"errors": ["Internal Server Error"]})  # a retry is logged
    seen: list[str] = []
    with capture_logs() as logs:
        async with provider(datadog) as client:
            seen.append(repr(client))
            await client.run_query(QUERY)
            for answer in ((403, {"errors": ["Forbidden"]}), (503, {"errors": ["down"]})):
                datadog.fail_next(*answer)
                datadog.fail_next(*answer)
                datadog.fail_next(*answer)
                with pytest.raises(MetricsError) as caught:
                    await client.run_query(QUERY)
                seen.extend([str(caught.value), repr(caught.value)])
    assert any(log["event"] == "metrics_request_retrying" for log in logs), logs
    seen.extend(repr(log) for log in logs)
    for text in seen:
        assert API_KEY not in text
        assert APP_KEY not in text


def test_registered_and_conforming() -> None:
    (entry_point,) = [ep for ep in importlib.metadata.entry_points(group="flaggerpy.metrics")
                      if ep.name == "datadog"]
    assert entry_point.load() is DatadogProvider
    conforming: type[MetricsProvider] = DatadogProvider
    assert isinstance(DatadogProvider(address=None, secret=SECRET), conforming)
