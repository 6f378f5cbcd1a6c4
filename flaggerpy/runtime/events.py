"""Kubernetes Events for the objects we act on, aggregated as client-go does.

Events are written as ``core/v1`` Events -- what ``kubectl describe`` and
``kubectl get events`` show, and what Flagger writes: source component
``flagger``, and (spec §7.3) reason ``Synced`` for everything, Normal or
Warning. A canary stuck on the same error would otherwise create one Event
per analysis tick; so, like client-go's ``EventCorrelator``, an event equal
to one already recorded -- same involved object, type, reason and message --
within ``window`` seconds is written as a patch of the existing Event
(``count`` + 1, new ``lastTimestamp``) instead of a new object. The memory
of recorded events is an LRU of bounded size, so it cannot grow with the
number of objects ever seen.

Recording an event is a side effect of a reconcile, never its purpose: the
recorder logs failures (including a fenced write on a standby) and never
raises to the caller.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from flaggerpy import kube

log = structlog.get_logger(__name__)

NORMAL = "Normal"
WARNING = "Warning"
SYNCED = "Synced"
"""The reason Flagger gives every event it records."""

COMPONENT = "flagger"
"""Flagger's event source component, kept so existing event filters keep working."""

MAX_MESSAGE_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class _Key:
    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str
    type: str
    reason: str
    message: str


@dataclass(slots=True)
class _Seen:
    name: str
    namespace: str
    count: int
    first_timestamp: str
    last_seen: float  # loop time


@dataclass(slots=True)
class _Guard:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class EventRecorder:
    """Records Events about objects (plain dicts with apiVersion, kind and metadata)."""

    def __init__(
            self,
            client: kube.KubeClient,
            *,
            component: str = COMPONENT,
            host: str | None = None,  # source.host / reportingInstance; Flagger sets none
            window: float = 600.0,  # seconds an identical event is folded into the last one
            cache_size: int = 4096,  # client-go's maxLruCacheEntries
    ) -> None:
        self._client = client
        self._component = component
        self._host = host
        self._window = window
        self._cache_size = cache_size
        self._seen: collections.OrderedDict[_Key, _Seen] = collections.OrderedDict()
        self._locks: dict[_Key, _Guard] = {}

    async def normal(self, obj: Mapping[str, Any], message: str, *, reason: str = SYNCED) -> None:
        """Records a Normal event (Flagger's ``recordEventInfof``)."""
        await self.event(obj, type=NORMAL, reason=reason, message=message)

    async def warning(self, obj: Mapping[str, Any], message: str, *, reason: str = SYNCED) -> None:
        """Records a Warning event (Flagger's ``recordEventWarningf``/``recordEventErrorf``)."""
        await self.event(obj, type=WARNING, reason=reason, message=message)

    async def event(
            self, obj: Mapping[str, Any], *, type: str, reason: str, message: str,
    ) -> None:
        """Records one event; an identical recent one is counted instead. Never raises."""
        if len(message) > MAX_MESSAGE_LENGTH:
            message = message[: MAX_MESSAGE_LENGTH - 3] + "..."
        meta = obj.get("metadata") or {}
        key = _Key(
            api_version=str(obj.get("apiVersion") or ""),
            kind=str(obj.get("kind") or ""),
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            type=type,
            reason=reason,
            message=message,
        )
        # Identical events are serialized, so the second one patches what the first created.
        guard = self._locks.get(key)
        if guard is None:
            guard = self._locks[key] = _Guard()
        guard.users += 1
        try:
            async with guard.lock:
                await self._record(obj, key)
        except kube.WriteFencedError:
            log.debug("event_not_recorded_fenced", kind=key.kind, namespace=key.namespace,
                      name=key.name, reason=reason)
        except Exception as exc:
            log.warning("event_not_recorded", kind=key.kind, namespace=key.namespace,
                        name=key.name, type=type, reason=reason, event_message=message,
                        error=str(exc))
        finally:
            guard.users -= 1
            if not guard.users:
                del self._locks[key]

    async def _record(self, obj: Mapping[str, Any], key: _Key) -> None:
        now = asyncio.get_running_loop().time()
        timestamp = _timestamp()
        seen = self._seen.get(key)
        if seen is not None and now - seen.last_seen <= self._window:
            patch = {"count": seen.count + 1, "lastTimestamp": timestamp}
            try:
                await self._client.patch(kube.EVENTS, seen.name, patch, namespace=seen.namespace)
            except kube.NotFoundError:
                pass  # expired on the server (event TTL): record it afresh below
            else:
                seen.count += 1
                seen.last_seen = now
                self._seen.move_to_end(key)
                log.debug("event_counted", event_name=seen.name, count=seen.count)
                return
        body = self._build(obj, key, timestamp)
        created = await self._client.create(kube.EVENTS, body)
        self._seen[key] = _Seen(
            name=str(created["metadata"]["name"]),
            namespace=str(created["metadata"]["namespace"]),
            count=1,
            first_timestamp=timestamp,
            last_seen=now,
        )
        self._seen.move_to_end(key)
        while len(self._seen) > self._cache_size:
            self._seen.popitem(last=False)
        log.debug("event_recorded", event_name=body["metadata"]["name"], type=key.type,
                  reason=key.reason)

    def _build(self, obj: Mapping[str, Any], key: _Key, timestamp: str) -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        involved: dict[str, Any] = {
            "apiVersion": key.api_version,
            "kind": key.kind,
            "name": key.name,
            "namespace": key.namespace or None,
            "uid": key.uid or None,
            "resourceVersion": meta.get("resourceVersion"),
        }
        source: dict[str, Any] = {"component": self._component}
        if self._host:
            source["host"] = self._host
        event: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                # client-go's naming: <object name>.<hex nanoseconds>
                "name": f"{key.name}.{time.time_ns():x}",
                "namespace": key.namespace or "default",
            },
            "involvedObject": {k: v for k, v in involved.items() if v},
            "type": key.type,
            "reason": key.reason,
            "message": key.message,
            "count": 1,
            "firstTimestamp": timestamp,
            "lastTimestamp": timestamp,
            "source": source,
            "reportingComponent": self._component,
            "reportingInstance": self._host or "",
        }
        return event


def _timestamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
