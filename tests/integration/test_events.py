"""Events as kubectl shows them, with repeats folded into one Event."""

from __future__ import annotations

import pytest
from kubernetes_asyncio.client import ApiClient
from structlog.testing import capture_logs

from e2e.cluster.localcluster import LocalCluster
from flaggerpy import kube
from flaggerpy.runtime import events

pytestmark = pytest.mark.integration


@pytest.fixture
def client(api_client: ApiClient) -> kube.KubeClient:
    return kube.KubeClient(api_client)


async def events_about(client: kube.KubeClient, namespace: str, name: str) -> list[kube.JsonObject]:
    listed = await client.list(kube.EVENTS, namespace=namespace,
                               field_selector=f"involvedObject.name={name}")
    return listed.items


async def test_identical_events_are_counted_not_repeated(
        client: kube.KubeClient, cluster: LocalCluster, namespace: str) -> None:
    target = await client.create(kube.CONFIGMAPS, {"metadata": {"name": "podinfo",
                                                               "namespace": namespace}})
    recorder = events.EventRecorder(client)
    with capture_logs() as logs:
        await recorder.warning(target, "Halt podinfo.test advancement success rate 90.00% < 99%")
        await recorder.warning(target, "Halt podinfo.test advancement success rate 90.00% < 99%")
        await recorder.normal(target, "Starting canary analysis for podinfo.test")
    assert [e["event"] for e in logs] == ["event_recorded", "event_counted", "event_recorded"]

    recorded = await events_about(client, namespace, "podinfo")
    by_message = {e["message"]: e for e in recorded}
    assert len(recorded) == 2
    halt = by_message["Halt podinfo.test advancement success rate 90.00% < 99%"]
    assert halt["count"] == 2
    assert halt["type"] == "Warning"
    assert halt["reason"] == "Synced"
    assert halt["source"]["component"] == "flagger"
    assert halt["involvedObject"]["uid"] == target["metadata"]["uid"]
    assert halt["involvedObject"]["kind"] == "ConfigMap"
    assert halt["lastTimestamp"] >= halt["firstTimestamp"]
    assert by_message["Starting canary analysis for podinfo.test"]["type"] == "Normal"

    described = (await cluster.akubectl("describe", "configmap", "podinfo", "-n", namespace)).stdout
    assert "Halt podinfo.test advancement" in described
    assert "(x2 over" in described
    assert "flagger" in described


async def test_cluster_scoped_objects_get_events_in_default(client: kube.KubeClient,
                                                            namespace: str) -> None:
    target = await client.get(kube.NAMESPACES, namespace)
    await events.EventRecorder(client).normal(target, "namespace noticed")
    recorded = await events_about(client, "default", namespace)
    assert [e["message"] for e in recorded] == ["namespace noticed"]


async def test_recording_never_raises(client: kube.KubeClient, namespace: str) -> None:
    target = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": "x", "namespace": "no-such-namespace-here"}}
    await events.EventRecorder(client).normal(target, "into the void")  # 404: logged only

    fenced = events.EventRecorder(client.fenced(lambda: False))
    ours = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "y", "namespace": namespace}}
    await fenced.warning(ours, "a standby must not write")
    assert await events_about(client, namespace, "y") == []
