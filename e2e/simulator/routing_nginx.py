"""NGINX ingress routing (``networking.k8s.io/v1`` Ingresses with ingress-nginx's canary
annotations), as pure functions, and ingress-nginx's request metrics.

Follows ingress-nginx's documented semantics (user guide, "Canary" annotations, and its
balancer's ``route_to_alternative_balancer``), with the default ``--annotations-prefix``
``nginx.ingress.kubernetes.io``:

- a *main* Ingress (no ``canary: "true"`` annotation) serves the hosts of its rules (exact, or
  ``*.example.com`` for one leading label); a request takes the rule path that matches it best:
  ``Exact`` equal paths first, then the longest ``Prefix`` (whole path elements; the
  ``ImplementationSpecific`` type is read as ``Prefix``); that path's backend Service, in the
  Ingress's namespace, gets the request;
- a *canary* Ingress (``canary: "true"``) serves nothing of its own: it is the alternative
  backend of the main Ingress's path with the same host and the same path value, and it takes a
  request by these rules, in this order:

  1. ``canary-by-header``: with ``canary-by-header-value``, a request whose header equals it goes
     to the canary; else with ``canary-by-header-pattern``, one whose header matches that regex
     (a search, as PCRE's ``ngx.re.match``); else a header value ``always`` goes to the canary and
     ``never`` stays on the main backend, whatever the rules below say. Any other value, or no
     header, falls through;
  2. ``canary-by-cookie``: a cookie of that name set to ``always`` goes to the canary, ``never``
     stays; anything else falls through;
  3. ``canary-weight`` (0..``canary-weight-total``, default 100): that share of what is left goes
     to the canary;

- ingress-nginx counts every request it served in ``nginx_ingress_controller_requests`` and its
  upstream time in ``nginx_ingress_controller_response_duration_seconds`` (seconds, Prometheus's
  default buckets), labelled with the main Ingress (``ingress``, ``namespace``), its path's
  Service (``service``), the matched ``path``, ``host``, ``method``, ``status`` and ``canary``:
  the alternative upstream (``<namespace>-<service>-<port>``) when the canary served the
  request, ``""`` otherwise. That is what Flagger's nginx observer selects (``canary!=""``).

The canary Ingress of a main one is looked up by the name Flagger gives it,
``<main Ingress>-canary`` (the world's lookup is by name); ingress-nginx matches any canary
Ingress of the same host and path, so a canary Ingress named otherwise is not seen here.
Several main Ingresses for one host are not merged: the oldest serves it. An Ingress rule
without a host claims no host (it would take every host, in-cluster Services' too).
Nothing here does I/O; randomness comes from the ``random.Random`` passed in.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Collection, Mapping
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry, Gauge, Histogram

from e2e.simulator.metrics import Exchange
from e2e.simulator.routing import Destination, Request, RouteDecision, ServiceKey
from e2e.simulator.sources import Lookup, object_key
from flaggerpy import kube
from flaggerpy.kube.keys import ObjectKey

__all__ = ["DEFAULT_PREFIX", "INGRESSES", "NginxAdapter", "NginxSource", "canary_ingress_name",
           "is_canary", "match_path", "read_rule", "route_request", "rule_name",
           "to_alternative"]

INGRESSES = kube.Resource("networking.k8s.io", "v1", "ingresses", "Ingress")
"""Kubernetes Ingresses, at the version Flagger writes."""

DEFAULT_PREFIX = "nginx.ingress.kubernetes.io"
"""ingress-nginx's ``--annotations-prefix`` default."""

CONTROLLER = {"controller_class": "k8s.io/ingress-nginx", "controller_namespace": "ingress-nginx",
              "controller_pod": "ingress-nginx-controller-simulated"}
"""The constant labels ingress-nginx adds to its series: which controller reported them."""


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def is_canary(obj: Mapping[str, Any], *, prefix: str = DEFAULT_PREFIX) -> bool:
    """Whether an Ingress is a canary one (``<prefix>/canary: "true"``)."""
    return str(_annotations(obj).get(f"{prefix}/canary", "")).lower() == "true"


def canary_ingress_name(name: str) -> str:
    """The canary Ingress Flagger writes for the main Ingress ``name``."""
    return f"{name}-canary"


def _strip_port(host: str) -> str:
    name, sep, port = host.strip().lower().rstrip(".").rpartition(":")
    return name if sep and port.isdigit() else host.strip().lower().rstrip(".")


def _host_matches(pattern: str, host: str) -> bool:
    pattern, host = pattern.strip().lower(), _strip_port(host)
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return bool(pattern) and pattern == host


def _rules_for(obj: Mapping[str, Any], host: str) -> list[Mapping[str, Any]]:
    return [rule for rule in (obj.get("spec") or {}).get("rules") or []
            if isinstance(rule, Mapping) and rule.get("host")
            and _host_matches(str(rule["host"]), host)]


def _elements(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


def _path_matches(path: Mapping[str, Any], request_path: str) -> bool:
    wanted = str(path.get("path") or "/")
    if path.get("pathType") == "Exact":
        return request_path == wanted
    head = _elements(wanted)
    return _elements(request_path)[:len(head)] == head


def match_path(rules: list[Mapping[str, Any]], request_path: str) -> Mapping[str, Any] | None:
    """The ``http.paths[]`` entry of ``rules`` that serves ``request_path``: an ``Exact`` one
    first, then the longest prefix; ties to the first. None when none matches."""
    request_path = request_path.partition("?")[0] or "/"
    best: tuple[int, int, int] | None = None
    found: Mapping[str, Any] | None = None
    index = 0
    for rule in rules:
        for path in (rule.get("http") or {}).get("paths") or []:
            index += 1
            if not isinstance(path, Mapping) or not _path_matches(path, request_path):
                continue
            rank = (1 if path.get("pathType") == "Exact" else 0,
                    len(_elements(str(path.get("path") or "/"))), -index)
            if best is None or rank > best:
                best, found = rank, path
    return found


def _service(path: Mapping[str, Any]) -> tuple[str, str] | None:
    """A path's backend Service name and port (number or name), or None for a resource."""
    service = (path.get("backend") or {}).get("service")
    if not isinstance(service, Mapping) or not service.get("name"):
        return None
    port = service.get("port") or {}
    return str(service["name"]), str(port.get("number") or port.get("name") or "")


def _cookie(request: Request, name: str) -> str | None:
    for cookie in (request.header("cookie") or "").split(";"):
        key, _, value = cookie.strip().partition("=")
        if key == name:
            return value
    return None


def _int(value: Any, default: int) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


def to_alternative(annotations: Mapping[str, str], request: Request, rng: random.Random, *,
                   prefix: str = DEFAULT_PREFIX) -> bool:
    """Whether ingress-nginx sends ``request`` to the canary Ingress with ``annotations``:
    header, then cookie, then weight (see the module docstring)."""
    def get(suffix: str) -> str:
        return str(annotations.get(f"{prefix}/{suffix}") or "")

    header_name = get("canary-by-header")
    if header_name:
        header = request.header(header_name)
        if header is not None:
            value, pattern = get("canary-by-header-value"), get("canary-by-header-pattern")
            if value:
                if header == value:
                    return True
            elif pattern:
                if re.search(pattern, header):
                    return True
            elif header == "always":
                return True
            elif header == "never":
                return False
    cookie_name = get("canary-by-cookie")
    if cookie_name:
        cookie = _cookie(request, cookie_name)
        if cookie == "always":
            return True
        if cookie == "never":
            return False
    weight = _int(get("canary-weight") or 0, 0)
    total = _int(get("canary-weight-total") or 100, 100)
    return weight > 0 and total > 0 and rng.randint(1, total) <= weight


def rule_name(path: str, service: str, canary: str) -> str:
    """What a decision's ``rule_name`` carries for the metrics: the matched path, its Service
    and the alternative upstream that served the request (``""``: the main backend)."""
    return json.dumps([path, service, canary])


def read_rule(rule: str) -> tuple[str, str, str]:
    """The ``(path, service, canary)`` of :func:`rule_name` (empty ones for anything else)."""
    try:
        path, service, canary = json.loads(rule)
        return str(path), str(service), str(canary)
    except (ValueError, TypeError):
        return "", "", ""


def route_request(main: Mapping[str, Any], canary: Mapping[str, Any] | None, request: Request,
                  rng: random.Random, *, prefix: str = DEFAULT_PREFIX) -> RouteDecision | None:
    """One request through a main Ingress and its canary Ingress (or None): the main path
    that serves it, then the canary's backend for the same host and path when
    :func:`to_alternative` says so. None when no path of the main Ingress serves it."""
    namespace = object_key(main).namespace
    rules = _rules_for(main, request.host)
    path = match_path(rules, request.path)
    if path is None:
        return None
    path_value = str(path.get("path") or "/")
    main_backend = _service(path)
    chosen, alternative = main_backend, ""
    if canary is not None and is_canary(canary, prefix=prefix):
        same = [p for rule in _rules_for(canary, request.host)
                for p in (rule.get("http") or {}).get("paths") or []
                if isinstance(p, Mapping) and str(p.get("path") or "/") == path_value]
        canary_backend = _service(same[0]) if same else None
        if canary_backend is not None and to_alternative(_annotations(canary), request, rng,
                                                         prefix=prefix):
            chosen = canary_backend
            alternative = f"{namespace}-{canary_backend[0]}-{canary_backend[1]}"
    destination = (Destination(host=ServiceKey(namespace, chosen[0]).fqdn, weight=1)
                   if chosen is not None else None)
    return RouteDecision(
        rule_index=0, rule_name=rule_name(path_value, main_backend[0] if main_backend else "",
                                          alternative),
        destination=destination)


class NginxSource:
    """Ingresses, read as ingress-nginx merges a canary Ingress into its main one."""

    name: ClassVar[str] = "nginx"
    resource: ClassVar[kube.Resource] = INGRESSES
    prefix: ClassVar[str] = DEFAULT_PREFIX

    def claims(self, obj: Mapping[str, Any], host: str, *, namespace: str,
               namespaces: Collection[str]) -> bool:
        """Whether a main Ingress has a rule for ``host`` (canary Ingresses serve no host)."""
        return not is_canary(obj, prefix=self.prefix) and bool(_rules_for(obj, host))

    def stream_host(self, obj: Mapping[str, Any]) -> str | None:
        """The first concrete host of a main Ingress's rules (not a wildcard)."""
        if is_canary(obj, prefix=self.prefix):
            return None
        for rule in (obj.get("spec") or {}).get("rules") or []:
            host = str((rule or {}).get("host") or "")
            if host and "*" not in host:
                return host
        return None

    def route(self, obj: Mapping[str, Any], request: Request, rng: random.Random, *,
              lookup: Lookup) -> RouteDecision | None:
        key = object_key(obj)
        canary = lookup(ObjectKey(key.namespace, canary_ingress_name(key.name)))
        return route_request(obj, canary, request, rng, prefix=self.prefix)


class NginxAdapter:
    """ingress-nginx's request metrics: what the controller saw of each request it served.

    Only requests an Ingress routed are ingress-nginx's (``Exchange.routed_by``, the main
    Ingress). ``nginx_ingress_controller_requests`` is a gauge here only because the client
    library would append ``_total`` to a counter's name, which ingress-nginx's does not have;
    it only ever increases.
    """

    name: ClassVar[str] = "nginx"
    LABELS: ClassVar[tuple[str, ...]] = (
        "controller_class", "controller_namespace", "controller_pod", "host", "status",
        "method", "path", "namespace", "ingress", "service", "canary")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Gauge("nginx_ingress_controller_requests",
                              "The total number of client requests", self.LABELS,
                              registry=registry)
        self.duration = Histogram("nginx_ingress_controller_response_duration_seconds",
                                  "The time spent on receiving the response from the upstream "
                                  "server", self.LABELS, registry=registry)

    def observe(self, exchange: Exchange) -> None:
        routed = exchange.routed_by
        if routed is None or exchange.mirrored:
            return
        path, service, canary = read_rule(exchange.rule)
        labels = {**CONTROLLER, "host": exchange.authority, "status": str(exchange.response_code),
                  "method": exchange.method, "path": path, "namespace": routed.namespace,
                  "ingress": routed.name, "service": service, "canary": canary}
        self.requests.labels(**labels).inc()
        self.duration.labels(**labels).observe(exchange.duration_ms / 1000)
