"""Leader election timing under fake time (looptime).

The Lease store here is an in-memory stand-in with the API server's
optimistic concurrency (resourceVersion checked on update), so a minute of
lease timing runs in no real time. The same behaviour against the real API
server is in tests/integration/test_leader.py.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any, cast

import pytest
from kubernetes_asyncio.client import ApiClient, Configuration

from flaggerpy import kube
from flaggerpy.runtime import leader


class LeaseStore:
    """get/create/replace of Leases with resourceVersion conflicts; can be cut off per client."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 0

    def client(self) -> PartitionableClient:
        return PartitionableClient(self)


class PartitionableClient:
    def __init__(self, store: LeaseStore) -> None:
        self.store = store
        self.partitioned = False  # requests hang, as to a black-holed server
        self.writes = 0

    async def _reach(self) -> None:
        await asyncio.sleep(0.01)
        if self.partitioned:
            await asyncio.sleep(3600)

    async def get(self, resource: kube.Resource, name: str, *, namespace: str) -> dict[str, Any]:
        await self._reach()
        try:
            return copy.deepcopy(self.store.objects[namespace, name])
        except KeyError:
            raise kube.NotFoundError(404, "NotFound", name) from None

    async def create(self, resource: kube.Resource, body: dict[str, Any]) -> dict[str, Any]:
        await self._reach()
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if key in self.store.objects:
            raise kube.AlreadyExistsError(409, "AlreadyExists", key[1])
        return self._store(key, body)

    async def replace(self, resource: kube.Resource, body: dict[str, Any]) -> dict[str, Any]:
        await self._reach()
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        current = self.store.objects[key]
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise kube.ConflictError(409, "Conflict", key[1])
        return self._store(key, body)

    def _store(self, key: tuple[str, str], body: dict[str, Any]) -> dict[str, Any]:
        self.writes += 1
        self.store.version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.store.version)
        self.store.objects[key] = stored
        return copy.deepcopy(stored)


def elector(client: PartitionableClient, identity: str, **timing: float) -> leader.LeaderElector:
    return leader.LeaderElector(
        cast(kube.KubeClient, client), namespace="ns", identity=identity,
        lease_duration=timing.get("lease_duration", 15),
        renew_deadline=timing.get("renew_deadline", 10),
        retry_period=timing.get("retry_period", 2),
    )


def holder(store: LeaseStore) -> str:
    return str(store.objects["ns", leader.DEFAULT_LEASE_NAME]["spec"]["holderIdentity"])


@pytest.mark.looptime
async def test_one_leads_and_the_standby_takes_over_after_a_crash() -> None:
    store = LeaseStore()
    a, b = elector(store.client(), "a"), elector(store.client(), "b")
    task_a = asyncio.create_task(a.start())
    await a.elected.wait()
    task_b = asyncio.create_task(b.start())
    await asyncio.sleep(30)  # many renewals: b must stay a standby
    assert a.is_leader()
    assert not b.is_leader()
    assert not b.elected.is_set()

    loop = asyncio.get_running_loop()
    a._release_on_cancel = False  # a crash: nobody releases the lease
    last_renew = a._renewed_at
    task_a.cancel()
    crashed_at = loop.time()
    await asyncio.gather(task_a, return_exceptions=True)
    await b.elected.wait()
    # Safety: never within a lease duration of the old leader's last renewal.
    assert loop.time() - last_renew >= 15
    # Liveness: the lease duration, plus up to one jittered retry to notice the last renewal
    # and one to notice the expiry.
    assert loop.time() - crashed_at <= 15 + 2 * (2 * 2.2) + 0.5
    assert holder(store) == "b"
    assert store.objects["ns", leader.DEFAULT_LEASE_NAME]["spec"]["leaseTransitions"] == 1
    task_b.cancel()
    await asyncio.gather(task_b, return_exceptions=True)


@pytest.mark.looptime
async def test_release_on_stop_hands_over_at_once() -> None:
    store = LeaseStore()
    a, b = elector(store.client(), "a"), elector(store.client(), "b")
    task_a = asyncio.create_task(a.start())
    await a.elected.wait()
    task_b = asyncio.create_task(b.start())
    await asyncio.sleep(5)
    loop = asyncio.get_running_loop()
    stopped_at = loop.time()
    task_a.cancel()
    await asyncio.gather(task_a, return_exceptions=True)
    assert holder(store) == ""
    await b.elected.wait()
    assert loop.time() - stopped_at <= 2 * 2.2 + 1  # one retry period, not a lease duration
    task_b.cancel()
    await asyncio.gather(task_b, return_exceptions=True)


@pytest.mark.looptime
async def test_partitioned_leader_fences_itself_by_the_clock() -> None:
    store = LeaseStore()
    client = store.client()
    a = elector(client, "a")
    nowhere = ApiClient(Configuration(host="http://127.0.0.1:9"))  # never reached
    fenced = kube.KubeClient(nowhere, may_write=a.is_leader, owns_api=True)
    task = asyncio.create_task(a.start())
    await a.elected.wait()
    await asyncio.sleep(7)
    loop = asyncio.get_running_loop()
    client.partitioned = True
    cut_at = loop.time()
    last_renew = a._renewed_at
    for _ in range(200):  # is_leader is a clock, not an event: poll it every 0.1 s
        if not a.is_leader():
            break
        await asyncio.sleep(0.1)
    fenced_at = loop.time()
    assert fenced_at - last_renew == pytest.approx(10, abs=0.2)  # exactly renew_deadline
    assert fenced_at - cut_at < 10
    async with fenced:
        with pytest.raises(kube.WriteFencedError):
            await fenced.patch(kube.LEASES, "x", {"a": 1}, namespace="ns")
    with pytest.raises(leader.LeadershipLostError):
        await task
    assert loop.time() - last_renew <= 10.5


@pytest.mark.looptime
async def test_a_new_holder_deposes_the_old_leader_at_once() -> None:
    store = LeaseStore()
    a = elector(store.client(), "a")
    task = asyncio.create_task(a.start())
    await a.elected.wait()
    lease = store.objects["ns", leader.DEFAULT_LEASE_NAME]
    lease["spec"]["holderIdentity"] = "usurper"
    lease["metadata"]["resourceVersion"] = "999"
    with pytest.raises(leader.LeadershipLostError, match="usurper"):
        await task
    assert not a.is_leader()


async def test_timings_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="lease_duration > renew_deadline"):
        elector(LeaseStore().client(), "a", lease_duration=10, renew_deadline=10)
