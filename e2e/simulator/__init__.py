"""The traffic simulator: an honest stand-in for a service mesh's data plane.

No mesh runs on the local control plane (pods are kwok's fakes), yet a canary analysis needs
mesh traffic and mesh metrics that follow the routing objects the controller writes. The
simulator watches VirtualServices, Services and Deployments; runs one real backend process per
ready Deployment version, behaving as its pod template's env says; sends generated and ingress
traffic through the VirtualServices' matches, weights and mirrors; and exports what the mesh's
proxies would (``istio_requests_total``, ``istio_request_duration_milliseconds``, …) for a real
Prometheus to scrape. A routing bug therefore shows up as wrong numbers. See ``docs/simulator.md``.

Modules: ``routing`` (pure Istio routing), ``users`` (simulated users and cookies), ``metrics``
(mesh adapters), ``backend``/``backends`` (the backend processes), ``world`` (informers),
``traffic`` (data plane and generator), ``servers`` (HTTP ports), ``simulator`` (wiring),
``__main__`` (CLI).
"""

from __future__ import annotations

from e2e.simulator.metrics import ADAPTERS, Exchange, IstioAdapter, LinkerdAdapter, MeshAdapter
from e2e.simulator.routing import Request, RouteDecision, route
from e2e.simulator.simulator import Simulator, SimulatorConfig

__all__ = [
    "ADAPTERS",
    "Exchange",
    "IstioAdapter",
    "LinkerdAdapter",
    "MeshAdapter",
    "Request",
    "RouteDecision",
    "Simulator",
    "SimulatorConfig",
    "route",
]
