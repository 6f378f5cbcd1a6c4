"""Knative Service targets: the revision the primary runs, its readiness, its promotion.

Flagger's ``knative_controller.go`` (spec §2.5). A Knative Service is not copied into a
``-primary`` workload: Knative keeps every revision of the Service's template, so "the primary"
is a revision, named in the Service's annotation ``flagger.app/primary-revision``, and "the
canary" is whichever revision Knative created last (``status.latestCreatedRevisionName``).
Hence:

- **initialize** (phase unset or Initializing) names the latest created revision as the primary
  and pins all traffic on it: ``spec.traffic = [{latestRevision: true, percent: 0},
  {revisionName: <primary>, percent: 100}]``, as Flagger does;
- **promote** moves the annotation to the latest created revision (the traffic is the
  router's business, which routes it all to the new primary next);
- **readiness** is the revision's: ``Ready`` condition True for the generation it has;
- the **revision hash** (``status.lastAppliedSpec``) is the hash of the latest created
  revision's name: Knative names a new revision for every template change;
- nothing is scaled (Knative scales revisions itself), no configs are tracked, no Services are
  generated (the router declares ``needs_services=False``).

Where this differs from Flagger: a Service Knative has not reconciled yet (no
``latestCreatedRevisionName``) is waited for, where Flagger would annotate an empty name; and
the template is written back as read, where Flagger's typed update adds empty
``metadata``/``name``/``resources`` fields to it (docs/compatibility.md, Knative).

Every read goes through the object store (the Knative Service and Revision caches), and the
Service is written only when the annotation or the traffic must change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import structlog

from flaggerpy import kube
from flaggerpy.canary import hashing
from flaggerpy.canary.workloads import (
    JsonObject,
    NotReadyError,
    TargetNotFoundError,
    WorkloadMetadata,
    condition,
    not_found,
    spec_changed,
)
from flaggerpy.models import Canary, CanaryPhase
from flaggerpy.settings import Settings

__all__ = [
    "KNATIVE_REVISIONS",
    "KNATIVE_SERVICES",
    "PRIMARY_REVISION_ANNOTATION",
    "KnativeServiceController",
    "initialized_service",
    "latest_created_revision",
    "primary_revision",
    "promoted_service",
    "revision_is_ready",
]

log = structlog.get_logger(__name__)

GROUP: Final = "serving.knative.dev"
KNATIVE_SERVICES: Final = kube.Resource(GROUP, "v1", "services", "Service")
KNATIVE_REVISIONS: Final = kube.Resource(GROUP, "v1", "revisions", "Revision")

PRIMARY_REVISION_ANNOTATION: Final = "flagger.app/primary-revision"
"""The Knative Service annotation naming the revision the primary is (Flagger's)."""


# -- pure helpers ---------------------------------------------------------------------------------


def latest_created_revision(service: Mapping[str, Any]) -> str:
    """``status.latestCreatedRevisionName``, "" until Knative has created a revision."""
    return str((service.get("status") or {}).get("latestCreatedRevisionName") or "")


def primary_revision(service: Mapping[str, Any]) -> str | None:
    """The revision the annotation names as the primary, None without the annotation."""
    annotations = (service.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(PRIMARY_REVISION_ANNOTATION)
    return None if value is None else str(value)


def _with_annotation(service: Mapping[str, Any], revision: str) -> JsonObject:
    result: JsonObject = dict(service)
    metadata = dict(result.get("metadata") or {})
    metadata["annotations"] = {**(metadata.get("annotations") or {}),
                               PRIMARY_REVISION_ANNOTATION: revision}
    result["metadata"] = metadata
    return result


def initialized_service(service: Mapping[str, Any]) -> JsonObject:
    """The Service as Flagger's ``Initialize`` leaves it: the latest created revision is the
    primary, and it gets all the traffic (the latest revision, pinned at 0 %, is the canary).
    Pure; ``service`` must have a latest created revision."""
    revision = latest_created_revision(service)
    result = _with_annotation(service, revision)
    result["spec"] = {**(result.get("spec") or {}), "traffic": [
        {"latestRevision": True, "percent": 0},
        {"revisionName": revision, "percent": 100},
    ]}
    return result


def promoted_service(service: Mapping[str, Any]) -> JsonObject:
    """The Service with the annotation moved to the latest created revision (``Promote``)."""
    return _with_annotation(service, latest_created_revision(service))


def revision_is_ready(revision: Mapping[str, Any]) -> bool:
    """Knative's ``Revision.IsReady()``: ``Ready`` is True for the generation it has."""
    status = revision.get("status") or {}
    generation = int((revision.get("metadata") or {}).get("generation") or 0)
    ready = condition(status, "Ready")
    return (int(status.get("observedGeneration") or 0) == generation
            and ready is not None and ready.get("status") == "True")


# -- the controller -------------------------------------------------------------------------------


class KnativeServiceController:
    """Knative Service targets (Flagger's ``KnativeController``)."""

    kind: Final = "Service"

    def __init__(self, *, store: kube.ObjectStore, settings: Settings) -> None:
        self._store = store
        self._settings = settings

    # -- reads ------------------------------------------------------------------------------

    async def _service(self, canary: Canary) -> Mapping[str, Any]:
        name = canary.spec.target_ref.name
        service = await self._store.get(KNATIVE_SERVICES, namespace=canary.namespace, name=name)
        if service is None:
            raise TargetNotFoundError(
                f"Knative Service {name}.{canary.namespace} get query error: "
                f"{not_found(KNATIVE_SERVICES, name)}")
        return service

    def _latest(self, canary: Canary, service: Mapping[str, Any]) -> str:
        revision = latest_created_revision(service)
        if not revision:
            raise NotReadyError(
                f"Knative Service {canary.spec.target_ref.name}.{canary.namespace} has no "
                "latest created revision yet")
        return revision

    async def _raise_unless_ready(self, canary: Canary, name: str) -> None:
        revision = await self._store.get(KNATIVE_REVISIONS, namespace=canary.namespace, name=name)
        if revision is None:
            raise NotReadyError(f"Knative Revision {name}.{canary.namespace} get query error: "
                                f"{not_found(KNATIVE_REVISIONS, name)}")
        if not revision_is_ready(revision):
            raise NotReadyError(f"Knative Revision {name}.{canary.namespace} is not ready")

    async def _apply(self, canary: Canary, build: kube.Build) -> kube.Applied:
        return await self._store.apply(
            KNATIVE_SERVICES, namespace=canary.namespace, name=canary.spec.target_ref.name,
            build=build)

    # -- the contract -----------------------------------------------------------------------

    async def get_metadata(self, canary: Canary) -> WorkloadMetadata:
        """No selector label and no ports: Knative routes revisions, not pods by label."""
        await self._service(canary)
        return WorkloadMetadata(label="", label_value="", ports={})

    async def initialize(self, canary: Canary, *, wait_primary_ready: bool) -> None:
        """While the canary initializes: the latest created revision becomes the primary, with
        all the traffic. Later calls change nothing (the router owns the traffic then).

        Flagger does not wait for the primary revision here; neither do we (the first analysis
        tick checks it), but a Service Knative has not given a revision yet is waited for.
        """
        service = await self._service(canary)
        phase = canary.status.phase if canary.status is not None else None
        if phase not in (None, CanaryPhase.UNSET, CanaryPhase.INITIALIZING):
            return
        self._latest(canary, service)

        def build(current: JsonObject | None) -> JsonObject | None:
            if current is None or not latest_created_revision(current):
                return None
            return initialized_service(current)

        applied = await self._apply(canary, build)
        if applied.changed:
            log.info("knative_service_initialized", service=canary.spec.target_ref.name,
                     primary_revision=latest_created_revision(service))

    async def is_primary_ready(self, canary: Canary) -> None:
        """Raises NotReadyError unless the annotated primary revision is ready."""
        service = await self._service(canary)
        name = primary_revision(service)
        if name is None:
            raise NotReadyError(f"Knative Service {canary.spec.target_ref.name}."
                                f"{canary.namespace} primary revision annotation not found")
        await self._raise_unless_ready(canary, name)

    async def is_canary_ready(self, canary: Canary) -> None:
        """Raises NotReadyError unless the latest created revision is ready (always
        retriable, as Flagger's)."""
        service = await self._service(canary)
        await self._raise_unless_ready(canary, self._latest(canary, service))

    async def promote(self, canary: Canary) -> None:
        """Names the latest created revision the primary (no write if it already is)."""
        service = await self._service(canary)
        revision = self._latest(canary, service)

        def build(current: JsonObject | None) -> JsonObject | None:
            if current is None or not latest_created_revision(current):
                return None
            return promoted_service(current)

        applied = await self._apply(canary, build)
        if applied.changed:
            log.info("knative_primary_promoted", service=canary.spec.target_ref.name,
                     primary_revision=revision)

    async def latest_revision(self, canary: Canary) -> str:
        """The latest created revision: the canary, and the metrics' ``{{ route }}``."""
        return latest_created_revision(await self._service(canary))

    async def has_target_changed(self, canary: Canary) -> bool:
        """Whether Knative created a revision since the last analysed one.

        A ``lastAppliedSpec`` written by Flagger (a Canary moved to flaggerpy) cannot be
        compared with our hash; then the latest created revision is compared with the
        annotated primary instead.
        """
        status = canary.status
        applied = status.last_applied_spec if status is not None else None
        if applied and not hashing.is_template_hash(applied):
            service = await self._service(canary)
            return latest_created_revision(service) != primary_revision(service)
        return spec_changed(status, await self.target_hash(canary))

    async def have_dependencies_changed(self, canary: Canary) -> bool:
        """Never: configs are not tracked for Knative Services (Flagger's neither)."""
        return False

    async def target_hash(self, canary: Canary) -> str:
        """The hash of the latest created revision's name."""
        return hashing.template_hash(latest_created_revision(await self._service(canary)))

    async def tracked_configs(self, canary: Canary) -> dict[str, str]:
        """Nothing is tracked."""
        return {}

    async def scale_to_zero(self, canary: Canary) -> None:
        """Nothing: Knative scales its revisions."""

    async def scale_from_zero(self, canary: Canary) -> None:
        """Nothing: Knative scales its revisions."""

    async def finalize(self, canary: Canary) -> None:
        """Nothing here: the router removes the annotation (``revertOnDeletion``)."""
