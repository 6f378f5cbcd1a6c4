"""A tiny Prometheus exporter whose values a test sets: the "application" metrics of a scenario.

A real Prometheus scrapes it, and the canary's MetricTemplates query that Prometheus, so the
analysis path is the real one end to end; only the numbers are chosen by the test.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from e2e.receiver import serve


def _labels(labels: Mapping[str, str]) -> str:
    inner = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    return "{" + inner + "}" if inner else ""


class GaugeExporter:
    """Serves gauges on ``/metrics``; ``set()`` changes what the next scrape sees."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    def set(self, name: str, value: float, **labels: str) -> None:
        self._values[(name, tuple(sorted(labels.items())))] = value

    def remove(self, name: str, **labels: str) -> None:
        self._values.pop((name, tuple(sorted(labels.items()))), None)

    def render(self) -> str:
        lines = []
        for (name, labels), value in sorted(self._values.items()):
            lines.append(f"{name}{_labels(dict(labels))} {value}")
        return "\n".join(lines) + "\n"

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.render(), content_type="text/plain")

    async def start(self) -> GaugeExporter:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner, self.port = await serve(app)
        return self

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
