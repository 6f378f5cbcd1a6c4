"""The meshes ``--mesh`` names: each one's routing source and metric adapter, paired.

A mesh is where its requests are routed from (a :class:`~e2e.simulator.sources.RouteSource`)
and what its proxies export (a :class:`~e2e.simulator.metrics.MeshAdapter`):

=============  ================================  ===========================================
``--mesh``     routes through                    exports
=============  ================================  ===========================================
``istio``      VirtualServices (``routing.py``)  ``istio_requests_total``, ...
``linkerd``    SMI TrafficSplits                 ``response_total``, ``response_latency_ms``
``osm``        SMI TrafficSplits                 ``osm_request_total``, ...
``gatewayapi`` HTTPRoutes                        the app's ``http_request_duration_seconds``
``kuma``       Kuma TrafficRoutes                ``envoy_cluster_upstream_rq``, ...
``knative``    Knative Services' status.traffic  ``envoy_cluster_upstream_rq``, ...
``gloo``       Gloo Edge RouteTables             ``envoy_cluster_upstream_rq``, ...
``traefik``    TraefikServices (weighted)        ``traefik_service_requests_total``, ...
``apisix``     ApisixRoutes (by priority)        ``apisix_http_status``, ``apisix_http_latency``
``contour``    Contour HTTPProxies               ``envoy_cluster_upstream_rq``, ...
``nginx``      Ingresses (canary annotations)    ``nginx_ingress_controller_requests``, ...
``skipper``    Ingresses (backend weights)       ``skipper_serve_route_duration_seconds``, ...
=============  ================================  ===========================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from e2e.simulator.metrics import ADAPTERS, MeshAdapter
from e2e.simulator.routing_apisix import ApisixAdapter, ApisixSource
from e2e.simulator.routing_contour import ContourAdapter, ContourSource
from e2e.simulator.routing_gatewayapi import GatewayAPISource
from e2e.simulator.routing_gloo import GlooAdapter, GlooSource
from e2e.simulator.routing_knative import KnativeAdapter, KnativeSource
from e2e.simulator.routing_kuma import KumaSource
from e2e.simulator.routing_nginx import NginxAdapter, NginxSource
from e2e.simulator.routing_skipper import SkipperAdapter, SkipperSource
from e2e.simulator.routing_smi import SmiSource
from e2e.simulator.routing_traefik import TraefikAdapter, TraefikSource
from e2e.simulator.sources import IstioSource, RouteSource

__all__ = ["MESHES", "Mesh", "mesh"]


@dataclass(frozen=True, slots=True)
class Mesh:
    """One simulated mesh: where it routes from and which metrics it exports."""

    name: str
    source: Callable[[], RouteSource]
    adapter: Callable[[CollectorRegistry], MeshAdapter]


MESHES: Mapping[str, Mesh] = {
    "istio": Mesh("istio", IstioSource, ADAPTERS["istio"]),
    "linkerd": Mesh("linkerd", SmiSource, ADAPTERS["linkerd"]),
    "osm": Mesh("osm", SmiSource, ADAPTERS["osm"]),
    "gatewayapi": Mesh("gatewayapi", GatewayAPISource, ADAPTERS["gatewayapi"]),
    "kuma": Mesh("kuma", KumaSource, ADAPTERS["kuma"]),
    "knative": Mesh("knative", KnativeSource, KnativeAdapter),
    "gloo": Mesh("gloo", GlooSource, GlooAdapter),
    "traefik": Mesh("traefik", TraefikSource, TraefikAdapter),
    "apisix": Mesh("apisix", ApisixSource, ApisixAdapter),
    "contour": Mesh("contour", ContourSource, ContourAdapter),
    "nginx": Mesh("nginx", NginxSource, NginxAdapter),
    "skipper": Mesh("skipper", SkipperSource, SkipperAdapter),
}
"""``--mesh`` → :class:`Mesh`."""


def mesh(name: str) -> Mesh:
    """The mesh called ``name``; ValueError naming the known meshes otherwise."""
    try:
        return MESHES[name]
    except KeyError:
        raise ValueError(f"unknown mesh {name!r}; known: {', '.join(sorted(MESHES))}") from None
