"""The primary's autoscaler: a copy of the target's HPA or KEDA ScaledObject, aimed at the primary.

Flagger's ``hpa_reconciler.go`` and ``scaled_object_reconciler.go``. The target's scaler
(``spec.autoscalerRef``) keeps scaling the canary; ``<name>-primary`` scales the primary with the
same bounds and metrics, or with ``autoscalerRef.primaryScalerReplicas`` where given. It is created
when missing, at any time; it is brought in line with the target's only when the engine says so
(``init=False``: the Promoting tick or a skipped analysis), so that a scaler edited along with a
new revision takes effect on the primary at promotion, not before.

A ScaledObject's trigger queries are about the target's pods; the primary's copy asks about the
primary's instead: ``primaryScalerQueries[<trigger name>]`` where given, else the query with the
target's name (or ``<target>-canary``) rewritten to ``<target>-primary``.

Pausing and resuming the target scaler are no-ops for an HPA. A ScaledObject would fight the
canary's scale-to-zero (KEDA scales its target back up), so while no run is in progress the
target's is paused with KEDA's ``autoscaling.keda.sh/paused-replicas: "0"`` annotation, which is
removed when a run scales the canary up.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import structlog

from flaggerpy import kube
from flaggerpy.canary import workloads
from flaggerpy.canary.workloads import JsonObject
from flaggerpy.kube.objects import merge_owned
from flaggerpy.models import Canary, ScalerReplicas
from flaggerpy.routing import canary_owner
from flaggerpy.settings import Settings

log = structlog.get_logger(__name__)

HPA_KIND = "HorizontalPodAutoscaler"
SCALED_OBJECT_KIND = "ScaledObject"
PAUSED_REPLICAS: Final = "autoscaling.keda.sh/paused-replicas"
"""KEDA's annotation: the ScaledObject holds its target at this many replicas."""


def build_primary_hpa(
        hpa: Mapping[str, Any],
        *,
        target_name: str,
        replicas: ScalerReplicas | None,
        owner: JsonObject,
        include_label_prefix: Sequence[str],
) -> JsonObject:
    """The primary HPA for the target's ``hpa``.

    Labels: the HPA's without Flux keys (as Flagger creates them); annotations: those matching
    ``-include-label-prefix`` (as Flagger means to update them); owned by the Canary. Fields the
    HPA does not set are None, so a field removed from it is removed from the copy too.
    """
    meta = hpa.get("metadata") or {}
    spec = hpa.get("spec") or {}
    scale_ref = spec.get("scaleTargetRef") or {}
    min_replicas, max_replicas = _bounds(spec.get("minReplicas"), spec.get("maxReplicas"),
                                         replicas)
    annotations = workloads.include_by_prefix(meta.get("annotations"), include_label_prefix)
    return {
        "apiVersion": kube.HORIZONTAL_POD_AUTOSCALERS.api_version,
        "kind": HPA_KIND,
        "metadata": _primary_metadata(meta, annotations=annotations, owner=owner),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": scale_ref.get("apiVersion"),
                "kind": scale_ref.get("kind"),
                "name": workloads.primary_name(target_name),
            },
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": copy.deepcopy(spec.get("metrics")),
            "behavior": copy.deepcopy(spec.get("behavior")),
        },
    }


def _bounds(low: Any, high: Any, replicas: ScalerReplicas | None) -> tuple[Any, Any]:
    """The scaler's replica bounds, or ``primaryScalerReplicas`` where given."""
    if replicas is not None:
        if replicas.min_replicas is not None:
            low = replicas.min_replicas
        if replicas.max_replicas is not None:
            high = replicas.max_replicas
    return low, high


def _primary_metadata(
        meta: Mapping[str, Any], *, annotations: dict[str, str], owner: JsonObject,
) -> JsonObject:
    """A primary scaler's metadata: labels without Flux keys (as Flagger), owned by the Canary."""
    return {
        "name": workloads.primary_name(str(meta.get("name"))),
        "namespace": meta.get("namespace"),
        "labels": workloads.filter_metadata(meta.get("labels")),
        "annotations": annotations,
        "ownerReferences": [owner],
    }


def primary_query(query: str, target_name: str) -> str:
    """``query`` about the target's (or the canary's) pods, made about the primary's.

    ``app="podinfo"`` and ``app="podinfo-canary"`` become ``app="podinfo-primary"``; a name
    that only starts with the target's (``podinfo2``) or is already the primary's is left as is.
    """
    pattern = rf"(?<![\w-]){re.escape(target_name)}(?:-canary)?(?!-primary)(?!\w)"
    return re.sub(pattern, workloads.primary_name(target_name), query)


def build_primary_scaled_object(
        scaled_object: Mapping[str, Any],
        *,
        target_name: str,
        replicas: ScalerReplicas | None,
        queries: Mapping[str, str] | None,
        owner: JsonObject,
        include_label_prefix: Sequence[str],
) -> JsonObject:
    """The primary ScaledObject for the target's ``scaled_object``.

    Metadata as :func:`build_primary_hpa`. The spec copies what Flagger copies: polling
    interval, cooldown, replica bounds (or ``primaryScalerReplicas``), ``advanced`` (its HPA
    name, if set, gets ``-primary``), triggers (queries rewritten, see the module docstring),
    fallback and idle replicas.
    """
    meta = scaled_object.get("metadata") or {}
    spec = scaled_object.get("spec") or {}
    scale_ref = dict(spec.get("scaleTargetRef") or {})
    scale_ref["name"] = workloads.primary_name(target_name)
    min_replicas, max_replicas = _bounds(spec.get("minReplicaCount"), spec.get("maxReplicaCount"),
                                         replicas)
    advanced = copy.deepcopy(spec.get("advanced"))
    hpa_config = (advanced or {}).get("horizontalPodAutoscalerConfig") or {}
    if hpa_config.get("name"):
        hpa_config["name"] = workloads.primary_name(str(hpa_config["name"]))
    triggers = copy.deepcopy(spec.get("triggers"))
    for trigger in triggers or ():
        metadata = trigger.get("metadata")
        if not isinstance(metadata, dict):
            continue
        given = (queries or {}).get(str(trigger.get("name") or ""))
        if given is not None:
            metadata["query"] = given
        elif isinstance(metadata.get("query"), str):
            metadata["query"] = primary_query(metadata["query"], target_name)
    annotations = workloads.include_by_prefix(meta.get("annotations"), include_label_prefix)
    annotations.pop(PAUSED_REPLICAS, None)  # the target's is paused between runs, never the primary
    return {
        "apiVersion": kube.SCALED_OBJECTS.api_version,
        "kind": SCALED_OBJECT_KIND,
        "metadata": _primary_metadata(meta, annotations=annotations, owner=owner),
        "spec": {
            "scaleTargetRef": scale_ref,
            "pollingInterval": spec.get("pollingInterval"),
            "cooldownPeriod": spec.get("cooldownPeriod"),
            "minReplicaCount": min_replicas,
            "maxReplicaCount": max_replicas,
            "advanced": advanced,
            "triggers": triggers,
            "fallback": copy.deepcopy(spec.get("fallback")),
            "idleReplicaCount": spec.get("idleReplicaCount"),
        },
    }


class PrimaryAutoscaler:
    """Keeps ``<autoscalerRef.name>-primary`` in step with the target's HPA or ScaledObject."""

    def __init__(
            self,
            *,
            store: kube.ObjectStore,
            settings: Settings,
    ) -> None:
        self._store = store
        self._settings = settings

    async def reconcile(self, canary: Canary, *, init: bool) -> None:
        """Creates the primary scaler when missing; with ``init=False`` also updates it.

        Without an ``autoscalerRef`` there is nothing to do.
        """
        ref = canary.spec.autoscaler_ref
        if ref is None:
            return
        resource = _resource(canary)
        source = await self._target_scaler(canary)
        owner = kube.controller_reference(canary_owner(canary))
        prefixes = tuple(self._settings.controller.include_label_prefix)
        if ref.kind == HPA_KIND:
            desired = build_primary_hpa(
                source, target_name=canary.spec.target_ref.name,
                replicas=ref.primary_scaler_replicas, owner=owner, include_label_prefix=prefixes)
        else:
            desired = build_primary_scaled_object(
                source, target_name=canary.spec.target_ref.name,
                replicas=ref.primary_scaler_replicas, queries=ref.primary_scaler_queries,
                owner=owner, include_label_prefix=prefixes)
        name = desired["metadata"]["name"]

        def primary_scaler(current: JsonObject | None) -> JsonObject | None:
            if current is None:
                return _compact(desired)
            if init:
                return None  # an existing copy follows the target's only at promotion
            return merge_owned(current, desired)

        applied = await self._store.apply(
            resource, namespace=canary.namespace, name=name, build=primary_scaler)
        if applied.result is kube.OperationResult.CREATED:
            log.info("primary_scaler_created", kind=ref.kind, name=name)
        elif applied.changed:
            log.info("primary_scaler_synced", kind=ref.kind, name=name,
                     result=str(applied.result))

    async def pause(self, canary: Canary) -> None:
        """Holds the target's ScaledObject at zero replicas (Flagger's ``PauseTargetScaler``).

        A no-op for an HPA, and when the annotation is already there.
        """
        await self._set_paused(canary, "0")

    async def resume(self, canary: Canary) -> None:
        """Lets the target's ScaledObject scale again (Flagger's ``ResumeTargetScaler``)."""
        await self._set_paused(canary, None)

    async def _set_paused(self, canary: Canary, value: str | None) -> None:
        ref = canary.spec.autoscaler_ref
        if ref is None or ref.kind != SCALED_OBJECT_KIND:
            return
        source = await self._target_scaler(canary)
        annotations = (source.get("metadata") or {}).get("annotations") or {}
        if annotations.get(PAUSED_REPLICAS) == value:
            return
        await self._store.patch(kube.SCALED_OBJECTS, namespace=canary.namespace, name=ref.name,
                                patch={"metadata": {"annotations": {PAUSED_REPLICAS: value}}})
        log.info("target_scaler_paused" if value is not None else "target_scaler_resumed",
                 name=ref.name, namespace=canary.namespace)

    async def _target_scaler(self, canary: Canary) -> Mapping[str, Any]:
        """The target's scaler, from the store."""
        ref = canary.spec.autoscaler_ref
        assert ref is not None
        resource = _resource(canary)
        source = await self._store.get(resource, namespace=canary.namespace, name=ref.name)
        if source is None:
            raise workloads.TargetNotFoundError(
                f"{ref.kind} {ref.name}.{canary.namespace} get query error: "
                f"{workloads.not_found(resource, ref.name)}")
        return source


def _resource(canary: Canary) -> kube.Resource:
    ref = canary.spec.autoscaler_ref
    assert ref is not None
    if ref.kind == HPA_KIND:
        return kube.HORIZONTAL_POD_AUTOSCALERS
    if ref.kind == SCALED_OBJECT_KIND:
        return kube.SCALED_OBJECTS
    raise workloads.UnsupportedTargetError(
        f"canary {canary.name}.{canary.namespace}: autoscalerRef kind {ref.kind!r} is not"
        f" supported (only {HPA_KIND} and {SCALED_OBJECT_KIND})")


def _compact(obj: JsonObject) -> JsonObject:
    """``obj`` without the None fields of its spec, for a create (nulls mean "unset")."""
    body = copy.deepcopy(obj)
    body["spec"] = {k: v for k, v in body["spec"].items() if v is not None}
    return body
