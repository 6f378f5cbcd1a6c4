"""The /metrics, /healthz and /readyz server the process runs on every replica.

It serves what a :class:`~flaggerpy.telemetry.Recorder` holds. The engine records into the
Recorder (``flaggerpy.telemetry``) and never sees this server; the composition root builds both
and runs the server beside the caches and controllers, so it lives in the process layer
(``.importlinter``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ClassVar

import structlog
from aiohttp import web

from flaggerpy.telemetry import Recorder

log = structlog.get_logger(__name__)


class TelemetryServer:
    """Serves ``/metrics``, ``/healthz`` and ``/readyz`` from inside the event loop.

    ``/healthz`` answers 200 as long as the loop serves requests (liveness);
    ``/readyz`` answers 200 only once ``ready()`` is true (typically: the
    informer caches have synced), else 503. Runs on every replica, leader or
    not, so standbys are scraped and probed too. Access logs are off: probes
    and scrapes every few seconds are noise.
    """

    needs_leader_election: ClassVar[bool] = False

    def __init__(
            self,
            recorder: Recorder,
            *,
            host: str = "0.0.0.0",
            port: int = 8080,  # 0: any free port, see .port once .serving is set
            ready: Callable[[], bool] = lambda: True,
            shutdown_timeout: float = 1.0,
    ) -> None:
        self.name = "telemetry"
        self._recorder = recorder
        self._host = host
        self._port = port
        self._ready = ready
        self._shutdown_timeout = shutdown_timeout
        self._bound_port: int | None = None
        self.serving = asyncio.Event()
        """Set once the socket is bound and requests are answered."""

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``); only valid once :attr:`serving` is set."""
        if self._bound_port is None:
            raise RuntimeError("the telemetry server is not serving")
        return self._bound_port

    def make_app(self) -> web.Application:
        """The aiohttp application, also usable on its own (e.g. with a test client)."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def start(self) -> None:
        """Serves until cancelled, then closes the socket and in-flight requests."""
        runner = web.AppRunner(
            self.make_app(), access_log=None, shutdown_timeout=self._shutdown_timeout
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
            address = runner.addresses[0]
            self._bound_port = int(address[1])
            self.serving.set()
            log.info("telemetry_server_started", host=self._host, port=self._bound_port)
            await asyncio.Future()  # until cancelled
        finally:
            self.serving.clear()
            self._bound_port = None
            await runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = self._recorder.render(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="OK")
        return web.Response(status=503, text="not ready")
