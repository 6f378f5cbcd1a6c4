"""The ``gatewayapi:v1`` and ``gatewayapi:v1beta1`` provider: Flagger's Gateway API router and
its builtin metrics (``pkg/router/gateway_api.go``, ``gateway_api_v1beta1.go``; spec §3).

A canary on Gateway API is routed by one HTTPRoute ``<svc>`` in
``gateway.networking.k8s.io/v1`` (``gatewayapi:v1``) or ``/v1beta1`` (``gatewayapi:v1beta1``):

- ``parentRefs`` are ``service.gatewayRefs``: Gateways (north-south) or, for GAMMA east-west
  routing, a core Service (``{group: core, kind: Service}``, as Flagger's Linkerd set-up does);
- ``hostnames`` are ``service.hosts``;
- one weighted rule: the mapped ``service.match`` (default ``PathPrefix /``), the filters
  (RequestHeaderModifier, ResponseHeaderModifier, URLRewrite, the ``service.mirror``
  RequestMirrors, CORS, in Flagger's order), ``timeouts`` (``service.timeout`` /
  ``service.backendTimeout``) and two backendRefs, ``<svc>-primary`` and ``<svc>-canary``;
- A/B testing: the weighted rule matches ``analysis.match`` merged into the service matches, and
  a second rule sends the rest to the primary;
- mirroring: a RequestMirror filter to ``<svc>-canary`` on the weighted rule (with
  ``mirrorWeight`` as its ``percent``);
- session affinity: a rule matching the canary cookie (Cookie header regex) sends to the canary,
  the weighted rule's canary backend hands the cookie out (``Set-Cookie`` response filter); on
  ``gatewayapi:v1`` a primary cookie does the same for the primary when ``primaryCookieName`` is
  set (``gatewayapi:v1beta1`` ignores it, as Flagger's v1beta1 router does). At weight 0 the
  cookie becomes the previous one, which a rule answers with ``Max-Age=-1``.

As every mesh router, it is pure builders (:func:`build_http_route`, :func:`read_weights`,
:func:`next_session_cookies`, :func:`route_not_ready`) and one apply path through the object
store (``ProviderContext.routing_store``). ``reconcile`` builds with the weights, mirror and
cookies the route already carries, so it never resets a split in flight and writes nothing when
nothing changed.

Flagger's Gateway API routers revert nothing on deletion (``Finalize`` is a no-op): the route
goes with the Canary through its ownerReference, and a user's HTTPRoute of the same name is
updated in place and left as it is. Where flaggerpy differs from Flagger is listed in
``docs/compatibility.md`` under "Gateway API router differences from Flagger".

The module ends with :class:`GatewayAPIObserver`: Gateway API defines no metrics of its own, so
Flagger answers ``request-success-rate`` and ``request-duration`` for ``gatewayapi:<version>``
with its "http" observer (``pkg/metrics/observers/http.go``), the ``http_request_duration_seconds``
histogram podinfo-style applications export.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Final

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
from flaggerpy.errors import PluginError, RouterError
from flaggerpy.models.canary import AnalysisMatch, Canary, CanaryService, SessionAffinity
from flaggerpy.models.durations import parse_duration
from flaggerpy.models.istio import HTTPMatchRequest, RewriteType, StringMatch
from flaggerpy.observing import HttpObserver
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
    "GROUP",
    "VERSIONS",
    "GatewayAPIObserver",
    "GatewayAPIRouter",
    "build_http_route",
    "http_routes",
    "kept_weights",
    "map_matches",
    "next_session_cookies",
    "read_weights",
    "route_not_ready",
]

GROUP: Final = "gateway.networking.k8s.io"
VERSIONS: Final = ("v1", "v1beta1")
"""The provider variants: the HTTPRoute API version each one writes."""

_DEFAULT_MATCH: Final = {"path": {"type": "PathPrefix", "value": "/"}}


def http_routes(version: str) -> kube.Resource:
    """The HTTPRoute resource in ``version`` (``v1`` or ``v1beta1``)."""
    return kube.Resource(GROUP, version, "httproutes", "HTTPRoute")


# -- session affinity: which cookies this HTTPRoute routes by -----------------------------


def _sticky(canary: Canary) -> SessionAffinity | None:
    """The session-affinity settings when they shape the route (not for A/B testing)."""
    affinity = canary.spec.analysis.session_affinity
    if affinity is None or canary.spec.analysis.match:
        return None
    return affinity


def _primary_cookie_name(affinity: SessionAffinity, version: str) -> str:
    # Flagger's v1beta1 router has no primary cookie.
    return (affinity.primary_cookie_name or "") if version == "v1" else ""


def next_session_cookies(
        canary: Canary,
        weights: Weights,
        *,
        current: SessionCookies,
        version: str = "v1",
        token: Callable[[], str] = random_cookie_value,
) -> SessionCookies:
    """The cookies after routing ``weights`` (``flaggerpy.affinity.next_session_cookies``). Pure.

    The HTTPRoute routes by cookies unless the canary is A/B; it hands out the primary cookie
    on ``v1`` only, when ``primaryCookieName`` is set.
    """
    affinity = _sticky(canary)
    return affinity_cookies(
        affinity, weights, current=current,
        primary_cookie_name=_primary_cookie_name(affinity, version) if affinity else "",
        token=token)


def _set_cookie_filter(value: str) -> dict[str, Any]:
    return {"type": "ResponseHeaderModifier",
            "responseHeaderModifier": {"add": [{"name": SET_COOKIE_HEADER, "value": value}]}}


def _with_set_cookie(filters: Sequence[Mapping[str, Any]], value: str) -> list[dict[str, Any]]:
    """``filters`` that also add ``Set-Cookie: value`` to the response.

    Into the rule's ResponseHeaderModifier when ``service.headers.response`` made one: the CRD
    allows one filter of each type per rule (Flagger appends a second one, which is refused).
    """
    result = [copy.deepcopy(dict(f)) for f in filters]
    header = {"name": SET_COOKIE_HEADER, "value": value}
    for existing in result:
        if existing.get("type") == "ResponseHeaderModifier":
            existing["responseHeaderModifier"].setdefault("add", []).append(header)
            return result
    result.append(_set_cookie_filter(value))
    return result


def _cookie_match(cookie: str) -> dict[str, Any]:
    return {"headers": [{"name": COOKIE_HEADER, "type": "RegularExpression",
                         "value": cookie_regex(cookie)}]}


# -- matches ------------------------------------------------------------------------------------


def _path(uri: StringMatch) -> dict[str, Any]:
    if uri.regex:
        return {"type": "RegularExpression", "value": uri.regex}
    if uri.exact:
        return {"type": "Exact", "value": uri.exact}
    if uri.prefix:
        return {"type": "PathPrefix", "value": uri.prefix}
    raise RouterError(f"Gateway API doesn't support the specified path matching selector: "
                      f"{uri.to_dict()}")


def _value_matches(what: str, values: Mapping[str, StringMatch] | None) -> list[dict[str, Any]]:
    """Header or query parameter conditions: exact or regex, by name (Flagger: map order)."""
    result = []
    for name, value in sorted((values or {}).items()):
        if value.exact:
            result.append({"name": name, "type": "Exact", "value": value.exact})
        elif value.regex:
            result.append({"name": name, "type": "RegularExpression", "value": value.regex})
        else:
            raise RouterError(f"Gateway API doesn't support the specified {what} matching "
                              f"selector: {name}: {value.to_dict()}")
    return result


def map_matches(matches: Iterable[HTTPMatchRequest]) -> list[dict[str, Any]]:
    """``service.match`` as HTTPRoute matches: Flagger's ``mapRouteMatches``. Pure.

    uri regex / exact / prefix become RegularExpression / Exact / PathPrefix paths, method
    ``exact`` the method, headers and query parameters Exact or RegularExpression conditions;
    anything else raises RouterError. A condition that maps to nothing is dropped.
    """
    result = []
    for request in matches:
        match: dict[str, Any] = {}
        if request.uri is not None:
            match["path"] = _path(request.uri)
        if request.method is not None:
            if not request.method.exact:
                raise RouterError("Gateway API doesn't support the specified method matching "
                                  f"selector: {request.method.to_dict()}")
            match["method"] = request.method.exact
        headers = _value_matches("header", request.headers)
        if headers:
            match["headers"] = headers
        query = _value_matches("query", request.query_params)
        if query:
            match["queryParams"] = query
        if match:
            result.append(match)
    return result


def _analysis_matches(conditions: Iterable[AnalysisMatch]) -> list[dict[str, Any]]:
    """``analysis.match`` as HTTPRoute matches (headers and query parameters).

    A header's ``prefix`` or ``suffix`` (which Flagger's CRD allows and its Gateway API router
    cannot map) becomes the equivalent RegularExpression.
    """
    result = []
    for condition in conditions:
        headers = []
        for name, header in sorted((condition.headers or {}).items()):
            if header.exact:
                headers.append({"name": name, "type": "Exact", "value": header.exact})
            elif header.regex:
                headers.append({"name": name, "type": "RegularExpression",
                                "value": header.regex})
            elif header.prefix:
                headers.append({"name": name, "type": "RegularExpression",
                                "value": f"^{re.escape(header.prefix)}.*"})
            elif header.suffix:
                headers.append({"name": name, "type": "RegularExpression",
                                "value": f".*{re.escape(header.suffix)}$"})
        match: dict[str, Any] = {}
        if headers:
            match["headers"] = headers
        query = _value_matches("query", condition.query_params)
        if query:
            match["queryParams"] = query
        if match:
            result.append(match)
    return result


def _merge_matches(
        conditions: Sequence[Mapping[str, Any]], service: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Flagger's ``mergeMatchConditions``: each condition's headers and query parameters laid
    over each service match."""
    if not conditions:
        return [copy.deepcopy(dict(s)) for s in service]
    if not service:
        return [copy.deepcopy(dict(c)) for c in conditions]
    merged = []
    for condition in conditions:
        for match in service:
            entry = copy.deepcopy(dict(match))
            for field in ("headers", "queryParams"):
                if condition.get(field):
                    entry[field] = copy.deepcopy(condition[field])
            merged.append(entry)
    return merged


# -- filters ------------------------------------------------------------------------------------


def _header_filter(operations: Any) -> dict[str, Any]:
    modifier: dict[str, Any] = {}
    for field in ("add", "set"):
        values = getattr(operations, field) or {}
        if values:
            modifier[field] = [{"name": k, "value": v}
                               for k, v in sorted(values.items(), key=lambda kv: kv)]
    if operations.remove:
        modifier["remove"] = list(operations.remove)
    return modifier


def _rewrite_filter(service: CanaryService) -> dict[str, Any]:
    rewrite = service.rewrite
    assert rewrite is not None
    result: dict[str, Any] = {}
    if rewrite.authority:
        result["hostname"] = rewrite.authority
    if rewrite.uri:
        kind = rewrite.get_type()
        key = ("replaceFullPath" if kind == RewriteType.REPLACE_FULL_PATH
               else "replacePrefixMatch")
        result["path"] = {"type": str(kind), key: rewrite.uri}
    return {"type": "URLRewrite", "urlRewrite": result}


def _backend_object(ref: Any) -> dict[str, Any]:
    return {k: v for k, v in (("group", ref.group), ("kind", ref.kind),
                              ("namespace", ref.namespace), ("name", ref.name),
                              ("port", ref.port)) if v is not None}


def _cors_filter(service: CanaryService) -> dict[str, Any] | None:
    """The CORS filter from ``corsPolicy``: only the ``allowOrigin`` strings are origins (the
    ``allowOrigins`` matches have no Gateway API form), ``maxAge`` in seconds."""
    policy = service.cors_policy
    if policy is None:
        return None
    cors: dict[str, Any] = {}
    if policy.allow_credentials is not None:
        cors["allowCredentials"] = policy.allow_credentials
    for field, values in (("allowHeaders", policy.allow_headers),
                          ("allowMethods", policy.allow_methods),
                          ("allowOrigins", policy.allow_origin),
                          ("exposeHeaders", policy.expose_headers)):
        if values:
            cors[field] = list(values)
    if policy.max_age:
        try:
            cors["maxAge"] = int(parse_duration(policy.max_age))
        except ValueError as exc:
            raise RouterError(f"corsPolicy.maxAge {policy.max_age!r}: {exc}") from exc
    return {"type": "CORS", "cors": cors}


def _filters(service: CanaryService) -> list[dict[str, Any]]:
    """The rule filters, in Flagger's order: request and response headers, URL rewrite, the
    ``service.mirror`` mirrors, CORS."""
    filters: list[dict[str, Any]] = []
    if service.headers is not None:
        if service.headers.request is not None:
            filters.append({"type": "RequestHeaderModifier",
                            "requestHeaderModifier": _header_filter(service.headers.request)})
        if service.headers.response is not None:
            filters.append({"type": "ResponseHeaderModifier",
                            "responseHeaderModifier": _header_filter(service.headers.response)})
    if service.rewrite is not None:
        filters.append(_rewrite_filter(service))
    for mirror in service.mirror or ():
        filters.append({"type": "RequestMirror",
                        "requestMirror": {"backendRef": _backend_object(mirror.backend_ref)}})
    cors = _cors_filter(service)
    if cors is not None:
        filters.append(cors)
    return filters


# -- the route ----------------------------------------------------------------------------------


def _service(canary: Canary) -> CanaryService:
    service = canary.spec.service
    if service is None:
        raise RouterError(f"Canary {canary.namespace}/{canary.name}: spec.service is missing; "
                          "the HTTPRoute needs at least spec.service.port")
    return service


def _parent_refs(service: CanaryService) -> list[dict[str, Any]]:
    refs = []
    for ref in service.gateway_refs or ():
        refs.append({k: v for k, v in (("group", ref.group), ("kind", ref.kind),
                                       ("namespace", ref.namespace), ("name", ref.name),
                                       ("sectionName", ref.section_name), ("port", ref.port))
                     if v is not None})
    return refs


def _backend(name: str, port: int, weight: int) -> dict[str, Any]:
    return {"group": "", "kind": "Service", "name": name, "port": port, "weight": weight}


def _timeouts(service: CanaryService) -> dict[str, Any]:
    timeouts = {k: v for k, v in (("request", service.timeout),
                                  ("backendRequest", service.backend_timeout)) if v}
    return {"timeouts": timeouts} if timeouts else {}


def _rules(
        canary: Canary,
        weights: Weights,
        *,
        cookies: SessionCookies,
        interval: float,
        version: str,
) -> list[dict[str, Any]]:
    service = _service(canary)
    names = canary.get_service_names()
    port = int(service.port)
    matches = map_matches(service.match or ()) or [dict(_DEFAULT_MATCH)]
    filters = _filters(service)

    def rule(rule_matches: list[dict[str, Any]], backends: list[dict[str, Any]],
             rule_filters: list[dict[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {"matches": copy.deepcopy(rule_matches)}
        if rule_filters:
            result["filters"] = copy.deepcopy(rule_filters)
        result["backendRefs"] = backends
        result.update(_timeouts(service))
        return result

    def split(primary: int, canary_weight: int) -> list[dict[str, Any]]:
        return [_backend(names.primary, port, primary), _backend(names.canary, port, canary_weight)]

    weighted_filters = list(filters)
    if weights.mirrored:
        mirror: dict[str, Any] = {"backendRef": {"group": "", "kind": "Service",
                                                 "name": names.canary, "port": port}}
        if canary.spec.analysis.mirror_weight:
            mirror["percent"] = canary.spec.analysis.mirror_weight
        weighted_filters.append({"type": "RequestMirror", "requestMirror": mirror})

    ab = _analysis_matches(canary.spec.analysis.match or ())
    if canary.spec.analysis.match:
        # A/B testing: matching requests are split, the rest stay on the primary.
        return [rule(_merge_matches(ab, matches), split(weights.primary, weights.canary),
                     weighted_filters),
                rule(matches, [_backend(names.primary, port, 100)], filters)]

    weighted = rule(matches, split(weights.primary, weights.canary), weighted_filters)
    affinity = _sticky(canary)
    if affinity is None:
        return [weighted]
    sticky: list[dict[str, Any]] = []
    if weights.canary != 0:
        primary_backend, canary_backend = weighted["backendRefs"]
        if cookies.canary:
            canary_backend["filters"] = [_set_cookie_filter(
                set_cookie_value(affinity, cookies.canary, max_age=affinity.get_max_age()))]
            sticky.append(rule(_merge_matches([_cookie_match(cookies.canary)], matches),
                               split(0, 100), weighted_filters))
        if cookies.primary and _primary_cookie_name(affinity, version):
            primary_backend["filters"] = [_set_cookie_filter(
                set_cookie_value(affinity, cookies.primary, max_age=int(interval)))]
            sticky.append(rule(_merge_matches([_cookie_match(cookies.primary)], matches),
                               split(100, 0), weighted_filters))
    elif cookies.previous:
        # A client still holding the last run's cookie gets the weighted split and is told to
        # drop the cookie.
        expire = _with_set_cookie(weighted_filters, f"{cookies.previous}; Max-Age=-1")
        sticky.append(rule(_merge_matches([_cookie_match(cookies.previous)], matches),
                           split(weights.primary, weights.canary), expire))
    return [*sticky, weighted]


def _metadata(service: CanaryService) -> tuple[dict[str, str], dict[str, str]]:
    apex = service.apex
    labels = dict((apex.labels if apex else None) or {})
    annotations = {**((apex.annotations if apex else None) or {}), **TOOLKIT_ANNOTATIONS}
    return labels, annotations


def build_http_route(
        canary: Canary,
        weights: Weights,
        *,
        version: str = "v1",
        existing: Mapping[str, Any] | None = None,
        cookies: SessionCookies | None = None,
        interval: float | None = None,
        set_owner_refs: bool = True,
) -> dict[str, Any]:
    """The HTTPRoute ``<svc>`` routing ``weights``, as it should be stored. Pure.

    ``existing`` is the route as it is now, if any: the result is then that object with its
    spec, labels and annotations replaced (annotations other controllers added are kept, as
    Flagger 1.44 does), and equal to it when nothing needs writing. ``cookies`` are the
    session-affinity cookies to route by (default: the Canary's status); ``interval`` the
    seconds the primary cookie lives for (default: the analysis interval).
    ownerReferences are set on creation only, never added to a user's route.
    Raises RouterError without ``service.gatewayRefs`` or for a match Gateway API cannot express.
    """
    if version not in VERSIONS:
        raise ValueError(f"unknown HTTPRoute version {version!r}; expected one of {VERSIONS}")
    service = _service(canary)
    names = canary.get_service_names()
    if not service.gateway_refs:
        raise RouterError("GatewayRefs must be specified when using Gateway API as a provider.")
    spec: dict[str, Any] = {"parentRefs": _parent_refs(service)}
    if service.hosts:
        spec["hostnames"] = list(service.hosts)
    spec["rules"] = _rules(
        canary, weights, cookies=cookies if cookies is not None else SessionCookies.of(canary),
        interval=interval if interval is not None else canary.get_analysis_interval(),
        version=version)
    labels, annotations = _metadata(service)

    if existing is None:
        metadata: dict[str, Any] = {"name": names.apex, "namespace": canary.namespace,
                                    "annotations": annotations}
        if labels:
            metadata["labels"] = labels
        if set_owner_refs:
            metadata["ownerReferences"] = [kube.controller_reference(canary_owner(canary))]
        return {"apiVersion": f"{GROUP}/{version}", "kind": "HTTPRoute", "metadata": metadata,
                "spec": spec}

    result = copy.deepcopy(dict(existing))
    meta: dict[str, Any] = result.setdefault("metadata", {})
    have_notes: dict[str, str] = dict(meta.get("annotations") or {})
    annotations = {**have_notes, **annotations}
    if annotations != have_notes:
        meta["annotations"] = annotations
    if labels != dict(meta.get("labels") or {}):
        if labels:
            meta["labels"] = labels
        else:
            meta.pop("labels", None)
    if result.get("spec") != spec:
        result["spec"] = spec
    return result


# -- reading it back ----------------------------------------------------------------------------


def _names(rule: Mapping[str, Any]) -> list[str]:
    return [str(b.get("name") or "") for b in rule.get("backendRefs") or ()]


def _weighted_rule(spec: Mapping[str, Any], canary: Canary) -> Mapping[str, Any] | None:
    """The rule holding the split: Flagger's ``GetRoutes`` choice.

    The last rule with both backends (A/B's primary-only rule is skipped); with session
    affinity, the rule whose backends hand out cookies wins over the sticky rules.
    """
    names = canary.get_service_names()
    chosen: Mapping[str, Any] | None = None
    with_cookies: Mapping[str, Any] | None = None
    for rule in spec.get("rules") or ():
        backends = _names(rule)
        if names.primary in backends and names.canary in backends:
            chosen = rule
            if any(b.get("filters") for b in rule.get("backendRefs") or ()):
                with_cookies = rule
    return with_cookies or chosen


def _mirrored(spec: Mapping[str, Any], canary: Canary) -> bool:
    target = canary.get_service_names().canary
    return any(f.get("type") == "RequestMirror"
               and ((f.get("requestMirror") or {}).get("backendRef") or {}).get("name") == target
               for rule in spec.get("rules") or () for f in rule.get("filters") or ())


def _split(route: Mapping[str, Any], canary: Canary) -> tuple[int, int, bool] | None:
    spec = route.get("spec") or {}
    rule = _weighted_rule(spec, canary)
    if rule is None:
        return None
    names = canary.get_service_names()
    primary = canary_weight = 0
    for backend in rule.get("backendRefs") or ():
        weight = int(backend.get("weight", 1) or 0)
        if backend.get("name") == names.primary:
            primary = weight
        elif backend.get("name") == names.canary:
            canary_weight = weight
    return primary, canary_weight, _mirrored(spec, canary)


def route_not_ready(route: Mapping[str, Any]) -> str:
    """Why a Gateway has not taken the route's current spec yet, or "" when nothing says so.

    Flagger 1.44's ``GetRoutes``: for each parentRef, a status entry for that parent whose
    ``Accepted`` condition is not True, or was observed for an older generation. Without a
    status (no Gateway controller has seen it yet) nothing says so.
    """
    meta = route.get("metadata") or {}
    generation = int(meta.get("generation") or 0)
    parents = (route.get("status") or {}).get("parents") or ()
    for ref in (route.get("spec") or {}).get("parentRefs") or ():
        for parent in parents:
            if parent.get("parentRef") != ref:
                continue
            for condition in parent.get("conditions") or ():
                if condition.get("type") != "Accepted":
                    continue
                observed = int(condition.get("observedGeneration") or 0)
                if condition.get("status") != "True" or observed < generation:
                    return (f"HTTPRoute {meta.get('name')}.{meta.get('namespace')} parent "
                            f"{ref.get('name')} is not ready (status: {condition.get('status')}, "
                            f"observed generation: {observed}, current generation: "
                            f"{generation})")
    return ""


def read_weights(route: Mapping[str, Any], canary: Canary) -> Weights:
    """The split an HTTPRoute carries: Flagger's ``GetRoutes``, pure.

    Raises RouterError when a parent Gateway has not accepted the current generation yet
    (:func:`route_not_ready`), when no rule routes to both ``<svc>-primary`` and
    ``<svc>-canary``, and when the weights do not add up to 100 (only a hand edit does that).
    """
    reason = route_not_ready(route)
    if reason:
        raise RouterError(reason)
    apex = canary.get_service_names().apex
    split = _split(route, canary)
    if split is None:
        raise RouterError(f"HTTPRoute {canary.namespace}/{apex} does not contain routes for "
                          f"{apex}-primary and {apex}-canary")
    primary, canary_weight, mirrored = split
    try:
        return Weights(primary=primary, canary=canary_weight, mirrored=mirrored)
    except ValueError as exc:
        raise RouterError(f"HTTPRoute {canary.namespace}/{apex}: {exc}") from exc


def kept_weights(route: Mapping[str, Any] | None, canary: Canary) -> Weights:
    """The split to keep when reconciling: what ``route`` routes now, else all to the primary."""
    if route is None:
        return Weights.all_primary()
    split = _split(route, canary)
    if split is None:
        return Weights.all_primary()
    primary, canary_weight, mirrored = split
    try:
        return Weights(primary=primary, canary=canary_weight, mirrored=mirrored)
    except ValueError:
        return Weights.all_primary()


# -- the router ---------------------------------------------------------------------------------


class GatewayAPIRouter:
    """Routes a canary with one Gateway API HTTPRoute (spec §3, ``gatewayapi:<version>``).

    Built once per canary by the core (``GatewayAPIRouter(ctx=..., variant="v1")``). It keeps
    no state: the split lives in the HTTPRoute, the cookies in the Canary status, both read
    through the object store, which shows our own writes at once.
    """

    capabilities: ClassVar[Capabilities] = Capabilities()
    """Weighted, with A/B matches, mirroring, session affinity and the three Services."""

    def __init__(self, *, ctx: ProviderContext, variant: str = "") -> None:
        if variant not in VERSIONS:
            raise PluginError(f"the gatewayapi router needs an HTTPRoute version: "
                              f"'gatewayapi:v1' or 'gatewayapi:v1beta1', got "
                              f"'gatewayapi{':' if variant else ''}{variant}'")
        self._ctx = ctx
        self._log = ctx.log
        self._store = ctx.routing_store
        self._version = variant
        self._routes = http_routes(variant)

    # -- the Router contract --------------------------------------------------------------------

    async def reconcile(self, canary: Canary) -> None:
        """Creates the HTTPRoute (all traffic to the primary) or brings it up to date, keeping
        the split, mirror and cookies it carries; writes nothing if nothing changed."""
        cookies = await self._cookies(canary)
        await self._apply(canary, lambda current: build_http_route(
            canary, kept_weights(current, canary), version=self._version, existing=current,
            cookies=cookies, interval=self._interval(canary),
            set_owner_refs=self._ctx.set_owner_refs))

    async def set_routes(self, canary: Canary, weights: Weights) -> None:
        """Routes ``weights`` (and the mirror), keeping the session-affinity cookies in step.

        New cookies are stored in the Canary status before the HTTPRoute hands them out, so a
        failure in between never publishes a cookie the next call would not route.
        """
        current = await self._cookies(canary)
        cookies = next_session_cookies(canary, weights, current=current, version=self._version)
        if cookies != current:
            await self._store_cookies(canary, cookies)
        applied = await self._apply(canary, lambda existing: build_http_route(
            canary, weights, version=self._version, existing=existing, cookies=cookies,
            interval=self._interval(canary), set_owner_refs=self._ctx.set_owner_refs))
        if applied.result is not kube.OperationResult.UNCHANGED:
            self._log.info("routes_set", router=f"gatewayapi:{self._version}",
                           canary=_flagger_name(canary), primary=weights.primary,
                           canary_weight=weights.canary, mirrored=weights.mirrored)

    async def get_routes(self, canary: Canary) -> Weights:
        """The split the HTTPRoute carries now (see :func:`read_weights`)."""
        apex = canary.get_service_names().apex
        try:
            route = await self._store.get(self._routes, namespace=canary.namespace, name=apex)
        except kube.WriteFencedError:
            raise
        except kube.KubeError as exc:
            raise RouterError(f"HTTPRoute {apex}.{canary.namespace} get error: {exc}") from exc
        if route is None:
            raise RouterError(f"HTTPRoute {apex}.{canary.namespace} not found")
        return read_weights(route, canary)

    async def finalize(self, canary: Canary) -> None:
        """Nothing to give back: Flagger's Gateway API routers revert nothing on deletion; the
        route this Canary created goes with it through its ownerReference."""
        self._log.debug("http_route_finalize_skipped", canary=_flagger_name(canary))

    # -- helpers --------------------------------------------------------------------------------

    async def _apply(self, canary: Canary, build: kube.Build) -> kube.Applied:
        apex = canary.get_service_names().apex
        try:
            return await self._store.apply(self._routes, namespace=canary.namespace, name=apex,
                                           build=build)
        except kube.WriteFencedError:
            raise  # this replica is no longer the leader: not a routing failure
        except kube.KubeError as exc:
            raise RouterError(str(exc)) from exc

    def _interval(self, canary: Canary) -> float:
        return canary.get_analysis_interval(
            minimum=self._ctx.settings.controller.min_analysis_interval)

    async def _cookies(self, canary: Canary) -> SessionCookies:
        return await read_cookies(self._ctx.store, canary)

    async def _store_cookies(self, canary: Canary, cookies: SessionCookies) -> None:
        await store_cookies(self._ctx.store, canary, cookies, log=self._log)


def _flagger_name(canary: Canary) -> str:
    return f"{canary.name}.{canary.namespace}"


_factory: RouterFactory = GatewayAPIRouter
_: type[Router] = GatewayAPIRouter


# --- builtin metrics ----------------------------------------------------------------------------


class GatewayAPIObserver(HttpObserver):
    """Gateway API: the application's own ``http_request_duration_seconds`` histogram."""

    mesh = "gatewayapi"
