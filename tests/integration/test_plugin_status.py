"""A MetricTemplate or AlertProvider says in its own status whether its type is installed.

The CRDs accept any metrics provider type and alert type (the plugin families are open); the
controller writes a ``Ready`` condition, False with the installed names when no plugin serves
the type, and writes it only when it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from e2e.cluster.localcluster import LocalCluster
from e2e.cluster.pytest_plugin import eventually
from e2e.processes import ControllerProcess
from flaggerpy import kube, plugins
from flaggerpy.canary import plugin_status
from flaggerpy.kube import ObjectKey
from flaggerpy.runtime.informer import SharedInformerFactory

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]

METRICS = ", ".join(plugins.metrics.names())
NOTIFIERS = ", ".join(plugins.notifiers.names())


def metric_template(name: str, type_: str) -> dict[str, Any]:
    return {"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": name},
            "spec": {"provider": {"type": type_, "address": "http://metrics.example:8428"},
                     "query": "vector(1)"}}


def alert_provider(name: str, type_: str) -> dict[str, Any]:
    return {"apiVersion": "flagger.app/v1beta1", "kind": "AlertProvider",
            "metadata": {"name": name},
            "spec": {"type": type_, "address": "https://chat.example/hooks/abc"}}


OBJECTS = [
    metric_template("vm", "victoriametrics"), metric_template("prom", "prometheus"),
    alert_provider("mm", "mattermost"), alert_provider("chat", "slack"),
]
EXPECTED = {  # (kind, name): (status, reason, message)
    ("metrictemplate", "vm"): (
        "False", "ProviderNotInstalled",
        f'metrics provider type "victoriametrics" is not installed; installed: {METRICS}'),
    ("metrictemplate", "prom"): (
        "True", "ProviderInstalled", 'metrics provider type "prometheus" is installed'),
    ("alertprovider", "mm"): (
        "False", "ProviderNotInstalled",
        f'alert provider type "mattermost" is not installed; installed: {NOTIFIERS}'),
    ("alertprovider", "chat"): (
        "True", "ProviderInstalled", 'alert provider type "slack" is installed'),
}


async def apply(cluster: LocalCluster, namespace: str, *objects: dict[str, Any]) -> None:
    body = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    await cluster.akubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))


async def get(cluster: LocalCluster, namespace: str, kind: str, name: str) -> dict[str, Any]:
    result = await cluster.akubectl("get", kind, name, "-n", namespace, "-o", "json")
    obj: dict[str, Any] = json.loads(result.stdout)
    return obj


def ready(obj: dict[str, Any]) -> dict[str, Any] | None:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), None)


def summary(condition: dict[str, Any] | None) -> tuple[str, str, str] | None:
    if condition is None:
        return None
    return condition["status"], condition["reason"], condition["message"]


@contextlib.asynccontextmanager
async def running(factory: SharedInformerFactory) -> AsyncIterator[SharedInformerFactory]:
    task = asyncio.create_task(factory.start())
    try:
        yield factory
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_controller_marks_each_template_and_provider(
        cluster: LocalCluster, namespace: str, processes: list[ControllerProcess]) -> None:
    # Third-party names pass the CRDs; the Canary naming an uninstalled router fails with the
    # installed routers listed.
    canary = {
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo"},
        "spec": {"provider": "acme-mesh",
                 "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "service": {"port": 80},
                 "analysis": {"interval": "10s", "threshold": 2, "stepWeight": 10}},
    }
    await apply(cluster, namespace, *OBJECTS, canary)
    controller = ControllerProcess(kubeconfig=cluster.kubeconfig,
                                   args=[f"-namespace={namespace}"])
    processes.append(controller.start())

    async def all_marked() -> bool:
        for kind, name in EXPECTED:
            if ready(await get(cluster, namespace, kind, name)) is None:
                return False
        return True

    await eventually(all_marked, within=30, what="a Ready condition on every object")
    for (kind, name), expected in EXPECTED.items():
        assert summary(ready(await get(cluster, namespace, kind, name))) == expected, name

    async def canary_failed() -> bool:
        status = (await get(cluster, namespace, "canary", "podinfo")).get("status") or {}
        return status.get("phase") == "Failed"

    await eventually(canary_failed, within=30, what="the Canary with acme-mesh to fail")
    [condition] = (await get(cluster, namespace, "canary", "podinfo"))["status"]["conditions"]
    routers = ", ".join(plugins.routers.names())
    assert f"'acme-mesh'; installed: {routers}" in condition["message"]

    # Fixing the type is seen at once (a watch event), not at the next resync.
    await apply(cluster, namespace, metric_template("vm", "prometheus"))

    async def fixed() -> bool:
        condition = ready(await get(cluster, namespace, "metrictemplate", "vm"))
        return condition is not None and condition["status"] == "True"

    await eventually(fixed, within=10, what="the fixed template to become Ready")


async def test_the_condition_is_written_only_when_it_changes(
        api_client: ApiClient, cluster: LocalCluster, namespace: str) -> None:
    await apply(cluster, namespace, *OBJECTS)
    client = kube.KubeClient(api_client)
    factory = SharedInformerFactory(client, namespace=namespace)
    store = kube.ObjectStore(client, caches=factory)
    reconcilers = {
        "metrictemplate": (plugin_status.PluginStatusReconciler(
            plugin_status.METRIC_TEMPLATES, store=store), kube.METRIC_TEMPLATES),
        "alertprovider": (plugin_status.PluginStatusReconciler(
            plugin_status.ALERT_PROVIDERS, store=store), kube.ALERT_PROVIDERS),
    }

    async def reconcile_all() -> None:
        for kind, name in EXPECTED:
            await reconcilers[kind][0].reconcile(ObjectKey(namespace, name))

    async with running(factory):
        await reconcile_all()
        versions: dict[tuple[str, str], str] = {}
        for kind, name in EXPECTED:
            obj = await client.get(reconcilers[kind][1], name, namespace=namespace)
            assert summary(ready(obj)) == EXPECTED[(kind, name)]
            versions[(kind, name)] = kube.resource_version(obj)

        async def delivered() -> bool:
            return all(
                kube.resource_version(factory.informer(reconcilers[kind][1]).get(
                    ObjectKey(namespace, name)) or {}) == version
                for (kind, name), version in versions.items())

        # Again at once (the store overlays our writes), then from the cache alone once the
        # watch has delivered them: nothing to write either time.
        await reconcile_all()
        await eventually(delivered, within=10, what="the informers to see the writes")
        await reconcile_all()
        for (kind, name), version in versions.items():
            obj = await client.get(reconcilers[kind][1], name, namespace=namespace)
            assert kube.resource_version(obj) == version, f"{kind}/{name} written again"

        # A changed type moves the condition; its transition time moves only with its status.
        reconciler, _ = reconcilers["alertprovider"]

        async def retyped(type_: str) -> dict[str, Any] | None:
            await apply(cluster, namespace, alert_provider("chat", type_))

            async def seen() -> bool:
                obj = factory.informer(kube.ALERT_PROVIDERS).get(ObjectKey(namespace, "chat"))
                return obj is not None and obj["spec"]["type"] == type_

            await eventually(seen, within=10, what=f"the informer to see type {type_}")
            await reconciler.reconcile(ObjectKey(namespace, "chat"))
            return ready(await client.get(kube.ALERT_PROVIDERS, "chat", namespace=namespace))

        first = ready(await client.get(kube.ALERT_PROVIDERS, "chat", namespace=namespace))
        await asyncio.sleep(1.1)  # condition times have whole seconds
        still_true = await retyped("msteams")
        assert summary(still_true) == (
            "True", "ProviderInstalled", 'alert provider type "msteams" is installed')
        assert first is not None
        assert still_true is not None
        assert still_true["lastTransitionTime"] == first["lastTransitionTime"]
        assert still_true["lastUpdateTime"] > first["lastUpdateTime"]

        await asyncio.sleep(1.1)
        gone = await retyped("pigeon")
        assert summary(gone) == (
            "False", "ProviderNotInstalled",
            f'alert provider type "pigeon" is not installed; installed: {NOTIFIERS}')
        assert gone is not None
        assert gone["lastTransitionTime"] > first["lastTransitionTime"]
