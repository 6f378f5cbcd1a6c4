"""The ``jsonhook`` notifier: a pure payload builder, and one POST per message.

:func:`build_payload` is what the chat service receives (an incoming-webhook message in the
Mattermost / Slack attachment style: a title line, the message, one field per fact, a colour per
severity). :class:`JsonHookNotifier` posts it with the session flaggerpy shares between its
notifiers, and turns every failure into the SDK's ``NotifierError``, which flaggerpy logs and
counts without ever failing a canary over it. The webhook URL is a credential: it appears in no
error and no ``repr()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from flaggerpy import sdk

COLORS: Final[Mapping[sdk.Severity, str]] = {
    sdk.Severity.INFO: "#2eb886",
    sdk.Severity.WARN: "#ffa500",
    sdk.Severity.ERROR: "#d00000",
}
"""The attachment colour of each severity."""


def build_payload(message: sdk.Message, *, username: str, channel: str) -> dict[str, Any]:
    """The JSON body for one message. Pure."""
    return {
        "username": username,
        "channel": channel,
        "text": f"**{message.subject}**",
        "attachments": [{
            "fallback": f"{message.subject}: {message.text}",
            "color": COLORS[message.severity],
            "text": message.text,
            "fields": [{"short": True, "title": f.name, "value": f.value}
                       for f in message.fields],
        }],
    }


class JsonHookNotifier:
    """Posts messages to one webhook.

    Built by flaggerpy with the AlertProvider's settings (the ``NotifierFactory`` keywords):
    ``address`` is the webhook URL, ``proxy`` an HTTP proxy for it, ``username`` and
    ``channel`` go into every payload, ``session`` is flaggerpy's shared connection pool (None:
    one is made per post), ``timeout`` the seconds a post may take. ``token`` is not used.
    """

    def __init__(
            self,
            *,
            address: str,
            proxy: str = "",
            token: str = "",
            username: str = "flagger",
            channel: str = "general",
            session: aiohttp.ClientSession | None = None,
            timeout: float = 5.0,
            variant: str = "",
    ) -> None:
        if urlsplit(address).scheme not in ("http", "https"):
            raise sdk.NotifierError("jsonhook: the address must be an http(s) webhook URL")
        if variant:
            raise sdk.NotifierError(f"jsonhook takes no variant, got 'jsonhook:{variant}'")
        self._address = address
        self._proxy = proxy or None
        self._username = username
        self._channel = channel
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def __repr__(self) -> str:
        return f"JsonHookNotifier(channel={self._channel!r})"  # never the URL

    async def post(self, message: sdk.Message) -> None:
        """Sends ``message``; raises ``NotifierError`` when the webhook did not take it."""
        payload = build_payload(message, username=self._username, channel=self._channel)
        try:
            if self._session is not None:
                await self._send(self._session, payload)
            else:
                async with aiohttp.ClientSession() as session:
                    await self._send(session, payload)
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Not chained: aiohttp's errors quote the URL, and a logged traceback would too.
            raise sdk.NotifierError(
                f"jsonhook: post to the webhook failed: {type(exc).__name__}") from None

    async def _send(self, session: aiohttp.ClientSession, payload: dict[str, Any]) -> None:
        async with session.post(self._address, json=payload, proxy=self._proxy,
                                timeout=self._timeout) as response:
            if response.status >= 300:
                raise sdk.NotifierError(f"jsonhook: the webhook answered HTTP {response.status}")


_factory: sdk.NotifierFactory = JsonHookNotifier
_: type[sdk.Notifier] = JsonHookNotifier
