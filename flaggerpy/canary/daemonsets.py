"""DaemonSet targets: the primary DaemonSet, its promotion, readiness and "scaling".

Flagger's ``daemonset_controller.go`` and ``daemonset_ready.go``. A DaemonSet has no replica
count, so scaling the canary to zero means giving its pods a node selector no node has,
``flagger.app/scale-to-zero: "true"``; scaling back removes it. That selector is not part of the
revision: the spec hash ignores it, and the primary never gets it.

Only RollingUpdate (or unset) update strategies can be canaried: with OnDelete the primary would
never roll out a promotion.
"""

from __future__ import annotations

import copy
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

SCALE_TO_ZERO_KEY = "flagger.app/scale-to-zero"
SCALE_TO_ZERO_NODE_SELECTOR = {SCALE_TO_ZERO_KEY: "true"}
"""The node selector that leaves a DaemonSet with no pods."""

COPIED_SPEC_FIELDS = ("minReadySeconds", "revisionHistoryLimit", "updateStrategy")
"""DaemonSet spec fields the primary takes from the target at creation and at each promotion."""


def without_scale_to_zero(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """Removes the scale-to-zero node selector from a pod spec, in place, and returns it.

    An emptied ``nodeSelector`` is removed too: "no selector" and "empty selector" are the same
    revision (Flagger makes the same point about nil and empty Go maps).
    """
    selector = pod_spec.get("nodeSelector")
    if isinstance(selector, dict):
        for key in SCALE_TO_ZERO_NODE_SELECTOR:
            selector.pop(key, None)
        if not selector:
            pod_spec.pop("nodeSelector", None)
    return pod_spec


def hashable_template(template: Mapping[str, Any]) -> JsonObject:
    """The pod template as it counts for the revision hash: without the scale-to-zero selector."""
    result: JsonObject = copy.deepcopy(dict(template))
    if isinstance(result.get("spec"), dict):
        without_scale_to_zero(result["spec"])
    return result


def is_scaled_to_zero(daemonset: Mapping[str, Any]) -> bool:
    """Whether the DaemonSet carries the scale-to-zero node selector."""
    selector = workloads.pod_spec(daemonset).get("nodeSelector") or {}
    return all(selector.get(k) == v for k, v in SCALE_TO_ZERO_NODE_SELECTOR.items())


def update_strategy_problem(target: Mapping[str, Any]) -> str | None:
    """Flagger's message when the target's update strategy is not RollingUpdate, else None."""
    kind = ((target.get("spec") or {}).get("updateStrategy") or {}).get("type") or ""
    if kind in ("", "RollingUpdate"):
        return None
    key = kube.key_of(target)
    return (f"daemonset {key.name}.{key.namespace} must have RollingUpdate strategy but have"
            f" {kind}")


def build_primary_daemonset(
        target: Mapping[str, Any],
        *,
        label: str,
        value: str,
        template: JsonObject,
        owner: JsonObject,
        include_label_prefix: Sequence[str],
) -> JsonObject:
    """The primary DaemonSet for ``target`` (Flagger's ``createPrimaryDaemonSet``).

    The same metadata rules as a primary Deployment; no replicas. ``template`` must already be
    free of the scale-to-zero selector.
    """
    return workloads.build_primary_workload(
        target, kind="DaemonSet", copied_fields=COPIED_SPEC_FIELDS, label=label, value=value,
        template=template, owner=owner, include_label_prefix=include_label_prefix)


def promoted_daemonset(
        current: Mapping[str, Any],
        target: Mapping[str, Any],
        *,
        label: str,
        value: str,
        template: JsonObject,
        include_label_prefix: Sequence[str],
) -> JsonObject:
    """``current`` (the primary) with the target's spec and metadata promoted onto it."""
    return workloads.promoted_workload(
        current, target, copied_fields=COPIED_SPEC_FIELDS, label=label, value=value,
        template=template, include_label_prefix=include_label_prefix)


def daemonset_readiness(
        daemonset: Mapping[str, Any],
        *,
        threshold: int,
        since: datetime | None,
        deadline_seconds: int,
        now: datetime,
) -> Readiness:
    """Whether a DaemonSet has rolled out: Flagger's ``isDaemonSetReady``, same messages.

    A DaemonSet has no progress condition, so the deadline runs from ``since`` -- the Canary's
    ``status.lastTransitionTime`` -- and passing it is not retriable. When ``since`` is unknown
    the deadline cannot pass (Flagger reads Go's zero time there and fails at once).
    """
    meta = daemonset.get("metadata") or {}
    status = daemonset.get("status") or {}
    if int(meta.get("generation") or 0) > int(status.get("observedGeneration") or 0):
        return workloads.not_ready(
            "waiting for rollout to finish: observed daemonset generation less than desired"
            " generation")
    desired = int(status.get("desiredNumberScheduled") or 0)
    updated = int(status.get("updatedNumberScheduled") or 0)
    available = int(status.get("numberAvailable") or 0)
    needed = workloads.ready_threshold_count(desired, threshold)
    if updated >= desired and available >= needed:
        return workloads.READY
    if workloads.deadline_passed(since, deadline_seconds, now):
        return workloads.not_ready(
            f"exceeded its progressDeadlineSeconds: {deadline_seconds}", retriable=False)
    if updated < desired:
        return workloads.not_ready(
            f"waiting for rollout to finish: {updated} out of {desired} new pods have been"
            " updated")
    return workloads.not_ready(
        f"waiting for rollout to finish: {available} of {needed} (readyThreshold {threshold}%)"
        " updated pods are available")


class DaemonSetController(pod_workloads.PodWorkloadController):
    """DaemonSet targets (Flagger's ``DaemonSetController``)."""

    kind: ClassVar[str] = "DaemonSet"
    noun: ClassVar[str] = "daemonset"
    resource: ClassVar[kube.Resource] = kube.DAEMONSETS

    def __init__(
            self,
            *,
            store: kube.ObjectStore,
            settings: Settings,
    ) -> None:
        super().__init__(store=store, settings=settings,
                         tracker=configs.ConfigTracker(store=store, settings=settings))

    def _check_target(self, target: Mapping[str, Any]) -> None:
        problem = update_strategy_problem(target)
        if problem is not None:
            raise workloads.WorkloadError(problem)

    def _adjust_primary_pod_spec(self, spec: dict[str, Any]) -> None:
        # The target may be scaled to zero when the primary is (re)built; the primary never is.
        without_scale_to_zero(spec)

    def _hashable_template(self, template: Mapping[str, Any]) -> Any:
        return hashable_template(template)

    def _build_primary(
            self,
            canary: Canary,
            target: Mapping[str, Any],
            *,
            label: str,
            value: str,
            template: JsonObject,
    ) -> JsonObject:
        return build_primary_daemonset(
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
        return promoted_daemonset(
            current, target, label=label, value=value, template=template,
            include_label_prefix=self.include_label_prefix)

    def _readiness(
            self, workload: Mapping[str, Any], canary: Canary, *, threshold: int, now: datetime,
    ) -> Readiness:
        since = canary.status.last_transition_time if canary.status is not None else None
        return daemonset_readiness(
            workload, threshold=threshold, since=since,
            deadline_seconds=canary.get_progress_deadline_seconds(), now=now)

    def _primary_not_ready_message(self, canary: Canary, readiness: Readiness) -> str:
        name = workloads.primary_name(canary.spec.target_ref.name)
        return f"primary daemonset {name}.{canary.namespace} not ready: {readiness.message}"

    def _canary_not_ready_message(self, canary: Canary, readiness: Readiness) -> str:
        retriable = "true" if readiness.retriable else "false"
        return (f"canary daemonset {canary.spec.target_ref.name}.{canary.namespace} not ready"
                f" with retryable {retriable}: {readiness.message}")

    async def scale_to_zero(self, canary: Canary) -> None:
        """Adds the scale-to-zero node selector to the target (no write when present)."""
        target = await self._target(canary)
        if is_scaled_to_zero(target):
            return
        await self._patch_target(
            canary, {"spec": {"template": {"spec": {"nodeSelector": SCALE_TO_ZERO_NODE_SELECTOR}}}})
        log.info("target_scaled_to_zero", kind=self.kind, name=canary.spec.target_ref.name)

    async def scale_from_zero(self, canary: Canary) -> None:
        """Removes the scale-to-zero node selector from the target (no write when absent)."""
        target = await self._target(canary)
        selector = workloads.pod_spec(target).get("nodeSelector") or {}
        if not any(key in selector for key in SCALE_TO_ZERO_NODE_SELECTOR):
            return
        removal = {"nodeSelector": dict.fromkeys(SCALE_TO_ZERO_NODE_SELECTOR)}
        await self._patch_target(canary, {"spec": {"template": {"spec": removal}}})
        log.info("target_scaled_from_zero", kind=self.kind, name=canary.spec.target_ref.name)

    async def finalize(self, canary: Canary) -> None:
        """revertOnDeletion: the target's pods come back (spec §2.8)."""
        await self.scale_from_zero(canary)
