"""The ``contour`` provider: Flagger's ``ContourRouter`` (``pkg/router/contour.go``, spec §3) and
Contour's builtin metrics (``pkg/metrics/observers/contour.go``, spec §4.3).

A canary behind Contour is routed by one ``projectcontour.io/v1`` HTTPProxy named ``<svc>``::

    spec: {ingressClassName: <-ingress-class, when set>,
           routes: [{conditions: [{prefix: <service.match[0].uri.prefix or />}],
                     timeoutPolicy: {response: <service.timeout>, idle: 5m},
                     retryPolicy: {count, perTryTimeout, retryOn: [<retryOn split on ",">]},
                     services: [{name: <svc>-primary, port, weight: P, requestHeadersPolicy},
                                {name: <svc>-canary, port, weight: C, requestHeadersPolicy}]}]}

Each service sets the ``l5d-dst-override`` request header to its own cluster-local name and port,
so that a Linkerd-meshed Envoy forwards to the Service Contour chose rather than the apex.
A weight of 0 is left out, as Flagger's ``omitempty`` Go field writes it (Contour reads a route
whose services all carry weights as a weighted one, and a service without weight as 0 there).

A/B testing (``analysis.match``): the first route carries the split with one condition
``{prefix, header}`` per header of every match item (``exact``; ``prefix`` and ``suffix`` both
become ``contains``; a ``regex`` is written as a bare ``{name}``, as Flagger writes it), and a
second route sends the rest to the primary. Contour ANDs a route's conditions; that is what
Flagger writes, and what flaggerpy writes. Query parameter matches are ignored, as in Flagger.
No mirroring and no session affinity: Flagger's router ignores both, hence the capabilities.

As for every router (style §9.3) the module is **pure builders** -- :func:`build_http_proxy`,
:func:`read_weights`, :func:`kept_weights` -- tested field by field, and one apply path, the
object store (``ProviderContext.routing_store``). ``reconcile`` compares the stored spec with the
desired one ignoring weights, as Flagger does, so a steady tick writes nothing and a run in
flight is never reset. ``finalize`` gives nothing back (Flagger's is a no-op): the HTTPProxy goes
with its Canary through the ownerReference. Where this differs from Flagger is listed in
``docs/compatibility.md`` under "Contour router differences from Flagger".

The module ends with :class:`ContourObserver`, which answers ``request-success-rate`` and
``request-duration`` from Envoy's ``envoy_cluster_upstream_rq`` counters of the cluster Contour
names ``<namespace>_<service>-canary_<port>``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar, Final

from flaggerpy import kube
from flaggerpy.errors import PluginError, RouterError, TerminalError
from flaggerpy.models.canary import Canary, CanaryService, HeaderMatch
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
    "API_VERSION",
    "DST_OVERRIDE_HEADER",
    "HTTP_PROXIES",
    "IDLE_TIMEOUT",
    "ContourObserver",
    "ContourRouter",
    "build_http_proxy",
    "header_conditions",
    "kept_weights",
    "read_weights",
    "route_prefix",
]

GROUP: Final = "projectcontour.io"
VERSION: Final = "v1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
HTTP_PROXIES: Final = kube.Resource(GROUP, VERSION, "httpproxies", "HTTPProxy")

DST_OVERRIDE_HEADER: Final = "l5d-dst-override"
"""The request header each service sets to its own ``<name>.<ns>.svc.cluster.local:<port>``."""
IDLE_TIMEOUT: Final = "5m"
"""``timeoutPolicy.idle`` Flagger writes beside ``service.timeout``."""


# -- pure builders ------------------------------------------------------------------------------


def _service(canary: Canary) -> CanaryService:
    service = canary.spec.service
    if service is None:
        raise TerminalError(f"Canary {canary.namespace}/{canary.name}: spec.service is missing; "
                            "the HTTPProxy needs spec.service.port")
    return service


def route_prefix(canary: Canary) -> str:
    """The path prefix every condition carries: ``service.match[0].uri.prefix``, else ``/``.

    Only the first match item is read, and only its ``uri.prefix`` (Flagger's ``makePrefix``).
    """
    matches = canary.spec.service.match if canary.spec.service is not None else None
    if matches and matches[0].uri is not None and matches[0].uri.prefix:
        return str(matches[0].uri.prefix)
    return "/"


def _header(name: str, match: HeaderMatch) -> dict[str, Any]:
    """One header condition: ``prefix`` wins over ``suffix``, both written as ``contains``
    (Contour has no prefix or suffix header match); else ``exact``, left out when empty."""
    if match.prefix:
        return {"name": name, "contains": str(match.prefix)}
    if match.suffix:
        return {"name": name, "contains": str(match.suffix)}
    if match.exact:
        return {"name": name, "exact": str(match.exact)}
    return {"name": name}


def header_conditions(canary: Canary) -> list[dict[str, Any]]:
    """The A/B route's conditions: one ``{prefix, header}`` per header of every
    ``analysis.match`` item, in order (Flagger's ``makeConditions``); ``[{prefix}]`` without
    any match."""
    prefix = route_prefix(canary)
    conditions = [{"prefix": prefix, "header": _header(name, match)}
                  for item in canary.spec.analysis.match or ()
                  for name, match in (item.headers or {}).items()]
    return conditions if canary.spec.analysis.match else [{"prefix": prefix}]


def _timeout_policy(service: CanaryService) -> dict[str, Any] | None:
    if not service.timeout:
        return None
    return {"response": service.timeout, "idle": IDLE_TIMEOUT}


def _retry_policy(service: CanaryService) -> dict[str, Any] | None:
    retries = service.retries
    if retries is None:
        return None
    policy: dict[str, Any] = {"count": retries.attempts or 0}
    if retries.per_try_timeout:
        policy["perTryTimeout"] = retries.per_try_timeout
    conditions = [c.strip() for c in str(retries.retry_on or "").split(",") if c.strip()]
    if conditions:
        policy["retryOn"] = conditions
    return policy


def _backend(canary: Canary, name: str, weight: int) -> dict[str, Any]:
    port = _service(canary).port
    entry: dict[str, Any] = {
        "name": name,
        "port": port,
        "requestHeadersPolicy": {"set": [{
            "name": DST_OVERRIDE_HEADER,
            "value": f"{name}.{canary.namespace}.svc.cluster.local:{port}",
        }]},
    }
    if weight:
        entry["weight"] = weight
    return entry


def _route(canary: Canary, conditions: list[dict[str, Any]], primary: int,
           canary_weight: int) -> dict[str, Any]:
    service = _service(canary)
    names = canary.get_service_names()
    route: dict[str, Any] = {"conditions": conditions} if conditions else {}
    timeout = _timeout_policy(service)
    if timeout is not None:
        route["timeoutPolicy"] = timeout
    retry = _retry_policy(service)
    if retry is not None:
        route["retryPolicy"] = retry
    route["services"] = [_backend(canary, names.primary, primary),
                         _backend(canary, names.canary, canary_weight)]
    return route


def _spec(canary: Canary, weights: Weights, ingress_class: str) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if ingress_class:
        spec["ingressClassName"] = ingress_class
    if canary.spec.analysis.match:
        spec["routes"] = [
            _route(canary, header_conditions(canary), weights.primary, weights.canary),
            _route(canary, [{"prefix": route_prefix(canary)}], TOTAL_WEIGHT, 0),
        ]
    else:
        spec["routes"] = [_route(canary, [{"prefix": route_prefix(canary)}],
                                 weights.primary, weights.canary)]
    return spec


def _without_weights(spec: Mapping[str, Any]) -> Any:
    """``spec`` with every service weight dropped: what Flagger's comparison looks at."""
    result = copy.deepcopy(dict(spec))
    for route in result.get("routes") or ():
        if not isinstance(route, dict):
            continue
        for backend in route.get("services") or ():
            if isinstance(backend, dict):
                backend.pop("weight", None)
    return result


def build_http_proxy(
        canary: Canary,
        weights: Weights | None,
        *,
        existing: Mapping[str, Any] | None,
        ingress_class: str = "",
        set_owner_refs: bool = True,
) -> dict[str, Any]:
    """The HTTPProxy ``<svc>`` routing ``weights``, built over ``existing``. Pure.

    ``weights=None`` is a reconcile: an existing HTTPProxy whose spec matches apart from its
    weights is returned as it is (Flagger's comparison ignores the weights); one whose spec
    differs gets the desired spec with the split it carries (:func:`kept_weights`). A new one
    carries 100/0, the ``service.apex`` labels and annotations plus the toolkit annotations,
    and (with ``set_owner_refs``) the ownerReference. Only ``spec`` of an existing object
    changes: a user's HTTPProxy of the same name is taken over without an ownerReference.
    """
    if existing is None:
        apex = _service(canary).apex
        metadata: dict[str, Any] = {
            "name": canary.get_service_names().apex,
            "namespace": canary.namespace,
            "annotations": {**((apex.annotations if apex else None) or {}),
                            **TOOLKIT_ANNOTATIONS},
        }
        labels = (apex.labels if apex else None) or {}
        if labels:
            metadata["labels"] = dict(labels)
        if set_owner_refs:
            metadata["ownerReferences"] = [kube.controller_reference(canary_owner(canary))]
        return {"apiVersion": API_VERSION, "kind": "HTTPProxy", "metadata": metadata,
                "spec": _spec(canary, weights or Weights.all_primary(), ingress_class)}
    result = copy.deepcopy(dict(existing))
    if weights is None:
        desired = _spec(canary, Weights.all_primary(), ingress_class)
        if _without_weights(existing.get("spec") or {}) == _without_weights(desired):
            return result
        weights = kept_weights(existing, canary)
    result["spec"] = _spec(canary, weights, ingress_class)
    return result


def _weight(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return value


def read_weights(proxy: Mapping[str, Any], canary: Canary) -> Weights:
    """The split an HTTPProxy carries: Flagger's ``GetRoutes``, pure. Never mirrored.

    The first route's ``<svc>-primary`` service weight (absent: 0) is the primary's; the
    canary gets the rest. Raises RouterError when the first route has fewer than two services
    ("services not found", as Flagger), when none of them is the primary (Flagger would answer
    0/100 there) and when the weight is not a percentage (only a hand edit makes either).
    """
    names = canary.get_service_names()
    label = f"HTTPProxy {names.apex}.{canary.namespace}"
    routes = (proxy.get("spec") or {}).get("routes") or ()
    services = (routes[0].get("services") or ()) if routes else ()
    if len(services) < 2:
        raise RouterError(f"{label} services not found")
    for backend in services:
        if isinstance(backend, Mapping) and backend.get("name") == names.primary:
            try:
                return Weights.to_canary(TOTAL_WEIGHT - _weight(backend.get("weight")))
            except ValueError as exc:
                raise RouterError(f"{label}: {exc}") from exc
    raise RouterError(f"{label} does not contain routes for {names.primary} and "
                      f"{names.canary}")


def kept_weights(proxy: Mapping[str, Any] | None, canary: Canary) -> Weights:
    """The split a reconcile keeps: what ``proxy`` carries, else (none, no valid split) 100/0."""
    if proxy is None:
        return Weights.all_primary()
    try:
        return read_weights(proxy, canary)
    except RouterError:
        return Weights.all_primary()


# -- the router ---------------------------------------------------------------------------------


class ContourRouter:
    """Routes a canary with the Contour HTTPProxy ``<svc>`` (spec §3).

    Built once per canary by the core (``ContourRouter(ctx=..., variant="")``). It keeps no
    state of its own: the weights live in the HTTPProxy, read through the object store, which
    shows our own writes at once.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(mirroring=False, session_affinity=False)
    """Weighted, with A/B header matches, to the three generated Services; no mirroring and no
    sticky sessions (Flagger's router ignores ``mirrored`` and ``sessionAffinity``)."""

    def __init__(self, *, ctx: ProviderContext, variant: str = "") -> None:
        if variant:
            raise PluginError(f"the contour router takes no variant, got 'contour:{variant}'")
        self._ctx = ctx
        self._log = ctx.log
        self._store = ctx.routing_store

    # -- the Router contract --------------------------------------------------------------------

    async def reconcile(self, canary: Canary) -> None:
        """Creates the HTTPProxy (all to the primary), or brings its spec up to date keeping
        its split: a steady call writes nothing."""
        applied = await self._apply(canary, None)
        if applied.result is not kube.OperationResult.UNCHANGED:
            self._log.info(f"http_proxy_{applied.result.value}", router="contour",
                           canary=_flagger_name(canary),
                           name=canary.get_service_names().apex)

    async def set_routes(self, canary: Canary, weights: Weights) -> None:
        """Writes ``weights`` into the HTTPProxy (``mirrored`` is ignored: as in Flagger)."""
        applied = await self._apply(canary, weights)
        if applied.result is not kube.OperationResult.UNCHANGED:
            self._log.info("routes_set", router="contour", canary=_flagger_name(canary),
                           primary=weights.primary, canary_weight=weights.canary)

    async def get_routes(self, canary: Canary) -> Weights:
        """The split the HTTPProxy carries now (see :func:`read_weights`)."""
        apex = canary.get_service_names().apex
        try:
            proxy = await self._store.get(HTTP_PROXIES, namespace=canary.namespace, name=apex)
        except kube.WriteFencedError:
            raise
        except kube.KubeError as exc:
            raise RouterError(f"HTTPProxy {apex}.{canary.namespace} get query error: "
                              f"{exc}") from exc
        if proxy is None:
            raise RouterError(f"HTTPProxy {apex}.{canary.namespace} not found")
        return read_weights(proxy, canary)

    async def finalize(self, canary: Canary) -> None:
        """Nothing to give back (``revertOnDeletion``), as in Flagger: the HTTPProxy the Canary
        created goes with it through its ownerReference."""
        self._log.debug("http_proxy_finalize_skipped", router="contour",
                        canary=_flagger_name(canary))

    # -- helpers --------------------------------------------------------------------------------

    async def _apply(self, canary: Canary, weights: Weights | None) -> kube.Applied:
        """The one write path: cache read, pure build, a write only on a change, conflicts
        retried by the store."""
        ingress_class = self._ctx.settings.mesh.ingress_class
        owners = self._ctx.set_owner_refs
        try:
            return await self._store.apply(
                HTTP_PROXIES, namespace=canary.namespace, name=canary.get_service_names().apex,
                build=lambda current: build_http_proxy(
                    canary, weights, existing=current, ingress_class=ingress_class,
                    set_owner_refs=owners))
        except kube.WriteFencedError:
            raise  # this replica is no longer the leader: not a routing failure
        except kube.KubeError as exc:  # the message names the object and the operation
            raise RouterError(str(exc)) from exc


def _flagger_name(canary: Canary) -> str:
    return f"{canary.name}.{canary.namespace}"


_factory: RouterFactory = ContourRouter
_: type[Router] = ContourRouter


# --- builtin metrics ----------------------------------------------------------------------------


class ContourObserver(PrometheusObserver):
    """Contour: Envoy clusters named ``<namespace>_<service>-canary_<port>``."""

    mesh = "contour"
    _selector = 'envoy_cluster_name=~"{{ namespace }}_{{ service }}-canary_[0-9a-zA-Z-]+"'
    success_rate_query = ratio("envoy_cluster_upstream_rq", _selector,
                               'envoy_response_code!~"5.*"', trailing_comma=True)
    duration_query = p99("envoy_cluster_upstream_rq_time_bucket", _selector,
                         trailing_comma=True)
