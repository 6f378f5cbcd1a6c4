"""A local stand-in for New Relic's Insights query API.

Written from New Relic's documentation of the Insights query API
(docs.newrelic.com/docs/apis/insights-apis/query-insights-event-data-api), not from flaggerpy's
client:

- ``GET /v1/accounts/<account id>/query?nrql=<URL-encoded NRQL>``, with the account's query key
  in the ``X-Query-Key`` header. Only GET is served.
- The answer is JSON: ``{"results": [...], "performanceStats": {...}, "metadata": {...}}``.
  ``results`` holds one object per selected item, keyed by the aggregate's function
  (``{"average": 12.5}``, ``{"count": 3}``) or ``result`` for an expression; ``SELECT *`` answers
  ``[{"events": [...]}]``. An aggregate over no events is ``null`` (``count`` is 0), and
  ``metadata.messages`` says "No events found -- do you have the correct event type and time
  range?". ``metadata`` carries the window: ``beginTimeMillis``, ``endTimeMillis``, ``rawSince``.
- An error is a JSON object with an ``error`` message: 400 for a missing or unparsable query,
  401 for a missing or wrong query key (or a key of another account), 429 when rate limited.

The fake holds one account and one query key. Each query's results are set by the test with
:meth:`FakeNewRelic.set_results` (keyed by the NRQL without its ``SINCE`` clause); a query the
test did not set answers ``[{"result": null}]`` with the "No events found" message. Every
request is recorded, and :meth:`FakeNewRelic.fail_next` scripts error answers. NRQL is only
checked for its shape (``SELECT ... FROM ...`` and an optional ``SINCE <n> <unit> ago``), not
evaluated.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

__all__ = ["FakeNewRelic", "Recorded", "split_since"]

_SINCE = re.compile(
    r"^(?P<nrql>.*?)\s+SINCE\s+(?P<n>\d+)\s+(?P<unit>seconds?|minutes?|hours?|days?)\s+ago\s*$",
    re.IGNORECASE | re.DOTALL,
)
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_SHAPE = re.compile(r"^\s*(SELECT\s+.+\s+FROM\s+\S+|FROM\s+\S+.*\s+SELECT\s+.+)",
                    re.IGNORECASE | re.DOTALL)
_NO_EVENTS = "No events found -- do you have the correct event type and time range?"


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request as it arrived."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    raw_query: str


@dataclass
class _Failure:
    status: int
    body: Any
    hang: float = 0.0


def split_since(nrql: str) -> tuple[str, int | None]:
    """``(query, seconds)``: the NRQL without a trailing ``SINCE <n> <unit> ago``, and its span."""
    match = _SINCE.match(nrql)
    if match is None:
        return nrql.strip(), None
    unit = match["unit"].lower().rstrip("s")
    return match["nrql"].strip(), int(match["n"]) * _UNIT_SECONDS[unit]


@dataclass
class FakeNewRelic:
    """The Insights query endpoint on 127.0.0.1; ``async with`` starts it."""

    account_id: str = "1234567"
    query_key: str = "NRIQ-fake-query-key"
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""
    _results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _failures: list[_Failure] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    def set_results(self, nrql: str, results: Sequence[Mapping[str, Any]]) -> None:
        """``nrql`` (without ``SINCE``) answers these ``results``."""
        self._results[nrql.strip()] = [dict(r) for r in results]

    def set_result(self, nrql: str, value: float | None) -> None:
        """``nrql`` is an expression answering ``value``: ``[{"result": value}]``."""
        self.set_results(nrql, [{"result": value}])

    def fail_next(self, status: int, body: Any = None, *, hang: float = 0.0) -> None:
        """The next request is answered ``status`` with ``body`` (after ``hang`` seconds).

        ``body`` is sent as JSON, or as it is when it is bytes.
        """
        self._failures.append(_Failure(status=status, body=body, hang=hang))

    def nrql_seen(self) -> list[str]:
        """The ``nrql`` parameter of every query that arrived."""
        return [r.query.get("nrql", "") for r in self.requests]

    async def __aenter__(self) -> Self:
        app = web.Application(middlewares=[self._record])
        app.router.add_route("*", "/v1/accounts/{account}/query", self._query)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(Recorded(
            method=request.method, path=request.path, query=dict(request.query),
            headers=dict(request.headers), raw_query=request.raw_path.partition("?")[2],
        ))
        if self._failures:
            failure = self._failures.pop(0)
            if failure.hang:  # ended early when the server stops, so teardown is quick
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), failure.hang)
            if isinstance(failure.body, bytes):  # not JSON: an HTML error page, say
                return web.Response(body=failure.body, status=failure.status,
                                    content_type="text/html")
            return web.json_response(failure.body, status=failure.status)
        response: web.StreamResponse = await handler(request)
        return response

    async def _query(self, request: web.Request) -> web.Response:
        if request.method != "GET":
            return _error(405, "Only GET is supported")
        if (request.match_info["account"] != self.account_id
                or request.headers.get("X-Query-Key") != self.query_key):
            return _error(401, "Invalid query key")
        raw = request.query.get("nrql", "")
        if not raw.strip():
            return _error(400, "Missing required parameter: nrql")
        nrql, span = split_since(raw)
        if _SHAPE.match(nrql) is None or re.search(r"\bSINCE\b", nrql, re.IGNORECASE):
            return _error(400, f"NRQL Syntax Error: Error at line 1 position 1, {raw!r}")
        span = span or 3600
        end = int(time.time() * 1000)
        scripted = self._results.get(nrql)
        messages: list[str] = []
        if scripted is not None:
            results = scripted
        elif re.match(r"^\s*SELECT\s+\*", nrql, re.IGNORECASE):
            results, messages = [{"events": []}], [_NO_EVENTS]
        else:
            results, messages = [{"result": None}], [_NO_EVENTS]
        return web.json_response({
            "results": results,
            "performanceStats": {"inspectedCount": 0, "omittedCount": 0, "matchCount": 0,
                                 "wallClockTime": 1},
            "metadata": {
                "eventTypes": [], "openEnded": True,
                "beginTimeMillis": end - span * 1000, "endTimeMillis": end,
                "rawSince": f"{span} SECONDS AGO", "rawUntil": "NOW",
                "messages": messages, "contents": [],
            },
        })


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
