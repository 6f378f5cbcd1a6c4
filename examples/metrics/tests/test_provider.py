"""The provider against a real local HTTP server (``flaggerpy_http``), as flaggerpy builds it."""

from __future__ import annotations

import pytest
from flaggerpy_jsonhttp import JsonHttpProvider

from flaggerpy import sdk
from flaggerpy.testing import WebhookReceiver, free_port

QUERY = 'errors{namespace="test",target="podinfo"}'


async def test_the_query_is_sent_and_the_number_read(flaggerpy_http: WebhookReceiver) -> None:
    flaggerpy_http.answer("/api/value", 200, json={"value": 0.5})
    async with JsonHttpProvider(
            address=flaggerpy_http.url("/api/value"), secret={"token": b"s3cret\n"},
            headers={"X-Scope": ["team-a"]}, insecure_skip_verify=False, region=None,
            interval="1m", variant="") as provider:
        assert await provider.run_query(QUERY) == 0.5

    [call] = flaggerpy_http.calls
    assert (call.method, call.path, dict(call.query)) == ("GET", "/api/value", {"query": QUERY})
    assert call.headers["authorization"] == "Bearer s3cret"
    assert call.headers["x-scope"] == "team-a"


async def test_no_value_several_values_and_no_number_are_the_sdk_errors(
        flaggerpy_http: WebhookReceiver) -> None:
    async with JsonHttpProvider(address=flaggerpy_http.url("/v")) as provider:
        flaggerpy_http.answer("/v", 200, json={"value": None})
        with pytest.raises(sdk.NoValuesFoundError):
            await provider.run_query(QUERY)
        flaggerpy_http.answer("/v", 200, json=[1, 2])
        with pytest.raises(sdk.MultipleValuesError):
            await provider.run_query(QUERY)
        flaggerpy_http.answer("/v", 200)  # a plain "ok"
        with pytest.raises(sdk.MetricsError, match="not JSON"):
            await provider.run_query(QUERY)


async def test_a_failing_backend_is_offline_and_no_credential_is_quoted(
        flaggerpy_http: WebhookReceiver) -> None:
    flaggerpy_http.answer("/v", 503)
    address = flaggerpy_http.url("/v").replace("http://", "http://user:hunter2@") + "?key=k3y"
    async with JsonHttpProvider(address=address) as provider:
        with pytest.raises(sdk.ProviderOfflineError, match="HTTP 503") as refused:
            await provider.run_query(QUERY)
        assert not await provider.is_online()
    assert "hunter2" not in str(refused.value)
    assert "k3y" not in str(refused.value)

    async with JsonHttpProvider(address=f"http://127.0.0.1:{free_port()}/v") as provider:
        with pytest.raises(sdk.ProviderOfflineError, match="unreachable"):
            await provider.run_query(QUERY)
        assert not await provider.is_online()


async def test_an_answering_backend_is_online(flaggerpy_http: WebhookReceiver) -> None:
    async with JsonHttpProvider(address=flaggerpy_http.url("/v")) as provider:
        assert await provider.is_online()


@pytest.mark.parametrize("address", [None, "", "metrics:8080", "ftp://metrics/v"])
def test_an_address_that_is_not_http_is_refused_at_build(address: str | None) -> None:
    with pytest.raises(sdk.MetricsError, match="must be an http"):
        JsonHttpProvider(address=address)
