"""What every builtin-metric observer shares: a base class and the two PromQL shapes.

An observer answers ``request-success-rate`` and ``request-duration`` for one mesh
(:class:`~flaggerpy.analysis.Observer`, Flagger's ``pkg/metrics/observers``). Each mesh's
provider module holds its own (``flaggerpy.providers.istio.IstioObserver``, ...), registered in
the ``flaggerpy.observers`` entry point group under the provider name Flagger's observer factory
matches (spec §4.3). Almost all of them are a pair of Prometheus query templates, so the
behaviour lives here once, importable by in-tree and third-party observers alike:

- :class:`PrometheusObserver` renders its two templates with the canary's
  :class:`~flaggerpy.analysis.MetricTemplateModel` and runs them through the
  :class:`~flaggerpy.analysis.MetricsProvider` it was built with (Prometheus at
  ``-metrics-server`` or the Canary's ``spec.metricsServer``);
- :func:`ratio` and :func:`p99` write the two query shapes most of Flagger's observers use, so
  a mesh's module only says which series and label selector are its own;
- :func:`request_count` writes a third query, not Flagger's: how many requests the canary
  received over the interval (``sum(increase(<all requests>[i]))``), which ``minSamples``
  (docs/analysis.md) compares with. An observer says it with
  :attr:`PrometheusObserver.request_count_query`; one that does not is counted by the engine
  from the denominator of its success-rate query, when that is Flagger's ratio shape.

The renderer is passed in rather than imported: Flagger's template dialect is implemented by the
engine (which hands it over as ``render``), and a plugin never imports the engine. Factory
signature, as the analysis calls it::

    IstioObserver(*, client: MetricsProvider, render: QueryRenderer, variant: str = "")

``variant`` is what follows the mesh name in the provider string (``v1`` in ``gatewayapi:v1``,
``service`` for a Canary whose target is a Service); no builtin query depends on it.

Durations: a mesh whose query answers in milliseconds returns it as it is; one answering in
seconds sets :attr:`PrometheusObserver.duration_scale` to 1000, as Flagger's http observer
multiplies; both are truncated to whole milliseconds, as Go's ``time.Duration(int64(v))`` does.
A value that is not finite (``histogram_quantile`` answers ``+Inf`` when every request fell in
the last bucket) raises ``MetricsError`` rather than becoming Go's undefined integer conversion.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import ClassVar, Final, TypeAlias

from flaggerpy.analysis import MetricsProvider, MetricTemplateModel, Observer
from flaggerpy.errors import MetricsError

__all__ = ["HttpObserver", "PrometheusObserver", "QueryRenderer", "p99", "ratio", "request_count"]

QueryRenderer: TypeAlias = Callable[[str, MetricTemplateModel], str]
"""Renders a query template with a model; raises on an unknown function or missing key."""

_MAX_MILLISECONDS: Final = timedelta.max // timedelta(milliseconds=1)


class PrometheusObserver:
    """Renders a mesh's two builtin query templates and runs them through a provider.

    A subclass sets :attr:`mesh`, :attr:`success_rate_query` and :attr:`duration_query`, and
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
    request_count_query: ClassVar[str | None] = None
    """PromQL template answering how many requests the canary received over
    ``{{ interval }}`` (:func:`request_count`): what ``minSamples`` counts. None: the
    observer does not say, and the engine counts the denominator of :attr:`success_rate_query`
    when it is Flagger's ratio shape (an observer written before this attribute existed)."""
    compares_with_primary: ClassVar[bool] = False
    """Whether both queries select the canary by workload (``{{ target }}`` alone), so that
    rendered with ``target`` = ``<target>-primary`` they select the primary: what ``compare`` on
    a builtin metric needs. False for observers that select the canary Service, ingress or
    route (``<target>-canary``...), which cannot be pointed at the primary."""

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
        """The model the queries are rendered with; a mesh that encodes names rewrites it."""
        return model

    def render_success_rate(self, model: MetricTemplateModel) -> str:
        """The request-success-rate query for this canary, as it will be sent."""
        return self._render(self.success_rate_query, self.query_model(model))

    def render_duration(self, model: MetricTemplateModel) -> str:
        """The request-duration query for this canary, as it will be sent."""
        return self._render(self.duration_query, self.query_model(model))

    def render_request_count(self, model: MetricTemplateModel) -> str | None:
        """The query counting the canary's requests over ``model.interval``, as it will be
        sent; None when :attr:`request_count_query` is not set."""
        if self.request_count_query is None:
            return None
        return self._render(self.request_count_query, self.query_model(model))

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


def ratio(series: str, selector: str, success: str, *, trailing_comma: bool = False) -> str:
    """``sum(rate(<ok requests>)) / sum(rate(<all requests>)) * 100``, Flagger's success rate.

    ``trailing_comma`` reproduces the ``{<selector>,}`` that some of Flagger's denominators
    carry (contour, gloo, kuma, knative), so the query sent is byte for byte Flagger's.
    """
    comma = "," if trailing_comma else ""
    return (
        f"sum(rate({series}{{{selector},{success}}}[{{{{ interval }}}}]))"
        f" / sum(rate({series}{{{selector}{comma}}}[{{{{ interval }}}}])) * 100"
    )


def request_count(series: str, selector: str) -> str:
    """``sum(increase(<all requests>[i]))``: the requests a success rate is the share of.

    ``series`` is a counter of requests (or a histogram's ``_count``) and ``selector`` the
    canary's labels, as in the mesh's :func:`ratio` denominator; ``increase`` rather than
    ``rate``, so the answer is a number of requests over the interval, not a rate.
    """
    return f"sum(increase({series}{{{selector}}}[{{{{ interval }}}}]))"


def p99(series: str, selector: str, *, trailing_comma: bool = False) -> str:
    """``histogram_quantile(0.99, sum(rate(<buckets>)) by (le))``, Flagger's latency query."""
    comma = "," if trailing_comma else ""
    return (
        f"histogram_quantile(0.99, sum(rate({series}{{{selector}{comma}}}"
        f"[{{{{ interval }}}}])) by (le))"
    )


_: type[Observer] = PrometheusObserver  # every subclass is an Observer; mypy checks it here


_POD_OF_TARGET: Final = (
    'kubernetes_namespace="{{ namespace }}",'
    'kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"'
)


class HttpObserver(PrometheusObserver):
    """Flagger's "http" observer: the canary pods' own ``http_request_duration_seconds``.

    For providers with no telemetry of their own (``kubernetes``, Gateway API): the histogram
    that podinfo-style applications export. It is in seconds; the p99 is multiplied by 1000
    here, as Flagger does, before it is truncated to milliseconds. Shared here so that each of
    those providers' modules names it for itself without importing another plugin.
    """

    mesh = "http"
    success_rate_query = ratio("http_request_duration_seconds_count", _POD_OF_TARGET,
                               'status!~"5.*"')
    duration_query = p99("http_request_duration_seconds_bucket", _POD_OF_TARGET)
    request_count_query = request_count("http_request_duration_seconds_count", _POD_OF_TARGET)
    duration_scale = 1000.0
    compares_with_primary = True  # the primary's pods are <target>-primary-<hash>-<id>
