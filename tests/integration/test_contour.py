"""The Contour router against the real API server and Contour's upstream HTTPProxy CRD.

The built HTTPProxy (weights, A/B header conditions, timeout and retry policies,
``ingressClassName``) is created and read back, so the schema has the last word. The router runs
with a real ``SharedInformerFactory`` as its cache and a client whose requests the audit log
counts: a steady ``reconcile`` + ``get_routes`` + identical ``set_routes`` makes no request, a
weight change is one write, and a stale cache costs a retry, never a lost update.
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
from flaggerpy.providers.contour import HTTP_PROXIES, ContourRouter, build_http_proxy
from flaggerpy.routing import ProviderContext, Weights
from flaggerpy.runtime.informer import SharedInformerFactory
from flaggerpy.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def admin(api_client: ApiClient) -> kube.KubeClient:
    """What the test itself reads and writes with (not counted)."""
    return kube.KubeClient(api_client, user_agent=f"contour-test-admin/{secrets.token_hex(4)}")


@pytest.fixture
async def caches(cluster: LocalCluster, namespace: str) -> AsyncIterator[SharedInformerFactory]:
    """A started informer factory for the test namespace, on a connection of its own."""
    watcher = await kube.KubeClient.connect(
        kubeconfig=cluster.kubeconfig,
        user_agent=f"contour-test-informer/{secrets.token_hex(4)}")
    factory = SharedInformerFactory(watcher, namespace=namespace)
    task = asyncio.create_task(factory.start())
    try:
        yield factory
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await watcher.aclose()


def make_router(client: kube.KubeClient, caches: Any, *, ingress_class: str = "",
                set_owner_refs: bool = True) -> ContourRouter:
    settings = Settings.model_validate({"mesh": {"ingress_class": ingress_class}})
    ctx = ProviderContext(store=kube.ObjectStore(client, caches=caches), settings=settings,
                          log=structlog.get_logger("contour"), set_owner_refs=set_owner_refs)
    return ContourRouter(ctx=ctx, variant="")


def canary_object(namespace: str, *, service: dict[str, Any] | None = None,
                  match: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    analysis: dict[str, Any] = {"interval": "10s", "threshold": 5, "stepWeight": 10}
    if match is not None:
        analysis = {"interval": "10s", "threshold": 5, "iterations": 2, "match": match}
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": namespace},
        "spec": {
            # Suspended, so a flaggerpy controller another test runs on this shared cluster
            # leaves it alone; the router does not look at `suspend`.
            "suspend": True,
            "provider": "contour",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 80, "targetPort": 9898, **(service or {})},
            "analysis": analysis,
        },
    }


async def store_canary(admin: kube.KubeClient, namespace: str, **spec: Any) -> Canary:
    """Stores a Canary (our CRD), so it has a uid to own the HTTPProxy."""
    return Canary.model_validate(await admin.create(kube.CANARIES,
                                                    canary_object(namespace, **spec)))


async def proxy_of(admin: kube.KubeClient, namespace: str) -> dict[str, Any]:
    return await admin.get(HTTP_PROXIES, "podinfo", namespace=namespace)


def weights_of(proxy: dict[str, Any], route: int = 0) -> list[tuple[str, int | None]]:
    return [(s["name"], s.get("weight")) for s in proxy["spec"]["routes"][route]["services"]]


async def cache_holds(admin: kube.KubeClient, caches: SharedInformerFactory,
                      namespace: str) -> None:
    """Waits until the informer holds the stored version of the HTTPProxy."""
    key = kube.key_of({"metadata": {"namespace": namespace, "name": "podinfo"}})

    async def check() -> bool:
        cached = caches.informer(HTTP_PROXIES).get(key)
        live = await proxy_of(admin, namespace)
        return cached is not None and kube.resource_version(cached) == kube.resource_version(live)

    await eventually(check, within=30, what="the informer to hold the stored HTTPProxy")


# -- the tests ----------------------------------------------------------------------------------


async def test_the_built_proxy_is_stored_as_built(
        namespace: str, admin: kube.KubeClient) -> None:
    canary = await store_canary(admin, namespace, service={
        "match": [{"uri": {"prefix": "/api"}}], "timeout": "15s",
        "retries": {"attempts": 3, "perTryTimeout": "5s", "retryOn": "5xx,gateway-error"},
    }, match=[{"headers": {"x-canary": {"exact": "insider"}}},
              {"headers": {"user-agent": {"suffix": "Firefox"}}},
              {"headers": {"x-user": {"regex": "^a"}}}])
    built = build_http_proxy(canary, Weights.to_canary(30), existing=None,
                             ingress_class="contour")
    stored = await admin.create(HTTP_PROXIES, built)
    assert stored["spec"] == built["spec"]  # no field pruned, no default added
    assert stored["metadata"]["annotations"] == built["metadata"]["annotations"]


async def test_reconcile_set_get_and_finalize(
        namespace: str, admin: kube.KubeClient, counted_client: kube.KubeClient,
        caches: SharedInformerFactory,
) -> None:
    router = make_router(counted_client, caches, ingress_class="contour")
    canary = await store_canary(admin, namespace)
    with pytest.raises(RouterError, match=f"HTTPProxy podinfo.{namespace} not found"):
        await router.get_routes(canary)

    await router.reconcile(canary)
    assert await router.get_routes(canary) == Weights.all_primary()  # our own write, read back
    proxy = await proxy_of(admin, namespace)
    assert proxy["spec"]["ingressClassName"] == "contour"
    assert weights_of(proxy) == [("podinfo-primary", 100), ("podinfo-canary", None)]
    owner = proxy["metadata"]["ownerReferences"]
    assert [(o["kind"], o["name"], o["uid"], o["controller"]) for o in owner] == [
        ("Canary", "podinfo", canary.metadata.uid if canary.metadata else None, True)]

    await router.set_routes(canary, Weights.to_canary(20))
    assert await router.get_routes(canary) == Weights.to_canary(20)
    assert weights_of(await proxy_of(admin, namespace)) == [
        ("podinfo-primary", 80), ("podinfo-canary", 20)]

    # A reconcile in the middle of a run writes nothing; a spec change keeps the split.
    before = kube.resource_version(await proxy_of(admin, namespace))
    await router.reconcile(canary)
    assert kube.resource_version(await proxy_of(admin, namespace)) == before
    timed = Canary.model_validate({**canary_object(namespace, service={"timeout": "5s"}),
                                   "metadata": canary.to_dict()["metadata"]})
    await router.reconcile(timed)
    proxy = await proxy_of(admin, namespace)
    assert proxy["spec"]["routes"][0]["timeoutPolicy"] == {"response": "5s", "idle": "5m"}
    assert weights_of(proxy) == [("podinfo-primary", 80), ("podinfo-canary", 20)]

    # Nothing to revert (Flagger's Finalize is a no-op): the garbage collector has it.
    before = kube.resource_version(proxy)
    await router.finalize(timed)
    assert kube.resource_version(await proxy_of(admin, namespace)) == before


async def test_ab_routes_the_matches_by_weight_and_the_rest_to_the_primary(
        namespace: str, admin: kube.KubeClient, counted_client: kube.KubeClient,
        caches: SharedInformerFactory,
) -> None:
    router = make_router(counted_client, caches)
    canary = await store_canary(admin, namespace,
                                match=[{"headers": {"x-canary": {"exact": "insider"}}}])
    await router.reconcile(canary)
    await router.set_routes(canary, Weights.all_canary())
    proxy = await proxy_of(admin, namespace)
    assert proxy["spec"]["routes"][0]["conditions"] == [
        {"prefix": "/", "header": {"name": "x-canary", "exact": "insider"}}]
    assert weights_of(proxy, 0) == [("podinfo-primary", None), ("podinfo-canary", 100)]
    assert weights_of(proxy, 1) == [("podinfo-primary", 100), ("podinfo-canary", None)]
    assert await router.get_routes(canary) == Weights.all_canary()


async def test_no_owner_reference_when_the_mesh_is_another_cluster(
        namespace: str, admin: kube.KubeClient, counted_client: kube.KubeClient,
        caches: SharedInformerFactory,
) -> None:
    canary = await store_canary(admin, namespace)
    router = make_router(counted_client, caches, set_owner_refs=False)
    await router.reconcile(canary)
    proxy = await proxy_of(admin, namespace)
    assert "ownerReferences" not in proxy["metadata"]
    assert "ingressClassName" not in proxy["spec"]


async def test_a_users_proxy_gets_our_spec_and_keeps_its_metadata(
        namespace: str, admin: kube.KubeClient, counted_client: kube.KubeClient,
        caches: SharedInformerFactory,
) -> None:
    await admin.create(HTTP_PROXIES, {
        "apiVersion": "projectcontour.io/v1", "kind": "HTTPProxy",
        "metadata": {"name": "podinfo", "namespace": namespace, "labels": {"team": "a"}},
        "spec": {"virtualhost": {"fqdn": "app.example.com"},
                 "routes": [{"services": [{"name": "podinfo", "port": 80}]}]}})
    canary = await store_canary(admin, namespace)
    await make_router(counted_client, caches).reconcile(canary)
    proxy = await proxy_of(admin, namespace)
    # As Flagger: only the spec is written; no ownerReference is added to a user's object.
    assert "virtualhost" not in proxy["spec"]
    assert weights_of(proxy) == [("podinfo-primary", 100), ("podinfo-canary", None)]
    assert proxy["metadata"]["labels"] == {"team": "a"}
    assert "ownerReferences" not in proxy["metadata"]


async def test_steady_calls_make_no_requests(
        cluster: LocalCluster, namespace: str, admin: kube.KubeClient,
        counted_client: kube.KubeClient, caches: SharedInformerFactory,
) -> None:
    router = make_router(counted_client, caches, ingress_class="contour")
    canary = await store_canary(admin, namespace, service={
        "retries": {"attempts": 2, "retryOn": "5xx"}, "timeout": "3s"})
    await router.reconcile(canary)
    await router.set_routes(canary, Weights.to_canary(10))
    await cache_holds(admin, caches, namespace)

    since = datetime.now(UTC)
    for _ in range(3):
        await router.reconcile(canary)
        assert await router.get_routes(canary) == Weights.to_canary(10)
        await router.set_routes(canary, Weights.to_canary(10))
    counts = await requests_between(cluster, counted_client, since, namespace)
    assert counts.total == 0, counts.by_resource

    since = datetime.now(UTC)
    await router.set_routes(canary, Weights.to_canary(30))
    counts = await requests_between(cluster, counted_client, since, namespace)
    assert dict(counts.by_resource) == {"update httpproxies": 1}


async def test_a_stale_cache_costs_a_retry_never_a_lost_update(
        cluster: LocalCluster, namespace: str, admin: kube.KubeClient,
        counted_client: kube.KubeClient, caches: SharedInformerFactory,
) -> None:
    canary = await store_canary(admin, namespace)
    router = make_router(counted_client, caches)
    await router.reconcile(canary)
    await router.set_routes(canary, Weights.to_canary(10))
    snapshot = await proxy_of(admin, namespace)
    # Someone else writes after the snapshot: a write based on it must not win blindly.
    edited = json.loads(json.dumps(snapshot))
    edited["metadata"].setdefault("labels", {})["edited"] = "yes"
    await admin.replace(HTTP_PROXIES, edited)

    stale = make_router(counted_client, FrozenCache(snapshot))
    since = datetime.now(UTC)
    await stale.set_routes(canary, Weights.to_canary(20))
    counts = await requests_between(cluster, counted_client, since, namespace)
    # The conditional update fails (409), the object is read again, rebuilt and written.
    assert dict(counts.by_resource) == {"update httpproxies": 2, "get httpproxies": 1}
    stored = await proxy_of(admin, namespace)
    assert weights_of(stored) == [("podinfo-primary", 80), ("podinfo-canary", 20)]
    assert stored["metadata"]["labels"] == {"edited": "yes"}  # the other write survives
    assert await stale.get_routes(canary) == Weights.to_canary(20)
