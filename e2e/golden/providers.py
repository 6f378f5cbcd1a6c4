"""Which router providers the golden replay runs, and the routing kinds each one writes.

The catalogue below is the corpus README's table of snapshot kinds (the API version Flagger's
client reads), one entry per provider folder. A router takes part in the replay once its folder is
in :data:`ENABLED`: nothing else changes for a new router, the cases, flags and expected objects
all come from the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass

from flaggerpy import kube

__all__ = ["CATALOGUE", "ENABLED", "GoldenProvider", "enabled"]


@dataclass(frozen=True, slots=True)
class GoldenProvider:
    """A provider folder of the corpus and the routing objects snapshots and steps hold."""

    directory: str
    """The corpus folder: the ``-mesh-provider`` value with ``:`` replaced by ``-``."""
    routing: tuple[kube.Resource, ...] = ()
    """Kinds read besides the core ones, in Flagger's API version; cluster-scoped ones are
    read across the cluster (the README: every Kuma TrafficRoute)."""
    not_in_steps: tuple[str, ...] = ()
    """Kinds in the snapshots but not in the step state: the user's own inputs the router only
    reads (a Gateway API Gateway, a Traefik IngressRoute), Knative's Revisions."""


def _r(group: str, version: str, plural: str, kind: str, *,
       namespaced: bool = True) -> kube.Resource:
    return kube.Resource(group, version, plural, kind, namespaced=namespaced)


_ISTIO = "networking.istio.io"
_SMI = "split.smi-spec.io"
_GATEWAY = "gateway.networking.k8s.io"
_INGRESS = (_r("networking.k8s.io", "v1", "ingresses", "Ingress"),)
_GATEWAYS = _r(_GATEWAY, "v1", "gateways", "Gateway")
_APPMESH = "appmesh.k8s.aws"
_KNATIVE = "serving.knative.dev"

CATALOGUE: dict[str, GoldenProvider] = {
    p.directory: p for p in (
        GoldenProvider("istio", (
            _r(_ISTIO, "v1beta1", "virtualservices", "VirtualService"),
            _r(_ISTIO, "v1beta1", "destinationrules", "DestinationRule"),
            _r(_ISTIO, "v1beta1", "gateways", "Gateway"),
        )),
        GoldenProvider("linkerd", (_r(_SMI, "v1alpha1", "trafficsplits", "TrafficSplit"),)),
        GoldenProvider("smi-v1alpha1", (_r(_SMI, "v1alpha1", "trafficsplits", "TrafficSplit"),)),
        GoldenProvider("smi-v1alpha2", (_r(_SMI, "v1alpha2", "trafficsplits", "TrafficSplit"),)),
        GoldenProvider("osm", (_r(_SMI, "v1alpha2", "trafficsplits", "TrafficSplit"),)),
        GoldenProvider("smi-v1alpha3", (_r(_SMI, "v1alpha3", "trafficsplits", "TrafficSplit"),)),
        GoldenProvider("kuma", (
            _r("kuma.io", "v1alpha1", "trafficroutes", "TrafficRoute", namespaced=False),)),
        GoldenProvider("gatewayapi-v1", (
            _r(_GATEWAY, "v1", "httproutes", "HTTPRoute"), _GATEWAYS), not_in_steps=("Gateway",)),
        GoldenProvider("gatewayapi-v1beta1", (
            _r(_GATEWAY, "v1beta1", "httproutes", "HTTPRoute"), _GATEWAYS),
            not_in_steps=("Gateway",)),
        GoldenProvider("nginx", _INGRESS),
        GoldenProvider("skipper", _INGRESS),
        GoldenProvider("contour", (_r("projectcontour.io", "v1", "httpproxies", "HTTPProxy"),)),
        GoldenProvider("gloo", (
            _r("gateway.solo.io", "v1", "routetables", "RouteTable"),
            _r("gloo.solo.io", "v1", "upstreams", "Upstream"),
        )),
        GoldenProvider("traefik", (
            _r("traefik.io", "v1alpha1", "traefikservices", "TraefikService"),
            _r("traefik.io", "v1alpha1", "ingressroutes", "IngressRoute"),
        ), not_in_steps=("IngressRoute",)),
        GoldenProvider("apisix", (_r("apisix.apache.org", "v2", "apisixroutes", "ApisixRoute"),)),
        GoldenProvider("appmesh-v1beta2", (
            _r(_APPMESH, "v1beta2", "virtualnodes", "VirtualNode"),
            _r(_APPMESH, "v1beta2", "virtualrouters", "VirtualRouter"),
            _r(_APPMESH, "v1beta2", "virtualservices", "VirtualService"),
        )),
        GoldenProvider("knative", (
            _r(_KNATIVE, "v1", "services", "Service"),
            _r(_KNATIVE, "v1", "revisions", "Revision"),
        ), not_in_steps=("Revision",)),
        GoldenProvider("kubernetes"),
    )
}

ENABLED: tuple[str, ...] = ("istio", "kubernetes", "kuma", "gatewayapi-v1", "gatewayapi-v1beta1",
                           "linkerd", "osm", "smi-v1alpha1", "smi-v1alpha2", "smi-v1alpha3",
                           "apisix", "contour", "gloo", "nginx", "traefik", "skipper",
                           "knative")
"""Provider folders whose cases the test suite replays. A new router adds its folder here."""


def enabled() -> list[GoldenProvider]:
    """The catalogue entries of :data:`ENABLED`, in that order."""
    return [CATALOGUE[name] for name in ENABLED]
