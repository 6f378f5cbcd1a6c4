"""The simulator's two HTTP listeners: the scrape/inspection port and the ingress port.

- Metrics port: ``/metrics`` (the mesh adapter's series, Prometheus text format), ``/healthz``
  (200 once the first backend sync is done, 503 before), ``/backends`` and ``/streams`` (JSON: the
  running backend processes with their pids and ports, the VirtualServices generating traffic).
- Ingress port: any request, routed by its ``Host`` header through the data plane exactly like
  generated traffic (the VirtualService for that host if there is one, else straight to the
  Service), so ``hey -host podinfo-canary.test http://127.0.0.1:<port>/`` run by a load-test
  webhook produces mesh traffic and metrics.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from e2e.simulator.backends import BackendPool
from e2e.simulator.routing import Request
from e2e.simulator.traffic import INGRESS, DataPlane, TrafficGenerator

__all__ = ["ingress_app", "metrics_app", "serve"]


def metrics_app(
    registry: CollectorRegistry,
    *,
    backends: BackendPool,
    generator: TrafficGenerator,
    ready: Callable[[], bool],
) -> web.Application:
    """``/metrics``, ``/healthz``, ``/backends`` and ``/streams``."""

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok" if ready() else "syncing", status=200 if ready() else 503)

    async def list_backends(_: web.Request) -> web.Response:
        return web.json_response([b.describe() for b in backends.all()])

    async def list_streams(_: web.Request) -> web.Response:
        return web.json_response({"rate_per_stream": generator.rate(),
                                  "streams": [str(key) for key in generator.streams]})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/backends", list_backends)
    app.router.add_get("/streams", list_streams)
    return app


def ingress_app(plane: DataPlane, *, namespace: str) -> web.Application:
    """Routes every request by its ``Host``; short host names are taken as in ``namespace``."""

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        routed = Request(
            host=request.headers.get("Host") or request.host, path=request.path_qs,
            method=request.method, headers=headers,
            source_namespace=INGRESS.namespace, source_labels=INGRESS.labels)
        response = await plane.send(routed, source=INGRESS, namespace=namespace, body=body)
        return web.Response(status=response.status, body=response.body,
                            headers=CIMultiDict(response.headers))

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def serve(app: web.Application, *, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Starts ``app`` on ``host:port`` (0: a free port); returns the runner and the bound port."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, shutdown_timeout=2.0)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    return runner, int(sockets[0].getsockname()[1])
