"""Slack: an incoming webhook, or ``chat.postMessage`` with a bot token.

Port of Flagger's ``pkg/notifier/slack.go``. The body is Slack's legacy
*attachment* message, exactly as Flagger sends it::

    {"channel": "<channel>", "username": "<username>", "icon_url": "", "icon_emoji": ":rocket:",
     "attachments": [{"color": "good" | "danger", "author_name": "<name>.<namespace>",
                      "text": "<message>", "mrkdwn_in": ["text"],
                      "fields": [{"title": "<name>", "value": "<value>", "short": false}]}]}

``danger`` (red) is for error messages only; info and warn are ``good``
(green), as in Flagger. Slack requires a username and a channel (Flagger
refuses to build the notifier without them; AlertProviders default them to
``flagger`` and ``general``).

With a token (``-slack-token`` or the ``token`` key of an AlertProvider's
Secret) the token is sent as ``Authorization: Bearer <token>`` to the
configured address, which is then Slack's Web API,
``https://slack.com/api/chat.postMessage``. That API answers HTTP 200 even
when it did not post (``{"ok": false, "error": "channel_not_found"}``);
Flagger counts that as delivered, we report it as a failure with Slack's
error code.
"""

from __future__ import annotations

from typing import Any, Final

from flaggerpy.errors import NotifierError
from flaggerpy.notifiers._webhook import (
    WebhookNotifier,
    endpoint_of,
    json_answer,
    slack_style_payload,
)
from flaggerpy.notifying import Message, Notifier, Severity

__all__ = ["SLACK_API_POST_MESSAGE_URL", "SlackNotifier"]

SLACK_API_POST_MESSAGE_URL: Final = "https://slack.com/api/chat.postMessage"
"""The address to use with a bot token (Flagger's ``SlackAPIPostMessageDefaultURL``)."""

COLOR_OK: Final = "good"
COLOR_ERROR: Final = "danger"


class SlackNotifier(WebhookNotifier):
    """Posts attachment messages to a Slack incoming webhook or to ``chat.postMessage``."""

    service = "Slack"
    sends_token = True
    needs_channel = True

    def payload(self, message: Message) -> dict[str, Any]:
        color = COLOR_ERROR if message.severity is Severity.ERROR else COLOR_OK
        return slack_style_payload(
            message, username=self.username, channel=self.channel, color=color
        )

    def check_answer(self, status: int, body: str) -> None:
        # Only the Web API wraps its answer in {"ok": ...}; an incoming webhook says "ok".
        answer = json_answer(body)
        if answer is not None and answer.get("ok") is False:
            code = str(answer.get("error") or "unknown error")
            raise NotifierError(f"Slack API at {endpoint_of(self.url)} refused the post: {code}")


_: type[Notifier] = SlackNotifier
