"""The ``linkerd`` provider: Linkerd's builtin metrics (``pkg/metrics/observers/linkerd.go``).

:class:`LinkerdObserver` answers ``request-success-rate`` and ``request-duration`` from the
Linkerd proxy's inbound ``response_total`` counter (by ``classification``) and its
``response_latency_ms`` histogram, selected by the target Deployment's name (spec §4.3).

Linkerd's router is not here: ``provider: linkerd`` is Flagger's SMI TrafficSplit router, which
``providers/smi.py`` holds for ``linkerd``, ``osm`` and ``smi:<version>`` alike
(:class:`flaggerpy.providers.smi.LinkerdRouter`). That router names this observer in its
capabilities (``observer="linkerd"``, for every canary, as Flagger measures all canaries with
Linkerd's metrics on a Linkerd mesh), by entry-point name, so neither module imports the other.
"""

from __future__ import annotations

from flaggerpy.observing import PrometheusObserver, p99

__all__ = ["LinkerdObserver"]


class LinkerdObserver(PrometheusObserver):
    """Linkerd: inbound ``response_total`` by classification, and ``response_latency_ms``."""

    mesh = "linkerd"
    success_rate_query = (
        'sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",'
        'classification!="failure",direction="inbound"}[{{ interval }}]))'
        ' / sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",'
        'direction="inbound"}[{{ interval }}])) * 100'
    )
    duration_query = p99(
        "response_latency_ms_bucket",
        'namespace="{{ namespace }}",deployment=~"{{ target }}",direction="inbound"',
    )
