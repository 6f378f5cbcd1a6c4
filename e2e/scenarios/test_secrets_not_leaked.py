"""Secrets stay secret through a whole release (design rule 6; issue 20, bad input).

One Istio canary goes from a new revision to Succeeded under the simulator's traffic, with every
``secretRef`` the CRDs offer in use, each Secret holding distinctive random values:

- two MetricTemplates (``type: prometheus``) whose ``spec.provider.secretRef`` holds a bearer
  ``token`` for one and ``username``/``password`` for the other. They point at a
  :class:`~e2e.guards.GuardedPrometheus` in front of the real Prometheus, which forwards only
  queries carrying those credentials: the analysis passes only if they were sent;
- an AlertProvider (``type: slack``) whose ``spec.secretRef`` holds the ``address`` (the
  receiver's path is the secret, as a Slack webhook's is), the ``token`` (sent as a bearer
  token) and the ``proxy`` (a URL with credentials). The address names a host that only the
  :class:`~e2e.guards.ForwardProxy` reaches, and that only with the proxy's credentials: the
  notifications arrive only if the address, proxy and its credentials were all used;
- and, though it is no ``secretRef``, a Secret the workload reads (``env.valueFrom``), which the
  controller tracks and copies for the primary.

Once the canary succeeded, every place the controller reports to is searched for every secret
value, raw, base64-encoded (as a Secret's ``data``, a Basic header or a Proxy-Authorization
header carry them) and URL-encoded: the controller's whole log at debug level, all Events of the
namespace, the Canary, MetricTemplates and AlertProvider objects with their status, the
``/metrics`` page and the body of every notification. The guards' records show the credentials
were sent, so their absence elsewhere is not an accident of a run that never used them. (A debug
line that logs the Slack token as plain text, planted by hand, makes the test fail.)
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

import pytest

from e2e.guards import ForwardProxy, GuardedPrometheus, basic_authorization
from e2e.receiver import WebhookReceiver
from e2e.scenario import Scenario, container_image, deployment
from e2e.scenarios.mesh import istio_canary
from flaggerpy.testing import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds"),
              pytest.mark.timeout(420)]


def _secret_value(prefix: str) -> str:
    """A value no other text contains; ``/`` and ``+`` make its URL encoding differ."""
    return f"{prefix}/{secrets.token_hex(12)}+{secrets.token_hex(4)}"


PROM_TOKEN = _secret_value("prom-token")
PROM_USERNAME = "prom-user-" + secrets.token_hex(6)
PROM_PASSWORD = _secret_value("prom-pw")
SLACK_TOKEN = "xoxb-" + secrets.token_hex(16)
HOOK_PATH = f"/services/T{secrets.token_hex(5).upper()}/B{secrets.token_hex(5).upper()}/" \
            + secrets.token_hex(12)
"""The secret part of the alert address: a Slack incoming webhook's path is its credential."""
ALERT_HOST = "alerts.invalid"
PROXY_USERNAME = "proxy-user-" + secrets.token_hex(6)
PROXY_PASSWORD = _secret_value("proxy-pw")
APP_KEY = _secret_value("app-key")

SECRET_VALUES = {
    "Prometheus token": PROM_TOKEN,
    "Prometheus username": PROM_USERNAME,
    "Prometheus password": PROM_PASSWORD,
    "Slack token": SLACK_TOKEN,
    "alert address path": HOOK_PATH,
    "proxy username": PROXY_USERNAME,
    "proxy password": PROXY_PASSWORD,
    "tracked Secret value": APP_KEY,
}


def forbidden() -> dict[str, str]:
    """Every form a secret could take in a report: raw, base64 (alone, and inside the header
    values and URLs that carry it) and URL-encoded."""
    found: dict[str, str] = {}
    for name, value in SECRET_VALUES.items():
        found[name] = value
        found[f"{name}, base64"] = base64.b64encode(value.encode()).decode()
        found[f"{name}, URL-encoded"] = quote(value, safe="")
    found["alert address, base64"] = base64.b64encode(alert_address().encode()).decode()
    found["Prometheus basic credentials"] = basic_authorization(
        PROM_USERNAME, PROM_PASSWORD).removeprefix("Basic ")
    found["proxy basic credentials"] = basic_authorization(
        PROXY_USERNAME, PROXY_PASSWORD).removeprefix("Basic ")
    # The random core of each value, which survives any escaping that keeps letters and digits.
    for name, value in SECRET_VALUES.items():
        core = max(value.replace("+", "/").split("/"), key=len)
        found[f"{name}, core"] = core
    return found


def alert_address() -> str:
    return f"http://{ALERT_HOST}{HOOK_PATH}"


def leaks(reported: Mapping[str, str]) -> list[str]:
    """``"<secret form> in <place>"`` for every secret form found in a reported text."""
    return [f"{what} in {where}" for where, text in reported.items()
            for what, value in forbidden().items() if value in text]


def secret(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


SUCCESS_RATE_QUERY = (
    'sum(rate(istio_requests_total{reporter="destination",'
    'destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}",'
    'response_code!~"5.*"}[{{ interval }}])) / sum(rate(istio_requests_total{'
    'reporter="destination",destination_workload_namespace="{{ namespace }}",'
    'destination_workload=~"{{ target }}"}[{{ interval }}])) * 100'
)
LATENCY_QUERY = (
    "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{"
    'reporter="destination",destination_workload_namespace="{{ namespace }}",'
    'destination_workload=~"{{ target }}"}[{{ interval }}])) by (le))'
)


def template(name: str, *, address: str, secret_name: str, query: str) -> dict[str, Any]:
    return {"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": name},
            "spec": {"provider": {"type": "prometheus", "address": address,
                                  "secretRef": {"name": secret_name}},
                     "query": query}}


def alert_provider() -> dict[str, Any]:
    """Slack, everything from the Secret: no address, proxy or token in the manifest."""
    return {"apiVersion": "flagger.app/v1beta1", "kind": "AlertProvider",
            "metadata": {"name": "on-call"},
            "spec": {"type": "slack", "channel": "releases", "username": "flagger",
                     "secretRef": {"name": "on-call-slack"}}}


def app_deployment(image: str) -> dict[str, Any]:
    """The workload, reading a key of a Secret into its environment (a tracked config)."""
    manifest = deployment("backend", image=image)
    manifest["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "backend-env",
                                                           "key": "apiKey"}}}]
    return manifest


@pytest.fixture
async def guarded_prometheus(mesh: Scenario) -> AsyncIterator[GuardedPrometheus]:
    accept = frozenset({f"Bearer {PROM_TOKEN}", basic_authorization(PROM_USERNAME, PROM_PASSWORD)})
    async with GuardedPrometheus(upstream=mesh.prometheus_url, accept=accept) as guard:
        yield guard


@pytest.fixture
async def alert_proxy(receiver: WebhookReceiver) -> AsyncIterator[ForwardProxy]:
    async with ForwardProxy(username=PROXY_USERNAME, password=PROXY_PASSWORD,
                            routes={ALERT_HOST: receiver.url("")}) as proxy:
        yield proxy


async def test_no_secret_reaches_logs_events_status_metrics_or_notifications(
    mesh: Scenario, receiver: WebhookReceiver, guarded_prometheus: GuardedPrometheus,
    alert_proxy: ForwardProxy,
) -> None:
    controller = await mesh.start_controller("-mesh-provider=istio")
    metrics = [
        {"name": "success-rate", "templateRef": {"name": "success-rate"},
         "thresholdRange": {"min": 90}, "interval": "30s"},
        {"name": "latency", "templateRef": {"name": "latency"},
         "thresholdRange": {"max": 500}, "interval": "30s"},
    ]
    alerts = [{"name": "on-call", "severity": "info", "providerRef": {"name": "on-call"}}]
    await mesh.apply(
        secret("prom-token", token=PROM_TOKEN),
        secret("prom-basic", username=PROM_USERNAME, password=PROM_PASSWORD),
        secret("on-call-slack", address=alert_address(), token=SLACK_TOKEN,
               proxy=alert_proxy.proxy_url()),
        secret("backend-env", apiKey=APP_KEY),
        template("success-rate", address=guarded_prometheus.url, secret_name="prom-basic",
                 query=SUCCESS_RATE_QUERY),
        template("latency", address=guarded_prometheus.url, secret_name="prom-token",
                 query=LATENCY_QUERY),
        alert_provider(),
        app_deployment("podinfo:6.0.0"),
        istio_canary("backend", maxWeight=50, stepWeight=25, metrics=metrics, alerts=alerts),
    )
    await mesh.wait_phase("backend", "Initialized", within=90)
    await mesh.kubectl("set", "image", "deployment/backend", "backend=podinfo:6.0.1")
    await mesh.wait_phase("backend", "Succeeded", within=180)
    assert container_image(await mesh.get("deployment", "backend-primary")) == "podinfo:6.0.1"
    assert await mesh.get("secret", "backend-env-primary") is not None  # the tracked copy

    # The credentials were sent: the queries of both templates passed the guard with them, ...
    assert guarded_prometheus.authorizations() == {
        f"Bearer {PROM_TOKEN}", basic_authorization(PROM_USERNAME, PROM_PASSWORD)}
    # ... and the notifications reached the secret path of the secret host through the proxy,
    # with its credentials and the Slack token.
    await _until_promotion_notified(receiver)
    posts = [call for call in receiver.calls if call.path == HOOK_PATH]
    assert posts, receiver.calls
    assert {call.headers.get("authorization") for call in posts} == {f"Bearer {SLACK_TOKEN}"}
    assert all(seen.url.startswith(alert_address()) for seen in alert_proxy.allowed())
    assert len(alert_proxy.allowed()) == len(posts)
    texts = [attachment["text"] for call in posts for attachment in call.body["attachments"]]
    assert "New revision detected, progressing canary analysis." in texts, texts

    events = await mesh.kubectl("get", "events", "-o", "json")
    reported = {
        "controller log": controller.output(),
        "Events": events,
        "Canaries": await mesh.kubectl("get", "canaries", "-o", "json"),
        "MetricTemplates": await mesh.kubectl("get", "metrictemplates", "-o", "json"),
        "AlertProviders": await mesh.kubectl("get", "alertproviders", "-o", "json"),
        "/metrics": controller.get("/metrics")[1],
        "notification bodies": json.dumps([call.body for call in posts]),
    }
    assert all(reported.values()), [where for where, text in reported.items() if not text]
    assert leaks(reported) == []
    print(f"searched {len(reported)} places for {len(forbidden())} secret forms; "
          f"{len(guarded_prometheus.allowed())} authorized queries, {len(posts)} notifications")
    # The search finds the secrets where they belong: in the Secrets themselves.
    stored = await mesh.kubectl("get", "secrets", "-o", "json")
    assert {"Prometheus token, base64", "alert address, base64", "Slack token, base64",
            "tracked Secret value, base64"} <= {what for what, value in forbidden().items()
                                                 if value in stored}


async def _until_promotion_notified(receiver: WebhookReceiver, *, within: float = 30) -> None:
    """Alerts are delivered in the background: wait for the promotion's, the last one."""

    async def promoted() -> bool:
        return any("promotion finished" in attachment.get("text", "")
                   for call in receiver.calls if call.path == HOOK_PATH
                   for attachment in call.body.get("attachments", []))

    await eventually(promoted, within=within, what="the promotion's notification")
