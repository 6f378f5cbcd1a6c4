"""What a canary is doing, read from the objects as the API server returns them.

The Canary status (phase, weight, ``analysisHistory``, ``steering``) and the Canary's Events,
summarised once for every place that shows them: ``kubectl flaggerpy list`` and ``status``
(:mod:`flaggerpy.kubectl.view`) print these, and the dashboard pages
(:mod:`flaggerpy.dashboard.pages`) draw them, so the terminal and the browser never disagree.
Pure functions of plain mappings: no client, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "IN_RUN_PHASES",
    "RUN_START",
    "TimelineEntry",
    "analysis_of",
    "as_map",
    "checks",
    "current_run",
    "events_selector",
    "number",
    "status_of",
    "steering_state",
    "step",
    "threshold_text",
]

RUN_START: Final = "New revision detected"
"""How the controller's Event for the start of a run begins (Flagger's wording)."""

IN_RUN_PHASES: Final = frozenset({"Progressing", "Waiting", "WaitingPromotion", "Promoting",
                                  "Finalising"})


def as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def status_of(canary: Mapping[str, Any]) -> Mapping[str, Any]:
    return as_map(canary.get("status"))


def analysis_of(canary: Mapping[str, Any]) -> Mapping[str, Any]:
    return as_map(as_map(canary.get("spec")).get("analysis"))


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def step(canary: Mapping[str, Any]) -> str:
    """Where the current run is: ``iteration 2/5`` (Blue/Green, A/B) or ``step 3/5`` (weights).

    ``-`` outside a run. A weight step counts ``stepWeights`` reached, or ``stepWeight``
    increments up to ``maxWeight`` (100 when unset), as the controller advances them.
    """
    status = status_of(canary)
    if status.get("phase") not in IN_RUN_PHASES:
        return "-"
    analysis = analysis_of(canary)
    iterations = number(analysis.get("iterations"))
    if iterations:
        done = int(number(status.get("iterations")) or 0)
        return f"iteration {done}/{int(iterations)}"
    weight = number(status.get("canaryWeight")) or 0.0
    step_weights = [w for w in (number(v) for v in analysis.get("stepWeights") or ()) if w]
    if step_weights:
        reached = sum(1 for w in step_weights if w <= weight)
        return f"step {reached}/{len(step_weights)}"
    step_weight = number(analysis.get("stepWeight"))
    if step_weight:
        max_weight = number(analysis.get("maxWeight")) or 100.0
        total = math.ceil(min(max_weight, 100.0) / step_weight)
        return f"step {min(total, math.ceil(weight / step_weight))}/{total}"
    return "-"


def steering_state(canary: Mapping[str, Any]) -> str:
    """What steering commands left on the run (``status.steering``): ``paused``, ``approved``,
    ``promote pending``, ... joined by commas; ``-`` when nothing.

    The field is flaggerpy's and optional: a canary no command ever touched has none.
    """
    steering = as_map(status_of(canary).get("steering"))
    parts = [word for word in ("paused", "approved") if steering.get(word)]
    if steering.get("request"):
        parts.append(f"{steering['request']} pending")
    return ",".join(parts) or "-"


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One Event of the Canary, as the timeline shows it."""

    time: str
    """When it last happened (``lastTimestamp``, else ``eventTime`` or ``firstTimestamp``)."""
    first: str
    type: str
    reason: str
    message: str
    count: int
    name: str

    @classmethod
    def of(cls, event: Mapping[str, Any]) -> TimelineEntry:
        first = str(event.get("firstTimestamp") or event.get("eventTime") or "")
        count = event.get("count")
        return cls(
            time=str(event.get("lastTimestamp") or first),
            first=first,
            type=str(event.get("type") or ""),
            reason=str(event.get("reason") or ""),
            message=str(event.get("message") or ""),
            count=count if isinstance(count, int) and count > 0 else 1,
            name=str(as_map(event.get("metadata")).get("name") or ""),
        )


def current_run(events: Iterable[Mapping[str, Any]]) -> tuple[list[TimelineEntry], str | None]:
    """The Events of the current run, oldest first, and when the run started (None: unknown).

    A run starts with the controller's ``New revision detected`` Event; without one (the
    canary has not had a new revision since its Events expired, or is initializing) every
    Event is shown. Events are ordered by when they first happened, then by name: the
    recorder names them ``<canary>.<hex nanoseconds>``, which orders those of one second.
    An Event repeated after the start (``count`` > 1) belongs to the run too.
    """
    entries = sorted((TimelineEntry.of(e) for e in events), key=lambda e: (e.first, e.name))
    starts = [i for i, entry in enumerate(entries) if entry.message.startswith(RUN_START)]
    if not starts:
        return entries, None
    begin = starts[-1]
    started = entries[begin].first
    run = [entry for i, entry in enumerate(entries) if i >= begin or entry.time >= started]
    run.sort(key=lambda e: (e.time if e.first < started else e.first, e.name))
    return run, started


def threshold_text(entry: Mapping[str, Any]) -> str:
    """An ``analysisHistory`` entry's accepted range: ``>= 99``, ``<= 500``, ``1..5`` or ``-``."""
    low, high = number(entry.get("thresholdMin")), number(entry.get("thresholdMax"))
    if low is not None and high is not None:
        return f"{low:g}..{high:g}"
    if low is not None:
        return f">= {low:g}"
    if high is not None:
        return f"<= {high:g}"
    return "-"


def checks(canary: Mapping[str, Any], *, since: str | None = None) -> list[Mapping[str, Any]]:
    """The ``analysisHistory`` entries of the current run (all of them when ``since`` is None).

    Timestamps are RFC 3339 in UTC with second precision on both sides, so they compare as
    strings.
    """
    history = status_of(canary).get("analysisHistory") or []
    return [entry for entry in history
            if isinstance(entry, Mapping) and (since is None or str(entry.get("time")) >= since)]


def events_selector(name: str) -> str:
    """The field selector of a Canary's Events (not those of a Deployment of the same name)."""
    return f"involvedObject.kind=Canary,involvedObject.name={name}"
