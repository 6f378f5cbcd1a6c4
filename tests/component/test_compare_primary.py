"""Comparison with the primary against a real Prometheus: the range query and the verdicts.

A local exporter serves a latency gauge per pod, for a canary's pods and its primary's, and a
real Prometheus scrapes it every second. The provider's range query
(:meth:`PrometheusProvider.run_samples`) is checked on Prometheus's own answers, and the
analyzer on what the lifecycle engine gets back for a metric with ``compare``: a worse canary
halts advancement with the statistic, an equal one passes, a missing side has no values, a
threshold and a comparison must both pass, and a provider that cannot return samples is a
failed check naming its type.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from aiohttp import web

from e2e.prometheus import LocalPrometheus, ScrapeJob
from flaggerpy import plugins
from flaggerpy.canary.metrics_analysis import AnalysisOutcome, MetricsAnalyzer
from flaggerpy.errors import MetricsError
from flaggerpy.judging import Verdict
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.metrics.prometheus import PrometheusProvider, sample_step
from flaggerpy.models import Canary
from flaggerpy.settings import Settings
from flaggerpy.telemetry import Recorder
from tests.metrics_exporter import MetricsExporter

NAMESPACE = "test"
T = TypeVar("T")
LATENCY = 'max(compare_test_latency_ms{pod=~"{{ target }}-[0-9a-z]+-[0-9a-z]+"})'
ERRORS = """
sum(increase(compare_test_requests_total{pod=~"{{ target }}-[0-9a-z]+-[0-9a-z]+",
                                         code="500"}[{{ interval }}]))
/
sum(increase(compare_test_requests_total{pod=~"{{ target }}-[0-9a-z]+-[0-9a-z]+"}[{{ interval }}]))
"""


@pytest.fixture(scope="module")
def exporter() -> Iterator[MetricsExporter]:
    with MetricsExporter() as running:
        for pod, value in (("slow-abc12-xyz34", 130.0), ("slow-primary-abc12-xyz34", 100.0),
                           ("same-abc12-xyz34", 100.0), ("same-primary-abc12-xyz34", 100.0),
                           ("lonely-abc12-xyz34", 100.0)):
            running.gauge("compare_test_latency_ms", {"pod": pod}, value)
        # Requests per second, ok and failed: the slow canary fails 3 in 13, its primary none.
        for pod, ok, failed in (("slow-abc12-xyz34", 10, 3), ("slow-primary-abc12-xyz34", 10, 0),
                                ("same-abc12-xyz34", 10, 1), ("same-primary-abc12-xyz34", 10, 1)):
            running.counter("compare_test_requests_total", {"pod": pod, "code": "200"},
                            per_second=ok)
            if failed:
                running.counter("compare_test_requests_total", {"pod": pod, "code": "500"},
                                per_second=failed)
        yield running


@pytest.fixture(scope="module")
def prometheus(exporter: MetricsExporter) -> Iterator[LocalPrometheus]:
    with LocalPrometheus([ScrapeJob("exporter", [exporter.target])]) as server:
        yield server


@pytest.fixture
async def provider(prometheus: LocalPrometheus) -> AsyncIterator[PrometheusProvider]:
    async with PrometheusProvider(address=prometheus.url) as client:
        yield client


async def test_a_range_query_answers_every_point_of_every_series(
        provider: PrometheusProvider,
) -> None:
    # vector() exists at every instant: 30 s at a 1 s step is 31 points per series.
    assert await provider.run_samples("vector(3)", window=timedelta(seconds=30)) == [3.0] * 31
    two = ('label_replace(vector(1), "s", "a", "", "")\n'
           ' or label_replace(vector(2), "s", "b", "", "")')
    values = await provider.run_samples(two, window=timedelta(seconds=30))
    assert sorted(values) == [1.0] * 31 + [2.0] * 31
    assert await provider.run_samples("absent_metric_xyz", window=timedelta(minutes=1)) == []


async def test_scraped_series_come_back_as_samples(provider: PrometheusProvider) -> None:
    async def scraped() -> list[float]:
        values: list[float] = await provider.run_samples(
            'compare_test_latency_ms{pod="slow-abc12-xyz34"}', window=timedelta(seconds=10))
        assert len(values) >= 5
        return values

    values = await eventually(scraped)
    assert set(values) == {130.0}


def test_the_step_is_a_thirtieth_of_the_window_within_bounds() -> None:
    assert sample_step(timedelta(minutes=1)) == timedelta(seconds=2)
    assert sample_step(timedelta(seconds=10)) == timedelta(seconds=1)
    assert sample_step(timedelta(hours=10)) == timedelta(minutes=5)


async def test_a_bad_range_query_is_an_error_with_prometheus_own_words(
        provider: PrometheusProvider,
) -> None:
    with pytest.raises(MetricsError, match=r"^error response: .*bad_data"):
        await provider.run_samples("sum(", window=timedelta(minutes=1))


async def test_the_range_request_goes_under_the_address_path(aiohttp_raw_server: Any) -> None:
    asked: list[web.BaseRequest] = []

    async def handle(request: web.BaseRequest) -> web.Response:
        asked.append(request)
        series = {"metric": {}, "values": [[1.0, "4"], [2.0, "NaN"]]}
        return web.json_response(
            {"status": "success", "data": {"resultType": "matrix", "result": [series]}})

    server = await aiohttp_raw_server(handle)
    address = str(server.make_url("/prom/"))
    async with PrometheusProvider(address=address) as client:
        values = await client.run_samples("up\n  == 1", window=timedelta(minutes=1))
    assert values[0] == 4.0
    assert math.isnan(values[1])
    (request,) = asked
    assert request.path == "/prom/api/v1/query_range"
    assert request.query["query"] == "up == 1"
    assert float(request.query["step"]) == 2.0
    assert float(request.query["end"]) - float(request.query["start"]) == pytest.approx(60.0)


# --- through the analyzer -----------------------------------------------------------------------


@dataclass
class Store:
    objects: dict[ObjectKey, Mapping[str, Any]] = field(default_factory=dict)

    def get(self, key: ObjectKey) -> Mapping[str, Any] | None:
        return self.objects.get(key)


class ValueOnly:
    """A provider without samples (most of them): one value per query."""

    def __init__(self, **_: Any) -> None:
        pass

    async def run_query(self, query: str) -> float:
        return 1.0

    async def is_online(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


@pytest.fixture
async def analyzer(prometheus: LocalPrometheus) -> AsyncIterator[MetricsAnalyzer]:
    templates = Store()
    for name, kind, query in (("latency", "prometheus", LATENCY), ("plain", "plain", LATENCY),
                              ("errors", "prometheus", ERRORS)):
        templates.objects[ObjectKey(NAMESPACE, name)] = {
            "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"provider": {"type": kind, "address": prometheus.url}, "query": query}}
    registry: plugins.Registry[plugins.Factory] = plugins.Registry("flaggerpy.metrics")
    registry.register("prometheus", PrometheusProvider)
    registry.register("plain", ValueOnly)
    running = MetricsAnalyzer(
        templates=templates, secrets=Store().get,
        settings=Settings(metrics={"server": prometheus.url}, mesh={"provider": "kubernetes"}),
        telemetry=Recorder(process_collectors=False), metrics_registry=registry,
    )
    yield running
    await running.aclose()


def make_canary(target: str, **metric: Any) -> Canary:
    body = {"name": "latency", "templateRef": {"name": "latency"}, "interval": "10s",
            "compare": {"with": "primary"}, **metric}
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": target, "namespace": NAMESPACE},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                 "service": {"port": 9898},
                 "analysis": {"interval": "10s", "threshold": 5, "metrics": [body]}},
    })


async def eventually(check: Callable[[], Awaitable[T]], *, within: float = 40.0) -> T:
    """Polls ``check`` until it returns without an AssertionError (Prometheus is filling up)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def measured(analyzer: MetricsAnalyzer, canary: Canary) -> AnalysisOutcome:
    """The outcome once both sides have samples enough for a verdict other than NoData."""
    async def run() -> AnalysisOutcome:
        outcome = await analyzer.run(canary)
        assert not outcome.results[-1].no_values, outcome.results[-1].message
        return outcome

    return await eventually(run)


async def test_a_canary_worse_than_its_primary_halts_advancement(
        analyzer: MetricsAnalyzer) -> None:
    outcome = await measured(analyzer, make_canary("slow"))
    assert not outcome.passed
    assert not outcome.hold
    failure = outcome.failure
    assert failure is not None
    assert failure.judgement is not None
    assert failure.judgement.verdict is Verdict.FAIL
    assert failure.value == pytest.approx(30.0)
    assert failure.message.startswith(
        "Halt slow.test advancement latency compared with the primary over 10s: Fail: ")
    assert "interval [30, 30]" in failure.message
    assert "Mann-Whitney U=" in failure.message


async def test_a_critical_metric_failing_its_comparison_ends_the_run(
        analyzer: MetricsAnalyzer) -> None:
    critical = {"with": "primary", "critical": True}
    failed = await measured(analyzer, make_canary("slow", compare=critical))
    assert not failed.passed
    assert failed.fatal
    assert not (await measured(analyzer, make_canary("slow"))).fatal  # an ordinary failed check
    passed = await measured(analyzer, make_canary("same", compare=critical))
    assert passed.passed
    assert not passed.fatal
    # A critical metric's threshold breach is an ordinary failed check: only its comparison is
    # critical.
    breached = await measured(analyzer, make_canary("same", compare=critical,
                                                    thresholdRange={"max": 50}))
    assert breached.failure is not None
    assert breached.failure.judgement is None
    assert not breached.fatal


async def test_a_canary_like_its_primary_passes(analyzer: MetricsAnalyzer) -> None:
    outcome = await measured(analyzer, make_canary("same"))
    assert outcome.passed, outcome.failure
    (result,) = outcome.results
    assert result.judgement is not None
    assert result.judgement.verdict is Verdict.PASS
    assert result.value == 0.0


async def test_a_side_without_samples_has_no_values(analyzer: MetricsAnalyzer) -> None:
    outcome = await analyzer.run(make_canary("lonely"), hold_on_no_values=True)
    assert not outcome.passed
    assert outcome.hold
    assert outcome.failure is not None
    assert outcome.failure.no_values
    assert outcome.failure.message.startswith(
        "Halt advancement no values found for custom metric: latency compared with the primary")
    assert "NoData" in outcome.failure.message


async def test_a_threshold_and_a_comparison_must_both_pass(analyzer: MetricsAnalyzer) -> None:
    breached = await measured(analyzer, make_canary("same", thresholdRange={"max": 50}))
    assert breached.failure is not None
    assert breached.failure.judgement is None
    assert breached.failure.message == "Halt same.test advancement latency 100.00 > 50"

    compared = await measured(analyzer, make_canary("slow", thresholdRange={"max": 500}))
    assert compared.failure is not None
    assert compared.failure.judgement is not None
    assert compared.failure.judgement.verdict is Verdict.FAIL


async def test_a_provider_without_samples_fails_naming_its_type(
        analyzer: MetricsAnalyzer) -> None:
    outcome = await analyzer.run(make_canary("slow", templateRef={"name": "plain"}))
    assert outcome.failure is not None
    assert outcome.failure.error
    assert outcome.failure.message == (
        "Metric compare failed for latency: provider plain cannot return samples over an"
        " interval, which compare needs (a range query); use a provider that can, such as"
        " prometheus")


async def test_compare_without_a_template_is_a_failed_check(analyzer: MetricsAnalyzer) -> None:
    canary = make_canary("same", templateRef=None, query="vector(1)", thresholdRange={"max": 2})
    outcome = await analyzer.run(canary)
    assert outcome.failure is not None
    assert outcome.failure.error
    assert "compare is not available for an inline query" in outcome.failure.message


def error_ratio(target: str) -> Canary:
    return make_canary(target, name="errors", templateRef={"name": "errors"},
                       compare={"with": "primary", "test": "proportion"})


async def test_a_canary_failing_more_often_than_its_primary_halts(
        analyzer: MetricsAnalyzer) -> None:
    outcome = await measured(analyzer, error_ratio("slow"))
    failure = outcome.failure
    assert failure is not None
    assert failure.judgement is not None
    assert failure.judgement.verdict is Verdict.FAIL
    assert failure.message.startswith(
        "Halt slow.test advancement errors compared with the primary over 10s: Fail: ")
    assert "vs primary 0/" in failure.message


async def test_a_canary_failing_as_often_as_its_primary_passes(
        analyzer: MetricsAnalyzer) -> None:
    outcome = await measured(analyzer, error_ratio("same"))
    assert outcome.passed, outcome.failure
    (result,) = outcome.results
    assert result.judgement is not None
    assert result.judgement.verdict is Verdict.PASS
    assert result.judgement.canary_count > 50  # ~110 requests in 10 s
