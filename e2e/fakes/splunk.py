"""A local Splunk Observability SignalFlow server: the WebSocket API and the metric list.

Written from Splunk's documentation of SignalFlow (the WebSocket request messages and the stream
messages reference):

- ``GET /v2/signalflow/connect`` upgrades to a WebSocket. The client must send
  ``{"type": "authenticate", "token": ...}`` within 5 seconds; the server answers
  ``{"type": "authenticated", "orgId": ..., "userId": ...}``, and closes the connection when
  the token is not valid (or nothing came in time).
- ``{"type": "execute", "channel": ..., "program": ...}`` starts a computation, with the
  optional ``start`` and ``stop`` (Unix ms), ``resolution``, ``maxDelay`` (ms), ``immediate``
  (run over the past window at once), ``timezone``. Every message of the computation carries the
  channel name: control messages (``STREAM_START``, ``JOB_START`` with the job ``handle``,
  ``END_OF_CHANNEL`` when a computation with a ``stop`` in the past is done), information
  messages (``JOB_RUNNING_RESOLUTION``), ``metadata`` per output time series, binary data
  messages, and ``error`` messages (``error`` code, ``errorType``, ``message``) for a request or
  program SignalFlow refuses.
- Binary data messages: a 20-byte header (version 1, message type 5, flags: 1 compressed with
  gzip, 2 JSON; a reserved byte; the channel name padded with NUL to 16 bytes), then the logical
  timestamp (8 bytes, ms), the count of points (4 bytes) and per point 17 bytes: the value type
  (1 long, 2 double, 3 int), the TSID (8 bytes) and the value (8 bytes), all big-endian.
- ``GET /v2/metric`` (REST API, header ``X-SF-Token``) lists metrics, ``limit`` at most 10000;
  401 without a valid token.

What a program publishes is scripted: :meth:`FakeSignalFlow.set_series` (one value per time
series, in one data message) or :meth:`FakeSignalFlow.set_values` (one time series over several
logical timestamps); a program nobody scripted publishes nothing. :meth:`FakeSignalFlow.refuse`
answers a program with an ``error`` message. Every connection's messages are recorded.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import struct
from dataclasses import dataclass, field
from typing import Any, Final, Self

from aiohttp import WSMsgType, web

__all__ = ["Conversation", "FakeSignalFlow"]

AUTHENTICATE_WITHIN: Final = 5.0
_EXECUTE_FIELDS: Final = frozenset({
    "type", "channel", "program", "start", "stop", "resolution", "maxDelay", "immediate",
    "timezone", "disableAllMetricPublishes", "disableAllEventPublishes"})
_INT_FIELDS: Final = ("start", "stop", "resolution", "maxDelay")


@dataclass
class Conversation:
    """One WebSocket connection: the upgrade's headers and every text message received."""

    headers: dict[str, str]
    received: list[dict[str, Any]] = field(default_factory=list)
    authenticated: bool = False

    def executes(self) -> list[dict[str, Any]]:
        return [message for message in self.received if message.get("type") == "execute"]


@dataclass
class FakeSignalFlow:
    """The stand-in: ``async with FakeSignalFlow(token="...") as fake:`` serves on ``fake.url``."""

    token: str
    host: str = "127.0.0.1"
    compress: bool = False
    """Send data messages gzip-compressed (flag 1), as SignalFlow may."""
    programs: dict[str, list[list[int | float]]] = field(default_factory=dict)
    refused: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    conversations: list[Conversation] = field(default_factory=list)
    metric_requests: list[dict[str, str]] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    def set_series(self, program: str, *values: int | float) -> None:
        """``program`` publishes one time series per value, in one data message."""
        self.programs[program] = [list(values)]

    def set_values(self, program: str, *values: int | float) -> None:
        """``program`` publishes one time series with a value per logical timestamp."""
        self.programs[program] = [[value] for value in values]

    def refuse(self, program: str, code: int, error_type: str, message: str) -> None:
        """``program`` is answered with an ``error`` message."""
        self.refused[program] = (code, error_type, message)

    def app(self) -> web.Application:
        application = web.Application()
        application.router.add_get("/v2/signalflow/connect", self._connect)
        application.router.add_get("/v2/metric", self._metrics)
        return application

    async def __aenter__(self) -> Self:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, 0).start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{self.host}:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        self.metric_requests.append({"query": request.query_string,
                                     "X-SF-Token": request.headers.get("X-SF-Token", "")})
        if request.headers.get("X-SF-Token") != self.token:
            return web.json_response({"code": 401, "message": "Unauthorized"}, status=401)
        limit = request.query.get("limit", "50")
        if not limit.isdigit() or not 1 <= int(limit) <= 10000:
            return web.json_response(
                {"code": 400, "message": f"limit must be between 1 and 10000: {limit}"},
                status=400)
        names = sorted(self.programs) or ["demo.trans.latency"]
        return web.json_response({"count": len(names), "results": [
            {"name": name, "type": "GAUGE"} for name in names[:int(limit)]]})

    async def _connect(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        conversation = Conversation(headers=dict(request.headers))
        self.conversations.append(conversation)
        try:
            first = await socket.receive(timeout=AUTHENTICATE_WITHIN)
        except TimeoutError:
            await socket.close(code=1008, message=b"authentication timed out")
            return socket
        message = self._json(first, conversation)
        if (message is None or message.get("type") != "authenticate"
                or message.get("token") != self.token):
            await socket.close(code=1008, message=b"invalid authentication")
            return socket
        conversation.authenticated = True
        await socket.send_json({"type": "authenticated", "orgId": "AAAAAAAAAAA",
                                "userId": "BBBBBBBBBBB"})
        async for incoming in socket:
            message = self._json(incoming, conversation)
            if message is None:
                await socket.close(code=1003, message=b"text JSON messages only")
                break
            if message.get("type") == "execute":
                await self._execute(socket, message)
            elif message.get("type") in ("detach", "stop", "authenticate", "keepalive"):
                continue
            else:
                await socket.send_json({"type": "error", "error": 400,
                                        "errorType": "INVALID_REQUEST",
                                        "message": f"unknown request type {message.get('type')}"})
        return socket

    @staticmethod
    def _json(message: Any, conversation: Conversation) -> dict[str, Any] | None:
        if message.type is not WSMsgType.TEXT:
            return None
        try:
            payload = json.loads(message.data)
        except ValueError:
            return None
        if not isinstance(payload, dict):
            return None
        conversation.received.append(payload)
        return payload

    async def _execute(self, socket: web.WebSocketResponse, request: dict[str, Any]) -> None:
        channel = str(request.get("channel", ""))
        problem = self._invalid(request)
        if problem:
            await socket.send_json({"type": "error", "channel": channel, "error": 400,
                                    "errorType": "INVALID_REQUEST", "message": problem})
            return
        program = request["program"]
        if program in self.refused:
            code, error_type, text = self.refused[program]
            await socket.send_json({"type": "error", "channel": channel, "error": code,
                                    "errorType": error_type, "message": text})
            return
        start = int(request.get("start", 0))
        await socket.send_json({"type": "control-message", "channel": channel,
                                "event": "STREAM_START", "timestampMs": start})
        await socket.send_json({"type": "control-message", "channel": channel,
                                "event": "JOB_START", "handle": "ChkVxy0AEAA",
                                "timestampMs": start})
        await socket.send_json({"type": "message", "channel": channel, "logicalTimestampMs": start,
                                "message": {"messageCode": "JOB_RUNNING_RESOLUTION",
                                            "messageLevel": "INFO",
                                            "contents": {"resolutionMs": 1000}}})
        batches = self.programs.get(program, [])
        width = max((len(batch) for batch in batches), default=0)
        for index in range(width):
            await socket.send_json({"type": "metadata", "channel": channel,
                                    "tsId": _tsid_text(index),
                                    "properties": {"sf_key": ["sf_metric"],
                                                   "sf_metric": "demo.trans.latency",
                                                   "sf_type": "MetricTimeSeries"}})
        for step, batch in enumerate(batches):
            await socket.send_bytes(_data_message(
                channel, timestamp=start + step * 1000, values=batch, compress=self.compress))
            await asyncio.sleep(0)
        if request.get("stop") is not None:
            await socket.send_json({"type": "control-message", "channel": channel,
                                    "event": "END_OF_CHANNEL",
                                    "timestampMs": int(request["stop"])})

    @staticmethod
    def _invalid(request: dict[str, Any]) -> str:
        """Why SignalFlow would refuse this execute request; empty when it is valid."""
        unknown = sorted(set(request) - _EXECUTE_FIELDS)
        if unknown:
            return f"unknown fields {unknown}"
        channel = request.get("channel")
        if not isinstance(channel, str) or not channel or len(channel.encode()) > 16:
            return "channel must be a name of 1 to 16 bytes"
        if not isinstance(request.get("program"), str) or not request["program"].strip():
            return "program is required"
        for name in _INT_FIELDS:
            value = request.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                return f"{name} must be an integer (ms)"
        if "immediate" in request and not isinstance(request["immediate"], bool):
            return "immediate must be a boolean"
        start, stop = request.get("start"), request.get("stop")
        if start is not None and stop is not None and stop <= start:
            return "stop must be after start"
        return ""


def _tsid(index: int) -> bytes:
    return struct.pack(">Q", 0xABCD0000 + index)


def _tsid_text(index: int) -> str:
    return base64.urlsafe_b64encode(_tsid(index)).decode().rstrip("=")


def _data_message(channel: str, *, timestamp: int, values: list[int | float],
                  compress: bool) -> bytes:
    body = struct.pack(">QI", timestamp, len(values))
    for index, value in enumerate(values):
        if isinstance(value, int):
            body += struct.pack(">B8sq", 1, _tsid(index), value)
        else:
            body += struct.pack(">B8sd", 2, _tsid(index), value)
    flags = 0
    if compress:
        body = gzip.compress(body)
        flags |= 0x01
    header = struct.pack(">BBBB16s", 1, 5, flags, 0, channel.encode("ascii"))
    return header + body
