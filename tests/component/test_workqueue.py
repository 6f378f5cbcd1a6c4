"""The work queue's promises, under fake loop time (nothing here sleeps for real)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Hashable
from typing import TypeVar

import pytest

from flaggerpy.runtime.ratelimit import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    default_controller_rate_limiter,
)
from flaggerpy.runtime.workqueue import QueueShutDown, WorkQueue

pytestmark = pytest.mark.looptime


class RecordingMetrics:
    """A QueueMetrics that remembers what it was told."""

    def __init__(self) -> None:
        self.adds = 0
        self.retries = 0
        self.depths: list[int] = []
        self.queued_for: list[float] = []
        self.worked_for: list[float] = []

    def added(self) -> None:
        self.adds += 1

    def depth(self, depth: int) -> None:
        self.depths.append(depth)

    def retried(self) -> None:
        self.retries += 1

    def queued(self, seconds: float) -> None:
        self.queued_for.append(seconds)

    def worked(self, seconds: float) -> None:
        self.worked_for.append(seconds)


K = TypeVar("K", bound=Hashable)


async def get_soon(queue: WorkQueue[K], within: float = 1.0) -> K:
    return await asyncio.wait_for(queue.get(), within)


async def test_repeated_adds_are_deduplicated() -> None:
    queue: WorkQueue[str] = WorkQueue("test")
    for _ in range(1000):
        queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    assert await get_soon(queue) == "a"
    assert await get_soon(queue) == "b"
    assert len(queue) == 0


async def test_adds_while_processing_are_deferred_until_done() -> None:
    queue: WorkQueue[str] = WorkQueue("test")
    queue.add("a")
    key = await get_soon(queue)
    for _ in range(1000):
        queue.add("a")
    assert len(queue) == 0, "a key being processed is not handed out again"
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(queue.get(), 10)
    queue.done(key)
    assert len(queue) == 1
    assert await get_soon(queue) == "a"
    queue.done("a")
    assert len(queue) == 0


async def test_a_key_is_never_handed_to_two_getters() -> None:
    queue: WorkQueue[str] = WorkQueue("test")
    getters = [asyncio.create_task(queue.get()) for _ in range(3)]
    queue.add("a")
    await asyncio.sleep(0)
    queue.add("a")
    await asyncio.sleep(1)
    assert [g.done() for g in getters].count(True) == 1
    queue.done("a")
    await asyncio.sleep(1)
    assert [g.done() for g in getters].count(True) == 2
    assert {g.result() for g in getters if g.done()} == {"a"}
    for g in getters:
        g.cancel()


async def test_fifo_order() -> None:
    queue: WorkQueue[int] = WorkQueue("test")
    for i in range(5):
        queue.add(i)
    assert [await queue.get() for _ in range(5)] == [0, 1, 2, 3, 4]


async def test_add_after_hands_keys_out_in_delay_order(looptime: float) -> None:
    queue: WorkQueue[str] = WorkQueue("test")
    queue.add_after("late", 3)
    queue.add_after("early", 1)
    queue.add_after("middle", 2)
    assert len(queue) == 0
    seen = []
    for _ in range(3):
        seen.append((await get_soon(queue, 10), float(looptime)))
    assert seen == [("early", 1), ("middle", 2), ("late", 3)]


async def test_add_after_the_shortest_pending_delay_wins(looptime: float) -> None:
    queue: WorkQueue[str] = WorkQueue("test")
    queue.add_after("a", 10)
    queue.add_after("a", 5)
    queue.add_after("a", 20)
    assert await get_soon(queue, 100) == "a"
    assert looptime == 5
    queue.done("a")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(queue.get(), 100)  # no second add at 10 or 20


async def test_immediate_add_cancels_a_pending_delay(looptime: float) -> None:
    queue: WorkQueue[str] = WorkQueue("test")
    queue.add_after("a", 10)
    queue.add("a")
    assert await get_soon(queue) == "a"
    assert looptime == 0
    queue.done("a")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(queue.get(), 100)


async def test_add_after_of_a_queued_key_is_ignored() -> None:
    queue: WorkQueue[str] = WorkQueue("test")
    queue.add("a")
    queue.add_after("a", 5)
    assert await get_soon(queue) == "a"
    queue.done("a")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(queue.get(), 100)


async def test_add_after_while_processing_fires_after_done(looptime: float) -> None:
    queue: WorkQueue[str] = WorkQueue("test")
    queue.add("a")
    await get_soon(queue)
    queue.add_after("a", 5)
    queue.done("a")
    assert await get_soon(queue, 10) == "a"
    assert looptime == 5


async def test_non_positive_delay_adds_now(looptime: float) -> None:
    queue: WorkQueue[str] = WorkQueue("test")
    queue.add_after("a", 0)
    queue.add_after("b", -1)
    assert len(queue) == 2
    assert looptime == 0


async def test_many_delays_each_fire_once(looptime: float) -> None:
    queue: WorkQueue[int] = WorkQueue("test")
    for i in range(100):
        queue.add_after(i, 100 - i)  # reverse order on purpose
    got = []
    for _ in range(100):
        key = await get_soon(queue, 200)
        got.append(key)
        queue.done(key)
    assert got == list(reversed(range(100)))
    assert looptime == 100


def test_exponential_backoff_values_and_forget() -> None:
    limiter: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter()
    delays = [limiter.when("a") for _ in range(20)]
    assert delays[:5] == pytest.approx([0.005, 0.01, 0.02, 0.04, 0.08])
    assert delays == pytest.approx([min(0.005 * 2**i, 1000.0) for i in range(20)])
    assert limiter.num_requeues("a") == 20
    assert limiter.when("b") == pytest.approx(0.005), "backoff is per key"
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == pytest.approx(0.005)


def test_exponential_backoff_is_capped_at_1000_seconds() -> None:
    limiter: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter()
    delays = [limiter.when("a") for _ in range(2000)]  # past float overflow of 2**n
    assert max(delays) == 1000.0
    assert delays[-1] == 1000.0


def test_bucket_limiter_allows_a_burst_then_paces() -> None:
    now = [0.0]
    bucket: BucketRateLimiter[str] = BucketRateLimiter(qps=10, burst=3, clock=lambda: now[0])
    assert [bucket.when("x") for _ in range(3)] == [0, 0, 0]
    assert bucket.when("x") == pytest.approx(0.1)
    assert bucket.when("x") == pytest.approx(0.2)
    now[0] = 10.0  # refilled, but never above the burst
    assert [bucket.when("x") for _ in range(3)] == [0, 0, 0]
    assert bucket.when("x") == pytest.approx(0.1)


def test_max_of_limiters_takes_the_longest_delay() -> None:
    now = [0.0]
    limiter: MaxOfRateLimiter[str] = MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(),
        BucketRateLimiter(qps=1, burst=1, clock=lambda: now[0]),
    )
    assert limiter.when("a") == pytest.approx(0.005)
    assert limiter.when("a") == pytest.approx(1.0)  # the bucket is empty
    assert limiter.num_requeues("a") == 2
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0


async def test_add_rate_limited_backs_off_exponentially(looptime: float) -> None:
    queue: WorkQueue[str] = WorkQueue("test", rate_limiter=ItemExponentialFailureRateLimiter())
    times = []
    queue.add("a")
    for _ in range(6):
        key = await get_soon(queue, 10)
        times.append(float(looptime))
        queue.add_rate_limited(key)
        queue.done(key)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == pytest.approx([0.005, 0.01, 0.02, 0.04, 0.08])
    assert queue.num_requeues("a") == 6
    queue.forget("a")
    assert queue.num_requeues("a") == 0


async def test_default_rate_limiter_is_controller_runtimes(looptime: float) -> None:
    limiter: MaxOfRateLimiter[str] = default_controller_rate_limiter()
    assert [limiter.when("a") for _ in range(4)] == pytest.approx([0.005, 0.01, 0.02, 0.04])
    for i in range(96):
        limiter.when(str(i))  # uses up the rest of the burst of 100
    assert limiter.when("z") == pytest.approx(0.1)  # 10 per second after the burst


async def test_shutdown_wakes_getters_and_ignores_adds() -> None:
    queue: WorkQueue[str] = WorkQueue("test")
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    await queue.shutdown()
    with pytest.raises(QueueShutDown):
        await getter
    queue.add("a")
    queue.add_after("b", 1)
    queue.add_rate_limited("c")
    assert len(queue) == 0
    assert queue.shutting_down
    with pytest.raises(QueueShutDown):
        await queue.get()


async def test_shutdown_drops_waiting_keys_and_pending_delays() -> None:
    queue: WorkQueue[str] = WorkQueue("test")
    queue.add("a")
    queue.add_after("b", 1)
    await queue.shutdown()
    assert len(queue) == 0
    await asyncio.sleep(10)
    with pytest.raises(QueueShutDown):
        await queue.get()


async def test_shutdown_with_drain_waits_for_keys_in_flight(looptime: float) -> None:
    queue: WorkQueue[str] = WorkQueue("test")
    queue.add("a")
    key = await get_soon(queue)
    asyncio.get_running_loop().call_later(7, queue.done, key)
    await queue.shutdown(drain=True)
    assert looptime == 7


async def test_shutdown_without_drain_returns_at_once(looptime: float) -> None:
    queue: WorkQueue[str] = WorkQueue("test")
    queue.add("a")
    key = await get_soon(queue)
    queue.add(key)  # re-added while processing: must not come back after shutdown
    await queue.shutdown(drain=False)
    assert looptime == 0
    queue.done(key)
    assert len(queue) == 0


async def test_a_cancelled_getter_does_not_strand_a_key() -> None:
    queue: WorkQueue[str] = WorkQueue("test")
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.add("a")  # wakes the first getter...
    first.cancel()  # ...which is cancelled before it runs
    assert await asyncio.wait_for(second, 1) == "a"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_done_of_an_unknown_key_is_ignored() -> None:
    queue: WorkQueue[str] = WorkQueue("test")
    queue.done("never-handed-out")
    assert len(queue) == 0


async def test_metrics_are_reported(looptime: float) -> None:
    metrics = RecordingMetrics()
    queue: WorkQueue[str] = WorkQueue(
        "test", rate_limiter=ItemExponentialFailureRateLimiter(), metrics=metrics
    )
    for _ in range(10):
        queue.add("a")
    assert metrics.adds == 1, "deduplicated adds are not counted"
    assert metrics.depths[-1] == 1
    await asyncio.sleep(2)
    key = await get_soon(queue)
    assert metrics.depths[-1] == 0
    assert metrics.queued_for == [2]
    await asyncio.sleep(3)
    queue.add_rate_limited(key)
    queue.done(key)
    assert metrics.worked_for == [3]
    assert metrics.retries == 1
    await get_soon(queue)
    assert metrics.adds == 2
