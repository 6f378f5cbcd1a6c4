"""Templated alerts from a real rollback: the controller process, the real cluster, Prometheus.

The AlertProvider and the Canary carry templates as a user writes them (so the CRD must keep the
fields, not prune them); the bad version's success rate comes from Prometheus, and the rollback
alert that reaches the receiver must name the failing check with that value and its threshold,
the cluster, the revision and the dashboard link, while Flagger's fields stay beside it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from e2e.cluster.pytest_plugin import eventually
from e2e.receiver import WebhookReceiver
from e2e.scenario import Scenario, canary, deployment

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]

ROLLBACK = (
    "[{{ cluster }}] {{ name }} rolled back (revision {{ revision }}): "
    "{{ check.name }} was {{ check.value }}, needs {{ check.threshold }} - {{ dashboard_url }}"
)




def analysis(**extra: Any) -> dict[str, Any]:
    return {
        "interval": "2s",
        "threshold": 2,
        "iterations": 3,
        "metrics": [{"name": "app-success-rate", "templateRef": {"name": "app-success-rate"},
                     "thresholdRange": {"min": 90}}],
        **extra,
    }


async def test_a_real_rollback_reaches_a_templated_provider_with_the_failing_value(
        scenario: Scenario, receiver: WebhookReceiver,
) -> None:
    await scenario.start_controller("-cluster-name=prod-eu",
                                    "-dashboard-url=https://dash.example/{namespace}/{name}")
    await scenario.apply({
        "apiVersion": "flagger.app/v1beta1", "kind": "AlertProvider",
        "metadata": {"name": "chat"},
        "spec": {"type": "slack", "channel": "deploys", "address": receiver.url("/slack"),
                 "templates": {"rolledBack": ROLLBACK,
                               "failedCheck": "{{ check.name }} {{ check.value }}"}},
    })
    alerts = [{"name": "chat", "severity": "info", "providerRef": {"name": "chat"},
               "templates": {"newRevision": "{{ name }}: new revision {{ revision }}"}}]
    await scenario.set_success_rate("podinfo", 99)
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"),
                         canary("podinfo", analysis=analysis(alerts=alerts)))
    await scenario.wait_phase("podinfo", "Initialized", within=60)
    await scenario.set_success_rate("podinfo", 42)  # the new version is bad
    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
    status = await scenario.wait_phase("podinfo", "Failed", within=90)
    revision = status["lastAppliedSpec"]

    def attachments() -> list[dict[str, Any]]:
        return [body["attachments"][0] for body in receiver.bodies("/slack")]

    async def rollback_alerted() -> bool:
        return any(a["color"] == "danger" for a in attachments())

    await eventually(rollback_alerted, within=15,
                     what=f"the rollback alert in {json.dumps(attachments())}")
    texts = [a["text"] for a in attachments()]
    [rollback] = [a for a in attachments() if a["color"] == "danger"]
    value = rollback["text"].split(" was ")[1].split(",")[0]
    assert 41 <= float(value) <= 43, rollback["text"]  # what Prometheus answered
    assert rollback["text"] == (
        f"[prod-eu] podinfo rolled back (revision {revision}): app-success-rate was {value}, "
        f"needs 90.0 - https://dash.example/{scenario.namespace}/podinfo")
    assert rollback["author_name"] == f"podinfo.{scenario.namespace}"
    assert [f["title"] for f in rollback["fields"]] == ["Cluster", "Last failed check"]
    assert "app-success-rate" in rollback["fields"][1]["value"]
    # The canary alert's own template for the run's start, and each failed check (opt-in).
    assert f"podinfo: new revision {revision}" in texts
    assert any(t.startswith("app-success-rate 4") for t in texts), texts
    # The provider says its templates are fine.
    async def templates_valid() -> bool:
        provider = await scenario.get("alertprovider", "chat")
        conditions = (provider or {}).get("status", {}).get("conditions") or []
        return any(c["type"] == "TemplatesValid" and c["status"] == "True" for c in conditions)

    await eventually(templates_valid, within=15, what="TemplatesValid=True on the provider")


async def test_a_failed_post_rollout_hook_is_alerted_after_the_promotion(
        scenario: Scenario, receiver: WebhookReceiver,
) -> None:
    await scenario.start_controller()
    receiver.answer("/post", 500)
    await scenario.apply({
        "apiVersion": "flagger.app/v1beta1", "kind": "AlertProvider",
        "metadata": {"name": "chat"},
        "spec": {"type": "slack", "channel": "deploys", "address": receiver.url("/slack"),
                 "templates": {"webhookFailure": "{{ name }}: {{ webhook.name }} failed: "
                                                 "{{ webhook.error }}"}},
    })
    hooks = [{"name": "notify-cmdb", "type": "post-rollout", "url": receiver.url("/post")}]
    alerts = [{"name": "chat", "severity": "info", "providerRef": {"name": "chat"}}]
    await scenario.set_success_rate("podinfo", 99)
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"),
                         canary("podinfo", analysis=analysis(alerts=alerts, webhooks=hooks)))
    await scenario.wait_phase("podinfo", "Initialized", within=60)
    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
    await scenario.wait_phase("podinfo", "Succeeded", within=90)

    def texts() -> list[str]:
        return [body["attachments"][0]["text"] for body in receiver.bodies("/slack")]

    async def alerted() -> bool:
        return any(t.startswith("podinfo: notify-cmdb failed: ") for t in texts())

    await eventually(alerted, within=15, what=f"the post-rollout alert in {texts()}")
    assert receiver.bodies("/post"), "the hook was called"


async def test_a_canary_that_never_gets_ready_is_alerted_not_rolled_back_in_silence(
        scenario: Scenario, receiver: WebhookReceiver,
) -> None:
    """Flagger rolls such a canary back without an alert (fluxcd/flagger#1663, #1816)."""
    await scenario.start_controller()
    await scenario.apply(*(
        {"apiVersion": "flagger.app/v1beta1", "kind": "AlertProvider", "metadata": {"name": name},
         "spec": {"type": "slack", "channel": "deploys", "address": receiver.url(f"/{name}"),
                  **spec}}
        for name, spec in [
            ("plain", {}),
            ("templated", {"templates": {"readinessTimeout": "{{ name }} not ready: {{ error }}"}}),
        ]
    ))
    alerts = [{"name": name, "severity": "error", "providerRef": {"name": name}}
              for name in ("plain", "templated")]
    target = deployment("podinfo", image="podinfo:6.0.0")
    target["spec"]["progressDeadlineSeconds"] = 3
    await scenario.set_success_rate("podinfo", 99)
    await scenario.apply(target, canary("podinfo", analysis=analysis(alerts=alerts)))
    await scenario.wait_phase("podinfo", "Initialized", within=60)
    # A new version that no node can run: the Deployment exceeds its progress deadline.
    await scenario.kubectl("patch", "deployment", "podinfo", "--type=merge", "-p", json.dumps(
        {"spec": {"template": {"spec": {
            "nodeSelector": {"flaggerpy.dev/no-such-node": "true"}}}}}))
    await scenario.wait_phase("podinfo", "Failed", within=120)

    # Which check sees the deadline first is timing: the Deployment controller's condition
    # (ProgressDeadlineExceeded), or the canary's own count of the deadline since the run
    # started (while the rollout still waits). Either is Flagger's text, and either is alerted.
    reasons = ('deployment "podinfo" exceeded its progress deadline',
               "waiting for rollout to finish: 0 of 2 (readyThreshold 100%) updated replicas "
               "are available")
    prefix = f"canary deployment podinfo.{scenario.namespace} not ready: "

    async def both_alerted() -> bool:
        return bool(receiver.bodies("/plain")) and bool(receiver.bodies("/templated"))

    await eventually(both_alerted, within=15, what="the readiness alerts")
    [plain] = [body["attachments"][0] for body in receiver.bodies("/plain")]
    assert plain["color"] == "danger"
    assert plain["text"] in {f"Progress deadline exceeded {prefix}{r}" for r in reasons}
    error = plain["text"].removeprefix("Progress deadline exceeded ")
    [templated] = [body["attachments"][0] for body in receiver.bodies("/templated")]
    assert templated["text"] == f"podinfo not ready: {error}"


async def test_a_template_that_does_not_parse_is_said_on_the_provider_before_any_alert(
        scenario: Scenario,
) -> None:
    await scenario.start_controller()
    await scenario.apply({
        "apiVersion": "flagger.app/v1beta1", "kind": "AlertProvider",
        "metadata": {"name": "typo"},
        "spec": {"type": "slack", "channel": "deploys", "address": "https://hooks.example/x",
                 "templates": {"promoted": "{{ name }", "rolledback": "{{ name }}"}},
    })

    async def said() -> dict[str, Any] | None:
        provider = await scenario.get("alertprovider", "typo")
        conditions = (provider or {}).get("status", {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "TemplatesValid"), None)

    await eventually(said, within=30, what="the TemplatesValid condition")
    condition = await said()
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("False", "TemplateInvalid")
    assert condition["message"].startswith("promoted: line 1: unexpected '}'")
    assert "rolledback: not an event kind" in condition["message"]
