"""Prometheus: instant PromQL queries, as Flagger's ``providers/prometheus.go`` sends them.

This provider answers MetricTemplates with ``provider.type: prometheus``, and it is also the
client behind the builtin metrics (``request-success-rate``, ``request-duration``) at
``-metrics-server`` or a Canary's ``spec.metricsServer``.

The request (spec §4.4): ``GET <address>/api/v1/query?query=<query>``, where runs of
whitespace in the query (newlines included) are collapsed to one space, so the multi-line
queries people write in YAML are sent as one line. The address may have a path
(``http://gateway/prometheus``): the API path is appended to it. ``provider.headers`` are
sent with every request. From the ``secretRef``'s data: ``token`` is sent as
``Authorization: Bearer <token>``; otherwise ``username`` and ``password`` (both required)
as basic auth. A Secret given with neither is an error when the provider is built, as in
Flagger. Credentials from the Secret replace an ``Authorization`` header set in
``provider.headers`` (Flagger would send both).

The answer:

- a ``vector``: the value of its last sample (Flagger's loop keeps the last one; several
  series are logged at warning level, since which one is last is up to Prometheus);
- a ``matrix`` (a query such as ``metric[5m]``): :class:`~flaggerpy.errors.MultipleValuesError`;
- a ``scalar`` (``scalar(...)``, ``1 + 1``): its value (Flagger cannot read one);
- no sample, or NaN: :class:`~flaggerpy.errors.NoValuesFoundError` ("no values found");
- HTTP 4xx: :class:`~flaggerpy.errors.MetricsError` ``error response: <body>``; 5xx (after
  the retries of :mod:`flaggerpy.metrics._http`) or no answer at all:
  :class:`~flaggerpy.errors.ProviderOfflineError`.

:meth:`PrometheusProvider.is_online` runs ``vector(1)``, which must answer 1.

:meth:`PrometheusProvider.run_samples` (the SDK's optional
:class:`~flaggerpy.analysis.SampleProvider`, what a ``compare`` metric needs) sends
``GET <address>/api/v1/query_range?query=<query>&start=<now - window>&end=<now>&step=<step>``
with ``step = window / 30`` bounded to 1 s .. 5 min (about 30 points per series, the least the
judge needs to see a 30 % shift, see e2e/bench), and answers the values of every point of
every series. HTTP errors are read as for an instant query.

Factory signature (the ``flaggerpy.metrics`` entry point ``prometheus``). The analysis calls
every metrics provider factory with the same keyword arguments, taken from the
MetricTemplate's ``spec.provider`` and its Secret; a provider ignores the ones it does not use::

    PrometheusProvider(
        *,
        address: str | None,                              # spec.provider.address; required here
        secret: Mapping[str, bytes] | None = None,        # Secret data; None without a secretRef
        headers: Mapping[str, Sequence[str]] | None = None,  # spec.provider.headers
        insecure_skip_verify: bool = False,               # spec.provider.insecureSkipVerify
        region: str | None = None,                        # unused (CloudWatch's)
        interval: str = "",                               # unused (the query has its window)
        variant: str = "",                                # unused (the text after "prometheus:")
        timeout: float = 5.0, attempts: int = 3, backoff: float = 0.25,  # transport, per attempt
    )

It raises :class:`~flaggerpy.errors.MetricsError` for an address that is not an absolute
http(s) URL or a Secret without usable credentials. Never logs or repeats a credential.
"""

from __future__ import annotations

import base64
import json
import math
import posixpath
import re
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, Final
from urllib.parse import quote_plus, unquote, urlsplit, urlunsplit

import structlog
import yarl

from flaggerpy.analysis import MetricsProvider, SampleProvider
from flaggerpy.errors import (
    MetricsError,
    MultipleValuesError,
    NoValuesFoundError,
    ProviderOfflineError,
)
from flaggerpy.metrics._http import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BACKOFF,
    DEFAULT_TIMEOUT,
    HTTPProvider,
    endpoint_of,
    excerpt,
    header_pairs,
)

__all__ = [
    "MAX_STEP",
    "MIN_STEP",
    "ONLINE_QUERY",
    "SAMPLE_POINTS",
    "PrometheusProvider",
    "collapse_whitespace",
    "sample_step",
]

log = structlog.get_logger(__name__)

ONLINE_QUERY: Final = "vector(1)"
"""What :meth:`PrometheusProvider.is_online` asks; the answer must be 1."""

_WHITESPACE: Final = re.compile(r"[\t\n\f\r ]+")  # Go's \s (RE2 is ASCII-only)
_API_PATH: Final = "api/v1/query"
_RANGE_PATH: Final = "api/v1/query_range"

SAMPLE_POINTS: Final = 30
"""Points per series :meth:`PrometheusProvider.run_samples` asks for (``step = window / 30``)."""
MIN_STEP: Final = timedelta(seconds=1)
"""The finest step of a range query: Prometheus' own resolution is milliseconds, but a step
shorter than a second only repeats the same scraped samples."""
MAX_STEP: Final = timedelta(minutes=5)
"""The coarsest step: Prometheus' lookback delta, beyond which points would skip samples."""


def sample_step(window: timedelta) -> timedelta:
    """The step of the range query behind :meth:`PrometheusProvider.run_samples`."""
    return min(max(window / SAMPLE_POINTS, MIN_STEP), MAX_STEP)


def collapse_whitespace(query: str) -> str:
    """Every run of whitespace as one space, as Flagger's ``trimQuery`` sends a query."""
    return _WHITESPACE.sub(" ", query)


class PrometheusProvider(HTTPProvider):
    """Runs instant PromQL queries against one Prometheus (or a compatible API)."""

    provider_type = "prometheus"

    def __init__(
            self,
            *,
            address: str | None,
            secret: Mapping[str, bytes] | None = None,  # None: no secretRef
            headers: Mapping[str, Sequence[str]] | None = None,
            insecure_skip_verify: bool = False,
            region: str | None = None,  # accepted with every provider; Prometheus has none
            interval: str = "",  # accepted with every provider; a PromQL query has its window
            variant: str = "",  # accepted with every provider; no variants here
            timeout: float = DEFAULT_TIMEOUT,
            attempts: int = DEFAULT_ATTEMPTS,
            backoff: float = DEFAULT_BACKOFF,
    ) -> None:
        address = (address or "").strip()
        parts = urlsplit(address)
        try:
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
            port = parts.port
        except ValueError:
            valid, port = False, None
        if not valid:
            shown = endpoint_of(address) if address else '""'
            raise MetricsError(f"prometheus address {shown} is not a valid URL")
        super().__init__(
            endpoint=endpoint_of(address), insecure_skip_verify=insecure_skip_verify,
            timeout=timeout, attempts=attempts, backoff=backoff,
        )
        # The API path goes after the address's own path, cleaned as Go's path.Join does.
        path = posixpath.normpath(posixpath.join("/", parts.path.lstrip("/"), _API_PATH))
        host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
        netloc = f"{host}:{port}" if port else str(host)
        self._query_url = urlunsplit((parts.scheme, netloc, path, "", ""))
        self._range_url = self._query_url[: -len(_API_PATH)] + _RANGE_PATH
        header_list = header_pairs(headers)
        token, username, password = _credentials(secret)
        authorization = ""
        if token:
            authorization = f"Bearer {token}"
        elif username and password:
            authorization = _basic(username, password)
        elif parts.username is not None:
            # Go's client turns userinfo in the URL into basic auth. The URL we send has none,
            # so the password never shows up in a log line or an error.
            authorization = _basic(unquote(parts.username), unquote(parts.password or ""))
        if authorization:
            header_list = [(k, v) for k, v in header_list if k.lower() != "authorization"]
            header_list.append(("Authorization", authorization))
        self._headers: Final = tuple(header_list)

    async def run_query(self, query: str) -> float:
        """The query's value; see the module docstring for how each answer is read."""
        url = yarl.URL(
            f"{self._query_url}?query={quote_plus(collapse_whitespace(query), safe='')}",
            encoded=True,
        )
        answer = await self.request("GET", url, headers=self._headers)
        if answer.status >= 500:
            raise ProviderOfflineError(f"error response: {excerpt(answer.body)}")
        if answer.status >= 400:
            raise MetricsError(f"error response: {excerpt(answer.body)}")
        try:
            payload = json.loads(answer.body)
        except ValueError as exc:
            raise MetricsError(
                f"error unmarshaling result: {exc}, '{excerpt(answer.body)}'") from exc
        return _value_of(payload, endpoint=self.endpoint)

    async def run_samples(self, query: str, *, window: timedelta) -> list[float]:
        """Every value of every series of the query over the last ``window`` (a range query).

        NaNs are kept (the judge drops them); an answer with no series is an empty list.
        """
        if window <= timedelta(0):
            raise MetricsError(f"a range query needs a positive window, got {window}")
        end = time.time()
        start = end - window.total_seconds()
        step = sample_step(window).total_seconds()
        params = (f"query={quote_plus(collapse_whitespace(query), safe='')}"
                  f"&start={start:.3f}&end={end:.3f}&step={step:g}")
        url = yarl.URL(f"{self._range_url}?{params}", encoded=True)
        answer = await self.request("GET", url, headers=self._headers)
        if answer.status >= 500:
            raise ProviderOfflineError(f"error response: {excerpt(answer.body)}")
        if answer.status >= 400:
            raise MetricsError(f"error response: {excerpt(answer.body)}")
        try:
            payload = json.loads(answer.body)
        except ValueError as exc:
            raise MetricsError(
                f"error unmarshaling result: {exc}, '{excerpt(answer.body)}'") from exc
        return _values_of(payload)

    async def is_online(self) -> bool:
        """True if ``vector(1)`` answers 1, False if it answers something else.

        Raises :class:`ProviderOfflineError` with the reason when it does not answer at all
        (or answers with an error), so that the caller can report why.
        """
        try:
            value = await self.run_query(ONLINE_QUERY)
        except MetricsError as exc:
            raise ProviderOfflineError(f"running query failed: {exc}") from exc
        return value == 1


def _credentials(secret: Mapping[str, bytes] | None) -> tuple[str, str, str]:
    """``(token, username, password)`` from Secret data; a Secret must hold one or the other."""
    if secret is None:
        return "", "", ""
    if "token" in secret:
        return _text(secret["token"]), "", ""
    if "username" not in secret:
        raise MetricsError("prometheus credentials does not contain a username")
    if "password" not in secret:
        raise MetricsError("prometheus credentials does not contain a password")
    return "", _text(secret["username"]), _text(secret["password"])


def _basic(username: str, password: str) -> str:
    """Go's ``SetBasicAuth``: ``Basic base64(user:password)`` of the UTF-8 bytes."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def _text(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", errors="replace")


def _value_of(payload: Any, *, endpoint: str) -> float:
    """The value in a ``/api/v1/query`` answer, or the error Flagger would report."""
    data = payload.get("data") if isinstance(payload, Mapping) else None
    if not isinstance(data, Mapping):
        raise NoValuesFoundError("no values found")
    result = data.get("result")
    if data.get("resultType") == "scalar":
        value = _sample(result)
    else:
        value = None
        series = 0
        for entry in result if isinstance(result, list) else ():
            if not isinstance(entry, Mapping):
                continue
            if "values" in entry:
                raise MultipleValuesError("multiple values returned")
            sample = _sample(entry.get("value"))
            if sample is not None:
                value = sample
                series += 1
        if series > 1:
            log.warning("metrics_query_several_series", provider="prometheus",
                        endpoint=endpoint, series=series)
    if value is None or math.isnan(value):
        raise NoValuesFoundError("no values found")
    return value


def _values_of(payload: Any) -> list[float]:
    """All values of all series in a ``/api/v1/query_range`` answer (a ``matrix``)."""
    data = payload.get("data") if isinstance(payload, Mapping) else None
    if not isinstance(data, Mapping):
        return []
    result = data.get("result")
    values: list[float] = []
    for entry in result if isinstance(result, list) else ():
        if not isinstance(entry, Mapping):
            continue
        for point in entry.get("values") or ():
            sample = _sample(point)
            if sample is not None:
                values.append(sample)
    return values


def _sample(raw: object) -> float | None:
    """``[timestamp, "value"]`` as a float; None when it is not a sample."""
    if not isinstance(raw, list) or len(raw) != 2 or not isinstance(raw[1], str):
        return None
    try:
        return float(raw[1])
    except ValueError:
        raise MetricsError(f'strconv.ParseFloat: parsing "{raw[1]}": invalid syntax') from None


_: type[MetricsProvider] = PrometheusProvider
_samples: type[SampleProvider] = PrometheusProvider
