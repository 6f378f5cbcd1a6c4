"""The alert texts, severities and metadata fields: Flagger's words, pinned (spec §6.1, §6.2)."""

from __future__ import annotations

from typing import Any

import pytest

from flaggerpy.canary import alerting
from flaggerpy.canary.alerting import AlertMessage, alert_metadata
from flaggerpy.models import Canary
from flaggerpy.notifying import Field, Severity

INFO, WARN, ERROR = Severity.INFO, Severity.WARN, Severity.ERROR


@pytest.mark.parametrize(("message", "text", "severity", "metadata"), [
    pytest.param(alerting.initialization_completed("Deployment"),
                 "New Deployment detected, initialization completed.", INFO, True, id="init"),
    pytest.param(alerting.new_revision(),
                 "New revision detected, progressing canary analysis.", INFO, True, id="revision"),
    pytest.param(alerting.waiting_for_approval(),
                 "Canary is waiting for approval.", WARN, False, id="waiting"),
    pytest.param(alerting.traffic_increase_waiting_for_approval(),
                 "Canary traffic increase is waiting for approval.", WARN, False, id="traffic"),
    pytest.param(alerting.promotion_waiting_for_approval(),
                 "Canary promotion is waiting for approval.", WARN, False, id="promotion-gate"),
    pytest.param(alerting.manual_rollback(),
                 "Rolling back manual webhook invoked", WARN, False, id="manual-rollback"),
    pytest.param(alerting.failed_checks_threshold_reached(5),
                 "Failed checks threshold reached 5", ERROR, False, id="threshold"),
    pytest.param(alerting.progress_deadline_exceeded("canary deployment podinfo.test not ready"),
                 "Progress deadline exceeded canary deployment podinfo.test not ready", ERROR,
                 False, id="deadline"),
    pytest.param(alerting.promotion_failed("timeout"),
                 "Promotion failed, primary not ready: timeout", ERROR, False, id="promotion"),
    pytest.param(alerting.promotion_completed(),
                 "Canary analysis completed successfully, promotion finished.", INFO, False,
                 id="promoted"),
    pytest.param(alerting.analysis_skipped(),
                 "Canary analysis was skipped, promotion finished.", INFO, False, id="skipped"),
])
def test_flaggers_alert_texts(
        message: AlertMessage, text: str, severity: Severity, metadata: bool,
) -> None:
    assert (message.text, message.severity, message.metadata) == (text, severity, metadata)


def test_the_failing_check_rides_in_a_field_not_in_the_text() -> None:
    message = alerting.failed_checks_threshold_reached(
        3, last_failure="success rate 95.20% < 99%")
    assert message.text == "Failed checks threshold reached 3"
    assert message.fields == (Field("Last failed check", "success rate 95.20% < 99%"),)


def canary(analysis: dict[str, Any], **spec: Any) -> Canary:
    return Canary.model_validate({
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "analysis": {"interval": "1m", "threshold": 0, **analysis}, **spec},
    })


@pytest.mark.parametrize(("analysis", "routing"), [
    pytest.param({"stepWeight": 5, "maxWeight": 50}, "Weight step: 5 max: 50", id="step"),
    pytest.param({"stepWeight": 20}, "Weight step: 20 max: 100", id="step-no-max"),
    pytest.param({"stepWeights": [1, 10, 80]}, "Weight steps: 1,10,80 max: 80", id="steps"),
    pytest.param({"iterations": 10, "match": [{"headers": {"x-canary": {"exact": "insider"}}}]},
                 "A/B Testing", id="ab"),
    pytest.param({"iterations": 10}, "Blue/Green", id="blue-green"),
    pytest.param({}, None, id="none"),
])
def test_metadata_fields(analysis: dict[str, Any], routing: str | None) -> None:
    fields = alert_metadata(canary(analysis, progressDeadlineSeconds=120))
    expected = [
        Field("Target", "Deployment/podinfo.test"),
        Field("Failed checks threshold", "1"),  # 0 means 1, as Flagger's GetAnalysisThreshold
        Field("Progress deadline", "120s"),
    ]
    if routing is not None:
        expected.append(Field("Traffic routing", routing))
    assert list(fields) == expected


def test_progress_deadline_defaults_to_600s() -> None:
    assert Field("Progress deadline", "600s") in alert_metadata(canary({"stepWeight": 5}))
