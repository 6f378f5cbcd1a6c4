"""The ``gatewayapi`` provider: Gateway API's builtin metrics (Flagger's http observer).

Gateway API defines no metrics of its own, so Flagger answers ``request-success-rate`` and
``request-duration`` for ``gatewayapi:<version>`` with its "http" observer
(``pkg/metrics/observers/http.go``): the ``http_request_duration_seconds`` histogram that
podinfo-style applications export, the same queries as ``provider: kubernetes`` (spec §4.3).
:class:`GatewayAPIObserver` is that observer, named for this provider so that its messages
say ``gatewayapi``.
"""

from __future__ import annotations

from flaggerpy.observing import HttpObserver

__all__ = ["GatewayAPIObserver"]


class GatewayAPIObserver(HttpObserver):
    """Gateway API: the application's own ``http_request_duration_seconds`` histogram."""

    mesh = "gatewayapi"
