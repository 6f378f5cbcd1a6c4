"""The SMI TrafficSplit router against the real API server and the upstream SMI CRD.

The CRD serves v1alpha1 and v1alpha2 upstream, and v1alpha3 with the golden corpus's patch
(``e2e/cluster/localcluster.py``). Every version's built object is created and read back, so the
schema has the last word (v1alpha1's weights must stay quantity strings). The routers run with
a real ``SharedInformerFactory`` as their caches and a client whose requests the audit log
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
from flaggerpy.providers.smi import (
    ISTIO_GATEWAYS_ANNOTATION,
    VERSIONS,
    LinkerdRouter,
    OsmRouter,
    SmiRouter,
    SmiVersion,
    build_traffic_split,
)
from flaggerpy.routing import ProviderContext, Weights
from flaggerpy.runtime.informer import SharedInformerFactory
from flaggerpy.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def client(counted_client: kube.KubeClient) -> kube.KubeClient:
    """The router's client: a user agent no other client shares, for the audit log."""
    return counted_client


@pytest.fixture
def admin(api_client: ApiClient) -> kube.KubeClient:
    """What the test itself reads and writes with (not counted)."""
    return kube.KubeClient(api_client, user_agent=f"smi-test-admin/{secrets.token_hex(4)}")


@pytest.fixture
async def caches(cluster: LocalCluster, namespace: str) -> AsyncIterator[SharedInformerFactory]:
    """A started informer factory for the test namespace, on a connection of its own."""
    watcher = await kube.KubeClient.connect(
        kubeconfig=cluster.kubeconfig, user_agent=f"smi-test-informer/{secrets.token_hex(4)}")
    factory = SharedInformerFactory(watcher, namespace=namespace)
    task = asyncio.create_task(factory.start())
    try:
        yield factory
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await watcher.aclose()


def make_router(client: kube.KubeClient, caches: Any, provider: str, *,
                set_owner_refs: bool = True) -> SmiRouter:
    ctx = ProviderContext(store=kube.ObjectStore(client, caches=caches), settings=Settings(),
                          log=structlog.get_logger("smi"), set_owner_refs=set_owner_refs)
    name, _, variant = provider.partition(":")
    cls = {"linkerd": LinkerdRouter, "osm": OsmRouter, "smi": SmiRouter}[name]
    return cls(ctx=ctx, variant=variant)


def canary_object(namespace: str, *, service: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": namespace},
        "spec": {
            # Suspended, so a flaggerpy controller another test runs on this shared cluster
            # leaves it alone; the router does not look at `suspend`.
            "suspend": True,
            "provider": "linkerd",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898, **(service or {})},
            "analysis": {"interval": "10s", "threshold": 5, "stepWeight": 10},
        },
    }


async def store_canary(admin: kube.KubeClient, namespace: str, **spec: Any) -> Canary:
    """Stores a Canary (our CRD), so it has a uid to own the TrafficSplit."""
    return Canary.model_validate(await admin.create(kube.CANARIES,
                                                    canary_object(namespace, **spec)))


async def ts_of(admin: kube.KubeClient, version: SmiVersion, namespace: str) -> dict[str, Any]:
    return await admin.get(version.resource, "podinfo", namespace=namespace)


async def cache_holds(admin: kube.KubeClient, caches: SharedInformerFactory,
                      version: SmiVersion, namespace: str) -> None:
    """Waits until the informer holds the stored version of the TrafficSplit."""
    key = kube.key_of({"metadata": {"namespace": namespace, "name": "podinfo"}})

    async def check() -> bool:
        cached = caches.informer(version.resource).get(key)
        live = await ts_of(admin, version, namespace)
        return cached is not None and kube.resource_version(cached) == kube.resource_version(live)

    await eventually(check, within=30, what="the informer to hold the stored TrafficSplit")


def backends(version: SmiVersion, primary: int, canary: int) -> list[dict[str, Any]]:
    return [{"service": "podinfo-canary", "weight": version.weight(canary)},
            {"service": "podinfo-primary", "weight": version.weight(primary)}]


# -- every version's object passes the real schema, unchanged ------------------------------------


@pytest.mark.parametrize("version", list(VERSIONS))
async def test_every_version_is_stored_as_built(
        namespace: str, admin: kube.KubeClient, version: str) -> None:
    canary = Canary.model_validate(canary_object(namespace, service={
        "hosts": ["podinfo.example"], "gateways": ["public"]}))
    built = build_traffic_split(canary, Weights.to_canary(30), version=VERSIONS[version],
                                target_mesh="istio", existing=None, set_owner_refs=False)
    stored = await admin.create(VERSIONS[version].resource, built)
    assert stored["apiVersion"] == f"split.smi-spec.io/{version}"
    assert stored["spec"] == built["spec"]
    assert stored["metadata"]["annotations"] == built["metadata"]["annotations"]


# -- the routers --------------------------------------------------------------------------------


@pytest.mark.parametrize(("provider", "version"), [
    ("linkerd", "v1alpha1"), ("osm", "v1alpha2"), ("smi:v1alpha3:istio", "v1alpha3"),
])
async def test_reconcile_set_get_and_finalize(
        namespace: str, admin: kube.KubeClient, client: kube.KubeClient,
        caches: SharedInformerFactory, provider: str, version: str,
) -> None:
    smi = VERSIONS[version]
    router = make_router(client, caches, provider)
    canary = await store_canary(admin, namespace, service={"gateways": ["public"]})
    await router.reconcile(canary)
    ts = await ts_of(admin, smi, namespace)
    assert ts["spec"] == {"service": "podinfo", "backends": backends(smi, 100, 0)}
    owner = ts["metadata"]["ownerReferences"]
    assert [(o["kind"], o["name"], o["uid"], o["controller"]) for o in owner] == [
        ("Canary", "podinfo", canary.metadata.uid if canary.metadata else None, True)]
    istio = provider.endswith(":istio")
    assert (ts["metadata"].get("annotations") or {}).get(ISTIO_GATEWAYS_ANNOTATION) == (
        '["public"]' if istio else None)
    assert await router.get_routes(canary) == Weights.all_primary()

    await router.set_routes(canary, Weights.to_canary(20))
    assert await router.get_routes(canary) == Weights.to_canary(20)
    assert (await ts_of(admin, smi, namespace))["spec"]["backends"] == backends(smi, 80, 20)

    # A reconcile in the middle of a run keeps the split, even when the spec changed.
    await router.reconcile(canary)
    assert await router.get_routes(canary) == Weights.to_canary(20)
    moved = Canary.model_validate({**canary_object(namespace, service={"hosts": ["app.test"]}),
                                   "metadata": canary.to_dict()["metadata"]})
    await router.reconcile(moved)
    ts = await ts_of(admin, smi, namespace)
    assert ts["spec"] == {"service": "app.test", "backends": backends(smi, 80, 20)}

    # Nothing to revert (Flagger's Finalize is a no-op): the garbage collector has it.
    await router.finalize(canary)
    assert (await ts_of(admin, smi, namespace))["spec"] == ts["spec"]


async def test_no_owner_reference_when_the_mesh_is_another_cluster(
        namespace: str, admin: kube.KubeClient, client: kube.KubeClient,
        caches: SharedInformerFactory,
) -> None:
    # -kubeconfig-service-mesh: a reference there would name a Canary that does not exist.
    smi = VERSIONS["v1alpha3"]
    canary = await store_canary(admin, namespace)
    router = make_router(client, caches, "smi:v1alpha3", set_owner_refs=False)
    await router.reconcile(canary)
    await router.set_routes(canary, Weights.to_canary(50))
    ts = await ts_of(admin, smi, namespace)
    assert "ownerReferences" not in ts["metadata"]
    assert ts["spec"]["backends"] == backends(smi, 50, 50)


async def test_get_routes_without_a_traffic_split(
        namespace: str, admin: kube.KubeClient, client: kube.KubeClient,
        caches: SharedInformerFactory,
) -> None:
    canary = await store_canary(admin, namespace)
    with pytest.raises(RouterError, match=f"TrafficSplit podinfo.{namespace} not found"):
        await make_router(client, caches, "linkerd").get_routes(canary)


async def test_a_users_traffic_split_gets_our_spec_and_keeps_its_metadata(
        namespace: str, admin: kube.KubeClient, client: kube.KubeClient,
        caches: SharedInformerFactory,
) -> None:
    smi = VERSIONS["v1alpha2"]
    await admin.create(smi.resource, {
        "apiVersion": smi.api_version, "kind": "TrafficSplit",
        "metadata": {"name": "podinfo", "namespace": namespace, "labels": {"team": "a"}},
        "spec": {"service": "podinfo", "backends": [{"service": "podinfo-v1", "weight": 100}]}})
    canary = await store_canary(admin, namespace)
    router = make_router(client, caches, "osm")
    await router.reconcile(canary)
    ts = await ts_of(admin, smi, namespace)
    # As Flagger: only the spec is written; no ownerReference is added to a user's object.
    assert ts["spec"] == {"service": "podinfo", "backends": backends(smi, 100, 0)}
    assert ts["metadata"]["labels"] == {"team": "a"}
    assert "ownerReferences" not in ts["metadata"]


async def test_steady_calls_make_no_requests(
        cluster: LocalCluster, namespace: str, admin: kube.KubeClient,
        client: kube.KubeClient, caches: SharedInformerFactory,
) -> None:
    smi = VERSIONS["v1alpha1"]
    router = make_router(client, caches, "linkerd")
    canary = await store_canary(admin, namespace)
    await router.reconcile(canary)
    await router.set_routes(canary, Weights.to_canary(10))
    await cache_holds(admin, caches, smi, namespace)

    since = datetime.now(UTC)
    for _ in range(3):
        await router.reconcile(canary)
        assert await router.get_routes(canary) == Weights.to_canary(10)
        await router.set_routes(canary, Weights.to_canary(10))
    counts = await requests_between(cluster, client, since, namespace)
    assert counts.total == 0, counts.by_resource

    since = datetime.now(UTC)
    await router.set_routes(canary, Weights.to_canary(20))
    counts = await requests_between(cluster, client, since, namespace)
    assert dict(counts.by_resource) == {"update trafficsplits": 1}


async def test_a_stale_cache_costs_a_retry_never_a_lost_update(
        cluster: LocalCluster, namespace: str, admin: kube.KubeClient,
        client: kube.KubeClient, caches: SharedInformerFactory,
) -> None:
    smi = VERSIONS["v1alpha2"]
    canary = await store_canary(admin, namespace)
    await make_router(client, caches, "osm").reconcile(canary)
    snapshot = await ts_of(admin, smi, namespace)
    # Someone else writes after the snapshot: a write based on it must not win blindly.
    edited = json.loads(json.dumps(snapshot))
    edited["metadata"]["labels"] = {"edited": "yes"}
    await admin.replace(smi.resource, edited)

    stale = make_router(client, FrozenCache(snapshot), "osm")
    since = datetime.now(UTC)
    await stale.set_routes(canary, Weights.to_canary(30))
    counts = await requests_between(cluster, client, since, namespace)
    # The conditional update fails (409), the object is read again, rebuilt and written.
    assert dict(counts.by_resource) == {"update trafficsplits": 2, "get trafficsplits": 1}
    ts = await ts_of(admin, smi, namespace)
    assert ts["spec"]["backends"] == backends(smi, 70, 30)
    assert ts["metadata"]["labels"] == {"edited": "yes"}
    assert await stale.get_routes(canary) == Weights.to_canary(30)
