"""The simulator's APISIX: ApisixRoutes routed by match and priority, and APISIX's metrics.

Routes are shaped as the golden corpus shows them (``apisix/canary-stepweight``): the user's
ApisixRoute ``podinfo`` to the apex Service, and Flagger's ``podinfo-podinfo-canary`` with
priority 10000 and weighted ``-primary``/``-canary`` backends. The exported series are checked
against the queries flaggerpy's ApisixObserver renders, PromQL matcher semantics included.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from e2e.simulator.meshes import MESHES
from e2e.simulator.metrics import Exchange, Peer, pod_name
from e2e.simulator.routing import Request, ServiceKey
from e2e.simulator.routing_apisix import (
    ApisixAdapter,
    ApisixSource,
    host_matches,
    path_matches,
    route_request,
)
from e2e.simulator.world import World
from flaggerpy.analysis import MetricTemplateModel
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.providers.apisix import ApisixObserver
from flaggerpy.templating import render

HOST = "app.example.com"
MODEL = MetricTemplateModel(name="podinfo", namespace="test", target="podinfo",
                            service="podinfo", ingress="podinfo", route="podinfo", interval="1m")


def http(name: str, *backends: tuple[str, int | None], priority: int | None = None,
         hosts: list[str] | None = None, paths: list[str] | None = None,
         **match: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "match": {"hosts": [HOST] if hosts is None else hosts,
                  "paths": ["/*"] if paths is None else paths, **match},
        "backends": [{"serviceName": s, "servicePort": 80,
                      **({} if w is None else {"weight": w})} for s, w in backends]}
    if priority is not None:
        entry["priority"] = priority
    return entry


def route(name: str, *entries: dict[str, Any], created: str = "2026-01-01T00:00:00Z",
          namespace: str = "test") -> dict[str, Any]:
    return {"apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
            "spec": {"http": list(entries)}}


USER = route("podinfo", http("method", ("podinfo", None)))


def canary_route(primary: int, canary: int) -> dict[str, Any]:
    return route("podinfo-podinfo-canary",
                 http("method", ("podinfo-primary", primary), ("podinfo-canary", canary),
                      priority=10000, methods=["GET"]),
                 created="2026-01-02T00:00:00Z")


def destinations(obj: dict[str, Any], request: Request, n: int = 2000) -> Counter[str]:
    rng = random.Random(7)
    found: Counter[str] = Counter()
    for _ in range(n):
        decision = route_request(obj, request, rng)
        assert decision is not None
        found[decision.destination.host if decision.destination else "none"] += 1
    return found


def test_hosts_and_paths_match_as_apisix_documents() -> None:
    assert host_matches("app.example.com", "APP.example.com:8080")
    assert host_matches("*.example.com", "app.example.com")
    assert not host_matches("*.example.com", "a.b.example.com")
    assert not host_matches("*.example.com", "example.com")
    assert path_matches("/*", "/")
    assert path_matches("/api*", "/api/info?x=1")
    assert path_matches("/exact", "/exact")
    assert not path_matches("/exact", "/exact/more")


def test_backends_share_the_traffic_by_weight() -> None:
    found = destinations(canary_route(70, 30), Request(HOST))
    share = found["podinfo-canary.test.svc.cluster.local"] / sum(found.values())
    assert 0.26 < share < 0.34, found
    assert set(found) == {"podinfo-canary.test.svc.cluster.local",
                          "podinfo-primary.test.svc.cluster.local"}


def test_a_weight_of_zero_gets_nothing_and_no_weight_is_the_default_hundred() -> None:
    assert set(destinations(canary_route(100, 0), Request(HOST))) == {
        "podinfo-primary.test.svc.cluster.local"}
    both = route("r", http("x", ("a", None), ("b", 100)))
    assert set(destinations(both, Request(HOST), 200)) == {
        "a.test.svc.cluster.local", "b.test.svc.cluster.local"}
    dead = route("r", http("x", ("a", 0)))
    assert destinations(dead, Request(HOST), 5) == Counter(none=5)


def test_the_matching_http_route_of_highest_priority_wins_and_names_the_rule() -> None:
    obj = route("r", http("low", ("low", None), paths=["/*"]),
                http("high", ("high", None), paths=["/api/*"], priority=5),
                http("other-host", ("other", None), hosts=["x.example.com"], priority=9))
    decision = route_request(obj, Request(HOST, path="/api/info"), random.Random(1))
    assert decision is not None
    assert (decision.rule_index, decision.rule_name) == (1, "high")
    decision = route_request(obj, Request(HOST, path="/web"), random.Random(1))
    assert decision is not None
    assert decision.rule_name == "low"
    assert route_request(obj, Request("nowhere.example.com"), random.Random(1)) is None


def test_methods_and_exprs_must_all_hold() -> None:
    exprs = [{"subject": {"scope": "Header", "name": "x-canary"}, "op": "Equal",
              "value": "insider"}]
    obj = route("r", http("h", ("b", None), methods=["GET"], exprs=exprs))
    assert route_request(obj, Request(HOST, headers={"x-canary": "insider"}),
                         random.Random(1)) is not None
    assert route_request(obj, Request(HOST), random.Random(1)) is None
    assert route_request(obj, Request(HOST, method="POST", headers={"x-canary": "insider"}),
                         random.Random(1)) is None


def test_the_canary_route_outranks_the_users_route_for_its_host() -> None:
    source = ApisixSource()
    canary = canary_route(60, 40)
    assert source.claims(USER, HOST, namespace="test", namespaces=["test"])
    assert source.claims(canary, HOST, namespace="test", namespaces=["test"])
    assert not source.claims(USER, "podinfo.test", namespace="test", namespaces=["test"])
    assert source.rank(canary, HOST) < source.rank(USER, HOST)
    assert source.stream_host(canary) == HOST
    world = World.of(["test"], [USER, canary], source=source)
    chosen = world.virtual_service_for(HOST, namespace="test")
    assert chosen is not None
    assert chosen["metadata"]["name"] == "podinfo-podinfo-canary"
    # Without the canary route, the user's route serves the host.
    alone = World.of(["test"], [USER], source=source)
    chosen = alone.virtual_service_for(HOST, namespace="test")
    assert chosen is not None
    assert chosen["metadata"]["name"] == "podinfo"


def test_apisix_is_a_simulated_mesh() -> None:
    assert MESHES["apisix"].source is ApisixSource
    assert MESHES["apisix"].adapter is ApisixAdapter


# -- metrics ------------------------------------------------------------------------------------

SOURCE = Peer("traffic-simulator", "simulator", {"app": "traffic-simulator"})
CANARY = Peer("podinfo", "test", {"app": "podinfo"})
PRIMARY = Peer("podinfo-primary", "test", {"app": "podinfo-primary"})
CANARY_ROUTE = ObjectKey("test", "podinfo-podinfo-canary")
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')

Sample = tuple[str, dict[str, str], float]


def exchange(destination: Peer | None, service: str, code: int, *,
             routed_by: ObjectKey | None = CANARY_ROUTE) -> Exchange:
    return Exchange(SOURCE, HOST, ServiceKey("test", service), destination, code, 20.0,
                    service_port=80, routed_by=routed_by, rule="method")


def samples(registry: CollectorRegistry) -> list[Sample]:
    text = generate_latest(registry).decode()
    return [(s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text) for s in family.samples]


def selected(query: str, series: list[Sample]) -> list[list[Sample]]:
    """For each ``metric{matchers}`` selector of ``query``, the samples it selects."""
    def matches(matchers: str, labels: dict[str, str]) -> bool:
        for name, op, value in _MATCHER.findall(matchers):
            actual = labels.get(name, "")
            if (op == "=" and actual != value) or (op == "!=" and actual == value):
                return False
            if op in ("=~", "!~") and (re.fullmatch(value, actual) is not None) != (op == "=~"):
                return False
        return True

    found = _SELECTOR.findall(query)
    assert found, query
    return [[s for s in series if s[0] == name and matches(m, s[1])] for name, m in found]


@pytest.fixture
def series() -> list[Sample]:
    """Through the canary route: a 200 and a 500 from the canary, three 500s from the primary,
    a 503 with no pod; one request no ApisixRoute routed."""
    registry = CollectorRegistry()
    adapter = ApisixAdapter(registry)
    for item in (exchange(CANARY, "podinfo-canary", 200), exchange(CANARY, "podinfo-canary", 500),
                 *(exchange(PRIMARY, "podinfo-primary", 500) for _ in range(3)),
                 exchange(None, "podinfo-canary", 503),
                 exchange(CANARY, "podinfo-canary", 200, routed_by=None)):
        adapter.observe(item)
    return samples(registry)


def test_the_success_rate_query_reads_the_canary_routes_requests(series: list[Sample]) -> None:
    observer = ApisixObserver(client=None, render=render)  # type: ignore[arg-type]
    numerator, denominator = selected(observer.render_success_rate(MODEL), series)
    ok = sum(value for _, _, value in numerator)
    total = sum(value for _, _, value in denominator)
    # Every request through the canary route counts (APISIX labels by route, not by pod).
    assert (ok, total) == (1, 6), (numerator, denominator)
    assert {labels["route"] for _, labels, _ in denominator} == {
        "test_podinfo-podinfo-canary_method"}


def test_the_duration_query_reads_the_request_latency(series: list[Sample]) -> None:
    observer = ApisixObserver(client=None, render=render)  # type: ignore[arg-type]
    [buckets] = selected(observer.render_duration(MODEL), series)
    infinite = [value for _, labels, value in buckets if labels.get("le") == "+Inf"]
    assert sum(infinite) == 6
    assert {labels["type"] for _, labels, _ in buckets} == {"request"}


def test_each_request_is_labelled_with_the_node_that_answered(series: list[Sample]) -> None:
    nodes = Counter(labels["node"] for name, labels, value in series
                    if name == "apisix_http_status" for _ in range(int(value)))
    assert nodes == {pod_name(CANARY): 2, pod_name(PRIMARY): 3, "": 1}
