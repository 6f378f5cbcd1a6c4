"""The manager's lifecycle: start, leader election, crashes, signals and the grace period."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import ClassVar

import pytest
from structlog.testing import capture_logs

from flaggerpy.kube.keys import ObjectKey
from flaggerpy.runtime.controller import Controller, ReconcilerFunc, Result
from flaggerpy.runtime.manager import Elector, Manager, Runnable
from flaggerpy.runtime.workqueue import WorkQueue

pytestmark = pytest.mark.looptime


class Probe:
    """A runnable that records when it started and stopped."""

    def __init__(self, name: str, *, leader: bool = False, stop_takes: float = 0) -> None:
        self.name = name
        self.needs_leader_election = leader
        self.started = asyncio.Event()
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self._stop_takes = stop_takes

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.started_at = loop.time()
        self.started.set()
        try:
            await asyncio.Future()
        finally:
            if self._stop_takes:
                await asyncio.sleep(self._stop_takes)
            self.stopped_at = loop.time()


class Crashing:
    needs_leader_election: ClassVar[bool] = False

    def __init__(self, after: float, exc: Exception) -> None:
        self._after = after
        self._exc = exc

    async def start(self) -> None:
        await asyncio.sleep(self._after)
        raise self._exc


class LeadershipLost(Exception):
    pass


class FakeElector:
    """Becomes leader after ``elect_after``; loses leadership after ``lose_after`` if given."""

    needs_leader_election: ClassVar[bool] = False

    def __init__(self, *, elect_after: float, lose_after: float | None = None) -> None:
        self.elected = asyncio.Event()
        self._elect_after = elect_after
        self._lose_after = lose_after

    async def start(self) -> None:
        await asyncio.sleep(self._elect_after)
        self.elected.set()
        if self._lose_after is None:
            await asyncio.Future()
        else:
            await asyncio.sleep(self._lose_after)
        raise LeadershipLost("lease renewal failed")


def slow_controller(seconds: float, finished: list[ObjectKey]) -> Controller[ObjectKey]:
    async def reconcile(key: ObjectKey) -> Result:
        await asyncio.sleep(seconds)
        finished.append(key)
        return Result()

    queue: WorkQueue[ObjectKey] = WorkQueue("slow")
    return Controller("slow", ReconcilerFunc(reconcile), queue=queue)


def test_contracts_are_runtime_checkable() -> None:
    assert isinstance(Probe("p"), Runnable)
    assert isinstance(Controller("c", ReconcilerFunc(_noop), queue=WorkQueue("c")), Runnable)
    assert isinstance(FakeElector(elect_after=0), Elector)


async def _noop(key: ObjectKey) -> Result:
    return Result()


async def test_stop_stops_everything_and_returns(looptime: float) -> None:
    probes = [Probe("a"), Probe("b", stop_takes=1)]
    manager = Manager(runnables=probes)
    run = asyncio.create_task(manager.run(handle_signals=False))
    await asyncio.wait_for(asyncio.gather(*(p.started.wait() for p in probes)), 1)
    await asyncio.sleep(10)
    manager.stop()
    await asyncio.wait_for(run, 5)
    assert [p.started_at for p in probes] == [0, 0]
    assert [p.stopped_at for p in probes] == [10, 11]


async def test_a_crash_stops_the_rest_and_is_reraised(looptime: float) -> None:
    probe = Probe("survivor")
    manager = Manager(runnables=[probe, Crashing(5, ValueError("broken"))])
    with capture_logs() as logs, pytest.raises(ValueError, match="broken"):
        await manager.run(handle_signals=False)
    assert probe.stopped_at == 5
    assert looptime == 5
    assert any(e["event"] == "runnable_failed" for e in logs)


async def test_several_crashes_are_reraised_as_a_group() -> None:
    manager = Manager(runnables=[Crashing(1, ValueError("a")), Crashing(1, KeyError("b"))])
    with pytest.raises(ExceptionGroup) as caught:
        await manager.run(handle_signals=False)
    assert {type(e) for e in caught.value.exceptions} == {ValueError, KeyError}


async def test_leader_only_runnables_wait_for_election(looptime: float) -> None:
    everywhere = Probe("cache")
    leader_only = Probe("controller", leader=True)
    elector = FakeElector(elect_after=30)
    manager = Manager(runnables=[everywhere, leader_only], elector=elector)
    run = asyncio.create_task(manager.run(handle_signals=False))
    await asyncio.sleep(20)
    assert everywhere.started_at == 0
    assert leader_only.started_at is None
    await asyncio.sleep(20)
    assert leader_only.started_at == 30
    manager.stop()
    await asyncio.wait_for(run, 5)
    assert leader_only.stopped_at == 40


async def test_without_an_elector_everything_starts_at_once() -> None:
    leader_only = Probe("controller", leader=True)
    manager = Manager(runnables=[leader_only])
    run = asyncio.create_task(manager.run(handle_signals=False))
    await asyncio.sleep(1)
    assert leader_only.started_at == 0
    manager.stop()
    await run


async def test_losing_leadership_stops_the_process(looptime: float) -> None:
    finished: list[ObjectKey] = []
    controller = slow_controller(1, finished)
    cache = Probe("cache")
    manager = Manager(
        runnables=[cache, controller], elector=FakeElector(elect_after=1, lose_after=10)
    )
    run = asyncio.create_task(manager.run(handle_signals=False))
    await asyncio.sleep(2)
    controller.queue.add(ObjectKey("ns", "a"))
    with pytest.raises(LeadershipLost):
        await run
    assert finished == [ObjectKey("ns", "a")]
    assert cache.stopped_at == 11
    assert controller.queue.shutting_down


async def test_sigterm_stops_gracefully_and_reconciles_in_flight_finish(looptime: float) -> None:
    finished: list[ObjectKey] = []
    controller = slow_controller(2, finished)
    server = Probe("telemetry")
    manager = Manager(runnables=[controller, server], grace_period=3)
    run = asyncio.create_task(manager.run())
    await server.started.wait()
    await asyncio.sleep(1)
    controller.queue.add(ObjectKey("ns", "in-flight"))
    await asyncio.sleep(1)
    controller.queue.add(ObjectKey("ns", "not-started"))
    os.kill(os.getpid(), signal.SIGTERM)
    signalled = float(looptime)
    await asyncio.wait_for(run, 10)  # returns normally: a signal is not an error
    assert looptime - signalled == 1, "the in-flight reconcile had 1 s left"
    assert finished == [ObjectKey("ns", "in-flight")]
    assert server.stopped_at == signalled
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, "handlers are removed"


async def test_sigint_is_handled_like_sigterm() -> None:
    probe = Probe("p")
    manager = Manager(runnables=[probe])
    run = asyncio.create_task(manager.run())
    await probe.started.wait()
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.wait_for(run, 10)
    assert probe.stopped_at is not None


async def test_grace_period_bounds_the_stop(looptime: float) -> None:
    finished: list[ObjectKey] = []
    controller = slow_controller(3600, finished)
    manager = Manager(runnables=[controller], grace_period=3)
    run = asyncio.create_task(manager.run())
    await asyncio.sleep(1)
    controller.queue.add(ObjectKey("ns", "stuck"))
    await asyncio.sleep(1)
    with capture_logs() as logs:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(run, 10)
    assert looptime == 5, "stopped 3 s after the signal, well under 5 s"
    assert finished == []
    assert any(e["event"] == "runnable_stop_forced" for e in logs)


async def test_a_second_signal_skips_the_grace_period(looptime: float) -> None:
    controller = slow_controller(3600, [])
    manager = Manager(runnables=[controller], grace_period=30)
    run = asyncio.create_task(manager.run())
    await asyncio.sleep(1)
    controller.queue.add(ObjectKey("ns", "stuck"))
    await asyncio.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.sleep(1)
    assert not run.done()
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(run, 10)
    assert looptime == 3


async def test_a_runnable_that_returns_does_not_stop_the_others() -> None:
    class Once:
        needs_leader_election = False

        async def start(self) -> None:
            return

    probe = Probe("p")
    manager = Manager(runnables=[Once(), probe])
    run = asyncio.create_task(manager.run(handle_signals=False))
    await asyncio.sleep(10)
    assert not run.done()
    assert probe.stopped_at is None
    manager.stop()
    await run


async def test_cancelling_run_cancels_everything() -> None:
    probe = Probe("p")
    run = asyncio.create_task(Manager(runnables=[probe]).run(handle_signals=False))
    await probe.started.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert probe.stopped_at is not None


async def test_a_manager_runs_once_at_a_time() -> None:
    manager = Manager(runnables=[Probe("p")])
    run = asyncio.create_task(manager.run(handle_signals=False))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already running"):
        await manager.run(handle_signals=False)
    with pytest.raises(RuntimeError, match="running"):
        manager.add(Probe("late"))
    manager.stop()
    await run


def test_negative_grace_period_is_rejected() -> None:
    with pytest.raises(ValueError, match="grace_period"):
        Manager(grace_period=-1)
