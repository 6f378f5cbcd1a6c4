"""The ``skipper`` provider: Skipper's builtin metrics (``pkg/metrics/observers/skipper.go``).

:class:`SkipperObserver` answers ``request-success-rate`` and ``request-duration`` from
Skipper's per-route histograms of the canary ingress route,
``kube(ew)?_<ns>__<ingress>_canary__...__<service>_canary`` (spec §4.3). Skipper names routes
after the ingress with every non-word character turned into ``_``, so the model is rewritten the
same way before the queries are rendered (Flagger's ``encodeModelForSkipper``).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Final

from flaggerpy.analysis import MetricTemplateModel
from flaggerpy.observing import PrometheusObserver

__all__ = ["SkipperObserver"]

_SKIPPER_ROUTE: Final = (
    '{{- $route := printf "kube(ew)?_%s__%s_canary__.*__%s_canary(_[0-9]+)?"'
    " namespace ingress service }}"
)
_NON_WORD: Final = re.compile(r"\W", re.ASCII)


class SkipperObserver(PrometheusObserver):
    """Skipper: route ``kube(ew)?_<ns>__<ingress>_canary__...__<service>_canary``.

    The model's name, namespace, target, service and ingress have their non-word characters
    replaced by ``_`` before rendering, as Skipper does when it names the route.
    """

    mesh = "skipper"
    success_rate_query = (
        _SKIPPER_ROUTE
        + ' sum(rate(skipper_response_duration_seconds_bucket{route=~"{{ $route }}",'
        'code!~"5..",le="+Inf"}[{{ interval }}]))'
        ' / sum(rate(skipper_response_duration_seconds_bucket{route=~"{{ $route }}",'
        'le="+Inf"}[{{ interval }}])) * 100'
    )
    duration_query = (
        _SKIPPER_ROUTE
        + ' sum(rate(skipper_serve_route_duration_seconds_sum{route=~"{{ $route }}"}'
        "[{{ interval }}]))"
        ' / sum(rate(skipper_serve_route_duration_seconds_count{route=~"{{ $route }}"}'
        "[{{ interval }}])) * 1000"
    )

    def query_model(self, model: MetricTemplateModel) -> MetricTemplateModel:
        def encode(value: str) -> str:
            return _NON_WORD.sub("_", value)

        return replace(
            model, name=encode(model.name), namespace=encode(model.namespace),
            target=encode(model.target), service=encode(model.service),
            ingress=encode(model.ingress),
        )
