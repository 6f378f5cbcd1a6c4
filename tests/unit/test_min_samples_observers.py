"""``minSamples`` through the analyzer, for the observers that say their own request count.

The builtin Prometheus client is a canned one: it answers the success rate with 99 and the
count query with a number of requests, and remembers what it was asked. Each observer's count
(``request_count_query``) is what the analyzer sends; an observer with no way to count leaves
``minSamples`` unapplied and says so in the check's history.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from flaggerpy import plugins
from flaggerpy.analysis import MetricTemplateModel
from flaggerpy.canary.decisions import Act
from flaggerpy.canary.metrics_analysis import MetricsAnalyzer
from flaggerpy.errors import NoValuesFoundError
from flaggerpy.models import Canary
from flaggerpy.observing import PrometheusObserver, request_count
from flaggerpy.providers.skipper import SkipperObserver
from flaggerpy.providers.smi import LinkerdObserver, OsmObserver
from flaggerpy.providers.traefik import TraefikObserver
from flaggerpy.settings import Settings
from flaggerpy.telemetry import Recorder
from flaggerpy.templating import render

SERVER = "http://prometheus.test:9090"
MODEL = MetricTemplateModel(name="podinfo", namespace="test", target="podinfo",
                            service="podinfo", ingress="podinfo", route="podinfo",
                            interval="1m")


class Canned:
    """A Prometheus client: the count query answers ``requests``, any other query 99."""

    def __init__(self, count_query: str | None, requests: float) -> None:
        self.count_query = count_query
        self.requests = requests
        self.queries: list[str] = []

    async def run_query(self, query: str) -> float:
        self.queries.append(query)
        if query == self.count_query:
            if self.requests < 0:
                raise NoValuesFoundError("no values")
            return self.requests
        return 99.0

    async def is_online(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


class Averaged(PrometheusObserver):
    """A third-party observer whose success rate is not Flagger's ratio, and no count."""

    mesh = "averaged"
    success_rate_query = 'avg(meshy_success_percent{service="{{ target }}"})'
    duration_query = 'avg(meshy_latency_ms{service="{{ target }}"})'


class CountedAveraged(Averaged):
    request_count_query = request_count("meshy_requests_total", 'service="{{ target }}"')


@pytest.fixture
async def analyzer_for() -> AsyncIterator[Callable[[Canned], MetricsAnalyzer]]:
    made: list[MetricsAnalyzer] = []

    def make(client: Canned) -> MetricsAnalyzer:
        metrics: plugins.Registry[plugins.Factory] = plugins.Registry("flaggerpy.metrics")
        metrics.register("prometheus", lambda **_: client)
        observers: plugins.Registry[plugins.Factory] = plugins.Registry("flaggerpy.observers")
        for name, cls in (("skipper", SkipperObserver), ("traefik", TraefikObserver),
                          ("linkerd", LinkerdObserver), ("osm", OsmObserver),
                          ("averaged", Averaged), ("counted", CountedAveraged)):
            observers.register(name, cls)
        analyzer = MetricsAnalyzer(
            templates=_Empty(), secrets=_Empty().get,
            settings=Settings(metrics={"server": SERVER}, mesh={"provider": "kubernetes"}),
            telemetry=Recorder(process_collectors=False), metrics_registry=metrics,
            observer_registry=observers,
        )
        made.append(analyzer)
        return analyzer

    yield make
    for analyzer in made:
        await analyzer.aclose()


class _Empty:
    def get(self, key: Any) -> None:
        return None


def make_canary(provider: str, **metric: Any) -> Canary:
    body = {"name": "request-success-rate", "interval": "1m",
            "thresholdRange": {"min": 90}, "minSamples": 100, **metric}
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {"provider": provider,
                 "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "ingressRef": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                                "name": "podinfo"},
                 "service": {"port": 9898},
                 "analysis": {"interval": "1m", "threshold": 5, "metrics": [body]}},
    })


COUNTED = [
    pytest.param("skipper", SkipperObserver, id="skipper"),
    pytest.param("traefik", TraefikObserver, id="traefik"),
    pytest.param("linkerd", LinkerdObserver, id="linkerd"),
    pytest.param("osm", OsmObserver, id="osm"),
    pytest.param("counted", CountedAveraged, id="third-party"),
]


@pytest.mark.parametrize(("provider", "cls"), COUNTED)
async def test_too_few_requests_hold_the_weight(
        analyzer_for: Callable[[Canned], MetricsAnalyzer], provider: str,
        cls: type[PrometheusObserver]) -> None:
    count = cls(client=None, render=render).render_request_count(MODEL)  # type: ignore[arg-type]
    assert count is not None
    client = Canned(count, requests=12)
    outcome = await analyzer_for(client).run(make_canary(provider, onNoData="hold"))
    assert (outcome.passed, outcome.hold) == (False, True)
    assert count in client.queries
    assert outcome.failure is not None
    assert outcome.failure.message == (
        "Halt podinfo.test advancement request-success-rate: 12 requests to podinfo in 1m, "
        "fewer than minSamples 100")
    (decision,) = outcome.decisions
    assert (decision.verdict, decision.act, decision.samples) == ("NoData", Act.HOLD, 12)


@pytest.mark.parametrize(("provider", "cls"), COUNTED)
async def test_enough_requests_pass_with_their_count(
        analyzer_for: Callable[[Canned], MetricsAnalyzer], provider: str,
        cls: type[PrometheusObserver]) -> None:
    count = cls(client=None, render=render).render_request_count(MODEL)  # type: ignore[arg-type]
    outcome = await analyzer_for(Canned(count, requests=250.4)).run(make_canary(provider))
    assert outcome.passed
    (decision,) = outcome.decisions
    assert (decision.verdict, decision.act, decision.samples) == ("Pass", Act.PASS, 250)


async def test_no_series_at_all_is_no_request(
        analyzer_for: Callable[[Canned], MetricsAnalyzer]) -> None:
    count = SkipperObserver(client=None, render=render).render_request_count(  # type: ignore[arg-type]
        MODEL)
    outcome = await analyzer_for(Canned(count, requests=-1)).run(make_canary("skipper"))
    assert not outcome.passed
    (decision,) = outcome.decisions
    assert (decision.verdict, decision.act, decision.samples) == ("NoData", Act.FAIL, 0)


async def test_an_observer_that_cannot_count_says_minsamples_is_not_applied(
        analyzer_for: Callable[[Canned], MetricsAnalyzer]) -> None:
    client = Canned(None, requests=0)
    outcome = await analyzer_for(client).run(make_canary("averaged"))
    assert outcome.passed
    assert client.queries == ['avg(meshy_success_percent{service="podinfo"})']
    (decision,) = outcome.decisions
    assert (decision.verdict, decision.act, decision.samples) == ("Pass", Act.PASS, None)
    assert decision.message == (
        "minSamples 100 not applied: the requests to podinfo in 1m could not be counted (the "
        "observer has no request count, or its query failed)")
