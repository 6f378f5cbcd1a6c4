"""The Gloo router against the real API server, with Gloo's upstream RouteTable and Upstream
CRDs installed.

The router runs with a real ``SharedInformerFactory`` and a client of its own, so the audit log
shows that steady calls make no request and that a weight change is one write. Each test stores
a (suspended) Canary so the generated objects have a real owner, and the ``-primary`` and
``-canary`` Services the Upstreams copy their selectors from.
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
from flaggerpy.providers.gloo import (
    ROUTE_TABLES,
    UPSTREAMS,
    GlooRouter,
    build_route_table,
    build_upstream,
)
from flaggerpy.routing import ProviderContext, Weights
from flaggerpy.runtime.informer import SharedInformerFactory
from flaggerpy.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def admin(api_client: ApiClient) -> kube.KubeClient:
    """What the test itself reads and writes with (not counted)."""
    return kube.KubeClient(api_client, user_agent=f"gloo-test-admin/{secrets.token_hex(4)}")


@pytest.fixture
async def caches(cluster: LocalCluster, namespace: str) -> AsyncIterator[SharedInformerFactory]:
    """A started informer factory for the test namespace, on a connection of its own."""
    watcher = await kube.KubeClient.connect(
        kubeconfig=cluster.kubeconfig, user_agent=f"gloo-test-informer/{secrets.token_hex(4)}")
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
                set_owner_refs: bool = True) -> GlooRouter:
    ctx = ProviderContext(store=kube.ObjectStore(client, caches=caches), settings=Settings(),
                          log=structlog.get_logger("gloo"), set_owner_refs=set_owner_refs)
    return GlooRouter(ctx=ctx, variant="")


@pytest.fixture
def router(counted_client: kube.KubeClient, caches: SharedInformerFactory) -> GlooRouter:
    return make_router(counted_client, caches)


CONFIG_SPEC: dict[str, Any] = {
    "circuitBreakers": {"maxConnections": 50},
    "connectionConfig": {"connectTimeout": "2s", "maxRequestsPerConnection": 100},
    "kube": {"serviceName": "placeholder", "serviceNamespace": "default", "servicePort": 9898},
    "loadBalancerConfig": {"roundRobin": {}},
    "useHttp2": False,
}


def canary_object(namespace: str, *, upstream_ref: bool = False,
                  match: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    analysis: dict[str, Any] = {"interval": "10s", "threshold": 5, "stepWeight": 10}
    if match:
        analysis = {"interval": "10s", "threshold": 5, "iterations": 2, "match": match}
    spec: dict[str, Any] = {
        # Suspended, so a flaggerpy controller another test runs on this shared cluster leaves
        # it alone; the router does not look at `suspend`.
        "suspend": True,
        "provider": "gloo",
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "service": {"port": 9898},
        "analysis": analysis,
    }
    if upstream_ref:
        spec["upstreamRef"] = {"apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
                               "name": "config-upstream", "namespace": namespace}
    return {"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": namespace}, "spec": spec}


async def store_world(admin: kube.KubeClient, namespace: str, **canary: Any) -> Canary:
    """The Canary (so it has a uid to own the objects), the config Upstream and the two
    Services the generated Upstreams point at."""
    await admin.create(UPSTREAMS, {
        "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
        "metadata": {"name": "config-upstream", "namespace": namespace}, "spec": CONFIG_SPEC})
    for name, app in (("podinfo-primary", "podinfo-primary"), ("podinfo-canary", "podinfo")):
        await admin.create(kube.SERVICES, {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"app": app},
                     "ports": [{"name": "http", "port": 9898, "targetPort": 9898}]}})
    return Canary.model_validate(await admin.create(kube.CANARIES,
                                                    canary_object(namespace, **canary)))


def destinations(route_table: dict[str, Any]) -> list[tuple[str, int]]:
    return [(d["destination"]["upstream"]["name"], d.get("weight", 0))
            for d in route_table["spec"]["routes"][0]["routeAction"]["multi"]["destinations"]]


async def cache_holds(admin: kube.KubeClient, caches: SharedInformerFactory,
                      resource: kube.Resource, namespace: str, name: str) -> None:
    key = kube.key_of({"metadata": {"namespace": namespace, "name": name}})

    async def check() -> bool:
        cached = caches.informer(resource).get(key)
        live = await admin.get(resource, name, namespace=namespace)
        return cached is not None and (
            kube.resource_version(cached) == kube.resource_version(live))

    await eventually(check, within=30, what=f"the informer to hold the stored {name}")


# -- the tests ----------------------------------------------------------------------------------


async def test_the_built_objects_are_stored_as_built(
        namespace: str, admin: kube.KubeClient) -> None:
    """The real schemas keep every field we write (no pruning, hence no endless rewrites)."""
    canary = Canary.model_validate(canary_object(namespace, upstream_ref=True, match=[
        {"headers": {"x-canary": {"exact": "insider"}, "x-user": {"regex": "^b.*"}}}]))
    table = build_route_table(canary, Weights.to_canary(30), None)
    stored = await admin.create(ROUTE_TABLES, table)
    assert stored["spec"] == table["spec"]
    assert stored["metadata"]["annotations"] == table["metadata"]["annotations"]
    config = {"spec": {**CONFIG_SPEC, "useHttp2": True, "initialStreamWindowSize": 65536,
                       "httpProxyHostname": "proxy.example.com:443",
                       "sslConfig": {"sni": "podinfo.example.com"}}}
    upstream = build_upstream(canary, canary_side=True, selector={"app": "podinfo"},
                              config=config, existing=None)
    assert upstream is not None
    stored = await admin.create(UPSTREAMS, upstream)
    assert stored["spec"] == upstream["spec"]


async def test_reconcile_set_get_and_finalize(
        namespace: str, admin: kube.KubeClient, router: GlooRouter) -> None:
    canary = await store_world(admin, namespace, upstream_ref=True)
    primary_up = f"{namespace}-podinfo-primaryupstream-9898"
    canary_up = f"{namespace}-podinfo-canaryupstream-9898"
    with pytest.raises(RouterError, match=f"RouteTable podinfo.{namespace} not found"):
        await router.get_routes(canary)

    await router.reconcile(canary)
    assert await router.get_routes(canary) == Weights(100, 0)  # our own write, read back
    table = await admin.get(ROUTE_TABLES, "podinfo", namespace=namespace)
    assert destinations(table) == [(primary_up, 100), (canary_up, 0)]
    owners = table["metadata"]["ownerReferences"]
    assert [(o["kind"], o["name"], o["uid"]) for o in owners] == [
        ("Canary", "podinfo", canary.metadata.uid)]
    for name, service, app in ((primary_up, "podinfo-primary", "podinfo-primary"),
                               (canary_up, "podinfo-canary", "podinfo")):
        upstream = await admin.get(UPSTREAMS, name, namespace=namespace)
        assert upstream["spec"] == {
            "circuitBreakers": {"maxConnections": 50},
            "connectionConfig": {"connectTimeout": "2s", "maxRequestsPerConnection": 100},
            "loadBalancerConfig": {"roundRobin": {}},
            "kube": {"serviceName": service, "serviceNamespace": namespace,
                     "servicePort": 9898, "selector": {"app": app}}}
        assert upstream["metadata"]["ownerReferences"][0]["uid"] == canary.metadata.uid

    await router.set_routes(canary, Weights(80, 20))
    assert destinations(await admin.get(ROUTE_TABLES, "podinfo", namespace=namespace)) == [
        (primary_up, 80), (canary_up, 20)]
    assert await router.get_routes(canary) == Weights(80, 20)

    # A reconcile in the middle of a run keeps the split and writes nothing.
    before = kube.resource_version(await admin.get(ROUTE_TABLES, "podinfo", namespace=namespace))
    await router.reconcile(canary)
    assert kube.resource_version(
        await admin.get(ROUTE_TABLES, "podinfo", namespace=namespace)) == before

    # The config Upstream's load balancer follows into both generated Upstreams (Flagger's
    # test/gloo: slowStartConfig), and nothing else of it does.
    config = await admin.get(UPSTREAMS, "config-upstream", namespace=namespace)
    slow = {"roundRobin": {"slowStartConfig": {"slowStartWindow": "2m",
                                               "minWeightPercent": 20}}}
    config["spec"].update(loadBalancerConfig=slow, circuitBreakers={"maxConnections": 1})
    await admin.replace(UPSTREAMS, config)

    async def synced() -> bool:
        await router.reconcile(canary)
        stored = await admin.get(UPSTREAMS, canary_up, namespace=namespace)
        return bool(stored["spec"].get("loadBalancerConfig") == slow)

    await eventually(synced, within=30, what="the canary Upstream to follow the config")
    stored = await admin.get(UPSTREAMS, primary_up, namespace=namespace)
    assert stored["spec"]["loadBalancerConfig"] == slow
    assert stored["spec"]["circuitBreakers"] == {"maxConnections": 50}
    assert destinations(await admin.get(ROUTE_TABLES, "podinfo", namespace=namespace)) == [
        (primary_up, 80), (canary_up, 20)]

    # Flagger's Finalize does nothing (revertOnDeletion), and neither do we.
    before = kube.resource_version(await admin.get(ROUTE_TABLES, "podinfo", namespace=namespace))
    await router.finalize(canary)
    assert kube.resource_version(
        await admin.get(ROUTE_TABLES, "podinfo", namespace=namespace)) == before


async def test_ab_matchers_and_a_missing_config_upstream(
        namespace: str, admin: kube.KubeClient, router: GlooRouter) -> None:
    canary = await store_world(admin, namespace, match=[
        {"headers": {"x-canary": {"exact": "insider"}}}])
    await router.reconcile(canary)
    await router.set_routes(canary, Weights.all_canary())
    table = await admin.get(ROUTE_TABLES, "podinfo", namespace=namespace)
    route = table["spec"]["routes"][0]
    assert route["matchers"] == [{"headers": [{"name": "x-canary", "value": "insider"}]}]
    assert destinations(table)[0][1] == 0
    assert "weight" not in route["routeAction"]["multi"]["destinations"][0]
    assert await router.get_routes(canary) == Weights.all_canary()

    missing = Canary.model_validate({**canary.model_dump(by_alias=True, exclude_none=True),
                                     "spec": {**canary_object(namespace)["spec"], "upstreamRef": {
                                         "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
                                         "name": "nowhere"}}})
    with pytest.raises(RouterError, match=f"config upstream nowhere.{namespace} not found"):
        await router.reconcile(missing)


async def test_no_owner_reference_when_the_routing_objects_live_on_another_cluster(
        namespace: str, admin: kube.KubeClient, counted_client: kube.KubeClient,
        caches: SharedInformerFactory) -> None:
    canary = await store_world(admin, namespace)
    await make_router(counted_client, caches, set_owner_refs=False).reconcile(canary)
    table = await admin.get(ROUTE_TABLES, "podinfo", namespace=namespace)
    assert "ownerReferences" not in table["metadata"]
    upstream = await admin.get(UPSTREAMS, f"{namespace}-podinfo-canaryupstream-9898",
                               namespace=namespace)
    assert "ownerReferences" not in upstream["metadata"]
    assert "loadBalancerConfig" not in upstream["spec"]  # no upstreamRef: nothing copied


async def test_steady_calls_make_no_requests(
        cluster: LocalCluster, namespace: str, admin: kube.KubeClient,
        counted_client: kube.KubeClient, router: GlooRouter, caches: SharedInformerFactory,
) -> None:
    canary = await store_world(admin, namespace, upstream_ref=True)
    await router.reconcile(canary)
    await router.set_routes(canary, Weights(90, 10))
    await cache_holds(admin, caches, ROUTE_TABLES, namespace, "podinfo")
    for role in ("primary", "canary"):
        await cache_holds(admin, caches, UPSTREAMS, namespace,
                          f"{namespace}-podinfo-{role}upstream-9898")

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
    assert dict(counts.by_resource) == {"update routetables": 1}


async def test_a_stale_cache_costs_a_retry_never_a_lost_update(
        cluster: LocalCluster, namespace: str, admin: kube.KubeClient,
        counted_client: kube.KubeClient, router: GlooRouter,
) -> None:
    canary = await store_world(admin, namespace)
    await router.reconcile(canary)
    await router.set_routes(canary, Weights(90, 10))
    snapshot = await admin.get(ROUTE_TABLES, "podinfo", namespace=namespace)
    # Someone else writes after the snapshot: a write based on it must not win blindly.
    edited = json.loads(json.dumps(snapshot))
    edited["metadata"].setdefault("labels", {})["edited"] = "yes"
    await admin.replace(ROUTE_TABLES, edited)

    stale = make_router(counted_client, FrozenCache(snapshot))
    since = datetime.now(UTC)
    await stale.set_routes(canary, Weights(80, 20))
    counts = await requests_between(cluster, counted_client, since, namespace)
    # The conditional update fails (409), the object is read again, rebuilt and written.
    assert dict(counts.by_resource) == {"update routetables": 2, "get routetables": 1}
    stored = await admin.get(ROUTE_TABLES, "podinfo", namespace=namespace)
    assert destinations(stored)[1] == (f"{namespace}-podinfo-canaryupstream-9898", 20)
    assert stored["metadata"]["labels"] == {"edited": "yes"}  # the other write survives
    assert await stale.get_routes(canary) == Weights(80, 20)
