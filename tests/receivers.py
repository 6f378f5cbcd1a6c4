"""Local stand-ins for chat services' incoming webhooks, for notifier tests.

Slack, Teams, Discord, Rocket.Chat and Google Chat cannot be reached from a
test, so a :class:`ChatReceiver` plays the service on 127.0.0.1: it records
every request, checks the body against what the vendor documents for that
webhook (and answers 400 with the reason when it does not match, as the
services do for an invalid payload), and otherwise answers as scripted,
for example ``500`` twice then ``200``, or after a delay.

What is checked, per service:

- **slack** (incoming webhook, and ``chat.postMessage`` when ``api=True``):
  a JSON object with ``text``, ``attachments`` or ``blocks``; string
  ``channel``/``username``/``icon_url``, ``icon_emoji`` as ``:name:``;
  legacy attachments with only documented keys, ``color`` ``good``,
  ``warning``, ``danger`` or ``#RRGGBB``, ``mrkdwn_in`` within ``pretext``,
  ``text``, ``fields``, fields ``{title, value, short: bool}``. The API
  additionally requires ``channel`` and a bearer token, and answers
  ``{"ok": true}``.
- **discord** (Slack-compatible endpoint): the path ends in ``/slack``,
  then the Slack rules.
- **rocket** (incoming integration): the Slack-style rules, colour any CSS
  name or hex.
- **msteams** (Office 365 connector ``MessageCard``): ``@type``
  ``MessageCard``, ``@context`` schema.org extensions, ``summary`` or
  ``text``, ``themeColor`` six hex digits, sections with documented keys and
  facts ``{name, value}``.
- **gchat** (v1 card message): ``text`` or ``cards``; each card a header
  ``{title, subtitle, imageUrl, imageStyle}`` and sections of widgets, each
  widget one of the documented kinds, ``textParagraph`` holding ``text``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

SLACK_ATTACHMENT_KEYS = frozenset({
    "fallback", "color", "pretext", "author_name", "author_link", "author_icon", "title",
    "title_link", "text", "fields", "image_url", "thumb_url", "footer", "footer_icon", "ts",
    "mrkdwn_in", "blocks",
})
SLACK_MESSAGE_KEYS = frozenset({
    "text", "attachments", "blocks", "channel", "username", "icon_url", "icon_emoji", "mrkdwn",
    "thread_ts", "unfurl_links", "unfurl_media", "link_names", "parse", "reply_broadcast",
})
TEAMS_SECTION_KEYS = frozenset({
    "title", "startGroup", "activityImage", "activityTitle", "activitySubtitle", "activityText",
    "heroImage", "text", "facts", "images", "potentialAction", "markdown",
})
TEAMS_CARD_KEYS = frozenset({
    "@type", "@context", "correlationId", "expectedActors", "originator", "summary",
    "themeColor", "hideOriginalBody", "title", "text", "sections", "potentialAction",
})
GCHAT_WIDGET_KINDS = frozenset({"textParagraph", "keyValue", "image", "buttons"})


class PayloadError(AssertionError):
    """The body is not what the service documents."""


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the receiver saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    """The JSON body, or the raw text when it is not JSON."""
    via_proxy: bool
    """The request line carried an absolute URL (``POST http://host/path``): a proxy's view."""
    problem: str | None
    """Why the body was refused, or None when it matched the documented shape."""


@dataclass
class ChatReceiver:
    """Plays one chat service's webhook; see the module docstring."""

    kind: str
    """slack, discord, rocket, msteams or gchat."""
    api: bool = False
    """slack only: be ``chat.postMessage`` (needs a bearer token, answers JSON)."""
    answers: deque[tuple[int, str]] = field(default_factory=deque)
    """Scripted answers (status, body), one per request; the last one repeats."""
    delay: float = 0.0
    """Seconds to wait before answering (to make clients time out)."""
    requests: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def script(self, *answers: tuple[int, str]) -> ChatReceiver:
        """Answers these, in order, then repeats the last one."""
        self.answers = deque(answers)
        return self

    @property
    def bodies(self) -> list[Any]:
        return [request.body for request in self.requests]

    async def wait_for(self, count: int, *, within: float = 5.0) -> None:
        """Until ``count`` requests have arrived."""
        async with asyncio.timeout(within):
            while len(self.requests) < count:
                self.arrived.clear()
                await self.arrived.wait()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        raw = await request.read()
        text = raw.decode(errors="replace")
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = text
        problem = self._problem(request, body)
        self.requests.append(Received(
            method=request.method, path=request.path, query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()}, body=body,
            via_proxy=request.url.is_absolute() and "://" in request.raw_path, problem=problem,
        ))
        self.arrived.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        if problem is not None:
            return web.Response(status=400, text=problem)
        status, answer = self._next_answer()
        return web.Response(status=status, text=answer)

    def _next_answer(self) -> tuple[int, str]:
        if not self.answers:
            return 200, ('{"ok": true, "channel": "C1", "ts": "1.2"}' if self.api else "ok")
        if len(self.answers) > 1:
            return self.answers.popleft()
        return self.answers[0]

    def _problem(self, request: web.BaseRequest, body: Any) -> str | None:
        if request.method != "POST":
            return f"method {request.method} not allowed"
        if request.content_type != "application/json":
            return f"content type {request.content_type!r} is not application/json"
        try:
            CHECKS[self.kind](request, body, api=self.api)
        except PayloadError as exc:
            return str(exc)
        return None


def _need(condition: bool, problem: str) -> None:
    if not condition:
        raise PayloadError(problem)


def _only(keys: Iterable[str], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(keys) - allowed)
    _need(not unknown, f"{where}: undocumented keys {unknown}")


def check_slack_message(body: Any, *, colors: Callable[[str], bool]) -> None:
    """A Slack-style message with legacy attachments (Slack, Discord /slack, Rocket.Chat)."""
    _need(isinstance(body, dict), "invalid_payload: not a JSON object")
    _only(body, SLACK_MESSAGE_KEYS, "message")
    _need(any(body.get(k) for k in ("text", "attachments", "blocks")),
          "no_text: needs text, attachments or blocks")
    for key in ("channel", "username", "icon_url", "text"):
        if key in body:
            _need(isinstance(body[key], str), f"{key} must be a string")
    if "icon_emoji" in body:
        _need(re.fullmatch(r":[a-z0-9_+\-]+:", body["icon_emoji"]) is not None,
              "icon_emoji must look like :name:")
    attachments = body.get("attachments", [])
    _need(isinstance(attachments, list), "attachments must be a list")
    for i, attachment in enumerate(attachments):
        where = f"attachments[{i}]"
        _need(isinstance(attachment, dict), f"{where} must be an object")
        _only(attachment, SLACK_ATTACHMENT_KEYS, where)
        if "color" in attachment:
            _need(colors(attachment["color"]), f"{where}.color {attachment['color']!r}")
        for key in ("author_name", "text", "pretext", "title", "fallback"):
            if key in attachment:
                _need(isinstance(attachment[key], str), f"{where}.{key} must be a string")
        for part in attachment.get("mrkdwn_in", []):
            _need(part in ("pretext", "text", "fields"), f"{where}.mrkdwn_in {part!r}")
        fields = attachment.get("fields", [])
        _need(isinstance(fields, list), f"{where}.fields must be a list")
        for j, fld in enumerate(fields):
            _need(isinstance(fld, dict) and set(fld) <= {"title", "value", "short"},
                  f"{where}.fields[{j}] has undocumented keys")
            _need(isinstance(fld.get("title"), str) and isinstance(fld.get("value"), str),
                  f"{where}.fields[{j}] needs string title and value")
            _need(isinstance(fld.get("short", False), bool), f"{where}.fields[{j}].short")


def slack_color(value: str) -> bool:
    return value in ("good", "warning", "danger") or re.fullmatch(
        r"#[0-9A-Fa-f]{6}", value) is not None


def css_color(value: str) -> bool:
    return re.fullmatch(r"#[0-9A-Fa-f]{3,8}|[a-zA-Z]+", value) is not None


def _check_slack(request: web.BaseRequest, body: Any, *, api: bool) -> None:
    if api:
        _need(request.headers.get("Authorization", "").startswith("Bearer "), "not_authed")
        _need(isinstance(body, dict) and bool(body.get("channel")), "channel_not_found")
    check_slack_message(body, colors=slack_color)


def _check_discord(request: web.BaseRequest, body: Any, *, api: bool) -> None:
    _need(request.path.endswith("/slack"), "not the Slack-compatible endpoint (…/slack)")
    check_slack_message(body, colors=slack_color)


def _check_rocket(request: web.BaseRequest, body: Any, *, api: bool) -> None:
    check_slack_message(body, colors=css_color)


def _check_teams(request: web.BaseRequest, body: Any, *, api: bool) -> None:
    _need(isinstance(body, dict), "not a JSON object")
    _only(body, TEAMS_CARD_KEYS, "card")
    _need(body.get("@type") == "MessageCard", "@type must be MessageCard")
    _need(body.get("@context") in ("http://schema.org/extensions",
                                   "https://schema.org/extensions"), "@context")
    _need(bool(body.get("summary") or body.get("text")), "Summary or Text is required")
    if "themeColor" in body:
        _need(re.fullmatch(r"[0-9A-Fa-f]{6}", body["themeColor"]) is not None, "themeColor")
    for i, section in enumerate(body.get("sections", [])):
        _need(isinstance(section, dict), f"sections[{i}] must be an object")
        _only(section, TEAMS_SECTION_KEYS, f"sections[{i}]")
        for j, fact in enumerate(section.get("facts", [])):
            _need(isinstance(fact, dict) and set(fact) == {"name", "value"},
                  f"sections[{i}].facts[{j}] must be {{name, value}}")


def _check_gchat(request: web.BaseRequest, body: Any, *, api: bool) -> None:
    _need(isinstance(body, dict), "not a JSON object")
    _need(bool(body.get("text") or body.get("cards") or body.get("cardsV2")),
          "message needs text or cards")
    for i, card in enumerate(body.get("cards", [])):
        _need(isinstance(card, dict) and set(card) <= {"header", "sections", "cardActions",
                                                       "name"}, f"cards[{i}] keys")
        header = card.get("header", {})
        _need(set(header) <= {"title", "subtitle", "imageUrl", "imageStyle"},
              f"cards[{i}].header keys")
        _need(isinstance(header.get("title", ""), str), f"cards[{i}].header.title")
        for j, section in enumerate(card.get("sections", [])):
            _need(isinstance(section, dict) and set(section) <= {"header", "widgets"},
                  f"cards[{i}].sections[{j}] keys")
            for k, widget in enumerate(section.get("widgets", [])):
                where = f"cards[{i}].sections[{j}].widgets[{k}]"
                _need(isinstance(widget, dict) and len(widget) == 1
                      and set(widget) <= GCHAT_WIDGET_KINDS, f"{where} kind")
                if "textParagraph" in widget:
                    _need(set(widget["textParagraph"]) == {"text"}
                          and isinstance(widget["textParagraph"]["text"], str),
                          f"{where}.textParagraph")


CHECKS: dict[str, Callable[..., None]] = {
    "slack": _check_slack,
    "discord": _check_discord,
    "rocket": _check_rocket,
    "msteams": _check_teams,
    "gchat": _check_gchat,
}
