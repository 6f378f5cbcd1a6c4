"""What a webhook asks the load tester to run: from payload metadata to a checked command line.

This module is pure (no process is started here): :func:`plan_task` reads
the webhook metadata as Flagger's load tester does and either returns a
:class:`TaskSpec` or raises :class:`~flaggerpy.loadtester.payload.RequestRejected`
with the status and message to answer. Task types, as in Flagger:

====================  ==========  ===============================================
``metadata.type``     mode        runs
====================  ==========  ===============================================
``cmd`` (default)     background  ``sh -c <cmd>``
``bash``              blocking    ``bash -c <cmd>``
``helm``, ``helmv3``  blocking    ``helm <cmd split on whitespace>``
``kubectl``           blocking    ``kubectl <cmd split on whitespace>``
``concord``,          refused     400: not supported by this load tester
``ngrinder``
anything else         refused     400: unknown task type (Flagger's crashed)
====================  ==========  ===============================================

Background tasks answer 202 at once; blocking ones answer 200 when the
command exits 0, 500 with its output otherwise.

``cmd`` runs under ``sh -c`` as Flagger's does, so a manifest written for
Flagger (a pipe, ``&&``, ``$VAR`` in its ``cmd``) means the same here. What
the shell would interpret is found by :func:`shell_syntax`, for two reasons:
a plain command line has its executable checked before the 202 (Flagger's
answers 202 and fails unseen), and an allowlist cannot bound a shell line by
its first words (``hey x; rm -rf /`` starts with ``hey``), so under one a
line with shell syntax is compared as ``sh <line>`` and runs only if ``sh``
itself is allowed, as ``bash`` tasks need ``bash``.

Other checks, each a 4xx naming the problem: ``metadata.cmd`` present; the
executable exists; the command line starts with an allowed prefix when an
allowlist is configured (403); ``metadata.timeout`` is a Go duration.
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from flaggerpy.loadtester.payload import RequestRejected, WebhookPayload, parse_bool
from flaggerpy.models.durations import format_duration, parse_duration

if TYPE_CHECKING:
    from flaggerpy.loadtester.config import LoadTesterSettings

__all__ = [
    "BLOCKING_TYPES",
    "TASK_TYPES",
    "TaskPolicy",
    "TaskSpec",
    "plan_task",
    "shell_syntax",
]

CMD: Final = "cmd"
BASH: Final = "bash"
HELM: Final = "helm"
HELMV3: Final = "helmv3"
KUBECTL: Final = "kubectl"

TASK_TYPES: Final = (BASH, CMD, HELM, HELMV3, KUBECTL)
"""Every task type this load tester runs."""
BLOCKING_TYPES: Final = frozenset({BASH, HELM, HELMV3, KUBECTL})
"""The types whose request waits for the command to finish (all but ``cmd``)."""

_UNSUPPORTED: Final = {
    "concord": "it calls a Concord server, not a command; run the Concord CLI from a "
               "'bash' task, or keep Flagger's load tester for it",
    "ngrinder": "it drives an nGrinder controller, not a command; start the test from a "
                "'bash' task with curl, or keep Flagger's load tester for it",
}

_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_OPERATORS: Final = "|&;<>()`\n"
SHELL: Final = "sh"
_SHELL_BUILTINS: Final = frozenset({
    ".", ":", "alias", "break", "cd", "command", "continue", "eval", "exec", "exit", "export",
    "read", "readonly", "return", "set", "shift", "times", "trap", "type", "ulimit", "umask",
    "unset", "wait",
})
"""Words ``sh`` runs itself: a line starting with one needs only ``sh`` on the PATH."""


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A checked task, ready to run."""

    kind: str  # one of TASK_TYPES
    command: str  # metadata.cmd as given
    argv: tuple[str, ...]  # what is executed; argv[0] is the binary as configured
    canary: str  # <name>.<namespace>
    checksum: str = ""  # the payload's revision checksum
    blocking: bool = False
    timeout: float = 3600.0  # seconds
    log_output: bool = False
    return_output: bool = False
    notes: tuple[str, ...] = field(default=(), compare=False)  # warnings to log, e.g. bad bools

    @property
    def key(self) -> tuple[str, ...]:
        """Identity of a run, for deduplication.

        Background: canary + type + command, as Flagger (``hash(canary + cmd)``):
        an identical task is not started again while one runs. Blocking: the
        revision checksum too, so a retried webhook for the same revision joins
        the run in progress, while a new revision starts its own.
        """
        if self.blocking:
            return ("blocking", self.canary, self.kind, self.command, self.checksum)
        return ("background", self.canary, self.kind, self.command)

    @property
    def display(self) -> str:
        """The command line as a person would type it, for logs and messages."""
        return self.command if self.kind == CMD else f"{self.kind} {self.command}"


@dataclass(frozen=True, slots=True)
class TaskPolicy:
    """The settings that decide whether and how a task runs."""

    timeout: float = 3600.0
    allow_commands: tuple[str, ...] = ()
    helm: str = "helm"
    kubectl: str = "kubectl"
    which: Callable[[str], str | None] = shutil.which  # executable lookup; tests may replace it

    @classmethod
    def from_settings(cls, settings: LoadTesterSettings) -> TaskPolicy:
        """The policy of a configured load tester."""
        return cls(timeout=settings.timeout, allow_commands=settings.allow_commands,
                   helm=settings.helm, kubectl=settings.kubectl)


def plan_task(payload: WebhookPayload, policy: TaskPolicy) -> TaskSpec:
    """Reads a task from the webhook metadata; raises ``RequestRejected`` if it must not run."""
    metadata = payload.metadata
    if not metadata:
        raise RequestRejected(400, "metadata not found in payload")  # Flagger's words
    kind = metadata.get("type", CMD)
    if kind in _UNSUPPORTED:
        raise RequestRejected(
            400, f"task type {kind!r} is not supported by flaggerpy loadtester: "
                 f"{_UNSUPPORTED[kind]}")
    if kind not in TASK_TYPES:
        raise RequestRejected(
            400, f"unknown task type {kind!r}; supported: {', '.join(TASK_TYPES)}")
    command = metadata.get("cmd", "")
    if not command.strip():
        raise RequestRejected(400, f"metadata.cmd is required for a {kind!r} task")

    line = _command_line(kind, command, policy)
    if policy.allow_commands and not _allowed(line.words, policy.allow_commands):
        allowed = ", ".join(repr(prefix) for prefix in policy.allow_commands)
        why = (f"; it uses shell syntax ({line.syntax}), so it runs only if {SHELL!r} is allowed"
               if line.syntax else "")
        raise RequestRejected(
            403, f"command not allowed: {' '.join(line.words)!r} does not start with an allowed "
                 f"prefix ({allowed}){why}")
    if policy.which(line.executable) is None:
        raise RequestRejected(
            400, f"cannot run {kind!r} task: executable {line.executable!r} not found on the "
                 f"load tester's PATH")

    notes: list[str] = []
    blocking = kind in BLOCKING_TYPES
    return TaskSpec(
        kind=kind,
        command=command,
        argv=line.argv,
        canary=payload.canary,
        checksum=payload.checksum,
        blocking=blocking,
        timeout=_timeout(metadata.get("timeout"), policy.timeout, notes),
        # Flagger always logs a blocking task's output, and a cmd task's only if asked.
        log_output=_flag(metadata, "logCmdOutput", default=blocking, notes=notes),
        return_output=_flag(metadata, "returnCmdOutput", default=False, notes=notes),
        notes=tuple(notes),
    )


def shell_syntax(command: str) -> str | None:
    """The first piece of shell syntax in ``command`` outside single quotes, or ``None``.

    Finds what ``sh`` would interpret as more than one plain command: the
    operators ``| & ; < > ( )``, a newline, backquotes and ``$``
    (expansions, also inside double quotes), and a leading ``NAME=value``
    assignment. Globs and ``~`` are not counted: they only add arguments.
    Backslash escapes and quotes are honoured, so ``'a|b'``, ``"a;b"`` and
    ``a\\|b`` are plain words.
    """
    first_word = command.lstrip().split(maxsplit=1)[0] if command.strip() else ""
    if _ENV_ASSIGNMENT.match(first_word):
        return f"{first_word.split('=', 1)[0]}=... (a variable assignment)"
    quote = ""
    escaped = False
    for index, char in enumerate(command):
        if escaped:
            escaped = False
        elif quote == "'":
            if char == "'":
                quote = ""
        elif char == "\\":
            escaped = True
        elif quote == '"':
            if char == '"':
                quote = ""
            elif char in "$`":
                return _describe(command, index)
        elif char in "'\"":
            quote = char
        elif char in _OPERATORS or char == "$":
            return _describe(command, index)
    return None


def _describe(command: str, index: int) -> str:
    char = command[index]
    pair = command[index:index + 2]
    if pair in ("&&", "||", ">>", "<<", "$(", "${"):
        return pair
    return char


@dataclass(frozen=True, slots=True)
class _CommandLine:
    argv: tuple[str, ...]  # what is executed
    words: tuple[str, ...]  # what the allowlist compares (binary names as typed)
    executable: str  # what must be on the PATH
    syntax: str | None = None  # the shell syntax in a cmd line, if any


def _command_line(kind: str, command: str, policy: TaskPolicy) -> _CommandLine:
    if kind == CMD:
        argv = (SHELL, "-c", command)  # Flagger's exec.Command("sh", "-c", cmd)
        syntax = shell_syntax(command)
        if syntax is not None:
            return _CommandLine(argv, (SHELL, *command.split()), SHELL, syntax)
        try:
            words = tuple(shlex.split(command))
        except ValueError as exc:  # sh would fail on it too, after a 202
            raise RequestRejected(400, f"cmd {command!r} cannot be split into words: {exc}"
                                  ) from None
        return _CommandLine(argv, words, SHELL if words[0] in _SHELL_BUILTINS else words[0])
    if kind == BASH:
        return _CommandLine(("bash", "-c", command), ("bash", *command.split()), "bash")
    fields = tuple(command.split())  # Go's strings.Fields, as Flagger: no quoting
    binary = policy.helm if kind in (HELM, HELMV3) else policy.kubectl
    name = HELM if kind in (HELM, HELMV3) else KUBECTL
    return _CommandLine((binary, *fields), (name, *fields), binary)


def _allowed(words: Sequence[str], prefixes: Sequence[str]) -> bool:
    for prefix in prefixes:
        wanted = prefix.split()
        if wanted and list(words[:len(wanted)]) == wanted:
            return True
    return False


def _timeout(text: str | None, ceiling: float, notes: list[str]) -> float:
    if text is None or not text.strip():
        return ceiling
    try:
        seconds = parse_duration(text.strip())
    except ValueError:
        raise RequestRejected(
            400, f"metadata.timeout {text!r} is not a duration (use Go's form: 30s, 5m, 1h)"
        ) from None
    if seconds <= 0:
        raise RequestRejected(400, f"metadata.timeout {text!r} must be positive")
    if seconds > ceiling:
        notes.append(f"metadata.timeout {text} exceeds the load tester's -timeout; "
                     f"using {format_duration(ceiling)}")
        return ceiling
    return seconds


def _flag(metadata: Mapping[str, str], key: str, *, default: bool, notes: list[str]) -> bool:
    text = metadata.get(key)
    if text is None:
        return default
    value = parse_bool(text)
    if value is None:
        notes.append(f"metadata.{key} {text!r} is not a boolean; treated as false, as Flagger does")
        return False
    return value
