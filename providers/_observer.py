"""Builtin metrics per mesh: Flagger's ``request-success-rate`` and ``request-duration`` PromQL.

Flagger's ``pkg/metrics/observers`` is keyed by mesh, and so is this: each class below is the
pair of queries one mesh (or ingress) needs, registered in the ``flaggerpy.observers`` entry
point group under the provider names Flagger's observer factory matches (spec §4.3)::

    istio  linkerd  appmesh  contour  gloo  nginx  kubernetes  gatewayapi  skipper  traefik
    osm  kuma  apisix  knative

``kubernetes`` and ``gatewayapi`` share Flagger's "http" observer (:class:`HttpObserver`),
which reads the ``http_request_duration_seconds`` histogram that podinfo-style applications
export. An unknown mesh falls back to Istio's queries, as in Flagger (the registry logs it).

Every observer is a :class:`PrometheusObserver`: it renders its two query templates with the
canary's :class:`~flaggerpy.analysis.MetricTemplateModel` and runs them through the
:class:`~flaggerpy.analysis.MetricsProvider` it was built with (Prometheus at
``-metrics-server`` or the Canary's ``spec.metricsServer``). The query texts are spec §4.3's,
which mirror Flagger's ``pkg/metrics/observers/<mesh>.go`` once whitespace is collapsed,
trailing commas in some label selectors included.

The renderer is passed in rather than imported: plugins depend only on
``flaggerpy.{analysis,models,errors,...}`` (style.md §9.1), and Flagger's template dialect
lives in the core (``flaggerpy.canary.templating.render``). Factory signature, as the
analysis calls it::

    IstioObserver(*, client: MetricsProvider, render: QueryRenderer, variant: str = "")

``variant`` is what follows the mesh name in the provider string (``v1beta2`` in
``appmesh:v1beta2``, ``service`` for a Canary whose target is a Service); no observer's
queries depend on it.

Durations: a mesh whose histogram is in milliseconds returns its p99 as it is; Flagger's http
observer multiplies a seconds value by 1000; both are truncated to whole milliseconds, as Go's
``time.Duration(int64(v))`` does. A value that is not finite (``histogram_quantile`` answers
``+Inf`` when every request fell in the last bucket) raises ``MetricsError`` rather than
becoming Go's undefined integer conversion.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import ClassVar, Final, TypeAlias

from flaggerpy.analysis import MetricsProvider, MetricTemplateModel, Observer
from flaggerpy.errors import MetricsError

__all__ = [
    "ApisixObserver",
    "AppMeshObserver",
    "ContourObserver",
    "GlooObserver",
    "HttpObserver",
    "IstioObserver",
    "KnativeObserver",
    "KumaObserver",
    "LinkerdObserver",
    "NginxObserver",
    "OsmObserver",
    "PrometheusObserver",
    "QueryRenderer",
    "SkipperObserver",
    "TraefikObserver",
]

QueryRenderer: TypeAlias = Callable[[str, MetricTemplateModel], str]
"""Renders a query template with a model; raises on an unknown function or missing key."""

_MAX_MILLISECONDS: Final = timedelta.max // timedelta(milliseconds=1)


class PrometheusObserver:
    """Renders a mesh's two builtin query templates and runs them through a provider.

    A subclass sets :attr:`success_rate_query` and :attr:`duration_query`, and
    :attr:`duration_scale` when its latency query does not answer in milliseconds.
    """

    mesh: ClassVar[str]
    """The provider name this observer serves, for messages."""
    success_rate_query: ClassVar[str]
    """PromQL template answering the canary's non-5xx percentage."""
    duration_query: ClassVar[str]
    """PromQL template answering the canary's latency (p99 for most meshes)."""
    duration_scale: ClassVar[float] = 1.0
    """What a duration answer is multiplied by to be milliseconds (1000 for seconds)."""

    def __init__(
            self,
            *,
            client: MetricsProvider,
            render: QueryRenderer,
            variant: str = "",  # the provider string after "<mesh>:"; no query depends on it
    ) -> None:
        self.client = client
        self.variant = variant
        self._render = render

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.client!r})"

    def query_model(self, model: MetricTemplateModel) -> MetricTemplateModel:
        """The model the queries are rendered with; Skipper rewrites it."""
        return model

    def render_success_rate(self, model: MetricTemplateModel) -> str:
        """The request-success-rate query for this canary, as it will be sent."""
        return self._render(self.success_rate_query, self.query_model(model))

    def render_duration(self, model: MetricTemplateModel) -> str:
        """The request-duration query for this canary, as it will be sent."""
        return self._render(self.duration_query, self.query_model(model))

    async def get_request_success_rate(self, model: MetricTemplateModel) -> float:
        """The percentage of non-5xx requests over ``model.interval``."""
        return await self.client.run_query(self.render_success_rate(model))

    async def get_request_duration(self, model: MetricTemplateModel) -> timedelta:
        """The latency over ``model.interval``, truncated to whole milliseconds."""
        value = await self.client.run_query(self.render_duration(model))
        milliseconds = value * self.duration_scale
        if not math.isfinite(milliseconds):
            raise MetricsError(f"{self.mesh} request duration is {value} (not a number of ms)")
        whole = math.trunc(milliseconds)
        if abs(whole) > _MAX_MILLISECONDS:
            raise MetricsError(f"{self.mesh} request duration {whole}ms is out of range")
        return timedelta(milliseconds=whole)


def _ratio(series: str, selector: str, success: str, *, trailing_comma: bool = False) -> str:
    """``sum(rate(<ok requests>)) / sum(rate(<all requests>)) * 100``, Flagger's success rate."""
    comma = "," if trailing_comma else ""
    return (
        f"sum(rate({series}{{{selector},{success}}}[{{{{ interval }}}}]))"
        f" / sum(rate({series}{{{selector}{comma}}}[{{{{ interval }}}}])) * 100"
    )


def _p99(series: str, selector: str, *, trailing_comma: bool = False) -> str:
    """``histogram_quantile(0.99, sum(rate(<buckets>)) by (le))``."""
    comma = "," if trailing_comma else ""
    return (
        f"histogram_quantile(0.99, sum(rate({series}{{{selector}{comma}}}"
        f"[{{{{ interval }}}}])) by (le))"
    )


class IstioObserver(PrometheusObserver):
    """Istio: ``istio_requests_total`` and ``istio_request_duration_milliseconds``, server side."""

    mesh = "istio"
    _selector = ('reporter="destination",destination_workload_namespace="{{ namespace }}",'
                 'destination_workload=~"{{ target }}"')
    success_rate_query = _ratio("istio_requests_total", _selector, 'response_code!~"5.*"')
    duration_query = _p99("istio_request_duration_milliseconds_bucket", _selector)


class LinkerdObserver(PrometheusObserver):
    """Linkerd: inbound ``response_total`` by classification, and ``response_latency_ms``."""

    mesh = "linkerd"
    success_rate_query = (
        'sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",'
        'classification!="failure",direction="inbound"}[{{ interval }}]))'
        ' / sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",'
        'direction="inbound"}[{{ interval }}])) * 100'
    )
    duration_query = _p99(
        "response_latency_ms_bucket",
        'namespace="{{ namespace }}",deployment=~"{{ target }}",direction="inbound"',
    )


_POD_OF_TARGET: Final = (
    'kubernetes_namespace="{{ namespace }}",'
    'kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"'
)


class AppMeshObserver(PrometheusObserver):
    """App Mesh: the canary pods' Envoy ``envoy_cluster_upstream_rq`` counters."""

    mesh = "appmesh"
    success_rate_query = _ratio("envoy_cluster_upstream_rq", _POD_OF_TARGET,
                                'envoy_response_code!~"5.*"')
    duration_query = _p99("envoy_cluster_upstream_rq_time_bucket", _POD_OF_TARGET)


class ContourObserver(PrometheusObserver):
    """Contour: Envoy clusters named ``<namespace>_<service>-canary_<port>``."""

    mesh = "contour"
    _selector = 'envoy_cluster_name=~"{{ namespace }}_{{ service }}-canary_[0-9a-zA-Z-]+"'
    success_rate_query = _ratio("envoy_cluster_upstream_rq", _selector,
                                'envoy_response_code!~"5.*"', trailing_comma=True)
    duration_query = _p99("envoy_cluster_upstream_rq_time_bucket", _selector,
                          trailing_comma=True)


class GlooObserver(PrometheusObserver):
    """Gloo: Envoy clusters of the canary upstream ``<namespace>-<target>-canaryupstream-*``."""

    mesh = "gloo"
    _selector = ('envoy_cluster_name=~"{{ namespace }}-{{ target }}-canaryupstream-'
                 '[0-9a-zA-Z-]+_[0-9a-zA-Z-]+"')
    success_rate_query = _ratio("envoy_cluster_upstream_rq", _selector,
                                'envoy_response_code!~"5.*"', trailing_comma=True)
    duration_query = _p99("envoy_cluster_upstream_rq_time_bucket", _selector,
                          trailing_comma=True)


class NginxObserver(PrometheusObserver):
    """NGINX ingress: the canary ingress's requests, and its average response time."""

    mesh = "nginx"
    _selector = 'namespace="{{ namespace }}",ingress="{{ ingress }}",canary!=""'
    success_rate_query = _ratio("nginx_ingress_controller_requests", _selector,
                                'status!~"5.*"')
    duration_query = (
        f"sum(rate(nginx_ingress_controller_response_duration_seconds_sum{{{_selector}}}"
        f"[{{{{ interval }}}}])) / sum(rate(nginx_ingress_controller_response_duration_seconds"
        f"_count{{{_selector}}}[{{{{ interval }}}}])) * 1000"
    )


class HttpObserver(PrometheusObserver):
    """Flagger's "http" observer (providers kubernetes, gatewayapi): podinfo-style histograms.

    ``http_request_duration_seconds`` is in seconds; the p99 is multiplied by 1000 here, as
    Flagger does, before it is truncated to milliseconds.
    """

    mesh = "kubernetes"
    success_rate_query = _ratio("http_request_duration_seconds_count", _POD_OF_TARGET,
                                'status!~"5.*"')
    duration_query = _p99("http_request_duration_seconds_bucket", _POD_OF_TARGET)
    duration_scale = 1000.0


_SKIPPER_ROUTE: Final = (
    '{{- $route := printf "kube(ew)?_%s__%s_canary__.*__%s_canary(_[0-9]+)?"'
    " namespace ingress service }}"
)
_NON_WORD: Final = re.compile(r"\W", re.ASCII)


class SkipperObserver(PrometheusObserver):
    """Skipper: route ``kube(ew)?_<ns>__<ingress>_canary__...__<service>_canary``.

    Skipper turns every non-word character of an ingress route's parts into ``_``, so the
    model's name, namespace, target, service and ingress are rewritten the same way before
    the queries are rendered (Flagger's ``encodeModelForSkipper``).
    """

    mesh = "skipper"
    success_rate_query = (
        _SKIPPER_ROUTE
        + ' sum(rate(skipper_response_duration_seconds_bucket{route=~"{{ $route }}",'
        'code!~"5..",le="+Inf"}[{{ interval }}]))'
        ' / sum(rate(skipper_response_duration_seconds_bucket{route=~"{{ $route }}",'
        'le="+Inf"}[{{ interval }}])) * 100'
    )
    duration_query = (
        _SKIPPER_ROUTE
        + ' sum(rate(skipper_serve_route_duration_seconds_sum{route=~"{{ $route }}"}'
        "[{{ interval }}]))"
        ' / sum(rate(skipper_serve_route_duration_seconds_count{route=~"{{ $route }}"}'
        "[{{ interval }}])) * 1000"
    )

    def query_model(self, model: MetricTemplateModel) -> MetricTemplateModel:
        def encode(value: str) -> str:
            return _NON_WORD.sub("_", value)

        return replace(
            model, name=encode(model.name), namespace=encode(model.namespace),
            target=encode(model.target), service=encode(model.service),
            ingress=encode(model.ingress),
        )


class TraefikObserver(PrometheusObserver):
    """Traefik: the canary service's ``traefik_service_request_duration_seconds`` histogram."""

    mesh = "traefik"
    _selector = 'service=~"{{ namespace }}-{{ target }}-canary-[0-9a-zA-Z-]+@kubernetescrd"'
    success_rate_query = (
        f"sum(rate(traefik_service_request_duration_seconds_bucket{{{_selector},"
        f'code!~"5..",le="+Inf"}}[{{{{ interval }}}}]))'
        f" / sum(rate(traefik_service_request_duration_seconds_bucket{{{_selector},"
        f'le="+Inf"}}[{{{{ interval }}}}])) * 100'
    )
    duration_query = _p99("traefik_service_request_duration_seconds_bucket", _selector) + " * 1000"


class OsmObserver(PrometheusObserver):
    """Open Service Mesh: ``osm_request_total`` and ``osm_request_duration_ms`` of the target."""

    mesh = "osm"
    _selector = ('destination_namespace="{{ namespace }}",destination_kind="Deployment",'
                 'destination_name="{{ target }}"')
    success_rate_query = _ratio("osm_request_total", _selector, 'response_code!~"5.*"')
    duration_query = _p99("osm_request_duration_ms_bucket", _selector)


class KumaObserver(PrometheusObserver):
    """Kuma: Envoy stats of the service ``<target>-canary_<namespace>_svc_<port>``."""

    mesh = "kuma"
    _selector = 'service=~"{{ target }}-canary_{{ namespace }}_svc_[0-9a-zA-Z-]+"'
    success_rate_query = _ratio("envoy_cluster_upstream_rq", _selector,
                                'envoy_response_code!~"5.*"', trailing_comma=True)
    duration_query = _p99("envoy_cluster_upstream_rq_time_bucket", _selector,
                          trailing_comma=True)


class ApisixObserver(PrometheusObserver):
    """Apache APISIX: ``apisix_http_status`` and ``apisix_http_latency`` of the canary route."""

    mesh = "apisix"
    _selector = 'route=~"{{ namespace }}_{{ route }}-{{ target }}-canary_.+"'
    success_rate_query = _ratio("apisix_http_status", _selector, 'code!~"5.."')
    duration_query = _p99("apisix_http_latency_bucket", f'type=~"request",{_selector}')


class KnativeObserver(PrometheusObserver):
    """Knative: Envoy clusters named ``<namespace>/<revision>`` (``{{ route }}``)."""

    mesh = "knative"
    _selector = 'envoy_cluster_name=~"{{ namespace }}/{{ route }}"'
    success_rate_query = _ratio("envoy_cluster_upstream_rq", _selector,
                                'envoy_response_code!~"5.*"', trailing_comma=True)
    duration_query = _p99("envoy_cluster_upstream_rq_time_bucket", _selector,
                          trailing_comma=True)


_istio: type[Observer] = IstioObserver
_linkerd: type[Observer] = LinkerdObserver
_appmesh: type[Observer] = AppMeshObserver
_contour: type[Observer] = ContourObserver
_gloo: type[Observer] = GlooObserver
_nginx: type[Observer] = NginxObserver
_http: type[Observer] = HttpObserver
_skipper: type[Observer] = SkipperObserver
_traefik: type[Observer] = TraefikObserver
_osm: type[Observer] = OsmObserver
_kuma: type[Observer] = KumaObserver
_apisix: type[Observer] = ApisixObserver
_knative: type[Observer] = KnativeObserver
