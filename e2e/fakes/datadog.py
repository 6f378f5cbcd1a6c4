"""A local stand-in for Datadog's v1 metrics query and key validation API.

Written from Datadog's API reference (docs.datadoghq.com/api/latest/), not from flaggerpy's
client:

- ``GET /api/v1/query`` ("Query timeseries points"): query strings ``from`` and ``to`` (required
  integers, seconds since the Unix epoch) and ``query`` (required string); reading data needs
  both the API key (``DD-API-KEY``) and the application key (``DD-APPLICATION-KEY``). The OK
  answer is ``{"status": "ok", "res_type": "time_series", "query", "from_date", "to_date"
  (milliseconds), "group_by", "message", "series": [...]}``, each series with ``metric``,
  ``display_name``, ``expression``, ``scope``, ``tag_set``, ``aggr``, ``unit``, ``query_index``,
  ``start``/``end`` (milliseconds), ``interval`` (seconds), ``length`` and ``pointlist``, a list
  of ``[timestamp in milliseconds, value]`` where a missing value is ``null``. A query that
  matches nothing answers 200 with an empty ``series``.
- ``GET /api/v1/validate`` ("Validate API key"): checks the API key only (not the application
  key); ``{"valid": true}``, or 403.
- Errors are ``{"errors": ["..."]}``: 400 for a bad request, 403 for a missing or wrong key,
  429 for too many requests.

The fake holds one API key and one application key, answers each query from what the test set
with :meth:`FakeDatadog.set_series` (series whose every point has the given value, spaced
``interval`` seconds over the requested window), and records every request so a test can
assert on what arrived. :meth:`FakeDatadog.fail_next` scripts error answers (429, 5xx, a
hang). Queries are not evaluated: the query string is only a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

__all__ = ["FakeDatadog", "Recorded"]


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request as it arrived."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    raw_query: str


@dataclass
class _Series:
    values: Sequence[float | None]  # one series per value; None gives null points
    interval: int
    pointlists: Sequence[Sequence[tuple[float, float | None]]] = ()  # given as they are


@dataclass
class _Failure:
    status: int
    body: Any  # JSON, or None for a hang of `hang` seconds
    hang: float = 0.0


@dataclass
class FakeDatadog:
    """Datadog's v1 query and validate endpoints on 127.0.0.1; ``async with`` starts it."""

    api_key: str = "dd-api-key"
    application_key: str = "dd-application-key"
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""
    _series: dict[str, _Series] = field(default_factory=dict)
    _failures: list[_Failure] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    def set_series(self, query: str, *values: float | None, interval: int = 20) -> None:
        """``query`` answers one series per value, each point of it holding that value."""
        self._series[query] = _Series(values=values, interval=interval)

    def set_pointlists(self, query: str, *pointlists: Sequence[tuple[float, float | None]],
                       interval: int = 20) -> None:
        """``query`` answers one series per pointlist, ``[ms, value]`` pairs as given."""
        self._series[query] = _Series(values=(), interval=interval, pointlists=pointlists)

    def fail_next(self, status: int, body: Any = None, *, hang: float = 0.0) -> None:
        """The next request is answered ``status`` with ``body`` (after ``hang`` seconds).

        ``body`` is sent as JSON, or as it is when it is bytes.
        """
        self._failures.append(_Failure(status=status, body=body, hang=hang))

    def queries(self) -> list[Recorded]:
        """The requests to ``/api/v1/query``."""
        return [r for r in self.requests if r.path == "/api/v1/query"]

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_get("/api/v1/query", self._query)
        app.router.add_get("/api/v1/validate", self._validate)
        app.middlewares.append(self._record)
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
        if request.method != "GET":
            return _errors(405, "Method Not Allowed")
        response: web.StreamResponse = await handler(request)
        return response

    async def _validate(self, request: web.Request) -> web.Response:
        if request.headers.get("DD-API-KEY") != self.api_key:
            return _errors(403, "Forbidden")
        return web.json_response({"valid": True})

    async def _query(self, request: web.Request) -> web.Response:
        if (request.headers.get("DD-API-KEY") != self.api_key
                or request.headers.get("DD-APPLICATION-KEY") != self.application_key):
            return _errors(403, "Forbidden")
        try:
            start, end = int(request.query["from"]), int(request.query["to"])
            query = request.query["query"]
        except KeyError as exc:
            return _errors(400, f"The parameter '{exc.args[0]}' is required")
        except ValueError:
            return _errors(400, "The parameters 'from' and 'to' must be integers")
        if not query.strip():
            return _errors(400, "The parameter 'query' is required")
        if start >= end:
            return _errors(400, "The value of 'from' must be before 'to'")
        scripted = self._series.get(query)
        series = [] if scripted is None else [
            _series_of(query, index, value, start, end, scripted.interval)
            for index, value in enumerate(scripted.values)
        ]
        if scripted is not None and scripted.pointlists:
            series = [_series_of(query, index, None, start, end, scripted.interval)
                      | {"pointlist": [list(point) for point in points], "length": len(points)}
                      for index, points in enumerate(scripted.pointlists)]
        return web.json_response({
            "status": "ok", "res_type": "time_series", "query": query,
            "from_date": start * 1000, "to_date": end * 1000, "group_by": [],
            "message": "", "series": series,
        })


def _series_of(query: str, index: int, value: float | None, start: int, end: int,
               interval: int) -> dict[str, Any]:
    first = start - start % interval  # buckets are aligned to the interval
    stamps = range(first, end, interval)
    metric = query.split("{", 1)[0].split(":")[-1]
    return {
        "metric": metric, "display_name": metric, "expression": query, "aggr": None,
        "scope": f"host:series-{index}", "tag_set": [f"host:series-{index}"], "unit": None,
        "query_index": 0, "interval": interval, "length": len(stamps),
        "start": stamps[0] * 1000, "end": (stamps[-1] + interval) * 1000 - 1,
        "pointlist": [[float(t * 1000), None if value is None or math.isnan(value) else value]
                      for t in stamps],
    }


def _errors(status: int, *messages: str) -> web.Response:
    return web.json_response({"errors": list(messages)}, status=status)
