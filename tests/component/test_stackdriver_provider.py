"""The Stackdriver provider against the local Cloud Monitoring of ``e2e/fakes/stackdriver.py``.

The stand-in checks each request as Google documents it: the RS256 assertion of the
service-account flow (signature against the key the test generated, ``iss``, ``scope``, ``aud``,
``exp``), the bearer token, the path and the body of ``timeSeries:query``. The key file's
``token_uri`` points at it, so the provider takes the same path as against Google.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import structlog

from e2e.fakes.stackdriver import FakeCloudMonitoring, Series
from flaggerpy.errors import (
    MetricsError,
    NoValuesFoundError,
    ProviderOfflineError,
)
from flaggerpy.metrics.stackdriver import SCOPE, StackdriverProvider

PROJECT = "flagger-test-123"
QUERY = ("fetch k8s_container | metric 'custom.googleapis.com/latency'"
         " | filter resource.namespace_name == 'test' | within 1m")


@pytest.fixture
async def google() -> AsyncIterator[FakeCloudMonitoring]:
    async with FakeCloudMonitoring(project=PROJECT) as fake:
        yield fake


def secret_of(fake: FakeCloudMonitoring, **extra: bytes) -> dict[str, bytes]:
    return {"project": PROJECT.encode(), "serviceAccountKey": fake.service_account_key().encode(),
            **extra}


def provider(fake: FakeCloudMonitoring, secret: dict[str, bytes] | None = None,
             **kwargs: Any) -> StackdriverProvider:
    return StackdriverProvider(address=fake.url, secret=secret or secret_of(fake),
                               backoff=0.01, **kwargs)


async def test_a_query_is_sent_as_google_documents_it(google: FakeCloudMonitoring) -> None:
    google.set_series(QUERY, Series([0.25, 0.75], labels={"pod": "podinfo-1"}))
    secret = secret_of(google)
    key = json.loads(secret["serviceAccountKey"])
    async with provider(google, secret) as client:
        assert await client.run_query(QUERY) == 0.25  # the newest point of the first series

    token_request, query_request = google.requests
    assert token_request.path == "/token"
    assert token_request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert token_request.body["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    header = jwt.get_unverified_header(token_request.body["assertion"])
    assert header["alg"] == "RS256"
    assert header["kid"] == key["private_key_id"]
    (claims,) = google.assertions  # verified by the stand-in with the generated key
    assert claims["iss"] == key["client_email"]
    assert claims["scope"] == SCOPE == "https://www.googleapis.com/auth/monitoring.read"
    assert claims["aud"] == f"{google.url}/token"
    assert claims["exp"] - claims["iat"] == 3600
    assert abs(claims["iat"] - time.time()) < 60

    assert query_request.method == "POST"
    assert query_request.path == f"/v3/projects/{PROJECT}/timeSeries:query"
    assert query_request.body == {"query": QUERY}
    assert query_request.headers["content-type"] == "application/json"
    assert query_request.headers["authorization"].startswith("Bearer ya29.")


async def test_the_token_is_reused_until_it_expires(google: FakeCloudMonitoring) -> None:
    google.set_series(QUERY, Series([1.0]))
    async with provider(google) as client:
        for _ in range(3):
            assert await client.run_query(QUERY) == 1.0
        assert len(google.token_requests) == 1
        tokens = {r.headers["authorization"] for r in google.requests if r.path != "/token"}
        assert len(tokens) == 1

    google.expires_in = 1  # renewed once less than half its life is left
    async with provider(google) as client:
        await client.run_query(QUERY)
        await client.run_query(QUERY)
        assert len(google.token_requests) == 2
        await asyncio.sleep(0.6)
        await client.run_query(QUERY)
        assert len(google.token_requests) == 3


async def test_a_revoked_token_fails_once_then_is_replaced(google: FakeCloudMonitoring) -> None:
    google.set_series(QUERY, Series([2.0]))
    async with provider(google) as client:
        assert await client.run_query(QUERY) == 2.0
        google.revoke_tokens()
        with pytest.raises(MetricsError, match="UNAUTHENTICATED: Request had invalid"):
            await client.run_query(QUERY)
        assert await client.run_query(QUERY) == 2.0
    assert len(google.token_requests) == 2


@pytest.mark.parametrize(("points", "expected"), [
    ([42], 42.0),  # INT64 series: int64Value is a string in proto3 JSON
    ([True], 1.0),
    ([False], 0.0),
    ([0.0], 0.0),
    ([float("inf")], math.inf),
])
async def test_value_types(google: FakeCloudMonitoring, points: list[Any],
                           expected: float) -> None:
    google.set_series(QUERY, Series(points))
    async with provider(google) as client:
        assert await client.run_query(QUERY) == expected


@pytest.mark.parametrize("series", [
    (),  # no timeSeriesData at all
    (Series([]),),  # a series without points
    (Series([None]),),  # a point without values
    (Series([float("nan")]),),
], ids=["no-series", "no-points", "no-values", "nan"])
async def test_no_values(google: FakeCloudMonitoring, series: tuple[Series, ...]) -> None:
    google.set_series(QUERY, *series)
    async with provider(google) as client:
        with pytest.raises(NoValuesFoundError, match="no values found"):
            await client.run_query(QUERY)


async def test_an_unknown_query_has_no_values(google: FakeCloudMonitoring) -> None:
    async with provider(google) as client:
        with pytest.raises(NoValuesFoundError):
            await client.run_query("fetch gce_instance | metric 'nothing/here'")


async def test_several_series_answer_the_first_and_warn(google: FakeCloudMonitoring) -> None:
    google.set_series(QUERY, Series([3.0], {"pod": "a"}), Series([9.0], {"pod": "b"}))
    async with provider(google) as client:
        with structlog.testing.capture_logs() as logs:
            assert await client.run_query(QUERY) == 3.0
    assert next(e for e in logs if e["event"] == "metrics_query_several_series")["series"] == 2


async def test_empty_pages_are_followed(google: FakeCloudMonitoring) -> None:
    google.set_series(QUERY, Series([5.0]), empty_pages=2)
    async with provider(google) as client:
        assert await client.run_query(QUERY) == 5.0
    bodies = [r.body for r in google.requests if r.path.startswith("/v3/")]
    assert bodies == [{"query": QUERY}, {"query": QUERY, "pageToken": "page-1"},
                      {"query": QUERY, "pageToken": "page-2"}]


async def test_an_invalid_query_is_a_metrics_error(google: FakeCloudMonitoring) -> None:
    google.fail(400, "INVALID_ARGUMENT", "Line 1, column 7: unknown table 'k8s_contaner'.")
    async with provider(google) as client:
        with pytest.raises(MetricsError) as caught:
            await client.run_query(QUERY)
    assert not isinstance(caught.value, ProviderOfflineError)
    assert str(caught.value) == ("error requesting stackdriver: INVALID_ARGUMENT:"
                                 " Line 1, column 7: unknown table 'k8s_contaner'.")
    assert len(google.queries) == 1  # a 4xx is not repeated


async def test_another_project_is_permission_denied(google: FakeCloudMonitoring) -> None:
    secret = secret_of(google) | {"project": b"someone-else"}
    async with provider(google, secret) as client:
        with pytest.raises(MetricsError, match="PERMISSION_DENIED: Permission monitoring"):
            await client.run_query(QUERY)
        with pytest.raises(ProviderOfflineError, match="unexpected status code: PERMISSION_DENIED"):
            await client.is_online()


async def test_server_errors_are_retried_then_offline(google: FakeCloudMonitoring) -> None:
    google.set_series(QUERY, Series([7.0]))
    google.fail(503, "UNAVAILABLE", "The service is currently unavailable.", times=1)
    async with provider(google, attempts=2) as client:
        assert await client.run_query(QUERY) == 7.0  # the retry got through
        google.fail(503, "UNAVAILABLE", "The service is currently unavailable.", times=2)
        with pytest.raises(ProviderOfflineError, match="UNAVAILABLE: The service is currently"):
            await client.run_query(QUERY)


async def test_a_slow_api_times_out(google: FakeCloudMonitoring) -> None:
    google.set_series(QUERY, Series([1.0]))
    async with provider(google, timeout=1.0, attempts=1) as client:
        await client.run_query(QUERY)  # the token first, without delay
        google.delay = 3.0
        with pytest.raises(ProviderOfflineError, match="did not answer within 1s"):
            await client.run_query(QUERY)


async def test_a_key_google_does_not_know_is_refused(google: FakeCloudMonitoring) -> None:
    async with FakeCloudMonitoring(project=PROJECT) as elsewhere:
        foreign = json.loads(elsewhere.service_account_key())
    foreign["token_uri"] = f"{google.url}/token"  # signed with a key this server never saw
    secret = {"project": PROJECT.encode(), "serviceAccountKey": json.dumps(foreign).encode()}
    async with provider(google, secret) as client:
        with pytest.raises(MetricsError, match="token request failed: HTTP 400: invalid_grant"):
            await client.run_query(QUERY)
    assert google.assertions == []
    assert google.queries == []


async def test_is_online_sends_an_empty_query(google: FakeCloudMonitoring) -> None:
    async with provider(google) as client:
        assert await client.is_online() is True
    assert google.queries == [""]


async def test_is_online_without_the_monitoring_scope(google: FakeCloudMonitoring) -> None:
    google.granted_scopes = frozenset({"https://www.googleapis.com/auth/userinfo.email"})
    async with provider(google) as client:
        with pytest.raises(ProviderOfflineError, match="PERMISSION_DENIED: Request had"):
            await client.is_online()


async def test_is_online_when_nothing_answers(google: FakeCloudMonitoring) -> None:
    client = provider(google, attempts=1)
    await google.__aexit__(None, None, None)
    async with client:
        with pytest.raises(ProviderOfflineError, match="cannot connect"):
            await client.is_online()


async def test_application_default_credentials_from_a_key_file(
        google: FakeCloudMonitoring, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "key.json"
    key_file.write_text(google.service_account_key(email="adc@p.iam.gserviceaccount.com"))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    google.set_series(QUERY, Series([4.0]))
    async with provider(google, {"project": PROJECT.encode()}) as client:
        assert await client.run_query(QUERY) == 4.0
    assert google.assertions[0]["iss"] == "adc@p.iam.gserviceaccount.com"


async def test_application_default_credentials_from_the_metadata_server(
        google: FakeCloudMonitoring, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("GCE_METADATA_HOST", google.url.removeprefix("http://"))
    google.set_series(QUERY, Series([6.0]))
    async with provider(google, {"project": PROJECT.encode()}) as client:
        assert await client.run_query(QUERY) == 6.0
    metadata = google.requests[0]
    assert metadata.path == "/computeMetadata/v1/instance/service-accounts/default/token"
    assert metadata.headers["metadata-flavor"] == "Google"
    assert metadata.body == {"scopes": SCOPE}


@pytest.mark.parametrize(("secret", "message"), [
    (None, "needs a secretRef"),
    ({}, "does not contain a project id"),
    ({"project": b""}, "does not contain a project id"),
    ({"project": b"p", "serviceAccountKey": b"{not json"}, "serviceAccountKey is not valid JSON"),
    ({"project": b"p", "serviceAccountKey": b'{"type": "authorized_user", "refresh_token": "x"}'},
     "has type 'authorized_user'"),
    ({"project": b"p", "serviceAccountKey":
      b'{"type": "service_account", "client_email": "a@b", "private_key": "s3cr3t-pem"}'},
     "private_key is not a PEM private key"),
])
def test_a_secret_it_cannot_use_is_refused(secret: dict[str, bytes] | None, message: str) -> None:
    with pytest.raises(MetricsError, match=message) as caught:
        StackdriverProvider(address=None, secret=secret)
    assert "s3cr3t" not in str(caught.value)
    assert "refresh_token" not in str(caught.value)


def test_a_variant_or_a_bad_address_is_refused() -> None:
    secret = {"project": b"p"}
    with pytest.raises(MetricsError, match="no variant"):
        StackdriverProvider(address=None, secret=secret, variant="v2")
    with pytest.raises(MetricsError, match="is not a valid URL"):
        StackdriverProvider(address="monitoring.googleapis.com", secret=secret)


def test_the_production_endpoint_by_default() -> None:
    client = StackdriverProvider(address=None, secret={"project": b"my-proj"})
    assert repr(client) == "StackdriverProvider(https://monitoring.googleapis.com)"


async def test_secrets_never_appear_in_errors_logs_or_reprs(
        google: FakeCloudMonitoring) -> None:
    secret = secret_of(google)
    key = json.loads(secret["serviceAccountKey"])
    pem_body = key["private_key"].splitlines()[5]
    errors: list[str] = []
    with structlog.testing.capture_logs() as logs:
        async with provider(google, secret, attempts=2) as client:
            google.set_series(QUERY, Series([1.0]))
            await client.run_query(QUERY)
            token = google.requests[-1].headers["authorization"].removeprefix("Bearer ")
            google.fail(503, "UNAVAILABLE", "down", times=2)
            google.fail(401, "UNAUTHENTICATED", "expired")
            for _ in range(2):
                try:
                    await client.run_query(QUERY)
                except MetricsError as exc:
                    errors.append(f"{exc!s} {exc!r} {exc.__cause__!r}")
            errors.append(repr(client))
    assert len(errors) == 3
    seen = " ".join(errors) + repr(logs)
    for value in (pem_body, key["private_key_id"], token, "ya29."):
        assert value not in seen
