"""Target controllers against the real control plane: primaries that really roll out.

kube-controller-manager runs the Deployment, DaemonSet and ReplicaSet controllers and kwok makes
the pods Ready, so readiness here is the real thing. The controller reads through informers
started by the test, through an object store like the engine's; its own requests carry a user
agent of their own, so the audit log shows exactly what each call cost.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from e2e.cluster import audit
from e2e.cluster.localcluster import LocalCluster
from e2e.cluster.pytest_plugin import eventually
from flaggerpy import kube
from flaggerpy.canary import targets, workloads
from flaggerpy.canary.autoscalers import PrimaryAutoscaler
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.models import Canary, CanaryStatus
from flaggerpy.runtime.informer import SharedInformerFactory
from flaggerpy.settings import Settings

pytestmark = pytest.mark.integration

CACHED = (kube.DEPLOYMENTS, kube.DAEMONSETS, kube.CONFIGMAPS, kube.SECRETS,
          kube.HORIZONTAL_POD_AUTOSCALERS)


@dataclass
class Env:
    cluster: LocalCluster
    namespace: str
    client: kube.KubeClient
    """The controller's client; its user agent is :attr:`user_agent`."""
    user_agent: str
    caches: SharedInformerFactory
    store: kube.ObjectStore
    """What the controllers read and write through: :attr:`client` over :attr:`caches`."""
    settings: Settings

    def controller(self, canary: Canary) -> workloads.WorkloadController:
        return targets.workload_controller(canary, store=self.store, settings=self.settings)

    def cached(self, resource: kube.Resource, name: str) -> dict[str, Any] | None:
        return self.caches.informer(resource).get(ObjectKey(self.namespace, name))

    async def until_cached(self, resource: kube.Resource, name: str,
                           check: Callable[[dict[str, Any]], bool] = lambda _: True) -> None:
        async def seen() -> bool:
            obj = self.cached(resource, name)
            return obj is not None and check(obj)
        await eventually(seen, within=30, what=f"{resource.plural}/{name} in the cache")

    async def get(self, resource: kube.Resource, name: str) -> dict[str, Any]:
        return await self.client.get(resource, name, namespace=self.namespace)

    async def create(self, resource: kube.Resource, body: dict[str, Any]) -> dict[str, Any]:
        body["metadata"]["namespace"] = self.namespace
        return await self.client.create(resource, body)

    async def canary(self, target_kind: str = "Deployment", target: str = "podinfo",
                     **spec: Any) -> Canary:
        body = {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": target, "namespace": self.namespace},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": target_kind, "name": target},
                "service": {"port": 9898},
                "analysis": {"interval": "10s", "threshold": 2, "iterations": 2},
                **spec,
            },
        }
        return Canary.model_validate(await self.client.create(kube.CANARIES, body))

    def requests(self, since: datetime, until: datetime) -> audit.RequestCounts:
        return audit.count_requests(
            self.cluster.audit_log, user_agent=self.user_agent, since=since, until=until)


@pytest.fixture
async def env(cluster: LocalCluster, namespace: str, flagger_crds: None) -> AsyncIterator[Env]:
    token = secrets.token_hex(4)
    user_agent = f"flaggerpy-test-{token}"
    client = await kube.KubeClient.connect(kubeconfig=cluster.kubeconfig, user_agent=user_agent)
    cache_client = await kube.KubeClient.connect(
        kubeconfig=cluster.kubeconfig, user_agent=f"flaggerpy-cache-{token}")
    caches = SharedInformerFactory(cache_client, namespace=namespace)
    for resource in CACHED:
        caches.informer(resource)
    task = asyncio.create_task(caches.start())
    try:
        async with asyncio.timeout(30):
            await caches.wait_synced()
        yield Env(cluster=cluster, namespace=namespace, client=client, user_agent=user_agent,
                  caches=caches, store=kube.ObjectStore(client, caches=caches),
                  settings=Settings())
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.aclose()
        await cache_client.aclose()


def podinfo(name: str = "podinfo", *, replicas: int = 2, image: str = "podinfo:6.0.0",
            kind: str = "Deployment", **spec: Any) -> dict[str, Any]:
    """A target that uses a ConfigMap (envFrom, volume) and a Secret (env), like Flagger's e2e."""
    labels = {"app": name}
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "labels": {**labels, "app.kubernetes.io/part-of": "test"},
                     "annotations": {"kustomize.toolkit.fluxcd.io/checksum": "x",
                                     "note": "copied"}},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{
                        "name": "podinfod",
                        "image": image,
                        "ports": [{"name": "http", "containerPort": 9898}],
                        "envFrom": [{"configMapRef": {"name": f"{name}-config"}}],
                        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {
                            "name": f"{name}-secret", "key": "token"}}}],
                    }],
                    "volumes": [{"name": "config", "configMap": {"name": f"{name}-config"}}],
                },
            },
            **spec,
        },
    }
    if kind == "Deployment":
        body["spec"]["replicas"] = replicas
    return body


async def create_podinfo(env: Env, name: str = "podinfo", **kwargs: Any) -> None:
    await env.create(kube.CONFIGMAPS, {"metadata": {"name": f"{name}-config"},
                                       "data": {"color": "blue"}})
    await env.create(kube.SECRETS, {"metadata": {"name": f"{name}-secret"}, "type": "Opaque",
                                    "data": {"token": base64.b64encode(b"s3cr3t").decode()}})
    body = podinfo(name, **kwargs)
    resource = kube.DEPLOYMENTS if body["kind"] == "Deployment" else kube.DAEMONSETS
    await env.create(resource, body)
    await env.until_cached(resource, name)
    await env.until_cached(kube.CONFIGMAPS, f"{name}-config")
    await env.until_cached(kube.SECRETS, f"{name}-secret")


async def until_ready(check: Callable[[], Any], what: str, within: float = 60) -> None:
    async def ready() -> bool:
        try:
            await check()
        except workloads.NotReadyError:
            return False
        return True
    await eventually(ready, within=within, what=what)


async def initialized(env: Env, canary: Canary) -> workloads.WorkloadController:
    """Initializes as the engine does and records the status it would write."""
    controller = env.controller(canary)
    await controller.initialize(canary, wait_primary_ready=False)
    primary = workloads.primary_name(canary.spec.target_ref.name)
    resource = kube.DEPLOYMENTS if canary.spec.target_ref.kind == "Deployment" else kube.DAEMONSETS
    await env.until_cached(resource, primary)
    await until_ready(lambda: controller.initialize(canary, wait_primary_ready=True),
                      "the primary to roll out")
    applied = await controller.target_hash(canary)
    canary.status = CanaryStatus(
        phase="Initialized", last_applied_spec=applied, last_promoted_spec=applied,
        tracked_configs=await controller.tracked_configs(canary),
        last_transition_time=datetime.now(UTC))
    return controller


def container(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]["containers"][0]


# ---------------------------------------------------------------------------------------------


async def test_initialize_creates_the_primary_and_its_configs(env: Env) -> None:
    await create_podinfo(env)
    canary = await env.canary()
    controller = env.controller(canary)
    with pytest.raises(workloads.NotReadyError) as not_ready:
        await controller.initialize(canary, wait_primary_ready=True)
    assert not_ready.value.retriable
    assert not_ready.value.message.startswith(f"podinfo-primary.{env.namespace} not ready: ")

    primary = await env.get(kube.DEPLOYMENTS, "podinfo-primary")
    assert primary["metadata"]["ownerReferences"] == [{
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo",
        "uid": canary.metadata.uid if canary.metadata else None,
        "controller": True, "blockOwnerDeletion": True}]
    assert primary["metadata"]["labels"] == {"app": "podinfo-primary"}
    assert primary["metadata"]["annotations"]["note"] == "copied"
    assert "kustomize.toolkit.fluxcd.io/checksum" not in primary["metadata"]["annotations"]
    assert primary["spec"]["replicas"] == 2
    assert primary["spec"]["selector"] == {"matchLabels": {"app": "podinfo-primary"}}
    assert primary["spec"]["template"]["metadata"]["labels"] == {"app": "podinfo-primary"}
    assert "flagger-id" in primary["spec"]["template"]["metadata"]["annotations"]
    spec = primary["spec"]["template"]["spec"]
    assert spec["containers"][0]["envFrom"] == [
        {"configMapRef": {"name": "podinfo-config-primary"}}]
    assert spec["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"] == (
        "podinfo-secret-primary")
    assert spec["volumes"][0]["configMap"]["name"] == "podinfo-config-primary"

    config = await env.get(kube.CONFIGMAPS, "podinfo-config-primary")
    assert config["data"] == {"color": "blue"}
    assert config["metadata"]["ownerReferences"] == primary["metadata"]["ownerReferences"]
    secret = await env.get(kube.SECRETS, "podinfo-secret-primary")
    assert base64.b64decode(secret["data"]["token"]) == b"s3cr3t"
    assert secret["type"] == "Opaque"

    await until_ready(lambda: controller.is_primary_ready(canary), "the primary to roll out")
    await controller.initialize(canary, wait_primary_ready=True)
    metadata = await controller.get_metadata(canary)
    assert metadata == workloads.WorkloadMetadata(label="app", label_value="podinfo", ports={})


async def test_initialize_twice_at_once_creates_one_primary(env: Env) -> None:
    """Both calls see an empty cache and create; the loser of each race reads, not fails."""
    await create_podinfo(env)
    canary = await env.canary()
    controller = env.controller(canary)
    await asyncio.gather(controller.initialize(canary, wait_primary_ready=False),
                         controller.initialize(canary, wait_primary_ready=False))
    listed = await env.client.list(kube.DEPLOYMENTS, namespace=env.namespace)
    assert sorted(kube.key_of(d).name for d in listed.items) == ["podinfo", "podinfo-primary"]


async def test_promote_copies_a_new_image_and_a_changed_configmap(env: Env) -> None:
    await create_podinfo(env)
    canary = await env.canary()
    controller = await initialized(env, canary)
    assert canary.status is not None
    assert canary.status.tracked_configs is not None
    assert set(canary.status.tracked_configs) == {"configmap/podinfo-config",
                                                  "secret/podinfo-secret"}
    assert not await controller.has_target_changed(canary)
    assert not await controller.have_dependencies_changed(canary)
    before = await env.get(kube.DEPLOYMENTS, "podinfo-primary")

    await env.client.patch(kube.DEPLOYMENTS, "podinfo", {"spec": {"template": {"spec": {
        "containers": [{"name": "podinfod", "image": "podinfo:6.0.1"}]}}}},
        namespace=env.namespace, patch_type=kube.PatchType.STRATEGIC)
    await env.until_cached(kube.DEPLOYMENTS, "podinfo",
                           lambda d: container(d)["image"] == "podinfo:6.0.1")
    assert await controller.has_target_changed(canary)
    await env.client.patch(kube.CONFIGMAPS, "podinfo-config", {"data": {"color": "green"}},
                           namespace=env.namespace)
    await env.until_cached(kube.CONFIGMAPS, "podinfo-config",
                           lambda c: c["data"]["color"] == "green")
    assert await controller.have_dependencies_changed(canary)
    assert (await env.get(kube.CONFIGMAPS, "podinfo-config-primary"))["data"] == {
        "color": "blue"}, "the primary keeps its configuration until promotion"

    await controller.promote(canary)
    primary = await env.get(kube.DEPLOYMENTS, "podinfo-primary")
    assert container(primary)["image"] == "podinfo:6.0.1"
    assert container(primary)["envFrom"] == [{"configMapRef": {"name": "podinfo-config-primary"}}]
    old_id = before["spec"]["template"]["metadata"]["annotations"]["flagger-id"]
    assert primary["spec"]["template"]["metadata"]["annotations"]["flagger-id"] != old_id
    assert (await env.get(kube.CONFIGMAPS, "podinfo-config-primary"))["data"] == {
        "color": "green"}
    # The store shows the promotion at once, watch or no watch: the rollout it started is not
    # mistaken for the finished one of the previous revision.
    seen = await env.store.get(kube.DEPLOYMENTS, namespace=env.namespace, name="podinfo-primary")
    assert seen is not None
    assert container(dict(seen))["image"] == "podinfo:6.0.1"
    with pytest.raises(workloads.NotReadyError):
        await controller.is_primary_ready(canary)
    await until_ready(lambda: controller.is_primary_ready(canary), "the promoted primary")

    # The engine records the promoted revision; nothing is new any more.
    applied = await controller.target_hash(canary)
    canary.status.last_applied_spec = canary.status.last_promoted_spec = applied
    canary.status.tracked_configs = await controller.tracked_configs(canary)
    assert not await controller.has_target_changed(canary)
    assert not await controller.have_dependencies_changed(canary)

    # A second promotion of the same content (a retried tick) writes nothing.
    await env.until_cached(kube.CONFIGMAPS, "podinfo-config-primary",
                           lambda c: c["data"]["color"] == "green")
    since = datetime.now(UTC)
    await controller.promote(canary)
    counts = env.requests(since, datetime.now(UTC))
    assert counts.total == 0, counts.by_resource


async def test_reverting_the_target_to_the_promoted_spec_is_no_new_revision(env: Env) -> None:
    await create_podinfo(env)
    canary = await env.canary()
    controller = await initialized(env, canary)
    assert canary.status is not None
    await env.client.patch(kube.DEPLOYMENTS, "podinfo", {"spec": {"template": {"metadata": {
        "annotations": {"revision": "2"}}}}}, namespace=env.namespace)
    await env.until_cached(kube.DEPLOYMENTS, "podinfo", lambda d: "annotations" in d["spec"][
        "template"]["metadata"])
    assert await controller.has_target_changed(canary)
    canary.status.last_applied_spec = await controller.target_hash(canary)  # a run started
    await env.client.patch(kube.DEPLOYMENTS, "podinfo", {"spec": {"template": {"metadata": {
        "annotations": None}}}}, namespace=env.namespace)
    await env.until_cached(kube.DEPLOYMENTS, "podinfo", lambda d: "annotations" not in d[
        "spec"]["template"]["metadata"])
    assert not await controller.has_target_changed(canary)


async def test_a_canary_moved_from_flagger_keeps_its_promoted_revision(env: Env) -> None:
    """Flagger's spec hash cannot be recomputed; the primary's template stands in for it."""
    await create_podinfo(env)
    canary = await env.canary()
    controller = await initialized(env, canary)
    assert canary.status is not None
    canary.status.last_applied_spec = canary.status.last_promoted_spec = "5b8d9f7c4c"
    since = datetime.now(UTC)
    assert not await controller.has_target_changed(canary)
    assert env.requests(since, datetime.now(UTC)).total == 0

    await env.client.patch(kube.DEPLOYMENTS, "podinfo", {"spec": {"template": {"spec": {
        "containers": [{"name": "podinfod", "image": "podinfo:6.0.1"}]}}}},
        namespace=env.namespace, patch_type=kube.PatchType.STRATEGIC)
    await env.until_cached(kube.DEPLOYMENTS, "podinfo",
                           lambda d: container(d)["image"] == "podinfo:6.0.1")
    assert await controller.has_target_changed(canary)


async def test_scale_to_zero_and_back(env: Env) -> None:
    await create_podinfo(env, replicas=3)
    canary = await env.canary()
    controller = await initialized(env, canary)

    await controller.scale_to_zero(canary)
    assert (await env.get(kube.DEPLOYMENTS, "podinfo"))["spec"]["replicas"] == 0
    await env.until_cached(kube.DEPLOYMENTS, "podinfo", lambda d: d["spec"]["replicas"] == 0)
    since = datetime.now(UTC)
    await controller.scale_to_zero(canary)
    assert env.requests(since, datetime.now(UTC)).total == 0, "already at zero: no write"
    assert not await controller.has_target_changed(canary), "replicas are not the revision"

    await controller.scale_from_zero(canary)
    assert (await env.get(kube.DEPLOYMENTS, "podinfo"))["spec"]["replicas"] == 3, (
        "the primary's replicas")
    await env.until_cached(kube.DEPLOYMENTS, "podinfo", lambda d: d["spec"]["replicas"] == 3)
    await until_ready(lambda: controller.is_canary_ready(canary), "the canary to scale up")

    await controller.scale_to_zero(canary)
    await env.until_cached(kube.DEPLOYMENTS, "podinfo", lambda d: d["spec"]["replicas"] == 0)
    await controller.finalize(canary)
    assert (await env.get(kube.DEPLOYMENTS, "podinfo"))["spec"]["replicas"] == 3


async def test_steady_state_calls_make_no_requests(env: Env) -> None:
    await create_podinfo(env)
    canary = await env.canary()
    controller = await initialized(env, canary)
    await until_ready(lambda: controller.is_canary_ready(canary), "the target")
    await env.until_cached(kube.CONFIGMAPS, "podinfo-config-primary")
    await env.until_cached(kube.SECRETS, "podinfo-secret-primary")

    since = datetime.now(UTC)
    for _ in range(3):
        await controller.get_metadata(canary)
        await controller.initialize(canary, wait_primary_ready=True)
        await controller.is_primary_ready(canary)
        await controller.is_canary_ready(canary)
        assert not await controller.has_target_changed(canary)
        assert not await controller.have_dependencies_changed(canary)
        await controller.target_hash(canary)
        await controller.tracked_configs(canary)
        await controller.promote(canary)
    until = datetime.now(UTC)
    counts = env.requests(since, until)
    assert counts.total == 0, counts.by_resource

    # The same window technique does see this client's requests.
    since = datetime.now(UTC)
    await controller.scale_to_zero(canary)
    counts = env.requests(since, datetime.now(UTC))
    assert counts.by_resource == {"patch deployments": 1}


async def test_daemonset_target(env: Env) -> None:
    await create_podinfo(env, kind="DaemonSet")
    canary = await env.canary(target_kind="DaemonSet")
    controller = await initialized(env, canary)
    primary = await env.get(kube.DAEMONSETS, "podinfo-primary")
    assert primary["spec"]["selector"] == {"matchLabels": {"app": "podinfo-primary"}}
    assert primary["status"]["numberAvailable"] == 2, "one pod per kwok node"

    await controller.scale_to_zero(canary)
    await env.until_cached(kube.DAEMONSETS, "podinfo", lambda d: d["spec"]["template"]["spec"].get(
        "nodeSelector") == {"flagger.app/scale-to-zero": "true"})
    assert not await controller.has_target_changed(canary), "the selector is not the revision"

    async def no_pods() -> bool:
        status = (await env.get(kube.DAEMONSETS, "podinfo")).get("status") or {}
        return status.get("desiredNumberScheduled") == 0 and not status.get("numberAvailable")
    await eventually(no_pods, what="the canary DaemonSet to have no pods")

    await controller.scale_from_zero(canary)
    target = await env.get(kube.DAEMONSETS, "podinfo")
    assert "nodeSelector" not in target["spec"]["template"]["spec"]
    await env.until_cached(kube.DAEMONSETS, "podinfo",
                           lambda d: "nodeSelector" not in d["spec"]["template"]["spec"])
    await until_ready(lambda: controller.is_canary_ready(canary), "the canary DaemonSet")

    await env.client.patch(kube.DAEMONSETS, "podinfo", {"spec": {"template": {"spec": {
        "containers": [{"name": "podinfod", "image": "podinfo:6.0.1"}]}}}},
        namespace=env.namespace, patch_type=kube.PatchType.STRATEGIC)
    await env.until_cached(kube.DAEMONSETS, "podinfo",
                           lambda d: container(d)["image"] == "podinfo:6.0.1")
    assert await controller.has_target_changed(canary)
    await controller.promote(canary)
    primary = await env.get(kube.DAEMONSETS, "podinfo-primary")
    assert container(primary)["image"] == "podinfo:6.0.1"
    assert "nodeSelector" not in primary["spec"]["template"]["spec"]
    await env.until_cached(kube.DAEMONSETS, "podinfo-primary",
                           lambda d: container(d)["image"] == "podinfo:6.0.1")
    await until_ready(lambda: controller.is_primary_ready(canary), "the promoted DaemonSet")

    await controller.scale_to_zero(canary)
    await env.until_cached(kube.DAEMONSETS, "podinfo", lambda d: "nodeSelector" in d["spec"][
        "template"]["spec"])
    await controller.finalize(canary)
    assert "nodeSelector" not in (await env.get(kube.DAEMONSETS, "podinfo"))["spec"]["template"][
        "spec"]


async def test_daemonset_must_roll_out_with_rolling_update(env: Env) -> None:
    await create_podinfo(env, name="ondelete", kind="DaemonSet",
                         updateStrategy={"type": "OnDelete"})
    canary = await env.canary(target_kind="DaemonSet", target="ondelete")
    with pytest.raises(workloads.WorkloadError) as error:
        await env.controller(canary).initialize(canary, wait_primary_ready=False)
    assert str(error.value) == (f"daemonset ondelete.{env.namespace} must have RollingUpdate"
                                " strategy but have OnDelete")


async def test_target_problems_are_reported_in_flaggers_words(env: Env) -> None:
    canary = await env.canary(target="missing")
    with pytest.raises(workloads.TargetNotFoundError) as missing:
        await env.controller(canary).get_metadata(canary)
    assert str(missing.value) == (f"deployment missing.{env.namespace} get query error:"
                                  ' deployments.apps "missing" not found')

    body = podinfo("nolabel")
    body["spec"]["selector"] = {"matchLabels": {"role": "web"}}
    body["spec"]["template"]["metadata"]["labels"] = {"role": "web"}
    await env.create(kube.DEPLOYMENTS, body)
    await env.until_cached(kube.DEPLOYMENTS, "nolabel")
    canary = await env.canary(target="nolabel")
    with pytest.raises(workloads.WorkloadError) as no_label:
        await env.controller(canary).get_metadata(canary)
    assert str(no_label.value) == (
        f"deployment nolabel.{env.namespace} spec.selector.matchLabels must contain one of"
        " [app name app.kubernetes.io/name]")

    await env.create(kube.DEPLOYMENTS, podinfo("noconfig"))
    await env.until_cached(kube.DEPLOYMENTS, "noconfig")
    canary = await env.canary(target="noconfig")
    with pytest.raises(workloads.WorkloadError) as no_config:
        await env.controller(canary).initialize(canary, wait_primary_ready=False)
    assert str(no_config.value) == (f"configmap noconfig-config.{env.namespace} get query"
                                    ' error: configmaps "noconfig-config" not found')


async def test_progress_deadline_is_not_retriable(env: Env) -> None:
    """A target that cannot be scheduled anywhere exceeds its progressDeadlineSeconds."""
    await create_podinfo(env, name="stuck", progressDeadlineSeconds=2)
    canary = await env.canary(target="stuck")
    controller = env.controller(canary)
    await controller.initialize(canary, wait_primary_ready=False)
    await env.client.patch(kube.DEPLOYMENTS, "stuck", {"spec": {"template": {"spec": {
        "nodeSelector": {"flaggerpy.dev/no-such-node": "true"}}}}}, namespace=env.namespace)

    failures: list[workloads.NotReadyError] = []

    async def deadline_exceeded() -> bool:
        try:
            await controller.is_canary_ready(canary)
        except workloads.NotReadyError as error:
            failures.append(error)
            return not error.retriable
        return False
    await eventually(deadline_exceeded, within=60, what="ProgressDeadlineExceeded")
    assert failures[-1].message == (
        f'canary deployment stuck.{env.namespace} not ready: deployment "stuck" exceeded its'
        " progress deadline")
    assert failures[0].retriable, "waiting was retriable before the deadline"


async def test_primary_hpa_is_created_and_kept_in_sync(env: Env) -> None:
    await create_podinfo(env, name="scaled")
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "scaled", "labels": {"app": "scaled"}},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "scaled"},
            "minReplicas": 2,
            "maxReplicas": 4,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 99}}}],
        },
    }
    await env.create(kube.HORIZONTAL_POD_AUTOSCALERS, hpa)
    await env.until_cached(kube.HORIZONTAL_POD_AUTOSCALERS, "scaled")
    canary = await env.canary(target="scaled", autoscalerRef={
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "scaled",
        "primaryScalerReplicas": {"maxReplicas": 6}})
    autoscaler = PrimaryAutoscaler(store=env.store, settings=env.settings)

    await autoscaler.reconcile(canary, init=True)
    primary = await env.get(kube.HORIZONTAL_POD_AUTOSCALERS, "scaled-primary")
    assert primary["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "scaled-primary"}
    assert (primary["spec"]["minReplicas"], primary["spec"]["maxReplicas"]) == (2, 6)
    assert primary["spec"]["metrics"] == hpa["spec"]["metrics"]
    assert primary["metadata"]["labels"] == {"app": "scaled"}
    assert primary["metadata"]["ownerReferences"][0]["name"] == "scaled"
    await env.until_cached(kube.HORIZONTAL_POD_AUTOSCALERS, "scaled-primary")

    since = datetime.now(UTC)
    await autoscaler.reconcile(canary, init=True)
    await autoscaler.reconcile(canary, init=False)
    assert env.requests(since, datetime.now(UTC)).total == 0, "in step: no request"

    await env.client.patch(kube.HORIZONTAL_POD_AUTOSCALERS, "scaled", {"spec": {
        "minReplicas": 3, "metrics": [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]}},
        namespace=env.namespace)
    await env.until_cached(kube.HORIZONTAL_POD_AUTOSCALERS, "scaled",
                           lambda h: h["spec"]["minReplicas"] == 3)
    await autoscaler.reconcile(canary, init=True)
    assert (await env.get(kube.HORIZONTAL_POD_AUTOSCALERS, "scaled-primary"))["spec"][
        "minReplicas"] == 2, "init only creates"
    await autoscaler.reconcile(canary, init=False)
    primary = await env.get(kube.HORIZONTAL_POD_AUTOSCALERS, "scaled-primary")
    assert (primary["spec"]["minReplicas"], primary["spec"]["maxReplicas"]) == (3, 6)
    target = primary["spec"]["metrics"][0]["resource"]["target"]
    assert target["averageUtilization"] == 50

    await env.until_cached(kube.HORIZONTAL_POD_AUTOSCALERS, "scaled-primary",
                           lambda h: h["spec"]["minReplicas"] == 3)
    since = datetime.now(UTC)
    await autoscaler.reconcile(canary, init=False)
    assert env.requests(since, datetime.now(UTC)).total == 0, "in step again"

    # With an HPA, a canary scaled to zero comes back at the HPA's minimum.
    controller = env.controller(canary)
    await controller.scale_to_zero(canary)
    await env.until_cached(kube.DEPLOYMENTS, "scaled", lambda d: d["spec"]["replicas"] == 0)
    await controller.scale_from_zero(canary)
    assert (await env.get(kube.DEPLOYMENTS, "scaled"))["spec"]["replicas"] == 3
