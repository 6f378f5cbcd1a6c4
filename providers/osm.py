"""The ``osm`` provider: Open Service Mesh's builtin metrics (``pkg/metrics/observers/osm.go``).

:class:`OsmObserver` answers ``request-success-rate`` and ``request-duration`` from OSM's
``osm_request_total`` counter and ``osm_request_duration_ms`` histogram of the target
Deployment (spec §4.3).

OSM's router is not here: ``provider: osm`` is Flagger's SMI TrafficSplit v1alpha2 router, which
``providers/smi.py`` holds for ``linkerd``, ``osm`` and ``smi:<version>`` alike
(:class:`flaggerpy.providers.smi.OsmRouter`); the ``osm`` provider string picks this observer.
"""

from __future__ import annotations

from flaggerpy.observing import PrometheusObserver, p99, ratio

__all__ = ["OsmObserver"]


class OsmObserver(PrometheusObserver):
    """Open Service Mesh: ``osm_request_total`` and ``osm_request_duration_ms`` of the target."""

    mesh = "osm"
    _selector = ('destination_namespace="{{ namespace }}",destination_kind="Deployment",'
                 'destination_name="{{ target }}"')
    success_rate_query = ratio("osm_request_total", _selector, 'response_code!~"5.*"')
    duration_query = p99("osm_request_duration_ms_bucket", _selector)
