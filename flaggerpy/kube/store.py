"""The one write path: read from the cache, build, write only on a change, read your writes.

Every object flaggerpy or a plugin writes -- the primary Deployment, the canary Services, a
VirtualService, an HPA copy, the Canary's status -- goes through :class:`ObjectStore`, which does
the I/O the same way for all of them (design rule 3):

- **Reads come from informer caches.** The store asks its :class:`Caches` for the informer of a
  resource and waits for its first list, so a miss means "absent", not "not listed yet". Without
  caches (tests, tools, a mesh on another API server) a read is a GET.
- **Our writes are overlaid until the watch has delivered them.** A write returns the stored
  object; the store serves it instead of the cached copy until the informer has seen that very
  write -- an event carrying the same resourceVersion (resourceVersions are opaque: they are
  only ever compared for equality), a delete of that object (same uid), or a list started after
  the write. So a reconcile that writes the primary and then checks its rollout, or a router
  that writes a VirtualService and reads its weights back, sees what it wrote, without waiting.
- **Writes are pure builds.** :meth:`ObjectStore.apply` hands the current object (a private
  copy, or None) to ``build(current) -> desired`` and writes only when the result differs:
  create when absent, a PUT conditional on the resourceVersion read otherwise. A conflict (the
  cache was behind, someone else wrote) re-reads the object with a GET and builds again, a few
  times at most: a single-call retry, not a reconcile retry (design rule 4).
- **Owner references** are set by the store when the caller names an owner, merged with those
  the object already has, so a generated object is garbage-collected with its Canary.
- **It tells others' changes from its own.** A delivered update or delete of an object the
  store reads that is not one of its writes (a person's edit, another controller's write, a
  deletion; informer resyncs excluded) is handed to ``on_changed_by_others``: the process
  repairs drift on those events instead of re-checking every object on a timer. The store's
  own deletes count as others' (a delete is not overlaid).
- **It says what it did**: :class:`Applied` carries created / updated / unchanged and the
  object as stored.

API failures are :class:`~flaggerpy.kube.errors.KubeError`\\ s whose message names the object
(``"VirtualService ns/name: update failed: ..."``); ``WriteFencedError`` (this replica is not
the leader) passes through unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

import structlog

from flaggerpy.kube import errors
from flaggerpy.kube.client import KubeClient, PatchType
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.kube.objects import (
    JsonObject,
    OperationResult,
    key_of,
    resource_version,
    strip_for_create,
)
from flaggerpy.kube.resources import Resource

__all__ = [
    "CACHE_SYNC_TIMEOUT",
    "Applied",
    "Build",
    "Caches",
    "ObjectStore",
    "WatchedCache",
    "controller_reference",
    "is_controlled_by",
    "merge_owner_reference",
]

log = structlog.get_logger(__name__)

CACHE_SYNC_TIMEOUT: Final = 30.0
"""Seconds a read waits for a cache whose first list has not finished. A missing CRD or RBAC
rule never finishes it: the read then fails naming the resource instead of hanging a worker."""

WRITE_ATTEMPTS: Final = 3
"""How many times a write is built and tried when the object keeps changing under it."""

Build = Callable[[JsonObject | None], Mapping[str, Any] | None]
"""A pure builder: the current object (a private copy; None if absent) in, the object to store
out. None, or an object equal to the current one, means "nothing to write"."""


@runtime_checkable
class WatchedCache(Protocol):
    """What the store needs of an informer: lookups, its first list, and its deliveries.

    ``flaggerpy.runtime.informer.Informer`` is one. ``lists_started`` and ``listed_since`` let
    the store tell that a list taken after one of its writes is in the cache (a relist after a
    compaction coalesces events, so the write's own event may never be delivered).
    """

    @property
    def has_synced(self) -> bool: ...

    async def wait_synced(self) -> None: ...

    def get(self, key: ObjectKey) -> Mapping[str, Any] | None: ...

    def add_handler(
            self,
            *,
            on_add: Callable[[JsonObject], None] | None = None,
            on_update: Callable[[JsonObject, JsonObject], None] | None = None,
            on_delete: Callable[[JsonObject], None] | None = None,
    ) -> None: ...

    @property
    def lists_started(self) -> int: ...

    def listed_since(self, lists_started: int) -> bool: ...


class Caches(Protocol):
    """Hands out the shared informer of a resource (``SharedInformerFactory`` is one)."""

    def informer(self, resource: Resource) -> WatchedCache: ...


@dataclass(frozen=True, slots=True)
class Applied:
    """What :meth:`ObjectStore.apply` did, and the object as stored afterwards (None if absent)."""

    result: OperationResult
    obj: Mapping[str, Any] | None

    @property
    def changed(self) -> bool:
        """Whether a write was made (created or updated)."""
        return self.result is not OperationResult.UNCHANGED


@dataclass(slots=True)
class _Write:
    """One of our writes the watch has not delivered yet."""

    obj: JsonObject
    version: str
    uid: str
    lists_started: int


# -- owner references ---------------------------------------------------------------------------


def controller_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """The controller reference to a stored ``owner`` that generated objects carry.

    The garbage collector deletes them with the owner; ``blockOwnerDeletion`` holds a
    foreground deletion of the owner until they are gone (client-go's ``NewControllerRef``).
    """
    meta = owner.get("metadata") or {}
    uid, name = meta.get("uid"), meta.get("name")
    if not uid or not name:
        raise ValueError(f"{owner.get('kind')} {meta.get('namespace')}/{name} has no "
                         "metadata.uid; owner references need the stored object")
    return {
        "apiVersion": str(owner.get("apiVersion") or ""),
        "kind": str(owner.get("kind") or ""),
        "name": str(name),
        "uid": str(uid),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def merge_owner_reference(
        current: Sequence[Mapping[str, Any]] | None, reference: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """``current`` with ``reference`` in place of any reference to the same owner. Pure.

    The same owner is the same uid, or the same kind and name (an owner deleted and created
    again). Another controller's reference is dropped, as only one may be the controller.
    """
    merged: list[dict[str, Any]] = []
    for ref in current or ():
        same = ref.get("uid") == reference.get("uid") or (
            ref.get("kind") == reference.get("kind") and ref.get("name") == reference.get("name"))
        if same or (ref.get("controller") and reference.get("controller")):
            continue
        merged.append(dict(ref))
    merged.append(dict(reference))
    return merged


def is_controlled_by(obj: Mapping[str, Any], *, kind: str, name: str) -> bool:
    """Whether ``kind``/``name`` is ``obj``'s controller (kind and name, as Flagger matches)."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return bool(ref.get("kind") == kind and ref.get("name") == name)
    return False


def _with_owner(obj: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(obj)
    meta = dict(result.get("metadata") or {})
    meta["ownerReferences"] = merge_owner_reference(meta.get("ownerReferences"), reference)
    result["metadata"] = meta
    return result


def _uid(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def _gone(uid: str) -> str:
    """What the in-flight record of a write notes for a delete of the object with ``uid``."""
    return f"deleted {uid}"


# -- the store ----------------------------------------------------------------------------------


class ObjectStore:
    """Reads and writes objects of any resource for the engine and every plugin.

    One per API server, shared for the process's life: it holds the cache handles and our
    writes the watch has not delivered yet, nothing about any canary's progress.
    """

    def __init__(
            self,
            client: KubeClient,
            *,
            caches: Caches | None = None,  # None: every read is a GET (tests, tools)
            sync_timeout: float = CACHE_SYNC_TIMEOUT,
            on_changed_by_others: Callable[[Resource, JsonObject], None] | None = None,
    ) -> None:
        self._client = client
        self._caches = caches
        self._sync_timeout = sync_timeout
        self._on_changed_by_others = on_changed_by_others
        self._watched: dict[Resource, WatchedCache] = {}
        self._pending: dict[tuple[Resource, ObjectKey], _Write] = {}
        # What the watch delivered of an object while a write of it was in flight: a write
        # the watch delivered before its response came back must not be overlaid.
        self._in_flight: dict[tuple[Resource, ObjectKey], list[set[str]]] = {}

    def __repr__(self) -> str:
        server = self._client.server if self._client is not None else None
        return f"ObjectStore({server!r}, cached={self._caches is not None})"

    @property
    def client(self) -> KubeClient:
        """The client the store writes through (for lists, watches and deletes)."""
        return self._client

    @property
    def cached(self) -> bool:
        """Whether reads come from informer caches (False: every read is a GET)."""
        return self._caches is not None

    # -- reads -------------------------------------------------------------------------------

    async def get(
            self, resource: Resource, *, namespace: str | None, name: str,
    ) -> Mapping[str, Any] | None:
        """The object as we last know it: our undelivered write, else the cache, else a GET.

        Read-only: copy before changing it (cached objects are shared).
        """
        cache = await self._cache(resource)
        if cache is None:
            return await self._read(resource, namespace, name)
        key = ObjectKey(namespace or "" if resource.namespaced else "", name)
        cached = cache.get(key)
        pending = self._pending.get((resource, key))
        if pending is None:
            return cached
        if cache.listed_since(pending.lists_started):
            del self._pending[(resource, key)]  # a list taken after the write is in the cache
            return cached
        return pending.obj

    # -- writes ------------------------------------------------------------------------------

    async def apply(
            self,
            resource: Resource,
            *,
            namespace: str | None,
            name: str,
            build: Build,
            owner: Mapping[str, Any] | None = None,  # a stored object: becomes the controller
    ) -> Applied:
        """Makes the object what ``build`` says, writing only if that differs from what it is.

        ``build`` may be called again with a fresher object after a conflict, so it must be
        pure. With ``owner``, the built object gets a controller reference to it (merged with
        the references it has).
        """
        label = self._label(resource, namespace, name)
        reference = controller_reference(owner) if owner is not None else None
        current = await self.get(resource, namespace=namespace, name=name)
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            private = copy.deepcopy(dict(current)) if current is not None else None
            wanted = build(private)
            if wanted is not None and reference is not None:
                wanted = _with_owner(wanted, reference)
            if wanted is None or (current is not None and wanted == current):
                return Applied(OperationResult.UNCHANGED, current)
            verb = "create" if current is None else "update"
            try:
                with self._writing(resource, namespace, name) as delivered:
                    if current is None:
                        stored = await self._client.create(
                            resource, strip_for_create(wanted), namespace=namespace)
                    else:
                        stored = await self._client.replace(
                            resource, wanted, namespace=namespace)
            except errors.WriteFencedError:
                raise
            except (errors.ConflictError, errors.AlreadyExistsError, errors.NotFoundError) as exc:
                if isinstance(exc, errors.NotFoundError) and current is None:
                    _prefix(exc, f"{label}: create failed")  # the namespace is missing
                    raise
                if attempt == WRITE_ATTEMPTS:
                    _prefix(exc, f"{label}: {verb} failed, the object kept changing "
                                 f"({WRITE_ATTEMPTS} attempts)")
                    raise
                log.debug("store_write_retry", object=label, reason=exc.reason)
                self._forget(resource, namespace, name)
                current = await self._read(resource, namespace, name)
                continue
            except errors.KubeError as exc:
                _prefix(exc, f"{label}: {verb} failed")
                raise
            self._remember(resource, stored, delivered)
            result = OperationResult.CREATED if current is None else OperationResult.UPDATED
            log.debug("store_object_written", object=label, result=result.value)
            return Applied(result, stored)
        raise AssertionError("unreachable")  # pragma: no cover

    async def patch(
            self,
            resource: Resource,
            *,
            namespace: str | None,
            name: str,
            patch: Mapping[str, Any] | Sequence[Mapping[str, Any]],
            patch_type: PatchType = PatchType.MERGE,
            subresource: str | None = None,  # "status" for the status subresource
    ) -> JsonObject:
        """Patches the object and overlays the result until the watch delivers it.

        For writes whose content is a delta rather than a whole desired object: a status
        write, a scale, an annotation bump.
        """
        label = self._label(resource, namespace, name)
        try:
            with self._writing(resource, namespace, name) as delivered:
                stored = await self._client.patch(
                    resource, name, patch, namespace=namespace, subresource=subresource,
                    patch_type=patch_type)
        except errors.WriteFencedError:
            raise
        except errors.KubeError as exc:
            what = f"{subresource} patch" if subresource else "patch"
            _prefix(exc, f"{label}: {what} failed")
            raise
        self._remember(resource, stored, delivered)
        return stored

    async def delete(
            self,
            resource: Resource,
            *,
            namespace: str | None,
            name: str,
    ) -> bool:
        """Deletes the object; False if it was already gone."""
        label = self._label(resource, namespace, name)
        self._forget(resource, namespace, name)
        try:
            await self._client.delete(resource, name, namespace=namespace)
        except errors.NotFoundError:
            return False
        except errors.WriteFencedError:
            raise
        except errors.KubeError as exc:
            _prefix(exc, f"{label}: delete failed")
            raise
        return True

    def remember(self, resource: Resource, stored: Mapping[str, Any]) -> None:
        """Overlays an object we have just written until the watch delivers it.

        :meth:`apply` and :meth:`patch` call this; a caller that wrote through the client
        directly (a create with options the store does not offer) may too.
        """
        self._remember(resource, stored, ())

    def _remember(
            self, resource: Resource, stored: Mapping[str, Any], delivered: Collection[str],
    ) -> None:
        cache = self._watch(resource)
        if cache is None:
            return
        version = resource_version(stored)
        if not version:
            return
        key = key_of(stored)
        cached = cache.get(key)
        if (version in delivered or _gone(_uid(stored)) in delivered
                or (cached is not None and resource_version(cached) == version)):
            return  # the watch was quicker than the response: the cache has it, or newer
        self._pending[(resource, key)] = _Write(
            obj=dict(stored), version=version, uid=_uid(stored),
            lists_started=cache.lists_started)

    # -- plumbing ----------------------------------------------------------------------------

    def _watch(self, resource: Resource) -> WatchedCache | None:
        """The resource's cache, told to report its deliveries to the store on first use."""
        if self._caches is None:
            return None
        cache = self._watched.get(resource)
        if cache is None:
            cache = self._caches.informer(resource)
            cache.add_handler(on_add=self._delivered(resource),
                              on_update=self._updated(resource),
                              on_delete=self._deleted(resource))
            self._watched[resource] = cache
        return cache

    async def _cache(self, resource: Resource) -> WatchedCache | None:
        cache = self._watch(resource)
        if cache is None:
            return None
        if not cache.has_synced:
            try:
                async with asyncio.timeout(self._sync_timeout):
                    await cache.wait_synced()
            except TimeoutError:
                raise errors.KubeError(
                    0, "CacheNotSynced",
                    f"the cache of {resource} has not synced after {self._sync_timeout:g}s "
                    "(is the resource served, its CRD installed and readable?)") from None
        return cache

    @contextlib.contextmanager
    def _writing(
            self, resource: Resource, namespace: str | None, name: str,
    ) -> Iterator[set[str]]:
        """Collects what the watch delivers of the object while a write of it is in flight."""
        key = (resource, ObjectKey(namespace or "" if resource.namespaced else "", name))
        delivered: set[str] = set()
        self._in_flight.setdefault(key, []).append(delivered)
        try:
            yield delivered
        finally:
            # By identity: two writes in flight may hold equal sets.
            writes = [other for other in self._in_flight[key] if other is not delivered]
            if writes:
                self._in_flight[key] = writes
            else:
                del self._in_flight[key]

    def _delivered(self, resource: Resource) -> Callable[[JsonObject], None]:
        def on_add(obj: JsonObject) -> None:
            self._ours(resource, obj)
        return on_add

    def is_ours(self, resource: Resource, obj: Mapping[str, Any]) -> bool:
        """Whether this delivered version of ``obj`` is one of our writes: the version a write
        stored, or one delivered while a write of it was in flight. Asked by a handler that
        runs before the store's own (one registered at start), which then notes the delivery."""
        key = (resource, key_of(obj))
        pending = self._pending.get(key)
        return bool(self._in_flight.get(key)) or (
            pending is not None and resource_version(obj) == pending.version)

    def _ours(self, resource: Resource, obj: JsonObject) -> bool:
        """:meth:`is_ours`, noting the delivery: a write delivered is no longer overlaid."""
        ours = self.is_ours(resource, obj)
        key = (resource, key_of(obj))
        for delivered in self._in_flight.get(key, ()):
            delivered.add(resource_version(obj))
        pending = self._pending.get(key)
        if pending is not None and resource_version(obj) == pending.version:
            del self._pending[key]
        return ours

    def _updated(self, resource: Resource) -> Callable[[JsonObject, JsonObject], None]:
        def on_update(before: JsonObject, after: JsonObject) -> None:
            ours = self._ours(resource, after)
            if (not ours and self._on_changed_by_others is not None
                    and resource_version(before) != resource_version(after)):  # not a resync
                self._on_changed_by_others(resource, after)
        return on_update

    def _deleted(self, resource: Resource) -> Callable[[JsonObject], None]:
        def on_delete(obj: JsonObject) -> None:
            key = (resource, key_of(obj))
            in_flight = self._in_flight.get(key, ())
            for delivered in in_flight:
                delivered.add(_gone(_uid(obj)))
            pending = self._pending.get(key)
            if pending is not None and _uid(obj) == pending.uid:
                del self._pending[key]  # the object we wrote is gone
            if not in_flight and self._on_changed_by_others is not None:
                self._on_changed_by_others(resource, obj)
        return on_delete

    def _forget(self, resource: Resource, namespace: str | None, name: str) -> None:
        self._pending.pop(
            (resource, ObjectKey(namespace or "" if resource.namespaced else "", name)), None)

    async def _read(
            self, resource: Resource, namespace: str | None, name: str,
    ) -> JsonObject | None:
        try:
            return await errors.ignore_not_found(
                self._client.get(resource, name, namespace=namespace))
        except errors.WriteFencedError:
            raise
        except errors.KubeError as exc:
            _prefix(exc, f"{self._label(resource, namespace, name)}: read failed")
            raise

    @staticmethod
    def _label(resource: Resource, namespace: str | None, name: str) -> str:
        return f"{resource.kind} {namespace}/{name}" if namespace else f"{resource.kind} {name}"


def _prefix(exc: errors.KubeError, what: str) -> None:
    """Names the object and the operation in the error's message; its class stays, so callers
    still tell a conflict from a refusal."""
    exc.message = f"{what}: {exc.message}"
    exc.args = (exc.status, exc.reason, exc.message)
