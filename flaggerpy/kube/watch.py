"""Watch events and the decoding of a watch stream.

A watch answers with one JSON object per line: ``{"type": ..., "object": ...}``.
Four types carry objects (``ADDED``, ``MODIFIED``, ``DELETED``, ``BOOKMARK``);
``ERROR`` carries a ``Status``, and is turned into the matching KubeError here
-- most importantly a 410 ``Expired``/``Gone`` into :class:`GoneError`, which
tells an informer its resourceVersion was compacted and it must relist.

The stream itself (one HTTP request, read line by line) lives in the client;
reconnecting and relisting belong to the informer. Keeping the decoding pure
makes it testable without a server.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from flaggerpy.kube import errors
from flaggerpy.kube.objects import JsonObject, resource_version


class EventType(enum.StrEnum):
    """The kinds of watch events that carry an object."""

    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    BOOKMARK = "BOOKMARK"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change seen on a watch. For a BOOKMARK, ``object`` carries only a resourceVersion."""

    type: EventType
    object: JsonObject

    @property
    def resource_version(self) -> str:
        """Where to resume the watch after this event."""
        return resource_version(self.object)


def decode_line(line: bytes | str) -> WatchEvent | None:
    """Decodes one line of a watch stream; None for a blank keep-alive line.

    Raises the KubeError an ERROR event describes, and a KubeError for a line
    that is not a watch event at all (the stream is then unusable).
    """
    text = line.decode("utf-8") if isinstance(line, bytes) else line
    text = text.strip()
    if not text:
        return None
    try:
        raw: Any = json.loads(text)
    except ValueError as exc:
        raise errors.KubeError(0, "MalformedWatchEvent", f"not JSON: {text[:200]!r}") from exc
    if not isinstance(raw, dict):
        raise errors.KubeError(0, "MalformedWatchEvent", f"not an object: {text[:200]!r}")
    kind = raw.get("type")
    obj = raw.get("object")
    if kind == "ERROR" or (kind is None and raw.get("kind") == "Status"):
        status = obj if isinstance(obj, dict) else raw
        raise errors.from_status(status)
    if not isinstance(obj, dict):
        raise errors.KubeError(0, "MalformedWatchEvent", f"no object: {text[:200]!r}")
    try:
        event_type = EventType(str(kind))
    except ValueError as exc:
        raise errors.KubeError(0, "MalformedWatchEvent", f"unknown type {kind!r}") from exc
    return WatchEvent(event_type, obj)
