"""The simulator's ingress-nginx: a main Ingress and its canary Ingress, the canary annotations'
precedence (header, then cookie, then weight), and ingress-nginx's request metrics.

The Ingresses are shaped as the golden corpus shows them (``nginx/*``): the user's ``podinfo``
to the apex Service, and Flagger's ``podinfo-canary`` to ``podinfo-canary`` with the canary
annotations. The exported series are checked against the queries flaggerpy's NginxObserver
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
from e2e.simulator.routing_nginx import (
    NginxAdapter,
    NginxSource,
    match_path,
    read_rule,
    route_request,
    rule_name,
    to_alternative,
)
from flaggerpy.analysis import MetricTemplateModel
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.providers.nginx import NginxObserver
from flaggerpy.templating import render

HOST = "app.example.com"
N = "nginx.ingress.kubernetes.io"
PRIMARY_FQDN = ServiceKey("test", "podinfo").fqdn
CANARY_FQDN = ServiceKey("test", "podinfo-canary").fqdn
MODEL = MetricTemplateModel(name="podinfo", namespace="test", target="podinfo",
                            service="podinfo", ingress="podinfo", route="podinfo", interval="1m")


def ingress(name: str, backend: str, *, annotations: dict[str, str] | None = None,
            paths: list[tuple[str, str]] | None = None, host: str | None = HOST) -> dict[str, Any]:
    rule: dict[str, Any] = {"http": {"paths": [
        {"path": p, "pathType": t,
         "backend": {"service": {"name": backend, "port": {"number": 80}}}}
        for p, t in (paths or [("/", "Prefix")])]}}
    if host is not None:
        rule["host"] = host
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": "test", "annotations": annotations or {}},
            "spec": {"ingressClassName": "nginx", "rules": [rule]}}


def canary(**annotations: str) -> dict[str, Any]:
    values = {f"{N}/{k.replace('_', '-')}": v for k, v in annotations.items()}
    return ingress("podinfo-canary", "podinfo-canary",
                   annotations={f"{N}/canary": "true", **values})


MAIN = ingress("podinfo", "podinfo")


def request(*, path: str = "/", **headers: str) -> Request:
    return Request(host=HOST, path=path, headers={k.lower(): v for k, v in headers.items()})


def destination(main: dict[str, Any], alt: dict[str, Any] | None, req: Request,
                seed: int = 1) -> str | None:
    decision = route_request(main, alt, req, random.Random(seed))
    assert decision is not None
    return decision.destination.host if decision.destination else None


# -- routing ------------------------------------------------------------------------------------


def test_without_a_canary_ingress_the_main_backend_serves() -> None:
    assert destination(MAIN, None, request()) == PRIMARY_FQDN
    assert destination(MAIN, canary(canary_weight="0"), request()) == PRIMARY_FQDN


def test_the_weight_is_the_canary_share() -> None:
    rng = random.Random(7)
    alt = canary(canary_weight="30")
    hits = Counter(to_alternative(alt["metadata"]["annotations"], request(), rng)
                   for _ in range(4000))
    assert abs(hits[True] / 4000 - 0.3) < 0.03
    everything = canary(canary_weight="100")
    assert all(destination(MAIN, everything, request(), seed) == CANARY_FQDN
               for seed in range(50))
    total = canary(canary_weight="5", canary_weight_total="10")
    hits = Counter(to_alternative(total["metadata"]["annotations"], request(), rng)
                   for _ in range(2000))
    assert abs(hits[True] / 2000 - 0.5) < 0.05


def test_header_always_and_never_beat_the_cookie_and_the_weight() -> None:
    alt = canary(canary_by_header="x-canary", canary_by_cookie="beta", canary_weight="100")
    assert destination(MAIN, alt, request(**{"X-Canary": "never"})) == PRIMARY_FQDN
    assert destination(MAIN, alt, request(**{"x-canary": "never", "cookie": "beta=always"})) == (
        PRIMARY_FQDN)
    off = canary(canary_by_header="x-canary", canary_weight="0")
    assert destination(MAIN, off, request(**{"x-canary": "always"})) == CANARY_FQDN
    # any other value is ignored: the weight decides
    assert destination(MAIN, off, request(**{"x-canary": "yes"})) == PRIMARY_FQDN


def test_a_header_value_or_pattern_routes_matching_requests_only() -> None:
    # golden ab-header-exact: canary-by-header x-canary, canary-by-header-value insider, weight 0
    exact = canary(canary_by_header="x-canary", canary_by_header_value="insider",
                   canary_weight="0")
    assert destination(MAIN, exact, request(**{"x-canary": "insider"})) == CANARY_FQDN
    assert destination(MAIN, exact, request(**{"x-canary": "always"})) == PRIMARY_FQDN
    assert destination(MAIN, exact, request()) == PRIMARY_FQDN
    pattern = canary(canary_by_header="x-user", canary_by_header_pattern="^(beta|qa)$")
    assert destination(MAIN, pattern, request(**{"x-user": "qa"})) == CANARY_FQDN
    assert destination(MAIN, pattern, request(**{"x-user": "prod"})) == PRIMARY_FQDN
    # a value set makes the pattern ignored, as ingress-nginx documents
    both = canary(canary_by_header="x-user", canary_by_header_value="a",
                  canary_by_header_pattern="q.*")
    assert destination(MAIN, both, request(**{"x-user": "qa"})) == PRIMARY_FQDN
    # a non-matching value falls through to the cookie
    exact_cookie = canary(canary_by_header="x-canary", canary_by_header_value="insider",
                          canary_by_cookie="beta")
    assert destination(MAIN, exact_cookie, request(**{"x-canary": "no", "cookie": "beta=always"})
                       ) == CANARY_FQDN


def test_the_cookie_routes_always_and_never_then_the_weight() -> None:
    # golden ab-cookie: canary-by-cookie canary, weight 0
    alt = canary(canary_by_cookie="canary", canary_weight="0")
    assert destination(MAIN, alt, request(cookie="a=1; canary=always")) == CANARY_FQDN
    assert destination(MAIN, alt, request(cookie="canary=yes")) == PRIMARY_FQDN
    assert destination(MAIN, alt, request(cookie="other=always")) == PRIMARY_FQDN
    full = canary(canary_by_cookie="canary", canary_weight="100")
    assert destination(MAIN, full, request(cookie="canary=never")) == PRIMARY_FQDN
    assert destination(MAIN, full, request()) == CANARY_FQDN


def test_an_ingress_without_the_canary_annotation_is_no_canary() -> None:
    plain = ingress("podinfo-canary", "podinfo-canary", annotations={f"{N}/canary-weight": "100"})
    assert destination(MAIN, plain, request()) == PRIMARY_FQDN
    other_prefix = ingress("podinfo-canary", "podinfo-canary", annotations={
        "custom.ingress.kubernetes.io/canary": "true",
        "custom.ingress.kubernetes.io/canary-weight": "100"})
    assert destination(MAIN, other_prefix, request()) == PRIMARY_FQDN


def test_paths_exact_first_then_the_longest_prefix_and_the_canary_needs_the_same_path() -> None:
    main = ingress("podinfo", "podinfo", paths=[("/", "Prefix"), ("/api", "Prefix"),
                                                ("/api/v1", "Exact")])
    rules = main["spec"]["rules"]
    assert match_path(rules, "/api/v1")["pathType"] == "Exact"  # type: ignore[index]
    assert match_path(rules, "/api/v1/x")["path"] == "/api"  # type: ignore[index]
    assert match_path(rules, "/apix")["path"] == "/"  # type: ignore[index]
    assert match_path(rules, "/api?q=1")["path"] == "/api"  # type: ignore[index]
    only_api = ingress("podinfo-canary", "podinfo-canary", paths=[("/api", "Prefix")],
                       annotations={f"{N}/canary": "true", f"{N}/canary-weight": "100"})
    assert destination(main, only_api, request(path="/api/x")) == CANARY_FQDN
    assert destination(main, only_api, request(path="/other")) == PRIMARY_FQDN
    narrow = ingress("podinfo", "podinfo", paths=[("/api", "Exact")])
    assert route_request(narrow, None, request(path="/"), random.Random(1)) is None


def test_the_source_claims_for_the_main_ingress_and_finds_the_canary_by_name() -> None:
    source = NginxSource()
    alt = canary(canary_weight="100")
    assert source.claims(MAIN, HOST, namespace="test", namespaces=["test"])
    assert source.claims(MAIN, "APP.example.com:80", namespace="test", namespaces=["test"])
    assert not source.claims(alt, HOST, namespace="test", namespaces=["test"])
    assert not source.claims(MAIN, "podinfo", namespace="test", namespaces=["test"])
    assert not source.claims(ingress("any", "podinfo", host=None), HOST, namespace="test",
                             namespaces=["test"])
    wildcard = ingress("wild", "podinfo", host="*.example.com")
    assert source.claims(wildcard, HOST, namespace="test", namespaces=["test"])
    assert source.stream_host(wildcard) is None
    assert (source.stream_host(MAIN), source.stream_host(alt)) == (HOST, None)
    objects = {ObjectKey("test", "podinfo-canary"): alt}
    decision = source.route(MAIN, request(), random.Random(1), lookup=objects.get)
    assert decision is not None
    assert decision.destination is not None
    assert decision.destination.host == CANARY_FQDN
    assert read_rule(decision.rule_name) == ("/", "podinfo", "test-podinfo-canary-80")
    decision = source.route(MAIN, request(), random.Random(1), lookup={}.get)
    assert decision is not None
    assert read_rule(decision.rule_name) == ("/", "podinfo", "")


def test_nginx_is_a_simulated_mesh() -> None:
    assert MESHES["nginx"].source is NginxSource
    assert MESHES["nginx"].adapter is NginxAdapter


# -- metrics ------------------------------------------------------------------------------------

SOURCE = Peer("traffic-simulator", "simulator", {"app": "traffic-simulator"})
CANARY_POD = Peer("podinfo", "test", {"app": "podinfo"})
PRIMARY_POD = Peer("podinfo-primary", "test", {"app": "podinfo-primary"})
MAIN_KEY = ObjectKey("test", "podinfo")
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')

Sample = tuple[str, dict[str, str], float]


def exchange(destination: Peer | None, alternative: str, code: int, *,
             routed_by: ObjectKey | None = MAIN_KEY, ms: float = 20.0) -> Exchange:
    return Exchange(SOURCE, HOST, None, destination, code, ms, service_port=None,
                    routed_by=routed_by, rule=rule_name("/", "podinfo", alternative))


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
    """Through the main Ingress: a 200 (40 ms) and a 500 (20 ms) from the canary, three 500s
    from the primary, a 503 to the canary with no pod; one request no Ingress routed."""
    registry = CollectorRegistry()
    adapter = NginxAdapter(registry)
    alt = "test-podinfo-canary-80"
    for item in (exchange(CANARY_POD, alt, 200, ms=40.0), exchange(CANARY_POD, alt, 500),
                 *(exchange(PRIMARY_POD, "", 500) for _ in range(3)),
                 exchange(None, alt, 503, ms=0.0),
                 exchange(CANARY_POD, alt, 200, routed_by=None)):
        adapter.observe(item)
    return samples(registry)


def test_the_success_rate_query_reads_the_canary_requests_only(series: list[Sample]) -> None:
    observer = NginxObserver(client=None, render=render)  # type: ignore[arg-type]
    numerator, denominator = selected(observer.render_success_rate(MODEL), series)
    ok = sum(value for _, _, value in numerator)
    total = sum(value for _, _, value in denominator)
    assert (ok, total) == (1, 3), (numerator, denominator)
    assert {labels["ingress"] for _, labels, _ in denominator} == {"podinfo"}
    assert {labels["service"] for _, labels, _ in denominator} == {"podinfo"}


def test_the_duration_query_reads_the_canary_response_times(series: list[Sample]) -> None:
    observer = NginxObserver(client=None, render=render)  # type: ignore[arg-type]
    sums, counts = selected(observer.render_duration(MODEL), series)
    assert sum(v for _, _, v in sums) == pytest.approx(0.06)
    assert sum(v for _, _, v in counts) == 3


def test_requests_are_labelled_by_the_upstream_that_answered(series: list[Sample]) -> None:
    statuses = Counter((labels["canary"], labels["status"]) for name, labels, value in series
                       if name == "nginx_ingress_controller_requests" for _ in range(int(value)))
    assert statuses == {("test-podinfo-canary-80", "200"): 1,
                        ("test-podinfo-canary-80", "500"): 1,
                        ("test-podinfo-canary-80", "503"): 1, ("", "500"): 3}
