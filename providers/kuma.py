"""The ``kuma`` provider: Flagger's ``KumaRouter`` (``pkg/router/kuma.go``, spec §3) and Kuma's
builtin metrics (``pkg/metrics/observers/kuma.go``, spec §4.3).

A canary on Kuma is routed by one ``kuma.io/v1alpha1`` TrafficRoute named ``<svc>``. The object
is **cluster-scoped**, so its name carries no namespace (two Canaries with the same service name
in two namespaces share it, as in Flagger), and it has **no ownerReference**: Kubernetes'
garbage collector never resolves a namespaced owner of a cluster-scoped object, and Flagger 1.44
writes none (the golden corpus). Kuma addresses services by their ``kuma.io/service`` tag,
``<service>_<namespace>_svc_<port>``; the route sends every source (``*``) that calls the apex
tag to the ``-primary`` and ``-canary`` tags by weight, in the mesh that the Canary's
``kuma.io/mesh`` annotation names (``default`` without it).

Kuma splits by weight and does nothing else here: no A/B matches, no mirroring, no session
affinity (Flagger's router ignores ``mirrored`` and every match), hence the capabilities.

As for every mesh router (style §9.3) the module is **pure builders** --
:func:`build_traffic_route`, :func:`read_weights`, :func:`kept_weights` -- tested field by
field, and **one apply path**, the object store (``ProviderContext.routing_store``), which
reads from the informer cache, builds, and writes only when the result differs. ``reconcile``
builds with the weights the TrafficRoute carries, ``set_routes`` with the new ones.

Where this differs from Flagger is listed in ``docs/compatibility.md`` under "Kuma router
differences from Flagger".

The module ends with :class:`KumaObserver`, which answers ``request-success-rate`` and
``request-duration`` from Envoy's ``envoy_cluster_upstream_rq`` counters of the Kuma service
``<target>-canary_<namespace>_svc_<port>``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar, Final

from flaggerpy import kube
from flaggerpy.errors import PluginError, RouterError, TerminalError
from flaggerpy.models.canary import Canary
from flaggerpy.observing import PrometheusObserver, p99, ratio
from flaggerpy.routing import (
    TOOLKIT_ANNOTATIONS,
    TOTAL_WEIGHT,
    Capabilities,
    ProviderContext,
    Router,
    RouterFactory,
    Weights,
)

__all__ = [
    "API_VERSION",
    "DEFAULT_MESH",
    "MESH_ANNOTATION",
    "SERVICE_TAG",
    "TRAFFIC_ROUTES",
    "KumaObserver",
    "KumaRouter",
    "build_traffic_route",
    "kept_weights",
    "mesh_of",
    "read_weights",
    "service_tag",
]

GROUP: Final = "kuma.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
TRAFFIC_ROUTES: Final = kube.Resource(GROUP, VERSION, "trafficroutes", "TrafficRoute",
                                      namespaced=False)

MESH_ANNOTATION: Final = "kuma.io/mesh"
"""The Canary annotation naming the Kuma mesh of its TrafficRoute."""
DEFAULT_MESH: Final = "default"
SERVICE_TAG: Final = "kuma.io/service"
"""The tag Kuma selects services by (``<service>_<namespace>_svc_<port>`` on Kubernetes)."""
ANY_SERVICE: Final = "*"


# -- pure builders ------------------------------------------------------------------------------


def service_tag(service: str, *, namespace: str, port: int) -> str:
    """The ``kuma.io/service`` tag Kuma gives the Kubernetes Service ``service`` on ``port``."""
    return f"{service}_{namespace}_svc_{port}"


def mesh_of(canary: Canary) -> str:
    """The mesh the TrafficRoute belongs to: the Canary's ``kuma.io/mesh`` annotation, else
    ``default``. An annotation set to "" is used as it is, as Flagger reads it."""
    annotations = (canary.metadata.annotations if canary.metadata else None) or {}
    return annotations.get(MESH_ANNOTATION, DEFAULT_MESH)


def _port(canary: Canary) -> int:
    service = canary.spec.service
    if service is None:
        raise TerminalError(f"Canary {canary.namespace}/{canary.name}: spec.service is missing; "
                            "the Kuma TrafficRoute needs spec.service.port")
    return service.port


def _spec(canary: Canary, weights: Weights) -> dict[str, Any]:
    names = canary.get_service_names()
    port = _port(canary)

    def tag(service: str) -> dict[str, str]:
        return {SERVICE_TAG: service_tag(service, namespace=canary.namespace, port=port)}

    return {
        "sources": [{"match": {SERVICE_TAG: ANY_SERVICE}}],
        "destinations": [{"match": tag(names.apex)}],
        "conf": {"split": [
            {"weight": weights.primary, "destination": tag(names.primary)},
            {"weight": weights.canary, "destination": tag(names.canary)},
        ]},
    }


def build_traffic_route(
        canary: Canary, weights: Weights, existing: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The TrafficRoute ``<svc>`` routing ``weights``, built over ``existing`` (or None). Pure.

    A new one gets ``service.apex`` annotations plus the toolkit ones and no ownerReference.
    An existing one gets the spec and the mesh; its metadata stays as it is (Flagger updates
    the spec only), so rebuilding the stored object with its own weights changes nothing.
    """
    spec = _spec(canary, weights)
    mesh = mesh_of(canary)
    if existing is None:
        apex = canary.spec.service.apex if canary.spec.service else None
        annotations = {**((apex.annotations if apex else None) or {}), **TOOLKIT_ANNOTATIONS}
        return {"apiVersion": API_VERSION, "kind": "TrafficRoute", "mesh": mesh,
                "metadata": {"name": canary.get_service_names().apex,
                             "annotations": annotations},
                "spec": spec}
    result = copy.deepcopy(dict(existing))
    result["mesh"] = mesh
    result["spec"] = spec
    return result


def read_weights(route: Mapping[str, Any], canary: Canary) -> Weights:
    """The split a TrafficRoute carries: Flagger's ``GetRoutes``, pure.

    The primary's weight is that of the split entry whose service tag starts with
    ``<svc>-primary_``; the canary gets the rest. Raises RouterError when no entry is the
    primary's, and when the weight is not a percentage (only a hand edit makes either).
    """
    names = canary.get_service_names()
    label = f"TrafficRoute {names.apex}"
    primary: int | None = None
    for entry in ((route.get("spec") or {}).get("conf") or {}).get("split") or ():
        tag = str((entry.get("destination") or {}).get(SERVICE_TAG) or "")
        if tag.split("_", 1)[0] == names.primary:
            try:
                primary = int(entry.get("weight") or 0)
            except (TypeError, ValueError) as exc:
                raise RouterError(f"{label}: weight of {tag} is not a number") from exc
    if primary is None:
        raise RouterError(f"{label} does not contain routes for {names.primary} and "
                          f"{names.canary}")
    try:
        return Weights.to_canary(TOTAL_WEIGHT - primary)
    except ValueError as exc:
        raise RouterError(f"{label}: {exc}") from exc


def kept_weights(route: Mapping[str, Any] | None, canary: Canary) -> Weights:
    """The split a reconcile keeps: what ``route`` carries, else all to the primary."""
    if route is None:
        return Weights.all_primary()
    try:
        return read_weights(route, canary)
    except RouterError:
        return Weights.all_primary()


# -- the router ---------------------------------------------------------------------------------


class KumaRouter:
    """Routes a canary with the Kuma TrafficRoute ``<svc>`` (spec §3).

    Built once per canary by the core (``KumaRouter(ctx=..., variant="")``). It keeps no state
    of its own: the weights live in the TrafficRoute, read through the object store, which
    shows our own writes at once.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(
        ab_matches=False, mirroring=False, session_affinity=False)
    """Weighted, to the three Services' tags: no header or cookie matches, no mirroring, no
    sticky sessions, as Flagger's router (it ignores ``mirrored`` and ``analysis.match``)."""

    def __init__(self, *, ctx: ProviderContext, variant: str = "") -> None:
        if variant:
            raise PluginError(f"the kuma router takes no variant, got 'kuma:{variant}'")
        self._log = ctx.log
        self._store = ctx.routing_store
        # No ownerReference, whatever ctx.set_owner_refs says: the TrafficRoute is
        # cluster-scoped and the Canary namespaced, a reference the garbage collector never
        # resolves (and Flagger writes none).

    # -- the Router contract --------------------------------------------------------------------

    async def reconcile(self, canary: Canary) -> None:
        """Creates the TrafficRoute (all to the primary), or keeps the one there up to date with
        the weights it carries: a steady call writes nothing."""
        applied = await self._apply(canary, lambda current: build_traffic_route(
            canary, kept_weights(current, canary), current))
        if applied.result is not kube.OperationResult.UNCHANGED:
            self._log.info(f"traffic_route_{applied.result.value}", router="kuma",
                           canary=_flagger_name(canary),
                           name=canary.get_service_names().apex)

    async def set_routes(self, canary: Canary, weights: Weights) -> None:
        """Writes ``weights`` into the TrafficRoute's split (nothing, if it carries them)."""
        applied = await self._apply(canary, lambda current: build_traffic_route(
            canary, weights, current))
        if applied.result is not kube.OperationResult.UNCHANGED:
            self._log.info("routes_set", router="kuma", canary=_flagger_name(canary),
                           primary=weights.primary, canary_weight=weights.canary)

    async def get_routes(self, canary: Canary) -> Weights:
        """The split the TrafficRoute carries now (see :func:`read_weights`)."""
        apex = canary.get_service_names().apex
        try:
            route = await self._store.get(TRAFFIC_ROUTES, namespace=None, name=apex)
        except kube.WriteFencedError:
            raise
        except kube.KubeError as exc:
            raise RouterError(str(exc)) from exc
        if route is None:
            raise RouterError(f"TrafficRoute {apex} not found")
        return read_weights(route, canary)

    async def finalize(self, canary: Canary) -> None:
        """Nothing to give back (``revertOnDeletion``), as in Flagger: the TrafficRoute is
        Flagger's own, and a user's one taken over keeps the split it was last given."""
        self._log.debug("traffic_route_finalize_skipped", router="kuma",
                        canary=_flagger_name(canary))

    # -- helpers --------------------------------------------------------------------------------

    async def _apply(self, canary: Canary, build: kube.Build) -> kube.Applied:
        """The one write path: cache read, pure build, a write only on a change, conflicts
        retried by the store. Cluster-scoped: no namespace, no owner."""
        try:
            return await self._store.apply(TRAFFIC_ROUTES, namespace=None,
                                           name=canary.get_service_names().apex, build=build)
        except kube.WriteFencedError:
            raise  # this replica is no longer the leader: not a routing failure
        except kube.KubeError as exc:  # the message names the object and the operation
            raise RouterError(str(exc)) from exc


def _flagger_name(canary: Canary) -> str:
    return f"{canary.name}.{canary.namespace}"


_factory: RouterFactory = KumaRouter
_: type[Router] = KumaRouter


# --- builtin metrics ----------------------------------------------------------------------------


class KumaObserver(PrometheusObserver):
    """Kuma: Envoy stats of the service ``<target>-canary_<namespace>_svc_<port>``."""

    mesh = "kuma"
    _selector = 'service=~"{{ target }}-canary_{{ namespace }}_svc_[0-9a-zA-Z-]+"'
    success_rate_query = ratio("envoy_cluster_upstream_rq", _selector,
                               'envoy_response_code!~"5.*"', trailing_comma=True)
    duration_query = p99("envoy_cluster_upstream_rq_time_bucket", _selector,
                         trailing_comma=True)
