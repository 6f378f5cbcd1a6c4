"""A local Dynatrace environment API: the two Metrics API v2 calls a metrics provider makes.

Written from Dynatrace's documentation of the Metrics API v2 (environment API):

- ``GET /api/v2/metrics/query``: query parameters ``metricSelector`` (required),
  ``resolution`` (``Inf`` for one value over the timeframe, or a count and a unit ``m h d w M
  q y``), ``from`` and ``to`` (Unix milliseconds, ``now-<n><unit>`` or ISO 8601),
  ``entitySelector`` and ``mzSelector``. It answers ``MetricData``::

      {"totalCount": 1, "nextPageKey": null, "resolution": "Inf",
       "result": [{"metricId": "<selector>", "dataPointCountRatio": 1.0E-7,
                   "dimensionCountRatio": 1.0E-5,
                   "data": [{"dimensions": [], "dimensionMap": {},
                             "timestamps": [<ms>], "values": [<number or null>]}]}]}

  where a ``null`` value is a slot without data points.
- ``GET /api/v2/metrics``: the metric descriptors, paged by ``pageSize`` (1 to 500).

Both need the header ``Authorization: Api-Token <token>`` (token scope ``metrics.read``).
Errors are the ``ErrorEnvelope`` ``{"error": {"code": <status>, "message": ...,
"constraintViolations": [...]}}``: 401 without a token or with a wrong one, 400 for a missing
or invalid parameter (with the violation), 404 for an unknown path.

The environment may live under a path (``/e/<environment-id>`` on Managed): pass ``prefix``.
What the server holds is scripted: :meth:`FakeDynatrace.set_series` gives a metric selector its
series; :meth:`FakeDynatrace.fail` makes the next answers errors. Every request is recorded.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Self

from aiohttp import web

__all__ = ["FakeDynatrace", "RecordedRequest"]

_RESOLUTION: Final = re.compile(r"^(Inf|\d+[mhdwMqy])$")
_RELATIVE: Final = re.compile(r"^now(-\d+(ms|s|m|h|d|w|M|q|y))?$")
_QUERY_PARAMETERS: Final = frozenset(
    {"metricSelector", "resolution", "from", "to", "entitySelector", "mzSelector"})
_LIST_PARAMETERS: Final = frozenset({
    "nextPageKey", "pageSize", "metricSelector", "text", "fields", "writtenSince",
    "metadataSelector"})


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as it arrived: what a test asserts on."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, list[str]]
    raw_query: str
    """The query string as sent, still percent-encoded."""

    def one(self, name: str) -> str:
        """The single value of query parameter ``name``."""
        (value,) = self.query[name]
        return value


def _error(
        status: int, message: str, *, violations: Sequence[dict[str, str | None]] = (),
) -> web.Response:
    body: dict[str, Any] = {"code": status, "message": message}
    if violations:
        body["constraintViolations"] = list(violations)
    return web.json_response({"error": body}, status=status)


def _violation(parameter: str, message: str) -> dict[str, str | None]:
    return {"path": parameter, "message": message, "parameterLocation": "QUERY", "location": None}


def _timestamp_ms(text: str, now_ms: int) -> int | None:
    """A ``from``/``to`` value as Unix milliseconds; None when Dynatrace would refuse it."""
    if text.isdigit():
        return int(text)
    if _RELATIVE.match(text):
        return now_ms  # the exact offset does not matter to this stand-in
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        return None


@dataclass
class FakeDynatrace:
    """The stand-in: ``async with FakeDynatrace(token="...") as fake:`` serves on ``fake.url``."""

    token: str
    prefix: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    series: dict[str, list[float | None] | None] = field(default_factory=dict)
    """metricSelector -> one value per series (``None`` in the list: a slot without data);
    a selector mapped to None is a known metric with no series in the timeframe."""
    requests: list[RecordedRequest] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    def set_series(self, selector: str, *values: float | None) -> None:
        """Answers ``selector`` with one series per value; no value: no series at all."""
        self.series[selector] = list(values) if values else None

    def fail(self, status: int, message: str, *, times: int = 1) -> None:
        """The next ``times`` authenticated requests answer ``status`` with ``message``."""
        self.failures.extend([(status, message)] * times)

    def app(self) -> web.Application:
        application = web.Application()
        application.router.add_get(f"{self.prefix}/api/v2/metrics/query", self._query)
        application.router.add_get(f"{self.prefix}/api/v2/metrics", self._list)
        return application

    async def __aenter__(self) -> Self:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{self.host}:{port}{self.prefix}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _record(self, request: web.Request) -> None:
        self.requests.append(RecordedRequest(
            method=request.method, path=request.path,
            query={key: request.query.getall(key) for key in request.query},
            headers={key: request.headers.getall(key) for key in request.headers},
            raw_query=request.raw_path.partition("?")[2],
        ))

    def _refused(self, request: web.Request) -> web.Response | None:
        """The 401 for a missing or wrong token, or a scripted failure; None to go on."""
        values = request.headers.getall("Authorization", [])
        if not values:
            return _error(401, "Missing authorization parameter.")
        if values != [f"Api-Token {self.token}"]:
            return _error(401, "Token Authentication failed")
        if self.failures:
            status, message = self.failures.pop(0)
            return _error(status, message)
        return None

    async def _query(self, request: web.Request) -> web.Response:
        self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        query = request.query
        unknown = sorted(set(query) - _QUERY_PARAMETERS)
        if unknown:
            return _error(400, "Constraints violated.", violations=[
                _violation(name, "unknown query parameter") for name in unknown])
        for name in query:
            if len(query.getall(name)) > 1:
                return _error(400, "Constraints violated.", violations=[
                    _violation(name, "must be given once")])
        selector = query.get("metricSelector", "")
        if not selector:
            return _error(400, "Constraints violated.", violations=[
                _violation("metricSelector", "must not be empty")])
        resolution = query.get("resolution", "")
        if resolution and not _RESOLUTION.match(resolution):
            return _error(400, f"Invalid resolution: {resolution}")
        now_ms = int(time.time() * 1000)
        start = _timestamp_ms(query.get("from", "now-2h"), now_ms)
        end = _timestamp_ms(query.get("to", "now"), now_ms)
        if start is None or end is None:
            return _error(400, "Invalid timeframe: could not parse from or to")
        if start >= end:
            return _error(400, "Invalid timeframe: from must be before to")
        if selector not in self.series:
            return _error(404, f"The metric selector '{selector}' matches no metric")
        values = self.series[selector]
        data = [
            {"dimensions": [f"SERVICE-{index:016X}"],
             "dimensionMap": {"dt.entity.service": f"SERVICE-{index:016X}"},
             "timestamps": [end], "values": [value]}
            for index, value in enumerate(values or [])
        ]
        return web.json_response({
            "totalCount": len(data), "nextPageKey": None, "resolution": resolution or "1m",
            "result": [{"metricId": selector, "dataPointCountRatio": 1.0e-7,
                        "dimensionCountRatio": 1.0e-5, "data": data}],
        })

    async def _list(self, request: web.Request) -> web.Response:
        self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        unknown = sorted(set(request.query) - _LIST_PARAMETERS)
        if unknown:
            return _error(400, "Constraints violated.", violations=[
                _violation(name, "unknown query parameter") for name in unknown])
        raw_size = request.query.get("pageSize", "100")
        if not raw_size.isdigit() or not 1 <= int(raw_size) <= 500:
            return _error(400, "Constraints violated.", violations=[
                _violation("pageSize", "must be between 1 and 500")])
        keys = sorted(self.series) or ["builtin:service.response.time"]
        page = keys[:int(raw_size)]
        return web.Response(text=json.dumps({
            "totalCount": len(keys),
            "nextPageKey": "next" if len(keys) > len(page) else None,
            "metrics": [{"metricId": key, "displayName": key} for key in page],
        }), content_type="application/json")
