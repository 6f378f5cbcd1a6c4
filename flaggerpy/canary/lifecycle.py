"""One analysis tick of one canary: Flagger's ``advanceCanary`` (spec §2.3), step by step.

The engine is level-based: everything it needs comes from the Canary's status (phase, weight,
iterations, failed checks, the applied and promoted revision hashes) and from the informer caches,
so the process can be killed at any instant and the next reconcile continues where the status
says the canary is. A step that already happened is not repeated: promotion copies the same spec
again at most (idempotent), a gate that was passed is not asked again once the phase moved on.

Ticks are paced by the work queue (``Result(requeue_after=interval)``). Watch events on the
target, its configs and the primary enqueue the canary at once, so a new revision starts a run
without waiting for the interval; inside a run, an early reconcile only re-checks for a new
revision and otherwise waits for the next tick. A canary at rest (Initialized, Succeeded,
Failed) is not ticked: the edits of others to the objects it owns or names enqueue it (drift
is repaired on the event), and :data:`REST_RESYNC_SECONDS` catches what no watch reports.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from flaggerpy import kube, plugins
from flaggerpy.canary import alerting, decisions, status as canary_status, steering, strategies
from flaggerpy.canary.alert_templates import CheckInfo
from flaggerpy.canary.alerting import Alerter, AlertMessage, Dispatcher
from flaggerpy.canary.autoscalers import PrimaryAutoscaler
from flaggerpy.canary.knative_services import KnativeServiceController
from flaggerpy.canary.metrics_analysis import MetricsAnalyzer
from flaggerpy.canary.services import KubernetesNoopRouter, new_kubernetes_router
from flaggerpy.canary.strategies import Action, Step
from flaggerpy.canary.targets import workload_controller
from flaggerpy.canary.webhooks import WebhookCaller
from flaggerpy.canary.workloads import (
    NotReadyError,
    TargetNotFoundError,
    UnsupportedTargetError,
    WorkloadController,
    WorkloadMetadata,
    parse_time,
)
from flaggerpy.errors import PluginError
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.models import Canary, CanaryPhase, DeploymentStrategy, HookType
from flaggerpy.models.canary_command import Action as SteerAction, SteeringStatus
from flaggerpy.models.status import ANALYSIS_HISTORY_LIMIT, PROMOTED_CONDITION
from flaggerpy.routing import (
    Capabilities,
    KubernetesRouter,
    ProviderContext,
    Router,
    Traffic,
    Weights,
    capabilities_of,
)
from flaggerpy.runtime.controller import Result
from flaggerpy.runtime.events import EventRecorder
from flaggerpy.settings import Settings
from flaggerpy.telemetry import Recorder

log = structlog.get_logger(__name__)

ACTIVE_PHASES = frozenset({
    CanaryPhase.PROGRESSING, CanaryPhase.WAITING_PROMOTION,
    CanaryPhase.PROMOTING, CanaryPhase.FINALISING,
})
"""Phases in which a tick advances the run (Flagger's ``shouldAdvance`` without a change)."""
REVISION_PHASES = frozenset({CanaryPhase.PROGRESSING, CanaryPhase.WAITING_PROMOTION})
"""Phases in which a new revision restarts the run (Promoting/Finalising finish first)."""
PACED_PHASES = ACTIVE_PHASES | {CanaryPhase.WAITING}
"""Phases whose ticks wait for the analysis interval; a new revision elsewhere acts at once."""
REST_PHASES = frozenset({CanaryPhase.INITIALIZED, CanaryPhase.SUCCEEDED, CanaryPhase.FAILED})
"""Phases in which nothing happens until something changes: a new revision, a spec change, or
an edit of an object the canary owns or names, each of which a watch reports at once."""
REST_RESYNC_SECONDS = 600.0
"""How often a canary at rest is reconciled without any change (Flagger: every interval). The
objects it owns or names are watched (drift is repaired at once), so this only catches what no
watch reports: an object neither owned by nor named in its Canary (a cluster-scoped one)."""
ROLLBACK_HOOK_PHASES = frozenset({
    CanaryPhase.PROGRESSING, CanaryPhase.WAITING, CanaryPhase.WAITING_PROMOTION,
})
REVERT_READY_DELAYS = (3.0, 6.0, 12.0)
"""Seconds between the 4 readiness checks of the target restored at deletion, each capped at
the analysis interval (Flagger's backoff: 3 s, factor 2, 4 steps)."""


@dataclass
class TickState:
    """What the engine keeps in memory per canary: only pacing, never progress.

    Losing it (a restart) costs at most one early tick; everything else is in the status.
    """

    next_tick: float = 0.0
    router: Router | None = None
    router_provider: str = ""
    router_capabilities: Capabilities = field(default_factory=Capabilities)
    """What :attr:`router` declares for its provider string's variant."""
    last_failure: str | None = None
    """What made the last check fail (a metric or a webhook), for the rollback alert and status."""
    unwritten: list[decisions.Decision] = field(default_factory=list)
    """Checks explained but not yet in ``status.analysisHistory``: they go with the tick's
    next status write (a restart loses at most these)."""
    said: dict[str, tuple[str, float]] = field(default_factory=dict)
    """Events recorded by the checks every reconcile runs before the tick (the providers
    check and the readiness wait while initialising, a missing object): by topic, the message
    and when (monotonic). A watch event re-checks; only news is recorded again."""


@dataclass
class Tick:
    """The objects one tick works with, re-read after each status write."""

    obj: dict[str, Any]
    canary: Canary
    provider: str
    workload: WorkloadController
    services: KubernetesRouter
    router: Router
    autoscaler: PrimaryAutoscaler | None
    state: TickState
    started: float = field(default_factory=time.monotonic)
    at_rest: bool = False
    """Set by a tick that found the canary at rest (:data:`REST_PHASES`, no new revision)."""
    apex_label: str = ""
    """The selector label the apex Service carries with its own name, which Flagger's routers
    also put on the routing objects (see :func:`as_routers_see_it`); empty when the engine
    generates no Services."""

    @property
    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.obj.get("status") or {}
        return status

    @property
    def phase(self) -> CanaryPhase:
        return CanaryPhase(self.status.get("phase") or "")

    @property
    def kind(self) -> str:
        return self.canary.spec.target_ref.kind

    @property
    def capabilities(self) -> Capabilities:
        """What the router can do: the engine's only knowledge of which router it drives."""
        return self.state.router_capabilities

    @property
    def name(self) -> str:
        """``name.namespace``, as Flagger's events and logs spell a canary."""
        return f"{self.canary.name}.{self.canary.namespace}"

    def counter(self, key: str) -> int:
        return int(self.status.get(key) or 0)


class Lifecycle:
    """Advances canaries; one instance per controller process."""

    def __init__(
        self,
        *,
        store: kube.ObjectStore,
        mesh_store: kube.ObjectStore | None = None,  # -kubeconfig-service-mesh's cluster
        settings: Settings,
        telemetry: Recorder,
        events: EventRecorder,
        webhooks: WebhookCaller,
        analyzer: MetricsAnalyzer,
        alerter: Alerter,
        steerer: steering.Steering | None = None,  # None: CanaryCommands are not served
    ) -> None:
        self._store = store
        self._steerer = steerer
        self._mesh_store = mesh_store
        self._settings = settings
        self._telemetry = telemetry
        self._events = events
        self._webhooks = webhooks
        self._analyzer = analyzer
        self._alerter = alerter
        self._ticks: dict[ObjectKey, TickState] = {}
        # Event webhooks are posted in the background, in order per canary, so a slow or
        # unreachable sink never holds up a tick.
        self._event_hooks = Dispatcher(name="event-webhooks")

    # -- entry -------------------------------------------------------------------------------

    def _interval(self, canary: Canary) -> float:
        return canary.get_analysis_interval(
            minimum=self._settings.controller.min_analysis_interval
        )

    def forget(self, key: ObjectKey) -> None:
        """The Canary is gone: drop its pacing state."""
        self._ticks.pop(key, None)

    async def advance(self, obj: dict[str, Any], canary: Canary, *, provider: str) -> Result:
        """Runs one tick (or only the revision check, if the tick is not due yet)."""
        key = ObjectKey(canary.namespace, canary.name)
        interval = self._interval(canary)
        state = self._ticks.setdefault(key, TickState())
        if self._steerer is not None and self._steerer.has_pending(key):
            obj = await self._steerer.answer(obj, say=self._say)
            canary = Canary.model_validate(obj)
        if canary.spec.suspend:
            await self._normal(obj, "skipping canary run as object is suspended")
            return Result(requeue_after=interval)
        try:
            tick = await self._prepare(obj, canary, provider=provider, state=state)
            if tick is None:
                return Result(requeue_after=interval)
            steer = steering.state_of(tick.status)
            if steer.request is not None:
                # A person's promote, abort, deny or retry: carried out now, not at the tick.
                await self._carry_out(tick, steer)
                state.next_tick = time.monotonic() + interval
                return Result(requeue_after=interval)
            now = time.monotonic()
            if tick.phase in PACED_PHASES and now < state.next_tick:
                # An early reconcile (a watch event): only a new revision is worth acting on now.
                if tick.phase in REVISION_PHASES and await self._revision_changed(tick):
                    await self._restart(tick)
                return Result(requeue_after=state.next_tick - now)
            state.next_tick = self._next_tick(tick.phase, due=state.next_tick, now=now,
                                              interval=interval)
            try:
                await self._tick(tick)
            finally:
                self._telemetry.set_duration(name=canary.spec.target_ref.name,
                                             namespace=canary.namespace,
                                             seconds=time.monotonic() - tick.started)
        except Exception as error:
            refusal = permanent_refusal(error)
            if refusal is None:
                # Shown on the Canary (the error's text, as Flagger's Events; the class goes
                # to the log with the traceback), then retried with backoff by the work queue.
                await self._warn(obj, str(error) or type(error).__name__)
                raise
            # The API server refuses this write for what it is (an invalid label, a name
            # that is not DNS, an object too large): the same write is refused on every
            # retry, so it is said once, without a traceback, and tried again at the
            # interval, as Flagger's next tick would, until the spec changes.
            message = str(error)
            if _news(state, "refused", message, within=float("inf")):
                log.warning("reconcile_refused", error=type(error).__name__,
                            status=refusal.status, reason=refusal.reason)
                await self._warn(obj, message)
            return Result(requeue_after=interval)
        state.said.pop("refused", None)
        if tick.at_rest and self._mesh_store is None:
            # Drift is seen by watches (the routing objects live here, owned by the Canary):
            # a canary at rest costs nothing until something changes.
            return Result(requeue_after=self._jittered(max(interval, REST_RESYNC_SECONDS)))
        # Counted from when the tick was due, not from when it ended: ticks keep their cadence.
        return Result(requeue_after=max(0.0, state.next_tick - time.monotonic()))

    def _next_tick(self, phase: CanaryPhase, *, due: float, now: float, interval: float) -> float:
        """When the tick after this one is due, recording how late this one is.

        A run's ticks keep a fixed cadence (Flagger's ticker), so a slow tick or a busy worker
        does not push every later step back. A run's first tick comes at once (the revision is
        seen by a watch); the second comes after the interval plus a random share of it, so
        thousands of canaries revised together spread their ticks instead of all asking for a
        worker in the same second, interval after interval.
        """
        if phase in PACED_PHASES and due:
            self._telemetry.observe_tick_lateness(now - due)
            if now - due < interval:
                return due + interval
            return now + interval
        return now + self._jittered(interval)

    def _jittered(self, seconds: float) -> float:
        """``seconds`` plus a random share of them, up to ``-analysis-jitter``."""
        return seconds * (1 + self._settings.controller.analysis_jitter * random.random())

    async def orphaned(self, key: ObjectKey) -> None:
        """The Canary is gone (or never was): its pending CanaryCommands are rejected."""
        if self._steerer is not None:
            await self._steerer.reject_all(
                key, f"no canary named {key.name} in namespace {key.namespace}")

    async def finalize(
        self, obj: dict[str, Any], canary: Canary, *, provider: str
    ) -> float | None:
        """revertOnDeletion (spec §2.8): give the target its traffic back before the Canary goes.

        The primary, the generated Services and configs are owned by the Canary and removed by
        the garbage collector; what is restored here is what the user owns.

        Returns the seconds to wait while the restored target is not ready yet (the work queue
        brings the Canary back then; every step before the wait is idempotent), or None once
        finalized and the finalizer may go.

        Deletion always completes: what cannot be given back is skipped with a Warning Event
        naming it, never retried forever. A target deleted first (``helm uninstall`` of both)
        leaves nothing to restore but the routing; a router that is not installed here (a
        Canary migrated from Flagger naming another mesh) leaves its routing objects as they
        are; a target kind no workload controller handles leaves the target alone.
        """
        key = ObjectKey(canary.namespace, canary.name)
        state = self._ticks.setdefault(key, TickState())
        name = f"{canary.name}.{canary.namespace}"
        if (obj.get("status") or {}).get("phase") != CanaryPhase.TERMINATING:
            obj = await self._patch_status(canary, canary_status.set_phase_patch(
                current=obj.get("status"), phase=CanaryPhase.TERMINATING,
                kind=canary.spec.target_ref.kind,
                analysis_iterations=canary.spec.analysis.iterations or 0,
            ))
            await self._normal(obj, f"Terminating canary {name}")
        autoscaler = self._autoscaler(canary)
        if autoscaler is not None:
            try:
                await autoscaler.resume(canary)  # the target is the user's again, scaler included
            except TargetNotFoundError as error:
                # Gone already: nothing to resume, and no reason to keep the Canary from going.
                log.info("target_scaler_gone", canary=name, error=str(error))
        restored = await self._restore_target(obj, canary)
        if restored is not None and not isinstance(restored, WorkloadMetadata):
            return restored  # seconds until the restored target is looked at again
        metadata = restored
        try:
            router: Router | None = self._router(canary, provider=provider, state=state)
        except PluginError as error:
            router = None
            await self._warn(obj, f"Routing of {name} not reverted: {error}")
        if metadata is not None:
            capabilities = state.router_capabilities if router is not None else Capabilities()
            await self._services_router(canary, metadata, capabilities).finalize(canary)
        if router is not None:
            await router.finalize(canary)
        await self._normal(obj, f"Terminated canary {name}")
        self.forget(key)
        return None

    async def _restore_target(
        self, obj: dict[str, Any], canary: Canary
    ) -> WorkloadMetadata | float | None:
        """Gives the target back (scaled up, as before the Canary) for :meth:`finalize`.

        The target's metadata once it is ready, the seconds to wait while it is not, or None
        when there is no target to give back: it was deleted first, or its kind is not one a
        workload controller handles (both a Warning Event; the routing is still reverted).
        """
        name = f"{canary.name}.{canary.namespace}"
        try:
            workload = workload_controller(canary, store=self._store, settings=self._settings)
            await workload.finalize(canary)
        except (TargetNotFoundError, UnsupportedTargetError) as error:
            await self._warn(obj, f"Target of {name} not restored: {error}")
            return None
        wait = await self._target_ready_wait(workload, canary, status=obj.get("status") or {})
        if wait is not None:
            return wait
        try:
            return await workload.get_metadata(canary)
        except TargetNotFoundError as error:  # deleted while we waited for it
            await self._warn(obj, f"Target of {name} not restored: {error}")
            return None

    async def _target_ready_wait(
        self, workload: WorkloadController, canary: Canary, *, status: dict[str, Any]
    ) -> float | None:
        """Flagger's bounded wait for the restored target: 3 s doubling, capped, 4 tries.

        The tries are due at fixed offsets from the moment the Canary became Terminating (its
        ``status.lastTransitionTime``), so no worker sleeps, the schedule survives a restart,
        and a reconcile brought early by a watch event only looks once more. Returns the seconds
        until the next try, or None: the target is ready, or the last try has passed (logged;
        the revert goes on, as Flagger's does).
        """
        try:
            await workload.is_canary_ready(canary)
            return None
        except NotReadyError as error:
            reason = error.message
        since = parse_time(status.get("lastTransitionTime"))
        if since is not None:
            elapsed = max(0.0, (datetime.now(UTC) - since).total_seconds())
            due = 0.0
            for delay in REVERT_READY_DELAYS:
                due += min(delay, self._interval(canary))
                if elapsed < due:
                    return due - elapsed
        log.warning("target_not_ready_after_revert", reason=reason)
        return None

    # -- steps 3..16: make sure every object exists ------------------------------------------

    async def _prepare(
        self, obj: dict[str, Any], canary: Canary, *, provider: str, state: TickState
    ) -> Tick | None:
        workload = workload_controller(canary, store=self._store, settings=self._settings)
        interval = self._interval(canary)
        try:
            metadata = await workload.get_metadata(canary)
        except Exception as error:  # a missing target, no selector label: shown, retried
            if _news(state, "prepare", str(error), within=interval):
                await self._warn(obj, str(error))
            await self._explain_initializing(obj, canary, str(error))
            return None
        router = self._router(canary, provider=provider, state=state)
        capabilities = state.router_capabilities
        services = self._services_router(canary, metadata, capabilities)
        apex_label = "" if isinstance(services, KubernetesNoopRouter) else metadata.label
        canary = as_routers_see_it(canary, apex_label)
        autoscaler = self._autoscaler(canary)
        tick = Tick(obj=obj, canary=canary, provider=provider, workload=workload,
                    services=services, router=router, autoscaler=autoscaler, state=state,
                    apex_label=apex_label)
        phase = tick.phase
        initializing = phase in (CanaryPhase.UNSET, CanaryPhase.INITIALIZING)
        try:
            await services.initialize(canary)
        except Exception as error:
            if _news(state, "prepare", str(error), within=interval):
                await self._warn(obj, str(error))
            return None
        if (initializing and not canary.should_skip_analysis()
                and not _said_lately(state, "providers", within=interval)):
            # Once per interval, as Flagger's initialising ticks do: the primary's watch
            # events while it rolls out bring the canary back many times in a second.
            problems = await self._analyzer.check_providers(canary)
            if problems:
                message = f"Error checking metric providers: {'; '.join(problems)}"
                _news(state, "providers", message, within=interval)
                await self._warn(obj, message)
            else:
                message = "all the metrics providers are available!"
                _news(state, "providers", message, within=interval)
                await self._normal(obj, message)
        if capabilities.reconciles_before_workload:
            await router.reconcile(canary)
        try:
            await workload.initialize(
                canary, wait_primary_ready=initializing and not canary.should_skip_analysis()
            )
        except NotReadyError as error:
            # The primary's rollout is re-checked on each of its status changes, its progress
            # said once per interval (its text changes with every replica that comes up).
            if not error.retriable or not _said_lately(state, "primary-ready", within=interval):
                _news(state, "primary-ready", error.message, within=interval)
                await self._warn(obj, error.message)
            if not error.retriable:
                await self._rollback(tick)
            return None
        except Exception as error:
            if _news(state, "prepare", str(error), within=interval):
                await self._warn(obj, str(error))
            return None
        state.said.pop("prepare", None)
        if autoscaler is not None:
            await autoscaler.reconcile(canary, init=True)
        await services.reconcile(canary)
        if initializing:
            if autoscaler is not None:
                await autoscaler.pause(canary)
            await workload.scale_to_zero(canary)
        if not capabilities.reconciles_before_workload:
            await router.reconcile(canary)
        if initializing:
            await self._initialized(tick)
        return tick

    async def _explain_initializing(self, obj: dict[str, Any], canary: Canary, why: str) -> None:
        """A canary stuck before initialization says why in its condition, not only in Events."""
        current = obj.get("status") or {}
        if current.get("phase") not in (None, "", CanaryPhase.INITIALIZING):
            return
        patch = canary_status.phase_patch(phase=CanaryPhase.INITIALIZING,
                                          kind=canary.spec.target_ref.kind,
                                          current=current, message=why)
        if patch is not None:
            await self._patch_status(canary, patch)

    def _services_router(
        self, canary: Canary, metadata: WorkloadMetadata, capabilities: Capabilities
    ) -> KubernetesRouter:
        """The apex, ``-primary`` and ``-canary`` Services, unless the router does without or
        the target is a Service (its target controller copies it into the two)."""
        if not capabilities.needs_services:
            return KubernetesNoopRouter()
        return new_kubernetes_router(
            kind=canary.spec.target_ref.kind, store=self._store, label=metadata.label,
            label_value=metadata.label_value, ports=metadata.ports,
        )

    def _autoscaler(self, canary: Canary) -> PrimaryAutoscaler | None:
        if canary.spec.autoscaler_ref is None:
            return None
        return PrimaryAutoscaler(store=self._store, settings=self._settings)

    def _router(self, canary: Canary, *, provider: str, state: TickState) -> Router:
        """The mesh router for ``provider``, built once per canary and provider."""
        if state.router is None or state.router_provider != provider:
            plugin = plugins.routers.get(provider)
            context = ProviderContext(store=self._store, mesh_store=self._mesh_store,
                                      set_owner_refs=self._mesh_store is None,
                                      settings=self._settings, log=log)
            state.router = plugin.factory(ctx=context, variant=plugin.variant)
            state.router_capabilities = capabilities_of(plugin.factory, variant=plugin.variant)
            state.router_provider = provider
        return state.router

    async def _initialized(self, tick: Tick) -> None:
        """Step 16: the primary runs; record the revision it runs as promoted."""
        canary = tick.canary
        await self._write(tick, canary_status.sync_status_patch(
            current=tick.status,
            phase=CanaryPhase.INITIALIZED,
            kind=tick.kind,
            last_applied_spec=await tick.workload.target_hash(canary),
            tracked_configs=await tick.workload.tracked_configs(canary),
        ))
        self._set_status_metric(tick)
        tick.state.said.clear()
        await self._normal(tick.obj, f"Initialization done! {tick.name}")
        await self._alert(tick, alerting.initialization_completed(tick.kind))

    # -- steps 17..32: one tick ---------------------------------------------------------------

    async def _tick(self, tick: Tick) -> None:
        canary = tick.canary
        phase = tick.phase
        if phase not in ACTIVE_PHASES and not await self._revision_changed(tick):
            self._set_status_metric(tick)
            tick.at_rest = phase in REST_PHASES
            return
        if not canary.should_skip_analysis():
            try:
                await tick.workload.is_primary_ready(canary)
            except NotReadyError as error:
                await self._warn(tick.obj, error.message)
                if not error.retriable:
                    if phase in (CanaryPhase.PROMOTING, CanaryPhase.FINALISING):
                        await self._failed_promotion(tick, error.message)
                    else:
                        await self._readiness_rollback(tick, error.message)
                return
        current = await tick.router.get_routes(canary)
        self._telemetry.set_weight(name=canary.spec.target_ref.name, namespace=canary.namespace,
                                   primary=current.primary, canary=current.canary)
        if phase not in ACTIVE_PHASES:
            await self._start_run(tick)
            return
        if phase in REVISION_PHASES and await self._revision_changed(tick):
            await self._restart(tick)
            return
        steer = steering.state_of(tick.status)
        if steer.paused and phase in steering.HOLDABLE:
            # Held by a person: no step, no check counted, until a resume.
            await self._explain_run(tick, f"{steering.PAUSED_PREFIX} {steer.command} at canary "
                                          f"weight {current.canary}")
            return
        await self._explain_unless(tick, steering.PAUSED_PREFIX)  # resumed
        try:
            await tick.workload.is_canary_ready(canary)
        except NotReadyError as error:
            await self._warn(tick.obj, error.message)
            if not error.retriable:
                await self._readiness_rollback(tick, error.message)
            return
        if canary.should_skip_analysis():
            await self._skip_analysis(tick)
            return
        if phase in ROLLBACK_HOOK_PHASES:
            hook = await self._webhooks.rollback_requested(canary, phase=phase)
            if hook is not None:
                await self._warn(tick.obj, f"Rolling back {tick.name} manual webhook invoked")
                await self._alert(tick, alerting.manual_rollback())
                await self._rollback(tick)
                return
        if phase == CanaryPhase.PROMOTING:
            if tick.autoscaler is not None:
                await tick.autoscaler.reconcile(canary, init=False)
            await self._promotion_traffic_shift(tick, current)
            return
        if phase == CanaryPhase.FINALISING:
            await self._finalise(tick)
            return
        if tick.counter("failedChecks") >= canary.get_analysis_threshold():
            if decisions.pauses(canary):
                await self._pause(tick, current)
                return
            await self._rollback(tick)
            return
        await self._explain_unless(tick, decisions.PAUSED_PREFIX)  # resumed by a person
        if not await self._analysis_passed(tick, current):
            await self._write_history(tick)
            return
        await self._advance(tick, current)
        await self._write_history(tick)

    async def _start_run(self, tick: Tick) -> None:
        """Step 21: a new revision; ask confirm-rollout, then scale up the canary."""
        canary = tick.canary
        steer = steering.state_of(tick.status)
        refused = None if steer.approved else await self._webhooks.run(
            canary, HookType.CONFIRM_ROLLOUT, phase=tick.phase)
        if refused is not None:
            if tick.phase != CanaryPhase.WAITING:
                await self._write(tick, canary_status.set_phase_patch(
                    current=tick.status, phase=CanaryPhase.WAITING, kind=tick.kind,
                    analysis_iterations=canary.spec.analysis.iterations or 0,
                ))
                if not refused.webhook.mute_alert:
                    await self._alert(tick, alerting.waiting_for_approval())
            await self._warn(tick.obj, f"Halt {tick.name} advancement waiting for approval "
                                       f"{refused.webhook.name}")
            return
        await self._normal(tick.obj, f"New revision detected! Scaling up {tick.name}")
        await self._alert(tick, alerting.new_revision(await tick.workload.target_hash(canary)))
        if tick.autoscaler is not None:
            await tick.autoscaler.resume(canary)
        await tick.workload.scale_from_zero(canary)
        revision = await tick.workload.target_hash(canary)
        patch = canary_status.sync_status_patch(
            current=tick.status, phase=CanaryPhase.PROGRESSING, kind=tick.kind,
            last_applied_spec=revision,
            tracked_configs=await tick.workload.tracked_configs(canary),
        )
        if steer.approved:  # approved at confirm-rollout: the gates of this run stay open
            patch = steering.with_revision(patch, state=steer, revision=revision)
        await self._write(tick, patch)
        self._set_status_metric(tick)

    async def _restart(self, tick: Tick) -> None:
        """Step 22: a new revision during the run restarts it from weight 0."""
        await self._normal(tick.obj, f"New revision detected! Restarting analysis for "
                                            f"{tick.name}")
        await tick.router.set_routes(tick.canary, Weights(primary=100, canary=0))
        await self._write(tick, canary_status.sync_status_patch(
            current=tick.status, phase=CanaryPhase.PROGRESSING, kind=tick.kind,
            last_applied_spec=await tick.workload.target_hash(tick.canary),
            tracked_configs=await tick.workload.tracked_configs(tick.canary),
        ))

    async def _revision_changed(self, tick: Tick) -> bool:
        """A new target spec or a changed tracked config (``HasTargetChanged`` / configs)."""
        if await tick.workload.has_target_changed(tick.canary):
            return True
        return await tick.workload.have_dependencies_changed(tick.canary)

    async def _analysis_passed(self, tick: Tick, current: Weights) -> bool:
        """Step 30: pre-rollout on the first tick of a run, else rollout hooks and metrics."""
        canary = tick.canary
        first = (
            current.canary == 0 and tick.counter("iterations") == 0
            and not (canary.spec.analysis.mirror and current.mirrored)
        )
        if first:
            await self._normal(tick.obj, f"Starting canary analysis for {tick.name}")
            if not await self._providers_usable(tick):
                return False
            failed = await self._webhooks.run(canary, HookType.PRE_ROLLOUT, phase=tick.phase)
            if failed is not None:
                check = f"pre-rollout check {failed.webhook.name} failed {failed.message}"
                tick.state.last_failure = check
                await self._warn(tick.obj, f"Halt {tick.name} advancement {check}")
                await self._alert(tick, alerting.webhook_failed(
                    name=failed.webhook.name, hook_type="pre-rollout", error=failed.message))
                await self._fail_check(tick)
                return False
            return True
        failed = await self._webhooks.run(canary, HookType.ROLLOUT, phase=tick.phase)
        if failed is not None:
            check = f"external check {failed.webhook.name} failed {failed.message}"
            tick.state.last_failure = check
            await self._warn(tick.obj, f"Halt {tick.name} advancement {check}")
            await self._alert(tick, alerting.webhook_failed(
                name=failed.webhook.name, hook_type="rollout", error=failed.message))
            await self._fail_check(tick)
            return False
        route = (await tick.workload.latest_revision(canary)
                 if isinstance(tick.workload, KnativeServiceController) else None)
        outcome = await self._analyzer.run(canary, route=route)
        await self._explain_checks(tick, outcome.decisions)
        if outcome.passed:
            await self._explain_unless(tick, decisions.HOLD_PREFIX)  # data arrived
            return True
        failure = outcome.failure
        if failure is not None:
            tick.state.last_failure = failure.message
            await self._warn(tick.obj, failure.message)
        if not outcome.hold:
            if outcome.fatal:
                # A critical metric failed its comparison: the threshold is reached at once.
                await self._write(tick, canary_status.counters_patch(failed_checks=max(
                    tick.counter("failedChecks") + 1, canary.get_analysis_threshold())))
            else:
                await self._fail_check(tick)
            if failure is not None:
                await self._alert(tick, alerting.failed_check(CheckInfo(
                    name=failure.name, value=failure.value, message=failure.message)))
            if outcome.fatal:
                if decisions.pauses(canary):
                    await self._pause(tick, current)
                else:
                    await self._rollback(tick)
        elif failure is not None:
            await self._explain_run(
                tick, f"{decisions.HOLD_PREFIX} at canary weight {current.canary}: "
                      f"{failure.message}")
        return False

    async def _explain_checks(
            self, tick: Tick, made: tuple[decisions.Decision, ...]
    ) -> None:
        """Keeps the checks for ``status.analysisHistory`` and says what a dry-run or skipped
        check found (a failed or held one is said by the tick itself)."""
        unwritten = tick.state.unwritten
        unwritten.extend(made)
        del unwritten[:-ANALYSIS_HISTORY_LIMIT]
        for decision in made:
            event = decision.event
            if event is None:
                continue
            if decision.act is decisions.Act.DRY_RUN:
                await self._warn(tick.obj, f"{event} ({tick.name})")
            else:
                await self._normal(tick.obj, f"{event} ({tick.name})")

    async def _write_history(self, tick: Tick) -> None:
        """Writes the tick's explained checks if the tick wrote nothing that carried them and
        one of them did not pass; passing checks alone wait for the next write."""
        if any(d.act is not decisions.Act.PASS for d in tick.state.unwritten):
            await self._write(tick, {})

    async def _explain_unless(self, tick: Tick, prefix: str) -> None:
        """Restores the ``Promoted`` condition's default text if it still says ``prefix``
        (a hold whose data arrived, a pause a person resumed)."""
        if _promoted_message(tick.status).startswith(prefix):
            await self._explain_run(tick, None)

    async def _explain_run(self, tick: Tick, why: str | None) -> None:
        """The ``Promoted`` condition of a running canary (any active phase) says ``why``; None
        restores the phase's default text. Writes nothing when it already says it."""
        patch = canary_status.phase_patch(phase=tick.phase, kind=tick.kind,
                                          current=tick.status, message=why)
        if patch is not None:
            await self._write(tick, patch)

    async def _pause(self, tick: Tick, current: Weights) -> None:
        """``onFailure: pause``: the failed checks reached the threshold; the weight stays.

        Said once (a Warning Event, an alert, the ``Promoted`` condition's message, which is
        also what tells a later tick, or a restarted controller, that it was said); then each
        tick only waits. A person resumes by setting ``status.failedChecks`` to 0, or rolls
        back with a rollback webhook or ``onFailure: rollback`` (docs/analysis.md).
        """
        if _promoted_message(tick.status).startswith(decisions.PAUSED_PREFIX):
            return
        failed = tick.counter("failedChecks")
        last = tick.state.last_failure or decisions.last_failed(tick.status)
        await self._warn(tick.obj, f"Pausing {tick.name} failed checks threshold reached "
                                   f"{failed}: waiting for a person")
        await self._alert(tick, decisions.pause_alert(weight=current.canary, failed=failed,
                                                      last_failure=last))
        await self._explain_run(tick, decisions.pause_message(
            weight=current.canary, failed=failed, last_failure=last, name=tick.canary.name))

    async def _providers_usable(self, tick: Tick) -> bool:
        """The run's first check, before any traffic moves: can every metric backend answer?

        A flaggerpy addition (docs/compatibility.md, "Provider availability"): Flagger would
        shift ``stepWeight`` now and find out at the next tick. A provider type that is not
        installed ends the run at once; any other problem is a failed check (rolled back at
        the threshold) or, with ``-hold-on-no-values``, a hold; either way the weights stay
        0/100 and the reason is in an Event and in the ``Promoted`` condition.
        """
        outcome = await self._analyzer.check_run_start(tick.canary)
        if outcome.passed:
            await self._explain_progressing(tick, None)
            return True
        assert outcome.failure is not None
        reason = outcome.failure.message
        tick.state.last_failure = reason
        await self._warn(tick.obj, reason)
        if outcome.fatal:
            await self._alert(tick, alerting.metrics_providers_unusable(reason))
            await self._rollback(tick, reason=reason)
            return False
        await self._explain_progressing(tick, reason)
        if not outcome.hold:
            await self._fail_check(tick)
            failure = outcome.failure
            await self._alert(tick, alerting.failed_check(CheckInfo(
                name=failure.name, value=failure.value, message=failure.message)))
        return False

    async def _explain_progressing(self, tick: Tick, why: str | None) -> None:
        """A run held at weight 0 says why in its ``Promoted`` condition; None restores the
        default text. Writes nothing when the condition already says it."""
        if tick.phase != CanaryPhase.PROGRESSING:
            return
        patch = canary_status.phase_patch(phase=CanaryPhase.PROGRESSING, kind=tick.kind,
                                          current=tick.status, message=why)
        if patch is not None:
            await self._write(tick, patch)

    async def _fail_check(self, tick: Tick) -> None:
        await self._write(tick, canary_status.counters_patch(
            failed_checks=tick.counter("failedChecks") + 1
        ))

    async def _advance(self, tick: Tick, current: Weights) -> None:
        """Steps 31-32: the strategy's next step."""
        canary = tick.canary
        capabilities = tick.capabilities
        strategy = canary.deployment_strategy()
        await self._unsupported(tick, capabilities)
        if capabilities.traffic is Traffic.SWITCH:
            strategy = DeploymentStrategy.BLUE_GREEN
        done = tick.counter("iterations")
        step: Step
        if strategy == DeploymentStrategy.AB_TESTING:
            step = strategies.ab_step(canary, done=done, capabilities=capabilities)
        elif strategy == DeploymentStrategy.BLUE_GREEN:
            step = strategies.blue_green_step(canary, done=done, mirrored=current.mirrored,
                                              capabilities=capabilities)
        else:
            step = strategies.canary_step(canary, current, capabilities=capabilities)
            if step.action is Action.SET_ROUTES and not current.mirrored and tick.phase not in (
                CanaryPhase.PROMOTING, CanaryPhase.WAITING_PROMOTION, CanaryPhase.FINALISING
            ) and not steering.state_of(tick.status).approved:
                refused = await self._webhooks.run(
                    canary, HookType.CONFIRM_TRAFFIC_INCREASE, phase=tick.phase
                )
                if refused is not None:
                    await self._warn(tick.obj, f"Halt {tick.name} advancement waiting for "
                                               f"traffic increase approval {refused.webhook.name}")
                    if not refused.webhook.mute_alert:
                        await self._alert(tick, alerting.traffic_increase_waiting_for_approval())
                    return
        await self._apply_step(tick, step)

    async def _unsupported(self, tick: Tick, capabilities: Capabilities) -> None:
        """Says, on every analysis tick, what the canary asks for that its router cannot do.

        A switch-only router gets Flagger's own warnings for its ``kubernetes`` provider, with
        the provider named. Mirroring and session affinity that a router cannot do are ignored
        by Flagger without a word; here they get a Warning too, which no recorded Flagger run
        contradicts (its mirroring and session-affinity runs all use routers that have them).
        A/B matches that a weighted router cannot do are only logged: Flagger runs such a
        canary as A/B with all traffic on the canary and records nothing (its SMI and Traefik
        runs), and the Events stay Flagger's.
        """
        analysis = tick.canary.spec.analysis
        provider = tick.provider
        if capabilities.traffic is Traffic.SWITCH:
            if analysis.match:
                await self._warn(tick.obj, f"A/B testing is not supported when using the "
                                           f"{provider} provider")
            if (analysis.iterations or 0) < 1:
                await self._warn(tick.obj, f"Progressive traffic is not supported when using "
                                           f"the {provider} provider")
                await self._warn(tick.obj, f"Setting canaryAnalysis.iterations: "
                                           f"{strategies.SWITCH_DEFAULT_ITERATIONS}")
        elif analysis.match and not capabilities.ab_matches:
            log.warning("ab_matches_not_supported", provider=provider,
                        reason="all traffic goes to the canary during the iterations")
        if analysis.mirror and not capabilities.mirroring:
            await self._warn(tick.obj, f"Traffic mirroring is not supported when using the "
                                       f"{provider} provider")
        if analysis.session_affinity is not None and not capabilities.session_affinity:
            await self._warn(tick.obj, f"Session affinity is not supported when using the "
                                       f"{provider} provider")

    async def _apply_step(self, tick: Tick, step: Step) -> None:
        canary = tick.canary
        if step.action is Action.NOTHING:
            return
        if step.action is Action.CONFIRM_PROMOTION:
            if not await self._promotion_confirmed(tick):
                return
            if step.weights is None:
                if step.event:
                    await self._normal(tick.obj, step.event)
                await self._promote(tick)
                return
        assert step.weights is not None
        await tick.router.set_routes(canary, step.weights)
        if step.iterations is not None:
            patch = canary_status.counters_patch(iterations=step.iterations)
        else:
            patch = canary_status.counters_patch(canary_weight=step.weights.canary)
        await self._write(tick, patch)
        self._telemetry.set_weight(name=canary.spec.target_ref.name, namespace=canary.namespace,
                                   primary=step.weights.primary, canary=step.weights.canary)
        if step.event:
            await self._normal(tick.obj, step.event)
        if step.iterations is None:
            await self._alert(tick, alerting.step_advanced(step.weights.canary))

    async def _promotion_confirmed(self, tick: Tick) -> bool:
        """Confirm-promotion gates; a refusal parks the canary in WaitingPromotion."""
        canary = tick.canary
        if steering.state_of(tick.status).approved:
            return True
        refused = await self._webhooks.run(canary, HookType.CONFIRM_PROMOTION,
                                           phase=CanaryPhase.PROGRESSING)
        if refused is None:
            return True
        iterations = canary.spec.analysis.iterations or 0
        if tick.phase != CanaryPhase.WAITING_PROMOTION:
            await self._write(tick, canary_status.set_phase_patch(
                current=tick.status, phase=CanaryPhase.WAITING_PROMOTION, kind=tick.kind,
                analysis_iterations=iterations,
            ))
            await self._warn(tick.obj, f"Halt {tick.name} advancement waiting for promotion "
                                       f"approval {refused.webhook.name}")
            if not refused.webhook.mute_alert:
                await self._alert(tick, alerting.promotion_waiting_for_approval())
        else:
            await self._write(tick, canary_status.counters_patch(
                iterations=max(0, iterations - 1)
            ))
        return False

    async def _promote(self, tick: Tick) -> None:
        canary = tick.canary
        target = canary.spec.target_ref.name
        await self._normal(tick.obj, f"Copying {tick.name} template spec to "
                                            f"{target}-primary.{canary.namespace}")
        await tick.workload.promote(canary)
        await self._write(tick, canary_status.set_phase_patch(
            current=tick.status, phase=CanaryPhase.PROMOTING, kind=tick.kind,
            analysis_iterations=canary.spec.analysis.iterations or 0,
        ))
        self._set_status_metric(tick)

    async def _carry_out(self, tick: Tick, steer: SteeringStatus) -> None:
        """A steering request (docs/steering.md), by the path Flagger's own would take:
        promote as a passed analysis promotes, abort and deny as a failed one rolls back,
        retry as a new revision starts a run. Cleared once done; done again after a restart
        at most, and each path is idempotent."""
        who = f"CanaryCommand {steer.command}" + (f" ({steer.reason})" if steer.reason else "")
        request, phase = steer.request, tick.phase
        if request is SteerAction.PROMOTE and phase in steering.RUNNING:
            await self._normal(tick.obj, f"Promotion of {tick.name} requested by {who}: "
                                         f"canary analysis skipped")
            await self._promote(tick)
        elif request in (SteerAction.ABORT, SteerAction.DENY) and phase in steering.GATED:
            verb = "aborted" if request is SteerAction.ABORT else "denied"
            message = f"Rolling back {tick.name}: {verb} by {who}"
            await self._warn(tick.obj, message)
            await self._alert(tick, steering.rollback_alert(message))
            await self._rollback(tick, reason=f"{verb} by {who}")
        elif request is SteerAction.RETRY and phase == CanaryPhase.FAILED:
            await self._normal(tick.obj, f"Retrying {tick.name} as requested by {who}")
            await self._start_run(tick)
        else:
            log.info("steering_request_moot", request=str(request), phase=phase.value)
        await self._write(tick, steering.clear_request_patch())

    async def _promotion_traffic_shift(self, tick: Tick, current: Weights) -> None:
        step = strategies.promotion_step(tick.canary, current, capabilities=tick.capabilities)
        assert step.weights is not None
        if step.weights != current:
            await tick.router.set_routes(tick.canary, step.weights)
        if step.event:
            await self._normal(tick.obj, step.event)
        if step.action is Action.FINALISE:
            await self._write(tick, canary_status.set_phase_patch(
                current=tick.status, phase=CanaryPhase.FINALISING, kind=tick.kind,
                analysis_iterations=tick.canary.spec.analysis.iterations or 0,
            ))
        else:
            await self._write(tick, canary_status.counters_patch(
                canary_weight=step.weights.canary
            ))

    async def _finalise(self, tick: Tick) -> None:
        """Step 27: scale the canary down and declare success."""
        await self._succeeded(
            tick, analysis_status="completed",
            event=f"Promotion completed! Scaling down {tick.name}",
            alert=alerting.promotion_completed(),
        )

    async def _skip_analysis(self, tick: Tick) -> None:
        """Step 24: promote at once, without analysis."""
        canary = tick.canary
        await tick.router.set_routes(canary, Weights(primary=100, canary=0))
        await tick.workload.promote(canary)
        if tick.autoscaler is not None:
            await tick.autoscaler.reconcile(canary, init=False)
        await self._succeeded(
            tick, analysis_status="skipped",
            event=f"Promotion completed! Canary analysis was skipped for {tick.name}",
            alert=alerting.analysis_skipped(),
        )

    async def _succeeded(
        self, tick: Tick, *, analysis_status: str, event: str, alert: AlertMessage
    ) -> None:
        """The end of a successful run: canary scaled down, Succeeded, post-rollout, told."""
        canary = tick.canary
        if tick.autoscaler is not None:
            await tick.autoscaler.pause(canary)
        await tick.workload.scale_to_zero(canary)
        await self._write(tick, canary_status.set_phase_patch(
            current=tick.status, phase=CanaryPhase.SUCCEEDED, kind=tick.kind,
            analysis_iterations=canary.spec.analysis.iterations or 0,
        ))
        self._set_status_metric(tick)
        self._telemetry.inc_successes(
            name=canary.spec.target_ref.name, namespace=canary.namespace,
            deployment_strategy=canary.deployment_strategy().value,
            analysis_status=analysis_status,
        )
        await self._post_rollout(tick, CanaryPhase.SUCCEEDED)
        await self._normal(tick.obj, event)
        await self._alert(tick, alert)

    async def _rollback(self, tick: Tick, *, reason: str | None = None) -> None:
        """Route everything back to the primary, scale the canary down, and say why.

        ``reason``: why the run ends before its failed checks reached the threshold, for the
        ``Promoted`` condition's message.
        """
        canary = tick.canary
        failed = tick.counter("failedChecks")
        threshold = canary.get_analysis_threshold()
        if failed >= threshold:
            await self._warn(tick.obj, f"Rolling back {tick.name} failed checks threshold "
                                       f"reached {failed}")
            await self._alert(tick, alerting.failed_checks_threshold_reached(
                failed, last_failure=tick.state.last_failure
            ))
        try:
            await tick.router.set_routes(canary, Weights(primary=100, canary=0))
        except Exception as error:
            await self._warn(tick.obj, str(error))
            return
        await self._warn(tick.obj, f"Canary failed! Scaling down {tick.name}")
        self._telemetry.set_weight(name=canary.spec.target_ref.name, namespace=canary.namespace,
                                   primary=100, canary=0)
        if tick.autoscaler is not None:
            await tick.autoscaler.pause(canary)
        await tick.workload.scale_to_zero(canary)
        detail = reason or (tick.state.last_failure if failed >= threshold else None)
        await self._write(tick, canary_status.sync_status_patch(
            current=tick.status, phase=CanaryPhase.FAILED, kind=tick.kind,
            last_applied_spec=await tick.workload.target_hash(canary),
            tracked_configs=await tick.workload.tracked_configs(canary),
            message=canary_status.failed_message(tick.kind, detail),
        ))
        tick.state.last_failure = None
        self._set_status_metric(tick)
        self._telemetry.inc_failures(
            name=canary.spec.target_ref.name, namespace=canary.namespace,
            deployment_strategy=canary.deployment_strategy().value, analysis_status="completed",
        )
        await self._post_rollout(tick, CanaryPhase.FAILED)

    async def _readiness_rollback(self, tick: Tick, error: str) -> None:
        """The canary or primary missed its progress deadline: alerted, then rolled back.

        Flagger rolls back without a word here (fluxcd/flagger#1663, #1816); its own text
        ``Progress deadline exceeded <error>`` is sent, unless the failed checks reached the
        threshold too, whose alert already says the run failed.
        """
        if tick.counter("failedChecks") < tick.canary.get_analysis_threshold():
            await self._alert(tick, alerting.progress_deadline_exceeded(error))
        await self._rollback(tick)

    async def _failed_promotion(self, tick: Tick, error: str) -> None:
        """The primary did not roll out: all traffic to the canary, which still runs."""
        canary = tick.canary
        await self._warn(tick.obj, f"Promotion of {tick.name} failed, primary not ready: {error}")
        await self._alert(tick, alerting.promotion_failed(error))
        await tick.router.set_routes(canary, Weights(primary=0, canary=100))
        await self._write(tick, canary_status.sync_status_patch(
            current=tick.status, phase=CanaryPhase.FAILED, kind=tick.kind,
            last_applied_spec=await tick.workload.target_hash(canary),
            tracked_configs=await tick.workload.tracked_configs(canary), canary_weight=100,
        ))
        self._set_status_metric(tick)
        await self._post_rollout(tick, CanaryPhase.FAILED)

    async def _post_rollout(self, tick: Tick, phase: CanaryPhase) -> None:
        failed = await self._webhooks.run(tick.canary, HookType.POST_ROLLOUT, phase=phase)
        if failed is not None:
            await self._warn(tick.obj, f"Post-rollout hook {failed.webhook.name} failed "
                                       f"{failed.message}")
            # The run is over either way, so nobody would hear of it otherwise.
            await self._alert(tick, alerting.webhook_failed(
                name=failed.webhook.name, hook_type="post-rollout", error=failed.message))

    # -- writing -----------------------------------------------------------------------------

    async def _patch_status(self, canary: Canary, patch: dict[str, Any]) -> dict[str, Any]:
        """Patches the status; the store shows the result until the watch delivers it, so the
        next reconcile, even one the watch starts first, sees this write."""
        return await self._store.patch(kube.CANARIES, namespace=canary.namespace,
                                       name=canary.name, patch=patch, subresource="status")

    async def _write(self, tick: Tick, patch: dict[str, Any]) -> None:
        """Patches the status and carries on with the object the API server returned.

        The checks explained since the last write go with it (``status.analysisHistory``).
        """
        patch = decisions.with_history(patch, tick.status, tick.state.unwritten)
        tick.state.unwritten.clear()
        if not patch:
            return
        updated = await self._patch_status(tick.canary, patch)
        tick.obj = updated
        tick.canary = as_routers_see_it(Canary.model_validate(updated), tick.apex_label)

    def _set_status_metric(self, tick: Tick) -> None:
        self._telemetry.set_status(name=tick.canary.spec.target_ref.name,
                                   namespace=tick.canary.namespace, phase=tick.phase.value)

    async def _normal(self, obj: Mapping[str, Any], message: str) -> None:
        log.info("canary_event", message=message)
        await self._events.normal(obj, message)
        self._post_event(obj, message, event_type="Normal")

    async def _say(self, obj: Mapping[str, Any], message: str, warning: bool) -> None:
        """An Event about a CanaryCommand's answer (:data:`steering.Say`)."""
        await (self._warn if warning else self._normal)(obj, message)

    async def warn(self, obj: Mapping[str, Any], message: str) -> None:
        """A Warning Event from outside the run (an invalid spec), reported like the run's own:
        recorded, logged and sent to the event webhooks, as every Flagger Event is."""
        await self._warn(obj, message)

    async def _warn(self, obj: Mapping[str, Any], message: str) -> None:
        log.warning("canary_event", message=message)
        await self._events.warning(obj, message)
        self._post_event(obj, message, event_type="Warning")

    def _post_event(self, obj: Mapping[str, Any], message: str, *, event_type: str) -> None:
        """Flagger's event webhook: every Event of a canary, to its ``event`` hooks."""
        global_url = self._settings.notifications.event_webhook
        url = global_url.get_secret_value() if global_url is not None else None
        if not url and not _has_event_hooks(obj):
            return
        key = str(kube.key_of(obj))
        self._event_hooks.submit(key, functools.partial(
            self._webhooks.event, dict(obj), message=message, event_type=event_type,
            global_url=url,
        ))

    async def aclose(self) -> None:
        """Lets pending event webhooks finish (bounded)."""
        await self._event_hooks.aclose()

    async def _alert(self, tick: Tick, message: AlertMessage) -> None:
        await self._alerter.alert(tick.canary, message)


def as_routers_see_it(canary: Canary, apex_label: str) -> Canary:
    """The Canary with ``<apex_label>: <apex name>`` among the ``service.apex`` labels.

    Flagger's Kubernetes router puts that label on the apex Service by writing it into the
    Canary's own ``service.apex`` metadata, which every mesh router then reads for its routing
    objects (VirtualService, HTTPProxy, HTTPRoute, RouteTable, TraefikService): so when
    ``service.apex`` is set, they carry the label too. Without ``service.apex`` Flagger writes
    into a fresh value instead and no routing object gets it; nor does it with a Service target
    (no Services generated). The routers here see the Canary as Flagger's do, so their objects
    are the same.
    """
    service = canary.spec.service
    apex = service.apex if service is not None else None
    if service is None or apex is None or not apex_label:
        return canary
    labels = {**(apex.labels or {}), apex_label: canary.get_service_names().apex}
    if apex.labels == labels:
        return canary
    apex = apex.model_copy(update={"labels": labels})
    spec = canary.spec.model_copy(update={"service": service.model_copy(update={"apex": apex})})
    return canary.model_copy(update={"spec": spec})


def _promoted_message(status: Mapping[str, Any]) -> str:
    """The ``Promoted`` condition's message, or an empty string."""
    for condition in status.get("conditions") or ():
        if isinstance(condition, Mapping) and condition.get("type") == PROMOTED_CONDITION:
            return str(condition.get("message") or "")
    return ""


def _said_lately(state: TickState, topic: str, *, within: float) -> bool:
    """Whether an Event on ``topic`` was recorded less than ``within`` seconds ago."""
    last = state.said.get(topic)
    return last is not None and time.monotonic() - last[1] < within


def _news(state: TickState, topic: str, message: str, *, within: float) -> bool:
    """Whether ``message`` is worth an Event (and if so, notes it as said).

    It is unless the same was said on ``topic`` less than ``within`` seconds ago: a watch
    event that brings the canary back finds the same problem, which the Event already shows.
    """
    last = state.said.get(topic)
    if last is not None and last[0] == message and time.monotonic() - last[1] < within:
        return False
    state.said[topic] = (message, time.monotonic())
    return True


def permanent_refusal(error: BaseException) -> kube.KubeError | None:
    """The API server's permanent refusal behind ``error`` (its ``__cause__`` chain), if any.

    422 Invalid always is (the object fails validation; writing it again changes nothing), and
    so is a 400 whose reason says the request itself is bad. Anything else (a conflict, a
    timeout, a 5xx, a fenced write) may pass on a retry and is not one.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, kube.WriteFencedError):
            return None
        if isinstance(current, kube.KubeError) and (
                current.status == 422
                or (current.status == 400 and current.reason in ("BadRequest", "Invalid"))):
            return current
        current = current.__cause__
    return None


def _has_event_hooks(obj: Mapping[str, Any]) -> bool:
    """Whether the raw object lists an ``event`` webhook; any shape, even an invalid spec."""
    spec = obj.get("spec")
    analysis = spec.get("analysis") if isinstance(spec, Mapping) else None
    hooks = analysis.get("webhooks") if isinstance(analysis, Mapping) else None
    if not isinstance(hooks, list):
        return False
    return any(isinstance(hook, Mapping) and hook.get("type") == HookType.EVENT
               for hook in hooks)
