"""Kuma TrafficRoute routing (``kuma.io/v1alpha1``, cluster-scoped), as a pure function.

Follows Kuma's documented semantics for the TrafficRoute policy on Kubernetes:

- services are named by the ``kuma.io/service`` tag, which Kuma derives from the Kubernetes
  Service that selects a pod as ``<service>_<namespace>_svc_<port>``; a tag resolves back to
  that Service (names and namespaces hold no ``_``, so the split is unambiguous);
- a TrafficRoute applies to requests whose destination tag one of ``spec.destinations[].match``
  selects (``*`` selects any) from a source one of ``spec.sources[].match`` selects (Flagger
  writes ``*``); the simulated callers carry no tags of their own, so only ``*`` sources apply;
- ``conf.split[]`` sends each request to one entry's ``destination`` tag with probability
  ``weight / sum(weights)``; weight 0 gets nothing; with no split, ``conf.destination`` gets all;
- Kuma's default ``route-all`` route is the data plane's behaviour for a destination no route
  names: straight to the addressed Service.

``mesh`` (the object's top-level field) is not compared: the simulator runs one mesh.
Nothing here does I/O; randomness comes from the ``random.Random`` passed in.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping
from typing import Any, ClassVar

from e2e.simulator.routing import Destination, Request, RouteDecision, ServiceKey, service_key
from e2e.simulator.sources import Lookup
from flaggerpy import kube

__all__ = ["SERVICE_TAG", "TRAFFIC_ROUTES", "KumaSource", "route_traffic", "service_tag",
           "tag_service"]

TRAFFIC_ROUTES = kube.Resource("kuma.io", "v1alpha1", "trafficroutes", "TrafficRoute",
                               namespaced=False)
"""Kuma's TrafficRoute: cluster-scoped, at the version Flagger writes."""

SERVICE_TAG = "kuma.io/service"


def service_tag(key: ServiceKey, port: int | None) -> str:
    """The ``kuma.io/service`` tag of a Service's port: ``<name>_<namespace>_svc_<port>``."""
    return f"{key.name}_{key.namespace}_svc_{port if port is not None else 80}"


def tag_service(tag: str) -> ServiceKey | None:
    """The Service a ``kuma.io/service`` tag names, or None for a tag that names none."""
    head, sep, port = tag.rpartition("_svc_")
    name, sep2, namespace = head.rpartition("_")
    if not (sep and sep2 and name and namespace and port.isdigit()):
        return None
    return ServiceKey(namespace, name)


def _selects(match: Mapping[str, Any] | None, key: ServiceKey) -> bool:
    tag = str((match or {}).get(SERVICE_TAG) or "")
    return tag == "*" or tag_service(tag) == key


def _applies_to_any_source(spec: Mapping[str, Any]) -> bool:
    return any(str((s.get("match") or {}).get(SERVICE_TAG)) == "*"
               for s in spec.get("sources") or [])


def route_traffic(spec: Mapping[str, Any], rng: random.Random) -> RouteDecision:
    """One request through a TrafficRoute ``spec``: a split entry drawn by relative weight
    (or ``conf.destination``), its tag resolved to the Service's FQDN; no destination when
    nothing has weight or the tag names no Service (the caller answers 503)."""
    conf = spec.get("conf") or {}
    entries = [(str((e.get("destination") or {}).get(SERVICE_TAG) or ""), int(e.get("weight") or 0))
               for e in conf.get("split") or []]
    if not entries and (conf.get("destination") or {}).get(SERVICE_TAG):
        entries = [(str(conf["destination"][SERVICE_TAG]), 1)]
    weighted = [(tag, weight) for tag, weight in entries if weight > 0]
    chosen: Destination | None = None
    if weighted:
        tag = rng.choices([t for t, _ in weighted], weights=[w for _, w in weighted])[0]
        key = tag_service(tag)
        if key is not None:
            chosen = Destination(host=key.fqdn, weight=1)
    return RouteDecision(rule_index=0, rule_name="", destination=chosen)


class KumaSource:
    """TrafficRoutes, read as Kuma's control plane turns them into Envoy routes."""

    name: ClassVar[str] = "kuma"
    resource: ClassVar[kube.Resource] = TRAFFIC_ROUTES

    def claims(self, obj: Mapping[str, Any], host: str, *, namespace: str,
               namespaces: Collection[str]) -> bool:
        spec = obj.get("spec") or {}
        wanted = service_key(host, namespace=namespace, namespaces=namespaces)
        if wanted is None or not _applies_to_any_source(spec):
            return False
        return any(_selects(d.get("match"), wanted) for d in spec.get("destinations") or [])

    def stream_host(self, obj: Mapping[str, Any]) -> str | None:
        """The first destination's Service as ``<name>.<namespace>`` (not ``*``)."""
        for destination in (obj.get("spec") or {}).get("destinations") or []:
            key = tag_service(str((destination.get("match") or {}).get(SERVICE_TAG) or ""))
            if key is not None:
                return f"{key.name}.{key.namespace}"
        return None

    def route(self, obj: Mapping[str, Any], request: Request, rng: random.Random, *,
              lookup: Lookup) -> RouteDecision | None:
        return route_traffic(obj.get("spec") or {}, rng)
