"""Routing sources: which objects route a mesh's requests, and how one request goes through them.

The data plane (``traffic.py``) and the world (``world.py``) know nothing of any mesh's routing
objects; they ask a :class:`RouteSource`:

- ``resource``: what the world watches (an informer per watched namespace, or one for the whole
  cluster when the resource is cluster-scoped, like Kuma's TrafficRoute);
- ``claims(obj, host, ...)``: whether that object routes requests for ``host``;
- ``stream_host(obj)``: the host generated traffic addresses for that object (None: it gets no
  stream of its own);
- ``route(obj, request, rng, lookup=...)``: the :class:`~e2e.simulator.routing.RouteDecision`
  (None: no rule matched, a 404 ``NR``).

Each mesh's semantics live in its own module (``routing.py`` for Istio, ``routing_smi.py``,
``routing_gatewayapi.py``, ``routing_kuma.py``); ``meshes.py`` pairs a source with the metric
adapter of the mesh that ``--mesh`` names.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Mapping
from typing import Any, ClassVar, Protocol

from e2e.simulator.routing import Request, RouteDecision, hosts_match, route
from flaggerpy import kube
from flaggerpy.kube.keys import ObjectKey

__all__ = ["VIRTUAL_SERVICES", "IstioSource", "Lookup", "RouteSource", "object_key"]

VIRTUAL_SERVICES = kube.Resource(
    "networking.istio.io", "v1beta1", "virtualservices", "VirtualService")
"""Istio's VirtualService at the version Flagger writes (spec §3.2)."""

Lookup = Callable[[ObjectKey], Mapping[str, Any] | None]
"""Another routing object of the same resource by key, from the world's cache (Istio's
delegates); ``ObjectKey("", name)`` for a cluster-scoped one."""


def object_key(obj: Mapping[str, Any]) -> ObjectKey:
    """An object's namespace and name (namespace ``""`` for a cluster-scoped object)."""
    metadata = obj.get("metadata") or {}
    return ObjectKey(str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))


class RouteSource(Protocol):
    """One mesh's routing objects, read the way that mesh's data plane reads them."""

    name: ClassVar[str]
    resource: ClassVar[kube.Resource]

    def claims(self, obj: Mapping[str, Any], host: str, *, namespace: str,
               namespaces: Collection[str]) -> bool:
        """Whether ``obj`` routes requests for ``host`` sent by a caller in ``namespace``."""
        ...

    def stream_host(self, obj: Mapping[str, Any]) -> str | None:
        """The host generated traffic for ``obj`` addresses, or None for no stream."""
        ...

    def route(self, obj: Mapping[str, Any], request: Request, rng: random.Random, *,
              lookup: Lookup) -> RouteDecision | None:
        """Where ``request`` goes; None when no rule of ``obj`` matches it (404 ``NR``)."""
        ...


class IstioSource:
    """Istio VirtualServices (``routing.py``), delegates looked up in the world's cache."""

    name: ClassVar[str] = "istio"
    resource: ClassVar[kube.Resource] = VIRTUAL_SERVICES

    def claims(self, obj: Mapping[str, Any], host: str, *, namespace: str,
               namespaces: Collection[str]) -> bool:
        hosts = (obj.get("spec") or {}).get("hosts") or []
        return hosts_match(hosts, host, vs_namespace=object_key(obj).namespace,
                           request_namespace=namespace, namespaces=namespaces)

    def stream_host(self, obj: Mapping[str, Any]) -> str | None:
        """The first concrete host; None for wildcards only, or none at all (a delegate)."""
        for host in (obj.get("spec") or {}).get("hosts") or []:
            if host and "*" not in host:
                return str(host)
        return None

    def route(self, obj: Mapping[str, Any], request: Request, rng: random.Random, *,
              lookup: Lookup) -> RouteDecision | None:
        def delegate(namespace: str, name: str) -> Mapping[str, Any] | None:
            found = lookup(ObjectKey(namespace, name))
            return (found.get("spec") or {}) if found is not None else None

        return route(obj.get("spec") or {}, request, rng, namespace=object_key(obj).namespace,
                     delegates=delegate)
