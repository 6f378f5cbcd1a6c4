"""What a chaos run ended as, measured from the cluster, the audit log and the receiver.

The end of a run is compared with the end of the undisturbed run of the same release: the design
promises that a reconcile may be killed at any instant and the canary still ends where it would
have (``docs`` design rules 2 and 5), so every field here must match, except the counts of what
the fault itself caused (restarts, conflicts).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PRIMARY_WRITES = frozenset({"create", "update", "patch"})
"""Verbs that change a Deployment's spec (``apply`` is a ``patch`` in the audit log)."""


@dataclass
class AuditWindow:
    """The audit log from an offset on: only the requests made after the window opened.

    The shared cluster's log holds hundreds of megabytes of other tests' requests; reading from
    the offset taken at the start of the run, and skipping lines that do not name the namespace
    before parsing them, keeps a measurement to the run's own requests and well under a second.
    """

    path: Path
    namespace: str
    offset: int = 0

    @classmethod
    def open(cls, path: Path, namespace: str) -> AuditWindow:
        return cls(path, namespace, path.stat().st_size if path.exists() else 0)

    def events(self) -> list[dict[str, Any]]:
        """Each request about the namespace once (watches log two stages; the first is kept)."""
        needle = f'"namespace":"{self.namespace}"'.encode()
        seen: set[str] = set()
        found: list[dict[str, Any]] = []
        with self.path.open("rb") as log:
            log.seek(self.offset)
            for line in log:
                if needle not in line or not line.endswith(b"\n"):
                    continue
                event = json.loads(line)
                if event["auditID"] in seen or event.get("stage") == "ResponseStarted":
                    continue
                seen.add(event["auditID"])
                found.append(event)
        return found


def primary_writes(events: list[dict[str, Any]], *, primary: str, user_agent: str) -> int:
    """Writes of the primary Deployment's object (not its status or scale) by the controller."""
    count = 0
    for event in events:
        ref = event.get("objectRef") or {}
        if (ref.get("resource") == "deployments" and ref.get("name") == primary
                and not ref.get("subresource") and event.get("verb") in PRIMARY_WRITES
                and str(event.get("userAgent", "")).startswith(user_agent)
                and int((event.get("responseStatus") or {}).get("code", 0)) < 300):
            count += 1
    return count


def conflicts(events: list[dict[str, Any]], *, user_agent: str) -> int:
    """Requests of the controller the API server refused with 409 Conflict."""
    return sum(1 for event in events
               if str(event.get("userAgent", "")).startswith(user_agent)
               and int((event.get("responseStatus") or {}).get("code", 0)) == 409)


@dataclass
class Outcome:
    """The end of one run."""

    phase: str
    routes: dict[str, int]
    primary_image: str
    canary_replicas: int
    primary_writes: int
    phases_seen: list[str] = field(default_factory=list)
    gate_calls: dict[str, int] = field(default_factory=dict)
    gates_asked_after_passing: dict[str, int] = field(default_factory=dict)
    conflicts: int = 0
    restarts: int = 0
    seconds: float = 0.0

    def differences(self, expected: Outcome) -> list[str]:
        """What differs from the undisturbed run in what a fault must not change."""
        found = []
        for name in ("phase", "routes", "primary_image", "canary_replicas", "primary_writes"):
            got, want = getattr(self, name), getattr(expected, name)
            if got != want:
                found.append(f"{name}: {got!r}, undisturbed {want!r}")
        for path, count in sorted(self.gates_asked_after_passing.items()):
            if count:
                found.append(f"gate {path} asked {count} time(s) after it had passed")
        return found

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def count_calls(paths: list[str]) -> dict[str, int]:
    return dict(Counter(paths))
