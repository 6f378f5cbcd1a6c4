"""Reads the API server's audit log: who made which requests, and when.

The local control plane logs every request at Metadata level (verb, resource, namespace, user,
user agent) with one line per request, so a test or benchmark can count exactly the calls one client
made in a time window, which is how "zero GET/LIST per steady tick" is measured.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class AuditRecord:
    """One API request, as the audit log saw it."""

    audit_id: str
    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str
    user: str
    user_agent: str
    code: int
    received: datetime


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def records(path: Path) -> Iterator[AuditRecord]:
    """Every request in the log, once (watches log ResponseStarted and ResponseComplete)."""
    seen: set[str] = set()
    with path.open() as log:
        for line in log:
            if not line.strip():
                continue
            event = json.loads(line)
            audit_id = event["auditID"]
            if audit_id in seen:
                continue
            seen.add(audit_id)
            ref = event.get("objectRef") or {}
            yield AuditRecord(
                audit_id=audit_id,
                verb=event["verb"],
                resource=ref.get("resource", ""),
                subresource=ref.get("subresource", ""),
                namespace=ref.get("namespace", ""),
                name=ref.get("name", ""),
                user=event.get("user", {}).get("username", ""),
                user_agent=event.get("userAgent", ""),
                code=int((event.get("responseStatus") or {}).get("code", 0)),
                received=_parse_time(event["requestReceivedTimestamp"]),
            )


@dataclass
class RequestCounts:
    """Requests of one client in a window, by verb and by ``verb resource``."""

    total: int = 0
    by_verb: Counter[str] = field(default_factory=Counter)
    by_resource: Counter[str] = field(default_factory=Counter)

    @property
    def reads(self) -> int:
        """GETs and LISTs: what a cache-backed controller should not need in steady state."""
        return self.by_verb["get"] + self.by_verb["list"]

    @property
    def writes(self) -> int:
        return sum(
            self.by_verb[v] for v in ("create", "update", "patch", "delete", "deletecollection")
        )


def count_requests(
    path: Path,
    *,
    user_agent: str,
    since: datetime | None = None,
    until: datetime | None = None,
    namespace: str | None = None,
) -> RequestCounts:
    """Counts requests whose user agent starts with ``user_agent``, received in [since, until).

    ``namespace`` keeps only requests about objects in that namespace, so two processes with
    the same user agent working in different namespaces can be told apart.
    """
    counts = RequestCounts()
    for record in records(path):
        if not record.user_agent.startswith(user_agent):
            continue
        if namespace is not None and record.namespace != namespace:
            continue
        if since is not None and record.received < since:
            continue
        if until is not None and record.received >= until:
            continue
        counts.total += 1
        counts.by_verb[record.verb] += 1
        resource = record.resource + (f"/{record.subresource}" if record.subresource else "")
        counts.by_resource[f"{record.verb} {resource}"] += 1
    return counts
