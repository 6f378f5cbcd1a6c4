"""The primary's HorizontalPodAutoscaler: a copy of the target's, aimed at ``<target>-primary``.

Flagger's ``hpa_reconciler.go``. The target's HPA (``spec.autoscalerRef``) keeps scaling the
canary; ``<hpa>-primary`` (``autoscaling/v2``) scales the primary with the same bounds, metrics and
behavior, or with ``autoscalerRef.primaryScalerReplicas`` where given. It is created when missing,
at any time; it is brought in line with the target's HPA only when the engine says so
(``init=False``: the Promoting tick or a skipped analysis), so that an HPA edited along with a new
revision takes effect on the primary at promotion, not before.

Pausing and resuming the target scaler are no-ops for an HPA (they matter for KEDA, whose
ScaledObject would fight the canary's scale-to-zero).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from flaggerpy import kube
from flaggerpy.canary import workloads
from flaggerpy.canary.workloads import JsonObject
from flaggerpy.models import Canary, ScalerReplicas
from flaggerpy.runtime.informer import SharedInformerFactory
from flaggerpy.runtime.keys import ObjectKey
from flaggerpy.settings import Settings

log = structlog.get_logger(__name__)

HPA_KIND = "HorizontalPodAutoscaler"


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
    min_replicas = spec.get("minReplicas")
    max_replicas = spec.get("maxReplicas")
    if replicas is not None:
        if replicas.min_replicas is not None:
            min_replicas = replicas.min_replicas
        if replicas.max_replicas is not None:
            max_replicas = replicas.max_replicas
    return {
        "apiVersion": kube.HORIZONTAL_POD_AUTOSCALERS.api_version,
        "kind": HPA_KIND,
        "metadata": {
            "name": workloads.primary_name(str(meta.get("name"))),
            "namespace": meta.get("namespace"),
            "labels": workloads.filter_metadata(meta.get("labels")),
            "annotations": workloads.include_by_prefix(meta.get("annotations"),
                                                       include_label_prefix),
            "ownerReferences": [owner],
        },
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


class PrimaryAutoscaler:
    """Keeps ``<autoscalerRef.name>-primary`` in step with the target's HPA."""

    def __init__(
            self,
            *,
            client: kube.KubeClient,
            caches: SharedInformerFactory,
            settings: Settings,
            sync_timeout: float = workloads.CACHE_SYNC_TIMEOUT,
    ) -> None:
        self._client = client
        self._caches = caches
        self._settings = settings
        self._sync_timeout = sync_timeout

    async def reconcile(self, canary: Canary, *, init: bool) -> None:
        """Creates the primary HPA when missing; with ``init=False`` also updates it.

        Without an ``autoscalerRef`` there is nothing to do. A KEDA ScaledObject is not handled
        here and raises :class:`~flaggerpy.canary.workloads.UnsupportedTargetError`.
        """
        ref = canary.spec.autoscaler_ref
        if ref is None:
            return
        if ref.kind != HPA_KIND:
            raise workloads.UnsupportedTargetError(
                f"canary {canary.name}.{canary.namespace}: autoscalerRef kind {ref.kind!r} is not"
                f" supported (only {HPA_KIND})")
        resource = kube.HORIZONTAL_POD_AUTOSCALERS
        informer = await workloads.synced(
            self._caches.informer(resource), limit=self._sync_timeout)
        hpa = informer.get(ObjectKey(canary.namespace, ref.name))
        if hpa is None:
            raise workloads.TargetNotFoundError(
                f"{HPA_KIND} {ref.name}.{canary.namespace} get query error: "
                f"{workloads.not_found(resource, ref.name)}")
        desired = build_primary_hpa(
            hpa, target_name=canary.spec.target_ref.name,
            replicas=ref.primary_scaler_replicas,
            owner=workloads.owner_reference(canary),
            include_label_prefix=tuple(self._settings.controller.include_label_prefix))
        name = desired["metadata"]["name"]
        if informer.get(ObjectKey(canary.namespace, name)) is None:
            try:
                await self._client.create(resource, _compact(desired))
            except kube.AlreadyExistsError:
                pass  # created by an earlier call the cache has not caught up with
            else:
                log.info("primary_hpa_created", name=name)
                return
        if init:
            return
        result = await self._client.create_or_update(resource, desired, cache=informer)
        if result is not kube.OperationResult.UNCHANGED:
            log.info("primary_hpa_synced", name=name, result=str(result))

    async def pause(self, canary: Canary) -> None:
        """No-op for an HPA (Flagger's ``PauseTargetScaler``)."""

    async def resume(self, canary: Canary) -> None:
        """No-op for an HPA (Flagger's ``ResumeTargetScaler``)."""


def _compact(obj: JsonObject) -> JsonObject:
    """``obj`` without the None fields of its spec, for a create (nulls mean "unset")."""
    body = copy.deepcopy(obj)
    body["spec"] = {k: v for k, v in body["spec"].items() if v is not None}
    return body
