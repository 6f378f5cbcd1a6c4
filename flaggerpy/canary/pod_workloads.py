"""The async layer the Deployment and DaemonSet controllers share (Flagger's ``canary.Controller``).

:class:`PodWorkloadController` implements :class:`~flaggerpy.canary.workloads.WorkloadController`
for a kind that runs pods from a template: it reads the target and its primary through the
object store, builds with the pure helpers of :mod:`~flaggerpy.canary.workloads`, and leaves the
kind's rules (the primary's spec, readiness, scaling) to its subclasses in
:mod:`~flaggerpy.canary.deployments` and :mod:`~flaggerpy.canary.daemonsets`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import structlog

from flaggerpy import kube
from flaggerpy.canary import hashing
from flaggerpy.canary.configs import ConfigRef, ConfigTracker
from flaggerpy.canary.workloads import (
    FLAGGER_ID_ANNOTATION,
    JsonObject,
    NotReadyError,
    Readiness,
    TargetNotFoundError,
    WorkloadError,
    WorkloadMetadata,
    configs_changed,
    discover_ports,
    go_list,
    not_found,
    pod_spec,
    pod_template,
    primary_name,
    primary_pod_template,
    same_template,
    selector_label,
    spec_changed,
    suffix_self_selectors,
)
from flaggerpy.models import Canary
from flaggerpy.settings import Settings

log = structlog.get_logger(__name__)


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
