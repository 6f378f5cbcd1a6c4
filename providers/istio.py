"""The ``istio`` provider: Flagger's ``IstioRouter`` (``pkg/router/istio.go``, spec §3.2).

A canary on Istio is routed by three ``networking.istio.io/v1beta1`` objects (Flagger's API
version; the CRD serves it, with ``v1`` as its storage version):

- DestinationRules ``<svc>-canary`` and ``<svc>-primary``: ``{host: <same name>, trafficPolicy:
  service.trafficPolicy}``;
- the VirtualService ``<svc>`` that splits the apex host between ``<svc>-primary`` and
  ``<svc>-canary``: hosts, gateways, delegation, the http routes (match, rewrite, timeout,
  retries, corsPolicy, headers, weights, mirror) or, for ``appProtocol: tcp``, tcp routes; A/B
  testing routes; session-affinity ("sticky canary") routes and cookies.

The module is split the way every mesh router is (style §9.3):

- **pure builders** -- :func:`build_destination_rule`, :func:`build_virtual_service`,
  :func:`read_weights`, :func:`next_session_cookies`, :func:`restored_virtual_service` --
  which turn a Canary (and the object as it is now) into the object as it should be, and are
  tested field by field against the spec;
- **one apply path**, the object store the core hands over (``ProviderContext.routing_store``,
  ``kube.ObjectStore``), which reads from the informer cache, calls a builder with what it read
  and writes only when the result differs.

The same builder serves ``reconcile`` and ``set_routes``: ``reconcile`` builds with the weights
(and mirror) the VirtualService carries now, so it never resets a split in flight, and
``set_routes`` builds with the new weights. Equal input, equal output, no write: a steady
``reconcile`` + ``get_routes`` + identical ``set_routes`` makes no request at all.

Session affinity follows Flagger's state machine on three status fields, written with a merge
patch of the Canary's status before the VirtualService that publishes them:

- canary weight > 0: ``sessionAffinityCookie`` (``<cookieName>=<10 random letters>``) is kept or
  made; the ``sticky-canary`` route sends requests carrying it to the canary, the weighted
  route's canary destination hands it out (``Set-Cookie ...; Max-Age=<maxAge>...``). With
  ``primaryCookieName`` a ``primarySessionAffinityCookie`` does the same for the primary, for
  one analysis interval (``sticky-primary`` route, Max-Age = interval), so a client that drew
  the primary keeps it for a tick instead of being re-rolled on every request;
- canary weight 0 (promotion, rollback): the cookie moves to ``previousSessionAffinityCookie``
  and a ``sticky-canary`` route answers requests that still carry it with
  ``Set-Cookie: <cookie>; Max-Age=-1``, deleting it from the browser.

A user's existing VirtualService ``<svc>`` is taken over on the first write: unless kubectl's
``last-applied-configuration`` annotation already records it, its spec is saved as JSON in
``flagger.kubernetes.io/original-configuration``, and :meth:`IstioRouter.finalize` (Canary
deleted with ``revertOnDeletion``) puts that spec back.

Where this differs from Flagger (weights kept on spec changes, the mirror and session affinity
together, A/B query parameters, ``suffix`` header matches, ...) is listed in
``docs/compatibility.md`` under "Istio router differences from Flagger".

The module ends with :class:`IstioObserver`, the builtin metrics' queries over Istio's telemetry
(``pkg/metrics/observers/istio.go``).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Final, Literal

from flaggerpy import kube
from flaggerpy.affinity import (
    COOKIE_HEADER,
    SET_COOKIE_HEADER,
    SessionCookies,
    cookie_regex,
    next_session_cookies as affinity_cookies,
    random_cookie_value,
    read_cookies,
    set_cookie_value,
    store_cookies,
)
from flaggerpy.errors import PluginError, RouterError, TerminalError
from flaggerpy.models.canary import Canary, CanaryService, SessionAffinity
from flaggerpy.observing import PrometheusObserver, p99, ratio
from flaggerpy.routing import (
    TOOLKIT_ANNOTATIONS,
    Capabilities,
    ProviderContext,
    Router,
    RouterFactory,
    Weights,
    canary_owner,
)

__all__ = [
    "API_VERSION",
    "DESTINATION_RULES",
    "ORIGINAL_CONFIGURATION",
    "STICKY_CANARY_ROUTE",
    "STICKY_PRIMARY_ROUTE",
    "VIRTUAL_SERVICES",
    "IstioObserver",
    "IstioRouter",
    "Role",
    "build_destination_rule",
    "build_virtual_service",
    "is_tcp",
    "kept_weights",
    "merge_match_conditions",
    "next_session_cookies",
    "read_weights",
    "restored_virtual_service",
]

GROUP: Final = "networking.istio.io"
VERSION: Final = "v1beta1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
VIRTUAL_SERVICES: Final = kube.Resource(GROUP, VERSION, "virtualservices", "VirtualService")
DESTINATION_RULES: Final = kube.Resource(GROUP, VERSION, "destinationrules", "DestinationRule")

ORIGINAL_CONFIGURATION: Final = "flagger.kubernetes.io/original-configuration"
"""The spec of a user's VirtualService before the first takeover, as JSON (Flagger's key)."""
KUBECTL_LAST_APPLIED: Final = kube.KUBECTL_LAST_APPLIED

STICKY_CANARY_ROUTE: Final = "sticky-canary"
"""The route matching the canary cookie (or, at weight 0, the previous run's cookie)."""
STICKY_PRIMARY_ROUTE: Final = "sticky-primary"
"""The route matching the primary cookie (``primaryCookieName``)."""
_STICKY_ROUTES: Final = frozenset({STICKY_CANARY_ROUTE, STICKY_PRIMARY_ROUTE, "sticky-route"})
# "sticky-route" is what older Flagger releases named their one sticky route; a VirtualService
# taken over from Flagger is read correctly and rewritten with our names.

MESH_GATEWAY: Final = "mesh"

Role = Literal["primary", "canary"]
"""Which DestinationRule: ``<svc>-primary`` or ``<svc>-canary``."""


# -- session affinity: which cookies this VirtualService routes by --------------------------


def _sticky(canary: Canary) -> SessionAffinity | None:
    """The session-affinity settings when they shape the routes (not for tcp or A/B)."""
    affinity = canary.spec.analysis.session_affinity
    if affinity is None or is_tcp(canary) or canary.spec.analysis.match:
        return None
    return affinity


def next_session_cookies(
        canary: Canary,
        weights: Weights,
        *,
        current: SessionCookies,
        token: Callable[[], str] = random_cookie_value,
) -> SessionCookies:
    """The cookies after routing ``weights`` (``flaggerpy.affinity.next_session_cookies``). Pure.

    Istio routes by cookies unless the canary is tcp or A/B; it hands out the primary cookie
    when ``primaryCookieName`` is set.
    """
    affinity = _sticky(canary)
    return affinity_cookies(
        affinity, weights, current=current,
        primary_cookie_name=(affinity.primary_cookie_name or "") if affinity else "",
        token=token)


def _cookie_match(cookie: str) -> dict[str, Any]:
    return {"headers": {COOKIE_HEADER: {"regex": cookie_regex(cookie)}}}


# -- pure builders ------------------------------------------------------------------------------


def is_tcp(canary: Canary) -> bool:
    """Whether the VirtualService routes tcp instead of http (``appProtocol: tcp``, any case)."""
    service = canary.spec.service
    return bool(service and service.app_protocol and service.app_protocol.lower() == "tcp")


def _service(canary: Canary) -> CanaryService:
    service = canary.spec.service
    if service is None:
        raise TerminalError(f"Canary {canary.namespace}/{canary.name}: spec.service is missing; "
                            "the Istio objects need at least spec.service.port")
    return service


def _pruned(value: Any) -> Any:
    """``value`` without null, ``{}`` or ``[]`` mapping entries (Go's omitempty), recursively.

    List elements are kept as they are: an empty match in a list still means "match all".
    """
    if isinstance(value, Mapping):
        result = {}
        for key, item in value.items():
            pruned = _pruned(item)
            if pruned is None or pruned == {} or pruned == []:
                continue
            result[key] = pruned
        return result
    if isinstance(value, list):
        return [_pruned(item) for item in value]
    return value


def _wire(model: Any) -> Any:
    return _pruned(model.to_dict()) if model is not None else None


def merge_match_conditions(
        canary: Sequence[Mapping[str, Any]], defaults: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Flagger's ``mergeMatchConditions``: each canary condition on top of each default one.

    Without defaults the canary conditions are used as they are. Otherwise every pair
    (canary condition, ``service.match`` entry) becomes one entry: the service entry, with the
    canary condition's ``headers``, ``queryParams`` and ``sourceLabels`` in place of its own
    where the canary condition sets them. (Flagger forgets ``queryParams``; see
    docs/compatibility.md.)
    """
    if not defaults:
        return [copy.deepcopy(dict(c)) for c in canary]
    merged = []
    for condition in canary:
        for default in defaults:
            entry = copy.deepcopy(dict(default))
            for field in ("headers", "queryParams", "sourceLabels"):
                if condition.get(field) is not None:
                    entry[field] = copy.deepcopy(condition[field])
            merged.append(entry)
    return merged


def _analysis_matches(canary: Canary) -> list[dict[str, Any]]:
    """``analysis.match`` as Istio match requests.

    A header condition's ``suffix`` (allowed by Flagger's CRD, unknown to Istio's, which would
    prune it into "any value") becomes the equivalent ``regex``.
    """
    matches = []
    for condition in canary.spec.analysis.match or ():
        entry: dict[str, Any] = _pruned(condition.to_dict())
        headers = entry.get("headers")
        if headers:
            for name, match in list(headers.items()):
                if "suffix" in match:
                    headers[name] = {"regex": ".*" + re.escape(str(match["suffix"]))}
        matches.append(entry)
    return matches


def _port_rule(service: CanaryService) -> bool:
    # Flagger's makeDestination: the port is named when port discovery is on and the
    # VirtualService serves an ingress gateway first (or is a delegate).
    gateways = service.gateways or []
    via_gateway = bool(gateways) and gateways[0] != MESH_GATEWAY
    return bool(service.port_discovery) and (via_gateway or bool(service.delegation))


def _destination(service: CanaryService, host: str, weight: int) -> dict[str, Any]:
    destination: dict[str, Any] = {"host": host}
    if _port_rule(service):
        destination["port"] = {"number": service.port}
    return {"destination": destination, "weight": weight}


def _http_route(
        service: CanaryService,
        *,
        match: Sequence[Mapping[str, Any]],
        route: list[dict[str, Any]],
        name: str = "",
) -> dict[str, Any]:
    """One http route with the service-level settings Flagger copies into every route."""
    result: dict[str, Any] = {}
    if name:
        result["name"] = name
    if match:
        result["match"] = copy.deepcopy([dict(m) for m in match])
    if service.rewrite is not None:
        # Istio's HTTPRewrite has no `type` (that one is for Gateway API).
        rewrite = {k: v for k, v in (("uri", service.rewrite.uri),
                                     ("authority", service.rewrite.authority)) if v}
        if rewrite:
            result["rewrite"] = rewrite
    if service.timeout:
        result["timeout"] = service.timeout
    for field, model in (("retries", service.retries), ("corsPolicy", service.cors_policy),
                         ("headers", service.headers)):
        wire = _wire(model)
        if wire:
            result[field] = wire
    result["route"] = route
    return result


def _hosts_and_gateways(canary: Canary, service: CanaryService) -> tuple[list[str], list[str]]:
    apex = canary.get_service_names().apex
    if service.delegation:
        if service.hosts or service.gateways:
            raise RouterError(f"VirtualService {canary.namespace}/{apex} cannot have hosts and "
                              "gateways when delegation enabled")
        return [], []  # a delegate VirtualService has neither
    hosts = list(service.hosts or [])
    if not any(h in (apex, "*") for h in hosts):
        hosts.append(apex)
    gateways = list(service.gateways or []) or [MESH_GATEWAY]
    return hosts, gateways


def _with_response_header(route: dict[str, Any], value: str) -> None:
    """Adds ``Set-Cookie: value`` to the response headers of a route or destination."""
    headers = route.setdefault("headers", {})
    response = headers.setdefault("response", {})
    response.setdefault("add", {})[SET_COOKIE_HEADER] = value


def _http_routes(
        canary: Canary,
        service: CanaryService,
        weights: Weights,
        *,
        cookies: SessionCookies,
        interval: float,
) -> list[dict[str, Any]]:
    names = canary.get_service_names()
    service_match = [_pruned(m.to_dict()) for m in service.match or ()]

    def split(primary: int, canary_weight: int) -> list[dict[str, Any]]:
        return [_destination(service, names.primary, primary),
                _destination(service, names.canary, canary_weight)]

    ab = _analysis_matches(canary)
    if ab:
        # A/B testing: matching requests are split, the rest stay on the primary.
        return [
            _http_route(service, match=merge_match_conditions(ab, service_match),
                        route=split(weights.primary, weights.canary)),
            _http_route(service, match=service_match,
                        route=[_destination(service, names.primary, 100)]),
        ]

    weighted = _http_route(service, match=service_match,
                           route=split(weights.primary, weights.canary))
    if weights.mirrored:
        weighted["mirror"] = {"host": names.canary}
        mirror_weight = canary.spec.analysis.mirror_weight
        if mirror_weight:
            weighted["mirrorPercentage"] = {"value": mirror_weight}

    affinity = _sticky(canary)
    if affinity is None:
        return [weighted]
    sticky: list[dict[str, Any]] = []
    if weights.canary != 0:
        primary_dest, canary_dest = weighted["route"]
        if cookies.canary:
            _with_response_header(
                canary_dest, set_cookie_value(affinity, cookies.canary,
                                          max_age=affinity.get_max_age()))
            sticky.append(_http_route(
                service, name=STICKY_CANARY_ROUTE,
                match=merge_match_conditions([_cookie_match(cookies.canary)], service_match),
                route=split(0, 100)))
        if cookies.primary:
            _with_response_header(
                primary_dest, set_cookie_value(affinity, cookies.primary, max_age=int(interval)))
            sticky.append(_http_route(
                service, name=STICKY_PRIMARY_ROUTE,
                match=merge_match_conditions([_cookie_match(cookies.primary)], service_match),
                route=split(100, 0)))
    elif cookies.previous:
        # A client still holding the last run's cookie gets the weighted split and is told to
        # drop the cookie.
        expire = _http_route(
            service, name=STICKY_CANARY_ROUTE,
            match=merge_match_conditions([_cookie_match(cookies.previous)], service_match),
            route=split(weights.primary, weights.canary))
        _with_response_header(expire, f"{cookies.previous}; Max-Age=-1")
        sticky.append(expire)
    return [*sticky, weighted]


def _tcp_routes(canary: Canary, service: CanaryService, weights: Weights) -> list[dict[str, Any]]:
    names = canary.get_service_names()
    route: dict[str, Any] = {}
    if service.match:
        # Istio's L4 match has no http fields; only the port carries over (Flagger's rule).
        route["match"] = [{"port": m.port} if m.port else {} for m in service.match]
    route["route"] = [_destination(service, names.primary, weights.primary),
                      _destination(service, names.canary, weights.canary)]
    return [route]


def _metadata(canary: Canary, service: CanaryService) -> tuple[dict[str, str], dict[str, str]]:
    apex = service.apex
    labels = dict((apex.labels if apex else None) or {})
    annotations = {**((apex.annotations if apex else None) or {}), **TOOLKIT_ANNOTATIONS}
    return labels, annotations


def _set_or_drop(target: dict[str, Any], field: str, value: Mapping[str, Any] | None) -> None:
    if value:
        target[field] = dict(value)
    else:
        target.pop(field, None)


def build_destination_rule(
        canary: Canary, role: Role, *, set_owner_refs: bool = True,
) -> dict[str, Any]:
    """The DestinationRule ``<svc>-<role>``: ``{host: <its name>, trafficPolicy}``. Pure.

    ``service.trafficPolicy`` is copied verbatim, into both rules. An existing rule only has
    its spec replaced (``kube.with_spec``), as Flagger does.
    """
    if role not in ("primary", "canary"):
        raise ValueError(f"unknown DestinationRule role {role!r}; expected primary or canary")
    service = _service(canary)
    name = getattr(canary.get_service_names(), role)
    spec: dict[str, Any] = {"host": name}
    policy = _wire(service.traffic_policy)
    if policy:
        spec["trafficPolicy"] = policy
    metadata: dict[str, Any] = {"name": name, "namespace": canary.namespace}
    if set_owner_refs:
        metadata["ownerReferences"] = [kube.controller_reference(canary_owner(canary))]
    return {"apiVersion": API_VERSION, "kind": "DestinationRule", "metadata": metadata,
            "spec": spec}


def build_virtual_service(
        canary: Canary,
        weights: Weights,
        *,
        existing: Mapping[str, Any] | None = None,
        status: SessionCookies | None = None,
        interval: float | None = None,
        set_owner_refs: bool = True,
) -> dict[str, Any]:
    """The VirtualService ``<svc>`` routing ``weights``, as it should be stored. Pure.

    ``existing`` is the VirtualService as it is now, if there is one: the result is then that
    object with its spec (and managed metadata) replaced, and equal to it when nothing needs
    writing. ``status`` holds the session-affinity cookies to route by (default: the Canary's
    status); ``interval`` the analysis interval in seconds that the primary cookie lives for
    (default: the Canary's, with Flagger's 10 s floor).

    Metadata: labels and annotations are ``service.apex``'s plus the two toolkit annotations.
    On a VirtualService this Canary created they replace what is there (kubectl's
    last-applied and the original-configuration annotations kept); on a user's they are laid
    over the user's own, and the first write that changes its spec records the spec it had in
    ``flagger.kubernetes.io/original-configuration`` unless kubectl's annotation has it.
    ownerReferences are set on creation only, never added to a user's object.
    """
    service = _service(canary)
    names = canary.get_service_names()
    hosts, gateways = _hosts_and_gateways(canary, service)
    spec: dict[str, Any] = {}
    if hosts:
        spec["hosts"] = hosts
    if gateways:
        spec["gateways"] = gateways
    if is_tcp(canary):
        spec["tcp"] = _tcp_routes(canary, service, weights)
    else:
        spec["http"] = _http_routes(
            canary, service, weights,
            cookies=status if status is not None else SessionCookies.of(canary),
            interval=interval if interval is not None else canary.get_analysis_interval())
    labels, annotations = _metadata(canary, service)

    if existing is None:
        metadata: dict[str, Any] = {"name": names.apex, "namespace": canary.namespace,
                                    "annotations": annotations}
        _set_or_drop(metadata, "labels", labels)
        if set_owner_refs:
            metadata["ownerReferences"] = [kube.controller_reference(canary_owner(canary))]
        return {"apiVersion": API_VERSION, "kind": "VirtualService", "metadata": metadata,
                "spec": spec}

    result = copy.deepcopy(dict(existing))
    meta: dict[str, Any] = result.setdefault("metadata", {})
    have_labels: dict[str, str] = dict(meta.get("labels") or {})
    have_notes: dict[str, str] = dict(meta.get("annotations") or {})
    if _owned(existing, canary):
        for key in (KUBECTL_LAST_APPLIED, ORIGINAL_CONFIGURATION):
            if key in have_notes:
                annotations[key] = have_notes[key]
    else:
        labels = {**have_labels, **labels}
        annotations = {**have_notes, **annotations}
        current_spec = existing.get("spec") or {}
        first_takeover = (KUBECTL_LAST_APPLIED not in have_notes
                          and ORIGINAL_CONFIGURATION not in have_notes)
        if first_takeover and current_spec != spec:
            annotations[ORIGINAL_CONFIGURATION] = json.dumps(current_spec,
                                                             separators=(",", ":"))
    if labels != have_labels:
        _set_or_drop(meta, "labels", labels)
    if annotations != have_notes:
        _set_or_drop(meta, "annotations", annotations)
    if existing.get("spec") != spec:
        result["spec"] = spec
    return result


def _routes_of(spec: Mapping[str, Any], *, tcp: bool) -> list[Mapping[str, Any]]:
    return list(spec.get("tcp" if tcp else "http") or [])


def _hosts(route: Mapping[str, Any]) -> list[str]:
    return [str((d.get("destination") or {}).get("host") or "") for d in route.get("route") or ()]


def _weighted_route(routes: Sequence[Mapping[str, Any]], canary_host: str) -> Mapping[str, Any]:
    """The route holding the split: the first one that sends to the canary and is not sticky.

    The sticky routes (which pin a cookie to one side) and A/B's default route (primary only)
    are skipped, which is where Flagger's ``GetRoutes`` ends up for every VirtualService it
    writes (it takes the last route naming the canary, or the one whose destinations set
    cookies).
    """
    for route in routes:
        if route.get("name") in _STICKY_ROUTES:
            continue
        if canary_host in _hosts(route):
            return route
    return {}


def _split(
        vs: Mapping[str, Any], canary: Canary, *, tcp: bool,
) -> tuple[int, int, bool]:
    names = canary.get_service_names()
    route = _weighted_route(_routes_of(vs.get("spec") or {}, tcp=tcp), names.canary)
    primary = canary_weight = 0
    for destination in route.get("route") or ():
        host = (destination.get("destination") or {}).get("host")
        weight = int(destination.get("weight") or 0)
        if host == names.primary:
            primary = weight
        elif host == names.canary:
            canary_weight = weight
    mirrored = not tcp and bool((route.get("mirror") or {}).get("host"))
    return primary, canary_weight, mirrored


def read_weights(vs: Mapping[str, Any], canary: Canary) -> Weights:
    """The split a VirtualService carries: Flagger's ``GetRoutes``, pure.

    Weights come from the route that sends to ``<svc>-canary`` (the tcp route for a tcp
    service); ``mirrored`` is whether that route mirrors to anything. Raises RouterError when
    neither side has weight (Flagger's "does not contain routes for ...") and when the two do
    not add up to 100, which only a hand edit can cause.
    """
    apex = canary.get_service_names().apex
    primary, canary_weight, mirrored = _split(vs, canary, tcp=is_tcp(canary))
    if primary == 0 and canary_weight == 0:
        raise RouterError(f"VirtualService {canary.namespace}/{apex} does not contain routes "
                          f"for {apex}-primary and {apex}-canary")
    try:
        return Weights(primary=primary, canary=canary_weight, mirrored=mirrored)
    except ValueError as exc:
        raise RouterError(f"VirtualService {canary.namespace}/{apex}: {exc}") from exc


def kept_weights(vs: Mapping[str, Any] | None, canary: Canary) -> Weights:
    """The split to keep when reconciling: what ``vs`` routes now, else all to the primary.

    The route of the other protocol is read too, so switching ``appProtocol`` mid-run keeps
    the split; a user's VirtualService being taken over starts at 100/0.
    """
    if vs is None:
        return Weights.all_primary()
    tcp = is_tcp(canary)
    for protocol in (tcp, not tcp):
        primary, canary_weight, mirrored = _split(vs, canary, tcp=protocol)
        if primary or canary_weight:
            try:
                return Weights(primary=primary, canary=canary_weight, mirrored=mirrored)
            except ValueError:
                break
    return Weights.all_primary()


def restored_virtual_service(vs: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A taken-over VirtualService with the user's spec back; None if none was recorded. Pure.

    kubectl's last-applied manifest wins (its ``spec``), then
    ``flagger.kubernetes.io/original-configuration`` (a spec). Only the spec changes: the
    annotations stay, so a Canary created again later still knows the original.
    Raises RouterError if the recorded configuration is not a JSON object.
    """
    if vs is None:
        return None
    meta = vs.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    label = f"VirtualService {meta.get('namespace')}/{meta.get('name')}"
    if KUBECTL_LAST_APPLIED in annotations:
        key, stored = KUBECTL_LAST_APPLIED, _json_object(annotations[KUBECTL_LAST_APPLIED])
        spec = stored.get("spec") if stored is not None else None
    elif ORIGINAL_CONFIGURATION in annotations:
        key, stored = ORIGINAL_CONFIGURATION, _json_object(annotations[ORIGINAL_CONFIGURATION])
        spec = stored
    else:
        return None
    if stored is None or not isinstance(spec, Mapping):
        raise RouterError(f"{label}: annotation {key} does not hold a VirtualService spec")
    result = copy.deepcopy(dict(vs))
    result["spec"] = copy.deepcopy(dict(spec))
    return result


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# -- the router ---------------------------------------------------------------------------------


class IstioRouter:
    """Routes a canary with Istio DestinationRules and a VirtualService (spec §3.2).

    Built once per canary by the core (``IstioRouter(ctx=..., variant="")``). It keeps no
    state of its own: weights live in the VirtualService, cookies in the Canary status, and
    both are read through the object store, which shows our own writes at once.
    """

    capabilities: ClassVar[Capabilities] = Capabilities()
    """Weighted, with A/B matches, mirroring, session affinity and the three Services."""

    def __init__(self, *, ctx: ProviderContext, variant: str = "") -> None:
        if variant:
            raise PluginError(f"the istio router takes no variant, got 'istio:{variant}'")
        self._ctx = ctx
        self._log = ctx.log
        self._store = ctx.routing_store

    # -- the Router contract --------------------------------------------------------------------

    async def reconcile(self, canary: Canary) -> None:
        """Creates or updates the two DestinationRules and the VirtualService.

        The VirtualService keeps the weights, mirror and sticky routes it carries: only what
        the spec changed is written, and nothing at all if nothing changed.
        """
        names = canary.get_service_names()
        owners = self._ctx.set_owner_refs
        for role in ("canary", "primary"):
            desired = build_destination_rule(canary, role, set_owner_refs=owners)
            await self._store.apply(DESTINATION_RULES, namespace=canary.namespace,
                                    name=getattr(names, role), build=_spec_of(desired))
        cookies = await self._cookies(canary)
        interval = self._interval(canary)
        await self._store.apply(
            VIRTUAL_SERVICES, namespace=canary.namespace, name=names.apex,
            build=lambda current: build_virtual_service(
                canary, kept_weights(current, canary), existing=current, status=cookies,
                interval=interval, set_owner_refs=owners))

    async def set_routes(self, canary: Canary, weights: Weights) -> None:
        """Routes ``weights`` (and the mirror), keeping the session-affinity cookies in step.

        New cookies are stored in the Canary status before the VirtualService hands them out,
        so a failure in between never publishes a cookie the next call would not route.
        """
        current = await self._cookies(canary)
        cookies = next_session_cookies(canary, weights, current=current)
        if cookies != current:
            await self._store_cookies(canary, cookies)
        owners = self._ctx.set_owner_refs
        interval = self._interval(canary)
        applied = await self._store.apply(
            VIRTUAL_SERVICES, namespace=canary.namespace, name=canary.get_service_names().apex,
            build=lambda existing: build_virtual_service(
                canary, weights, existing=existing, status=cookies, interval=interval,
                set_owner_refs=owners))
        if applied.result is not kube.OperationResult.UNCHANGED:
            self._log.info("routes_set", router="istio", canary=_flagger_name(canary),
                           primary=weights.primary, canary_weight=weights.canary,
                           mirrored=weights.mirrored)

    async def get_routes(self, canary: Canary) -> Weights:
        """The split the VirtualService carries now (see :func:`read_weights`)."""
        apex = canary.get_service_names().apex
        vs = await self._store.get(VIRTUAL_SERVICES, namespace=canary.namespace, name=apex)
        if vs is None:
            raise RouterError(f"VirtualService {canary.namespace}/{apex} not found")
        return read_weights(vs, canary)

    async def finalize(self, canary: Canary) -> None:
        """Gives a taken-over VirtualService its original spec back (``revertOnDeletion``).

        A VirtualService with no recorded configuration is left alone (Flagger logs the same
        warning; for one the Canary created, which the garbage collector removes, there is
        nothing to warn about); one that is gone has nothing to revert.
        """
        apex = canary.get_service_names().apex
        vs = await self._store.get(VIRTUAL_SERVICES, namespace=canary.namespace, name=apex)
        if vs is None:
            self._log.info("virtual_service_finalize_skipped", canary=_flagger_name(canary),
                           reason="not_found")
            return
        if restored_virtual_service(vs) is None:
            if _owned(vs, canary):
                # Ours: the garbage collector deletes it with the Canary; nothing to give back.
                self._log.debug("virtual_service_finalize_skipped",
                                canary=_flagger_name(canary), reason="owned")
            else:
                self._log.warning("virtual_service_original_configuration_not_found",
                                  canary=_flagger_name(canary), name=apex)
            return
        applied = await self._store.apply(VIRTUAL_SERVICES, namespace=canary.namespace,
                                          name=apex, build=restored_virtual_service)
        if applied.result is kube.OperationResult.UPDATED:
            self._log.info("virtual_service_restored", canary=_flagger_name(canary), name=apex)

    # -- helpers --------------------------------------------------------------------------------

    def _interval(self, canary: Canary) -> float:
        return canary.get_analysis_interval(
            minimum=self._ctx.settings.controller.min_analysis_interval)

    async def _cookies(self, canary: Canary) -> SessionCookies:
        return await read_cookies(self._ctx.store, canary)

    async def _store_cookies(self, canary: Canary, cookies: SessionCookies) -> None:
        await store_cookies(self._ctx.store, canary, cookies, log=self._log)


def _spec_of(desired: dict[str, Any]) -> kube.Build:
    """The DestinationRule rule: create ``desired``, or give the existing rule its spec."""
    def build(current: Mapping[str, Any] | None) -> dict[str, Any]:
        return desired if current is None else kube.with_spec(current, desired)
    return build


def _owned(obj: Mapping[str, Any], canary: Canary) -> bool:
    """Whether this Canary created ``obj`` (a user's VirtualService taken over is not ours)."""
    return kube.is_controlled_by(obj, kind="Canary", name=canary.name)


def _flagger_name(canary: Canary) -> str:
    return f"{canary.name}.{canary.namespace}"


_factory: RouterFactory = IstioRouter
_: type[Router] = IstioRouter


# --- builtin metrics ----------------------------------------------------------------------------
# Istio's request-success-rate and request-duration (Flagger's pkg/metrics/observers/istio.go,
# spec §4.3), registered as the ``istio`` observer. It is also the observer of every provider
# string no observer is registered for, as in Flagger (the registry logs that fallback).


class IstioObserver(PrometheusObserver):
    """Istio: ``istio_requests_total`` and ``istio_request_duration_milliseconds``, server side."""

    mesh = "istio"
    _selector = ('reporter="destination",destination_workload_namespace="{{ namespace }}",'
                 'destination_workload=~"{{ target }}"')
    success_rate_query = ratio("istio_requests_total", _selector, 'response_code!~"5.*"')
    duration_query = p99("istio_request_duration_milliseconds_bucket", _selector)
    compares_with_primary = True  # destination_workload is the Deployment's name
