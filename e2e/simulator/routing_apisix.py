"""APISIX ApisixRoute routing (``apisix.apache.org/v2``), as pure functions, and APISIX's metrics.

Follows the documented semantics of the APISIX Ingress controller's ApisixRoute and of APISIX's
router and ``prometheus`` plugin:

- each ``spec.http[]`` entry is one APISIX route, named ``<namespace>_<ApisixRoute>_<http name>``
  by the ingress controller; it matches a request when every predicate it has holds:
  ``match.hosts`` (exact, or ``*.`` for one leading label), ``match.paths`` (exact, or a prefix
  with a trailing ``*``), ``match.methods``, and ``match.exprs`` (header, query, path and cookie
  subjects with the ``Equal``, ``NotEqual``, ``In``, ``NotIn``, ``RegexMatch`` and
  ``RegexNotMatch`` operators; any other operator never matches);
- of the routes that match, the one with the highest ``priority`` wins (default 0; ties go to
  the first), across ApisixRoute objects too: :meth:`ApisixSource.rank` tells the world which of
  the objects that claim a host holds the highest-priority route for it;
- ``backends[]`` are Services of the route's namespace; each request goes to one of them with
  probability ``weight / sum(weights)`` (APISIX's ``traffic-split``; an unset weight is the
  controller's default, 100); weight 0 gets nothing, and no weight at all answers 503;
- the ``prometheus`` plugin counts each request in ``apisix_http_status`` (labels ``code``,
  ``route``, ``matched_uri``, ``matched_host``, ``service``, ``consumer``, ``node``) and its
  time in ``apisix_http_latency`` (milliseconds, labels ``type``, ``route``, ``service``,
  ``consumer``, ``node``; ``type`` is ``request``, ``upstream`` or ``apisix``), with the route
  label the route's name (``prefer_name``) and ``node`` the upstream node that answered.

The simulated pods have no addresses of their own, so ``node`` carries the answering pod's name
(:func:`~e2e.simulator.metrics.pod_name`) where APISIX writes its IP, and ``matched_uri`` and
``matched_host`` (the matched patterns) are empty: an exchange does not carry them. A route without
``match.hosts`` claims no host here (it would take every host, the in-cluster Services' too):
ApisixRoutes the simulator routes must name their hosts. ``remoteAddrs`` are not compared.
Nothing here does I/O; randomness comes from the ``random.Random`` passed in.
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection, Mapping
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry, Gauge, Histogram

from e2e.simulator.metrics import Exchange, pod_name
from e2e.simulator.routing import Destination, Request, RouteDecision, ServiceKey
from e2e.simulator.sources import Lookup, object_key
from flaggerpy import kube

__all__ = ["APISIX_LATENCY_BUCKETS", "APISIX_ROUTES", "DEFAULT_WEIGHT", "ApisixAdapter",
           "ApisixSource", "host_matches", "http_matches", "path_matches", "route_name",
           "route_request"]

APISIX_ROUTES = kube.Resource("apisix.apache.org", "v2", "apisixroutes", "ApisixRoute")
"""APISIX's ApisixRoute, at the version Flagger writes."""

DEFAULT_WEIGHT = 100
"""The APISIX Ingress controller's weight for a backend that sets none."""

APISIX_LATENCY_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000,
                          60000)
"""APISIX's default buckets for ``apisix_http_latency`` (ms)."""


def route_name(namespace: str, obj_name: str, http_name: str) -> str:
    """The APISIX route name the ingress controller gives one ``spec.http[]`` entry."""
    return f"{namespace}_{obj_name}_{http_name}"


def _strip_port(host: str) -> str:
    name, sep, port = host.strip().lower().rstrip(".").rpartition(":")
    return name if sep and port.isdigit() else host.strip().lower().rstrip(".")


def host_matches(pattern: str, host: str) -> bool:
    """An exact host, or ``*.example.com`` for any one label in front of ``example.com``."""
    pattern, host = pattern.strip().lower(), _strip_port(host)
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host


def path_matches(pattern: str, path: str) -> bool:
    """An exact path, or a prefix ending in ``*`` (``/*`` matches every path)."""
    path = path.partition("?")[0] or "/"
    if pattern.endswith("*"):
        return path.startswith(pattern[:-1])
    return path == pattern


def _subject(request: Request, subject: Mapping[str, Any]) -> str | None:
    scope = str(subject.get("scope") or "")
    name = str(subject.get("name") or "")
    if scope == "Header":
        return request.header(name)
    if scope == "Query":
        for pair in request.path.partition("?")[2].split("&"):
            key, _, value = pair.partition("=")
            if key == name:
                return value
        return None
    if scope == "Path":
        return request.path.partition("?")[0]
    if scope == "Cookie":
        for cookie in (request.header("cookie") or "").split(";"):
            key, _, value = cookie.strip().partition("=")
            if key == name:
                return value
        return None
    return None


def _expr_matches(request: Request, expr: Mapping[str, Any]) -> bool:
    actual = _subject(request, expr.get("subject") or {})
    op = str(expr.get("op") or "")
    value = expr.get("value")
    values = [str(v) for v in expr.get("set") or ()]
    if op == "Equal":
        return actual is not None and actual == value
    if op == "NotEqual":
        return actual != value
    if op == "In":
        return actual is not None and actual in values
    if op == "NotIn":
        return actual not in values
    if op in ("RegexMatch", "RegexNotMatch"):
        found = actual is not None and re.search(str(value or ""), actual) is not None
        return found == (op == "RegexMatch")
    return False


def http_matches(http: Mapping[str, Any], request: Request) -> bool:
    """Whether one ``spec.http[]`` entry matches ``request`` (every predicate it has)."""
    match = http.get("match") or {}
    hosts = match.get("hosts") or []
    if hosts and not any(host_matches(str(h), request.host) for h in hosts):
        return False
    paths = match.get("paths") or []
    if paths and not any(path_matches(str(p), request.path) for p in paths):
        return False
    methods = [str(m).upper() for m in match.get("methods") or []]
    if methods and request.method.upper() not in methods:
        return False
    return all(_expr_matches(request, e) for e in match.get("exprs") or [])


def _priority(http: Mapping[str, Any]) -> int:
    try:
        return int(http.get("priority") or 0)
    except (TypeError, ValueError):
        return 0


def route_request(obj: Mapping[str, Any], request: Request,
                  rng: random.Random) -> RouteDecision | None:
    """One request through an ApisixRoute: the matching http route of highest priority, then a
    backend drawn by relative weight, as its Service's FQDN. None when no http route matches;
    no destination when no backend has weight."""
    key = object_key(obj)
    candidates = [(index, http) for index, http in
                  enumerate((obj.get("spec") or {}).get("http") or [])
                  if isinstance(http, Mapping) and http_matches(http, request)]
    if not candidates:
        return None
    index, http = max(candidates, key=lambda c: (_priority(c[1]), -c[0]))
    weighted: list[tuple[str, int]] = []
    for backend in http.get("backends") or []:
        weight = backend.get("weight")
        weight = DEFAULT_WEIGHT if weight is None else int(weight)
        if weight > 0 and backend.get("serviceName"):
            weighted.append((str(backend["serviceName"]), weight))
    chosen: Destination | None = None
    if weighted:
        service = rng.choices([s for s, _ in weighted], weights=[w for _, w in weighted])[0]
        chosen = Destination(host=ServiceKey(key.namespace, service).fqdn, weight=1)
    return RouteDecision(rule_index=index, rule_name=str(http.get("name") or ""),
                         destination=chosen)


class ApisixSource:
    """ApisixRoutes, read as the APISIX Ingress controller turns them into APISIX routes."""

    name: ClassVar[str] = "apisix"
    resource: ClassVar[kube.Resource] = APISIX_ROUTES

    @staticmethod
    def _for_host(obj: Mapping[str, Any], host: str) -> list[Mapping[str, Any]]:
        found = []
        for http in (obj.get("spec") or {}).get("http") or []:
            if not isinstance(http, Mapping):
                continue
            hosts = (http.get("match") or {}).get("hosts") or []
            if any(host_matches(str(h), host) for h in hosts):
                found.append(http)
        return found

    def claims(self, obj: Mapping[str, Any], host: str, *, namespace: str,
               namespaces: Collection[str]) -> bool:
        """Whether one of its http routes names ``host`` (APISIX serves every caller)."""
        return bool(self._for_host(obj, host))

    def rank(self, obj: Mapping[str, Any], host: str) -> int:
        """Lower first: minus the highest priority of its http routes for ``host``."""
        return -max((_priority(http) for http in self._for_host(obj, host)), default=0)

    def stream_host(self, obj: Mapping[str, Any]) -> str | None:
        """The first concrete host of its http routes (not a wildcard)."""
        for http in (obj.get("spec") or {}).get("http") or []:
            for host in (http.get("match") or {}).get("hosts") or []:
                if host and "*" not in str(host):
                    return str(host)
        return None

    def route(self, obj: Mapping[str, Any], request: Request, rng: random.Random, *,
              lookup: Lookup) -> RouteDecision | None:
        return route_request(obj, request, rng)


class ApisixAdapter:
    """APISIX's ``prometheus`` plugin: what the gateway saw of each request it routed.

    Only requests an ApisixRoute routed are APISIX's (``Exchange.routed_by``); their ``route``
    label is ``<namespace>_<ApisixRoute>_<http name>``, which is how Flagger's apisix queries
    find the canary route's requests. ``apisix_http_status`` is a gauge here only because the
    client library would append ``_total`` to a counter's name, which APISIX's does not have;
    it only ever increases.
    """

    name: ClassVar[str] = "apisix"
    STATUS_LABELS: ClassVar[tuple[str, ...]] = (
        "code", "route", "matched_uri", "matched_host", "service", "consumer", "node")
    LATENCY_LABELS: ClassVar[tuple[str, ...]] = ("type", "route", "service", "consumer", "node")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.status = Gauge("apisix_http_status", "HTTP status codes per service in APISIX",
                            self.STATUS_LABELS, registry=registry)
        self.latency = Histogram("apisix_http_latency", "HTTP request latency in milliseconds",
                                 self.LATENCY_LABELS, buckets=APISIX_LATENCY_BUCKETS,
                                 registry=registry)

    def observe(self, exchange: Exchange) -> None:
        routed = exchange.routed_by
        if routed is None or exchange.mirrored:
            return
        route = route_name(routed.namespace, routed.name, exchange.rule)
        node = pod_name(exchange.destination) if exchange.destination is not None else ""
        self.status.labels(code=str(exchange.response_code), route=route,
                           matched_uri="", matched_host="",
                           service="", consumer="", node=node).inc()
        for kind, value in (("request", exchange.duration_ms), ("upstream", exchange.duration_ms),
                            ("apisix", 0.0)):
            self.latency.labels(type=kind, route=route, service="", consumer="",
                                node=node).observe(value)
