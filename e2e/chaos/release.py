"""One release of a new revision through an Istio canary, with a place for a fault.

The release is the same whether a fault is applied or not: a Deployment and its Canary (weighted
steps of 25 up to 50, analysed every 2 s on the exporter's success rate through a real
Prometheus, traffic carried by the simulator), initialised, then a new image; gates and hooks on a
recording receiver. A fault is a coroutine started with the release that watches the Canary and
strikes when its moment comes (:mod:`e2e.chaos.faults`). The run ends when the Canary has
finished the new revision (Succeeded or Failed) or, stuck, after ``within`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from e2e.chaos.outcome import AuditWindow, Outcome, conflicts, count_calls, primary_writes
from e2e.receiver import WebhookReceiver
from e2e.scenario import Scenario, container_image, deployment, patch_workload
from e2e.scenarios.mesh import istio_canary, routes
from flaggerpy.kube.config import default_user_agent
from flaggerpy.testing import ControllerProcess

__all__ = ["CANARY", "GATES", "NOTIFIER", "Fault", "Release", "Stuck"]

CANARY = "podinfo"
OLD_IMAGE = "podinfo:6.0.0"
NEW_IMAGE = "podinfo:6.0.1"
INTERVAL = 2.0
"""Seconds between analysis ticks (``analysis.interval``)."""

GATES = {
    "/confirm-rollout": ("confirm-rollout", ("Progressing", "WaitingPromotion", "Promoting",
                                             "Finalising", "Succeeded")),
    "/confirm-promotion": ("confirm-promotion", ("Promoting", "Finalising", "Succeeded")),
}
"""Gate path -> (webhook type, phases in which the gate has passed and must not be asked)."""

READY_WITHIN = 120.0
"""Seconds a controller may take to be ready (caches listed) on a loaded 2-core machine."""

NOTIFIER = "/chat"

HOOKS = {"/pre-rollout": "pre-rollout", "/post-rollout": "post-rollout", "/check": "rollout"}

Fault = Callable[["Release"], Coroutine[Any, Any, None]]


async def _aborted(controller: ControllerProcess) -> str:
    """The end of the log of a controller aborted with SIGABRT: with ``PYTHONFAULTHANDLER`` set
    (the chaos conftest sets it), Python writes every thread's stack there before it dies, so a
    controller that never got ready shows where it was (importing, connecting, listing)."""
    controller.signal(signal.SIGABRT)
    process = controller.process
    assert process is not None
    with contextlib.suppress(subprocess.TimeoutExpired):  # still alive: the teardown kills it
        await asyncio.to_thread(process.wait, 10)
    return controller.output()[-6000:]


class Stuck(AssertionError):
    """The canary did not finish the revision in time."""


@dataclass
class Release:
    """The release, its controllers and what was seen while it ran."""

    scenario: Scenario
    receiver: WebhookReceiver
    controller_args: Sequence[str] = ("-mesh-provider=istio",)
    replicas: int = 1
    rollback: bool = False
    """The new revision's success rate drops at weight 25: it is rolled back (Failed)."""
    canary_spec: dict[str, Any] = field(default_factory=dict)
    """Extra ``spec.analysis`` fields (alerts, other webhooks)."""
    notified: bool = False
    """Every alert of the run (severity info) goes to a Slack AlertProvider at the receiver's
    :data:`NOTIFIER` path."""
    pushed: asyncio.Event = field(default_factory=asyncio.Event)
    status: dict[str, Any] = field(default_factory=dict)
    phases_seen: list[str] = field(default_factory=list)
    restarts: int = 0
    passed_at: dict[str, int] = field(default_factory=dict)
    """Gate path -> how many calls it had when the Canary was first seen past it."""

    @property
    def name(self) -> str:
        return CANARY

    @property
    def controllers(self) -> list[ControllerProcess]:
        return [c for c in self.scenario.controllers if c.exit_code() is None]

    def webhooks(self) -> list[dict[str, Any]]:
        hooks = [{"name": kind, "type": kind, "url": self.receiver.url(path), "timeout": "5s"}
                 for path, (kind, _) in GATES.items()]
        hooks += [{"name": kind, "type": kind, "url": self.receiver.url(path), "timeout": "5s"}
                  for path, kind in HOOKS.items()]
        return hooks

    def notifier(self) -> list[dict[str, Any]]:
        if not self.notified:
            return []
        return [{"apiVersion": "flagger.app/v1beta1", "kind": "AlertProvider",
                 "metadata": {"name": "chat"},
                 "spec": {"type": "slack", "channel": "general",
                          "address": self.receiver.url(NOTIFIER)}}]

    def manifest(self) -> dict[str, Any]:
        if self.notified:
            self.canary_spec.setdefault("alerts", [
                {"name": "chat", "severity": "info", "providerRef": {"name": "chat"}}])
        metrics = [{"name": "app-success-rate", "templateRef": {"name": "app-success-rate"},
                    "thresholdRange": {"min": 90}, "interval": "30s"}]
        return istio_canary(CANARY, maxWeight=50, stepWeight=25, threshold=5, metrics=metrics,
                            webhooks=self.webhooks(), **self.canary_spec)

    async def start_controllers(self) -> None:
        for _ in range(self.replicas):
            await self.start_controller()

    async def start_controller(self) -> ControllerProcess:
        """As :meth:`Scenario.start_controller`, with a wait for readiness that allows for a
        loaded machine: a restarted controller lists every cache again before it is ready."""
        scenario = self.scenario
        controller = ControllerProcess(
            kubeconfig=scenario.cluster.kubeconfig,
            args=[f"-namespace={scenario.namespace}",
                  f"-metrics-server={scenario.prometheus_url}",
                  "-min-analysis-interval=1s", *self.controller_args],
            name=f"controller-{len(scenario.controllers)}",
        )
        scenario.controllers.append(controller.start())
        try:
            await asyncio.to_thread(controller.wait_ready, timeout=READY_WITHIN)
        except TimeoutError:
            raise TimeoutError(f"{controller.name} not ready after {READY_WITHIN:g}s; where it "
                               f"was:\n{await _aborted(controller)}") from None
        return controller

    async def kill(self, controller: ControllerProcess | None = None) -> None:
        """SIGKILLs ``controller`` (the only one by default) and starts a replacement."""
        victim = controller or self.controllers[0]
        victim.signal(signal.SIGKILL)
        await asyncio.to_thread(victim.process.wait, 10)  # type: ignore[union-attr]
        self.restarts += 1
        await self.start_controller()

    async def wait_for(self, check: Callable[[dict[str, Any]], bool], *,
                       within: float = 120.0, poll: float = 0.05) -> dict[str, Any]:
        """Until the last status the release saw satisfies ``check``; returns it."""
        deadline = time.monotonic() + within
        while not check(self.status):
            if time.monotonic() > deadline:
                raise Stuck(f"condition not met in {within}s; status {self.status}")
            await asyncio.sleep(poll)
        return self.status

    async def run(self, fault: Fault | None = None, *, within: float = 180.0) -> Outcome:
        """The whole release, with ``fault`` running beside it; the outcome once it ended."""
        scenario = self.scenario
        window = AuditWindow.open(scenario.cluster.audit_log, scenario.namespace)
        await scenario.set_success_rate(CANARY, 99)
        await self.start_controllers()
        started = time.monotonic()
        watcher = asyncio.create_task(self._watch())
        striking = asyncio.create_task(fault(self)) if fault is not None else None
        try:
            await scenario.apply(*self.notifier(), deployment(CANARY, image=OLD_IMAGE),
                                 self.manifest())
            await self.wait_for(lambda s: s.get("phase") == "Initialized", within=90)
            await patch_workload(scenario, CANARY, {"spec": {"template": {"spec": {
                "containers": [{"name": CANARY, "image": NEW_IMAGE}]}}}})
            self.pushed.set()
            if self.rollback:
                await self.wait_for(lambda s: s.get("canaryWeight", 0) >= 25)
                await scenario.set_success_rate(CANARY, 50)
            await self.wait_for(self._finished, within=within)
            if striking is not None:
                await asyncio.wait_for(striking, timeout=60)
        except Stuck as stuck:
            logs = "\n".join(c.output()[-3000:] for c in scenario.controllers)
            raise Stuck(f"{stuck}; phases seen {self.phases_seen}\n{logs}") from None
        finally:
            watcher.cancel()
            if striking is not None and not striking.done():
                striking.cancel()
        return await self._measure(window, seconds=time.monotonic() - started)

    def _finished(self, status: dict[str, Any]) -> bool:
        """The new revision's run is over: Succeeded or Failed, after the image was pushed."""
        return self.pushed.is_set() and status.get("phase") in ("Succeeded", "Failed") and (
            status.get("lastPromotedSpec") == status.get("lastAppliedSpec")
            or status.get("phase") == "Failed")

    async def _watch(self) -> None:
        """Keeps :attr:`status` current and notes, per gate, the calls made before it passed."""
        while True:
            self.status = await self.scenario.status(CANARY)
            phase = self.status.get("phase") or ""
            if not self.phases_seen or self.phases_seen[-1] != phase:
                self.phases_seen.append(phase)
            if self.pushed.is_set():
                for path, (_, past) in GATES.items():
                    if phase in past and path not in self.passed_at:
                        self.passed_at[path] = len(self._calls(path))
            await asyncio.sleep(0.05)

    def _calls(self, path: str) -> list[int]:
        return [i for i, call in enumerate(self.receiver.calls) if call.path == path]

    async def _measure(self, window: AuditWindow, *, seconds: float) -> Outcome:
        scenario = self.scenario
        status = await scenario.status(CANARY)
        events = await asyncio.to_thread(window.events)
        agent = default_user_agent()
        canary_deployment = await scenario.get("deployment", CANARY) or {}
        asked_after = {path: len(self._calls(path)) - count
                       for path, count in self.passed_at.items()}
        return Outcome(
            phase=str(status.get("phase")),
            routes=routes(await scenario.get("virtualservices.networking.istio.io", CANARY)),
            primary_image=container_image(await scenario.get("deployment", f"{CANARY}-primary")),
            canary_replicas=int(canary_deployment.get("spec", {}).get("replicas", -1)),
            primary_writes=primary_writes(events, primary=f"{CANARY}-primary", user_agent=agent),
            phases_seen=list(self.phases_seen),
            gate_calls=count_calls([call.path for call in self.receiver.calls]),
            gates_asked_after_passing=asked_after,
            conflicts=conflicts(events, user_agent=agent),
            restarts=self.restarts,
            seconds=round(seconds, 1),
        )
