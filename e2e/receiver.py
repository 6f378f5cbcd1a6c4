"""A webhook endpoint whose answers a scenario sets: gates that say no, then yes.

It records every POST (path and JSON body), so a scenario can check what the controller sent
and in which order, and answers each path with the status the scenario chose (200 by default).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serves ``app`` on a free loopback port; a slow handler does not delay the shutdown."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    return runner, int(getattr(server, "sockets", [])[0].getsockname()[1])


@dataclass(frozen=True)
class Call:
    path: str
    body: dict[str, Any]


class WebhookReceiver:
    """``url(path)`` for a Canary webhook; ``answer(path, status)`` decides its fate."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._answers: dict[str, int] = {}
        self._delays: dict[str, float] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    def answer(self, path: str, status: int, *, delay: float = 0.0) -> None:
        """Answer ``path`` with ``status``, after ``delay`` seconds (a slow or hung endpoint)."""
        self._answers[path] = status
        self._delays[path] = delay

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [call.body for call in self.calls if call.path == path]

    async def _handle(self, request: web.Request) -> web.Response:
        text = await request.text()
        try:
            body = json.loads(text) if text else {}
        except ValueError:
            body = {"_raw": text}
        self.calls.append(Call(request.path, body))
        await asyncio.sleep(self._delays.get(request.path, 0.0))
        status = self._answers.get(request.path, 200)
        return web.Response(status=status, text="ok" if status < 300 else "refused by the test")

    async def start(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self.port = await serve(app)
        return self

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
