"""A controller: workers that take keys from a work queue and reconcile them.

This is controller-runtime's shape, in asyncio. A :class:`Reconciler` has one
method and receives a key, never an event: it re-reads the object and makes
the world match it (level-based, idempotent). What happens next is decided in
one short place, :meth:`Controller._process`:

- the reconcile returned ``Result()``: the key's backoff is forgotten;
- it returned ``Result(requeue_after=s)``: forgotten, and added again in ``s``
  seconds (this is how a canary analysis ticks);
- it raised :class:`~flaggerpy.errors.TerminalError`: forgotten and not
  retried; the object is reconciled again only when it changes;
- it raised any other ``Exception``: retried with per-key exponential backoff.

``CancelledError`` is a ``BaseException`` and is never treated as a failure.

Each reconcile runs inside ``structlog.contextvars.bound_contextvars`` with
``controller``, ``namespace``, ``name`` and a fresh ``reconcile_id``, so
everything the reconciler and its plugins log carries them.

A controller is a :class:`~flaggerpy.runtime.manager.Runnable` that needs
leader election. When cancelled it stops taking keys and waits for the
reconciles in flight; a second cancellation (the manager's grace period
running out) cancels them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import ClassVar, Generic, Literal, Protocol, TypeVar
from uuid import uuid4

import structlog
from structlog.contextvars import bound_contextvars

from flaggerpy.errors import TerminalError
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.runtime.workqueue import QueueShutDown, WorkQueue

log = structlog.get_logger(__name__)

K = TypeVar("K", bound=Hashable)
K_contra = TypeVar("K_contra", bound=Hashable, contravariant=True)

Outcome = Literal["success", "requeue_after", "error", "terminal_error"]
"""How one reconcile ended, as reported to :class:`ReconcileMetrics`."""


@dataclass(frozen=True, slots=True)
class Result:
    """What a successful reconcile asks for next.

    ``requeue_after`` (seconds) schedules the next reconcile of the same key;
    ``None`` means "only when something changes". A failure is not a Result:
    raise, and the queue retries with backoff (or not, for TerminalError).
    """

    requeue_after: float | None = None

    def __post_init__(self) -> None:
        if self.requeue_after is not None and self.requeue_after < 0:
            raise ValueError(f"requeue_after must be >= 0, got {self.requeue_after}")


class Reconciler(Protocol[K_contra]):
    """Makes the world match the object named by ``key`` (controller-runtime ``Reconciler``)."""

    async def reconcile(self, key: K_contra) -> Result:
        """Reconciles once; raises to be retried, TerminalError to be left alone."""
        ...


class ReconcilerFunc(Generic[K]):
    """Makes a plain ``async def f(key) -> Result`` fit :class:`Reconciler` (``reconcile.Func``)."""

    def __init__(self, func: Callable[[K], Awaitable[Result]]) -> None:
        self._func = func

    async def reconcile(self, key: K) -> Result:
        return await self._func(key)


class ReconcileMetrics(Protocol):
    """Where a controller reports its reconciles. Bound to one controller name."""

    def reconciled(self, outcome: Outcome, *, seconds: float) -> None:
        """One reconcile ended with ``outcome`` after ``seconds``."""
        ...

    def active_workers(self, count: int) -> None:
        """The number of workers busy reconciling changed."""
        ...


class _NoMetrics:
    def reconciled(self, outcome: Outcome, *, seconds: float) -> None:
        pass

    def active_workers(self, count: int) -> None:
        pass


def _key_fields(key: Hashable) -> dict[str, str]:
    """Log fields naming the key: namespace and name for object keys, else the key itself."""
    if isinstance(key, ObjectKey):
        return {"namespace": key.namespace, "name": key.name}
    return {"key": str(key)}


PAUSED_RETRY_SECONDS = 1.0
"""How soon a key skipped by a controller that may not act is looked at again."""


class Controller(Generic[K]):
    """Runs ``workers`` concurrent reconciles of keys from ``queue``; a leader-only Runnable."""

    needs_leader_election: ClassVar[bool] = True

    def __init__(
            self,
            name: str,
            reconciler: Reconciler[K],
            *,
            queue: WorkQueue[K],
            workers: int = 1,
            metrics: ReconcileMetrics | None = None,  # None: not reported
            may_act: Callable[[], bool] | None = None,  # e.g. the leader elector's is_leader
    ) -> None:
        if workers < 1:
            raise ValueError(f"controller {name}: workers must be >= 1, got {workers}")
        self.name = name
        self._may_act = may_act
        self.queue = queue
        self.workers = workers
        self._reconciler = reconciler
        self._metrics: ReconcileMetrics = metrics if metrics is not None else _NoMetrics()
        self._active = 0

    async def start(self) -> None:
        """Reconciles until cancelled (or until the queue is shut down by someone else)."""
        loop = asyncio.get_running_loop()
        tasks = {
            loop.create_task(self._worker(), name=f"{self.name}-worker-{i}")
            for i in range(self.workers)
        }
        log.info("controller_started", controller=self.name, workers=self.workers)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            log.info("controller_stopping", controller=self.name, in_flight=self._active)
            try:
                await self.queue.shutdown(drain=True)  # in-flight reconciles finish
            finally:
                for task in tasks:
                    task.cancel()  # a second cancellation lands here: abandon them
                await asyncio.wait(tasks)
                log.info("controller_stopped", controller=self.name)
            raise
        failed = [task for task in done if not task.cancelled() and task.exception()]
        if failed:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            failed[0].result()  # re-raises the worker's bug
        log.info("controller_stopped", controller=self.name)

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except QueueShutDown:
                return
            self._active += 1
            self._metrics.active_workers(self._active)
            try:
                await self._process(key)
            finally:
                self._active -= 1
                self._metrics.active_workers(self._active)

    async def _process(self, key: K) -> None:
        if self._may_act is not None and not self._may_act():
            # A leader whose lease lapsed (it was paused or partitioned) must not act on what
            # it sees when it wakes up, even before the elector notices and stops the process.
            log.warning("reconcile_skipped_not_leader", controller=self.name, **_key_fields(key))
            self.queue.done(key)
            self.queue.add_after(key, PAUSED_RETRY_SECONDS)
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome: Outcome
        with bound_contextvars(
            controller=self.name, **_key_fields(key), reconcile_id=uuid4().hex[:12]
        ):
            try:
                result = await self._reconciler.reconcile(key)
            except TerminalError:
                outcome = "terminal_error"
                log.exception("reconcile_failed_terminal")
                self.queue.forget(key)
            except Exception:  # CancelledError is a BaseException: not caught
                outcome = "error"
                self.queue.add_rate_limited(key)
                log.exception("reconcile_failed", retries=self.queue.num_requeues(key))
            else:
                self.queue.forget(key)
                if result.requeue_after is not None:
                    outcome = "requeue_after"
                    self.queue.add_after(key, result.requeue_after)
                else:
                    outcome = "success"
            finally:
                self.queue.done(key)
        self._metrics.reconciled(outcome, seconds=loop.time() - started)
