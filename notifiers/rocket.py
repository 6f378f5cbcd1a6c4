"""Rocket.Chat: an incoming webhook (integration) that takes Slack-style messages.

Port of Flagger's ``pkg/notifier/rocket.go``. Rocket.Chat's incoming
integrations accept the Slack body (``channel``, ``username``,
``icon_emoji``, ``attachments`` with ``color``, ``author_name``, ``text``
and ``fields``), so this is Flagger's Slack payload with Rocket.Chat
colours: ``#0076D7`` (blue) for info and warn, ``#FF0000`` for errors.

Flagger requires a username and a channel; AlertProviders default them to
``flagger`` and ``general``. No token is sent: the credential is the
integration URL (``https://<server>/hooks/<id>/<token>``).
"""

from __future__ import annotations

from typing import Any, Final

from flaggerpy.notifiers._webhook import WebhookNotifier, slack_style_payload
from flaggerpy.notifying import Message, Notifier, Severity

__all__ = ["RocketNotifier"]

COLOR_OK: Final = "#0076D7"
COLOR_ERROR: Final = "#FF0000"


class RocketNotifier(WebhookNotifier):
    """Posts Slack-style attachment messages to a Rocket.Chat incoming webhook."""

    service = "Rocket"
    needs_channel = True

    def payload(self, message: Message) -> dict[str, Any]:
        color = COLOR_ERROR if message.severity is Severity.ERROR else COLOR_OK
        return slack_style_payload(
            message, username=self.username, channel=self.channel, color=color
        )


_: type[Notifier] = RocketNotifier
