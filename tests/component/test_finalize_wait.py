"""revertOnDeletion waits for the restored target with requeue_after, never by sleeping.

Flagger checks the target up to 4 times, 3 s apart doubling (each capped at the analysis
interval), before it restores the routes and lets the Canary go. Here each check is one
reconcile: the reconcile returns ``Result(requeue_after=...)`` until the next check is due, and
the schedule is anchored on ``status.lastTransitionTime`` (when the Canary became Terminating),
so it needs no memory and survives a restart. The tests move that timestamp back to stand for
the seconds that passed, and drive the real :class:`CanaryReconciler` and :class:`Lifecycle`
with stand-ins for the store, the workload controller, Events and the router; the real objects
are covered by ``tests/integration/test_lifecycle.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
import structlog

from flaggerpy import plugins
from flaggerpy.canary import lifecycle as lifecycle_module
from flaggerpy.canary.lifecycle import Lifecycle
from flaggerpy.canary.reconciler import CanaryReconciler
from flaggerpy.canary.workloads import NotReadyError, WorkloadMetadata
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.models import FINALIZER, Canary
from flaggerpy.routing import Capabilities, Weights
from flaggerpy.runtime.controller import Result
from flaggerpy.settings import Settings
from flaggerpy.telemetry import Recorder

NAME, NAMESPACE, PROVIDER = "podinfo", "test", "finalize-test"
KEY = ObjectKey(NAMESPACE, NAME)


class Store:
    """The Canary being deleted: reads it, merges status patches, records finalizer patches."""

    def __init__(self, canary: dict[str, Any]) -> None:
        self.canary = canary
        self.finalizer_patches: list[list[str]] = []

    async def get(self, resource: Any, *, namespace: str, name: str) -> dict[str, Any] | None:
        return self.canary

    async def patch(self, resource: Any, *, namespace: str, name: str, patch: dict[str, Any],
                    subresource: str | None = None) -> dict[str, Any]:
        if subresource == "status":
            self.canary = {**self.canary,
                           "status": {**(self.canary.get("status") or {}), **patch["status"]}}
        else:
            self.finalizer_patches.append(patch["metadata"]["finalizers"])
        return self.canary

    def terminating_since(self, seconds: float) -> None:
        """As if the Canary had become Terminating ``seconds`` ago."""
        then = datetime.now(UTC) - timedelta(seconds=seconds)
        self.canary["status"]["lastTransitionTime"] = then.strftime("%Y-%m-%dT%H:%M:%SZ")


class Workload:
    """A target that is not ready until told so; counts the readiness checks."""

    def __init__(self) -> None:
        self.ready = False
        self.checks = 0
        self.finalized = 0

    async def finalize(self, canary: Canary) -> None:
        self.finalized += 1

    async def is_canary_ready(self, canary: Canary) -> None:
        self.checks += 1
        if not self.ready:
            raise NotReadyError(f'deployment "{NAME}" not ready: 0 of 3 updated replicas')

    async def get_metadata(self, canary: Canary) -> WorkloadMetadata:
        return WorkloadMetadata(label="app", label_value=NAME)


class Events:
    def __init__(self) -> None:
        self.recorded: list[str] = []

    async def normal(self, obj: Any, message: str, **_: Any) -> None:
        self.recorded.append(message)

    async def warning(self, obj: Any, message: str, **_: Any) -> None:
        self.recorded.append(f"Warning: {message}")


class Router:
    """Routes without Services of its own; counts its finalize calls."""

    capabilities: ClassVar[Capabilities] = Capabilities(needs_services=False)
    finalized: ClassVar[int] = 0

    def __init__(self, *, ctx: Any, variant: str = "") -> None:
        pass

    async def reconcile(self, canary: Canary) -> None:
        """Nothing to reconcile."""

    async def set_routes(self, canary: Canary, weights: Weights) -> None:
        """Nothing to route."""

    async def get_routes(self, canary: Canary) -> Weights:
        return Weights.all_primary()

    async def finalize(self, canary: Canary) -> None:
        type(self).finalized += 1


def deleted_canary(interval: str = "1m") -> dict[str, Any]:
    return {
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": "u-1", "resourceVersion": "7",
                     "finalizers": [FINALIZER], "deletionTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"provider": PROVIDER, "revertOnDeletion": True,
                 "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
                 "service": {"port": 9898},
                 "analysis": {"interval": interval, "threshold": 5, "stepWeight": 10}},
        "status": {"phase": "Succeeded"},
    }


class Deletion:
    def __init__(self, canary: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
        self.store, self.workload, self.events = Store(canary), Workload(), Events()
        monkeypatch.setattr(lifecycle_module, "workload_controller",
                            lambda canary, **_: self.workload)
        # -min-analysis-interval 1s, so an analysis interval shorter than the waits can be set
        settings = Settings(controller={"min_analysis_interval": 1.0})
        telemetry = Recorder(process_collectors=False)
        lifecycle = Lifecycle(store=self.store, settings=settings,  # type: ignore[arg-type]
                              telemetry=telemetry, events=self.events,  # type: ignore[arg-type]
                              webhooks=None, analyzer=None, alerter=None)  # type: ignore[arg-type]
        self.reconciler = CanaryReconciler(
            store=self.store, events=self.events, settings=settings,  # type: ignore[arg-type]
            telemetry=telemetry, lifecycle=lifecycle)

    async def reconcile(self) -> Result:
        started = time.monotonic()
        result = await self.reconciler.reconcile(KEY)
        assert time.monotonic() - started < 0.5, "the reconcile held its worker"
        return result


def waits(result: Result) -> float:
    """The seconds a reconcile asked to be called back after; fails if it did not ask."""
    assert result.requeue_after is not None, result
    return result.requeue_after


@pytest.fixture
def deletion(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Deletion]]:
    plugins.routers.register(PROVIDER, Router)
    Router.finalized = 0
    yield lambda canary: Deletion(canary, monkeypatch)
    plugins.routers.unregister(PROVIDER)


async def test_an_unready_target_requeues_on_flaggers_schedule_then_gives_up(
        deletion: Callable[..., Deletion]) -> None:
    run = deletion(deleted_canary())

    first = await run.reconcile()
    assert 2 < waits(first) <= 3
    assert run.store.canary["status"]["phase"] == "Terminating"
    assert run.store.finalizer_patches == []  # the Canary stays while its target is not back
    assert Router.finalized == 0  # the routes are restored only after the wait

    # Each check is due 3, 6 and 12 s after the one before: 3, 9 and 21 s after Terminating.
    for since, due in ((3, 9), (9, 21)):
        run.store.terminating_since(since)
        assert due - since - 1 < waits(await run.reconcile()) <= due - since, since
    assert run.store.finalizer_patches == []

    run.store.terminating_since(21)
    with structlog.testing.capture_logs() as logs:
        last = await run.reconcile()
    assert last == Result()
    assert run.workload.checks == 4  # Flagger's 4 tries
    assert any(entry["event"] == "target_not_ready_after_revert" for entry in logs), logs
    assert Router.finalized == 1
    assert run.store.finalizer_patches == [[]]
    name = f"{NAME}.{NAMESPACE}"
    assert run.events.recorded == [f"Terminating canary {name}", f"Terminated canary {name}"]


async def test_a_target_ready_on_a_later_check_lets_the_canary_go_then(
        deletion: Callable[..., Deletion]) -> None:
    run = deletion(deleted_canary())
    assert 2 < waits(await run.reconcile()) <= 3
    run.workload.ready = True
    run.store.terminating_since(3)
    assert await run.reconcile() == Result()
    assert run.workload.checks == 2
    assert Router.finalized == 1
    assert run.store.finalizer_patches == [[]]


async def test_a_ready_target_needs_no_wait(deletion: Callable[..., Deletion]) -> None:
    run = deletion(deleted_canary())
    run.workload.ready = True
    assert await run.reconcile() == Result()
    assert run.workload.checks == 1
    assert run.store.finalizer_patches == [[]]


async def test_the_waits_are_capped_at_the_analysis_interval(
        deletion: Callable[..., Deletion]) -> None:
    run = deletion(deleted_canary(interval="2s"))
    assert 1 < waits(await run.reconcile()) <= 2
    run.store.terminating_since(4)  # checks due at 2, 4 and 6 s
    assert 1 < waits(await run.reconcile()) <= 2
    run.store.terminating_since(6)
    assert await run.reconcile() == Result()
    assert run.workload.checks == 3
