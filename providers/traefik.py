"""The ``traefik`` provider: Traefik's builtin metrics (``pkg/metrics/observers/traefik.go``).

:class:`TraefikObserver` answers ``request-success-rate`` and ``request-duration`` from
Traefik's ``traefik_service_request_duration_seconds`` histogram of the canary's
``TraefikService`` backend, ``<namespace>-<target>-canary-<port>@kubernetescrd`` (spec §4.3);
the p99 is in seconds and multiplied by 1000 in the query.
"""

from __future__ import annotations

from flaggerpy.observing import PrometheusObserver, p99

__all__ = ["TraefikObserver"]


class TraefikObserver(PrometheusObserver):
    """Traefik: the canary service's ``traefik_service_request_duration_seconds`` histogram."""

    mesh = "traefik"
    _selector = 'service=~"{{ namespace }}-{{ target }}-canary-[0-9a-zA-Z-]+@kubernetescrd"'
    success_rate_query = (
        f"sum(rate(traefik_service_request_duration_seconds_bucket{{{_selector},"
        f'code!~"5..",le="+Inf"}}[{{{{ interval }}}}]))'
        f" / sum(rate(traefik_service_request_duration_seconds_bucket{{{_selector},"
        f'le="+Inf"}}[{{{{ interval }}}}])) * 100'
    )
    duration_query = p99("traefik_service_request_duration_seconds_bucket", _selector) + " * 1000"
