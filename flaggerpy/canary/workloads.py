"""Target controllers: the ``-primary`` copy of a Deployment or DaemonSet, its readiness, scaling.

This is Flagger's ``canary.Controller`` (``pkg/canary/deployment_*.go``, ``daemonset_*.go``) for
the two workload kinds, in two layers:

* **Pure builders** (here and in :mod:`~flaggerpy.canary.deployments`,
  :mod:`~flaggerpy.canary.daemonsets`, :mod:`~flaggerpy.canary.configs`): the primary object built
  from a target, the labels and annotations it carries, readiness decided from a status dict,
  the spec hash. They take plain JSON objects and return new ones, so the unit tests exercise
  every rule without an API server.
* **A thin async layer** (:class:`~flaggerpy.canary.pod_workloads.PodWorkloadController` and its
  two subclasses) that reads from the informer caches and writes only when the built object
  differs from the cached one.

This module is the bottom of that stack: the contract the engine calls
(:class:`WorkloadController`), its errors, and the pure helpers the kinds, the config tracker
and the autoscaler share. It imports none of them, so none of them is imported in a cycle;
:mod:`flaggerpy.canary.targets` picks the implementation for a Canary's target kind.

Every read and write goes through the object store (:class:`flaggerpy.kube.ObjectStore`),
so reads come from caches, never from the API server (design rule 3): a steady-state call of
``initialize``, ``is_primary_ready``, ``has_target_changed`` or ``have_dependencies_changed``
makes no request at all. The store shows our own writes before the watch delivers them, so a
primary just promoted is never mistaken for a finished rollout of the old template; a create
that finds the name taken, or an update that conflicts, is re-read and built again there, and
scaling is an idempotent merge patch.

Why the primary's ``flagger-id`` is derived, not random: Flagger stamps a random UUID on the
primary's pod template at each promotion so that a promotion always rolls the pods, even when
only a ConfigMap changed. Here the UUID is derived from what it marks -- the primary pod
template plus the checksums of the tracked configs -- so new content still always rolls the
pods, while a promotion repeated after a crash or a retry (design rule 2) finds the primary
already up to date and writes nothing.
"""

from __future__ import annotations

import copy
import struct
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from flaggerpy import kube
from flaggerpy.canary import hashing
from flaggerpy.errors import FlaggerError, TerminalError
from flaggerpy.models import Canary, CanaryService, CanaryStatus

JsonObject = dict[str, Any]

PRIMARY_SUFFIX = "-primary"
"""Appended to the target's name, its selector label value and its tracked configs' names."""

FLAGGER_ID_ANNOTATION = "flagger-id"
"""Pod template annotation of the primary that changes whenever its content does."""

TOOLKIT_MARKER = "toolkit.fluxcd.io"
"""Labels and annotations whose key contains this (Flux's) are never copied to a primary."""

SIDECAR_CONTAINERS = frozenset({"istio-proxy", "envoy"})
"""Containers whose ports port discovery skips (Flagger's ``sidecars``)."""


# ---------------------------------------------------------------------------------------------
# The contract the lifecycle engine calls


@dataclass(frozen=True, slots=True)
class WorkloadMetadata:
    """What the routers need to know about a target (Flagger's ``GetMetadata``)."""

    label: str
    """The selector label: the first of ``-selector-labels`` in ``spec.selector.matchLabels``."""
    label_value: str
    """Its value in the target's selector; the primary's is this plus ``-primary``."""
    ports: dict[str, int] = field(default_factory=dict)
    """Container ports found for ``service.portDiscovery``, name -> port; empty when off."""


class WorkloadError(FlaggerError):
    """A target or its primary cannot be used: missing, no selector label, wrong strategy.

    The message is Flagger's wording, fit for the Warning Event the engine emits.
    """


class TargetNotFoundError(WorkloadError):
    """The target workload (or, for promotion, its primary) is not in the cache."""


class UnsupportedTargetError(TerminalError):
    """The Canary's ``targetRef`` names a kind these controllers do not handle."""


class NotReadyError(FlaggerError):
    """A workload has not finished rolling out, with Flagger's message.

    ``retriable`` is False when waiting longer cannot help -- the progress deadline has passed --
    and the engine rolls the canary back; otherwise it only waits for the next tick.
    """

    def __init__(self, message: str, *, retriable: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.retriable = retriable


class WorkloadController(Protocol):
    """One target kind's operations, in the order of the lifecycle (spec §2.3, §2.5)."""

    async def get_metadata(self, canary: Canary) -> WorkloadMetadata: ...
    async def initialize(self, canary: Canary, *, wait_primary_ready: bool) -> None: ...
    async def is_primary_ready(self, canary: Canary) -> None: ...
    async def is_canary_ready(self, canary: Canary) -> None: ...
    async def promote(self, canary: Canary) -> None: ...
    async def has_target_changed(self, canary: Canary) -> bool: ...
    async def have_dependencies_changed(self, canary: Canary) -> bool: ...
    async def target_hash(self, canary: Canary) -> str: ...
    async def tracked_configs(self, canary: Canary) -> dict[str, str]: ...
    async def scale_to_zero(self, canary: Canary) -> None: ...
    async def scale_from_zero(self, canary: Canary) -> None: ...
    async def finalize(self, canary: Canary) -> None: ...


# ---------------------------------------------------------------------------------------------
# Pure helpers shared by the workload kinds, the config tracker and the autoscaler


def primary_name(name: str) -> str:
    """``<name>-primary``: the primary workload, config copy, HPA or selector value."""
    return f"{name}{PRIMARY_SUFFIX}"


def filter_metadata(meta: Mapping[str, str] | None) -> dict[str, str]:
    """Labels or annotations without Flux's ``*toolkit.fluxcd.io*`` keys (``filterMetadata``).

    Copying them would make Flux reconcile, or prune, the objects Flagger generated.
    """
    return {k: v for k, v in (meta or {}).items() if TOOLKIT_MARKER not in k}


def include_by_prefix(meta: Mapping[str, str] | None, prefixes: Sequence[str]) -> dict[str, str]:
    """The entries whose key starts with one of ``-include-label-prefix`` (``*`` = all).

    No prefixes copies nothing, as Flagger does since 1.30. Flux keys are never copied.
    """
    return {
        k: v for k, v in (meta or {}).items()
        if TOOLKIT_MARKER not in k and any(p == "*" or (p and k.startswith(p)) for p in prefixes)
    }


def primary_labels(labels: Mapping[str, str] | None, *, label: str, value: str) -> dict[str, str]:
    """``labels`` without Flux keys, with the selector ``label`` set to ``value``."""
    result = filter_metadata(labels)
    result[label] = value
    return result


def template_annotations(annotations: Mapping[str, str] | None) -> dict[str, str]:
    """A target's pod template annotations as the primary gets them, before its ``flagger-id``."""
    result = filter_metadata(annotations)
    result.pop(FLAGGER_ID_ANNOTATION, None)
    return result


def go_list(items: Iterable[str]) -> str:
    """A string list as Go's ``%v`` prints it, for Flagger's messages: ``[app name]``."""
    return "[" + " ".join(items) + "]"


def selector_label(
        workload: Mapping[str, Any], candidates: Sequence[str],
) -> tuple[str, str] | None:
    """The first candidate label in ``spec.selector.matchLabels``, with its value."""
    match_labels = ((workload.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    for label in candidates:
        if label in match_labels:
            return label, str(match_labels[label])
    return None


def discover_ports(service: CanaryService | None, containers: Iterable[Mapping[str, Any]]) -> dict[
        str, int]:
    """Container ports for ``service.portDiscovery`` (Flagger's ``getPorts``).

    Skips mesh sidecars and the port the Services already target (``targetPort`` if set, by
    number or by name, else ``port``); a port without a name is ``tcp-<container>-<index>``.
    """
    if service is None or not service.port_discovery:
        return {}
    target = service.target_port
    ports: dict[str, int] = {}
    for container in containers:
        name = str(container.get("name") or "")
        if name in SIDECAR_CONTAINERS:
            continue
        for index, port in enumerate(container.get("ports") or ()):
            number = port.get("containerPort")
            if target is None or target == "" or target == 0:
                if number == service.port:
                    continue
            elif isinstance(target, int):
                if number == target:
                    continue
            elif port.get("name") == target:
                continue
            ports[str(port.get("name") or f"tcp-{name}-{index}")] = int(number)
    return ports


def suffix_self_selectors(
        pod_spec: dict[str, Any], *, keys: Collection[str], values: Collection[str],
) -> None:
    """Points the pod spec's self-referencing selectors at the primary pods, in place.

    ``podAntiAffinity`` terms (required and preferred) and ``topologySpreadConstraints`` whose
    label selector says ``<selector label> = <target>`` would match the target's pods, which are
    scaled to zero; on the primary they must say ``<target>-primary``. Flagger rewrites values
    equal to the target's name; values equal to the selector label's value are rewritten too, so
    a target whose name differs from its label value spreads its primary pods as well.
    """
    constraints = pod_spec.get("topologySpreadConstraints") or ()
    selectors: list[Any] = [c.get("labelSelector") for c in constraints]
    anti = (pod_spec.get("affinity") or {}).get("podAntiAffinity") or {}
    selectors += [(term.get("podAffinityTerm") or {}).get("labelSelector")
                  for term in anti.get("preferredDuringSchedulingIgnoredDuringExecution") or ()]
    selectors += [term.get("labelSelector")
                  for term in anti.get("requiredDuringSchedulingIgnoredDuringExecution") or ()]
    for selector in selectors:
        if not isinstance(selector, dict):
            continue
        for expression in selector.get("matchExpressions") or ():
            if expression.get("key") not in keys:
                continue
            found = expression.get("values") or []
            for index, value in enumerate(found):
                if value in values:
                    found[index] = primary_name(value)
                    break
        match_labels = selector.get("matchLabels") or {}
        for key, value in match_labels.items():
            if key in keys and value in values:
                match_labels[key] = primary_name(value)


def spec_changed(status: CanaryStatus | None, new_hash: str) -> bool:
    """Flagger's ``hasSpecChanged``: a new revision to analyse?

    Never analysed yet: yes. Equal to the promoted spec: no, so reverting the target by hand to
    what the primary runs does not start a canary (spec §10.8). Otherwise: whether it differs
    from the last applied spec.
    """
    applied = status.last_applied_spec if status is not None else None
    if not applied:
        return True
    assert status is not None
    if status.last_promoted_spec == new_hash:
        return False
    return applied != new_hash


def configs_changed(tracked: Mapping[str, str] | None, current: Mapping[str, str]) -> bool:
    """Flagger's ``HasConfigChanged``: checksums now vs ``status.trackedConfigs``."""
    if not current and tracked is None:
        return False
    if tracked is None or len(current) != len(tracked):
        return True
    return any(tracked.get(key) != checksum for key, checksum in current.items())


def _float32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


def ready_threshold_count(count: int, percent: int) -> int:
    """``int32(float32(count) * (float32(percent) / 100))``, rounding exactly as Go does.

    A readiness threshold must be met by the same replica counts in both implementations;
    float32 arithmetic rounds differently from float64 in a few cases (29 % of 100 is 28 in
    float64 but 29 in float32).
    """
    ratio = _float32(_float32(percent) / 100.0)
    return int(_float32(_float32(count) * ratio))


def condition(status: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    """The status condition of that type, or None."""
    for item in (status or {}).get("conditions") or ():
        if item.get("type") == type_:
            return item  # type: ignore[no-any-return]
    return None


def parse_time(value: Any) -> datetime | None:
    """A Kubernetes timestamp (``2024-05-01T10:00:00Z``) or None when absent or unreadable."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def deadline_passed(since: datetime | None, seconds: int, now: datetime) -> bool:
    """Whether ``since + seconds`` is before ``now``; an unknown start never expires."""
    return since is not None and since + timedelta(seconds=seconds) < now


@dataclass(frozen=True, slots=True)
class Readiness:
    """A readiness decision: ready, or why not and whether waiting can help."""

    ready: bool
    message: str = ""
    retriable: bool = True


READY = Readiness(True)


def not_ready(message: str, *, retriable: bool = True) -> Readiness:
    """A negative :class:`Readiness`."""
    return Readiness(False, message, retriable)


def not_found(resource: kube.Resource, name: str) -> str:
    """The API server's NotFound text, e.g. ``deployments.apps "podinfo" not found``."""
    plural = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
    return f'{plural} "{name}" not found'


def pod_template(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    """``spec.template`` of a workload, ``{}`` when absent."""
    return ((workload.get("spec") or {}).get("template")) or {}


def pod_spec(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    """``spec.template.spec`` of a workload, ``{}`` when absent."""
    return pod_template(workload).get("spec") or {}


def primary_pod_template(
        target: Mapping[str, Any],
        *,
        spec: dict[str, Any],
        label: str,
        value: str,
        checksums: Mapping[str, str],
) -> JsonObject:
    """The primary's pod template: ``spec`` (already rewritten) under the primary's metadata.

    Labels are the target's template labels with ``<label>: <value>-primary``; annotations are
    the target's (Flux keys dropped) plus ``flagger-id``, derived from everything else in the
    template and from the tracked configs' ``checksums`` (see the module docstring).
    """
    meta = pod_template(target).get("metadata") or {}
    template: JsonObject = {
        "metadata": {
            "labels": primary_labels(meta.get("labels"), label=label, value=primary_name(value)),
            "annotations": template_annotations(meta.get("annotations")),
        },
        "spec": spec,
    }
    template["metadata"]["annotations"][FLAGGER_ID_ANNOTATION] = hashing.content_id(
        template, dict(sorted(checksums.items())))
    return template


def with_template(current: Mapping[str, Any], template: Mapping[str, Any]) -> JsonObject:
    """``current``'s pod template replaced by ``template``, keeping other template metadata.

    The spec is replaced whole, not merged: a field removed from the target (an env var, a
    volume) must disappear from the primary too.
    """
    old = dict(pod_template(current))
    old_meta = {k: v for k, v in (old.get("metadata") or {}).items()
                if k not in ("labels", "annotations")}
    return {
        **old,
        "metadata": {**old_meta, **copy.deepcopy(dict(template["metadata"]))},
        "spec": copy.deepcopy(template["spec"]),
    }


def same_template(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether two primary pod templates have the same labels, annotations and spec.

    ``flagger-id`` is left out: it marks a promotion, not the content.
    """
    def content(template: Mapping[str, Any]) -> tuple[Any, Any, Any]:
        meta = template.get("metadata") or {}
        annotations = dict(meta.get("annotations") or {})
        annotations.pop(FLAGGER_ID_ANNOTATION, None)
        return meta.get("labels") or {}, annotations, template.get("spec") or {}
    return content(current) == content(wanted)


def merged_metadata(current: Mapping[str, str] | None, wanted: Mapping[str, str]) -> dict[str, str]:
    """``wanted`` laid over ``current``: keys set by others (the Deployment controller's
    ``deployment.kubernetes.io/revision``) stay."""
    return {**(current or {}), **wanted}


def set_or_drop(target: dict[str, Any], key: str, value: Any) -> None:
    """Sets ``key``, or removes it when ``value`` is None (JSON omitempty)."""
    if value is None:
        target.pop(key, None)
    else:
        target[key] = copy.deepcopy(value)


def build_primary_workload(
        target: Mapping[str, Any],
        *,
        kind: str,
        copied_fields: Sequence[str],
        label: str,
        value: str,
        template: JsonObject,
        owner: JsonObject,
        include_label_prefix: Sequence[str],
) -> JsonObject:
    """The primary ``kind`` for ``target``: the metadata and spec rules both kinds share.

    Labels: the target's labels matching ``-include-label-prefix``, with ``<label>:
    <value>-primary``; annotations: all of the target's but Flux's; owned by the Canary; the
    selector matches ``<value>-primary`` only; ``copied_fields`` of the spec are the target's.
    """
    meta = target.get("metadata") or {}
    spec = target.get("spec") or {}
    primary_value = primary_name(value)
    primary_spec: JsonObject = {
        "selector": {"matchLabels": {label: primary_value}},
        "template": copy.deepcopy(template),
    }
    for name in copied_fields:
        set_or_drop(primary_spec, name, spec.get(name))
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {
            "name": primary_name(str(meta.get("name"))),
            "namespace": meta.get("namespace"),
            "labels": primary_labels(
                include_by_prefix(meta.get("labels"), include_label_prefix),
                label=label, value=primary_value),
            "annotations": filter_metadata(meta.get("annotations")),
            "ownerReferences": [owner],
        },
        "spec": primary_spec,
    }


def promoted_workload(
        current: Mapping[str, Any],
        target: Mapping[str, Any],
        *,
        copied_fields: Sequence[str],
        label: str,
        value: str,
        template: JsonObject,
        include_label_prefix: Sequence[str],
) -> JsonObject:
    """``current`` (the primary) with the target's spec fields, template and metadata on it.

    Labels and annotations matching ``-include-label-prefix`` are laid over the primary's own,
    so keys set on it by others (``deployment.kubernetes.io/revision``) stay.
    """
    wanted: JsonObject = copy.deepcopy(dict(current))
    spec = wanted.setdefault("spec", {})
    source = target.get("spec") or {}
    for name in copied_fields:
        set_or_drop(spec, name, source.get(name))
    spec["template"] = with_template(current, template)
    target_meta = target.get("metadata") or {}
    meta = wanted.setdefault("metadata", {})
    meta["labels"] = merged_metadata(meta.get("labels"), primary_labels(
        include_by_prefix(target_meta.get("labels"), include_label_prefix),
        label=label, value=primary_name(value)))
    annotations = merged_metadata(
        meta.get("annotations"),
        include_by_prefix(target_meta.get("annotations"), include_label_prefix))
    set_or_drop(meta, "annotations", annotations or None)
    return wanted
