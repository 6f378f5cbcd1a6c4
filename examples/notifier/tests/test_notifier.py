"""The notifier against a real local webhook (``flaggerpy_http``), as flaggerpy builds it."""

from __future__ import annotations

import aiohttp
import pytest
from flaggerpy_jsonhook import JsonHookNotifier, build_payload

from flaggerpy import sdk
from flaggerpy.testing import WebhookReceiver, free_port

MESSAGE = sdk.Message(
    workload="podinfo", namespace="test", text="New revision detected! Scaling up podinfo.test",
    fields=(sdk.Field("Target", "Deployment/podinfo.test"), sdk.Field("Traffic routing", "25%")),
    severity=sdk.Severity.INFO)


def test_the_payload_is_a_titled_attachment_with_one_field_per_fact() -> None:
    assert build_payload(MESSAGE, username="flagger", channel="deployments") == {
        "username": "flagger",
        "channel": "deployments",
        "text": "**podinfo.test**",
        "attachments": [{
            "fallback": "podinfo.test: New revision detected! Scaling up podinfo.test",
            "color": "#2eb886",
            "text": "New revision detected! Scaling up podinfo.test",
            "fields": [
                {"short": True, "title": "Target", "value": "Deployment/podinfo.test"},
                {"short": True, "title": "Traffic routing", "value": "25%"},
            ],
        }],
    }


@pytest.mark.parametrize(("severity", "color"), [
    (sdk.Severity.INFO, "#2eb886"), (sdk.Severity.WARN, "#ffa500"),
    (sdk.Severity.ERROR, "#d00000"),
])
def test_the_colour_says_the_severity(severity: sdk.Severity, color: str) -> None:
    message = sdk.Message(workload="podinfo", namespace="test", text="x", severity=severity)
    assert build_payload(message, username="u", channel="c")["attachments"][0]["color"] == color


async def test_a_message_is_posted_with_the_shared_session(
        flaggerpy_http: WebhookReceiver) -> None:
    async with aiohttp.ClientSession() as session:
        notifier = JsonHookNotifier(
            address=flaggerpy_http.url("/hooks/abc"), proxy="", token="", username="flagger",
            channel="deployments", session=session, timeout=5.0, variant="")
        await notifier.post(MESSAGE)

    [call] = flaggerpy_http.calls
    assert (call.method, call.path) == ("POST", "/hooks/abc")
    assert call.headers["content-type"] == "application/json"
    assert call.body == build_payload(MESSAGE, username="flagger", channel="deployments")


async def test_a_refusal_or_an_unreachable_hook_is_a_notifier_error_without_the_url(
        flaggerpy_http: WebhookReceiver) -> None:
    flaggerpy_http.answer("/hooks/abc", 500)
    notifier = JsonHookNotifier(address=flaggerpy_http.url("/hooks/abc"))
    with pytest.raises(sdk.NotifierError, match="HTTP 500") as refused:
        await notifier.post(MESSAGE)
    assert "/hooks/abc" not in str(refused.value)
    assert "/hooks/abc" not in repr(notifier)

    gone = JsonHookNotifier(address=f"http://127.0.0.1:{free_port()}/hooks/abc")
    with pytest.raises(sdk.NotifierError, match="failed") as unreachable:
        await gone.post(MESSAGE)
    assert "/hooks/abc" not in str(unreachable.value)


@pytest.mark.parametrize("address", ["", "hooks.example/abc", "ftp://hooks.example/abc"])
def test_an_address_that_is_not_http_is_refused_at_build(address: str) -> None:
    with pytest.raises(sdk.NotifierError, match="http"):
        JsonHookNotifier(address=address)
