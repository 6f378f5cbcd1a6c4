"""InfluxDB: Flux queries to ``/api/v2/query``, as Flagger's ``providers/influxdb.go`` sends them.

This provider answers MetricTemplates with ``provider.type: influxdb``. Flagger sends them
through influxdb-client-go v2; this module sends the same request and reads InfluxDB's
annotated CSV itself (the csv module is all it takes, and the official Python client is
synchronous).

The request (spec §4.4): ``POST <address>/api/v2/query?org=<org>`` with
``Content-Type: application/json``, ``Authorization: Token <token>`` (left out without a
token) and the body ``{"query": <query>, "type": "flux", "dialect": {"annotations":
["datatype", "group", "default"], "delimiter": ",", "header": true}}``. The query is sent as
written (Flux does not mind line breaks). From the ``secretRef``'s data, ``token`` and ``org``
are both required; without a ``secretRef`` both are empty, which an InfluxDB 1.8 with
authentication off accepts. ``provider.headers`` are not sent (Flagger sends none either).
A query may take 15 s (Flagger's timeout), per attempt.

The answer, the ``_value`` of the first record of the first table:

- a ``double`` (or, unlike Flagger, which refuses them, a ``long`` or ``unsignedLong``): the value;
- empty (null), no ``_value`` column, or NaN: :class:`~flaggerpy.errors.NoValuesFoundError`;
- **no record at all: NoValuesFoundError.** Flagger returns 0 here, which passes every
  ``max`` threshold: a canary whose measurement or tag is misspelt would be promoted on no
  data. flaggerpy treats it as any other provider's empty answer (``docs/compatibility.md``);
- another type (string, boolean, time): :class:`~flaggerpy.errors.MetricsError`
  ``invalid response``;
- a Flux error inside the CSV (``error,reference`` table): MetricsError ``query error``
  (Flagger returns 0 there too);
- an error answer with InfluxDB's JSON error body (1.8 answers a Flux error with a 500):
  MetricsError ``error accessing influxdb query api: <message>``; another 5xx (after the
  retries of :mod:`flaggerpy.metrics._http`) or no answer: ProviderOfflineError.

Several records: the first counts, as in Flagger; the rest are logged at warning level.

:meth:`InfluxdbProvider.is_online` runs Flagger's ``from(bucket: "default") |> range(start:
-2h)``: the server must answer it without an error, so a bucket (1.x: database) ``default``
must exist, as with Flagger.

Factory: the keyword arguments every metrics provider gets (see
:mod:`flaggerpy.metrics.prometheus`); ``region``, ``interval`` and ``variant`` are unused, a
variant is refused. Never logs or repeats a credential.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlencode

import structlog
import yarl

from flaggerpy.analysis import MetricsProvider
from flaggerpy.errors import MetricsError, NoValuesFoundError, ProviderOfflineError
from flaggerpy.metrics._http import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BACKOFF,
    HTTPProvider,
    api_base,
    excerpt,
    header_secret,
    secret_text,
)

__all__ = [
    "DIALECT",
    "ONLINE_QUERY",
    "QUERY_TIMEOUT",
    "FluxRecord",
    "InfluxdbProvider",
    "read_first_value",
]

log = structlog.get_logger(__name__)

ONLINE_QUERY: Final = 'from(bucket: "default") |> range(start: -2h)'
"""What :meth:`InfluxdbProvider.is_online` asks (Flagger's query)."""

QUERY_TIMEOUT: Final = 15.0
"""Seconds a query may take: Flagger's ``context.WithTimeout`` for InfluxDB."""

DIALECT: Final = {"annotations": ["datatype", "group", "default"], "delimiter": ",",
                  "header": True}
"""The CSV dialect influxdb-client-go asks for: every annotation, a header row, commas."""

_NUMBER_TYPES: Final = frozenset({"double", "long", "unsignedLong"})


@dataclass(frozen=True, slots=True)
class FluxRecord:
    """One data row: its table's column types and the row, by column name."""

    types: Mapping[str, str]
    cells: Mapping[str, str]

    def describe(self) -> str:
        """The record for an error message, as the Go client prints one (no secret in it)."""
        return "{" + ",".join(f"{k}:{v}" for k, v in self.cells.items()) + "}"


class InfluxdbProvider(HTTPProvider):
    """Runs Flux queries against one InfluxDB (2.x, or 1.8+ with ``flux-enabled``)."""

    provider_type = "influxdb"

    def __init__(
            self,
            *,
            address: str | None,
            secret: Mapping[str, bytes] | None = None,  # None: no secretRef
            headers: Mapping[str, Sequence[str]] | None = None,  # not sent, as in Flagger
            insecure_skip_verify: bool = False,
            region: str | None = None,  # accepted with every provider; unused
            interval: str = "",  # accepted with every provider; a Flux query has its range
            variant: str = "",
            timeout: float = QUERY_TIMEOUT,
            attempts: int = DEFAULT_ATTEMPTS,
            backoff: float = DEFAULT_BACKOFF,
    ) -> None:
        if variant:
            raise MetricsError(f"influxdb has no variants (got 'influxdb:{variant}')")
        base, endpoint = api_base(address or "", provider="influxdb")
        super().__init__(endpoint=endpoint, insecure_skip_verify=insecure_skip_verify,
                         timeout=timeout, attempts=attempts, backoff=backoff)
        token, org = "", ""
        if secret is not None:
            if "token" not in secret:
                raise MetricsError("influxdb credentials does not contain an authentication token")
            if "org" not in secret:
                raise MetricsError("influxdb credentials does not contain an organisation")
            token = header_secret(secret, "token", provider="influxdb")
            org = secret_text(secret["org"])
        self._url: Final = yarl.URL(f"{base}/api/v2/query?{urlencode({'org': org})}",
                                    encoded=True)
        pairs = [("Content-Type", "application/json")]
        if token:
            pairs.append(("Authorization", f"Token {token}"))
        self._headers: Final = tuple(pairs)

    async def run_query(self, query: str) -> float:
        """The query's value; see the module docstring for how each answer is read."""
        record = await self._first_record(query)
        if record is None:
            raise NoValuesFoundError("no values found")
        return _value_of(record)

    async def is_online(self) -> bool:
        """True when the server runs Flagger's online query without an error.

        Raises :class:`ProviderOfflineError` with the reason otherwise, so that the caller
        can report why.
        """
        try:
            await self._first_record(ONLINE_QUERY)
        except MetricsError as exc:
            raise ProviderOfflineError(f"running query failed: {exc}") from exc
        return True

    async def _first_record(self, query: str) -> FluxRecord | None:
        body = json.dumps({"query": query, "type": "flux", "dialect": DIALECT}).encode()
        answer = await self.request("POST", self._url, headers=self._headers, data=body)
        if answer.status >= 300:
            said, reason = _error_message(answer.body)
            message = f"error accessing influxdb query api: {reason}"
            if answer.status >= 500 and not said:
                raise ProviderOfflineError(message)
            raise MetricsError(message)
        first, count = read_first_value(answer.body)
        if count > 1:
            log.warning("metrics_query_several_records", provider="influxdb",
                        endpoint=self.endpoint, records=count)
        return first


def read_first_value(text: str) -> tuple[FluxRecord | None, int]:
    """The first data record of an annotated CSV answer and how many records it holds.

    The format (InfluxDB's "annotated CSV"): each table opens with ``#datatype``, ``#group``
    and ``#default`` rows and a header row, every row starting with an annotation cell that
    is empty on the header and data rows; tables are separated by a blank line. A table
    whose header is ``error,reference`` carries a Flux error, raised as a MetricsError.
    """
    types: list[str] = []
    defaults: list[str] = []
    names: list[str] | None = None
    first: FluxRecord | None = None
    count = 0
    for row in csv.reader(io.StringIO(text)):
        if len(row) <= 1:  # a blank line between tables
            names = None
            continue
        head, rest = row[0], row[1:]
        if head.startswith("#"):
            names = None
            if head == "#datatype":
                types = rest
            elif head == "#default":
                defaults = rest
            continue
        if head:
            raise MetricsError(f"invalid response: unexpected row {excerpt(','.join(row))}")
        if names is None:
            names = rest
            continue
        if names[:2] == ["error", "reference"]:
            message = rest[0] or "unknown query error"
            reference = f",{rest[1]}" if len(rest) > 1 and rest[1] else ""
            raise MetricsError(f"query error: {message}{reference}")
        if len(rest) != len(names):
            raise MetricsError("invalid response: a row has a different number of columns"
                               " than its table")
        count += 1
        if first is None:
            cells = {
                name: value or (defaults[i] if i < len(defaults) else "")
                for i, (name, value) in enumerate(zip(names, rest, strict=True))
            }
            first = FluxRecord(types=dict(zip(names, types, strict=False)), cells=cells)
    return first, count


def _value_of(record: FluxRecord) -> float:
    """``_value`` of a record as a float, or the error saying why it has none."""
    raw = record.cells.get("_value", "")
    if raw == "":
        raise NoValuesFoundError(f"invalid response: {record.describe()}: no values found")
    kind = record.types.get("_value", "")
    if kind not in _NUMBER_TYPES:
        raise MetricsError(f"invalid response: {record.describe()}")
    try:
        value = float(raw) if kind == "double" else float(int(raw))
    except ValueError:
        raise MetricsError(f"invalid response: {record.describe()}") from None
    if math.isnan(value):
        raise NoValuesFoundError("no values found")
    return value


def _error_message(body: str) -> tuple[bool, str]:
    """Whether InfluxDB itself said what went wrong, and the words to report.

    InfluxDB answers errors in JSON: 2.x ``{"code", "message"}``, 1.x ``{"error"}``. 1.8
    answers a Flux error (a syntax error, a database that does not exist) with a 500 and such
    a body: that is a bad query, not a server that is down, so only a 5xx without InfluxDB's
    words (a proxy's page) counts as the provider being offline.
    """
    try:
        payload = json.loads(body)
    except ValueError:
        return False, excerpt(body) or "no message"
    if isinstance(payload, Mapping):
        message = payload.get("message") or payload.get("error")
        code = payload.get("code")
        if isinstance(message, str) and message:
            return True, f"{code}: {message}" if isinstance(code, str) and code else message
    return False, excerpt(body)


_: type[MetricsProvider] = InfluxdbProvider
