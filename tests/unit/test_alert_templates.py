"""Alert templates: the values a template sees, and every way a template can fail.

Delivery through real receivers (the payloads of each chat service) is in
``tests/component/test_alerting.py``; the AlertProvider's condition in ``test_template_status``.
"""

from __future__ import annotations

from typing import Any

import pytest

from flaggerpy.canary import alert_templates, alerting, decisions, plugin_status
from flaggerpy.canary.alert_templates import CheckInfo, TemplateError, WebhookInfo
from flaggerpy.canary.alerting import Delivery, DeliveryCause
from flaggerpy.canary.template_status import (
    TEMPLATES_VALID,
    delivery_conditions,
    templates_condition,
)
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.models import AlertKind, Canary
from flaggerpy.models.status import AnalysisDecision


def canary(*, status: dict[str, Any] | None = None, **analysis: Any) -> Canary:
    obj: dict[str, Any] = {
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "analysis": {"interval": "1m", "threshold": 5, **analysis}},
    }
    if status is not None:
        obj["status"] = status
    return Canary.model_validate(obj)


METRICS = [
    {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
    {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "1m"},
    {"name": "errors", "threshold": 2, "interval": "1m"},
]
STATUS = {"phase": "Progressing", "canaryWeight": 30, "lastAppliedSpec": "5d8f7b9c6",
          "failedChecks": 1}


def values(message: alerting.AlertMessage, subject: Canary | None = None,
           **options: Any) -> dict[str, Any]:
    assert message.kind is not None
    options.setdefault("cluster", "prod-eu")
    options.setdefault("dashboard_url", "https://flaggerpy.example/#/{namespace}/{name}")
    return alert_templates.variables(
        subject or canary(metrics=METRICS, status=STATUS), kind=message.kind, text=message.text,
        severity=message.severity.value, revision=message.revision, check=message.check,
        webhook=message.webhook, error=message.error, **options)


# --- the variables --------------------------------------------------------------------------


def test_every_alert_has_the_canary_the_cluster_the_revision_and_a_link() -> None:
    got = values(alerting.promotion_completed())
    assert got == {
        "name": "podinfo", "namespace": "test", "cluster": "prod-eu",
        "target": "Deployment/podinfo", "revision": "5d8f7b9c6", "phase": "Progressing",
        "weight": 30, "kind": "promoted", "severity": "info",
        "text": "Canary analysis completed successfully, promotion finished.",
        "dashboard_url": "https://flaggerpy.example/#/test/podinfo",
    }


def test_a_new_revision_names_the_revision_it_starts_not_the_last_one() -> None:
    got = values(alerting.new_revision("7f6e5d4c3"))
    assert (got["kind"], got["revision"]) == ("newRevision", "7f6e5d4c3")


def test_without_a_dashboard_url_the_link_is_empty_and_a_template_can_test_it() -> None:
    got = values(alerting.waiting_for_approval(), dashboard_url="")
    assert got["dashboard_url"] == ""
    text = alert_templates.render(
        "{{ name }} waits{% if dashboard_url %}: {{ dashboard_url }}{% endif %}", got)
    assert text == "podinfo waits"


@pytest.mark.parametrize(("check", "threshold"), [
    pytest.param(CheckInfo(name="request-success-rate", value=95.2), 99.0, id="below-min"),
    pytest.param(CheckInfo(name="request-duration", value=612.0), 500.0, id="above-max"),
    pytest.param(CheckInfo(name="errors", value=3.0), 2.0, id="threshold"),
    pytest.param(CheckInfo(name="errors", value=None), 2.0, id="no-value"),
    pytest.param(CheckInfo(name="not-in-spec", value=1.0), None, id="unknown-metric"),
])
def test_a_failed_check_carries_the_limit_it_crossed(
        check: CheckInfo, threshold: float | None) -> None:
    got = values(alerting.failed_check(check))
    assert got["kind"] == "failedCheck"
    assert got["check"]["name"] == check.name
    assert got["check"]["value"] == check.value
    assert got["check"]["threshold"] == threshold


def test_a_webhook_failure_carries_the_webhook_and_its_error() -> None:
    message = alerting.webhook_failed(name="smoke", hook_type="pre-rollout", error="exit 1")
    got = values(message)
    assert got["webhook"] == {"name": "smoke", "error": "exit 1"}
    assert message.text == "pre-rollout check smoke failed exit 1"
    assert "check" not in got


def test_a_readiness_timeout_carries_the_error() -> None:
    got = values(alerting.progress_deadline_exceeded("canary deployment podinfo.test not ready"))
    assert (got["kind"], got["severity"]) == ("readinessTimeout", "error")
    assert got["error"] == "canary deployment podinfo.test not ready"


def test_the_rollback_check_is_read_from_the_analysis_history() -> None:
    history = [
        AnalysisDecision.model_validate(entry) for entry in [
            {"time": "2026-12-01T10:00:00Z", "metric": "request-duration", "verdict": "Fail",
             "action": "fail", "value": 612, "thresholdMax": 500, "message": "older"},
            {"time": "2026-12-01T10:01:00Z", "metric": "request-success-rate",
             "verdict": "Fail", "action": "fail", "value": 95.2, "thresholdMin": 99,
             "message": "Halt podinfo.test advancement success rate 95.20% < 99%"},
            {"time": "2026-12-01T10:02:00Z", "metric": "request-success-rate",
             "verdict": "Pass", "action": "pass", "value": 99.9, "thresholdMin": 99},
        ]
    ]
    found = alert_templates.failed_check_from_history(
        history, last_failure="Halt podinfo.test advancement success rate 95.20% < 99%")
    assert found == CheckInfo(name="request-success-rate", value=95.2, threshold=99.0,
                              message="Halt podinfo.test advancement success rate 95.20% < 99%")
    # A webhook was the last failure: no metric is named after it.
    assert alert_templates.failed_check_from_history(
        history, last_failure="pre-rollout check smoke failed exit 1") is None
    assert alert_templates.failed_check_from_history(history, last_failure=None) is None


def test_the_dashboard_link_fills_only_its_two_placeholders() -> None:
    assert alert_templates.dashboard_link(
        "https://d.example/{namespace}/{name}?q={other}", namespace="ns", name="app"
    ) == "https://d.example/ns/app?q={other}"


# --- rendering and its failures --------------------------------------------------------------


def test_a_template_renders_every_variable() -> None:
    got = values(alerting.failed_check(CheckInfo(name="request-success-rate", value=95.2,
                                                 message="success rate 95.20% < 99%")))
    text = alert_templates.render(
        "[{{ cluster }}] {{ name }}.{{ namespace }} ({{ target }}) rev {{ revision }} "
        "{{ phase }} at {{ weight }}%: {{ check.name }} {{ check.value }} vs "
        "{{ check.threshold }} - {{ dashboard_url }}\n", got)
    assert text == ("[prod-eu] podinfo.test (Deployment/podinfo) rev 5d8f7b9c6 Progressing at "
                    "30%: request-success-rate 95.2 vs 99.0 - "
                    "https://flaggerpy.example/#/test/podinfo")


def test_text_is_not_html_escaped() -> None:
    assert alert_templates.render("{{ text }}", {"text": "a < b & c"}) == "a < b & c"


@pytest.mark.parametrize(("source", "error"), [
    pytest.param("{{ nmae }}", "UndefinedError: 'nmae' is undefined", id="typo"),
    pytest.param("{{ check.value }}", "UndefinedError: 'check' is undefined", id="no-check"),
    pytest.param("{{ name", "line 1: unexpected end of template", id="syntax"),
    pytest.param("{{ name.__class__.__mro__ }}", "SecurityError", id="sandbox"),
    pytest.param("{{ 1 / 0 }}", "ZeroDivisionError", id="expression"),
    pytest.param("{% if false %}x{% endif %}  ", "rendered an empty text", id="empty"),
])
def test_a_template_that_cannot_render_raises_template_error(source: str, error: str) -> None:
    with pytest.raises(TemplateError) as caught:
        alert_templates.render(source, {"name": "podinfo"})
    assert error in str(caught.value)


def test_a_rendered_text_is_bounded() -> None:
    assert len(alert_templates.render("{{ 'x' * 10000 }}", {})) == alert_templates.MAX_TEXT


def test_problems_name_unknown_kinds_and_syntax_errors_only() -> None:
    assert alert_templates.template_problems(None) == []
    assert alert_templates.template_problems({"promoted": "{{ nmae }}"}) == []  # parses
    assert alert_templates.template_problems({
        "rolledback": "x", "promoted": "{% if %}", "step": "ok"}) == [
        "promoted: line 1: Expected an expression, got 'end of statement block'",
        "rolledback: not an event kind (one of initialized, newRevision, waiting, promoted, "
        "rolledBack, promotionFailed, readinessTimeout, step, failedCheck, webhookFailure)",
    ]


def test_the_alerts_template_wins_over_the_providers() -> None:
    both = alert_templates.choose(AlertKind.PROMOTED, alert={"promoted": "mine"},
                                  provider={"promoted": "theirs", "step": "s"})
    assert both == ("mine", "alert")
    assert alert_templates.choose(AlertKind.STEP, alert={"promoted": "mine"},
                                  provider={"step": "s"}) == ("s", "provider")
    assert alert_templates.choose(AlertKind.WAITING, alert=None, provider={"step": "s"}) is None


def test_only_the_recurring_kinds_are_opt_in() -> None:
    assert {kind.value for kind in alert_templates.OPT_IN_KINDS} == {
        "step", "failedCheck", "webhookFailure"}


@pytest.mark.parametrize(("message", "kind"), [
    (alerting.initialization_completed("Deployment"), "initialized"),
    (alerting.new_revision(), "newRevision"),
    (alerting.waiting_for_approval(), "waiting"),
    (alerting.traffic_increase_waiting_for_approval(), "waiting"),
    (alerting.promotion_waiting_for_approval(), "waiting"),
    (decisions.pause_alert(weight=20, failed=2, last_failure=None), "waiting"),
    (alerting.manual_rollback(), "rolledBack"),
    (alerting.failed_checks_threshold_reached(5), "rolledBack"),
    (alerting.metrics_providers_unusable("no such provider"), "rolledBack"),
    (alerting.progress_deadline_exceeded("not ready"), "readinessTimeout"),
    (alerting.promotion_failed("timeout"), "promotionFailed"),
    (alerting.promotion_completed(), "promoted"),
    (alerting.analysis_skipped(), "promoted"),
    (alerting.step_advanced(20), "step"),
    (alerting.failed_check(CheckInfo(name="m")), "failedCheck"),
    (alerting.webhook_failed(name="w", hook_type="rollout", error="e"), "webhookFailure"),
])
def test_each_message_names_its_kind(message: alerting.AlertMessage, kind: str) -> None:
    assert message.kind == AlertKind(kind)


def test_webhook_info_is_what_templates_see() -> None:
    assert values(alerting.webhook_failed(name="w", hook_type="rollout", error="e"))[
        "webhook"] == {"name": "w", "error": "e"}
    assert WebhookInfo(name="w").error == ""


# --- the AlertProvider's condition -----------------------------------------------------------


def delivery(templates: str | None) -> Delivery:
    return Delivery(provider=ObjectKey("test", "slack"), cause=DeliveryCause.DELIVERED,
                    message="delivered to http://127.0.0.1", templates=templates)


def test_templates_valid_is_said_only_for_a_provider_with_templates() -> None:
    assert [w.type for w in delivery_conditions(delivery(None))] == ["Delivered"]
    [_, ok] = delivery_conditions(delivery(""))
    assert (ok.type, ok.status, ok.reason) == (TEMPLATES_VALID, "True", "TemplatesParsed")
    [_, bad] = delivery_conditions(delivery("promoted: UndefinedError: 'nmae' is undefined"))
    assert (bad.type, bad.status, bad.reason) == (TEMPLATES_VALID, "False", "TemplateInvalid")
    assert bad.message == ("promoted: UndefinedError: 'nmae' is undefined; the default text is "
                           "sent instead")


def provider_obj(templates: dict[str, str] | None, *, generation: int = 1,
                 conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "slack", "address": "https://hooks.example/x"}
    if templates is not None:
        spec["templates"] = templates
    return {"apiVersion": "flagger.app/v1beta1", "kind": "AlertProvider",
            "metadata": {"name": "chat", "namespace": "test", "generation": generation,
                         "resourceVersion": "7"},
            "spec": spec, "status": {"conditions": conditions or []}}


def test_a_new_spec_gets_its_templates_judged_once_per_generation() -> None:
    assert templates_condition(provider_obj(None)) is None
    assert templates_condition(provider_obj({})) is None
    ok = templates_condition(provider_obj({"promoted": "{{ name }}"}))
    assert ok is not None
    assert (ok.type, ok.status, ok.reason) == (TEMPLATES_VALID, "True", "TemplatesParsed")
    bad = templates_condition(provider_obj({"promoted": "{{ name", "step": "{{ weight }}"}))
    assert bad is not None
    assert (bad.status, bad.reason) == ("False", "TemplateInvalid")
    assert bad.message == ("promoted: line 1: unexpected end of template, expected 'end of "
                           "print statement'.; the default text is sent instead")
    # Set for this generation (by this check or by a delivery): left alone until an edit.
    said = [{"type": TEMPLATES_VALID, "status": "False", "reason": "TemplateInvalid",
             "message": "promoted: UndefinedError", "observedGeneration": 3}]
    assert templates_condition(provider_obj({"promoted": "{{ x }}"}, generation=3,
                                            conditions=said)) is None
    again = templates_condition(provider_obj({"promoted": "{{ x }}"}, generation=4,
                                             conditions=said))
    assert again is not None
    assert again.status == "True"


async def test_the_status_reconciler_writes_templates_valid_beside_ready() -> None:
    class Store:
        def __init__(self, obj: dict[str, Any]) -> None:
            self.obj = obj
            self.patches: list[dict[str, Any]] = []

        async def get(self, resource: Any, *, namespace: str, name: str) -> dict[str, Any]:
            return self.obj

        async def patch(self, resource: Any, *, namespace: str, name: str,
                        patch: dict[str, Any], subresource: str) -> dict[str, Any]:
            self.patches.append(patch)
            return self.obj

    store = Store(provider_obj({"rolledBack": "{% if %}"}, generation=2))
    reconciler = plugin_status.PluginStatusReconciler(plugin_status.ALERT_PROVIDERS,
                                                      store=store)  # type: ignore[arg-type]
    await reconciler.reconcile(ObjectKey("test", "chat"))
    [patch] = store.patches
    assert patch["metadata"] == {"resourceVersion": "7"}
    ready, templates = patch["status"]["conditions"]
    assert (ready["type"], ready["status"], ready["observedGeneration"]) == ("Ready", "True", 2)
    assert (templates["type"], templates["status"], templates["reason"]) == (
        TEMPLATES_VALID, "False", "TemplateInvalid")
    assert templates["observedGeneration"] == 2
    assert templates["message"].startswith("rolledBack: line 1: Expected an expression")

    store.obj["status"] = patch["status"]  # as the API server now has it: nothing more to say
    await reconciler.reconcile(ObjectKey("test", "chat"))
    assert len(store.patches) == 1
