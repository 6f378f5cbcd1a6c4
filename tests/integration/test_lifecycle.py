"""The canary lifecycle end to end: the controller process, the real cluster, a real Prometheus.

Each test is a scenario a Flagger user runs: deploy, change the image (or a ConfigMap), and watch
the Canary go through its phases while the analysis queries Prometheus for numbers the test sets.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from e2e.cluster import audit
from e2e.cluster.localcluster import free_port
from e2e.cluster.pytest_plugin import eventually
from e2e.processes import LoadTesterProcess
from e2e.receiver import WebhookReceiver
from e2e.scenario import Scenario, canary, container_image, deployment

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]




async def set_image(scenario: Scenario, name: str, image: str) -> float:
    """``kubectl set image``; returns when it was done (monotonic seconds)."""
    await scenario.kubectl("set", "image", f"deployment/{name}", f"{name}={image}")
    return time.monotonic()


async def initialized(scenario: Scenario, name: str, *, image: str = "podinfo:6.0.0") -> None:
    await scenario.set_success_rate(name, 99)
    await scenario.apply(deployment(name, image=image), canary(name))
    await scenario.wait_phase(name, "Initialized", within=60)


async def test_blue_green_promotion_end_to_end(scenario: Scenario) -> None:
    await scenario.start_controller()
    await initialized(scenario, "podinfo")
    primary = await scenario.get("deployment", "podinfo-primary")
    assert container_image(primary) == "podinfo:6.0.0"
    target = await scenario.get("deployment", "podinfo")
    assert target is not None
    assert target["spec"]["replicas"] == 0
    for service in ("podinfo", "podinfo-primary", "podinfo-canary"):
        assert await scenario.get("service", service) is not None

    changed_at = await set_image(scenario, "podinfo", "podinfo:6.0.1")
    seen: list[str] = []
    await scenario.wait_phase("podinfo", "Progressing", within=10, seen=seen)
    detected_after = time.monotonic() - changed_at
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=120, seen=seen)

    assert status["phase"] == "Succeeded", status
    assert seen[-4:] == ["Progressing", "Promoting", "Finalising", "Succeeded"], seen
    assert container_image(await scenario.get("deployment", "podinfo-primary")) == "podinfo:6.0.1"
    target = await scenario.get("deployment", "podinfo")
    assert target is not None
    assert target["spec"]["replicas"] == 0
    [condition] = status["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "Promoted", "True", "Succeeded"
    )
    messages = [e["message"] for e in await scenario.events("podinfo")]
    assert "New revision detected! Scaling up podinfo." + scenario.namespace in messages
    assert "Promotion completed! Scaling down podinfo." + scenario.namespace in messages
    metrics = scenario.controllers[0].get("/metrics")[1]
    labels = f'name="podinfo",namespace="{scenario.namespace}"'
    assert f"flagger_canary_status{{{labels}}} 1.0" in metrics
    assert f'flagger_canary_total{{namespace="{scenario.namespace}"}} 1.0' in metrics
    assert f'flagger_canary_metric_analysis{{metric="app-success-rate",{labels}}} 99.0' in metrics
    assert "flagger_canary_successes_total{" in metrics
    print(f"new revision seen as Progressing {detected_after:.2f}s after kubectl set image")


async def test_rollback_when_a_metric_breaks_its_threshold(scenario: Scenario) -> None:
    await scenario.start_controller()
    await initialized(scenario, "podinfo")
    await scenario.set_success_rate("podinfo", 42)  # the new version is bad
    await set_image(scenario, "podinfo", "podinfo:6.0.1")
    status = await scenario.wait_phase("podinfo", "Failed", within=90)

    assert container_image(await scenario.get("deployment", "podinfo-primary")) == "podinfo:6.0.0"
    target = await scenario.get("deployment", "podinfo")
    assert target is not None
    assert target["spec"]["replicas"] == 0
    [condition] = status["conditions"]
    assert (condition["status"], condition["reason"]) == ("False", "Failed")
    assert condition["message"].startswith("Canary analysis failed, Deployment scaled to zero.")
    assert "app-success-rate" in condition["message"]
    assert "42" in condition["message"]
    messages = [e["message"] for e in await scenario.events("podinfo")]
    assert any("app-success-rate" in m and "42" in m for m in messages), messages
    name = f"podinfo.{scenario.namespace}"
    assert f"Rolling back {name} failed checks threshold reached 2" in messages
    assert f"Canary failed! Scaling down podinfo.{scenario.namespace}" in messages


async def test_a_missing_target_is_reported_and_others_carry_on(scenario: Scenario) -> None:
    await scenario.start_controller()
    await scenario.set_success_rate("podinfo", 99)
    await scenario.apply(canary("ghost"), deployment("podinfo", image="podinfo:6.0.0"),
                         canary("podinfo"))
    await scenario.wait_phase("podinfo", "Initialized", within=60)

    async def ghost_reported() -> list[str]:
        return [e["message"] for e in await scenario.events("ghost") if e["type"] == "Warning"]

    deadline = time.monotonic() + 20
    while not await ghost_reported():
        assert time.monotonic() < deadline, "no Warning event for the missing target"
        await asyncio.sleep(0.3)
    warnings = await ghost_reported()
    assert any("ghost" in message and "not found" in message for message in warnings), warnings
    ghost = await scenario.status("ghost")
    assert ghost.get("phase") in ("Initializing", "Failed"), ghost
    print(json.dumps(ghost))


def analysis(**extra: Any) -> dict[str, Any]:
    """The scenarios' blue/green analysis (2 iterations of 2 s) with ``extra`` fields."""
    return {
        "interval": "2s",
        "threshold": 2,
        "iterations": 2,
        "metrics": [{
            "name": "app-success-rate",
            "templateRef": {"name": "app-success-rate"},
            "thresholdRange": {"min": 90},
        }],
        **extra,
    }


async def stays(scenario: Scenario, name: str, phase: str, *, seconds: float) -> None:
    """Asserts the canary keeps ``phase`` for ``seconds`` (several analysis ticks)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert (await scenario.status(name)).get("phase") == phase
        await asyncio.sleep(0.3)


async def test_an_invalid_spec_is_failed_evented_and_sent_to_event_hooks(
    scenario: Scenario, receiver: WebhookReceiver
) -> None:
    """A provider the CRD accepts but no installed router serves: Failed, a Warning, and the
    event hook told."""
    await scenario.start_controller()
    hooks = [{"name": "events", "type": "event", "url": receiver.url("/events")}]
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"),
                         canary("podinfo", provider="acme-mesh",
                                analysis=analysis(webhooks=hooks)))
    status = await scenario.wait_phase("podinfo", "Failed", within=30)
    message = status["conditions"][0]["message"]
    assert message.startswith("invalid canary spec: "), message
    assert "acme-mesh" in message
    warnings = [e["message"] for e in await scenario.events("podinfo") if e["type"] == "Warning"]
    assert message in warnings

    async def posted() -> bool:
        return any(body["metadata"]["eventMessage"] == message
                   for body in receiver.bodies("/events"))
    await eventually(posted, within=20, what="the invalid-spec Event at the event webhook")
    body = next(b for b in receiver.bodies("/events")
                if b["metadata"]["eventMessage"] == message)
    assert body["metadata"]["eventType"] == "Warning"
    assert body["name"] == "podinfo"


async def test_gates_hold_the_canary_until_opened(
    scenario: Scenario, receiver: WebhookReceiver, loadtester: LoadTesterProcess
) -> None:
    await scenario.start_controller()
    receiver.answer("/promote", 403)
    await scenario.set_success_rate("podinfo", 99)
    hooks = [
        {"name": "gate", "type": "confirm-rollout", "url": f"{loadtester.url}/gate/check"},
        {"name": "promotion-gate", "type": "confirm-promotion", "url": receiver.url("/promote")},
        {"name": "events", "type": "event", "url": receiver.url("/events")},
    ]
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"),
                         canary("podinfo", analysis=analysis(webhooks=hooks)))
    await scenario.wait_phase("podinfo", "Initialized", within=60)
    await set_image(scenario, "podinfo", "podinfo:6.0.1")

    await scenario.wait_phase("podinfo", "Waiting", within=20)
    await stays(scenario, "podinfo", "Waiting", seconds=4)
    opened = loadtester.gate("open", f"podinfo.{scenario.namespace}")
    assert opened.returncode == 0, opened.stderr
    await scenario.wait_phase("podinfo", "Progressing", within=20)

    await scenario.wait_phase("podinfo", "WaitingPromotion", within=60)
    await stays(scenario, "podinfo", "WaitingPromotion", seconds=4)
    primary = await scenario.get("deployment", "podinfo-primary")
    assert container_image(primary) == "podinfo:6.0.0"  # nothing promoted behind the gate
    receiver.answer("/promote", 200)
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=60)
    assert status["phase"] == "Succeeded"
    assert container_image(await scenario.get("deployment", "podinfo-primary")) == "podinfo:6.0.1"

    gate_checks = receiver.bodies("/promote")
    assert gate_checks
    assert gate_checks[0]["name"] == "podinfo"
    assert gate_checks[0]["namespace"] == scenario.namespace
    assert gate_checks[0]["phase"] == "Progressing"
    events = receiver.bodies("/events")
    messages = [e["metadata"]["eventMessage"] for e in events]
    assert f"New revision detected! Scaling up podinfo.{scenario.namespace}" in messages
    assert {e["metadata"]["eventType"] for e in events} >= {"Normal", "Warning"}


async def test_failed_pre_rollout_hook_counts_as_a_failed_check(
    scenario: Scenario, receiver: WebhookReceiver
) -> None:
    await scenario.start_controller()
    receiver.answer("/pre", 500)
    await scenario.set_success_rate("podinfo", 99)
    hooks = [{"name": "acceptance", "type": "pre-rollout", "url": receiver.url("/pre")}]
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"),
                         canary("podinfo", analysis=analysis(webhooks=hooks)))
    await scenario.wait_phase("podinfo", "Initialized", within=60)
    await set_image(scenario, "podinfo", "podinfo:6.0.1")
    await scenario.wait_phase("podinfo", "Failed", within=60)
    assert len(receiver.bodies("/pre")) >= 2
    assert container_image(await scenario.get("deployment", "podinfo-primary")) == "podinfo:6.0.0"
    warnings = [e["message"] for e in await scenario.events("podinfo") if e["type"] == "Warning"]
    assert any("pre-rollout check acceptance failed" in m for m in warnings), warnings


async def test_a_configmap_change_alone_runs_an_analysis(scenario: Scenario) -> None:
    await scenario.start_controller()
    await scenario.set_success_rate("podinfo", 99)
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "podinfo-config"},
              "data": {"color": "blue"}}
    workload = deployment("podinfo", image="podinfo:6.0.0")
    workload["spec"]["template"]["spec"]["containers"][0]["envFrom"] = [
        {"configMapRef": {"name": "podinfo-config"}}
    ]
    await scenario.apply(config, workload, canary("podinfo"))
    status = await scenario.wait_phase("podinfo", "Initialized", within=60)
    assert "configmap/podinfo-config" in status["trackedConfigs"]
    primary = await scenario.get("deployment", "podinfo-primary")
    assert primary is not None
    env_from = primary["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert env_from == [{"configMapRef": {"name": "podinfo-config-primary"}}]
    copy = await scenario.get("configmap", "podinfo-config-primary")
    assert copy is not None
    assert copy["data"] == {"color": "blue"}

    config["data"] = {"color": "green"}
    await scenario.apply(config)
    seen: list[str] = []
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=90, seen=seen)
    assert status["phase"] == "Succeeded"
    assert "Progressing" in seen
    copy = await scenario.get("configmap", "podinfo-config-primary")
    assert copy is not None
    assert copy["data"] == {"color": "green"}
    assert container_image(await scenario.get("deployment", "podinfo-primary")) == "podinfo:6.0.0"


async def test_daemonset_target(scenario: Scenario) -> None:
    await scenario.start_controller()
    await scenario.set_success_rate("node-agent", 99)
    daemonset = deployment("node-agent", image="agent:1.0")
    daemonset["kind"] = "DaemonSet"
    del daemonset["spec"]["replicas"], daemonset["spec"]["progressDeadlineSeconds"]
    await scenario.apply(daemonset, canary("node-agent", kind="DaemonSet"))
    await scenario.wait_phase("node-agent", "Initialized", within=60)
    target = await scenario.get("daemonset", "node-agent")
    assert target is not None
    assert target["spec"]["template"]["spec"]["nodeSelector"] == {
        "flagger.app/scale-to-zero": "true"
    }
    await scenario.kubectl("set", "image", "daemonset/node-agent", "node-agent=agent:1.1")
    status = await scenario.wait_phase("node-agent", ("Succeeded", "Failed"), within=90)
    assert status["phase"] == "Succeeded"
    assert container_image(await scenario.get("daemonset", "node-agent-primary")) == "agent:1.1"


async def test_hpa_primary_is_created_and_kept_in_sync(scenario: Scenario) -> None:
    await scenario.start_controller()
    await scenario.set_success_rate("podinfo", 99)
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "podinfo"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "minReplicas": 2,
            "maxReplicas": 4,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80},
            }}],
        },
    }
    ref = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "podinfo"}
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"), hpa,
                         canary("podinfo", autoscalerRef=ref))
    await scenario.wait_phase("podinfo", "Initialized", within=60)
    primary_hpa = await scenario.get("hpa", "podinfo-primary")
    assert primary_hpa is not None
    assert primary_hpa["spec"]["scaleTargetRef"]["name"] == "podinfo-primary"
    assert (primary_hpa["spec"]["minReplicas"], primary_hpa["spec"]["maxReplicas"]) == (2, 4)

    hpa["spec"]["maxReplicas"] = 6
    await scenario.apply(hpa)
    await set_image(scenario, "podinfo", "podinfo:6.0.1")
    await scenario.wait_phase("podinfo", "Succeeded", within=90)
    primary_hpa = await scenario.get("hpa", "podinfo-primary")
    assert primary_hpa is not None
    assert primary_hpa["spec"]["maxReplicas"] == 6  # synced at promotion


async def initialized_with_scaled_object(
    scenario: Scenario, spec: dict[str, Any], **canary_spec: Any
) -> None:
    """A started controller and the ``podinfo`` canary Initialized, scaled by ``podinfo-so``."""
    await scenario.start_controller()
    await scenario.set_success_rate("podinfo", 99)
    scaled_object = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                     "metadata": {"name": "podinfo-so"},
                     "spec": {"scaleTargetRef": {"name": "podinfo"}, **spec}}
    ref = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": "podinfo-so"}
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"), scaled_object,
                         canary("podinfo", autoscalerRef=ref, revertOnDeletion=True,
                                **canary_spec))
    await scenario.wait_phase("podinfo", "Initialized", within=60)


async def test_keda_scaled_object_is_copied_and_the_targets_paused_between_runs(
    scenario: Scenario,
) -> None:
    """Flagger's e2e #20, without KEDA's operator: what the controller writes to the objects."""
    await initialized_with_scaled_object(scenario, {
        "minReplicaCount": 2,
        "maxReplicaCount": 3,
        "triggers": [{"type": "prometheus", "name": "requests", "metadata": {
            "serverAddress": "http://prometheus.monitoring:9090", "threshold": "5",
            "query": 'sum(rate(http_requests_total{app="podinfo"}[1m]))'}}],
    }, analysis=analysis(iterations=5))

    async def paused() -> str | None:
        target = await scenario.get("scaledobject", "podinfo-so")
        assert target is not None
        return ((target["metadata"].get("annotations") or {})
                .get("autoscaling.keda.sh/paused-replicas"))

    primary = await scenario.get("scaledobject", "podinfo-so-primary")
    assert primary is not None
    assert primary["spec"]["scaleTargetRef"] == {"name": "podinfo-primary"}
    assert primary["spec"]["triggers"][0]["metadata"]["query"] == (
        'sum(rate(http_requests_total{app="podinfo-primary"}[1m]))')
    assert "autoscaling.keda.sh/paused-replicas" not in (
        primary["metadata"].get("annotations") or {})
    assert await paused() == "0"  # the target is scaled to zero: KEDA must not scale it up

    await set_image(scenario, "podinfo", "podinfo:6.0.1")
    await scenario.wait_phase("podinfo", "Progressing", within=30)
    assert await paused() is None  # under analysis the target's scaler works again
    target = await scenario.get("deployment", "podinfo")
    assert target is not None
    assert target["spec"]["replicas"] == 2  # scaled up to the ScaledObject's minimum
    await scenario.wait_phase("podinfo", "Succeeded", within=90)
    assert await paused() == "0"

    await scenario.kubectl("delete", "canary", "podinfo", "--wait=false")

    async def resumed() -> bool:
        return await paused() is None

    await eventually(resumed, within=60, what="the target's ScaledObject to be resumed")


async def test_a_deleted_scaled_object_does_not_hold_the_canarys_deletion(
    scenario: Scenario,
) -> None:
    await initialized_with_scaled_object(scenario, {"triggers": [
        {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "60"}}]})
    await scenario.kubectl("delete", "scaledobject", "podinfo-so")
    await scenario.kubectl("delete", "canary", "podinfo", "--wait=false")

    async def gone() -> bool:
        return await scenario.get("canary", "podinfo") is None

    await eventually(gone, within=60, what="the Canary to be finalized and removed")
    target = await scenario.get("deployment", "podinfo")
    assert target is not None
    assert target["spec"]["replicas"] > 0  # reverted: the target serves again


async def canary_gone(scenario: Scenario, name: str) -> None:
    async def gone() -> bool:
        return await scenario.get("canary", name) is None

    await eventually(gone, within=60, what=f"the Canary {name} to be finalized and removed")


async def test_a_canary_whose_target_was_deleted_first_is_still_deleted(
    scenario: Scenario,
) -> None:
    # `helm uninstall` of a chart holding both (fluxcd/flagger#1357): the Deployment goes
    # first. Nothing is left to give back but the routing; the deletion must complete.
    await scenario.start_controller()
    await scenario.set_success_rate("podinfo", 99)
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"),
                         canary("podinfo", revertOnDeletion=True))
    await scenario.wait_phase("podinfo", "Initialized", within=60)
    await scenario.kubectl("delete", "deployment", "podinfo")
    await scenario.kubectl("delete", "canary", "podinfo", "--wait=false")

    await canary_gone(scenario, "podinfo")
    messages = [e["message"] for e in await scenario.events("podinfo")]
    name = f"podinfo.{scenario.namespace}"
    assert any(m.startswith(f"Target of {name} not restored: ") for m in messages), messages
    assert f"Terminated canary {name}" in messages


async def test_a_canary_migrated_from_a_mesh_not_installed_is_still_deleted(
    scenario: Scenario,
) -> None:
    # A Canary that Flagger managed carries Flagger's finalizer; here its provider has no
    # router, so its spec fails, but deleting it must not hang on that.
    await scenario.start_controller()
    await scenario.set_success_rate("podinfo", 99)
    migrated = canary("podinfo", provider="acme-mesh", revertOnDeletion=True)
    migrated["metadata"]["finalizers"] = ["finalizer.flagger.app"]
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0", replicas=2), migrated)
    status = await scenario.wait_phase("podinfo", "Failed", within=60)
    assert "acme-mesh" in status["conditions"][0]["message"]
    await scenario.kubectl("delete", "canary", "podinfo", "--wait=false")

    await canary_gone(scenario, "podinfo")
    messages = [e["message"] for e in await scenario.events("podinfo")]
    name = f"podinfo.{scenario.namespace}"
    assert any(m.startswith(f"Routing of {name} not reverted: ") and "acme-mesh" in m
               for m in messages), messages
    target = await scenario.get("deployment", "podinfo")
    assert target is not None
    assert target["spec"]["replicas"] == 2  # the user's, untouched


async def test_suspend_and_skip_analysis(scenario: Scenario) -> None:
    await scenario.start_controller()
    await scenario.set_success_rate("podinfo", 99)
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"), canary("podinfo"))
    await scenario.wait_phase("podinfo", "Initialized", within=60)

    await scenario.kubectl("patch", "canary", "podinfo", "--type=merge",
                           "-p", '{"spec":{"suspend":true}}')
    await asyncio.sleep(1)
    await set_image(scenario, "podinfo", "podinfo:6.0.1")
    await stays(scenario, "podinfo", "Initialized", seconds=5)
    messages = [e["message"] for e in await scenario.events("podinfo")]
    assert "skipping canary run as object is suspended" in messages

    await scenario.kubectl("patch", "canary", "podinfo", "--type=merge",
                           "-p", '{"spec":{"suspend":false,"skipAnalysis":true}}')
    await scenario.set_success_rate("podinfo", 10)  # would fail any analysis
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=60)
    assert status["phase"] == "Succeeded"
    assert container_image(await scenario.get("deployment", "podinfo-primary")) == "podinfo:6.0.1"
    messages = [e["message"] for e in await scenario.events("podinfo")]
    name = f"podinfo.{scenario.namespace}"
    assert f"Promotion completed! Canary analysis was skipped for {name}" in messages


async def test_revert_on_deletion_gives_the_target_back(scenario: Scenario) -> None:
    await scenario.start_controller()
    await scenario.set_success_rate("podinfo", 99)
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0", replicas=3),
                         canary("podinfo", revertOnDeletion=True))
    await scenario.wait_phase("podinfo", "Initialized", within=60)
    obj = await scenario.get("canary", "podinfo")
    assert obj is not None
    assert "finalizer.flagger.app" in obj["metadata"]["finalizers"]
    target = await scenario.get("deployment", "podinfo")
    assert target is not None
    assert target["spec"]["replicas"] == 0

    await scenario.kubectl("delete", "canary", "podinfo", "--wait=false")
    deadline = time.monotonic() + 60
    while await scenario.get("canary", "podinfo") is not None:
        assert time.monotonic() < deadline, "the Canary was not finalized"
        await asyncio.sleep(0.3)
    target = await scenario.get("deployment", "podinfo")
    assert target is not None
    assert target["spec"]["replicas"] == 3  # the primary's replicas, back on the target
    apex = await scenario.get("service", "podinfo")
    # The apex Service was generated (owned by the Canary): the garbage collector removes it.
    assert apex is None or apex["spec"]["selector"] == {"app": "podinfo"}


async def test_a_canary_deleted_mid_analysis_is_finalized_in_one_pass(
        scenario: Scenario) -> None:
    """The target is running the new revision, so the revert needs no wait: the reconcile
    that writes ``Terminating`` also removes the finalizer, with the Canary's version after
    that write (a stale one would cost a 409 and a retry)."""
    await scenario.start_controller()
    await scenario.set_success_rate("podinfo", 99)
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0", replicas=2),
                         canary("podinfo", revertOnDeletion=True,
                                analysis=analysis(interval="10s", iterations=30)))
    await scenario.wait_phase("podinfo", "Initialized", within=60)
    await set_image(scenario, "podinfo", "podinfo:6.0.1")
    await scenario.wait_phase("podinfo", "Progressing", within=60)

    async def target_ready() -> bool:
        target = await scenario.get("deployment", "podinfo") or {}
        return int((target.get("status") or {}).get("readyReplicas") or 0) >= 2

    await eventually(target_ready, within=60, what="the new revision to be ready")
    since = datetime.now(UTC)
    await scenario.kubectl("delete", "canary", "podinfo", "--wait=false")

    async def gone() -> bool:
        return await scenario.get("canary", "podinfo") is None

    await eventually(gone, within=60, what="the Canary to be finalized")
    await asyncio.sleep(1)  # let the audit log catch up
    writes = [(r.verb, r.subresource, r.code) for r in audit.records(scenario.cluster.audit_log)
              if r.user_agent.startswith("flaggerpy/") and r.received >= since
              and r.namespace == scenario.namespace and r.resource == "canaries"]
    assert ("patch", "status", 200) in writes  # Terminating
    assert [w for w in writes if w[2] == 409] == [], writes


async def test_controller_killed_mid_analysis_resumes_without_repeating(
    scenario: Scenario,
) -> None:
    first = await scenario.start_controller()
    await scenario.set_success_rate("podinfo", 99)
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"),
                         canary("podinfo", analysis=analysis(iterations=4)))
    await scenario.wait_phase("podinfo", "Initialized", within=60)
    await set_image(scenario, "podinfo", "podinfo:6.0.1")
    deadline = time.monotonic() + 60
    while (await scenario.status("podinfo")).get("iterations", 0) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    first.signal(signal.SIGKILL)
    killed_at = await scenario.status("podinfo")
    assert killed_at["phase"] == "Progressing"

    await scenario.start_controller()
    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=90)
    assert status["phase"] == "Succeeded"
    assert container_image(await scenario.get("deployment", "podinfo-primary")) == "podinfo:6.0.1"
    copies = [e for e in await scenario.events("podinfo")
              if e["message"].startswith("Copying podinfo.")]
    assert [e.get("count", 1) for e in copies] == [1], "the promotion was repeated"
    replica_sets = json.loads(await scenario.kubectl(
        "get", "replicasets", "-l", "app=podinfo-primary", "-o", "json"))["items"]
    assert len(replica_sets) == 2  # the initial rollout and exactly one promotion


async def test_steady_ticks_read_nothing_from_the_api_server(scenario: Scenario) -> None:
    controller = await scenario.start_controller("-min-analysis-interval=1s")
    await scenario.set_success_rate("podinfo", 99)
    await scenario.apply(
        deployment("podinfo", image="podinfo:6.0.0"),
        canary("podinfo", analysis=analysis(interval="1s", iterations=40)),
    )
    await scenario.wait_phase("podinfo", "Initialized", within=60)
    await set_image(scenario, "podinfo", "podinfo:6.0.1")

    async def iterations() -> int:
        return int((await scenario.status("podinfo")).get("iterations") or 0)

    async def reached(count: int) -> bool:
        return await iterations() >= count

    await eventually(lambda: reached(3), within=30, what="the analysis to run")
    start = await iterations()
    since = datetime.now(UTC)
    await eventually(lambda: reached(start + 10), within=30, what="ten more ticks")
    until = datetime.now(UTC)
    await asyncio.sleep(1)  # let the audit log catch up
    counts = audit.count_requests(scenario.cluster.audit_log, user_agent="flaggerpy/",
                                  since=since, until=until, namespace=scenario.namespace)
    print(f"10 analysis ticks: {dict(counts.by_resource)} reads={counts.reads} "
          f"writes={counts.writes}")
    assert counts.reads == 0, counts.by_resource
    assert counts.by_resource["patch canaries/status"] >= 10
    # Each of those ticks said how late it started.
    status, page = controller.get("/metrics")
    assert status == 200
    late = [line for line in page.splitlines()
            if line.startswith("flaggerpy_canary_tick_lateness_seconds_count")]
    assert late, page
    assert float(late[0].split()[-1]) >= 10, late
    assert controller.exit_code() is None


async def test_broken_alert_receivers_do_not_hold_the_canary(
    scenario: Scenario, receiver: WebhookReceiver
) -> None:
    await scenario.start_controller()
    receiver.answer("/failing", 500)
    receiver.answer("/hanging", 200, delay=120)
    closed_port = free_port()
    providers = [
        ("chat", receiver.url("/slack")),
        ("failing", receiver.url("/failing")),
        ("hanging", receiver.url("/hanging")),
        ("refused", f"http://127.0.0.1:{closed_port}/"),
    ]
    await scenario.apply(*(
        {"apiVersion": "flagger.app/v1beta1", "kind": "AlertProvider",
         "metadata": {"name": name}, "spec": {"type": "slack", "channel": "deploys",
                                              "address": address}}
        for name, address in providers
    ))
    alerts = [{"name": name, "severity": "info", "providerRef": {"name": name}}
              for name, _ in providers]
    await scenario.set_success_rate("podinfo", 99)
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"),
                         canary("podinfo", analysis=analysis(alerts=alerts)))
    await scenario.wait_phase("podinfo", "Initialized", within=60)
    await set_image(scenario, "podinfo", "podinfo:6.0.1")
    # Within 60 s, while one receiver holds each alert for 120 s.
    await scenario.wait_phase("podinfo", "Succeeded", within=60)

    def texts() -> list[str]:
        return [json.dumps(body) for body in receiver.bodies("/slack")]

    async def completion_alerted() -> bool:
        # Sent after the Succeeded status is written, as Flagger does: it may trail the phase.
        return any("Canary analysis completed successfully, promotion finished." in t
                   for t in texts())
    await eventually(completion_alerted, within=15, what=f"the completion alert in {texts()}")
    assert any("New revision detected, progressing canary analysis." in t for t in texts())
    assert receiver.bodies("/failing")  # tried (and retried) without holding anything up
    metrics = scenario.controllers[0].get("/metrics")[1]
    assert 'flaggerpy_notification_failures_total{provider="slack"}' in metrics
