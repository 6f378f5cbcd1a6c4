"""The token bucket behind ``-kubeconfig-qps`` / ``-kubeconfig-burst``, under fake loop time.

Nothing here sleeps for real: ``looptime`` makes the loop's clock (which the bucket reads) jump to
the next timer, so "25 requests took 4 s" is measured exactly and instantly.
"""

from __future__ import annotations

import asyncio

import pytest

from flaggerpy import kube

pytestmark = pytest.mark.looptime


async def test_a_burst_beyond_burst_takes_the_excess_over_qps(looptime: float) -> None:
    bucket = kube.TokenBucket(qps=5, burst=5)
    done: list[float] = []

    async def request() -> None:
        await bucket.wait()
        done.append(float(looptime))

    await asyncio.gather(*(request() for _ in range(25)))
    # (25 - 5) / 5 = 4 s: five at once, then one every 0.2 s, in the order they asked.
    assert looptime == pytest.approx(4.0)
    assert done == pytest.approx([0.0] * 5 + [0.2 * i for i in range(1, 21)])


async def test_sequential_requests_are_paced_the_same(looptime: float) -> None:
    bucket = kube.TokenBucket(qps=100, burst=250)
    waited = [await bucket.wait() for _ in range(1250)]
    assert looptime == pytest.approx(10.0)  # (1250 - 250) / 100
    assert waited[:250] == [0.0] * 250
    assert waited[250] == pytest.approx(0.01)


async def test_tokens_come_back_at_qps_but_never_above_burst(looptime: float) -> None:
    bucket = kube.TokenBucket(qps=2, burst=3)
    for _ in range(3):
        assert await bucket.wait() == 0
    await asyncio.sleep(1.0)  # two tokens back
    assert [bucket.reserve() for _ in range(3)] == pytest.approx([0, 0, 0.5])
    await asyncio.sleep(3600)  # refilled to the burst, not to 7200
    assert [bucket.reserve() for _ in range(4)] == pytest.approx([0, 0, 0, 0.5])


async def test_a_cancelled_waiter_gives_back_only_the_last_slot(looptime: float) -> None:
    bucket = kube.TokenBucket(qps=1, burst=1)
    await bucket.wait()
    first = asyncio.create_task(bucket.wait())  # promised t=1
    last = asyncio.create_task(bucket.wait())  # promised t=2
    await asyncio.sleep(0)
    last.cancel()
    with pytest.raises(asyncio.CancelledError):
        await last
    assert bucket.reserve() == pytest.approx(2.0)  # t=2 is free again
    first.cancel()  # not the latest promise: the one just made counts on it
    with pytest.raises(asyncio.CancelledError):
        await first
    assert bucket.reserve() == pytest.approx(3.0)
    assert looptime == 0


def test_reserve_with_an_injected_clock() -> None:
    now = [100.0]
    bucket = kube.TokenBucket(qps=10, burst=2, clock=lambda: now[0])
    assert [bucket.reserve() for _ in range(4)] == pytest.approx([0, 0, 0.1, 0.2])
    now[0] += 0.3  # the debt of two is paid and one token saved
    assert [bucket.reserve() for _ in range(2)] == pytest.approx([0, 0.1])


@pytest.mark.parametrize(("qps", "burst"), [(0, 1), (-1, 1), (float("inf"), 1), (float("nan"), 1),
                                            (1, 0)])
def test_nonsense_limits_are_refused(qps: float, burst: int) -> None:
    with pytest.raises(ValueError, match="qps"):
        kube.TokenBucket(qps=qps, burst=burst)
