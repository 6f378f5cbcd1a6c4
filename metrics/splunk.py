"""Splunk Observability: SignalFlow programs over the WebSocket API, as Flagger's ``splunk.go``.

This provider answers MetricTemplates with ``provider.type: splunk``. The query is a SignalFlow
program: ``data('demo.trans.latency', filter=filter('demo_host', '{{ target }}')).mean()
.publish()``.

The address is the realm's API root, ``https://api.<realm>.signalfx.com`` (or the stream root
``wss://stream.<realm>.signalfx.com``). As in Flagger, the stream endpoint is the address with
``http`` turned into ``ws`` and ``api`` into ``stream``, plus ``/v2/signalflow``; the API
endpoint is the reverse. flaggerpy replaces in the scheme and the host only (Flagger replaces the
first ``http`` and ``api`` anywhere in the URL, a path included).

One query is one WebSocket conversation, following Splunk's documented protocol:

1. ``GET <stream>/v2/signalflow/connect``, upgraded to a WebSocket;
2. ``{"type": "authenticate", "token": <sf_token_key>}``;
3. ``{"type": "execute", "channel": "flaggerpy", "program": <query>, "start": <ms>,
   "stop": <ms>, "immediate": true}``: the window is the ten metric intervals before now
   (Flagger's), and ``immediate`` has the computation run over that past window at once;
4. the server answers JSON text messages (``authenticated``, ``control-message`` with
   ``STREAM_START``, ``JOB_START``, ... ``END_OF_CHANNEL``; ``message``, ``metadata``,
   ``error``) and binary **data** messages: a 20-byte header (version, message type 5,
   flags: 1 gzip-compressed, 2 JSON-encoded; reserved; the channel name in 16 bytes), then the
   logical timestamp (8 bytes), a count (4 bytes) and per time series 17 bytes: the value type
   (1 long, 2 double, 3 int), the TSID (8 bytes) and the value (8 bytes), big-endian.
   ``END_OF_CHANNEL`` on our channel ends the conversation.

The value (Flagger's): the data points of every data message in order, those without a value
dropped; none left is :class:`~flaggerpy.errors.NoValuesFoundError`, and so is NaN; points of
more than one TSID (the program published several time series) is
:class:`~flaggerpy.errors.MultipleValuesError`; otherwise the last point's value. An ``error``
message is :class:`~flaggerpy.errors.MetricsError` ``error executing query: <code> (<type>):
<message>``, and so is ``CHANNEL_ABORT`` and a connection the server closes before
``authenticated`` (what it does with a token it refuses). No connection, a handshake answered
with 5xx, a connection lost after authentication or a conversation longer than the timeout is
:class:`~flaggerpy.errors.ProviderOfflineError`, after the retries (the same attempts and
backoff as :mod:`flaggerpy.metrics._http`'s requests, each attempt a whole conversation).

:meth:`SplunkProvider.is_online`: ``GET <api>/v2/metric?limit=1`` with ``X-SF-Token`` must
answer 200.

Factory signature (entry point ``splunk``): the keyword arguments every metrics provider gets
(see :mod:`flaggerpy.metrics.prometheus`). The address, the Secret's ``sf_token_key`` and an
interval Go can parse are required (Flagger's constructor errors, word for word); ``headers``,
``region`` and ``variant`` are not used. Never logs or repeats the token.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import math
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import structlog
import tenacity
import yarl

from flaggerpy.analysis import MetricsProvider
from flaggerpy.errors import (
    MetricsError,
    MultipleValuesError,
    NoValuesFoundError,
    ProviderOfflineError,
)
from flaggerpy.metrics._http import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BACKOFF,
    DEFAULT_TIMEOUT,
    HTTPProvider,
    endpoint_of,
    excerpt,
)
from flaggerpy.models.durations import parse_duration_ns

__all__ = ["CHANNEL", "TOKEN_KEY", "DataPoint", "SplunkProvider", "decode_data_message"]

log = structlog.get_logger(__name__)

TOKEN_KEY: Final = "sf_token_key"
"""The ``secretRef`` key holding the access token (an org token with the API scope)."""

CHANNEL: Final = "flaggerpy"
"""The channel name of the one computation each conversation executes."""

SIGNALFLOW_PATH: Final = "/v2/signalflow"
VALIDATION_PATH: Final = "/v2/metric?limit=1"

_WINDOW_INTERVALS: Final = 10  # the program looks back ten metric intervals, as Flagger's
_NS_PER_MS: Final = 1_000_000
_BACKOFF_MAX: Final = 2.0
_HEADER: Final = struct.Struct(">BBBB16s")
_DATA_HEADER: Final = struct.Struct(">QI")
_POINT: Final = struct.Struct(">B8s8s")
_DATA_MESSAGE_TYPE: Final = 5
_FLAG_COMPRESSED: Final = 0x01
_FLAG_JSON: Final = 0x02


@dataclass(frozen=True, slots=True)
class DataPoint:
    """One time series' value in a data message; ``value`` None when it carries none."""

    tsid: str
    value: float | None


class _Retryable(Exception):
    """An attempt that another attempt may fix; carries the reason for the final error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SplunkProvider(HTTPProvider):
    """Runs SignalFlow programs against one Splunk Observability realm."""

    provider_type = "splunk"

    def __init__(
            self,
            *,
            address: str | None,
            secret: Mapping[str, bytes] | None = None,
            headers: Mapping[str, Sequence[str]] | None = None,  # unused, as in Flagger
            insecure_skip_verify: bool = False,
            region: str | None = None,  # unused
            interval: str = "",
            variant: str = "",  # unused
            timeout: float = DEFAULT_TIMEOUT,
            attempts: int = DEFAULT_ATTEMPTS,
            backoff: float = DEFAULT_BACKOFF,
    ) -> None:
        address = (address or "").strip()
        if not address:
            raise MetricsError("splunk endpoint is not set")
        try:
            parts = urlsplit(address)
            valid = parts.scheme in ("http", "https", "ws", "wss") and bool(parts.hostname)
            _ = parts.port
        except ValueError:
            valid = False
        if not valid:
            raise MetricsError(f"splunk address {endpoint_of(address)} is not a valid URL")
        if secret is None or TOKEN_KEY not in secret:
            raise MetricsError(f"splunk credentials does not contain {TOKEN_KEY}")
        try:
            interval_ns = parse_duration_ns(interval)
        except ValueError as exc:
            raise MetricsError(f"error parsing metric interval: {exc}") from exc
        super().__init__(
            endpoint=endpoint_of(address), insecure_skip_verify=insecure_skip_verify,
            timeout=timeout, attempts=attempts, backoff=backoff,
        )
        token = secret[TOKEN_KEY]
        self._token: Final = (
            token if isinstance(token, str) else token.decode("utf-8", errors="replace"))
        self.stream_url: Final = _convert(address, scheme={"http": "ws", "https": "wss"},
                                          host=("api", "stream")) + SIGNALFLOW_PATH
        """The SignalFlow root (``wss://stream.<realm>.signalfx.com/v2/signalflow``)."""
        self.api_url: Final = _convert(address, scheme={"ws": "http", "wss": "https"},
                                       host=("stream", "api"))
        """The REST API root (``https://api.<realm>.signalfx.com``)."""
        self._window_ms: Final = _WINDOW_INTERVALS * (interval_ns // _NS_PER_MS)
        self._timeout_seconds: Final = timeout
        self._attempts_max: Final = attempts
        self._backoff_base: Final = backoff

    async def run_query(self, query: str) -> float:
        """The program's value; see the module docstring for how the answer is read."""
        now = int(time.time() * 1000)
        execute = {"type": "execute", "channel": CHANNEL, "program": query,
                   "start": now - self._window_ms, "stop": now, "immediate": True}
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self._attempts_max),
            wait=(tenacity.wait_exponential(multiplier=self._backoff_base, max=_BACKOFF_MAX)
                  + tenacity.wait_random(0, self._backoff_base)),
            retry=tenacity.retry_if_exception_type(_Retryable),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            points: list[DataPoint] = await retrying(self._converse, execute)
        except _Retryable as exc:
            raise ProviderOfflineError(f"error executing query: {exc.reason}") from exc
        return _value_of(points)

    async def is_online(self) -> bool:
        """True when the metric list answers 200 with this token.

        Raises :class:`ProviderOfflineError` with the reason otherwise, so that the caller can
        report why (Flagger's IsOnline returns the same error).
        """
        url = yarl.URL(self.api_url + VALIDATION_PATH, encoded=True)
        answer = await self.request("GET", url, headers=(("X-SF-Token", self._token),))
        if answer.status != 200:
            raise ProviderOfflineError(f"error response: {excerpt(answer.body)}")
        return True

    async def _converse(self, execute: Mapping[str, Any]) -> list[DataPoint]:
        """One attempt: connect, authenticate, execute, read until the end of the channel."""
        session = self._session_for_request()
        try:
            async with asyncio.timeout(self._timeout_seconds):
                try:
                    socket = await session.ws_connect(
                        self.stream_url + "/connect", autoclose=True, autoping=True,
                        # closing must not eat the attempt's time once the answer is read
                        timeout=aiohttp.ClientWSTimeout(ws_close=min(1.0, self._timeout_seconds)))
                except aiohttp.WSServerHandshakeError as exc:
                    if exc.status >= 500:
                        raise _Retryable(f"websocket handshake answered {exc.status}") from exc
                    raise MetricsError(
                        f"error executing query: websocket handshake answered {exc.status}"
                    ) from exc
                except aiohttp.ClientConnectorCertificateError as exc:
                    raise ProviderOfflineError(
                        f"error executing query: TLS certificate of {self.endpoint} not verified"
                        " (set insecureSkipVerify to accept it)") from exc
                except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                    raise _Retryable(
                        f"cannot connect to {self.endpoint} ({type(exc).__name__})") from exc
                async with socket:
                    await socket.send_json({"type": "authenticate", "token": self._token})
                    await socket.send_json(dict(execute))
                    return await self._read_channel(socket)
        except TimeoutError as exc:
            raise _Retryable(
                f"{self.endpoint} did not end the computation within "
                f"{self._timeout_seconds:g}s") from exc

    async def _read_channel(self, socket: aiohttp.ClientWebSocketResponse) -> list[DataPoint]:
        points: list[DataPoint] = []
        authenticated = False
        async for message in socket:
            if message.type is aiohttp.WSMsgType.BINARY:
                channel, decoded = decode_data_message(message.data)
                if channel == CHANNEL:
                    points.extend(decoded)
                continue
            if message.type is not aiohttp.WSMsgType.TEXT:
                break  # closing, closed or a transport error
            try:
                payload = json.loads(message.data)
            except ValueError as exc:
                raise MetricsError(
                    f"error executing query: invalid message '{excerpt(message.data)}'") from exc
            if not isinstance(payload, Mapping):
                continue
            kind = payload.get("type")
            if kind == "authenticated":
                authenticated = True
            elif kind == "error":
                raise MetricsError(f"error executing query: {_error_text(payload)}")
            elif payload.get("channel") != CHANNEL:
                continue  # keep-alives and other channels' messages
            elif kind == "data":
                points.extend(_json_points(payload))
            elif kind == "control-message":
                event = payload.get("event")
                if event == "END_OF_CHANNEL":
                    return points
                if event == "CHANNEL_ABORT":
                    info = json.dumps(payload.get("abortInfo") or {}, sort_keys=True)
                    raise MetricsError(
                        f"error executing query: computation aborted: {excerpt(info)}")
        closed = f"closed ({socket.close_code})" if socket.close_code is not None else "lost"
        if not authenticated:
            raise MetricsError(
                f"error executing query: connection {closed} before authentication"
                " (is sf_token_key valid?)")
        raise _Retryable(f"connection {closed} before the end of the computation")

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        reason = exc.reason if isinstance(exc, _Retryable) else type(exc).__name__
        log.debug("metrics_request_retrying", provider=self.provider_type,
                  endpoint=self.endpoint, attempt=state.attempt_number, reason=reason)


def _convert(address: str, *, scheme: Mapping[str, str], host: tuple[str, str]) -> str:
    """The address with its scheme mapped and the first ``host[0]`` in its host replaced."""
    parts = urlsplit(address.rstrip("/"))
    netloc = parts.netloc
    hostname = parts.hostname or ""
    if host[0] in hostname:
        userinfo, _, hostport = netloc.rpartition("@")
        hostport = hostport.replace(host[0], host[1], 1)
        netloc = f"{userinfo}@{hostport}" if userinfo else hostport
    return urlunsplit((scheme.get(parts.scheme, parts.scheme), netloc, parts.path, "", ""))


def _error_text(payload: Mapping[str, Any]) -> str:
    """An ``error`` message as the SignalFlow client words it: ``400 (TYPE): message``."""
    text = str(payload.get("error", ""))
    if payload.get("errorType"):
        text = f"{text} ({payload['errorType']})"
    if payload.get("message"):
        text = f"{text}: {payload['message']}"
    return excerpt(text)


def _json_points(payload: Mapping[str, Any]) -> list[DataPoint]:
    """The points of a JSON data message: ``{"data": [{"tsId": ..., "value": ...}]}``."""
    points = []
    for entry in payload.get("data") or ():
        if not isinstance(entry, Mapping):
            continue
        value = entry.get("value")
        number = float(value) if isinstance(value, int | float) and not isinstance(
            value, bool) else None
        points.append(DataPoint(tsid=str(entry.get("tsId", "")), value=number))
    return points


def decode_data_message(frame: bytes) -> tuple[str, list[DataPoint]]:
    """A binary WebSocket message as ``(channel, points)``; not a data message: no points."""
    if len(frame) <= _HEADER.size:
        raise MetricsError(f"error executing query: binary message of {len(frame)} bytes")
    _version, message_type, flags, _reserved, raw_channel = _HEADER.unpack_from(frame)
    channel = raw_channel.split(b"\0", 1)[0].decode("ascii", errors="replace")
    body = frame[_HEADER.size:]
    try:
        if flags & _FLAG_COMPRESSED:
            body = gzip.decompress(body)
        if flags & _FLAG_JSON:
            payload = json.loads(body)
            return channel, _json_points(payload) if isinstance(payload, Mapping) else []
        if message_type != _DATA_MESSAGE_TYPE:
            return channel, []
        _timestamp, count = _DATA_HEADER.unpack_from(body)
        points = []
        for index in range(count):
            offset = _DATA_HEADER.size + index * _POINT.size
            value_type, tsid, raw = _POINT.unpack_from(body, offset)
            points.append(DataPoint(tsid=base64.urlsafe_b64encode(tsid).decode().rstrip("="),
                                    value=_number(value_type, raw)))
    except (OSError, EOFError, ValueError, struct.error) as exc:
        raise MetricsError(
            f"error executing query: undecodable data message ({type(exc).__name__})") from exc
    return channel, points


def _number(value_type: int, raw: bytes) -> float | None:
    if value_type == 1:
        return float(struct.unpack(">q", raw)[0])
    if value_type == 2:
        return float(struct.unpack(">d", raw)[0])
    if value_type == 3:  # a 32-bit int in the first four bytes, as SignalFx's clients read it
        return float(struct.unpack(">i", raw[:4])[0])
    return None


def _value_of(points: Sequence[DataPoint]) -> float:
    """The last valued point, if every valued point belongs to one time series."""
    valued = [point for point in points if point.value is not None]
    if not valued:
        raise NoValuesFoundError("invalid response: no values found")
    if len({point.tsid for point in valued}) > 1:
        raise MultipleValuesError("invalid response: multiple values returned")
    value = valued[-1].value
    assert value is not None
    if math.isnan(value):
        raise NoValuesFoundError("invalid response: no values found")
    return value


_: type[MetricsProvider] = SplunkProvider
