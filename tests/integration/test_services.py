"""The generated Services against the real API server: created, updated, reverted, and left alone.

Every check reads what the API server stored. The router works through an object store over a
real Services informer, and its client has a user agent of its own, so the audit log can show
that a steady tick makes no request at all (design rule 3) and that an update is exactly one
write per Service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from e2e.cluster import audit
from e2e.cluster.localcluster import LocalCluster
from e2e.cluster.pytest_plugin import eventually
from flaggerpy import kube
from flaggerpy.canary.services import (
    KUBECTL_LAST_APPLIED,
    TOOLKIT_ANNOTATIONS,
    KubernetesDefaultRouter,
)
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.models.canary import Canary
from flaggerpy.runtime.informer import Informer

pytestmark = pytest.mark.integration

NAMES = ("podinfo", "podinfo-primary", "podinfo-canary")


@pytest.fixture
def client(counted_client: kube.KubeClient) -> kube.KubeClient:
    """The router's client: a user agent no other client shares, for the audit log."""
    return counted_client


@pytest.fixture
def admin(api_client: ApiClient) -> kube.KubeClient:
    """What the test itself reads and writes with (not counted)."""
    return kube.KubeClient(api_client, user_agent=f"services-test-admin/{secrets.token_hex(4)}")


@pytest.fixture
async def services(cluster: LocalCluster, namespace: str) -> AsyncIterator[Informer]:
    """A running Services informer for the test namespace, on a connection of its own."""
    watcher = await kube.KubeClient.connect(
        kubeconfig=cluster.kubeconfig,
        user_agent=f"services-test-informer/{secrets.token_hex(4)}")
    informer = Informer(watcher, kube.SERVICES, namespace=namespace)
    task = asyncio.create_task(informer.start())
    try:
        async with asyncio.timeout(30):
            await informer.wait_synced()
        yield informer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await watcher.aclose()


class OneCache:
    """The Services informer as the store's caches (it asks for no other resource)."""

    def __init__(self, informer: kube.WatchedCache) -> None:
        self._informer = informer

    def informer(self, resource: kube.Resource) -> kube.WatchedCache:
        assert resource == kube.SERVICES, resource
        return self._informer


def services_router(
        client: kube.KubeClient, services: kube.WatchedCache, *, label_value: str = "podinfo",
        ports: dict[str, int] | None = None,
) -> KubernetesDefaultRouter:
    """The router the engine builds, on a store of its own over ``services``."""
    return KubernetesDefaultRouter(
        store=kube.ObjectStore(client, caches=OneCache(services)), label="app",
        label_value=label_value, ports=ports or {})


async def create_canary(
        admin: kube.KubeClient, namespace: str, *, name: str = "podinfo",
        target: str = "podinfo", **service: Any,
) -> Canary:
    """Stores a Canary (our CRD) so it has a uid the Services can be owned by.

    It is suspended so that a flaggerpy controller another test may be running against the
    shared cluster leaves it alone; the router under test does not look at ``suspend``.
    """
    stored = await admin.create(kube.CANARIES, {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "suspend": True,
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "service": {"port": 9898, **service},
            "analysis": {"interval": "10s", "threshold": 5, "stepWeight": 10},
        },
    })
    return Canary.model_validate(stored)


def owner(canary: Canary) -> dict[str, Any]:
    assert canary.metadata is not None
    return {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": canary.name,
            "uid": canary.metadata.uid, "controller": True, "blockOwnerDeletion": True}


async def read(admin: kube.KubeClient, namespace: str, name: str) -> dict[str, Any]:
    return await admin.get(kube.SERVICES, name, namespace=namespace)


async def cache_caught_up(
        admin: kube.KubeClient, informer: Informer, namespace: str, names: tuple[str, ...],
) -> None:
    """Waits until the informer holds the stored version of every named Service."""

    async def check() -> bool:
        for name in names:
            cached = informer.get(ObjectKey(namespace, name))
            live = await read(admin, namespace, name)
            if cached is None or kube.resource_version(cached) != kube.resource_version(live):
                return False
        return True

    await eventually(check, within=30, what=f"the informer to hold {', '.join(names)}")


async def requests_between(
        cluster: LocalCluster, client: kube.KubeClient, since: datetime, namespace: str,
) -> audit.RequestCounts:
    """The router client's requests from ``since`` up to a sentinel GET, which is excluded.

    The sentinel is sent after everything the test measures; once the audit log holds it, it
    holds every earlier request of that client too, so a count of zero is a real zero.
    """
    await client.get(kube.NAMESPACES, namespace)
    sentinel: list[audit.AuditRecord] = []

    async def sentinel_logged() -> bool:
        sentinel[:] = [
            r for r in audit.records(cluster.audit_log)
            if r.user_agent == client.user_agent and r.received >= since and r.verb == "get"
            and r.resource == "namespaces" and r.name == namespace]
        return bool(sentinel)

    await eventually(sentinel_logged, within=15, what="the audit log to hold the sentinel")
    return audit.count_requests(cluster.audit_log, user_agent=client.user_agent,
                                since=since, until=sentinel[0].received)


async def test_initialize_and_reconcile_create_the_three_services(
        cluster: LocalCluster, flagger_crds: None, namespace: str, admin: kube.KubeClient,
        client: kube.KubeClient, services: Informer,
) -> None:
    canary = await create_canary(
        admin, namespace, portDiscovery=True, appProtocol="http",
        trafficDistribution="PreferClose",
        apex={"labels": {"tier": "edge"}, "annotations": {"example.com/apex": "yes"}},
        canary={"labels": {"track": "preview"}},
    )
    router = services_router(client, services, label_value="podinfo", ports={"metrics": 9797})
    await router.initialize(canary)
    with pytest.raises(kube.NotFoundError):
        await read(admin, namespace, "podinfo")  # the apex comes later (step 13)
    await router.reconcile(canary)

    ports = [
        {"name": "http", "protocol": "TCP", "port": 9898, "targetPort": 9898,
         "appProtocol": "http"},
        {"name": "metrics", "protocol": "TCP", "port": 9797, "targetPort": 9797},
    ]
    expected = {
        "podinfo": ({"app": "podinfo-primary"}, {"tier": "edge", "app": "podinfo"},
                    {"example.com/apex": "yes", **TOOLKIT_ANNOTATIONS}),
        "podinfo-primary": ({"app": "podinfo-primary"}, {"app": "podinfo-primary"},
                            dict(TOOLKIT_ANNOTATIONS)),
        "podinfo-canary": ({"app": "podinfo"}, {"track": "preview", "app": "podinfo-canary"},
                           dict(TOOLKIT_ANNOTATIONS)),
    }
    for name, (selector, labels, notes) in expected.items():
        svc = await read(admin, namespace, name)
        assert svc["spec"]["type"] == "ClusterIP"
        assert svc["spec"]["clusterIP"] not in ("", "None")
        assert svc["spec"]["selector"] == selector, name
        assert svc["spec"]["ports"] == ports, name
        assert svc["spec"]["trafficDistribution"] == "PreferClose"
        assert svc["metadata"]["labels"] == labels, name
        assert svc["metadata"]["annotations"] == notes, name
        assert svc["metadata"]["ownerReferences"] == [owner(canary)], name

    # The ownerReferences are real: deleting the Canary garbage-collects its Services.
    await admin.delete(kube.CANARIES, canary.name, namespace=namespace)

    async def collected() -> bool:
        listed = await admin.list(kube.SERVICES, namespace=namespace)
        return not listed.items

    await eventually(collected, within=60, what="the Services to be garbage-collected")


async def test_headless_services(
        flagger_crds: None, namespace: str, admin: kube.KubeClient, client: kube.KubeClient,
        services: Informer,
) -> None:
    canary = await create_canary(admin, namespace, name="backend", target="backend",
                                 headless=True, portName="grpc", targetPort="grpc-app")
    router = services_router(client, services, label_value="backend")
    await router.initialize(canary)
    await router.reconcile(canary)
    for name in ("backend", "backend-primary", "backend-canary"):
        svc = await read(admin, namespace, name)
        assert svc["spec"]["clusterIP"] == "None"
        assert svc["spec"]["ports"] == [
            {"name": "grpc", "protocol": "TCP", "port": 9898, "targetPort": "grpc-app"}]


async def test_a_steady_tick_makes_no_request(
        cluster: LocalCluster, flagger_crds: None, namespace: str, admin: kube.KubeClient,
        client: kube.KubeClient, services: Informer,
) -> None:
    canary = await create_canary(
        admin, namespace, portDiscovery=True, appProtocol="http",
        trafficDistribution="PreferClose",
        apex={"labels": {"tier": "edge"}, "annotations": {"a": "b"}},
        unmanagedMetadata={"annotations": ["example.com/stamp"]},
    )
    router = services_router(client, services, ports={"metrics": 9797, "grpc": 9999})
    await router.initialize(canary)
    await router.reconcile(canary)
    await cache_caught_up(admin, services, namespace, NAMES)
    versions = {n: kube.resource_version(await read(admin, namespace, n)) for n in NAMES}

    since = datetime.now(UTC) - timedelta(milliseconds=10)
    for _ in range(3):
        await router.initialize(canary)
        await router.reconcile(canary)
    counts = await requests_between(cluster, client, since, namespace)
    assert counts.total == 0, dict(counts.by_resource)
    assert {n: kube.resource_version(await read(admin, namespace, n)) for n in NAMES} == versions


async def test_a_changed_port_is_one_update_per_service(
        cluster: LocalCluster, flagger_crds: None, namespace: str, admin: kube.KubeClient,
        client: kube.KubeClient, services: Informer,
) -> None:
    canary = await create_canary(admin, namespace)
    router = services_router(client, services, label_value="podinfo")
    await router.initialize(canary)
    await router.reconcile(canary)
    await cache_caught_up(admin, services, namespace, NAMES)
    before = {n: await read(admin, namespace, n) for n in NAMES}

    changed = Canary.model_validate(await admin.patch(
        kube.CANARIES, canary.name, {"spec": {"service": {"port": 8080}}}, namespace=namespace))
    since = datetime.now(UTC) - timedelta(milliseconds=10)
    await router.initialize(changed)
    await router.reconcile(changed)
    counts = await requests_between(cluster, client, since, namespace)
    assert dict(counts.by_resource) == {"update services": 3}  # no reads: the cache answers

    for name in NAMES:
        after = await read(admin, namespace, name)
        assert after["spec"]["ports"] == [
            {"name": "http", "protocol": "TCP", "port": 8080, "targetPort": 8080}]
        assert after["metadata"]["uid"] == before[name]["metadata"]["uid"]  # updated in place
        assert after["spec"]["clusterIP"] == before[name]["spec"]["clusterIP"]
        assert after["spec"]["selector"] == before[name]["spec"]["selector"]


async def test_a_stale_cache_costs_a_retry_not_a_lost_update(
        flagger_crds: None, namespace: str, admin: kube.KubeClient, client: kube.KubeClient,
) -> None:
    canary = await create_canary(admin, namespace)

    class Empty:
        """A cache that never sees anything."""

        has_synced = True
        lists_started = 0

        async def wait_synced(self) -> None:
            return None

        def get(self, key: ObjectKey) -> None:
            return None

        def add_handler(self, **handlers: object) -> None:
            return None

        def listed_since(self, lists_started: int) -> bool:
            return False

    await services_router(client, Empty()).initialize(canary)
    changed = Canary.model_validate(await admin.patch(
        kube.CANARIES, canary.name, {"spec": {"service": {"portName": "tcp"}}},
        namespace=namespace))
    # A store that has not seen the first write, over a cache that says "absent": the create
    # fails, the Service is read and updated.
    await services_router(client, Empty()).initialize(changed)
    svc = await read(admin, namespace, "podinfo-canary")
    assert svc["spec"]["ports"][0]["name"] == "tcp"


USER_APEX = """
apiVersion: v1
kind: Service
metadata:
  name: podinfo
  labels: {app: podinfo, team: web}
  annotations: {example.com/owner: web-team}
spec:
  type: NodePort
  selector: {app: podinfo}
  ports:
  - {name: http, port: 9898, targetPort: 9898, protocol: TCP}
"""


async def test_a_users_apex_service_is_switched_then_restored_from_kubectl(
        cluster: LocalCluster, flagger_crds: None, namespace: str, admin: kube.KubeClient,
        client: kube.KubeClient, services: Informer,
) -> None:
    await cluster.akubectl("apply", "-n", namespace, "-f", "-", input=USER_APEX)
    user = await read(admin, namespace, "podinfo")
    node_port = user["spec"]["ports"][0]["nodePort"]
    assert KUBECTL_LAST_APPLIED in user["metadata"]["annotations"]

    canary = await create_canary(admin, namespace, apex={"labels": {"tier": "edge"}},
                                 revertOnDeletion=True)
    router = services_router(client, services, label_value="podinfo")
    await router.initialize(canary)
    await router.reconcile(canary)

    switched = await read(admin, namespace, "podinfo")
    assert switched["spec"]["selector"] == {"app": "podinfo-primary"}
    assert switched["spec"]["type"] == "NodePort"
    assert switched["spec"]["ports"][0]["nodePort"] == node_port  # not reallocated
    assert switched["metadata"]["labels"] == {"app": "podinfo", "team": "web"}
    notes = switched["metadata"]["annotations"]
    assert notes["example.com/owner"] == "web-team"
    assert KUBECTL_LAST_APPLIED in notes
    assert {k: notes[k] for k in TOOLKIT_ANNOTATIONS} == TOOLKIT_ANNOTATIONS
    assert "ownerReferences" not in switched["metadata"]

    # Steady again once the cache has it: the user's Service is not rewritten every tick.
    await cache_caught_up(admin, services, namespace, ("podinfo",))
    await router.reconcile(canary)
    again = await read(admin, namespace, "podinfo")
    assert kube.resource_version(again) == kube.resource_version(switched)

    await router.finalize(canary)
    restored = await read(admin, namespace, "podinfo")
    assert restored["spec"]["selector"] == {"app": "podinfo"}
    assert restored["spec"]["ports"][0]["nodePort"] == node_port
    assert restored["metadata"]["labels"] == {"app": "podinfo", "team": "web"}
    applied = json.loads(restored["metadata"]["annotations"][KUBECTL_LAST_APPLIED])
    assert applied["spec"]["selector"] == restored["spec"]["selector"]
    # The generated -primary and -canary Services are ours: finalize leaves them to the GC.
    primary = await read(admin, namespace, "podinfo-primary")
    assert primary["spec"]["selector"] == {"app": "podinfo-primary"}


async def test_a_users_apex_service_without_kubectl_is_pointed_at_the_target(
        flagger_crds: None, namespace: str, admin: kube.KubeClient, client: kube.KubeClient,
        services: Informer,
) -> None:
    await admin.create(kube.SERVICES, {
        "metadata": {"name": "podinfo", "namespace": namespace, "labels": {"team": "web"}},
        "spec": {"selector": {"run": "web"},
                 "ports": [{"name": "web", "port": 80, "targetPort": 8080}]},
    })
    canary = await create_canary(admin, namespace)
    router = services_router(client, services, label_value="podinfo-app")
    await router.reconcile(canary)
    switched = await read(admin, namespace, "podinfo")
    assert switched["spec"]["selector"] == {"app": "podinfo-app-primary"}
    assert switched["spec"]["ports"] == [
        {"name": "http", "protocol": "TCP", "port": 9898, "targetPort": 9898}]
    assert switched["metadata"]["labels"] == {"team": "web"}

    await router.finalize(canary)
    reverted = await read(admin, namespace, "podinfo")
    assert reverted["spec"]["selector"] == {"app": "podinfo-app"}
    assert reverted["metadata"]["labels"] == {"team": "web"}


async def test_finalize_leaves_owned_and_missing_services_alone(
        flagger_crds: None, namespace: str, admin: kube.KubeClient, client: kube.KubeClient,
        services: Informer,
) -> None:
    canary = await create_canary(admin, namespace)
    router = services_router(client, services, label_value="podinfo")
    await router.finalize(canary)  # no apex Service yet: nothing to revert, no error

    await router.initialize(canary)
    await router.reconcile(canary)
    await cache_caught_up(admin, services, namespace, NAMES)
    before = await read(admin, namespace, "podinfo")
    await router.finalize(canary)
    after = await read(admin, namespace, "podinfo")
    assert kube.resource_version(after) == kube.resource_version(before)
    assert after["spec"]["selector"] == {"app": "podinfo-primary"}
