"""Skipper ingress routing (``networking.k8s.io/v1`` Ingresses with Skipper's annotations), as
pure functions, and Skipper's per-route metrics.

Follows Skipper's documented semantics for Ingresses (its "Kubernetes Ingress Usage" guide and
its route matching), as far as Flagger's canary Ingress uses them:

- every ``http.paths[]`` entry of an Ingress rule becomes a Skipper route for the rule's host
  (exact, or ``*.example.com`` for one leading label) and path: ``Exact`` paths match the path
  itself, ``Prefix`` paths whole path elements (Skipper's ``PathSubtree``), and
  ``ImplementationSpecific`` ones a plain string prefix (the default ``kubernetes-ingress`` path
  mode's ``PathRegexp(^<path>)``);
- ``zalando.org/skipper-predicate`` adds its predicates (``A() && B()``) to every route of the
  Ingress. Understood here: ``True()``, ``False()`` (matches nothing), ``Weight(n)``,
  ``Header("name", "value")``, ``HeaderRegexp("name", "regex")``, ``Cookie("name", "regex")``,
  ``Method("GET")`` and ``Traffic(chance)``; a route with any other predicate is invalid and
  left out, as Skipper drops routes it cannot build;
- of the routes that match a request, the one with the most specific path wins (an exact path,
  then the longest prefix); among routes with the same path, the heaviest: one per predicate
  plus ``n`` for each ``Weight(n)``. That is why Flagger's canary Ingress, the user's Ingress
  plus ``Weight(100)``, takes the traffic from it, and gives it back with ``False()``;
- several backends for the same host and path of one Ingress share its traffic by
  ``zalando.org/backend-weights`` (``{"<service>": weight}``): only the backends with a positive
  weight get traffic, relative to their weights; with no positive weight, all share equally;
- Skipper names a route ``kube_<namespace>__<ingress>__<host>__<path>__<service>``, every
  character other than a letter, digit or ``_`` turned into ``_``, and exports per route
  ``skipper_serve_route_duration_seconds`` and ``skipper_response_duration_seconds`` (histograms
  in seconds, labelled ``code``, ``method`` and ``route``): what Flagger's skipper observer
  selects with ``kube(ew)?_<ns>__<ingress>_canary__.*__<service>_canary``.

The routes of a host are those of the user's Ingress and of its companion Flagger writes,
``<ingress>-canary``: the simulator's lookup is by name, so another Ingress for the same host is
not merged in (the oldest Ingress claiming a host serves it). A companion (named ``*-canary``,
its predicate starting with ``Weight(100)`` or ``False()``) claims no host of its own. An
Ingress rule without a host claims no host (it would take every host, in-cluster Services'
too). Nothing here does I/O; randomness comes from the ``random.Random`` passed in.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry, Histogram

from e2e.simulator.metrics import Exchange
from e2e.simulator.routing import Destination, Request, RouteDecision, ServiceKey
from e2e.simulator.sources import Lookup, object_key
from flaggerpy import kube
from flaggerpy.kube.keys import ObjectKey

__all__ = ["BACKEND_WEIGHTS", "INGRESSES", "PREDICATE", "Predicate", "SkipperAdapter",
           "SkipperRoute", "SkipperSource", "choose_backend", "is_companion",
           "parse_predicates", "route_id", "route_request", "routes_of"]

INGRESSES = kube.Resource("networking.k8s.io", "v1", "ingresses", "Ingress")
"""Kubernetes Ingresses, at the version Flagger writes."""

BACKEND_WEIGHTS = "zalando.org/backend-weights"
PREDICATE = "zalando.org/skipper-predicate"
COMPANION_SUFFIX = "-canary"
COMPANION_MARKERS = ("Weight(100)", "False()")

_NON_ID = re.compile(r"[^A-Za-z0-9_]")
_CALL = re.compile(r"^\s*([A-Za-z_]\w*)\s*\((.*)\)\s*$", re.DOTALL)
_ARG = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|/((?:[^/\\]|\\.)*)/|([-+]?\d+(?:\.\d+)?))\s*(?:,|$)')
_KNOWN = {"True": 0, "False": 0, "Weight": 1, "Header": 2, "HeaderRegexp": 2, "Cookie": 2,
          "Method": 1, "Traffic": 1}
"""The predicates understood, with their number of arguments."""


@dataclass(frozen=True, slots=True)
class Predicate:
    """One eskip predicate call: its name and arguments (strings or numbers)."""

    name: str
    args: tuple[str | float, ...]

    def matches(self, request: Request, rng: random.Random) -> bool:
        args = self.args
        match self.name:
            case "False":
                return False
            case "Header":
                return request.header(str(args[0])) == str(args[1])
            case "HeaderRegexp":
                value = request.header(str(args[0]))
                return value is not None and re.search(str(args[1]), value) is not None
            case "Cookie":
                value = _cookie(request, str(args[0]))
                return value is not None and re.search(str(args[1]), value) is not None
            case "Method":
                return request.method.upper() == str(args[0]).upper()
            case "Traffic":
                return rng.random() < float(args[0])
            case _:  # True, Weight
                return True

    @property
    def weight(self) -> float:
        """What the predicate adds to its route's priority among routes of the same path."""
        return float(self.args[0]) if self.name == "Weight" else 1.0


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def parse_predicates(raw: str | None) -> tuple[Predicate, ...] | None:
    """The predicates of a ``zalando.org/skipper-predicate`` value (``A() && B("x")``); None
    when one of them is not understood or malformed (Skipper drops such a route)."""
    predicates = []
    for part in (raw or "").split("&&"):
        if not part.strip():
            continue
        call = _CALL.match(part)
        if call is None or call.group(1) not in _KNOWN:
            return None
        name, text = call.group(1), call.group(2).strip()
        args: list[str | float] = []
        position = 0
        while position < len(text):
            arg = _ARG.match(text, position)
            if arg is None or arg.end() == position:
                return None
            quoted, regex, number = arg.groups()
            args.append(_unescape(quoted) if quoted is not None else
                        regex if regex is not None else float(number))
            position = arg.end()
        if len(args) != _KNOWN[name]:
            return None
        predicates.append(Predicate(name, tuple(args)))
    return tuple(predicates)


def route_id(namespace: str, ingress: str, host: str, path: str, service: str) -> str:
    """Skipper's name of an Ingress route: ``kube_<ns>__<ingress>__<host>__<path>__<service>``
    with every non-word character turned into ``_``."""
    parts = (_NON_ID.sub("_", part) for part in (namespace, ingress, host, path, service))
    return "kube_{}__{}__{}__{}__{}".format(*parts)


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def is_companion(obj: Mapping[str, Any]) -> bool:
    """Whether an Ingress is a canary Ingress Flagger wrote beside a user's one."""
    predicate = str(_annotations(obj).get(PREDICATE) or "").lstrip()
    return object_key(obj).name.endswith(COMPANION_SUFFIX) and predicate.startswith(
        COMPANION_MARKERS)


def _strip_port(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() else host


def _host_matches(pattern: str, host: str) -> bool:
    pattern, host = pattern.strip().lower(), _strip_port(host)
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return bool(pattern) and pattern == host


def _elements(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


@dataclass(frozen=True, slots=True)
class SkipperRoute:
    """The routes Skipper makes of one host and path of an Ingress: one per backend, sharing
    the traffic by the Ingress's backend weights."""

    ingress: ObjectKey
    host: str
    path: str
    path_type: str
    backends: tuple[str, ...]
    predicates: tuple[Predicate, ...]
    weights: Mapping[str, float]

    def matches_path(self, request_path: str) -> bool:
        if self.path_type == "Exact":
            return request_path == self.path
        if self.path_type == "ImplementationSpecific":
            return request_path.startswith(self.path)
        head = _elements(self.path)
        return _elements(request_path)[:len(head)] == head

    @property
    def specificity(self) -> tuple[int, int]:
        return (1 if self.path_type == "Exact" else 0, len(self.path))

    @property
    def priority(self) -> float:
        return sum(p.weight for p in self.predicates)


def _backend_weights(obj: Mapping[str, Any]) -> dict[str, float]:
    try:
        parsed = json.loads(str(_annotations(obj).get(BACKEND_WEIGHTS) or "{}"))
    except ValueError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {str(k): float(v) for k, v in parsed.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def routes_of(obj: Mapping[str, Any], host: str) -> list[SkipperRoute]:
    """The valid routes of an Ingress for ``host``, one per distinct path (its backends in
    order of appearance); none when its predicates are not understood."""
    predicates = parse_predicates(_annotations(obj).get(PREDICATE))
    if predicates is None:
        return []
    key, weights = object_key(obj), _backend_weights(obj)
    grouped: dict[tuple[str, str, str], list[str]] = {}
    for rule in (obj.get("spec") or {}).get("rules") or []:
        if not isinstance(rule, Mapping) or not rule.get("host"):
            continue
        if not _host_matches(str(rule["host"]), host):
            continue
        for path in (rule.get("http") or {}).get("paths") or []:
            service = ((path or {}).get("backend") or {}).get("service")
            if not isinstance(service, Mapping) or not service.get("name"):
                continue
            group = (str(rule["host"]), str(path.get("path") or "/"),
                     str(path.get("pathType") or "Prefix"))
            backends = grouped.setdefault(group, [])
            if str(service["name"]) not in backends:
                backends.append(str(service["name"]))
    return [SkipperRoute(key, rule_host, path, path_type, tuple(backends), predicates, weights)
            for (rule_host, path, path_type), backends in grouped.items()]


def choose_backend(route: SkipperRoute, rng: random.Random) -> str:
    """One backend of ``route`` by its Ingress's backend weights (see the module)."""
    weighted = [(b, route.weights.get(b, 0.0)) for b in route.backends]
    positive = [(b, w) for b, w in weighted if w > 0]
    if not positive:
        return rng.choice(route.backends)
    return rng.choices([b for b, _ in positive], weights=[w for _, w in positive])[0]


def _cookie(request: Request, name: str) -> str | None:
    for cookie in (request.header("cookie") or "").split(";"):
        key, _, value = cookie.strip().partition("=")
        if key == name:
            return value
    return None


def route_request(ingresses: Sequence[Mapping[str, Any]], request: Request,
                  rng: random.Random) -> RouteDecision | None:
    """One request through the routes of ``ingresses`` (the user's first): the most specific
    matching path, then the heaviest route, the first on a tie; its backend drawn by weight.
    The decision's ``rule_name`` is Skipper's route id. None when no route matches."""
    request_path = request.path.partition("?")[0] or "/"
    best: tuple[tuple[int, int], float] | None = None
    chosen: SkipperRoute | None = None
    for obj in ingresses:
        for route in routes_of(obj, request.host):
            if not route.matches_path(request_path):
                continue
            if not all(p.matches(request, rng) for p in route.predicates):
                continue
            rank = (route.specificity, route.priority)
            if best is None or rank > best:
                best, chosen = rank, route
    if chosen is None:
        return None
    service = choose_backend(chosen, rng)
    name = route_id(chosen.ingress.namespace, chosen.ingress.name, chosen.host, chosen.path,
                    service)
    return RouteDecision(rule_index=0, rule_name=name, destination=Destination(
        host=ServiceKey(chosen.ingress.namespace, service).fqdn, weight=1))


class SkipperSource:
    """Ingresses, read as Skipper turns a user's Ingress and its canary Ingress into routes."""

    name: ClassVar[str] = "skipper"
    resource: ClassVar[kube.Resource] = INGRESSES

    def claims(self, obj: Mapping[str, Any], host: str, *, namespace: str,
               namespaces: Collection[str]) -> bool:
        """Whether a user's Ingress has a rule for ``host`` (a companion claims none)."""
        if is_companion(obj):
            return False
        return any(isinstance(rule, Mapping) and rule.get("host")
                   and _host_matches(str(rule["host"]), host)
                   for rule in (obj.get("spec") or {}).get("rules") or [])

    def stream_host(self, obj: Mapping[str, Any]) -> str | None:
        """The first concrete host of a user's Ingress's rules (not a wildcard)."""
        if is_companion(obj):
            return None
        for rule in (obj.get("spec") or {}).get("rules") or []:
            host = str((rule or {}).get("host") or "")
            if host and "*" not in host:
                return host
        return None

    def route(self, obj: Mapping[str, Any], request: Request, rng: random.Random, *,
              lookup: Lookup) -> RouteDecision | None:
        key = object_key(obj)
        companion = lookup(ObjectKey(key.namespace, f"{key.name}{COMPANION_SUFFIX}"))
        return route_request([obj, *([companion] if companion is not None else [])],
                             request, rng)


class SkipperAdapter:
    """Skipper's per-route metrics: what the proxy saw of each request an Ingress route served.

    Only requests an Ingress routed are Skipper's (``Exchange.routed_by``); the route is the
    decision's ``rule_name``, Skipper's route id.
    """

    name: ClassVar[str] = "skipper"
    LABELS: ClassVar[tuple[str, ...]] = ("code", "method", "route")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.serve_route = Histogram(
            "skipper_serve_route_duration_seconds", "Time spent serving a route",
            self.LABELS, registry=registry)
        self.response = Histogram(
            "skipper_response_duration_seconds", "Time until the response of a route",
            self.LABELS, registry=registry)

    def observe(self, exchange: Exchange) -> None:
        if exchange.routed_by is None or exchange.mirrored or not exchange.rule:
            return
        labels = {"code": str(exchange.response_code), "method": exchange.method,
                  "route": exchange.rule}
        self.serve_route.labels(**labels).observe(exchange.duration_ms / 1000)
        self.response.labels(**labels).observe(exchange.duration_ms / 1000)
