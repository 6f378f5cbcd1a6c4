"""The ``knative`` provider: Flagger's ``KnativeRouter`` (``pkg/router/knative.go``, spec §3) and
Knative's builtin metrics (``pkg/metrics/observers/knative.go``, spec §4.3).

A Knative canary has no generated objects at all: the target is a ``serving.knative.dev/v1``
Service, Knative keeps each of its templates as a revision, and the split is the Service's own
``spec.traffic``::

    traffic:
    - latestRevision: true          # the canary: the revision Knative created last
      percent: <canary weight>
    - revisionName: <primary>       # the annotation flagger.app/primary-revision
      percent: <primary weight>

The annotation is written by the target controller (``flaggerpy.canary.knative_services``)
when the canary initializes and moved there at promotion; the router only reads it (and adds it
in ``reconcile`` if someone removed it, as Flagger does). The weights are read back from
``status.traffic``, where Knative has resolved what it routes: the entry marked
``latestRevision`` is the canary, the pinned entry naming the primary revision the primary.

Knative splits by percentage and does nothing else here: no A/B matches, no mirroring, no
session affinity (Flagger's router ignores them), no Services of Flagger's (Knative routes to
revisions), and it routes only Knative Service targets -- hence the capabilities.

As for every router (style §9.3): pure builders (:func:`build_service_traffic`,
:func:`read_weights`, :func:`with_primary_annotation`, :func:`without_primary_annotation`)
tested field by field, and one apply path, the object store (``ProviderContext.routing_store``).
The Service is the user's: no ownerReference is ever added to it.

Where this differs from Flagger is listed in ``docs/compatibility.md`` under "Knative router
differences from Flagger".

The module ends with :class:`KnativeObserver`, which answers ``request-success-rate`` and
``request-duration`` from Envoy's ``envoy_cluster_upstream_rq`` counters of the cluster
``<namespace>/<revision>``, the revision being the model's ``{{ route }}`` (spec §4.3).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar, Final

from flaggerpy import kube
from flaggerpy.errors import PluginError, RouterError
from flaggerpy.models.canary import Canary
from flaggerpy.observing import PrometheusObserver, p99, ratio
from flaggerpy.routing import (
    Capabilities,
    ProviderContext,
    Router,
    RouterFactory,
    TargetKind,
    Weights,
)

__all__ = [
    "KNATIVE_SERVICES",
    "PRIMARY_REVISION_ANNOTATION",
    "KnativeObserver",
    "KnativeRouter",
    "build_service_traffic",
    "read_weights",
    "traffic",
    "with_primary_annotation",
    "without_primary_annotation",
]

GROUP: Final = "serving.knative.dev"
KNATIVE_SERVICES: Final = kube.Resource(GROUP, "v1", "services", "Service")

PRIMARY_REVISION_ANNOTATION: Final = "flagger.app/primary-revision"
"""The Knative Service annotation naming the primary revision (written by the target
controller, read here)."""


# -- pure builders ------------------------------------------------------------------------------


def primary_of(service: Mapping[str, Any]) -> str | None:
    """The revision the annotation names as the primary, None without it."""
    value = ((service.get("metadata") or {}).get("annotations") or {}).get(
        PRIMARY_REVISION_ANNOTATION)
    return None if value is None else str(value)


def traffic(primary: str, weights: Weights) -> list[dict[str, Any]]:
    """Flagger's ``spec.traffic``: the latest revision at the canary weight, then the primary
    revision pinned at the primary weight."""
    return [
        {"latestRevision": True, "percent": weights.canary},
        {"revisionName": primary, "percent": weights.primary},
    ]


def build_service_traffic(service: Mapping[str, Any], weights: Weights) -> dict[str, Any]:
    """The Service routing ``weights`` between its latest and its primary revision. Pure.

    Only ``spec.traffic`` changes; the template and the metadata stay as they are. Raises
    RouterError when the Service has no primary-revision annotation (Flagger's error).
    """
    primary = primary_of(service)
    if primary is None:
        raise RouterError(f"Knative Service {_name(service)} annotation not found")
    result = copy.deepcopy(dict(service))
    result["spec"] = {**(result.get("spec") or {}), "traffic": traffic(primary, weights)}
    return result


def with_primary_annotation(service: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Service with the annotation naming its latest created revision, if it has none;
    None (nothing to write) when it has one, or when Knative created no revision yet."""
    latest = (service.get("status") or {}).get("latestCreatedRevisionName")
    if primary_of(service) is not None or not latest:
        return None
    result = copy.deepcopy(dict(service))
    metadata = result.setdefault("metadata", {})
    metadata["annotations"] = {**(metadata.get("annotations") or {}),
                               PRIMARY_REVISION_ANNOTATION: str(latest)}
    return result


def without_primary_annotation(service: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Service without the annotation (``revertOnDeletion``); None when it has none."""
    if primary_of(service) is None:
        return None
    result = copy.deepcopy(dict(service))
    annotations = dict(result["metadata"]["annotations"])
    del annotations[PRIMARY_REVISION_ANNOTATION]
    result["metadata"]["annotations"] = annotations
    return result


def read_weights(service: Mapping[str, Any]) -> Weights:
    """The split Knative routes now, from ``status.traffic``: Flagger's ``GetRoutes``, pure.

    The canary's share is the percent of the first entry marked ``latestRevision``, and the
    primary has the rest. Flagger reads the primary's percent from the first entry naming the
    primary revision, which is the latest-revision entry itself whenever the latest revision
    is the primary (after initialization, and after a promotion moved the annotation): it then
    reports the canary's percent twice (0/0, 100/100), a split that cannot be expressed here.
    Raises RouterError, with Flagger's messages, without the annotation, without a
    latest-revision entry or one naming the primary, or without the canary's percent.
    """
    name = _name(service)
    primary = primary_of(service)
    if primary is None:
        raise RouterError(f"Knative Service {name} annotation not found")
    entries = list((service.get("status") or {}).get("traffic") or ())
    canary_entry = next((e for e in entries if e.get("latestRevision") is True), None)
    primary_entry = next((e for e in entries if e.get("revisionName") == primary), None)
    if canary_entry is None or primary_entry is None:
        raise RouterError(f"Knative Service {name} traffic spec invalid")
    if primary_entry.get("percent") is None:
        raise RouterError(f"Knative Service {name} primary revision traffic percent does not "
                          "exist")
    if canary_entry.get("percent") is None:
        raise RouterError(f"Knative Service {name} canary revision traffic percent does not "
                          "exist")
    try:
        return Weights.to_canary(int(canary_entry["percent"]))
    except (TypeError, ValueError) as exc:
        raise RouterError(f"Knative Service {name}: {exc}") from exc


def _name(service: Mapping[str, Any]) -> str:
    metadata = service.get("metadata") or {}
    return f"{metadata.get('name')}.{metadata.get('namespace')}"


# -- the router ---------------------------------------------------------------------------------


class KnativeRouter:
    """Routes a canary with its Knative Service's ``spec.traffic`` (spec §3).

    Built once per canary by the core (``KnativeRouter(ctx=..., variant="")``). It keeps no
    state: the weights live in the Service, read through the object store, which shows our own
    writes at once.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(
        ab_matches=False, mirroring=False, session_affinity=False, needs_services=False,
        target_kinds=frozenset({TargetKind("Service", group=GROUP)}))
    """Weighted between revisions of a Knative Service target, and only such a target: no
    matches, no mirroring, no sticky sessions, no generated Services (Flagger's router)."""

    def __init__(self, *, ctx: ProviderContext, variant: str = "") -> None:
        if variant:
            raise PluginError(f"the knative router takes no variant, got 'knative:{variant}'")
        self._log = ctx.log
        # The target's own store: the Service is the workload, on the workloads' cluster.
        self._store = ctx.store

    async def reconcile(self, canary: Canary) -> None:
        """Names the latest created revision the primary if the annotation is missing (Flagger's
        ``Reconcile``); a steady call writes nothing."""
        applied = await self._apply(canary, lambda current: (
            None if current is None else with_primary_annotation(current)))
        if applied.changed:
            self._log.info("knative_service_annotated", router="knative",
                           canary=_flagger_name(canary), service=canary.spec.target_ref.name)

    async def set_routes(self, canary: Canary, weights: Weights) -> None:
        """Writes ``weights`` into ``spec.traffic`` (nothing, if it carries them)."""
        def build(current: dict[str, Any] | None) -> dict[str, Any] | None:
            if current is None:
                raise RouterError(f"Knative Service {canary.spec.target_ref.name}."
                                  f"{canary.namespace} not found")
            return build_service_traffic(current, weights)

        applied = await self._apply(canary, build)
        if applied.changed:
            self._log.info("routes_set", router="knative", canary=_flagger_name(canary),
                           primary=weights.primary, canary_weight=weights.canary)

    async def get_routes(self, canary: Canary) -> Weights:
        """The split Knative routes now (see :func:`read_weights`)."""
        name = canary.spec.target_ref.name
        try:
            service = await self._store.get(KNATIVE_SERVICES, namespace=canary.namespace,
                                            name=name)
        except kube.WriteFencedError:
            raise
        except kube.KubeError as exc:
            raise RouterError(str(exc)) from exc
        if service is None:
            raise RouterError(f"Knative Service {name}.{canary.namespace} not found")
        return read_weights(service)

    async def finalize(self, canary: Canary) -> None:
        """``revertOnDeletion``: removes the annotation; the traffic stays as last set (Flagger's
        ``Finalize``). A Service already gone needs nothing."""
        applied = await self._apply(canary, lambda current: (
            None if current is None else without_primary_annotation(current)))
        if applied.changed:
            self._log.info("knative_service_released", router="knative",
                           canary=_flagger_name(canary), service=canary.spec.target_ref.name)

    async def _apply(self, canary: Canary, build: kube.Build) -> kube.Applied:
        """The one write path: cache read, pure build, a write only on a change, conflicts
        retried by the store; never an owner (the Service is the user's)."""
        try:
            return await self._store.apply(KNATIVE_SERVICES, namespace=canary.namespace,
                                           name=canary.spec.target_ref.name, build=build)
        except kube.WriteFencedError:
            raise
        except kube.KubeError as exc:  # the message names the object and the operation
            raise RouterError(str(exc)) from exc


def _flagger_name(canary: Canary) -> str:
    return f"{canary.name}.{canary.namespace}"


_factory: RouterFactory = KnativeRouter
_: type[Router] = KnativeRouter


# --- builtin metrics ----------------------------------------------------------------------------


class KnativeObserver(PrometheusObserver):
    """Knative: Envoy clusters named ``<namespace>/<revision>`` (``{{ route }}``)."""

    mesh = "knative"
    _selector = 'envoy_cluster_name=~"{{ namespace }}/{{ route }}"'
    success_rate_query = ratio("envoy_cluster_upstream_rq", _selector,
                               'envoy_response_code!~"5.*"', trailing_comma=True)
    duration_query = p99("envoy_cluster_upstream_rq_time_bucket", _selector,
                         trailing_comma=True)
