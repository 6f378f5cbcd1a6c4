"""Hashes the Canary status compares: tracked config checksums and the target's spec hash.

Two different promises, so two different functions:

* :func:`config_checksum` must equal Flagger's, byte for byte. ``status.trackedConfigs`` is
  ``"configmap/<name>" -> first 8 bytes of sha256(json.Marshal(data))`` in hex, and a Canary moved
  from Flagger to flaggerpy (or back) must not see every ConfigMap as changed. Go's
  ``encoding/json`` differs from Python's ``json`` in three ways that matter here, all handled by
  :func:`go_json`: it writes no spaces, it sorts map keys, and it escapes ``<``, ``>``, ``&``,
  U+2028 and U+2029 (HTML-safe output). A nil map marshals as ``null``.
* :func:`template_hash` is what the lifecycle writes as ``status.lastAppliedSpec``. Flagger's is
  FNV-32a over a go-spew dump of a Go struct, which cannot be reproduced from JSON; only
  equality matters (spec §10.8), so ours is a stable sha256 of the canonical JSON instead.

:func:`content_id` turns content into a UUID-shaped identifier; the primary's ``flagger-id``
template annotation is one (see ``workloads.py`` for why it is derived, not random).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

_GO_HTML_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_GO_ESCAPE_TABLE = str.maketrans(_GO_HTML_ESCAPES)


def go_json(value: Any) -> str:
    """``value`` encoded exactly as Go's ``json.Marshal`` encodes the same data.

    Sorted keys, no whitespace, non-ASCII kept as UTF-8, control characters as ``\\n``,
    ``\\t``, ``\\b``, ``\\f``, ``\\r`` or ``\\u00xx`` (lower-case hex, as Go writes them), and
    Go's HTML escapes. The escaped characters can only occur inside strings in JSON text, so
    translating the whole text is safe.
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.translate(_GO_ESCAPE_TABLE)


def config_checksum(data: Any) -> str:
    """Flagger's checksum of a ConfigMap's or Secret's ``data``: 16 hex characters.

    Pass ``data`` as the API server sends it (Secret values base64-encoded, which is also how
    Go marshals ``[]byte``), or None when the object has no data (Go: a nil map, ``null``).
    """
    return hashlib.sha256(go_json(data).encode()).digest()[:8].hex()


def canonical_json(value: Any) -> str:
    """A deterministic JSON text of ``value``: sorted keys, no whitespace."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def template_hash(template: Any) -> str:
    """A stable hash of a pod template (or any JSON value): 16 hex characters.

    Stable across processes and versions of flaggerpy: it depends only on the JSON content,
    never on dict order or on Python's randomized ``hash``.
    """
    return hashlib.sha256(canonical_json(template).encode()).digest()[:8].hex()


def is_template_hash(value: str) -> bool:
    """Whether ``value`` has the form of :func:`template_hash` (Flagger's hashes never do).

    Flagger's are ``rand.SafeEncodeString`` of a decimal uint32: at most 10 characters.
    """
    return len(value) == 16 and all(c in "0123456789abcdef" for c in value)


def content_id(*parts: Any) -> str:
    """A UUID (version-4 layout) derived from ``parts``: equal content, equal identifier."""
    digest = hashlib.sha256(canonical_json(list(parts)).encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))
