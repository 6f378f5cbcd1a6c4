"""The keptn provider without an API server: its query grammar, value parsing and set-up errors.

What it does with Keptn's resources on a real API server is in
``tests/integration/test_keptn_provider.py``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio.client import Configuration

from flaggerpy.errors import MetricsError, ProviderOfflineError
from flaggerpy.kube.config import ApiServerAccess
from flaggerpy.metrics.keptn import KeptnProvider, KeptnQuery, parse_go_float, parse_query

FORMAT = "unexpected query format. query must be in the format"
KIND = ("unexpected resource kind provided in the query. must be one of: "
        "['keptnmetric', 'analysis']")


def unreachable() -> ApiServerAccess:
    """An API server nobody listens on: any request would fail as ProviderOfflineError."""
    configuration = Configuration(host="http://127.0.0.1:1")
    return ApiServerAccess(host="http://127.0.0.1:1", _configuration=configuration)


@pytest.fixture
async def provider() -> AsyncIterator[KeptnProvider]:
    async with KeptnProvider(kube=unreachable(), attempts=1) as built:
        yield built


@pytest.mark.parametrize(("query", "expected"), [
    ("keptnmetric/ns/my-metric", KeptnQuery("keptnmetrics", "ns", "my-metric")),
    ("keptnmetrics/ns/my-metric/5m/a=b", KeptnQuery("keptnmetrics", "ns", "my-metric")),
    ("KeptnMetric/NS/My-Metric\n", KeptnQuery("keptnmetrics", "ns", "my-metric")),
    ("  analysis/ns/slo  ", KeptnQuery("analyses", "ns", "slo", "1m", {})),
    ("analyses/ns/slo/5m", KeptnQuery("analyses", "ns", "slo", "5m", {})),
    # Pairs with exactly one "=" are kept, others dropped; lower-cased like the rest.
    ("analysis/ns/slo/30s/Foo=Bar;bar=foo;broken;a=b=c;=e",
     KeptnQuery("analyses", "ns", "slo", "30s", {"foo": "bar", "bar": "foo", "": "e"})),
    ("analysis/ns/slo/2m/a=1/ignored", KeptnQuery("analyses", "ns", "slo", "2m", {"a": "1"})),
])
def test_queries_are_read_as_flagger_reads_them(query: str, expected: KeptnQuery) -> None:
    assert parse_query(query) == expected


@pytest.mark.parametrize(("query", "message"), [
    ("keptnmetric/ns", FORMAT),
    ("", FORMAT),
    ("invalid/ns/my-metric", KIND),
    ("prometheus/ns/my-metric", KIND),
    ("keptnmetric//my-metric", "namespace and resource name cannot be empty"),
    ("analysis/ns/", "namespace and resource name cannot be empty"),
])
async def test_a_malformed_query_fails_before_any_request(
        provider: KeptnProvider, query: str, message: str) -> None:
    with pytest.raises(MetricsError, match=message.replace("[", r"\[")) as raised:
        await provider.run_query(query)
    assert not isinstance(raised.value, ProviderOfflineError)


async def test_an_unreachable_api_server_is_offline(provider: KeptnProvider) -> None:
    """The fixture's server really is unreachable: the cases above would have said so."""
    with pytest.raises(ProviderOfflineError, match="cannot connect"):
        await provider.run_query("keptnmetric/ns/m")
    with pytest.raises(ProviderOfflineError, match="cannot connect"):
        await provider.run_query("analysis/ns/slo")


@pytest.mark.parametrize(("text", "expected"), [
    ("3.0", 3.0), ("42", 42.0), ("-1.5", -1.5), ("+2", 2.0), (".5", 0.5), ("5.", 5.0),
    ("1e3", 1000.0), ("2.5E-2", 0.025), ("0x1p-2", 0.25), ("Inf", math.inf),
    ("-infinity", -math.inf),
])
def test_values_are_parsed_as_go_parses_them(text: str, expected: float) -> None:
    assert parse_go_float(text) == expected


def test_nan_is_a_value_the_analysis_judges() -> None:
    assert math.isnan(parse_go_float("NaN"))


@pytest.mark.parametrize("text", ["", " 1", "1 ", "1_000", "1,5", "0x10", "abc", "1e", "1e400"])
def test_what_go_refuses_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"strconv\.ParseFloat"):
        parse_go_float(text)


def test_without_the_controllers_api_server_it_cannot_work() -> None:
    with pytest.raises(MetricsError, match="could not initialize KeptnProvider: no KubeConfig"):
        KeptnProvider(address="https://ignored.example")
    with pytest.raises(MetricsError, match="no variant"):
        KeptnProvider(kube=unreachable(), variant="v2")
    with pytest.raises(ValueError, match="positive"):
        KeptnProvider(kube=unreachable(), analysis_timeout=0)


async def test_is_online_is_always_true(provider: KeptnProvider) -> None:
    assert await provider.is_online() is True
    assert repr(provider) == "KeptnProvider(http://127.0.0.1:1)"

