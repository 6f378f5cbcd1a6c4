"""A real Prometheus (Debian's package) on loopback, for tests, scenarios and the demo.

It scrapes the targets it is given every second, keeps its data in a temporary folder and is
stopped by pid, so nothing outlives the test or scenario that started it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from e2e.cluster.localcluster import free_port
from e2e.processes import LocalServer

BINARY = "prometheus"


@dataclass(frozen=True)
class ScrapeJob:
    """One scrape job: a name and ``host:port`` targets."""

    name: str
    targets: Sequence[str]
    metrics_path: str = "/metrics"


def binary() -> str:
    found = shutil.which(BINARY) or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if not found:
        raise FileNotFoundError(
            "prometheus not found: install Debian's package (make test runs apt-get install)"
        )
    return found


class LocalPrometheus(LocalServer):
    """Starts on ``start()`` (or ``with``), answers PromQL through :meth:`query`."""

    def __init__(self, jobs: Sequence[ScrapeJob], *, scrape_interval: str = "1s") -> None:
        self.jobs = list(jobs)
        self.scrape_interval = scrape_interval
        self.port = 0
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> str:
        jobs = [
            {
                "job_name": job.name,
                "metrics_path": job.metrics_path,
                "static_configs": [{"targets": list(job.targets)}],
            }
            for job in self.jobs
        ]
        config = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": "1s"},
            "scrape_configs": jobs,
        }
        return json.dumps(config, indent=2)  # JSON is YAML

    def start(self, *, timeout: float = 30.0) -> LocalPrometheus:
        self._dir = tempfile.TemporaryDirectory(prefix="flaggerpy-prometheus-")
        folder = Path(self._dir.name)
        (folder / "prometheus.yml").write_text(self._config())
        self.port = free_port()
        log = (folder / "prometheus.log").open("wb")
        self._process = subprocess.Popen(
            [
                binary(),
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(folder / 'prometheus.log').read_text()}")
            if self._ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError("prometheus did not become ready")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def query(self, promql: str) -> list[dict[str, object]]:
        """An instant query's result vector (``data.result``)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {body}")
        result: list[dict[str, object]] = body["data"]["result"]
        return result

    def targets_up(self) -> dict[str, str]:
        """Health of each active target by scrape URL (``up``, ``down`` or ``unknown``)."""
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10) as response:
            body = json.load(response)
        return {t["scrapeUrl"]: t["health"] for t in body["data"]["activeTargets"]}
