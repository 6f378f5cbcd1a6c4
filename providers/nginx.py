"""The ``nginx`` provider: NGINX ingress's builtin metrics (``pkg/metrics/observers/nginx.go``).

:class:`NginxObserver` answers ``request-success-rate`` and ``request-duration`` from the
ingress controller's ``nginx_ingress_controller_requests`` and response-duration series of the
canary ingress (``canary!=""``). Its duration is the average response time in milliseconds, not
a p99, as in Flagger (spec §4.3).
"""

from __future__ import annotations

from flaggerpy.observing import PrometheusObserver, ratio

__all__ = ["NginxObserver"]


class NginxObserver(PrometheusObserver):
    """NGINX ingress: the canary ingress's requests, and its average response time."""

    mesh = "nginx"
    _selector = 'namespace="{{ namespace }}",ingress="{{ ingress }}",canary!=""'
    success_rate_query = ratio("nginx_ingress_controller_requests", _selector,
                               'status!~"5.*"')
    duration_query = (
        f"sum(rate(nginx_ingress_controller_response_duration_seconds_sum{{{_selector}}}"
        f"[{{{{ interval }}}}])) / sum(rate(nginx_ingress_controller_response_duration_seconds"
        f"_count{{{_selector}}}[{{{{ interval }}}}])) * 1000"
    )
