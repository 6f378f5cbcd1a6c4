"""The manager: runs every part of the process as one group, and stops it as one.

Like controller-runtime's manager, it runs :class:`Runnable` objects (caches,
controllers, the telemetry server, the leader elector) in one
``asyncio.TaskGroup``:

- Runnables that need leader election (controllers: they write) start only
  once the optional :class:`Elector` reports leadership. The others
  (caches, the telemetry server) start at once, so a standby has warm caches
  and answers probes.
- If any runnable raises, the rest are stopped and :meth:`Manager.run`
  re-raises it. Losing leadership is such an exception, raised by the
  elector: the process exits and a standby takes over, as in
  controller-runtime, rather than trying to step down in place.
- SIGTERM or SIGINT (or :meth:`Manager.stop`) stops the group gracefully and
  ``run()`` returns normally.

Stopping is two-phase. Every runnable is cancelled once; a controller then
stops taking keys and lets its reconciles in flight finish. Whatever is still
running after ``grace_period`` seconds is cancelled again, which ends it.
A second signal skips the rest of the grace period. So a stop takes at most
``grace_period`` plus the time cancelled code needs to unwind, and the default
(3 s, Flagger's HTTP shutdown timeout) keeps it well inside Kubernetes'
30 s termination grace. The same grace applies when leadership is lost: a new
leader cannot take the Lease before it expires, which is far longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import structlog

log = structlog.get_logger(__name__)

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@runtime_checkable
class Runnable(Protocol):
    """A long-running part of the process (controller-runtime ``Runnable``).

    ``start`` blocks until it is cancelled; returning early is allowed (the
    rest keeps running), raising stops the whole manager.
    ``needs_leader_election`` may be a class attribute, an instance attribute
    or a property.
    """

    @property
    def needs_leader_election(self) -> bool:
        """Whether to start only on the leader (controllers) or everywhere (caches, probes)."""
        ...

    async def start(self) -> None:
        """Runs until cancelled; cleans up on cancellation."""
        ...


@runtime_checkable
class Elector(Protocol):
    """Leader election as the manager sees it (implemented in ``runtime/leader.py``).

    ``start`` campaigns and then holds the lease until cancelled (releasing
    it); it sets ``elected`` once leadership is acquired, and raises when
    leadership is lost, which stops the process.
    """

    @property
    def elected(self) -> asyncio.Event:
        """Set once this process is the leader."""
        ...

    async def start(self) -> None:
        """Campaigns, then renews until cancelled; raises if leadership is lost."""
        ...


class _StopRequested(Exception):
    """Raised inside the group to end it gracefully; never escapes :meth:`Manager.run`."""


class Manager:
    """Runs runnables together; see the module docstring for the lifecycle."""

    def __init__(
            self,
            *,
            runnables: Iterable[Runnable] = (),
            elector: Elector | None = None,  # None: no election, everything starts at once
            grace_period: float = 3.0,
    ) -> None:
        if grace_period < 0:
            raise ValueError(f"grace_period must be >= 0, got {grace_period}")
        self._runnables: list[Runnable] = list(runnables)
        self._elector = elector
        self._grace_period = grace_period
        self._stop = asyncio.Event()
        self._supervisors: set[asyncio.Task[None]] = set()
        self._running = False

    def add(self, runnable: Runnable) -> None:
        """Adds a runnable before :meth:`run`."""
        if self._running:
            raise RuntimeError("cannot add a runnable to a running manager")
        self._runnables.append(runnable)

    def stop(self) -> None:
        """Requests a graceful stop, as SIGTERM does; a second call hurries it."""
        if self._stop.is_set():
            log.warning("manager_stop_forced")
            for task in self._supervisors:
                task.cancel()
        self._stop.set()

    async def run(self, *, handle_signals: bool = True) -> None:
        """Runs every runnable until a stop is requested or one of them fails.

        Returns after a graceful stop. Re-raises a runnable's exception (or an
        ``ExceptionGroup`` if several failed at once) after stopping the rest.
        """
        if self._running:
            raise RuntimeError("the manager is already running")
        self._running = True
        loop = asyncio.get_running_loop()
        installed = self._install_signal_handlers(loop) if handle_signals else []
        everywhere = [r for r in self._runnables if not r.needs_leader_election]
        leader_only = [r for r in self._runnables if r.needs_leader_election]
        if self._elector is None:
            everywhere, leader_only = everywhere + leader_only, []
        log.info("manager_starting", runnables=len(self._runnables),
                 leader_election=self._elector is not None)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._wait_for_stop())
                for runnable in everywhere:
                    self._spawn(group, runnable)
                if self._elector is not None:
                    self._spawn(group, self._elector)
                    if leader_only:
                        group.create_task(self._start_when_elected(group, leader_only))
        except BaseExceptionGroup as group_error:
            _, rest = group_error.split(_StopRequested)
            if rest is None:
                log.info("manager_stopped")
                return
            failures = rest.exceptions
            if len(failures) == 1:
                raise failures[0] from None
            raise rest from None
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
            self._stop = asyncio.Event()
            self._running = False

    def _install_signal_handlers(
            self, loop: asyncio.AbstractEventLoop
    ) -> list[signal.Signals]:
        installed: list[signal.Signals] = []
        for signum in _SIGNALS:
            try:
                loop.add_signal_handler(signum, self._on_signal, signum)
            except (ValueError, NotImplementedError, RuntimeError) as exc:
                # Not the main thread, or a platform without it: stop() still works.
                log.warning("signal_handler_not_installed", signal=signum.name, error=str(exc))
            else:
                installed.append(signum)
        return installed

    def _on_signal(self, signum: signal.Signals) -> None:
        log.info("signal_received", signal=signum.name)
        self.stop()

    async def _wait_for_stop(self) -> None:
        await self._stop.wait()
        log.info("manager_stopping", grace_period=self._grace_period)
        raise _StopRequested

    async def _start_when_elected(
            self, group: asyncio.TaskGroup, runnables: list[Runnable]
    ) -> None:
        assert self._elector is not None
        await self._elector.elected.wait()
        log.info("leader_elected", runnables=len(runnables))
        for runnable in runnables:
            self._spawn(group, runnable)

    def _spawn(self, group: asyncio.TaskGroup, runnable: Runnable | Elector) -> None:
        task = group.create_task(self._supervise(runnable), name=_describe(runnable))
        self._supervisors.add(task)
        task.add_done_callback(self._supervisors.discard)

    async def _supervise(self, runnable: Runnable | Elector) -> None:
        """Runs one runnable; on cancellation gives it the grace period, then cancels again.

        The runnable runs in its own task so that the group's one cancellation
        reaches it as a request to stop, while this wrapper keeps the deadline.
        """
        name = _describe(runnable)
        inner = asyncio.get_running_loop().create_task(runnable.start(), name=name)
        try:
            await asyncio.wait({inner})  # unlike awaiting it, being cancelled here spares it
        except asyncio.CancelledError:
            inner.cancel()
            with contextlib.suppress(asyncio.CancelledError):  # a second stop: no more grace
                await asyncio.wait({inner}, timeout=self._grace_period)
            if not inner.done():
                log.warning("runnable_stop_forced", runnable=name)
                inner.cancel()
                await asyncio.wait({inner})
            if not inner.cancelled() and inner.exception() is not None:
                log.error("runnable_failed_while_stopping", runnable=name,
                          exc_info=inner.exception())
            raise
        if inner.cancelled():
            # Cancelled by something other than the manager: treat it as a crash.
            raise RuntimeError(f"runnable {name} was cancelled unexpectedly")
        exc = inner.exception()
        if exc is not None:
            log.error("runnable_failed", runnable=name, exc_info=exc)
            raise exc
        log.info("runnable_returned", runnable=name)


def _describe(runnable: object) -> str:
    name = getattr(runnable, "name", None)
    kind = type(runnable).__name__
    return f"{kind}/{name}" if isinstance(name, str) else kind
