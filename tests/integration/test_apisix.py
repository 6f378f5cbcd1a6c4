"""The APISIX router against the real API server, with APISIX's upstream ApisixRoute CRD.

The user's ApisixRoute is stored first (the router only reads it), then the router writes the
canary route ``<route>-<svc>-canary`` next to it. The Canary is stored too, so the canary
route's ownerReference names a real object. The router runs with a real
``SharedInformerFactory`` and a client of its own, so the audit log shows that steady calls
make no request and that a weight change is one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
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
from flaggerpy.providers.apisix import APISIX_ROUTES, ApisixRouter, build_canary_route
from flaggerpy.routing import ProviderContext, Weights
from flaggerpy.runtime.informer import SharedInformerFactory
from flaggerpy.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]

CANARY_ROUTE = "podinfo-podinfo-canary"


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def admin(api_client: ApiClient) -> kube.KubeClient:
    """What the test itself reads and writes with (not counted)."""
    return kube.KubeClient(api_client, user_agent=f"apisix-test-admin/{secrets.token_hex(4)}")


@pytest.fixture
async def caches(cluster: LocalCluster, namespace: str) -> AsyncIterator[SharedInformerFactory]:
    """A started informer factory for the test namespace, on a connection of its own."""
    watcher = await kube.KubeClient.connect(
        kubeconfig=cluster.kubeconfig, user_agent=f"apisix-test-informer/{secrets.token_hex(4)}")
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
                set_owner_refs: bool = True) -> ApisixRouter:
    ctx = ProviderContext(store=kube.ObjectStore(client, caches=caches), settings=Settings(),
                          log=structlog.get_logger("apisix"), set_owner_refs=set_owner_refs)
    return ApisixRouter(ctx=ctx, variant="")


@pytest.fixture
def router(counted_client: kube.KubeClient, caches: SharedInformerFactory) -> ApisixRouter:
    return make_router(counted_client, caches)


def user_route_object(namespace: str) -> dict[str, Any]:
    """The golden cases' input route (``apisix/*/input.yaml``) plus a route to another service,
    which the canary route must not copy."""
    return {
        "apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute",
        "metadata": {"name": "podinfo", "namespace": namespace, "labels": {"app": "podinfo"},
                     "annotations": {"example.com/team": "web"}},
        "spec": {"http": [
            {"name": "other", "match": {"paths": ["/other/*"]},
             "backends": [{"serviceName": "other", "servicePort": 8080}]},
            {"name": "method",
             "match": {"hosts": ["app.example.com"], "methods": ["GET"], "paths": ["/*"]},
             "backends": [{"serviceName": "podinfo", "servicePort": 80}],
             "plugins": [{"name": "prometheus", "enable": True,
                          "config": {"disable": False, "prefer_name": True}}]},
        ]},
    }


@pytest.fixture
async def user_route(admin: kube.KubeClient, namespace: str) -> dict[str, Any]:
    return await admin.create(APISIX_ROUTES, user_route_object(namespace))


async def store_canary(admin: kube.KubeClient, namespace: str) -> Canary:
    """Stores a Canary (our CRD), so it has a uid to own the canary route. Suspended, so a
    flaggerpy controller another test runs on this shared cluster leaves it alone."""
    return Canary.model_validate(await admin.create(kube.CANARIES, {
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": namespace},
        "spec": {
            "suspend": True,
            "provider": "apisix",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 80, "targetPort": "http"},
            "routeRef": {"apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute",
                         "name": "podinfo"},
            "analysis": {"interval": "10s", "threshold": 5, "stepWeight": 10},
        },
    }))


def backends(primary: int, canary: int) -> list[dict[str, Any]]:
    return [{"serviceName": "podinfo-primary", "servicePort": 80, "weight": primary},
            {"serviceName": "podinfo-canary", "servicePort": 80, "weight": canary}]


async def route_of(admin: kube.KubeClient, namespace: str) -> dict[str, Any]:
    return await admin.get(APISIX_ROUTES, CANARY_ROUTE, namespace=namespace)


async def cache_holds(admin: kube.KubeClient, caches: SharedInformerFactory,
                      namespace: str) -> None:
    """Waits until the informer holds the stored version of the canary route."""
    key = kube.key_of({"metadata": {"namespace": namespace, "name": CANARY_ROUTE}})

    async def check() -> bool:
        cached = caches.informer(APISIX_ROUTES).get(key)
        live = await route_of(admin, namespace)
        return cached is not None and kube.resource_version(cached) == kube.resource_version(live)

    await eventually(check, within=30, what="the informer to hold the stored canary route")


# -- the tests ----------------------------------------------------------------------------------


async def test_the_built_canary_route_is_stored_as_built(
        namespace: str, admin: kube.KubeClient, user_route: dict[str, Any]) -> None:
    canary = await store_canary(admin, namespace)
    built = build_canary_route(canary, user_route, Weights.to_canary(30), None)
    stored = await admin.create(APISIX_ROUTES, built)
    assert stored["spec"] == built["spec"]  # the schema defaults and prunes nothing
    assert stored["metadata"]["labels"] == {"app": "podinfo"}
    assert stored["metadata"]["annotations"] == {"example.com/team": "web"}
    assert stored["metadata"]["ownerReferences"][0]["uid"] == canary.metadata.uid


async def test_reconcile_set_get_and_finalize(
        namespace: str, admin: kube.KubeClient, router: ApisixRouter,
        user_route: dict[str, Any]) -> None:
    canary = await store_canary(admin, namespace)
    with pytest.raises(RouterError, match=f"apisix route {CANARY_ROUTE}.{namespace} not found"):
        await router.get_routes(canary)

    await router.reconcile(canary)
    assert await router.get_routes(canary) == Weights(100, 0)  # our own write, read back
    route = await route_of(admin, namespace)
    assert route["metadata"]["ownerReferences"][0]["name"] == "podinfo"
    assert route["spec"] == {"http": [{
        "name": "method",
        "match": {"hosts": ["app.example.com"], "methods": ["GET"], "paths": ["/*"]},
        "backends": backends(100, 0),
        "plugins": [{"name": "prometheus", "enable": True,
                     "config": {"disable": False, "prefer_name": True}}],
        "priority": 10000,
        "websocket": False,
    }]}

    await router.set_routes(canary, Weights(80, 20))
    assert (await route_of(admin, namespace))["spec"]["http"][0]["backends"] == backends(80, 20)
    assert await router.get_routes(canary) == Weights(80, 20)

    # A reconcile in the middle of a run keeps the split and writes nothing.
    before = kube.resource_version(await route_of(admin, namespace))
    await router.reconcile(canary)
    assert kube.resource_version(await route_of(admin, namespace)) == before

    # A change to the user's route is copied, still keeping the split.
    edited = copy.deepcopy(await admin.get(APISIX_ROUTES, "podinfo", namespace=namespace))
    edited["spec"]["http"][1]["match"]["paths"] = ["/v2/*"]
    edited = await admin.replace(APISIX_ROUTES, edited)

    async def copied() -> bool:
        await router.reconcile(canary)
        http = (await route_of(admin, namespace))["spec"]["http"][0]
        return http["match"]["paths"] == ["/v2/*"] and http["backends"] == backends(80, 20)

    await eventually(copied, within=30, what="the user route's change in the canary route")

    # Flagger's Finalize changes nothing (revertOnDeletion), and the user's route was never
    # written by the router.
    before = kube.resource_version(await route_of(admin, namespace))
    await router.finalize(canary)
    assert kube.resource_version(await route_of(admin, namespace)) == before
    user = await admin.get(APISIX_ROUTES, "podinfo", namespace=namespace)
    assert kube.resource_version(user) == kube.resource_version(edited)


async def test_no_owner_reference_when_the_routes_live_on_another_cluster(
        namespace: str, admin: kube.KubeClient, counted_client: kube.KubeClient,
        caches: SharedInformerFactory, user_route: dict[str, Any]) -> None:
    canary = await store_canary(admin, namespace)
    await make_router(counted_client, caches, set_owner_refs=False).reconcile(canary)
    assert "ownerReferences" not in (await route_of(admin, namespace))["metadata"]


async def test_a_missing_or_uncopyable_user_route_is_a_router_error(
        namespace: str, admin: kube.KubeClient, router: ApisixRouter) -> None:
    canary = await store_canary(admin, namespace)
    with pytest.raises(RouterError, match=f"APISIX route podinfo.{namespace}"):
        await router.reconcile(canary)
    route = user_route_object(namespace)
    del route["spec"]["http"][1]
    await admin.create(APISIX_ROUTES, route)

    async def refused() -> bool:
        try:
            await router.reconcile(canary)
        except RouterError as exc:
            return "Can not find podinfo backend" in str(exc)
        return False

    await eventually(refused, within=30, what="the route without a podinfo backend refused")
    with pytest.raises(kube.NotFoundError):
        await route_of(admin, namespace)


async def test_steady_calls_make_no_requests(
        cluster: LocalCluster, namespace: str, admin: kube.KubeClient,
        counted_client: kube.KubeClient, router: ApisixRouter, caches: SharedInformerFactory,
        user_route: dict[str, Any],
) -> None:
    canary = await store_canary(admin, namespace)
    await router.reconcile(canary)
    await router.set_routes(canary, Weights(90, 10))
    await cache_holds(admin, caches, namespace)

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
    assert dict(counts.by_resource) == {"update apisixroutes": 1}


async def test_a_stale_cache_costs_a_retry_never_a_lost_update(
        cluster: LocalCluster, namespace: str, admin: kube.KubeClient,
        counted_client: kube.KubeClient, router: ApisixRouter, user_route: dict[str, Any],
) -> None:
    canary = await store_canary(admin, namespace)
    await router.reconcile(canary)
    await router.set_routes(canary, Weights(90, 10))
    snapshot = await route_of(admin, namespace)
    # Someone else writes after the snapshot: a write based on it must not win blindly.
    edited = json.loads(json.dumps(snapshot))
    edited["metadata"]["labels"]["edited"] = "yes"
    await admin.replace(APISIX_ROUTES, edited)

    stale = make_router(counted_client, FrozenCache(snapshot, user_route))
    since = datetime.now(UTC)
    await stale.set_routes(canary, Weights(80, 20))
    counts = await requests_between(cluster, counted_client, since, namespace)
    # The conditional update fails (409), the object is read again, rebuilt and written.
    assert dict(counts.by_resource) == {"update apisixroutes": 2, "get apisixroutes": 1}
    stored = await route_of(admin, namespace)
    assert stored["spec"]["http"][0]["backends"] == backends(80, 20)
    assert stored["metadata"]["labels"] == {"app": "podinfo", "edited": "yes"}  # it survives
    assert await stale.get_routes(canary) == Weights(80, 20)
