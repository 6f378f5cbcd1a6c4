"""The event webhook: every event recorded for a canary, posted as JSON.

Port of Flagger's ``sendEventToWebhook`` and ``CallEventWebhook``
(``pkg/controller/events.go``, ``webhook.go``; spec §5). Whenever the
controller records a Kubernetes Event for a canary it also posts::

    {"name": "podinfo", "namespace": "test", "phase": "Progressing", "checksum": "<hash>",
     "metadata": {"eventMessage": "New revision detected! Scaling up podinfo.test",
                  "eventType": "Normal", "timestamp": "1578607635167", ...}}

to every ``type: event`` webhook of the canary's analysis, or, when it has
none, to the global ``-event-webhook`` (``$EVENT_WEBHOOK_URL``). The
webhook's own ``metadata`` is merged in, but never overrides the three keys
above. ``timestamp`` is Unix milliseconds, as a string.

Each POST follows Flagger's webhook rules: the hook's ``timeout`` (10 s when
unset), ``retries`` extra attempts (0 by default) on a transport error, a
429 or a 5xx other than 501 with exponential backoff from 1 s to 30 s, TLS
verification off with ``disableTLS``, and success means a status of 200 to
202; anything else is logged at error level with the canary's name and
the endpoint's host only.

Unlike Flagger, which posts synchronously inside the reconcile,
:meth:`EventWebhooks.send` returns at once: the posts run in bounded
background tasks, in order per canary (:class:`~flaggerpy.canary.alerting.Dispatcher`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any, Final, Literal, Self

import aiohttp
import structlog
import tenacity

from flaggerpy.canary.alerting import DEFAULT_CLOSE_GRACE, DEFAULT_MAX_PENDING, Dispatcher
from flaggerpy.logs import canary_id, safe_url
from flaggerpy.models import Canary
from flaggerpy.models.canary import CanaryWebhook, HookType
from flaggerpy.settings import Settings

__all__ = [
    "GLOBAL_HOOK_NAME",
    "EventType",
    "EventWebhooks",
    "event_hooks",
    "event_payload",
]

log = structlog.get_logger(__name__)

EventType = Literal["Normal", "Warning"]
"""Kubernetes event types; Flagger's error helper records ``Warning`` too."""

GLOBAL_HOOK_NAME: Final = "events"
"""The name Flagger gives the hook made from ``-event-webhook``."""

RESERVED_KEYS: Final = ("eventMessage", "eventType", "timestamp")
_RETRY_MIN: Final = 1.0  # go-retryablehttp's DefaultBackoff: 1 s doubling up to 30 s
_RETRY_MAX: Final = 30.0
_ERROR_BODY_LIMIT: Final = 200


def event_payload(
        canary: Canary,
        message: str,
        *,
        event_type: EventType,
        checksum: str = "",  # the status hash of tracked configs and last applied spec
        metadata: Mapping[str, str] | None = None,  # the hook's own; never overrides ours
        now: float | None = None,  # seconds since the epoch; default: the wall clock
) -> dict[str, Any]:
    """The JSON body Flagger posts for one event (``CanaryWebhookPayload``). Pure."""
    moment = time.time() if now is None else now
    merged = {
        "eventMessage": message,
        "eventType": event_type,
        "timestamp": str(int(moment * 1000)),
    }
    for key, value in (metadata or {}).items():
        merged.setdefault(key, value)
    phase = canary.status.phase if canary.status is not None else None
    return {
        "name": canary.name,
        "namespace": canary.namespace,
        "phase": phase.value if phase is not None else "",
        "checksum": checksum,
        "metadata": merged,
    }


def event_hooks(canary: Canary, *, global_url: str = "") -> list[CanaryWebhook]:
    """Where a canary's events go: its ``type: event`` webhooks, else the global one."""
    own = [hook for hook in canary.spec.analysis.webhooks or ()
           if hook.get_type() is HookType.EVENT]
    if own:
        return own
    if global_url:
        return [CanaryWebhook(name=GLOBAL_HOOK_NAME, url=global_url)]
    return []


class _Retry(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EventWebhooks:
    """Posts canary events to event webhooks in the background; never raises, never waits.

    Build one per process; :meth:`send` is what the event recorder calls
    next to writing the Kubernetes Event. Close it with :meth:`aclose`.
    """

    def __init__(
            self,
            *,
            settings: Settings,
            max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self._global_url = settings.notifications.event_webhook.get_secret_value()
        self._dispatcher = Dispatcher(limit=max_pending, name="event-webhooks")
        self._session: aiohttp.ClientSession | None = None

    async def send(
            self,
            canary: Canary,
            message: str,
            *,
            event_type: EventType,
            checksum: str = "",
    ) -> None:
        """Posts the event to each of the canary's event hooks; returns at once."""
        who = canary_id(canary.name, canary.namespace)
        hooks = event_hooks(canary, global_url=self._global_url)
        if not hooks:
            return
        payloads = [(hook, event_payload(canary, message, event_type=event_type,
                                         checksum=checksum, metadata=hook.metadata))
                    for hook in hooks]

        async def deliver() -> None:
            await asyncio.gather(*(self._post(who, hook, body) for hook, body in payloads))

        if not self._dispatcher.submit(who, deliver):
            log.error("event_webhook_dropped", canary=who, reason="too many events in flight",
                      pending=len(self._dispatcher))

    async def flush(self, within: float | None = None) -> bool:
        """Waits for the events sent so far; False when ``within`` seconds passed first."""
        return await self._dispatcher.join(within)

    async def aclose(self, *, grace: float = DEFAULT_CLOSE_GRACE) -> None:
        """Lets pending posts finish for ``grace`` seconds, then closes the connection pool."""
        await self._dispatcher.aclose(grace=grace)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _post(self, who: str, hook: CanaryWebhook, body: dict[str, Any]) -> None:
        where = {"canary": who, "webhook": hook.name, "endpoint": safe_url(hook.url)}
        try:
            timeout = hook.get_timeout_seconds()
        except ValueError:
            log.error("event_webhook_failed", error=f"invalid timeout {hook.timeout!r}", **where)
            return
        data = json.dumps(body).encode()
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(1 + max(hook.retries or 0, 0)),
            wait=tenacity.wait_exponential(multiplier=_RETRY_MIN, max=_RETRY_MAX),
            retry=tenacity.retry_if_exception_type(_Retry),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._send(hook, data, limit=aiohttp.ClientTimeout(total=timeout))
        except _Retry as exc:
            count = retrying.statistics.get("attempt_number", 1)
            log.error("event_webhook_failed", error=f"{exc.reason} after {count} attempt(s)",
                      **where)
        except _Refused as exc:
            log.error("event_webhook_failed", error=str(exc), **where)
        else:
            log.debug("event_webhook_sent", **where)

    async def _send(
            self, hook: CanaryWebhook, data: bytes, *, limit: aiohttp.ClientTimeout
    ) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(trust_env=True)
        try:
            async with self._session.post(
                hook.url, data=data, headers={"Content-Type": "application/json"},
                timeout=limit,
                ssl=not hook.disable_tls,  # False: no certificate verification
            ) as response:
                status = response.status
                text = await response.text(errors="replace")
        except TimeoutError as exc:
            raise _Retry(f"timed out after {limit.total:g}s") from exc
        except aiohttp.InvalidURL as exc:
            raise _Refused("invalid URL") from exc
        except aiohttp.ClientConnectorError as exc:
            raise _Retry(f"cannot connect ({exc.strerror or type(exc).__name__})") from exc
        except aiohttp.ClientError as exc:
            raise _Retry(f"request failed ({type(exc).__name__})") from exc
        if status == 429 or (status >= 500 and status != 501):
            raise _Retry(f"HTTP {status} {_excerpt(text)}".rstrip())
        if not 200 <= status <= 202:
            raise _Refused(f"HTTP {status} {_excerpt(text)}".rstrip())


class _Refused(Exception):
    """An answer that a retry would not change."""


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _ERROR_BODY_LIMIT else flat[:_ERROR_BODY_LIMIT] + "…"
