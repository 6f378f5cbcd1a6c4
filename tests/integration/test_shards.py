"""``-shard=K/N`` with leader election: three shards, each with an active process and a standby.

Every canary is reconciled by the active process of its shard only; when one dies, its standby
takes the shard's Lease and its canaries, and the other shards never notice.
"""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest

from e2e.cluster.localcluster import LocalCluster
from e2e.cluster.pytest_plugin import eventually
from e2e.processes import ControllerProcess
from flaggerpy.settings import shard_index

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]

SHARDS = 3


def broken_canary(name: str) -> dict[str, Any]:
    """A Canary its owner fails at once (no such provider): a visible answer, no workload."""
    return {
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": {"name": name},
        "spec": {"provider": "acme-mesh",
                 "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                 "service": {"port": 80},
                 "analysis": {"interval": "10s", "threshold": 1, "maxWeight": 50,
                              "stepWeight": 10}},
    }


def names_per_shard(namespace: str, per_shard: int, *, prefix: str) -> dict[int, list[str]]:
    names: dict[int, list[str]] = {shard: [] for shard in range(SHARDS)}
    index = 0
    while any(len(found) < per_shard for found in names.values()):
        name = f"{prefix}-{index}"
        found = names[shard_index(namespace, name, SHARDS)]
        if len(found) < per_shard:
            found.append(name)
        index += 1
    return names


def reconciled(process: ControllerProcess, namespace: str) -> set[str]:
    """The canaries ``process`` logged work on."""
    suffix = f".{namespace}"
    return {str(line["canary"]).removesuffix(suffix) for line in process.log_lines()
            if str(line.get("canary", "")).endswith(suffix)}


def elected(process: ControllerProcess) -> bool:
    return any(line.get("msg") == "leader_elected" for line in process.log_lines())


async def phases(cluster: LocalCluster, namespace: str) -> dict[str, str]:
    result = await cluster.akubectl("get", "canaries", "-n", namespace, "-o", "json")
    return {item["metadata"]["name"]: str((item.get("status") or {}).get("phase") or "")
            for item in json.loads(result.stdout)["items"]}


@pytest.mark.timeout(400)  # six processes start and elect on two cores
async def test_each_shard_has_one_owner_and_a_dead_owners_shard_is_taken_over(
    cluster: LocalCluster, namespace: str, processes: list[ControllerProcess]
) -> None:
    election = [
        "-enable-leader-election", f"-leader-election-namespace={namespace}",
        f"-namespace={namespace}", "-leader-election-lease-duration=6s",
        "-leader-election-renew-deadline=4s", "-leader-election-retry-period=1s",
    ]
    replicas = {shard: [ControllerProcess(kubeconfig=cluster.kubeconfig,
                                          args=[*election, f"-shard={shard}/{SHARDS}"],
                                          name=f"shard-{shard}-{replica}")
                        for replica in range(2)]
                for shard in range(SHARDS)}
    for pair in replicas.values():
        for process in pair:
            processes.append(process.start())

    async def every_shard_led() -> bool:
        return all(any(elected(p) for p in pair) for pair in replicas.values())

    await eventually(every_shard_led, within=150, what="an elected process in every shard")
    leases = json.loads((await cluster.akubectl(
        "get", "leases", "-n", namespace, "-o", "json")).stdout)["items"]
    assert sorted(lease["metadata"]["name"] for lease in leases) == [
        f"flagger-leader-election-shard-{shard}-of-{SHARDS}" for shard in range(SHARDS)]
    leaders = {shard: next(p for p in pair if elected(p)) for shard, pair in replicas.items()}

    first = names_per_shard(namespace, 2, prefix="first")
    for names in first.values():
        for name in names:
            await cluster.akubectl("apply", "-n", namespace, "-f", "-",
                                   input=json.dumps(broken_canary(name)))

    async def all_failed(names: list[str]) -> bool:
        seen = await phases(cluster, namespace)
        return all(seen.get(name) == "Failed" for name in names)

    everything = [name for names in first.values() for name in names]
    await eventually(lambda: all_failed(everything), within=60, what="every canary handled")
    for shard, pair in replicas.items():
        for process in pair:
            # Its own shard's canaries, by its leader only; never another shard's.
            assert reconciled(process, namespace) == (
                set(first[shard]) if process is leaders[shard] else set()), process.name

    dead = 1
    leaders[dead].signal(signal.SIGKILL)
    standby = next(p for p in replicas[dead] if p is not leaders[dead])
    later = names_per_shard(namespace, 1, prefix="later")
    for names in later.values():
        for name in names:
            await cluster.akubectl("apply", "-n", namespace, "-f", "-",
                                   input=json.dumps(broken_canary(name)))
    late = [name for names in later.values() for name in names]
    await eventually(lambda: all_failed(late), within=60,
                     what="the new canaries handled, the dead shard's by its standby")
    assert elected(standby)
    assert reconciled(standby, namespace) >= set(later[dead])
    assert not reconciled(standby, namespace) & {
        name for shard in (0, 2) for name in [*first[shard], *later[shard]]}
    for shard in (0, 2):  # the other shards' active processes kept theirs, and only theirs
        assert reconciled(leaders[shard], namespace) == {*first[shard], *later[shard]}
        [other] = [p for p in replicas[shard] if p is not leaders[shard]]
        assert reconciled(other, namespace) == set()
