"""CloudWatch: ``GetMetricData``, as Flagger's ``providers/cloudwatch.go`` calls it.

A MetricTemplate with ``provider.type: cloudwatch`` carries its query as a JSON array of
`MetricDataQuery <https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_MetricDataQuery.html>`_
objects. Each query is sent as one ``GetMetricData`` call (spec §4.4) with:

- ``MetricDataQueries``: the array. Keys are matched to the API's member names as Go's
  ``encoding/json`` matches struct fields: an exact match first, else case-insensitively, and
  unknown keys and ``null`` values are dropped. So ``"id"`` works as ``"Id"`` does under
  Flagger, and a typo in a key is ignored here as it is there.
- ``StartTime`` = now - 10 intervals (the metric's ``interval``), ``EndTime`` = now,
  ``MaxDatapoints`` = 20.

The answer is ``MetricDataResults[0].Values[0]``: the first returned query's first value,
which is its newest under CloudWatch's default ``ScanBy: TimestampDescending``. Several values
or several results are not an error (Flagger reads the first); none at all is
:class:`~flaggerpy.errors.NoValuesFoundError` ("no values found"). ``NextToken``, ``Messages``
and a ``PartialData`` status are ignored, as Flagger ignores them.

Where the call goes, and as whom, is the AWS SDK's business, as under Flagger:

- ``spec.provider.region`` is required ("region not specified" otherwise).
- Credentials come from the SDK's **default credential chain** of the controller process:
  ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (and ``AWS_SESSION_TOKEN``), a web identity
  token (EKS IAM roles for service accounts, ``AWS_ROLE_ARN`` + ``AWS_WEB_IDENTITY_TOKEN_FILE``),
  the shared config and credentials files (``AWS_PROFILE``), then the container or EC2
  instance metadata. Flagger reads no ``secretRef`` for CloudWatch, and neither does this
  provider: a Secret given is ignored, never read for keys.
- The endpoint is the region's, unless the environment names another, as every current AWS
  SDK honours: ``AWS_ENDPOINT_URL_CLOUDWATCH``, else ``AWS_ENDPOINT_URL`` (a VPC endpoint, a
  FIPS endpoint, or a local emulator). ``spec.provider.address``, ``headers`` and
  ``insecureSkipVerify`` are not used, as in Flagger.

Transport, as the HTTP providers of this family do it (:mod:`flaggerpy.metrics._http`): one
client per provider, opened on first use and closed by :meth:`CloudWatchProvider.aclose`; a
timeout per attempt; and retries in this layer only, with jittered exponential backoff, of a
call that got no answer, a 5xx answer or a throttling error (what the SDK's own retryer
repeats). Flagger's SDK makes 3 retries, so a query is tried at most 4 times.

Errors: an answer of 4xx is :class:`~flaggerpy.errors.MetricsError` ``error requesting
cloudwatch: <code>: <message>``; 5xx after the retries, or no answer at all, is
:class:`~flaggerpy.errors.ProviderOfflineError`. Missing credentials, an invalid query (not a
JSON array, or a value of the wrong type) and a region the SDK cannot use are
:class:`~flaggerpy.errors.MetricsError` too.

:meth:`CloudWatchProvider.is_online` sends ``GetMetricData`` with no queries and a zero time
range, as Flagger does: CloudWatch answers 400 (a ValidationError) to a caller that may call
``GetMetricData``, and 403 to one that may not. A 400 or a success is online; anything else
raises :class:`~flaggerpy.errors.ProviderOfflineError` with the reason.

Factory signature (the ``flaggerpy.metrics`` entry point ``cloudwatch``), as every metrics
provider's::

    CloudWatchProvider(
        *,
        address: str | None,                      # unused (the SDK resolves the endpoint)
        secret: Mapping[str, bytes] | None = None,   # unused (default credential chain)
        headers: Mapping[str, Sequence[str]] | None = None,  # unused
        insecure_skip_verify: bool = False,       # unused
        region: str | None,                       # spec.provider.region; required
        interval: str,                            # the metric's interval, a Go duration
        variant: str = "",                        # must be empty
        timeout: float = 5.0, attempts: int = 4, backoff: float = 0.25,  # transport
    )
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Self

import structlog
import tenacity
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError as BotoConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    SSLError,
)
from botocore.model import ListShape, Shape, StructureShape

from flaggerpy.analysis import MetricsProvider, MetricsProviderFactory
from flaggerpy.errors import MetricsError, NoValuesFoundError, ProviderOfflineError
from flaggerpy.metrics._http import DEFAULT_BACKOFF, DEFAULT_TIMEOUT, excerpt
from flaggerpy.models.durations import parse_duration

if TYPE_CHECKING:
    from types_aiobotocore_cloudwatch import CloudWatchClient
    from types_aiobotocore_cloudwatch.type_defs import GetMetricDataOutputTypeDef

__all__ = [
    "MAX_DATAPOINTS",
    "MAX_RETRIES",
    "START_DELTA_INTERVALS",
    "CloudWatchProvider",
]

log = structlog.get_logger(__name__)

MAX_RETRIES: Final = 3
"""Retries after the first call, as Flagger's ``cloudWatchMaxRetries``."""

START_DELTA_INTERVALS: Final = 10
"""``StartTime`` is this many metric intervals before now (Flagger's start-delta multiplier)."""

MAX_DATAPOINTS: Final = 20
"""``MaxDatapoints`` of every query, as Flagger sends it."""

_BACKOFF_MAX: Final = 2.0
_ZERO_TIME: Final = datetime(1, 1, 1, tzinfo=UTC)  # Go's time.Time{}: is_online's time range
# Error codes AWS SDKs retry besides 5xx (botocore's and aws-sdk-go's throttling lists).
_THROTTLING: Final = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "RequestLimitExceeded", "RequestThrottled",
    "ProvisionedThroughputExceededException", "SlowDown", "PriorRequestNotComplete",
})


class _Retryable(Exception):
    """An attempt worth repeating: no answer, a 5xx or a throttling answer."""

    def __init__(self, error: MetricsError) -> None:
        super().__init__(str(error))
        self.error = error


class CloudWatchProvider:
    """Runs ``GetMetricData`` queries in one AWS region with the SDK's default credentials."""

    provider_type = "cloudwatch"

    def __init__(
            self,
            *,
            address: str | None = None,  # unused: the SDK resolves the endpoint
            secret: Mapping[str, bytes] | None = None,  # unused: Flagger reads no secretRef here
            headers: Mapping[str, Sequence[str]] | None = None,  # unused
            insecure_skip_verify: bool = False,  # unused
            region: str | None,
            interval: str,
            variant: str = "",
            timeout: float = DEFAULT_TIMEOUT,  # seconds, per attempt
            attempts: int = 1 + MAX_RETRIES,
            backoff: float = DEFAULT_BACKOFF,  # seconds before the first retry
    ) -> None:
        if variant:
            raise MetricsError(f"cloudwatch takes no variant (got cloudwatch:{variant})")
        if timeout <= 0 or attempts < 1 or backoff < 0:
            raise ValueError("timeout must be positive, attempts at least 1, backoff not negative")
        region = (region or "").strip()
        if not region:
            raise MetricsError("region not specified")
        try:
            seconds = parse_duration(interval)
        except ValueError as exc:
            raise MetricsError(f"error parsing metric interval: {exc}") from exc
        self.region: Final = region
        self.start_delta: Final = timedelta(seconds=START_DELTA_INTERVALS * seconds)
        """How far back each query reaches: 10 metric intervals."""
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = backoff
        self._stack = AsyncExitStack()
        self._client: CloudWatchClient | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(region={self.region})"

    async def run_query(self, query: str) -> float:
        """``MetricDataResults[0].Values[0]`` of the query; see the module docstring."""
        try:
            queries = json.loads(query)
        except ValueError as exc:
            raise MetricsError(f"error unmarshaling query: {exc}") from exc
        if not isinstance(queries, list):
            raise MetricsError(
                "error unmarshaling query: the query must be a JSON array of MetricDataQuery,"
                f" not {_json_kind(queries)}")
        client = await self._open()
        member = _metric_data_query_shape(client)
        canonical = [_canonical(entry, member) for entry in queries]
        end = datetime.now(UTC)
        answer = await self._call(
            MetricDataQueries=canonical, StartTime=end - self.start_delta, EndTime=end,
            MaxDatapoints=MAX_DATAPOINTS,
        )
        return _value_of(answer)

    async def is_online(self) -> bool:
        """True if ``GetMetricData`` with no queries answers 400 (or succeeds).

        Raises :class:`ProviderOfflineError` with the reason otherwise: no answer, missing
        credentials, or another status (403 when the credentials may not call GetMetricData).
        """
        try:
            await self._call(MetricDataQueries=[], StartTime=_ZERO_TIME, EndTime=_ZERO_TIME)
        except ProviderOfflineError:
            raise
        except _AnsweredError as exc:
            if exc.status == 400:
                return True
            raise ProviderOfflineError(f"unexpected status code: {exc}") from exc
        except MetricsError as exc:
            raise ProviderOfflineError(f"unexpected error: {exc}") from exc
        return True

    async def _call(self, **params: Any) -> GetMetricDataOutputTypeDef:
        """One GetMetricData, retried while there is no answer, a 5xx or throttling."""
        client = await self._open()
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self._attempts),
            wait=(tenacity.wait_exponential(multiplier=self._backoff, max=_BACKOFF_MAX)
                  + tenacity.wait_random(0, self._backoff)),
            retry=tenacity.retry_if_exception_type(_Retryable),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            answer: GetMetricDataOutputTypeDef = await retrying(self._once, client, params)
        except _Retryable as exc:
            raise exc.error from exc.__cause__
        return answer

    async def _once(
            self, client: CloudWatchClient, params: dict[str, Any],
    ) -> GetMetricDataOutputTypeDef:
        """One attempt; raises _Retryable for what a retry may fix."""
        try:
            async with asyncio.timeout(self._timeout):
                return await client.get_metric_data(**params)
        except TimeoutError as exc:
            raise _Retryable(ProviderOfflineError(
                f"error requesting cloudwatch: no answer within {self._timeout:g}s")) from exc
        except ClientError as exc:
            error = _answered(exc)
            if error.status >= 500 or error.status == 429 or error.code in _THROTTLING:
                raise _Retryable(error) from exc
            raise error from exc
        except SSLError as exc:  # not worth repeating: the certificate will not verify
            raise ProviderOfflineError(
                f"error requesting cloudwatch: {type(exc).__name__}: {exc}") from exc
        except (BotoConnectionError, HTTPClientError) as exc:  # refused, reset, read timeout
            raise _Retryable(ProviderOfflineError(
                f"error requesting cloudwatch: {type(exc).__name__}: {exc}")) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise MetricsError(
                "error requesting cloudwatch: no credentials from the AWS default credential"
                f" chain ({type(exc).__name__})") from exc
        except ParamValidationError as exc:
            raise MetricsError(f"error requesting cloudwatch: {' '.join(str(exc).split())}"
                               ) from exc
        except BotoCoreError as exc:  # e.g. a credential provider that failed, a bad region
            raise MetricsError(
                f"error requesting cloudwatch: {type(exc).__name__}: {exc}") from exc

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        if outcome is None or not outcome.failed:
            return
        log.debug("metrics_request_retrying", provider=self.provider_type, region=self.region,
                  attempt=state.attempt_number, reason=str(outcome.exception()))

    async def _open(self) -> CloudWatchClient:
        """The client, created on first use inside the running loop."""
        if self._closed:
            raise ProviderOfflineError(f"cloudwatch provider for {self.region} is closed")
        async with self._opening:
            if self._client is None:
                config = AioConfig(
                    connect_timeout=self._timeout, read_timeout=self._timeout,
                    # Retries happen in _call, where their count and backoff are ours.
                    retries={"total_max_attempts": 1},
                )
                self._client = await self._stack.enter_async_context(
                    get_session().create_client("cloudwatch", region_name=self.region,
                                                config=config))
            return self._client

    async def aclose(self) -> None:
        """Closes the client; later queries fail with ProviderOfflineError."""
        self._closed = True
        self._client = None
        await self._stack.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class _AnsweredError(MetricsError):
    """CloudWatch answered with an error: its HTTP status and error code."""

    def __init__(self, message: str, *, status: int, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class _AnsweredOffline(_AnsweredError, ProviderOfflineError):
    """A 5xx answer: the service is failing, not the query."""


def _answered(exc: ClientError) -> _AnsweredError:
    """An error answer in Flagger's words: ``error requesting cloudwatch: <code>: <message>``."""
    response: Mapping[str, Any] = exc.response
    error = response.get("Error") or {}
    metadata = response.get("ResponseMetadata") or {}
    status = int(metadata.get("HTTPStatusCode") or 0)
    code = str(error.get("Code") or status)
    message = excerpt(str(error.get("Message") or ""))
    text = f"error requesting cloudwatch: {code}: {message} (status code: {status})"
    kind = _AnsweredOffline if status >= 500 else _AnsweredError
    return kind(text, status=status, code=code)


def _value_of(answer: GetMetricDataOutputTypeDef) -> float:
    """``MetricDataResults[0].Values[0]``, or NoValuesFoundError."""
    results = answer.get("MetricDataResults") or []
    if not results:
        raise NoValuesFoundError("no values found (no MetricDataResults)")
    first = results[0]
    values = first.get("Values") or []
    if not values:
        raise NoValuesFoundError(
            f"no values found (MetricDataResults[0] Id {first.get('Id', '')!r},"
            f" StatusCode {first.get('StatusCode', '')})")
    value = float(values[0])
    if math.isnan(value):
        raise NoValuesFoundError("no values found (NaN)")
    return value


def _metric_data_query_shape(client: CloudWatchClient) -> StructureShape:
    """The API's ``MetricDataQuery`` shape, from the SDK's own service model."""
    operation = client.meta.service_model.operation_model("GetMetricData")
    assert operation.input_shape is not None
    queries = operation.input_shape.members["MetricDataQueries"]
    assert isinstance(queries, ListShape)
    assert isinstance(queries.member, StructureShape)
    return queries.member


def _canonical(value: Any, shape: Shape) -> Any:
    """A decoded JSON value with its keys as Go's ``encoding/json`` would map them to ``shape``.

    A structure's keys match members exactly, else case-insensitively (the last key that
    matches a member wins); unknown keys and nulls are dropped. Other values pass unchanged,
    so a value of the wrong type is reported by the SDK's parameter validation.
    """
    if isinstance(shape, StructureShape) and isinstance(value, Mapping):
        members = shape.members
        folded = {name.casefold(): name for name in members}
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = key if key in members else folded.get(str(key).casefold())
            if name is None:
                continue
            if item is None:
                out.pop(name, None)
                continue
            out[name] = _canonical(item, members[name])
        return out
    if isinstance(shape, ListShape) and isinstance(value, list):
        return [_canonical(item, shape.member) for item in value]
    return value


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


_factory: MetricsProviderFactory = CloudWatchProvider
_: type[MetricsProvider] = CloudWatchProvider
