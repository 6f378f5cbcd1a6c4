"""Builtin metrics: each mesh's observer sends spec §4.3's PromQL and reads answers as Flagger."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest

from flaggerpy import plugins
from flaggerpy.analysis import MetricsProvider, MetricTemplateModel, Observer
from flaggerpy.canary.metrics_analysis import metric_model, observer_provider
from flaggerpy.canary.templating import render
from flaggerpy.errors import MetricsError, NoValuesFoundError
from flaggerpy.models import Canary
from flaggerpy.providers import _observer as observers


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

# Spec §4.3's queries as sent for namespace "test", every name "podinfo" and interval "1m".
EXPECTED: dict[type[observers.PrometheusObserver], tuple[str, str]] = {
    observers.IstioObserver: (
        'sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace='
        '"test",destination_workload=~"podinfo",response_code!~"5.*"}[1m])) / sum(rate('
        'istio_requests_total{reporter="destination",destination_workload_namespace="test",'
        'destination_workload=~"podinfo"}[1m])) * 100',
        'histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter='
        '"destination",destination_workload_namespace="test",destination_workload=~"podinfo"}'
        "[1m])) by (le))",
    ),
    observers.LinkerdObserver: (
        'sum(rate(response_total{namespace="test",deployment=~"podinfo",classification!='
        '"failure",direction="inbound"}[1m])) / sum(rate(response_total{namespace="test",'
        'deployment=~"podinfo",direction="inbound"}[1m])) * 100',
        'histogram_quantile(0.99, sum(rate(response_latency_ms_bucket{namespace="test",'
        'deployment=~"podinfo",direction="inbound"}[1m])) by (le))',
    ),
    observers.AppMeshObserver: (
        f'sum(rate(envoy_cluster_upstream_rq{{{POD},envoy_response_code!~"5.*"}}[1m])) / '
        f"sum(rate(envoy_cluster_upstream_rq{{{POD}}}[1m])) * 100",
        f"histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{{{POD}}}[1m]))"
        " by (le))",
    ),
    observers.ContourObserver: (
        'sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=~"test_podinfo-canary_'
        '[0-9a-zA-Z-]+",envoy_response_code!~"5.*"}[1m])) / sum(rate(envoy_cluster_upstream_rq'
        '{envoy_cluster_name=~"test_podinfo-canary_[0-9a-zA-Z-]+",}[1m])) * 100',
        "histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_"
        'name=~"test_podinfo-canary_[0-9a-zA-Z-]+",}[1m])) by (le))',
    ),
    observers.GlooObserver: (
        'sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=~"test-podinfo-canaryupstream-'
        '[0-9a-zA-Z-]+_[0-9a-zA-Z-]+",envoy_response_code!~"5.*"}[1m])) / sum(rate('
        'envoy_cluster_upstream_rq{envoy_cluster_name=~"test-podinfo-canaryupstream-'
        '[0-9a-zA-Z-]+_[0-9a-zA-Z-]+",}[1m])) * 100',
        "histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_"
        'name=~"test-podinfo-canaryupstream-[0-9a-zA-Z-]+_[0-9a-zA-Z-]+",}[1m])) by (le))',
    ),
    observers.NginxObserver: (
        'sum(rate(nginx_ingress_controller_requests{namespace="test",ingress="podinfo",canary!='
        '"",status!~"5.*"}[1m])) / sum(rate(nginx_ingress_controller_requests{namespace="test",'
        'ingress="podinfo",canary!=""}[1m])) * 100',
        "sum(rate(nginx_ingress_controller_response_duration_seconds_sum{namespace=\"test\","
        'ingress="podinfo",canary!=""}[1m])) / sum(rate(nginx_ingress_controller_response_'
        'duration_seconds_count{namespace="test",ingress="podinfo",canary!=""}[1m])) * 1000',
    ),
    observers.HttpObserver: (
        f'sum(rate(http_request_duration_seconds_count{{{POD},status!~"5.*"}}[1m])) / '
        f"sum(rate(http_request_duration_seconds_count{{{POD}}}[1m])) * 100",
        f"histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{{{POD}}}[1m]))"
        " by (le))",
    ),
    observers.SkipperObserver: (
        f' sum(rate(skipper_response_duration_seconds_bucket{{route=~"{SKIPPER_ROUTE}",'
        f'code!~"5..",le="+Inf"}}[1m])) / sum(rate(skipper_response_duration_seconds_bucket'
        f'{{route=~"{SKIPPER_ROUTE}",le="+Inf"}}[1m])) * 100',
        f' sum(rate(skipper_serve_route_duration_seconds_sum{{route=~"{SKIPPER_ROUTE}"}}[1m]))'
        f' / sum(rate(skipper_serve_route_duration_seconds_count{{route=~"{SKIPPER_ROUTE}"}}'
        "[1m])) * 1000",
    ),
    observers.TraefikObserver: (
        'sum(rate(traefik_service_request_duration_seconds_bucket{service=~"test-podinfo-'
        'canary-[0-9a-zA-Z-]+@kubernetescrd",code!~"5..",le="+Inf"}[1m])) / sum(rate('
        'traefik_service_request_duration_seconds_bucket{service=~"test-podinfo-canary-'
        '[0-9a-zA-Z-]+@kubernetescrd",le="+Inf"}[1m])) * 100',
        "histogram_quantile(0.99, sum(rate(traefik_service_request_duration_seconds_bucket{"
        'service=~"test-podinfo-canary-[0-9a-zA-Z-]+@kubernetescrd"}[1m])) by (le)) * 1000',
    ),
    observers.OsmObserver: (
        'sum(rate(osm_request_total{destination_namespace="test",destination_kind="Deployment",'
        'destination_name="podinfo",response_code!~"5.*"}[1m])) / sum(rate(osm_request_total{'
        'destination_namespace="test",destination_kind="Deployment",destination_name="podinfo"}'
        "[1m])) * 100",
        "histogram_quantile(0.99, sum(rate(osm_request_duration_ms_bucket{destination_namespace="
        '"test",destination_kind="Deployment",destination_name="podinfo"}[1m])) by (le))',
    ),
    observers.KumaObserver: (
        'sum(rate(envoy_cluster_upstream_rq{service=~"podinfo-canary_test_svc_[0-9a-zA-Z-]+",'
        'envoy_response_code!~"5.*"}[1m])) / sum(rate(envoy_cluster_upstream_rq{service=~'
        '"podinfo-canary_test_svc_[0-9a-zA-Z-]+",}[1m])) * 100',
        "histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{service=~"
        '"podinfo-canary_test_svc_[0-9a-zA-Z-]+",}[1m])) by (le))',
    ),
    observers.ApisixObserver: (
        'sum(rate(apisix_http_status{route=~"test_podinfo-podinfo-canary_.+",code!~"5.."}[1m]))'
        ' / sum(rate(apisix_http_status{route=~"test_podinfo-podinfo-canary_.+"}[1m])) * 100',
        'histogram_quantile(0.99, sum(rate(apisix_http_latency_bucket{type=~"request",route=~'
        '"test_podinfo-podinfo-canary_.+"}[1m])) by (le))',
    ),
    observers.KnativeObserver: (
        'sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=~"test/podinfo",'
        'envoy_response_code!~"5.*"}[1m])) / sum(rate(envoy_cluster_upstream_rq{'
        'envoy_cluster_name=~"test/podinfo",}[1m])) * 100',
        "histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{"
        'envoy_cluster_name=~"test/podinfo",}[1m])) by (le))',
    ),
}


def test_every_observer_is_covered() -> None:
    assert set(EXPECTED) == set(observers.PrometheusObserver.__subclasses__())


@pytest.mark.parametrize("cls", [pytest.param(c, id=c.mesh if c is not observers.HttpObserver
                                              else "http") for c in EXPECTED])
async def test_queries_are_spec_4_3(cls: type[observers.PrometheusObserver]) -> None:
    client = CannedProvider(99.0)
    observer = cls(client=client, render=render)
    await observer.get_request_success_rate(model())
    await observer.get_request_duration(model())
    assert client.queries == list(EXPECTED[cls])


@pytest.mark.parametrize(("entry_point", "cls"), [
    pytest.param("istio", observers.IstioObserver, id="istio"),
    pytest.param("linkerd", observers.LinkerdObserver, id="linkerd"),
    pytest.param("appmesh", observers.AppMeshObserver, id="appmesh"),
    pytest.param("contour", observers.ContourObserver, id="contour"),
    pytest.param("gloo", observers.GlooObserver, id="gloo"),
    pytest.param("nginx", observers.NginxObserver, id="nginx"),
    pytest.param("kubernetes", observers.HttpObserver, id="kubernetes"),
    pytest.param("gatewayapi", observers.HttpObserver, id="gatewayapi"),
    pytest.param("skipper", observers.SkipperObserver, id="skipper"),
    pytest.param("traefik", observers.TraefikObserver, id="traefik"),
    pytest.param("osm", observers.OsmObserver, id="osm"),
    pytest.param("kuma", observers.KumaObserver, id="kuma"),
    pytest.param("apisix", observers.ApisixObserver, id="apisix"),
    pytest.param("knative", observers.KnativeObserver, id="knative"),
])
def test_registered_under_flaggers_provider_names(
        entry_point: str, cls: type[observers.PrometheusObserver]
) -> None:
    plugins.observers.refresh()
    assert plugins.observers.load(entry_point) is cls
    assert isinstance(cls(client=CannedProvider(1.0), render=render), Observer)


@pytest.mark.parametrize(("provider", "cls"), [
    pytest.param("appmesh:v1beta2", observers.AppMeshObserver, id="appmesh-variant"),
    pytest.param("gatewayapi:v1", observers.HttpObserver, id="gatewayapi-variant"),
    pytest.param("gatewayapi:v1beta1:service", observers.HttpObserver, id="service-target"),
    pytest.param("smi:v1alpha3:linkerd", observers.IstioObserver, id="unknown-falls-back"),
    pytest.param("crossover", observers.IstioObserver, id="crossover-falls-back"),
])
def test_provider_strings_resolve_like_flaggers_factory(
        provider: str, cls: type[observers.PrometheusObserver]
) -> None:
    assert plugins.observers.get(provider).factory is cls


@pytest.mark.parametrize(("cls", "answer", "expected_ms"), [
    pytest.param(observers.IstioObserver, 612.9, 612, id="ms-histogram-truncated"),
    pytest.param(observers.LinkerdObserver, 0.7, 0, id="below-one-ms"),
    pytest.param(observers.HttpObserver, 0.4975, 497, id="seconds-times-1000-truncated"),
    pytest.param(observers.HttpObserver, 2.0, 2000, id="seconds"),
    pytest.param(observers.NginxObserver, 15.99, 15, id="query-already-in-ms"),
])
async def test_duration_is_whole_milliseconds(
        cls: type[observers.PrometheusObserver], answer: float, expected_ms: int
) -> None:
    observer = cls(client=CannedProvider(answer), render=render)
    assert await observer.get_request_duration(model()) == timedelta(milliseconds=expected_ms)


async def test_duration_that_is_not_finite_is_an_error() -> None:
    observer = observers.IstioObserver(client=CannedProvider(math.inf), render=render)
    with pytest.raises(MetricsError, match=r"istio request duration is inf"):
        await observer.get_request_duration(model())


async def test_success_rate_and_errors_pass_through() -> None:
    observer = observers.IstioObserver(client=CannedProvider(99.5), render=render)
    assert await observer.get_request_success_rate(model()) == 99.5
    missing = observers.IstioObserver(client=CannedProvider(NoValuesFoundError("no values found")),
                                      render=render)
    with pytest.raises(NoValuesFoundError):
        await missing.get_request_success_rate(model())


def test_skipper_rewrites_non_word_characters_like_skipper_does() -> None:
    observer = observers.SkipperObserver(client=CannedProvider(1.0), render=render)
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


@pytest.mark.parametrize(("mesh", "spec", "expected"), [
    pytest.param("istio", {}, "istio", id="mesh-provider"),
    pytest.param("istio", {"provider": "nginx"}, "nginx", id="spec-provider-wins"),
    pytest.param("linkerd", {"provider": "nginx"}, "linkerd", id="linkerd-mesh-always-linkerd"),
    pytest.param("smi:crossover", {}, "crossover", id="crossover"),
    pytest.param("kubernetes", {"targetRef": {"apiVersion": "v1", "kind": "Service",
                                              "name": "podinfo"}},
                 "kubernetes:service", id="service-target"),
    pytest.param("knative", {"targetRef": {"apiVersion": "serving.knative.dev/v1",
                                           "kind": "Service", "name": "podinfo"}},
                 "knative", id="knative-service-is-not-a-service-target"),
])
def test_observer_selection_is_flaggers(mesh: str, spec: dict[str, Any], expected: str) -> None:
    assert observer_provider(canary(**spec), mesh_provider=mesh) == expected


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
