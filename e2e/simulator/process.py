"""Runs the simulator as a separate process, for tests and scenarios.

A scenario starts it next to the controller, points a real Prometheus at :attr:`target`, and
sends load-test traffic to :attr:`ingress_url`; ``/backends`` tells which backend processes run
(with their pids, so a test can prove none outlives the simulator).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from e2e.cluster.localcluster import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]

__all__ = ["SimulatorProcess", "process_exists"]


def process_exists(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie awaiting its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X")


class SimulatorProcess:
    """``python -m e2e.simulator`` on free loopback ports, with its log in a temporary file."""

    def __init__(
        self,
        *,
        kubeconfig: Path | str,
        namespaces: Sequence[str],
        rps: float = 20.0,
        mesh: str = "istio",
        ingress: bool = True,
        args: Sequence[str] = (),
    ) -> None:
        self.metrics_port = free_port()
        self.ingress_port = free_port() if ingress else None
        self.args = [
            f"--kubeconfig={kubeconfig}", f"--metrics-port={self.metrics_port}",
            f"--rps={rps}", f"--mesh={mesh}", "--log-encoding=json",
            *(f"--namespace={ns}" for ns in namespaces),
            *([f"--ingress-port={self.ingress_port}"] if self.ingress_port else []),
            *args,
        ]
        self._log_file = Path(tempfile.mkstemp(prefix="flaggerpy-simulator-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    @property
    def target(self) -> str:
        """``host:port`` for a Prometheus scrape job."""
        return f"127.0.0.1:{self.metrics_port}"

    @property
    def ingress_url(self) -> str:
        if self.ingress_port is None:
            raise RuntimeError("the simulator was started without an ingress port")
        return f"http://127.0.0.1:{self.ingress_port}"

    def start(self) -> SimulatorProcess:
        with self._log_file.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "e2e.simulator", *self.args], cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        return self

    def get(self, path: str) -> tuple[int, str]:
        """Status and body of a GET on the metrics port (0 when nothing answers)."""
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except (urllib.error.URLError, OSError):
            return 0, ""

    def wait_ready(self, *, within: float = 60.0) -> SimulatorProcess:
        """Waits for ``/healthz``: informers synced and the first backends started."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.exit_code() is not None:
                raise RuntimeError(f"simulator exited {self.exit_code()}:\n{self.output()}")
            if self.get("/healthz")[0] == 200:
                return self
            time.sleep(0.1)
        raise TimeoutError(f"simulator not ready after {within}s:\n{self.output()}")

    def backends(self) -> list[dict[str, Any]]:
        """The running backends as ``/backends`` lists them."""
        status, body = self.get("/backends")
        if status != 200:
            raise RuntimeError(f"/backends answered {status}: {body}")
        backends: list[dict[str, Any]] = json.loads(body)
        return backends

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def output(self) -> str:
        return self._log_file.read_text(errors="replace")

    def terminate(self, *, within: float = 20.0) -> int:
        """SIGTERM, then the exit code (the simulator stops its backends first)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=within)

    def kill(self) -> None:
        """SIGKILL: no cleanup runs in the simulator itself."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """Ends the process whatever its state (teardown) and removes its log."""
        if self.process is not None and self.process.poll() is None:
            try:
                self.terminate()
            except subprocess.TimeoutExpired:
                self.kill()
        self._log_file.unlink(missing_ok=True)
