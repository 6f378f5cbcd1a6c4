"""The ``kubernetes`` provider: no mesh, no traffic split (Flagger's ``NopRouter``, ``nop.go``).

With ``provider: kubernetes`` a canary runs blue/green on plain Kubernetes Services: the apex
Service always selects the primary pods, the canary is tested through ``<svc>-canary``
(webhooks, load tests), and promotion copies the canary's spec onto the primary. There is no
routing object, so there is nothing to reconcile, set or revert here; the Services themselves
are core behaviour (:mod:`flaggerpy.canary.services`), as every canary gets them.

``get_routes`` still answers, because the analysis reads weights to decide where it is: 0/100
once blue/green iterations have started (``status.iterations > 0``), 100/0 before. That is
what the status and the ``flagger_canary_weight`` metric show, as in Flagger, even though the
apex Service never sends traffic to the canary.

The module ends with :class:`KubernetesObserver`, Flagger's "http" observer for the builtin metrics
(``pkg/metrics/observers/http.go``).
"""

from __future__ import annotations

from typing import ClassVar

from flaggerpy.errors import PluginError
from flaggerpy.models.canary import Canary
from flaggerpy.observing import HttpObserver
from flaggerpy.routing import (
    Capabilities,
    ProviderContext,
    Router,
    RouterFactory,
    Traffic,
    Weights,
)

__all__ = ["KubernetesObserver", "NopRouter"]


class NopRouter:
    """The router of ``provider: kubernetes``: reports weights from the status, writes nothing.

    Takes no variant: Flagger matches ``kubernetes`` exactly (anything longer fell through to
    Istio there), so ``kubernetes:<x>`` is refused rather than silently treated as plain
    ``kubernetes``.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(
        traffic=Traffic.SWITCH, ab_matches=False, mirroring=False, session_affinity=False,
    )
    """Switch only (blue/green, 10 iterations unless set), no A/B matches, mirroring or
    session affinity; the Services are what the canary is tested through."""

    def __init__(self, *, ctx: ProviderContext, variant: str = "") -> None:
        if variant:
            raise PluginError(
                f"the kubernetes router takes no variant, got 'kubernetes:{variant}'")
        self._ctx = ctx

    async def reconcile(self, canary: Canary) -> None:
        """Nothing to create: there is no routing object."""

    async def set_routes(self, canary: Canary, weights: Weights) -> None:
        """Nothing to write: the apex Service keeps selecting the primary pods."""

    async def get_routes(self, canary: Canary) -> Weights:
        """0/100 once iterations have started, else 100/0 (never mirrored)."""
        iterations = canary.status.iterations if canary.status is not None else None
        if iterations is not None and iterations > 0:
            return Weights.all_canary()
        return Weights.all_primary()

    async def finalize(self, canary: Canary) -> None:
        """Nothing to revert: there is no routing object."""


_factory: RouterFactory = NopRouter
_: type[Router] = NopRouter


# --- builtin metrics ----------------------------------------------------------------------------
# With no mesh there is no mesh telemetry: Flagger answers the builtin metrics with its "http"
# observer (pkg/metrics/observers/http.go, spec §4.3), registered as the ``kubernetes`` observer.


class KubernetesObserver(HttpObserver):
    """``provider: kubernetes``: the application's own ``http_request_duration_seconds``."""

    mesh = "kubernetes"
