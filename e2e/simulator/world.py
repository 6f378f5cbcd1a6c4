"""The cluster as the simulated mesh sees it: routing objects, Services and Deployments.

Three informers per namespace (flaggerpy's :class:`SharedInformerFactory`: list, then watch,
resume, relist) keep a current copy; every lookup the data plane makes per request is a read of
those caches, never an API request. A change to any of them calls the listeners registered with
:meth:`World.on_change` (the simulator re-syncs its backends and traffic streams then).

The routing objects are the mesh's, as its :class:`~e2e.simulator.sources.RouteSource` names
them: Istio VirtualServices at ``networking.istio.io/v1beta1`` (the version Flagger writes) by
default, SMI TrafficSplits, Gateway API HTTPRoutes, or Kuma's cluster-scoped TrafficRoutes (one
informer for the whole cluster, cached under namespace ``""``). The methods keep their Istio
names (``virtual_service_for``...): they answer with whatever the source watches.

:meth:`World.of` builds the same views over fixed objects, so the data plane can be tested
without a cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from e2e.simulator.backends import BackendSpec, backend_spec, ready_replicas
from e2e.simulator.routing import ServiceKey, selector_matches
from e2e.simulator.sources import VIRTUAL_SERVICES, IstioSource, RouteSource
from flaggerpy import kube
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.runtime.informer import Informer, SharedInformerFactory

__all__ = ["VIRTUAL_SERVICES", "StaticStore", "Store", "Workload", "World"]

@dataclass(frozen=True, slots=True)
class Workload:
    """A Deployment as an endpoint source: pod labels, ready replicas and backend behaviour."""

    key: ObjectKey
    spec: BackendSpec
    labels: Mapping[str, str] = field(default_factory=dict)
    ready_replicas: int = 0


def _key(obj: Mapping[str, Any]) -> ObjectKey:
    metadata = obj.get("metadata") or {}
    return ObjectKey(str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))


class Store(Protocol):
    """What the world reads: an informer's cache, or a :class:`StaticStore`."""

    def list(self) -> list[kube.JsonObject]: ...

    def get(self, key: ObjectKey) -> kube.JsonObject | None: ...


class StaticStore:
    """A fixed set of objects with an informer's read interface (tests, dry runs)."""

    def __init__(self, objects: Iterable[kube.JsonObject] = ()) -> None:
        self._objects = {_key(obj): obj for obj in objects}

    def list(self) -> list[kube.JsonObject]:
        return [self._objects[key] for key in sorted(self._objects)]

    def get(self, key: ObjectKey) -> kube.JsonObject | None:
        return self._objects.get(key)


class World:
    """Views of the watched namespaces: VirtualServices, Services, Deployments.

    Build it with :meth:`watching` (informers on a cluster) or :meth:`of` (fixed objects).
    """

    def __init__(
        self,
        namespaces: Sequence[str],
        *,
        virtual_services: Mapping[str, Store],
        services: Mapping[str, Store],
        deployments: Mapping[str, Store],
        factory: SharedInformerFactory | None = None,
        source: RouteSource | None = None,
    ) -> None:
        if not namespaces:
            raise ValueError("at least one namespace must be watched")
        self.namespaces: tuple[str, ...] = tuple(dict.fromkeys(namespaces))
        self._virtual_services = dict(virtual_services)
        self._services = dict(services)
        self._deployments = dict(deployments)
        self._factory = factory
        self.source: RouteSource = source if source is not None else IstioSource()
        # Per-request lookups are answered from these; any change to the objects they were
        # computed from clears them (handlers registered first, so before any listener runs).
        self._workloads: dict[ObjectKey, tuple[str, Workload]] = {}
        self._by_namespace: dict[str, list[Workload]] = {}
        self._hosts: dict[tuple[str, str], ObjectKey | None] = {}
        self._endpoints: dict[ObjectKey, list[Workload]] = {}
        self._watch(self._virtual_services.values(), self._hosts.clear)
        self._watch(self._services.values(), self._endpoints.clear)
        self._watch(self._deployments.values(), self._endpoints.clear, self._by_namespace.clear)

    @staticmethod
    def _watch(stores: Iterable[Store], *clear: Callable[[], None]) -> None:
        def changed(*_: kube.JsonObject) -> None:
            for func in clear:
                func()
        for store in stores:
            if isinstance(store, Informer):
                store.add_handler(on_add=changed, on_update=changed, on_delete=changed)

    @classmethod
    def watching(cls, client: kube.KubeClient, namespaces: Sequence[str],
                 *, source: RouteSource | None = None) -> World:
        """A world kept current by list+watch informers, one per resource and namespace (one
        for the whole cluster when the source's resource is cluster-scoped)."""
        factory = SharedInformerFactory(client)
        unique = tuple(dict.fromkeys(namespaces))
        source = source if source is not None else IstioSource()
        resource = source.resource
        routes: dict[str, Store] = (
            {ns: factory.informer(resource, namespace=ns) for ns in unique}
            if resource.namespaced else {"": factory.informer(resource, namespace=None)})
        return cls(
            unique,
            virtual_services=routes,
            services={ns: factory.informer(kube.SERVICES, namespace=ns) for ns in unique},
            deployments={ns: factory.informer(kube.DEPLOYMENTS, namespace=ns) for ns in unique},
            factory=factory,
            source=source,
        )

    @classmethod
    def of(cls, namespaces: Sequence[str], objects: Iterable[kube.JsonObject],
           *, source: RouteSource | None = None) -> World:
        """A world of fixed objects (sorted by ``kind`` and ``metadata.namespace``)."""
        by_kind: dict[str, dict[str, list[kube.JsonObject]]] = {}
        for obj in objects:
            namespace = _key(obj).namespace
            by_kind.setdefault(str(obj.get("kind")), {}).setdefault(namespace, []).append(obj)

        def stores(kind: str) -> dict[str, Store]:
            found = by_kind.get(kind, {})
            return {ns: StaticStore(found.get(ns, ())) for ns in namespaces}

        source = source if source is not None else IstioSource()
        kind = source.resource.kind
        routes = stores(kind) if source.resource.namespaced else {
            "": StaticStore(obj for found in by_kind.get(kind, {}).values() for obj in found)}
        return cls(namespaces, virtual_services=routes, services=stores("Service"),
                   deployments=stores("Deployment"), source=source)

    # -- running -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Runs the informers until cancelled (a world of fixed objects just waits)."""
        if self._factory is None:
            await asyncio.Event().wait()
        else:
            await self._factory.start()

    async def wait_synced(self) -> None:
        if self._factory is not None:
            await self._factory.wait_synced()

    def on_change(self, listener: Callable[[], None]) -> None:
        """Calls ``listener()`` (which must not block) after any change to any watched object."""
        self._watch([*self._virtual_services.values(), *self._services.values(),
                     *self._deployments.values()], listener)

    # -- VirtualServices ---------------------------------------------------------------------

    def virtual_services(self) -> list[kube.JsonObject]:
        """Every cached VirtualService, oldest first (Istio's order when hosts overlap)."""
        found = [vs for informer in self._virtual_services.values() for vs in informer.list()]
        return sorted(found, key=lambda vs: (
            str((vs.get("metadata") or {}).get("creationTimestamp") or ""), str(_key(vs))))

    def virtual_service(self, key: ObjectKey) -> kube.JsonObject | None:
        informer = self._virtual_services.get(key.namespace)
        return informer.get(key) if informer is not None else None

    def virtual_service_for(self, host: str, *, namespace: str) -> kube.JsonObject | None:
        """The routing object that routes ``host`` for a caller in ``namespace``, if any (the
        oldest, when several claim it and the source ranks none above the others).

        Never a delegate VirtualService: it has no ``hosts``, so it serves no host of its own and
        is reached only through a root's ``delegate`` (:meth:`virtual_service`).
        """
        lookup = (host, namespace)
        if lookup not in self._hosts:
            self._hosts[lookup] = None
            claimants = [vs for vs in self.virtual_services()
                         if self.source.claims(vs, host, namespace=namespace,
                                               namespaces=self.namespaces)]
            # A source whose objects outrank each other (APISIX's route priority) says so with
            # an optional rank(obj, host), lowest first; ties keep the oldest.
            rank = getattr(self.source, "rank", None)
            if claimants:
                chosen = min(claimants, key=lambda vs: rank(vs, host)) if rank else claimants[0]
                self._hosts[lookup] = _key(chosen)
        key = self._hosts[lookup]
        return self.virtual_service(key) if key is not None else None

    # -- Services and workloads --------------------------------------------------------------

    def service(self, key: ServiceKey) -> kube.JsonObject | None:
        informer = self._services.get(key.namespace)
        return informer.get(ObjectKey(key.namespace, key.name)) if informer is not None else None

    def workloads(self, namespace: str) -> list[Workload]:
        """Every Deployment of a namespace as a :class:`Workload` (cached per resourceVersion)."""
        cached_list = self._by_namespace.get(namespace)
        if cached_list is not None:
            return cached_list
        informer = self._deployments.get(namespace)
        if informer is None:
            return []
        result = []
        seen = set()
        for deployment in informer.list():
            key = _key(deployment)
            seen.add(key)
            version = str((deployment.get("metadata") or {}).get("resourceVersion") or "")
            cached = self._workloads.get(key)
            if cached is None or cached[0] != version:
                template = (deployment.get("spec") or {}).get("template") or {}
                workload = Workload(
                    key=key,
                    labels=dict((template.get("metadata") or {}).get("labels") or {}),
                    ready_replicas=ready_replicas(deployment),
                    spec=backend_spec(deployment),
                )
                cached = (version, workload)
                self._workloads[key] = cached
            result.append(cached[1])
        for key in [k for k in self._workloads if k.namespace == namespace and k not in seen]:
            del self._workloads[key]  # deleted Deployments
        self._by_namespace[namespace] = result
        return result

    def endpoints(self, service: Mapping[str, Any]) -> list[Workload]:
        """The ready workloads a Service selects (its endpoints, grouped by Deployment)."""
        key = _key(service)
        found = self._endpoints.get(key)
        if found is None:
            selector = (service.get("spec") or {}).get("selector") or {}
            found = [w for w in self.workloads(key.namespace)
                     if w.ready_replicas > 0 and selector_matches(selector, w.labels)]
            self._endpoints[key] = found
        return found

    def desired_backends(self) -> dict[ObjectKey, BackendSpec]:
        """One backend per Deployment that has ready replicas."""
        return {w.key: w.spec for ns in self.namespaces for w in self.workloads(ns)
                if w.ready_replicas > 0}
