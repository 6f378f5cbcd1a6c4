"""One simulated application version: a real HTTP server that behaves as its pod template says.

``python -m e2e.simulator.backend --fault-rate 0.5 --latency-ms 20 --version podinfo:6.0.1``
serves every path on loopback: it waits the latency (plus a uniform jitter), then answers 500 for
a ``--fault-rate`` share of requests and 200 otherwise, with a small JSON body naming its version
and the header ``X-Version``. The simulator starts one per ready Deployment version
(``backends.py``); requests reach it through the simulated mesh.

It binds the given port, or a free one with ``--port 0``, and prints ``{"port": N, "pid": P}`` as
its first stdout line so its parent learns the port without racing for it.

It never outlives its parent: it exits on SIGTERM/SIGINT and, with ``--exit-on-stdin-eof`` (the
simulator always passes it), as soon as its stdin reaches end of file. The simulator holds the
write end of that pipe, so even a SIGKILLed simulator (which runs no cleanup) takes its backends
with it: the kernel closes the pipe.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

__all__ = ["BackendBehaviour", "main", "make_app"]


class BackendBehaviour:
    """Fault rate, latency and version of one backend; the only state its handler reads."""

    def __init__(
        self,
        *,
        version: str,
        fault_rate: float = 0.0,
        latency_ms: float = 0.0,
        latency_jitter_ms: float = 0.0,
        name: str = "",
        rng: random.Random | None = None,
    ) -> None:
        self.version = version
        self.fault_rate = min(1.0, max(0.0, fault_rate))
        self.latency_ms = max(0.0, latency_ms)
        self.latency_jitter_ms = max(0.0, latency_jitter_ms)
        self.name = name
        self.rng = rng or random.Random()

    def delay(self) -> float:
        """Seconds to wait before answering: latency plus a uniform draw in [0, jitter]."""
        jitter = self.rng.uniform(0.0, self.latency_jitter_ms) if self.latency_jitter_ms else 0.0
        return (self.latency_ms + jitter) / 1000.0

    def fails(self) -> bool:
        return self.rng.random() < self.fault_rate


def make_app(behaviour: BackendBehaviour) -> web.Application:
    """The backend's aiohttp application: one handler for every method and path."""

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        delay = behaviour.delay()
        if delay > 0:
            await asyncio.sleep(delay)
        status = 500 if behaviour.fails() else 200
        body = {"version": behaviour.version, "name": behaviour.name, "status": status,
                "path": request.path_qs}
        return web.json_response(body, status=status, headers={"X-Version": behaviour.version})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def _serve(args: argparse.Namespace) -> None:
    behaviour = BackendBehaviour(
        version=args.version, fault_rate=args.fault_rate, latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms, name=args.name,
        rng=random.Random(args.seed) if args.seed is not None else None)
    runner = web.AppRunner(make_app(behaviour), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, shutdown_timeout=2.0)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    port = int(sockets[0].getsockname()[1])
    sys.stdout.write(json.dumps({"port": port, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = None
    if args.exit_on_stdin_eof:
        watcher = asyncio.create_task(_wait_eof())
        watcher.add_done_callback(lambda _: stop.set())
    try:
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        await runner.cleanup()


async def _wait_eof() -> None:
    """Returns when stdin reaches end of file: the parent closed the pipe, or died."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m e2e.simulator.backend",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--version", required=True, help="reported version (the image)")
    parser.add_argument("--name", default="", help="the Deployment it stands for")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of 500s, 0..1")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--latency-jitter-ms", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--exit-on-stdin-eof", action="store_true",
                        help="exit when stdin (a pipe from the parent) closes")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
