"""MetricTemplates and AlertProviders say in their status what their provider did, and only
a change is written.

Against the real API server (the chart's CRDs, so ``observedGeneration`` must pass their
schema) and a real Prometheus: the analyzer and the alerter the controller builds, reading
from informer caches and writing through the object store. The status patches are counted in
the API server's audit log by the client's own user agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from e2e.cluster import audit
from e2e.cluster.localcluster import LocalCluster, free_port
from e2e.cluster.pytest_plugin import eventually
from e2e.prometheus import LocalPrometheus
from e2e.scenario import Scenario, canary as scenario_canary, deployment
from flaggerpy import kube, plugins
from flaggerpy.canary.alerting import Alerter
from flaggerpy.canary.template_status import ConditionWriter, ReportingAnalyzer
from flaggerpy.kube import KubeClient
from flaggerpy.models import Canary
from flaggerpy.runtime.informer import SharedInformerFactory
from flaggerpy.settings import Settings
from flaggerpy.telemetry import Recorder

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]


@pytest.fixture(scope="module")
def prometheus() -> Iterator[LocalPrometheus]:
    with LocalPrometheus([]) as server:  # vector(1) needs no scrape
        yield server


def metric_template(name: str, type_: str, address: str) -> dict[str, Any]:
    return {"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": name},
            "spec": {"provider": {"type": type_, "address": address}, "query": "vector(1)"}}


def canary(namespace: str, *templates: str, alert: str | None = None) -> Canary:
    analysis: dict[str, Any] = {
        "interval": "10s", "threshold": 2, "stepWeight": 10,
        "metrics": [{"name": f"m-{t}", "templateRef": {"name": t},
                     "thresholdRange": {"min": 0.5}} for t in templates],
    }
    if alert is not None:
        analysis["alerts"] = [{"name": "chat", "severity": "info",
                               "providerRef": {"name": alert}}]
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": namespace},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "service": {"port": 80}, "analysis": analysis},
    })


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), None)


def summary(obj: dict[str, Any], type_: str) -> tuple[str, str] | None:
    found = condition(obj, type_)
    return None if found is None else (found["status"], found["reason"])


@pytest.fixture
async def caches(counted_client: KubeClient, namespace: str) -> AsyncIterator[
        SharedInformerFactory]:
    """Started informers of the three kinds read, as the controller has them."""
    factory = SharedInformerFactory(counted_client, namespace=namespace)
    for resource in (kube.METRIC_TEMPLATES, kube.ALERT_PROVIDERS, kube.SECRETS):
        factory.informer(resource)
    task = asyncio.create_task(factory.start())
    try:
        for resource in (kube.METRIC_TEMPLATES, kube.ALERT_PROVIDERS, kube.SECRETS):
            await factory.informer(resource).wait_synced()
        yield factory
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def status_patches(cluster: LocalCluster, client: KubeClient, namespace: str, *,
                         since: datetime) -> dict[str, int]:
    """The client's status patches since ``since``, once the audit log has caught up (a
    request made now is logged)."""
    await client.get(kube.METRIC_TEMPLATES, "up", namespace=namespace)  # the marker
    marker = datetime.now(UTC)

    async def caught_up() -> bool:
        counts = audit.count_requests(cluster.audit_log, user_agent=client.user_agent,
                                      since=marker - timedelta(seconds=1), namespace=namespace)
        return counts.by_resource["get metrictemplates"] > 0

    await eventually(caught_up, within=20, what="the audit log to catch up")
    counts = audit.count_requests(cluster.audit_log, user_agent=client.user_agent,
                                  since=since, namespace=namespace)
    return {kind: counts.by_resource[f"patch {kind}/status"]
            for kind in ("metrictemplates", "alertproviders")}


async def test_conditions_say_what_the_provider_did_and_are_written_on_change_only(
        cluster: LocalCluster, counted_client: KubeClient, namespace: str,
        caches: SharedInformerFactory, prometheus: LocalPrometheus) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    body = {"apiVersion": "v1", "kind": "List", "items": [
        metric_template("up", "prometheus", prometheus.url),
        metric_template("vm", "victoriametrics", "http://127.0.0.1:8428"),
        metric_template("down", "prometheus", f"http://127.0.0.1:{free_port()}"),
        {"apiVersion": "flagger.app/v1beta1", "kind": "AlertProvider",
         "metadata": {"name": "chat"},
         "spec": {"type": "slack", "channel": "general", "secretRef": {"name": "missing"}}},
    ]}
    await cluster.akubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))

    async def cached() -> bool:
        return all(caches.informer(r).get(kube.ObjectKey(namespace, n)) is not None
                   for r, n in ((kube.METRIC_TEMPLATES, "up"), (kube.METRIC_TEMPLATES, "vm"),
                                (kube.METRIC_TEMPLATES, "down"), (kube.ALERT_PROVIDERS, "chat")))

    await eventually(cached, within=10, what="the informers to see the objects")
    store = kube.ObjectStore(counted_client, caches=caches)
    conditions = ConditionWriter(store=store)
    settings = Settings(metrics={"server": prometheus.url}, mesh={"provider": "kubernetes"})
    analyzer = ReportingAnalyzer(
        conditions=conditions, templates=caches.informer(kube.METRIC_TEMPLATES),
        secrets=caches.informer(kube.SECRETS), settings=settings,
        telemetry=Recorder(process_collectors=False))
    alerter = Alerter(settings=settings, providers=caches.informer(kube.ALERT_PROVIDERS).get,
                      secrets=caches.informer(kube.SECRETS).get,
                      on_delivery=conditions.delivery)

    async def read(resource: kube.Resource, name: str) -> dict[str, Any]:
        return dict(await counted_client.get(resource, name, namespace=namespace))

    try:
        # A query answered: the installed template's provider answered.
        outcome = await analyzer.run(canary(namespace, "up"))
        assert outcome.passed, outcome.failure
        up = await read(kube.METRIC_TEMPLATES, "up")
        assert summary(up, "Answered") == ("True", "ProviderAnswered")
        answered = condition(up, "Answered")
        assert answered is not None
        assert answered["observedGeneration"] == up["metadata"]["generation"]

        # The availability check (initialisation, start of a run) reports before any traffic.
        problems = await analyzer.check_providers(canary(namespace, "up", "vm", "down"))
        assert len(problems) == 2, problems
        vm = await read(kube.METRIC_TEMPLATES, "vm")
        assert summary(vm, "Answered") == ("False", "ProviderNotInstalled")
        vm_answered = condition(vm, "Answered")
        assert vm_answered is not None
        assert "victoriametrics" in vm_answered["message"]
        assert f"installed: {', '.join(plugins.metrics.names())}" in vm_answered["message"]
        down = await read(kube.METRIC_TEMPLATES, "down")
        assert summary(down, "Answered") == ("False", "ProviderUnavailable")

        # An alert through a provider whose Secret is missing.
        alerting = canary(namespace, "up", alert="chat")
        await alerter.alert(alerting, "New revision detected")
        assert await alerter.flush(20)
        chat = await read(kube.ALERT_PROVIDERS, "chat")
        assert summary(chat, "SecretValid") == ("False", "SecretNotFound")
        assert summary(chat, "Delivered") == ("False", "SecretNotFound")
        delivered = condition(chat, "Delivered")
        assert delivered is not None
        assert delivered["message"] == f"Secret {namespace}/missing not found"

        assert await status_patches(cluster, counted_client, namespace, since=since) == {
            "metrictemplates": 3, "alertproviders": 1}
        versions = {name: (await read(kube.METRIC_TEMPLATES, name))["metadata"]
                    ["resourceVersion"] for name in ("up", "vm", "down")}

        # The same outcomes again: the same conditions, nothing written.
        assert (await analyzer.run(canary(namespace, "up"))).passed
        await analyzer.check_providers(canary(namespace, "up", "vm", "down"))
        await alerter.alert(alerting, "New revision detected")
        assert await alerter.flush(20)
        assert await status_patches(cluster, counted_client, namespace, since=since) == {
            "metrictemplates": 3, "alertproviders": 1}
        for name, version in versions.items():
            now = (await read(kube.METRIC_TEMPLATES, name))["metadata"]["resourceVersion"]
            assert now == version, f"{name} written again"
    finally:
        await alerter.aclose()
        await analyzer.aclose()




async def test_the_controller_marks_an_unreachable_template_before_any_traffic_moves(
        scenario: Scenario) -> None:
    await scenario.start_controller("-mesh-provider=istio")
    offline = metric_template("offline", "prometheus", f"http://127.0.0.1:{free_port()}")
    istio_canary = scenario_canary("podinfo", provider="istio", analysis={
        "interval": "1s", "threshold": 2, "stepWeight": 50, "maxWeight": 50,
        "metrics": [{"name": "errors", "templateRef": {"name": "offline"},
                     "thresholdRange": {"max": 5}, "interval": "30s"}],
    })
    await scenario.apply(offline, deployment("podinfo", image="podinfo:6.0.0"), istio_canary)
    status = await scenario.wait_phase("podinfo", "Initialized", within=60)
    assert int(status.get("canaryWeight") or 0) == 0

    # The initialisation check found it; no run has started, so no traffic has moved. What a
    # user would run:
    await scenario.kubectl("wait", "metrictemplate/offline", "--for=condition=Answered=false",
                           "--timeout=30s")
    template = await scenario.get("metrictemplate", "offline")
    assert template is not None
    assert summary(template, "Answered") == ("False", "ProviderUnavailable")
    assert summary(template, "Ready") == ("True", "ProviderInstalled")
    answered = condition(template, "Answered")
    assert answered is not None
    assert f"prometheus in metric template offline.{scenario.namespace} not available" in (
        answered["message"])
