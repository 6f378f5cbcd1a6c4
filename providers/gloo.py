"""The ``gloo`` provider: Gloo Edge's builtin metrics (``pkg/metrics/observers/gloo.go``).

:class:`GlooObserver` answers ``request-success-rate`` and ``request-duration`` from Envoy's
``envoy_cluster_upstream_rq`` counters of the canary upstream's clusters,
``<namespace>-<target>-canaryupstream-*`` (spec §4.3).
"""

from __future__ import annotations

from flaggerpy.observing import PrometheusObserver, p99, ratio

__all__ = ["GlooObserver"]


class GlooObserver(PrometheusObserver):
    """Gloo: Envoy clusters of the canary upstream ``<namespace>-<target>-canaryupstream-*``."""

    mesh = "gloo"
    _selector = ('envoy_cluster_name=~"{{ namespace }}-{{ target }}-canaryupstream-'
                 '[0-9a-zA-Z-]+_[0-9a-zA-Z-]+"')
    success_rate_query = ratio("envoy_cluster_upstream_rq", _selector,
                               'envoy_response_code!~"5.*"', trailing_comma=True)
    duration_query = p99("envoy_cluster_upstream_rq_time_bucket", _selector,
                         trailing_comma=True)
