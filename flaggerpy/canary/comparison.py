"""A metric judged against the primary: ``analysis.metrics[].compare`` (a flaggerpy addition).

Flagger judges a metric by a fixed threshold. A metric with a ``compare`` block is also (or
only) judged against the primary, the workload that serves the stable version: its
MetricTemplate query is rendered twice, once for each workload, both are asked for every
value over the metric's interval (the provider's optional
:class:`~flaggerpy.analysis.SampleProvider` capability, a range query for Prometheus), and
the two samples go to the statistical judge (:func:`flaggerpy.judging.judge_samples`).

What changes for the primary's query: ``{{ target }}`` is the primary workload's name,
``<targetRef.name>-primary`` (the Deployment or DaemonSet flaggerpy creates, whose pods are
``<target>-primary-<hash>-<id>``). Everything else (``name``, ``namespace``, ``service``,
``ingress``, ``route``, ``interval``, ``variables``) is the same for both sides, so a query
that tells the canary's pods from others by ``{{ target }}`` tells the primary's apart the
same way. A query that selects by ``{{ service }}`` would ask the same thing twice: it must
select by workload.

The verdict becomes the metric's check (in :mod:`flaggerpy.canary.metrics_analysis`):

- ``Fail``: a failed check, counted like a threshold breach, with Flagger's "Halt
  <name>.<namespace> advancement" wording followed by the statistic and interval;
- ``Marginal`` and ``Pass``: the check passes (the reason is logged; a Marginal canary is
  worse than the primary, but not surely beyond the tolerance);
- ``NoData``: a "no values found" result (``no_values``), handled like any other: a failed
  check, a hold with ``-hold-on-no-values``, or what the metric's ``onNoData`` says.

``compare.test: proportion`` compares two ratios of counts (errors out of requests). Its query
is the error ratio people already write, ``<events> / <total>``: it is split at its one
top-level ``/`` (:func:`split_ratio`) and each half is asked as an instant query
(``run_query``, which every provider has) for each workload, so a side is
:class:`~flaggerpy.judging.Proportion` ``(events, total)``. The halves must be counts over the
interval (``increase(...[{{ interval }}])``, not ``rate``), rounded to whole numbers; events
with no values (no series: not a single error) are 0, a total with no values is no data.

The builtin metrics (:func:`compare_builtin`) are the mesh observer's own queries rendered for
both workloads, for an observer that selects the canary by workload
(:attr:`~flaggerpy.observing.PrometheusObserver.compares_with_primary`): request-duration is
asked as samples (Mann-Whitney, in milliseconds), request-success-rate is split into its ok
and all-requests halves with ``increase`` for ``rate`` and judged as errors (all - ok) out of
all requests, a proportion.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Final

import structlog

from flaggerpy import templating
from flaggerpy.analysis import (
    MetricKind,
    MetricsProvider,
    MetricTemplateModel,
    Observer,
    SampleProvider,
)
from flaggerpy.canary import decisions
from flaggerpy.errors import MetricsError, NoValuesFoundError
from flaggerpy.judging import (
    Comparison,
    Judgement,
    Proportion,
    StatTest,
    Verdict,
    judge_proportions,
    judge_samples,
)
from flaggerpy.models import durations
from flaggerpy.observing import PrometheusObserver

__all__ = [
    "PRIMARY_SUFFIX",
    "Compared",
    "ComparisonUnsupported",
    "compare_builtin",
    "compare_with_primary",
    "primary_model",
    "split_ratio",
]

log = structlog.get_logger(__name__)

PRIMARY_SUFFIX: Final = "-primary"
"""Added to ``{{ target }}`` for the primary's query: the primary workload's name."""


class ComparisonUnsupported(Exception):
    """The comparison cannot be run at all (provider without samples, unsupported test)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Compared:
    """A comparison's outcome: the judgement and the two queries that fed it."""

    judgement: Judgement
    canary_query: str
    primary_query: str
    window: timedelta

    @property
    def verdict(self) -> Verdict:
        return self.judgement.verdict


def primary_model(model: MetricTemplateModel) -> MetricTemplateModel:
    """The canary's template model with ``target`` naming the primary workload."""
    return replace(model, target=model.target + PRIMARY_SUFFIX)


async def compare_with_primary(
        provider: MetricsProvider,
        *,
        provider_type: str,  # the MetricTemplate's provider.type, for messages
        query: str,  # the MetricTemplate's query, unrendered
        model: MetricTemplateModel,  # the canary's model
        comparison: Comparison,
) -> Compared:
    """Renders the query for both workloads, fetches both samples and judges them.

    Raises :class:`ComparisonUnsupported` when the provider cannot return samples
    (mann-whitney) or the query is not ``<events> / <total>`` (proportion),
    ``templating.TemplatingError`` when the query does not render, and the provider's
    ``MetricsError`` when a query fails.
    """
    if comparison.test is StatTest.PROPORTION:
        return await _compare_proportions(provider, query=query, model=model,
                                          comparison=comparison)
    if not isinstance(provider, SampleProvider):
        raise ComparisonUnsupported(
            f"provider {provider_type} cannot return samples over an interval, which compare"
            " needs (a range query); use a provider that can, such as prometheus")
    return await _compare_samples(
        provider, canary_query=templating.render(query, model),
        primary_query=templating.render(query, primary_model(model)),
        window=_window(model.interval), comparison=comparison)


async def compare_builtin(
        observer: Observer,
        *,
        kind: MetricKind,  # request-success-rate or request-duration
        model: MetricTemplateModel,  # the canary's model
        comparison: Comparison,
) -> Compared:
    """A builtin metric of the mesh's observer, judged against the primary.

    Raises :class:`ComparisonUnsupported` when the observer's queries cannot be rendered for
    the primary, its success-rate query is not Flagger's ratio shape, or its client cannot
    return samples; the client's ``MetricsError`` when a query fails.
    """
    mesh = getattr(observer, "mesh", type(observer).__name__)
    if not isinstance(observer, PrometheusObserver) or not observer.compares_with_primary:
        raise ComparisonUnsupported(
            f"compare is not available for the builtin {kind} metric of provider {mesh}: its"
            " query selects the canary by Service, ingress or route, not by workload, so it"
            " cannot be rendered for the primary; use a MetricTemplate whose query selects"
            " {{ target }}")
    primary = primary_model(model)
    window = _window(model.interval)
    if kind is MetricKind.REQUEST_DURATION:
        if comparison.test is StatTest.PROPORTION:
            raise ComparisonUnsupported(
                "request-duration is compared with mann-whitney, not proportion")
        if not isinstance(observer.client, SampleProvider):
            raise ComparisonUnsupported(
                f"the metrics server of provider {mesh} cannot return samples over an"
                " interval, which compare needs (a range query)")
        return await _compare_samples(
            observer.client, canary_query=observer.render_duration(model),
            primary_query=observer.render_duration(primary), window=window,
            comparison=comparison, scale=observer.duration_scale)
    canary_query = observer.render_success_rate(model)
    primary_query = observer.render_success_rate(primary)
    canary_halves = decisions.success_count_queries(canary_query)
    primary_halves = decisions.success_count_queries(primary_query)
    if canary_halves is None or primary_halves is None:
        raise ComparisonUnsupported(
            f"compare is not available for the builtin {kind} metric of provider {mesh}: its"
            " query is not sum(rate(<ok>)) / sum(rate(<all>)) * 100")
    canary, primary_counts = await asyncio.gather(
        _errors(observer.client, *canary_halves),
        _errors(observer.client, *primary_halves),
    )
    judgement = judge_proportions(canary, primary_counts, comparison)
    log.debug("metric_compared", verdict=str(judgement.verdict), reason=judgement.reason)
    return Compared(judgement=judgement, canary_query=canary_query,
                    primary_query=primary_query, window=window)


async def _compare_samples(
        provider: SampleProvider,
        *,
        canary_query: str,
        primary_query: str,
        window: timedelta,
        comparison: Comparison,
        scale: float = 1.0,  # what a value is multiplied by (an observer's seconds to ms)
) -> Compared:
    """Both rendered queries asked as samples over ``window`` and judged (Mann-Whitney)."""
    canary, primary = await asyncio.gather(
        provider.run_samples(canary_query, window=window),
        provider.run_samples(primary_query, window=window),
    )
    if scale != 1.0:
        canary = [value * scale for value in canary]
        primary = [value * scale for value in primary]
    judgement = judge_samples(canary, primary, comparison)
    log.debug("metric_compared", verdict=str(judgement.verdict), reason=judgement.reason,
              canary_query=canary_query, primary_query=primary_query)
    return Compared(judgement=judgement, canary_query=canary_query,
                    primary_query=primary_query, window=window)


async def _compare_proportions(
        provider: MetricsProvider,
        *,
        query: str,
        model: MetricTemplateModel,
        comparison: Comparison,
) -> Compared:
    """``events / total`` asked as two instant queries per workload, judged as proportions."""
    window = _window(model.interval)
    events_query, total_query = split_ratio(query)
    canary_model, primary_model_ = model, primary_model(model)
    canary, primary = await asyncio.gather(
        _proportion(provider, events_query, total_query, canary_model),
        _proportion(provider, events_query, total_query, primary_model_),
    )
    judgement = judge_proportions(canary, primary, comparison)
    log.debug("metric_compared", verdict=str(judgement.verdict), reason=judgement.reason)
    return Compared(judgement=judgement, canary_query=templating.render(query, canary_model),
                    primary_query=templating.render(query, primary_model_), window=window)


async def _proportion(
        provider: MetricsProvider, events_query: str, total_query: str,
        model: MetricTemplateModel,
) -> Proportion:
    events, total = await asyncio.gather(
        _count(provider, templating.render(events_query, model)),
        _count(provider, templating.render(total_query, model)),
    )
    if total is None:
        return Proportion(0, 0)  # no requests at all: the judge says NoData
    events = min(events or 0, total)  # increase() extrapolates each side separately
    return Proportion(events, total)


async def _errors(provider: MetricsProvider, ok_query: str, total_query: str) -> Proportion:
    """Errors (all requests - ok ones) out of all requests, from two rendered count queries."""
    ok, total = await asyncio.gather(_count(provider, ok_query), _count(provider, total_query))
    if total is None:
        return Proportion(0, 0)  # no requests at all: the judge says NoData
    ok = min(ok or 0, total)  # increase() extrapolates each side separately
    return Proportion(total - ok, total)


async def _count(provider: MetricsProvider, query: str) -> int | None:
    """A count the query answers, rounded; None when it has no values."""
    try:
        value = await provider.run_query(query)
    except NoValuesFoundError:
        return None
    if math.isnan(value):
        return None
    if math.isinf(value) or value < 0:
        raise MetricsError(f"a proportion needs counts, got {value} for: {query.strip()}")
    return round(value)


def _window(interval: str) -> timedelta:
    try:
        window = timedelta(seconds=durations.parse_duration(interval))
    except ValueError as exc:
        raise ComparisonUnsupported(f"interval {interval!r} is not a duration") from exc
    if window <= timedelta(0):
        raise ComparisonUnsupported(f"interval {interval!r} must be positive")
    return window


_OPEN: Final = {"(": ")", "{": "}", "[": "]"}
_QUOTES: Final = frozenset("\"'`")
_OTHER_OPERATORS: Final = frozenset("*+-%^<>=!")
_MODIFIERS: Final = ("on", "ignoring", "group_left", "group_right", "bool")


def split_ratio(query: str) -> tuple[str, str]:
    """``(events, total)`` of a ``<events> / <total>`` query: split at its top-level ``/``.

    The query (a template, not rendered: ``{{ ... }}`` is skipped like a bracket) must have
    exactly one operator outside brackets, braces, parentheses and quotes, and it must be
    ``/`` without a matching modifier (``on``, ``ignoring``...). Raises
    :class:`ComparisonUnsupported` saying what to write otherwise.
    """
    depth: list[str] = []
    quote = ""
    slash = -1
    i = 0
    while i < len(query):
        char = query[i]
        if quote:
            if char == "\\" and quote != "`":
                i += 2
                continue
            if char == quote:
                quote = ""
        elif query.startswith("{{", i):
            end = query.find("}}", i + 2)
            if end < 0:
                break
            i = end + 2
            continue
        elif char in _QUOTES:
            quote = char
        elif char in _OPEN:
            depth.append(_OPEN[char])
        elif depth and char == depth[-1]:
            depth.pop()
        elif not depth and char == "/":
            if slash >= 0:
                slash = -2
                break
            slash = i
        elif not depth and char in _OTHER_OPERATORS and not _in_number(query, i):
            slash = -2
            break
        i += 1
    events, total = query[:max(slash, 0)].strip(), query[slash + 1:].strip()
    if slash < 0 or not events or not total or total.split("(")[0].strip() in _MODIFIERS:
        raise ComparisonUnsupported(
            "a proportion query must be <events> / <total>, one top-level division of two counts"
            " (e.g. sum(increase(errors[{{ interval }}])) / sum(increase(requests[{{ interval"
            " }}]))), without * 100 or a matching modifier")
    return events, total


def _in_number(query: str, i: int) -> bool:
    """Whether the ``+``/``-`` at ``i`` is an exponent's sign (``1e-3``)."""
    return (query[i] in "+-" and i > 1 and query[i - 1] in "eE"
            and query[i - 2].isdigit())
