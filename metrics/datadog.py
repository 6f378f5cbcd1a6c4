"""Datadog: timeseries queries on the v1 metrics API, as Flagger's ``datadog.go`` sends them.

This provider answers MetricTemplates with ``provider.type: datadog``.

The request (spec §4.4): ``GET <address>/api/v1/query?from=<now - 10 * interval>&query=<query>
&to=<now>`` (seconds since the epoch; parameters in Go's ``url.Values.Encode`` order), where
``address`` defaults to ``https://api.datadoghq.com`` (another Datadog site is another address:
``https://api.datadoghq.eu``). The query is sent as rendered, whitespace included. The keys come
from the ``secretRef``'s data and are sent as headers: ``datadog_api_key`` as ``DD-API-KEY``,
``datadog_application_key`` as ``DD-APPLICATION-KEY``; both are required, so a template without
a ``secretRef`` is an error when the provider is built, as in Flagger. ``provider.headers`` are
not sent (Flagger does not either). ``insecureSkipVerify`` is honoured (Flagger's Datadog client
ignores it).

The answer (``{"series": [{"pointlist": [[ts, value], ...]}, ...]}``):

- the **first** point of the first series: Datadog's last bucket is usually incomplete, so
  Flagger reads the oldest one, at the start of the window. Several series are logged at warning
  level (the first is kept, as in Flagger);
- no series, an empty ``pointlist`` or a ``null`` value:
  :class:`~flaggerpy.errors.NoValuesFoundError`. Flagger's JSON decoding reads a ``null``
  point as 0, which would pass most thresholds; here it is "no values" (docs/metrics.md).
  An answer whose ``status`` is ``"error"`` carries Datadog's ``error`` in that message;
- any status but 200: :class:`~flaggerpy.errors.MetricsError` ``error response: <body>``; 5xx
  (after the retries of :mod:`flaggerpy.metrics._http`) or no answer at all:
  :class:`~flaggerpy.errors.ProviderOfflineError`.

:meth:`DatadogProvider.is_online` calls ``GET <address>/api/v1/validate`` with the same headers:
200 is online (``{"valid": false}`` is not), anything else raises
:class:`~flaggerpy.errors.ProviderOfflineError` with the answer (403: the API key is invalid).

The factory signature is the family's (see :mod:`flaggerpy.metrics.prometheus`); ``interval``
(a Go duration, the metric's ``interval``) sets the window. Never logs or repeats a key.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote_plus

import structlog
import yarl

from flaggerpy.analysis import MetricsProvider, MetricsProviderFactory
from flaggerpy.errors import MetricsError, NoValuesFoundError, ProviderOfflineError
from flaggerpy.metrics._http import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BACKOFF,
    DEFAULT_TIMEOUT,
    HTTPAnswer,
    HTTPProvider,
    api_base,
    excerpt,
    header_secret,
)
from flaggerpy.models.durations import parse_duration

__all__ = [
    "API_KEY",
    "APPLICATION_KEY",
    "DEFAULT_ADDRESS",
    "WINDOW_INTERVALS",
    "DatadogProvider",
]

log = structlog.get_logger(__name__)

DEFAULT_ADDRESS: Final = "https://api.datadoghq.com"
"""Where queries go without ``provider.address``: Datadog's US1 site."""

API_KEY: Final = "datadog_api_key"
"""The Secret key holding the API key, sent as ``DD-API-KEY``."""

APPLICATION_KEY: Final = "datadog_application_key"
"""The Secret key holding the application key, sent as ``DD-APPLICATION-KEY``."""

WINDOW_INTERVALS: Final = 10
"""A query covers this many metric intervals back from now (Flagger's ``fromDelta``)."""


class DatadogProvider(HTTPProvider):
    """Runs timeseries queries against one Datadog site's v1 metrics API."""

    provider_type = "datadog"

    def __init__(
            self,
            *,
            address: str | None,  # None or "": Datadog's US1 site
            secret: Mapping[str, bytes] | None = None,  # must hold both keys
            headers: Mapping[str, Sequence[str]] | None = None,  # not sent, as in Flagger
            insecure_skip_verify: bool = False,
            region: str | None = None,  # accepted with every provider; Datadog has sites instead
            interval: str = "1m",  # the metric's interval; the window is 10 of them
            variant: str = "",
            timeout: float = DEFAULT_TIMEOUT,
            attempts: int = DEFAULT_ATTEMPTS,
            backoff: float = DEFAULT_BACKOFF,
            clock: Callable[[], float] = time.time,  # seconds since the epoch; tests pin it
    ) -> None:
        if variant:
            raise MetricsError(f"datadog takes no variant, got 'datadog:{variant}'")
        base, endpoint = api_base(address or DEFAULT_ADDRESS, provider="datadog")
        super().__init__(
            endpoint=endpoint, insecure_skip_verify=insecure_skip_verify,
            timeout=timeout, attempts=attempts, backoff=backoff,
        )
        secret = secret or {}
        if API_KEY not in secret:
            raise MetricsError(f"datadog credentials does not contain {API_KEY}")
        if APPLICATION_KEY not in secret:
            raise MetricsError(f"datadog credentials does not contain {APPLICATION_KEY}")
        try:
            seconds = parse_duration(interval)
        except ValueError as exc:
            raise MetricsError(f"error parsing metric interval: {exc}") from exc
        self._from_delta: Final = int(WINDOW_INTERVALS * seconds)
        self._query_url: Final = f"{base}/api/v1/query"
        self._validate_url: Final = yarl.URL(f"{base}/api/v1/validate", encoded=True)
        self._headers: Final = (
            ("DD-API-KEY", header_secret(secret, API_KEY, provider="datadog")),
            ("DD-APPLICATION-KEY", header_secret(secret, APPLICATION_KEY, provider="datadog")),
        )
        self._clock = clock

    async def run_query(self, query: str) -> float:
        """The first point of the first series; see the module docstring."""
        now = int(self._clock())
        # Go's url.Values.Encode: keys sorted, values QueryEscape'd (a space is "+").
        params = (f"from={now - self._from_delta}&query={quote_plus(query, safe='')}"
                  f"&to={now}")
        url = yarl.URL(f"{self._query_url}?{params}", encoded=True)
        answer = await self.request("GET", url, headers=self._headers)
        _raise_for_status(answer)
        try:
            payload = json.loads(answer.body)
        except ValueError as exc:
            raise MetricsError(
                f"error unmarshaling result: {exc}, '{excerpt(answer.body)}'") from exc
        return _first_point(payload, endpoint=self.endpoint)

    async def is_online(self) -> bool:
        """True if Datadog accepts the API key (``/api/v1/validate`` answers 200).

        Raises :class:`ProviderOfflineError` with the reason when it does not answer or
        answers with another status (403: an invalid API key).
        """
        answer = await self.request("GET", self._validate_url, headers=self._headers)
        if answer.status != 200:
            raise ProviderOfflineError(f"error response: {excerpt(answer.body)}")
        try:
            payload = json.loads(answer.body)
        except ValueError:
            return True  # Flagger asks for the status only
        return not (isinstance(payload, Mapping) and payload.get("valid") is False)


def _raise_for_status(answer: HTTPAnswer) -> None:
    if answer.status >= 500:
        raise ProviderOfflineError(f"error response: {excerpt(answer.body)}")
    if answer.status != 200:
        raise MetricsError(f"error response: {excerpt(answer.body)}")


def _first_point(payload: Any, *, endpoint: str) -> float:
    """The value of the first point of the first series, or the error Flagger would report."""
    if not isinstance(payload, Mapping):
        raise MetricsError(f"error unmarshaling result: not an object, '{excerpt(str(payload))}'")
    series = payload.get("series")
    if not isinstance(series, list) or not series:
        if payload.get("status") == "error" and payload.get("error"):
            raise NoValuesFoundError(f"no values found: {excerpt(str(payload['error']))}")
        raise NoValuesFoundError("no values found")
    if len(series) > 1:
        log.warning("metrics_query_several_series", provider="datadog", endpoint=endpoint,
                    series=len(series))
    first = series[0]
    points = first.get("pointlist") if isinstance(first, Mapping) else None
    if not isinstance(points, list) or not points:
        raise NoValuesFoundError("no values found")
    point = points[0]
    if not isinstance(point, list) or len(point) < 2 or point[1] is None:
        raise NoValuesFoundError("no values found")
    value = point[1]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MetricsError(f"error unmarshaling result: point value {excerpt(json.dumps(value))}"
                           " is not a number")
    if math.isnan(value):
        raise NoValuesFoundError("no values found")
    return float(value)


_: type[MetricsProvider] = DatadogProvider
_factory: MetricsProviderFactory = DatadogProvider
