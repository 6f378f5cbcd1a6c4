"""Microsoft Teams: an incoming webhook that takes an Office 365 connector card.

Port of Flagger's ``pkg/notifier/teams.go``. Flagger sends a legacy
``MessageCard`` (not an Adaptive Card), and so do we, key for key::

    {"@type": "MessageCard", "@context": "http://schema.org/extensions",
     "themeColor": "0076D7" | "FF0000", "summary": "<name>.<namespace>",
     "sections": [{"activityTitle": "<message>", "activitySubtitle": "<name>.<namespace>",
                   "facts": [{"name": "<name>", "value": "<value>"}]}]}

``FF0000`` (red) is for error messages only. Teams ignores a channel and a
username (the webhook belongs to one channel) and takes no token.

Microsoft is retiring Office 365 connectors in favour of Workflows
webhooks, which are documented with Adaptive Cards rather than
MessageCards. Flagger has the same limitation; docs/notifiers.md says
what to do.
"""

from __future__ import annotations

from typing import Any, Final

from flaggerpy.notifiers._webhook import WebhookNotifier
from flaggerpy.notifying import Message, Notifier, Severity

__all__ = ["MSTeamsNotifier"]

COLOR_OK: Final = "0076D7"
COLOR_ERROR: Final = "FF0000"


class MSTeamsNotifier(WebhookNotifier):
    """Posts MessageCards to a Microsoft Teams incoming webhook."""

    service = "MS Teams"

    def payload(self, message: Message) -> dict[str, Any]:
        return {
            "@type": "MessageCard",
            "@context": "http://schema.org/extensions",
            "themeColor": COLOR_ERROR if message.severity is Severity.ERROR else COLOR_OK,
            "summary": message.subject,
            "sections": [
                {
                    "activityTitle": message.text,
                    "activitySubtitle": message.subject,
                    "facts": [{"name": field.name, "value": field.value}
                              for field in message.fields],
                }
            ],
        }


_: type[Notifier] = MSTeamsNotifier
