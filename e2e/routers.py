"""What the routers' integration tests share: a cache that never catches up, and the requests a
router's client made in a window, read from the API server's audit log.

Every router is held to the same two promises on the real API server: steady calls make no
requests at all, and a stale cache costs a conflict and a retry, never a lost update.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from e2e.cluster import audit
from e2e.cluster.localcluster import LocalCluster
from flaggerpy import kube
from flaggerpy.testing import eventually

__all__ = ["FrozenCache", "requests_between"]


class FrozenCache:
    """A cache that never catches up: it answers with the snapshots it was given, forever."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        self._objects = {kube.key_of(obj): obj for obj in objects}

    def informer(self, resource: kube.Resource) -> FrozenCache:
        return self

    def get(self, key: Any) -> dict[str, Any] | None:
        return self._objects.get(key)

    has_synced = True
    lists_started = 0

    async def wait_synced(self) -> None:
        return None

    def add_handler(self, **handlers: Any) -> None:
        """It delivers nothing, so it tells no one."""

    def listed_since(self, lists_started: int) -> bool:
        return False


async def requests_between(
        cluster: LocalCluster, client: kube.KubeClient, since: datetime, namespace: str,
) -> audit.RequestCounts:
    """The router client's requests from ``since`` up to a sentinel GET, which is excluded.

    The sentinel is sent after everything measured; once the audit log holds it, it holds
    every earlier request of that client too, so a count of zero is a real zero.
    """
    await client.get(kube.NAMESPACES, namespace)
    sentinel: list[audit.AuditRecord] = []

    async def logged() -> bool:
        sentinel[:] = [
            r for r in audit.records(cluster.audit_log)
            if r.user_agent == client.user_agent and r.received >= since and r.verb == "get"
            and r.resource == "namespaces" and r.name == namespace]
        return bool(sentinel)

    await eventually(logged, within=15, what="the audit log to hold the sentinel")
    return audit.count_requests(cluster.audit_log, user_agent=client.user_agent,
                                since=since, until=sentinel[0].received)
