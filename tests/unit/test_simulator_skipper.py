"""The simulator's Skipper: a user's Ingress and Flagger's canary Ingress, the predicates that
decide which one routes, the backend weights, and Skipper's per-route metrics.

The Ingresses are shaped as the golden corpus shows them (``skipper/canary-stepweight``): the
user's ``podinfo`` to the apex Service, and Flagger's ``podinfo-canary`` with the primary and
canary backends, ``zalando.org/backend-weights`` and ``Weight(100)`` / ``False()`` first in the
predicate. The exported series are checked against the queries flaggerpy's SkipperObserver
renders, PromQL matcher semantics included.
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
from e2e.simulator.metrics import Exchange, Peer
from e2e.simulator.routing import Request, ServiceKey
from e2e.simulator.routing_skipper import (
    SkipperAdapter,
    SkipperSource,
    parse_predicates,
    route_id,
    route_request,
)
from flaggerpy.analysis import MetricTemplateModel
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.providers.skipper import SkipperObserver
from flaggerpy.templating import render

HOST = "app.example.com"
NS = "test-ns"
USER_PREDICATE = 'Header("X-Env", "prod")'
MODEL = MetricTemplateModel(name="podinfo", namespace=NS, target="podinfo",
                            service="podinfo", ingress="podinfo", route="podinfo", interval="1m")


def path(service: str, value: str = "/", kind: str = "Prefix") -> dict[str, Any]:
    return {"backend": {"service": {"name": service, "port": {"number": 80}}},
            "path": value, "pathType": kind}


def user_ingress(*, predicate: str | None = USER_PREDICATE,
                 paths: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    annotations = {"zalando.org/skipper-predicate": predicate} if predicate else {}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "podinfo", "namespace": NS, "annotations": annotations},
            "spec": {"ingressClassName": "skipper", "rules": [
                {"host": HOST, "http": {"paths": paths or [path("podinfo")]}}]}}


def canary_ingress(primary: int, canary: int, *, marker: str = "Weight(100)",
                   predicate: str = USER_PREDICATE) -> dict[str, Any]:
    """Flagger's canary Ingress, as in skipper/canary-stepweight's steps."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "podinfo-canary", "namespace": NS, "annotations": {
                "zalando.org/backend-weights":
                    f'{{"podinfo-canary":{canary},"podinfo-primary":{primary}}}',
                "zalando.org/skipper-predicate": f"{marker} && {predicate}"}},
            "spec": {"ingressClassName": "skipper", "rules": [{"host": HOST, "http": {
                "paths": [path("podinfo-primary"), path("podinfo-canary")]}}]}}


def request(**headers: str) -> Request:
    return Request(host=HOST, path="/api/info",
                   headers={k.lower().replace("_", "-"): v for k, v in headers.items()})


PROD = {"X_Env": "prod"}


def services(ingresses: list[dict[str, Any]], *, n: int = 2000,
             headers: dict[str, str] | None = None) -> Counter[str]:
    rng = random.Random(7)
    counts: Counter[str] = Counter()
    for _ in range(n):
        decision = route_request(ingresses, request(**(headers or {})), rng)
        host = decision.destination.host if decision and decision.destination else "none"
        counts[host.split(".")[0]] += 1
    return counts


def test_the_canary_ingress_takes_the_traffic_and_splits_it_by_backend_weights() -> None:
    counts = services([user_ingress(), canary_ingress(80, 20)], headers=PROD)
    assert set(counts) == {"podinfo-primary", "podinfo-canary"}
    assert 0.17 < counts["podinfo-canary"] / 2000 < 0.23, counts


def test_at_100_0_everything_reaches_the_primary_through_the_canary_ingress() -> None:
    assert services([user_ingress(), canary_ingress(100, 0)], headers=PROD) == {
        "podinfo-primary": 2000}


def test_false_gives_the_traffic_back_to_the_users_ingress() -> None:
    ingresses = [user_ingress(), canary_ingress(100, 0, marker="False()")]
    assert services(ingresses, headers=PROD) == {"podinfo": 2000}
    decision = route_request(ingresses, request(**PROD), random.Random(1))
    assert decision is not None
    assert decision.rule_name == "kube_test_ns__podinfo__app_example_com_____podinfo"


def test_the_users_predicate_still_applies_to_both_ingresses() -> None:
    ingresses = [user_ingress(), canary_ingress(50, 50)]
    assert route_request(ingresses, request(), random.Random(1)) is None  # no X-Env: prod
    assert services(ingresses, n=200, headers={"X_Env": "dev"}) == {"none": 200}


def test_without_weights_the_backends_share_equally_and_one_weight_takes_all() -> None:
    even = canary_ingress(0, 0)
    counts = services([user_ingress(), even], headers=PROD)
    assert 0.45 < counts["podinfo-canary"] / 2000 < 0.55, counts
    one = canary_ingress(0, 0)
    one["metadata"]["annotations"]["zalando.org/backend-weights"] = '{"podinfo-canary": 3}'
    assert services([user_ingress(), one], headers=PROD) == {"podinfo-canary": 2000}


def test_a_more_specific_path_beats_the_weight() -> None:
    apex = user_ingress(predicate=None, paths=[path("podinfo"), path("api", "/api/info", "Exact")])
    counts = services([apex, canary_ingress(0, 100, predicate="True()")])
    assert counts == {"api": 2000}


def test_an_unknown_predicate_drops_the_routes_of_its_ingress() -> None:
    assert parse_predicates('Weight(100) && Header("a", "b") && Traffic(0.5)') is not None
    assert parse_predicates('Weight(100) && Source("10.0.0.0/8")') is None
    assert parse_predicates("Header(") is None
    ingresses = [user_ingress(predicate=None),
                 canary_ingress(0, 100, predicate='Source("10.0.0.0/8")')]
    assert services(ingresses, n=100) == {"podinfo": 100}


def test_route_ids_are_skippers() -> None:
    assert route_id("test-ns", "podinfo-canary", "app.example.com", "/", "podinfo-canary") == (
        "kube_test_ns__podinfo_canary__app_example_com_____podinfo_canary")


def test_the_source_claims_for_the_users_ingress_and_finds_the_canary_by_name() -> None:
    source = SkipperSource()
    user, companion = user_ingress(), canary_ingress(60, 40)
    assert source.claims(user, HOST, namespace="other", namespaces=[NS])
    assert not source.claims(user, "other.example.com", namespace="other", namespaces=[NS])
    assert not source.claims(companion, HOST, namespace="other", namespaces=[NS])
    assert source.stream_host(user) == HOST
    assert source.stream_host(companion) is None
    looked: list[ObjectKey] = []

    def lookup(key: ObjectKey) -> dict[str, Any] | None:
        looked.append(key)
        return companion

    decision = source.route(user, request(**PROD), random.Random(3), lookup=lookup)
    assert looked == [ObjectKey(NS, "podinfo-canary")]
    assert decision is not None
    assert decision.destination is not None
    assert decision.destination.host in {ServiceKey(NS, "podinfo-primary").fqdn,
                                         ServiceKey(NS, "podinfo-canary").fqdn}


def test_skipper_is_a_simulated_mesh() -> None:
    mesh = MESHES["skipper"]
    assert isinstance(mesh.source(), SkipperSource)
    assert isinstance(mesh.adapter(CollectorRegistry()), SkipperAdapter)


# -- metrics --------------------------------------------------------------------------------------

_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')
Sample = tuple[str, dict[str, str], float]


def samples(registry: CollectorRegistry) -> list[Sample]:
    text = generate_latest(registry).decode()
    return [(s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text) for s in family.samples]


def selected(query: str, series: list[Sample]) -> list[list[Sample]]:
    """For each selector of ``query``, in order, the samples it selects (regexes anchored)."""
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
    return [[s for s in series if s[0] == name and matches(matchers, s[1])]
            for name, matchers in found]


@pytest.fixture
def series() -> list[Sample]:
    """Through the canary Ingress's canary route: one 200 and one 500 (100 ms each); through
    its primary route three 500s; through the user's Ingress one 200; one request no route
    served."""
    registry = CollectorRegistry()
    adapter = SkipperAdapter(registry)
    source, pod = Peer("traffic-simulator", "simulator", {}), Peer("podinfo", NS, {})
    apex = ObjectKey(NS, "podinfo")
    canary_route = route_id(NS, "podinfo-canary", HOST, "/", "podinfo-canary")
    primary_route = route_id(NS, "podinfo-canary", HOST, "/", "podinfo-primary")
    user_route = route_id(NS, "podinfo", HOST, "/", "podinfo")

    def exchange(route: str, code: int, *, routed: bool = True) -> Exchange:
        return Exchange(source, HOST, None, pod, code, 100.0,
                        routed_by=apex if routed else None, rule=route)

    for item in (exchange(canary_route, 200), exchange(canary_route, 500),
                 *(exchange(primary_route, 500) for _ in range(3)), exchange(user_route, 200),
                 exchange("", 404, routed=False)):
        adapter.observe(item)
    return samples(registry)


def test_the_success_rate_query_reads_the_canary_route_only(series: list[Sample]) -> None:
    observer = SkipperObserver(client=None, render=render)  # type: ignore[arg-type]
    numerator, denominator = selected(observer.render_success_rate(MODEL), series)
    assert sum(v for _, _, v in numerator) == 1
    assert sum(v for _, _, v in denominator) == 2
    assert all(labels["le"] == "+Inf" for _, labels, _ in denominator)


def test_the_duration_query_reads_the_canary_route_only(series: list[Sample]) -> None:
    observer = SkipperObserver(client=None, render=render)  # type: ignore[arg-type]
    sums, counts = selected(observer.render_duration(MODEL), series)
    assert [v for _, _, v in counts] == [1, 1]  # the 200 and the 500, by code
    assert sum(v for _, _, v in sums) == pytest.approx(0.2)
