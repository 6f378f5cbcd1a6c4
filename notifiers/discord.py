"""Discord: a webhook's Slack-compatible endpoint.

Port of Flagger's ``pkg/notifier/discord.go``. Discord executes a webhook
with a Slack body when ``/slack`` is appended to its URL
(``POST /webhooks/{id}/{token}/slack``), so this sends Flagger's Slack
payload there, colours included (``good``, or ``danger`` for errors).
The suffix is added to the path when the address does not already end in
``/slack``; a query string (``?thread_id=...``) is kept.

Discord picks the channel from the webhook itself and ignores ``channel``,
but Flagger still requires one (and a username), so this does too;
AlertProviders default them to ``general`` and ``flagger``. No token is
sent: the credential is the webhook URL's path.
"""

from __future__ import annotations

import posixpath
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from flaggerpy.notifiers._webhook import WebhookNotifier, slack_style_payload
from flaggerpy.notifying import Message, Notifier, Severity

__all__ = ["DiscordNotifier"]

SLACK_SUFFIX: Final = "/slack"
COLOR_OK: Final = "good"
COLOR_ERROR: Final = "danger"


class DiscordNotifier(WebhookNotifier):
    """Posts Slack-formatted messages to a Discord webhook's ``/slack`` endpoint."""

    service = "Discord"
    needs_channel = True

    def endpoint(self, address: str) -> str:
        """``address`` with ``/slack`` joined to its path, unless it already ends so.

        Flagger tests the whole URL string for the suffix and then uses Go's
        ``path.Join``, which also cleans the path (no doubled slashes).
        """
        address = address.strip()
        if address.endswith(SLACK_SUFFIX):
            return address
        parts = urlsplit(address)
        path = posixpath.normpath(posixpath.join("/", parts.path, "slack"))
        return urlunsplit(parts._replace(path=path))

    def payload(self, message: Message) -> dict[str, Any]:
        color = COLOR_ERROR if message.severity is Severity.ERROR else COLOR_OK
        return slack_style_payload(
            message, username=self.username, channel=self.channel, color=color
        )


_: type[Notifier] = DiscordNotifier
