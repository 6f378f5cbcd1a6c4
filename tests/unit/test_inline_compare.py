"""An inline ``query`` with ``compare`` is refused, saying why, whatever its threshold would say.

Flagger sends an inline query as written (it is not a template), so ``{{ target }}`` cannot be
pointed at the primary (docs/analysis.md). The refusal comes before the query is run: a compare
without a threshold would otherwise be judged by Flagger's unset threshold (a maximum of 0),
and a failing threshold would hide the reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from flaggerpy import plugins
from flaggerpy.canary.decisions import Act
from flaggerpy.canary.metrics_analysis import MetricsAnalyzer
from flaggerpy.models import Canary
from flaggerpy.settings import Settings
from flaggerpy.telemetry import Recorder

REFUSED = ("Metric compare failed for inline: compare is not available for an inline query, "
           "which is not rendered, so {{ target }} cannot name the primary; use a templateRef")


class Canned:
    """A Prometheus client answering 5 to everything, remembering what it was asked."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    async def run_query(self, query: str) -> float:
        self.queries.append(query)
        return 5.0

    async def is_online(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


class _Empty:
    def get(self, key: Any) -> None:
        return None


@pytest.fixture
def client() -> Canned:
    return Canned()


@pytest.fixture
async def analyzer(client: Canned) -> AsyncIterator[MetricsAnalyzer]:
    metrics: plugins.Registry[plugins.Factory] = plugins.Registry("flaggerpy.metrics")
    metrics.register("prometheus", lambda **_: client)
    running = MetricsAnalyzer(
        templates=_Empty(), secrets=_Empty().get,
        settings=Settings(metrics={"server": "http://prometheus.test:9090"},
                          mesh={"provider": "kubernetes"}),
        telemetry=Recorder(process_collectors=False), metrics_registry=metrics,
    )
    yield running
    await running.aclose()


def make_canary(**metric: Any) -> Canary:
    body = {"name": "inline", "interval": "1m", "query": "vector(5)",
            "compare": {"with": "primary"}, **metric}
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "service": {"port": 9898},
                 "analysis": {"interval": "1m", "threshold": 5, "metrics": [body]}},
    })


@pytest.mark.parametrize("threshold", [
    pytest.param({}, id="compare-only"),
    pytest.param({"thresholdRange": {"max": 1}}, id="failing-threshold"),
    pytest.param({"thresholdRange": {"max": 10}}, id="passing-threshold"),
])
async def test_an_inline_query_with_compare_is_refused_before_it_is_run(
        analyzer: MetricsAnalyzer, client: Canned, threshold: dict[str, Any]) -> None:
    outcome = await analyzer.run(make_canary(**threshold))
    assert not outcome.passed
    assert outcome.failure is not None
    assert outcome.failure.error
    assert outcome.failure.message == REFUSED
    assert client.queries == []
    (decision,) = outcome.decisions
    assert (decision.verdict, decision.act) == ("Error", Act.FAIL)
    assert decision.query == "vector(5)"
    assert decision.message == REFUSED


async def test_in_dry_run_the_refusal_is_only_reported(analyzer: MetricsAnalyzer) -> None:
    outcome = await analyzer.run(make_canary(dryRun=True))
    assert outcome.passed
    (decision,) = outcome.decisions
    assert decision.act is Act.DRY_RUN
    assert decision.event == f"Dry run: metric inline Error: {REFUSED}"


async def test_without_compare_the_inline_query_is_flaggers(
        analyzer: MetricsAnalyzer, client: Canned) -> None:
    canary = make_canary(compare=None, thresholdRange={"max": 1})
    outcome = await analyzer.run(canary)
    assert client.queries == ["vector(5)"]
    assert outcome.failure is not None
    assert outcome.failure.message == "Halt podinfo.test advancement inline 5.00 > 1"
