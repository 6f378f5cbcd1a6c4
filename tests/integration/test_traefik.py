"""The Traefik router against the real API server, with Traefik's upstream TraefikService CRD.

The router runs with a real ``SharedInformerFactory`` and a client of its own, so the audit log
shows that steady calls make no request and that a weight change is one write. The Canary is
stored (suspended, so another test's controller leaves it alone) to give the TraefikService a
real owner.
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
from flaggerpy.providers.traefik import TRAEFIK_SERVICES, TraefikRouter, build_traefik_service
from flaggerpy.routing import ProviderContext, Weights
from flaggerpy.runtime.informer import SharedInformerFactory
from flaggerpy.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def admin(api_client: ApiClient) -> kube.KubeClient:
    """What the test itself reads and writes with (not counted)."""
    return kube.KubeClient(api_client, user_agent=f"traefik-test-admin/{secrets.token_hex(4)}")


@pytest.fixture
async def caches(cluster: LocalCluster, namespace: str) -> AsyncIterator[SharedInformerFactory]:
    """A started informer factory for the test namespace, on a connection of its own."""
    watcher = await kube.KubeClient.connect(
        kubeconfig=cluster.kubeconfig, user_agent=f"traefik-test-informer/{secrets.token_hex(4)}")
    factory = SharedInformerFactory(watcher, namespace=namespace)
    task = asyncio.create_task(factory.start())
    try:
        yield factory
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await watcher.aclose()


def make_router(client: kube.KubeClient, caches: Any, *,
                set_owner_refs: bool = True) -> TraefikRouter:
    ctx = ProviderContext(store=kube.ObjectStore(client, caches=caches), settings=Settings(),
                          log=structlog.get_logger("traefik"), set_owner_refs=set_owner_refs)
    return TraefikRouter(ctx=ctx, variant="")


def canary_object(namespace: str, *, service: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": namespace},
        "spec": {
            "suspend": True,
            "provider": "traefik",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 80, "targetPort": 9898, **(service or {})},
            "analysis": {"interval": "10s", "threshold": 5, "stepWeight": 10},
        },
    }


async def store_canary(admin: kube.KubeClient, namespace: str, **spec: Any) -> Canary:
    return Canary.model_validate(await admin.create(kube.CANARIES,
                                                    canary_object(namespace, **spec)))


def services(namespace: str, primary: int, canary: int, *,
             port: int = 80) -> list[dict[str, Any]]:
    result = [{"name": "podinfo-primary", "namespace": namespace, "port": port,
               "weight": primary}]
    if canary:
        result.append({"name": "podinfo-canary", "namespace": namespace, "port": port,
                       "weight": canary})
    return result


async def ts_of(admin: kube.KubeClient, namespace: str) -> dict[str, Any]:
    return await admin.get(TRAEFIK_SERVICES, "podinfo", namespace=namespace)


async def cache_holds(admin: kube.KubeClient, caches: SharedInformerFactory,
                      namespace: str) -> None:
    key = kube.key_of({"metadata": {"namespace": namespace, "name": "podinfo"}})

    async def check() -> bool:
        cached = caches.informer(TRAEFIK_SERVICES).get(key)
        live = await ts_of(admin, namespace)
        return cached is not None and kube.resource_version(cached) == kube.resource_version(live)

    await eventually(check, within=30, what="the informer to hold the stored TraefikService")


# -- the tests ----------------------------------------------------------------------------------


async def test_the_built_traefik_service_is_stored_as_built(
        namespace: str, admin: kube.KubeClient) -> None:
    canary = await store_canary(admin, namespace, service={
        "apex": {"annotations": {"example.com/team": "web"}, "labels": {"tier": "edge"}}})
    for weights in (Weights.to_canary(30), Weights.all_canary()):
        built = build_traefik_service(canary, weights, None)
        stored = await admin.create(TRAEFIK_SERVICES, built)
        assert stored["spec"] == built["spec"]  # weight: 0 is kept, not defaulted away
        assert stored["metadata"]["annotations"] == built["metadata"]["annotations"]
        assert stored["metadata"]["labels"] == {"tier": "edge"}
        await admin.delete(TRAEFIK_SERVICES, "podinfo", namespace=namespace)


async def test_reconcile_set_get_and_finalize(
        namespace: str, admin: kube.KubeClient, counted_client: kube.KubeClient,
        caches: SharedInformerFactory,
) -> None:
    router = make_router(counted_client, caches)
    canary = await store_canary(admin, namespace)
    with pytest.raises(RouterError, match=f"TraefikService podinfo.{namespace} not found"):
        await router.get_routes(canary)

    await router.reconcile(canary)
    assert await router.get_routes(canary) == Weights.all_primary()  # our own write, read back
    ts = await ts_of(admin, namespace)
    assert ts["spec"] == {"weighted": {"services": services(namespace, 100, 0)}}
    assert [(o["kind"], o["name"], o["uid"], o["controller"])
            for o in ts["metadata"]["ownerReferences"]] == [
        ("Canary", "podinfo", canary.metadata.uid if canary.metadata else None, True)]

    await router.set_routes(canary, Weights.to_canary(10))
    assert (await ts_of(admin, namespace))["spec"]["weighted"]["services"] == services(
        namespace, 90, 10)
    assert await router.get_routes(canary) == Weights.to_canary(10)
    await router.set_routes(canary, Weights.all_canary())
    assert (await ts_of(admin, namespace))["spec"]["weighted"]["services"] == services(
        namespace, 0, 100)
    assert await router.get_routes(canary) == Weights.all_canary()

    # A reconcile in the middle of a run keeps the split and writes nothing.
    before = kube.resource_version(await ts_of(admin, namespace))
    await router.reconcile(canary)
    assert kube.resource_version(await ts_of(admin, namespace)) == before

    # A port and apex change is written, still keeping the split.
    moved = Canary.model_validate({
        **canary_object(namespace, service={"port": 8080, "apex": {"labels": {"tier": "x"}}}),
        "metadata": canary.to_dict()["metadata"]})
    await router.reconcile(moved)
    ts = await ts_of(admin, namespace)
    assert ts["spec"]["weighted"]["services"] == services(namespace, 0, 100, port=8080)
    assert ts["metadata"]["labels"] == {"tier": "x"}

    # Flagger's Finalize (revertOnDeletion) does nothing to a TraefikService, nor do we.
    before = kube.resource_version(await ts_of(admin, namespace))
    await router.finalize(moved)
    assert kube.resource_version(await ts_of(admin, namespace)) == before


async def test_no_owner_reference_when_the_routing_objects_live_elsewhere(
        namespace: str, admin: kube.KubeClient, counted_client: kube.KubeClient,
        caches: SharedInformerFactory,
) -> None:
    router = make_router(counted_client, caches, set_owner_refs=False)
    canary = await store_canary(admin, namespace)
    await router.reconcile(canary)
    assert "ownerReferences" not in (await ts_of(admin, namespace))["metadata"]


async def test_steady_calls_make_no_requests(
        cluster: LocalCluster, namespace: str, admin: kube.KubeClient,
        counted_client: kube.KubeClient, caches: SharedInformerFactory,
) -> None:
    router = make_router(counted_client, caches)
    canary = await store_canary(admin, namespace)
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
    assert dict(counts.by_resource) == {"update traefikservices": 1}


async def test_a_stale_cache_costs_a_retry_never_a_lost_update(
        cluster: LocalCluster, namespace: str, admin: kube.KubeClient,
        counted_client: kube.KubeClient, caches: SharedInformerFactory,
) -> None:
    router = make_router(counted_client, caches)
    canary = await store_canary(admin, namespace)
    await router.reconcile(canary)
    await router.set_routes(canary, Weights.to_canary(10))
    snapshot = await ts_of(admin, namespace)
    # Someone else writes after the snapshot (a second owner, which the router keeps): a write
    # based on the snapshot must not win blindly.
    holder = await admin.create(kube.CONFIGMAPS, {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "holder", "namespace": namespace}})
    edited = json.loads(json.dumps(snapshot))
    other = {"apiVersion": "v1", "kind": "ConfigMap", "name": "holder",
             "uid": holder["metadata"]["uid"]}
    edited["metadata"]["ownerReferences"].append(other)
    await admin.replace(TRAEFIK_SERVICES, edited)

    stale = make_router(counted_client, FrozenCache(snapshot))
    since = datetime.now(UTC)
    await stale.set_routes(canary, Weights.to_canary(30))
    counts = await requests_between(cluster, counted_client, since, namespace)
    # The conditional update fails (409), the object is read again, rebuilt and written.
    assert dict(counts.by_resource) == {"update traefikservices": 2, "get traefikservices": 1}
    stored = await ts_of(admin, namespace)
    assert stored["spec"]["weighted"]["services"] == services(namespace, 70, 30)
    assert other in stored["metadata"]["ownerReferences"]  # the other write survives
    assert await stale.get_routes(canary) == Weights.to_canary(30)
