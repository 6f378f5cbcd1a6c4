"""What the mesh's proxies would report about each request, under the mesh's own metric names.

The data plane (``traffic.py``) describes every request it carried as one :class:`Exchange`:
who called, which Service was addressed, which workload answered (if any), the status code and
the time taken. A :class:`MeshAdapter` turns exchanges into the series that mesh exports, so the
PromQL the controller runs (spec §4.3, each mesh's ``providers/<mesh>.py``) reads them unchanged.

- :class:`IstioAdapter`: ``istio_requests_total`` and ``istio_request_duration_milliseconds``
  (Istio's default buckets), reported by the *source* proxy for every request and by the
  *destination* proxy only when a destination pod received it (no endpoints → only the source
  reports, with ``destination_workload="unknown"``, exactly why Flagger then finds "no values").
- :class:`LinkerdAdapter`: ``request_total``, ``response_total`` and ``response_latency_ms``,
  ``direction="inbound"`` from the destination proxy, ``direction="outbound"`` from the source.
- :class:`OsmAdapter`: ``osm_request_total`` and ``osm_request_duration_ms`` with the source's
  and destination's ``*_namespace``/``*_kind``/``*_name``, for requests a pod received.
- :class:`KumaAdapter`: Envoy's ``envoy_cluster_upstream_rq`` and
  ``envoy_cluster_upstream_rq_time``, labelled as Kuma's Prometheus discovery labels them
  (``service`` is the reporting data plane's ``kuma.io/service`` tag).
- :class:`HttpAdapter` (Gateway API, which has no metrics of its own): the application's own
  ``http_request_duration_seconds``, with the ``kubernetes_namespace``/``kubernetes_pod_name``
  labels Prometheus's pod discovery adds, as Flagger's http observer reads it.

Adding a mesh is one class with a ``name`` and an ``observe(exchange)``, registered in
:data:`ADAPTERS`; see ``docs/simulator.md``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from e2e.simulator.routing import ServiceKey
from e2e.simulator.routing_kuma import service_tag
from flaggerpy.kube.keys import ObjectKey

__all__ = [
    "ADAPTERS",
    "ISTIO_DURATION_BUCKETS",
    "LINKERD_LATENCY_BUCKETS",
    "Exchange",
    "HttpAdapter",
    "IstioAdapter",
    "KumaAdapter",
    "LinkerdAdapter",
    "MeshAdapter",
    "OsmAdapter",
    "Peer",
    "make_adapter",
    "pod_name",
]

ISTIO_DURATION_BUCKETS = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
    1800000, 3600000,
)
"""Istio's default buckets for ``istio_request_duration_milliseconds`` (ms)."""

LINKERD_LATENCY_BUCKETS = (
    1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000, 5000,
    10000, 20000, 30000, 40000, 50000,
)
"""The Linkerd proxy's buckets for ``response_latency_ms`` (ms)."""

ENVOY_BUCKETS = ISTIO_DURATION_BUCKETS
"""Envoy's default histogram buckets (ms): Kuma's and OSM's sidecars keep them."""

HTTP_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""Prometheus's default buckets (s), which podinfo's ``http_request_duration_seconds`` uses."""

UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Peer:
    """A workload at one end of a request: a Deployment (or the simulated client)."""

    workload: str
    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)
    kind: str = "Deployment"

    @property
    def app(self) -> str:
        return self.labels.get("app") or self.labels.get("app.kubernetes.io/name") or UNKNOWN

    @property
    def version(self) -> str:
        return self.labels.get("version") or self.labels.get("app.kubernetes.io/version") \
            or UNKNOWN

    @property
    def canonical_service(self) -> str:
        """Istio's ``service.istio.io/canonical-name`` rule: label, else app name, else workload."""
        return (self.labels.get("service.istio.io/canonical-name")
                or self.labels.get("app.kubernetes.io/name") or self.labels.get("app")
                or self.workload)

    @property
    def canonical_revision(self) -> str:
        return (self.labels.get("service.istio.io/canonical-revision")
                or self.labels.get("app.kubernetes.io/version") or self.labels.get("version")
                or "latest")


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request as the proxies saw it.

    ``destination`` is None when no pod received the request (no route, no Service, no ready
    endpoint): only the source proxy can report it. ``service`` is the Service addressed, or
    None when the host named none; ``authority`` is the host the client asked for.
    ``response_flags`` uses Envoy's codes (``-`` for none, ``NR`` no route, ``UH`` no healthy
    upstream, ``UF`` upstream connection failure, ``UT`` upstream timeout). ``service_port``
    is the addressed Service's first port (Kuma's service tags carry it); ``method`` and
    ``path`` (without the query) are what the application saw, for its own metrics.
    ``routed_by`` is the routing object that routed the request and ``rule`` the name of its
    rule that did (``RouteDecision.rule_name``), for meshes that label by route (APISIX); None
    and "" when no routing object did.
    """

    source: Peer
    authority: str
    service: ServiceKey | None
    destination: Peer | None
    response_code: int
    duration_ms: float
    response_flags: str = "-"
    mirrored: bool = False
    service_port: int | None = None
    method: str = "GET"
    path: str = "/"
    routed_by: ObjectKey | None = None
    rule: str = ""


class MeshAdapter(Protocol):
    """Turns exchanges into one mesh's metric series, in a registry it is given."""

    name: ClassVar[str]

    def observe(self, exchange: Exchange) -> None: ...


class IstioAdapter:
    """Istio's standard metrics (``istio.stats`` telemetry v2), both reporters."""

    name: ClassVar[str] = "istio"
    LABELS: ClassVar[tuple[str, ...]] = (
        "reporter",
        "source_workload", "source_workload_namespace", "source_app", "source_version",
        "source_canonical_service", "source_canonical_revision",
        "destination_workload", "destination_workload_namespace", "destination_app",
        "destination_version", "destination_service", "destination_service_name",
        "destination_service_namespace", "destination_canonical_service",
        "destination_canonical_revision",
        "request_protocol", "response_code", "grpc_response_status", "response_flags",
        "connection_security_policy",
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "istio_requests_total", "Requests, as Istio's proxies count them.",
            self.LABELS, registry=registry)
        self.duration = Histogram(
            "istio_request_duration_milliseconds", "Request duration in milliseconds.",
            self.LABELS, buckets=ISTIO_DURATION_BUCKETS, registry=registry)

    def _labels(self, exchange: Exchange, reporter: str) -> dict[str, str]:
        source, destination, service = exchange.source, exchange.destination, exchange.service
        return {
            "reporter": reporter,
            "source_workload": source.workload,
            "source_workload_namespace": source.namespace,
            "source_app": source.app,
            "source_version": source.version,
            "source_canonical_service": source.canonical_service,
            "source_canonical_revision": source.canonical_revision,
            "destination_workload": destination.workload if destination else UNKNOWN,
            "destination_workload_namespace": destination.namespace if destination else UNKNOWN,
            "destination_app": destination.app if destination else UNKNOWN,
            "destination_version": destination.version if destination else UNKNOWN,
            "destination_service": service.fqdn if service else exchange.authority,
            "destination_service_name": service.name if service else exchange.authority,
            "destination_service_namespace": service.namespace if service else UNKNOWN,
            "destination_canonical_service":
                destination.canonical_service if destination else UNKNOWN,
            "destination_canonical_revision":
                destination.canonical_revision if destination else UNKNOWN,
            "request_protocol": "http",
            "response_code": str(exchange.response_code),
            "grpc_response_status": "",
            "response_flags": exchange.response_flags,
            # Istio's source proxy cannot know the policy of the inbound side; the destination
            # proxy reports the mTLS it terminated (mesh-wide STRICT/PERMISSIVE mTLS assumed).
            "connection_security_policy": "mutual_tls" if reporter == "destination" else UNKNOWN,
        }

    def observe(self, exchange: Exchange) -> None:
        reporters = ("source", "destination") if exchange.destination else ("source",)
        for reporter in reporters:
            labels = self._labels(exchange, reporter)
            self.requests.labels(**labels).inc()
            self.duration.labels(**labels).observe(exchange.duration_ms)


class LinkerdAdapter:
    """The Linkerd proxy's metrics: inbound at the destination, outbound at the source."""

    name: ClassVar[str] = "linkerd"
    LABELS: ClassVar[tuple[str, ...]] = (
        "direction", "namespace", "deployment", "pod_template_hash", "authority", "tls",
        "dst_namespace", "dst_deployment", "dst_service", "status_code",
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "request_total", "Requests, as Linkerd's proxies count them.", self.LABELS,
            registry=registry)
        self.responses = Counter(
            "response_total", "Responses, with their classification.",
            (*self.LABELS, "classification"), registry=registry)
        self.latency = Histogram(
            "response_latency_ms", "Time until the response headers, in milliseconds.",
            self.LABELS, buckets=LINKERD_LATENCY_BUCKETS, registry=registry)

    def observe(self, exchange: Exchange) -> None:
        destination, service = exchange.destination, exchange.service
        common = {
            "authority": exchange.authority,
            "tls": "true",
            "pod_template_hash": "",
            "status_code": str(exchange.response_code),
            "dst_namespace": service.namespace if service else "",
            "dst_service": service.name if service else "",
            "dst_deployment": destination.workload if destination else "",
        }
        reports = [{**common, "direction": "outbound", "namespace": exchange.source.namespace,
                    "deployment": exchange.source.workload}]
        if destination is not None:
            reports.append({**common, "direction": "inbound", "namespace": destination.namespace,
                            "deployment": destination.workload})
        classification = "failure" if exchange.response_code >= 500 else "success"
        for labels in reports:
            self.requests.labels(**labels).inc()
            self.responses.labels(**labels, classification=classification).inc()
            self.latency.labels(**labels).observe(exchange.duration_ms)


class OsmAdapter:
    """Open Service Mesh's Envoy stats (its WASM extension): one report per request a pod
    received, labelled with both workloads."""

    name: ClassVar[str] = "osm"
    LABELS: ClassVar[tuple[str, ...]] = (
        "source_namespace", "source_kind", "source_name", "source_pod",
        "destination_namespace", "destination_kind", "destination_name", "destination_pod",
        "response_code",
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "osm_request_total", "Requests, as OSM's proxies count them.", self.LABELS,
            registry=registry)
        self.duration = Histogram(
            "osm_request_duration_ms", "Request duration in milliseconds.", self.LABELS,
            buckets=ENVOY_BUCKETS, registry=registry)

    def observe(self, exchange: Exchange) -> None:
        source, destination = exchange.source, exchange.destination
        if destination is None:
            return  # no destination workload to label it with
        labels = {
            "source_namespace": source.namespace, "source_kind": source.kind,
            "source_name": source.workload, "source_pod": pod_name(source),
            "destination_namespace": destination.namespace, "destination_kind": destination.kind,
            "destination_name": destination.workload, "destination_pod": pod_name(destination),
            "response_code": str(exchange.response_code),
        }
        self.requests.labels(**labels).inc()
        self.duration.labels(**labels).observe(exchange.duration_ms)


class KumaAdapter:
    """Envoy's cluster stats in a Kuma mesh, as Kuma's Prometheus discovery labels them.

    The destination's data plane reports its inbound cluster (``localhost_<port>``), the
    source's its outbound cluster (the destination's tag); ``service`` is the *reporting* data
    plane's ``kuma.io/service`` tag, ``<service>_<namespace>_svc_<port>`` of the Service the
    request was routed to, which is how Flagger's kuma queries find the canary's requests.
    ``envoy_cluster_upstream_rq`` is a gauge here only because the client library would append
    ``_total`` to a counter's name, which Envoy's does not have; it only ever increases.
    """

    name: ClassVar[str] = "kuma"
    LABELS: ClassVar[tuple[str, ...]] = (
        "mesh", "service", "dataplane", "envoy_cluster_name", "envoy_response_code")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Gauge(
            "envoy_cluster_upstream_rq", "Upstream requests by response code (Envoy counter).",
            self.LABELS, registry=registry)
        self.time = Histogram(
            "envoy_cluster_upstream_rq_time", "Upstream request time in milliseconds.",
            self.LABELS[:-1], buckets=ENVOY_BUCKETS, registry=registry)

    def observe(self, exchange: Exchange) -> None:
        destination, service = exchange.destination, exchange.service
        if service is None:
            return
        tag = service_tag(service, exchange.service_port)
        source = exchange.source
        reports = [(f"{source.workload}_{source.namespace}_svc_80", pod_name(source), tag)]
        if destination is not None:
            reports.append((tag, pod_name(destination),
                            f"localhost_{exchange.service_port or 80}"))
        for reporter, dataplane, cluster in reports:
            labels = {"mesh": "default", "service": reporter, "dataplane": dataplane,
                      "envoy_cluster_name": cluster}
            self.requests.labels(**labels, envoy_response_code=str(exchange.response_code)).inc()
            self.time.labels(**labels).observe(exchange.duration_ms)


class HttpAdapter:
    """The application's own metrics (podinfo's ``http_request_duration_seconds``), scraped
    per pod, for meshes that export none (Gateway API): only requests a pod answered."""

    name: ClassVar[str] = "gatewayapi"
    LABELS: ClassVar[tuple[str, ...]] = (
        "kubernetes_namespace", "kubernetes_pod_name", "app", "method", "path", "status")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram(
            "http_request_duration_seconds", "Duration of HTTP requests, in seconds.",
            self.LABELS, buckets=HTTP_DURATION_BUCKETS, registry=registry)

    def observe(self, exchange: Exchange) -> None:
        destination = exchange.destination
        if destination is None:
            return
        self.duration.labels(
            kubernetes_namespace=destination.namespace,
            kubernetes_pod_name=pod_name(destination),
            app=destination.labels.get("app", ""),
            method=exchange.method, path=exchange.path,
            status=str(exchange.response_code),
        ).observe(exchange.duration_ms / 1000.0)


def pod_name(peer: Peer) -> str:
    """A stable pod name for a workload, shaped as a Deployment's pods are named
    (``<deployment>-<template hash>-<5 chars>``): Flagger's http observer selects pods with
    ``<target>-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)``, which this shape matches for the target only."""
    digest = hashlib.sha256(
        repr((peer.namespace, peer.workload, sorted(peer.labels.items()))).encode()).hexdigest()
    return f"{peer.workload}-{digest[:10]}-{digest[10:15]}"


ADAPTERS: Mapping[str, Callable[[CollectorRegistry], MeshAdapter]] = {
    IstioAdapter.name: IstioAdapter,
    LinkerdAdapter.name: LinkerdAdapter,
    OsmAdapter.name: OsmAdapter,
    KumaAdapter.name: KumaAdapter,
    HttpAdapter.name: HttpAdapter,
}
"""Mesh name (``--mesh``) → adapter class."""


def make_adapter(mesh: str, *, registry: CollectorRegistry) -> MeshAdapter:
    """The adapter for ``mesh``; ValueError naming the known meshes otherwise."""
    try:
        factory = ADAPTERS[mesh]
    except KeyError:
        raise ValueError(f"unknown mesh {mesh!r}; known: {', '.join(sorted(ADAPTERS))}") from None
    return factory(registry)
