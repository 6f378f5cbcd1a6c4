"""The Knative target controller and router against the real API server, with Knative Serving's
upstream CRDs installed and the test-side stand-in for Knative Serving (``e2e/knative_standin.py``)
making Revisions and the Service's status, as the golden capture did.

The controller and the router run with a real ``SharedInformerFactory`` and a client of their
own, so the audit log shows that steady calls make no request and that a weight change is one
write.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from kubernetes_asyncio.client import ApiClient

from e2e.cluster.localcluster import LocalCluster
from e2e.cluster.pytest_plugin import eventually
from e2e.knative_standin import KNATIVE_REVISIONS, KnativeStandIn
from e2e.routers import FrozenCache, requests_between
from flaggerpy import kube
from flaggerpy.canary.knative_services import KnativeServiceController
from flaggerpy.errors import RouterError
from flaggerpy.models.canary import Canary
from flaggerpy.providers.knative import KNATIVE_SERVICES, PRIMARY_REVISION_ANNOTATION, KnativeRouter
from flaggerpy.routing import ProviderContext, Weights
from flaggerpy.runtime.informer import SharedInformerFactory
from flaggerpy.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]

IMAGE = "ghcr.io/stefanprodan/podinfo:6.0.0"


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def admin(api_client: ApiClient) -> kube.KubeClient:
    """What the test itself reads and writes with (not counted)."""
    return kube.KubeClient(api_client, user_agent=f"knative-test-admin/{secrets.token_hex(4)}")


@pytest.fixture
async def standin(admin: kube.KubeClient, namespace: str) -> AsyncIterator[KnativeStandIn]:
    async with KnativeStandIn(admin, namespaces=[namespace]) as running:
        yield running


@pytest.fixture
async def caches(cluster: LocalCluster, namespace: str) -> AsyncIterator[SharedInformerFactory]:
    """A started informer factory scoped to the test namespace, on a connection of its own."""
    watcher = await kube.KubeClient.connect(
        kubeconfig=cluster.kubeconfig, user_agent=f"knative-test-informer/{secrets.token_hex(4)}")
    factory = SharedInformerFactory(watcher, namespace=namespace)
    task = asyncio.create_task(factory.start())
    try:
        yield factory
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await watcher.aclose()


@pytest.fixture
def store(counted_client: kube.KubeClient, caches: SharedInformerFactory) -> kube.ObjectStore:
    return kube.ObjectStore(counted_client, caches=caches)


@pytest.fixture
def router(store: kube.ObjectStore) -> KnativeRouter:
    return KnativeRouter(ctx=ProviderContext(store=store, settings=Settings(),
                                             log=structlog.get_logger("knative")))


@pytest.fixture
def target(store: kube.ObjectStore) -> KnativeServiceController:
    return KnativeServiceController(store=store, settings=Settings())


def knative_service(namespace: str, *, image: str = IMAGE) -> dict[str, Any]:
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": "podinfo", "namespace": namespace},
            "spec": {"template": {"spec": {"containers": [
                {"image": image, "ports": [{"containerPort": 9898}]}]}}}}


def make_canary(namespace: str, *, phase: str | None = None) -> Canary:
    obj: dict[str, Any] = {
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": namespace,
                     "uid": "0f6a2f4e-5b0c-4f0e-9a77-1c2d3e4f5a6b"},
        "spec": {"provider": "knative",
                 "targetRef": {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                               "name": "podinfo"},
                 "service": {"port": 9898},
                 "analysis": {"interval": "10s", "threshold": 5, "stepWeight": 10}},
    }
    if phase is not None:
        obj["status"] = {"phase": phase}
    return Canary.model_validate(obj)


async def settles(check: Callable[[], Awaitable[bool]], what: str) -> None:
    await eventually(check, within=30, what=what)


async def created_with_status(admin: kube.KubeClient, namespace: str) -> None:
    await admin.create(KNATIVE_SERVICES, knative_service(namespace))

    async def has_revision() -> bool:
        live = await admin.get(KNATIVE_SERVICES, "podinfo", namespace=namespace)
        return (live.get("status") or {}).get("latestCreatedRevisionName") == "podinfo-00001"

    await settles(has_revision, "the stand-in to create the first revision")


# -- the tests ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("standin")
async def test_a_run_initialize_route_promote_and_finalize(
        namespace: str, admin: kube.KubeClient, router: KnativeRouter,
        target: KnativeServiceController,
) -> None:
    await created_with_status(admin, namespace)
    canary = make_canary(namespace)
    with pytest.raises(RouterError, match="annotation not found"):
        await router.get_routes(canary)

    await target.initialize(canary, wait_primary_ready=True)
    live = await admin.get(KNATIVE_SERVICES, "podinfo", namespace=namespace)
    assert live["metadata"]["annotations"] == {PRIMARY_REVISION_ANNOTATION: "podinfo-00001"}
    assert live["spec"]["traffic"] == [{"latestRevision": True, "percent": 0},
                                       {"revisionName": "podinfo-00001", "percent": 100}]
    assert "ownerReferences" not in live["metadata"]
    await target.is_primary_ready(canary)
    await router.reconcile(canary)  # the annotation is there: nothing to do

    def routes(weights: Weights) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            try:
                return bool(await router.get_routes(canary) == weights)
            except RouterError:
                return False
        return check

    await settles(routes(Weights(100, 0)), "the initial split read back")

    # A new template: Knative (the stand-in) creates revision 2, the canary.
    first_hash = await target.target_hash(canary)
    await admin.patch(KNATIVE_SERVICES, "podinfo", {"spec": {"template": {"spec": {
        "containers": [{"image": "ghcr.io/stefanprodan/podinfo:6.0.1"}]}}}},
        namespace=namespace)

    async def second_revision() -> bool:
        return await target.target_hash(canary) != first_hash
    await settles(second_revision, "the second revision to be seen")
    await target.is_canary_ready(canary)

    await router.set_routes(canary, Weights(80, 20))
    live = await admin.get(KNATIVE_SERVICES, "podinfo", namespace=namespace)
    assert live["spec"]["traffic"] == [{"latestRevision": True, "percent": 20},
                                       {"revisionName": "podinfo-00001", "percent": 80}]
    await settles(routes(Weights(80, 20)), "the split read back from status.traffic")

    progressing = make_canary(namespace, phase="Progressing")
    await target.promote(progressing)
    live = await admin.get(KNATIVE_SERVICES, "podinfo", namespace=namespace)
    assert live["metadata"]["annotations"] == {PRIMARY_REVISION_ANNOTATION: "podinfo-00002"}
    await target.is_primary_ready(progressing)
    await router.set_routes(progressing, Weights(100, 0))
    live = await admin.get(KNATIVE_SERVICES, "podinfo", namespace=namespace)
    assert live["spec"]["traffic"] == [{"latestRevision": True, "percent": 0},
                                       {"revisionName": "podinfo-00002", "percent": 100}]

    await router.finalize(progressing)
    live = await admin.get(KNATIVE_SERVICES, "podinfo", namespace=namespace)
    assert PRIMARY_REVISION_ANNOTATION not in (live["metadata"].get("annotations") or {})
    assert live["spec"]["traffic"][1] == {"revisionName": "podinfo-00002", "percent": 100}
    # revertOnDeletion done; a reconcile would annotate the latest revision again.
    await router.reconcile(progressing)
    live = await admin.get(KNATIVE_SERVICES, "podinfo", namespace=namespace)
    assert live["metadata"]["annotations"] == {PRIMARY_REVISION_ANNOTATION: "podinfo-00002"}
    revisions = await admin.list(KNATIVE_REVISIONS, namespace=namespace)
    assert sorted(r["metadata"]["name"] for r in revisions.items) == [
        "podinfo-00001", "podinfo-00002"]


@pytest.mark.usefixtures("standin")
async def test_steady_calls_make_no_requests(
        cluster: LocalCluster, namespace: str, admin: kube.KubeClient,
        counted_client: kube.KubeClient, router: KnativeRouter,
        target: KnativeServiceController,
) -> None:
    await created_with_status(admin, namespace)
    canary = make_canary(namespace)
    await target.initialize(canary, wait_primary_ready=True)
    await router.set_routes(canary, Weights(90, 10))

    async def settled() -> bool:
        try:
            return bool(await router.get_routes(canary) == Weights(90, 10))
        except RouterError:
            return False
    await settles(settled, "the split read back from the cache")

    since = datetime.now(UTC)
    running = make_canary(namespace, phase="Progressing")
    for _ in range(3):
        await target.initialize(running, wait_primary_ready=False)
        await target.is_primary_ready(running)
        await target.is_canary_ready(running)
        await target.has_target_changed(running)
        await router.reconcile(running)
        assert await router.get_routes(running) == Weights(90, 10)
        await router.set_routes(running, Weights(90, 10))
    counts = await requests_between(cluster, counted_client, since, namespace)
    assert counts.total == 0, counts.by_resource

    since = datetime.now(UTC)
    await router.set_routes(running, Weights(70, 30))
    counts = await requests_between(cluster, counted_client, since, namespace)
    assert dict(counts.by_resource) == {"update services": 1}


async def test_a_stale_cache_costs_a_retry_never_a_lost_update(
        cluster: LocalCluster, namespace: str, admin: kube.KubeClient,
        counted_client: kube.KubeClient,
) -> None:
    # No stand-in: its status writes would make the retry count vary.
    service = knative_service(namespace)
    service["metadata"]["annotations"] = {PRIMARY_REVISION_ANNOTATION: "podinfo-00001"}
    snapshot = await admin.create(KNATIVE_SERVICES, service)
    edited = json.loads(json.dumps(snapshot))
    edited["metadata"].setdefault("labels", {})["edited"] = "yes"
    await admin.replace(KNATIVE_SERVICES, edited)

    stale = KnativeRouter(ctx=ProviderContext(
        store=kube.ObjectStore(counted_client, caches=FrozenCache(snapshot)),
        settings=Settings(), log=structlog.get_logger("knative")))
    since = datetime.now(UTC)
    await stale.set_routes(make_canary(namespace), Weights(80, 20))
    counts = await requests_between(cluster, counted_client, since, namespace)
    # The conditional update fails (409), the object is read again, rebuilt and written.
    assert dict(counts.by_resource) == {"update services": 2, "get services": 1}
    stored = await admin.get(KNATIVE_SERVICES, "podinfo", namespace=namespace)
    assert stored["spec"]["traffic"] == [{"latestRevision": True, "percent": 20},
                                         {"revisionName": "podinfo-00001", "percent": 80}]
    assert stored["metadata"]["labels"] == {"edited": "yes"}  # the other write survives
