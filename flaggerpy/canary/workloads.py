"""Target controllers: the ``-primary`` copy of a Deployment or DaemonSet, its readiness, scaling.

This is Flagger's ``canary.Controller`` (``pkg/canary/deployment_*.go``, ``daemonset_*.go``) for
the two workload kinds, in two layers:

* **Pure builders** (here and in :mod:`~flaggerpy.canary.deployments`,
  :mod:`~flaggerpy.canary.daemonsets`, :mod:`~flaggerpy.canary.configs`): the primary object built
  from a target, the labels and annotations it carries, readiness decided from a status dict,
  the spec hash. They take plain JSON objects and return new ones, so the unit tests exercise
  every rule without an API server.
* **A thin async layer** (:class:`PodWorkloadController` and its two subclasses) that reads from
  the informer caches and writes only when the built object differs from the cached one.

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
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import structlog

from flaggerpy import kube
from flaggerpy.canary import hashing
from flaggerpy.errors import FlaggerError, TerminalError
from flaggerpy.models import Canary, CanaryService, CanaryStatus
from flaggerpy.settings import Settings

if TYPE_CHECKING:
    from flaggerpy.canary.autoscalers import PrimaryAutoscaler as PrimaryAutoscaler
    from flaggerpy.canary.configs import ConfigRef, ConfigTracker

log = structlog.get_logger(__name__)

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


def workload_controller(
        canary: Canary,
        *,
        store: kube.ObjectStore,
        settings: Settings,
) -> WorkloadController:
    """The controller for the Canary's target kind: Deployment or DaemonSet.

    Cheap to call on every reconcile: it holds references only, all state is in the store and
    the Canary status. Other kinds raise :class:`UnsupportedTargetError` (the CRD already limits
    ``targetRef.kind`` to Deployment, DaemonSet and Service).
    """
    # Imported here: those modules build on the helpers below.
    from flaggerpy.canary.daemonsets import DaemonSetController
    from flaggerpy.canary.deployments import DeploymentController

    kind = canary.spec.target_ref.kind
    if kind == DeploymentController.kind:
        return DeploymentController(store=store, settings=settings)
    if kind == DaemonSetController.kind:
        return DaemonSetController(store=store, settings=settings)
    raise UnsupportedTargetError(
        f"canary {canary.name}.{canary.namespace}: targetRef kind {kind!r} is not handled by"
        " the workload controllers (Deployment, DaemonSet)")


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


# ---------------------------------------------------------------------------------------------
# The async layer


class PodWorkloadController:
    """What the Deployment and DaemonSet controllers share; subclasses fill in the kind.

    Subclasses set :attr:`kind`, :attr:`noun` and :attr:`resource`, and implement the
    ``_build_primary``, ``_promoted``, ``_readiness`` and scaling hooks.
    """

    kind: ClassVar[str]
    """``targetRef.kind`` this controller serves."""
    noun: ClassVar[str]
    """The kind as Flagger's messages spell it: ``deployment``, ``daemonset``."""
    resource: ClassVar[kube.Resource]

    def __init__(
            self,
            *,
            store: kube.ObjectStore,
            settings: Settings,
            tracker: ConfigTracker,
    ) -> None:
        self._store = store
        self._settings = settings
        self._tracker = tracker

    @property
    def selector_labels(self) -> tuple[str, ...]:
        """``-selector-labels``, in order."""
        return tuple(self._settings.controller.selector_labels)

    @property
    def include_label_prefix(self) -> tuple[str, ...]:
        """``-include-label-prefix``."""
        return tuple(self._settings.controller.include_label_prefix)

    # -- reads (the store: caches and our own writes) ---------------------------------------

    async def _target(self, canary: Canary) -> Mapping[str, Any]:
        name = canary.spec.target_ref.name
        target = await self._store.get(self.resource, namespace=canary.namespace, name=name)
        if target is None:
            raise TargetNotFoundError(
                f"{self.noun} {name}.{canary.namespace} get query error: "
                f"{not_found(self.resource, name)}")
        return target

    async def _primary(self, canary: Canary) -> Mapping[str, Any] | None:
        """The primary as we last know it: our own promotion shows before the watch has it."""
        return await self._store.get(
            self.resource, namespace=canary.namespace,
            name=primary_name(canary.spec.target_ref.name))

    def _selector(self, workload: Mapping[str, Any]) -> tuple[str, str]:
        found = selector_label(workload, self.selector_labels)
        if found is None:
            key = kube.key_of(workload)
            raise WorkloadError(
                f"{self.noun} {key.name}.{key.namespace} spec.selector.matchLabels must contain"
                f" one of {go_list(self.selector_labels)}")
        return found

    # -- the contract ----------------------------------------------------------------------

    async def get_metadata(self, canary: Canary) -> WorkloadMetadata:
        """The selector label and value, and the discovered ports (Flagger's ``GetMetadata``)."""
        target = await self._target(canary)
        label, value = self._selector(target)
        ports = discover_ports(canary.spec.service, pod_spec(target).get("containers") or ())
        return WorkloadMetadata(label=label, label_value=value, ports=ports)

    async def initialize(self, canary: Canary, *, wait_primary_ready: bool) -> None:
        """Creates the primary (and its config copies) when missing; optionally checks it is ready.

        An existing primary is left alone: it changes at promotion only. Raises
        :class:`NotReadyError` when ``wait_primary_ready`` and the primary has not rolled out.
        """
        target = await self._target(canary)
        self._check_target(target)
        label, value = self._selector(target)
        primary = await self._primary(canary)
        if primary is None:
            refs = await self._tracker.target_configs(canary, pod_spec(target))
            await self._tracker.sync_primary_configs(canary, refs)
            body = self._build_primary(
                canary, target, label=label, value=value,
                template=self._primary_template(target, label=label, value=value, refs=refs))
            primary = await self._create(body)
        if wait_primary_ready:
            self._raise_primary_not_ready(canary, primary)

    async def is_primary_ready(self, canary: Canary) -> None:
        """Raises :class:`NotReadyError` unless the primary has rolled out."""
        primary = await self._primary(canary)
        if primary is None:
            name = primary_name(canary.spec.target_ref.name)
            raise NotReadyError(f"{self.noun} {name}.{canary.namespace} get query error: "
                                f"{not_found(self.resource, name)}")
        self._raise_primary_not_ready(canary, primary)

    async def is_canary_ready(self, canary: Canary) -> None:
        """Raises :class:`NotReadyError` unless the target has rolled out.

        Not retriable once the progress deadline has passed: the engine then rolls back.
        """
        name = canary.spec.target_ref.name
        target = await self._store.get(self.resource, namespace=canary.namespace, name=name)
        if target is None:
            raise NotReadyError(f"{self.noun} {name}.{canary.namespace} get query error: "
                                f"{not_found(self.resource, name)}")
        readiness = self._readiness(
            target, canary, threshold=canary.get_analysis_canary_ready_threshold(),
            now=_now())
        if not readiness.ready:
            raise NotReadyError(self._canary_not_ready_message(canary, readiness),
                                retriable=readiness.retriable)

    async def promote(self, canary: Canary) -> None:
        """Copies the target's pod template, metadata and tracked configs onto the primary.

        Configs first, so the primary's new pods find their ``-primary`` copies up to date. No
        write at all when the primary already carries this content (see ``flagger-id``).
        """
        target = await self._target(canary)
        label, value = self._selector(target)
        name = primary_name(canary.spec.target_ref.name)
        current = await self._primary(canary)
        if current is None:
            raise TargetNotFoundError(f"{self.noun} {name}.{canary.namespace} get query error: "
                                      f"{not_found(self.resource, name)}")
        refs = await self._tracker.target_configs(canary, pod_spec(target))
        await self._tracker.sync_primary_configs(canary, refs)
        template = self._primary_template(target, label=label, value=value, refs=refs)

        def promoted(primary: JsonObject | None) -> JsonObject | None:
            if primary is None:
                return None  # deleted meanwhile: the next initialize creates it afresh
            return self._promoted(
                primary, target, canary=canary, label=label, value=value, template=template)

        applied = await self._store.apply(
            self.resource, namespace=canary.namespace, name=name, build=promoted)
        if not applied.changed:
            log.debug("primary_up_to_date", kind=self.kind, name=name)
            return
        log.info("primary_promoted", kind=self.kind, name=name,
                 flagger_id=template["metadata"]["annotations"][FLAGGER_ID_ANNOTATION])

    async def has_target_changed(self, canary: Canary) -> bool:
        """Whether the target's pod template is a new revision (spec §2.5 ``HasTargetChanged``).

        A ``lastAppliedSpec`` written by Flagger (a Canary moved to flaggerpy) cannot be
        compared with our hash; then the target is compared with what the primary runs
        instead, so a canary Flagger had promoted does not start an analysis of the same
        revision. The engine's next status write replaces the foreign hash with ours.
        """
        status = canary.status
        applied = status.last_applied_spec if status is not None else None
        if applied and not hashing.is_template_hash(applied):
            return not await self._target_matches_primary(canary)
        return spec_changed(status, await self.target_hash(canary))

    async def have_dependencies_changed(self, canary: Canary) -> bool:
        """Whether a tracked ConfigMap or Secret changed since ``status.trackedConfigs``."""
        if not self._tracker.enabled:
            return False
        tracked = canary.status.tracked_configs if canary.status is not None else None
        return configs_changed(tracked, await self.tracked_configs(canary))

    async def target_hash(self, canary: Canary) -> str:
        """The hash the engine writes as ``status.lastAppliedSpec``."""
        template = pod_template(await self._target(canary))
        return hashing.template_hash(self._hashable_template(template))

    async def tracked_configs(self, canary: Canary) -> dict[str, str]:
        """``"configmap/<name>"`` / ``"secret/<name>"`` -> checksum; ``{}`` when tracking is off."""
        if not self._tracker.enabled:
            return {}
        refs = await self._tracker.target_configs(canary, pod_spec(await self._target(canary)))
        return {key: ref.checksum for key, ref in sorted(refs.items())}

    async def scale_to_zero(self, canary: Canary) -> None:
        raise NotImplementedError

    async def scale_from_zero(self, canary: Canary) -> None:
        raise NotImplementedError

    async def finalize(self, canary: Canary) -> None:
        raise NotImplementedError

    # -- shared mechanics ------------------------------------------------------------------

    async def _target_matches_primary(self, canary: Canary) -> bool:
        """Whether the primary runs the target's pod template (``flagger-id`` aside)."""
        target = await self._target(canary)
        primary = await self._primary(canary)
        if primary is None:
            return False
        label, value = self._selector(target)
        refs = await self._tracker.target_configs(canary, pod_spec(target))
        return same_template(
            pod_template(primary),
            self._primary_template(target, label=label, value=value, refs=refs))

    def _primary_template(
            self,
            target: Mapping[str, Any],
            *,
            label: str,
            value: str,
            refs: Mapping[str, ConfigRef],
    ) -> JsonObject:
        spec = self._tracker.apply_primary_configs(pod_spec(target), refs)
        key = kube.key_of(target)
        suffix_self_selectors(spec, keys=self.selector_labels, values={key.name, value})
        self._adjust_primary_pod_spec(spec)
        return primary_pod_template(
            target, spec=spec, label=label, value=value,
            checksums={k: ref.checksum for k, ref in refs.items()})

    async def _create(self, body: JsonObject) -> Mapping[str, Any]:
        """Creates the primary; one created meanwhile (by an earlier call) is left as it is."""
        key = kube.key_of(body)
        applied = await self._store.apply(
            self.resource, namespace=key.namespace, name=key.name,
            build=lambda current: body if current is None else None)
        if applied.result is kube.OperationResult.CREATED:
            log.info("primary_created", kind=self.kind, name=key.name)
        assert applied.obj is not None  # created, or found by the create's re-read
        return applied.obj

    def _raise_primary_not_ready(self, canary: Canary, primary: Mapping[str, Any]) -> None:
        readiness = self._readiness(
            primary, canary, threshold=canary.get_analysis_primary_ready_threshold(), now=_now())
        if not readiness.ready:
            raise NotReadyError(self._primary_not_ready_message(canary, readiness),
                                retriable=readiness.retriable)

    async def _patch_target(self, canary: Canary, patch: Mapping[str, Any]) -> None:
        await self._store.patch(self.resource, namespace=canary.namespace,
                                name=canary.spec.target_ref.name, patch=patch)

    # -- hooks -----------------------------------------------------------------------------

    def _check_target(self, target: Mapping[str, Any]) -> None:
        """Raises :class:`WorkloadError` for a target that cannot be canaried."""

    def _adjust_primary_pod_spec(self, spec: dict[str, Any]) -> None:
        """Kind-specific changes to the primary's pod spec, in place."""

    def _hashable_template(self, template: Mapping[str, Any]) -> Any:
        """What of the pod template counts as the target's revision (all of it by default)."""
        return template

    def _build_primary(
            self,
            canary: Canary,
            target: Mapping[str, Any],
            *,
            label: str,
            value: str,
            template: JsonObject,
    ) -> JsonObject:
        raise NotImplementedError

    def _promoted(
            self,
            current: Mapping[str, Any],
            target: Mapping[str, Any],
            *,
            canary: Canary,
            label: str,
            value: str,
            template: JsonObject,
    ) -> JsonObject:
        raise NotImplementedError

    def _readiness(
            self, workload: Mapping[str, Any], canary: Canary, *, threshold: int, now: datetime,
    ) -> Readiness:
        raise NotImplementedError

    def _primary_not_ready_message(self, canary: Canary, readiness: Readiness) -> str:
        raise NotImplementedError

    def _canary_not_ready_message(self, canary: Canary, readiness: Readiness) -> str:
        raise NotImplementedError


def _now() -> datetime:
    return datetime.now(UTC)


def __getattr__(name: str) -> Any:
    # PrimaryAutoscaler lives in autoscalers.py, which builds on this module; it is importable
    # from here as well (the engine's one import for the workload contract), loaded on first use.
    if name == "PrimaryAutoscaler":
        from flaggerpy.canary.autoscalers import PrimaryAutoscaler

        return PrimaryAutoscaler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
