"""Gateway API HTTPRoute routing (``gateway.networking.k8s.io/v1``), as a pure function.

Follows the Gateway API specification's HTTPRoute semantics:

- a route attached to a Gateway (``parentRefs`` of kind Gateway) takes requests whose ``Host``
  matches one of ``hostnames`` (exact, or ``*.example.com`` for one or more labels in front);
  no ``hostnames`` takes every host. A route attached to a Service (GAMMA: ``parentRefs`` of
  kind Service, group ``""``) takes the requests addressed to that Service. The simulator has
  one gateway, so which Gateway is named does not matter;
- within a route, a request goes to the rule of the best matching ``matches[]`` entry, by the
  spec's precedence: an ``Exact`` path over a ``PathPrefix`` (the longer prefix first) over a
  ``RegularExpression``, then a ``method`` match, then more header matches, then more query
  parameter matches; ties go to the earlier rule. A rule without ``matches`` matches as
  ``PathPrefix /``. No rule → 404;
- matches: ``path`` (``Exact``, ``PathPrefix`` by whole path elements, ``RegularExpression``
  matching the whole path as Envoy does), ``headers`` (names case-insensitive, ``Exact`` or
  ``RegularExpression``; ``cookie`` is the raw ``Cookie`` line), ``queryParams`` (``Exact`` or
  ``RegularExpression``), ``method``; all conditions of an entry hold together;
- ``backendRefs`` are chosen by ``weight`` (default 1); weight 0 gets nothing. A rule whose
  backends all have weight 0 or none at all, or a share that goes to a missing Service, is
  answered 500, as the spec requires;
- filters, of the rule and of the chosen backendRef: ``RequestHeaderModifier`` /
  ``ResponseHeaderModifier`` (``set``/``add``/``remove``), ``RequestMirror`` (``percent``, or
  ``fraction`` numerator/denominator, 100 % when neither), ``URLRewrite`` (``hostname``;
  ``path`` ``ReplaceFullPath`` or ``ReplacePrefixMatch`` of the matched prefix). ``CORS``,
  ``RequestRedirect`` and extension filters are not simulated;
- ``timeouts.request`` bounds the whole request (504 beyond it).

Nothing here does I/O; randomness comes from the ``random.Random`` passed in.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from e2e.simulator.routing import (
    Destination,
    HeaderOps,
    Request,
    RouteDecision,
    ServiceKey,
    parse_duration,
    service_key,
    string_matches,
)
from e2e.simulator.sources import Lookup, object_key
from flaggerpy import kube

__all__ = ["HTTP_ROUTES", "GatewayAPISource", "hostname_matches", "match_entry",
           "route_http", "select_match"]

HTTP_ROUTES = kube.Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
"""The HTTPRoute at ``v1``, what ``gatewayapi:v1`` writes (v1beta1 objects are served at it)."""

INVALID_BACKEND_STATUS = 500
"""What the spec requires for requests to a rule without a valid backend."""

_DEFAULT_MATCH: Mapping[str, Any] = {"path": {"type": "PathPrefix", "value": "/"}}


def hostname_matches(hostnames: Sequence[str], host: str) -> bool:
    """Whether a request for ``host`` (a port is ignored) matches a route's ``hostnames``."""
    if not hostnames:
        return True
    wanted = host.strip().lower().rstrip(".")
    name, sep, port = wanted.rpartition(":")
    if sep and port.isdigit():
        wanted = name
    for name in hostnames:
        name = str(name).lower()
        if name.startswith("*."):
            if wanted.endswith(name[1:]) and len(wanted) > len(name) - 1:
                return True
        elif name == wanted:
            return True
    return False


def _path_matches(spec: Mapping[str, Any], path: str) -> bool:
    kind = spec.get("type") or "PathPrefix"
    value = str(spec.get("value") or "/")
    if kind == "Exact":
        return path == value
    if kind == "RegularExpression":
        return string_matches({"regex": value}, path)
    prefix = value.rstrip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")


def _value_matches(spec: Mapping[str, Any], value: str | None) -> bool:
    if spec.get("type") == "RegularExpression":
        return string_matches({"regex": str(spec.get("value") or "")}, value)
    return value is not None and value == str(spec.get("value") or "")


def match_entry(match: Mapping[str, Any], request: Request) -> bool:
    """One ``HTTPRouteMatch``: path, every header and query parameter, and the method."""
    path, _, query = request.path.partition("?")
    if not _path_matches(match.get("path") or {"type": "PathPrefix", "value": "/"}, path):
        return False
    if match.get("method") and str(match["method"]).upper() != request.method.upper():
        return False
    for header in match.get("headers") or []:
        if not _value_matches(header, request.header(str(header.get("name") or ""))):
            return False
    if match.get("queryParams"):
        params: dict[str, str] = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            params.setdefault(name, value)  # the first value, as Envoy matches
        for param in match["queryParams"]:
            if not _value_matches(param, params.get(str(param.get("name") or ""))):
                return False
    return True


def _precedence(match: Mapping[str, Any]) -> tuple[int, int, int, int, int]:
    """The spec's ordering key of a match: higher wins."""
    path = match.get("path") or {"type": "PathPrefix", "value": "/"}
    kind = path.get("type") or "PathPrefix"
    rank = {"Exact": 2, "PathPrefix": 1}.get(kind, 0)
    length = len(str(path.get("value") or "")) if kind == "PathPrefix" else 0
    return (rank, length, 1 if match.get("method") else 0, len(match.get("headers") or []),
            len(match.get("queryParams") or []))


def select_match(
    rules: Sequence[Mapping[str, Any]], request: Request
) -> tuple[int, Mapping[str, Any], Mapping[str, Any]] | None:
    """``(rule index, rule, match)`` of the best matching entry, or None when none matches."""
    best: tuple[tuple[int, int, int, int, int], int] | None = None
    found: tuple[int, Mapping[str, Any], Mapping[str, Any]] | None = None
    for index, rule in enumerate(rules):
        for match in rule.get("matches") or [_DEFAULT_MATCH]:
            if not match_entry(match or {}, request):
                continue
            key = (_precedence(match or {}), -index)
            if best is None or key > best:
                best, found = key, (index, rule, match or {})
    return found


def _header_ops(spec: Mapping[str, Any] | None) -> HeaderOps:
    spec = spec or {}
    return HeaderOps(
        set=tuple((str(h["name"]), str(h.get("value") or "")) for h in spec.get("set") or []),
        add=tuple((str(h["name"]), str(h.get("value") or "")) for h in spec.get("add") or []),
        remove=tuple(str(name) for name in spec.get("remove") or []),
    )


def _backend_host(ref: Mapping[str, Any], namespace: str) -> str | None:
    """A Service backendRef as the Service's FQDN; None for any other kind."""
    if (ref.get("group") or "") != "" or (ref.get("kind") or "Service") != "Service":
        return None
    return ServiceKey(str(ref.get("namespace") or namespace), str(ref.get("name") or "")).fqdn


def _mirror_percent(spec: Mapping[str, Any]) -> float:
    if spec.get("percent") is not None:
        return float(spec["percent"])
    fraction = spec.get("fraction")
    if fraction:
        denominator = float(fraction.get("denominator") or 100)
        return 100.0 * float(fraction.get("numerator") or 0) / denominator
    return 100.0


class _Filters:
    """The effect of a list of ``filters``, gathered."""

    def __init__(self, filters: Sequence[Mapping[str, Any]], namespace: str) -> None:
        self.request = HeaderOps()
        self.response = HeaderOps()
        self.mirrors: list[tuple[str, float]] = []
        self.rewrite: Mapping[str, Any] | None = None
        for entry in filters:
            kind = entry.get("type")
            if kind == "RequestHeaderModifier":
                self.request = self.request + _header_ops(entry.get("requestHeaderModifier"))
            elif kind == "ResponseHeaderModifier":
                self.response = self.response + _header_ops(entry.get("responseHeaderModifier"))
            elif kind == "RequestMirror":
                spec = entry.get("requestMirror") or {}
                host = _backend_host(spec.get("backendRef") or {}, namespace)
                if host is not None:
                    self.mirrors.append((host, _mirror_percent(spec)))
            elif kind == "URLRewrite":
                self.rewrite = entry.get("urlRewrite") or {}


def _rewritten_path(rewrite: Mapping[str, Any] | None, match: Mapping[str, Any],
                    path: str) -> str | None:
    spec = (rewrite or {}).get("path") or {}
    plain, sep, query = path.partition("?")
    if spec.get("type") == "ReplaceFullPath":
        new = str(spec.get("replaceFullPath") or "/")
    elif spec.get("type") == "ReplacePrefixMatch":
        prefix = str((match.get("path") or {}).get("value") or "/").rstrip("/")
        rest = plain[len(prefix):]
        replacement = str(spec.get("replacePrefixMatch") or "/")
        new = (replacement.rstrip("/") + rest) if rest else replacement
        new = new or "/"
    else:
        return None
    return new + sep + query


def route_http(
    spec: Mapping[str, Any], request: Request, rng: random.Random, *, namespace: str
) -> RouteDecision | None:
    """One request through an HTTPRoute ``spec`` in ``namespace``; None when no rule matches.

    Destinations and mirrors are Service FQDNs; the decision carries the rewrite, the header
    operations (rule filters first, then the chosen backendRef's), ``timeouts.request`` and
    500 for an invalid backend.
    """
    selected = select_match(spec.get("rules") or [], request)
    if selected is None:
        return None
    index, rule, match = selected
    filters = _Filters(rule.get("filters") or [], namespace)
    refs = [ref for ref in rule.get("backendRefs") or []]
    weights = [max(0, int(ref["weight"] if ref.get("weight") is not None else 1)) for ref in refs]
    chosen: Destination | None = None
    backend_filters = _Filters([], namespace)
    if any(weights):
        ref = rng.choices(refs, weights=weights)[0]
        host = _backend_host(ref, namespace)
        # A backendRef that names no Service is invalid: its share is answered 500 (the data
        # plane does so for a host that resolves to no Service).
        chosen = Destination(host=host or f"invalid.{namespace}.invalid", weight=1)
        backend_filters = _Filters(ref.get("filters") or [], namespace)
    mirrors = tuple(host for host, percent in [*filters.mirrors, *backend_filters.mirrors]
                    if rng.random() * 100 < percent)
    rewrite = filters.rewrite or backend_filters.rewrite
    return RouteDecision(
        rule_index=index,
        rule_name=str(rule.get("name") or ""),
        destination=chosen,
        mirrors=mirrors,
        request_headers=filters.request + backend_filters.request,
        response_headers=filters.response + backend_filters.response,
        timeout=parse_duration((rule.get("timeouts") or {}).get("request")),
        rewrite_path=_rewritten_path(rewrite, match, request.path),
        rewrite_authority=str(rewrite["hostname"]) if rewrite and rewrite.get("hostname")
        else None,
        invalid_backend_status=INVALID_BACKEND_STATUS,
    )


def _service_parents(obj: Mapping[str, Any]) -> list[ServiceKey]:
    namespace = object_key(obj).namespace
    return [ServiceKey(str(ref.get("namespace") or namespace), str(ref.get("name") or ""))
            for ref in (obj.get("spec") or {}).get("parentRefs") or []
            if ref.get("kind") == "Service" and (ref.get("group") or "") in ("", "core")]


def _gateway_parents(obj: Mapping[str, Any]) -> bool:
    return any((ref.get("kind") or "Gateway") == "Gateway"
               for ref in (obj.get("spec") or {}).get("parentRefs") or [])


class GatewayAPISource:
    """HTTPRoutes, read as a Gateway API implementation serves them."""

    name: ClassVar[str] = "gatewayapi"
    resource: ClassVar[kube.Resource] = HTTP_ROUTES

    def claims(self, obj: Mapping[str, Any], host: str, *, namespace: str,
               namespaces: Collection[str]) -> bool:
        spec = obj.get("spec") or {}
        if _gateway_parents(obj) and hostname_matches(spec.get("hostnames") or [], host):
            return True
        parents = _service_parents(obj)
        if parents:
            wanted = service_key(host, namespace=namespace, namespaces=namespaces)
            return wanted in parents
        return False

    def stream_host(self, obj: Mapping[str, Any]) -> str | None:
        """The first concrete hostname, else the first parent Service (GAMMA)."""
        for name in (obj.get("spec") or {}).get("hostnames") or []:
            if name and "*" not in name:
                return str(name)
        for key in _service_parents(obj):
            return f"{key.name}.{key.namespace}"
        return None

    def route(self, obj: Mapping[str, Any], request: Request, rng: random.Random, *,
              lookup: Lookup) -> RouteDecision | None:
        return route_http(obj.get("spec") or {}, request, rng,
                          namespace=object_key(obj).namespace)
