"""The webhook payload Flagger posts, read strictly, with errors a person can act on.

Flagger sends ``{"name", "namespace", "phase", "checksum", "metadata"}``
(``CanaryWebhookPayload``; ``metadata`` is a ``map[string]string`` and is
left out when empty). Flagger's load tester answers a body it cannot decode
with an empty 400; here every refusal is a :class:`RequestRejected` whose
message says what was wrong and what was expected, because that text ends
up in the canary's Events, where someone has to fix the webhook from it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from flaggerpy.errors import FlaggerError

__all__ = ["RequestRejected", "WebhookPayload", "parse_bool", "parse_payload"]

_EXAMPLE: Final = '{"name": "podinfo", "namespace": "test", "metadata": {...}}'


class RequestRejected(FlaggerError):
    """A request the load tester refuses: the HTTP status and the message to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class WebhookPayload:
    """One webhook call, as Flagger's ``CanaryWebhookPayload``."""

    name: str
    namespace: str
    phase: str = ""
    checksum: str = ""  # identifies the canary revision (spec + tracked configs)
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def canary(self) -> str:
        """``<name>.<namespace>``: the key Flagger uses for gates and logs."""
        return f"{self.name}.{self.namespace}"


def parse_payload(body: bytes) -> WebhookPayload:
    """Decodes and checks a request body; raises :class:`RequestRejected` (400) if it is unusable.

    ``name`` and ``namespace`` are required (Flagger always sends them; a
    gate or a task without them would be keyed on ``"."``). Unknown fields
    are ignored, as Go's decoder does.
    """
    if not body.strip():
        raise RequestRejected(400, f"empty request body; expected the webhook payload, {_EXAMPLE}")
    try:
        document = json.loads(body.decode("utf-8"))  # not json.loads(bytes): it guesses UTF-16
    except UnicodeDecodeError:
        raise RequestRejected(400, "request body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise RequestRejected(
            400, f"request body is not valid JSON: {exc.msg} (line {exc.lineno}, "
                 f"column {exc.colno}); expected {_EXAMPLE}") from None
    if not isinstance(document, dict):
        raise RequestRejected(
            400, f"request body must be a JSON object, got {_json_type(document)}; "
                 f"expected {_EXAMPLE}")
    name = _required_string(document, "name", "the canary's name")
    namespace = _required_string(document, "namespace", "the canary's namespace")
    return WebhookPayload(
        name=name,
        namespace=namespace,
        phase=_optional_string(document, "phase"),
        checksum=_optional_string(document, "checksum"),
        metadata=_metadata(document.get("metadata")),
    )


def parse_bool(text: str) -> bool | None:
    """Go's ``strconv.ParseBool``: ``1 t T TRUE true True`` and ``0 f F FALSE false False``.

    Returns ``None`` for anything else; Flagger then treats the flag as
    false, and so do callers here (with a warning).
    """
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


def _required_string(document: Mapping[str, Any], key: str, what: str) -> str:
    value = document.get(key)
    if value is None or value == "":
        raise RequestRejected(400, f'"{key}" is required ({what}); expected {_EXAMPLE}')
    if not isinstance(value, str):
        raise RequestRejected(400, f'"{key}" must be a string, got {_json_type(value)}')
    return value


def _optional_string(document: Mapping[str, Any], key: str) -> str:
    value = document.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RequestRejected(400, f'"{key}" must be a string, got {_json_type(value)}')
    return value


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestRejected(
            400, f'"metadata" must be an object of strings, got {_json_type(value)}')
    metadata: dict[str, str] = {}
    for key, item in value.items():
        if item is None:  # Go decodes null into a map[string]string as ""
            item = ""
        if not isinstance(item, str):
            raise RequestRejected(
                400, f'metadata.{key} must be a string (quote it in the Canary), '
                     f'got {_json_type(item)}')
        metadata[key] = item
    return metadata


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "a string"
    return "null"
