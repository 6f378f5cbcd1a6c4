"""The Skipper router against the real API server: the user's networking.k8s.io/v1 Ingress in, the
canary Ingress ``<ingressRef>-canary`` with Skipper's annotations out, validated and stored by
kube-apiserver, and deleted again by ``finalize``.

The router runs with a real ``SharedInformerFactory`` and a client of its own, so the audit log
shows that steady calls make no request and that a weight change is one write. The Canary is
stored (suspended, so a controller another test runs leaves it alone): its uid owns the canary
Ingress, which the garbage collector would otherwise delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from kubernetes_asyncio.client import ApiClient

from e2e.cluster.localcluster import LocalCluster
from e2e.cluster.pytest_plugin import eventually
from e2e.routers import FrozenCache, requests_between
from flaggerpy import kube
from flaggerpy.errors import RouterError
from flaggerpy.models.canary import Canary
from flaggerpy.providers.skipper import INGRESSES, SkipperRouter, build_canary_ingress
from flaggerpy.routing import ProviderContext, Weights
from flaggerpy.runtime.informer import SharedInformerFactory
from flaggerpy.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]

WEIGHTS = "zalando.org/backend-weights"
PREDICATE = "zalando.org/skipper-predicate"
FILTER = "zalando.org/skipper-filter"
USER_ANNOTATIONS = {FILTER: 'setRequestHeader("X-Source", "skipper")',
                    PREDICATE: 'Header("X-Env", "prod")'}


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def admin(api_client: ApiClient) -> kube.KubeClient:
    """What the test itself reads and writes with (not counted)."""
    return kube.KubeClient(api_client, user_agent=f"skipper-test-admin/{secrets.token_hex(4)}")


@pytest.fixture
async def caches(cluster: LocalCluster, namespace: str) -> AsyncIterator[SharedInformerFactory]:
    """A started informer factory for the test namespace, on a connection of its own."""
    watcher = await kube.KubeClient.connect(
        kubeconfig=cluster.kubeconfig, user_agent=f"skipper-test-informer/{secrets.token_hex(4)}")
    factory = SharedInformerFactory(watcher, namespace=namespace)
    task = asyncio.create_task(factory.start())
    try:
        yield factory
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await watcher.aclose()


def make_router(client: kube.KubeClient, caches: Any, *, owner_refs: bool = True) -> SkipperRouter:
    ctx = ProviderContext(store=kube.ObjectStore(client, caches=caches), settings=Settings(),
                          log=structlog.get_logger("skipper"), set_owner_refs=owner_refs)
    return SkipperRouter(ctx=ctx, variant="")


@pytest.fixture
def router(counted_client: kube.KubeClient, caches: SharedInformerFactory) -> SkipperRouter:
    return make_router(counted_client, caches)


async def store_canary(admin: kube.KubeClient, namespace: str) -> Canary:
    return Canary.model_validate(await admin.create(kube.CANARIES, {
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": namespace},
        "spec": {
            "suspend": True,
            "provider": "skipper",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "ingressRef": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                           "name": "podinfo"},
            "service": {"port": 80, "targetPort": "http"},
            "analysis": {"interval": "10s", "threshold": 5, "stepWeight": 10},
        },
    }))


def user_ingress(namespace: str, *, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "podinfo", "namespace": namespace,
                                "labels": {"app": "podinfo"}}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": metadata,
        "spec": {"ingressClassName": "skipper", "rules": [{"host": "app.example.com", "http": {
            "paths": [{"path": "/", "pathType": "Prefix",
                       "backend": {"service": {"name": "podinfo", "port": {"number": 80}}}}]}}]},
    }


async def canary_ingress(admin: kube.KubeClient, namespace: str) -> dict[str, Any]:
    return await admin.get(INGRESSES, "podinfo-canary", namespace=namespace)


def split(primary: int, canary: int) -> str:
    return f'{{"podinfo-canary":{canary},"podinfo-primary":{primary}}}'


def skipper_annotations(ingress: dict[str, Any]) -> tuple[str, str]:
    annotations = ingress["metadata"].get("annotations") or {}
    return annotations.get(WEIGHTS, ""), annotations.get(PREDICATE, "")


async def cache_holds(admin: kube.KubeClient, caches: SharedInformerFactory,
                      namespace: str, *names: str) -> None:
    async def check() -> bool:
        for name in names:
            cached = caches.informer(INGRESSES).get(
                kube.key_of({"metadata": {"namespace": namespace, "name": name}}))
            live = await admin.get(INGRESSES, name, namespace=namespace)
            if cached is None or kube.resource_version(cached) != kube.resource_version(live):
                return False
        return True

    await eventually(check, within=30, what="the informer to hold the stored Ingresses")


# -- the tests ----------------------------------------------------------------------------------


async def test_the_built_canary_ingress_is_stored_as_built(
        namespace: str, admin: kube.KubeClient) -> None:
    canary = await store_canary(admin, namespace)
    source = await admin.create(INGRESSES, user_ingress(namespace, annotations=USER_ANNOTATIONS))
    built = build_canary_ingress(canary, source, None)
    stored = await admin.create(INGRESSES, built)
    assert stored["spec"] == built["spec"]
    assert stored["metadata"]["annotations"] == built["metadata"]["annotations"] == {
        FILTER: USER_ANNOTATIONS[FILTER], WEIGHTS: split(100, 0),
        PREDICATE: 'Weight(100) && Header("X-Env", "prod")'}
    assert stored["metadata"]["labels"] == {"app": "podinfo"}


async def test_reconcile_set_get_and_finalize(
        namespace: str, admin: kube.KubeClient, router: SkipperRouter,
        caches: SharedInformerFactory) -> None:
    canary = await store_canary(admin, namespace)
    with pytest.raises(RouterError, match=f"Ingress {namespace}/podinfo not found"):
        await router.reconcile(canary)
    apex = await admin.create(INGRESSES, user_ingress(namespace, annotations=USER_ANNOTATIONS))
    await cache_holds(admin, caches, namespace, "podinfo")  # the router reads it from there
    with pytest.raises(RouterError, match=f"Ingress {namespace}/podinfo-canary not found"):
        await router.get_routes(canary)
    with pytest.raises(RouterError, match=f"Ingress {namespace}/podinfo-canary not found"):
        await router.set_routes(canary, Weights(90, 10))

    await router.reconcile(canary)
    assert await router.get_routes(canary) == Weights(100, 0)  # our own write, read back
    stored = await canary_ingress(admin, namespace)
    assert skipper_annotations(stored) == (split(100, 0), 'Weight(100) && Header("X-Env", "prod")')
    assert [(r["kind"], r["name"], r["uid"], r["controller"])
            for r in stored["metadata"]["ownerReferences"]] == [
        ("Canary", "podinfo", canary.metadata.uid if canary.metadata else None, True)]
    assert [p["backend"]["service"]["name"]
            for p in stored["spec"]["rules"][0]["http"]["paths"]] == [
        "podinfo-primary", "podinfo-canary"]

    await router.set_routes(canary, Weights(80, 20))
    assert skipper_annotations(await canary_ingress(admin, namespace)) == (
        split(80, 20), 'Weight(100) && Header("X-Env", "prod")')
    assert await router.get_routes(canary) == Weights(80, 20)

    # A reconcile in the middle of a run keeps the split and writes nothing.
    before = kube.resource_version(await canary_ingress(admin, namespace))
    await router.reconcile(canary)
    assert kube.resource_version(await canary_ingress(admin, namespace)) == before

    # Promoted: all to the primary, and the canary Ingress's routes switched off.
    await router.set_routes(canary, Weights(100, 0))
    assert skipper_annotations(await canary_ingress(admin, namespace)) == (
        split(100, 0), 'False() && Header("X-Env", "prod")')

    # revertOnDeletion: the canary Ingress goes, the user's stays as it was; twice is fine.
    await router.finalize(canary)
    with pytest.raises(kube.NotFoundError):
        await canary_ingress(admin, namespace)
    await router.finalize(canary)
    assert kube.resource_version(await admin.get(INGRESSES, "podinfo", namespace=namespace)) == (
        kube.resource_version(apex))


async def test_an_ingress_without_annotations_and_no_owner_references(
        namespace: str, admin: kube.KubeClient, counted_client: kube.KubeClient,
        caches: SharedInformerFactory) -> None:
    # Flagger panics on an apex Ingress without metadata.annotations; with the mesh objects on
    # another API server the copy gets no ownerReference.
    canary = await store_canary(admin, namespace)
    await admin.create(INGRESSES, user_ingress(namespace))
    await cache_holds(admin, caches, namespace, "podinfo")
    router = make_router(counted_client, caches, owner_refs=False)
    await router.reconcile(canary)
    stored = await canary_ingress(admin, namespace)
    assert stored["metadata"]["annotations"] == {WEIGHTS: split(100, 0),
                                                 PREDICATE: "Weight(100)"}
    assert "ownerReferences" not in stored["metadata"]
    await router.set_routes(canary, Weights(60, 40))
    assert await router.get_routes(canary) == Weights(60, 40)
    await router.finalize(canary)  # nothing garbage-collects it: the finalizer deletes it
    with pytest.raises(kube.NotFoundError):
        await canary_ingress(admin, namespace)


async def test_steady_calls_make_no_requests(
        cluster: LocalCluster, namespace: str, admin: kube.KubeClient,
        counted_client: kube.KubeClient, router: SkipperRouter, caches: SharedInformerFactory,
) -> None:
    canary = await store_canary(admin, namespace)
    await admin.create(INGRESSES, user_ingress(namespace, annotations=USER_ANNOTATIONS))
    await cache_holds(admin, caches, namespace, "podinfo")
    await router.reconcile(canary)
    await router.set_routes(canary, Weights(90, 10))
    await cache_holds(admin, caches, namespace, "podinfo", "podinfo-canary")

    since = datetime.now(UTC)
    for _ in range(3):
        await router.reconcile(canary)
        assert await router.get_routes(canary) == Weights(90, 10)
        await router.set_routes(canary, Weights(90, 10))
    counts = await requests_between(cluster, counted_client, since, namespace)
    assert counts.total == 0, counts.by_resource

    since = datetime.now(UTC)
    await router.set_routes(canary, Weights(70, 30))
    counts = await requests_between(cluster, counted_client, since, namespace)
    assert dict(counts.by_resource) == {"update ingresses": 1}


async def test_a_stale_cache_costs_a_retry_never_a_lost_update(
        cluster: LocalCluster, namespace: str, admin: kube.KubeClient,
        counted_client: kube.KubeClient, router: SkipperRouter, caches: SharedInformerFactory,
) -> None:
    canary = await store_canary(admin, namespace)
    await admin.create(INGRESSES, user_ingress(namespace, annotations=USER_ANNOTATIONS))
    await cache_holds(admin, caches, namespace, "podinfo")
    await router.reconcile(canary)
    await router.set_routes(canary, Weights(90, 10))
    snapshot = await canary_ingress(admin, namespace)
    # Someone else writes after the snapshot: a write based on it must not win blindly.
    edited = json.loads(json.dumps(snapshot))
    edited["metadata"]["labels"]["edited"] = "yes"
    await admin.replace(INGRESSES, edited)

    stale = make_router(counted_client, FrozenCache(snapshot))
    since = datetime.now(UTC)
    await stale.set_routes(canary, Weights(80, 20))
    counts = await requests_between(cluster, counted_client, since, namespace)
    # The conditional update fails (409), the object is read again, rebuilt and written.
    assert dict(counts.by_resource) == {"update ingresses": 2, "get ingresses": 1}
    stored = await canary_ingress(admin, namespace)
    assert skipper_annotations(stored)[0] == split(80, 20)
    assert stored["metadata"]["labels"] == {"app": "podinfo", "edited": "yes"}
    assert await stale.get_routes(canary) == Weights(80, 20)
