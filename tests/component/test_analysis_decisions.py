"""Each check's decision against a real Prometheus: the request count behind ``minSamples``,
``onNoData: skip``, and the query shown with its credentials redacted.

The fixtures are those of ``test_metrics_analysis``: an exporter with podinfo-style series
(``podinfo`` answers 10 requests a second) scraped every second by a real Prometheus, and the
"http" observer of the kubernetes provider.
"""

from __future__ import annotations

import pytest

from flaggerpy.canary.decisions import Act
from tests.component.test_metrics_analysis import (
    World,
    exporter,
    make_canary,
    prometheus,
    secret,
    settled,
    success_rate,
    template,
    world,
)

__all__ = ["exporter", "prometheus", "world"]  # the fixtures, used by name


async def test_min_samples_counts_the_canarys_requests_in_prometheus(world: World) -> None:
    counted = await settled(world.analyzer, make_canary(
        success_rate(thresholdRange={"min": 85}, minSamples=1)))
    assert counted.passed, counted.failure
    (decision,) = counted.decisions
    assert decision.act is Act.PASS
    assert decision.samples is not None
    # 10 requests a second over the 10 s window (less while Prometheus has a shorter history).
    assert 1 <= decision.samples <= 130
    assert decision.threshold_min == 85
    assert decision.query is not None
    assert decision.query.startswith("sum(rate(http_request_duration_seconds_count{")

    held = await world.analyzer.run(make_canary(
        success_rate(thresholdRange={"min": 85}, minSamples=1_000_000, onNoData="hold")))
    assert (held.passed, held.hold) == (False, True)
    assert held.failure is not None
    assert held.failure.no_values
    assert held.failure.message.startswith("Halt podinfo.test advancement request-success-rate: ")
    assert held.failure.message.endswith(" requests to podinfo in 10s, fewer than minSamples "
                                         "1000000")
    (decision,) = held.decisions
    assert (decision.verdict, decision.act) == ("NoData", Act.HOLD)
    assert decision.value == pytest.approx(90.0, abs=0.5)  # measured, but on too few requests

    failed = await world.analyzer.run(make_canary(
        success_rate(thresholdRange={"min": 85}, minSamples=1_000_000)))
    assert (failed.passed, failed.hold) == (False, False)  # Flagger's default: a failed check


async def test_a_skipped_metric_lets_the_others_decide(world: World) -> None:
    canary = make_canary(success_rate(thresholdRange={"min": 99}, onNoData="skip"),
                         {"name": "one", "query": "vector(1)", "thresholdRange": {"max": 2}},
                         target="ghost")
    outcome = await world.analyzer.run(canary)
    assert outcome.passed, outcome.failure
    assert [(d.metric, d.verdict, d.act) for d in outcome.decisions] == [
        ("request-success-rate", "NoData", Act.SKIP), ("one", "Pass", Act.PASS)]
    assert world.recorder.registry.get_sample_value(
        "flaggerpy_canary_metric_checks_total",
        {"name": "ghost", "namespace": "test", "metric": "request-success-rate",
         "verdict": "NoData", "action": "skip"}) == 1
    assert world.recorder.registry.get_sample_value(
        "flaggerpy_canary_metric_threshold",
        {"name": "ghost", "namespace": "test", "metric": "one", "bound": "max"}) == 2


async def test_a_secret_value_in_a_rendered_query_is_never_shown(world: World) -> None:
    world.secrets.put(secret("prom-auth", "1", username="reader", password="s3cret-token"))
    world.templates.put(template("commented", "vector(1) # s3cret-token reader",
                                 address=world.prometheus.url, secret="prom-auth"))
    outcome = await world.analyzer.run(make_canary(
        {"name": "commented", "templateRef": {"name": "commented"}, "interval": "10s",
         "thresholdRange": {"max": 2}}))
    assert outcome.passed, outcome.failure
    (decision,) = outcome.decisions
    assert decision.query == "vector(1) # <redacted> <redacted>"
    assert "s3cret" not in str(decision.as_status())


async def test_a_duration_limit_is_in_seconds_beside_its_value(world: World) -> None:
    outcome = await settled(world.analyzer, make_canary(
        {"name": "request-duration", "interval": "10s", "thresholdRange": {"max": 500}}))
    assert outcome.passed, outcome.failure
    assert outcome.decisions[0].threshold_max == 500  # the status says it as it is judged: ms
    labels = {"name": "podinfo", "namespace": "test", "metric": "request-duration"}
    assert world.recorder.registry.get_sample_value(
        "flaggerpy_canary_metric_threshold", {**labels, "bound": "max"}) == 0.5
    assert world.gauge("request-duration") == 0.497
