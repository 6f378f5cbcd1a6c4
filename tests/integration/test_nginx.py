"""The NGINX router against the real API server: the user's networking.k8s.io/v1 Ingress in, the
canary Ingress ``<ingressRef>-canary`` out, validated and stored by kube-apiserver.

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
from flaggerpy.providers.nginx import INGRESSES, NginxRouter, build_canary_ingress
from flaggerpy.routing import ProviderContext, Weights
from flaggerpy.runtime.informer import SharedInformerFactory
from flaggerpy.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]

N = "nginx.ingress.kubernetes.io"
CUSTOM = "custom.ingress.kubernetes.io"
TOOLKIT = {
    "kustomize.toolkit.fluxcd.io/reconcile": "disabled",
    "helm.toolkit.fluxcd.io/driftDetection": "disabled",
}


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def admin(api_client: ApiClient) -> kube.KubeClient:
    """What the test itself reads and writes with (not counted)."""
    return kube.KubeClient(api_client, user_agent=f"nginx-test-admin/{secrets.token_hex(4)}")


@pytest.fixture
async def caches(cluster: LocalCluster, namespace: str) -> AsyncIterator[SharedInformerFactory]:
    """A started informer factory for the test namespace, on a connection of its own."""
    watcher = await kube.KubeClient.connect(
        kubeconfig=cluster.kubeconfig, user_agent=f"nginx-test-informer/{secrets.token_hex(4)}")
    factory = SharedInformerFactory(watcher, namespace=namespace)
    task = asyncio.create_task(factory.start())
    try:
        yield factory
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await watcher.aclose()


def make_router(client: kube.KubeClient, caches: Any, *, prefix: str = N) -> NginxRouter:
    settings = Settings(mesh={"ingress_annotations_prefix": prefix})
    ctx = ProviderContext(store=kube.ObjectStore(client, caches=caches), settings=settings,
                          log=structlog.get_logger("nginx"))
    return NginxRouter(ctx=ctx, variant="")


@pytest.fixture
def router(counted_client: kube.KubeClient, caches: SharedInformerFactory) -> NginxRouter:
    return make_router(counted_client, caches)


async def store_canary(admin: kube.KubeClient, namespace: str, *,
                       match: list[dict[str, Any]] | None = None) -> Canary:
    analysis: dict[str, Any] = {"interval": "10s", "threshold": 5, "stepWeight": 10}
    if match is not None:
        analysis = {"interval": "10s", "threshold": 5, "iterations": 2, "match": match}
    return Canary.model_validate(await admin.create(kube.CANARIES, {
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": namespace},
        "spec": {
            "suspend": True,
            "provider": "nginx",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "ingressRef": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                           "name": "podinfo"},
            "service": {"port": 80, "targetPort": "http"},
            "analysis": analysis,
        },
    }))


def user_ingress(namespace: str, *, host: str = "app.example.com") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "podinfo", "namespace": namespace, "labels": {"app": "podinfo"},
                     "annotations": {f"{N}/rewrite-target": "/", f"{N}/canary-weight": "55"}},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": host, "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "podinfo", "port": {"number": 80}}}}]}}]},
    }


async def canary_ingress(admin: kube.KubeClient, namespace: str) -> dict[str, Any]:
    return await admin.get(INGRESSES, "podinfo-canary", namespace=namespace)


def canary_annotations(ingress: dict[str, Any], prefix: str = N) -> dict[str, str]:
    return {k: v for k, v in (ingress["metadata"].get("annotations") or {}).items()
            if k.startswith(f"{prefix}/canary")}


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
    source = await admin.create(INGRESSES, user_ingress(namespace))
    built = build_canary_ingress(canary, source, None, prefix=CUSTOM)
    stored = await admin.create(INGRESSES, built)
    assert stored["spec"] == built["spec"]
    assert stored["metadata"]["annotations"] == built["metadata"]["annotations"] == {
        **TOOLKIT, f"{N}/rewrite-target": "/", f"{N}/canary-weight": "55",
        f"{CUSTOM}/canary": "true", f"{CUSTOM}/canary-weight": "0"}
    assert stored["metadata"]["ownerReferences"] == built["metadata"]["ownerReferences"]


async def test_reconcile_set_get_and_finalize(
        namespace: str, admin: kube.KubeClient, router: NginxRouter,
        caches: SharedInformerFactory) -> None:
    canary = await store_canary(admin, namespace)
    with pytest.raises(RouterError, match=f"Ingress {namespace}/podinfo not found"):
        await router.reconcile(canary)
    await admin.create(INGRESSES, user_ingress(namespace))
    await cache_holds(admin, caches, namespace, "podinfo")  # read from the cache, as it is
    with pytest.raises(RouterError, match=f"Ingress {namespace}/podinfo-canary not found"):
        await router.get_routes(canary)

    await router.reconcile(canary)
    assert await router.get_routes(canary) == Weights(100, 0)  # our own write, read back
    stored = await canary_ingress(admin, namespace)
    assert canary_annotations(stored) == {f"{N}/canary": "true", f"{N}/canary-weight": "0"}
    assert stored["metadata"]["labels"] == {"app": "podinfo"}
    assert [(r["kind"], r["name"], r["uid"], r["controller"])
            for r in stored["metadata"]["ownerReferences"]] == [
        ("Canary", "podinfo", canary.metadata.uid if canary.metadata else None, True)]
    assert stored["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"] == {
        "name": "podinfo-canary", "port": {"number": 80}}

    await router.set_routes(canary, Weights(80, 20))
    assert canary_annotations(await canary_ingress(admin, namespace)) == {
        f"{N}/canary": "true", f"{N}/canary-weight": "20"}
    assert await router.get_routes(canary) == Weights(80, 20)

    # A reconcile in the middle of a run keeps the split and writes nothing.
    before = kube.resource_version(await canary_ingress(admin, namespace))
    await router.reconcile(canary)
    assert kube.resource_version(await canary_ingress(admin, namespace)) == before

    # A change to the user's Ingress reaches the canary Ingress's spec, the split stays.
    source = await admin.get(INGRESSES, "podinfo", namespace=namespace)
    source["spec"]["rules"][0]["host"] = "www.example.com"
    await admin.replace(INGRESSES, source)

    async def followed() -> bool:
        await router.reconcile(canary)
        return (await canary_ingress(admin, namespace))["spec"]["rules"][0]["host"] == (
            "www.example.com")

    await eventually(followed, within=30, what="the canary Ingress to follow the user's")
    assert await router.get_routes(canary) == Weights(80, 20)

    await router.set_routes(canary, Weights(100, 0))
    assert canary_annotations(await canary_ingress(admin, namespace)) == {
        f"{N}/canary": "true", f"{N}/canary-weight": "0"}

    # Flagger's Finalize (revertOnDeletion) changes nothing, and neither do we.
    versions = [kube.resource_version(await admin.get(INGRESSES, name, namespace=namespace))
                for name in ("podinfo", "podinfo-canary")]
    await router.finalize(canary)
    assert [kube.resource_version(await admin.get(INGRESSES, name, namespace=namespace))
            for name in ("podinfo", "podinfo-canary")] == versions


async def test_ab_matches_under_the_annotations_prefix(
        namespace: str, admin: kube.KubeClient, counted_client: kube.KubeClient,
        caches: SharedInformerFactory) -> None:
    router = make_router(counted_client, caches, prefix=CUSTOM)
    canary = await store_canary(admin, namespace, match=[
        {"headers": {"x-canary": {"regex": "^insider$"}, "cookie": {"exact": "beta"}}}])
    await admin.create(INGRESSES, user_ingress(namespace))
    await cache_holds(admin, caches, namespace, "podinfo")
    await router.reconcile(canary)
    assert canary_annotations(await canary_ingress(admin, namespace), CUSTOM) == {
        f"{CUSTOM}/canary": "true", f"{CUSTOM}/canary-weight": "0"}

    await router.set_routes(canary, Weights.all_canary())
    assert await router.get_routes(canary) == Weights.all_canary()
    assert canary_annotations(await canary_ingress(admin, namespace), CUSTOM) == {
        f"{CUSTOM}/canary": "true", f"{CUSTOM}/canary-weight": "0",
        f"{CUSTOM}/canary-by-header": "x-canary",
        f"{CUSTOM}/canary-by-header-pattern": "^insider$",
        f"{CUSTOM}/canary-by-cookie": "beta"}

    await router.set_routes(canary, Weights.all_primary())
    assert await router.get_routes(canary) == Weights.all_primary()
    assert canary_annotations(await canary_ingress(admin, namespace), CUSTOM) == {
        f"{CUSTOM}/canary": "true", f"{CUSTOM}/canary-weight": "0"}


async def test_steady_calls_make_no_requests(
        cluster: LocalCluster, namespace: str, admin: kube.KubeClient,
        counted_client: kube.KubeClient, router: NginxRouter, caches: SharedInformerFactory,
) -> None:
    canary = await store_canary(admin, namespace)
    await admin.create(INGRESSES, user_ingress(namespace))
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
        counted_client: kube.KubeClient, router: NginxRouter, caches: SharedInformerFactory,
) -> None:
    canary = await store_canary(admin, namespace)
    await admin.create(INGRESSES, user_ingress(namespace))
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
    assert canary_annotations(stored)[f"{N}/canary-weight"] == "20"
    assert stored["metadata"]["labels"] == {"app": "podinfo", "edited": "yes"}
    assert await stale.get_routes(canary) == Weights(80, 20)
