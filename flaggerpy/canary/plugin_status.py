"""Says in a MetricTemplate's or AlertProvider's own status whether its plugin is installed.

The plugin families are open: the CRDs accept any metrics provider type and any alert type, so
a typo, or a plugin missing from this controller's image, would otherwise show only when a
Canary uses the object. One small controller per kind reads the object from the informer
cache (through the object store) and keeps a ``Ready`` condition in its ``status.conditions``:

- ``True``, reason ``ProviderInstalled``, when the ``flaggerpy.metrics`` /
  ``flaggerpy.notifiers`` registry has the type;
- ``False``, reason ``ProviderNotInstalled``, with the installed names
  (``metrics provider type "foo" is not installed; installed: prometheus``);
- ``False``, reason ``ProviderNotLoadable``, when the plugin is installed but fails to import
  or does not implement its contract.

It writes through the status subresource, and only when the condition's status, reason or
message differs from what is there (design rule 3): a steady state costs no request. Every
watch event re-checks the object (a level-based reconcile: the informer's resync re-checks
them all), so an edited type, or a condition someone removed, is put right within seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import structlog

from flaggerpy import kube, plugins
from flaggerpy.canary import template_status
from flaggerpy.canary.status import now_rfc3339
from flaggerpy.canary.template_status import Wanted
from flaggerpy.errors import PluginError, UnknownProviderError
from flaggerpy.kube import JsonObject, ObjectKey
from flaggerpy.runtime.controller import Controller, ReconcileMetrics, Result
from flaggerpy.runtime.workqueue import QueueMetrics, WorkQueue

__all__ = [
    "ALERT_PROVIDERS",
    "INSTALLED",
    "KINDS",
    "METRIC_TEMPLATES",
    "NOT_INSTALLED",
    "NOT_LOADABLE",
    "READY",
    "PluginStatusReconciler",
    "Readiness",
    "TypedKind",
    "readiness",
    "ready_patch",
    "status_controller",
]

log = structlog.get_logger(__name__)

READY = "Ready"
INSTALLED = "ProviderInstalled"
NOT_INSTALLED = "ProviderNotInstalled"
NOT_LOADABLE = "ProviderNotLoadable"


@dataclass(frozen=True, slots=True, kw_only=True)
class TypedKind:
    """A kind whose objects name a plugin: where the name is and which registry serves it."""

    controller: str
    """The controller's (and its work queue's) name in logs and metrics."""
    resource: kube.Resource
    type_path: tuple[str, ...]
    """Wire keys from the object root to the plugin name."""
    noun: str
    """What the name is, for messages (``metrics provider type``)."""
    registry: plugins.Registry[Any]
    conditions: Callable[[Mapping[str, Any]], Wanted | None] | None = None
    """Another condition of the object's spec to keep beside ``Ready`` (written with it)."""


METRIC_TEMPLATES = TypedKind(
    controller="metrictemplate-status", resource=kube.METRIC_TEMPLATES,
    type_path=("spec", "provider", "type"), noun="metrics provider type",
    registry=plugins.metrics,
)
ALERT_PROVIDERS = TypedKind(
    controller="alertprovider-status", resource=kube.ALERT_PROVIDERS,
    type_path=("spec", "type"), noun="alert provider type", registry=plugins.notifiers,
    conditions=template_status.templates_condition,  # are its alert templates usable
)
KINDS = (METRIC_TEMPLATES, ALERT_PROVIDERS)


class Readiness(NamedTuple):
    """The ``Ready`` condition's status, reason and message for one plugin name."""

    status: str
    reason: str
    message: str


def readiness(name: str, *, kind: TypedKind) -> Readiness:
    """Whether ``name`` is served by an installed plugin; loads it (once) to be sure."""
    plugin, _variant = kind.registry.resolve(name)
    try:
        kind.registry.load(plugin)
    except UnknownProviderError as exc:
        installed = ", ".join(exc.available) or "none"
        return Readiness("False", NOT_INSTALLED,
                         f'{kind.noun} "{name}" is not installed; installed: {installed}')
    except PluginError as exc:
        return Readiness("False", NOT_LOADABLE, f'{kind.noun} "{name}" cannot be used: {exc}')
    return Readiness("True", INSTALLED, f'{kind.noun} "{name}" is installed')


def _plugin_name(obj: Mapping[str, Any], path: tuple[str, ...]) -> str | None:
    node: Any = obj
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, str) and node else None


def ready_patch(
        obj: Mapping[str, Any], wanted: Readiness
) -> dict[str, Any] | None:
    """The status patch that sets ``Ready`` to ``wanted``, or None when it already is.

    The condition carries the object's ``observedGeneration``, so an edited spec whose type
    is still served gets its ``Ready`` written again, naming the new generation.
    """
    conditions = [dict(c) for c in (obj.get("status") or {}).get("conditions") or []]
    current = next((c for c in conditions if c.get("type") == READY), None)
    generation = (obj.get("metadata") or {}).get("generation")
    if not isinstance(generation, int):
        generation = None
    if current is not None and (
            current.get("status"), current.get("reason"), current.get("message")) == wanted \
            and current.get("observedGeneration") == generation:
        return None
    now = now_rfc3339()
    transition = now
    if current is not None and current.get("status") == wanted.status:
        transition = current.get("lastTransitionTime") or now
    condition: dict[str, Any] = {
        "type": READY,
        "status": wanted.status,
        "reason": wanted.reason,
        "message": wanted.message,
        "lastUpdateTime": now,
        "lastTransitionTime": transition,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    others = [c for c in conditions if c.get("type") != READY]
    patch: dict[str, Any] = {"status": {"conditions": [*others, condition]}}
    version = kube.resource_version(obj)
    if version:
        # Merge patches replace lists whole: the precondition makes sure no one else's
        # condition written meanwhile is dropped.
        patch["metadata"] = {"resourceVersion": version}
    return patch


class PluginStatusReconciler:
    """Keeps the ``Ready`` condition of one kind's objects, keyed by namespace/name."""

    def __init__(self, kind: TypedKind, *, store: kube.ObjectStore) -> None:
        self._kind = kind
        self._store = store

    async def reconcile(self, key: ObjectKey) -> Result:
        resource = self._kind.resource
        obj = await self._store.get(resource, namespace=key.namespace, name=key.name)
        if obj is None:
            return Result()
        name = _plugin_name(obj, self._kind.type_path)
        if name is None:  # the CRD requires it; nothing to report on
            return Result()
        wanted = readiness(name, kind=self._kind)
        patch = ready_patch(obj, wanted)
        other = self._kind.conditions(obj) if self._kind.conditions is not None else None
        if other is not None:
            written = {**obj, "status": (patch or {}).get("status") or obj.get("status") or {}}
            patch = template_status.conditions_patch(written, [other])
        if patch is None:
            return Result()
        try:
            await self._store.patch(resource, namespace=key.namespace, name=key.name,
                                    patch=patch, subresource="status")
        except (kube.ConflictError, kube.NotFoundError) as exc:
            # Changed or deleted since the cache saw it: its watch event enqueues it again.
            log.debug("plugin_status_skipped", kind=resource.kind, reason=exc.reason)
            return Result()
        event = log.info if wanted.status == "True" else log.warning
        event("plugin_status_written", kind=resource.kind, type=name, status=wanted.status,
              reason=wanted.reason, message=wanted.message)
        return Result()


def status_controller(
        kind: TypedKind,
        *,
        store: kube.ObjectStore,
        cache: kube.WatchedCache,
        queue_metrics: QueueMetrics | None = None,
        reconcile_metrics: ReconcileMetrics | None = None,
        may_act: Callable[[], bool] | None = None,  # the leader elector's is_leader
        serves: Callable[[ObjectKey], bool] = lambda _key: True,
) -> Controller[ObjectKey]:
    """A one-worker controller for ``kind``, fed by every add and update in ``cache`` of an
    object this process ``serves`` (``-namespace``, ``-shard``)."""
    queue: WorkQueue[ObjectKey] = WorkQueue(kind.controller, metrics=queue_metrics)

    def enqueue(obj: JsonObject) -> None:
        key = kube.key_of(obj)
        if serves(key):
            queue.add(key)

    cache.add_handler(on_add=enqueue, on_update=lambda _old, new: enqueue(new))
    return Controller(kind.controller, PluginStatusReconciler(kind, store=store), queue=queue,
                      metrics=reconcile_metrics, may_act=may_act)
