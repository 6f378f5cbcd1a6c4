"""The load tester's configuration: one frozen object built at start-up, from flags and environment.

Flagger's ``flagger-loadtester`` binary takes ``-port``, ``-timeout``,
``-namespace-regexp``, ``-log-level``, ``-zap-encoding`` and
``-zap-replace-globals``; those keep their names, meanings and defaults
here (except ``-log-level``, ``info`` rather than ``debug``), so a chart's
``args`` still start the process. The rest are flaggerpy's safety options.

Where a value comes from, highest first: a flag (``-timeout=30m``, ``--timeout 30m``), the
environment variable named in :data:`OPTIONS` (``FLAGGERPY_LOADTESTER_TIMEOUT``), the default.
An empty variable counts as unset. The port's variable is
``FLAGGERPY_LOADTESTER_HTTP_PORT``, not ``..._PORT``: Kubernetes injects
``<SERVICE>_PORT=tcp://...`` into pods for every Service, and a Service named
``flaggerpy-loadtester`` would otherwise set the port to garbage.

Durations are Go's (``90s``, ``1h30m``), as everywhere in Flagger.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final

from flaggerpy.errors import ConfigError

__all__ = ["ENV_PREFIX", "OPTIONS", "TOKEN_ENV", "LoadTesterSettings", "Option"]

ENV_PREFIX: Final = "FLAGGERPY_LOADTESTER_"
TOKEN_ENV: Final = ENV_PREFIX + "TOKEN"
"""Also read by ``flaggerpy gate``, and removed from the environment of every task."""


@dataclass(frozen=True, slots=True)
class LoadTesterSettings:
    """Everything ``flaggerpy loadtester`` can be told; defaults live here and nowhere else."""

    host: str = "0.0.0.0"
    """Address to listen on."""
    port: int = 9090
    """Port to listen on (Flagger's binary default; its chart uses 8080). 0 picks a free port."""
    timeout: float = 3600.0
    """Longest a task may run, in seconds (Flagger's ``-timeout``, 1h); also the ceiling of a
    task's own ``timeout``."""
    namespace_regexp: str = ""
    """Only canaries in namespaces matching this (unanchored) regexp are served; others get
    403. Empty: all namespaces."""
    token: str = field(default="", repr=False)
    """If set, every request but ``/healthz`` and ``/metrics`` must carry it, as
    ``Authorization: Bearer <token>`` or as the password of Basic auth."""
    allow_commands: tuple[str, ...] = ()
    """If not empty, a task runs only if its command line starts with one of these, compared
    word by word (``hey``, ``helm test``, ``kubectl get``). ``bash`` allows any bash script."""
    max_output_bytes: int = 65536
    """A task's output kept for the log and the response: the last this many bytes."""
    max_body_bytes: int = 262144
    """Largest request body accepted; larger ones get 413."""
    helm: str = "helm"
    """The helm binary for ``helm`` and ``helmv3`` tasks: a name looked up on PATH, or a path."""
    kubectl: str = "kubectl"
    """The kubectl binary for ``kubectl`` tasks."""
    kill_grace: float = 5.0
    """Seconds between SIGTERM and SIGKILL when a task's process group is stopped."""
    result_ttl: float = 600.0
    """Seconds a blocking task's result is kept for retries of the same webhook call
    (``X-Flaggerpy-Delivery``)."""
    log_level: str = "info"
    """zap or Python level name."""
    log_encoding: str = "json"
    """``json``, ``console`` or ``auto`` (Flagger's ``-zap-encoding``)."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"-port: {self.port} is not a TCP port")
        for name in ("timeout", "kill_grace", "result_ttl"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"-{_FLAG_OF[name]}: must be positive")
        for name in ("max_output_bytes", "max_body_bytes"):
            if getattr(self, name) < 1024:
                raise ConfigError(f"-{_FLAG_OF[name]}: must be at least 1024 bytes")
        if self.namespace_regexp:
            try:
                re.compile(self.namespace_regexp)
            except re.error as exc:
                raise ConfigError(f"-namespace-regexp: invalid regexp: {exc}") from None
        if any(not prefix.split() for prefix in self.allow_commands):
            raise ConfigError("-allow-command: an empty prefix would allow everything")

    @classmethod
    def load(
            cls,
            flags: Mapping[str, str] | None = None,  # flag name (no dashes) -> value as typed
            *,
            environ: Mapping[str, str] | None = None,  # None: os.environ
            **overrides: Any,  # field values, highest precedence (tests)
    ) -> LoadTesterSettings:
        """Builds the settings from flags, then environment, then defaults.

        A value that does not parse raises ``ConfigError`` naming the flag
        and the variable, so the CLI can exit 2 with it.
        """
        if environ is None:
            environ = os.environ
        given = dict(flags or {})
        values: dict[str, Any] = {}
        for option in OPTIONS:
            raw = given.pop(option.flag, None)
            source = f"-{option.flag}"
            if raw is None:
                raw = environ.get(option.env) or None
                source = f"${option.env}"
            if raw is None or option.field is None:
                continue
            try:
                values[option.field] = option.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{source}: {exc}") from None
        if given:
            raise ConfigError(f"unknown loadtester flag -{sorted(given)[0]}")
        values.update(overrides)
        return cls(**values)

    def describe(self) -> dict[str, Any]:
        """The settings for a start-up log line: whether a token is set, never the token."""
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "token"}
        shown["token_set"] = bool(self.token)  # not "token": logs.redact would mask the bool
        return shown


def _positive_int(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None
    if value < 0:
        raise ValueError(f"{text!r} is negative")
    return value


def _duration(text: str) -> float:
    # Imported here: the CLI builds its parser from OPTIONS for every command, and the
    # models package (pydantic) is not needed to print `flaggerpy version`.
    from flaggerpy.models.durations import parse_duration

    return parse_duration(text.strip())


def _prefixes(text: str) -> tuple[str, ...]:
    """Comma-separated in the environment; a repeated flag arrives here already joined by commas."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _ignored(text: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Option:
    """One flag of ``flaggerpy loadtester``: its settings field, variable, parser and help."""

    flag: str
    field: str | None  # None: accepted for Flagger compatibility, no effect
    parse: Callable[[str], Any]
    help: str
    flagger: bool = False  # Flagger's loadtester has this flag too
    is_bool: bool = False
    repeatable: bool = False
    env_name: str = ""

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return ENV_PREFIX + (self.env_name or self.flag.upper().replace("-", "_"))


OPTIONS: Final[tuple[Option, ...]] = (
    Option("port", "port", _positive_int, "port to listen on (default 9090; the chart uses 8080)",
           flagger=True, env_name="HTTP_PORT"),
    Option("host", "host", str.strip, "address to listen on (default 0.0.0.0)"),
    Option("timeout", "timeout", _duration,
           "longest a task may run, a Go duration (default 1h); also caps a task's "
           "metadata.timeout",
           flagger=True),
    Option("namespace-regexp", "namespace_regexp", str.strip,
           "serve only canaries in namespaces matching this regexp (others: 403)", flagger=True),
    Option("token", "token", str.strip,
           "require this bearer token on every endpoint but /healthz and /metrics; prefer the "
           "environment variable, flags show in the process list"),
    Option("allow-command", "allow_commands", _prefixes,
           "run only commands starting with this prefix, word by word (repeat the flag; "
           "comma-separated in the environment); 'bash' allows bash scripts, 'sh' cmd lines "
           "with shell syntax",
           repeatable=True, env_name="ALLOW_COMMANDS"),
    Option("max-output-bytes", "max_output_bytes", _positive_int,
           "keep at most this many bytes of a task's output, the last ones (default 65536)"),
    Option("max-body-bytes", "max_body_bytes", _positive_int,
           "reject request bodies larger than this with 413 (default 262144)"),
    Option("helm", "helm", str.strip,
           "helm binary for helm/helmv3 tasks, a name on PATH or a path (default helm)"),
    Option("kubectl", "kubectl", str.strip, "kubectl binary for kubectl tasks (default kubectl)"),
    Option("kill-grace", "kill_grace", _duration,
           "time between SIGTERM and SIGKILL when a timed-out task's process group is "
           "stopped (default 5s)"),
    Option("result-ttl", "result_ttl", _duration,
           "how long a blocking task's result answers retries of the same webhook call "
           "(X-Flaggerpy-Delivery header; default 10m)"),
    Option("log-level", "log_level", str.strip,
           "log level: debug, info, warn, error (default info)", flagger=True),
    Option("zap-encoding", "log_encoding", str.strip,
           "log encoding: json, console or auto (default json)", flagger=True),
    Option("zap-replace-globals", None, _ignored, "accepted for compatibility; no effect",
           flagger=True, is_bool=True),
)
"""Every flag, in the order ``--help`` lists them."""

_FLAG_OF: Final[Mapping[str, str]] = {o.field: o.flag for o in OPTIONS if o.field is not None}
