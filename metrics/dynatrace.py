"""Dynatrace: metric selector queries on the Metrics API v2, as Flagger's ``dynatrace.go`` sends.

This provider answers MetricTemplates with ``provider.type: dynatrace``.

The request (spec §4.4)::

    GET <address>/api/v2/metrics/query?from=<ms>&metricSelector=<query>&resolution=Inf&to=<ms>
    Authorization: Api-Token <dynatrace_token>

``to`` is now and ``from`` is now minus ten times the metric's ``interval``, both in Unix
milliseconds of whole seconds (Flagger's ``time.Now().Unix() * 1000``); ``resolution=Inf`` asks
for one value over the whole window. The address keeps its path (a Managed environment's
``https://<domain>/e/<environment-id>``); a trailing ``/`` is dropped so the path has no ``//``.
The token comes from the ``secretRef``'s ``dynatrace_token`` key, which is required, as are the
address and an interval Go can parse (Flagger's three constructor errors, word for word).

The answer (``MetricData``): the first value of the **last** series of the first metric,
``result[0].data[-1].values[0]``. No metric, no series or no value is
:class:`~flaggerpy.errors.NoValuesFoundError`, and so is a ``null`` value, which Dynatrace
sends for a window without data points (Flagger's decoder reads ``null`` as 0 and would judge a
canary on it). Several series (a ``:splitBy`` selector) are logged at warning level.
HTTP 4xx (``{"error": {"code": 401, "message": ...}}``) is a
:class:`~flaggerpy.errors.MetricsError` ``error response: <body>``; 5xx (after the retries of
:mod:`flaggerpy.metrics._http`) or no answer is :class:`~flaggerpy.errors.ProviderOfflineError`.

:meth:`DynatraceProvider.is_online`: ``GET <address>/api/v2/metrics?pageSize=1`` with the token
must answer 200.

Factory signature (entry point ``dynatrace``): the keyword arguments every metrics provider
gets (see :mod:`flaggerpy.metrics.prometheus`); ``headers``, ``region`` and ``variant`` are
not used (Flagger sends no custom headers to Dynatrace). Never logs or repeats the token.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

import structlog
import yarl

from flaggerpy.analysis import MetricsProvider
from flaggerpy.errors import MetricsError, NoValuesFoundError, ProviderOfflineError
from flaggerpy.metrics._http import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BACKOFF,
    DEFAULT_TIMEOUT,
    HTTPProvider,
    endpoint_of,
    excerpt,
)
from flaggerpy.models.durations import parse_duration_ns

__all__ = ["QUERY_PATH", "TOKEN_KEY", "VALIDATION_PATH", "DynatraceProvider"]

log = structlog.get_logger(__name__)

QUERY_PATH: Final = "/api/v2/metrics/query"
VALIDATION_PATH: Final = "/api/v2/metrics?pageSize=1"
TOKEN_KEY: Final = "dynatrace_token"
"""The ``secretRef`` key holding the API token (scope ``metrics.read``)."""

_WINDOW_INTERVALS: Final = 10  # the query looks back ten metric intervals, as Flagger's
_NS_PER_MS: Final = 1_000_000


class DynatraceProvider(HTTPProvider):
    """Runs Dynatrace metric selector queries against one environment."""

    provider_type = "dynatrace"

    def __init__(
            self,
            *,
            address: str | None,
            secret: Mapping[str, bytes] | None = None,
            headers: Mapping[str, Sequence[str]] | None = None,  # unused, as in Flagger
            insecure_skip_verify: bool = False,
            region: str | None = None,  # unused
            interval: str = "",
            variant: str = "",  # unused
            timeout: float = DEFAULT_TIMEOUT,
            attempts: int = DEFAULT_ATTEMPTS,
            backoff: float = DEFAULT_BACKOFF,
    ) -> None:
        address = (address or "").strip()
        if not address:
            raise MetricsError("dynatrace endpoint is not set")
        try:
            parts = urlsplit(address)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
            _ = parts.port
        except ValueError:
            valid = False
        if not valid:
            raise MetricsError(f"dynatrace address {endpoint_of(address)} is not a valid URL")
        if secret is None or TOKEN_KEY not in secret:
            raise MetricsError(f"dynatrace credentials does not contain {TOKEN_KEY}")
        try:
            interval_ns = parse_duration_ns(interval)
        except ValueError as exc:
            raise MetricsError(f"error parsing metric interval: {exc}") from exc
        super().__init__(
            endpoint=endpoint_of(address), insecure_skip_verify=insecure_skip_verify,
            timeout=timeout, attempts=attempts, backoff=backoff,
        )
        base = address.rstrip("/")
        self._query_url: Final = base + QUERY_PATH
        self._validation_url: Final = yarl.URL(base + VALIDATION_PATH, encoded=True)
        token = secret[TOKEN_KEY]
        token_text = token if isinstance(token, str) else token.decode("utf-8", errors="replace")
        self._headers: Final = (("Authorization", f"Api-Token {token_text}"),)
        self._window_ms: Final = _WINDOW_INTERVALS * (interval_ns // _NS_PER_MS)

    def query_url(self, query: str, *, now_ms: int | None = None) -> yarl.URL:
        """The query's URL, its parameters in Go's ``url.Values.Encode`` order and escaping."""
        now = int(time.time()) * 1000 if now_ms is None else now_ms
        params = {"from": str(now - self._window_ms), "metricSelector": query,
                  "resolution": "Inf", "to": str(now)}
        return yarl.URL(f"{self._query_url}?{urlencode(sorted(params.items()))}", encoded=True)

    async def run_query(self, query: str) -> float:
        """The query's value; see the module docstring for how the answer is read."""
        answer = await self.request("GET", self.query_url(query), headers=self._headers)
        if answer.status >= 500:
            raise ProviderOfflineError(f"error response: {excerpt(answer.body)}")
        if answer.status != 200:
            raise MetricsError(f"error response: {excerpt(answer.body)}")
        try:
            payload = json.loads(answer.body)
        except ValueError as exc:
            raise MetricsError(
                f"error unmarshaling result: {exc}, '{excerpt(answer.body)}'") from exc
        return _value_of(payload, body=answer.body, endpoint=self.endpoint)

    async def is_online(self) -> bool:
        """True when the metrics list answers 200 with this token.

        Raises :class:`ProviderOfflineError` with the reason otherwise, so that the caller can
        report why (Flagger's IsOnline returns the same error).
        """
        answer = await self.request("GET", self._validation_url, headers=self._headers)
        if answer.status != 200:
            raise ProviderOfflineError(f"error response: {excerpt(answer.body)}")
        return True


def _value_of(payload: Any, *, body: str, endpoint: str) -> float:
    """``result[0].data[-1].values[0]`` of a ``MetricData`` answer, or "no values found"."""
    def no_values() -> NoValuesFoundError:
        return NoValuesFoundError(f"invalid response: {excerpt(body)}: no values found")

    result = payload.get("result") if isinstance(payload, Mapping) else None
    if not isinstance(result, list) or not result or not isinstance(result[0], Mapping):
        raise no_values()
    series = result[0].get("data")
    if not isinstance(series, list) or not series or not isinstance(series[-1], Mapping):
        raise no_values()
    if len(series) > 1:
        log.warning("metrics_query_several_series", provider="dynatrace", endpoint=endpoint,
                    series=len(series))
    values = series[-1].get("values")
    if not isinstance(values, list) or not values:
        raise no_values()
    value = values[0]
    if value is None:
        raise no_values()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MetricsError(f"error unmarshaling result: value {excerpt(json.dumps(value))} "
                           "is not a number")
    if math.isnan(value):
        raise no_values()
    return float(value)


_: type[MetricsProvider] = DynatraceProvider
