"""``flaggerpy controller``: wires the caches, the Canary controller, telemetry and leader election.

Everything runs in one asyncio TaskGroup owned by the manager. Caches and the telemetry server run
on every replica (a standby is warm and can be scraped); the controller runs only on the leader,
and writes through a client fenced by the Lease, so a deposed leader stops writing at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import Counter
from collections.abc import Iterable

import structlog

from flaggerpy import __version__, kube
from flaggerpy.canary import plugin_status, steering, template_status
from flaggerpy.canary.alerting import Alerter
from flaggerpy.canary.lifecycle import Lifecycle
from flaggerpy.canary.reconciler import CanaryReconciler
from flaggerpy.canary.webhooks import WebhookCaller
from flaggerpy.dashboard.controller import DashboardServer
from flaggerpy.dashboard.history import WeightHistory
from flaggerpy.kube import JsonObject
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.runtime.controller import Controller
from flaggerpy.runtime.events import EventRecorder
from flaggerpy.runtime.informer import SharedInformerFactory, drop_managed_fields, index_by
from flaggerpy.runtime.leader import DEFAULT_LEASE_NAME, LeaderElector
from flaggerpy.runtime.manager import Manager
from flaggerpy.runtime.workqueue import WorkQueue
from flaggerpy.settings import Settings
from flaggerpy.telemetry import Recorder
from flaggerpy.telemetry_server import TelemetryServer

log = structlog.get_logger(__name__)

CONTROLLER_NAME = "canary"
# Flagger's informers resync every 30 s. Only the caches of MetricTemplates and AlertProviders
# resync here, so that their status controllers re-check; a canary schedules its own next
# analysis through the work queue, and re-delivering every cached Deployment, Service and route
# every 30 s would be idle work that grows with the number of canaries.
RESYNC_SECONDS = 30.0
SETTLE_SECONDS = 0.5
"""How long a workload's changes other than a new pod template are gathered before its canary
is reconciled: a rollout or a scale-down changes a Deployment's status once per pod, and each
change alone would be a reconcile that finds nothing new."""


def is_resync(old: JsonObject, new: JsonObject) -> bool:
    """Whether an update is an informer resync: the same object delivered again, nothing new.

    Acting on those would reconcile every canary every 30 s while nothing changes: idle work
    that grows with the number of canaries.
    """
    old_version = (old.get("metadata") or {}).get("resourceVersion")
    return old is new or (old_version is not None
                          and old_version == (new.get("metadata") or {}).get("resourceVersion"))


def template_changed(old: JsonObject, new: JsonObject) -> bool:
    """Whether a workload's pod template changed: a new revision, which is acted on at once."""
    return (old.get("spec") or {}).get("template") != (new.get("spec") or {}).get("template")


def spec_changed(old: JsonObject, new: JsonObject) -> bool:
    """Whether an update deserves a reconcile: our own status writes do not (Flagger's filter).

    ``metadata.generation`` moves only when the spec does; deletion and finalizer changes matter
    for revertOnDeletion.
    """
    old_meta, new_meta = old.get("metadata") or {}, new.get("metadata") or {}
    return (
        old_meta.get("generation") != new_meta.get("generation")
        or old_meta.get("deletionTimestamp") != new_meta.get("deletionTimestamp")
        or old_meta.get("finalizers") != new_meta.get("finalizers")
    )


TARGET_INDEX = "target"
"""Canaries by ``<namespace>/<targetRef.name>``: which canary a workload event is about."""
REFERENCE_INDEX = "references"
"""Canaries by ``<namespace>/<kind>/<name>`` of every object they name (:func:`references_of`)."""


def target_of(obj: JsonObject) -> str | None:
    """The index value of a Canary: its namespace and target name."""
    spec = obj.get("spec") or {}
    name = (spec.get("targetRef") or {}).get("name")
    namespace = (obj.get("metadata") or {}).get("namespace") or ""
    return f"{namespace}/{name}" if name else None


def workload_index_value(obj: JsonObject) -> str:
    """The target name a workload event concerns: its own, or the one its primary copies."""
    metadata = obj.get("metadata") or {}
    name = str(metadata.get("name") or "")
    name = name.removesuffix("-primary")
    return f"{metadata.get('namespace') or ''}/{name}"


REFERENCE_FIELDS = ("targetRef", "autoscalerRef", "ingressRef", "routeRef", "upstreamRef")
"""The Canary spec fields that name an object of the user's the engine reads or copies."""


def references_of(canary: JsonObject) -> Iterable[str]:
    """Index values of the objects a Canary names: ``namespace/kind/name`` each."""
    spec = canary.get("spec") or {}
    namespace = (canary.get("metadata") or {}).get("namespace") or ""
    for name in REFERENCE_FIELDS:
        ref = spec.get(name) or {}
        if ref.get("name") and ref.get("kind"):
            yield f"{ref.get('namespace') or namespace}/{ref['kind']}/{ref['name']}"


def reference_index_value(kind: str, obj: JsonObject) -> str:
    """The :func:`references_of` value under which the Canaries naming ``obj`` are found."""
    metadata = obj.get("metadata") or {}
    return f"{metadata.get('namespace') or ''}/{kind}/{metadata.get('name') or ''}"


def owning_canary(obj: JsonObject) -> ObjectKey | None:
    """The Canary that is ``obj``'s controller (an object it generated), if one is."""
    metadata = obj.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "")
    if not namespace:
        return None  # cluster-scoped: a namespaced Canary cannot own it
    for ref in metadata.get("ownerReferences") or ():
        if ref.get("controller"):
            api_version = str(ref.get("apiVersion") or "")
            if ref.get("kind") == "Canary" and api_version.startswith("flagger.app/"):
                return ObjectKey(namespace, str(ref.get("name")))
            return None
    return None


def targets_a_service(canary: JsonObject) -> bool:
    """Whether a Canary's target is a core/v1 Service (a Knative Service is another resource)."""
    ref = (canary.get("spec") or {}).get("targetRef") or {}
    return ref.get("kind") == "Service" and "/" not in str(ref.get("apiVersion") or "")


class CanaryTotals:
    """``flagger_canary_total{namespace}``, kept by counting adds and deletes.

    Recounting the whole cache on every event costs O(N) per event, O(N^2) for N canaries
    created at once; a namespace whose last canary is gone reads 0, not its last count.
    """

    def __init__(self, telemetry: Recorder) -> None:
        self._telemetry = telemetry
        self._totals: Counter[str] = Counter()

    def added(self, obj: JsonObject) -> None:
        self._set(kube.key_of(obj).namespace, +1)

    def deleted(self, obj: JsonObject) -> None:
        self._set(kube.key_of(obj).namespace, -1)

    def _set(self, namespace: str, change: int) -> None:
        self._totals[namespace] = max(0, self._totals[namespace] + change)
        self._telemetry.set_total(namespace=namespace, total=self._totals[namespace])


def rate_limit(settings: Settings) -> kube.TokenBucket:
    """The client-side limit: ``-kubeconfig-qps`` requests a second, ``-kubeconfig-burst`` at once.

    One per API client, as Flagger builds one per clientset from ``rest.Config.QPS`` / ``Burst``.
    """
    return kube.TokenBucket(qps=settings.kube.qps, burst=settings.kube.burst)


def lease_name(settings: Settings) -> str:
    """Flagger's Lease, or with ``-shard=K/N`` the shard's own: the replicas of one shard elect
    its active process among themselves, and never contend with another shard's."""
    shard = settings.controller.shard_of
    if shard is None:
        return DEFAULT_LEASE_NAME
    index, count = shard
    return f"{DEFAULT_LEASE_NAME}-shard-{index}-of-{count}"


async def run_async(settings: Settings, *, handle_signals: bool = True) -> None:
    """Runs the operator until SIGTERM/SIGINT (or cancellation)."""
    telemetry = Recorder()
    telemetry.set_info(version=__version__, mesh_provider=settings.mesh.provider)
    client = await kube.KubeClient.connect(
        kubeconfig=settings.kube.kubeconfig or None, master=settings.kube.master or None,
        rate_limiter=rate_limit(settings),
    )
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(client)
        mesh_client: kube.KubeClient | None = None
        if settings.kube.service_mesh_kubeconfig:
            mesh_client = await kube.KubeClient.connect(
                kubeconfig=settings.kube.service_mesh_kubeconfig,
                rate_limiter=rate_limit(settings))
            await stack.enter_async_context(mesh_client)
        namespace = settings.controller.cache_namespace

        def serves(key: ObjectKey) -> bool:
            """In this process's namespaces (``-namespace``) and shard (``-shard``)."""
            return settings.controller.serves(key.namespace, key.name)

        caches = SharedInformerFactory(client, namespace=namespace, transform=drop_managed_fields)
        canaries = caches.informer(kube.CANARIES)
        canaries.add_indexer(TARGET_INDEX, index_by(target_of))
        canaries.add_indexer(REFERENCE_INDEX, references_of)
        templates = caches.informer(kube.METRIC_TEMPLATES, resync_period=RESYNC_SECONDS)
        alert_providers = caches.informer(kube.ALERT_PROVIDERS, resync_period=RESYNC_SECONDS)
        secrets = caches.informer(kube.SECRETS)
        # CanaryCommands (docs/steering.md): each new one is answered by its Canary's reconcile.
        commands = None
        if await steering.served(client, namespace=namespace):
            commands = caches.informer(kube.CANARY_COMMANDS)
            commands.add_indexer(steering.CANARY_INDEX, index_by(steering.canary_of))

        elector: LeaderElector | None = None
        writer = client
        if settings.controller.enable_leader_election:
            # The Lease is renewed through a bucket of its own (controller-runtime's resource
            # lock has its own client), so a queue of throttled requests cannot cost leadership.
            elector = LeaderElector(
                client.throttled(rate_limit(settings)),
                namespace=settings.controller.election_namespace,
                name=lease_name(settings),
                lease_duration=settings.controller.leader_election_lease_duration,
                renew_deadline=settings.controller.leader_election_renew_deadline,
                retry_period=settings.controller.leader_election_retry_period,
            )
            writer = client.fenced(elector.is_leader)
        # -kubeconfig-service-mesh: routing objects live on the mesh cluster, read from caches
        # of that cluster and written through its own store (fenced by the same Lease), with no
        # owner references there (Flagger's rule: that cluster has no Canary to own them).
        mesh_caches: SharedInformerFactory | None = None
        mesh_store: kube.ObjectStore | None = None
        if mesh_client is not None:
            mesh_caches = SharedInformerFactory(mesh_client, namespace=namespace,
                                                transform=drop_managed_fields)
            mesh_writer = mesh_client.fenced(elector.is_leader) if elector else mesh_client
            mesh_store = kube.ObjectStore(mesh_writer, caches=mesh_caches)

        queue: WorkQueue[ObjectKey] = WorkQueue(
            CONTROLLER_NAME, metrics=telemetry.queue_metrics(CONTROLLER_NAME)
        )
        workers = settings.controller.workers
        events = EventRecorder(writer)
        webhooks = WebhookCaller()

        def enqueue_owner(resource: kube.Resource, obj: JsonObject) -> None:
            """Someone else changed or deleted an object a Canary owns or names (its target,
            autoscaler, ingress, route or upstream): its reconcile repairs the drift or takes
            the change in (a canary at rest is not ticked); gathered like a rollout's changes."""
            owner = owning_canary(obj)
            keys = [owner] if owner is not None else [
                kube.key_of(canary) for canary in canaries.by_index(
                    REFERENCE_INDEX, reference_index_value(resource.kind, obj))]
            for key in keys:
                if serves(key):
                    queue.add_after(key, SETTLE_SECONDS)

        # The one object store of this API server: every engine and plugin read and write.
        store = kube.ObjectStore(writer, caches=caches, on_changed_by_others=enqueue_owner)
        # What queries and alerts meet is said in the MetricTemplate's / AlertProvider's status.
        conditions = template_status.ConditionWriter(store=store)
        analyzer = template_status.ReportingAnalyzer(
            conditions=conditions,
            templates=templates, secrets=secrets, settings=settings, telemetry=telemetry,
            hold_on_no_values=settings.controller.hold_on_no_values,
        )
        alerter = Alerter(
            settings=settings, client=client, providers=alert_providers.get,
            secrets=secrets.get, registry=telemetry.registry, on_delivery=conditions.delivery,
        )
        steerer = None
        if commands is not None:
            steerer = steering.Steering(store=store, commands=functools.partial(
                commands.by_index, steering.CANARY_INDEX))
        lifecycle = Lifecycle(
            store=store, mesh_store=mesh_store, settings=settings, telemetry=telemetry,
            events=events, webhooks=webhooks, analyzer=analyzer, alerter=alerter,
            steerer=steerer,
        )
        reconciler = CanaryReconciler(
            store=store,
            events=events,
            settings=settings,
            telemetry=telemetry,
            lifecycle=lifecycle,
        )
        controller = Controller(
            CONTROLLER_NAME,
            reconciler,
            queue=queue,
            workers=workers,
            metrics=telemetry.controller_metrics(CONTROLLER_NAME, workers=workers),
            may_act=elector.is_leader if elector is not None else None,
        )

        def enqueue(obj: JsonObject, *, after: float = 0.0) -> None:
            key = kube.key_of(obj)
            if serves(key):
                queue.add_after(key, after)

        totals = CanaryTotals(telemetry)

        def on_update(old: JsonObject, new: JsonObject) -> None:
            if spec_changed(old, new):
                enqueue(new)

        def on_add(obj: JsonObject) -> None:
            enqueue(obj)
            if serves(kube.key_of(obj)):
                totals.added(obj)

        def on_delete(obj: JsonObject) -> None:
            if serves(kube.key_of(obj)):
                totals.deleted(obj)

        canaries.add_handler(on_add=on_add, on_update=on_update, on_delete=on_delete)

        # -dashboard-listen-address: the web dashboard (docs/dashboard.md), off by default. It
        # reads canaries from this cache and records each one's weight from the same watch.
        dashboard: DashboardServer | None = None
        if settings.telemetry.dashboard_listen_address:
            weights = WeightHistory()
            canaries.add_handler(on_add=weights.observe,
                                 on_update=lambda old, new: weights.observe(new),
                                 on_delete=weights.forget)
            dashboard = DashboardServer(
                client=client, canaries=canaries, weights=weights,
                address=settings.telemetry.dashboard_listen_address,
                namespaces=settings.controller.namespaces)

        def on_command(obj: JsonObject) -> None:
            """A new CanaryCommand: its Canary's reconcile answers it (a key, even if no Canary
            has that name: the reconcile of a missing Canary rejects it)."""
            target = steering.canary_of(obj)
            if target is None:
                return
            namespace, _, name = target.partition("/")
            if serves(ObjectKey(namespace, name)):
                queue.add(ObjectKey(namespace, name))

        if commands is not None:
            commands.add_handler(on_add=on_command)

        def enqueue_for_workload(obj: JsonObject, *, after: float = 0.0) -> None:
            for canary in canaries.by_index(TARGET_INDEX, workload_index_value(obj)):
                enqueue(canary, after=after)

        def enqueue_namespace(obj: JsonObject) -> None:
            namespace = str((obj.get("metadata") or {}).get("namespace") or "")
            for canary in canaries.list(namespace=namespace):
                enqueue(canary)

        def watch_workloads(resource: kube.Resource) -> None:
            """A new revision is seen at once, a rollout's progress is gathered first, and our
            own writes (the primary's creation and promotion, the canary's scaling) wake no
            one: the reconcile that made them goes on by itself."""
            def added(obj: JsonObject) -> None:
                if not store.is_ours(resource, obj):
                    enqueue_for_workload(obj)

            def changed(old: JsonObject, new: JsonObject) -> None:
                if is_resync(old, new) or store.is_ours(resource, new):
                    return
                enqueue_for_workload(new, after=0.0 if template_changed(old, new)
                                     else SETTLE_SECONDS)

            caches.informer(resource).add_handler(on_add=added, on_update=changed,
                                                  on_delete=enqueue_for_workload)

        def config_changed(old: JsonObject, new: JsonObject) -> None:
            if old.get("data") != new.get("data") or old.get("binaryData") != new.get(
                "binaryData"
            ):
                enqueue_namespace(new)

        # A new revision (or a primary finishing its rollout) is seen at once, not at the next
        # analysis tick; the lifecycle's pacing keeps early reconciles from advancing a run.
        for resource in (kube.DEPLOYMENTS, kube.DAEMONSETS):
            watch_workloads(resource)
        for resource in (kube.CONFIGMAPS, kube.SECRETS):
            caches.informer(resource).add_handler(on_update=config_changed)

        # A Service target's revision is its spec: seen at once too, by its canaries only.
        def enqueue_for_service(obj: JsonObject) -> None:
            for canary in canaries.by_index(TARGET_INDEX, workload_index_value(obj)):
                if targets_a_service(canary):
                    enqueue(canary)

        def service_changed(old: JsonObject, new: JsonObject) -> None:
            if old.get("spec") != new.get("spec"):
                enqueue_for_service(new)

        caches.informer(kube.SERVICES).add_handler(
            on_add=enqueue_for_service, on_update=service_changed,
            on_delete=enqueue_for_service,
        )

        all_caches = (caches,) if mesh_caches is None else (caches, mesh_caches)
        server = TelemetryServer(telemetry, port=settings.telemetry.port,
                                 ready=lambda: all(c.has_synced for c in all_caches))
        # A MetricTemplate or AlertProvider whose type no installed plugin serves says so in its
        # own status (the CRDs accept any type name).
        status_controllers = [
            plugin_status.status_controller(
                kind, store=store, cache=caches.informer(kind.resource),
                queue_metrics=telemetry.queue_metrics(kind.controller),
                reconcile_metrics=telemetry.controller_metrics(kind.controller, workers=1),
                may_act=elector.is_leader if elector is not None else None,
                serves=serves,
            )
            for kind in plugin_status.KINDS
        ]
        servers = (server,) if dashboard is None else (server, dashboard)
        manager = Manager(runnables=(*all_caches, *servers, controller, *status_controllers),
                          elector=elector)
        log.info(
            "controller_starting",
            version=__version__,
            mesh_provider=settings.mesh.provider,
            namespace=settings.controller.namespace or "*",
            shard=settings.controller.shard or None,
            workers=workers,
            leader_election=elector is not None,
            server=client.server,
            mesh_server=mesh_client.server if mesh_client is not None else None,
        )
        try:
            await manager.run(handle_signals=handle_signals)
        finally:
            await alerter.aclose()
            await lifecycle.aclose()
            await webhooks.aclose()
            await analyzer.aclose()
        log.info("controller_stopped")


def run(settings: Settings) -> int:
    """The ``flaggerpy controller`` entry: blocks until stopped, returns the exit status."""
    asyncio.run(run_async(settings))
    return 0
