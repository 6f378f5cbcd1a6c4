"""A metric compared with the primary: what each side's query is, and what cannot be compared.

The judge itself is tested in test_judge.py; here the two renderings of one MetricTemplate
query, the window the samples are asked over, and the refusals (a provider that cannot return
samples, a test not supported yet, an interval that is not a duration).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from flaggerpy.analysis import MetricsProvider, MetricTemplateModel, SampleProvider
from flaggerpy.canary.comparison import (
    ComparisonUnsupported,
    compare_with_primary,
    primary_model,
    split_ratio,
)
from flaggerpy.errors import MetricsError, NoValuesFoundError
from flaggerpy.judging import Comparison, StatTest, Verdict
from flaggerpy.models import MetricTemplate
from flaggerpy.templating import render

# Flagger's documented latency template: the pods of {{ target }} by their generated names.
P99 = """
histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{
  kubernetes_namespace="{{ namespace }}",
  kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"
}[{{ interval }}])) by (le))
"""


def model(**fields: str) -> MetricTemplateModel:
    values = {"name": "web", "namespace": "shop", "target": "podinfo", "service": "frontend",
              "ingress": "edge", "route": "podinfo-00002", "interval": "1m", **fields}
    return MetricTemplateModel(**values, variables={"reporter": "destination"})  # type: ignore[arg-type]


def test_the_primary_side_changes_the_target_only() -> None:
    canary = model()
    primary = primary_model(canary)
    assert primary.target == "podinfo-primary"
    assert (primary.name, primary.namespace, primary.service, primary.ingress, primary.route,
            primary.interval) == ("web", "shop", "frontend", "edge", "podinfo-00002", "1m")
    assert dict(primary.variables) == {"reporter": "destination"}


def test_a_query_renders_once_per_workload() -> None:
    canary = render(P99, model())
    primary = render(P99, primary_model(model()))
    assert 'kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"' in canary
    assert 'kubernetes_pod_name=~"podinfo-primary-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"' in primary
    assert canary.replace("podinfo-", "podinfo-primary-") == primary


@dataclass
class Recording:
    """A provider with samples: answers by which workload a query names."""

    answers: dict[str, list[float]]
    asked: list[tuple[str, timedelta]] = field(default_factory=list)

    async def run_samples(self, query: str, *, window: timedelta) -> list[float]:
        self.asked.append((query, window))
        side = "primary" if "-primary" in query else "canary"
        return self.answers[side]

    async def run_query(self, query: str) -> float:
        raise AssertionError("a comparison asks for samples only")

    async def is_online(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


class ValueOnly:
    """A provider that answers one value per query, as most do."""

    async def run_query(self, query: str) -> float:
        return 1.0

    async def is_online(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


async def test_both_sides_are_asked_over_the_metric_interval_and_judged() -> None:
    provider = Recording({"canary": [130.0 + i % 5 for i in range(30)],
                          "primary": [100.0 + i % 5 for i in range(30)]})
    compared = await compare_with_primary(
        provider, provider_type="prometheus", query=P99, model=model(interval="2m"),
        comparison=Comparison())
    assert sorted(q for q, _ in provider.asked) == sorted(
        [compared.canary_query, compared.primary_query])
    assert {w for _, w in provider.asked} == {timedelta(minutes=2)}
    assert "podinfo-primary-" in compared.primary_query
    assert "podinfo-primary-" not in compared.canary_query
    assert compared.verdict is Verdict.FAIL
    assert compared.judgement.estimate == pytest.approx(30.0)


async def test_a_canary_like_the_primary_passes() -> None:
    same = [100.0 + i % 7 for i in range(30)]
    compared = await compare_with_primary(
        Recording({"canary": same, "primary": same}), provider_type="prometheus", query=P99,
        model=model(), comparison=Comparison())
    assert compared.verdict is Verdict.PASS


async def test_no_samples_is_no_data() -> None:
    compared = await compare_with_primary(
        Recording({"canary": [], "primary": [100.0] * 30}), provider_type="prometheus",
        query=P99, model=model(), comparison=Comparison())
    assert compared.verdict is Verdict.NO_DATA


async def test_a_provider_without_samples_is_refused_by_its_type() -> None:
    provider: MetricsProvider = ValueOnly()
    assert not isinstance(provider, SampleProvider)
    with pytest.raises(ComparisonUnsupported, match="provider datadog cannot return samples"):
        await compare_with_primary(provider, provider_type="datadog", query=P99,
                                   model=model(), comparison=Comparison())


ERROR_RATIO = """
sum(increase(http_requests_total{pod=~"{{ target }}-[0-9a-z]+-[0-9a-z]+",
                                 status=~"5.."}[{{ interval }}]))
/
sum(increase(http_requests_total{pod=~"{{ target }}-[0-9a-z]+-[0-9a-z]+"}[{{ interval }}]))
"""


def test_a_ratio_splits_at_its_top_level_division() -> None:
    events, total = split_ratio(ERROR_RATIO)
    assert events.startswith("sum(increase(")
    assert 'status=~"5.."' in events
    assert total.startswith("sum(increase(")
    assert "status" not in total
    assert split_ratio('sum(x{path="/a/b"}) / sum(y[5m:1m]) offset 1e-3') == (
        'sum(x{path="/a/b"})', "sum(y[5m:1m]) offset 1e-3")
    assert split_ratio('x{{ "/" }} / {{ variables.total }}') == (
        'x{{ "/" }}', "{{ variables.total }}")


@pytest.mark.parametrize("query", [
    "sum(errors)",  # no division
    "sum(errors) / sum(requests) * 100",  # a percentage, not two counts
    "a / b / c",
    "a / on(pod) b",
    "/ b",
    "errors - 1",
])
def test_a_query_that_is_not_events_over_total_is_refused(query: str) -> None:
    with pytest.raises(ComparisonUnsupported, match="must be <events> / <total>"):
        split_ratio(query)


@dataclass
class Counting:
    """A provider of instant values: answers by workload and by which half is asked."""

    counts: dict[tuple[str, str], float | None]
    asked: list[str] = field(default_factory=list)

    async def run_query(self, query: str) -> float:
        self.asked.append(query)
        side = "primary" if "-primary" in query else "canary"
        half = "events" if "5.." in query else "total"
        value = self.counts[side, half]
        if value is None:
            raise NoValuesFoundError("no values found")
        return value

    async def is_online(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


PROPORTION = Comparison(test=StatTest.PROPORTION)


async def test_proportions_are_four_instant_queries_judged() -> None:
    provider = Counting({("canary", "events"): 60.4, ("canary", "total"): 1000.0,
                         ("primary", "events"): 10.0, ("primary", "total"): 1000.2})
    compared = await compare_with_primary(provider, provider_type="datadog", query=ERROR_RATIO,
                                          model=model(), comparison=PROPORTION)
    assert len(provider.asked) == 4
    assert compared.verdict is Verdict.FAIL
    assert compared.judgement.canary_count == 1000
    assert "ratio 60/1000" in compared.judgement.reason
    assert "primary 10/1000" in compared.judgement.reason


async def test_no_errors_is_zero_events_and_no_requests_is_no_data() -> None:
    provider = Counting({("canary", "events"): None, ("canary", "total"): 500.0,
                         ("primary", "events"): None, ("primary", "total"): 500.0})
    compared = await compare_with_primary(provider, provider_type="prometheus",
                                          query=ERROR_RATIO, model=model(), comparison=PROPORTION)
    assert compared.verdict is Verdict.PASS
    assert "ratio 0/500" in compared.judgement.reason
    provider.counts["canary", "total"] = None
    compared = await compare_with_primary(provider, provider_type="prometheus",
                                          query=ERROR_RATIO, model=model(), comparison=PROPORTION)
    assert compared.verdict is Verdict.NO_DATA


async def test_a_negative_count_is_an_error() -> None:
    provider = Counting({("canary", "events"): -1.0, ("canary", "total"): 500.0,
                         ("primary", "events"): 0.0, ("primary", "total"): 500.0})
    with pytest.raises(MetricsError, match=r"a proportion needs counts, got -1\.0"):
        await compare_with_primary(provider, provider_type="prometheus", query=ERROR_RATIO,
                                   model=model(), comparison=PROPORTION)


@pytest.mark.parametrize("interval", ["", "soon", "0s"])
async def test_an_interval_that_is_no_window_is_refused(interval: str) -> None:
    with pytest.raises(ComparisonUnsupported, match="interval"):
        await compare_with_primary(
            Recording({"canary": [], "primary": []}), provider_type="prometheus", query=P99,
            model=model(interval=interval), comparison=Comparison())


def documented_templates() -> dict[str, MetricTemplate]:
    doc = (Path(__file__).parents[2] / "docs" / "analysis.md").read_text()
    found = map(yaml.safe_load, re.findall(r"```yaml\n(.*?)```", doc, re.S))
    return {d["metadata"]["name"]: MetricTemplate.model_validate(d) for d in found
            if d["kind"] == "MetricTemplate"}


def test_the_documented_error_ratio_is_two_counts() -> None:
    template = documented_templates()["error-ratio"]
    events, total = split_ratio(template.spec.query)
    assert render(events, model(interval="30s")).count('status=~"5.."') == 1
    assert "status" not in render(total, primary_model(model(interval="30s")))
    assert 'pod=~"podinfo-primary-' in render(total, primary_model(model()))


def test_the_documented_template_renders_for_each_workload() -> None:
    template = documented_templates()["latency-samples"]
    canary = render(template.spec.query, model(target="podinfo", namespace="test"))
    primary = render(template.spec.query, primary_model(model(target="podinfo",
                                                              namespace="test")))
    assert 'kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"' in canary
    assert 'kubernetes_pod_name=~"podinfo-primary-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"' in primary
    assert 'kubernetes_namespace="test"' in primary
