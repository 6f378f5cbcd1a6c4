"""Kubernetes Service targets (``targetRef: {apiVersion: v1, kind: Service}``).

Flagger's ``ServiceController`` (``pkg/canary/service_controller.go``): the target is a plain
core/v1 Service, not a workload. There are no pods of ours to run, so the canary release is a
release of the Service itself:

- **Initialize** copies the target into ``<target>-canary`` (created, then kept equal to the
  target on every reconcile) and ``<target>-primary`` (created once, then changed only by a
  promotion), both controlled by the Canary and without kubectl's last-applied annotation;
- **Promote** copies the target's spec, and its labels and annotations matching
  ``-include-label-prefix``, onto ``<target>-primary``;
- a new revision is a change of the target's ``spec`` (its hash is ``status.lastAppliedSpec``);
- nothing is scaled, nothing is tracked, and both sides are always ready.

The mesh router routes between ``<svc>-primary`` and ``<svc>-canary`` as it would for a
Deployment; the engine generates no Services for such a canary (Flagger's
``KubernetesNoopRouter``), since this controller makes the two and the target is the apex.

Where this differs from Flagger, on purpose (docs/compatibility.md, "Service targets"):

- fields the API server allocates per Service -- ``clusterIP``/``clusterIPs`` (unless
  headless), the ports' ``nodePort`` and ``healthCheckNodePort`` -- are never copied from the
  target: a new copy
  gets its own, an existing one keeps its own. Flagger copies them for every type but
  ClusterIP, so its copies of a NodePort or LoadBalancer Service are rejected ("provided port
  is already allocated", "field is immutable");
- the promoted primary keeps its ownerReference to the Canary (Flagger's Promote replaces it
  with the target's, so the primary outlives its Canary);
- the revision hash leaves those allocated fields out too: re-creating the target with the
  same content is not a new revision.

As for the workload kinds, the module is pure builders (tested field by field without an API
server) and a thin async class that reads and writes only through the object store, writing
only when the built object differs from the stored one.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import structlog

from flaggerpy import kube
from flaggerpy.canary import hashing
from flaggerpy.canary.workloads import (
    JsonObject,
    TargetNotFoundError,
    WorkloadController,
    WorkloadMetadata,
    include_by_prefix,
    not_found,
    primary_name,
    spec_changed,
)
from flaggerpy.models import Canary
from flaggerpy.routing import canary_owner
from flaggerpy.settings import Settings

__all__ = [
    "ALLOCATED_SPEC_FIELDS",
    "CANARY_SUFFIX",
    "KUBECTL_LAST_APPLIED",
    "ServiceTargetController",
    "canary_service_name",
    "copied_service",
    "promoted_service",
    "service_spec_hash",
    "updated_copy",
]

log = structlog.get_logger(__name__)

CANARY_SUFFIX = "-canary"
"""Appended to the target's name for the copy that follows the target between promotions."""

KUBECTL_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
"""Dropped from the copies: it describes the target, and a copy carrying it would be taken
for the target by the next ``kubectl apply`` diff."""

ALLOCATED_SPEC_FIELDS = ("clusterIP", "clusterIPs", "healthCheckNodePort")
"""Spec fields the API server allocates to each Service; with each port's ``nodePort``, they
are a Service's own and never copied from another."""

HEADLESS = "None"
"""The ``clusterIP`` of a headless Service, which the copies keep."""

_SYSTEM_METADATA = ("uid", "resourceVersion", "creationTimestamp", "generation",
                    "managedFields", "selfLink", "deletionTimestamp",
                    "deletionGracePeriodSeconds", "ownerReferences", "finalizers")
"""Metadata of the target that is about the target as a stored object, not its content."""


# -- pure builders ------------------------------------------------------------------------------


def canary_service_name(name: str) -> str:
    """``<name>-canary``: the copy of the target that the canary side routes to."""
    return f"{name}{CANARY_SUFFIX}"


def _content_spec(spec: Mapping[str, Any] | None) -> JsonObject:
    """A Service spec without the fields allocated to that Service (and without nodePorts).

    A headless Service's ``clusterIP: None`` is a choice, not an allocation: it stays.
    """
    result = copy.deepcopy(dict(spec or {}))
    headless = result.get("clusterIP") == HEADLESS
    for name in ALLOCATED_SPEC_FIELDS:
        if not (headless and name in ("clusterIP", "clusterIPs")):
            result.pop(name, None)
    if "ports" in result:
        result["ports"] = [{k: v for k, v in port.items() if k != "nodePort"}
                           for port in result["ports"] or ()]
    return result


def _port_key(port: Mapping[str, Any]) -> tuple[Any, ...]:
    # Ports are told apart by name, or by number and protocol when unnamed (a Service with one
    # port may leave it unnamed).
    if port.get("name"):
        return ("name", port["name"])
    return ("port", port.get("port"), port.get("protocol") or "TCP")


def _with_own_allocations(spec: JsonObject, own: Mapping[str, Any] | None) -> JsonObject:
    """``spec`` (a content spec) with the allocated fields of the Service it is written to.

    The API server drops those a new ``type`` no longer has (a nodePort when NodePort becomes
    ClusterIP), so keeping them is always safe, and unchanged ones never reallocate.
    """
    own = own or {}
    result = copy.deepcopy(spec)
    for name in ALLOCATED_SPEC_FIELDS:
        if name in own:
            result[name] = copy.deepcopy(own[name])
    node_ports = {_port_key(p): p["nodePort"] for p in own.get("ports") or () if p.get("nodePort")}
    for port in result.get("ports") or ():
        if _port_key(port) in node_ports:
            port["nodePort"] = node_ports[_port_key(port)]
    return result


def _set_or_drop(target: dict[str, Any], key: str, value: Mapping[str, Any] | None) -> None:
    """Sets a label or annotation map, or removes it when empty (as the API server stores it)."""
    if value:
        target[key] = dict(value)
    else:
        target.pop(key, None)


def _copy_annotations(target: Mapping[str, Any]) -> dict[str, str]:
    annotations = dict((target.get("metadata") or {}).get("annotations") or {})
    annotations.pop(KUBECTL_LAST_APPLIED, None)
    return annotations


def copied_service(target: Mapping[str, Any], *, name: str, owner: JsonObject) -> JsonObject:
    """A new copy of the ``target`` Service named ``name`` (Flagger's ``buildService``). Pure.

    The target's labels, annotations (kubectl's last-applied one dropped) and spec, controlled
    by ``owner`` (a controller ownerReference to the Canary), without the target's stored-object
    metadata, status or allocated fields: the API server gives the copy its own cluster IP and
    node ports.
    """
    meta = copy.deepcopy(dict(target.get("metadata") or {}))
    for key in _SYSTEM_METADATA:
        meta.pop(key, None)
    meta["name"] = name
    _set_or_drop(meta, "annotations", _copy_annotations(target))
    meta["ownerReferences"] = [dict(owner)]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": _content_spec(target.get("spec")),
    }


def updated_copy(
        current: Mapping[str, Any], target: Mapping[str, Any], *, owner: JsonObject,
) -> JsonObject:
    """``current`` (the ``-canary`` copy) made equal to the target again. Pure.

    Labels, annotations and spec become the target's, as in :func:`copied_service`; the
    ownerReferences become ``owner`` alone (Flagger's update replaces them); ``current``'s own
    identity, allocated fields and status stay. Equal to ``current`` when nothing changed.
    """
    result = copy.deepcopy(dict(current))
    meta: dict[str, Any] = result.setdefault("metadata", {})
    _set_or_drop(meta, "labels", (target.get("metadata") or {}).get("labels"))
    _set_or_drop(meta, "annotations", _copy_annotations(target))
    meta["ownerReferences"] = [dict(owner)]
    result["spec"] = _with_own_allocations(_content_spec(target.get("spec")),
                                           current.get("spec"))
    return result


def promoted_service(
        current: Mapping[str, Any],
        target: Mapping[str, Any],
        *,
        include_label_prefix: Sequence[str],
) -> JsonObject:
    """``current`` (the primary) with the target's spec and metadata (Flagger's ``Promote``). Pure.

    The spec becomes the target's (the primary's allocated fields kept); labels and annotations
    become exactly the target's that match ``-include-label-prefix`` (Flux's never). The
    primary's ownerReferences stay: it remains the Canary's.
    """
    result = copy.deepcopy(dict(current))
    meta: dict[str, Any] = result.setdefault("metadata", {})
    target_meta = target.get("metadata") or {}
    _set_or_drop(meta, "labels", include_by_prefix(target_meta.get("labels"),
                                                   include_label_prefix))
    _set_or_drop(meta, "annotations", include_by_prefix(target_meta.get("annotations"),
                                                        include_label_prefix))
    result["spec"] = _with_own_allocations(_content_spec(target.get("spec")),
                                           current.get("spec"))
    return result


def service_spec_hash(service: Mapping[str, Any]) -> str:
    """The revision of a Service target, as ``status.lastAppliedSpec``: its spec's content."""
    return hashing.template_hash(_content_spec(service.get("spec")))


def same_content(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two Services have the same spec, allocated fields aside."""
    return _content_spec(a.get("spec")) == _content_spec(b.get("spec"))


# -- the controller -----------------------------------------------------------------------------


class ServiceTargetController:
    """Service targets (Flagger's ``ServiceController``); see the module docstring."""

    kind: ClassVar[str] = "Service"
    """``targetRef.kind`` this controller serves (with ``apiVersion: v1``)."""
    noun: ClassVar[str] = "service"
    resource: ClassVar[kube.Resource] = kube.SERVICES

    def __init__(self, *, store: kube.ObjectStore, settings: Settings) -> None:
        self._store = store
        self._settings = settings

    async def _target(self, canary: Canary) -> Mapping[str, Any]:
        name = canary.spec.target_ref.name
        target = await self._store.get(self.resource, namespace=canary.namespace, name=name)
        if target is None:
            raise TargetNotFoundError(
                f"{self.noun} {name}.{canary.namespace} get query error: "
                f"{not_found(self.resource, name)}")
        return target

    async def get_metadata(self, canary: Canary) -> WorkloadMetadata:
        """No selector label and no ports: the routers address the two copies by name.

        The target is read anyway, so a missing one keeps the canary in Initializing with the
        reason in its condition rather than failing later in ``initialize``.
        """
        await self._target(canary)
        return WorkloadMetadata(label="", label_value="")

    async def initialize(self, canary: Canary, *, wait_primary_ready: bool) -> None:
        """Creates or updates ``<target>-canary``, creates ``<target>-primary`` when missing.

        ``wait_primary_ready`` changes nothing: a Service is ready once it exists.
        """
        target = await self._target(canary)
        name = canary.spec.target_ref.name
        owner = kube.controller_reference(canary_owner(canary))

        def canary_copy(current: JsonObject | None) -> JsonObject:
            if current is None:
                return copied_service(target, name=canary_service_name(name), owner=owner)
            return updated_copy(current, target, owner=owner)

        def primary_copy(current: JsonObject | None) -> JsonObject | None:
            if current is not None:
                return None  # changed at promotion only
            return copied_service(target, name=primary_name(name), owner=owner)

        for service, build in ((canary_service_name(name), canary_copy),
                               (primary_name(name), primary_copy)):
            applied = await self._store.apply(
                self.resource, namespace=canary.namespace, name=service, build=build)
            if applied.result is not kube.OperationResult.UNCHANGED:
                log.info("service_copy_written", service=service, result=applied.result.value)

    async def is_primary_ready(self, canary: Canary) -> None:
        """Always ready (Flagger's ``IsPrimaryReady`` returns nil)."""

    async def is_canary_ready(self, canary: Canary) -> None:
        """Always ready (Flagger's ``IsCanaryReady`` returns true)."""

    async def promote(self, canary: Canary) -> None:
        """Copies the target's spec and metadata onto ``<target>-primary``.

        No write when the primary already carries them, so a promotion repeated after a
        restart changes nothing.
        """
        target = await self._target(canary)
        name = primary_name(canary.spec.target_ref.name)
        if await self._store.get(self.resource, namespace=canary.namespace, name=name) is None:
            raise TargetNotFoundError(f"{self.noun} {name}.{canary.namespace} get query error: "
                                      f"{not_found(self.resource, name)}")
        prefixes = tuple(self._settings.controller.include_label_prefix)

        def promoted(current: JsonObject | None) -> JsonObject | None:
            if current is None:
                return None  # deleted meanwhile: the next initialize creates it afresh
            return promoted_service(current, target, include_label_prefix=prefixes)

        applied = await self._store.apply(
            self.resource, namespace=canary.namespace, name=name, build=promoted)
        if applied.changed:
            log.info("primary_promoted", kind=self.kind, name=name)

    async def has_target_changed(self, canary: Canary) -> bool:
        """Whether the target's spec is a new revision.

        A ``lastAppliedSpec`` written by Flagger (a Canary moved to flaggerpy) cannot be
        compared with our hash; the target is then compared with the primary instead.
        """
        status = canary.status
        applied = status.last_applied_spec if status is not None else None
        if applied and not hashing.is_template_hash(applied):
            target = await self._target(canary)
            primary = await self._store.get(
                self.resource, namespace=canary.namespace,
                name=primary_name(canary.spec.target_ref.name))
            return primary is None or not same_content(target, primary)
        return spec_changed(status, await self.target_hash(canary))

    async def have_dependencies_changed(self, canary: Canary) -> bool:
        """Never: a Service has no ConfigMaps or Secrets to track."""
        return False

    async def target_hash(self, canary: Canary) -> str:
        """The hash the engine writes as ``status.lastAppliedSpec``."""
        return service_spec_hash(await self._target(canary))

    async def tracked_configs(self, canary: Canary) -> dict[str, str]:
        """Nothing is tracked."""
        return {}

    async def scale_to_zero(self, canary: Canary) -> None:
        """Nothing to scale."""

    async def scale_from_zero(self, canary: Canary) -> None:
        """Nothing to scale."""

    async def finalize(self, canary: Canary) -> None:
        """Nothing to give back: the target Service was never changed."""


_: type[WorkloadController] = ServiceTargetController
