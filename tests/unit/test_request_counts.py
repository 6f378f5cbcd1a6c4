"""What ``minSamples`` counts for each mesh: the requests the canary received over the interval.

Each observer says it with ``request_count_query`` (:func:`flaggerpy.observing.request_count`),
or, without one, the engine takes the denominator of its success-rate query
(:func:`flaggerpy.canary.decisions.observer_count_query`). The queries are checked as sent, for
namespace "test", every name "podinfo" and interval "1m", against the series each mesh's
success rate divides by (spec §4.3).
"""

from __future__ import annotations

import importlib.metadata
from datetime import timedelta
from typing import Any

import pytest

from flaggerpy import sdk
from flaggerpy.analysis import MetricTemplateModel
from flaggerpy.canary.decisions import observer_count_query
from flaggerpy.observing import PrometheusObserver, request_count
from flaggerpy.providers.apisix import ApisixObserver
from flaggerpy.providers.contour import ContourObserver
from flaggerpy.providers.gatewayapi import GatewayAPIObserver
from flaggerpy.providers.gloo import GlooObserver
from flaggerpy.providers.istio import IstioObserver
from flaggerpy.providers.knative import KnativeObserver
from flaggerpy.providers.kubernetes import KubernetesObserver
from flaggerpy.providers.kuma import KumaObserver
from flaggerpy.providers.nginx import NginxObserver
from flaggerpy.providers.skipper import SkipperObserver
from flaggerpy.providers.smi import LinkerdObserver, OsmObserver
from flaggerpy.providers.traefik import TraefikObserver
from flaggerpy.templating import render


def model(**overrides: Any) -> MetricTemplateModel:
    values: dict[str, Any] = {
        "name": "podinfo", "namespace": "test", "target": "podinfo", "service": "podinfo",
        "ingress": "podinfo", "route": "podinfo", "interval": "1m",
    }
    values.update(overrides)
    return MetricTemplateModel(**values)


POD = 'kubernetes_namespace="test",kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"'
HTTP = f"sum(increase(http_request_duration_seconds_count{{{POD}}}[1m]))"
SKIPPER_ROUTE = "kube(ew)?_test__podinfo_canary__.*__podinfo_canary(_[0-9]+)?"

# Observers that say their count themselves (request_count_query).
OWN: dict[type[PrometheusObserver], str] = {
    LinkerdObserver: (
        'sum(increase(response_total{namespace="test",deployment=~"podinfo",'
        'direction="inbound"}[1m]))'
    ),
    OsmObserver: (
        'sum(increase(osm_request_total{destination_namespace="test",'
        'destination_kind="Deployment",destination_name="podinfo"}[1m]))'
    ),
    # The histograms' count: the same number as the le="+Inf" bucket the success rate divides by.
    SkipperObserver: (
        f' sum(increase(skipper_response_duration_seconds_count{{route=~"{SKIPPER_ROUTE}"}}'
        "[1m]))"
    ),
    TraefikObserver: (
        "sum(increase(traefik_service_request_duration_seconds_count{service=~"
        '"test-podinfo-canary-[0-9a-zA-Z-]+@kubernetescrd"}[1m]))'
    ),
    KubernetesObserver: HTTP,
    GatewayAPIObserver: HTTP,
}

# Observers counted from their success-rate query's denominator (Flagger's ratio shape).
DERIVED: dict[type[PrometheusObserver], str] = {
    IstioObserver: (
        'sum(increase(istio_requests_total{reporter="destination",'
        'destination_workload_namespace="test",destination_workload=~"podinfo"}[1m]))'
    ),
    ContourObserver: (
        'sum(increase(envoy_cluster_upstream_rq{envoy_cluster_name=~'
        '"test_podinfo-canary_[0-9a-zA-Z-]+",}[1m]))'
    ),
    GlooObserver: (
        'sum(increase(envoy_cluster_upstream_rq{envoy_cluster_name=~'
        '"test-podinfo-canaryupstream-[0-9a-zA-Z-]+_[0-9a-zA-Z-]+",}[1m]))'
    ),
    NginxObserver: (
        'sum(increase(nginx_ingress_controller_requests{namespace="test",ingress="podinfo",'
        'canary!=""}[1m]))'
    ),
    KumaObserver: (
        'sum(increase(envoy_cluster_upstream_rq{service=~'
        '"podinfo-canary_test_svc_[0-9a-zA-Z-]+",}[1m]))'
    ),
    ApisixObserver: (
        'sum(increase(apisix_http_status{route=~"test_podinfo-podinfo-canary_.+"}[1m]))'
    ),
    KnativeObserver: (
        'sum(increase(envoy_cluster_upstream_rq{envoy_cluster_name=~"test/podinfo",}[1m]))'
    ),
}


def build(cls: type[PrometheusObserver]) -> PrometheusObserver:
    return cls(client=None, render=render)  # type: ignore[arg-type]  # no query is run


def test_every_registered_observer_has_a_count() -> None:
    ours = {ep.load() for ep in importlib.metadata.entry_points(group="flaggerpy.observers")
            if ep.value.startswith("flaggerpy.providers.")}
    assert ours == set(OWN) | set(DERIVED)
    assert not set(OWN) & set(DERIVED)


@pytest.mark.parametrize("cls", [pytest.param(c, id=c.mesh + "-" + c.__name__) for c in OWN])
def test_an_observer_says_its_own_count(cls: type[PrometheusObserver]) -> None:
    observer = build(cls)
    assert observer.render_request_count(model()) == OWN[cls]
    assert observer_count_query(observer, model()) == OWN[cls]


@pytest.mark.parametrize("cls", [pytest.param(c, id=c.mesh) for c in DERIVED])
def test_without_one_the_success_rate_denominator_counts(cls: type[PrometheusObserver]) -> None:
    observer = build(cls)
    assert observer.render_request_count(model()) is None
    assert observer_count_query(observer, model()) == DERIVED[cls]


@pytest.mark.parametrize("cls", [pytest.param(c, id=c.mesh + "-" + c.__name__) for c in OWN])
def test_the_count_is_over_the_metrics_interval(cls: type[PrometheusObserver]) -> None:
    query = observer_count_query(build(cls), model(interval="30s"))
    assert query is not None
    assert query.endswith("[30s]))")
    assert "[1m]" not in query


def test_skipper_counts_the_route_named_as_skipper_names_it() -> None:
    """Non-word characters of the model become ``_``, as in Skipper's route ids."""
    query = observer_count_query(build(SkipperObserver),
                                 model(namespace="my-ns", ingress="web.ingress",
                                       service="web-svc"))
    assert query == (
        ' sum(increase(skipper_response_duration_seconds_count{route=~'
        '"kube(ew)?_my_ns__web_ingress_canary__.*__web_svc_canary(_[0-9]+)?"}[1m]))'
    )


def test_request_count_writes_the_increase_of_all_requests() -> None:
    assert request_count("meshy_requests_total", 'service="{{ target }}-canary"') == (
        'sum(increase(meshy_requests_total{service="{{ target }}-canary"}[{{ interval }}]))')
    assert sdk.request_count is request_count


class Averaged(PrometheusObserver):
    """A third-party observer whose success rate is not Flagger's ratio."""

    mesh = "averaged"
    success_rate_query = 'avg(meshy_success_percent{service="{{ target }}"})'
    duration_query = 'avg(meshy_latency_ms{service="{{ target }}"})'


class CountedAveraged(Averaged):
    request_count_query = request_count("meshy_requests_total", 'service="{{ target }}"')


def test_a_success_rate_of_another_shape_gives_no_count_unless_the_observer_says_it() -> None:
    assert observer_count_query(build(Averaged), model()) is None
    assert observer_count_query(build(CountedAveraged), model()) == (
        'sum(increase(meshy_requests_total{service="podinfo"}[1m]))')


class BareObserver:
    """An ``Observer`` with only the protocol's two methods: nothing to count with."""

    async def get_request_success_rate(self, model: MetricTemplateModel) -> float:
        return 100.0

    async def get_request_duration(self, model: MetricTemplateModel) -> timedelta:
        return timedelta(milliseconds=1)


def test_an_observer_without_queries_gives_no_count() -> None:
    assert observer_count_query(BareObserver(), model()) is None
