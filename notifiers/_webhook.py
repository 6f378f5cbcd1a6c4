"""The transport every chat notifier shares: one JSON POST per message.

Port of Flagger's ``postMessage`` (``pkg/notifier/client.go``): ``POST`` with
``Content-Type: application/json``, an optional ``Authorization: Bearer``
header, an optional HTTP proxy, a 5 s timeout, and anything but a 2xx answer
is an error. A subclass only says what the body looks like
(:meth:`WebhookNotifier.payload`), which is the part that differs between
Slack, Teams, Discord, Rocket.Chat and Google Chat.

What we add to Flagger's client:

- **Retries, in this layer only** (design rule 4). A post is retried with
  jittered exponential backoff when the request never got an answer
  (connection refused or reset, timeout) or the answer was a 5xx, which
  are the failures a second attempt can fix. A 4xx (bad URL, revoked
  webhook, invalid payload) is final at once. Nothing above this class
  retries a notification.
- **One connection pool.** Every notifier posts through an
  ``aiohttp.ClientSession``: the one it is given (the alerting layer shares
  one among all notifiers) or one it opens on first use and closes in
  :meth:`WebhookNotifier.aclose`. A proxy is set per request, so one pool
  serves notifiers with and without proxies.
- **Errors that keep the secret.** The webhook URL *is* the credential for
  most of these services (its path carries the key), so no error raised
  here contains it: messages name the service and the endpoint's scheme and
  host only (``https://hooks.slack.com``). Likewise ``repr()`` of a notifier.

Plugins import only ``flaggerpy.{notifying,models,errors}``; logging of
failures is the caller's job (``flaggerpy.canary.alerting``), with the
canary's name bound.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Self
from urllib.parse import urlsplit

import aiohttp
import tenacity

from flaggerpy.errors import NotifierError
from flaggerpy.models.alert_provider import DEFAULT_CHANNEL, DEFAULT_USERNAME
from flaggerpy.notifying import Message

__all__ = [
    "DEFAULT_ATTEMPTS",
    "DEFAULT_TIMEOUT",
    "WebhookNotifier",
    "endpoint_of",
    "json_answer",
    "slack_style_payload",
]

DEFAULT_TIMEOUT: Final = 5.0
"""Seconds one request may take, connection included: Flagger's ``postMessage`` timeout."""

DEFAULT_ATTEMPTS: Final = 3
"""Requests per message at most: the first and two retries (transport errors and 5xx only)."""

_BACKOFF_INITIAL: Final = 0.25  # seconds before the first retry, doubled each time, + up to this
_BACKOFF_MAX: Final = 2.0
_ERROR_BODY_LIMIT: Final = 200  # characters of a refusal's body kept in the error message


class _Retryable(Exception):
    """A failed attempt worth repeating; carries the text for the final error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WebhookNotifier(abc.ABC):
    """Posts a JSON payload to a chat service's incoming webhook.

    The constructor is the factory the ``flaggerpy.notifiers`` registry
    calls, always with keyword arguments (see
    ``flaggerpy.notifying.NotifierFactory``): ``address`` (the webhook
    URL), ``proxy``, ``token``, ``username``, ``channel``, ``session``,
    ``timeout`` and ``variant``. A notifier ignores what its service does
    not use, as Flagger's do (only Slack sends the token). An address that
    is not an absolute http(s) URL raises :class:`NotifierError` here, so a
    broken AlertProvider is reported when it is resolved, not at every post.
    """

    service: ClassVar[str]
    """The service's name in error messages ("Slack", "MS Teams", ...)."""

    sends_token: ClassVar[bool] = False
    """Whether ``token`` goes out as ``Authorization: Bearer``; Flagger does this for Slack only."""

    needs_channel: ClassVar[bool] = False
    """Flagger refuses an empty username or channel for the Slack-style services."""

    def __init__(
            self,
            *,
            address: str,
            proxy: str = "",
            token: str = "",
            username: str = DEFAULT_USERNAME,
            channel: str = DEFAULT_CHANNEL,
            session: aiohttp.ClientSession | None = None,  # shared pool; None: open our own
            timeout: float = DEFAULT_TIMEOUT,  # per request
            attempts: int = DEFAULT_ATTEMPTS,
            variant: str = "",  # the provider string after "<type>:"; unused by these services
    ) -> None:
        url = _absolute_http_url(address)
        if url is None:
            raise NotifierError(f"invalid {self.service} hook URL")
        if self.needs_channel and not username:
            raise NotifierError(f"empty {self.service} username")
        if self.needs_channel and not channel:
            raise NotifierError(f"empty {self.service} channel")
        if proxy and _absolute_http_url(proxy) is None:
            raise NotifierError(f"invalid {self.service} proxy URL")
        if timeout <= 0 or attempts < 1:
            raise ValueError("timeout must be positive and attempts at least 1")
        self.url = self.endpoint(url)
        """Where the payload is posted. It may embed credentials: never log it as it is."""
        self.username = username
        self.channel = channel
        self.variant = variant
        self._proxy = proxy or None
        self._token = token
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._attempts = attempts

    def __repr__(self) -> str:
        return f"{type(self).__name__}({endpoint_of(self.url)})"

    # -- what a subclass decides ------------------------------------------------------------

    def endpoint(self, address: str) -> str:
        """The URL to post to for a configured ``address`` (Discord appends ``/slack``)."""
        return address

    @abc.abstractmethod
    def payload(self, message: Message) -> dict[str, Any]:
        """The JSON body for ``message``, exactly as Flagger sends it. Pure."""

    def check_answer(self, status: int, body: str) -> None:
        """Raises :class:`NotifierError` if a 2xx answer still means "not delivered".

        Most webhooks mean what their status says, so by default nothing is checked.
        """
        return None

    # -- transport ---------------------------------------------------------------------------

    def headers(self) -> dict[str, str]:
        """Request headers: JSON, plus the bearer token where the service takes one."""
        headers = {"Content-Type": "application/json"}
        if self.sends_token and self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    async def post(self, message: Message) -> None:
        """Delivers ``message``; raises :class:`NotifierError` when it could not be.

        Transport errors and 5xx answers are retried (``attempts`` requests at
        most, each bounded by ``timeout``); anything else fails at once.
        """
        body = json.dumps(self.payload(message)).encode()
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self._attempts),
            wait=(tenacity.wait_exponential(multiplier=_BACKOFF_INITIAL, max=_BACKOFF_MAX)
                  + tenacity.wait_random(0, _BACKOFF_INITIAL)),
            retry=tenacity.retry_if_exception_type(_Retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._send(body)
        except _Retryable as exc:
            count = retrying.statistics.get("attempt_number", self._attempts)
            raise NotifierError(
                f"{self.service} post to {endpoint_of(self.url)} failed after {count}"
                f" attempt(s): {exc.reason}"
            ) from exc

    async def _send(self, body: bytes) -> None:
        """One request. Raises _Retryable for what a retry may fix, NotifierError otherwise."""
        session = self._session_for_request()
        try:
            async with session.post(
                self.url, data=body, headers=self.headers(), proxy=self._proxy,
                timeout=self._timeout, allow_redirects=True,
            ) as response:
                status = response.status
                text = await response.text(errors="replace")
        except TimeoutError as exc:
            raise _Retryable(f"timed out after {self._timeout.total:g}s") from exc
        except aiohttp.ClientConnectorError as exc:
            raise _Retryable(f"cannot connect ({exc.strerror or type(exc).__name__})") from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise _Retryable(f"connection failed ({type(exc).__name__})") from exc
        except aiohttp.ClientError as exc:  # e.g. too many redirects: not worth repeating
            raise NotifierError(
                f"{self.service} post to {endpoint_of(self.url)} failed: {type(exc).__name__}"
            ) from exc
        if status >= 500:
            raise _Retryable(f"HTTP {status} {_excerpt(text)}".rstrip())
        if not 200 <= status < 300:
            raise NotifierError(
                f"{self.service} post to {endpoint_of(self.url)} refused: HTTP {status}"
                f" {_excerpt(text)}".rstrip()
            )
        self.check_answer(status, text)

    def _session_for_request(self) -> aiohttp.ClientSession:
        if self._session is None or (self._owns_session and self._session.closed):
            # trust_env: with no proxy configured, HTTP(S)_PROXY/NO_PROXY apply, as they
            # do to Go's default transport under Flagger.
            self._session = aiohttp.ClientSession(trust_env=True)
            self._owns_session = True
        return self._session

    async def aclose(self) -> None:
        """Closes the connection pool if this notifier opened it (a shared one is left open)."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def endpoint_of(url: str) -> str:
    """``scheme://host[:port]``: how an endpoint whose path or query is a key may be named."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid URL>"
    if not parts.scheme or not host:
        return "<invalid URL>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}"


def slack_style_payload(
        message: Message,
        *,
        username: str,
        channel: str,
        color: str,
) -> dict[str, Any]:
    """Flagger's ``SlackPayload``, which Slack, Discord (``/slack``) and Rocket.Chat all accept.

    Key for key as Go marshals it: ``icon_url`` is sent empty, ``text`` is
    left out (``omitempty``), and ``fields`` is a list even when empty.
    """
    return {
        "channel": channel,
        "username": username,
        "icon_url": "",
        "icon_emoji": ":rocket:",
        "attachments": [
            {
                "color": color,
                "author_name": message.subject,
                "text": message.text,
                "mrkdwn_in": ["text"],
                "fields": [
                    {"title": field.name, "value": field.value, "short": False}
                    for field in message.fields
                ],
            }
        ],
    }


def _absolute_http_url(value: str) -> str | None:
    """The URL if it is an absolute http(s) URL with a host, else None.

    Stricter than Go's ``url.ParseRequestURI``, which also takes a bare path
    that no HTTP client can post to. Surrounding whitespace (a Secret written
    with ``echo`` keeps its newline) is dropped.
    """
    value = value.strip()
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return value


def _excerpt(text: str) -> str:
    """The start of a response body on one line, for an error message."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _ERROR_BODY_LIMIT else flat[:_ERROR_BODY_LIMIT] + "…"


def json_answer(body: str) -> Mapping[str, Any] | None:
    """A response body parsed as a JSON object, or None if it is not one."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None
