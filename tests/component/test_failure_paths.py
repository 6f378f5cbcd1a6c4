"""Failure paths the bad-input suite found (issue 20), driven through the real engine classes.

- An analysis interval that passes the CRD's pattern but is no Go duration runs at Flagger's
  60 s default, and the Canary gets one Warning Event naming the field, once per spec change.
- A write the API server refuses for good (422 Invalid) is said once, without a traceback,
  and tried again at the analysis interval, not with the work queue's error backoff.
- Event texts are the error's own text, never prefixed with a Python class name.

The real objects are covered by ``tests/integration/test_bad_input.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import structlog

from flaggerpy import kube, plugins
from flaggerpy.canary import verify
from flaggerpy.canary.lifecycle import Lifecycle, permanent_refusal
from flaggerpy.canary.reconciler import CanaryReconciler
from flaggerpy.errors import RouterError
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.models import Canary
from flaggerpy.routing import Capabilities, Weights
from flaggerpy.runtime.controller import Result
from flaggerpy.settings import Settings
from flaggerpy.telemetry import Recorder

NAME, NAMESPACE, PROVIDER = "podinfo", "test", "failure-paths-test"
KEY = ObjectKey(NAMESPACE, NAME)


class Store:
    def __init__(self, canary: dict[str, Any]) -> None:
        self.canary = canary

    async def get(self, resource: Any, *, namespace: str, name: str) -> dict[str, Any] | None:
        return self.canary

    async def patch(self, resource: Any, *, namespace: str, name: str, patch: dict[str, Any],
                    subresource: str | None = None) -> dict[str, Any]:
        if subresource == "status":
            self.canary = {**self.canary,
                           "status": {**(self.canary.get("status") or {}), **patch["status"]}}
        return self.canary


class Events:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    async def normal(self, obj: Any, message: str, **_: Any) -> None:
        pass

    async def warning(self, obj: Any, message: str, **_: Any) -> None:
        self.warnings.append(message)


class Router:
    capabilities: ClassVar[Capabilities] = Capabilities(needs_services=False)

    def __init__(self, *, ctx: Any, variant: str = "") -> None:
        pass

    async def reconcile(self, canary: Canary) -> None:
        """Nothing to reconcile."""

    async def set_routes(self, canary: Canary, weights: Weights) -> None:
        """Nothing to route."""

    async def get_routes(self, canary: Canary) -> Weights:
        return Weights.all_primary()

    async def finalize(self, canary: Canary) -> None:
        """Nothing to restore."""


@pytest.fixture(autouse=True)
def router() -> Iterator[None]:
    plugins.routers.register(PROVIDER, Router)
    yield
    plugins.routers.unregister(PROVIDER)


def canary(interval: str = "1m", generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": "u-1", "resourceVersion": "7",
                     "generation": generation},
        "spec": {"provider": PROVIDER,
                 "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
                 "service": {"port": 9898},
                 "analysis": {"interval": interval, "threshold": 5, "stepWeight": 10}},
    }


def invalid(message: str = 'Service "podinfo" is invalid: metadata.labels: Invalid value: '
            '"bad key!"') -> RouterError:
    """A RouterError as the routers raise it: the store's 422 chained."""
    try:
        raise kube.UnprocessableError(422, "Invalid", message)
    except kube.UnprocessableError as cause:
        try:
            raise RouterError(str(cause)) from cause
        except RouterError as error:
            return error


def make(store: Store, events: Events, *, lifecycle: bool) -> tuple[CanaryReconciler,
                                                                       Lifecycle]:
    settings = Settings(controller={"min_analysis_interval": 1.0})
    telemetry = Recorder(process_collectors=False)
    engine = Lifecycle(store=store, settings=settings,  # type: ignore[arg-type]
                       telemetry=telemetry, events=events,  # type: ignore[arg-type]
                       webhooks=None, analyzer=None, alerter=None)  # type: ignore[arg-type]
    reconciler = CanaryReconciler(store=store, events=events,  # type: ignore[arg-type]
                                  settings=settings, telemetry=telemetry,
                                  lifecycle=engine if lifecycle else None)
    return reconciler, engine


# -- 1: durations Go cannot parse ----------------------------------------------------------------


@pytest.mark.parametrize("interval", ["1s-5x", "9" * 30 + "s"])
def test_an_unreadable_interval_is_named_with_the_default_used(interval: str) -> None:
    warnings = verify.unreadable_durations(Canary.model_validate(canary(interval)))
    assert len(warnings) == 1
    assert "spec.analysis.interval" in warnings[0]
    assert repr(interval) in warnings[0]
    assert "1m0s" in warnings[0]
    assert Canary.model_validate(canary(interval)).get_analysis_interval() == 60.0  # as Flagger


@pytest.mark.parametrize("interval", ["", "30s", "1m30s", "0s"])
def test_a_readable_interval_is_not_warned_about(interval: str) -> None:
    assert verify.unreadable_durations(Canary.model_validate(canary(interval))) == []


async def test_an_unreadable_interval_is_said_once_per_spec_change() -> None:
    store, events = Store(canary("1s-5x")), Events()
    reconciler, _ = make(store, events, lifecycle=False)
    for _ in range(3):
        assert await reconciler.reconcile(KEY) == Result(requeue_after=60.0)
    assert len(events.warnings) == 1, events.warnings
    assert "spec.analysis.interval '1s-5x'" in events.warnings[0]
    assert store.canary["status"]["phase"] == "Initializing"  # not failed: it runs at 60 s

    store.canary = {**store.canary, "metadata": {**store.canary["metadata"], "generation": 2}}
    await reconciler.reconcile(KEY)
    await reconciler.reconcile(KEY)
    assert len(events.warnings) == 2, events.warnings

    store.canary = canary("30s", generation=3)  # fixed: nothing more to say
    await reconciler.reconcile(KEY)
    assert len(events.warnings) == 2, events.warnings


# -- 2 and 3: a permanent refusal, and Event texts -----------------------------------------------


def test_a_422_behind_a_router_error_is_a_permanent_refusal() -> None:
    refusal = permanent_refusal(invalid())
    assert refusal is not None
    assert refusal.status == 422
    assert permanent_refusal(kube.BadRequestError(400, "BadRequest", "bad patch")) is not None
    assert permanent_refusal(kube.ServerError(500, "InternalError", "etcd")) is None
    assert permanent_refusal(kube.ConflictError(409, "Conflict", "modified")) is None
    assert permanent_refusal(ValueError("x")) is None


async def test_a_refused_write_is_said_once_and_retried_at_the_interval(
        monkeypatch: pytest.MonkeyPatch) -> None:
    store, events = Store(canary("30s")), Events()
    _, engine = make(store, events, lifecycle=True)

    async def refused(*args: Any, **kwargs: Any) -> None:
        raise invalid()

    monkeypatch.setattr(engine, "_prepare", refused)
    model = Canary.model_validate(store.canary)
    with structlog.testing.capture_logs() as logs:
        results = [await engine.advance(store.canary, model, provider=PROVIDER)
                   for _ in range(3)]
    assert results == [Result(requeue_after=30.0)] * 3  # no exception: no error backoff
    assert len(events.warnings) == 1, events.warnings
    assert events.warnings[0].startswith('422 Invalid: Service "podinfo" is invalid')
    assert not any("exc_info" in entry for entry in logs), logs
    refusals = [entry for entry in logs if entry["event"] == "reconcile_refused"]
    assert [entry["error"] for entry in refusals] == ["RouterError"], logs

    async def other(*args: Any, **kwargs: Any) -> None:
        raise invalid('Service "podinfo" is invalid: spec.ports[0].name: Invalid value')

    monkeypatch.setattr(engine, "_prepare", other)
    await engine.advance(store.canary, model, provider=PROVIDER)
    assert len(events.warnings) == 2, events.warnings  # a new refusal is news


async def test_a_passing_error_is_shown_without_its_class_name_and_retried(
        monkeypatch: pytest.MonkeyPatch) -> None:
    store, events = Store(canary("30s")), Events()
    _, engine = make(store, events, lifecycle=True)

    async def failing(*args: Any, **kwargs: Any) -> None:
        raise RouterError("500 InternalError: etcd leader changed")

    monkeypatch.setattr(engine, "_prepare", failing)
    with pytest.raises(RouterError):
        await engine.advance(store.canary, Canary.model_validate(store.canary),
                             provider=PROVIDER)
    assert events.warnings == ["500 InternalError: etcd leader changed"]
