"""The keptn provider on the real kube-apiserver, with Keptn's CRDs and a stand-in for Keptn.

Keptn's own CRDs (``e2e/crds/keptn.yaml``) are installed, so what the provider creates is
validated by Keptn's schema; ``e2e/keptn_standin.py`` plays the metrics operator (KeptnMetric
values through the status subresource, Analyses completed with the verdict a test chooses).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from e2e.cluster.localcluster import LocalCluster
from e2e.cluster.pytest_plugin import eventually
from e2e.keptn_standin import ANALYSES, KeptnStandIn
from flaggerpy import kube
from flaggerpy.errors import MetricsError, NoValuesFoundError
from flaggerpy.kube.config import ApiServerAccess, api_server_access
from flaggerpy.metrics.keptn import KeptnProvider

pytestmark = pytest.mark.integration

FAST = {"poll_interval": 0.2, "backoff": 0.01}


@pytest.fixture
async def admin(cluster: LocalCluster) -> AsyncIterator[kube.KubeClient]:
    client = await kube.KubeClient.connect(kubeconfig=cluster.kubeconfig)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def keptn(admin: kube.KubeClient, namespace: str) -> AsyncIterator[KeptnStandIn]:
    async with KeptnStandIn(admin, namespaces=[namespace], delay=0.3) as running:
        yield running


@pytest.fixture
async def access(cluster: LocalCluster) -> ApiServerAccess:
    return await api_server_access(kubeconfig=cluster.kubeconfig)


@pytest.fixture
async def provider(access: ApiServerAccess) -> AsyncIterator[KeptnProvider]:
    async with KeptnProvider(address=None, kube=access, **FAST) as built:
        yield built


async def analyses_in(admin: kube.KubeClient, namespace: str) -> list[str]:
    return [a["metadata"]["name"] for a in (await admin.list(ANALYSES, namespace=namespace)).items]


# -- KeptnMetric ------------------------------------------------------------------------------


async def test_a_keptnmetric_value(keptn: KeptnStandIn, provider: KeptnProvider,
                                   namespace: str) -> None:
    await keptn.set_metric(namespace, "response-time", "0.25")
    assert await provider.run_query(f"keptnmetric/{namespace}/response-time") == 0.25
    # Lower-cased, as Flagger does: Kubernetes names are lower case anyway.
    assert await provider.run_query(f"KeptnMetrics/{namespace.upper()}/Response-Time\n") == 0.25
    await keptn.set_metric(namespace, "response-time", "1e3")
    assert await provider.run_query(f"keptnmetric/{namespace}/response-time") == 1000.0


async def test_a_missing_keptnmetric(keptn: KeptnStandIn, provider: KeptnProvider,
                                     namespace: str) -> None:
    with pytest.raises(MetricsError, match=(
            f'^could not retrieve KeptnMetric {namespace}/absent: '
            'keptnmetrics.metrics.keptn.sh "absent" not found$')):
        await provider.run_query(f"keptnmetric/{namespace}/absent")


async def test_a_keptnmetric_without_a_value_is_an_error_as_in_flagger(
        keptn: KeptnStandIn, provider: KeptnProvider, namespace: str) -> None:
    await keptn.set_metric(namespace, "not-fetched-yet", None)
    with pytest.raises(MetricsError, match=(
            "^could not retrieve KeptnMetric - no value found in resource "
            f"{namespace}/not-fetched-yet$")) as raised:
        await provider.run_query(f"keptnmetric/{namespace}/not-fetched-yet")
    assert not isinstance(raised.value, NoValuesFoundError)
    await keptn.set_metric(namespace, "not-fetched-yet", "n/a")
    with pytest.raises(MetricsError, match=(
            f"^could not parse value of KeptnMetric {namespace}/not-fetched-yet to float: "
            'strconv.ParseFloat: parsing "n/a": invalid syntax$')):
        await provider.run_query(f"keptnmetric/{namespace}/not-fetched-yet")


# -- Analysis ---------------------------------------------------------------------------------


async def test_a_passed_analysis_is_1_and_is_deleted(
        keptn: KeptnStandIn, provider: KeptnProvider, admin: kube.KubeClient,
        namespace: str) -> None:
    keptn.verdicts["podinfo-slo"] = True
    value = await provider.run_query(f"analysis/{namespace}/podinfo-slo/5m/foo=bar;bar=foo")
    assert value == 1.0
    [created] = keptn.created
    assert re.fullmatch(r"podinfo-slo-[0-9a-f]{6}", created["metadata"]["name"])
    assert created["metadata"]["namespace"] == namespace
    assert created["spec"] == {"analysisDefinition": {"name": "podinfo-slo"},
                               "timeframe": {"recent": "5m"},
                               "args": {"foo": "bar", "bar": "foo"}}
    # Deleted before the value was returned, not some time later.
    assert await analyses_in(admin, namespace) == []


async def test_a_failed_analysis_is_0_with_flaggers_defaults(
        keptn: KeptnStandIn, access: ApiServerAccess, admin: kube.KubeClient,
        namespace: str) -> None:
    """Flagger's timing too: read every second, within 10 s."""
    keptn.verdicts["podinfo-slo"] = False
    async with KeptnProvider(kube=access) as provider:
        assert (provider.poll_interval, provider.analysis_timeout) == (1.0, 10.0)
        assert await provider.run_query(f"analysis/{namespace}/podinfo-slo") == 0.0
    [created] = keptn.created
    assert created["spec"] == {"analysisDefinition": {"name": "podinfo-slo"},
                               "timeframe": {"recent": "1m"}, "args": {}}
    assert await analyses_in(admin, namespace) == []


async def test_an_analysis_that_never_completes_times_out_and_is_deleted(
        keptn: KeptnStandIn, access: ApiServerAccess, admin: kube.KubeClient,
        namespace: str) -> None:
    keptn.verdicts["stuck"] = None  # left Progressing
    async with KeptnProvider(kube=access, analysis_timeout=1.5, **FAST) as provider:
        started = asyncio.get_running_loop().time()
        with pytest.raises(MetricsError, match=(
                "^encountered timeout while waiting for Keptn Analysis "
                f"{namespace}/stuck to be finished$")):
            await provider.run_query(f"analysis/{namespace}/stuck")
        assert asyncio.get_running_loop().time() - started < 5
    assert len(keptn.created) == 1
    assert await analyses_in(admin, namespace) == []


async def test_an_analysis_whose_definition_keptn_does_not_know_times_out_too(
        keptn: KeptnStandIn, access: ApiServerAccess, admin: kube.KubeClient,
        namespace: str) -> None:
    """Keptn leaves such an Analysis without a status: no ``state`` is read as not finished."""
    async with KeptnProvider(kube=access, analysis_timeout=1.0, **FAST) as provider:
        with pytest.raises(MetricsError, match="encountered timeout"):
            await provider.run_query(f"analysis/{namespace}/unknown-definition")
    assert await analyses_in(admin, namespace) == []


async def test_a_cancelled_tick_still_deletes_its_analysis(
        keptn: KeptnStandIn, access: ApiServerAccess, admin: kube.KubeClient,
        namespace: str) -> None:
    keptn.verdicts["slow"] = None
    provider = KeptnProvider(kube=access, **FAST)
    query = asyncio.create_task(provider.run_query(f"analysis/{namespace}/slow"))

    async def created() -> bool:
        return bool(keptn.created)

    try:
        await eventually(created, what="the Analysis to be created")
        query.cancel()
        await asyncio.sleep(0)
        query.cancel()  # cancelled again while it deletes: the deletion is shielded
        with pytest.raises(asyncio.CancelledError):
            await query
    finally:
        await provider.aclose()  # waits for the deletion under way
    assert await analyses_in(admin, namespace) == []
    assert keptn.created[0]["metadata"]["name"].startswith("slow-")


async def test_an_analysis_the_api_server_refuses(
        keptn: KeptnStandIn, provider: KeptnProvider, admin: kube.KubeClient,
        namespace: str) -> None:
    """Keptn's schema checks the timeframe: a duration it does not accept is refused."""
    with pytest.raises(MetricsError, match=(
            f"^could not create Keptn Analysis {namespace}/slo: .*spec.timeframe.recent")):
        await provider.run_query(f"analysis/{namespace}/slo/five-minutes")
    assert keptn.created == []
    assert await analyses_in(admin, namespace) == []


# -- who asks ---------------------------------------------------------------------------------


async def token_kubeconfig(cluster: LocalCluster, namespace: str, name: str, path: Path, *,
                           rules: list[dict[str, object]]) -> tuple[str, Path]:
    """A kubeconfig of a new ServiceAccount's token, allowed ``rules`` in ``namespace``."""
    await cluster.akubectl("create", "serviceaccount", name, "-n", namespace)
    if rules:
        await cluster.akubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name, "namespace": namespace}, "rules": rules}))
        await cluster.akubectl("create", "rolebinding", name, "-n", namespace,
                               f"--role={name}", f"--serviceaccount={namespace}:{name}")
    token = (await cluster.akubectl("create", "token", name, "-n", namespace)).stdout.strip()
    config = json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "l", "cluster": {
            "server": cluster.state().server,
            "certificate-authority": str(cluster.pki_dir / "ca.crt")}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "l", "user": "u"}}]})
    await asyncio.to_thread(path.write_text, config)
    return token, path


CHART_RULES: list[dict[str, object]] = [
    {"apiGroups": ["metrics.keptn.sh"], "resources": ["keptnmetrics"], "verbs": ["get"]},
    {"apiGroups": ["metrics.keptn.sh"], "resources": ["analyses"],
     "verbs": ["create", "get", "delete"]},
]


async def test_the_verbs_the_chart_grants_are_enough(
        keptn: KeptnStandIn, cluster: LocalCluster, admin: kube.KubeClient, namespace: str,
        tmp_path: Path) -> None:
    """A token allowed exactly get keptnmetrics and create/get/delete analyses does it all."""
    _, kubeconfig = await token_kubeconfig(cluster, namespace, "flaggerpy", tmp_path / "k",
                                           rules=CHART_RULES)
    await keptn.set_metric(namespace, "m", "7")
    keptn.verdicts["slo"] = True
    access = await api_server_access(kubeconfig=kubeconfig)
    async with KeptnProvider(kube=access, **FAST) as provider:
        assert await provider.run_query(f"keptnmetric/{namespace}/m") == 7.0
        assert await provider.run_query(f"analysis/{namespace}/slo") == 1.0
    assert await analyses_in(admin, namespace) == []


async def test_a_token_without_rbac_is_forbidden_and_never_repeated(
        keptn: KeptnStandIn, cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    token, kubeconfig = await token_kubeconfig(cluster, namespace, "nobody", tmp_path / "k",
                                               rules=[])
    access = await api_server_access(kubeconfig=kubeconfig)
    with structlog.testing.capture_logs() as logs:
        async with KeptnProvider(kube=access, **FAST) as provider:
            with pytest.raises(MetricsError, match="forbidden") as metric:
                await provider.run_query(f"keptnmetric/{namespace}/m")
            with pytest.raises(MetricsError, match=(
                    f"^could not create Keptn Analysis {namespace}/slo: .*forbidden")) as made:
                await provider.run_query(f"analysis/{namespace}/slo")
            shown = [repr(provider), repr(access), str(metric.value), str(made.value),
                     repr(logs)]
    assert token not in " ".join(shown)
    assert f"system:serviceaccount:{namespace}:nobody" in str(metric.value)
    assert keptn.created == []
