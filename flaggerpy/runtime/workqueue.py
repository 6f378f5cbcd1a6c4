"""The work queue between watches and reconcilers, with client-go's semantics.

Watch events only ``add(key)``; workers ``await get()``, reconcile, then call
``done(key)``. What the queue guarantees, and why:

- **Dedup.** A key waiting in the queue is there once, however often it is
  added (the *dirty* set). Reconciles are level-based, so a burst of events
  for one object needs one reconcile, not one per event.
- **Exclusivity.** A key being reconciled (the *processing* set) is never
  handed to a second worker. Adding it meanwhile marks it dirty and it is
  queued again by ``done()``, so the change is seen by one more reconcile
  that starts after the current one ends.
- **Delays.** ``add_after`` keeps keys on a heap driven by one
  ``loop.call_at`` timer. Delays for the same key do not stack: the earliest
  wins, and an immediate ``add`` cancels a pending delay (controller-runtime's
  priority queue: "the min of possible durations"). A key already waiting to
  be handed out ignores ``add_after``: the reconcile about to run will ask
  for its own next delay.
- **Backoff.** ``add_rate_limited`` asks a :mod:`~flaggerpy.runtime.ratelimit`
  limiter for the delay (5 ms doubling to 1000 s per key by default) and
  ``forget`` resets it. This is the only retry layer for reconciles.
- **Shutdown.** ``shutdown()`` ignores further adds, makes every ``get()``
  raise :class:`QueueShutDown` and, with ``drain``, waits until the keys
  being processed are ``done()``. Keys still waiting are dropped rather than
  handed out (unlike client-go's ``ShutDownWithDrain``): the controller is
  level-based and the next leader lists every object anyway, so a stop never
  waits on a backlog.

The queue is generic over its key type (any hashable) and single-loop: all
methods must be called from the event loop that runs it, which is also the
clock delays are measured on.

Metrics are reported through the small :class:`QueueMetrics` protocol so the
runtime does not depend on the telemetry module; ``flaggerpy.telemetry``
provides the Prometheus implementation (``workqueue_depth{name}``,
``workqueue_adds_total{name}``, ``workqueue_retries_total{name}``, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections import deque
from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar

from flaggerpy.runtime.ratelimit import RateLimiter, default_controller_rate_limiter

K = TypeVar("K", bound=Hashable)


class QueueShutDown(Exception):
    """Raised by :meth:`WorkQueue.get` once the queue is shut down (3.11 has no asyncio one)."""


class QueueMetrics(Protocol):
    """Where a queue reports what it does. Bound to one queue (one ``name`` label)."""

    def added(self) -> None:
        """A key entered the queue (adds that were deduplicated are not counted)."""
        ...

    def depth(self, depth: int) -> None:
        """The number of keys ready to be handed out changed."""
        ...

    def retried(self) -> None:
        """A key was re-added with backoff after a failure."""
        ...

    def queued(self, seconds: float) -> None:
        """A key was handed out after waiting this long since it was added."""
        ...

    def worked(self, seconds: float) -> None:
        """A key was done after being processed this long."""
        ...


class _NoMetrics:
    """Reports nowhere; the default, so the queue never checks for None."""

    def added(self) -> None:
        pass

    def depth(self, depth: int) -> None:
        pass

    def retried(self) -> None:
        pass

    def queued(self, seconds: float) -> None:
        pass

    def worked(self, seconds: float) -> None:
        pass


class WorkQueue(Generic[K]):
    """A deduplicating, delaying, rate-limited queue of keys (client-go ``workqueue``)."""

    def __init__(
            self,
            name: str,
            *,
            rate_limiter: RateLimiter[K] | None = None,  # None: controller-runtime's default
            metrics: QueueMetrics | None = None,  # None: not reported
    ) -> None:
        self.name = name
        self._rate_limiter: RateLimiter[K] = (
            rate_limiter if rate_limiter is not None else default_controller_rate_limiter()
        )
        self._metrics: QueueMetrics = metrics if metrics is not None else _NoMetrics()

        self._queue: deque[K] = deque()  # ready to hand out, FIFO
        self._dirty: set[K] = set()  # needs processing (queued, or re-added while processing)
        self._processing: set[K] = set()  # handed out and not yet done()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._idle = asyncio.Event()  # set while nothing is processing (for drain)
        self._idle.set()
        self._shutting_down = False

        # Delayed adds: the heap may hold stale entries; _waiting says which entry is live.
        self._waiting: dict[K, tuple[float, int]] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

        self._added_at: dict[K, float] = {}
        self._started_at: dict[K, float] = {}

    def __len__(self) -> int:
        """Keys ready to be handed out now (client-go ``Len``; delayed keys are not counted)."""
        return len(self._queue)

    @property
    def shutting_down(self) -> bool:
        """Whether :meth:`shutdown` was called."""
        return self._shutting_down

    def add(self, key: K) -> None:
        """Marks ``key`` as needing processing, now.

        Ignored if it is already waiting to be handed out; deferred until
        ``done()`` if it is being processed; ignored after shutdown.
        """
        if self._shutting_down:
            return
        self._waiting.pop(key, None)  # an immediate add beats any pending delay
        if key in self._dirty:
            return
        self._dirty.add(key)
        self._metrics.added()
        if key in self._processing:
            return
        self._push(key)

    def add_after(self, key: K, delay: float) -> None:
        """Adds ``key`` once ``delay`` seconds have passed; the earliest pending delay wins."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        if key in self._dirty:
            return  # it is processed soon anyway, and that reconcile decides its next delay
        ready_at = self._loop().time() + delay
        current = self._waiting.get(key)
        if current is not None and current[0] <= ready_at:
            return
        entry = (ready_at, next(self._seq))
        self._waiting[key] = entry
        heapq.heappush(self._heap, (*entry, key))
        self._arm_timer()

    def add_rate_limited(self, key: K) -> None:
        """Adds ``key`` after the rate limiter's delay: the retry of a failed reconcile."""
        if self._shutting_down:
            return
        self._metrics.retried()
        self.add_after(key, self._rate_limiter.when(key))

    def forget(self, key: K) -> None:
        """Resets the backoff of ``key``: its next failure waits the shortest delay again."""
        self._rate_limiter.forget(key)

    def num_requeues(self, key: K) -> int:
        """How many times ``key`` was retried since it was last forgotten."""
        return self._rate_limiter.num_requeues(key)

    async def get(self) -> K:
        """Waits for a key to process; the caller must call :meth:`done` with it.

        Raises :class:`QueueShutDown` once the queue is shut down.
        """
        while not self._queue:
            if self._shutting_down:
                raise QueueShutDown(self.name)
            getter = self._loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                with contextlib.suppress(ValueError):
                    self._getters.remove(getter)
                # Woken and cancelled at once: pass the wake-up on, or the key is stranded.
                if self._queue and not getter.cancelled():
                    self._wakeup_next()
                raise
        if self._shutting_down:
            raise QueueShutDown(self.name)
        key = self._queue.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        self._idle.clear()
        now = self._loop().time()
        self._started_at[key] = now
        self._metrics.depth(len(self._queue))
        self._metrics.queued(now - self._added_at.pop(key, now))
        return key

    def done(self, key: K) -> None:
        """Marks ``key`` as processed; if it was added meanwhile, it is queued again now."""
        if key not in self._processing:
            return
        self._processing.discard(key)
        started = self._started_at.pop(key, None)
        if started is not None:
            self._metrics.worked(self._loop().time() - started)
        if key in self._dirty and not self._shutting_down:
            self._push(key)
        if not self._processing:
            self._idle.set()

    async def shutdown(self, *, drain: bool = True) -> None:
        """Stops handing out keys; with ``drain``, waits until every processed key is done.

        Further adds are ignored and keys not yet handed out are dropped.
        Waiting for the drain can be bounded by the caller
        (``asyncio.timeout``); the queue stays shut down either way.
        """
        if not self._shutting_down:
            self._shutting_down = True
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._timer_at = None
            self._heap.clear()
            self._waiting.clear()
            self._queue.clear()
            self._dirty.clear()
            self._added_at.clear()
            self._metrics.depth(0)
            while self._getters:
                getter = self._getters.popleft()
                if not getter.done():
                    getter.set_result(None)
        if drain:
            await self._idle.wait()

    def _push(self, key: K) -> None:
        self._queue.append(key)
        self._added_at[key] = self._loop().time()
        self._metrics.depth(len(self._queue))
        self._wakeup_next()

    def _wakeup_next(self) -> None:
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
                return

    def _arm_timer(self) -> None:
        """Keeps one timer, due at the earliest live delayed entry."""
        while self._heap:
            ready_at, seq, key = self._heap[0]
            if self._waiting.get(key) == (ready_at, seq):
                break
            heapq.heappop(self._heap)  # stale: superseded, or the key was added meanwhile
        else:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._timer_at = None
            return
        if self._timer_at is not None and self._timer_at <= ready_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = ready_at
        self._timer = self._loop().call_at(ready_at, self._on_timer)

    def _on_timer(self) -> None:
        # Everything due by the time the timer was set for is due now, even if the
        # loop clock reads a hair earlier (call_at fires within clock resolution).
        due = max(self._loop().time(), self._timer_at or 0.0)
        self._timer = self._timer_at = None
        while self._heap and self._heap[0][0] <= due:
            ready_at, seq, key = heapq.heappop(self._heap)
            if self._waiting.get(key) == (ready_at, seq):
                del self._waiting[key]
                self.add(key)
        self._arm_timer()

    @staticmethod
    def _loop() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()
