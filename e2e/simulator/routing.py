"""Istio's HTTP routing, as a pure function: a VirtualService and a request give a destination.

This is the part of the mesh data plane the simulator must get *right*, because a scenario only
proves something if a routing object the controller wrote sends traffic exactly where Envoy would.
So it follows Istio's documented semantics (``networking.istio.io/v1beta1`` ``VirtualService``):

- ``http`` rules are tried in order; the first rule with no ``match`` or with one matching
  ``match`` entry wins (entries are ORed, the conditions inside an entry ANDed). No rule → no route
  (Envoy answers 404 ``NR``).
- String matches are ``exact``, ``prefix`` or ``regex``; a regex is RE2 and must match the *whole*
  value, as Envoy's ``safe_regex`` does (Python's ``re.fullmatch`` stands in for RE2 on the
  patterns the controller writes). An empty match object ``{}`` only requires presence.
- Header names are case-insensitive; the ``cookie`` header is matched as the raw ``Cookie`` line,
  which is how Flagger's session-affinity rule (``regex: ".*canary.*<value>.*"``) works.
- ``uri`` matches the path without the query string; ``queryParams`` match single parameters
  (``exact``/``regex``, as Istio supports); ``withoutHeaders`` is the negation of ``headers``.
- Destinations are chosen by ``weight``; a single destination without a weight gets everything;
  a destination with weight 0 is never chosen; if every weight is 0 there is nothing to route to.
- ``mirror`` (+ ``mirrorPercentage.value``, or the older ``mirrorPercent``; 100 % by default) and
  ``mirrors[]`` copy a request to another host; the copy's response is ignored by the caller.
- ``headers.request`` / ``headers.response`` (``set``/``add``/``remove``) of the rule and of the
  chosen destination are returned so the caller applies them: that is how a session-affinity
  ``Set-Cookie`` reaches a simulated user.
- A rule with ``delegate: {name, namespace}`` hands the requests it matches to the ``http`` rules
  of that delegate VirtualService (one without ``hosts``), as if Istio's merge of the two were
  inlined: see :func:`route`.

Nothing here does I/O or reads a clock; randomness comes from the ``random.Random`` passed in, so
unit tests can seed it and check the weights statistically.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

__all__ = [
    "CLUSTER_DOMAIN",
    "DelegateResolver",
    "Destination",
    "HeaderOps",
    "Request",
    "RouteDecision",
    "ServiceKey",
    "VirtualServiceRef",
    "canonical_host",
    "hosts_match",
    "match_request",
    "parse_duration",
    "route",
    "select_rule",
    "selector_matches",
    "service_key",
    "string_matches",
]

CLUSTER_DOMAIN = "svc.cluster.local"


@dataclass(frozen=True, slots=True)
class Request:
    """What a sidecar sees of an outgoing HTTP request.

    ``headers`` keys must be lower case (HTTP/2 style, as Envoy normalises them).
    ``source_namespace`` and ``source_labels`` describe the calling workload, for
    ``sourceNamespace``/``sourceLabels`` matches.
    """

    host: str
    path: str = "/"
    method: str = "GET"
    scheme: str = "http"
    headers: Mapping[str, str] = field(default_factory=dict)
    source_namespace: str = ""
    source_labels: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        """A header's value by case-insensitive name, or None when absent."""
        return self.headers.get(name.lower())


@dataclass(frozen=True, slots=True)
class HeaderOps:
    """Header operations, applied in order: ``set`` overwrites, ``add`` appends, ``remove``."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | None) -> HeaderOps:
        """Reads one ``headers.request`` or ``headers.response`` object."""
        spec = spec or {}
        return cls(
            set=tuple((str(k), str(v)) for k, v in (spec.get("set") or {}).items()),
            add=tuple((str(k), str(v)) for k, v in (spec.get("add") or {}).items()),
            remove=tuple(str(name) for name in spec.get("remove") or ()),
        )

    def __add__(self, other: HeaderOps) -> HeaderOps:
        return HeaderOps(self.set + other.set, self.add + other.add, self.remove + other.remove)

    def __bool__(self) -> bool:
        return bool(self.set or self.add or self.remove)

    def apply(self, headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """The header list after these operations (names compared case-insensitively)."""
        result = list(headers)
        for name, value in self.set:
            result = [(k, v) for k, v in result if k.lower() != name.lower()]
            result.append((name, value))
        result.extend(self.add)
        removed = {name.lower() for name in self.remove}
        return [(k, v) for k, v in result if k.lower() not in removed]


@dataclass(frozen=True, slots=True)
class Destination:
    """One ``route[]`` entry: where a share of the traffic goes."""

    host: str
    weight: int
    port: int | None = None
    subset: str | None = None
    request_headers: HeaderOps = HeaderOps()
    response_headers: HeaderOps = HeaderOps()


@dataclass(frozen=True, slots=True, order=True)
class VirtualServiceRef:
    """A VirtualService by namespace and name: the target of an ``http[].delegate``."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


DelegateResolver = Callable[[str, str], Mapping[str, Any] | None]
"""Looks a delegate VirtualService up by ``(namespace, name)``: its ``spec``, or None if absent.

It is how :func:`route` reads other objects while staying free of I/O: the caller answers from
whatever view of the cluster it holds.
"""


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """The outcome of routing one request through a VirtualService.

    ``destination`` is None when the matched rule has nothing to route to (no ``route``, or
    every weight 0): the caller answers 503 as Envoy would. ``mirrors`` are the hosts this
    request is copied to, already drawn against their percentages. Header operations combine
    the rule's and the destination's, rule first.

    ``rule_index`` and ``rule_name`` identify the rule that routed. When a root rule delegated,
    that rule is the delegate's: ``delegate`` names the delegate VirtualService and
    ``rule_index`` counts in its ``http`` list, ``root_rule_index`` is the root rule that
    delegated, and ``rule_name`` is the two names joined with ``-`` as Istio names the merged
    route. Short hosts of a delegate are relative to the delegate's namespace, so the caller
    resolves ``destination`` and ``mirrors`` in :meth:`hosts_namespace`.

    Other meshes' routing sources fill three more fields Istio's VirtualServices never set here:
    ``rewrite_path``/``rewrite_authority`` (a Gateway API ``URLRewrite``: the path and ``Host``
    the backend receives) and ``invalid_backend_status``, the status answered when the rule has
    nothing to route to or routes to a missing Service (Gateway API requires 500; None keeps
    Envoy's 503 ``UH``/``NC``).
    """

    rule_index: int
    rule_name: str
    destination: Destination | None
    mirrors: tuple[str, ...] = ()
    request_headers: HeaderOps = HeaderOps()
    response_headers: HeaderOps = HeaderOps()
    timeout: float | None = None
    delegate: VirtualServiceRef | None = None
    root_rule_index: int | None = None
    rewrite_path: str | None = None
    rewrite_authority: str | None = None
    invalid_backend_status: int | None = None

    def hosts_namespace(self, root_namespace: str) -> str:
        """The namespace short hosts of this decision name Services in: the delegate's when a
        delegate routed (Istio resolves a VirtualService's hosts in its own namespace), else
        ``root_namespace``, the namespace of the VirtualService that was routed through."""
        return self.delegate.namespace if self.delegate is not None else root_namespace


@dataclass(frozen=True, slots=True, order=True)
class ServiceKey:
    """A Kubernetes Service by namespace and name."""

    namespace: str
    name: str

    @property
    def fqdn(self) -> str:
        """``<name>.<namespace>.svc.cluster.local``: Istio's ``destination_service``."""
        return f"{self.name}.{self.namespace}.{CLUSTER_DOMAIN}"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


# -- hosts -------------------------------------------------------------------------------------


def _strip_port(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    if host.startswith("["):  # IPv6 literal
        return host.split("]")[0] + "]"
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() else host


def service_key(
    host: str, *, namespace: str, namespaces: Collection[str] | None = None
) -> ServiceKey | None:
    """The Service a host names, resolved the way cluster DNS and Istio resolve it.

    ``podinfo`` is the Service in ``namespace`` (the namespace of the VirtualService, or of
    the caller); ``podinfo.test``, ``podinfo.test.svc`` and ``podinfo.test.svc.cluster.local``
    name Service ``podinfo`` in ``test``. A two-label name counts as ``<name>.<namespace>``
    only when ``namespaces`` is None or holds that namespace, so ``example.com`` stays an
    external host. Anything else (``app.example.com``) is not a Service: None.
    """
    name = _strip_port(host)
    if not name or name == "*" or name.startswith("*"):
        return None
    if name.endswith("." + CLUSTER_DOMAIN):
        name = name[: -len(CLUSTER_DOMAIN) - 1]
    elif name.endswith(".svc"):
        name = name[: -len(".svc")]
    else:
        labels = name.split(".")
        if len(labels) == 1:
            return ServiceKey(namespace, name)
        if len(labels) == 2 and (namespaces is None or labels[1] in namespaces):
            return ServiceKey(labels[1], labels[0])
        return None
    labels = name.split(".")
    if len(labels) != 2 or not all(labels):
        return None
    return ServiceKey(labels[1], labels[0])


def canonical_host(
    host: str, *, namespace: str, namespaces: Collection[str] | None = None
) -> str:
    """A host in the form Istio compares: a Service's FQDN, or the bare host name otherwise."""
    key = service_key(host, namespace=namespace, namespaces=namespaces)
    return key.fqdn if key is not None else _strip_port(host)


def hosts_match(
    vs_hosts: Iterable[str],
    host: str,
    *,
    vs_namespace: str,
    request_namespace: str,
    namespaces: Collection[str] | None = None,
) -> bool:
    """Whether a VirtualService whose ``hosts`` are ``vs_hosts`` serves requests for ``host``.

    Short names in ``hosts`` are relative to the VirtualService's namespace, short names in the
    request to the caller's, as in Istio; ``*.example.com`` wildcards match by suffix.
    """
    wanted = canonical_host(host, namespace=request_namespace, namespaces=namespaces)
    for candidate in vs_hosts:
        if candidate == "*":
            return True
        if candidate.startswith("*."):
            if wanted.endswith(candidate[1:].lower()):
                return True
            continue
        if canonical_host(candidate, namespace=vs_namespace, namespaces=namespaces) == wanted:
            return True
    return False


def selector_matches(selector: Mapping[str, str] | None, labels: Mapping[str, str] | None) -> bool:
    """A Service's selector selects a pod with ``labels``; an empty selector selects nothing
    (a Service without a selector has no endpoints Kubernetes manages)."""
    if not selector:
        return False
    labels = labels or {}
    return all(labels.get(key) == value for key, value in selector.items())


# -- matching ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


def string_matches(spec: Mapping[str, Any] | None, value: str | None) -> bool:
    """Istio's ``StringMatch``: ``exact``, ``prefix`` or a whole-value ``regex``.

    An absent value never matches; an empty spec (``{}``) matches any present value. A regex
    that does not compile matches nothing (Istio would have rejected the object).
    """
    if value is None:
        return False
    if not spec:
        return True
    if "exact" in spec:
        return value == str(spec["exact"])
    if "prefix" in spec:
        return value.startswith(str(spec["prefix"]))
    if "regex" in spec:
        pattern = _regex(str(spec["regex"]))
        return pattern is not None and pattern.fullmatch(value) is not None
    return True


def match_request(match: Mapping[str, Any], request: Request) -> bool:
    """One ``HTTPMatchRequest``: every condition it sets must hold."""
    path, _, query = request.path.partition("?")
    if "uri" in match:
        uri_spec = match["uri"] or {}
        if match.get("ignoreUriCase"):
            uri_spec = {k: str(v).lower() for k, v in uri_spec.items()}
            path = path.lower()
        if not string_matches(uri_spec, path):
            return False
    if "scheme" in match and not string_matches(match["scheme"], request.scheme):
        return False
    if "method" in match and not string_matches(match["method"], request.method.upper()):
        return False
    if "authority" in match and not string_matches(match["authority"], request.host):
        return False
    for name, spec in (match.get("headers") or {}).items():
        if not string_matches(spec, request.header(name)):
            return False
    for name, spec in (match.get("withoutHeaders") or {}).items():
        if string_matches(spec, request.header(name)):
            return False
    if match.get("queryParams"):
        params = dict(parse_qsl(query, keep_blank_values=True))
        for name, spec in match["queryParams"].items():
            if not string_matches(spec, params.get(name)):
                return False
    if match.get("sourceNamespace") and match["sourceNamespace"] != request.source_namespace:
        return False
    return selector_matches(match["sourceLabels"], request.source_labels) \
        if match.get("sourceLabels") else True


def _applies(rule: Mapping[str, Any], request: Request) -> bool:
    """Whether a rule takes the request: no ``match``, or any entry of it holds."""
    matches = rule.get("match") or []
    return not matches or any(match_request(m or {}, request) for m in matches)


def select_rule(
    http: Sequence[Mapping[str, Any]], request: Request
) -> tuple[int, Mapping[str, Any]] | None:
    """The first ``http`` rule that applies to the request, with its index; None if none does."""
    for index, rule in enumerate(http):
        if _applies(rule, request):
            return index, rule
    return None


# -- choosing ----------------------------------------------------------------------------------


def _destinations(rule: Mapping[str, Any]) -> list[Destination]:
    entries = [entry for entry in rule.get("route") or [] if (entry.get("destination") or {})]
    result = []
    for entry in entries:
        destination = entry["destination"]
        weight = entry.get("weight")
        if weight is None:
            weight = 100 if len(entries) == 1 else 0
        port = (destination.get("port") or {}).get("number")
        headers = entry.get("headers") or {}
        result.append(Destination(
            host=str(destination.get("host") or ""),
            weight=max(0, int(weight)),
            port=int(port) if port is not None else None,
            subset=destination.get("subset"),
            request_headers=HeaderOps.parse(headers.get("request")),
            response_headers=HeaderOps.parse(headers.get("response")),
        ))
    return result


def _percent(value: Any, default: float = 100.0) -> float:
    if value is None:
        return default
    if isinstance(value, Mapping):
        value = value.get("value")
        if value is None:
            return 0.0  # an empty Percent message is 0 %
    return float(value)


def _mirrors(rule: Mapping[str, Any], rng: random.Random) -> tuple[str, ...]:
    drawn: list[str] = []
    mirror = rule.get("mirror") or {}
    if mirror.get("host"):
        if "mirrorPercentage" in rule:
            percent = _percent(rule["mirrorPercentage"])
        else:
            percent = _percent(rule.get("mirrorPercent", rule.get("mirror_percent")))
        if rng.random() * 100 < percent:
            drawn.append(str(mirror["host"]))
    for entry in rule.get("mirrors") or []:
        host = (entry.get("destination") or {}).get("host")
        if host and rng.random() * 100 < _percent(entry.get("percentage")):
            drawn.append(str(host))
    return tuple(drawn)


def parse_duration(text: str | None) -> float | None:
    """A protobuf duration string (``"10s"``, ``"1.5s"``, ``"250ms"``, ``"1m"``) in seconds."""
    if not text:
        return None
    found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)\s*", str(text))
    if not found:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[found.group(2)]
    return float(found.group(1)) * scale


_INHERITED = ("timeout", "headers", "mirror", "mirrorPercent", "mirror_percent",
              "mirrorPercentage", "mirrors")
"""Fields of a root rule that a delegate rule inherits when it leaves them unset, as Istio's merge
does (``mergeHTTPRoute`` in istio/istio ``pilot/pkg/model/virtualservice.go``); of the fields
Istio also inherits, ``rewrite``, ``retries``, ``fault``, ``corsPolicy`` and ``directResponse``
are not simulated."""


def _qualified(host: str, namespace: str) -> str:
    """A short host as the FQDN it means in ``namespace``: Istio resolves each VirtualService's
    short names in its own namespace before merging a delegate into its root."""
    if not host or "." in host or "*" in host:
        return host
    return f"{host}.{namespace}.{CLUSTER_DOMAIN}"


def _unset(value: Any) -> bool:
    """Unset as protobuf sees a field: absent, null, or an empty list."""
    return value is None or value == []


def _inherit(
    root: Mapping[str, Any], rule: Mapping[str, Any], root_namespace: str | None
) -> dict[str, Any]:
    """A delegate's rule completed with the root rule's fields it leaves unset (``_INHERITED``).

    An inherited mirror host is the root's, relative to the root's namespace, so a short one is
    qualified before it joins a rule whose hosts are resolved in the delegate's namespace.
    """
    merged = dict(rule)
    for name in _INHERITED:
        value: Any = root.get(name)
        if not _unset(merged.get(name)) or _unset(value):
            continue
        if root_namespace is not None and name == "mirror":
            value = {**value, "host": _qualified(str(value.get("host") or ""), root_namespace)}
        elif root_namespace is not None and name == "mirrors":
            value = [{**entry, "destination": {
                **(entry.get("destination") or {}),
                "host": _qualified(str((entry.get("destination") or {}).get("host") or ""),
                                   root_namespace)}} for entry in value]
        merged[name] = value
    return merged


def _merged_name(root: str, delegate: str) -> str:
    """Istio's name for a merged route: ``<root>-<delegate>``, or whichever of the two is set."""
    if root and delegate:
        return f"{root}-{delegate}"
    return delegate or root


def _decide(
    index: int,
    name: str,
    rule: Mapping[str, Any],
    rng: random.Random,
    *,
    delegate: VirtualServiceRef | None = None,
    root_rule_index: int | None = None,
) -> RouteDecision:
    """The weighted choice, mirrors, header operations and timeout of the rule that routes."""
    destinations = [d for d in _destinations(rule) if d.weight > 0]
    chosen: Destination | None = None
    if destinations:
        chosen = rng.choices(destinations, weights=[d.weight for d in destinations])[0]
    headers = rule.get("headers") or {}
    request_ops = HeaderOps.parse(headers.get("request"))
    response_ops = HeaderOps.parse(headers.get("response"))
    if chosen is not None:
        request_ops = request_ops + chosen.request_headers
        response_ops = response_ops + chosen.response_headers
    return RouteDecision(
        rule_index=index,
        rule_name=name,
        destination=chosen,
        mirrors=_mirrors(rule, rng),
        request_headers=request_ops,
        response_headers=response_ops,
        timeout=parse_duration(rule.get("timeout")),
        delegate=delegate,
        root_rule_index=root_rule_index,
    )


def _delegated(
    index: int,
    root: Mapping[str, Any],
    request: Request,
    rng: random.Random,
    namespace: str | None,
    delegates: DelegateResolver | None,
) -> RouteDecision | None:
    """Routes a request that matched root rule ``index`` through that rule's delegate.

    None when the delegate cannot route it (absent, not a delegate, or none of its rules
    matches), so that the caller goes on with the root's next rule.
    """
    target = root["delegate"] or {}
    name = str(target.get("name") or "")
    if delegates is None or not name:
        return None
    delegate_namespace = str(target.get("namespace") or namespace or "")
    if not delegate_namespace:
        raise ValueError(f"delegate {name!r} names no namespace and the root's is not given")
    spec = delegates(delegate_namespace, name)
    # Only a VirtualService without hosts is a delegate; one with hosts is a root of its own.
    if spec is None or spec.get("hosts"):
        return None
    selected = select_rule(spec.get("http") or [], request)  # the root's match already held
    if selected is None:
        return None
    sub_index, rule = selected
    # One level only: the rule's own ``delegate``, if any, is not followed (_decide ignores it),
    # so without a ``route`` such a rule routes nowhere.
    return _decide(
        sub_index, _merged_name(str(root.get("name") or ""), str(rule.get("name") or "")),
        _inherit(root, rule, namespace), rng,
        delegate=VirtualServiceRef(delegate_namespace, name), root_rule_index=index)


def route(
    spec: Mapping[str, Any],
    request: Request,
    rng: random.Random,
    *,
    namespace: str | None = None,
    delegates: DelegateResolver | None = None,
) -> RouteDecision | None:
    """Routes one request through a VirtualService ``spec``; None when no rule matches (404 NR).

    ``namespace`` is the VirtualService's own, where a ``delegate`` without a namespace is
    looked up; ``delegates`` finds delegate VirtualServices (without it, every delegate is
    missing). Delegation follows Istio, which merges the delegate's rules into the root in place
    of the delegating rule:

    - a root rule that matches and carries ``delegate`` routes through the delegate's ``http``
      rules, the first that matches winning (Istio ANDs each delegate match with the root's,
      and the root's already held);
    - a missing delegate, one with ``hosts`` (so not a delegate), or one of whose rules none
      matches, drops the root rule: the next root rule is tried, and with none left, no route;
    - a delegate rule inherits ``timeout``, ``headers`` and the mirror fields from the root rule
      only where it leaves them unset: a rule that sets them replaces the root's;
    - one level only: a delegate rule that delegates again is not followed (Istio rejects it).
    """
    for index, rule in enumerate(spec.get("http") or []):
        if not _applies(rule, request):
            continue
        if rule.get("delegate") is not None:
            decision = _delegated(index, rule, request, rng, namespace, delegates)
            if decision is not None:
                return decision
            continue
        return _decide(index, str(rule.get("name") or ""), rule, rng)
    return None
