"""The externalmetrics provider through the real kube-apiserver's aggregation layer.

The adapter is the local fake of ``e2e/fakes/external_metrics.py``, registered as the
APIService ``v1beta1.external.metrics.k8s.io``: every request goes provider -> kube-apiserver
(authentication, RBAC, the aggregator's proxy with its front-proxy certificate) -> adapter, as
Flagger's client-go call does in a cluster.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import structlog

from e2e.cluster.localcluster import LocalCluster
from e2e.fakes.external_metrics import FakeExternalMetrics, registered
from flaggerpy import plugins
from flaggerpy.canary.metrics_analysis import MetricsAnalyzer
from flaggerpy.errors import MetricsError, NoValuesFoundError, ProviderOfflineError
from flaggerpy.kube.config import ApiServerAccess, api_server_access
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.metrics.externalmetrics import ExternalMetricsProvider
from flaggerpy.models import Canary
from flaggerpy.settings import Settings
from flaggerpy.telemetry import Recorder

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

API = "/apis/external.metrics.k8s.io/v1beta1"
READER = "flaggerpy-test-external-metrics-reader"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def adapter(cluster: LocalCluster) -> AsyncIterator[FakeExternalMetrics]:
    async with registered(cluster) as fake:
        yield fake


@pytest_asyncio.fixture(loop_scope="module")
async def fake(adapter: FakeExternalMetrics) -> FakeExternalMetrics:
    """The registered adapter, with this test's values only."""
    adapter.requests.clear()
    adapter._metrics.clear()
    adapter._failures.clear()
    return adapter


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def access(cluster: LocalCluster) -> ApiServerAccess:
    """The admin kubeconfig's access: a client certificate, as the controller's may be."""
    return await api_server_access(kubeconfig=cluster.kubeconfig)


@pytest_asyncio.fixture(loop_scope="module")
async def provider(access: ApiServerAccess) -> AsyncIterator[ExternalMetricsProvider]:
    async with ExternalMetricsProvider(address=None, kube=access, backoff=0.01) as built:
        yield built


async def service_account_token(cluster: LocalCluster, namespace: str, name: str, *,
                                may_read: bool) -> str:
    await cluster.akubectl("create", "serviceaccount", name, "-n", namespace)
    if may_read:
        # What the chart grants: get on the external metrics API's resources.
        await cluster.akubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": READER},
            "rules": [{"apiGroups": ["external.metrics.k8s.io"], "resources": ["*"],
                       "verbs": ["get", "list", "watch"]}]}))
        await cluster.akubectl("create", "rolebinding", name, "-n", namespace,
                               f"--clusterrole={READER}", f"--serviceaccount={namespace}:{name}")
    made = await cluster.akubectl("create", "token", name, "-n", namespace)
    return made.stdout.strip()


async def test_the_first_item_of_the_selected_values(
        fake: FakeExternalMetrics, provider: ExternalMetricsProvider) -> None:
    fake.set_metric("queue_depth", ({"app": "other"}, "9"), ({"app": "podinfo"}, "250m"),
                    ({"app": "podinfo", "zone": "b"}, "4"))

    value = await provider.run_query(
        "test/queue_depth?labelSelector=zone%20notin%20(a),app%3Dpodinfo")

    assert value == 0.25
    [request] = fake.metric_requests()
    assert request.path == f"{API}/namespaces/test/queue_depth"
    # Sent in canonical form: requirements sorted by key, as labels.Selector.String() writes it.
    assert request.query == {"labelSelector": "app=podinfo,zone notin (a)"}
    # The aggregator proxied it for the caller it authenticated (the admin's certificate).
    assert request.user == "kubernetes-admin"
    assert "system:masters" in request.groups
    if fake.front_proxy_ca:
        assert request.front_proxy == "front-proxy-client"


@pytest.mark.parametrize(("quantity", "expected"), [
    ("42", 42.0), ("1500m", 1.5), ("2Ki", 2048.0), ("1.5k", 1500.0), ("1e3", 1000.0),
    ("-3", -3.0), ("11111e-4", 1.1111), ("5u", 5e-6),
])
async def test_quantities_are_read_as_kubernetes_writes_them(
        fake: FakeExternalMetrics, provider: ExternalMetricsProvider,
        quantity: str, expected: float) -> None:
    fake.set_metric("m", quantity)
    assert await provider.run_query("ns/m") == pytest.approx(expected)


async def test_namespace_defaults_to_default_and_no_selector_is_sent(
        fake: FakeExternalMetrics, provider: ExternalMetricsProvider) -> None:
    fake.set_metric("m", "1", namespace="default")
    fake.set_metric("m", "2", namespace="other")
    assert await provider.run_query("m") == 1.0
    assert await provider.run_query("/m") == 1.0
    assert await provider.run_query("other/m") == 2.0
    paths = [(r.path, r.query) for r in fake.metric_requests()]
    assert paths == [(f"{API}/namespaces/default/m", {}), (f"{API}/namespaces/default/m", {}),
                     (f"{API}/namespaces/other/m", {})]


async def test_no_item_is_no_values(
        fake: FakeExternalMetrics, provider: ExternalMetricsProvider) -> None:
    fake.set_metric("m", ({"app": "a"}, "1"))
    with pytest.raises(NoValuesFoundError, match="no external metrics found: no values found"):
        await provider.run_query("ns/m?labelSelector=app%3Db")
    with pytest.raises(NoValuesFoundError):
        await provider.run_query("ns/unknown")


async def test_a_malformed_query_fails_before_any_request(
        fake: FakeExternalMetrics, provider: ExternalMetricsProvider) -> None:
    for query in ("a/b/c", "ns/", "ns/m?labelSelector=app%20in", "ns/m?labelSelector=-bad-="):
        with pytest.raises(MetricsError, match="error parsing metric query"):
            await provider.run_query(query)
    assert fake.metric_requests() == []


async def test_error_answers(fake: FakeExternalMetrics, provider: ExternalMetricsProvider) -> None:
    fake.fail_next(400, "metric m is not served for that selector")
    with pytest.raises(MetricsError,
                       match="error querying external metrics API: metric m is not served") as bad:
        await provider.run_query("ns/m")
    assert not isinstance(bad.value, ProviderOfflineError)
    for _ in range(3):  # the first request and both retries
        fake.fail_next(500, "backend down")
    with pytest.raises(ProviderOfflineError, match="backend down"):
        await provider.run_query("ns/m")
    assert len(fake.metric_requests()) == 4


async def test_a_retry_recovers_from_one_5xx(
        fake: FakeExternalMetrics, provider: ExternalMetricsProvider) -> None:
    fake.set_metric("m", "7")
    fake.fail_next(503)
    assert await provider.run_query("ns/m") == 7.0


async def test_a_hanging_adapter_times_out(fake: FakeExternalMetrics,
                                           access: ApiServerAccess) -> None:
    fake.fail_next(200, hang=3.0)
    async with ExternalMetricsProvider(address=None, kube=access, timeout=1.0,
                                       attempts=1) as provider:
        with pytest.raises(ProviderOfflineError, match="did not answer within 1s"):
            await provider.run_query("ns/m")


async def test_is_online_lists_the_dummy_metric(
        fake: FakeExternalMetrics, provider: ExternalMetricsProvider) -> None:
    assert await provider.is_online() is True
    [request] = fake.metric_requests()
    assert request.path == f"{API}/namespaces/kube-system/dummy-metric"
    for _ in range(3):
        fake.fail_next(503, "adapter restarting")
    with pytest.raises(ProviderOfflineError,
                       match=r"external metrics service unavailable: .*adapter restarting"):
        await provider.is_online()


async def test_an_unregistered_api_is_not_online(access: ApiServerAccess,
                                                 cluster: LocalCluster) -> None:
    """Asking a group the API server does not serve (the path is the same one level up)."""
    async with ExternalMetricsProvider(address=cluster.state().server + "/nothing-here",
                                       kube=access, attempts=1) as provider:
        with pytest.raises(ProviderOfflineError, match="external metrics service unavailable"):
            await provider.is_online()


async def test_address_replaces_the_host_and_keeps_the_credentials(
        fake: FakeExternalMetrics, access: ApiServerAccess, cluster: LocalCluster) -> None:
    fake.set_metric("m", "3")
    server = cluster.state().server.replace("127.0.0.1", "localhost")
    async with ExternalMetricsProvider(address=server, kube=access) as provider:
        assert await provider.run_query("ns/m") == 3.0
    assert fake.metric_requests()[0].user == "kubernetes-admin"


async def test_the_secret_token_is_the_caller(
        fake: FakeExternalMetrics, access: ApiServerAccess, cluster: LocalCluster,
        namespace: str) -> None:
    fake.set_metric("m", "5")
    token = await service_account_token(cluster, namespace, "reader", may_read=True)
    async with ExternalMetricsProvider(address=None, kube=access,
                                       secret={"token": token.encode()}) as provider:
        assert await provider.run_query(f"{namespace}/m") == 5.0
    # The API server authenticated the token: the admin's certificate was not presented.
    assert fake.metric_requests()[0].user == f"system:serviceaccount:{namespace}:reader"


async def test_a_controller_with_a_token_kubeconfig_asks_as_itself(
        fake: FakeExternalMetrics, cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    """The controller's credentials may be a token (in a pod, always): it is sent as Bearer."""
    fake.set_metric("m", "6")
    token = await service_account_token(cluster, namespace, "controller", may_read=True)
    kubeconfig = tmp_path / "token.kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "l", "cluster": {
            "server": cluster.state().server,
            "certificate-authority": str(cluster.pki_dir / "ca.crt")}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "l", "user": "u"}}]}))
    access = await api_server_access(kubeconfig=kubeconfig)
    assert token not in repr(access)
    async with ExternalMetricsProvider(address=None, kube=access) as provider:
        assert await provider.run_query(f"{namespace}/m") == 6.0
    assert fake.metric_requests()[0].user == f"system:serviceaccount:{namespace}:controller"


async def test_a_token_without_rbac_is_forbidden_and_never_repeated(
        fake: FakeExternalMetrics, access: ApiServerAccess, cluster: LocalCluster,
        namespace: str) -> None:
    token = await service_account_token(cluster, namespace, "nobody", may_read=False)
    with structlog.testing.capture_logs() as logs:
        async with ExternalMetricsProvider(address=None, kube=access,
                                           secret={"token": token.encode()}) as provider:
            with pytest.raises(MetricsError, match="forbidden") as raised:
                await provider.run_query("ns/m")
            with pytest.raises(ProviderOfflineError) as offline:
                await provider.is_online()
            shown = [repr(provider), str(raised.value), str(offline.value), repr(logs)]
    assert fake.metric_requests() == []  # refused by the API server, never proxied
    assert not any(token in text for text in shown)
    invalid = "not-a-token-" + token[-12:]
    async with ExternalMetricsProvider(address=None, kube=access,
                                       secret={"token": invalid.encode()}) as provider:
        with pytest.raises(MetricsError, match="Unauthorized") as unauthorized:
            await provider.run_query("ns/m")
    assert invalid not in str(unauthorized.value)


async def test_without_the_controllers_api_server_it_needs_an_address() -> None:
    with pytest.raises(MetricsError, match="no API server"):
        ExternalMetricsProvider(address=None)
    with pytest.raises(MetricsError, match="not a valid URL"):
        ExternalMetricsProvider(address="ftp://x")
    with pytest.raises(MetricsError, match="line break"):
        ExternalMetricsProvider(address="https://x", secret={"token": b"abc\n"})


async def test_the_analysis_gives_the_provider_the_controllers_api_server(
        fake: FakeExternalMetrics, cluster: LocalCluster) -> None:
    """MetricsAnalyzer hands ``kube`` (from -kubeconfig) to a factory that declares it only."""
    fake.set_metric("errors", ({"app": "podinfo"}, "2500m"))
    templates: dict[ObjectKey, dict[str, Any]] = {ObjectKey("test", "errors"): {
        "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
        "metadata": {"name": "errors", "namespace": "test"},
        "spec": {"provider": {"type": "externalmetrics"},
                 "query": "{{ namespace }}/errors?labelSelector=app%3D{{ target }}"}}}
    given: list[set[str]] = []

    def kubeless(**kwargs: Any) -> ExternalMetricsProvider:
        given.append(set(kwargs))
        return ExternalMetricsProvider(**{**kwargs, "address": "https://unused.invalid"})

    registry: plugins.Registry[plugins.Factory] = plugins.Registry("flaggerpy.metrics")
    registry.register("externalmetrics", ExternalMetricsProvider)
    registry.register("kubeless", kubeless)
    analyzer = MetricsAnalyzer(
        templates=templates, secrets=lambda key: None,
        settings=Settings(kube={"kubeconfig": str(cluster.kubeconfig)},
                          mesh={"provider": "kubernetes"}),
        telemetry=Recorder(), metrics_registry=registry)
    canary = Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "service": {"port": 9898},
                 "analysis": {"interval": "10s", "threshold": 5, "iterations": 2, "metrics": [{
                     "name": "errors", "templateRef": {"name": "errors"},
                     "thresholdRange": {"max": 1}}]}}})
    try:
        outcome = await analyzer.run(canary)
        assert await analyzer.check_providers(canary) == []
        templates[ObjectKey("test", "errors")]["spec"]["provider"]["type"] = "kubeless"
        await analyzer.run(canary)
    finally:
        await analyzer.aclose()
    assert outcome.failure is not None
    assert outcome.failure.message == "Halt podinfo.test advancement errors 2.50 > 1"
    assert fake.metric_requests()[0].query == {"labelSelector": "app=podinfo"}
    assert fake.metric_requests()[0].user == "kubernetes-admin"
    assert given
    assert all("kube" not in keywords for keywords in given)


async def test_the_adapter_believes_only_the_front_proxy(
        fake: FakeExternalMetrics, provider: ExternalMetricsProvider) -> None:
    """Asked directly, not through the API server, the adapter refuses: no front-proxy
    certificate. (A control plane started without the front-proxy flags publishes no
    requestheader CA; the adapter then cannot tell, and says so in ``front_proxy``.)"""
    fake.set_metric("m", "1")
    assert await provider.run_query("ns/m") == 1.0  # through the API server
    async with ExternalMetricsProvider(address=f"https://localhost:{fake.port}",
                                       insecure_skip_verify=True, attempts=1) as direct:
        if fake.front_proxy_ca:
            assert fake.verified_front_proxy
            with pytest.raises(MetricsError, match="Unauthorized"):
                await direct.run_query("ns/m")
            assert [r.front_proxy for r in fake.metric_requests()] == ["front-proxy-client"]
        else:
            assert await direct.run_query("ns/m") == 1.0
            assert [r.front_proxy for r in fake.metric_requests()] == ["", ""]
