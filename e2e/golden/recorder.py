"""Watches every kind a snapshot holds and keeps each version the API server emitted.

The corpus was recorded this way: watches on every snapshot kind, ordered afterwards by
resourceVersion (one etcd: the order of the writes). One recorder serves all the cases of a run;
it lists and watches across the cluster and keeps only the objects of the case namespaces (and of
cluster-scoped kinds, which a provider's cases then do not share at once, when they name a case
namespace: Kuma's TrafficRoutes carry it in every service tag, and the cluster may hold other
tests' objects of the same kind).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from e2e.golden.normalize import identity
from e2e.golden.steps import Change
from flaggerpy import kube

__all__ = ["CORE_KINDS", "Recorder", "canary_phase", "names_namespace"]

Json = dict[str, Any]
Key = tuple[str, str, str, str]

CORE_KINDS: tuple[kube.Resource, ...] = (
    kube.DEPLOYMENTS, kube.DAEMONSETS, kube.SERVICES, kube.CONFIGMAPS, kube.SECRETS,
    kube.HORIZONTAL_POD_AUTOSCALERS, kube.CANARIES,
)
"""The kinds every snapshot holds besides the provider's routing kinds."""

CLUSTER = ""
"""Where objects of cluster-scoped kinds are kept."""


def canary_phase(objects: Iterable[Mapping[str, Any]]) -> str | None:
    """The phase of the Canary among ``objects`` ("" without status, None without Canary)."""
    for obj in objects:
        if obj.get("kind") == "Canary":
            return str((obj.get("status") or {}).get("phase") or "")
    return None


def names_namespace(obj: Mapping[str, Any], namespaces: Iterable[str]) -> bool:
    """Whether a cluster-scoped object names one of ``namespaces`` anywhere in it: how the
    objects a case's controller wrote are told from other tests' objects of the same kind."""
    text = json.dumps(obj)
    return any(namespace in text for namespace in namespaces)


def _revision(obj: Mapping[str, Any]) -> int:
    return int(kube.resource_version(obj) or 0)


class Recorder:
    """List, then watch, each resource; ``changes(ns)`` is every version seen in ``ns``."""

    def __init__(self, client: kube.KubeClient, resources: Sequence[kube.Resource],
                 namespaces: Iterable[str]) -> None:
        self._client = client
        self._resources = list(resources)
        self._namespaces = set(namespaces)
        self._changes: dict[str, list[Change]] = {ns: [] for ns in [*self._namespaces, CLUSTER]}
        self._current: dict[str, dict[Key, Json]] = {ns: {} for ns in self._changes}
        self._last_change: dict[str, float] = dict.fromkeys(self._changes, time.monotonic())
        self._changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> Recorder:
        listed = await asyncio.gather(*(self._client.list(r) for r in self._resources))
        for resource, answer in zip(self._resources, listed, strict=True):
            for obj in answer.items:
                self._keep(resource, obj, deleted=False)
            self._tasks.append(asyncio.create_task(
                self._watch(resource, answer.resource_version), name=f"watch {resource}"))
        return self

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- what was seen ---------------------------------------------------------------------------
    def changes(self, namespace: str) -> list[Change]:
        """Every version seen in ``namespace`` and of cluster-scoped kinds, in write order."""
        return sorted([*self._changes[namespace], *self._changes[CLUSTER]],
                      key=lambda c: c.revision)

    def objects(self, namespace: str) -> list[Json]:
        return [*self._current[namespace].values(), *self._current[CLUSTER].values()]

    async def wait_for(self, namespace: str, check: Callable[[list[Json]], bool], *,
                       within: float, what: str) -> None:
        """Until ``check(objects)`` holds for the namespace; TimeoutError naming ``what``."""
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: check(self.objects(namespace))), within)
            except TimeoutError:
                phase = canary_phase(self.objects(namespace))
                raise TimeoutError(f"{namespace}: no {what} after {within:.0f}s "
                                   f"(Canary phase {phase!r})") from None

    async def settle(self, namespace: str, *, quiet: float = 3.0, within: float = 15.0) -> None:
        """Until nothing in ``namespace`` changed for ``quiet`` seconds (at most ``within``).

        A phase is written before the writes that follow it in the same tick may land; the
        snapshot waits for them rather than racing them.
        """
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            idle = time.monotonic() - self._last_change[namespace]
            if idle >= quiet:
                return
            await asyncio.sleep(min(quiet - idle, deadline - time.monotonic()) + 0.05)

    async def catch_up(self, namespace: str, *, within: float = 30.0) -> None:
        """Until the watches have delivered every object at the version a fresh list shows.

        Each kind has a watch of its own, and on a busy machine one can lag seconds behind the
        others: a quiet moment (:meth:`settle`) is then not the end, and steps cut there would
        miss the lagging kind's last writes (a primary's promotion seen after the Canary's
        ``Succeeded``). A list is what the API server holds; the steps wait for it.
        """
        answers = await asyncio.gather(*(
            self._client.list(r, namespace=namespace if r.namespaced else None)
            for r in self._resources))
        wanted: dict[Key, int] = {}
        for resource, answer in zip(self._resources, answers, strict=True):
            for obj in answer.items:
                resource.stamp(obj)
                if resource.namespaced or names_namespace(obj, [namespace]):
                    wanted[identity(obj)] = _revision(obj)

        def delivered(objects: list[Json]) -> bool:
            seen = {identity(obj): _revision(obj) for obj in objects}
            return all(seen.get(key, -1) >= version for key, version in wanted.items())

        await self.wait_for(namespace, delivered, within=within,
                            what="watch events up to what a list shows")

    # -- watching --------------------------------------------------------------------------------
    async def _watch(self, resource: kube.Resource, version: str) -> None:
        while True:
            try:
                async with contextlib.aclosing(self._client.watch(
                        resource, resource_version=version, timeout_seconds=240)) as events:
                    async for event in events:
                        version = event.resource_version or version
                        if event.type is not kube.EventType.BOOKMARK:
                            self._keep(resource, event.object,
                                       deleted=event.type is kube.EventType.DELETED)
                            async with self._changed:
                                self._changed.notify_all()
            except kube.GoneError:  # compacted: start over from a fresh list
                answer = await self._client.list(resource)
                for obj in answer.items:
                    self._keep(resource, obj, deleted=False)
                version = answer.resource_version
            except kube.TransportError:
                await asyncio.sleep(0.5)

    def _keep(self, resource: kube.Resource, obj: Json, *, deleted: bool) -> None:
        resource.stamp(obj)
        namespace = (obj.get("metadata") or {}).get("namespace") or CLUSTER
        if resource.namespaced and namespace not in self._namespaces:
            return
        if not resource.namespaced:
            if not names_namespace(obj, self._namespaces):
                return
            namespace = CLUSTER
        key = identity(obj)
        revision = _revision(obj)
        seen = self._current[namespace].get(key)
        if not deleted and seen is not None and _revision(seen) == revision:
            return  # a relist repeating what the watch delivered
        self._changes[namespace].append(Change(revision, key, None if deleted else obj))
        if deleted:
            self._current[namespace].pop(key, None)
        else:
            self._current[namespace][key] = obj
        self._last_change[namespace] = time.monotonic()
