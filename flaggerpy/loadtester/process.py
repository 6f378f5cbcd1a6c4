"""Running one command without blocking the loop, and without leaving anything behind.

Each command runs in a new session, hence its own process group, so that
stopping it stops what it started too (``hey`` workers, the pods'
``kubectl`` of a ``helm test``, a script's background jobs):

- on timeout the whole group gets SIGTERM, then SIGKILL after a grace
  period (Flagger kills only the direct child; its children live on);
- when the command exits, whatever it left running in its group is killed,
  so no orphan keeps the output pipe open or outlives the task;
- when the caller is cancelled (the load tester is shutting down), the
  group is killed at once and the cancellation goes on.

Output (stdout and stderr interleaved, as Go's ``CombinedOutput``) is read
while the command runs, and only the last ``max_output`` bytes are kept: a
chatty load generator costs a bounded amount of memory whatever it prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["CommandResult", "OutputTail", "run_command"]

_CHUNK: Final = 65536
_DRAIN_TIMEOUT: Final = 2.0  # seconds to collect the last output once the group is gone
_POLL_INTERVAL: Final = 0.02  # seconds between checks for the command's exit


class OutputTail:
    """The last ``limit`` bytes of a stream, and how many bytes there were in all."""

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("limit must be positive")
        self._limit = limit
        self._buffer = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        """Appends ``chunk``, dropping the oldest bytes beyond the limit."""
        self.total += len(chunk)
        self._buffer += chunk
        excess = len(self._buffer) - self._limit
        if excess > 0:
            del self._buffer[:excess]

    @property
    def dropped(self) -> int:
        """How many bytes were produced but not kept."""
        return self.total - len(self._buffer)

    def text(self) -> str:
        """The kept bytes as text (invalid UTF-8 replaced), marked if the start was dropped."""
        text = bytes(self._buffer).decode("utf-8", errors="replace")
        if self.dropped:
            return f"[... {self.dropped} earlier bytes dropped ...]\n{text}"
        return text


@dataclass(frozen=True, slots=True)
class CommandResult:
    """How a command ended."""

    argv: tuple[str, ...]
    exit_code: int | None  # None: it never started; negative: killed by that signal
    output: str  # the kept tail, see OutputTail.text
    output_bytes: int  # everything it printed
    duration: float  # seconds
    timed_out: bool = False
    timeout: float = 0.0
    error: str = ""  # why it could not be started

    @property
    def ok(self) -> bool:
        """Exited 0 in time."""
        return self.exit_code == 0 and not self.timed_out and not self.error

    @property
    def reason(self) -> str:
        """Why it failed, worded as Go's ``exec`` errors where there is an equivalent."""
        if self.error:
            return self.error
        if self.timed_out:
            return (f"timed out after {self.timeout:g}s; its process group was stopped "
                    f"({_exit_text(self.exit_code)})")
        return _exit_text(self.exit_code)


async def run_command(
        argv: Sequence[str],
        *,
        time_limit: float,  # seconds; not asyncio.timeout: expiry must stop the process group
        kill_grace: float = 5.0,  # seconds between SIGTERM and SIGKILL on timeout
        max_output: int = 65536,  # bytes of output kept
        env: Mapping[str, str] | None = None,  # None: inherit
) -> CommandResult:
    """Runs ``argv`` (no shell) to completion or ``time_limit``; see the module docstring."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    tail = OutputTail(max_output)
    command = tuple(argv)
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # own session and process group: see module docstring
            env=dict(env) if env is not None else None,
        )
    except OSError as exc:
        return CommandResult(command, None, "", 0, loop.time() - started,
                             error=f"cannot start {command[0]}: {exc.strerror or exc}")
    assert process.stdout is not None
    reader = asyncio.create_task(_read(process.stdout, tail), name=f"output:{process.pid}")
    timed_out = False
    try:
        try:
            async with asyncio.timeout(time_limit):
                await _exit(process)
        except TimeoutError:
            timed_out = True
            await _stop_group(process, kill_grace)
    finally:
        # Cancelled (shutdown): no grace. Either way, anything the command left in its
        # group (background jobs) goes with it.
        _signal_group(process.pid, signal.SIGKILL)
        if process.returncode is None:
            # Reap it before letting go: SIGKILL makes this quick, and a child dropped
            # unreaped is a zombie until asyncio's watcher gets to it.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_DRAIN_TIMEOUT):
                    await _exit(process)
        await _drain(reader)
    return CommandResult(
        command, process.returncode, tail.text(), tail.total, loop.time() - started,
        timed_out=timed_out, timeout=time_limit,
    )


async def _read(stream: asyncio.StreamReader, tail: OutputTail) -> None:
    while chunk := await stream.read(_CHUNK):
        tail.feed(chunk)


async def _drain(reader: asyncio.Task[None]) -> None:
    """Waits briefly for the rest of the output; a descendant that escaped the group
    (``setsid``) may hold the pipe open, and must not hold the task too."""
    try:
        await asyncio.wait({reader}, timeout=_DRAIN_TIMEOUT)
    finally:
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def _exit(process: asyncio.subprocess.Process) -> None:
    """Waits for the command itself to exit.

    Not ``process.wait()``: asyncio's resolves only once the output pipe is
    closed too, which a background job the command started can delay
    forever; ``returncode`` is set as soon as the process is reaped.
    """
    while process.returncode is None:  # noqa: ASYNC110 - no public exit event to await
        await asyncio.sleep(_POLL_INTERVAL)


async def _stop_group(process: asyncio.subprocess.Process, grace: float) -> None:
    _signal_group(process.pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(grace):
            await _exit(process)
    except TimeoutError:
        _signal_group(process.pid, signal.SIGKILL)
        await _exit(process)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    """Signals the process group led by ``pgid``; a group already gone is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "not started"
    if code >= 0:
        return f"exit status {code}"
    try:
        name = signal.strsignal(-code) or f"signal {-code}"
    except ValueError:
        name = f"signal {-code}"
    return f"signal: {name.lower()}"
