"""The weight and metric timeline of a canary, as the dashboard's chart draws it.

The metric values are in the Canary itself (``status.analysisHistory``, one entry per check
and analysis). The weight is not: the status holds the current one only. So the weight's past is
kept by whoever watches the canary -- :class:`WeightHistory` records a point each time the
weight or phase it sees changes (the controller feeds it from its Canary informer, ``kubectl
flaggerpy dashboard`` from the reads of each poll) -- and is completed from the controller's
``Advance ... canary weight N`` Events where those are at hand.
"""

from __future__ import annotations

import collections
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from flaggerpy.dashboard import summary

__all__ = ["Point", "WeightHistory", "metric_series", "timeline", "weights_from_events"]

Point = tuple[float, float]
"""(seconds since the epoch, value): what the chart plots."""

MAX_POINTS: Final = 720
"""Points kept per canary: a point a minute for half a day, or a long run at 10 s steps."""

_ADVANCE: Final = re.compile(r"canary weight (\d+(?:\.\d+)?)")


def _epoch(timestamp: Any) -> float | None:
    """An RFC 3339 time as seconds since the epoch; None when it is not one."""
    if not isinstance(timestamp, str) or not timestamp:
        return None
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _key(canary: Mapping[str, Any]) -> tuple[str, str]:
    meta = summary.as_map(canary.get("metadata"))
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class WeightHistory:
    """Each canary's weight over time, as seen by one process (bounded, newest kept)."""

    def __init__(self, *, size: int = MAX_POINTS,
                 clock: Callable[[], float] = time.time) -> None:
        self._size = size
        self._clock = clock
        self._points: dict[tuple[str, str], collections.deque[Point]] = {}
        self._last: dict[tuple[str, str], tuple[float, str]] = {}

    def observe(self, canary: Mapping[str, Any]) -> None:
        """Records the canary's weight now if it (or the phase) changed since the last look."""
        key = _key(canary)
        status = summary.status_of(canary)
        weight = summary.number(status.get("canaryWeight")) or 0.0
        seen = (weight, str(status.get("phase") or ""))
        if self._last.get(key) == seen:
            return
        self._last[key] = seen
        points = self._points.setdefault(key, collections.deque(maxlen=self._size))
        points.append((self._clock(), weight))

    def forget(self, canary: Mapping[str, Any]) -> None:
        """Drops a deleted canary's points."""
        key = _key(canary)
        self._points.pop(key, None)
        self._last.pop(key, None)

    def points(self, namespace: str, name: str) -> list[Point]:
        return list(self._points.get((namespace, name), ()))


def weights_from_events(events: Iterable[Mapping[str, Any]]) -> list[Point]:
    """The weights the controller announced (``Advance podinfo.test canary weight 20``)."""
    points = []
    for entry in summary.current_run(events)[0]:
        match = _ADVANCE.search(entry.message)
        at = _epoch(entry.time)
        if match and at is not None:
            points.append((at, float(match.group(1))))
    return points


def metric_series(canary: Mapping[str, Any]) -> dict[str, list[Point]]:
    """Each check's values over the current run, from ``status.analysisHistory``."""
    series: dict[str, list[Point]] = {}
    for entry in summary.checks(canary):
        at, value = _epoch(entry.get("time")), summary.number(entry.get("value"))
        if at is not None and value is not None:
            series.setdefault(str(entry.get("metric") or "?"), []).append((at, value))
    for points in series.values():
        points.sort()
    return series


def timeline(
        canary: Mapping[str, Any],
        *,
        observed: Iterable[Point] = (),
        events: Iterable[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The JSON the canary page polls: phase, weight, and the points of each series."""
    status = summary.status_of(canary)
    weights = sorted({*weights_from_events(events), *observed})
    return {
        "phase": str(status.get("phase") or ""),
        "weight": round(summary.number(status.get("canaryWeight")) or 0),
        "weights": [list(p) for p in weights],
        "metrics": {name: [list(p) for p in points]
                    for name, points in metric_series(canary).items()},
    }
