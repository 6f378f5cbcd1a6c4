"""The controller's worker loop, under fake loop time."""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import structlog
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from flaggerpy.errors import TerminalError
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.runtime.controller import Controller, ReconcilerFunc, Result
from flaggerpy.runtime.ratelimit import ItemExponentialFailureRateLimiter
from flaggerpy.runtime.workqueue import WorkQueue
from flaggerpy.telemetry import Recorder

pytestmark = pytest.mark.looptime

A = ObjectKey("test", "a")
B = ObjectKey("test", "b")

Handler = Callable[[ObjectKey], Awaitable[Result]]
Run = Callable[[Controller[ObjectKey]], None]


class Recording:
    """A reconciler that records when each key was reconciled and runs a handler."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.calls: list[tuple[ObjectKey, float]] = []
        self.running: collections.Counter[ObjectKey] = collections.Counter()
        self.max_running: collections.Counter[ObjectKey] = collections.Counter()
        self.context: list[dict[str, object]] = []
        self._handler = handler

    def times(self, key: ObjectKey) -> list[float]:
        return [t for k, t in self.calls if k == key]

    async def reconcile(self, key: ObjectKey) -> Result:
        self.calls.append((key, asyncio.get_running_loop().time()))
        self.context.append(structlog.contextvars.get_contextvars())
        self.running[key] += 1
        self.max_running[key] = max(self.max_running[key], self.running[key])
        try:
            if self._handler is not None:
                return await self._handler(key)
            return Result()
        finally:
            self.running[key] -= 1


def new_queue() -> WorkQueue[ObjectKey]:
    # Only the per-key backoff, so delays are exact in assertions.
    return WorkQueue("test", rate_limiter=ItemExponentialFailureRateLimiter())


@pytest.fixture
async def run() -> AsyncIterator[Run]:
    """Starts controllers in the background and stops them after the test."""
    tasks: list[asyncio.Task[None]] = []

    def start(controller: Controller[ObjectKey]) -> None:
        tasks.append(asyncio.create_task(controller.start()))

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_success_reconciles_once(run: Run, looptime: float) -> None:
    reconciler = Recording()
    queue = new_queue()
    run(Controller("test", reconciler, queue=queue))
    queue.add(A)
    await asyncio.sleep(1000)
    assert reconciler.calls == [(A, 0)]


async def test_adds_during_a_reconcile_cause_exactly_one_more(run: Run) -> None:
    queue = new_queue()

    async def slow(key: ObjectKey) -> Result:
        if len(reconciler.calls) == 1:
            for _ in range(1000):
                queue.add(key)
            await asyncio.sleep(5)
        return Result()

    reconciler = Recording(slow)
    run(Controller("test", reconciler, queue=queue, workers=4))
    queue.add(A)
    await asyncio.sleep(100)
    assert reconciler.times(A) == [0, 5]


async def test_a_key_is_never_reconciled_by_two_workers_at_once(run: Run) -> None:
    queue = new_queue()

    async def slow(key: ObjectKey) -> Result:
        await asyncio.sleep(1)
        return Result()

    reconciler = Recording(slow)
    run(Controller("test", reconciler, queue=queue, workers=8))
    keys = [ObjectKey("test", str(i)) for i in range(4)]
    for _ in range(20):
        for key in keys:
            queue.add(key)
        await asyncio.sleep(0.3)
    await asyncio.sleep(10)
    assert all(reconciler.max_running[key] == 1 for key in keys)
    assert all(len(reconciler.times(key)) >= 5 for key in keys)
    # Different keys do run concurrently.
    assert len([k for k, t in reconciler.calls if t == 0]) == 4


async def test_a_failing_key_backs_off_and_does_not_block_others(run: Run) -> None:
    async def fail_a(key: ObjectKey) -> Result:
        if key == A:
            raise RuntimeError("boom")
        return Result()

    reconciler = Recording(fail_a)
    queue = new_queue()
    run(Controller("test", reconciler, queue=queue, workers=1))
    queue.add(A)
    await asyncio.sleep(0.01)
    queue.add(B)
    await asyncio.sleep(1)
    times = reconciler.times(A)
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(times)][:6]
    assert gaps == pytest.approx([0.005, 0.01, 0.02, 0.04, 0.08, 0.16])
    assert reconciler.times(B) == pytest.approx([0.01])
    assert queue.num_requeues(A) == len(times)


async def test_success_forgets_the_backoff(run: Run) -> None:
    outcomes = iter([RuntimeError(), RuntimeError(), RuntimeError(), None, RuntimeError(), None])

    async def scripted(key: ObjectKey) -> Result:
        exc = next(outcomes)
        if exc is not None:
            raise exc
        return Result()

    reconciler = Recording(scripted)
    queue = new_queue()
    run(Controller("test", reconciler, queue=queue))
    queue.add(A)
    await asyncio.sleep(1)
    assert len(reconciler.calls) == 4
    assert queue.num_requeues(A) == 0
    queue.add(A)  # fails once more: back to the shortest delay
    start = asyncio.get_running_loop().time()
    await asyncio.sleep(1)
    assert [t - start for t in reconciler.times(A)[4:]] == pytest.approx([0, 0.005])


async def test_requeue_after_schedules_the_next_reconcile(run: Run) -> None:
    async def tick(key: ObjectKey) -> Result:
        return Result(requeue_after=10)

    reconciler = Recording(tick)
    queue = new_queue()
    run(Controller("test", reconciler, queue=queue))
    queue.add(A)
    await asyncio.sleep(35)
    assert reconciler.times(A) == [0, 10, 20, 30]


async def test_an_event_between_ticks_does_not_add_an_extra_tick(run: Run) -> None:
    async def tick(key: ObjectKey) -> Result:
        return Result(requeue_after=10)

    reconciler = Recording(tick)
    queue = new_queue()
    run(Controller("test", reconciler, queue=queue))
    queue.add(A)
    await asyncio.sleep(4)
    queue.add(A)  # a watch event: reconcile now, next tick 10 s after that
    await asyncio.sleep(25)
    assert reconciler.times(A) == [0, 4, 14, 24]


async def test_terminal_error_is_not_retried(run: Run) -> None:
    async def invalid(key: ObjectKey) -> Result:
        raise TerminalError("invalid spec")

    reconciler = Recording(invalid)
    queue = new_queue()
    run(Controller("test", reconciler, queue=queue))
    with capture_logs() as logs:
        queue.add(A)
        await asyncio.sleep(5000)
    assert reconciler.times(A) == [0]
    assert queue.num_requeues(A) == 0
    [entry] = [e for e in logs if e["event"] == "reconcile_failed_terminal"]
    assert entry["log_level"] == "error"
    assert entry["exc_info"] is True


async def test_failure_is_logged_with_the_retry_count(run: Run) -> None:
    async def boom(key: ObjectKey) -> Result:
        raise RuntimeError("boom")

    queue = new_queue()
    run(Controller("test", Recording(boom), queue=queue))
    with capture_logs() as logs:
        queue.add(A)
        await asyncio.sleep(0.012)  # 0, 0.005, 0.015: two failures
    failures = [e for e in logs if e["event"] == "reconcile_failed"]
    assert [e["retries"] for e in failures] == [1, 2]
    assert all(e["log_level"] == "error" for e in failures)


async def test_each_reconcile_has_its_own_log_context(run: Run) -> None:
    reconciler = Recording()
    queue = new_queue()
    run(Controller("canary", reconciler, queue=queue))
    queue.add(A)
    queue.add(B)
    await asyncio.sleep(1)
    first, second = reconciler.context
    assert first["controller"] == "canary"
    assert (first["namespace"], first["name"]) == ("test", "a")
    assert (second["namespace"], second["name"]) == ("test", "b")
    assert first["reconcile_id"] != second["reconcile_id"]
    assert structlog.contextvars.get_contextvars() == {}, "nothing leaks out of a reconcile"


async def test_plain_keys_and_function_reconcilers(run: Run) -> None:
    seen: list[tuple[str, dict[str, object]]] = []

    async def reconcile(key: str) -> Result:
        seen.append((key, structlog.contextvars.get_contextvars()))
        return Result()

    queue: WorkQueue[str] = WorkQueue("plain")
    task = asyncio.create_task(Controller("plain", ReconcilerFunc(reconcile), queue=queue).start())
    queue.add("x")
    await asyncio.sleep(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [(key, context)] = seen
    assert key == "x"
    assert context["key"] == "x"


async def test_cancel_lets_reconciles_in_flight_finish(looptime: float) -> None:
    finished: list[ObjectKey] = []

    async def slow(key: ObjectKey) -> Result:
        await asyncio.sleep(2)
        finished.append(key)
        return Result()

    queue = new_queue()
    controller = Controller("test", Recording(slow), queue=queue, workers=2)
    task = asyncio.create_task(controller.start())
    queue.add(A)
    await asyncio.sleep(0.5)
    queue.add(B)  # B is in flight too; C below never starts
    await asyncio.sleep(0.5)
    queue.add(ObjectKey("test", "c"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished == [A, B]
    assert looptime == 2.5
    assert queue.shutting_down


async def test_a_second_cancel_abandons_reconciles_in_flight(looptime: float) -> None:
    cancelled = asyncio.Event()

    async def stuck(key: ObjectKey) -> Result:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Result()

    queue = new_queue()
    task = asyncio.create_task(Controller("test", Recording(stuck), queue=queue).start())
    queue.add(A)
    await asyncio.sleep(1)
    task.cancel()
    await asyncio.sleep(3)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()
    assert looptime == 4


async def test_controller_returns_when_its_queue_is_shut_down() -> None:
    queue = new_queue()
    task = asyncio.create_task(Controller("test", Recording(), queue=queue, workers=3).start())
    await asyncio.sleep(1)
    await queue.shutdown()
    await asyncio.wait_for(task, 1)


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="workers"):
        Controller("test", Recording(), queue=new_queue(), workers=0)


def test_result_rejects_negative_delays() -> None:
    assert Result().requeue_after is None
    assert Result(requeue_after=0).requeue_after == 0
    with pytest.raises(ValueError, match="requeue_after"):
        Result(requeue_after=-1)


def test_controllers_need_leader_election() -> None:
    assert Controller.needs_leader_election is True


async def test_reconcile_metrics(run: Run) -> None:
    outcomes: dict[ObjectKey, Result | type[Exception]] = {
        A: Result(),
        B: Result(requeue_after=100),
        ObjectKey("test", "error"): RuntimeError,
        ObjectKey("test", "terminal"): TerminalError,
    }

    async def scripted(key: ObjectKey) -> Result:
        await asyncio.sleep(0.02)
        outcome = outcomes[key]
        if isinstance(outcome, type):
            raise outcome(key.name)
        return outcome

    recorder = Recorder(registry=CollectorRegistry(), process_collectors=False)
    metrics = recorder.controller_metrics("canary", workers=4)

    def value(name: str, **labels: str) -> float | None:
        return recorder.registry.get_sample_value(name, {"controller": "canary", **labels})

    for result in ("success", "error", "requeue", "requeue_after"):
        assert value("controller_runtime_reconcile_total", result=result) == 0
    assert value("controller_runtime_reconcile_errors_total") == 0
    assert value("controller_runtime_terminal_reconcile_errors_total") == 0
    assert value("controller_runtime_max_concurrent_reconciles") == 4
    assert value("controller_runtime_active_workers") == 0

    queue: WorkQueue[ObjectKey] = WorkQueue(
        "canary", rate_limiter=ItemExponentialFailureRateLimiter(base_delay=1),
        metrics=recorder.queue_metrics("canary"),
    )
    run(Controller("canary", Recording(scripted), queue=queue, workers=4, metrics=metrics))
    for key in outcomes:
        queue.add(key)
    await asyncio.sleep(0.01)
    assert value("controller_runtime_active_workers") == 4
    await asyncio.sleep(0.02)  # every key reconciled once; "error" not yet retried
    assert value("controller_runtime_active_workers") == 0
    assert value("controller_runtime_reconcile_total", result="success") == 1
    assert value("controller_runtime_reconcile_total", result="requeue_after") == 1
    assert value("controller_runtime_reconcile_total", result="error") == 2
    assert value("controller_runtime_reconcile_errors_total") == 2
    assert value("controller_runtime_terminal_reconcile_errors_total") == 1
    assert value("controller_runtime_reconcile_time_seconds_count") == 4
    assert value("controller_runtime_reconcile_time_seconds_sum") == pytest.approx(0.08)
    sample = recorder.registry.get_sample_value
    assert sample("workqueue_adds_total", {"name": "canary"}) == 4
    assert sample("workqueue_retries_total", {"name": "canary"}) == 1


async def test_a_controller_that_may_not_act_leaves_keys_alone(run: Run) -> None:
    reconciler = Recording()
    queue = new_queue()
    leading = False
    run(Controller("test", reconciler, queue=queue, may_act=lambda: leading))
    queue.add(A)
    await asyncio.sleep(5)
    assert reconciler.calls == []  # a lapsed leader does not act on what it sees

    leading = True
    await asyncio.sleep(2)
    assert reconciler.times(A)  # the key was kept, and is reconciled once acting is allowed
