"""The one apply path of mesh routers: read from the cache, build, write only on a change.

Every mesh router owns a few objects (Istio: two DestinationRules and a VirtualService; other
meshes: a TrafficSplit, an HTTPRoute, ...). Each object has a *pure builder* in the router's
module -- ``build(current) -> desired`` -- and goes through :class:`MeshObjects` here, which
does all the I/O the same way for every mesh (design rule 3, style §9.3):

- **Reads come from the informer cache** the core hands over in ``ProviderContext.caches``;
  without caches (tests, tools) or when the mesh lives on another API server
  (``ProviderContext.mesh_api``), they are GETs. A cache that has not finished its first list
  is waited for, so a miss means "absent", not "not yet listed".
- **Read-your-writes.** A write returns the stored object; it is kept for a few seconds and
  served instead of the cache while the cache is older (resourceVersions compared as numbers,
  as the lifecycle engine does for the Canary). So ``reconcile`` creating the VirtualService
  and ``get_routes`` reading it microseconds later agree, without waiting on the watch.
- **Writes only when something changes.** The builder gets the current object (or None) and
  returns the object as it should be stored; equal to the current one means no request.
  Updates are PUTs conditional on the resourceVersion read; on a conflict the object is read
  again (GET) and rebuilt, a few times at most.
- **Errors name the object.** API failures become :class:`~flaggerpy.errors.RouterError`
  (``"VirtualService ns/name: update failed: ..."``) with the cause chained;
  ``WriteFencedError`` (this replica is not the leader) passes through unchanged.

The builders stay pure and testable field by field; this module is the only place a mesh
router talks to the API server about its objects.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

from flaggerpy import kube
from flaggerpy.errors import RouterError
from flaggerpy.models import API_VERSION
from flaggerpy.models.canary import Canary
from flaggerpy.routing import ProviderContext

__all__ = [
    "CACHE_SYNC_TIMEOUT",
    "KUBECTL_LAST_APPLIED",
    "TOOLKIT_ANNOTATIONS",
    "WRITE_MEMO_SECONDS",
    "Applied",
    "Build",
    "MeshObjects",
    "controlled_by",
    "owner_reference",
    "with_spec",
]

TOOLKIT_ANNOTATIONS: Final[Mapping[str, str]] = {
    "kustomize.toolkit.fluxcd.io/reconcile": "disabled",
    "helm.toolkit.fluxcd.io/driftDetection": "disabled",
}
"""Put on every routing object Flagger labels (its ``filterMetadata``), so Flux does not undo
the weights the analysis writes."""

KUBECTL_LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"
"""Where ``kubectl apply`` keeps the user's manifest: what a revert restores first."""

CACHE_SYNC_TIMEOUT: Final = 30.0
"""Seconds a read waits for a cache whose first list has not finished (a missing CRD or RBAC
rule never finishes it: the read then fails naming the resource)."""

WRITE_MEMO_SECONDS: Final = 10.0
"""How long our own last write of an object is preferred over an older cache entry. Long
enough for any watch to deliver it; short enough that an object deleted behind our back is
not served from memory for long."""

_ATTEMPTS: Final = 3
_CANARY_KIND: Final = "Canary"

Build = Callable[[Mapping[str, Any] | None], dict[str, Any] | None]
"""A pure builder: the current object (None if absent) in, the object to store out.

Returning an object equal to the current one, or None, means "nothing to write"; returning an
object when the current one is None means "create it".
"""


@dataclass(frozen=True, slots=True)
class Applied:
    """What :meth:`MeshObjects.apply` did, and the object as stored afterwards (None if absent)."""

    result: kube.OperationResult
    obj: Mapping[str, Any] | None


@runtime_checkable
class _Syncable(Protocol):
    """An informer: it can say whether its first list is in, and wait for it."""

    @property
    def has_synced(self) -> bool: ...

    async def wait_synced(self) -> None: ...


# -- pure helpers -------------------------------------------------------------------------------


def owner_reference(canary: Canary) -> dict[str, Any]:
    """The controller reference to the Canary that generated mesh objects carry.

    The garbage collector deletes them with the Canary; ``blockOwnerDeletion`` holds a
    foreground deletion of the Canary until they are gone (Flagger's ``NewControllerRef``).
    """
    uid = canary.metadata.uid if canary.metadata else None
    if not uid:
        raise ValueError(f"Canary {canary.namespace}/{canary.name} has no metadata.uid; "
                         "owner references need the stored object")
    return {
        "apiVersion": API_VERSION,
        "kind": _CANARY_KIND,
        "name": canary.name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controlled_by(obj: Mapping[str, Any], canary: Canary) -> bool:
    """Whether this Canary is ``obj``'s controller (kind and name, as Flagger matches owners).

    An object the Canary did not create -- a user's VirtualService taken over -- is not, and
    is treated with care: its metadata is merged, not replaced, and its spec can be restored.
    """
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return bool(ref.get("kind") == _CANARY_KIND and ref.get("name") == canary.name)
    return False


def with_spec(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """``current`` with its ``spec`` replaced by the desired one, metadata untouched. Pure.

    The update rule of objects whose metadata is not ours to manage (Flagger updates a
    DestinationRule's spec only).
    """
    result = copy.deepcopy(dict(current))
    result["spec"] = copy.deepcopy(desired.get("spec"))
    return result


def _key(namespace: str, name: str) -> Any:
    # The cache key type lives in the runtime layer; providers build it through kube.
    return kube.key_of({"metadata": {"namespace": namespace, "name": name}})


def _version(obj: Mapping[str, Any]) -> int:
    text = kube.resource_version(obj)
    return int(text) if text.isdigit() else 0


# -- the apply path -----------------------------------------------------------------------------


class MeshObjects:
    """Reads and writes one kind of mesh object for a router (see the module docstring).

    One per router and resource, kept for the router's life: it holds the cache handle and
    the memory of its own last writes, nothing about any canary's progress.
    """

    def __init__(self, *, ctx: ProviderContext, resource: kube.Resource) -> None:
        self._ctx = ctx
        self._resource = resource
        self._client: kube.KubeClient = ctx.routing_api
        self._cache: kube.ObjectReader | None = None
        self._cache_ready = False
        self._written: dict[Any, tuple[float, dict[str, Any]]] = {}

    @property
    def resource(self) -> kube.Resource:
        """What this handle reads and writes."""
        return self._resource

    def _name(self, namespace: str, name: str) -> str:
        return f"{self._resource.kind} {namespace}/{name}"

    async def _reader(self) -> kube.ObjectReader | None:
        if self._cache_ready:
            return self._cache
        caches = self._ctx.caches
        if caches is None or self._ctx.mesh_api is not None:
            self._cache_ready = True
            return None
        reader = caches.informer(self._resource)
        if isinstance(reader, _Syncable) and not reader.has_synced:
            try:
                async with asyncio.timeout(CACHE_SYNC_TIMEOUT):
                    await reader.wait_synced()
            except TimeoutError:
                raise RouterError(
                    f"the cache of {self._resource} has not synced after "
                    f"{CACHE_SYNC_TIMEOUT:.0f}s (is the CRD installed and readable?)") from None
        self._cache = reader
        self._cache_ready = True
        return reader

    async def get(self, *, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The object as we last know it: our recent write, else the cache, else a GET.

        Read-only: copy before changing it (cached objects are shared).
        """
        key = _key(namespace, name)
        reader = await self._reader()
        if reader is None:
            return await self._read(namespace, name)
        cached = reader.get(key)
        memo = self._written.get(key)
        if memo is not None:
            written_at, ours = memo
            fresh = time.monotonic() - written_at < WRITE_MEMO_SECONDS
            if fresh and (cached is None or _version(cached) < _version(ours)):
                return ours
            del self._written[key]
        return cached

    async def _read(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await kube.ignore_not_found(
                self._client.get(self._resource, name, namespace=namespace))
        except kube.WriteFencedError:
            raise
        except kube.KubeError as exc:
            raise RouterError(f"{self._name(namespace, name)}: read failed: {exc}") from exc

    def _remember(self, obj: dict[str, Any]) -> None:
        self._written[kube.key_of(obj)] = (time.monotonic(), obj)

    async def apply(self, *, namespace: str, name: str, build: Build) -> Applied:
        """Makes the object what ``build`` says, writing only if that differs from what it is.

        ``build`` is called with the current object (a private copy) and may be called again
        with a fresher one after a conflict, so it must be pure.
        """
        label = self._name(namespace, name)
        current: Mapping[str, Any] | None = await self.get(namespace=namespace, name=name)
        for attempt in range(_ATTEMPTS):
            wanted = build(copy.deepcopy(dict(current)) if current is not None else None)
            try:
                if wanted is None or (current is not None and wanted == current):
                    return Applied(kube.OperationResult.UNCHANGED, current)
                if current is None:
                    stored = await self._client.create(
                        self._resource, _for_create(wanted), namespace=namespace)
                    result = kube.OperationResult.CREATED
                else:
                    stored = await self._client.replace(self._resource, wanted,
                                                        namespace=namespace)
                    result = kube.OperationResult.UPDATED
            except kube.WriteFencedError:
                raise
            except (kube.ConflictError, kube.AlreadyExistsError, kube.NotFoundError) as exc:
                if isinstance(exc, kube.NotFoundError) and current is None:
                    raise RouterError(f"{label}: create failed: {exc}") from exc
                if attempt == _ATTEMPTS - 1:
                    raise RouterError(f"{label}: write failed: it kept changing "
                                      f"({_ATTEMPTS} attempts): {exc}") from exc
                # The cache was behind (or someone else wrote): read it again and rebuild.
                self._written.pop(_key(namespace, name), None)
                current = await self._read(namespace, name)
                continue
            except kube.KubeError as exc:
                verb = "create" if current is None else "update"
                raise RouterError(f"{label}: {verb} failed: {exc}") from exc
            self._remember(stored)
            event = ("mesh_object_created" if result is kube.OperationResult.CREATED
                     else "mesh_object_updated")
            self._ctx.log.info(event, kind=self._resource.kind, name=name, namespace=namespace)
            return Applied(result, stored)
        raise AssertionError("unreachable")  # pragma: no cover


def _for_create(obj: Mapping[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(dict(obj))
    body.pop("status", None)
    meta = body.get("metadata") or {}
    for field in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        meta.pop(field, None)
    return body
