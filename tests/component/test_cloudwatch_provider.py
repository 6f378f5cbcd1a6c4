"""The CloudWatch provider against a real CloudWatch API: moto's server on loopback.

Metrics are put with ``PutMetricData`` and read back by the provider's ``GetMetricData``, so
values, metric math, empty answers, validation errors and IAM denials are moto's own; moto's
recorder shows what arrived (target, SigV4 credential scope, JSON body). The endpoint is given
to the provider the way a user gives it to Flagger's SDK, through ``AWS_ENDPOINT_URL_CLOUDWATCH``,
and the credentials through the default chain's environment variables. Transport faults (5xx,
no answer) are local servers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from aiohttp import web

from e2e.cluster.localcluster import free_port
from e2e.moto import LocalMoto
from flaggerpy.errors import MetricsError, NoValuesFoundError, ProviderOfflineError
from flaggerpy.metrics.cloudwatch import CloudWatchProvider

REGION = "eu-west-1"
ACCESS_KEY = "AKIAFLAGGERPYTEST001"
SECRET_KEY = "cloudwatch-secret-key-do-not-print"
NAMESPACE = "Flaggerpy/Test"
# moto names the IAM action after the endpoint prefix (monitoring:), AWS after the service
# (cloudwatch:); a policy with both works on either.
GET_METRIC_DATA = ["cloudwatch:GetMetricData", "monitoring:GetMetricData"]


def stat(id_: str, metric: str, **extra: object) -> dict[str, object]:
    return {"Id": id_, "MetricStat": {"Metric": {
        "Namespace": NAMESPACE, "MetricName": metric,
        "Dimensions": [{"Name": "app", "Value": "podinfo"}]},
        "Period": 60, "Stat": "Average"}, **extra}


@pytest.fixture(scope="module")
def moto() -> Iterator[LocalMoto]:
    with LocalMoto() as server:
        yield server


@pytest.fixture
def aws(moto: LocalMoto, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> LocalMoto:
    """moto, empty, as the endpoint of the default chain with the test's credentials."""
    moto.reset()
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ENDPOINT_URL", "AWS_REGION",
                 "AWS_DEFAULT_REGION", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", moto.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    return moto


@pytest.fixture
async def provider(aws: LocalMoto) -> AsyncIterator[CloudWatchProvider]:
    async with CloudWatchProvider(address=None, region=REGION, interval="1m") as client:
        yield client


def put(aws: LocalMoto, metric: str, values: list[float], *, region: str = REGION) -> None:
    """Points one minute apart, the last value newest (30 s ago)."""
    now = datetime.now(UTC)
    points = [(now - timedelta(seconds=30 + 60 * age), value)
              for age, value in enumerate(reversed(values))]
    aws.put_metric(region=region, namespace=NAMESPACE, name=metric, points=points,
                   dimensions={"app": "podinfo"})


# --- the request ---------------------------------------------------------------------------------


async def test_the_query_is_sent_as_get_metric_data(
        aws: LocalMoto, provider: CloudWatchProvider) -> None:
    put(aws, "Errors", [4.0, 2.5])
    # Keys in any case, an unknown key and a null, as Go's encoding/json takes them.
    query = json.dumps([{
        "id": "e1", "metricStat": {"METRIC": {
            "namespace": NAMESPACE, "MetricName": "Errors",
            "Dimensions": [{"name": "app", "value": "podinfo"}]},
            "Period": 60, "Stat": "Average", "Comment": "ignored"},
        "Label": None, "ReturnData": True}])
    before = datetime.now(UTC).timestamp()
    assert await provider.run_query(query) == 2.5
    after = datetime.now(UTC).timestamp()

    [sent] = aws.requests("GetMetricData")
    assert sent.method == "POST"
    assert sent.header("X-Amz-Target") == "GraniteServiceVersion20100801.GetMetricData"
    assert sent.credential_scope == (ACCESS_KEY, REGION, "monitoring")
    body = sent.json()
    assert body["MetricDataQueries"] == [{
        "Id": "e1", "MetricStat": {"Metric": {
            "Namespace": NAMESPACE, "MetricName": "Errors",
            "Dimensions": [{"Name": "app", "Value": "podinfo"}]},
            "Period": 60, "Stat": "Average"},
        "ReturnData": True}]
    assert body["MaxDatapoints"] == 20
    assert before - 1 <= body["EndTime"] <= after + 1
    assert body["EndTime"] - body["StartTime"] == pytest.approx(600, abs=0.01)  # 10 x 1m


async def test_the_start_time_is_ten_intervals_back(aws: LocalMoto) -> None:
    async with CloudWatchProvider(address=None, region=REGION, interval="90s") as provider:
        with pytest.raises(NoValuesFoundError):
            await provider.run_query(json.dumps([stat("m1", "Nothing")]))
    [sent] = aws.requests("GetMetricData")
    assert sent.json()["EndTime"] - sent.json()["StartTime"] == pytest.approx(900, abs=0.01)


async def test_the_region_is_the_templates(aws: LocalMoto) -> None:
    put(aws, "Latency", [120.0], region="us-west-2")
    query = json.dumps([stat("m1", "Latency")])
    async with CloudWatchProvider(address=None, region=REGION, interval="1m") as elsewhere:
        with pytest.raises(NoValuesFoundError):
            await elsewhere.run_query(query)
    async with CloudWatchProvider(address=None, region="us-west-2", interval="1m") as there:
        assert await there.run_query(query) == 120.0
    regions = [r.credential_scope[1] for r in aws.requests("GetMetricData")]
    assert regions == [REGION, "us-west-2"]


@pytest.mark.parametrize("region", [None, "", "  "])
def test_a_region_is_required(region: str | None) -> None:
    with pytest.raises(MetricsError, match="region not specified"):
        CloudWatchProvider(address=None, region=region, interval="1m")


@pytest.mark.parametrize("interval", ["", "1d", "5"])
def test_the_interval_must_be_a_go_duration(interval: str) -> None:
    with pytest.raises(MetricsError, match="error parsing metric interval"):
        CloudWatchProvider(address=None, region=REGION, interval=interval)


def test_no_variant() -> None:
    with pytest.raises(MetricsError, match="no variant"):
        CloudWatchProvider(address=None, region=REGION, interval="1m", variant="v2")


# --- the answer ----------------------------------------------------------------------------------


async def test_of_several_values_the_newest_is_taken(
        aws: LocalMoto, provider: CloudWatchProvider) -> None:
    put(aws, "Requests", [10.0, 20.0, 30.0, 40.0])
    assert await provider.run_query(json.dumps([stat("m1", "Requests")])) == 40.0


async def test_of_several_results_the_first_returned_is_taken(
        aws: LocalMoto, provider: CloudWatchProvider) -> None:
    put(aws, "Errors", [1.0, 3.0])
    put(aws, "Requests", [50.0, 60.0])
    # An expression over a query that is not returned (moto's metric math evaluates a bare
    # query id only; CloudWatch's evaluates arithmetic too).
    query = json.dumps([
        stat("errors", "Errors", ReturnData=False),
        {"Id": "latest", "Expression": "errors", "Label": "Errors"},
    ])
    assert await provider.run_query(query) == 3.0
    both = json.dumps([stat("requests", "Requests"), stat("errors", "Errors")])
    assert await provider.run_query(both) == 60.0


async def test_no_data_is_no_values(aws: LocalMoto, provider: CloudWatchProvider) -> None:
    put(aws, "Errors", [1.0])
    with pytest.raises(NoValuesFoundError, match="no values found"):
        await provider.run_query(json.dumps([stat("m1", "NeverPut")]))


async def test_no_results_is_no_values(aws: LocalMoto, provider: CloudWatchProvider) -> None:
    put(aws, "Errors", [1.0])
    with pytest.raises(NoValuesFoundError, match="no values found"):
        await provider.run_query(json.dumps([stat("m1", "Errors", ReturnData=False)]))


# --- error answers -------------------------------------------------------------------------------


async def test_a_validation_error_is_a_metrics_error(
        aws: LocalMoto, provider: CloudWatchProvider) -> None:
    # A misspelt key is dropped, as Go's encoding/json drops it, and CloudWatch then finds a
    # query with neither MetricStat nor Expression.
    misspelt = {"Id": "m1", "MetricStats": stat("m1", "Errors")["MetricStat"]}
    with pytest.raises(MetricsError) as caught:
        await provider.run_query(json.dumps([misspelt]))
    assert not isinstance(caught.value, (NoValuesFoundError, ProviderOfflineError))
    assert str(caught.value).startswith("error requesting cloudwatch: ")
    assert "ValidationError: The parameter MetricDataQueries.member.1.MetricStat is required" in (
        str(caught.value))
    assert "status code: 400" in str(caught.value)
    [sent] = aws.requests("GetMetricData")  # a 4xx is not retried
    assert sent.json()["MetricDataQueries"] == [{"Id": "m1"}]


@pytest.mark.parametrize(("query", "says"), [
    ("not json", "error unmarshaling query"),
    ('{"Id": "m1"}', "must be a JSON array of MetricDataQuery, not an object"),
    ("null", "not null"),
    (json.dumps([{"Id": "m1", "MetricStat": {"Metric": {"MetricName": "x"},
                                              "Period": "60", "Stat": "Sum"}}]),
     "Period"),
])
async def test_an_invalid_query_is_not_sent(
        aws: LocalMoto, provider: CloudWatchProvider, query: str, says: str) -> None:
    with pytest.raises(MetricsError, match=says):
        await provider.run_query(query)
    assert aws.requests("GetMetricData") == []


@pytest.fixture
async def failing_server() -> AsyncIterator[tuple[str, list[web.Request]]]:
    """An endpoint answering 503 to everything; records the requests."""
    seen: list[web.Request] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request)
        return web.Response(status=503, text="Service Unavailable")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_a_5xx_is_retried_then_offline(
        aws: LocalMoto, monkeypatch: pytest.MonkeyPatch,
        failing_server: tuple[str, list[web.Request]]) -> None:
    url, seen = failing_server
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", url)
    async with CloudWatchProvider(address=None, region=REGION, interval="1m",
                                  backoff=0.01) as provider:
        with pytest.raises(ProviderOfflineError, match="status code: 503"):
            await provider.run_query(json.dumps([stat("m1", "Errors")]))
    assert len(seen) == 4  # Flagger's SDK: the call and 3 retries


async def test_no_answer_times_out(aws: LocalMoto, monkeypatch: pytest.MonkeyPatch) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", f"http://127.0.0.1:{port}")
    try:
        async with CloudWatchProvider(address=None, region=REGION, interval="1m",
                                      timeout=0.3, attempts=2, backoff=0.01) as provider:
            started = time.monotonic()
            with pytest.raises(ProviderOfflineError, match=r"no answer within 0\.3s"):
                await provider.run_query(json.dumps([stat("m1", "Errors")]))
            assert time.monotonic() - started < 10  # not 4 attempts of the default 5 s
        assert len(accepted) == 2
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_nothing_listening_is_offline(
        aws: LocalMoto, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", f"http://127.0.0.1:{free_port()}")
    async with CloudWatchProvider(address=None, region=REGION, interval="1m", attempts=2,
                                  backoff=0.01) as provider:
        with pytest.raises(ProviderOfflineError, match="error requesting cloudwatch"):
            await provider.run_query(json.dumps([stat("m1", "Errors")]))
        with pytest.raises(ProviderOfflineError):
            await provider.is_online()


async def test_a_closed_provider_refuses_queries(provider: CloudWatchProvider) -> None:
    await provider.aclose()
    with pytest.raises(ProviderOfflineError, match="closed"):
        await provider.run_query(json.dumps([stat("m1", "Errors")]))


# --- credentials: the default chain, never the secretRef ----------------------------------------


async def test_credentials_come_from_the_default_chain(
        aws: LocalMoto, monkeypatch: pytest.MonkeyPatch) -> None:
    put(aws, "Errors", [1.5])
    key, secret = aws.user("flagger", actions=GET_METRIC_DATA)
    aws.enforce_auth()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    # Flagger reads no secretRef for CloudWatch: keys in one change nothing.
    ignored = {"AWS_ACCESS_KEY_ID": b"AKIAIGNOREDIGNORED00", "aws_secret_access_key": b"nope"}
    async with CloudWatchProvider(address=None, secret=ignored, region=REGION,
                                  interval="1m") as provider:
        assert await provider.run_query(json.dumps([stat("m1", "Errors")])) == 1.5
        assert await provider.is_online() is True
    assert {r.credential_scope[0] for r in aws.requests("GetMetricData")} == {key}


async def test_a_wrong_secret_key_is_an_error_that_does_not_show_it(
        aws: LocalMoto, monkeypatch: pytest.MonkeyPatch) -> None:
    key, _secret = aws.user("flagger", actions=GET_METRIC_DATA)
    aws.enforce_auth()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    async with CloudWatchProvider(address=None, region=REGION, interval="1m") as provider:
        with structlog.testing.capture_logs() as logs, pytest.raises(MetricsError) as caught:
            await provider.run_query(json.dumps([stat("m1", "Errors")]))
        with pytest.raises(ProviderOfflineError, match="status code: 403") as offline:
            await provider.is_online()
    assert "SignatureDoesNotMatch" in str(caught.value)
    assert "status code: 403" in str(caught.value)
    for shown in (str(caught.value), repr(caught.value), str(offline.value), repr(provider),
                  json.dumps(logs, default=str)):
        assert SECRET_KEY not in shown


async def test_is_online_is_a_400_to_an_empty_get_metric_data(
        aws: LocalMoto, provider: CloudWatchProvider) -> None:
    assert await provider.is_online() is True
    [sent] = aws.requests("GetMetricData")
    body = sent.json()
    assert body["MetricDataQueries"] == []
    zero = datetime(1, 1, 1, tzinfo=UTC).timestamp()  # Go's time.Time{}
    assert body["StartTime"] == body["EndTime"] == zero
    assert "MaxDatapoints" not in body


async def test_is_online_fails_without_permission(
        aws: LocalMoto, monkeypatch: pytest.MonkeyPatch) -> None:
    key, secret = aws.user("reader-of-nothing", actions=[])
    aws.enforce_auth()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    async with CloudWatchProvider(address=None, region=REGION, interval="1m") as provider:
        with pytest.raises(ProviderOfflineError, match="AccessDenied") as caught:
            await provider.is_online()
    assert "status code: 403" in str(caught.value)
    assert secret not in str(caught.value)


async def test_no_credentials_anywhere(aws: LocalMoto, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    async with CloudWatchProvider(address=None, region=REGION, interval="1m") as provider:
        with pytest.raises(MetricsError, match="no credentials from the AWS default"):
            await provider.run_query(json.dumps([stat("m1", "Errors")]))
        with pytest.raises(ProviderOfflineError, match="no credentials"):
            await provider.is_online()
    assert aws.requests("GetMetricData") == []
