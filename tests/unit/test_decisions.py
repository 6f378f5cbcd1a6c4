"""What is done with each metric check (onNoData, minSamples, dryRun), and how it is explained."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from flaggerpy.canary import decisions
from flaggerpy.canary.decisions import Act
from flaggerpy.canary.metrics_analysis import MetricResult
from flaggerpy.models import Canary, CanaryMetric
from flaggerpy.models.status import ANALYSIS_HISTORY_LIMIT, CanaryStatus

NOW = datetime(2026, 12, 6, 16, 30, tzinfo=UTC)


def canary(*metrics: dict[str, Any], **analysis: Any) -> Canary:
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "analysis": {"interval": "1m", "threshold": 2, "metrics": list(metrics),
                              **analysis}},
    })


def metric_of(c: Canary) -> CanaryMetric:
    metrics = c.spec.analysis.metrics
    assert metrics
    return metrics[0]


PASSED = MetricResult(name="m", value=99.5, passed=True, message="")
FAILED = MetricResult(name="m", value=90.0, passed=False, message="Halt podinfo.test "
                      "advancement success rate 90.00% < 99%")
NO_DATA = MetricResult(name="m", value=None, passed=False, no_values=True,
                       message="Halt advancement no values found for metric: m")
ERROR = MetricResult(name="m", value=None, passed=False, error=True,
                     message="Prometheus query failed: connection refused")


@pytest.mark.parametrize(("fields", "hold_flag", "result", "act"), [
    ({}, False, PASSED, Act.PASS),
    ({}, False, FAILED, Act.FAIL),
    ({}, False, NO_DATA, Act.FAIL),  # Flagger's default
    ({}, True, NO_DATA, Act.HOLD),  # -hold-on-no-values
    ({"onNoData": "fail"}, True, NO_DATA, Act.FAIL),  # the metric's own policy wins
    ({"onNoData": "hold"}, False, NO_DATA, Act.HOLD),
    ({"onNoData": "skip"}, False, NO_DATA, Act.SKIP),
    ({"onNoData": "skip"}, False, FAILED, Act.FAIL),  # only data that is missing is skipped
    ({"onNoData": "hold"}, False, ERROR, Act.FAIL),  # a query that failed is not "no data"
    ({"dryRun": True}, False, FAILED, Act.DRY_RUN),
    ({"dryRun": True, "onNoData": "hold"}, False, NO_DATA, Act.DRY_RUN),  # never holds either
    ({"dryRun": True}, False, ERROR, Act.DRY_RUN),
    ({"dryRun": True}, False, PASSED, Act.PASS),
])
def test_what_is_done_with_a_check(fields: dict[str, Any], hold_flag: bool, result: MetricResult,
                                   act: Act) -> None:
    c = canary({"name": "m", "query": "up", "thresholdRange": {"min": 99}, **fields})
    decision = decisions.decide(c, metric_of(c), result, hold_on_no_values=hold_flag, now=NOW)
    assert decision.act is act
    assert decision.act.blocks == (act in (Act.FAIL, Act.HOLD))


def test_a_canary_in_dry_run_never_fails_a_check() -> None:
    c = canary({"name": "m", "query": "up", "thresholdRange": {"min": 99}}, dryRun=True)
    assert decisions.decide(c, metric_of(c), FAILED, hold_on_no_values=False).act is Act.DRY_RUN


def test_a_decision_in_the_status_says_everything_and_validates() -> None:
    c = canary({"name": "request-success-rate", "thresholdRange": {"min": 99}, "dryRun": True})
    result = MetricResult(name="request-success-rate", value=90.0, passed=False,
                          message="Halt podinfo.test advancement success rate 90.00% < 99%",
                          query='sum(rate(x{a="b"}[1m]))', samples=1200)
    decision = decisions.decide(c, metric_of(c), result, hold_on_no_values=False, now=NOW)
    entry = decision.as_status()
    assert entry == {
        "time": "2026-12-06T16:30:00Z", "metric": "request-success-rate", "verdict": "Fail",
        "action": "dry-run", "value": 90.0, "thresholdMin": 99, "samples": 1200,
        "query": 'sum(rate(x{a="b"}[1m]))',
        "message": "Halt podinfo.test advancement success rate 90.00% < 99%",
    }
    status = CanaryStatus.model_validate({"analysisHistory": [entry]})
    assert status.analysis_history is not None
    assert status.analysis_history[0].threshold_min == 99
    assert decision.event == ("Dry run: metric request-success-rate Fail: Halt podinfo.test "
                              "advancement success rate 90.00% < 99%")


@pytest.mark.parametrize(("fields", "expected"), [
    ({"name": "request-success-rate", "threshold": 99}, (99, None)),
    ({"name": "request-duration", "threshold": 500}, (None, 500)),
    ({"name": "custom", "query": "up", "threshold": 1.5}, (None, 1.5)),
    ({"name": "custom", "query": "up", "thresholdRange": {"min": 1, "max": 2}}, (1, 2)),
    ({"name": "request-success-rate"}, (0, None)),  # Go's zero value, as it is judged
])
def test_bounds_are_what_the_value_is_judged_against(fields: dict[str, Any],
                                                     expected: tuple[Any, Any]) -> None:
    assert decisions.bounds(CanaryMetric.model_validate(fields)) == expected


def test_min_samples() -> None:
    metric = CanaryMetric.model_validate({"name": "m", "query": "up", "minSamples": 100})
    assert decisions.under_min_samples(metric, 99)
    assert not decisions.under_min_samples(metric, 100)
    assert not decisions.under_min_samples(metric, None)  # an unknown count holds nothing
    unset = CanaryMetric.model_validate({"name": "m", "query": "up"})
    assert not decisions.under_min_samples(unset, 0)


@pytest.mark.parametrize(("text", "secrets", "shown"), [
    ("http://admin:hunter22@prom:9090/api", (), "http://<redacted>@prom:9090/api"),
    ("https://token@example.com", (), "https://<redacted>@example.com"),
    ('sum(rate(x{key="s3cr3t-value"}[1m]))', ("s3cr3t-value",),
     'sum(rate(x{key="<redacted>"}[1m]))'),
    ("rate(a[1m])", ("a",), "rate(a[1m])"),  # a one-letter value is not hidden everywhere
    ("no credentials here", ("passw0rd",), "no credentials here"),
])
def test_credentials_never_show(text: str, secrets: tuple[str, ...], shown: str) -> None:
    assert decisions.redact(text, secrets=secrets) == shown


@pytest.mark.parametrize(("query", "count"), [
    ('sum(rate(istio_requests_total{a="b",response_code!~"5.*"}[1m])) / '
     'sum(rate(istio_requests_total{a="b"}[1m])) * 100',
     'sum(increase(istio_requests_total{a="b"}[1m]))'),
    ('sum(rate(envoy_cluster_upstream_rq{a="b",envoy_response_code!~"5.*"}[30s])) / '
     'sum(rate(envoy_cluster_upstream_rq{a="b",}[30s])) * 100',
     'sum(increase(envoy_cluster_upstream_rq{a="b",}[30s]))'),
    ("histogram_quantile(0.99, sum(rate(x_bucket[1m])) by (le))", None),
])
def test_the_request_count_comes_from_the_success_rate_denominator(query: str,
                                                                   count: str | None) -> None:
    assert decisions.request_count_query(query) == count


def test_the_history_keeps_the_latest() -> None:
    c = canary({"name": "m", "query": "up"})
    made = [decisions.decide(c, metric_of(c), PASSED, hold_on_no_values=False, now=NOW)] * 3
    current = {"analysisHistory": [{"metric": f"old-{i}"} for i in range(ANALYSIS_HISTORY_LIMIT)]}
    kept = decisions.history(current, made)
    assert len(kept) == ANALYSIS_HISTORY_LIMIT
    assert kept[0] == {"metric": "old-3"}
    assert kept[-1]["metric"] == "m"
    patch = decisions.with_history({"status": {"failedChecks": 1}}, current, made)
    assert patch["status"]["failedChecks"] == 1
    assert patch["status"]["analysisHistory"] == kept
    assert decisions.with_history({"status": {"x": 1}}, current, []) == {"status": {"x": 1}}


def test_pause_says_how_to_resume_and_roll_back() -> None:
    assert decisions.pauses(canary(onFailure="pause"))
    assert not decisions.pauses(canary())
    assert not decisions.pauses(canary(onFailure="rollback"))
    message = decisions.pause_message(weight=20, failed=2, last_failure="success rate 90% < 99%",
                                      name="podinfo")
    assert message.startswith(f"{decisions.PAUSED_PREFIX} at canary weight 20: failed checks "
                              "threshold reached 2: success rate 90% < 99%.")
    assert '"failedChecks":0' in message
    assert "onFailure to rollback" in message
    alert = decisions.pause_alert(weight=20, failed=2, last_failure="success rate 90% < 99%")
    assert "paused at canary weight 20" in alert.text
    assert [(f.name, f.value) for f in alert.fields] == [("Last failed check",
                                                          "success rate 90% < 99%")]


def test_the_last_failed_check_is_read_back_from_the_history() -> None:
    history = {"analysisHistory": [
        {"metric": "a", "action": "fail", "message": "Halt podinfo.test advancement a 2 > 1"},
        {"metric": "b", "action": "dry-run", "message": "Halt podinfo.test advancement b"},
        {"metric": "a", "action": "hold", "message": "no values"},
    ]}
    assert decisions.last_failed(history) == "Halt podinfo.test advancement a 2 > 1"
    assert decisions.last_failed({"analysisHistory": [{"action": "pass"}]}) is None
    assert decisions.last_failed(None) is None
