"""Gloo Edge RouteTable routing (``gateway.solo.io/v1``), as a pure function, and the metrics
Gloo's gateway proxy exports.

Follows Gloo Edge's documented semantics for a RouteTable that a VirtualService delegates to:

- the user's VirtualService (not simulated) sends the application's domain to the RouteTable;
  here a RouteTable ``<name>`` serves the host of the Service ``<name>`` in its namespace
  (``<name>``, ``<name>.<ns>``, ``<name>.<ns>.svc.cluster.local``), which is how Flagger's
  RouteTable ``<svc>`` is reached;
- ``routes[]`` are tried in order; a route applies when one of its ``matchers`` matches (none:
  everything matches). A matcher's path is ``prefix``, ``exact`` or ``regex`` (none: prefix
  ``/``, the path a delegating VirtualService usually hands down); every one of its ``headers``
  must match (``value`` exact, or a whole-value regex with ``regex: true``, or no value: the
  header is present; ``invertMatch`` inverts), every ``queryParameters`` entry likewise, and
  ``methods``, when given, must name the request's method. No route applies: 404 (``NR``);
- ``routeAction.multi.destinations[]`` sends each request to one destination with probability
  ``weight / sum(weights)``; a missing weight is 0 and gets nothing; ``routeAction.single``
  gets everything;
- a destination names an Upstream ``{name, namespace}``. Upstreams are resolved to Services by
  the names Flagger gives the ones it generates, ``<ns>-<svc>-primaryupstream-<port>`` →
  Service ``<svc>-primary`` and ``<ns>-<svc>-canaryupstream-<port>`` → ``<svc>-canary`` in the
  Upstream's namespace, and by Gloo discovery's ``<ns>-<svc>-<port>`` → ``<svc>``; the Upstream
  objects themselves are not read (the simulator watches one routing resource). Any other name
  routes nowhere (503).

:class:`GlooAdapter` is the gateway proxy's Envoy: ``envoy_cluster_upstream_rq`` and
``envoy_cluster_upstream_rq_time`` labelled with ``envoy_cluster_name``, which Gloo sets to
``<upstream>_<upstream namespace>``, the series Flagger's gloo observer reads.

Nothing here does I/O; randomness comes from the ``random.Random`` passed in.
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection, Mapping
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry, Gauge, Histogram

from e2e.simulator.metrics import ENVOY_BUCKETS, Exchange
from e2e.simulator.routing import Destination, Request, RouteDecision, ServiceKey, service_key
from e2e.simulator.sources import Lookup
from flaggerpy import kube

__all__ = ["ROUTE_TABLES", "GlooAdapter", "GlooSource", "cluster_name", "route_table",
           "upstream_service"]

ROUTE_TABLES = kube.Resource("gateway.solo.io", "v1", "routetables", "RouteTable")
"""Gloo Edge's RouteTable at the version Flagger writes."""

_FLAGGER_UPSTREAM = re.compile(r"^(?P<svc>.+)-(?P<role>primary|canary)upstream-(?P<port>\d+)$")
_DISCOVERED_UPSTREAM = re.compile(r"^(?P<svc>.+)-(?P<port>\d+)$")


def upstream_service(name: str, namespace: str) -> ServiceKey | None:
    """The Service an Upstream named ``name`` in ``namespace`` points at (see the module)."""
    prefix = f"{namespace}-"
    if not name.startswith(prefix):
        return None
    rest = name[len(prefix):]
    flagger = _FLAGGER_UPSTREAM.match(rest)
    if flagger:
        return ServiceKey(namespace, f"{flagger['svc']}-{flagger['role']}")
    discovered = _DISCOVERED_UPSTREAM.match(rest)
    return ServiceKey(namespace, discovered["svc"]) if discovered else None


def cluster_name(service: ServiceKey, port: int | None) -> str:
    """Gloo's Envoy cluster for the Upstream of ``service``: ``<upstream>_<namespace>``, the
    inverse of :func:`upstream_service`."""
    ns, name, number = service.namespace, service.name, port if port is not None else 80
    for role in ("primary", "canary"):
        if name.endswith(f"-{role}"):
            return f"{ns}-{name[: -len(role) - 1]}-{role}upstream-{number}_{ns}"
    return f"{ns}-{name}-{number}_{ns}"


def _value_matches(condition: Mapping[str, Any], actual: str | None) -> bool:
    if actual is None:
        found = False
    elif condition.get("value") in (None, ""):
        found = True
    elif condition.get("regex"):
        found = re.fullmatch(str(condition["value"]), actual) is not None
    else:
        found = actual == str(condition["value"])
    return found != bool(condition.get("invertMatch"))


def _path_matches(matcher: Mapping[str, Any], path: str) -> bool:
    path = path.partition("?")[0]
    sensitive = matcher.get("caseSensitive", True) is not False
    if not sensitive:
        path = path.lower()

    def fold(value: Any) -> str:
        return str(value) if sensitive else str(value).lower()

    if matcher.get("exact") is not None:
        return path == fold(matcher["exact"])
    if matcher.get("regex") is not None:
        return re.fullmatch(fold(matcher["regex"]), path) is not None
    return path.startswith(fold(matcher.get("prefix") or "/"))


def _query(request: Request) -> dict[str, str]:
    _, _, query = request.path.partition("?")
    pairs = (part.partition("=") for part in query.split("&") if part)
    return {name: value for name, _, value in pairs}


def _matches(matcher: Mapping[str, Any], request: Request) -> bool:
    if not _path_matches(matcher, request.path):
        return False
    if any(not _value_matches(h, request.header(str(h.get("name") or "")))
           for h in matcher.get("headers") or []):
        return False
    query = _query(request)
    if any(not _value_matches(q, query.get(str(q.get("name") or "")))
           for q in matcher.get("queryParameters") or []):
        return False
    methods = matcher.get("methods") or []
    return not methods or request.method.upper() in {str(m).upper() for m in methods}


def _destination(entry: Mapping[str, Any]) -> Destination | None:
    upstream = entry.get("upstream") or {}
    key = upstream_service(str(upstream.get("name") or ""), str(upstream.get("namespace") or ""))
    return Destination(host=key.fqdn, weight=1) if key is not None else None


def route_table(spec: Mapping[str, Any], request: Request,
                rng: random.Random) -> RouteDecision | None:
    """One request through a RouteTable ``spec``: the first route that matches, one of its
    destinations drawn by weight; None when no route matches (404 ``NR``)."""
    for index, route in enumerate(spec.get("routes") or []):
        matchers = route.get("matchers") or [{}]
        if not any(_matches(m, request) for m in matchers):
            continue
        action = route.get("routeAction") or {}
        chosen: Destination | None = None
        if action.get("single"):
            chosen = _destination(action["single"])
        else:
            weighted = [(d.get("destination") or {}, int(d.get("weight") or 0))
                        for d in (action.get("multi") or {}).get("destinations") or []]
            weighted = [(d, w) for d, w in weighted if w > 0]
            if weighted:
                picked = rng.choices([d for d, _ in weighted], weights=[w for _, w in weighted])
                chosen = _destination(picked[0])
        return RouteDecision(rule_index=index, rule_name=str(route.get("name") or ""),
                             destination=chosen)
    return None


class GlooSource:
    """RouteTables, read as Gloo's gateway serves the VirtualService that delegates to them."""

    name: ClassVar[str] = "gloo"
    resource: ClassVar[kube.Resource] = ROUTE_TABLES

    def claims(self, obj: Mapping[str, Any], host: str, *, namespace: str,
               namespaces: Collection[str]) -> bool:
        metadata = obj.get("metadata") or {}
        wanted = service_key(host, namespace=namespace, namespaces=namespaces)
        return wanted == ServiceKey(str(metadata.get("namespace") or ""),
                                    str(metadata.get("name") or ""))

    def stream_host(self, obj: Mapping[str, Any]) -> str | None:
        """``<name>.<namespace>``: the application's host the RouteTable serves."""
        metadata = obj.get("metadata") or {}
        return f"{metadata.get('name')}.{metadata.get('namespace')}"

    def route(self, obj: Mapping[str, Any], request: Request, rng: random.Random, *,
              lookup: Lookup) -> RouteDecision | None:
        return route_table(obj.get("spec") or {}, request, rng)


class GlooAdapter:
    """The Gloo gateway proxy's Envoy cluster stats, as Gloo's Prometheus scrape labels them.

    Each request a pod of a Service received is counted on the cluster of that Service's
    Upstream (:func:`cluster_name`); a request Envoy answered itself (no route, no healthy
    endpoint) never went upstream and is not. ``envoy_cluster_upstream_rq`` is a gauge only
    because the client library would append ``_total`` to a counter's name, which Envoy's does
    not have; it only ever increases.
    """

    name: ClassVar[str] = "gloo"
    LABELS: ClassVar[tuple[str, ...]] = ("gloo", "envoy_cluster_name", "envoy_response_code")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Gauge(
            "envoy_cluster_upstream_rq", "Upstream requests by response code (Envoy counter).",
            self.LABELS, registry=registry)
        self.time = Histogram(
            "envoy_cluster_upstream_rq_time", "Upstream request time in milliseconds.",
            self.LABELS[:-1], buckets=ENVOY_BUCKETS, registry=registry)

    def observe(self, exchange: Exchange) -> None:
        if exchange.service is None or exchange.destination is None or exchange.mirrored:
            return  # no upstream request: Envoy answered itself (no route, no healthy host)
        labels = {"gloo": "gateway-proxy",
                  "envoy_cluster_name": cluster_name(exchange.service, exchange.service_port)}
        self.requests.labels(**labels, envoy_response_code=str(exchange.response_code)).inc()
        self.time.labels(**labels).observe(exchange.duration_ms)
