"""Deployment targets: the primary Deployment, its promotion, readiness and scaling.

Flagger's ``deployment_controller.go`` and ``deployment_ready.go``. The pure functions build and
judge plain Deployment dicts; :class:`DeploymentController` reads them through the object store
(the Deployment cache, with our own writes on top) and writes the difference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

import structlog

from flaggerpy import kube
from flaggerpy.canary import configs, pod_workloads, workloads
from flaggerpy.canary.workloads import JsonObject, Readiness
from flaggerpy.models import Canary
from flaggerpy.routing import canary_owner
from flaggerpy.settings import Settings

log = structlog.get_logger(__name__)


COPIED_SPEC_FIELDS = ("progressDeadlineSeconds", "minReadySeconds", "revisionHistoryLimit",
                      "strategy")
"""Deployment spec fields the primary takes from the target at creation and at each promotion."""


def build_primary_deployment(
        target: Mapping[str, Any],
        *,
        label: str,
        value: str,
        template: JsonObject,
        owner: JsonObject,
        include_label_prefix: Sequence[str],
) -> JsonObject:
    """The primary Deployment for ``target``, as Flagger's ``createPrimaryDeployment`` builds it.

    Labels: the target's labels matching ``-include-label-prefix``, with ``<label>:
    <value>-primary``; annotations: all of the target's but Flux's; owned by the Canary; the
    selector matches ``<value>-primary`` only; replicas are the target's, at least 1 (a target
    already scaled to zero must not create an empty primary); ``template`` is the primary pod
    template (:func:`flaggerpy.canary.workloads.primary_pod_template`).
    """
    primary = workloads.build_primary_workload(
        target, kind="Deployment", copied_fields=COPIED_SPEC_FIELDS, label=label, value=value,
        template=template, owner=owner, include_label_prefix=include_label_prefix)
    replicas = (target.get("spec") or {}).get("replicas")
    primary["spec"]["replicas"] = replicas if isinstance(replicas, int) and replicas > 0 else 1
    return primary


def promoted_deployment(
        current: Mapping[str, Any],
        target: Mapping[str, Any],
        *,
        label: str,
        value: str,
        template: JsonObject,
        include_label_prefix: Sequence[str],
        copy_replicas: bool,
) -> JsonObject:
    """``current`` (the primary) with the target's spec and metadata promoted onto it.

    Flagger's ``Promote``: the copied spec fields and the pod template are replaced; replicas
    too when no autoscaler owns them (``copy_replicas``) -- but never with 0, which would take
    the primary down when the target happens to be scaled to zero. Labels and annotations
    matching ``-include-label-prefix`` are laid over the primary's own, so keys set on it by
    others (``deployment.kubernetes.io/revision``) stay.
    """
    wanted = workloads.promoted_workload(
        current, target, copied_fields=COPIED_SPEC_FIELDS, label=label, value=value,
        template=template, include_label_prefix=include_label_prefix)
    replicas = (target.get("spec") or {}).get("replicas")
    if copy_replicas and isinstance(replicas, int) and replicas > 0:
        wanted["spec"]["replicas"] = replicas
    return wanted


def deployment_readiness(
        deployment: Mapping[str, Any], *, deadline_seconds: int, threshold: int, now: datetime,
) -> Readiness:
    """Whether a Deployment has rolled out: Flagger's ``isDeploymentReady``, same messages.

    Decided from the object alone (``metadata.generation``, ``spec.replicas`` and ``status``).
    ``threshold`` is the percentage of updated replicas that must be available. A Progressing
    condition with reason ProgressDeadlineExceeded is not retriable; neither is waiting while
    the Available condition has said MinimumReplicasUnavailable for longer than
    ``deadline_seconds`` (the Canary's progress deadline).
    """
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    if int(meta.get("generation") or 0) > int(status.get("observedGeneration") or 0):
        return workloads.not_ready(
            "waiting for rollout to finish: observed deployment generation less than desired"
            " generation")
    retriable = True
    progress = workloads.condition(status, "Progressing")
    if progress is not None:
        available = workloads.condition(status, "Available")
        if (available is not None and available.get("status") == "False"
                and available.get("reason") == "MinimumReplicasUnavailable"):
            since = workloads.parse_time(available.get("lastUpdateTime"))
            retriable = not workloads.deadline_passed(since, deadline_seconds, now)
    updated = int(status.get("updatedReplicas") or 0)
    replicas = int(status.get("replicas") or 0)
    available_replicas = int(status.get("availableReplicas") or 0)
    wanted = spec.get("replicas")
    needed = workloads.ready_threshold_count(updated, threshold)
    if progress is not None and progress.get("reason") == "ProgressDeadlineExceeded":
        name = meta.get("name", "")
        return workloads.not_ready(f'deployment "{name}" exceeded its progress deadline',
                                   retriable=False)
    if wanted is not None and updated < int(wanted):
        return workloads.not_ready(
            f"waiting for rollout to finish: {updated} out of {wanted} new replicas have been"
            " updated", retriable=retriable)
    if replicas > updated:
        return workloads.not_ready(
            f"waiting for rollout to finish: {replicas - updated} old replicas are pending"
            " termination", retriable=retriable)
    if available_replicas < needed:
        return workloads.not_ready(
            f"waiting for rollout to finish: {available_replicas} of {needed} (readyThreshold"
            f" {threshold}%) updated replicas are available", retriable=retriable)
    return workloads.READY


def scale_from_zero_replicas(
        target: Mapping[str, Any],
        *,
        primary: Mapping[str, Any] | None,
        autoscaler_min: int | None,
        has_autoscaler: bool,
) -> int:
    """How many replicas a canary scales up to (Flagger's ``ScaleFromZero``).

    The target's own replicas when above zero; otherwise, without an autoscaler, the primary's
    (above zero); with one, its minimum when above 1; else 1.
    """
    replicas = (target.get("spec") or {}).get("replicas")
    if isinstance(replicas, int) and replicas > 0:
        return replicas
    if not has_autoscaler:
        primary_replicas = ((primary or {}).get("spec") or {}).get("replicas")
        if isinstance(primary_replicas, int) and primary_replicas > 0:
            return primary_replicas
        return 1
    if autoscaler_min is not None and autoscaler_min > 1:
        return autoscaler_min
    return 1


class DeploymentController(pod_workloads.PodWorkloadController):
    """Deployment targets (Flagger's ``DeploymentController``)."""

    kind: ClassVar[str] = "Deployment"
    noun: ClassVar[str] = "deployment"
    resource: ClassVar[kube.Resource] = kube.DEPLOYMENTS

    def __init__(
            self,
            *,
            store: kube.ObjectStore,
            settings: Settings,
    ) -> None:
        super().__init__(store=store, settings=settings,
                         tracker=configs.ConfigTracker(store=store, settings=settings))

    def _build_primary(
            self,
            canary: Canary,
            target: Mapping[str, Any],
            *,
            label: str,
            value: str,
            template: JsonObject,
    ) -> JsonObject:
        return build_primary_deployment(
            target, label=label, value=value, template=template,
            owner=kube.controller_reference(canary_owner(canary)),
            include_label_prefix=self.include_label_prefix)

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
        return promoted_deployment(
            current, target, label=label, value=value, template=template,
            include_label_prefix=self.include_label_prefix,
            copy_replicas=canary.spec.autoscaler_ref is None)

    def _readiness(
            self, workload: Mapping[str, Any], canary: Canary, *, threshold: int, now: datetime,
    ) -> Readiness:
        return deployment_readiness(
            workload, deadline_seconds=canary.get_progress_deadline_seconds(),
            threshold=threshold, now=now)

    def _primary_not_ready_message(self, canary: Canary, readiness: Readiness) -> str:
        name = workloads.primary_name(canary.spec.target_ref.name)
        return f"{name}.{canary.namespace} not ready: {readiness.message}"

    def _canary_not_ready_message(self, canary: Canary, readiness: Readiness) -> str:
        return (f"canary deployment {canary.spec.target_ref.name}.{canary.namespace} not ready:"
                f" {readiness.message}")

    async def scale_to_zero(self, canary: Canary) -> None:
        """Sets the target's replicas to 0 (no write when already there)."""
        target = await self._target(canary)
        if (target.get("spec") or {}).get("replicas") == 0:
            return
        await self._patch_target(canary, {"spec": {"replicas": 0}})
        log.info("target_scaled", kind=self.kind, name=canary.spec.target_ref.name, replicas=0)

    async def scale_from_zero(self, canary: Canary) -> None:
        """Gives the target replicas again (see :func:`scale_from_zero_replicas`)."""
        target = await self._target(canary)
        ref = canary.spec.autoscaler_ref
        primary = None
        if ref is None and not _positive((target.get("spec") or {}).get("replicas")):
            primary = await self._primary(canary)
            if primary is None:
                name = workloads.primary_name(canary.spec.target_ref.name)
                raise workloads.TargetNotFoundError(
                    f"{self.noun} {name}.{canary.namespace} get query error: "
                    f"{workloads.not_found(self.resource, name)}")
        autoscaler_min = await self._autoscaler_min(canary) if ref is not None else None
        replicas = scale_from_zero_replicas(
            target, primary=primary, autoscaler_min=autoscaler_min, has_autoscaler=ref is not None)
        await self._scale_target(canary, target, replicas)

    async def finalize(self, canary: Canary) -> None:
        """revertOnDeletion: gives the target the primary's replicas (spec §2.8)."""
        target = await self._target(canary)
        primary = await self._primary(canary)
        if primary is None:
            await self.scale_from_zero(canary)
            return
        replicas = (primary.get("spec") or {}).get("replicas")
        await self._scale_target(canary, target, replicas if isinstance(replicas, int) else 1)

    async def _scale_target(self, canary: Canary, target: Mapping[str, Any], replicas: int) -> None:
        if (target.get("spec") or {}).get("replicas") == replicas:
            return
        await self._patch_target(canary, {"spec": {"replicas": replicas}})
        log.info("target_scaled", kind=self.kind, name=canary.spec.target_ref.name,
                 replicas=replicas)

    async def _autoscaler_min(self, canary: Canary) -> int | None:
        """The target autoscaler's minimum replicas, None when it cannot be read."""
        ref = canary.spec.autoscaler_ref
        if ref is None:
            return None
        if ref.kind == "HorizontalPodAutoscaler":
            hpa = await self._store.get(kube.HORIZONTAL_POD_AUTOSCALERS,
                                        namespace=canary.namespace, name=ref.name)
            value = ((hpa or {}).get("spec") or {}).get("minReplicas")
        elif ref.kind == "ScaledObject":
            # The same cache the primary's ScaledObject is copied from, synced by then.
            scaled = await self._store.get(kube.SCALED_OBJECTS, namespace=canary.namespace,
                                           name=ref.name)
            value = ((scaled or {}).get("spec") or {}).get("minReplicaCount")
        else:
            return None
        return value if isinstance(value, int) else None


def _positive(value: Any) -> bool:
    return isinstance(value, int) and value > 0
