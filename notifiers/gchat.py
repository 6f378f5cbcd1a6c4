"""Google Chat: a space's incoming webhook, with a card.

Port of Flagger's ``pkg/notifier/gchat.go``. Flagger sends a v1 ``cards``
message (Google's API reference now marks ``cards`` deprecated in favour of
``cardsV2``); we send the same, key for key, so a space that shows
Flagger's cards shows ours::

    {"cards": [{"header": {"title": "Flagger", "subtitle": "<name>.<namespace>",
                           "imageUrl": "https://flagger.app/favicon.png"},
                "sections": [
                  {"widgets": [{"textParagraph": {"text":
                      "<font color=#848484><strong><message></strong></font>"}}]},
                  {"widgets": [{"textParagraph": {"text":
                      "<field name><br><font color=#848484><strong><value></strong></font>"}}]},
                  ...one section per field]}]}

There is no colour by severity (Flagger has none for Google Chat), and no
channel, username or token: the space, key and token are all in the
webhook URL's query (``?key=...&token=...``), which is why it is never
logged.
"""

from __future__ import annotations

from typing import Any, Final

from flaggerpy.notifiers._webhook import WebhookNotifier
from flaggerpy.notifying import Message, Notifier

__all__ = ["GChatNotifier"]

TITLE: Final = "Flagger"
IMAGE_URL: Final = "https://flagger.app/favicon.png"
GREY: Final = "#848484"


class GChatNotifier(WebhookNotifier):
    """Posts cards to a Google Chat incoming webhook."""

    service = "Google Chat"

    def payload(self, message: Message) -> dict[str, Any]:
        sections = [_paragraph(_grey_bold(message.text))]
        sections += [_paragraph(f"{field.name}<br>{_grey_bold(field.value)}")
                     for field in message.fields]
        return {
            "cards": [
                {
                    "header": {"title": TITLE, "subtitle": message.subject, "imageUrl": IMAGE_URL},
                    "sections": sections,
                }
            ]
        }


def _grey_bold(text: str) -> str:
    return f"<font color={GREY}><strong>{text}</strong></font>"


def _paragraph(text: str) -> dict[str, Any]:
    return {"widgets": [{"textParagraph": {"text": text}}]}


_: type[Notifier] = GChatNotifier
