"""The simulator's Contour HTTPProxy routing, from proxies shaped as the golden corpus shows
Flagger writing them (``contour/*``), and Contour's documented semantics around them."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from e2e.simulator.meshes import MESHES
from e2e.simulator.routing import Request, ServiceKey
from e2e.simulator.routing_contour import (
    HTTP_PROXIES,
    ContourSource,
    cluster_name,
    invalid_reason,
    route_proxy,
)


def service(name: str, weight: int | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name, "port": 80,
        "requestHeadersPolicy": {"set": [{"name": "l5d-dst-override",
                                          "value": f"{name}.test.svc.cluster.local:80"}]}}
    if weight:
        entry["weight"] = weight
    return entry


def weighted(primary: int, canary: int, **route: Any) -> dict[str, Any]:
    return {"conditions": [{"prefix": "/"}],
            "services": [service("podinfo-primary", primary), service("podinfo-canary", canary)],
            **route}


def proxy(*routes: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "projectcontour.io/v1", "kind": "HTTPProxy",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"routes": list(routes), **spec}}


def shares(spec: dict[str, Any], request: Request, n: int = 2000) -> Counter[str | None]:
    rng = random.Random(7)
    found: Counter[str | None] = Counter()
    for _ in range(n):
        decision = route_proxy(spec, request, rng, namespace="test")
        found[decision.destination.host if decision and decision.destination else None] += 1
    return found


PRIMARY = "podinfo-primary.test.svc.cluster.local"
CANARY = "podinfo-canary.test.svc.cluster.local"


def test_the_weights_split_the_route_and_a_missing_weight_gets_nothing() -> None:
    found = shares(proxy(weighted(80, 20))["spec"], Request(host="podinfo.test"))
    assert 0.75 < found[PRIMARY] / 2000 < 0.85
    assert found[PRIMARY] + found[CANARY] == 2000
    assert shares(proxy(weighted(100, 0))["spec"], Request(host="podinfo.test")) == {
        PRIMARY: 2000}
    assert shares(proxy(weighted(0, 100))["spec"], Request(host="podinfo.test")) == {
        CANARY: 2000}


def test_services_without_any_weight_share_evenly() -> None:
    found = shares(proxy(weighted(0, 0))["spec"], Request(host="podinfo.test"))
    assert 0.4 < found[PRIMARY] / 2000 < 0.6


def test_ab_as_flagger_writes_it_with_one_header() -> None:
    ab = proxy(
        {"conditions": [{"prefix": "/", "header": {"name": "x-canary", "exact": "insider"}}],
         "services": [service("podinfo-primary", 0), service("podinfo-canary", 100)]},
        weighted(100, 0))["spec"]
    insider = Request(host="podinfo.test", headers={"x-canary": "insider"})
    assert shares(ab, insider, 50) == {CANARY: 50}
    assert shares(ab, Request(host="podinfo.test"), 50) == {PRIMARY: 50}
    other = Request(host="podinfo.test", headers={"x-canary": "outsider"})
    assert shares(ab, other, 50) == {PRIMARY: 50}


def test_several_prefix_conditions_in_one_route_make_the_proxy_invalid() -> None:
    # contour/ab-header: Flagger writes {prefix: /, header} per header, which Contour refuses.
    ab = proxy(
        {"conditions": [{"prefix": "/", "header": {"name": "x-canary", "exact": "insider"}},
                        {"prefix": "/", "header": {"name": "user-agent",
                                                   "contains": "Firefox"}}],
         "services": [service("podinfo-primary", 0), service("podinfo-canary", 100)]},
        weighted(100, 0))["spec"]
    assert invalid_reason(ab) == (
        "route: more than one prefix is not allowed in a condition block")
    assert route_proxy(ab, Request(host="podinfo.test"), random.Random(1),
                       namespace="test") is None


@pytest.mark.parametrize(("condition", "headers", "expected"), [
    ({"name": "X-Canary", "exact": "insider"}, {"x-canary": "insider"}, True),
    ({"name": "x-canary", "exact": "insider"}, {"x-canary": "Insider"}, False),
    ({"name": "x-canary", "exact": "insider", "ignoreCase": True}, {"x-canary": "Insider"}, True),
    ({"name": "x-canary", "notexact": "insider"}, {"x-canary": "other"}, True),
    ({"name": "x-canary", "notexact": "insider"}, {}, False),
    ({"name": "user-agent", "contains": "Firefox"}, {"user-agent": "Mozilla Firefox/1"}, True),
    ({"name": "user-agent", "notcontains": "Firefox"}, {"user-agent": "curl"}, True),
    ({"name": "user-agent", "notcontains": "Firefox"}, {}, False),
    ({"name": "user-agent", "notcontains": "Firefox", "treatMissingAsEmpty": True}, {}, True),
    ({"name": "cookie", "contains": "canary"}, {"cookie": "a=1; canary=always"}, True),
    ({"name": "x-user", "present": True}, {"x-user": ""}, True),
    ({"name": "x-user", "present": True}, {}, False),
    ({"name": "x-user", "notpresent": True}, {}, True),
    ({"name": "x-user", "regex": "a.*"}, {"x-user": "abc"}, True),
    ({"name": "x-user", "regex": "b"}, {"x-user": "abc"}, False),
    ({"name": "x-user"}, {}, True),  # nothing to compare (Flagger's regex match): any request
])
def test_header_conditions(condition: dict[str, Any], headers: dict[str, str],
                           expected: bool) -> None:
    spec = proxy({"conditions": [{"header": condition}],
                  "services": [service("podinfo-canary", 100)]})["spec"]
    decision = route_proxy(spec, Request(host="podinfo.test", headers=headers),
                           random.Random(1), namespace="test")
    assert (decision is not None) is expected


def test_prefixes_match_path_segments_and_the_longest_route_wins() -> None:
    spec = proxy(weighted(100, 0),
                 {"conditions": [{"prefix": "/api"}],
                  "services": [service("podinfo-canary", 100)]})["spec"]
    assert shares(spec, Request(host="podinfo.test", path="/api/info"), 20) == {CANARY: 20}
    assert shares(spec, Request(host="podinfo.test", path="/api"), 20) == {CANARY: 20}
    assert shares(spec, Request(host="podinfo.test", path="/apix"), 20) == {PRIMARY: 20}
    only_api = proxy({"conditions": [{"prefix": "/api"}],
                      "services": [service("podinfo-canary", 100)]})["spec"]
    assert route_proxy(only_api, Request(host="podinfo.test", path="/other"),
                       random.Random(1), namespace="test") is None


def test_header_operations_timeout_and_mirror() -> None:
    spec = proxy(weighted(100, 0, timeoutPolicy={"response": "15s", "idle": "5m"},
                          responseHeadersPolicy={"set": [{"name": "x-via", "value": "contour"}]},
                          ))["spec"]
    spec["routes"][0]["services"].append({"name": "podinfo-shadow", "port": 80, "mirror": True})
    decision = route_proxy(spec, Request(host="podinfo.test"), random.Random(1),
                           namespace="test")
    assert decision is not None
    assert decision.destination is not None
    assert decision.destination.host == PRIMARY
    assert decision.timeout == 15.0
    assert decision.request_headers.set == (
        ("l5d-dst-override", "podinfo-primary.test.svc.cluster.local:80"),)
    assert decision.response_headers.set == (("x-via", "contour"),)
    assert decision.mirrors == ("podinfo-shadow.test.svc.cluster.local",)


def test_the_source_claims_the_service_host_or_the_virtual_host() -> None:
    source = ContourSource()
    obj = proxy(weighted(100, 0))
    for host in ("podinfo", "podinfo.test", "podinfo.test.svc.cluster.local"):
        assert source.claims(obj, host, namespace="test", namespaces=["test"])
    assert not source.claims(obj, "podinfo-canary.test", namespace="test", namespaces=["test"])
    assert not source.claims(obj, "podinfo.other", namespace="test",
                             namespaces=["test", "other"])
    assert source.stream_host(obj) == "podinfo.test"
    root = proxy(weighted(100, 0), virtualhost={"fqdn": "app.example.com"})
    assert source.claims(root, "app.example.com:80", namespace="test", namespaces=["test"])
    assert source.stream_host(root) == "app.example.com"
    assert MESHES["contour"].source is ContourSource
    assert ContourSource.resource == HTTP_PROXIES


def test_cluster_names_are_contours_stat_names() -> None:
    assert cluster_name(ServiceKey("test", "podinfo-canary"), 80) == "test_podinfo-canary_80"
