"""Informers: a local, always-current copy of one resource, and change notifications.

Design rule 3 (reads come from caches) rests on this module. An informer
lists a resource once, then watches it from the list's resourceVersion, and
applies every change to an in-memory store that controllers read without a
request. Like client-go's shared informer:

- **Watch, resume, relist.** A watch that ends (server timeout) or breaks
  (connection lost) is resumed from the last resourceVersion seen, with
  bookmarks keeping that version fresh on quiet resources. When the server
  says the version is gone (410, after an etcd compaction), the informer
  relists and *diffs* the new list against its store: objects that vanished
  while the watch was down get a synthesized delete, changed ones an update,
  new ones an add. So no change is missed, only possibly coalesced.
- **Backoff.** Failures (the API server down, RBAC missing, a CRD not yet
  installed) are logged and retried with capped exponential backoff; the
  informer never gives up and never raises, so one missing CRD does not stop
  the process.
- **Resync.** Every ``resync_period`` each cached object is re-delivered to
  the handlers as an update of itself, so a controller that dropped a key
  (or whose external world changed) gets it again.
- **Indexers.** Besides ``namespace``, named index functions map an object to
  index values, e.g. "canaries by target name", so a Deployment event finds
  its Canary without a scan.

Handlers are plain sync callables: they should do nothing but enqueue a key
(controller-runtime's event handlers); they run in the informer's task and an
exception in one is logged, not propagated.

Objects handed out (by handlers, ``get``, ``list``, ``by_index``) are the
cached dicts themselves, not copies: treat them as read-only and
``copy.deepcopy`` before changing one.

Caches run on standbys too (``needs_leader_election = False``): a replica
that becomes leader starts with a warm cache.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from flaggerpy import kube
from flaggerpy.kube.keys import ObjectKey

log = structlog.get_logger(__name__)

JsonObject = kube.JsonObject
IndexFunc = Callable[[JsonObject], Iterable[str]]
"""Maps an object to the index values it is found under (none, one or many)."""

NAMESPACE_INDEX = "namespace"
"""The index every informer keeps: objects by ``metadata.namespace``."""

AddHandler = Callable[[JsonObject], None]
UpdateHandler = Callable[[JsonObject, JsonObject], None]
DeleteHandler = Callable[[JsonObject], None]


def namespace_index(obj: JsonObject) -> Iterable[str]:
    """Index function of :data:`NAMESPACE_INDEX`."""
    return (str((obj.get("metadata") or {}).get("namespace") or ""),)


@dataclass(frozen=True, slots=True)
class Handlers:
    """One registration of event handlers. Each is optional."""

    on_add: AddHandler | None = None
    on_update: UpdateHandler | None = None
    on_delete: DeleteHandler | None = None


Transform = Callable[[JsonObject], JsonObject]
"""What an informer keeps of each object it receives (controller-runtime's cache transform)."""


def drop_managed_fields(obj: JsonObject) -> JsonObject:
    """The object without ``metadata.managedFields``, which nothing here reads.

    Server-side apply's bookkeeping is often the largest part of a small object, once per
    field manager, and a cache holds one copy of every object it watches: at thousands of
    canaries it is most of the controller's memory. Writes built from a cached object lose
    nothing: an update without ``managedFields`` keeps the server's.
    """
    metadata = obj.get("metadata")
    if isinstance(metadata, dict) and "managedFields" in metadata:
        obj = {**obj, "metadata": {k: v for k, v in metadata.items() if k != "managedFields"}}
    return obj


class Informer:
    """A list+watch cache of one resource in one namespace scope (or all namespaces).

    Prefer :meth:`SharedInformerFactory.informer`, which hands every controller
    the same informer for the same resource, so one watch serves all.
    """

    needs_leader_election: bool = False

    def __init__(
            self,
            client: kube.KubeClient,
            resource: kube.Resource,
            *,
            namespace: str | None = None,  # None: all namespaces
            label_selector: str | None = None,
            field_selector: str | None = None,
            resync_period: float | None = None,  # None or 0: never
            watch_timeout: float = 300.0,  # seconds; each watch asks for 1-2x this, randomized
            backoff_initial: float = 0.8,
            backoff_max: float = 30.0,
            transform: Transform | None = None,  # applied to each object before it is cached
    ) -> None:
        self._client = client
        self._resource = resource
        self._transform = transform
        self._namespace = namespace if resource.namespaced else None
        self._label_selector = label_selector
        self._field_selector = field_selector
        self._resync_period = resync_period or None
        self._watch_timeout = watch_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._store: dict[ObjectKey, JsonObject] = {}
        self._indexers: dict[str, IndexFunc] = {NAMESPACE_INDEX: namespace_index}
        self._indices: dict[str, dict[str, set[ObjectKey]]] = {NAMESPACE_INDEX: {}}
        self._indexed: dict[str, dict[ObjectKey, tuple[str, ...]]] = {NAMESPACE_INDEX: {}}
        self._handlers: list[Handlers] = []
        self._synced = asyncio.Event()
        self._resource_version = ""
        self._lists_started = 0
        self._listed = 0  # the number of the list whose result the store holds (0: none yet)
        self._started = False
        self._log = log.bind(resource=str(resource), namespace=self._namespace or "*")

    # -- configuration ---------------------------------------------------------

    @property
    def resource(self) -> kube.Resource:
        """What this informer caches."""
        return self._resource

    @property
    def namespace(self) -> str | None:
        """The namespace it is limited to; None for all namespaces (or cluster scope)."""
        return self._namespace

    def add_indexer(self, name: str, func: IndexFunc) -> None:
        """Adds a named index; objects already cached are indexed at once."""
        if name in self._indexers:
            raise ValueError(f"{self._resource}: indexer {name!r} already exists")
        self._indexers[name] = func
        self._indices[name] = {}
        self._indexed[name] = {}
        for key, obj in self._store.items():
            self._index_one(name, key, obj)

    def add_handler(
            self,
            *,
            on_add: AddHandler | None = None,
            on_update: UpdateHandler | None = None,
            on_delete: DeleteHandler | None = None,
    ) -> None:
        """Registers handlers. A handler added late is first told about every cached object."""
        handlers = Handlers(on_add, on_update, on_delete)
        self._handlers.append(handlers)
        if handlers.on_add is not None:
            for obj in list(self._store.values()):
                self._call(handlers.on_add, obj)

    # -- reading the cache -----------------------------------------------------

    @property
    def has_synced(self) -> bool:
        """True once the first list is in the cache and its adds were delivered."""
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        """Waits for :attr:`has_synced` (controllers must not reconcile from an empty cache)."""
        await self._synced.wait()

    @property
    def resource_version(self) -> str:
        """The last resourceVersion seen (from a list, an event or a bookmark)."""
        return self._resource_version

    @property
    def lists_started(self) -> int:
        """How many lists this informer has started (its first, then one per relist)."""
        return self._lists_started

    def listed_since(self, lists_started: int) -> bool:
        """Whether the store holds a list that started after ``lists_started`` lists had.

        A write that completed when :attr:`lists_started` was N is in every list started
        after that, so once this is True for N the cache is at least as new as the write,
        even if a relist coalesced the write's own watch event away.
        """
        return self._listed > lists_started

    def get(self, key: ObjectKey) -> JsonObject | None:
        """The cached object with this key, or None. Read-only: copy before changing."""
        return self._store.get(key)

    def list(self, *, namespace: str | None = None) -> list[JsonObject]:
        """Every cached object, or those in one namespace."""
        if namespace is None:
            return list(self._store.values())
        return self.by_index(NAMESPACE_INDEX, namespace)

    def keys(self) -> builtins.list[ObjectKey]:
        """The keys of every cached object."""
        return list(self._store)

    def by_index(self, name: str, value: str) -> builtins.list[JsonObject]:
        """The cached objects whose index function ``name`` produced ``value``."""
        try:
            keys = self._indices[name].get(value, ())
        except KeyError:
            raise KeyError(f"{self._resource}: no indexer named {name!r}") from None
        return [self._store[key] for key in sorted(keys)]

    def __len__(self) -> int:
        return len(self._store)

    # -- running -----------------------------------------------------------------

    async def start(self) -> None:
        """Lists, then watches for ever (until cancelled); resyncs if configured."""
        if self._started:
            raise RuntimeError(f"informer for {self._resource} started twice")
        self._started = True
        async with asyncio.TaskGroup() as tg:
            if self._resync_period:
                tg.create_task(self._resync_loop(self._resync_period))
            await self._run()

    async def _run(self) -> None:
        backoff = self._backoff_initial
        need_list = True
        while True:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                    backoff = self._backoff_initial
                await self._watch_once()
                backoff = self._backoff_initial  # the server ended the watch: resume at once
            except kube.GoneError as exc:
                if need_list:  # the list itself expired (rare): do not spin
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self._backoff_max)
                self._log.info("informer_watch_expired", resource_version=self._resource_version,
                               reason=str(exc))
                need_list = True
            except kube.KubeError as exc:
                self._log.warning("informer_watch_failed", error=str(exc),
                                  relisting=need_list, retry_in=round(backoff, 2))
                await asyncio.sleep(backoff * (1 + random.random() / 2))
                backoff = min(backoff * 2, self._backoff_max)
            except Exception:
                # A bug (a handler is already guarded): relist from scratch rather than trust
                # a store that may be half-updated.
                self._log.exception("informer_crashed", retry_in=round(backoff, 2))
                need_list = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._backoff_max)

    async def _relist(self) -> None:
        self._lists_started += 1
        number = self._lists_started
        listed = await self._client.list(
            self._resource,
            namespace=self._namespace,
            label_selector=self._label_selector,
            field_selector=self._field_selector,
        )
        items = listed.items if self._transform is None else [
            self._transform(obj) for obj in listed.items]
        fresh = {kube.key_of(obj): obj for obj in items}
        old = self._store
        added = [obj for key, obj in fresh.items() if key not in old]
        updated = [(old[key], obj) for key, obj in fresh.items()
                   if key in old and kube.resource_version(old[key]) != kube.resource_version(obj)]
        deleted = [obj for key, obj in old.items() if key not in fresh]
        for key in list(old):
            if key not in fresh:
                self._remove(key)
        for key, obj in fresh.items():
            self._put(key, obj)
        self._resource_version = listed.resource_version
        self._listed = number
        first = not self._synced.is_set()
        self._log.info("informer_listed", objects=len(fresh), added=len(added),
                       updated=len(updated), deleted=len(deleted),
                       resource_version=listed.resource_version, initial=first)
        for obj in added:
            self._notify_add(obj)
        for before, after in updated:
            self._notify_update(before, after)
        for obj in deleted:
            self._notify_delete(obj)
        self._synced.set()

    async def _watch_once(self) -> None:
        timeout = int(self._watch_timeout * (1 + random.random()))
        events = self._client.watch(
            self._resource,
            namespace=self._namespace,
            resource_version=self._resource_version,
            label_selector=self._label_selector,
            field_selector=self._field_selector,
            timeout_seconds=max(1, timeout),
            allow_bookmarks=True,
        )
        async with contextlib.aclosing(events):
            async for event in events:
                self._apply(event)

    def _apply(self, event: kube.WatchEvent) -> None:
        version = event.resource_version
        if event.type is kube.EventType.BOOKMARK:
            if version:
                self._resource_version = version
            return
        obj = self._resource.stamp(event.object)
        if self._transform is not None:
            obj = self._transform(obj)
        key = kube.key_of(obj)
        before = self._store.get(key)
        if event.type is kube.EventType.DELETED:
            self._remove(key)
            self._resource_version = version or self._resource_version
            self._notify_delete(obj)
            return
        self._put(key, obj)
        self._resource_version = version or self._resource_version
        if before is None:
            self._notify_add(obj)
        else:
            self._notify_update(before, obj)

    async def _resync_loop(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            if not self._synced.is_set():
                continue
            for obj in list(self._store.values()):
                self._notify_update(obj, obj)

    # -- store and indices -----------------------------------------------------

    def _put(self, key: ObjectKey, obj: JsonObject) -> None:
        self._store[key] = obj
        for name in self._indexers:
            self._index_one(name, key, obj)

    def _remove(self, key: ObjectKey) -> None:
        self._store.pop(key, None)
        for name in self._indexers:
            self._unindex_one(name, key)

    def _index_one(self, name: str, key: ObjectKey, obj: JsonObject) -> None:
        self._unindex_one(name, key)
        try:
            values = tuple(dict.fromkeys(self._indexers[name](obj)))
        except Exception:
            self._log.exception("informer_index_failed", index=name, key=str(key))
            values = ()
        index = self._indices[name]
        for value in values:
            index.setdefault(value, set()).add(key)
        if values:
            self._indexed[name][key] = values

    def _unindex_one(self, name: str, key: ObjectKey) -> None:
        index = self._indices[name]
        for value in self._indexed[name].pop(key, ()):
            keys = index.get(value)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[value]

    # -- notifications ---------------------------------------------------------

    def _notify_add(self, obj: JsonObject) -> None:
        for handlers in self._handlers:
            if handlers.on_add is not None:
                self._call(handlers.on_add, obj)

    def _notify_update(self, before: JsonObject, after: JsonObject) -> None:
        for handlers in self._handlers:
            if handlers.on_update is not None:
                self._call(handlers.on_update, before, after)

    def _notify_delete(self, obj: JsonObject) -> None:
        for handlers in self._handlers:
            if handlers.on_delete is not None:
                self._call(handlers.on_delete, obj)

    def _call(self, handler: Callable[..., None], *objs: JsonObject) -> None:
        try:
            handler(*objs)
        except Exception:
            self._log.exception("informer_handler_failed", handler=repr(handler),
                                key=str(kube.key_of(objs[-1])))


_DEFAULT: Any = object()


class SharedInformerFactory:
    """Hands out one informer per (resource, namespace, label selector) and runs them all.

    Register the factory with the manager (not its informers): its ``start``
    runs every informer it made, including those asked for after it started.
    """

    needs_leader_election: bool = False

    def __init__(
            self,
            client: kube.KubeClient,
            *,
            namespace: str | None = None,  # default scope; None = all namespaces
            resync_period: float | None = None,
            watch_timeout: float = 300.0,
            transform: Transform | None = None,  # for every informer it makes
    ) -> None:
        self._client = client
        self._namespace = namespace
        self._resync_period = resync_period
        self._watch_timeout = watch_timeout
        self._transform = transform
        self._informers: dict[tuple[kube.Resource, str | None, str | None], Informer] = {}
        self._group: asyncio.TaskGroup | None = None

    def informer(
            self,
            resource: kube.Resource,
            *,
            namespace: str | None = _DEFAULT,  # default: the factory's scope
            label_selector: str | None = None,
            resync_period: float | None = _DEFAULT,  # default: the factory's
    ) -> Informer:
        """The shared informer for this resource and scope, created on first request (whose
        ``resync_period`` it keeps)."""
        ns = self._namespace if namespace is _DEFAULT else namespace
        if not resource.namespaced:
            ns = None
        key = (resource, ns, label_selector)
        informer = self._informers.get(key)
        if informer is None:
            informer = Informer(
                self._client, resource, namespace=ns, label_selector=label_selector,
                resync_period=(self._resync_period if resync_period is _DEFAULT
                               else resync_period),
                watch_timeout=self._watch_timeout,
                transform=self._transform)
            self._informers[key] = informer
            if self._group is not None:
                self._group.create_task(informer.start())
        return informer

    @property
    def informers(self) -> list[Informer]:
        """Every informer handed out so far."""
        return list(self._informers.values())

    @property
    def has_synced(self) -> bool:
        """True when every informer handed out so far has synced."""
        return all(informer.has_synced for informer in self._informers.values())

    async def wait_synced(self) -> None:
        """Waits until every informer handed out so far has synced."""
        await asyncio.gather(*(i.wait_synced() for i in list(self._informers.values())))

    async def start(self) -> None:
        """Runs every informer (present and future) until cancelled."""
        if self._group is not None:
            raise RuntimeError("informer factory started twice")
        async with asyncio.TaskGroup() as group:
            self._group = group
            for informer in list(self._informers.values()):
                group.create_task(informer.start())
            await asyncio.Event().wait()


def index_by(func: Callable[[JsonObject], str | None]) -> IndexFunc:
    """Turns "one value or None" into an index function (the common case)."""
    def index(obj: JsonObject) -> Iterable[str]:
        value = func(obj)
        return (value,) if value else ()
    return index


def field_index(*path: str) -> IndexFunc:
    """An index on a string field, e.g. ``field_index("spec", "targetRef", "name")``."""
    def get(obj: JsonObject) -> str | None:
        value: Any = obj
        for part in path:
            if not isinstance(value, Mapping):
                return None
            value = value.get(part)
        return value if isinstance(value, str) else None
    return index_by(get)
