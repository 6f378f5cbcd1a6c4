"""The Kuma router against the real API server, with Kuma's upstream TrafficRoute CRD installed.

The TrafficRoute is cluster-scoped, so each test names its service uniquely (the route is
``<svc>``) and deletes the route itself at the end: nothing garbage-collects it, as in Flagger.
The router runs with a real ``SharedInformerFactory`` and a client of its own, so the audit log
shows that steady calls make no request and that a weight change is one write.
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
from flaggerpy.providers.kuma import TRAFFIC_ROUTES, KumaRouter, build_traffic_route
from flaggerpy.routing import ProviderContext, Weights
from flaggerpy.runtime.informer import SharedInformerFactory
from flaggerpy.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def admin(api_client: ApiClient) -> kube.KubeClient:
    """What the test itself reads and writes with (not counted)."""
    return kube.KubeClient(api_client, user_agent=f"kuma-test-admin/{secrets.token_hex(4)}")


@pytest.fixture
async def service(admin: kube.KubeClient) -> AsyncIterator[str]:
    """A service name no other test uses: the cluster-wide TrafficRoute's name. Its route is
    deleted afterwards (no ownerReference: nothing else would)."""
    name = f"kuma-{secrets.token_hex(4)}"
    try:
        yield name
    finally:
        with contextlib.suppress(kube.NotFoundError):
            await admin.delete(TRAFFIC_ROUTES, name)


@pytest.fixture
async def caches(cluster: LocalCluster, namespace: str) -> AsyncIterator[SharedInformerFactory]:
    """A started informer factory scoped to the test namespace (TrafficRoutes are watched
    cluster-wide whatever the scope), on a connection of its own."""
    watcher = await kube.KubeClient.connect(
        kubeconfig=cluster.kubeconfig, user_agent=f"kuma-test-informer/{secrets.token_hex(4)}")
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
def router(counted_client: kube.KubeClient, caches: SharedInformerFactory) -> KumaRouter:
    ctx = ProviderContext(store=kube.ObjectStore(counted_client, caches=caches),
                          settings=Settings(), log=structlog.get_logger("kuma"))
    return KumaRouter(ctx=ctx, variant="")


def make_canary(namespace: str, service: str, *, mesh: str | None = None,
                port: int = 9898, apex: dict[str, Any] | None = None) -> Canary:
    metadata: dict[str, Any] = {"name": "podinfo", "namespace": namespace,
                                "uid": "0f6a2f4e-5b0c-4f0e-9a77-1c2d3e4f5a6b"}
    if mesh is not None:
        metadata["annotations"] = {"kuma.io/mesh": mesh}
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": metadata,
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"name": service, "port": port, **({"apex": apex} if apex else {})},
            "analysis": {"interval": "10s", "threshold": 5, "stepWeight": 10},
        },
    })


def split(service: str, namespace: str, primary: int, canary: int,
          port: int = 9898) -> list[dict[str, Any]]:
    return [
        {"weight": primary,
         "destination": {"kuma.io/service": f"{service}-primary_{namespace}_svc_{port}"}},
        {"weight": canary,
         "destination": {"kuma.io/service": f"{service}-canary_{namespace}_svc_{port}"}},
    ]


async def cache_holds(admin: kube.KubeClient, caches: SharedInformerFactory, name: str) -> None:
    async def check() -> bool:
        cached = caches.informer(TRAFFIC_ROUTES).get(
            kube.key_of({"metadata": {"name": name}}))
        live = await admin.get(TRAFFIC_ROUTES, name)
        return cached is not None and (
            kube.resource_version(cached) == kube.resource_version(live))

    await eventually(check, within=30, what="the informer to hold the stored TrafficRoute")


# -- the tests ----------------------------------------------------------------------------------


async def test_the_built_traffic_route_is_stored_as_built(
        namespace: str, admin: kube.KubeClient, service: str) -> None:
    canary = make_canary(namespace, service, mesh="secondary", port=80,
                         apex={"annotations": {"example.com/team": "web"}})
    built = build_traffic_route(canary, Weights.to_canary(30), None)
    stored = await admin.create(TRAFFIC_ROUTES, built)
    assert stored["mesh"] == "secondary"
    assert stored["spec"] == built["spec"]
    assert stored["metadata"]["annotations"] == built["metadata"]["annotations"]
    assert "namespace" not in stored["metadata"]
    assert "ownerReferences" not in stored["metadata"]


async def test_reconcile_set_get_and_finalize(
        namespace: str, admin: kube.KubeClient, router: KumaRouter, service: str) -> None:
    canary = make_canary(namespace, service, mesh="secondary")
    with pytest.raises(RouterError, match=f"TrafficRoute {service} not found"):
        await router.get_routes(canary)

    await router.reconcile(canary)
    assert await router.get_routes(canary) == Weights(100, 0)  # our own write, read back
    route = await admin.get(TRAFFIC_ROUTES, service)
    assert route["mesh"] == "secondary"
    assert "ownerReferences" not in route["metadata"]
    assert route["spec"] == {
        "sources": [{"match": {"kuma.io/service": "*"}}],
        "destinations": [{"match": {"kuma.io/service": f"{service}_{namespace}_svc_9898"}}],
        "conf": {"split": split(service, namespace, 100, 0)},
    }

    await router.set_routes(canary, Weights(80, 20))
    assert (await admin.get(TRAFFIC_ROUTES, service))["spec"]["conf"]["split"] == split(
        service, namespace, 80, 20)
    assert await router.get_routes(canary) == Weights(80, 20)

    # A reconcile in the middle of a run keeps the split and writes nothing.
    before = kube.resource_version(await admin.get(TRAFFIC_ROUTES, service))
    await router.reconcile(canary)
    assert kube.resource_version(await admin.get(TRAFFIC_ROUTES, service)) == before

    # A port change is written, still keeping the split.
    moved = make_canary(namespace, service, mesh="secondary", port=8080)
    await router.reconcile(moved)
    assert (await admin.get(TRAFFIC_ROUTES, service))["spec"]["conf"]["split"] == split(
        service, namespace, 80, 20, port=8080)

    # Flagger's Finalize does nothing to a TrafficRoute, and neither do we.
    before = kube.resource_version(await admin.get(TRAFFIC_ROUTES, service))
    await router.finalize(moved)
    assert kube.resource_version(await admin.get(TRAFFIC_ROUTES, service)) == before


async def test_steady_calls_make_no_requests(
        cluster: LocalCluster, namespace: str, admin: kube.KubeClient,
        counted_client: kube.KubeClient, router: KumaRouter, caches: SharedInformerFactory,
        service: str,
) -> None:
    canary = make_canary(namespace, service)
    await router.reconcile(canary)
    await router.set_routes(canary, Weights(90, 10))
    await cache_holds(admin, caches, service)

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
    assert dict(counts.by_resource) == {"update trafficroutes": 1}


async def test_a_stale_cache_costs_a_retry_never_a_lost_update(
        cluster: LocalCluster, namespace: str, admin: kube.KubeClient,
        counted_client: kube.KubeClient, router: KumaRouter, service: str,
) -> None:
    canary = make_canary(namespace, service)
    await router.reconcile(canary)
    await router.set_routes(canary, Weights(90, 10))
    snapshot = await admin.get(TRAFFIC_ROUTES, service)
    # Someone else writes after the snapshot: a write based on it must not win blindly.
    edited = json.loads(json.dumps(snapshot))
    edited["metadata"].setdefault("labels", {})["edited"] = "yes"
    await admin.replace(TRAFFIC_ROUTES, edited)

    stale = KumaRouter(ctx=ProviderContext(
        store=kube.ObjectStore(counted_client, caches=FrozenCache(snapshot)),
        settings=Settings(), log=structlog.get_logger("kuma")))
    since = datetime.now(UTC)
    await stale.set_routes(canary, Weights(80, 20))
    counts = await requests_between(cluster, counted_client, since, namespace)
    # The conditional update fails (409), the object is read again, rebuilt and written.
    assert dict(counts.by_resource) == {"update trafficroutes": 2, "get trafficroutes": 1}
    stored = await admin.get(TRAFFIC_ROUTES, service)
    assert stored["spec"]["conf"]["split"] == split(service, namespace, 80, 20)
    assert stored["metadata"]["labels"] == {"edited": "yes"}  # the other write survives
    assert await stale.get_routes(canary) == Weights(80, 20)
