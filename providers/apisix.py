"""The ``apisix`` provider: Flagger's ``ApisixRouter`` (``pkg/router/apisix.go``, spec §3) and
Apache APISIX's builtin metrics (``pkg/metrics/observers/apisix.go``, spec §4.3).

A canary on APISIX starts from the user's own ``apisix.apache.org/v2`` ApisixRoute, named by
``spec.routeRef``. The router never writes that route: it copies the one http route of it whose
single backend is the apex Service ``<svc>`` into a new ApisixRoute
``<routeRef.name>-<svc>-canary`` with that route only, ``priority: 10000`` (so APISIX prefers
it over the user's route for the same hosts and paths), and two weighted backends,
``<svc>-primary`` and ``<svc>-canary``, on the same port, resolve granularity and subset. The
copy takes the user route's labels and annotations when it is created, and an ownerReference to
the Canary unless the routes live on another API server.

APISIX splits by weight and does nothing else here: Flagger's router ignores ``mirrored`` and
every ``analysis.match`` (no A/B), and has no session affinity, hence the capabilities.

As for every mesh router (style §9.3) the module is **pure builders** --
:func:`target_http_route`, :func:`build_canary_route`, :func:`with_weights`,
:func:`read_weights`, :func:`kept_weights` -- tested field by field, and **one apply path**,
the object store (``ProviderContext.routing_store``), which reads from the informer cache,
builds, and writes only when the result differs. ``reconcile`` builds with the weights the
canary route carries, ``set_routes`` writes the new ones.

Where this differs from Flagger is listed in ``docs/compatibility.md`` under "APISIX router
differences from Flagger".

The module ends with :class:`ApisixObserver`, which answers ``request-success-rate`` and
``request-duration`` from APISIX's ``apisix_http_status`` counter and ``apisix_http_latency``
histogram of the canary route, ``<namespace>_<route>-<target>-canary_*`` (spec §4.3).
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
    TOTAL_WEIGHT,
    Capabilities,
    ProviderContext,
    Router,
    RouterFactory,
    Weights,
    canary_owner,
)

__all__ = [
    "APISIX_ROUTES",
    "API_VERSION",
    "MAX_PRIORITY",
    "ApisixObserver",
    "ApisixRouter",
    "build_canary_route",
    "canary_route_name",
    "kept_weights",
    "read_weights",
    "target_http_route",
    "with_weights",
]

GROUP: Final = "apisix.apache.org"
VERSION: Final = "v2"
API_VERSION: Final = f"{GROUP}/{VERSION}"
APISIX_ROUTES: Final = kube.Resource(GROUP, VERSION, "apisixroutes", "ApisixRoute")

MAX_PRIORITY: Final = 10000
"""The priority of the canary's http route: above the user's route for the same match."""


# -- pure builders ------------------------------------------------------------------------------


def _route_ref(canary: Canary) -> str:
    ref = canary.spec.route_ref
    if ref is None or not ref.name:
        raise RouterError("apisix route selector is empty")
    return ref.name


def canary_route_name(canary: Canary) -> str:
    """``<routeRef.name>-<svc>-canary``: the ApisixRoute the router owns."""
    return f"{_route_ref(canary)}-{canary.get_service_names().apex}-canary"


def _label(canary: Canary, name: str) -> str:
    return f"APISIX route {name}.{canary.namespace}"


def _http_routes(route: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [item for item in (route.get("spec") or {}).get("http") or ()
            if isinstance(item, Mapping)]


def _index_of(route: Mapping[str, Any], service: str) -> int | None:
    """The index of the first http route with a backend named ``service``, as Flagger's
    ``getTargetHttpRoute`` finds it."""
    for index, item in enumerate(_http_routes(route)):
        if any(isinstance(backend, Mapping) and backend.get("serviceName") == service
               for backend in item.get("backends") or ()):
            return index
    return None


def target_http_route(canary: Canary, route: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the user route's http route that sends to the apex Service. Pure.

    Raises RouterError, with Flagger's messages, when the route has no http routes, none of
    them sends to ``<svc>``, or that one has more than one backend.
    """
    ref = _route_ref(canary)
    if not _http_routes(route):
        raise RouterError(f"APISIX route {ref}.{canary.namespace}'s spec.http is empty")
    apex = canary.get_service_names().apex
    index = _index_of(route, apex)
    if index is None:
        raise RouterError(f"Can not find {apex} backend on apisix route {ref}.{canary.namespace}")
    target = copy.deepcopy(dict(_http_routes(route)[index]))
    if len(target.get("backends") or ()) != 1:
        raise RouterError(f"APISIX route {ref}.{canary.namespace}'s http route "
                          f"{target.get('name', '')} only one http backend is supported")
    return target


def _canary_http_route(canary: Canary, target: Mapping[str, Any],
                       weights: Weights) -> dict[str, Any]:
    names = canary.get_service_names()
    http = copy.deepcopy(dict(target))
    primary = dict(http["backends"][0])
    primary["serviceName"] = names.primary
    primary["weight"] = weights.primary
    # The canary backend takes only what Flagger copies from the primary one.
    backend: dict[str, Any] = {"serviceName": names.canary,
                               "servicePort": primary.get("servicePort")}
    for key in ("resolveGranularity", "subset"):
        if primary.get(key):
            backend[key] = primary[key]
    backend["weight"] = weights.canary
    http["backends"] = [primary, backend]
    http["priority"] = MAX_PRIORITY
    # Flagger's typed client always writes the flag (no omitempty), false unless set.
    http["websocket"] = bool(http.get("websocket", False))
    return http


def build_canary_route(
        canary: Canary,
        user_route: Mapping[str, Any],
        weights: Weights,
        existing: Mapping[str, Any] | None,
        *,
        set_owner_refs: bool = True,
) -> dict[str, Any]:
    """The ApisixRoute ``<routeRef>-<svc>-canary`` routing ``weights``, built from the user's
    route ``user_route`` over ``existing`` (or None). Pure.

    A new one gets the user route's labels and annotations (as they are: Flagger adds no
    toolkit annotations here) and an ownerReference when ``set_owner_refs``. An existing one
    gets the spec only, its metadata stay as they are (Flagger updates the spec only), so
    rebuilding the stored object with its own weights changes nothing.
    """
    spec = {"http": [_canary_http_route(canary, target_http_route(canary, user_route),
                                        weights)]}
    if existing is None:
        meta = user_route.get("metadata") or {}
        metadata: dict[str, Any] = {"name": canary_route_name(canary),
                                    "namespace": canary.namespace}
        for key in ("labels", "annotations"):
            if meta.get(key):
                metadata[key] = dict(meta[key])
        if set_owner_refs:
            metadata["ownerReferences"] = [kube.controller_reference(canary_owner(canary))]
        return {"apiVersion": API_VERSION, "kind": "ApisixRoute", "metadata": metadata,
                "spec": spec}
    result = copy.deepcopy(dict(existing))
    if result.get("spec") != spec:
        result["spec"] = spec
    return result


def with_weights(canary: Canary, route: Mapping[str, Any], weights: Weights) -> dict[str, Any]:
    """``route`` (the canary ApisixRoute) with ``weights`` on the primary and canary backends of
    the http route that sends to the primary: Flagger's ``SetRoutes``, pure.

    Raises RouterError when no http route sends to ``<svc>-primary``.
    """
    names = canary.get_service_names()
    index = _index_of(route, names.primary)
    if index is None:
        raise RouterError(f"Can not find {names.primary} backend on apisix route "
                          f"{_route_ref(canary)}.{canary.namespace} ")
    result = copy.deepcopy(dict(route))
    for backend in result["spec"]["http"][index].get("backends") or ():
        if not isinstance(backend, dict):
            continue
        if backend.get("serviceName") == names.primary:
            backend["weight"] = weights.primary
        elif backend.get("serviceName") == names.canary:
            backend["weight"] = weights.canary
    return result


def read_weights(route: Mapping[str, Any], canary: Canary) -> Weights:
    """The split the canary ApisixRoute carries: Flagger's ``GetRoutes``, pure.

    The primary's weight is that of the ``<svc>-primary`` backend of the first http route that
    has one; the canary gets the rest. Raises RouterError when there is none, or when its
    weight is missing or not a percentage (only a hand edit makes either).
    """
    names = canary.get_service_names()
    label = _label(canary, canary_route_name(canary))
    index = _index_of(route, names.primary)
    if index is None:
        raise RouterError(f"Can not find {names.primary} backend on apisix route "
                          f"{_route_ref(canary)}.{canary.namespace} ")
    for backend in _http_routes(route)[index].get("backends") or ():
        if isinstance(backend, Mapping) and backend.get("serviceName") == names.primary:
            weight = backend.get("weight")
            if isinstance(weight, bool) or not isinstance(weight, int):
                raise RouterError(f"{label}: the weight of {names.primary} is {weight!r}, "
                                  "not a number")
            try:
                return Weights.to_canary(TOTAL_WEIGHT - weight)
            except ValueError as exc:
                raise RouterError(f"{label}: {exc}") from exc
    raise AssertionError("unreachable")  # pragma: no cover (_index_of found the backend)


def kept_weights(route: Mapping[str, Any] | None, canary: Canary) -> Weights:
    """The split a reconcile keeps: what ``route`` carries, else all to the primary."""
    if route is None:
        return Weights.all_primary()
    try:
        return read_weights(route, canary)
    except RouterError:
        return Weights.all_primary()


# -- the router ---------------------------------------------------------------------------------


class ApisixRouter:
    """Routes a canary with the ApisixRoute ``<routeRef>-<svc>-canary`` (spec §3).

    Built once per canary by the core (``ApisixRouter(ctx=..., variant="")``). It keeps no
    state of its own: the weights live in the canary route, read through the object store,
    which shows our own writes at once.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(
        ab_matches=False, mirroring=False, session_affinity=False)
    """Weighted, between the ``-primary`` and ``-canary`` Services: no header or cookie
    matches, no mirroring, no sticky sessions, as Flagger's router (it ignores ``mirrored``
    and ``analysis.match``)."""

    def __init__(self, *, ctx: ProviderContext, variant: str = "") -> None:
        if variant:
            raise PluginError(f"the apisix router takes no variant, got 'apisix:{variant}'")
        self._ctx = ctx
        self._log = ctx.log
        self._store = ctx.routing_store

    # -- the Router contract --------------------------------------------------------------------

    async def reconcile(self, canary: Canary) -> None:
        """Creates the canary route from the user's (all to the primary), or keeps it up to
        date with the user's route and the weights it carries: a steady call writes nothing."""
        user_route = await self._user_route(canary)
        applied = await self._apply(canary, lambda current: build_canary_route(
            canary, user_route, kept_weights(current, canary), current,
            set_owner_refs=self._ctx.set_owner_refs))
        if applied.result is not kube.OperationResult.UNCHANGED:
            self._log.info(f"apisix_route_{applied.result.value}", router="apisix",
                           canary=_flagger_name(canary), name=canary_route_name(canary))

    async def set_routes(self, canary: Canary, weights: Weights) -> None:
        """Writes ``weights`` on the canary route's two backends (nothing, if it carries them).

        A missing canary route is created from the user's route with these weights."""
        user_route: Mapping[str, Any] | None = None
        if await self._get(canary) is None:
            user_route = await self._user_route(canary)

        def build(current: dict[str, Any] | None) -> dict[str, Any]:
            if current is not None:
                return with_weights(canary, current, weights)
            if user_route is None:  # deleted between the read and the write: the store retries
                raise RouterError(f"{_label(canary, canary_route_name(canary))} "
                                  "disappeared while setting its weights")
            return build_canary_route(canary, user_route, weights, None,
                                      set_owner_refs=self._ctx.set_owner_refs)

        applied = await self._apply(canary, build)
        if applied.result is not kube.OperationResult.UNCHANGED:
            self._log.info("routes_set", router="apisix", canary=_flagger_name(canary),
                           primary=weights.primary, canary_weight=weights.canary)

    async def get_routes(self, canary: Canary) -> Weights:
        """The split the canary route carries now (see :func:`read_weights`)."""
        route = await self._get(canary)
        if route is None:
            raise RouterError(f"apisix route {canary_route_name(canary)}.{canary.namespace} "
                              "not found")
        return read_weights(route, canary)

    async def finalize(self, canary: Canary) -> None:
        """Nothing to give back (``revertOnDeletion``), as in Flagger: the user's route was
        never changed, and the canary route goes with the Canary through its ownerReference."""
        self._log.debug("apisix_route_finalize_skipped", router="apisix",
                        canary=_flagger_name(canary))

    # -- helpers --------------------------------------------------------------------------------

    async def _read(self, canary: Canary, name: str) -> Mapping[str, Any] | None:
        try:
            return await self._store.get(APISIX_ROUTES, namespace=canary.namespace, name=name)
        except kube.WriteFencedError:
            raise
        except kube.KubeError as exc:
            raise RouterError(f"{_label(canary, name)} query error: {exc}") from exc

    async def _get(self, canary: Canary) -> Mapping[str, Any] | None:
        return await self._read(canary, canary_route_name(canary))

    async def _user_route(self, canary: Canary) -> Mapping[str, Any]:
        name = _route_ref(canary)
        route = await self._read(canary, name)
        if route is None:
            raise RouterError(f"{_label(canary, name)} get query error: not found")
        return route

    async def _apply(self, canary: Canary, build: kube.Build) -> kube.Applied:
        """The one write path: cache read, pure build, a write only on a change, conflicts
        retried by the store."""
        try:
            return await self._store.apply(APISIX_ROUTES, namespace=canary.namespace,
                                           name=canary_route_name(canary), build=build)
        except kube.WriteFencedError:
            raise  # this replica is no longer the leader: not a routing failure
        except kube.KubeError as exc:  # the message names the object and the operation
            raise RouterError(str(exc)) from exc


def _flagger_name(canary: Canary) -> str:
    return f"{canary.name}.{canary.namespace}"


_factory: RouterFactory = ApisixRouter
_: type[Router] = ApisixRouter


# --- builtin metrics ----------------------------------------------------------------------------


class ApisixObserver(PrometheusObserver):
    """Apache APISIX: ``apisix_http_status`` and ``apisix_http_latency`` of the canary route."""

    mesh = "apisix"
    _selector = 'route=~"{{ namespace }}_{{ route }}-{{ target }}-canary_.+"'
    success_rate_query = ratio("apisix_http_status", _selector, 'code!~"5.."')
    duration_query = p99("apisix_http_latency_bucket", f'type=~"request",{_selector}')
