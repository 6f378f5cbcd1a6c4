"""The Alerter end to end: settings and AlertProviders in, HTTP posts to local receivers out.

Receivers (:mod:`tests.receivers`) check each vendor's payload; these tests
check who gets which message (global notifier vs ``analysis.alerts``,
severity thresholds, Secrets) and that failures are logged with the
canary's name, counted, never raised and never waited for, and that no
webhook URL or token reaches a log line.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from flaggerpy.canary import alerting
from flaggerpy.canary.alert_templates import CheckInfo
from flaggerpy.canary.alerting import Alerter, notification_metrics
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.models import Canary
from flaggerpy.models.status import CanaryStatus
from flaggerpy.notifying import Field, Severity
from flaggerpy.plugins import Registry
from flaggerpy.settings import Settings
from flaggerpy.telemetry import Recorder
from tests.receivers import ChatReceiver

Serve = Callable[[ChatReceiver], Awaitable[str]]

SECRET_PATH = "/services/T0SECRET/B0SECRET/XyZsEcReTtOkEn"
TOKEN = "xoxb-0000-sEcReT"
LEGACY_ENV = ("SLACK_URL", "SLACK_TOKEN", "SLACK_PROXY_URL", "MSTEAMS_URL", "MSTEAMS_PROXY_URL",
              "EVENT_WEBHOOK_URL")


@pytest.fixture(autouse=True)
def _no_notifier_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flagger's notifier variables win over flags; a developer's shell must not leak in."""
    for name in LEGACY_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def serve(aiohttp_raw_server: Any) -> Serve:
    async def start(receiver: ChatReceiver) -> str:
        server = await aiohttp_raw_server(receiver.handle)
        return str(server.make_url("")).rstrip("/")

    return start


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def alerters(registry: CollectorRegistry) -> AsyncIterator[Callable[..., Alerter]]:
    made: list[Alerter] = []

    def make(settings: Settings | None = None, **options: Any) -> Alerter:
        options.setdefault("registry", registry)
        alerter = Alerter(settings=settings or Settings.load(), **options)
        made.append(alerter)
        return alerter

    yield make
    for alerter in made:
        await alerter.aclose(grace=0)


class Objects:
    """A dict-backed lookup, as an informer cache's ``get`` is."""

    def __init__(self, *objects: Mapping[str, Any]) -> None:
        self.objects = {ObjectKey(o["metadata"]["namespace"], o["metadata"]["name"]): o
                        for o in objects}
        self.asked: list[ObjectKey] = []

    def get(self, key: ObjectKey) -> Mapping[str, Any] | None:
        self.asked.append(key)
        return self.objects.get(key)


def make_canary(
        *, alerts: list[dict[str, Any]] | None = None, name: str = "podinfo",
        namespace: str = "test", **analysis: Any,
) -> Canary:
    spec_analysis: dict[str, Any] = {"interval": "1m", "threshold": 5, "maxWeight": 50,
                                     "stepWeight": 10, **analysis}
    if alerts is not None:
        spec_analysis["alerts"] = alerts
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                 "analysis": spec_analysis},
    })


def alert(name: str, severity: str | None = None, *, provider: str | None = None,
          namespace: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": provider or name}
    if namespace:
        ref["namespace"] = namespace
    entry: dict[str, Any] = {"name": name, "providerRef": ref}
    if severity is not None:
        entry["severity"] = severity
    return entry


def provider(name: str, *, namespace: str = "test", **spec: Any) -> dict[str, Any]:
    spec.setdefault("type", "slack")
    return {"apiVersion": "flagger.app/v1beta1", "kind": "AlertProvider",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def secret(name: str, *, namespace: str = "test", **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def failures(registry: CollectorRegistry, provider: str) -> float:
    value = registry.get_sample_value("flaggerpy_notification_failures_total",
                                      {"provider": provider})
    assert value is not None, f"no series for provider={provider}"
    return value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def texts(receiver: ChatReceiver) -> list[str]:
    return [body["attachments"][0]["text"] for body in receiver.bodies]


# --- the global notifier ---------------------------------------------------------------------


async def test_global_slack_gets_every_message_of_a_canary_without_alerts(
        serve: Serve, alerters: Callable[..., Alerter],
) -> None:
    slack = ChatReceiver("slack")
    url = await serve(slack) + SECRET_PATH
    alerter = alerters(Settings.load({"slack-url": url, "slack-channel": "deploys",
                                      "slack-user": "flagger-bot", "cluster-name": "prod-eu"}))
    assert alerter.global_provider == "slack"

    await alerter.alert(make_canary(), alerting.new_revision())
    await alerter.alert(make_canary(), alerting.failed_checks_threshold_reached(
        5, last_failure="success rate 95.20% < 99%"))
    assert await alerter.flush(within=5)

    first, second = slack.bodies
    assert [r.problem for r in slack.requests] == [None, None]
    assert first["channel"] == "deploys"
    assert first["username"] == "flagger-bot"
    attachment = first["attachments"][0]
    assert attachment["author_name"] == "podinfo.test"
    assert attachment["color"] == "good"
    assert attachment["text"] == "New revision detected, progressing canary analysis."
    assert [(f["title"], f["value"]) for f in attachment["fields"]] == [
        ("Cluster", "prod-eu"),
        ("Target", "Deployment/podinfo.test"),
        ("Failed checks threshold", "5"),
        ("Progress deadline", "600s"),
        ("Traffic routing", "Weight step: 10 max: 50"),
    ]
    failed = second["attachments"][0]
    assert failed["color"] == "danger"
    assert failed["text"] == "Failed checks threshold reached 5"
    assert [(f["title"], f["value"]) for f in failed["fields"]] == [
        ("Cluster", "prod-eu"), ("Last failed check", "success rate 95.20% < 99%")]


async def test_global_slack_token_is_sent_as_bearer(
        serve: Serve, alerters: Callable[..., Alerter],
) -> None:
    api = ChatReceiver("slack", api=True)
    url = await serve(api) + "/api/chat.postMessage"
    alerter = alerters(Settings.load({"slack-url": url, "slack-token": TOKEN,
                                      "slack-channel": "general"}))
    await alerter.alert(make_canary(), alerting.promotion_completed())
    assert await alerter.flush(within=5)
    [request] = api.requests
    assert request.problem is None
    assert request.headers["authorization"] == f"Bearer {TOKEN}"


async def test_msteams_url_replaces_slack(serve: Serve, alerters: Callable[..., Alerter]) -> None:
    slack, teams = ChatReceiver("slack"), ChatReceiver("msteams")
    slack_url, teams_url = await serve(slack), await serve(teams)
    alerter = alerters(Settings.load({"slack-url": slack_url + SECRET_PATH,
                                      "slack-channel": "general",
                                      "msteams-url": teams_url + "/webhookb2/x"}))
    assert alerter.global_provider == "msteams"
    await alerter.alert(make_canary(), "Canary is waiting for approval.", severity=Severity.WARN)
    assert await alerter.flush(within=5)
    assert slack.requests == []
    [request] = teams.requests
    assert request.problem is None
    assert request.body["sections"][0]["activityTitle"] == "Canary is waiting for approval."


async def test_global_slack_without_a_channel_stays_off_and_says_why(
        serve: Serve, alerters: Callable[..., Alerter],
) -> None:
    slack = ChatReceiver("slack")
    url = await serve(slack) + SECRET_PATH
    with capture_logs() as logs:
        alerter = alerters(Settings.load({"slack-url": url}))
        await alerter.alert(make_canary(), alerting.new_revision())
        assert await alerter.flush(within=5)
    assert alerter.global_provider is None
    assert slack.requests == []
    [disabled] = [entry for entry in logs if entry["event"] == "global_notifier_disabled"]
    assert disabled["log_level"] == "error"
    assert disabled["error"] == "empty Slack channel"
    assert "XyZsEcReTtOkEn" not in repr(logs)


async def test_nothing_configured_sends_nothing(alerters: Callable[..., Alerter]) -> None:
    alerter = alerters()
    assert alerter.global_provider is None
    await alerter.alert(make_canary(), alerting.new_revision())
    assert await alerter.flush(within=1)


# --- per-canary alerts -----------------------------------------------------------------------


async def test_canary_alerts_replace_the_global_notifier(
        serve: Serve, alerters: Callable[..., Alerter],
) -> None:
    global_slack, own = ChatReceiver("slack"), ChatReceiver("discord")
    global_url, own_url = await serve(global_slack), await serve(own)
    providers = Objects(
        provider("qa-discord", type="discord", address=own_url + "/api/webhooks/1/t"))
    alerter = alerters(Settings.load({"slack-url": global_url, "slack-channel": "general"}),
                       providers=providers.get)
    await alerter.alert(make_canary(alerts=[alert("qa Discord", provider="qa-discord")]),
                        alerting.new_revision())
    assert await alerter.flush(within=5)
    assert global_slack.requests == []
    [request] = own.requests
    assert request.problem is None
    assert request.path == "/api/webhooks/1/t/slack"
    assert request.body["username"] == "flagger"  # the AlertProvider defaults
    assert request.body["channel"] == "general"


@pytest.mark.parametrize(("message_severity", "expected"), [
    pytest.param(Severity.INFO, {"info", "empty", "missing"}, id="info"),
    pytest.param(Severity.WARN, {"info", "warn", "empty", "missing"}, id="warn"),
    pytest.param(Severity.ERROR, {"info", "warn", "error", "empty", "missing"}, id="error"),
])
async def test_each_alert_gets_the_severities_its_threshold_admits(
        serve: Serve, alerters: Callable[..., Alerter], message_severity: Severity,
        expected: set[str],
) -> None:
    slack = ChatReceiver("slack")
    url = await serve(slack)
    thresholds = {"info": "info", "warn": "warn", "error": "error", "empty": "", "missing": None}
    providers = Objects(*(provider(name, channel=name, address=url + "/" + name)
                          for name in thresholds))
    canary = make_canary(alerts=[alert(name, severity) for name, severity in thresholds.items()])
    alerter = alerters(providers=providers.get)
    await alerter.alert(canary, "text", severity=message_severity)
    assert await alerter.flush(within=5)
    # "" and a missing severity mean info (Flagger's docs; its code sends them nothing)
    assert {body["channel"] for body in slack.bodies} == expected


async def test_secret_address_token_and_proxy_win_over_the_spec(
        serve: Serve, alerters: Callable[..., Alerter],
) -> None:
    decoy, real, proxy = ChatReceiver("slack"), ChatReceiver("slack", api=True), ChatReceiver(
        "slack", api=True)
    decoy_url, _, proxy_url = await serve(decoy), await serve(real), await serve(proxy)
    target = "http://slack.api.invalid/api/chat.postMessage"
    providers = Objects(provider("on-call", namespace="flagger", channel="on-call",
                                 address=decoy_url + "/decoy", secretRef={"name": "slack-url"}))
    secrets = Objects(secret("slack-url", namespace="flagger", address=target + "\n",
                             token=TOKEN, proxy=proxy_url))
    alerter = alerters(providers=providers.get, secrets=secrets.get)
    canary = make_canary(alerts=[alert("on-call Slack", "error", provider="on-call",
                                       namespace="flagger")])
    with capture_logs() as logs:
        await alerter.alert(canary, alerting.promotion_failed("timeout"))
        assert await alerter.flush(within=5)

    assert providers.asked == [ObjectKey("flagger", "on-call")]
    assert secrets.asked == [ObjectKey("flagger", "slack-url")]  # the provider's namespace
    assert decoy.requests == []
    [request] = proxy.requests
    assert request.via_proxy
    assert request.path == "/api/chat.postMessage"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.problem is None
    assert TOKEN not in repr(logs)


async def test_async_lookups_are_awaited(serve: Serve, alerters: Callable[..., Alerter]) -> None:
    gchat = ChatReceiver("gchat")
    url = await serve(gchat)
    objects = Objects(provider("chat", type="gchat", address=url + "/v1/spaces/A/messages"))

    async def lookup(key: ObjectKey) -> Mapping[str, Any] | None:
        await asyncio.sleep(0)
        return objects.get(key)

    alerter = alerters(providers=lookup)
    await alerter.alert(make_canary(alerts=[alert("chat")]), alerting.analysis_skipped())
    assert await alerter.flush(within=5)
    [request] = gchat.requests
    assert request.problem is None


# --- failures: logged with the canary, counted, never raised --------------------------------


@pytest.mark.parametrize(("objects", "event", "label"), [
    pytest.param([], "alert_provider_not_found", "unknown", id="no-provider"),
    pytest.param([provider("p", secretRef={"name": "s"})], "alert_provider_secret_not_found",
                 "slack", id="no-secret"),
    pytest.param([provider("p", secretRef={"name": "s"}), secret("s", token=TOKEN)],
                 "alert_provider_invalid", "slack", id="secret-without-address"),
    pytest.param([provider("p", type="msteams")], "alert_provider_invalid", "msteams",
                 id="no-address"),
    pytest.param([provider("p", type="rocket", address="not a url")], "alert_provider_invalid",
                 "rocket", id="bad-address"),
    pytest.param([provider("p", type="carrier-pigeon", address="https://x.example")],
                 "alert_provider_invalid", "carrier-pigeon", id="uninstalled-type"),
])
async def test_an_unusable_provider_is_logged_and_counted(
        alerters: Callable[..., Alerter], registry: CollectorRegistry,
        objects: list[dict[str, Any]], event: str, label: str,
) -> None:
    lookup = Objects(*objects)
    alerter = alerters(providers=lookup.get, secrets=lookup.get)
    with capture_logs() as logs:
        await alerter.alert(make_canary(alerts=[alert("pager", provider="p")]),
                            alerting.manual_rollback())
        assert await alerter.flush(within=5)
    [entry] = [e for e in logs if e["event"] == event]
    assert entry["log_level"] == "error"
    assert entry["canary"] == "podinfo.test"
    assert entry["alert"] == "pager"
    assert entry["provider_ref"] == "test/p"
    assert failures(registry, label) == 1
    assert TOKEN not in repr(logs)


async def test_a_type_without_a_plugin_is_logged_and_counted(
        alerters: Callable[..., Alerter], registry: CollectorRegistry,
) -> None:
    lookup = Objects(provider("p", address="https://hooks.slack.com" + SECRET_PATH))
    alerter = alerters(providers=lookup.get, notifiers=Registry("flaggerpy.tests.no_notifiers"))
    with capture_logs() as logs:
        await alerter.alert(make_canary(alerts=[alert("p")]), alerting.new_revision())
        assert await alerter.flush(within=5)
    [entry] = [e for e in logs if e["event"] == "alert_provider_invalid"]
    assert entry["error"].endswith(
        "unknown flaggerpy.tests.no_notifiers provider 'slack'; installed: none")
    assert failures(registry, "slack") == 1


async def test_a_failing_receiver_is_retried_then_logged_and_counted(
        serve: Serve, alerters: Callable[..., Alerter], registry: CollectorRegistry,
) -> None:
    slack = ChatReceiver("slack", api=True).script((500, "upstream connect error"))
    url = await serve(slack) + SECRET_PATH
    lookup = Objects(provider("p", secretRef={"name": "s"}), secret("s", address=url, token=TOKEN))
    alerter = alerters(providers=lookup.get, secrets=lookup.get)
    with capture_logs() as logs:
        await alerter.alert(make_canary(alerts=[alert("pager", provider="p")]),
                            alerting.failed_checks_threshold_reached(5))
        assert await alerter.flush(within=10)
    assert len(slack.requests) == 3  # the notifier's own retries; nothing above it retries
    [entry] = [e for e in logs if e["event"] == "alert_failed"]
    assert entry["log_level"] == "error"
    assert entry["canary"] == "podinfo.test"
    assert entry["provider"] == "slack"
    assert entry["provider_ref"] == "test/p"
    assert entry["endpoint"] == url.split("/services")[0] + "/…"
    assert "HTTP 500 upstream connect error" in entry["error"]
    assert failures(registry, "slack") == 1
    assert failures(registry, "msteams") == 0
    rendered = repr(logs)
    assert "XyZsEcReTtOkEn" not in rendered
    assert "T0SECRET" not in rendered
    assert TOKEN not in rendered


@pytest.mark.parametrize("hangs", [pytest.param(True, id="hangs"),
                                   pytest.param(False, id="refuses")])
async def test_an_unreachable_receiver_never_holds_the_caller(
        serve: Serve, alerters: Callable[..., Alerter], registry: CollectorRegistry,
        hangs: bool,
) -> None:
    if hangs:
        url = await serve(ChatReceiver("slack", delay=60)) + SECRET_PATH
    else:
        url = f"http://127.0.0.1:{free_port()}{SECRET_PATH}"
    alerter = alerters(Settings.load({"slack-url": url, "slack-channel": "general"}),
                       post_timeout=0.2, deadline=1.0)
    await alerter.alert(make_canary(), alerting.new_revision())
    # The caller is back before the delivery even started: it is still pending.
    assert not await alerter.flush(within=0)
    # And the attempt is bounded by the deadline, not by the receiver's 60 s.
    assert await alerter.flush(within=15)
    assert failures(registry, "slack") == 1


async def test_alerts_of_one_canary_arrive_in_order(
        serve: Serve, alerters: Callable[..., Alerter],
) -> None:
    slack = ChatReceiver("slack", delay=0.02)
    url = await serve(slack)
    alerter = alerters(Settings.load({"slack-url": url, "slack-channel": "general"}))
    for n in range(6):
        await alerter.alert(make_canary(), f"step {n}")
    assert await alerter.flush(within=5)
    assert texts(slack) == [f"step {n}" for n in range(6)]


async def test_alerts_beyond_the_bound_are_dropped_and_counted(
        serve: Serve, alerters: Callable[..., Alerter], registry: CollectorRegistry,
) -> None:
    slack = ChatReceiver("slack", delay=0.2)
    url = await serve(slack)
    alerter = alerters(Settings.load({"slack-url": url, "slack-channel": "general"}),
                       max_pending=1)
    with capture_logs() as logs:
        await alerter.alert(make_canary(name="a"), "first")
        await alerter.alert(make_canary(name="b"), "second")
        assert await alerter.flush(within=5)
    assert texts(slack) == ["first"]
    [dropped] = [e for e in logs if e["event"] == "alert_dropped"]
    assert dropped["canary"] == "b.test"
    assert failures(registry, "slack") == 1


async def test_cross_namespace_providers_can_be_forbidden(
        serve: Serve, alerters: Callable[..., Alerter], registry: CollectorRegistry,
) -> None:
    slack = ChatReceiver("slack")
    url = await serve(slack)
    lookup = Objects(provider("p", namespace="flagger", address=url))
    alerter = alerters(Settings.load({"no-cross-namespace-refs": "true"}), providers=lookup.get)
    with capture_logs() as logs:
        await alerter.alert(make_canary(alerts=[alert("p", namespace="flagger")]), "x")
        assert await alerter.flush(within=5)
    assert slack.requests == []
    assert lookup.asked == []
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["alert_provider_forbidden"]
    assert failures(registry, "unknown") == 1


async def test_without_lookups_or_client_the_alert_is_reported(
        alerters: Callable[..., Alerter], registry: CollectorRegistry,
) -> None:
    alerter = alerters()
    with capture_logs() as logs:
        await alerter.alert(make_canary(alerts=[alert("p")]), "x")
        assert await alerter.flush(within=5)
    assert [e["event"] for e in logs] == ["alert_provider_unreadable"]
    assert failures(registry, "unknown") == 1


async def test_a_lookup_that_raises_is_reported_not_raised(
        alerters: Callable[..., Alerter], registry: CollectorRegistry,
) -> None:
    def broken(key: ObjectKey) -> Mapping[str, Any] | None:
        raise RuntimeError("cache exploded")

    alerter = alerters(providers=broken)
    with capture_logs() as logs:
        await alerter.alert(make_canary(alerts=[alert("p")]), "x")
        assert await alerter.flush(within=5)
    [entry] = [e for e in logs if e["event"] == "alert_provider_unreadable"]
    assert entry["error"] == "RuntimeError: cache exploded"
    assert failures(registry, "unknown") == 1


async def test_close_gives_up_on_a_hanging_receiver_after_the_grace(
        serve: Serve, registry: CollectorRegistry,
) -> None:
    url = await serve(ChatReceiver("slack", delay=60))
    alerter = Alerter(settings=Settings.load({"slack-url": url, "slack-channel": "general"}),
                      registry=registry)
    await alerter.alert(make_canary(), "x")
    # Waiting out the receiver would take 60 s; giving up after the grace is well inside 15.
    await asyncio.wait_for(alerter.aclose(grace=0.1), timeout=15)


# --- metrics ---------------------------------------------------------------------------------


def test_the_failure_counter_lives_on_the_recorders_registry_from_zero() -> None:
    recorder = Recorder(process_collectors=False)
    metrics = notification_metrics(recorder.registry)
    assert notification_metrics(recorder.registry) is metrics  # registered once
    body, _ = recorder.render()
    for name in ("slack", "msteams", "discord", "rocket", "gchat"):
        assert f'flaggerpy_notification_failures_total{{provider="{name}"}} 0.0' in body.decode()


async def test_extra_fields_follow_the_messages_own(
        serve: Serve, alerters: Callable[..., Alerter],
) -> None:
    teams = ChatReceiver("msteams")
    url = await serve(teams)
    alerter = alerters(Settings.load({"msteams-url": url}))
    await alerter.alert(make_canary(), alerting.failed_checks_threshold_reached(
        2, last_failure="request duration 612ms > 500ms"), fields=[Field("Run", "42")])
    assert await alerter.flush(within=5)
    [body] = teams.bodies
    assert body["themeColor"] == "FF0000"
    assert body["sections"][0]["facts"] == [
        {"name": "Last failed check", "value": "request duration 612ms > 500ms"},
        {"name": "Run", "value": "42"},
    ]


# --- alert templates (flaggerpy.canary.alert_templates), payloads field by field ---------------


ROLLBACK_TEMPLATE = (
    "[{{ cluster }}] {{ name }}.{{ namespace }} rolled back at revision {{ revision }}"
    "{% if check is defined %}: {{ check.name }} {{ check.value }} < {{ check.threshold }}"
    "{% endif %} {{ dashboard_url }}"
)
LAST_FAILURE = "Halt podinfo.test advancement success rate 95.20% < 99%"
TEMPLATED_TEXT = ("[prod-eu] podinfo.test rolled back at revision 5d8f7b9c6: request-success-rate"
                  " 95.2 < 99.0 https://dash.example/test/podinfo")
TEMPLATE_SETTINGS = {"cluster-name": "prod-eu",
                     "dashboard-url": "https://dash.example/{namespace}/{name}"}
HOOK_PATHS = {"slack": SECRET_PATH, "discord": "/api/webhooks/1/t", "rocket": "/hooks/abc/def",
              "msteams": "/webhookb2/abc/IncomingWebhook/def", "gchat": "/v1/spaces/AAA/messages"}


def failed_canary(alerts: list[dict[str, Any]]) -> Canary:
    """A canary whose last counted failure (in its analysisHistory) is the success rate."""
    canary = make_canary(alerts=alerts, metrics=[
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"}])
    return canary.model_copy(update={"status": CanaryStatus.model_validate({
        "phase": "Progressing", "canaryWeight": 20, "failedChecks": 5,
        "lastAppliedSpec": "5d8f7b9c6", "analysisHistory": [
            {"time": "2026-12-01T10:01:00Z", "metric": "request-success-rate",
             "verdict": "Fail", "action": "fail", "value": 95.2, "thresholdMin": 99,
             "message": LAST_FAILURE}]})})


@pytest.mark.parametrize("kind", ["slack", "discord", "rocket", "msteams", "gchat"])
async def test_a_templated_rollback_reaches_each_service_with_the_failing_check(
        serve: Serve, alerters: Callable[..., Alerter], kind: str,
) -> None:
    receiver = ChatReceiver(kind)
    url = await serve(receiver) + HOOK_PATHS[kind]
    providers = Objects(provider("chat", type=kind, address=url, channel="deploys",
                                 templates={"rolledBack": ROLLBACK_TEMPLATE}))
    alerter = alerters(Settings.load(TEMPLATE_SETTINGS), providers=providers.get)
    await alerter.alert(failed_canary([alert("chat")]),
                        alerting.failed_checks_threshold_reached(5, last_failure=LAST_FAILURE))
    assert await alerter.flush(within=5)

    [request] = receiver.requests
    assert request.problem is None
    body = request.body
    facts = [("Cluster", "prod-eu"), ("Last failed check", LAST_FAILURE)]
    if kind in ("slack", "discord", "rocket"):
        assert body["channel"] == "deploys"
        assert body["username"] == "flagger"
        assert body["attachments"] == [{
            "color": "#FF0000" if kind == "rocket" else "danger",
            "author_name": "podinfo.test",
            "text": TEMPLATED_TEXT,
            "mrkdwn_in": ["text"],
            "fields": [{"title": n, "value": v, "short": False} for n, v in facts],
        }]
    elif kind == "msteams":
        assert body["themeColor"] == "FF0000"
        assert body["summary"] == "podinfo.test"
        assert body["sections"] == [{
            "activityTitle": TEMPLATED_TEXT,
            "activitySubtitle": "podinfo.test",
            "facts": [{"name": n, "value": v} for n, v in facts],
        }]
    else:
        grey = "<font color=#848484><strong>{}</strong></font>"
        [card] = body["cards"]
        assert card["header"]["subtitle"] == "podinfo.test"
        assert card["sections"] == [
            {"widgets": [{"textParagraph": {"text": grey.format(TEMPLATED_TEXT)}}]},
            *({"widgets": [{"textParagraph": {"text": f"{n}<br>" + grey.format(v)}}]}
              for n, v in facts),
        ]


async def test_the_canary_alerts_template_wins_and_other_kinds_keep_flaggers_text(
        serve: Serve, alerters: Callable[..., Alerter],
) -> None:
    slack = ChatReceiver("slack")
    url = await serve(slack)
    providers = Objects(provider("chat", address=url, templates={
        "promoted": "provider: {{ name }} promoted", "newRevision": "provider: {{ revision }}"}))
    mine = {**alert("chat"), "templates": {"promoted": "{{ name }} is live in {{ cluster }}"}}
    alerter = alerters(Settings.load(TEMPLATE_SETTINGS), providers=providers.get)
    subject = make_canary(alerts=[mine])
    await alerter.alert(subject, alerting.promotion_completed())
    await alerter.alert(subject, alerting.new_revision("7f6e5d4c3"))
    await alerter.alert(subject, alerting.waiting_for_approval())
    assert await alerter.flush(within=5)
    assert texts(slack) == ["podinfo is live in prod-eu", "provider: 7f6e5d4c3",
                            "Canary is waiting for approval."]


async def test_a_broken_template_sends_the_default_text_and_says_so_on_the_provider(
        serve: Serve, alerters: Callable[..., Alerter],
) -> None:
    slack = ChatReceiver("slack")
    url = await serve(slack)
    providers = Objects(provider("chat", address=url, templates={
        "promoted": "{{ nmae }} promoted", "newRevision": "{% if %}", "rolledback": "x"}))
    reported: list[alerting.Delivery] = []

    async def on_delivery(delivery: alerting.Delivery) -> None:
        reported.append(delivery)

    alerter = alerters(Settings.load(), providers=providers.get, on_delivery=on_delivery)
    with capture_logs() as logs:
        await alerter.alert(make_canary(alerts=[alert("chat")]), alerting.promotion_completed())
        assert await alerter.flush(within=5)

    assert texts(slack) == ["Canary analysis completed successfully, promotion finished."]
    [delivery] = reported
    assert delivery.cause is alerting.DeliveryCause.DELIVERED
    assert delivery.templates is not None
    assert delivery.templates.split("; ") == [
        "newRevision: line 1: Expected an expression, got 'end of statement block'",
        "rolledback: not an event kind (one of initialized, newRevision, waiting, promoted, "
        "rolledBack, promotionFailed, readinessTimeout, step, failedCheck, webhookFailure)",
        "promoted: UndefinedError: 'nmae' is undefined",
    ]
    [failed] = [entry for entry in logs if entry["event"] == "alert_template_failed"]
    assert failed["canary"] == "podinfo.test"
    assert (failed["kind"], failed["template"]) == ("promoted", "provider")


async def test_recurring_kinds_go_only_where_a_template_asks_for_them(
        serve: Serve, alerters: Callable[..., Alerter],
) -> None:
    wants, silent, global_slack = (ChatReceiver("slack") for _ in range(3))
    providers = Objects(
        provider("wants", address=await serve(wants), templates={
            "step": "{{ name }} at {{ weight }}%",
            "webhookFailure": "{{ webhook.name }}: {{ webhook.error }}"}),
        provider("silent", address=await serve(silent)))
    alerter = alerters(Settings.load({"slack-url": await serve(global_slack),
                                      "slack-channel": "general"}), providers=providers.get)
    subject = make_canary(alerts=[alert("wants"), alert("silent")])
    subject = subject.model_copy(update={"status": failed_canary([]).status})
    await alerter.alert(subject, alerting.step_advanced(20))
    await alerter.alert(subject, alerting.webhook_failed(name="smoke", hook_type="pre-rollout",
                                                        error="exit status 1"))
    await alerter.alert(subject, alerting.failed_check(CheckInfo(name="m")))
    await alerter.alert(make_canary(), alerting.step_advanced(20))  # the global notifier's
    assert await alerter.flush(within=5)

    assert texts(wants) == ["podinfo at 20%", "smoke: exit status 1"]
    assert silent.requests == []
    assert global_slack.requests == []
