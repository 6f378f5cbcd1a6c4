"""The ``kuma`` provider: Kuma's builtin metrics (``pkg/metrics/observers/kuma.go``).

:class:`KumaObserver` answers ``request-success-rate`` and ``request-duration`` from Envoy's
``envoy_cluster_upstream_rq`` counters of the Kuma service
``<target>-canary_<namespace>_svc_<port>`` (spec §4.3).
"""

from __future__ import annotations

from flaggerpy.observing import PrometheusObserver, p99, ratio

__all__ = ["KumaObserver"]


class KumaObserver(PrometheusObserver):
    """Kuma: Envoy stats of the service ``<target>-canary_<namespace>_svc_<port>``."""

    mesh = "kuma"
    _selector = 'service=~"{{ target }}-canary_{{ namespace }}_svc_[0-9a-zA-Z-]+"'
    success_rate_query = ratio("envoy_cluster_upstream_rq", _selector,
                               'envoy_response_code!~"5.*"', trailing_comma=True)
    duration_query = p99("envoy_cluster_upstream_rq_time_bucket", _selector,
                         trailing_comma=True)
