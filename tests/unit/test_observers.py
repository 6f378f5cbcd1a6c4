"""Builtin metrics: each mesh's observer sends spec §4.3's PromQL and reads answers as Flagger.

Each observer lives in its mesh's provider module (``flaggerpy.providers.<mesh>``) on the shared
base :class:`flaggerpy.observing.PrometheusObserver`; the queries are checked as sent.
"""

from __future__ import annotations

import importlib.metadata
import math
from datetime import timedelta
from typing import Any

import pytest

from flaggerpy import plugins
from flaggerpy.analysis import MetricsProvider, MetricTemplateModel, Observer
from flaggerpy.canary.metrics_analysis import metric_model
from flaggerpy.errors import MetricsError, NoValuesFoundError
from flaggerpy.models import Canary
from flaggerpy.observing import PrometheusObserver
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


class CannedProvider:
    """A MetricsProvider that answers every query with one value and remembers the queries."""

    def __init__(self, value: float | Exception) -> None:
        self.value = value
        self.queries: list[str] = []

    async def run_query(self, query: str) -> float:
        self.queries.append(query)
        if isinstance(self.value, Exception):
            raise self.value
        return self.value

    async def is_online(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


_conforms: type[MetricsProvider] = CannedProvider


def model(**overrides: Any) -> MetricTemplateModel:
    values: dict[str, Any] = {
        "name": "podinfo", "namespace": "test", "target": "podinfo", "service": "podinfo",
        "ingress": "podinfo", "route": "podinfo", "interval": "1m",
    }
    values.update(overrides)
    return MetricTemplateModel(**values)


POD = 'kubernetes_namespace="test",kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"'
SKIPPER_ROUTE = "kube(ew)?_test__podinfo_canary__.*__podinfo_canary(_[0-9]+)?"
HTTP = (  # Flagger's http observer, for provider kubernetes and gatewayapi
    f'sum(rate(http_request_duration_seconds_count{{{POD},status!~"5.*"}}[1m])) / '
    f"sum(rate(http_request_duration_seconds_count{{{POD}}}[1m])) * 100",
    f"histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{{{POD}}}[1m]))"
    " by (le))",
)

# Spec §4.3's queries as sent for namespace "test", every name "podinfo" and interval "1m".
EXPECTED: dict[type[PrometheusObserver], tuple[str, str]] = {
    IstioObserver: (
        'sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace='
        '"test",destination_workload=~"podinfo",response_code!~"5.*"}[1m])) / sum(rate('
        'istio_requests_total{reporter="destination",destination_workload_namespace="test",'
        'destination_workload=~"podinfo"}[1m])) * 100',
        'histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter='
        '"destination",destination_workload_namespace="test",destination_workload=~"podinfo"}'
        "[1m])) by (le))",
    ),
    LinkerdObserver: (
        'sum(rate(response_total{namespace="test",deployment=~"podinfo",classification!='
        '"failure",direction="inbound"}[1m])) / sum(rate(response_total{namespace="test",'
        'deployment=~"podinfo",direction="inbound"}[1m])) * 100',
        'histogram_quantile(0.99, sum(rate(response_latency_ms_bucket{namespace="test",'
        'deployment=~"podinfo",direction="inbound"}[1m])) by (le))',
    ),
    ContourObserver: (
        'sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=~"test_podinfo-canary_'
        '[0-9a-zA-Z-]+",envoy_response_code!~"5.*"}[1m])) / sum(rate(envoy_cluster_upstream_rq'
        '{envoy_cluster_name=~"test_podinfo-canary_[0-9a-zA-Z-]+",}[1m])) * 100',
        "histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_"
        'name=~"test_podinfo-canary_[0-9a-zA-Z-]+",}[1m])) by (le))',
    ),
    GlooObserver: (
        'sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=~"test-podinfo-canaryupstream-'
        '[0-9a-zA-Z-]+_[0-9a-zA-Z-]+",envoy_response_code!~"5.*"}[1m])) / sum(rate('
        'envoy_cluster_upstream_rq{envoy_cluster_name=~"test-podinfo-canaryupstream-'
        '[0-9a-zA-Z-]+_[0-9a-zA-Z-]+",}[1m])) * 100',
        "histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_"
        'name=~"test-podinfo-canaryupstream-[0-9a-zA-Z-]+_[0-9a-zA-Z-]+",}[1m])) by (le))',
    ),
    NginxObserver: (
        'sum(rate(nginx_ingress_controller_requests{namespace="test",ingress="podinfo",canary!='
        '"",status!~"5.*"}[1m])) / sum(rate(nginx_ingress_controller_requests{namespace="test",'
        'ingress="podinfo",canary!=""}[1m])) * 100',
        "sum(rate(nginx_ingress_controller_response_duration_seconds_sum{namespace=\"test\","
        'ingress="podinfo",canary!=""}[1m])) / sum(rate(nginx_ingress_controller_response_'
        'duration_seconds_count{namespace="test",ingress="podinfo",canary!=""}[1m])) * 1000',
    ),
    KubernetesObserver: HTTP,
    GatewayAPIObserver: HTTP,
    SkipperObserver: (
        f' sum(rate(skipper_response_duration_seconds_bucket{{route=~"{SKIPPER_ROUTE}",'
        f'code!~"5..",le="+Inf"}}[1m])) / sum(rate(skipper_response_duration_seconds_bucket'
        f'{{route=~"{SKIPPER_ROUTE}",le="+Inf"}}[1m])) * 100',
        f' sum(rate(skipper_serve_route_duration_seconds_sum{{route=~"{SKIPPER_ROUTE}"}}[1m]))'
        f' / sum(rate(skipper_serve_route_duration_seconds_count{{route=~"{SKIPPER_ROUTE}"}}'
        "[1m])) * 1000",
    ),
    TraefikObserver: (
        'sum(rate(traefik_service_request_duration_seconds_bucket{service=~"test-podinfo-'
        'canary-[0-9a-zA-Z-]+@kubernetescrd",code!~"5..",le="+Inf"}[1m])) / sum(rate('
        'traefik_service_request_duration_seconds_bucket{service=~"test-podinfo-canary-'
        '[0-9a-zA-Z-]+@kubernetescrd",le="+Inf"}[1m])) * 100',
        "histogram_quantile(0.99, sum(rate(traefik_service_request_duration_seconds_bucket{"
        'service=~"test-podinfo-canary-[0-9a-zA-Z-]+@kubernetescrd"}[1m])) by (le)) * 1000',
    ),
    OsmObserver: (
        'sum(rate(osm_request_total{destination_namespace="test",destination_kind="Deployment",'
        'destination_name="podinfo",response_code!~"5.*"}[1m])) / sum(rate(osm_request_total{'
        'destination_namespace="test",destination_kind="Deployment",destination_name="podinfo"}'
        "[1m])) * 100",
        "histogram_quantile(0.99, sum(rate(osm_request_duration_ms_bucket{destination_namespace="
        '"test",destination_kind="Deployment",destination_name="podinfo"}[1m])) by (le))',
    ),
    KumaObserver: (
        'sum(rate(envoy_cluster_upstream_rq{service=~"podinfo-canary_test_svc_[0-9a-zA-Z-]+",'
        'envoy_response_code!~"5.*"}[1m])) / sum(rate(envoy_cluster_upstream_rq{service=~'
        '"podinfo-canary_test_svc_[0-9a-zA-Z-]+",}[1m])) * 100',
        "histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{service=~"
        '"podinfo-canary_test_svc_[0-9a-zA-Z-]+",}[1m])) by (le))',
    ),
    ApisixObserver: (
        'sum(rate(apisix_http_status{route=~"test_podinfo-podinfo-canary_.+",code!~"5.."}[1m]))'
        ' / sum(rate(apisix_http_status{route=~"test_podinfo-podinfo-canary_.+"}[1m])) * 100',
        'histogram_quantile(0.99, sum(rate(apisix_http_latency_bucket{type=~"request",route=~'
        '"test_podinfo-podinfo-canary_.+"}[1m])) by (le))',
    ),
    KnativeObserver: (
        'sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=~"test/podinfo",'
        'envoy_response_code!~"5.*"}[1m])) / sum(rate(envoy_cluster_upstream_rq{'
        'envoy_cluster_name=~"test/podinfo",}[1m])) * 100',
        "histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{"
        'envoy_cluster_name=~"test/podinfo",}[1m])) by (le))',
    ),
}


def test_every_registered_observer_is_covered() -> None:
    ours = [ep for ep in importlib.metadata.entry_points(group="flaggerpy.observers")
            if ep.value.startswith("flaggerpy.providers.")]
    assert {ep.load() for ep in ours} == set(EXPECTED)


@pytest.mark.parametrize("cls", [pytest.param(c, id=c.mesh) for c in EXPECTED])
async def test_queries_are_spec_4_3(cls: type[PrometheusObserver]) -> None:
    client = CannedProvider(99.0)
    observer = cls(client=client, render=render)
    await observer.get_request_success_rate(model())
    await observer.get_request_duration(model())
    assert client.queries == list(EXPECTED[cls])


@pytest.mark.parametrize(("entry_point", "cls"), [
    pytest.param("istio", IstioObserver, id="istio"),
    pytest.param("linkerd", LinkerdObserver, id="linkerd"),
    pytest.param("contour", ContourObserver, id="contour"),
    pytest.param("gloo", GlooObserver, id="gloo"),
    pytest.param("nginx", NginxObserver, id="nginx"),
    pytest.param("kubernetes", KubernetesObserver, id="kubernetes"),
    pytest.param("gatewayapi", GatewayAPIObserver, id="gatewayapi"),
    pytest.param("skipper", SkipperObserver, id="skipper"),
    pytest.param("traefik", TraefikObserver, id="traefik"),
    pytest.param("osm", OsmObserver, id="osm"),
    pytest.param("kuma", KumaObserver, id="kuma"),
    pytest.param("apisix", ApisixObserver, id="apisix"),
    pytest.param("knative", KnativeObserver, id="knative"),
])
def test_registered_under_flaggers_provider_names(
        entry_point: str, cls: type[PrometheusObserver]
) -> None:
    plugins.observers.refresh()
    assert plugins.observers.load(entry_point) is cls
    assert isinstance(cls(client=CannedProvider(1.0), render=render), Observer)


@pytest.mark.parametrize(("provider", "cls"), [
    pytest.param("gatewayapi:v1", GatewayAPIObserver, id="gatewayapi-variant"),
    pytest.param("gatewayapi:v1beta1:service", GatewayAPIObserver, id="service-target"),
    pytest.param("kubernetes:service", KubernetesObserver, id="kubernetes-service-target"),
    pytest.param("appmesh:v1beta2", IstioObserver, id="appmesh-is-not-served"),
    pytest.param("smi:v1alpha3:linkerd", IstioObserver, id="unknown-falls-back"),
    pytest.param("crossover", IstioObserver, id="crossover-falls-back"),
])
def test_provider_strings_resolve_like_flaggers_factory(
        provider: str, cls: type[PrometheusObserver]
) -> None:
    assert plugins.observers.get(provider).factory is cls


@pytest.mark.parametrize(("cls", "answer", "expected_ms"), [
    pytest.param(IstioObserver, 612.9, 612, id="ms-histogram-truncated"),
    pytest.param(LinkerdObserver, 0.7, 0, id="below-one-ms"),
    pytest.param(KubernetesObserver, 0.4975, 497, id="seconds-times-1000-truncated"),
    pytest.param(KubernetesObserver, 2.0, 2000, id="seconds"),
    pytest.param(NginxObserver, 15.99, 15, id="query-already-in-ms"),
])
async def test_duration_is_whole_milliseconds(
        cls: type[PrometheusObserver], answer: float, expected_ms: int
) -> None:
    observer = cls(client=CannedProvider(answer), render=render)
    assert await observer.get_request_duration(model()) == timedelta(milliseconds=expected_ms)


@pytest.mark.parametrize(("cls", "mesh"), [
    pytest.param(IstioObserver, "istio", id="istio"),
    pytest.param(GatewayAPIObserver, "gatewayapi", id="gatewayapi-names-itself"),
])
async def test_duration_that_is_not_finite_is_an_error(
        cls: type[PrometheusObserver], mesh: str
) -> None:
    observer = cls(client=CannedProvider(math.inf), render=render)
    with pytest.raises(MetricsError, match=rf"^{mesh} request duration is inf"):
        await observer.get_request_duration(model())


async def test_success_rate_and_errors_pass_through() -> None:
    observer = IstioObserver(client=CannedProvider(99.5), render=render)
    assert await observer.get_request_success_rate(model()) == 99.5
    missing = IstioObserver(client=CannedProvider(NoValuesFoundError("no values found")),
                            render=render)
    with pytest.raises(NoValuesFoundError):
        await missing.get_request_success_rate(model())


def test_skipper_rewrites_non_word_characters_like_skipper_does() -> None:
    observer = SkipperObserver(client=CannedProvider(1.0), render=render)
    query = observer.render_success_rate(
        model(namespace="my-ns", ingress="my.ingress", service="svc-1")
    )
    assert 'route=~"kube(ew)?_my_ns__my_ingress_canary__.*__svc_1_canary(_[0-9]+)?"' in query


def canary(**spec: Any) -> Canary:
    body: dict[str, Any] = {
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "service": {"port": 9898},
        "analysis": {"interval": "10s", "threshold": 5, "stepWeight": 10},
    }
    body.update(spec)
    return Canary.model_validate({"metadata": {"name": "podinfo", "namespace": "test"},
                                  "spec": body})


def test_model_defaults_to_the_target_name() -> None:
    plain = metric_model(canary(), interval="1m")
    assert (plain.name, plain.namespace, plain.target, plain.service, plain.ingress,
            plain.route, plain.interval) == ("podinfo", "test", "podinfo", "podinfo", "podinfo",
                                             "podinfo", "1m")
    named = metric_model(
        canary(service={"port": 9898, "name": "front"},
               ingressRef={"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                           "name": "ing"},
               routeRef={"apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute",
                         "name": "rt"}),
        interval="30s", variables={"k": "v"},
    )
    assert (named.service, named.ingress, named.route, dict(named.variables)) == (
        "front", "ing", "rt", {"k": "v"})
