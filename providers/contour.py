"""The ``contour`` provider: Contour's builtin metrics (``pkg/metrics/observers/contour.go``).

:class:`ContourObserver` answers ``request-success-rate`` and ``request-duration`` from Envoy's
``envoy_cluster_upstream_rq`` counters of the cluster Contour names
``<namespace>_<service>-canary_<port>`` (spec §4.3).
"""

from __future__ import annotations

from flaggerpy.observing import PrometheusObserver, p99, ratio

__all__ = ["ContourObserver"]


class ContourObserver(PrometheusObserver):
    """Contour: Envoy clusters named ``<namespace>_<service>-canary_<port>``."""

    mesh = "contour"
    _selector = 'envoy_cluster_name=~"{{ namespace }}_{{ service }}-canary_[0-9a-zA-Z-]+"'
    success_rate_query = ratio("envoy_cluster_upstream_rq", _selector,
                               'envoy_response_code!~"5.*"', trailing_comma=True)
    duration_query = p99("envoy_cluster_upstream_rq_time_bucket", _selector,
                         trailing_comma=True)
