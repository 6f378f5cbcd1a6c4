"""Log configuration: one format for every line the process writes.

``configure()`` is called once, by the CLI, before anything logs. After it:

- structlog loggers (``log = structlog.get_logger(__name__)``) and stdlib
  loggers (aiohttp, kubernetes_asyncio) go through the same processors and the
  same handler, so a line from a library looks like a line from us;
- context bound with ``structlog.contextvars.bound_contextvars`` (the work
  queue binds the reconcile's key) is merged into every line of that task;
- values that look like credentials are masked before rendering (design
  rule 6: secrets never reach a log line), see :func:`redact`.

In the cluster the lines are JSON with zap's key names (``ts``, ``level``,
``logger``, ``msg``) so log pipelines built for Flagger keep working; on a
terminal they are rendered for people. Per-canary lines carry
``canary="<name>.<namespace>"`` as Flagger's do (:func:`bound_canary`).

Tests should use ``structlog.testing.capture_logs()`` rather than this module.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, Final, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from flaggerpy.errors import ConfigError

__all__ = [
    "LEVELS",
    "bound_canary",
    "canary_id",
    "configure",
    "redact",
    "safe_url",
    "wants_json",
]

LEVELS: Final[Mapping[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL,
    "critical": logging.CRITICAL,
}
"""Zap's level names (what ``-log-level`` takes) and Python's, mapped to stdlib levels."""

# Libraries whose lower levels must stay off whatever -log-level says:
# kubernetes_asyncio logs whole response bodies (Secrets included) at debug,
# and aiohttp's access log would print every /healthz probe.
_LIBRARY_FLOORS: Final[Mapping[str, int]] = {
    "kubernetes_asyncio": logging.INFO,
    "aiohttp.access": logging.WARNING,
}

REDACTED: Final = "***"

_SENSITIVE_WORDS: Final = frozenset({
    "password", "passwd", "token", "secret", "authorization", "api_key", "apikey",
    "credentials", "cookie",
})
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s\"'<>]+@")
_URL_SECRET_QUERY = re.compile(
    r"(?P<key>[?&](?:token|access_token|api_key|apikey|key|password|secret|sig|signature)=)"
    r"[^&\s#\"'<>]+",
    re.IGNORECASE,
)
# Webhook URLs whose path *is* the credential (Slack, Discord, Teams, Rocket.Chat).
_URL_SECRET_PATH = re.compile(
    r"(?P<base>https?://(?:hooks\.slack\.com|(?:[\w-]+\.)?discord(?:app)?\.com"
    r"|[\w.-]*webhook\.office\.com|outlook\.office(?:365)?\.com)/)[^\s\"'<>]+"
    r"|(?P<hooks>/hooks/)[^\s\"'<>?#]+",
    re.IGNORECASE,
)
_MARK: Final = "_flaggerpy_handler"


def configure(*, json: bool, level: str, stream: TextIO | None = None) -> None:
    """Sets up structlog and the stdlib root logger to write one format to ``stream``.

    ``json`` picks the JSON renderer (cluster) or the console renderer
    (terminal); :func:`wants_json` turns ``-zap-encoding`` into it. ``level``
    is a zap or Python level name; an unknown one raises ``ConfigError``.
    ``stream`` defaults to stderr, where Flagger's zap logger writes. Calling
    it again replaces the previous configuration.
    """
    try:
        threshold = LEVELS[level.strip().lower()]
    except KeyError:
        names = ", ".join(sorted(LEVELS))
        raise ConfigError(f"unknown log level {level!r}; use one of {names}") from None

    timestamp_key = "ts" if json else "timestamp"
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key=timestamp_key),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redact,
    ]
    output = stream if stream is not None else sys.stderr
    final: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if json:
        final += [
            structlog.processors.EventRenamer("msg"),
            _zap_key_order,
            structlog.processors.JSONRenderer(),
        ]
    else:
        final += [structlog.dev.ConsoleRenderer(colors=_isatty(output))]

    handler = logging.StreamHandler(output)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared, processors=final))
    setattr(handler, _MARK, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(threshold)
    for name, floor in _LIBRARY_FLOORS.items():
        logging.getLogger(name).setLevel(max(threshold, floor))

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        context_class=dict,
        # Off on purpose: cached loggers ignore a later configure() and break
        # capture_logs() in tests; the saving is a dict copy per log call.
        cache_logger_on_first_use=False,
    )


def wants_json(encoding: str, *, stream: TextIO | None = None) -> bool:
    """Resolves ``-zap-encoding``: ``json``, ``console``, or ``auto`` (JSON unless a TTY)."""
    match encoding.strip().lower():
        case "json":
            return True
        case "console":
            return False
        case "auto":
            return not _isatty(stream if stream is not None else sys.stderr)
        case other:
            raise ConfigError(f"unknown log encoding {other!r}; use json, console or auto")


def canary_id(name: str, namespace: str) -> str:
    """Flagger's way of naming a canary in logs and alerts: ``<name>.<namespace>``."""
    return f"{name}.{namespace}"


def bound_canary(name: str, namespace: str) -> AbstractContextManager[None]:
    """Adds ``canary="<name>.<namespace>"`` to every line logged inside the block.

    It binds a context variable, so it covers everything the current task
    calls (routers, providers, notifiers) without passing a logger down.
    """
    return structlog.contextvars.bound_contextvars(canary=canary_id(name, namespace))


def redact(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Masks credentials in a log entry before it is rendered.

    - a value whose key names a credential (``password``, ``token``,
      ``secret``, ``authorization``, ``api_key``, ``credentials``,
      ``cookie``, or ``*_token``, ``*-password``...) becomes ``***``, at any
      depth of nested dicts and lists; ``secret_name`` or ``secret_ref`` are
      names, not credentials, and are kept;
    - in every string, URL user-info (``https://user:pass@host``), credential
      query parameters (``?token=``, ``&sig=``...) and the path of webhook
      URLs whose path is the key (Slack, Discord, Teams, Rocket.Chat) are
      masked.

    It is a safety net, not a licence: code should not log credentials, and
    should log endpoints through :func:`safe_url`.
    """
    return {key: _scrub(key, value) for key, value in event_dict.items()}


def safe_url(url: str) -> str:
    """``scheme://host[:port]/…`` only: how to log an endpoint that may embed credentials.

    Flagger logs the first 30 characters of a notifier URL for the same
    reason; this keeps what identifies the endpoint and drops the rest.
    """
    match = re.match(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^/@\s]*@)?(?P<host>[^/?#\s]*)",
                     url)
    if match is None:
        return REDACTED
    rest = url[match.end():]
    return f"{match['scheme']}{match['host']}" + ("/…" if rest.strip("/") else "")


def _zap_key_order(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Puts ``ts``, ``level``, ``logger``, ``msg`` first, as zap does, so lines scan alike."""
    head = {key: event_dict.pop(key) for key in _ZAP_HEAD if key in event_dict}
    return {**head, **event_dict}


_ZAP_HEAD: Final = ("ts", "level", "logger", "msg")


def _sensitive(key: str) -> bool:
    normal = key.lower().replace("-", "_")
    return any(normal == word or normal.endswith("_" + word) for word in _SENSITIVE_WORDS)


def _scrub(key: Any, value: Any, depth: int = 0) -> Any:
    if isinstance(key, str) and _sensitive(key) and value not in (None, ""):
        return REDACTED
    if depth > 8:
        return value
    if isinstance(value, str):
        return _scrub_text(value)
    if isinstance(value, Mapping):
        return {k: _scrub(k, v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(None, item, depth + 1) for item in value]
    if isinstance(value, tuple):
        return tuple(_scrub(None, item, depth + 1) for item in value)
    return value


def _scrub_text(text: str) -> str:
    if "://" not in text and "?" not in text and "/hooks/" not in text:
        return text
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    text = _URL_SECRET_QUERY.sub(lambda m: f"{m['key']}{REDACTED}", text)
    return _URL_SECRET_PATH.sub(lambda m: f"{m['base'] or m['hooks']}{REDACTED}", text)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False
