"""Runs ``flaggerpy`` itself as a separate process, the way a cluster would run it.

Tests and scenarios start the real console script against the local control plane, read its JSON
log lines and stop it with the signal Kubernetes would send. The controller process is
:class:`flaggerpy.testing.ControllerProcess`, the one plugin packages test with too.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

from e2e.cluster.localcluster import free_port
from flaggerpy.testing import FLAGGERPY, ControllerProcess

__all__ = ["FLAGGERPY", "RUN_TAG", "ControllerProcess", "LoadTesterProcess", "LocalServer",
           "tagged_processes", "wait_until_gone"]

RUN_TAG = "FLAGGERPY_E2E_RUN"
"""An environment variable a run sets so that everything it starts can be found afterwards."""


def tagged_processes(tag: str) -> dict[int, str]:
    """Live processes whose environment has ``RUN_TAG=tag``, as pid -> command line.

    The environment is inherited by every child and grandchild, also those
    that start their own session or were re-parented after their parent
    died, so this finds what a run left behind where a process tree would
    not. The calling process itself is left out.
    """
    needle = f"{RUN_TAG}={tag}".encode()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours
            continue
        if command:  # a zombie has none: it is dead, only not yet reaped
            found[int(entry.name)] = command.strip()
    return found


def wait_until_gone(tag: str, *, within: float = 10.0) -> dict[int, str]:
    """What is still running with ``tag`` after up to ``within`` seconds (empty: nothing)."""
    deadline = time.monotonic() + within
    left = tagged_processes(tag)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = tagged_processes(tag)
    return left


class LoadTesterProcess:
    """``flaggerpy loadtester`` on a free loopback port, as a Canary's webhooks would call it."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.args = ["-host=127.0.0.1", f"-port={self.port}", *args]
        self._log_file = Path(tempfile.mkstemp(prefix="flaggerpy-loadtester-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 20.0) -> LoadTesterProcess:
        with self._log_file.open("wb") as log:
            self.process = subprocess.Popen(
                [FLAGGERPY, "loadtester", *self.args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"loadtester exited: {self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise TimeoutError(f"loadtester not serving after {timeout}s: {self.output()}")

    def gate(self, action: str, canary: str) -> subprocess.CompletedProcess[str]:
        """``flaggerpy gate <action> <canary>`` against this load tester."""
        return subprocess.run(
            [FLAGGERPY, "gate", action, canary, f"--url={self.url}"],
            capture_output=True, text=True, timeout=20, check=False,
        )

    def output(self) -> str:
        return self._log_file.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.unlink(missing_ok=True)


class LocalServer:
    """A server the tests run as one process with a temporary folder of its own (Prometheus,
    moto, influxd): :meth:`stop` ends the process (killed if it does not exit in 10 s) and
    removes the folder; a ``with`` block starts and stops it."""

    _dir: tempfile.TemporaryDirectory[str] | None = None
    _process: subprocess.Popen[bytes] | None = None

    def start(self) -> object:
        raise NotImplementedError

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
