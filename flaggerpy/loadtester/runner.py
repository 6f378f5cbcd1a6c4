"""Runs planned tasks: background ones deduplicated, blocking ones joined on retry.

Flagger's ``TaskRunner`` polls a map every 100 ms and skips a background
task whose ``hash(canary + cmd)`` is already running; blocking tasks run
inside the HTTP handler, so a webhook retried by the controller (its
client retries on timeouts and 5xx) starts the same ``helm test`` again,
next to the first one.

Here both kinds are asyncio tasks keyed by :attr:`TaskSpec.key`:

- a background task whose key is running is not started again (the request
  still gets 202, as in Flagger);
- a blocking request whose key is running waits for that run's result
  instead of starting another, so a retry, or the next analysis tick while
  a long test still runs, shares the one run. Once a run has finished, the
  same request runs the command again (a failed test is retried on the next
  tick, as in Flagger).

The run belongs to the runner, not to the request: a caller that gives up
(its webhook timeout) does not stop it, and its retry can pick it up.
:meth:`TaskRunner.aclose` kills every running task's process group.

flaggerpy's controller also names each webhook call with an
``X-Flaggerpy-Delivery`` id, the same on every retry of that call and new
for the next analysis interval (``docs/webhooks.md``). A blocking request
that carries one also gets the *finished* run's result for that id (kept
``result_ttl`` seconds), so a retry that arrives just after the run ended
does not run the test a second time. Without the header (Flagger's
controller) a finished run is not replayed.
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from flaggerpy.loadtester.config import TOKEN_ENV
from flaggerpy.loadtester.process import CommandResult, run_command
from flaggerpy.loadtester.tasks import TaskSpec
from flaggerpy.loadtester.telemetry import LoadTesterMetrics

__all__ = ["BlockingOutcome", "TaskRunner", "TaskStopped"]

log = structlog.get_logger(__name__)


class TaskStopped(Exception):
    """A blocking task was stopped before it finished, because the load tester is stopping."""


@dataclass(frozen=True, slots=True)
class BlockingOutcome:
    """What a blocking request gets: the run's result, and how it got it."""

    result: CommandResult
    joined: bool  # shared a run in progress
    replayed: bool = False  # the finished run of the same delivery: nothing was run


_MAX_REMEMBERED = 1024  # finished deliveries kept at most, oldest dropped first


class TaskRunner:
    """Owns every running task; see the module docstring."""

    def __init__(
            self,
            *,
            metrics: LoadTesterMetrics,
            kill_grace: float = 5.0,
            max_output: int = 65536,
            result_ttl: float = 600.0,  # seconds a finished delivery's result is replayed
            env: Mapping[str, str] | None = None,  # None: ours, minus the token variable
    ) -> None:
        self._metrics = metrics
        self._kill_grace = kill_grace
        self._max_output = max_output
        self._result_ttl = result_ttl
        if env is None:
            env = {key: value for key, value in os.environ.items() if key != TOKEN_ENV}
        self._env = dict(env)
        self._running: dict[tuple[str, ...], asyncio.Task[CommandResult]] = {}
        # (delivery id, task key) -> (result, loop time it expires), oldest first
        self._results: OrderedDict[tuple[str, tuple[str, ...]], tuple[CommandResult, float]] = (
            OrderedDict())
        self._closed = False

    @property
    def running(self) -> int:
        """How many tasks are running."""
        return len(self._running)

    def start_background(self, spec: TaskSpec) -> bool:
        """Starts a background task; ``False`` if an identical one is already running."""
        if spec.key in self._running:
            self._metrics.requested(spec.kind, "deduplicated")
            log.info("task_already_running", type=spec.kind, command=spec.display)
            return False
        _ = self._spawn(spec)  # owned by the runner: kept in _running until it ends
        self._metrics.requested(spec.kind, "started")
        return True

    async def run_blocking(self, spec: TaskSpec, *, delivery: str = "") -> BlockingOutcome:
        """Runs a blocking task, or joins the identical run in progress, and returns its result.

        With a ``delivery`` id, a run of the same task that finished for
        that delivery less than ``result_ttl`` ago is answered from memory.
        Raises :class:`TaskStopped` if the run was stopped by :meth:`aclose`.
        Cancelling the caller does not stop the run.
        """
        if delivery:
            replay = self._remembered(delivery, spec.key)
            if replay is not None:
                self._metrics.requested(spec.kind, "replayed")
                log.info("task_result_replayed", type=spec.kind, command=spec.display,
                         delivery=delivery, ok=replay.ok)
                return BlockingOutcome(result=replay, joined=False, replayed=True)
        task = self._running.get(spec.key)
        joined = task is not None
        if task is None:
            task = self._spawn(spec)
            self._metrics.requested(spec.kind, "started")
        else:
            self._metrics.requested(spec.kind, "joined")
            log.info("task_joined", type=spec.kind, command=spec.display,
                     checksum=spec.checksum or None)
        if delivery:
            task.add_done_callback(lambda done: self._remember(delivery, spec.key, done))
        await asyncio.wait({task})  # unlike awaiting it, a cancelled caller spares the run
        if task.cancelled():
            raise TaskStopped("the load tester is shutting down; the task was stopped")
        return BlockingOutcome(result=task.result(), joined=joined)

    def _remember(self, delivery: str, key: tuple[str, ...],
                  task: asyncio.Task[CommandResult]) -> None:
        """Keeps a finished run's result for retries of the same delivery."""
        if task.cancelled() or task.exception() is not None:
            return
        expires = asyncio.get_running_loop().time() + self._result_ttl
        self._results[(delivery, key)] = (task.result(), expires)
        self._results.move_to_end((delivery, key))
        while len(self._results) > _MAX_REMEMBERED:
            self._results.popitem(last=False)

    def _remembered(self, delivery: str, key: tuple[str, ...]) -> CommandResult | None:
        now = asyncio.get_running_loop().time()
        for stale in [k for k, (_, expires) in self._results.items() if expires <= now]:
            del self._results[stale]
        entry = self._results.get((delivery, key))
        return entry[0] if entry is not None else None

    async def aclose(self) -> None:
        """Stops accepting tasks and kills the running ones (their whole process groups)."""
        self._closed = True
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        if tasks:
            log.info("tasks_stopped", count=len(tasks))
            await asyncio.wait(tasks)

    def _spawn(self, spec: TaskSpec) -> asyncio.Task[CommandResult]:
        if self._closed:
            raise TaskStopped("the load tester is shutting down")
        task = asyncio.get_running_loop().create_task(
            self._execute(spec), name=f"task:{spec.canary}:{spec.kind}")
        self._running[spec.key] = task
        task.add_done_callback(lambda done: self._finished(spec, done))
        return task

    def _finished(self, spec: TaskSpec, task: asyncio.Task[CommandResult]) -> None:
        if self._running.get(spec.key) is task:
            del self._running[spec.key]
        if not task.cancelled() and task.exception() is not None:
            log.error("task_crashed", type=spec.kind, command=spec.display,
                      exc_info=task.exception())

    async def _execute(self, spec: TaskSpec) -> CommandResult:
        """One run, with its logs and metrics (context vars, such as the canary, are the
        request's: asyncio copies them into the task)."""
        log.info("task_started", type=spec.kind, command=spec.display,
                 mode="blocking" if spec.blocking else "background", timeout=spec.timeout)
        self._metrics.run_started(spec.kind)
        try:
            result = await run_command(
                spec.argv, time_limit=spec.timeout, kill_grace=self._kill_grace,
                max_output=self._max_output, env=self._env)
        except asyncio.CancelledError:
            self._metrics.run_finished(spec.kind, "stopped", seconds=None)
            log.warning("task_stopped", type=spec.kind, command=spec.display,
                        reason="the load tester is shutting down")
            raise
        outcome = "succeeded" if result.ok else "timed_out" if result.timed_out else "failed"
        self._metrics.run_finished(spec.kind, outcome, seconds=result.duration)
        if spec.log_output or not result.ok:
            log.info("task_output", type=spec.kind, command=spec.display, output=result.output,
                     output_bytes=result.output_bytes)
        if result.ok:
            log.info("task_finished", type=spec.kind, command=spec.display,
                     duration=round(result.duration, 3))
        else:
            log.error("task_failed", type=spec.kind, command=spec.display, reason=result.reason,
                      timed_out=result.timed_out, duration=round(result.duration, 3))
        return result
