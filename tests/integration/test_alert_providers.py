"""AlertProviders and their Secrets read from a real API server, alerts posted to local receivers.

The AlertProvider and Secret are created in the local control plane exactly as a user would
write them; the Alerter reads them through the kube client (or an informer cache) and the
message must reach the receiver whose address only the Secret holds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from e2e.cluster.localcluster import LocalCluster
from flaggerpy import kube
from flaggerpy.canary import alerting
from flaggerpy.canary.alerting import Alerter
from flaggerpy.models import Canary
from flaggerpy.runtime import informer as informers
from flaggerpy.settings import Settings
from tests.receivers import ChatReceiver

pytestmark = pytest.mark.integration

CRDS = Path(__file__).resolve().parents[2] / "charts" / "flaggerpy" / "crds"
TOKEN = "xoxb-integration-sEcReT"


@pytest.fixture(scope="module")
def flagger_crds(cluster: LocalCluster) -> None:
    """Our CRDs, server-side applied and Established (replacing any earlier version)."""
    cluster.install_crds(sorted(CRDS.glob("*.yaml")))


@pytest.fixture
async def client(api_client: ApiClient) -> kube.KubeClient:
    return kube.KubeClient(api_client, user_agent=f"flaggerpy-test/{secrets.token_hex(4)}")


@pytest.fixture
async def receiver_url(aiohttp_raw_server: Any) -> Callable[[ChatReceiver], Awaitable[str]]:
    async def start(receiver: ChatReceiver) -> str:
        server = await aiohttp_raw_server(receiver.handle)
        return str(server.make_url("")).rstrip("/")

    return start


def secret(namespace: str, name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def alert_provider(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "flagger.app/v1beta1", "kind": "AlertProvider",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def canary(namespace: str, alerts: list[dict[str, Any]]) -> Canary:
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": namespace},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "analysis": {"interval": "1m", "threshold": 5, "stepWeight": 10,
                              "maxWeight": 50, "alerts": alerts}},
    })


@contextlib.asynccontextmanager
async def running(informer: informers.Informer) -> AsyncIterator[informers.Informer]:
    task = asyncio.create_task(informer.start())
    try:
        async with asyncio.timeout(30):
            await informer.wait_synced()
        yield informer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.usefixtures("flagger_crds")
async def test_secret_ref_is_resolved_through_the_kube_client(
        client: kube.KubeClient, namespace: str,
        receiver_url: Callable[[ChatReceiver], Awaitable[str]],
) -> None:
    slack = ChatReceiver("slack", api=True)
    address = await receiver_url(slack) + "/api/chat.postMessage"
    await client.create(kube.SECRETS, secret(namespace, "slack-url", address=address + "\n",
                                             token=TOKEN))
    await client.create(kube.ALERT_PROVIDERS, alert_provider(
        namespace, "on-call", type="slack", channel="on-call-alerts", username="flagger",
        secretRef={"name": "slack-url"}))

    registry = CollectorRegistry()
    async with Alerter(settings=Settings.load(), client=client, registry=registry) as alerter:
        with capture_logs() as logs:
            await alerter.alert(
                canary(namespace, [{"name": "on-call", "severity": "error",
                                    "providerRef": {"name": "on-call"}}]),
                alerting.failed_checks_threshold_reached(5, last_failure="success rate 90% < 99%"))
            assert await alerter.flush(within=30)

    [request] = slack.requests
    assert request.problem is None
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.body["channel"] == "on-call-alerts"
    attachment = request.body["attachments"][0]
    assert attachment["author_name"] == f"podinfo.{namespace}"
    assert attachment["text"] == "Failed checks threshold reached 5"
    assert attachment["color"] == "danger"
    assert [e for e in logs if e["log_level"] == "error"] == []
    assert TOKEN not in repr(logs)
    assert registry.get_sample_value("flaggerpy_notification_failures_total",
                                     {"provider": "slack"}) == 0


@pytest.mark.usefixtures("flagger_crds")
async def test_a_provider_in_another_namespace_is_served_from_informer_caches(
        client: kube.KubeClient, namespace: str, cluster: LocalCluster,
        receiver_url: Callable[[ChatReceiver], Awaitable[str]],
) -> None:
    teams = ChatReceiver("msteams")
    address = await receiver_url(teams) + "/webhookb2/abc/IncomingWebhook/def"
    shared = f"{namespace}-shared"
    await cluster.akubectl("create", "namespace", shared)
    try:
        await client.create(kube.SECRETS, secret(shared, "teams-url", address=address))
        await client.create(kube.ALERT_PROVIDERS, alert_provider(
            shared, "dev-msteams", type="msteams", secretRef={"name": "teams-url"}))
        providers = informers.Informer(client, kube.ALERT_PROVIDERS, namespace=shared)
        secret_cache = informers.Informer(client, kube.SECRETS, namespace=shared)
        async with running(providers), running(secret_cache), Alerter(
                settings=Settings.load(), providers=providers.get,
                secrets=secret_cache.get) as alerter:
            await alerter.alert(
                canary(namespace, [{"name": "dev", "severity": "",
                                    "providerRef": {"name": "dev-msteams", "namespace": shared}}]),
                alerting.new_revision())
            assert await alerter.flush(within=30)
    finally:
        await cluster.akubectl("delete", "namespace", shared, "--wait=false", check=False)

    [request] = teams.requests
    assert request.problem is None
    assert request.body["summary"] == f"podinfo.{namespace}"
    facts = {fact["name"]: fact["value"] for fact in request.body["sections"][0]["facts"]}
    assert facts["Target"] == f"Deployment/podinfo.{namespace}"
    assert facts["Traffic routing"] == "Weight step: 10 max: 50"


@pytest.mark.usefixtures("flagger_crds")
async def test_a_secret_without_address_is_reported_with_the_canary(
        client: kube.KubeClient, namespace: str,
) -> None:
    await client.create(kube.SECRETS, secret(namespace, "no-address", token=TOKEN))
    await client.create(kube.ALERT_PROVIDERS, alert_provider(
        namespace, "broken", type="discord", secretRef={"name": "no-address"}))
    registry = CollectorRegistry()
    async with Alerter(settings=Settings.load(), client=client, registry=registry) as alerter:
        with capture_logs() as logs:
            broken = canary(namespace, [{"name": "b", "providerRef": {"name": "broken"}}])
            await alerter.alert(broken, alerting.new_revision())
            assert await alerter.flush(within=30)
    [entry] = [e for e in logs if e["log_level"] == "error"]
    assert entry["event"] == "alert_provider_invalid"
    assert entry["canary"] == f"podinfo.{namespace}"
    assert entry["error"] == f"Secret {namespace}/no-address has no address key"
    assert registry.get_sample_value("flaggerpy_notification_failures_total",
                                     {"provider": "discord"}) == 1
