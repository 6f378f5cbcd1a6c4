"""Contour HTTPProxy routing (``projectcontour.io/v1``), as a pure function, and the metrics
Contour's Envoy exports.

Follows Contour's documented HTTPProxy semantics:

- which requests an HTTPProxy serves: a root proxy's ``virtualhost.fqdn``. Flagger's proxy has
  no virtual host: it is meant to be included by the user's root proxy, which is not simulated;
  here an HTTPProxy ``<name>`` also serves the host of the Service ``<name>`` in its namespace
  (``<name>``, ``<name>.<ns>``, ``<name>.<ns>.svc.cluster.local``), as that include would;
- an HTTPProxy Contour rejects routes nothing (404 ``NR``): a route with more than one
  ``prefix`` condition ("more than one prefix is not allowed in a condition block"), a prefix
  not starting with ``/``, or two ``exact`` header conditions on one header;
- a route's ``conditions`` all apply (AND): the ``prefix`` matches whole path segments (``/api``
  matches ``/api`` and ``/api/x``, not ``/apix``; none: ``/``), and each ``header`` condition
  by case-insensitive name: ``present``, ``notpresent``, ``exact`` / ``notexact`` (with
  ``ignoreCase``), ``contains`` / ``notcontains``, whole-value ``regex``; a header that is
  absent fails every condition but ``notpresent``, unless ``treatMissingAsEmpty`` compares ""
  (Envoy's header matcher). The ``cookie`` header is the raw ``Cookie`` line. A condition with
  a name and nothing to compare matches any request;
- routes are tried most specific first, as Contour orders Envoy's routes: the longer prefix,
  then more header conditions, then the order written; none applies: 404 (``NR``);
- ``services[]`` share the route's requests by ``weight``: a missing weight is 0 and gets
  nothing while another service has weight; when every weight is 0 (or missing) the services
  share evenly. A ``mirror: true`` service gets a copy of each request;
- the chosen service's ``requestHeadersPolicy`` (``set``, ``remove``) and the route's apply to
  the request, ``responseHeadersPolicy`` to the answer; ``timeoutPolicy.response`` bounds the
  request (504 beyond it). Retries, ``pathRewritePolicy`` and ``includes`` are not simulated.

:class:`ContourAdapter` is Contour's Envoy: ``envoy_cluster_upstream_rq`` and
``envoy_cluster_upstream_rq_time`` labelled with ``envoy_cluster_name``, which Contour sets to
``<namespace>_<service>_<port>`` (its clusters' ``alt_stat_name``), the series Flagger's contour
observer reads.

Nothing here does I/O; randomness comes from the ``random.Random`` passed in.
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry, Gauge, Histogram

from e2e.simulator.metrics import ENVOY_BUCKETS, Exchange
from e2e.simulator.routing import (
    Destination,
    HeaderOps,
    Request,
    RouteDecision,
    ServiceKey,
    parse_duration,
    service_key,
)
from e2e.simulator.sources import Lookup
from flaggerpy import kube

__all__ = ["HTTP_PROXIES", "ContourAdapter", "ContourSource", "cluster_name", "invalid_reason",
           "route_proxy"]

HTTP_PROXIES = kube.Resource("projectcontour.io", "v1", "httpproxies", "HTTPProxy")
"""Contour's HTTPProxy at the version Flagger writes."""


def cluster_name(service: ServiceKey, port: int | None) -> str:
    """The stats name of Contour's Envoy cluster for ``service``'s ``port``."""
    return f"{service.namespace}_{service.name}_{port if port is not None else 80}"


# -- validation ---------------------------------------------------------------------------------


def _route_invalid(route: Mapping[str, Any]) -> str:
    conditions = route.get("conditions") or []
    prefixes = [str(c["prefix"]) for c in conditions if c.get("prefix")]
    if any(not p.startswith("/") for p in prefixes):
        return "prefix conditions must start with /"
    if len(prefixes) > 1:
        return "more than one prefix is not allowed in a condition block"
    exact = [str((c.get("header") or {}).get("name") or "").lower()
             for c in conditions if (c.get("header") or {}).get("exact")]
    if len(exact) != len(set(exact)):
        return "cannot specify duplicate header 'exact match' conditions in the same route"
    return ""


def invalid_reason(spec: Mapping[str, Any]) -> str:
    """Why Contour marks an HTTPProxy with this ``spec`` invalid, or "" when it is valid."""
    for route in spec.get("routes") or []:
        reason = _route_invalid(route)
        if reason:
            return f"route: {reason}"
    return ""


# -- matching -----------------------------------------------------------------------------------


def _prefix_matches(prefix: str, path: str) -> bool:
    path = path.partition("?")[0] or "/"
    if prefix in ("", "/"):
        return True
    base = prefix.rstrip("/")
    return path == base or path.startswith(base + "/")


def _header_matches(condition: Mapping[str, Any], request: Request) -> bool:
    operators = ("present", "notpresent", "exact", "notexact", "contains", "notcontains",
                 "regex")
    if not any(condition.get(op) for op in operators):
        return True  # nothing to compare: Contour programs no header match
    actual = request.header(str(condition.get("name") or ""))
    if condition.get("notpresent"):
        return actual is None
    if actual is None:
        if not condition.get("treatMissingAsEmpty"):
            return False
        actual = ""
    if condition.get("present"):
        return True
    fold = bool(condition.get("ignoreCase"))

    def same(a: str, b: str) -> bool:
        return a.lower() == b.lower() if fold else a == b

    if condition.get("exact"):
        return same(actual, str(condition["exact"]))
    if condition.get("notexact"):
        return not same(actual, str(condition["notexact"]))
    if condition.get("contains"):
        return str(condition["contains"]) in actual
    if condition.get("notcontains"):
        return str(condition["notcontains"]) not in actual
    return re.fullmatch(str(condition["regex"]), actual) is not None


def _route_matches(route: Mapping[str, Any], request: Request) -> bool:
    for condition in route.get("conditions") or []:
        if condition.get("prefix") and not _prefix_matches(str(condition["prefix"]),
                                                           request.path):
            return False
        if condition.get("header") and not _header_matches(condition["header"], request):
            return False
    return True


def _specificity(indexed: tuple[int, Mapping[str, Any]]) -> tuple[int, int, int]:
    index, route = indexed
    conditions = route.get("conditions") or []
    prefix = next((str(c["prefix"]) for c in conditions if c.get("prefix")), "/")
    headers = sum(1 for c in conditions if c.get("header"))
    return (-len(prefix.rstrip("/")), -headers, index)


# -- routing ------------------------------------------------------------------------------------


def _weight(service: Mapping[str, Any]) -> int:
    try:
        return max(int(service.get("weight") or 0), 0)
    except (TypeError, ValueError):
        return 0


def _ops(policy: Mapping[str, Any] | None) -> HeaderOps:
    policy = policy or {}
    return HeaderOps(
        set=tuple((str(h.get("name")), str(h.get("value"))) for h in policy.get("set") or []),
        remove=tuple(str(name) for name in policy.get("remove") or []))


def _destination(service: Mapping[str, Any], namespace: str) -> Destination:
    key = ServiceKey(namespace, str(service.get("name") or ""))
    port = service.get("port")
    return Destination(host=key.fqdn, weight=_weight(service),
                       port=int(port) if isinstance(port, int) else None,
                       request_headers=_ops(service.get("requestHeadersPolicy")),
                       response_headers=_ops(service.get("responseHeadersPolicy")))


def _pick(services: Sequence[Mapping[str, Any]], rng: random.Random) -> Mapping[str, Any] | None:
    if not services:
        return None
    weights = [_weight(s) for s in services]
    if sum(weights) == 0:
        weights = [1] * len(services)  # no weights at all: an even share each
    return rng.choices(list(services), weights=weights)[0]


def route_proxy(spec: Mapping[str, Any], request: Request, rng: random.Random, *,
                namespace: str) -> RouteDecision | None:
    """One request through an HTTPProxy ``spec`` in ``namespace``: the most specific route
    whose conditions all match, one of its services drawn by weight; None when the proxy is
    invalid or no route matches (404 ``NR``)."""
    if invalid_reason(spec):
        return None
    routes = sorted(enumerate(spec.get("routes") or []), key=_specificity)
    for index, route in routes:
        if not _route_matches(route, request):
            continue
        services = [s for s in route.get("services") or [] if not s.get("mirror")]
        mirrors = tuple(ServiceKey(namespace, str(s.get("name") or "")).fqdn
                        for s in route.get("services") or [] if s.get("mirror"))
        picked = _pick(services, rng)
        destination = _destination(picked, namespace) if picked is not None else None
        request_ops = _ops(route.get("requestHeadersPolicy"))
        response_ops = _ops(route.get("responseHeadersPolicy"))
        if destination is not None:  # the route's operations first, then the service's
            request_ops = request_ops + destination.request_headers
            response_ops = response_ops + destination.response_headers
        return RouteDecision(
            rule_index=index, rule_name=f"route-{index}", destination=destination,
            mirrors=mirrors, request_headers=request_ops, response_headers=response_ops,
            timeout=parse_duration((route.get("timeoutPolicy") or {}).get("response")))
    return None


class ContourSource:
    """HTTPProxies, read as Contour programs its Envoy from them."""

    name: ClassVar[str] = "contour"
    resource: ClassVar[kube.Resource] = HTTP_PROXIES

    def claims(self, obj: Mapping[str, Any], host: str, *, namespace: str,
               namespaces: Collection[str]) -> bool:
        metadata = obj.get("metadata") or {}
        fqdn = str(((obj.get("spec") or {}).get("virtualhost") or {}).get("fqdn") or "")
        if fqdn and host.partition(":")[0].lower().rstrip(".") == fqdn.lower():
            return True
        wanted = service_key(host, namespace=namespace, namespaces=namespaces)
        return wanted == ServiceKey(str(metadata.get("namespace") or ""),
                                    str(metadata.get("name") or ""))

    def stream_host(self, obj: Mapping[str, Any]) -> str | None:
        """The virtual host's fqdn, else ``<name>.<namespace>``: the Service it stands for."""
        fqdn = ((obj.get("spec") or {}).get("virtualhost") or {}).get("fqdn")
        if fqdn:
            return str(fqdn)
        metadata = obj.get("metadata") or {}
        return f"{metadata.get('name')}.{metadata.get('namespace')}"

    def route(self, obj: Mapping[str, Any], request: Request, rng: random.Random, *,
              lookup: Lookup) -> RouteDecision | None:
        namespace = str((obj.get("metadata") or {}).get("namespace") or "")
        return route_proxy(obj.get("spec") or {}, request, rng, namespace=namespace)


class ContourAdapter:
    """Contour's Envoy cluster stats, as Prometheus scrapes them from the Envoy pods.

    Each request a pod of a Service received is counted on that Service's cluster
    (:func:`cluster_name`); a request Envoy answered itself (no route, no healthy endpoint)
    never went upstream and is not. ``envoy_cluster_upstream_rq`` is a gauge only because the
    client library would append ``_total`` to a counter's name, which Envoy's does not have; it
    only ever increases.
    """

    name: ClassVar[str] = "contour"
    LABELS: ClassVar[tuple[str, ...]] = ("envoy_cluster_name", "envoy_response_code")

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
        cluster = cluster_name(exchange.service, exchange.service_port)
        self.requests.labels(envoy_cluster_name=cluster,
                             envoy_response_code=str(exchange.response_code)).inc()
        self.time.labels(envoy_cluster_name=cluster).observe(exchange.duration_ms)
