"""``compare`` on the builtin metrics: each mesh observer's queries rendered for the primary.

A fake provider answers by query, so these tests check what is asked for each workload (the
rewriting) and what is judged from it; the statistics themselves are tests/unit/test_judging.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import pytest

from flaggerpy.analysis import MetricKind, MetricsProvider, MetricTemplateModel, SampleProvider
from flaggerpy.canary.comparison import ComparisonUnsupported, compare_builtin, primary_model
from flaggerpy.canary.decisions import success_count_queries
from flaggerpy.errors import NoValuesFoundError
from flaggerpy.judging import Comparison, StatTest, Verdict
from flaggerpy.observing import PrometheusObserver
from flaggerpy.providers.apisix import ApisixObserver
from flaggerpy.providers.contour import ContourObserver
from flaggerpy.providers.gatewayapi import GatewayAPIObserver
from flaggerpy.providers.gloo import GlooObserver
from flaggerpy.providers.istio import IstioObserver
from flaggerpy.providers.knative import KnativeObserver
from flaggerpy.providers.kubernetes import KubernetesObserver
from flaggerpy.providers.kuma import KumaObserver
from flaggerpy.providers.nginx import NginxObserver
from flaggerpy.providers.skipper import SkipperObserver
from flaggerpy.providers.smi import LinkerdObserver, OsmObserver
from flaggerpy.providers.traefik import TraefikObserver
from flaggerpy.templating import render


class ByQuery:
    """Answers instant and range queries from tables keyed by a substring of the query."""

    def __init__(self, *, values: Mapping[str, float] | None = None,
                 samples: Mapping[str, list[float]] | None = None) -> None:
        self.values = dict(values or {})
        self.samples = dict(samples or {})
        self.asked: list[str] = []

    def _find(self, table: Mapping[str, Any], query: str) -> Any:
        self.asked.append(query)
        for key, answer in table.items():
            if key in query:
                return answer
        return None

    async def run_query(self, query: str) -> float:
        found = self._find(self.values, query)
        if found is None:
            raise NoValuesFoundError(query)
        return float(found)

    async def run_samples(self, query: str, *, window: timedelta) -> list[float]:
        assert window == timedelta(minutes=1)
        return list(self._find(self.samples, query) or [])

    async def is_online(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


_conforms: type[SampleProvider] = ByQuery


class ValuesOnly:
    async def run_query(self, query: str) -> float:
        return 1.0

    async def is_online(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


def model() -> MetricTemplateModel:
    return MetricTemplateModel(name="podinfo", namespace="test", target="podinfo",
                               service="podinfo", ingress="podinfo", route="podinfo",
                               interval="1m")


def observer(cls: type[PrometheusObserver], client: MetricsProvider) -> PrometheusObserver:
    return cls(client=client, render=render)


# Per mesh: what tells the canary's series apart in the rendered query, and the primary's.
SELECTORS: dict[type[PrometheusObserver], tuple[str, str]] = {
    IstioObserver: ('destination_workload=~"podinfo"', 'destination_workload=~"podinfo-primary"'),
    LinkerdObserver: ('deployment=~"podinfo"', 'deployment=~"podinfo-primary"'),
    OsmObserver: ('destination_name="podinfo"', 'destination_name="podinfo-primary"'),
    KubernetesObserver: ('kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"',
                         'kubernetes_pod_name=~"podinfo-primary-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"'),
    GatewayAPIObserver: ('kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+',
                         'kubernetes_pod_name=~"podinfo-primary-[0-9a-zA-Z]+'),
}


@pytest.mark.parametrize("cls", list(SELECTORS), ids=lambda cls: cls.mesh)
async def test_request_duration_asks_the_same_query_for_each_workload(
        cls: type[PrometheusObserver]) -> None:
    canary_selector, primary_selector = SELECTORS[cls]
    client = ByQuery(samples={primary_selector: [0.1] * 20, canary_selector: [0.13] * 20})
    compared = await compare_builtin(observer(cls, client), kind=MetricKind.REQUEST_DURATION,
                                     model=model(), comparison=Comparison())
    assert canary_selector in compared.canary_query
    assert primary_selector not in compared.canary_query
    assert primary_selector in compared.primary_query
    # Only the workload differs between the two queries.
    assert compared.primary_query.replace(primary_selector, canary_selector) == \
        compared.canary_query
    assert compared.canary_query == observer(cls, client).render_duration(model())
    assert set(client.asked) == {compared.canary_query, compared.primary_query}
    assert compared.verdict is Verdict.FAIL  # 30 % slower, beyond the 10 % tolerance


async def test_a_duration_in_seconds_is_judged_in_milliseconds() -> None:
    client = ByQuery(samples={"podinfo-primary-": [0.100] * 20, "podinfo-": [0.101] * 20})
    compared = await compare_builtin(observer(KubernetesObserver, client),
                                     kind=MetricKind.REQUEST_DURATION, model=model(),
                                     comparison=Comparison())
    assert compared.verdict is Verdict.PASS
    assert compared.judgement.estimate == pytest.approx(1.0)  # ms, not 0.001 s
    assert compared.judgement.primary_level == pytest.approx(100.0)


@pytest.mark.parametrize("cls", list(SELECTORS), ids=lambda cls: cls.mesh)
async def test_request_success_rate_is_judged_as_errors_out_of_requests(
        cls: type[PrometheusObserver]) -> None:
    canary_selector, primary_selector = SELECTORS[cls]
    success_rate = observer(cls, ByQuery()).render_success_rate
    canary_ok, canary_all = success_count_queries(success_rate(model())) or ("", "")
    primary_ok, primary_all = success_count_queries(success_rate(primary_model(model()))) or (
        "", "")
    assert canary_ok.startswith("sum(increase(")
    assert canary_all.startswith("sum(increase(")
    assert "rate(" not in canary_ok.replace("increase(", "")
    assert canary_selector in canary_ok
    assert primary_selector in primary_all
    # The canary fails 30 in 1000, its primary none in 1000.
    client = ByQuery(values={primary_ok: 1000, primary_all: 1000,
                             canary_ok: 970, canary_all: 1000})
    compared = await compare_builtin(observer(cls, client), kind=MetricKind.REQUEST_SUCCESS_RATE,
                                     model=model(), comparison=Comparison())
    assert compared.verdict is Verdict.FAIL
    assert compared.judgement.test is StatTest.PROPORTION
    assert (compared.judgement.canary_count, compared.judgement.primary_count) == (1000, 1000)
    assert set(client.asked) == {canary_ok, canary_all, primary_ok, primary_all}


async def test_no_requests_on_a_side_is_no_data() -> None:
    client = ByQuery(values={'destination_workload=~"podinfo-primary"': 100})
    compared = await compare_builtin(observer(IstioObserver, client),
                                     kind=MetricKind.REQUEST_SUCCESS_RATE, model=model(),
                                     comparison=Comparison())
    assert compared.verdict is Verdict.NO_DATA


@pytest.mark.parametrize("cls", [NginxObserver, ContourObserver, GlooObserver, TraefikObserver,
                                 SkipperObserver, ApisixObserver, KnativeObserver, KumaObserver],
                         ids=lambda cls: cls.mesh)
@pytest.mark.parametrize("kind", [MetricKind.REQUEST_SUCCESS_RATE, MetricKind.REQUEST_DURATION])
async def test_observers_selecting_the_canary_service_or_route_cannot_compare(
        cls: type[PrometheusObserver], kind: MetricKind) -> None:
    client = ByQuery()
    with pytest.raises(ComparisonUnsupported,
                       match=f"^compare is not available for the builtin {kind} metric of "
                             f"provider {cls.mesh}: "):
        await compare_builtin(observer(cls, client), kind=kind, model=model(),
                              comparison=Comparison())
    assert client.asked == []


@pytest.mark.parametrize(("make", "message"), [
    (lambda: observer(IstioObserver, ValuesOnly()), "cannot return samples"),
    (lambda: observer(IstioObserver, ByQuery()), "mann-whitney, not proportion"),
])
async def test_a_duration_comparison_that_cannot_run_says_why(
        make: Callable[[], PrometheusObserver], message: str) -> None:
    test = StatTest.PROPORTION if "proportion" in message else StatTest.MANN_WHITNEY
    with pytest.raises(ComparisonUnsupported, match=message):
        await compare_builtin(make(), kind=MetricKind.REQUEST_DURATION, model=model(),
                              comparison=Comparison(test=test))


def test_success_count_queries_need_flaggers_ratio_shape() -> None:
    assert success_count_queries("sum(rate(a[1m])) / sum(rate(b[1m])) * 100") == (
        "sum(increase(a[1m]))", "sum(increase(b[1m]))")
    assert success_count_queries("avg(x) / sum(rate(b[1m])) * 100") is None
    assert success_count_queries("sum(rate(a[1m]))") is None
