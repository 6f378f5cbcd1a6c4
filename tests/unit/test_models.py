"""The flagger.app models: manifests round-trip unchanged, Flagger's defaults apply on read."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from flaggerpy.models import (
    AlertProvider,
    AlertProviderType,
    AlertSeverity,
    Canary,
    CanaryAnalysis,
    CanaryPhase,
    CanaryService,
    CanaryStatus,
    CanaryWebhook,
    Condition,
    ConditionStatus,
    DeploymentStrategy,
    HookType,
    HTTPRewrite,
    KubeObject,
    MetricsProviderType,
    MetricTemplate,
    RewriteType,
    SessionAffinity,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "flagger"
KINDS: dict[str, type[KubeObject]] = {
    "Canary": Canary,
    "MetricTemplate": MetricTemplate,
    "AlertProvider": AlertProvider,
}


def _documents() -> Iterator[Any]:
    for path in sorted(FIXTURES.glob("*.yaml")):
        for index, document in enumerate(yaml.safe_load_all(path.read_text())):
            name = document["metadata"]["name"]
            yield pytest.param(document, id=f"{path.stem}[{index}]:{name}")


DOCUMENTS = list(_documents())


def _extras(value: object, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Fields that landed in ``model_extra`` anywhere in a parsed object."""
    if isinstance(value, BaseModel):
        if value.model_extra:
            yield path, dict(value.model_extra)
        for name in value.model_fields_set & set(type(value).model_fields):
            yield from _extras(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _extras(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _extras(item, f"{path}[{key}]")


def _canary(**analysis: Any) -> Canary:
    analysis = {"interval": "1m", "threshold": 5, "stepWeight": 10} | analysis
    return Canary.model_validate(
        {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898},
                "analysis": analysis,
            },
        }
    )


def test_fixture_catalogue_covers_all_kinds() -> None:
    kinds = {param.values[0]["kind"] for param in DOCUMENTS}
    assert kinds == set(KINDS)
    assert len(DOCUMENTS) >= 60


@pytest.mark.parametrize("document", DOCUMENTS)
def test_fixture_round_trips_unchanged(document: dict[str, Any]) -> None:
    model = KINDS[document["kind"]].model_validate(document)

    assert model.to_dict() == document
    assert model.model_dump(mode="json", exclude_unset=True) == document


@pytest.mark.parametrize("document", DOCUMENTS)
def test_fixture_fields_are_all_modelled(document: dict[str, Any]) -> None:
    """No field of a Flagger manifest falls through to ``extra`` (a wrong alias would)."""
    model = KINDS[document["kind"]].model_validate(document)

    assert list(_extras(model, document["kind"])) == []


def test_unknown_fields_survive_a_round_trip() -> None:
    document = {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {
            "name": "podinfo",
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            "ownerReferences": [{"kind": "HelmRelease", "name": "podinfo", "uid": "1"}],
        },
        "spec": {
            "futureField": {"nested": [1, 2, 3]},
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {
                "port": 9898,
                "trafficPolicy": {"portLevelSettings": [{"port": {"number": 80}}]},
                "corsPolicy": {"unmatchedPreflights": "IGNORE"},
            },
            "analysis": {
                "interval": "1m",
                "threshold": 5,
                "stepWeight": 10,
                "webhooks": [{"name": "hook", "url": "http://x/", "newKnob": True}],
            },
        },
        "status": {"phase": "Succeeded", "observedGeneration": 3},
    }

    canary = Canary.model_validate(copy.deepcopy(document))

    assert canary.to_dict() == document
    assert canary.spec.model_extra == {"futureField": {"nested": [1, 2, 3]}}


def test_snake_case_construction_dumps_camel_case() -> None:
    analysis = CanaryAnalysis(
        interval="30s", threshold=3, step_weight=10, max_weight=50, step_weight_promotion=100
    )

    assert analysis.to_dict() == {
        "interval": "30s",
        "threshold": 3,
        "stepWeight": 10,
        "maxWeight": 50,
        "stepWeightPromotion": 100,
    }


def test_irregular_wire_names_are_kept() -> None:
    webhook = CanaryWebhook.model_validate({"name": "h", "url": "http://h/", "disableTLS": True})
    canary = Canary.model_validate(yaml.safe_load((FIXTURES / "canary-istio.yaml").read_text()))

    assert webhook.disable_tls is True
    assert webhook.to_dict()["disableTLS"] is True
    service = canary.spec.service
    assert service is not None
    assert service.traffic_policy is not None
    outlier = service.traffic_policy.outlier_detection
    assert outlier is not None
    assert outlier.consecutive5xx_errors == 5


def test_required_fields_are_enforced() -> None:
    with pytest.raises(ValidationError, match="targetRef"):
        Canary.model_validate({"spec": {"analysis": {"interval": "1m", "threshold": 1}}})


def test_enums_parse_to_members_and_dump_to_wire_values() -> None:
    canary = Canary.model_validate(yaml.safe_load((FIXTURES / "canary-webhooks.yaml").read_text()))
    template = MetricTemplate.model_validate(
        yaml.safe_load((FIXTURES / "metrictemplate-datadog.yaml").read_text())
    )
    provider = next(
        AlertProvider.model_validate(doc)
        for doc in yaml.safe_load_all((FIXTURES / "alertprovider-msteams.yaml").read_text())
    )

    hooks = canary.spec.analysis.webhooks or []
    assert [hook.type for hook in hooks][:3] == [
        HookType.CONFIRM_ROLLOUT,
        HookType.PRE_ROLLOUT,
        HookType.CONFIRM_TRAFFIC_INCREASE,
    ]
    assert template.spec.provider.type == MetricsProviderType.DATADOG
    assert provider.spec.type == AlertProviderType.MSTEAMS


# --- Flagger's code defaults, applied on read --------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "seconds"),
    [
        pytest.param("15s", 15.0, id="seconds"),
        pytest.param("2m", 120.0, id="minutes"),
        pytest.param("1m30s", 90.0, id="compound"),
        pytest.param("5s", 10.0, id="clamped-to-10s"),
        pytest.param("0s", 10.0, id="zero-clamped"),
        pytest.param("1min", 60.0, id="unparsable-defaults-to-60s"),
        pytest.param("", 60.0, id="empty-defaults-to-60s"),
    ],
)
def test_analysis_interval(interval: str, seconds: float) -> None:
    canary = _canary(interval=interval)

    assert canary.spec.analysis.interval_seconds == seconds
    assert canary.get_analysis_interval() == seconds
    assert canary.to_dict()["spec"]["analysis"]["interval"] == interval


def test_defaults_are_not_written_back() -> None:
    canary = _canary()
    before = canary.to_dict()

    assert canary.get_progress_deadline_seconds() == 600
    assert canary.get_analysis_primary_ready_threshold() == 100
    assert canary.get_analysis_canary_ready_threshold() == 100
    assert canary.get_metric_interval() == "1m"
    assert canary.spec.analysis.get_max_weight() == 100
    assert canary.to_dict() == before
    assert "progressDeadlineSeconds" not in before["spec"]


def test_explicit_values_win_over_defaults() -> None:
    canary = _canary(primaryReadyThreshold=80, canaryReadyThreshold=0, maxWeight=30)
    canary.spec.progress_deadline_seconds = 60

    assert canary.get_progress_deadline_seconds() == 60
    assert canary.get_analysis_primary_ready_threshold() == 80
    assert canary.get_analysis_canary_ready_threshold() == 0
    assert canary.spec.analysis.get_max_weight() == 30
    assert canary.to_dict()["spec"]["progressDeadlineSeconds"] == 60


@pytest.mark.parametrize(
    ("threshold", "effective"),
    [pytest.param(5, 5, id="set"), pytest.param(0, 1, id="zero-means-one")],
)
def test_analysis_threshold(threshold: int, effective: int) -> None:
    assert _canary(threshold=threshold).get_analysis_threshold() == effective


@pytest.mark.parametrize(
    ("analysis", "max_weight"),
    [
        pytest.param({"maxWeight": 50}, 50, id="max-weight"),
        pytest.param({"maxWeight": 0}, 100, id="zero-means-100"),
        pytest.param(
            {"stepWeight": None, "stepWeights": [10, 20, 60], "maxWeight": 50},
            60,
            id="last-step-wins",
        ),
        pytest.param({"stepWeight": None, "stepWeights": [1, 2, 10, 200]}, 100, id="capped"),
    ],
)
def test_max_weight(analysis: dict[str, Any], max_weight: int) -> None:
    assert _canary(**analysis).spec.analysis.get_max_weight() == max_weight


@pytest.mark.parametrize(
    ("analysis", "strategy"),
    [
        pytest.param({}, DeploymentStrategy.CANARY, id="canary"),
        pytest.param(
            {"stepWeight": None, "iterations": 5}, DeploymentStrategy.BLUE_GREEN, id="blue-green"
        ),
        pytest.param(
            {"stepWeight": None, "iterations": 5, "match": [{"headers": {"x": {"exact": "y"}}}]},
            DeploymentStrategy.AB_TESTING,
            id="ab-testing",
        ),
    ],
)
def test_deployment_strategy(analysis: dict[str, Any], strategy: DeploymentStrategy) -> None:
    assert _canary(**analysis).deployment_strategy() is strategy


def test_service_names_default_to_target_name() -> None:
    canary = _canary()

    assert canary.get_service_names() == ("podinfo", "podinfo-primary", "podinfo-canary")
    assert canary.get_service_names().primary == "podinfo-primary"

    assert canary.spec.service is not None
    canary.spec.service.name = "podinfo-svc"
    assert canary.get_service_names().canary == "podinfo-svc-canary"


def test_service_port_defaults() -> None:
    service = CanaryService(port=9898)

    assert service.get_port_name() == "http"
    assert service.get_target_port() == 9898
    assert CanaryService(port=80, target_port="http").get_target_port() == "http"
    assert CanaryService(port=80, port_name="grpc").get_port_name() == "grpc"


def test_skip_analysis_and_knative_detection() -> None:
    knative = Canary.model_validate(yaml.safe_load((FIXTURES / "canary-knative.yaml").read_text()))
    skipping = Canary.model_validate(
        yaml.safe_load((FIXTURES / "canary-istio-skip-analysis.yaml").read_text())
    )

    assert knative.is_knative_service()
    assert not knative.should_skip_analysis()
    assert skipping.should_skip_analysis()
    assert not skipping.is_knative_service()


@pytest.mark.parametrize(
    ("webhook", "hook_type", "timeout"),
    [
        pytest.param({}, HookType.ROLLOUT, 10.0, id="unset"),
        pytest.param({"type": ""}, HookType.ROLLOUT, 10.0, id="empty-type"),
        pytest.param(
            {"type": "pre-rollout", "timeout": "30s"}, HookType.PRE_ROLLOUT, 30.0, id="set"
        ),
        pytest.param({"timeout": "5"}, HookType.ROLLOUT, 10.0, id="one-char-timeout-ignored"),
    ],
)
def test_webhook_defaults(webhook: dict[str, Any], hook_type: HookType, timeout: float) -> None:
    hook = CanaryWebhook.model_validate({"name": "h", "url": "http://h/"} | webhook)

    assert hook.get_type() is hook_type
    assert hook.get_timeout_seconds() == timeout
    assert hook.to_dict() == {"name": "h", "url": "http://h/"} | webhook


def test_webhook_timeout_that_go_rejects_raises() -> None:
    hook = CanaryWebhook(name="h", url="http://h/", timeout="1min")

    with pytest.raises(ValueError, match="unknown unit"):
        hook.get_timeout_seconds()


def test_session_affinity_max_age_default() -> None:
    assert SessionAffinity(cookie_name="c").get_max_age() == 86400
    assert SessionAffinity(cookie_name="c", max_age=0).get_max_age() == 86400
    assert SessionAffinity(cookie_name="c", max_age=60).get_max_age() == 60


def test_rewrite_type_default() -> None:
    assert HTTPRewrite().get_type() is RewriteType.REPLACE_FULL_PATH
    assert HTTPRewrite(type="custom").get_type() is RewriteType.REPLACE_FULL_PATH
    assert HTTPRewrite(type="ReplacePrefixMatch").get_type() is RewriteType.REPLACE_PREFIX_MATCH


def test_alert_provider_defaults() -> None:
    documents = yaml.safe_load_all((FIXTURES / "alertprovider-gchat.yaml").read_text())
    provider = AlertProvider.model_validate(next(documents))

    assert provider.spec.get_channel() == "general"
    assert provider.spec.get_username() == "flagger"
    assert "channel" not in provider.to_dict()["spec"]


def test_alert_severity_keeps_empty_string() -> None:
    canary = Canary.model_validate(yaml.safe_load((FIXTURES / "canary-alerts.yaml").read_text()))

    severities = [alert.severity for alert in canary.spec.analysis.alerts or []]
    assert severities == [
        AlertSeverity.ERROR,
        AlertSeverity.WARN,
        AlertSeverity.INFO,
        AlertSeverity.UNSET,
        None,
    ]


# --- status ------------------------------------------------------------------------------------


def test_status_parses_phase_times_and_conditions() -> None:
    canary = Canary.model_validate(yaml.safe_load((FIXTURES / "canary-status.yaml").read_text()))
    status = canary.status

    assert status is not None
    assert status.phase is CanaryPhase.PROGRESSING
    assert status.last_transition_time == datetime(2026, 11, 20, 10, 15, 30, tzinfo=UTC)
    assert status.tracked_configs == {
        "configmap/podinfo-config-env": "2f5a7c9d1e3b4a60",
        "secret/podinfo-secret-env": "9c1e2d3f4a5b6c7d",
    }
    promoted = status.get_condition()
    assert promoted is not None
    assert promoted.status == ConditionStatus.UNKNOWN
    assert promoted.reason == "Progressing"
    assert status.get_condition("Ready") is None


def test_status_written_in_code_dumps_in_flagger_form() -> None:
    now = datetime(2026, 11, 21, 8, 0, 0, tzinfo=UTC)
    status = CanaryStatus(
        phase=CanaryPhase.INITIALIZED,
        canary_weight=0,
        failed_checks=0,
        last_transition_time=now,
        conditions=[
            Condition(
                type="Promoted",
                status=ConditionStatus.TRUE,
                reason=CanaryPhase.INITIALIZED,
                message="Deployment initialization completed.",
                last_update_time=now,
                last_transition_time=now,
            )
        ],
    )

    assert status.to_dict() == {
        "phase": "Initialized",
        "canaryWeight": 0,
        "failedChecks": 0,
        "lastTransitionTime": "2026-11-21T08:00:00Z",
        "conditions": [
            {
                "type": "Promoted",
                "status": "True",
                "reason": "Initialized",
                "message": "Deployment initialization completed.",
                "lastUpdateTime": "2026-11-21T08:00:00Z",
                "lastTransitionTime": "2026-11-21T08:00:00Z",
            }
        ],
    }


def test_empty_phase_round_trips() -> None:
    status = CanaryStatus.model_validate({"phase": ""})

    assert status.phase is CanaryPhase.UNSET
    assert status.to_dict() == {"phase": ""}


def test_assignment_marks_field_as_set() -> None:
    canary = _canary()
    canary.status = CanaryStatus()
    canary.status.phase = CanaryPhase.WAITING

    assert canary.to_dict()["status"] == {"phase": "Waiting"}


def test_object_accessors() -> None:
    canary = _canary()

    assert canary.name == "podinfo"
    assert canary.namespace == "test"
    assert Canary.model_validate({"spec": _canary().to_dict()["spec"]}).namespace == ""
