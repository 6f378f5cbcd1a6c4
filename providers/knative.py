"""The ``knative`` provider: Knative's builtin metrics (``pkg/metrics/observers/knative.go``).

:class:`KnativeObserver` answers ``request-success-rate`` and ``request-duration`` from Envoy's
``envoy_cluster_upstream_rq`` counters of the cluster ``<namespace>/<revision>``, the revision
being the model's ``{{ route }}`` (spec §4.3).
"""

from __future__ import annotations

from flaggerpy.observing import PrometheusObserver, p99, ratio

__all__ = ["KnativeObserver"]


class KnativeObserver(PrometheusObserver):
    """Knative: Envoy clusters named ``<namespace>/<revision>`` (``{{ route }}``)."""

    mesh = "knative"
    _selector = 'envoy_cluster_name=~"{{ namespace }}/{{ route }}"'
    success_rate_query = ratio("envoy_cluster_upstream_rq", _selector,
                               'envoy_response_code!~"5.*"', trailing_comma=True)
    duration_query = p99("envoy_cluster_upstream_rq_time_bucket", _selector,
                         trailing_comma=True)
