"""The Kubernetes client: typed async verbs on plain JSON objects.

One class serves every resource -- core types, ``apps/v1``, Flagger's CRDs,
each mesh's CRDs -- because it is addressed by a :class:`Resource` descriptor
and speaks JSON dicts. Underneath it is kubernetes-asyncio's ``ApiClient``
(``call_api``), used for authentication, TLS and connection pooling only: the
content type of every write is set here explicitly, because the library's
default for a dict body on PATCH is a JSON *patch*, which silently means
something else than the merge patch callers write.

Writes can be fenced. ``may_write`` is asked before every mutating request;
when it says no, :class:`WriteFencedError` is raised without touching the
network. Leader election passes ``elector.is_leader`` so a replica that lost
its lease -- or merely could not renew it in time -- stops writing at once,
not when it notices some seconds later.

Requests can be rate limited on the client side, as client-go's ``rest.Config.QPS`` /
``Burst`` do for Flagger (``-kubeconfig-qps`` / ``-kubeconfig-burst``): given a
:class:`~flaggerpy.kube.throttle.TokenBucket`, every request awaits a token before it is sent
(a watch once, when it is opened, not per event), and a wait of more than a second is logged as
client-go does. Clients made with :meth:`KubeClient.fenced` share the bucket;
:meth:`KubeClient.throttled` gives a clone a bucket of its own.

Every library error is converted to :mod:`flaggerpy.kube.errors` and chained;
nothing of kubernetes-asyncio leaks out of this package.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import enum
import json
import os
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import structlog
from kubernetes_asyncio.client import ApiClient

from flaggerpy.kube import config, errors, throttle, watch as watching
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.kube.objects import JsonObject
from flaggerpy.kube.resources import Resource

log = structlog.get_logger(__name__)

FIELD_MANAGER = "flaggerpy"
"""The server-side-apply field manager; also sent on every other write for managedFields."""

_RESPONSE_TYPES = {200: "object", 201: "object", 202: "object"}
_AUTH = ["BearerToken"]
_WATCH_READ_MARGIN = 30.0  # seconds past the server-side timeout before a silent stream is dead
# client-go's extraLongThrottleLatency: a longer wait for a token is logged, at most once a second
_LONG_THROTTLE = 1.0


class PatchType(enum.StrEnum):
    """PATCH content types. MERGE (RFC 7386, ``kubectl patch --type merge``) is the default."""

    MERGE = "application/merge-patch+json"
    JSON = "application/json-patch+json"
    STRATEGIC = "application/strategic-merge-patch+json"
    APPLY = "application/apply-patch+yaml"


class PropagationPolicy(enum.StrEnum):
    """How a delete treats the object's dependents (``DeleteOptions.propagationPolicy``)."""

    BACKGROUND = "Background"
    FOREGROUND = "Foreground"
    ORPHAN = "Orphan"


class ObjectReader(Protocol):
    """Anything that can look an object up by key without a request: an informer's cache."""

    def get(self, key: ObjectKey) -> Mapping[str, Any] | None: ...


@dataclass(slots=True)
class _Throttle:
    """A client's rate limit and when a long wait for it was last logged (shared by clones)."""

    bucket: throttle.TokenBucket
    last_logged: float = float("-inf")

    async def wait(self, method: str, path: str) -> None:
        waited = await self.bucket.wait()
        if waited <= _LONG_THROTTLE:
            return
        now = asyncio.get_running_loop().time()
        if now - self.last_logged >= 1.0:
            self.last_logged = now
            log.info("client_side_throttling", waited=round(waited, 3), method=method, path=path,
                     qps=self.bucket.qps, burst=self.bucket.burst)


@dataclass(frozen=True, slots=True)
class ObjectList:
    """A list answer: the items (each stamped with apiVersion/kind) and the collection's version.

    ``resource_version`` is where a watch must start to see every later change.
    """

    items: list[JsonObject] = field(default_factory=list)
    resource_version: str = ""


class KubeClient:
    """Async access to any Kubernetes resource, as JSON dicts.

    Build one with :meth:`connect` (kubeconfig or in-cluster) or wrap an
    existing kubernetes-asyncio ``ApiClient``. Clients made with :meth:`fenced`
    share the connection pool and the rate limit and differ only in their write fence.
    Without a ``rate_limiter`` requests are not limited on the client side.
    """

    def __init__(
            self,
            api: ApiClient,
            *,
            may_write: Callable[[], bool] | None = None,
            field_manager: str = FIELD_MANAGER,
            user_agent: str | None = None,
            request_timeout: float = 60.0,
            rate_limiter: throttle.TokenBucket | None = None,
            owns_api: bool = False,  # close the ApiClient on aclose()
    ) -> None:
        self._api = api
        self._throttle = _Throttle(rate_limiter) if rate_limiter is not None else None
        self._may_write = may_write
        self._field_manager = field_manager
        self._request_timeout = request_timeout
        self._owns_api = owns_api
        # The ApiClient puts its default headers over per-request ones, so the
        # user agent can only be set there.
        api.user_agent = user_agent or config.default_user_agent()

    @classmethod
    async def connect(
            cls,
            *,
            kubeconfig: str | os.PathLike[str] | None = None,
            context: str | None = None,
            master: str | None = None,
            in_cluster: bool | None = None,
            user_agent: str | None = None,
            may_write: Callable[[], bool] | None = None,
            field_manager: str = FIELD_MANAGER,
            request_timeout: float = 60.0,
            rate_limiter: throttle.TokenBucket | None = None,
    ) -> KubeClient:
        """A client for the cluster a kubeconfig (or, in a pod, the service account) points at.

        See :func:`flaggerpy.kube.config.load_configuration` for how the source
        is chosen. The client owns its connection pool: close it with :meth:`aclose`.
        """
        api = await config.new_api_client(
            kubeconfig=kubeconfig, context=context, master=master, in_cluster=in_cluster,
            user_agent=user_agent)
        return cls(api, may_write=may_write, field_manager=field_manager,
                   user_agent=user_agent, request_timeout=request_timeout,
                   rate_limiter=rate_limiter, owns_api=True)

    def fenced(self, may_write: Callable[[], bool] | None) -> KubeClient:
        """The same connection, with writes allowed only while ``may_write()`` is true."""
        clone = copy.copy(self)
        clone._may_write = may_write
        clone._owns_api = False
        return clone

    def throttled(self, rate_limiter: throttle.TokenBucket | None) -> KubeClient:
        """The same connection and fence, limited by a bucket of its own (None: unlimited).

        For requests that must not queue behind the controller's: the Lease renewals of leader
        election, as controller-runtime gives its resource lock a client of its own.
        """
        clone = copy.copy(self)
        clone._throttle = _Throttle(rate_limiter) if rate_limiter is not None else None
        clone._owns_api = False
        return clone

    @property
    def field_manager(self) -> str:
        """The field manager this client writes as."""
        return self._field_manager

    @property
    def user_agent(self) -> str:
        """The User-Agent sent with every request (how the audit log names us)."""
        return str(self._api.user_agent or "")

    @property
    def server(self) -> str:
        """The API server URL, for logs."""
        return str(self._api.configuration.host or "")

    async def aclose(self) -> None:
        """Closes the connection pool if this client created it."""
        if self._owns_api:
            await self._api.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- reads ---------------------------------------------------------------------

    async def get(
            self, resource: Resource, name: str, *, namespace: str | None = None,
    ) -> JsonObject:
        """Reads one object. Raises NotFoundError if it does not exist."""
        obj = await self._call("GET", resource.path(namespace=namespace, name=name))
        return resource.stamp(obj)

    async def list(
            self,
            resource: Resource,
            *,
            namespace: str | None = None,
            label_selector: str | None = None,
            field_selector: str | None = None,
            limit: int | None = None,
            page_size: int = 500,
    ) -> ObjectList:
        """Lists objects (all namespaces when ``namespace`` is None), following pages.

        With ``limit`` only the first ``limit`` items are fetched (one request),
        as Flagger's CRD check does. Without it every page is read; all pages
        are one consistent snapshot at the returned ``resource_version``. If the
        continue token expires between pages (410), the list is redone unpaged,
        as client-go's pager does.
        """
        path = resource.path(namespace=namespace)
        query = _query(labelSelector=label_selector, fieldSelector=field_selector)
        if limit is not None:
            page = await self._call("GET", path, query={**query, "limit": str(limit)})
            return _object_list(resource, [page])
        pages: list[JsonObject] = []
        token: str | None = None
        try:
            while True:
                page = await self._call("GET", path, query=_query(
                    **query, limit=str(page_size), **{"continue": token}))
                pages.append(page)
                token = (page.get("metadata") or {}).get("continue") or None
                if not token:
                    break
        except errors.GoneError:
            if not pages:
                raise
            log.info("list_continue_expired", resource=str(resource), namespace=namespace)
            pages = [await self._call("GET", path, query=query)]
        return _object_list(resource, pages)

    async def version(self) -> JsonObject:
        """The server's ``/version`` (Flagger checks it at start-up)."""
        return await self._call("GET", "/version")

    async def watch(
            self,
            resource: Resource,
            *,
            namespace: str | None = None,
            resource_version: str | None = None,
            label_selector: str | None = None,
            field_selector: str | None = None,
            timeout_seconds: int | None = None,
            allow_bookmarks: bool = True,
    ) -> AsyncGenerator[watching.WatchEvent, None]:
        """Streams changes from one watch request until the server ends it.

        Ends normally when the server closes the stream (``timeout_seconds``
        elapsed). Raises GoneError when ``resource_version`` has been compacted
        -- the caller must relist -- and TransportError when the connection
        breaks or stays silent for longer than the server-side timeout plus a
        margin. Reconnecting is the caller's job (see the informer).
        Use it as ``async with contextlib.aclosing(client.watch(...)) as events``
        so the connection is closed when the consumer stops early.
        """
        query = _query(
            watch="true",
            allowWatchBookmarks="true" if allow_bookmarks else None,
            resourceVersion=resource_version or None,
            labelSelector=label_selector,
            fieldSelector=field_selector,
            timeoutSeconds=str(timeout_seconds) if timeout_seconds is not None else None,
        )
        sock_read = timeout_seconds + _WATCH_READ_MARGIN if timeout_seconds is not None else None
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._request_timeout, sock_read=sock_read)
        path = resource.path(namespace=namespace)
        if self._throttle is not None:  # once per watch, as client-go's Watch() throttles
            await self._throttle.wait("WATCH", path)
        with errors.converted():
            response: aiohttp.ClientResponse = await self._api.call_api(
                path, "GET",
                query_params=list(query.items()),
                header_params={"Accept": "application/json"},
                auth_settings=_AUTH,
                _preload_content=False,
                _request_timeout=timeout,
            )
        try:
            if response.status != 200:
                with errors.converted():
                    text = await response.text()
                raise _error_from_body(response.status, text)
            while True:
                try:
                    with errors.converted():
                        line = await response.content.readline()
                except ValueError as exc:  # a line longer than the read buffer
                    raise errors.TransportError(f"watch stream unreadable: {exc}") from exc
                if not line:
                    return
                event = watching.decode_line(line)
                if event is not None:
                    yield event
        finally:
            response.close()

    # -- writes --------------------------------------------------------------------

    async def create(
            self, resource: Resource, body: Mapping[str, Any], *, namespace: str | None = None,
    ) -> JsonObject:
        """Creates an object. Raises AlreadyExistsError if the name is taken."""
        ns = _namespace(resource, body, namespace)
        obj = await self._call(
            "POST", resource.path(namespace=ns),
            query=_query(fieldManager=self._field_manager),
            body=resource.stamp(dict(body)), write=True)
        return resource.stamp(obj)

    async def replace(
            self,
            resource: Resource,
            body: Mapping[str, Any],
            *,
            namespace: str | None = None,
            subresource: str | None = None,
    ) -> JsonObject:
        """Replaces (PUT) an object; its ``metadata.resourceVersion`` makes it conditional.

        Raises ConflictError when the object changed since ``body`` was read.
        """
        ns = _namespace(resource, body, namespace)
        name = _name(body)
        obj = await self._call(
            "PUT", resource.path(namespace=ns, name=name, subresource=subresource),
            query=_query(fieldManager=self._field_manager),
            body=resource.stamp(dict(body)), write=True)
        return resource.stamp(obj)

    update = replace

    async def replace_status(
            self, resource: Resource, body: Mapping[str, Any], *, namespace: str | None = None,
    ) -> JsonObject:
        """Replaces the status subresource, conditional on resourceVersion like :meth:`replace`."""
        return await self.replace(resource, body, namespace=namespace, subresource="status")

    async def patch(
            self,
            resource: Resource,
            name: str,
            patch: Mapping[str, Any] | Sequence[Mapping[str, Any]],
            *,
            namespace: str | None = None,
            subresource: str | None = None,
            patch_type: PatchType = PatchType.MERGE,
    ) -> JsonObject:
        """Patches an object; a JSON merge patch unless ``patch_type`` says otherwise.

        In a merge patch, ``None`` deletes a key and lists are replaced whole.
        """
        if patch_type is PatchType.APPLY:
            raise ValueError("use apply() for server-side apply")
        body: Any = [dict(p) for p in patch] if isinstance(patch, Sequence) else dict(patch)
        obj = await self._call(
            "PATCH", resource.path(namespace=namespace, name=name, subresource=subresource),
            query=_query(fieldManager=self._field_manager),
            body=body, content_type=patch_type, write=True)
        return resource.stamp(obj)

    async def patch_status(
            self,
            resource: Resource,
            name: str,
            patch: Mapping[str, Any],
            *,
            namespace: str | None = None,
    ) -> JsonObject:
        """Merge-patches the status subresource (how Flagger writes Canary status)."""
        return await self.patch(resource, name, patch, namespace=namespace, subresource="status")

    async def apply(
            self,
            resource: Resource,
            body: Mapping[str, Any],
            *,
            namespace: str | None = None,
            force: bool = False,
            field_manager: str | None = None,
            subresource: str | None = None,
    ) -> JsonObject:
        """Server-side apply: the server merges ``body`` as this field manager's intent.

        Meant for objects we generate whole. Fields we stop sending are removed
        if we were their only manager. ``force`` takes over fields another
        manager owns instead of failing with a 409 ConflictError.
        """
        ns = _namespace(resource, body, namespace)
        name = _name(body)
        intent = resource.stamp(dict(body))
        intent.setdefault("metadata", {})
        if "managedFields" in intent["metadata"] or "resourceVersion" in intent["metadata"]:
            intent["metadata"] = {k: v for k, v in intent["metadata"].items()
                                  if k not in ("managedFields", "resourceVersion")}
        obj = await self._call(
            "PATCH", resource.path(namespace=ns, name=name, subresource=subresource),
            query=_query(fieldManager=field_manager or self._field_manager,
                         force="true" if force else None),
            body=intent, content_type=PatchType.APPLY, write=True)
        return resource.stamp(obj)

    async def delete(
            self,
            resource: Resource,
            name: str,
            *,
            namespace: str | None = None,
            propagation_policy: PropagationPolicy | None = PropagationPolicy.BACKGROUND,
            grace_period_seconds: int | None = None,
            precondition_uid: str | None = None,
            precondition_resource_version: str | None = None,
    ) -> JsonObject:
        """Deletes an object. Raises NotFoundError if it is already gone (see ``ignore_not_found``).

        Returns the server's answer: the object (still present while finalizers
        run) or a Status.
        """
        options: JsonObject = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if propagation_policy is not None:
            options["propagationPolicy"] = str(propagation_policy)
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        preconditions = {k: v for k, v in (("uid", precondition_uid),
                                           ("resourceVersion", precondition_resource_version)) if v}
        if preconditions:
            options["preconditions"] = preconditions
        return await self._call(
            "DELETE", resource.path(namespace=namespace, name=name), body=options, write=True)

    # -- plumbing ------------------------------------------------------------------

    def may_write(self) -> bool:
        """Whether the write fence is open right now."""
        return self._may_write is None or self._may_write()

    async def _call(
            self,
            method: str,
            path: str,
            *,
            query: Mapping[str, str] | None = None,
            body: Any = None,
            content_type: str = "application/json",
            write: bool = False,
    ) -> JsonObject:
        if write and not self.may_write():
            raise errors.WriteFencedError(f"{method} {path}: writes are fenced (not the leader)")
        if self._throttle is not None:
            await self._throttle.wait(method, path)
            if write and not self.may_write():  # the lease may have been lost while waiting
                raise errors.WriteFencedError(
                    f"{method} {path}: writes are fenced (not the leader)")
        with errors.converted():
            result = await self._api.call_api(
                path, method,
                query_params=list((query or {}).items()),
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                response_types_map=_RESPONSE_TYPES,
                auth_settings=_AUTH,
                _return_http_data_only=True,
                _preload_content=True,
                _request_timeout=self._request_timeout,
            )
        if not isinstance(result, dict):
            raise errors.KubeError(0, "UnexpectedResponse",
                                   f"{method} {path}: expected a JSON object, got {type(result)}")
        return result


def _query(**params: str | None) -> dict[str, str]:
    return {k: v for k, v in params.items() if v is not None}


def _namespace(resource: Resource, body: Mapping[str, Any], namespace: str | None) -> str | None:
    if not resource.namespaced:
        return None
    ns = namespace or (body.get("metadata") or {}).get("namespace")
    if not ns:
        raise ValueError(f"{resource}: a namespaced object needs a namespace")
    return str(ns)


def _name(body: Mapping[str, Any]) -> str:
    name = (body.get("metadata") or {}).get("name")
    if not name:
        raise ValueError("the object has no metadata.name")
    return str(name)


def _object_list(resource: Resource, pages: list[JsonObject]) -> ObjectList:
    items: list[JsonObject] = []
    for page in pages:
        for item in page.get("items") or ():
            items.append(resource.stamp(item))
    version = str((pages[-1].get("metadata") or {}).get("resourceVersion") or "") if pages else ""
    return ObjectList(items, version)


def _error_from_body(status: int, text: str) -> errors.KubeError:
    with contextlib.suppress(ValueError):
        parsed = json.loads(text)
        if isinstance(parsed, dict):
            return errors.from_status(parsed, http_status=status)
    return errors.from_status({"message": text[:512]}, http_status=status)
