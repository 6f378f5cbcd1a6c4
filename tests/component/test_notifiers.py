"""The notifier plugins against real local receivers that check each vendor's payload.

Every test posts over HTTP to a :class:`tests.receivers.ChatReceiver` on
127.0.0.1, which refuses (400) any body the service would not accept, so
these tests pin both Flagger's exact payloads and the vendors' contracts.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from flaggerpy import plugins
from flaggerpy.errors import NotifierError
from flaggerpy.notifiers._webhook import WebhookNotifier, endpoint_of
from flaggerpy.notifiers.discord import DiscordNotifier
from flaggerpy.notifiers.gchat import GChatNotifier
from flaggerpy.notifiers.msteams import MSTeamsNotifier
from flaggerpy.notifiers.rocket import RocketNotifier
from flaggerpy.notifiers.slack import SlackNotifier
from flaggerpy.notifying import Field, Message, Notifier, Severity
from tests.receivers import ChatReceiver

Serve = Callable[[ChatReceiver], Awaitable[str]]

SECRET_PATH = "/services/T0SECRET/B0SECRET/XyZsEcReTtOkEn"
FIELDS = (Field("Cluster", "prod-eu"), Field("Target", "Deployment/podinfo.test"))


def message(severity: Severity = Severity.INFO, fields: tuple[Field, ...] = FIELDS) -> Message:
    return Message(workload="podinfo", namespace="test", severity=severity, fields=fields,
                   text="New revision detected, progressing canary analysis.")


@pytest.fixture
async def serve(aiohttp_raw_server: Any) -> Serve:
    """Starts a receiver on 127.0.0.1 and returns its base URL (no trailing slash)."""

    async def start(receiver: ChatReceiver) -> str:
        server = await aiohttp_raw_server(receiver.handle)
        return str(server.make_url("")).rstrip("/")

    return start


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- payloads, field by field -----------------------------------------------------------------


@pytest.mark.parametrize(("severity", "color"), [
    pytest.param(Severity.INFO, "good", id="info"),
    pytest.param(Severity.WARN, "good", id="warn"),
    pytest.param(Severity.ERROR, "danger", id="error"),
])
async def test_slack_sends_flaggers_attachment(
        serve: Serve, severity: Severity, color: str,
) -> None:
    receiver = ChatReceiver("slack")
    url = await serve(receiver) + SECRET_PATH
    async with SlackNotifier(address=url, username="flagger-bot", channel="on-call") as slack:
        await slack.post(message(severity))

    [request] = receiver.requests
    assert request.problem is None
    assert request.path == SECRET_PATH
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    assert request.body == {
        "channel": "on-call",
        "username": "flagger-bot",
        "icon_url": "",
        "icon_emoji": ":rocket:",
        "attachments": [{
            "color": color,
            "author_name": "podinfo.test",
            "text": "New revision detected, progressing canary analysis.",
            "mrkdwn_in": ["text"],
            "fields": [
                {"title": "Cluster", "value": "prod-eu", "short": False},
                {"title": "Target", "value": "Deployment/podinfo.test", "short": False},
            ],
        }],
    }
    assert "text" not in request.body  # omitempty in Flagger's SlackPayload


async def test_slack_with_a_token_uses_the_web_api_with_a_bearer_header(serve: Serve) -> None:
    receiver = ChatReceiver("slack", api=True)
    url = await serve(receiver) + "/api/chat.postMessage"
    async with SlackNotifier(address=url, token="xoxb-secret", channel="general") as slack:
        await slack.post(message())

    [request] = receiver.requests
    assert request.problem is None
    assert request.path == "/api/chat.postMessage"
    assert request.headers["authorization"] == "Bearer xoxb-secret"


async def test_slack_web_api_refusal_inside_a_200_is_a_failure(serve: Serve) -> None:
    receiver = ChatReceiver("slack", api=True).script(
        (200, '{"ok": false, "error": "channel_not_found"}'))
    url = await serve(receiver) + "/api/chat.postMessage"
    async with SlackNotifier(address=url, token="xoxb-secret", channel="nope") as slack:
        with pytest.raises(NotifierError, match="channel_not_found") as caught:
            await slack.post(message())
    assert len(receiver.requests) == 1  # not retried: it was an answer, not an outage
    assert "xoxb-secret" not in str(caught.value)


@pytest.mark.parametrize(("severity", "color"), [
    pytest.param(Severity.INFO, "good", id="info"),
    pytest.param(Severity.ERROR, "danger", id="error"),
])
async def test_discord_posts_the_slack_payload_to_the_slack_endpoint(
        serve: Serve, severity: Severity, color: str,
) -> None:
    receiver = ChatReceiver("discord")
    base = await serve(receiver)
    address = f"{base}/api/webhooks/123/tok-secret?thread_id=9"
    async with DiscordNotifier(address=address, token="ignored") as discord:
        await discord.post(message(severity))

    [request] = receiver.requests
    assert request.problem is None
    assert request.path == "/api/webhooks/123/tok-secret/slack"
    assert request.query == {"thread_id": "9"}
    assert "authorization" not in request.headers  # Flagger sends a token to Slack only
    assert request.body["username"] == "flagger"
    assert request.body["channel"] == "general"
    assert request.body["icon_emoji"] == ":rocket:"
    assert request.body["attachments"][0]["color"] == color
    assert request.body["attachments"][0]["author_name"] == "podinfo.test"


@pytest.mark.parametrize(("address", "posted"), [
    pytest.param("/api/webhooks/1/t", "/api/webhooks/1/t/slack", id="appended"),
    pytest.param("/api/webhooks/1/t/", "/api/webhooks/1/t/slack", id="trailing-slash"),
    pytest.param("/api/webhooks/1/t/slack", "/api/webhooks/1/t/slack", id="kept"),
])
def test_discord_endpoint_gets_slack_once(address: str, posted: str) -> None:
    notifier = DiscordNotifier(address="https://discord.com" + address)
    assert notifier.url == "https://discord.com" + posted


@pytest.mark.parametrize(("severity", "color"), [
    pytest.param(Severity.WARN, "#0076D7", id="warn"),
    pytest.param(Severity.ERROR, "#FF0000", id="error"),
])
async def test_rocket_posts_slack_style_with_its_colours(
        serve: Serve, severity: Severity, color: str,
) -> None:
    receiver = ChatReceiver("rocket")
    url = await serve(receiver) + "/hooks/abc/def-secret"
    async with RocketNotifier(address=url, channel="ops") as rocket:
        await rocket.post(message(severity))

    [request] = receiver.requests
    assert request.problem is None
    assert request.body["channel"] == "ops"
    assert request.body["attachments"][0]["color"] == color
    assert request.body["attachments"][0]["fields"][0] == {
        "title": "Cluster", "value": "prod-eu", "short": False}


@pytest.mark.parametrize(("severity", "color"), [
    pytest.param(Severity.INFO, "0076D7", id="info"),
    pytest.param(Severity.ERROR, "FF0000", id="error"),
])
async def test_msteams_sends_flaggers_message_card(
        serve: Serve, severity: Severity, color: str,
) -> None:
    receiver = ChatReceiver("msteams")
    url = await serve(receiver) + "/webhookb2/abc-secret/IncomingWebhook/def"
    async with MSTeamsNotifier(address=url, channel="ignored", token="ignored") as teams:
        await teams.post(message(severity))

    [request] = receiver.requests
    assert request.problem is None
    assert "authorization" not in request.headers
    assert request.body == {
        "@type": "MessageCard",
        "@context": "http://schema.org/extensions",
        "themeColor": color,
        "summary": "podinfo.test",
        "sections": [{
            "activityTitle": "New revision detected, progressing canary analysis.",
            "activitySubtitle": "podinfo.test",
            "facts": [
                {"name": "Cluster", "value": "prod-eu"},
                {"name": "Target", "value": "Deployment/podinfo.test"},
            ],
        }],
    }


async def test_gchat_sends_flaggers_card(serve: Serve) -> None:
    receiver = ChatReceiver("gchat")
    url = await serve(receiver) + "/v1/spaces/AAA/messages?key=k-secret&token=t-secret"
    async with GChatNotifier(address=url) as gchat:
        await gchat.post(message(Severity.ERROR))

    [request] = receiver.requests
    assert request.problem is None
    assert request.query == {"key": "k-secret", "token": "t-secret"}
    grey = "<font color=#848484><strong>{}</strong></font>"
    assert request.body == {"cards": [{
        "header": {"title": "Flagger", "subtitle": "podinfo.test",
                   "imageUrl": "https://flagger.app/favicon.png"},
        "sections": [
            {"widgets": [{"textParagraph": {"text": grey.format(
                "New revision detected, progressing canary analysis.")}}]},
            {"widgets": [{"textParagraph": {"text": "Cluster<br>" + grey.format("prod-eu")}}]},
            {"widgets": [{"textParagraph": {
                "text": "Target<br>" + grey.format("Deployment/podinfo.test")}}]},
        ],
    }]}


@pytest.mark.parametrize("kind", ["slack", "discord", "rocket", "msteams", "gchat"])
async def test_a_message_without_fields_is_still_valid(serve: Serve, kind: str) -> None:
    receiver = ChatReceiver(kind)
    url = await serve(receiver) + "/hook"
    notifier_class = plugins.notifiers.load(kind)
    notifier = notifier_class(address=url)
    try:
        await notifier.post(message(fields=()))
    finally:
        await notifier.aclose()
    [request] = receiver.requests
    assert request.problem is None
    body = request.body
    if kind in ("slack", "discord", "rocket"):
        assert body["attachments"][0]["fields"] == []  # a list, as Go marshals an empty slice
    elif kind == "msteams":
        assert body["sections"][0]["facts"] == []
    else:
        assert len(body["cards"][0]["sections"]) == 1


# --- transport: retries, bounds, proxy, sessions ---------------------------------------------


async def test_5xx_is_retried_until_it_succeeds(serve: Serve) -> None:
    receiver = ChatReceiver("slack").script((500, "oops"), (503, "busy"), (200, "ok"))
    url = await serve(receiver) + SECRET_PATH
    async with SlackNotifier(address=url) as slack:
        await slack.post(message())
    assert len(receiver.requests) == 3
    assert receiver.bodies[0] == receiver.bodies[2]


async def test_5xx_gives_up_after_the_attempts(serve: Serve) -> None:
    receiver = ChatReceiver("msteams").script((500, "Internal Server Error"))
    url = await serve(receiver) + "/webhookb2/abc-secret"
    async with MSTeamsNotifier(address=url, attempts=3) as teams:
        with pytest.raises(NotifierError) as caught:
            await teams.post(message())
    assert len(receiver.requests) == 3
    assert "after 3 attempt(s)" in str(caught.value)
    assert "HTTP 500 Internal Server Error" in str(caught.value)
    assert "abc-secret" not in str(caught.value)


async def test_4xx_is_final_at_once_and_names_the_answer(serve: Serve) -> None:
    receiver = ChatReceiver("slack").script((404, "no_service"))
    url = await serve(receiver) + SECRET_PATH
    async with SlackNotifier(address=url) as slack:
        with pytest.raises(NotifierError, match="refused: HTTP 404 no_service") as caught:
            await slack.post(message())
    assert len(receiver.requests) == 1
    assert "XyZsEcReTtOkEn" not in str(caught.value)
    assert endpoint_of(url) in str(caught.value)


async def test_a_receiver_that_hangs_is_given_up_within_the_bound(serve: Serve) -> None:
    receiver = ChatReceiver("slack", delay=60)
    url = await serve(receiver) + SECRET_PATH
    async with SlackNotifier(address=url, timeout=0.2, attempts=2) as slack:
        with pytest.raises(NotifierError, match=r"timed out after 0.2s"):
            # two attempts of 0.2 s and one backoff, not the receiver's 60 s
            await asyncio.wait_for(slack.post(message()), timeout=15)
    assert len(receiver.requests) == 2


async def test_a_refused_connection_is_retried_then_reported() -> None:
    url = f"http://127.0.0.1:{free_port()}{SECRET_PATH}"
    async with RocketNotifier(address=url, attempts=2) as rocket:
        with pytest.raises(NotifierError, match="cannot connect") as caught:
            await rocket.post(message())
    assert "XyZsEcReTtOkEn" not in str(caught.value)
    assert "after 2 attempt(s)" in str(caught.value)


async def test_posts_through_the_proxy(serve: Serve) -> None:
    proxy = ChatReceiver("slack")  # a forward proxy sees the absolute URL and the body
    proxy_url = await serve(proxy)
    target = "http://hooks.slack.invalid" + SECRET_PATH
    async with SlackNotifier(address=target, proxy=proxy_url) as slack:
        await slack.post(message())
    [request] = proxy.requests
    assert request.via_proxy
    assert request.path == SECRET_PATH
    assert request.problem is None


async def test_a_shared_session_is_used_and_left_open(serve: Serve) -> None:
    receiver = ChatReceiver("gchat")
    url = await serve(receiver) + "/v1/spaces/A/messages"
    async with aiohttp.ClientSession() as session:
        gchat = GChatNotifier(address=url, session=session)
        await gchat.post(message())
        await gchat.aclose()
        assert not session.closed
    assert len(receiver.requests) == 1


async def test_an_own_session_is_closed_and_reopened_on_use(serve: Serve) -> None:
    receiver = ChatReceiver("slack")
    url = await serve(receiver) + SECRET_PATH
    slack = SlackNotifier(address=url)
    await slack.post(message())
    await slack.aclose()
    await slack.post(message())  # a closed notifier opens a new pool rather than failing
    await slack.aclose()
    assert len(receiver.requests) == 2


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("address", [
    pytest.param("", id="empty"),
    pytest.param("hooks.slack.com/services/T/B/secret-x", id="no-scheme"),
    pytest.param("ftp://hooks.slack.com/services/T/B/secret-x", id="not-http"),
    pytest.param("https:///services/T/B/secret-x", id="no-host"),
    pytest.param("https://hooks.slack.com:port/secret-x", id="bad-port"),
])
def test_an_invalid_address_is_refused_without_repeating_it(address: str) -> None:
    with pytest.raises(NotifierError, match="invalid Slack hook URL") as caught:
        SlackNotifier(address=address)
    assert "secret-x" not in str(caught.value)


@pytest.mark.parametrize(("cls", "username", "channel", "error"), [
    pytest.param(SlackNotifier, "", "general", "empty Slack username", id="slack-user"),
    pytest.param(SlackNotifier, "flagger", "", "empty Slack channel", id="slack-channel"),
    pytest.param(DiscordNotifier, "flagger", "", "empty Discord channel", id="discord"),
    pytest.param(RocketNotifier, "", "general", "empty Rocket username", id="rocket"),
])
def test_slack_style_services_need_a_username_and_channel(
        cls: type[WebhookNotifier], username: str, channel: str, error: str,
) -> None:
    with pytest.raises(NotifierError, match=error):
        cls(address="https://example.com/hook", username=username, channel=channel)


def test_teams_and_gchat_need_no_channel() -> None:
    MSTeamsNotifier(address="https://example.com/hook", username="", channel="")
    GChatNotifier(address="https://example.com/hook", username="", channel="")


def test_an_address_with_surrounding_whitespace_is_used_trimmed() -> None:
    assert SlackNotifier(address=" https://example.com/hook\n").url == "https://example.com/hook"


def test_invalid_proxy_is_refused() -> None:
    with pytest.raises(NotifierError, match="invalid MS Teams proxy URL"):
        MSTeamsNotifier(address="https://example.com/hook", proxy="not a url")


def test_repr_names_the_host_only() -> None:
    slack = SlackNotifier(address="https://hooks.slack.com" + SECRET_PATH, token="xoxb-t")
    assert repr(slack) == "SlackNotifier(https://hooks.slack.com)"


@pytest.mark.parametrize(("url", "shown"), [
    pytest.param("https://hooks.slack.com/services/x", "https://hooks.slack.com", id="path"),
    pytest.param("http://user:pw@10.0.0.1:8080/h?t=1", "http://10.0.0.1:8080", id="userinfo"),
    pytest.param("http://[::1]:9/x", "http://[::1]:9", id="ipv6"),
    pytest.param("nonsense", "<invalid URL>", id="invalid"),
])
def test_endpoint_of_keeps_scheme_and_host(url: str, shown: str) -> None:
    assert endpoint_of(url) == shown


# --- registration ----------------------------------------------------------------------------

CLASSES = {"slack": SlackNotifier, "msteams": MSTeamsNotifier, "discord": DiscordNotifier,
           "rocket": RocketNotifier, "gchat": GChatNotifier}


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_registry_serves_each_notifier_as_its_own_factory(name: str) -> None:
    plugins.notifiers.refresh()
    factory = plugins.notifiers.load(name)
    assert factory is CLASSES[name]
    # called exactly as the alerting layer calls every notifier factory
    notifier = factory(address="https://example.com/hook", proxy="", token="", username="flagger",
                       channel="general", session=None, timeout=5.0, variant="")
    assert isinstance(notifier, Notifier)
    parameters = inspect.signature(factory).parameters
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())


async def test_the_receiver_refuses_what_the_service_would(serve: Serve) -> None:
    """Guards the guard: a card without summary or text is refused, as Teams does."""
    receiver = ChatReceiver("msteams")
    url = await serve(receiver) + "/x"
    card = {"@type": "MessageCard", "@context": "http://schema.org/extensions"}
    async with aiohttp.ClientSession() as session, session.post(url, json=card) as response:
        assert response.status == 400
        assert "Summary or Text is required" in await response.text()
    assert receiver.requests[0].problem is not None
