"""The ``apisix`` provider: Apache APISIX's builtin metrics (``pkg/metrics/observers/apisix.go``).

:class:`ApisixObserver` answers ``request-success-rate`` and ``request-duration`` from APISIX's
``apisix_http_status`` counter and ``apisix_http_latency`` histogram of the canary route,
``<namespace>_<route>-<target>-canary_*`` (spec §4.3).
"""

from __future__ import annotations

from flaggerpy.observing import PrometheusObserver, p99, ratio

__all__ = ["ApisixObserver"]


class ApisixObserver(PrometheusObserver):
    """Apache APISIX: ``apisix_http_status`` and ``apisix_http_latency`` of the canary route."""

    mesh = "apisix"
    _selector = 'route=~"{{ namespace }}_{{ route }}-{{ target }}-canary_.+"'
    success_rate_query = ratio("apisix_http_status", _selector, 'code!~"5.."')
    duration_query = p99("apisix_http_latency_bucket", f'type=~"request",{_selector}')
