"""How long a failed key waits before the work queue hands it out again.

These are client-go's rate limiters, with controller-runtime's defaults:

- :class:`ItemExponentialFailureRateLimiter` backs off per key: 5 ms, 10 ms,
  20 ms, ... doubling on every consecutive failure, capped at 1000 s, and
  starting over once the key is forgotten (a reconcile succeeded).
- :class:`BucketRateLimiter` is one token bucket shared by all keys
  (10 retries per second, burst 100), so a storm of failing objects cannot
  turn into a storm of API calls.
- :class:`MaxOfRateLimiter` combines them: the longest wait wins.

:func:`default_controller_rate_limiter` builds controller-runtime's
combination. Retries live here and only here (design rule 4): nothing wraps
a reconcile in a second retry layer.

Delays are floats in seconds. The bucket reads the running event loop's
clock, so it agrees with ``loop.call_at`` (and with fake loop time in tests).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

from flaggerpy.kube import throttle

K = TypeVar("K", bound=Hashable)
K_contra = TypeVar("K_contra", bound=Hashable, contravariant=True)

_MAX_EXPONENT = 64  # 2**64 times any sane base delay is past any sane cap


class RateLimiter(Protocol[K_contra]):
    """Decides how long a key waits before it is retried (client-go ``RateLimiter``)."""

    def when(self, key: K_contra) -> float:
        """Records one more failure of ``key`` and returns the delay before its retry."""
        ...

    def forget(self, key: K_contra) -> None:
        """Drops what is known about ``key``: its next failure backs off from the start."""
        ...

    def num_requeues(self, key: K_contra) -> int:
        """How many times ``key`` failed since it was last forgotten."""
        ...


class ItemExponentialFailureRateLimiter(Generic[K]):
    """Per-key exponential backoff: ``base_delay * 2**failures``, capped at ``max_delay``.

    Defaults are controller-runtime's (5 ms to 1000 s): quick enough that a
    transient conflict is retried at once, slow enough that a persistently
    broken object costs almost nothing.
    """

    def __init__(self, *, base_delay: float = 0.005, max_delay: float = 1000.0) -> None:
        if base_delay <= 0 or max_delay < base_delay:
            raise ValueError(f"need 0 < base_delay <= max_delay, got {base_delay}, {max_delay}")
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._failures: dict[K, int] = {}

    def when(self, key: K) -> float:
        exponent = self._failures.get(key, 0)
        self._failures[key] = exponent + 1
        if exponent >= _MAX_EXPONENT:
            return self._max_delay
        return min(self._base_delay * 2.0**exponent, self._max_delay)

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    def num_requeues(self, key: K) -> int:
        return self._failures.get(key, 0)


class BucketRateLimiter(Generic[K]):
    """One token bucket for all keys: ``qps`` retries per second with bursts of ``burst``.

    Each call reserves a token and returns how long to wait for it, like Go's
    ``rate.Limiter.Reserve().Delay()``; the bucket is :class:`flaggerpy.kube.throttle.TokenBucket`,
    the one the API client's ``-kubeconfig-qps`` limit uses. It keeps no per-key state, so
    ``forget`` does nothing and ``num_requeues`` is always 0.
    """

    def __init__(
            self,
            *,
            qps: float = 10.0,
            burst: int = 100,
            clock: Callable[[], float] | None = None,  # None: the running loop's time()
    ) -> None:
        self._bucket = throttle.TokenBucket(qps=qps, burst=burst, clock=clock)

    def when(self, key: K) -> float:
        return self._bucket.reserve()

    def forget(self, key: K) -> None:
        pass

    def num_requeues(self, key: K) -> int:
        return 0


class MaxOfRateLimiter(Generic[K]):
    """Asks every limiter and waits for the longest delay (client-go ``MaxOfRateLimiter``)."""

    def __init__(self, *limiters: RateLimiter[K]) -> None:
        if not limiters:
            raise ValueError("MaxOfRateLimiter needs at least one limiter")
        self._limiters = limiters

    def when(self, key: K) -> float:
        # Every limiter must see the failure (each keeps its own count or tokens).
        return max([limiter.when(key) for limiter in self._limiters])

    def forget(self, key: K) -> None:
        for limiter in self._limiters:
            limiter.forget(key)

    def num_requeues(self, key: K) -> int:
        return max(limiter.num_requeues(key) for limiter in self._limiters)


def default_controller_rate_limiter(
        *,
        base_delay: float = 0.005,
        max_delay: float = 1000.0,
        qps: float = 10.0,
        burst: int = 100,
) -> MaxOfRateLimiter[K]:
    """controller-runtime's ``DefaultTypedControllerRateLimiter``: per-key backoff and a bucket."""
    return MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(base_delay=base_delay, max_delay=max_delay),
        BucketRateLimiter(qps=qps, burst=burst),
    )
