"""The Gateway API router against the real API server, with the upstream Gateway API CRDs.

Every shape the builder produces is created and read back in both API versions, so the real
schema (defaults, pruning, CEL rules) has the last word. The router runs with a real
``SharedInformerFactory`` as its caches and a client with a user agent of its own, so the audit
log shows that a steady ``reconcile`` + ``get_routes`` + identical ``set_routes`` makes no
request and a weight change is one write; a stale cache costs a retry, never a lost update.
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
from flaggerpy import kube
from flaggerpy.affinity import SessionCookies
from flaggerpy.errors import RouterError
from flaggerpy.models.canary import Canary
from flaggerpy.providers.gatewayapi import (
    GatewayAPIRouter,
    build_http_route,
    http_routes,
)
from flaggerpy.routing import ProviderContext, Weights
from flaggerpy.runtime.informer import SharedInformerFactory
from flaggerpy.settings import Settings
from tests.integration.test_istio import FrozenCache, caches_hold, requests_between

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]

GATEWAY = {"name": "gateway"}
FILTERS: dict[str, Any] = {
    "match": [{"uri": {"prefix": "/api"}, "method": {"exact": "GET"},
               "headers": {"x-tenant": {"exact": "a"}}, "queryParams": {"v": {"regex": "[0-9]+"}}},
              {"uri": {"regex": "/v[0-9]+/.*"}}],
    # ReplacePrefixMatch needs exactly one PathPrefix match (a CEL rule of the CRD).
    "rewrite": {"uri": "/", "authority": "backend.example.com"},
    "timeout": "15s",
    "backendTimeout": "5s",
    "headers": {"request": {"add": {"x-a": "1"}, "set": {"x-b": "2"}, "remove": ["x-c"]},
                "response": {"add": {"x-d": "4"}, "remove": ["server"]}},
    "mirror": [{"backendRef": {"name": "podinfo-shadow", "port": 9898}}],
    "corsPolicy": {"allowOrigin": ["https://example.com"], "allowMethods": ["GET", "POST"],
                   "allowHeaders": ["x-a"], "exposeHeaders": ["x-d"], "maxAge": "24h",
                   "allowCredentials": True},
    "hosts": ["www.example.com"],
    "apex": {"labels": {"tier": "edge"}, "annotations": {"example.com/team": "web"}},
}
AB = [{"headers": {"x-canary": {"exact": "insider"}, "user-agent": {"suffix": "Mobile"}}},
      {"queryParams": {"canary": {"exact": "yes"}}}]
AFFINITY = {"cookieName": "flagger-cookie", "primaryCookieName": "primary-cookie",
            "maxAge": 3600, "path": "/", "sameSite": "Strict", "secure": True}


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def client(counted_client: kube.KubeClient) -> kube.KubeClient:
    """The router's client: a user agent no other client shares, for the audit log."""
    return counted_client


@pytest.fixture
def admin(api_client: ApiClient) -> kube.KubeClient:
    """What the test itself reads and writes with (not counted)."""
    return kube.KubeClient(api_client, user_agent=f"gatewayapi-test-admin/{secrets.token_hex(4)}")


@pytest.fixture
async def caches(cluster: LocalCluster, namespace: str) -> AsyncIterator[SharedInformerFactory]:
    watcher = await kube.KubeClient.connect(
        kubeconfig=cluster.kubeconfig,
        user_agent=f"gatewayapi-test-informer/{secrets.token_hex(4)}")
    factory = SharedInformerFactory(watcher, namespace=namespace)
    task = asyncio.create_task(factory.start())
    try:
        yield factory
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await watcher.aclose()


def make_router(client: kube.KubeClient, caches: Any, version: str = "v1") -> GatewayAPIRouter:
    ctx = ProviderContext(store=kube.ObjectStore(client, caches=caches), settings=Settings(),
                          log=structlog.get_logger("gatewayapi"))
    return GatewayAPIRouter(ctx=ctx, variant=version)


@pytest.fixture
def router(client: kube.KubeClient, caches: SharedInformerFactory) -> GatewayAPIRouter:
    return make_router(client, caches)


def canary_object(namespace: str, *, service: dict[str, Any] | None = None,
                  analysis: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": namespace},
        "spec": {
            # Suspended, so a flaggerpy controller another test runs on this shared cluster
            # leaves it alone; the router does not look at `suspend`.
            "suspend": True,
            "provider": "gatewayapi:v1",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898, "gatewayRefs": [GATEWAY], **(service or {})},
            "analysis": {"interval": "10s", "threshold": 5, "stepWeight": 10,
                         **(analysis or {})},
        },
    }


async def store_canary(admin: kube.KubeClient, namespace: str, **spec: Any) -> Canary:
    """Stores a Canary (our CRD, whose defaults fill the refs), so it has a uid and a status."""
    return Canary.model_validate(await admin.create(kube.CANARIES,
                                                    canary_object(namespace, **spec)))


async def reload(admin: kube.KubeClient, canary: Canary) -> Canary:
    return Canary.model_validate(
        await admin.get(kube.CANARIES, canary.name, namespace=canary.namespace))


async def route_of(admin: kube.KubeClient, namespace: str,
                   version: str = "v1") -> dict[str, Any]:
    return await admin.get(http_routes(version), "podinfo", namespace=namespace)


def backends(primary: int, canary: int) -> list[dict[str, Any]]:
    return [{"group": "", "kind": "Service", "name": "podinfo-primary", "port": 9898,
             "weight": primary},
            {"group": "", "kind": "Service", "name": "podinfo-canary", "port": 9898,
             "weight": canary}]


# -- every built route passes the real schema, unchanged -----------------------------------------


def _shapes() -> list[Any]:
    sticky = SessionCookies(canary="flagger-cookie=AbCdEfGhIj", primary="primary-cookie=KlMnOpQrSt")
    expiring = SessionCookies(previous="flagger-cookie=UvWxYzAbCd")
    gamma = {"gatewayRefs": [{"group": "core", "kind": "Service", "name": "podinfo",
                              "port": 9898}]}
    return [
        pytest.param({}, {}, Weights(100, 0), None, id="defaults"),
        pytest.param(gamma, {}, Weights(90, 10), None, id="gamma"),
        pytest.param(FILTERS, {}, Weights(60, 40), None, id="filters"),
        pytest.param({"match": FILTERS["match"], "timeout": "5s"},
                     {"iterations": 5, "stepWeight": None, "match": AB}, Weights(0, 100), None,
                     id="ab"),
        pytest.param({}, {"mirror": True, "mirrorWeight": 30}, Weights(100, 0, mirrored=True),
                     None, id="mirror"),
        pytest.param({"match": FILTERS["match"], "headers": FILTERS["headers"]},
                     {"sessionAffinity": AFFINITY}, Weights(80, 20), sticky, id="sticky"),
        pytest.param({"headers": FILTERS["headers"]}, {"sessionAffinity": AFFINITY},
                     Weights(100, 0), expiring, id="sticky-expiring"),
    ]


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
@pytest.mark.parametrize(("service", "analysis", "weights", "cookies"), _shapes())
async def test_every_built_route_is_stored_as_built(
        namespace: str, admin: kube.KubeClient, service: dict[str, Any],
        analysis: dict[str, Any], weights: Weights, cookies: SessionCookies | None,
        version: str,
) -> None:
    # Through our CRD first, so the refs carry the defaults a stored Canary has.
    canary = await store_canary(admin, namespace, service=service, analysis=analysis)
    built = build_http_route(canary, weights, version=version, cookies=cookies,
                             set_owner_refs=False)
    stored = await admin.create(http_routes(version), built)
    assert stored["spec"] == built["spec"]
    for field in ("labels", "annotations"):
        assert stored["metadata"].get(field) == built["metadata"].get(field), field


# -- the router ---------------------------------------------------------------------------------


async def test_reconcile_set_and_get_routes(
        namespace: str, admin: kube.KubeClient, router: GatewayAPIRouter,
) -> None:
    canary = await store_canary(admin, namespace, service={
        "hosts": ["www.example.com"], "apex": {"labels": {"tier": "edge"}}})
    await router.reconcile(canary)
    assert await router.get_routes(canary) == Weights(100, 0)  # read back our own write

    route = await route_of(admin, namespace)
    assert route["spec"] == {
        "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                        "name": "gateway"}],
        "hostnames": ["www.example.com"],
        "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                   "backendRefs": backends(100, 0)}]}
    assert route["metadata"]["labels"] == {"tier": "edge"}
    assert route["metadata"]["ownerReferences"] == [{
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo",
        "uid": canary.metadata.uid if canary.metadata else None, "controller": True,
        "blockOwnerDeletion": True}]

    await router.set_routes(canary, Weights(80, 20))
    assert (await route_of(admin, namespace))["spec"]["rules"][0]["backendRefs"] == backends(
        80, 20)
    assert await router.get_routes(canary) == Weights(80, 20)

    # A reconcile in the middle of a run keeps the split, and writes nothing if nothing changed.
    before = await route_of(admin, namespace)
    await router.reconcile(canary)
    assert kube.resource_version(await route_of(admin, namespace)) == kube.resource_version(
        before)

    # A spec change is written, still keeping the split.
    edited = canary_object(namespace, service={
        "hosts": ["www.example.com"], "apex": {"labels": {"tier": "edge"}}, "timeout": "3s"})
    edited["metadata"] = canary.metadata.to_dict() if canary.metadata else {}
    changed = Canary.model_validate(edited)
    await router.reconcile(changed)
    [rule] = (await route_of(admin, namespace))["spec"]["rules"]
    assert rule["timeouts"] == {"request": "3s"}
    assert rule["backendRefs"] == backends(80, 20)

    await router.set_routes(changed, Weights(100, 0, mirrored=True))
    assert await router.get_routes(changed) == Weights(100, 0, mirrored=True)

    # Flagger reverts nothing for Gateway API: finalize writes nothing.
    before = await route_of(admin, namespace)
    await router.finalize(changed)
    assert kube.resource_version(await route_of(admin, namespace)) == kube.resource_version(
        before)

    # The ownerReference is real: deleting the Canary garbage-collects the route.
    await admin.delete(kube.CANARIES, canary.name, namespace=namespace)

    async def collected() -> bool:
        return not (await admin.list(http_routes("v1"), namespace=namespace)).items

    await eventually(collected, within=60, what="the HTTPRoute to be garbage-collected")


async def test_v1beta1_writes_and_reads_its_own_version(
        namespace: str, admin: kube.KubeClient, client: kube.KubeClient,
        caches: SharedInformerFactory,
) -> None:
    router = make_router(client, caches, "v1beta1")
    canary = await store_canary(admin, namespace)
    await router.reconcile(canary)
    await router.set_routes(canary, Weights(70, 30))
    route = await route_of(admin, namespace, "v1beta1")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1beta1"
    assert route["spec"]["rules"][0]["backendRefs"] == backends(70, 30)
    assert await router.get_routes(canary) == Weights(70, 30)


async def test_get_routes_without_a_route_and_without_gateway_refs(
        namespace: str, admin: kube.KubeClient, router: GatewayAPIRouter,
) -> None:
    canary = await store_canary(admin, namespace)
    with pytest.raises(RouterError, match=f"HTTPRoute podinfo.{namespace} not found"):
        await router.get_routes(canary)
    bare = canary_object(namespace)
    bare["spec"]["service"].pop("gatewayRefs")
    with pytest.raises(RouterError, match="GatewayRefs must be specified"):
        await router.reconcile(Canary.model_validate(bare))


async def test_a_gateway_that_has_not_accepted_the_route_holds_get_routes(
        namespace: str, admin: kube.KubeClient, router: GatewayAPIRouter,
) -> None:
    canary = await store_canary(admin, namespace)
    await router.reconcile(canary)
    await router.set_routes(canary, Weights(90, 10))
    route = await route_of(admin, namespace)
    parent = route["spec"]["parentRefs"][0]

    async def gateway_says(status: str, observed: int) -> None:
        await admin.patch(http_routes("v1"), "podinfo", {"status": {"parents": [{
            "parentRef": parent, "controllerName": "example.com/gateway-controller",
            "conditions": [{"type": "Accepted", "status": status, "reason": "Accepted",
                            "message": "", "observedGeneration": observed,
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}]}},
            namespace=namespace, subresource="status")

    generation = int(route["metadata"]["generation"])
    await gateway_says("True", generation - 1)
    with pytest.raises(RouterError, match="parent gateway is not ready"):
        await _eventually_raises(router, canary)
    await gateway_says("True", generation)
    assert await _eventually_equal(router, canary, Weights(90, 10))


async def _eventually_raises(router: GatewayAPIRouter, canary: Canary) -> None:
    """get_routes once the cache holds the status write (the watch delivers it shortly)."""
    for _ in range(100):
        await router.get_routes(canary)
        await asyncio.sleep(0.1)


async def _eventually_equal(router: GatewayAPIRouter, canary: Canary, weights: Weights) -> bool:
    for _ in range(100):
        with contextlib.suppress(RouterError):
            if await router.get_routes(canary) == weights:
                return True
        await asyncio.sleep(0.1)
    return False


async def test_session_affinity_cookies_are_kept_in_the_status(
        namespace: str, admin: kube.KubeClient, router: GatewayAPIRouter,
) -> None:
    canary = await store_canary(admin, namespace, analysis={"sessionAffinity": AFFINITY})
    await router.reconcile(canary)
    await router.set_routes(canary, Weights(90, 10))
    status = (await reload(admin, canary)).status
    assert status is not None
    cookie, primary = status.session_affinity_cookie, status.primary_session_affinity_cookie
    assert cookie
    assert cookie.startswith("flagger-cookie=")
    assert primary
    assert primary.startswith("primary-cookie=")
    sticky, sticky_primary, weighted = (await route_of(admin, namespace))["spec"]["rules"]
    assert sticky_primary["backendRefs"] == backends(100, 0)
    name, _, value = cookie.partition("=")
    assert sticky["matches"][0]["headers"][0]["value"] == f".*{name}.*{value}.*"
    assert weighted["backendRefs"][1]["filters"][0]["responseHeaderModifier"]["add"] == [
        {"name": "Set-Cookie", "value": f"{cookie}; Max-Age=3600; Path=/; SameSite=Strict; Secure"}]

    # The cookie is kept for the whole run, and expired at promotion.
    await router.set_routes(canary, Weights(80, 20))
    assert (await reload(admin, canary)).status.session_affinity_cookie == cookie  # type: ignore[union-attr]
    await router.set_routes(canary, Weights(100, 0))
    status = (await reload(admin, canary)).status
    assert status is not None
    assert status.previous_session_affinity_cookie == cookie
    assert not status.session_affinity_cookie
    expire, weighted = (await route_of(admin, namespace))["spec"]["rules"]
    assert expire["filters"][0]["responseHeaderModifier"]["add"] == [
        {"name": "Set-Cookie", "value": f"{cookie}; Max-Age=-1"}]
    assert await router.get_routes(canary) == Weights(100, 0)


async def test_a_users_route_is_taken_over_and_left_on_deletion(
        namespace: str, admin: kube.KubeClient, router: GatewayAPIRouter,
) -> None:
    user = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "podinfo", "namespace": namespace,
                         "annotations": {"example.com/owner": "team"}},
            "spec": {"parentRefs": [GATEWAY],
                     "rules": [{"backendRefs": [{"name": "podinfo", "port": 9898}]}]}}
    await admin.create(http_routes("v1"), user)
    canary = await store_canary(admin, namespace)

    await router.reconcile(canary)
    route = await route_of(admin, namespace)
    assert "ownerReferences" not in route["metadata"]  # the user's, not ours to collect
    assert route["metadata"]["annotations"]["example.com/owner"] == "team"
    assert await router.get_routes(canary) == Weights(100, 0)

    before = kube.resource_version(route)
    await router.finalize(canary)
    assert kube.resource_version(await route_of(admin, namespace)) == before


async def test_a_stale_cache_costs_a_retry_never_a_lost_update(
        cluster: LocalCluster, namespace: str, admin: kube.KubeClient,
        client: kube.KubeClient, router: GatewayAPIRouter, caches: SharedInformerFactory,
) -> None:
    canary = await store_canary(admin, namespace)
    await router.reconcile(canary)
    await router.set_routes(canary, Weights(90, 10))
    await caches_hold(admin, caches, namespace, [(http_routes("v1"), "podinfo")])

    # Steady: nothing is read from or written to the API server.
    since = datetime.now(UTC)
    for _ in range(3):
        await router.reconcile(canary)
        assert await router.get_routes(canary) == Weights(90, 10)
        await router.set_routes(canary, Weights(90, 10))
    counts = await requests_between(cluster, client, since, namespace)
    assert counts.total == 0, counts.by_resource

    snapshot = await route_of(admin, namespace)
    # Someone else writes after the snapshot: a write based on it must not win blindly.
    edited = json.loads(json.dumps(snapshot))
    edited["spec"]["hostnames"] = ["edited.example.com"]
    await admin.replace(http_routes("v1"), edited)

    stale = make_router(client, FrozenCache(snapshot))
    since = datetime.now(UTC)
    await stale.set_routes(canary, Weights(80, 20))
    counts = await requests_between(cluster, client, since, namespace)
    # The conditional update fails (409), the object is read again, rebuilt and written.
    assert dict(counts.by_resource) == {"update httproutes": 2, "get httproutes": 1}
    route = await route_of(admin, namespace)
    assert route["spec"]["rules"][0]["backendRefs"] == backends(80, 20)
    assert "hostnames" not in route["spec"]
    assert await stale.get_routes(canary) == Weights(80, 20)
