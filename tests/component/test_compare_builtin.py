"""``compare`` on the builtin metrics against a real Prometheus, through the analyzer.

A local exporter serves the series Flagger's http observer (provider ``kubernetes``) reads,
``http_request_duration_seconds`` of the canary's pods and of its primary's, and a real
Prometheus scrapes it every second. ``request-duration`` with ``compare`` asks the observer's
p99 for both workloads over the interval (a range query); ``request-success-rate`` with
``compare`` asks both halves of its ratio as counts and judges errors out of requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from e2e.prometheus import LocalPrometheus, ScrapeJob
from flaggerpy.canary.metrics_analysis import AnalysisOutcome, MetricsAnalyzer
from flaggerpy.judging import StatTest, Verdict
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.models import Canary
from flaggerpy.settings import Settings
from flaggerpy.telemetry import Recorder
from tests.metrics_exporter import MetricsExporter

NAMESPACE = "test"
# Requests per second by histogram bucket: the slow canary answers in (0.25 s, 0.5 s], every
# other workload in (0.1 s, 0.25 s]. The slow canary fails 3 requests in 13, its primary none.
FAST = {"0.1": 0.0, "0.25": 10.0, "0.5": 10.0, "+Inf": 10.0}
SLOW = {"0.1": 0.0, "0.25": 0.0, "0.5": 10.0, "+Inf": 10.0}
PODS = {  # pod: (buckets, ok per second, failed per second)
    "slow-abc12-xyz34": (SLOW, 10.0, 3.0),
    "slow-primary-abc12-xyz34": (FAST, 10.0, 0.0),
    "same-abc12-xyz34": (FAST, 10.0, 1.0),
    "same-primary-abc12-xyz34": (FAST, 10.0, 1.0),
}


@pytest.fixture(scope="module")
def exporter() -> Iterator[MetricsExporter]:
    with MetricsExporter() as running:
        for pod, (buckets, ok, failed) in PODS.items():
            pod_labels = {"kubernetes_namespace": NAMESPACE, "kubernetes_pod_name": pod}
            for le, per_second in buckets.items():
                running.counter("http_request_duration_seconds_bucket",
                                {**pod_labels, "le": le}, per_second=per_second)
            running.counter("http_request_duration_seconds_count",
                            {**pod_labels, "status": "200"}, per_second=ok)
            running.counter("http_request_duration_seconds_count",
                            {**pod_labels, "status": "500"}, per_second=failed)
        yield running


@pytest.fixture(scope="module")
def prometheus(exporter: MetricsExporter) -> Iterator[LocalPrometheus]:
    with LocalPrometheus([ScrapeJob("exporter", [exporter.target])]) as server:
        yield server


@pytest.fixture
async def analyzer(prometheus: LocalPrometheus) -> AsyncIterator[MetricsAnalyzer]:
    running = MetricsAnalyzer(
        templates=_Empty(), secrets=_Empty().get,
        settings=Settings(metrics={"server": prometheus.url}, mesh={"provider": "kubernetes"}),
        telemetry=Recorder(process_collectors=False),
    )
    yield running
    await running.aclose()


class _Empty:
    def get(self, key: ObjectKey) -> None:
        return None


def make_canary(target: str, name: str, **metric: Any) -> Canary:
    body = {"name": name, "interval": "10s", "compare": {"with": "primary"}, **metric}
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": target, "namespace": NAMESPACE},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                 "service": {"port": 9898},
                 "analysis": {"interval": "10s", "threshold": 5, "metrics": [body]}},
    })


async def judged(analyzer: MetricsAnalyzer, canary: Canary, expected: Verdict,
                 *, within: float = 60.0) -> AnalysisOutcome:
    """The outcome once the verdict is ``expected`` (Prometheus is filling up meanwhile)."""
    deadline = time.monotonic() + within
    while True:
        outcome = await analyzer.run(canary)
        judgement = outcome.results[-1].judgement
        if judgement is not None and judgement.verdict is expected:
            return outcome
        assert time.monotonic() < deadline, outcome.results[-1].message
        await asyncio.sleep(0.5)


async def test_a_canary_slower_than_its_primary_halts_on_request_duration(
        analyzer: MetricsAnalyzer) -> None:
    outcome = await judged(analyzer, make_canary("slow", "request-duration"), Verdict.FAIL)
    failure = outcome.failure
    assert failure is not None
    assert failure.judgement is not None
    assert failure.judgement.test is StatTest.MANN_WHITNEY
    assert failure.message.startswith(
        "Halt slow.test advancement request-duration compared with the primary over 10s: Fail")
    # p99 of (0.25, 0.5] against (0.1, 0.25]: about 497.5 ms against 248.5 ms, in ms.
    assert failure.judgement.primary_level == pytest.approx(248.5, rel=0.01)
    assert failure.judgement.estimate == pytest.approx(249.0, rel=0.05)
    assert failure.query is not None
    assert 'kubernetes_pod_name=~"slow-[0-9a-zA-Z]+' in failure.query


async def test_a_canary_like_its_primary_passes_request_duration(
        analyzer: MetricsAnalyzer) -> None:
    outcome = await judged(analyzer, make_canary("same", "request-duration"), Verdict.PASS)
    assert outcome.passed
    assert outcome.failure is None


async def test_a_canary_failing_more_often_halts_on_request_success_rate(
        analyzer: MetricsAnalyzer) -> None:
    outcome = await judged(analyzer, make_canary("slow", "request-success-rate"), Verdict.FAIL)
    failure = outcome.failure
    assert failure is not None
    assert failure.judgement is not None
    assert failure.judgement.test is StatTest.PROPORTION
    assert "vs primary 0/" in failure.message


async def test_a_canary_failing_as_often_passes_request_success_rate(
        analyzer: MetricsAnalyzer) -> None:
    outcome = await judged(analyzer, make_canary("same", "request-success-rate"), Verdict.PASS)
    assert outcome.passed


async def test_a_threshold_and_a_comparison_must_both_pass(analyzer: MetricsAnalyzer) -> None:
    canary = make_canary("slow", "request-duration", thresholdRange={"max": 100})
    deadline = time.monotonic() + 60
    outcome = await analyzer.run(canary)
    while outcome.results[-1].no_values and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        outcome = await analyzer.run(canary)
    assert outcome.failure is not None
    assert outcome.failure.message == "Halt slow.test advancement request duration 497ms > 100ms"
    assert outcome.failure.judgement is None  # the threshold failed first: 497 ms > 100 ms


async def test_an_inline_query_with_compare_is_a_failed_check(
        analyzer: MetricsAnalyzer) -> None:
    canary = make_canary("same", "inline", query="vector(1)", thresholdRange={"max": 2})
    outcome = await analyzer.run(canary)
    assert outcome.failure is not None
    assert outcome.failure.error
    assert outcome.failure.message == (
        "Metric compare failed for inline: compare is not available for an inline query, which"
        " is not rendered, so {{ target }} cannot name the primary; use a templateRef")
