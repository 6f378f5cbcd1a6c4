"""New Relic: NRQL queries on the Insights query API, as Flagger's ``newrelic.go`` sends them.

This provider answers MetricTemplates with ``provider.type: newrelic``.

The request (spec §4.4): ``GET <address>/v1/accounts/<account>/query?nrql=<query> SINCE <n>
seconds ago``, where ``<n>`` is the metric's interval in whole seconds and ``address`` defaults
to ``https://insights-api.newrelic.com`` (the EU region is ``https://insights-api.eu.newrelic.com``).
The query is sent as rendered, so it must not have its own ``SINCE``. From the ``secretRef``'s
data: ``newrelic_account_id`` is the account in the path and ``newrelic_query_key`` is sent as
``X-Query-Key``; both are required, so a template without a ``secretRef`` is an error when the
provider is built, as in Flagger. ``provider.headers`` are not sent (Flagger does not either);
``insecureSkipVerify`` is honoured (Flagger's client ignores it).

The answer (``{"results": [{"result": 1.5}], ...}``): ``results`` must hold exactly one entry
whose ``result`` is a number. NRQL names an aggregate's key after its function
(``SELECT average(duration)`` answers ``{"average": ...}``), so queries are written as an
expression (``SELECT filter(count(*), WHERE error IS true) / count(*) * 100 FROM Transaction``),
whose key is ``result``, or with ``AS result``. Otherwise:

- no entry, several (a ``FACET``), or a ``result`` that is missing or ``null``:
  :class:`~flaggerpy.errors.NoValuesFoundError`;
- any status but 200: :class:`~flaggerpy.errors.MetricsError` ``error response: <body>``
  (New Relic's ``{"error": ...}``); 5xx (after the retries of :mod:`flaggerpy.metrics._http`)
  or no answer at all: :class:`~flaggerpy.errors.ProviderOfflineError`.

:meth:`NewRelicProvider.is_online` runs ``SELECT * FROM Metric SINCE <n> seconds ago``: a 200
answer is online; anything else raises :class:`~flaggerpy.errors.ProviderOfflineError` with the
answer (an invalid query key, an unknown account).

The factory signature is the family's (see :mod:`flaggerpy.metrics.prometheus`). Never logs or
repeats the query key or the account.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote, quote_plus

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
    secret_text,
)
from flaggerpy.models.durations import parse_duration

__all__ = ["ACCOUNT_ID", "DEFAULT_ADDRESS", "ONLINE_QUERY", "QUERY_KEY", "NewRelicProvider"]

DEFAULT_ADDRESS: Final = "https://insights-api.newrelic.com"
"""Where queries go without ``provider.address``: the US region's Insights API."""

ACCOUNT_ID: Final = "newrelic_account_id"
"""The Secret key holding the account id, a segment of the query path."""

QUERY_KEY: Final = "newrelic_query_key"
"""The Secret key holding the Insights query key, sent as ``X-Query-Key``."""

ONLINE_QUERY: Final = "SELECT * FROM Metric"
"""What :meth:`NewRelicProvider.is_online` asks; any 200 answer will do."""


class NewRelicProvider(HTTPProvider):
    """Runs NRQL queries for one New Relic account through the Insights query API."""

    provider_type = "newrelic"

    def __init__(
            self,
            *,
            address: str | None,  # None or "": the US region's Insights API
            secret: Mapping[str, bytes] | None = None,  # must hold the account and the key
            headers: Mapping[str, Sequence[str]] | None = None,  # not sent, as in Flagger
            insecure_skip_verify: bool = False,
            region: str | None = None,  # accepted with every provider; regions are addresses
            interval: str = "1m",  # the metric's interval: the SINCE window
            variant: str = "",
            timeout: float = DEFAULT_TIMEOUT,
            attempts: int = DEFAULT_ATTEMPTS,
            backoff: float = DEFAULT_BACKOFF,
    ) -> None:
        if variant:
            raise MetricsError(f"newrelic takes no variant, got 'newrelic:{variant}'")
        base, endpoint = api_base(address or DEFAULT_ADDRESS, provider="newrelic")
        super().__init__(
            endpoint=endpoint, insecure_skip_verify=insecure_skip_verify,
            timeout=timeout, attempts=attempts, backoff=backoff,
        )
        secret = secret or {}
        if ACCOUNT_ID not in secret:
            raise MetricsError(f"newrelic credentials does not contain {ACCOUNT_ID}")
        if QUERY_KEY not in secret:
            raise MetricsError(f"newrelic credentials does not contain {QUERY_KEY}")
        try:
            seconds = parse_duration(interval)
        except ValueError as exc:
            raise MetricsError(f"error parsing metric interval: {exc}") from exc
        self._since: Final = int(seconds)
        account = quote(secret_text(secret[ACCOUNT_ID]), safe="")
        self._query_url: Final = f"{base}/v1/accounts/{account}/query"
        self._headers: Final = (
            ("X-Query-Key", header_secret(secret, QUERY_KEY, provider="newrelic")),
        )

    async def run_query(self, query: str) -> float:
        """The single ``result`` of the query over the last interval; see the module docstring."""
        answer = await self._insights(query)
        if answer.status >= 500:
            raise ProviderOfflineError(f"error response: {excerpt(answer.body)}")
        if answer.status != 200:
            raise MetricsError(f"error response: {excerpt(answer.body)}")
        try:
            payload = json.loads(answer.body)
        except ValueError as exc:
            raise MetricsError(
                f"error unmarshaling result: {exc}, '{excerpt(answer.body)}'") from exc
        return _single_result(payload)

    async def is_online(self) -> bool:
        """True if the account answers ``SELECT * FROM Metric`` with 200.

        Raises :class:`ProviderOfflineError` with the reason otherwise.
        """
        answer = await self._insights(ONLINE_QUERY)
        if answer.status != 200:
            raise ProviderOfflineError(f"error response: {excerpt(answer.body)}")
        return True

    async def _insights(self, query: str) -> HTTPAnswer:
        nrql = f"{query} SINCE {self._since} seconds ago"
        url = yarl.URL(f"{self._query_url}?nrql={quote_plus(nrql, safe='')}", encoded=True)
        return await self.request("GET", url, headers=self._headers)


def _single_result(payload: Any) -> float:
    """``results[0].result`` when there is exactly one result; the error Flagger reports if not."""
    results = payload.get("results") if isinstance(payload, Mapping) else None
    if not isinstance(results, list) or len(results) != 1:
        raise NoValuesFoundError("no values found")
    entry = results[0]
    value = entry.get("result") if isinstance(entry, Mapping) else None
    if value is None:
        raise NoValuesFoundError("no values found")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MetricsError(
            f"error unmarshaling result: result {excerpt(json.dumps(value))} is not a number")
    if math.isnan(value):
        raise NoValuesFoundError("no values found")
    return float(value)


_: type[MetricsProvider] = NewRelicProvider
_factory: MetricsProviderFactory = NewRelicProvider
