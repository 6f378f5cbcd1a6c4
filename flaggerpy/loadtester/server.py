"""The load tester's HTTP API, compatible with Flagger's ``flagger-loadtester``.

Paths and answers are Flagger's (``pkg/loadtester/server.go``); any method
is accepted on each, as Go's ``ServeMux`` does. Bodies are the webhook
payload ``{"name", "namespace", "phase", "checksum", "metadata"}``.

==================  =================================================================
``/healthz``        200 ``OK`` (never needs the token)
``/metrics``        Prometheus exposition (never needs the token)
``/gate/approve``   200 ``OK``
``/gate/halt``      403 ``Forbidden``
``/gate/check``     200 ``Approved`` if gate ``<name>.<namespace>`` is open, else 403
                    ``Forbidden``
``/gate/open``      opens it: 202; ``/gate/close`` closes it: 202
``/rollback/check`` 200 ``Approved`` if ``rollback.<name>.<namespace>`` is open, else 403
``/rollback/open``  202; ``/rollback/close``: 202
``/gate/list``      flaggerpy: ``{"gates": [{"key", "kind", "name", "namespace", "open"}]}``
any other path      a task from ``metadata`` (see :mod:`flaggerpy.loadtester.tasks`):
                    background 202, blocking 200 or 500 with the command's output
==================  =================================================================

Safer than Flagger's, without changing what a Canary has to say:

- every refusal is a 4xx with a sentence saying why (Flagger answers most
  with an empty 400 and crashes the request on an unknown task type);
- an optional token, compared in constant time, as ``Authorization: Bearer
  <token>`` or as the Basic-auth password, which is what Flagger's controller
  sends for a webhook URL ``http://token:<token>@flagger-loadtester.test/``;
- bodies are limited (413), task output is bounded, commands can be
  allowlisted (a ``cmd`` line with shell syntax counts as ``sh``), and a
  missing executable is a 400 rather than a 202 that fails unseen;
- retried blocking webhooks share one run (and, with flaggerpy's
  ``X-Flaggerpy-Delivery`` header, get the finished run's result); duplicate
  background tasks are not started twice.

Requests are handled concurrently on the event loop, and commands run as
asyncio subprocesses, so a long task never stalls other requests.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import re
from collections.abc import Awaitable, Callable
from typing import ClassVar, Final

import structlog
from aiohttp import web

from flaggerpy import logs
from flaggerpy.loadtester.config import LoadTesterSettings
from flaggerpy.loadtester.gates import GATE, ROLLBACK, GateKind, GateStore
from flaggerpy.loadtester.payload import RequestRejected, WebhookPayload, parse_payload
from flaggerpy.loadtester.runner import TaskRunner, TaskStopped
from flaggerpy.loadtester.tasks import TaskPolicy, plan_task
from flaggerpy.loadtester.telemetry import LoadTesterMetrics

__all__ = ["LoadTesterServer"]

log = structlog.get_logger(__name__)

_OPEN_PATHS: Final = frozenset({"/healthz", "/metrics"})
DELIVERY_HEADER: Final = "X-Flaggerpy-Delivery"
"""Sent by flaggerpy's controller, the same on every retry of one webhook call
(``flaggerpy.canary.webhooks.DELIVERY_HEADER``)."""
_DELIVERY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_REALM: Final = 'Bearer realm="flaggerpy-loadtester"'

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class LoadTesterServer:
    """The load tester as a manager ``Runnable``: serves until cancelled, then kills its tasks."""

    needs_leader_election: ClassVar[bool] = False

    def __init__(
            self,
            settings: LoadTesterSettings,
            *,
            metrics: LoadTesterMetrics | None = None,  # None: a new private registry
            gates: GateStore | None = None,
            policy: TaskPolicy | None = None,  # None: from settings
            shutdown_timeout: float = 1.0,  # seconds for in-flight requests once tasks are gone
    ) -> None:
        self.name = "loadtester"
        self.settings = settings
        self.metrics = metrics if metrics is not None else LoadTesterMetrics()
        self.gates = gates if gates is not None else GateStore()
        self.runner = TaskRunner(metrics=self.metrics, kill_grace=settings.kill_grace,
                                 max_output=settings.max_output_bytes,
                                 result_ttl=settings.result_ttl)
        self._policy = policy if policy is not None else TaskPolicy.from_settings(settings)
        self._namespaces = (re.compile(settings.namespace_regexp)
                            if settings.namespace_regexp else None)
        self._token = settings.token.encode()
        self._shutdown_timeout = shutdown_timeout
        self._bound_port: int | None = None
        self.serving = asyncio.Event()
        """Set once the socket is bound and requests are answered."""

    @property
    def port(self) -> int:
        """The bound port (useful with port 0); only valid once :attr:`serving` is set."""
        if self._bound_port is None:
            raise RuntimeError("the load tester is not serving")
        return self._bound_port

    def make_app(self) -> web.Application:
        """The aiohttp application, also usable on its own (e.g. with a test client)."""
        app = web.Application(client_max_size=self.settings.max_body_bytes,
                              middlewares=[self._guard])
        routes: list[tuple[str, Handler]] = [
            ("/healthz", self._healthz),
            ("/metrics", self._metrics),
            ("/gate/approve", self._approve),
            ("/gate/halt", self._halt),
            ("/gate/list", self._list_gates),
            ("/gate/check", self._gate(GATE, "check")),
            ("/gate/open", self._gate(GATE, "open")),
            ("/gate/close", self._gate(GATE, "close")),
            ("/rollback/check", self._gate(ROLLBACK, "check")),
            ("/rollback/open", self._gate(ROLLBACK, "open")),
            ("/rollback/close", self._gate(ROLLBACK, "close")),
            ("/{tail:.*}", self._task),  # everything else, as Go's "/" pattern
        ]
        for path, handler in routes:
            app.router.add_route("*", path, handler)
        return app

    async def start(self) -> None:
        """Serves until cancelled; then kills the running tasks and closes the socket."""
        runner = web.AppRunner(self.make_app(), access_log=None,
                               shutdown_timeout=self._shutdown_timeout)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.settings.host, self.settings.port)
            await site.start()
            self._bound_port = int(runner.addresses[0][1])
            self.serving.set()
            log.info("loadtester_started", **{**self.settings.describe(),
                                              "port": self._bound_port})
            await asyncio.Future()  # until cancelled
        finally:
            self.serving.clear()
            self._bound_port = None
            await self.runner.aclose()  # blocking requests in flight answer 503
            await runner.cleanup()
            log.info("loadtester_stopped")

    # --- middleware ------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Checks the token, and turns every refusal into a plain-text 4xx that says why."""
        try:
            if self._token and request.path not in _OPEN_PATHS:
                self._check_token(request.headers.get("Authorization", ""))
            return await handler(request)
        except RequestRejected as exc:
            self.metrics.rejected_request(exc.status)
            log.warning("request_rejected", status=exc.status, path=request.path,
                        method=request.method, reason=exc.message)
            headers = {"WWW-Authenticate": _REALM} if exc.status == 401 else None
            return web.Response(status=exc.status, text=exc.message, headers=headers)

    def _check_token(self, header: str) -> None:
        scheme, _, credentials = header.strip().partition(" ")
        if not scheme:
            raise RequestRejected(
                401, "missing credentials: this load tester requires a token "
                     "(Authorization: Bearer <token>, or http://token:<token>@host/ in the "
                     "webhook URL)")
        if scheme.lower() == "bearer":
            offered = credentials.strip()
        elif scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise RequestRejected(401, "malformed Basic credentials") from None
            offered = decoded.partition(":")[2]
        else:
            raise RequestRejected(
                401, f"unsupported authorization scheme {scheme!r}: use Bearer or Basic")
        if not hmac.compare_digest(offered.encode(), self._token):
            raise RequestRejected(401, "invalid token")

    # --- helpers ---------------------------------------------------------------------------

    async def _payload(self, request: web.Request) -> WebhookPayload:
        """Reads, parses and authorizes the webhook payload of a request."""
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise RequestRejected(
                413, f"request body of {request.content_length} bytes exceeds the limit of "
                     f"{limit} bytes (-max-body-bytes)")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise RequestRejected(
                413, f"request body exceeds the limit of {limit} bytes (-max-body-bytes)"
            ) from None
        payload = parse_payload(body)
        if self._namespaces is not None and not self._namespaces.search(payload.namespace):
            raise RequestRejected(
                403, f"Forbidden: namespace {payload.namespace!r} is not served by this load "
                     f"tester (-namespace-regexp {self._namespaces.pattern!r})")
        return payload

    # --- handlers --------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.render(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _approve(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def _halt(self, request: web.Request) -> web.Response:
        return web.Response(status=403, text="Forbidden")

    async def _list_gates(self, request: web.Request) -> web.Response:
        return web.json_response({"gates": [gate.to_dict() for gate in self.gates.list()]})

    def _gate(self, kind: GateKind, action: str) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            payload = await self._payload(request)
            where = {"name": payload.name, "namespace": payload.namespace}
            with logs.bound_canary(payload.name, payload.namespace):
                if action == "check":
                    approved = self.gates.is_open(kind, **where)
                    self.metrics.gate_checked(kind, approved=approved)
                    log.info("gate_checked", gate=kind, approved=approved)
                    if approved:
                        return web.Response(text="Approved")
                    return web.Response(status=403, text="Forbidden")
                if action == "open":
                    self.gates.open(kind, **where)
                    log.info("gate_opened", gate=kind)
                    return web.Response(status=202, text=f"{kind} {payload.canary} opened")
                self.gates.close(kind, **where)
                log.info("gate_closed", gate=kind)
                return web.Response(status=202, text=f"{kind} {payload.canary} closed")

        return handle

    async def _task(self, request: web.Request) -> web.Response:
        payload = await self._payload(request)
        with logs.bound_canary(payload.name, payload.namespace):
            spec = plan_task(payload, self._policy)
            for note in spec.notes:
                log.warning("task_metadata_adjusted", note=note)
            try:
                if not spec.blocking:
                    started = self.runner.start_background(spec)
                    return web.Response(
                        status=202, text="task started" if started else "task already running")
                outcome = await self.runner.run_blocking(spec, delivery=_delivery(request))
            except TaskStopped as exc:
                return web.Response(status=503, text=str(exc))
        result = outcome.result
        if result.ok:
            return web.Response(text=result.output if spec.return_output else "")
        # Flagger's wording: "command %s failed: %s: %w" (command, output, exit error).
        return web.Response(
            status=500,
            text=f"command {spec.command} failed: {result.output.rstrip()}: {result.reason}")


def _delivery(request: web.Request) -> str:
    """The webhook call's delivery id, or "" if absent or not a plausible id."""
    value = request.headers.get(DELIVERY_HEADER, "").strip()
    return value if _DELIVERY.match(value) else ""
