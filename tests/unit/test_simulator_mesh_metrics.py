"""Each mesh's exported series are what flaggerpy's builtin observers select.

The observers' queries are rendered with flaggerpy's renderer for a sample canary (``podinfo``
in ``test``, Service port 9898), and every ``metric{matchers}`` selector in them is evaluated
against the simulator's exposition, PromQL's matcher semantics included (``=~`` anchored). The
success rate is then computed from the counters the numerator and denominator select: one good
and one failed canary request must read 50 %, whatever the primary did.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from e2e.simulator.meshes import MESHES
from e2e.simulator.metrics import Exchange, HttpAdapter, KumaAdapter, OsmAdapter, Peer, pod_name
from e2e.simulator.routing import ServiceKey
from flaggerpy.analysis import MetricTemplateModel
from flaggerpy.observing import PrometheusObserver
from flaggerpy.providers.contour import ContourObserver
from flaggerpy.providers.gatewayapi import GatewayAPIObserver
from flaggerpy.providers.kuma import KumaObserver
from flaggerpy.providers.smi import LinkerdObserver, OsmObserver
from flaggerpy.templating import render

SOURCE = Peer("traffic-simulator", "simulator", {"app": "traffic-simulator"})
CANARY = Peer("podinfo", "test", {"app": "podinfo"})
PRIMARY = Peer("podinfo-primary", "test", {"app": "podinfo-primary"})
MODEL = MetricTemplateModel(name="podinfo", namespace="test", target="podinfo",
                            service="podinfo", ingress="podinfo", route="podinfo", interval="1m")

_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')

Sample = tuple[str, dict[str, str], float]


def samples(registry: CollectorRegistry) -> list[Sample]:
    text = generate_latest(registry).decode()
    return [(s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text) for s in family.samples]


def matches(matchers: str, labels: dict[str, str]) -> bool:
    """PromQL label matchers (a trailing comma allowed); regexes match the whole value."""
    for name, op, value in _MATCHER.findall(matchers):
        actual = labels.get(name, "")
        if (op == "=" and actual != value) or (op == "!=" and actual == value):
            return False
        if op in ("=~", "!~") and (re.fullmatch(value, actual) is not None) != (op == "=~"):
            return False
    return True


def selected(query: str, series: list[Sample]) -> list[list[Sample]]:
    """For each selector of ``query``, in order, the samples it selects."""
    found = _SELECTOR.findall(query)
    assert found, query
    return [[s for s in series if s[0] == name and matches(matchers, s[1])]
            for name, matchers in found]


def exchange(destination: Peer | None, service: str, code: int, ms: float = 20.0) -> Exchange:
    return Exchange(SOURCE, f"{service}.test", ServiceKey("test", service), destination, code,
                    ms, service_port=9898, path="/api/info")


def traffic(adapter: Callable[[CollectorRegistry], object]) -> list[Sample]:
    """One 200 and one 500 from the canary, three 500s from the primary, one unrouted."""
    registry = CollectorRegistry()
    mesh = adapter(registry)
    for item in (exchange(CANARY, "podinfo-canary", 200), exchange(CANARY, "podinfo-canary", 500),
                 *(exchange(PRIMARY, "podinfo-primary", 500) for _ in range(3)),
                 exchange(None, "podinfo-canary", 503)):
        mesh.observe(item)  # type: ignore[attr-defined]
    return samples(registry)


OBSERVERS: dict[str, type[PrometheusObserver]] = {
    "linkerd": LinkerdObserver,
    "osm": OsmObserver,
    "kuma": KumaObserver,
    "contour": ContourObserver,
    "gatewayapi": GatewayAPIObserver,
}


@pytest.mark.parametrize("mesh", sorted(OBSERVERS))
def test_success_rate_query_reads_the_canarys_requests(mesh: str) -> None:
    observer = OBSERVERS[mesh](client=None, render=render)  # type: ignore[arg-type]
    series = traffic(MESHES[mesh].adapter)
    numerator, denominator = selected(observer.render_success_rate(MODEL), series)
    assert numerator, f"{mesh}: the numerator selects nothing"
    ok = sum(value for _, _, value in numerator)
    total = sum(value for _, _, value in denominator)
    assert (ok, total) == (1, 2), f"{mesh}: {numerator} / {denominator}"


@pytest.mark.parametrize("mesh", sorted(OBSERVERS))
def test_duration_query_reads_the_canarys_histogram(mesh: str) -> None:
    observer = OBSERVERS[mesh](client=None, render=render)  # type: ignore[arg-type]
    [buckets] = selected(observer.render_duration(MODEL), traffic(MESHES[mesh].adapter))
    infinite = [value for _, labels, value in buckets if labels.get("le") == "+Inf"]
    assert infinite, f"{mesh}: no +Inf bucket selected"
    assert sum(infinite) == 2, f"{mesh}: {buckets}"
    assert all(name.endswith("_bucket") for name, _, _ in buckets)


def test_kuma_labels_each_data_plane_with_its_service_tag() -> None:
    registry = CollectorRegistry()
    KumaAdapter(registry).observe(exchange(CANARY, "podinfo-canary", 503))
    by_service = {labels["service"]: labels for name, labels, _ in samples(registry)
                  if name == "envoy_cluster_upstream_rq"}
    assert by_service["podinfo-canary_test_svc_9898"]["envoy_cluster_name"] == "localhost_9898"
    assert by_service["podinfo-canary_test_svc_9898"]["envoy_response_code"] == "503"
    outbound = by_service["traffic-simulator_simulator_svc_80"]
    assert outbound["envoy_cluster_name"] == "podinfo-canary_test_svc_9898"


def test_osm_and_the_application_report_only_what_a_pod_received() -> None:
    for adapter in (OsmAdapter, HttpAdapter):
        registry = CollectorRegistry()
        adapter(registry).observe(exchange(None, "podinfo-canary", 503))
        assert samples(registry) == []


def test_pod_names_match_the_targets_pattern_only() -> None:
    pattern = "podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"
    assert re.fullmatch(pattern, pod_name(CANARY))
    assert not re.fullmatch(pattern, pod_name(PRIMARY))
    assert pod_name(CANARY) == pod_name(Peer("podinfo", "test", {"app": "podinfo"}))


def test_http_histogram_is_in_seconds_with_the_applications_labels() -> None:
    registry = CollectorRegistry()
    HttpAdapter(registry).observe(exchange(CANARY, "podinfo-canary", 200, ms=300.0))
    total = {name: value for name, labels, value in samples(registry)
             if name == "http_request_duration_seconds_sum"}
    assert total == {"http_request_duration_seconds_sum": pytest.approx(0.3)}
    [labels] = [labels for name, labels, _ in samples(registry)
                if name == "http_request_duration_seconds_count"]
    assert labels["kubernetes_namespace"] == "test"
    assert (labels["method"], labels["path"], labels["status"]) == ("GET", "/api/info", "200")
