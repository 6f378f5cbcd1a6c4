"""A token bucket: ``qps`` events per second on average, bursts of up to ``burst``.

One bucket serves two masters, which is why it lives at the bottom (in ``kube``):

- the API client's client-side rate limit (``-kubeconfig-qps`` / ``-kubeconfig-burst``, client-go's
  ``flowcontrol.NewTokenBucketRateLimiter`` behind ``rest.Config.QPS`` / ``Burst``): every request
  awaits :meth:`TokenBucket.wait` before it goes out, so a burst of thousands of initialisations
  reaches the API server at ``qps`` per second instead of all at once;
- the work queue's overall retry limit (:class:`flaggerpy.runtime.ratelimit.BucketRateLimiter`),
  which only asks :meth:`TokenBucket.reserve` how long a retry must wait.

It is Go's ``rate.Limiter`` reduced to what those two use. The bucket starts full; each event takes
one token, and tokens come back at ``qps`` per second up to ``burst``. The count may go negative:
a reservation made while the bucket is empty is a promise of the next free slot, and its delay is
how long until then. So ``burst + n`` events asked for at once are spread over ``n / qps`` seconds,
in the order they asked.

Waiting is an ``asyncio.sleep`` until the slot comes: the loop serves everything else meanwhile.
The bucket reads the running event loop's clock unless given one, so it agrees with
``loop.call_at`` (and with fake loop time in tests).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class TokenBucket:
    """``qps`` tokens per second, at most ``burst`` saved up; reservations queue in call order."""

    def __init__(
            self,
            *,
            qps: float,
            burst: int,
            clock: Callable[[], float] | None = None,  # None: the running loop's time()
    ) -> None:
        if not qps > 0 or qps == float("inf") or burst < 1:
            raise ValueError(f"need 0 < qps < inf and burst >= 1, got {qps}, {burst}")
        self._qps = float(qps)
        self._burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last: float | None = None  # when _tokens was last brought up to date
        self._last_due = float("-inf")  # when the latest reservation may act

    @property
    def qps(self) -> float:
        """Tokens added per second."""
        return self._qps

    @property
    def burst(self) -> int:
        """How many tokens the bucket holds when full."""
        return self._burst

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def _advance(self, now: float) -> None:
        if self._last is not None and now > self._last:
            self._tokens = min(float(self._burst), self._tokens + (now - self._last) * self._qps)
        if self._last is None or now > self._last:
            self._last = now

    def reserve(self) -> float:
        """Takes one token now and returns how many seconds until it may be used (0: at once)."""
        now = self._now()
        self._advance(now)
        self._tokens -= 1.0
        delay = 0.0 if self._tokens >= 0 else -self._tokens / self._qps
        self._last_due = now + delay
        return delay

    async def wait(self) -> float:
        """Waits for a token; returns the seconds waited.

        A waiter cancelled before its slot comes gives the token back when no later reservation
        was promised the slot after it (Go's ``Reservation.Cancel``), so abandoned requests do not
        slow down the ones still to come.
        """
        delay = self.reserve()
        if delay <= 0:
            return 0.0
        due = self._last_due
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self._give_back(due)
            raise
        return delay

    def _give_back(self, due: float) -> None:
        now = self._now()
        if due != self._last_due or due <= now:
            return  # a later reservation counts on this slot being taken, or it has come
        self._advance(now)
        self._tokens = min(float(self._burst), self._tokens + 1.0)
        self._last_due = due - 1.0 / self._qps
