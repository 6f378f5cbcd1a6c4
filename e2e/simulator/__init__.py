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

import importlib
from typing import Any

# Names re-exported lazily: every backend process imports this package on its way to
# ``e2e.simulator.backend``, and should not pay for the Kubernetes client it never uses.
_EXPORTS = {
    "ADAPTERS": "e2e.simulator.metrics",
    "Exchange": "e2e.simulator.metrics",
    "IstioAdapter": "e2e.simulator.metrics",
    "LinkerdAdapter": "e2e.simulator.metrics",
    "MeshAdapter": "e2e.simulator.metrics",
    "Request": "e2e.simulator.routing",
    "RouteDecision": "e2e.simulator.routing",
    "Simulator": "e2e.simulator.simulator",
    "SimulatorConfig": "e2e.simulator.simulator",
    "SimulatorProcess": "e2e.simulator.process",
    "route": "e2e.simulator.routing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
