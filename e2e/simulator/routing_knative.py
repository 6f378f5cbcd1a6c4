"""Knative Serving routing (``serving.knative.dev/v1`` Service traffic), as a pure function.

Follows Knative's documented semantics for a Service's traffic split:

- a Knative Service ``<name>`` in ``<namespace>`` is addressed as ``<name>.<namespace>`` (its
  route's host inside the cluster);
- Knative routes by ``status.traffic``, the split its controller resolved from
  ``spec.traffic`` (``latestRevision: true`` entries resolved to the latest ready revision):
  each request goes to one entry's ``revisionName`` with probability ``percent / 100``; an
  entry at 0 gets nothing; with no ``status.traffic`` (not reconciled yet) nothing is routed;
- a revision is served by the pods of its Deployment, reached here through the Kubernetes
  Service ``<revision>`` in the Service's namespace that Knative creates for it (the test-side
  stand-in for Knative Serving, ``e2e/knative_standin.py``, creates both when asked to).

Knative's ingress (Kourier, Istio, Contour) exports Envoy's cluster stats with the cluster
``<namespace>/<revision>``, which Flagger's knative observer selects: :class:`KnativeAdapter`
exports ``envoy_cluster_upstream_rq`` and ``envoy_cluster_upstream_rq_time`` so.

Nothing here does I/O; randomness comes from the ``random.Random`` passed in.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry, Gauge, Histogram

from e2e.simulator.metrics import ENVOY_BUCKETS, Exchange
from e2e.simulator.routing import (
    Destination,
    Request,
    RouteDecision,
    ServiceKey,
    service_key,
)
from e2e.simulator.sources import Lookup
from flaggerpy import kube

__all__ = ["KNATIVE_SERVICES", "KnativeAdapter", "KnativeSource", "cluster_name",
           "route_traffic"]

KNATIVE_SERVICES = kube.Resource("serving.knative.dev", "v1", "services", "Service")
"""Knative's Service, at the version Flagger writes."""


def route_traffic(status: Mapping[str, Any], rng: random.Random) -> RouteDecision:
    """One request through a Knative Service's resolved ``status.traffic``: a revision drawn by
    percent, as the host of its Kubernetes Service; no destination when nothing has traffic
    (the caller answers 503)."""
    entries = [(str(e.get("revisionName") or ""), int(e.get("percent") or 0))
               for e in status.get("traffic") or []]
    weighted = [(name, percent) for name, percent in entries if name and percent > 0]
    chosen: Destination | None = None
    if weighted:
        name = rng.choices([n for n, _ in weighted], weights=[p for _, p in weighted])[0]
        chosen = Destination(host=name, weight=1)
    return RouteDecision(rule_index=0, rule_name="", destination=chosen)


def cluster_name(service: ServiceKey) -> str:
    """The Envoy cluster of a revision's requests: ``<namespace>/<revision>``."""
    return f"{service.namespace}/{service.name}"


class KnativeSource:
    """Knative Services, routed by the traffic Knative resolved for them."""

    name: ClassVar[str] = "knative"
    resource: ClassVar[kube.Resource] = KNATIVE_SERVICES

    def claims(self, obj: Mapping[str, Any], host: str, *, namespace: str,
               namespaces: Collection[str]) -> bool:
        metadata = obj.get("metadata") or {}
        wanted = service_key(host, namespace=namespace, namespaces=namespaces)
        return wanted == ServiceKey(str(metadata.get("namespace") or ""),
                                    str(metadata.get("name") or ""))

    def stream_host(self, obj: Mapping[str, Any]) -> str | None:
        metadata = obj.get("metadata") or {}
        return f"{metadata.get('name')}.{metadata.get('namespace')}"

    def route(self, obj: Mapping[str, Any], request: Request, rng: random.Random, *,
              lookup: Lookup) -> RouteDecision | None:
        return route_traffic(obj.get("status") or {}, rng)


class KnativeAdapter:
    """Envoy's cluster stats at Knative's ingress: one cluster per revision,
    ``<namespace>/<revision>``, labelled with the response code.

    ``envoy_cluster_upstream_rq`` is a gauge only because the client library would append
    ``_total`` to a counter's name, which Envoy's does not have; it only ever increases.
    Requests that reached no revision's Service (no route) are not a revision's cluster's.
    """

    name: ClassVar[str] = "knative"

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Gauge(
            "envoy_cluster_upstream_rq", "Upstream requests by response code (Envoy counter).",
            ("envoy_cluster_name", "envoy_response_code"), registry=registry)
        self.time = Histogram(
            "envoy_cluster_upstream_rq_time", "Upstream request time in milliseconds.",
            ("envoy_cluster_name",), buckets=ENVOY_BUCKETS, registry=registry)

    def observe(self, exchange: Exchange) -> None:
        if exchange.service is None or exchange.routed_by is None or exchange.mirrored:
            return
        if exchange.service.name == exchange.routed_by.name:
            return  # addressed the Knative Service itself: no revision was chosen
        cluster = cluster_name(exchange.service)
        self.requests.labels(envoy_cluster_name=cluster,
                             envoy_response_code=str(exchange.response_code)).inc()
        self.time.labels(envoy_cluster_name=cluster).observe(exchange.duration_ms)
