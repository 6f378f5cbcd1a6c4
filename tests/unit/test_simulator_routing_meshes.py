"""Simulated SMI, Gateway API and Kuma routing, from objects shaped as Flagger writes them
(the golden corpus's TrafficSplits, HTTPRoutes and TrafficRoutes).

Weights are checked statistically over many draws of a seeded RNG with tolerances of about
five standard deviations: a swapped or ignored weight fails, and the seed keeps runs identical.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from e2e.simulator.routing import Request, RouteDecision, ServiceKey
from e2e.simulator.routing_gatewayapi import (
    GatewayAPISource,
    hostname_matches,
    route_http,
    select_match,
)
from e2e.simulator.routing_kuma import KumaSource, route_traffic, service_tag, tag_service
from e2e.simulator.routing_smi import SmiSource, parse_quantity, route_split, split_weights
from e2e.simulator.world import World

DRAWS = 10_000
NS = "test"


def shares(decide: Callable[[random.Random], RouteDecision | None],
           draws: int = DRAWS) -> dict[str, float]:
    rng = random.Random(7)
    counts: Counter[str] = Counter()
    for _ in range(draws):
        decision = decide(rng)
        assert decision is not None
        counts[decision.destination.host if decision.destination else "-"] += 1
    return {host: n / draws for host, n in counts.items()}


# -- SMI -------------------------------------------------------------------------------------


def traffic_split(primary: Any, canary: Any, *, version: str = "v1alpha1") -> dict[str, Any]:
    """Flagger's TrafficSplit (golden linkerd/smi-*): canary first, weights as strings in
    v1alpha1 and integers from v1alpha2 on."""
    return {
        "apiVersion": f"split.smi-spec.io/{version}", "kind": "TrafficSplit",
        "metadata": {"name": "podinfo", "namespace": NS},
        "spec": {"service": "podinfo", "backends": [
            {"service": "podinfo-canary", "weight": canary},
            {"service": "podinfo-primary", "weight": primary}]},
    }


@pytest.mark.parametrize(("primary", "canary"), [("80", "20"), (80, 20), ("800m", "200m")])
def test_traffic_split_follows_relative_weights(primary: Any, canary: Any) -> None:
    spec = traffic_split(primary, canary)["spec"]
    result = shares(lambda rng: route_split(spec, rng))
    assert result["podinfo-canary"] == pytest.approx(0.2, abs=0.02)
    assert result["podinfo-primary"] == pytest.approx(0.8, abs=0.02)


def test_traffic_split_weights_are_relative_not_percentages() -> None:
    spec = traffic_split("1", "3")["spec"]
    assert shares(lambda rng: route_split(spec, rng))["podinfo-canary"] == pytest.approx(
        0.75, abs=0.02)


def test_traffic_split_weight_zero_gets_nothing_and_all_zero_has_no_backend() -> None:
    spec = traffic_split("100", "0")["spec"]
    assert shares(lambda rng: route_split(spec, rng)) == {"podinfo-primary": 1.0}
    spec = traffic_split("0", "0")["spec"]
    assert shares(lambda rng: route_split(spec, rng), draws=10) == {"-": 1.0}


def test_quantities() -> None:
    assert parse_quantity("500m") == Decimal("0.5")
    assert parse_quantity("1k") == 1000
    assert parse_quantity(7) == 7
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity("ten")
    assert split_weights({"backends": [{"service": "a"}]}) == [("a", 0)]


def test_traffic_split_claims_its_apex_only() -> None:
    source, split = SmiSource(), traffic_split("100", "0")
    for host in ("podinfo", "podinfo.test", "podinfo.test.svc.cluster.local"):
        assert source.claims(split, host, namespace=NS, namespaces=[NS])
    assert not source.claims(split, "podinfo-canary", namespace=NS, namespaces=[NS])
    assert not source.claims(split, "podinfo", namespace="other", namespaces=[NS, "other"])
    assert source.stream_host(split) == "podinfo.test"


# -- Gateway API -----------------------------------------------------------------------------


def backend(name: str, weight: int | None = None, **extra: Any) -> dict[str, Any]:
    ref: dict[str, Any] = {"group": "", "kind": "Service", "name": name, "port": 9898, **extra}
    if weight is not None:
        ref["weight"] = weight
    return ref


def http_route(*rules: dict[str, Any], hostnames: tuple[str, ...] = ("www.example.com",),
               parent: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "podinfo", "namespace": NS},
        "spec": {"hostnames": list(hostnames),
                 "parentRefs": [parent or {"group": "gateway.networking.k8s.io",
                                           "kind": "Gateway", "name": "gateway",
                                           "namespace": NS}],
                 "rules": list(rules)},
    }


def weighted(primary: int, canary: int, **rule: Any) -> dict[str, Any]:
    return {"backendRefs": [backend("podinfo-primary", primary),
                            backend("podinfo-canary", canary)], **rule}


PRIMARY_FQDN = "podinfo-primary.test.svc.cluster.local"
CANARY_FQDN = "podinfo-canary.test.svc.cluster.local"
API = {"method": "GET", "path": {"type": "PathPrefix", "value": "/api"}}
AB_MATCHES = [  # golden gatewayapi-v1/ab-header-cookie-query, after the A/B merge
    {**API, "headers": [{"name": "x-canary", "type": "Exact", "value": "insider"}]},
    {**API, "headers": [{"name": "cookie", "type": "RegularExpression",
                         "value": "^(.*?;)?(canary=always)(;.*)?$"}]},
    {**API, "queryParams": [{"name": "canary", "type": "Exact", "value": "true"}]},
]


def http(spec: dict[str, Any], request: Request) -> Callable[[random.Random], Any]:
    return lambda rng: route_http(spec, request, rng, namespace=NS)


def test_httproute_weights_split_between_primary_and_canary() -> None:
    spec = http_route(weighted(70, 30, matches=[{"path": {"type": "PathPrefix",
                                                           "value": "/"}}]))["spec"]
    result = shares(http(spec, Request("www.example.com", "/api/info")))
    assert result[CANARY_FQDN] == pytest.approx(0.3, abs=0.02)
    assert result[PRIMARY_FQDN] == pytest.approx(0.7, abs=0.02)


def test_httproute_ab_rule_takes_insiders_and_the_rest_go_to_primary() -> None:
    spec = http_route(weighted(0, 100, matches=AB_MATCHES),
                      {"backendRefs": [backend("podinfo-primary", 100)], "matches": [API]})["spec"]
    for request in (Request("www.example.com", "/api", headers={"x-canary": "insider"}),
                    Request("www.example.com", "/api/x", headers={"cookie": "canary=always; a=b"}),
                    Request("www.example.com", "/api?canary=true")):
        assert shares(http(spec, request), draws=50) == {CANARY_FQDN: 1.0}, request
    for request in (Request("www.example.com", "/api", headers={"x-canary": "outsider"}),
                    Request("www.example.com", "/api", headers={"cookie": "canary=never"}),
                    Request("www.example.com", "/api?canary=false")):
        assert shares(http(spec, request), draws=50) == {PRIMARY_FQDN: 1.0}, request
    # Not GET, or outside /api: no rule matches (404).
    assert route_http(spec, Request("www.example.com", "/api", method="POST"),
                      random.Random(1), namespace=NS) is None
    assert route_http(spec, Request("www.example.com", "/apix"), random.Random(1),
                      namespace=NS) is None


def test_httproute_precedence_is_the_specs_not_list_order() -> None:
    rules = [
        {"backendRefs": [backend("prefix")], "matches": [{"path": {"type": "PathPrefix",
                                                                    "value": "/"}}]},
        {"backendRefs": [backend("longer")], "matches": [{"path": {"type": "PathPrefix",
                                                                    "value": "/api"}}]},
        {"backendRefs": [backend("header")], "matches": [{"path": {"type": "PathPrefix",
                                                                    "value": "/api"},
                                                           "headers": [{"name": "X-A",
                                                                        "value": "1"}]}]},
        {"backendRefs": [backend("exact")], "matches": [{"path": {"type": "Exact",
                                                                   "value": "/api"}}]},
    ]
    def chosen(request: Request) -> int:
        found = select_match(rules, request)
        assert found is not None
        return found[0]
    assert chosen(Request("h", "/api")) == 3
    assert chosen(Request("h", "/api/x", headers={"x-a": "1"})) == 2
    assert chosen(Request("h", "/api/x")) == 1
    assert chosen(Request("h", "/other")) == 0


def test_httproute_filters_mirror_rewrite_headers_and_timeout() -> None:
    # golden gatewayapi-v1/filters-rewrite-headers-cors, with a mirror percentage and timeout
    filters = [
        {"type": "RequestHeaderModifier", "requestHeaderModifier": {
            "add": [{"name": "x-added", "value": "a"}], "remove": ["x-remove"],
            "set": [{"name": "x-set", "value": "s"}]}},
        {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
            "add": [{"name": "x-resp", "value": "r"}], "remove": ["server"]}},
        {"type": "URLRewrite", "urlRewrite": {"hostname": "backend.example.com", "path": {
            "type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}},
        {"type": "RequestMirror", "requestMirror": {
            "backendRef": backend("podinfo-shadow"), "percent": 25}},
        {"type": "CORS", "cors": {"allowOrigins": ["https://example.com"]}},
    ]
    spec = http_route(weighted(100, 0, filters=filters, timeouts={"request": "2s"},
                               matches=[{"path": {"type": "PathPrefix", "value": "/api"}}]))
    decision = route_http(spec["spec"], Request("www.example.com", "/api/info?x=1"),
                          random.Random(3), namespace=NS)
    assert decision is not None
    assert decision.destination is not None
    assert decision.destination.host == PRIMARY_FQDN
    assert decision.rewrite_path == "/info?x=1"
    assert decision.rewrite_authority == "backend.example.com"
    assert decision.timeout == 2.0
    headers = decision.request_headers.apply([("x-remove", "1"), ("x-set", "old")])
    assert sorted(headers) == [("x-added", "a"), ("x-set", "s")]
    assert decision.response_headers.apply([("server", "x")]) == [("x-resp", "r")]
    rng = random.Random(5)
    copies = Counter(host for _ in range(DRAWS)
                     for host in getattr(route_http(spec["spec"], Request("www.example.com",
                                                                         "/api"),
                                                    rng, namespace=NS), "mirrors", ()))
    assert set(copies) == {"podinfo-shadow.test.svc.cluster.local"}
    assert copies["podinfo-shadow.test.svc.cluster.local"] / DRAWS == pytest.approx(
        0.25, abs=0.03)


def test_httproute_without_valid_backends_answers_500() -> None:
    spec = http_route({"backendRefs": [backend("podinfo-primary", 0)]})["spec"]
    decision = route_http(spec, Request("www.example.com", "/"), random.Random(1), namespace=NS)
    assert decision is not None
    assert (decision.destination, decision.invalid_backend_status) == (None, 500)


def test_httproute_hostnames_and_gamma_parents() -> None:
    source = GatewayAPISource()
    route = http_route(weighted(100, 0), hostnames=("www.example.com", "*.example.org"))
    for host in ("www.example.com", "WWW.example.com:8080", "a.b.example.org"):
        assert source.claims(route, host, namespace=NS, namespaces=[NS]), host
    for host in ("example.org", "podinfo", "other.com"):
        assert not source.claims(route, host, namespace=NS, namespaces=[NS]), host
    assert source.stream_host(route) == "www.example.com"
    gamma = http_route(weighted(100, 0), hostnames=(),
                       parent={"group": "", "kind": "Service", "name": "podinfo", "port": 9898})
    assert source.claims(gamma, "podinfo.test", namespace="other", namespaces=[NS, "other"])
    assert not source.claims(gamma, "podinfo-canary", namespace=NS, namespaces=[NS])
    assert source.stream_host(gamma) == "podinfo.test"
    assert hostname_matches([], "anything")


# -- Kuma ------------------------------------------------------------------------------------


def traffic_route(primary: int, canary: int) -> dict[str, Any]:
    """Flagger's TrafficRoute (golden kuma/canary-stepweight): cluster-scoped."""
    return {
        "apiVersion": "kuma.io/v1alpha1", "kind": "TrafficRoute", "mesh": "default",
        "metadata": {"name": "podinfo"},
        "spec": {
            "sources": [{"match": {"kuma.io/service": "*"}}],
            "destinations": [{"match": {"kuma.io/service": "podinfo_test_svc_9898"}}],
            "conf": {"split": [
                {"weight": primary, "destination": {
                    "kuma.io/service": "podinfo-primary_test_svc_9898"}},
                {"weight": canary, "destination": {
                    "kuma.io/service": "podinfo-canary_test_svc_9898"}}]},
        },
    }


def test_traffic_route_splits_between_service_tags() -> None:
    spec = traffic_route(80, 20)["spec"]
    result = shares(lambda rng: route_traffic(spec, rng))
    assert result[CANARY_FQDN] == pytest.approx(0.2, abs=0.02)
    assert result[PRIMARY_FQDN] == pytest.approx(0.8, abs=0.02)
    spec = traffic_route(100, 0)["spec"]
    assert shares(lambda rng: route_traffic(spec, rng), draws=100) == {PRIMARY_FQDN: 1.0}


def test_traffic_route_default_destination() -> None:
    spec = {"conf": {"destination": {"kuma.io/service": "podinfo-primary_test_svc_9898"}}}
    assert shares(lambda rng: route_traffic(spec, rng), draws=10) == {PRIMARY_FQDN: 1.0}


def test_service_tags_resolve_to_services() -> None:
    key = ServiceKey("kuma-ns", "my-app-primary")
    assert service_tag(key, 80) == "my-app-primary_kuma-ns_svc_80"
    assert tag_service(service_tag(key, 80)) == key
    assert tag_service("*") is None
    assert tag_service("podinfo_svc_x") is None


def test_traffic_route_claims_its_destination_service_from_any_namespace() -> None:
    source, route = KumaSource(), traffic_route(100, 0)
    assert source.claims(route, "podinfo.test", namespace="elsewhere", namespaces=[NS])
    assert source.claims(route, "podinfo", namespace=NS, namespaces=[NS])
    assert not source.claims(route, "podinfo-canary", namespace=NS, namespaces=[NS])
    assert source.stream_host(route) == "podinfo.test"


def test_world_watches_cluster_scoped_traffic_routes() -> None:
    world = World.of([NS], [traffic_route(50, 50)], source=KumaSource())
    found = world.virtual_service_for("podinfo", namespace=NS)
    assert found is not None
    assert found["metadata"]["name"] == "podinfo"
    assert world.virtual_service_for("other", namespace=NS) is None
