"""Lease leader election against the real API server, with two candidates in one process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from e2e.cluster.localcluster import LocalCluster
from flaggerpy import kube
from flaggerpy.kube import config as kube_config
from flaggerpy.runtime import leader

pytestmark = pytest.mark.integration

UNREACHABLE = "https://127.0.0.1:9"  # nothing listens there: every request is refused
TIMING: dict[str, Any] = {"lease_duration": 4, "renew_deadline": 3, "retry_period": 0.5}
MAX_RETRY = 0.5 * 2.2  # a retry period with client-go's jitter


@pytest.fixture
async def apis(cluster: LocalCluster) -> AsyncIterator[Callable[[], Any]]:
    """Makes ApiClients of their own (one per candidate), so one can be cut off alone."""
    made: list[ApiClient] = []

    async def make() -> ApiClient:
        api = await kube_config.new_api_client(kubeconfig=cluster.kubeconfig)
        made.append(api)
        return api

    yield make
    for api in made:
        await api.close()


def candidate(
        api: ApiClient, namespace: str, identity: str, **options: Any,
) -> leader.LeaderElector:
    return leader.LeaderElector(kube.KubeClient(api), namespace=namespace, name="flaggerpy-test",
                                identity=identity, **{**TIMING, **options})


async def stop(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def lease_spec(api: ApiClient, namespace: str) -> dict[str, Any]:
    lease = await kube.KubeClient(api).get(kube.LEASES, "flaggerpy-test", namespace=namespace)
    spec: dict[str, Any] = lease["spec"]
    return spec


async def test_standby_takes_over_from_a_crashed_leader(
        apis: Callable[[], Any], namespace: str) -> None:
    a = candidate(await apis(), namespace, "a", release_on_cancel=False)  # a crash releases nothing
    b = candidate(await apis(), namespace, "b")
    task_a = asyncio.create_task(a.start())
    async with asyncio.timeout(10):
        await a.elected.wait()
    task_b = asyncio.create_task(b.start())
    try:
        await asyncio.sleep(5)  # longer than the lease: a keeps renewing, b stays a standby
        assert a.is_leader()
        assert not b.elected.is_set()
        spec = await lease_spec(await apis(), namespace)
        assert spec["holderIdentity"] == "a"
        assert spec["leaseDurationSeconds"] == 4

        loop = asyncio.get_running_loop()
        last_renew = a._renewed_at
        await stop(task_a)
        crashed_at = loop.time()
        async with asyncio.timeout(15):
            await b.elected.wait()
        assert loop.time() - last_renew >= 4  # never inside the old leader's lease
        assert loop.time() - crashed_at <= 4 + 2 * MAX_RETRY + 1.5
        spec = await lease_spec(await apis(), namespace)
        assert spec["holderIdentity"] == "b"
        assert spec["leaseTransitions"] == 1
    finally:
        await stop(task_a, task_b)


async def test_clean_stop_releases_the_lease(apis: Callable[[], Any], namespace: str) -> None:
    a = candidate(await apis(), namespace, "a", lease_duration=30, renew_deadline=20)
    b = candidate(await apis(), namespace, "b", lease_duration=30, renew_deadline=20)
    task_a = asyncio.create_task(a.start())
    async with asyncio.timeout(10):
        await a.elected.wait()
    task_b = asyncio.create_task(b.start())
    try:
        await asyncio.sleep(1)
        loop = asyncio.get_running_loop()
        stopped_at = loop.time()
        await stop(task_a)
        spec = await lease_spec(await apis(), namespace)
        assert spec["holderIdentity"] in ("", "b")
        async with asyncio.timeout(10):
            await b.elected.wait()
        assert loop.time() - stopped_at < 5  # not the 30 s lease
    finally:
        await stop(task_a, task_b)


async def test_partitioned_leader_stops_writing_by_the_deadline(
        apis: Callable[[], Any], namespace: str) -> None:
    cut_off = await apis()
    a = candidate(cut_off, namespace, "a")
    writes = kube.KubeClient(cut_off).fenced(a.is_leader)  # what controllers would write with
    task_a = asyncio.create_task(a.start())
    async with asyncio.timeout(10):
        await a.elected.wait()
    b = candidate(await apis(), namespace, "b")
    task_b = asyncio.create_task(b.start())
    try:
        await writes.create(kube.CONFIGMAPS, {"metadata": {"name": "while-leading",
                                                           "namespace": namespace}})
        loop = asyncio.get_running_loop()
        cut_off.configuration.host = UNREACHABLE
        last_renew = a._renewed_at
        for _ in range(100):  # is_leader is a clock, not an event: poll it
            if not a.is_leader():
                break
            await asyncio.sleep(0.05)
        fenced_at = loop.time()
        assert not a.is_leader()
        assert fenced_at - last_renew <= 3 + 0.2  # renew_deadline
        with pytest.raises(kube.WriteFencedError):
            await writes.create(kube.CONFIGMAPS, {"metadata": {"name": "after-deadline",
                                                               "namespace": namespace}})
        with pytest.raises(leader.LeadershipLostError):
            async with asyncio.timeout(5):
                await task_a
        # The standby only takes over once the lease (4 s from the last renewal) has run out.
        async with asyncio.timeout(15):
            await b.elected.wait()
        assert loop.time() - last_renew >= 4
        assert fenced_at < loop.time()
    finally:
        await stop(task_a, task_b)
