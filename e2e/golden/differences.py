"""The allow-list of differences from Flagger (``differences.yaml``), and how an entry matches.

Each entry names where flaggerpy differs from Flagger on purpose (docs/compatibility.md) or by a
known bug (``reason`` starting ``bug:``): the provider folder and the case (a glob, ``*`` for all,
or a list of them), which comparisons it applies to (``initialized``, ``steps``, ``succeeded``,
``failed``, ``deleted``, ``events``; all by default), and what differs:

- a field: ``object`` (``Kind[.group]/name``; in steps ``Canary/status`` and ``Deployment/<name>``
  as the corpus names them) and ``path`` (one path or a list). The field is left out of both
  sides; with ``unordered: true`` it is kept and only its list order is ignored.
- an Event: ``message``, a glob. Messages it matches on either side count as one message (so
  two wordings of the same Event compare equal); with ``count: any`` only their presence is
  compared, not how often they were emitted.

Paths are dotted (``status.lastAppliedSpec``), list items indexed (``spec.http[0].route``), keys
that are not plain words quoted (``metadata.annotations["flagger.kubernetes.io/x"]``). In an
entry ``*`` stands for one key or part of one and ``[*]`` for any index; a path covers the field
it names and everything inside it. ``object`` may use ``*`` too.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ALLOW_LIST", "WHERE", "Allowed", "load", "path_matches"]

ALLOW_LIST = Path(__file__).with_name("differences.yaml")
WHERE = ("initialized", "steps", "succeeded", "failed", "deleted", "events")
_KEYS = {"provider", "case", "where", "object", "path", "unordered", "message", "count", "reason"}


@dataclass(frozen=True, slots=True)
class Allowed:
    """One allow-list entry."""

    provider: str
    cases: tuple[str, ...]
    reason: str
    where: tuple[str, ...] = WHERE
    object: str = ""
    paths: tuple[str, ...] = ("",)
    unordered: bool = False
    message: str = ""
    any_count: bool = False

    def applies(self, provider: str, case: str) -> bool:
        return (fnmatch.fnmatchcase(provider, self.provider)
                and any(fnmatch.fnmatchcase(case, pattern) for pattern in self.cases))

    def covers_field(self, where: str, obj: str, path: str) -> bool:
        return (where in self.where and bool(self.object) and fnmatch.fnmatchcase(obj, self.object)
                and any(path_matches(p, path, exact=self.unordered) for p in self.paths))

    def covers_event(self, message: str) -> bool:
        return ("events" in self.where and bool(self.message)
                and fnmatch.fnmatchcase(message, self.message))

    @property
    def is_bug(self) -> bool:
        return self.reason.startswith("bug:")

    def describe(self) -> str:
        what = self.message or f"{self.object} {', '.join(self.paths)}"
        return f"{self.provider}/{','.join(self.cases)} {what}: {self.reason}"


def _pattern(path: str, *, exact: bool) -> re.Pattern[str]:
    out = []
    for token in re.split(r"(\[\*\]|\*)", path):
        if token == "[*]":
            out.append(r"\[\d+\]")
        elif token == "*":
            out.append(r"[^.\[\]]*")
        else:
            out.append(re.escape(token))
    # The field itself, or (not exact) anything inside it too.
    return re.compile("".join(out) + ("$" if exact else r"(?:$|[.\[])"))


def path_matches(pattern: str, path: str, *, exact: bool = False) -> bool:
    """Whether the entry path ``pattern`` covers the field at ``path`` (``""`` covers all);
    ``exact``: that field only, not what is inside it (an unordered list's items are compared)."""
    if not pattern:
        return not exact or not path
    return _pattern(pattern, exact=exact).match(path) is not None


def load(path: Path = ALLOW_LIST) -> list[Allowed]:
    """Every entry of the allow-list; a malformed entry is an error naming it."""
    raw: Any = yaml.safe_load(path.read_text()) or []
    return [_entry(item, f"{path.name} entry {number}") for number, item in enumerate(raw, 1)]


def _entry(item: Any, name: str) -> Allowed:
    if not isinstance(item, dict):
        raise ValueError(f"{name} is not a mapping")
    where = item.get("where") or WHERE
    paths = item.get("path") or ""
    paths = [paths] if isinstance(paths, str) else paths
    cases = item.get("case") or ""
    cases = [cases] if isinstance(cases, str) else cases
    problems = [f"unknown keys {sorted(set(item) - _KEYS)}"] if set(item) - _KEYS else []
    problems += [f"unknown where {w!r}" for w in where if w not in WHERE]
    if not str(item.get("reason") or "").strip():
        problems.append("no reason")
    if not item.get("provider") or not item.get("case"):
        problems.append("provider and case are required")
    if bool(item.get("message")) == bool(item.get("object")):
        problems.append("exactly one of object (with path) and message is required")
    if item.get("count", "exact") not in ("exact", "any"):
        problems.append("count is exact or any")
    if problems:
        raise ValueError(f"{name}: {'; '.join(problems)}")
    return Allowed(
        provider=str(item["provider"]), cases=tuple(str(c) for c in cases),
        reason=str(item["reason"]),
        where=tuple(where), object=str(item.get("object") or ""),
        paths=tuple(str(p) for p in paths), unordered=bool(item.get("unordered")),
        message=str(item.get("message") or ""), any_count=item.get("count") == "any")
