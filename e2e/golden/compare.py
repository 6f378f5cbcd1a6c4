"""Compares a replay with Flagger's recording: snapshots field by field, steps as a sequence,
Events as a multiset; allow-listed differences are taken out of both sides first.

Every difference names where it is (which snapshot, which step), the object (``Kind[.group]/name``),
the field path, Flagger's value and ours, so a failing case reads as a diff.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from e2e.golden.corpus import Case, EventLine
from e2e.golden.differences import Allowed
from e2e.golden.normalize import label

if TYPE_CHECKING:
    from e2e.golden.replay import Replayed

__all__ = ["ABSENT", "Difference", "Report", "compare_case", "compare_events",
           "compare_snapshot", "compare_steps", "diff_values", "render_path"]

Json = dict[str, Any]


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


ABSENT: Any = _Absent()
"""The value of a field one side does not have."""

_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

COMBINED = "(combined from similar events): "
WAITING = re.compile(r"^(.* not ready: waiting for rollout to finish): .*$")
ROLLOUT_WAIT = re.compile(r"not ready: waiting for rollout to finish")
TIMING_MESSAGES = (
    ROLLOUT_WAIT,
    re.compile(r"^all the metrics providers are available!$"),
)
"""Event messages emitted once per Initializing tick: how many there are is timing (the corpus
README), so they are compared by presence, not by count. Which rollout condition a wait reports
(``observed deployment generation less than desired generation``, ``0 out of 1 new replicas
have been updated``, ...) is timing too: only the text up to the colon is compared."""
OPTIONAL_MESSAGES = (ROLLOUT_WAIT,)
"""Event messages that one side may have and the other not. Whether a tick finds a rollout still
in progress at all depends on how fast the cluster's controllers make the pods ready, measured
against the 10 s interval: Flagger's capture had an idle cluster, where the canary Deployment
of a new revision was always ready by the next tick, while a loaded test cluster may take
longer, and then flaggerpy (like Flagger would) reports the wait once."""


def render_path(parent: str, key: str | int) -> str:
    """``parent`` extended by a list index, a plain key or a quoted one (``a["b/c"]``)."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    if not _WORD.match(key):
        return f"{parent}[{json.dumps(key)}]"
    return f"{parent}.{key}" if parent else key


def diff_values(flagger: Any, ours: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(path, Flagger's value, ours) for every leaf-most place the two differ."""
    if isinstance(flagger, dict) and isinstance(ours, dict):
        for key in sorted(flagger.keys() | ours.keys(), key=str):
            yield from diff_values(flagger.get(key, ABSENT), ours.get(key, ABSENT),
                                   render_path(path, key))
    elif isinstance(flagger, list) and isinstance(ours, list):
        for index in range(max(len(flagger), len(ours))):
            yield from diff_values(flagger[index] if index < len(flagger) else ABSENT,
                                   ours[index] if index < len(ours) else ABSENT,
                                   render_path(path, index))
    elif flagger != ours or type(flagger) is not type(ours):
        yield path, flagger, ours


@dataclass(frozen=True, slots=True)
class Difference:
    where: str
    """``initialized``, ``succeeded``, ``failed``, ``deleted``, ``steps`` or ``events``."""
    object: str
    path: str
    flagger: Any
    ours: Any
    at: str = ""
    """In steps: which step of each side."""

    def render(self) -> str:
        where = f"{self.where} ({self.at})" if self.at else self.where
        head = f"  {where}  {self.object}  {self.path}".rstrip()
        return f"{head}\n      Flagger: {_short(self.flagger)}\n      ours:    {_short(self.ours)}"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=repr)
    return text if len(text) <= 600 else text[:600] + " ..."


@dataclass
class Report:
    """What one case's comparison found."""

    case: str
    differences: list[Difference] = field(default_factory=list)
    used: set[int] = field(default_factory=set)
    """Indices (in the allow-list) of entries that hid a real difference."""
    notes: list[str] = field(default_factory=list)
    error: str = ""
    """The replay stopped before the end (what was captured is still compared)."""

    @property
    def failed(self) -> bool:
        return bool(self.differences or self.error)

    def render(self) -> str:
        lines = [f"{self.case}: {len(self.differences)} difference(s) from Flagger 1.44 not "
                 "listed in e2e/golden/differences.yaml"]
        if self.error:
            lines.append(f"  the replay stopped early: {self.error}")
        lines += [d.render() for d in self.differences]
        lines += self.notes
        return "\n".join(lines)


# -- taking allowed fields out -------------------------------------------------------------------
Entry = tuple[int, Allowed]
Covers = Callable[[str, str], "Entry | None"]
"""(object label, path) -> the entry (with its index) covering that field, or None."""
Removed = list[tuple[int, str, str, str]]
"""(entry index, object, path, the value as JSON) for each field an entry took out or reordered."""


def _strip(value: Any, obj: str, path: str, covers: Covers, removed: Removed) -> Any:
    """``value`` without the covered fields (unordered ones sorted instead); what was taken out
    is appended to ``removed``."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            sub = render_path(path, key)
            kept = _covered(item, obj, sub, covers, removed)
            if kept is not _GONE:
                out[key] = kept
        return out
    if isinstance(value, list):
        items = []
        for index, item in enumerate(value):
            kept = _covered(item, obj, render_path(path, index), covers, removed)
            if kept is not _GONE:
                items.append(kept)
        return items
    return value


_GONE: Any = object()


def _covered(item: Any, obj: str, path: str, covers: Covers, removed: Removed) -> Any:
    entry = covers(obj, path)
    if entry is None:
        return _strip(item, obj, path, covers, removed)
    index, allowed = entry
    removed.append((index, obj, path, json.dumps(item, sort_keys=True)))
    if allowed.unordered and isinstance(item, list):
        ordered = sorted(item, key=lambda x: json.dumps(x, sort_keys=True))
        return _strip(ordered, obj, path, covers, removed)
    return _GONE


def _covers(allowed: Sequence[Entry], where: str) -> Covers:
    def covers(obj: str, path: str) -> Entry | None:
        for index, entry in allowed:
            if entry.covers_field(where, obj, path):
                return index, entry
        return None
    return covers


def _used(flagger: Removed, ours: Removed) -> set[int]:
    """Entries that took out something not taken out identically from the other side."""
    a, b = Counter(flagger), Counter(ours)
    return {item[0] for item in (a - b) + (b - a)}


# -- snapshots -----------------------------------------------------------------------------------
def _by_label(objects: Sequence[Json]) -> dict[str, Json]:
    return {label(o): o for o in objects}


def compare_snapshot(where: str, flagger: Sequence[Json], ours: Sequence[Json],
                     allowed: Sequence[Entry], report: Report) -> None:
    covers = _covers(allowed, where)
    left, right = _by_label(flagger), _by_label(ours)
    removed_left: Removed = []
    removed_right: Removed = []
    for name in sorted(left.keys() | right.keys()):
        whole = covers(name, "")
        if whole is not None:
            removed_left.append((whole[0], name, "", json.dumps(left.get(name), sort_keys=True)))
            removed_right.append((whole[0], name, "", json.dumps(right.get(name),
                                                                 sort_keys=True)))
            continue
        a = _strip(left.get(name, ABSENT), name, "", covers, removed_left)
        b = _strip(right.get(name, ABSENT), name, "", covers, removed_right)
        if a is ABSENT or b is ABSENT:
            report.differences.append(Difference(where, name, "(the object)", a, b))
            continue
        report.differences += [Difference(where, name, path, x, y)
                               for path, x, y in diff_values(a, b)]
    report.used |= _used(removed_left, removed_right)


# -- steps ---------------------------------------------------------------------------------------
def _labelled(step: Json) -> dict[str, Any]:
    """A step state keyed as ``changed`` names things: objects, ``Canary/status``, workloads."""
    out: dict[str, Any] = {label(o): o for o in step.get("objects") or ()}
    out["Canary/status"] = step.get("canary") or {}
    out.update(step.get("workloads") or {})
    return out


def _summary(step: Json) -> str:
    canary = step.get("canary") or {}
    workloads = ", ".join(f"{k}={json.dumps(v, sort_keys=True)}"
                          for k, v in sorted((step.get("workloads") or {}).items()))
    return (f"changed {step.get('changed')}; canary {json.dumps(canary, sort_keys=True)}; "
            f"{workloads}")


def compare_steps(flagger: Sequence[Json], ours: Sequence[Json],
                  allowed: Sequence[Entry], report: Report) -> None:
    """The sequences of distinct step states, aligned; allowed fields are taken out first and
    states that then repeat the previous one are merged into it."""
    covers = _covers(allowed, "steps")
    removed_left: Removed = []
    removed_right: Removed = []

    def prepare(steps: Sequence[Json], removed: Removed) -> list[tuple[int, Json, dict[str, Any]]]:
        out: list[tuple[int, Json, dict[str, Any]]] = []
        for number, step in enumerate(steps):
            state = {name: _strip(value, name, "", covers, removed)
                     for name, value in _labelled(step).items() if covers(name, "") is None}
            if not out or out[-1][2] != state:
                out.append((number, step, state))
        return out

    left, right = prepare(flagger, removed_left), prepare(ours, removed_right)
    report.used |= _used(removed_left, removed_right)
    keys_left = [json.dumps(s, sort_keys=True) for _, _, s in left]
    keys_right = [json.dumps(s, sort_keys=True) for _, _, s in right]
    matcher = difflib.SequenceMatcher(None, keys_left, keys_right, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        pairs = min(i2 - i1, j2 - j1)
        for offset in range(pairs):
            (n, _, a), (m, _, b) = left[i1 + offset], right[j1 + offset]
            at = f"Flagger step {n}, ours {m}"
            for name in sorted(a.keys() | b.keys()):
                x, y = a.get(name, ABSENT), b.get(name, ABSENT)
                report.differences += [Difference("steps", name, path or "(the object)", p, q, at)
                                       for path, p, q in diff_values(x, y)]
        for n, step, _ in left[i1 + pairs:i2]:
            report.differences.append(Difference(
                "steps", "(sequence)", "", _summary(step), ABSENT,
                f"Flagger step {n} has no counterpart in ours"))
        for m, step, _ in right[j1 + pairs:j2]:
            report.differences.append(Difference(
                "steps", "(sequence)", "", ABSENT, _summary(step),
                f"our step {m} has no counterpart in Flagger's"))


# -- events --------------------------------------------------------------------------------------
def _event_key(event: EventLine) -> str:
    message = event.message.removeprefix(COMBINED)
    message = WAITING.sub(r"\1: ...", message)
    return f"{event.type}\t{message}"


def compare_events(flagger: Sequence[EventLine], ours: Sequence[EventLine],
                   allowed: Sequence[Entry], report: Report) -> None:
    """Events as a multiset of (type, message); Initializing-tick messages by presence only,
    rollout waits not even that; messages an entry matches counted as one (by presence with
    ``count: any``)."""
    def grouped(events: Sequence[EventLine]) -> tuple[Counter[str], dict[int, Counter[str]]]:
        counts: Counter[str] = Counter()
        originals: dict[int, Counter[str]] = {}
        for event in events:
            key = _event_key(event)
            kind, message = key.split("\t", 1)
            entry = next(((i, e) for i, e in allowed if e.covers_event(message)), None)
            if entry is not None:
                originals.setdefault(entry[0], Counter())[key] += 1
                key = f"{kind}\t{entry[1].message}"
            counts[key] += 1
            if any(p.search(message) for p in TIMING_MESSAGES) or (
                    entry is not None and entry[1].any_count):
                counts[key] = 1
        return counts, originals

    left, left_originals = grouped(flagger)
    right, right_originals = grouped(ours)
    for index, _ in allowed:
        mine, theirs = left_originals.get(index), right_originals.get(index)
        if mine != theirs:  # other wordings, or other counts
            report.used.add(index)
    for key in sorted(left.keys() | right.keys()):
        if not (left[key] and right[key]) and any(p.search(key) for p in OPTIONAL_MESSAGES):
            continue
        if left[key] > right[key]:
            report.differences.append(Difference(
                "events", "", "", f"{key} (x{left[key]})", f"x{right[key]}", "missing in ours"))
        elif right[key] > left[key]:
            report.differences.append(Difference(
                "events", "", "", f"x{left[key]}", f"{key} (x{right[key]})", "extra in ours"))


# -- a whole case --------------------------------------------------------------------------------
def compare_case(case: Case, replayed: Replayed, entries: Sequence[Allowed]) -> Report:
    """Every comparison of one case: snapshots, steps, Events. ``entries`` is the whole
    allow-list (``Report.used`` holds indices into it); those for other cases are skipped."""
    allowed = [(i, e) for i, e in enumerate(entries) if e.applies(case.provider, case.name)]
    report = Report(case.id, error=replayed.error)
    for name in ("initialized", case.final_name, "deleted"):
        if not case.has(name):
            continue
        ours = replayed.snapshots.get(name)
        if ours is None:
            report.differences.append(Difference(name, "(snapshot)", "", "taken", ABSENT,
                                                 "the replay never got there"))
        else:
            compare_snapshot(name, case.snapshot(name), ours, allowed, report)
    if replayed.steps:
        compare_steps(case.steps, replayed.steps, allowed, report)
    compare_events(case.events, replayed.events, allowed, report)
    if report.failed and replayed.log:
        report.notes.append("  controller log about the case (last lines):\n" + replayed.log)
    return report
