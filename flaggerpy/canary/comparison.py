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

Only ``compare.test: mann-whitney`` is read here; a ``proportion`` comparison is a failed
check that says it is not supported yet (docs/analysis.md).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Final

import structlog

from flaggerpy import templating
from flaggerpy.analysis import MetricsProvider, MetricTemplateModel, SampleProvider
from flaggerpy.judging import Comparison, Judgement, StatTest, Verdict, judge_samples
from flaggerpy.models import durations

__all__ = [
    "PRIMARY_SUFFIX",
    "Compared",
    "ComparisonUnsupported",
    "compare_with_primary",
    "primary_model",
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

    Raises :class:`ComparisonUnsupported` when the provider cannot return samples or the test
    is not supported, ``templating.TemplatingError`` when the query does not render, and the
    provider's ``MetricsError`` when a query fails.
    """
    if comparison.test is not StatTest.MANN_WHITNEY:
        raise ComparisonUnsupported(
            f"compare.test {comparison.test} is not supported yet (only mann-whitney)")
    if not isinstance(provider, SampleProvider):
        raise ComparisonUnsupported(
            f"provider {provider_type} cannot return samples over an interval, which compare"
            " needs (a range query); use a provider that can, such as prometheus")
    try:
        window = timedelta(seconds=durations.parse_duration(model.interval))
    except ValueError as exc:
        raise ComparisonUnsupported(f"interval {model.interval!r} is not a duration") from exc
    if window <= timedelta(0):
        raise ComparisonUnsupported(f"interval {model.interval!r} must be positive")
    canary_query = templating.render(query, model)
    primary_query = templating.render(query, primary_model(model))
    canary, primary = await asyncio.gather(
        provider.run_samples(canary_query, window=window),
        provider.run_samples(primary_query, window=window),
    )
    judgement = judge_samples(canary, primary, comparison)
    log.debug("metric_compared", verdict=str(judgement.verdict), reason=judgement.reason,
              canary_query=canary_query, primary_query=primary_query)
    return Compared(judgement=judgement, canary_query=canary_query,
                    primary_query=primary_query, window=window)
