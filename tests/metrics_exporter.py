"""A metrics endpoint the test controls, for a real Prometheus to scrape.

Metric providers and the analysis are tested against a real Prometheus (``e2e.prometheus``),
so PromQL is evaluated by Prometheus itself: ``rate()``, ``histogram_quantile()``, NaN and
empty answers are what they are in production. Something has to produce the series, and
this does: an aiohttp server on 127.0.0.1, in its own thread so that it outlives the event
loop of any one test, serving the text exposition format.

Counters grow linearly from the moment they are declared (``per_second``), so ``rate()`` over
any window answers that rate once Prometheus has two samples in the window; gauges hold a
value. Each test declares series with labels of its own, so tests do not disturb each other.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True, slots=True)
class _Series:
    name: str
    labels: tuple[tuple[str, str], ...]
    per_second: float  # 0 for a gauge
    value: float  # the gauge's value, or the counter's value when declared
    since: float


class MetricsExporter:
    """Serves ``/metrics`` from a background thread; start with ``with`` or :meth:`start`."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, tuple[tuple[str, str], ...]], _Series] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.scrapes = 0

    @property
    def target(self) -> str:
        """``127.0.0.1:<port>``, as a Prometheus scrape target."""
        return f"127.0.0.1:{self.port}"

    def counter(self, name: str, labels: Mapping[str, str], *, per_second: float) -> None:
        """A counter that starts at 0 now and grows by ``per_second`` every second."""
        self._put(_Series(name, tuple(sorted(labels.items())), per_second, 0.0, time.time()))

    def gauge(self, name: str, labels: Mapping[str, str], value: float) -> None:
        """A gauge that holds ``value``."""
        self._put(_Series(name, tuple(sorted(labels.items())), 0.0, value, time.time()))

    def _put(self, series: _Series) -> None:
        with self._lock:
            self._series[(series.name, series.labels)] = series

    def exposition(self) -> str:
        """The text format, every counter evaluated at the same instant."""
        now = time.time()
        lines = []
        with self._lock:
            series = list(self._series.values())
        for s in series:
            value = s.value + s.per_second * (now - s.since)
            labels = ",".join(f'{k}="{v}"' for k, v in s.labels)
            lines.append(f"{s.name}{{{labels}}} {value!r}")
        return "\n".join(lines) + "\n"

    async def _handle(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        return web.Response(text=self.exposition(), content_type="text/plain")

    def start(self) -> MetricsExporter:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_get("/metrics", self._handle)
            runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            self.port = int(runner.addresses[0][1])
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(runner.cleanup())
                loop.close()

        self._thread = threading.Thread(target=run, name="metrics-exporter", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise TimeoutError("the metrics exporter did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None
            self._thread = None

    def __enter__(self) -> MetricsExporter:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
