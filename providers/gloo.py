"""The ``gloo`` provider: Flagger's ``GlooRouter`` (``pkg/router/gloo.go``, spec §3) and Gloo
Edge's builtin metrics (``pkg/metrics/observers/gloo.go``, spec §4.3).

A canary on Gloo Edge is routed by three objects in its namespace:

- two ``gloo.solo.io/v1`` Upstreams, ``<ns>-<svc>-primaryupstream-<port>`` and
  ``<ns>-<svc>-canaryupstream-<port>``, pointing at the ``-primary`` and ``-canary`` Services
  (``kube: {serviceName, serviceNamespace, servicePort, selector}``, the selector read from the
  Service), so Gloo's own discovery need not run. With ``spec.upstreamRef`` the connection
  settings of that config Upstream are copied in at creation, and its ``loadBalancerConfig`` is
  kept in sync afterwards (Flagger 1.44 updates nothing else of an existing Upstream);
- one ``gateway.solo.io/v1`` RouteTable ``<svc>``, the user's VirtualService delegating to it:
  one route (``inheritablePathMatchers: true``) whose ``routeAction.multi.destinations`` are the
  two Upstreams by weight, a weight of 0 left out as Go's ``omitempty`` leaves it, and, for A/B
  testing, ``matchers: [{headers: [...]}]`` from ``analysis.match`` (``exact`` as the value,
  ``regex`` as a regex; Gloo has no prefix or suffix header match, so Flagger writes those with
  an empty value and so does this router).

Gloo splits by weight and matches headers: no mirroring (Flagger's router ignores
``mirrored``) and no session affinity, hence the capabilities.

As for every router (style §9.3) the module is **pure builders** -- :func:`build_route_table`,
:func:`build_upstream`, :func:`read_weights`, :func:`kept_weights` -- tested field by field, and
**one apply path**, the object store, which reads from the informer cache, builds, and writes
only when the result differs. The RouteTable and Upstreams live in ``ctx.routing_store``; the
Services whose selectors the Upstreams copy live with the workloads, in ``ctx.store``.

Where this differs from Flagger is listed in ``docs/compatibility.md`` under "Gloo router
differences from Flagger".

The module ends with :class:`GlooObserver`, which answers ``request-success-rate`` and
``request-duration`` from Envoy's ``envoy_cluster_upstream_rq`` counters of the canary
Upstream's clusters, ``<namespace>-<target>-canaryupstream-*`` (Gloo names an Envoy cluster
``<upstream>_<upstream namespace>``).
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
    canary_owner,
)

__all__ = [
    "COPIED_UPSTREAM_FIELDS",
    "ROUTE_TABLES",
    "UPSTREAMS",
    "GlooObserver",
    "GlooRouter",
    "build_route_table",
    "build_upstream",
    "header_matchers",
    "kept_weights",
    "read_weights",
    "upstream_name",
]

ROUTE_TABLES: Final = kube.Resource("gateway.solo.io", "v1", "routetables", "RouteTable")
UPSTREAMS: Final = kube.Resource("gloo.solo.io", "v1", "upstreams", "Upstream")

COPIED_UPSTREAM_FIELDS: Final = (
    "sslConfig", "circuitBreakers", "connectionConfig", "loadBalancerConfig", "useHttp2",
    "initialStreamWindowSize", "initialConnectionWindowSize", "httpProxyHostname",
)
"""The config Upstream's spec fields a generated Upstream gets (Flagger's list; its ``labels``
is not a field of Gloo's Upstream CRD, so the API server has pruned it before anyone reads it)."""

SYNCED_UPSTREAM_FIELD: Final = "loadBalancerConfig"
"""The one copied field Flagger 1.44 keeps in sync on an existing Upstream."""


# -- pure builders ------------------------------------------------------------------------------


def _port(canary: Canary) -> int:
    service = canary.spec.service
    if service is None:
        raise TerminalError(f"Canary {canary.namespace}/{canary.name}: spec.service is missing; "
                            "the Gloo Upstreams need spec.service.port")
    return service.port


def upstream_name(canary: Canary, *, canary_side: bool) -> str:
    """``<ns>-<svc>-primaryupstream-<port>`` or ``<ns>-<svc>-canaryupstream-<port>``."""
    role = "canary" if canary_side else "primary"
    return (f"{canary.namespace}-{canary.get_service_names().apex}-{role}upstream-"
            f"{_port(canary)}")


def header_matchers(canary: Canary) -> list[dict[str, Any]]:
    """Gloo header matchers from ``analysis.match``, every item's headers in one list.

    ``exact`` is the value; ``regex`` the value with ``regex: true``; a prefix or suffix match,
    which Gloo cannot express, gets no value, as Flagger writes it. Headers of one item are in
    name order (Flagger's Go map order varies from run to run).
    """
    result: list[dict[str, Any]] = []
    for match in canary.spec.analysis.match or ():
        for name, condition in sorted((match.headers or {}).items()):
            header: dict[str, Any] = {"name": name}
            if condition.regex:
                header.update(value=condition.regex, regex=True)
            elif condition.exact:
                header["value"] = condition.exact
            result.append(header)
    return result


def _destination(canary: Canary, *, canary_side: bool, weight: int) -> dict[str, Any]:
    result: dict[str, Any] = {"destination": {"upstream": {
        "name": upstream_name(canary, canary_side=canary_side), "namespace": canary.namespace}}}
    if weight:  # Go's omitempty: a weight of 0 is not written
        result["weight"] = weight
    return result


def _spec(canary: Canary, weights: Weights) -> dict[str, Any]:
    route: dict[str, Any] = {"inheritablePathMatchers": True}
    headers = header_matchers(canary)
    if headers:
        route["matchers"] = [{"headers": headers}]
    route["routeAction"] = {"multi": {"destinations": [
        _destination(canary, canary_side=False, weight=weights.primary),
        _destination(canary, canary_side=True, weight=weights.canary),
    ]}}
    return {"routes": [route]}


def build_route_table(
        canary: Canary, weights: Weights, existing: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The RouteTable ``<svc>`` routing ``weights``, built over ``existing`` (or None). Pure.

    A new one gets the ``service.apex`` labels, and its annotations plus the toolkit ones. An
    existing one gets the spec only (Flagger leaves its metadata alone), so rebuilding the
    stored object with its own weights changes nothing.
    """
    spec = _spec(canary, weights)
    if existing is None:
        apex = canary.spec.service.apex if canary.spec.service else None
        metadata: dict[str, Any] = {"name": canary.get_service_names().apex,
                                    "namespace": canary.namespace}
        labels = dict((apex.labels if apex else None) or {})
        if labels:
            metadata["labels"] = labels
        metadata["annotations"] = {**((apex.annotations if apex else None) or {}),
                                   **TOOLKIT_ANNOTATIONS}
        return {"apiVersion": f"{ROUTE_TABLES.group}/{ROUTE_TABLES.version}",
                "kind": ROUTE_TABLES.kind, "metadata": metadata, "spec": spec}
    result = copy.deepcopy(dict(existing))
    result["spec"] = spec
    return result


def read_weights(route_table: Mapping[str, Any], canary: Canary) -> Weights:
    """The split a RouteTable carries: Flagger's ``GetRoutes``, pure.

    The primary's weight is that of the first route's destination naming the primary Upstream
    (a missing weight is 0); the canary gets the rest. Raises RouterError when the first route
    has fewer than two destinations (Flagger's "destinations not found"), when none is the
    primary's, and when the weight is not a percentage (only a hand edit makes these).
    """
    apex = canary.get_service_names().apex
    label = f"RouteTable {apex}.{canary.namespace}"
    routes = (route_table.get("spec") or {}).get("routes") or ()
    destinations = (((routes[0] if routes else {}).get("routeAction") or {}).get("multi")
                    or {}).get("destinations") or ()
    if len(destinations) < 2:
        raise RouterError(f"{label} destinations not found")
    primary_upstream = upstream_name(canary, canary_side=False)
    for entry in destinations:
        upstream = ((entry.get("destination") or {}).get("upstream") or {}).get("name")
        if upstream == primary_upstream:
            try:
                return Weights.to_canary(TOTAL_WEIGHT - int(entry.get("weight") or 0))
            except (TypeError, ValueError) as exc:
                raise RouterError(f"{label}: weight of {upstream} is not a percentage") from exc
    raise RouterError(f"{label} has no destination {primary_upstream}")


def kept_weights(route_table: Mapping[str, Any] | None, canary: Canary) -> Weights:
    """The split a reconcile keeps: what ``route_table`` carries, else all to the primary."""
    if route_table is None:
        return Weights.all_primary()
    try:
        return read_weights(route_table, canary)
    except RouterError:
        return Weights.all_primary()


def _copied_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fields of the config Upstream's spec a generated one gets, zero values left out (Go's
    ``omitempty``: ``useHttp2: false`` is not written)."""
    spec = (config or {}).get("spec") or {}
    return {key: copy.deepcopy(spec[key]) for key in COPIED_UPSTREAM_FIELDS
            if spec.get(key) not in (None, False, 0, "")}


def build_upstream(
        canary: Canary,
        *,
        canary_side: bool,
        selector: Mapping[str, str] | None,
        config: Mapping[str, Any] | None,
        existing: Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """One generated Upstream, or None when ``existing`` needs no write. Pure.

    A new one points at the ``-primary`` or ``-canary`` Service (``selector`` is that
    Service's) and carries the config Upstream's settings (``config``, None without
    ``upstreamRef``). An existing one is left as it is, but for ``loadBalancerConfig``, which
    follows the config Upstream's (Flagger 1.44 keeps that one field in sync).
    """
    names = canary.get_service_names()
    if existing is not None:
        if config is None:
            return None
        wanted = _copied_config(config).get(SYNCED_UPSTREAM_FIELD)
        spec = dict(existing.get("spec") or {})
        if spec.get(SYNCED_UPSTREAM_FIELD) == wanted:
            return None
        if wanted is None:
            spec.pop(SYNCED_UPSTREAM_FIELD, None)
        else:
            spec[SYNCED_UPSTREAM_FIELD] = wanted
        return {**copy.deepcopy(dict(existing)), "spec": spec}
    kube_spec: dict[str, Any] = {
        "serviceName": names.canary if canary_side else names.primary,
        "serviceNamespace": canary.namespace,
        "servicePort": _port(canary),
    }
    if selector:
        kube_spec["selector"] = dict(selector)
    return {"apiVersion": f"{UPSTREAMS.group}/{UPSTREAMS.version}", "kind": UPSTREAMS.kind,
            "metadata": {"name": upstream_name(canary, canary_side=canary_side),
                         "namespace": canary.namespace},
            "spec": {**_copied_config(config), "kube": kube_spec}}


# -- the router ---------------------------------------------------------------------------------


class GlooRouter:
    """Routes a canary with a Gloo Edge RouteTable ``<svc>`` over two generated Upstreams.

    Built once per canary by the core (``GlooRouter(ctx=..., variant="")``). It keeps no state
    of its own: the weights live in the RouteTable, read through the object store, which shows
    our own writes at once.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(mirroring=False, session_affinity=False)
    """Weighted, with A/B header matches; no mirroring and no sticky sessions, as Flagger's
    router (it ignores ``mirrored`` and has no session affinity)."""

    def __init__(self, *, ctx: ProviderContext, variant: str = "") -> None:
        if variant:
            raise PluginError(f"the gloo router takes no variant, got 'gloo:{variant}'")
        self._log = ctx.log
        self._store = ctx.routing_store
        self._services = ctx.store
        self._set_owner_refs = ctx.set_owner_refs

    # -- the Router contract --------------------------------------------------------------------

    async def reconcile(self, canary: Canary) -> None:
        """Creates the two Upstreams (or syncs their load balancer settings), then creates the
        RouteTable (all to the primary) or keeps the one there up to date with the weights it
        carries: a steady call writes nothing."""
        config = await self._config_upstream(canary)
        for canary_side in (False, True):
            await self._reconcile_upstream(canary, canary_side=canary_side, config=config)
        applied = await self._apply_route_table(canary, lambda current: build_route_table(
            canary, kept_weights(current, canary), current))
        if applied.result is not kube.OperationResult.UNCHANGED:
            self._log.info(f"route_table_{applied.result.value}", router="gloo",
                           canary=_flagger_name(canary),
                           name=canary.get_service_names().apex)

    async def set_routes(self, canary: Canary, weights: Weights) -> None:
        """Writes ``weights`` into the RouteTable (nothing, if it carries them)."""
        applied = await self._apply_route_table(canary, lambda current: build_route_table(
            canary, weights, current))
        if applied.result is not kube.OperationResult.UNCHANGED:
            self._log.info("routes_set", router="gloo", canary=_flagger_name(canary),
                           primary=weights.primary, canary_weight=weights.canary)

    async def get_routes(self, canary: Canary) -> Weights:
        """The split the RouteTable carries now (see :func:`read_weights`)."""
        apex = canary.get_service_names().apex
        route_table = await self._get(ROUTE_TABLES, namespace=canary.namespace, name=apex)
        if route_table is None:
            raise RouterError(f"RouteTable {apex}.{canary.namespace} not found")
        return read_weights(route_table, canary)

    async def finalize(self, canary: Canary) -> None:
        """Nothing to give back (``revertOnDeletion``), as in Flagger: the RouteTable and the
        Upstreams are Flagger's own, and go with the Canary through their ownerReferences."""
        self._log.debug("route_table_finalize_skipped", router="gloo",
                        canary=_flagger_name(canary))

    # -- helpers --------------------------------------------------------------------------------

    async def _config_upstream(self, canary: Canary) -> Mapping[str, Any] | None:
        """The Upstream ``spec.upstreamRef`` names (its namespace defaults to the Canary's), or
        None without one; a RouterError when it does not exist."""
        ref = canary.spec.upstream_ref
        if ref is None:
            return None
        namespace = ref.namespace or canary.namespace
        config = await self._get(UPSTREAMS, namespace=namespace, name=ref.name)
        if config is None:
            raise RouterError(f"config upstream {ref.name}.{namespace} not found")
        return config

    async def _reconcile_upstream(
            self, canary: Canary, *, canary_side: bool, config: Mapping[str, Any] | None,
    ) -> None:
        names = canary.get_service_names()
        service_name = names.canary if canary_side else names.primary
        try:
            service = await self._services.get(kube.SERVICES, namespace=canary.namespace,
                                               name=service_name)
        except kube.WriteFencedError:
            raise
        except kube.KubeError as exc:
            raise RouterError(str(exc)) from exc
        if service is None:
            raise RouterError(f"service {service_name}.{canary.namespace} not found")
        selector = (service.get("spec") or {}).get("selector")
        name = upstream_name(canary, canary_side=canary_side)
        applied = await self._apply(UPSTREAMS, canary, name, lambda current: build_upstream(
            canary, canary_side=canary_side, selector=selector, config=config,
            existing=current))
        if applied.result is not kube.OperationResult.UNCHANGED:
            self._log.info(f"upstream_{applied.result.value}", router="gloo",
                           canary=_flagger_name(canary), name=name)

    async def _apply_route_table(self, canary: Canary, build: kube.Build) -> kube.Applied:
        return await self._apply(ROUTE_TABLES, canary, canary.get_service_names().apex, build)

    async def _apply(self, resource: kube.Resource, canary: Canary, name: str,
                     build: kube.Build) -> kube.Applied:
        """The one write path: cache read, pure build, a write only on a change, conflicts
        retried by the store, the Canary as owner unless the objects live on another cluster."""
        owner = canary_owner(canary) if self._set_owner_refs else None
        try:
            return await self._store.apply(resource, namespace=canary.namespace, name=name,
                                           build=build, owner=owner)
        except kube.WriteFencedError:
            raise  # this replica is no longer the leader: not a routing failure
        except kube.KubeError as exc:  # the message names the object and the operation
            raise RouterError(str(exc)) from exc

    async def _get(self, resource: kube.Resource, *, namespace: str,
                   name: str) -> Mapping[str, Any] | None:
        try:
            return await self._store.get(resource, namespace=namespace, name=name)
        except kube.WriteFencedError:
            raise
        except kube.KubeError as exc:
            raise RouterError(str(exc)) from exc


def _flagger_name(canary: Canary) -> str:
    return f"{canary.name}.{canary.namespace}"


_factory: RouterFactory = GlooRouter
_: type[Router] = GlooRouter


# --- builtin metrics ----------------------------------------------------------------------------


class GlooObserver(PrometheusObserver):
    """Gloo: Envoy clusters of the canary upstream ``<namespace>-<target>-canaryupstream-*``."""

    mesh = "gloo"
    _selector = ('envoy_cluster_name=~"{{ namespace }}-{{ target }}-canaryupstream-'
                 '[0-9a-zA-Z-]+_[0-9a-zA-Z-]+"')
    success_rate_query = ratio("envoy_cluster_upstream_rq", _selector,
                               'envoy_response_code!~"5.*"', trailing_comma=True)
    duration_query = p99("envoy_cluster_upstream_rq_time_bucket", _selector,
                         trailing_comma=True)
