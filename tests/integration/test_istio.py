"""The Istio router against the real API server, with the upstream Istio CRDs installed.

Every object the builders can produce is created and read back, so the real schema (pruning,
CEL rules, oneOfs) has the last word and a field it would drop shows up as a difference. The
router itself runs with a real ``SharedInformerFactory`` as its caches and a client with a user
agent of its own: the audit log then shows that a steady ``reconcile`` + ``get_routes`` +
identical ``set_routes`` makes no request at all, and that a weight change is one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
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
from flaggerpy.affinity import SessionCookies
from flaggerpy.errors import RouterError
from flaggerpy.models.canary import Canary
from flaggerpy.providers.istio import (
    DESTINATION_RULES,
    ORIGINAL_CONFIGURATION,
    VIRTUAL_SERVICES,
    IstioRouter,
    build_destination_rule,
    build_virtual_service,
)
from flaggerpy.routing import ProviderContext, Weights
from flaggerpy.runtime.informer import SharedInformerFactory
from flaggerpy.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]

KUBECTL = "kubectl.kubernetes.io/last-applied-configuration"
TRAFFIC_POLICY = {
    "connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE", "http1MaxPendingRequests": 100,
                                "http2MaxRequests": 1000, "idleTimeout": "30s",
                                "maxRequestsPerConnection": 10, "maxRetries": 3}},
    "loadBalancer": {
        "consistentHash": {"httpCookie": {"name": "user", "path": "/", "ttl": "0s"},
                           "minimumRingSize": 1024},
        "localityLbSetting": {"enabled": True,
                              "distribute": [{"from": "eu/*", "to": {"eu/*": 100}}]},
        "warmupDurationSecs": "60s",
    },
    "outlierDetection": {"baseEjectionTime": "30s", "consecutive5xxErrors": 5,
                         "consecutiveGatewayErrors": 3, "consecutiveLocalOriginFailures": 2,
                         "interval": "10s", "maxEjectionPercent": 50, "minHealthPercent": 20,
                         "splitExternalLocalOriginErrors": True},
    "tls": {"mode": "ISTIO_MUTUAL", "sni": "podinfo.test", "subjectAltNames": ["spiffe://x"]},
}
HTTP_FIELDS: dict[str, Any] = {
    "match": [{"uri": {"prefix": "/api"}, "headers": {"x-tenant": {"exact": "a"}},
               "method": {"exact": "GET"}, "queryParams": {"v": {"regex": "[0-9]+"}},
               "ignoreUriCase": True, "withoutHeaders": {"x-debug": {"exact": "1"}}},
              {"uri": {"regex": "/v[0-9]+/.*"}, "authority": {"prefix": "app."}}],
    "rewrite": {"uri": "/", "authority": "backend"},
    "timeout": "5s",
    "retries": {"attempts": 3, "perTryTimeout": "1s", "retryOn": "5xx,gateway-error"},
    "headers": {"request": {"add": {"x-a": "1"}, "set": {"x-b": "2"}, "remove": ["x-c"]},
                "response": {"add": {"x-d": "4"}, "remove": ["server"]}},
    "corsPolicy": {"allowOrigins": [{"exact": "https://example.com"}, {"regex": ".*\\.ex"}],
                   "allowMethods": ["GET", "POST"], "allowHeaders": ["x-a"],
                   "exposeHeaders": ["x-d"], "maxAge": "24h", "allowCredentials": True},
    "gateways": ["istio-system/public", "mesh"],
    "hosts": ["app.example.com"],
    "portDiscovery": True,
    "trafficPolicy": TRAFFIC_POLICY,
    "apex": {"labels": {"tier": "edge"}, "annotations": {"example.com/team": "web"}},
}
AB = [{"headers": {"x-canary": {"exact": "insider"}, "user-agent": {"suffix": "Mobile"}}},
      {"queryParams": {"canary": {"exact": "yes"}}, "sourceLabels": {"app": "tester"}}]
AFFINITY = {"cookieName": "flagger-cookie", "primaryCookieName": "primary-cookie",
            "maxAge": 3600, "domain": "example.com", "httpOnly": True, "partitioned": True,
            "path": "/", "sameSite": "Strict", "secure": True}


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def client(counted_client: kube.KubeClient) -> kube.KubeClient:
    """The router's client: a user agent no other client shares, for the audit log."""
    return counted_client


@pytest.fixture
def admin(api_client: ApiClient) -> kube.KubeClient:
    """What the test itself reads and writes with (not counted)."""
    return kube.KubeClient(api_client, user_agent=f"istio-test-admin/{secrets.token_hex(4)}")


@pytest.fixture
async def caches(cluster: LocalCluster, namespace: str) -> AsyncIterator[SharedInformerFactory]:
    """A started informer factory for the test namespace, on a connection of its own."""
    watcher = await kube.KubeClient.connect(
        kubeconfig=cluster.kubeconfig, user_agent=f"istio-test-informer/{secrets.token_hex(4)}")
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
def router(client: kube.KubeClient, caches: SharedInformerFactory) -> IstioRouter:
    ctx = ProviderContext(store=kube.ObjectStore(client, caches=caches), settings=Settings(),
                          log=structlog.get_logger("istio"))
    return IstioRouter(ctx=ctx, variant="")


def canary_object(namespace: str, *, service: dict[str, Any] | None = None,
                  analysis: dict[str, Any] | None = None, name: str = "podinfo") -> dict[str, Any]:
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            # Suspended, so a flaggerpy controller another test runs on this shared cluster
            # leaves it alone; the router does not look at `suspend`.
            "suspend": True,
            "provider": "istio",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898, **(service or {})},
            "analysis": {"interval": "10s", "threshold": 5, "stepWeight": 10,
                         **(analysis or {})},
        },
    }


async def store_canary(admin: kube.KubeClient, namespace: str, **spec: Any) -> Canary:
    """Stores a Canary (our CRD), so it has a uid to own objects and a status to write."""
    return Canary.model_validate(await admin.create(kube.CANARIES,
                                                    canary_object(namespace, **spec)))


async def reload(admin: kube.KubeClient, canary: Canary) -> Canary:
    return Canary.model_validate(
        await admin.get(kube.CANARIES, canary.name, namespace=canary.namespace))


async def vs_of(admin: kube.KubeClient, namespace: str, name: str = "podinfo") -> dict[str, Any]:
    return await admin.get(VIRTUAL_SERVICES, name, namespace=namespace)


async def caches_hold(
        admin: kube.KubeClient, caches: SharedInformerFactory, namespace: str,
        objects: list[tuple[kube.Resource, str]],
) -> None:
    """Waits until the informers hold the stored version of every named object."""

    async def check() -> bool:
        for resource, name in objects:
            cached = caches.informer(resource).get(
                kube.key_of({"metadata": {"namespace": namespace, "name": name}}))
            live = await admin.get(resource, name, namespace=namespace)
            if cached is None or kube.resource_version(cached) != kube.resource_version(live):
                return False
        return True

    await eventually(check, within=30, what="the informers to hold the stored objects")


def split(primary: int, canary: int) -> list[dict[str, Any]]:
    return [{"destination": {"host": "podinfo-primary"}, "weight": primary},
            {"destination": {"host": "podinfo-canary"}, "weight": canary}]


# -- every built object passes the real schema, unchanged ----------------------------------------


def _shapes() -> list[Any]:
    affinity = {"sessionAffinity": AFFINITY}
    both = SessionCookies(canary="flagger-cookie=AbCdEfGhIj", primary="primary-cookie=KlMnOpQrSt",
                          previous="flagger-cookie=UvWxYzAbCd")
    return [
        pytest.param({}, {}, Weights(100, 0), None, id="defaults"),
        pytest.param(HTTP_FIELDS, {}, Weights(60, 40), None, id="http-fields"),
        pytest.param({"match": HTTP_FIELDS["match"]},
                     {"iterations": 5, "stepWeight": None, "match": AB}, Weights(0, 100), None,
                     id="ab"),
        pytest.param({}, {"mirror": True, "mirrorWeight": 30}, Weights(100, 0, mirrored=True),
                     None, id="mirror"),
        pytest.param({"appProtocol": "tcp", "match": [{"port": 9898}]}, {}, Weights(70, 30),
                     None, id="tcp"),
        pytest.param({"delegation": True, "portDiscovery": True}, {}, Weights(90, 10), None,
                     id="delegation"),
        pytest.param({"match": HTTP_FIELDS["match"], "headers": HTTP_FIELDS["headers"]},
                     affinity, Weights(80, 20), both, id="sticky"),
        pytest.param({"headers": HTTP_FIELDS["headers"]}, {**affinity, "mirror": True},
                     Weights(100, 0, mirrored=True), both, id="sticky-expiring"),
    ]


@pytest.mark.parametrize(("service", "analysis", "weights", "cookies"), _shapes())
async def test_every_built_object_is_stored_as_built(
        namespace: str, admin: kube.KubeClient, service: dict[str, Any],
        analysis: dict[str, Any], weights: Weights, cookies: SessionCookies | None,
) -> None:
    canary = Canary.model_validate(canary_object(namespace, service=service, analysis=analysis))
    objects = [(DESTINATION_RULES, build_destination_rule(canary, "primary",
                                                          set_owner_refs=False)),
               (DESTINATION_RULES, build_destination_rule(canary, "canary",
                                                          set_owner_refs=False)),
               (VIRTUAL_SERVICES, build_virtual_service(canary, weights, status=cookies,
                                                        set_owner_refs=False))]
    for resource, built in objects:
        stored = await admin.create(resource, built)
        assert stored["spec"] == built["spec"], resource.kind
        for field in ("labels", "annotations"):
            assert stored["metadata"].get(field) == built["metadata"].get(field), field


# -- the router ---------------------------------------------------------------------------------


async def test_reconcile_set_and_get_routes(
        namespace: str, admin: kube.KubeClient, router: IstioRouter,
        caches: SharedInformerFactory,
) -> None:
    canary = await store_canary(admin, namespace, service={
        "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}},
        "apex": {"labels": {"tier": "edge"}}})
    await router.reconcile(canary)
    assert await router.get_routes(canary) == Weights(100, 0)  # read back our own write

    owner = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo",
             "uid": canary.metadata.uid if canary.metadata else None, "controller": True,
             "blockOwnerDeletion": True}
    for role in ("primary", "canary"):
        rule = await admin.get(DESTINATION_RULES, f"podinfo-{role}", namespace=namespace)
        assert rule["spec"] == {"host": f"podinfo-{role}",
                                "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}
        assert rule["metadata"]["ownerReferences"] == [owner]
    vs = await vs_of(admin, namespace)
    assert vs["spec"] == {"hosts": ["podinfo"], "gateways": ["mesh"],
                          "http": [{"route": split(100, 0)}]}
    assert vs["metadata"]["labels"] == {"tier": "edge"}
    assert vs["metadata"]["ownerReferences"] == [owner]

    await router.set_routes(canary, Weights(90, 10))
    assert (await vs_of(admin, namespace))["spec"]["http"] == [{"route": split(90, 10)}]
    assert await router.get_routes(canary) == Weights(90, 10)

    # A reconcile in the middle of a run keeps the split, and writes nothing if nothing changed.
    before = await vs_of(admin, namespace)
    await router.reconcile(canary)
    assert kube.resource_version(await vs_of(admin, namespace)) == kube.resource_version(before)

    # A spec change is written, still keeping the split.
    edited = canary_object(namespace, service={
        "timeout": "3s", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}},
        "apex": {"labels": {"tier": "edge"}}})
    edited["metadata"] = canary.metadata.to_dict() if canary.metadata else {}
    changed = Canary.model_validate(edited)
    await router.reconcile(changed)
    assert (await vs_of(admin, namespace))["spec"]["http"] == [
        {"timeout": "3s", "route": split(90, 10)}]
    assert await router.get_routes(changed) == Weights(90, 10)

    await router.set_routes(changed, Weights(100, 0, mirrored=True))
    assert await router.get_routes(changed) == Weights(100, 0, mirrored=True)

    # Our own VirtualService has nothing to give back on finalize: it goes with the Canary.
    before = await vs_of(admin, namespace)
    await router.finalize(changed)
    assert kube.resource_version(await vs_of(admin, namespace)) == kube.resource_version(before)

    # The ownerReferences are real: deleting the Canary garbage-collects the Istio objects.
    await admin.delete(kube.CANARIES, canary.name, namespace=namespace)

    async def collected() -> bool:
        left = [*(await admin.list(VIRTUAL_SERVICES, namespace=namespace)).items,
                *(await admin.list(DESTINATION_RULES, namespace=namespace)).items]
        return not left

    await eventually(collected, within=60, what="the Istio objects to be garbage-collected")


async def test_get_routes_without_a_virtual_service(
        namespace: str, admin: kube.KubeClient, router: IstioRouter,
) -> None:
    canary = await store_canary(admin, namespace)
    with pytest.raises(RouterError, match=f"VirtualService {namespace}/podinfo not found"):
        await router.get_routes(canary)


async def test_steady_calls_make_no_requests(
        cluster: LocalCluster, namespace: str, admin: kube.KubeClient,
        client: kube.KubeClient, router: IstioRouter, caches: SharedInformerFactory,
) -> None:
    canary = await store_canary(admin, namespace, service={"match": [{"uri": {"prefix": "/"}}]},
                                analysis={"sessionAffinity": AFFINITY})
    await router.reconcile(canary)
    await router.set_routes(canary, Weights(90, 10))
    canary = await reload(admin, canary)  # as the lifecycle engine would see it next tick
    assert canary.status is not None
    assert canary.status.session_affinity_cookie
    await caches_hold(admin, caches, namespace, [
        (VIRTUAL_SERVICES, "podinfo"), (DESTINATION_RULES, "podinfo-primary"),
        (DESTINATION_RULES, "podinfo-canary")])

    since = datetime.now(UTC)
    for _ in range(3):
        await router.reconcile(canary)
        assert await router.get_routes(canary) == Weights(90, 10)
        await router.set_routes(canary, Weights(90, 10))
    counts = await requests_between(cluster, client, since, namespace)
    assert counts.total == 0, counts.by_resource

    # A weight change is one write of the VirtualService, and nothing else.
    since = datetime.now(UTC)
    await router.set_routes(canary, Weights(80, 20))
    counts = await requests_between(cluster, client, since, namespace)
    assert dict(counts.by_resource) == {"update virtualservices": 1}


async def test_session_affinity_cookies_are_kept_in_the_status(
        namespace: str, admin: kube.KubeClient, router: IstioRouter,
) -> None:
    canary = await store_canary(admin, namespace, analysis={"sessionAffinity": AFFINITY})
    await router.reconcile(canary)
    await router.set_routes(canary, Weights(90, 10))
    status = (await reload(admin, canary)).status
    assert status is not None
    cookie, primary = status.session_affinity_cookie, status.primary_session_affinity_cookie
    assert cookie is not None
    assert re.fullmatch(r"flagger-cookie=[A-Za-z]{10}", cookie)
    assert primary is not None
    assert re.fullmatch(r"primary-cookie=[A-Za-z]{10}", primary)
    http = (await vs_of(admin, namespace))["spec"]["http"]
    assert [r.get("name") for r in http] == ["sticky-canary", "sticky-primary", None]
    value = cookie.split("=")[1]
    assert http[0]["match"] == [{"headers": {"Cookie": {"regex": f".*flagger-cookie.*{value}.*"}}}]
    set_cookie = http[2]["route"][1]["headers"]["response"]["add"]["Set-Cookie"]
    assert set_cookie.startswith(f"{cookie}; Max-Age=3600; Domain=example.com")

    # Next step, with the Canary as the cache may still show it (no cookie yet): same cookie.
    await router.set_routes(canary, Weights(80, 20))
    status = (await reload(admin, canary)).status
    assert status is not None
    assert status.session_affinity_cookie == cookie

    # Promotion: the cookie is expired.
    await router.set_routes(await reload(admin, canary), Weights(100, 0))
    status = (await reload(admin, canary)).status
    assert status is not None
    assert status.session_affinity_cookie is None
    assert status.primary_session_affinity_cookie is None
    assert status.previous_session_affinity_cookie == cookie
    http = (await vs_of(admin, namespace))["spec"]["http"]
    assert http[0]["headers"]["response"]["add"]["Set-Cookie"] == f"{cookie}; Max-Age=-1"
    assert await router.get_routes(canary) == Weights(100, 0)


USER_SPEC = {"hosts": ["podinfo"],
             "http": [{"route": [{"destination": {"host": "podinfo"}, "weight": 100}]}]}


async def test_a_user_virtual_service_is_taken_over_and_given_back(
        namespace: str, admin: kube.KubeClient, router: IstioRouter,
        caches: SharedInformerFactory,
) -> None:
    await admin.create(VIRTUAL_SERVICES, {
        "metadata": {"name": "podinfo", "namespace": namespace, "labels": {"team": "web"}},
        "spec": USER_SPEC})
    canary = await store_canary(admin, namespace)
    await router.reconcile(canary)
    vs = await vs_of(admin, namespace)
    assert "ownerReferences" not in vs["metadata"]
    assert vs["metadata"]["labels"] == {"team": "web"}
    assert json.loads(vs["metadata"]["annotations"][ORIGINAL_CONFIGURATION]) == USER_SPEC
    assert vs["spec"]["http"] == [{"route": split(100, 0)}]

    await router.set_routes(canary, Weights(50, 50))
    assert json.loads((await vs_of(admin, namespace))["metadata"]["annotations"]
                      [ORIGINAL_CONFIGURATION]) == USER_SPEC

    await router.finalize(canary)
    restored = await vs_of(admin, namespace)
    assert restored["spec"] == USER_SPEC
    await caches_hold(admin, caches, namespace, [(VIRTUAL_SERVICES, "podinfo")])
    await router.finalize(canary)  # nothing left to do
    assert kube.resource_version(await vs_of(admin, namespace)) == \
        kube.resource_version(restored)


async def test_a_kubectl_applied_virtual_service_is_given_back_from_kubectls_record(
        cluster: LocalCluster, namespace: str, admin: kube.KubeClient, router: IstioRouter,
) -> None:
    manifest = {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
                "metadata": {"name": "podinfo", "namespace": namespace}, "spec": USER_SPEC}
    await cluster.akubectl("apply", "-f", "-", input=json.dumps(manifest))
    canary = await store_canary(admin, namespace)
    await router.reconcile(canary)
    await router.set_routes(canary, Weights(70, 30))
    vs = await vs_of(admin, namespace)
    assert ORIGINAL_CONFIGURATION not in vs["metadata"]["annotations"]
    assert KUBECTL in vs["metadata"]["annotations"]
    assert vs["spec"]["http"] == [{"route": split(70, 30)}]

    await router.finalize(canary)
    assert (await vs_of(admin, namespace))["spec"] == USER_SPEC


async def test_a_stale_cache_costs_a_retry_never_a_lost_update(
        cluster: LocalCluster, namespace: str, admin: kube.KubeClient,
        client: kube.KubeClient, router: IstioRouter,
) -> None:
    canary = await store_canary(admin, namespace)
    await router.reconcile(canary)
    await router.set_routes(canary, Weights(90, 10))
    snapshot = await vs_of(admin, namespace)
    # Someone else writes after the snapshot: a write based on it must not win blindly.
    edited = json.loads(json.dumps(snapshot))
    edited["spec"]["http"][0]["timeout"] = "9s"
    await admin.replace(VIRTUAL_SERVICES, edited)

    stale = IstioRouter(ctx=ProviderContext(
        store=kube.ObjectStore(client, caches=FrozenCache(snapshot)), settings=Settings(),
        log=structlog.get_logger("istio")))
    since = datetime.now(UTC)
    await stale.set_routes(canary, Weights(80, 20))
    counts = await requests_between(cluster, client, since, namespace)
    # The conditional update fails (409), the object is read again, rebuilt and written.
    assert dict(counts.by_resource) == {"update virtualservices": 2, "get virtualservices": 1}
    assert (await vs_of(admin, namespace))["spec"]["http"] == [{"route": split(80, 20)}]
    # Its own write is what it reads back while its cache stays behind.
    assert await stale.get_routes(canary) == Weights(80, 20)
