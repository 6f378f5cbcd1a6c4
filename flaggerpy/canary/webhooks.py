"""Webhooks: the HTTP calls a Canary's analysis makes to gates, tests, load generators and sinks.

Port of Flagger's ``pkg/controller/webhook.go`` and of the hook loops in
``scheduler_hooks.go``, without the Events, alerts and phase changes those
loops also make: deciding what a failed gate *means* (Waiting,
WaitingPromotion, a failed check, a rollback) is the lifecycle's job. This
module only answers "did the hooks of this type pass?" and keeps no memory
between calls, so which gate is asked when — and that a gate already passed
is not asked again unless Flagger would ask it (design rule 2) — is decided
where the phase is decided.

The HTTP contract is Flagger's, so every receiver written for Flagger (its
load tester, gates, in-house services) works unchanged:

- ``POST <url>`` with ``Content-Type: application/json`` and the body
  ``{"name", "namespace", "phase", "checksum", "metadata"}`` (:func:`payload`;
  ``metadata`` left out when empty);
- each request is bounded by the hook's ``timeout`` (10 s when unset or
  shorter than two characters);
- ``retries`` more attempts, after 1 s, 2 s, 4 s ... up to 30 s (or the
  server's ``Retry-After`` on 429/503, capped at 30 s), when the request got
  no answer (connection refused or reset, timeout) or the answer was 429 or
  a 5xx other than 501. Retries live here and nowhere else (design rule 4);
- success is a 200, 201 or 202 answer; anything else (203 and 204 included)
  is a failure whose message is the response body;
- ``disableTLS: true`` turns certificate verification off for that hook.

What changes from Flagger (each listed in ``docs/compatibility.md``):

- **A retried call does not re-run a blocking task.** Every attempt of one
  call carries the same ``X-Flaggerpy-Delivery`` header (and
  ``X-Flaggerpy-Attempt: n``), so a receiver can join the run the first
  attempt started instead of starting it again, which is what Flagger's
  load tester does when a ``bash``/``helm``/``kubectl`` task outlives the
  webhook timeout. ``flaggerpy loadtester`` honours it; ``docs/webhooks.md``
  states the contract.
- **A 5xx keeps its body.** Flagger's retry library replaces it with
  "giving up after N attempt(s)"; here the message of a final 5xx is its
  body, as for a 4xx.
- **An empty refusal says what it was** (``"204 No Content"``) instead of
  an empty message.
- **No credentials in messages or logs.** A URL is only ever shown through
  :func:`flaggerpy.logs.safe_url` (scheme, host and port).

Example, as the lifecycle uses it::

    async with WebhookCaller() as hooks:
        failed = await hooks.run(canary, HookType.CONFIRM_ROLLOUT, phase=canary_phase)
        if failed is not None:
            ...  # Waiting: "Halt podinfo.test advancement waiting for approval <name>"
"""

from __future__ import annotations

import hashlib
import inspect
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any, Final, Self

import aiohttp
import structlog
import tenacity
from pydantic import ValidationError

from flaggerpy.logs import canary_id, safe_url
from flaggerpy.models import Canary, CanaryPhase, CanaryStatus, CanaryWebhook, HookType

__all__ = [
    "ATTEMPT_HEADER",
    "BACKOFF_MAX",
    "BACKOFF_MIN",
    "DELIVERY_HEADER",
    "GLOBAL_EVENT_HOOK_NAME",
    "HookResult",
    "ResultCallback",
    "WebhookCaller",
    "checksum",
    "payload",
]

log = structlog.get_logger(__name__)

DELIVERY_HEADER: Final = "X-Flaggerpy-Delivery"
"""Same value on every attempt of one call: lets a receiver join a run instead of repeating it."""

ATTEMPT_HEADER: Final = "X-Flaggerpy-Attempt"
"""``1`` for the first request of a call, ``2`` for the first retry, and so on."""

BACKOFF_MIN: Final = 1.0
"""Seconds before the first retry (go-retryablehttp's ``RetryWaitMin``, which Flagger uses)."""

BACKOFF_MAX: Final = 30.0
"""Longest wait between two attempts (go-retryablehttp's ``RetryWaitMax``)."""

GLOBAL_EVENT_HOOK_NAME: Final = "events"
"""The name Flagger gives the ``-event-webhook`` when it builds a hook for it."""

BODY_LIMIT: Final = 64 * 1024
"""Bytes of a response body kept as the message; a receiver cannot make us buffer more."""

_GATE_TYPES: Final = frozenset({
    HookType.CONFIRM_ROLLOUT,
    HookType.PRE_ROLLOUT,
    HookType.ROLLOUT,
    HookType.CONFIRM_TRAFFIC_INCREASE,
    HookType.CONFIRM_PROMOTION,
    HookType.POST_ROLLOUT,
})
_RETRY_AFTER_STATUSES: Final = frozenset({429, 503})  # where go-retryablehttp reads Retry-After


@dataclass(frozen=True, slots=True)
class HookResult:
    """What one webhook answered.

    ``message`` is what Flagger would put after the hook's name in an Event:
    the response body (for a refusal with an empty body, its status line,
    such as ``"204 No Content"``), or the transport error when no answer
    came. It never shows more of the hook's URL than scheme, host and port.
    """

    webhook: CanaryWebhook
    ok: bool
    status: int | None  # HTTP status of the last attempt; None when no answer came
    message: str
    attempts: int = 1  # requests made, retries included; 0 when the hook could not be called


ResultCallback = Callable[[HookResult], Awaitable[object] | object]
"""Called with every hook's result, in order: how the lifecycle records per-hook Events."""


def checksum(status: CanaryStatus | None) -> str:
    """Identifies a revision: a stable hash of ``trackedConfigs`` and ``lastAppliedSpec``.

    Flagger hashes the same two fields with a Go-specific printer (spec §10.8),
    so the value differs from Flagger's; receivers only compare it for
    equality. No tracked configs and an empty map hash alike: both mean the
    target reads no ConfigMap or Secret.
    """
    if status is None:
        return _checksum(None, None)
    return _checksum(status.tracked_configs, status.last_applied_spec)


def payload(
        canary: Canary,
        *,
        phase: CanaryPhase | str,
        metadata: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The JSON body Flagger posts to a webhook (``CanaryWebhookPayload``), key for key.

    ``metadata`` is left out when empty, as Go's ``omitempty`` does; ``phase``
    is the phase the caller says the hook runs in, which is not always
    ``status.phase`` (spec §5.1).
    """
    return _body(
        name=canary.name,
        namespace=canary.namespace,
        phase=str(phase),
        checksum=checksum(canary.status),
        metadata=metadata,
    )


class WebhookCaller:
    """Calls a Canary's webhooks over one shared connection pool.

    Give it the process's ``aiohttp.ClientSession`` to share connections, or
    let it open one (honouring ``HTTP(S)_PROXY``/``NO_PROXY`` as Go's default
    transport does) and close it in :meth:`aclose`. ``backoff_min`` and
    ``backoff_max`` are Flagger's 1 s and 30 s; tests may shrink them.
    """

    def __init__(
            self,
            *,
            session: aiohttp.ClientSession | None = None,
            backoff_min: float = BACKOFF_MIN,
            backoff_max: float = BACKOFF_MAX,
    ) -> None:
        if backoff_min < 0 or backoff_max < backoff_min:
            raise ValueError("backoff_min must be >= 0 and backoff_max >= backoff_min")
        self._session = session
        self._owns_session = session is None
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the connection pool if this caller opened it; a shared one is left open."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- one hook -----------------------------------------------------------------------------

    async def call(
            self,
            canary: Canary,
            webhook: CanaryWebhook,
            *,
            phase: CanaryPhase | str,
            tick: str | None = None,
    ) -> HookResult:
        """POSTs Flagger's payload to one hook, retrying as Flagger does, and says how it went.

        Never raises for what the hook or the network did: a refusal, a
        timeout, an unparsable ``timeout`` or URL all come back as a failed
        :class:`HookResult`. ``tick`` names the analysis step the call belongs
        to (for example derived from the status, so it survives a restart);
        it feeds the ``X-Flaggerpy-Delivery`` value. Without it every call is
        a new delivery, and only its own retries share the value.
        """
        body = payload(canary, phase=phase, metadata=webhook.metadata)
        delivery = _delivery_id(body, webhook, tick)
        return await self._post(webhook, body, delivery=delivery)

    # -- the hooks of one type ----------------------------------------------------------------

    async def run(
            self,
            canary: Canary,
            hook_type: HookType | str,
            *,
            phase: CanaryPhase | str,
            tick: str | None = None,
            on_result: ResultCallback | None = None,
    ) -> HookResult | None:
        """Calls every hook of ``hook_type`` in list order and stops at the first failure.

        Returns that failure, or ``None`` when all passed or none is defined.
        ``HookType.UNSET`` (type ``""``) is ``rollout``, as a hook without a
        type is. ``on_result`` sees each result as it comes, passes included,
        for Flagger's "Confirm-rollout check <name> passed" Events. ``event``
        and ``rollback`` hooks have their own semantics: use :meth:`event`
        and :meth:`rollback_requested`.
        """
        wanted = HookType(hook_type)
        if wanted is HookType.UNSET:
            wanted = HookType.ROLLOUT
        if wanted not in _GATE_TYPES:
            raise ValueError(f"run() takes a gate type, not {wanted.value!r}")
        for webhook in _hooks_of(canary, wanted):
            result = await self.call(canary, webhook, phase=phase, tick=tick)
            await _notify(on_result, result)
            if not result.ok:
                return result
        return None

    async def rollback_requested(
            self,
            canary: Canary,
            *,
            phase: CanaryPhase | str,
            tick: str | None = None,
            on_result: ResultCallback | None = None,
    ) -> CanaryWebhook | None:
        """The first ``rollback`` hook that answers 200-202, meaning "roll back now"; else None.

        A rollback hook inverts the gate logic (spec §5.1): any other answer,
        or no answer at all, is "not signaling a rollback", and the next hook
        is asked. ``on_result`` sees every answer, for Flagger's "Rollback
        hook <name> not signaling a rollback" Events.
        """
        for webhook in _hooks_of(canary, HookType.ROLLBACK):
            result = await self.call(canary, webhook, phase=phase, tick=tick)
            await _notify(on_result, result)
            if result.ok:
                return webhook
        return None

    # -- events -------------------------------------------------------------------------------

    async def event(
            self,
            canary_obj: Canary | Mapping[str, Any],
            *,
            message: str,
            event_type: str,
            global_url: str | None,
    ) -> None:
        """Sends one Kubernetes Event of a canary to its ``event`` hooks, or to the global one.

        The canary's own ``event`` hooks, all of them in order, replace the
        ``-event-webhook`` URL for that canary; the global hook is called with
        Flagger's defaults (name ``events``, 10 s, no retries). The payload's
        metadata is ``eventMessage``, ``eventType`` and ``timestamp`` (Unix
        milliseconds) plus the hook's own keys, which never override those
        three. Failures are logged, never raised: an Event sink that is down
        must not stop a rollout.
        """
        try:
            await self._event(canary_obj, message=message, event_type=event_type,
                              global_url=global_url)
        except Exception:  # a bug here must not fail the reconcile that recorded the Event
            log.exception("event_webhook_failed")

    async def _event(
            self,
            canary_obj: Canary | Mapping[str, Any],
            *,
            message: str,
            event_type: str,
            global_url: str | None,
    ) -> None:
        obj = canary_obj.to_dict() if isinstance(canary_obj, Canary) else canary_obj
        meta = _mapping(obj.get("metadata"))
        status = _mapping(obj.get("status"))
        name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
        declared, hooks = _event_hooks(obj, canary=canary_id(name, namespace))
        if not declared and global_url:
            hooks = [CanaryWebhook(name=GLOBAL_EVENT_HOOK_NAME, url=global_url)]
        if not hooks:
            return
        tracked = status.get("trackedConfigs")
        revision = _checksum(
            {str(k): str(v) for k, v in tracked.items()} if isinstance(tracked, Mapping) else None,
            str(status.get("lastAppliedSpec") or ""),
        )
        fixed = {
            "eventMessage": message,
            "eventType": event_type,
            "timestamp": str(time.time_ns() // 1_000_000),
        }
        for webhook in hooks:
            metadata = {**(webhook.metadata or {}), **fixed}
            body = _body(name=name, namespace=namespace, phase=str(status.get("phase") or ""),
                         checksum=revision, metadata=metadata)
            result = await self._post(webhook, body, delivery=_delivery_id(body, webhook, None))
            if not result.ok:
                log.error("event_webhook_failed", canary=canary_id(name, namespace),
                          webhook=webhook.name, url=safe_url(webhook.url),
                          status=result.status, error=result.message)

    # -- transport ----------------------------------------------------------------------------

    async def _post(self, webhook: CanaryWebhook, body: dict[str, Any], *,
                    delivery: str) -> HookResult:
        """One call: up to ``retries + 1`` attempts, wrapped by tenacity and nothing else."""
        try:
            timeout = webhook.get_timeout_seconds()
        except ValueError as exc:  # Flagger fails the call the same way, before any request
            return HookResult(webhook=webhook, ok=False, status=None,
                              message=f"invalid timeout: {exc}", attempts=0)
        retries = max(0, webhook.retries or 0)
        data = json.dumps(body).encode()
        logged = {"canary": canary_id(body["name"], body["namespace"]),
                  "webhook": webhook.name, "url": safe_url(webhook.url)}

        attempts = 0

        async def attempt() -> _Outcome:
            nonlocal attempts
            attempts += 1
            headers = {
                "Content-Type": "application/json",
                DELIVERY_HEADER: delivery,
                ATTEMPT_HEADER: str(attempts),
            }
            return await self._attempt(webhook.url, data=data, headers=headers, seconds=timeout,
                                       verify_tls=not webhook.disable_tls)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            outcome: _Outcome = state.outcome.result() if state.outcome else _NO_OUTCOME
            log.info("webhook_retrying", **logged, attempt=state.attempt_number,
                     status=outcome.status, error=outcome.reason,
                     delay=state.next_action.sleep if state.next_action else None)

        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(retries + 1),
            wait=self._wait,
            retry=tenacity.retry_if_result(lambda outcome: outcome.retryable),
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
            before_sleep=before_sleep,
        )
        outcome: _Outcome = await retrying(attempt)
        result = HookResult(webhook=webhook, ok=outcome.ok, status=outcome.status,
                            message=outcome.message(webhook.url, attempts), attempts=attempts)
        log.debug("webhook_called", **logged, ok=result.ok, status=result.status,
                  attempts=attempts)
        return result

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """go-retryablehttp's DefaultBackoff: 1 s doubling to 30 s, or Retry-After on 429/503."""
        outcome: _Outcome = state.outcome.result() if state.outcome else _NO_OUTCOME
        if outcome.retry_after is not None:
            return min(self._backoff_max, outcome.retry_after)
        return float(min(self._backoff_max, self._backoff_min * 2 ** (state.attempt_number - 1)))

    async def _attempt(
            self,
            url: str,
            *,
            data: bytes,
            headers: Mapping[str, str],
            seconds: float,  # bound on the whole request, body included
            verify_tls: bool,
    ) -> _Outcome:
        """One request. Every failure becomes an outcome; ``retryable`` says if it may be repeated.

        Retried as go-retryablehttp's default policy does: no answer (except
        a certificate that failed verification, or a URL that cannot be
        requested), 429, and 5xx other than 501.
        """
        session = self._session_for_call()
        try:
            async with session.post(
                url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=seconds),
                ssl=verify_tls,  # False: no certificate verification (disableTLS)
            ) as response:
                text = await _read_body(response)
                status, reason = response.status, response.reason
                retry_after = response.headers.get("Retry-After")
        except TimeoutError:
            return _Outcome.failed(f"timed out after {seconds:g}s", retryable=True)
        except aiohttp.ClientConnectorCertificateError as exc:
            return _Outcome.failed(f"TLS certificate verification failed: "
                                   f"{_os_reason(exc.certificate_error)}", retryable=False)
        except aiohttp.ClientConnectorError as exc:
            return _Outcome.failed(f"cannot connect to {exc.host}:{exc.port}: "
                                   f"{_os_reason(exc.os_error)}", retryable=True)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            return _Outcome.failed(f"connection failed: {_describe(exc)}", retryable=True)
        except aiohttp.TooManyRedirects:
            return _Outcome.failed("stopped after too many redirects", retryable=False)
        except aiohttp.NonHttpUrlClientError:
            return _Outcome.failed("unsupported URL scheme (http or https only)", retryable=False)
        except aiohttp.InvalidURL:  # its text is the URL itself, which may hold a credential
            return _Outcome.failed("invalid URL", retryable=False)
        except (aiohttp.ClientError, ValueError) as exc:
            return _Outcome.failed(f"cannot send request: {type(exc).__name__}", retryable=False)

        ok = 200 <= status <= 202
        retryable = status == 429 or (status >= 500 and status != 501)
        return _Outcome(
            ok=ok, status=status, reason=text if text or ok else _status_line(status, reason),
            retryable=retryable,
            retry_after=_retry_after(retry_after) if status in _RETRY_AFTER_STATUSES else None,
            answered=True,
        )

    def _session_for_call(self) -> aiohttp.ClientSession:
        if self._session is None or (self._owns_session and self._session.closed):
            self._session = aiohttp.ClientSession(trust_env=True)
            self._owns_session = True
        return self._session


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One attempt, before it becomes a HookResult."""

    ok: bool
    status: int | None
    reason: str  # body of an answer (status line for an empty refusal); else the transport error
    retryable: bool
    retry_after: float | None = None
    answered: bool = False

    @classmethod
    def failed(cls, reason: str, *, retryable: bool) -> _Outcome:
        return cls(ok=False, status=None, reason=reason, retryable=retryable)

    def message(self, url: str, attempts: int) -> str:
        """The body for an answer; go-retryablehttp's wording when there was none."""
        if self.answered:
            return self.reason
        return f"POST {safe_url(url)} giving up after {attempts} attempt(s): {self.reason}"


_NO_OUTCOME: Final = _Outcome(ok=False, status=None, reason="", retryable=False)


def _checksum(tracked: Mapping[str, str] | None, applied: str | None) -> str:
    document = json.dumps(
        {"trackedConfigs": dict(sorted((tracked or {}).items())),
         "lastAppliedSpec": applied or ""},
        sort_keys=True, separators=(",", ":"),
    )
    return hashlib.sha256(document.encode()).hexdigest()[:16]


def _body(
        *,
        name: str,
        namespace: str,
        phase: str,
        checksum: str,
        metadata: Mapping[str, str] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "phase": phase,
        "checksum": checksum,
    }
    if metadata:
        body["metadata"] = dict(metadata)
    return body


def _delivery_id(body: Mapping[str, Any], webhook: CanaryWebhook, tick: str | None) -> str:
    """Stable for (canary, checksum, hook, phase, tick); a fresh random tick when none is given."""
    step = tick if tick is not None else "call:" + secrets.token_hex(8)
    key = json.dumps(
        [body["namespace"], body["name"], body["checksum"], webhook.name,
         webhook.get_type().value, webhook.url, body["phase"], step],
        separators=(",", ":"),
    )
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _hooks_of(canary: Canary, hook_type: HookType) -> Iterable[CanaryWebhook]:
    for webhook in canary.spec.analysis.webhooks or ():
        if webhook.get_type() is hook_type:
            yield webhook


def _event_hooks(obj: Mapping[str, Any], *, canary: str) -> tuple[bool, list[CanaryWebhook]]:
    """Whether the canary declares ``type: event`` hooks, and those that parse.

    Declaring one is what replaces the global hook, as in Flagger, even if
    it is malformed (it is then skipped and logged).
    """
    analysis = _mapping(_mapping(obj.get("spec")).get("analysis"))
    raw_hooks = analysis.get("webhooks")
    declared = False
    hooks: list[CanaryWebhook] = []
    for raw in raw_hooks if isinstance(raw_hooks, list) else ():
        if not isinstance(raw, Mapping) or raw.get("type") != HookType.EVENT.value:
            continue
        declared = True
        try:
            hooks.append(CanaryWebhook.model_validate(raw))
        except ValidationError as exc:
            log.error("event_webhook_invalid", canary=canary, webhook=raw.get("name"),
                      error=str(exc.errors(include_url=False, include_input=False)))
    return declared, hooks


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


async def _notify(callback: ResultCallback | None, result: HookResult) -> None:
    if callback is None:
        return
    answer = callback(result)
    if inspect.isawaitable(answer):
        await answer


async def _read_body(response: aiohttp.ClientResponse) -> str:
    """Up to BODY_LIMIT bytes of the body as text; Go's ``string(body)``, bounded."""
    chunks: list[bytes] = []
    size = 0
    while size < BODY_LIMIT:
        chunk = await response.content.read(BODY_LIMIT - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _status_line(status: int, reason: str | None) -> str:
    if not reason:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
    return f"{status} {reason}".rstrip()


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _os_reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return _describe(error)


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
