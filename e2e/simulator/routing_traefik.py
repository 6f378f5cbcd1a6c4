"""Traefik TraefikService routing (``traefik.io/v1alpha1``), as a pure function, and the metrics
Traefik exports for the services it load-balances.

Follows Traefik's documented semantics for a weighted round robin TraefikService (Kubernetes CRD
provider, ``buildServicesLB``, and the WRR balancer):

- the user's IngressRoute (``Host(`app.example.com`)`` → ``kind: TraefikService``) is not read:
  the simulator watches one routing resource, so a TraefikService ``<name>`` serves the host of
  the Service ``<name>`` in its namespace (``<name>``, ``<name>.<ns>``,
  ``<name>.<ns>.svc.cluster.local``), which is where Flagger's TraefikService ``<svc>`` is
  reached from, as the IngressRoute in the golden corpus sends it;
- ``spec.weighted.services[]`` entries are Kubernetes Services (``kind`` ``Service`` or none)
  in the entry's ``namespace`` (default: the TraefikService's) on ``port``, or other
  TraefikServices (``kind: TraefikService``), followed through ``lookup``;
- **a missing ``weight`` is 1** (Traefik's default), and an entry whose weight is 0 or less is
  left out of the balancer; each request goes to one entry with probability
  ``weight / sum(weights)`` (Traefik's scheduler is a deterministic earliest-deadline round
  robin: over many requests the shares are the same). No entry left: 503;
- ``spec.mirroring`` (which Flagger does not write) is not simulated: its requests get no
  destination (503).

:class:`TraefikAdapter` is Traefik's Prometheus metrics for the Kubernetes Services it sends
requests to: ``traefik_service_requests_total`` and ``traefik_service_request_duration_seconds``
labelled ``service="<namespace>-<name>-<port>@kubernetescrd"`` (Traefik's name for a Service
reached through a TraefikService of the CRD provider), ``code``, ``method`` and ``protocol``,
the series Flagger's traefik observer reads.

Nothing here does I/O; randomness comes from the ``random.Random`` passed in.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry, Counter, Histogram

from e2e.simulator.metrics import Exchange
from e2e.simulator.routing import Destination, Request, RouteDecision, ServiceKey, service_key
from e2e.simulator.sources import Lookup
from flaggerpy import kube
from flaggerpy.kube.keys import ObjectKey

__all__ = ["DURATION_BUCKETS", "TRAEFIK_SERVICES", "TraefikAdapter", "TraefikSource",
           "service_label", "weighted_round_robin"]

TRAEFIK_SERVICES = kube.Resource("traefik.io", "v1alpha1", "traefikservices", "TraefikService")
"""Traefik's TraefikService at the version Flagger writes."""

DURATION_BUCKETS = (0.1, 0.3, 1.2, 5.0)
"""Traefik's default buckets for ``traefik_service_request_duration_seconds`` (s)."""

DEFAULT_WEIGHT = 1
"""What Traefik gives an entry without ``weight``."""

_MAX_DEPTH = 10
"""TraefikServices followed through nested ones before giving up (Traefik refuses a loop)."""


def service_label(service: ServiceKey, port: int | None) -> str:
    """Traefik's ``service`` label for a Kubernetes Service behind a TraefikService:
    ``<namespace>-<name>-<port>@kubernetescrd``."""
    return f"{service.namespace}-{service.name}-{port if port is not None else 80}@kubernetescrd"


def _weight(entry: Mapping[str, Any]) -> int:
    weight = entry.get("weight")
    return DEFAULT_WEIGHT if weight is None else int(weight)


def weighted_round_robin(obj: Mapping[str, Any], rng: random.Random, *,
                         lookup: Lookup, depth: int = 0) -> Destination | None:
    """The Service one request through the TraefikService ``obj`` reaches, or None (503)."""
    namespace = str((obj.get("metadata") or {}).get("namespace") or "")
    entries = [(e, _weight(e))
               for e in ((obj.get("spec") or {}).get("weighted") or {}).get("services") or []]
    entries = [(e, w) for e, w in entries if w > 0]
    if not entries or depth > _MAX_DEPTH:
        return None
    entry = rng.choices([e for e, _ in entries], weights=[w for _, w in entries])[0]
    name = str(entry.get("name") or "")
    entry_namespace = str(entry.get("namespace") or namespace)
    if entry.get("kind") == "TraefikService":
        nested = lookup(ObjectKey(entry_namespace, name))
        if nested is None:
            return None
        return weighted_round_robin(nested, rng, lookup=lookup, depth=depth + 1)
    port = entry.get("port")
    return Destination(host=ServiceKey(entry_namespace, name).fqdn, weight=1,
                       port=int(port) if isinstance(port, int) else None)


class TraefikSource:
    """TraefikServices, read as Traefik serves the IngressRoute that points at them."""

    name: ClassVar[str] = "traefik"
    resource: ClassVar[kube.Resource] = TRAEFIK_SERVICES

    def claims(self, obj: Mapping[str, Any], host: str, *, namespace: str,
               namespaces: Collection[str]) -> bool:
        metadata = obj.get("metadata") or {}
        wanted = service_key(host, namespace=namespace, namespaces=namespaces)
        return wanted == ServiceKey(str(metadata.get("namespace") or ""),
                                    str(metadata.get("name") or ""))

    def stream_host(self, obj: Mapping[str, Any]) -> str | None:
        """``<name>.<namespace>``: the application's host the TraefikService serves."""
        metadata = obj.get("metadata") or {}
        return f"{metadata.get('name')}.{metadata.get('namespace')}"

    def route(self, obj: Mapping[str, Any], request: Request, rng: random.Random, *,
              lookup: Lookup) -> RouteDecision | None:
        return RouteDecision(rule_index=0, rule_name="",
                             destination=weighted_round_robin(obj, rng, lookup=lookup))


class TraefikAdapter:
    """Traefik's service metrics (``metrics.prometheus.addServicesLabels``, on by default).

    Each request Traefik forwarded to a Service is counted on that Service's label
    (:func:`service_label`) with its status code; a request no Service was chosen for never
    reached a service handler and is not.
    """

    name: ClassVar[str] = "traefik"
    LABELS: ClassVar[tuple[str, ...]] = ("service", "code", "method", "protocol")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "traefik_service_requests", "How many HTTP requests processed on a service.",
            self.LABELS, registry=registry)
        self.duration = Histogram(
            "traefik_service_request_duration_seconds",
            "How long it took to process the request on a service.",
            self.LABELS, buckets=DURATION_BUCKETS, registry=registry)

    def observe(self, exchange: Exchange) -> None:
        if exchange.service is None or exchange.mirrored:
            return
        labels = {"service": service_label(exchange.service, exchange.service_port),
                  "code": str(exchange.response_code), "method": exchange.method.upper(),
                  "protocol": "http"}
        self.requests.labels(**labels).inc()
        self.duration.labels(**labels).observe(exchange.duration_ms / 1000)
