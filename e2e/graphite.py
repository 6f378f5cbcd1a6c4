"""A real Graphite (Debian's ``graphite-carbon`` and ``graphite-web``) on loopback, for tests.

Two processes, both started here with their own configuration in a temporary folder, so no
system service, root-owned path or fixed port is used:

- ``carbon-cache`` (Twisted, in the foreground) takes datapoints on its plaintext port
  (``<path> <value> <timestamp>\\n``, :meth:`LocalGraphite.send`) and writes them to whisper
  files with a one-second resolution kept for an hour. It also answers graphite-web's
  "carbonlink" queries for points not yet written, so a point is readable as soon as carbon
  has read it from the socket.
- ``graphite-web`` is a Django app. Django's own development server runs it
  (``/usr/bin/python3 -m django runserver``: Django is a dependency of the Debian package, so
  nothing more is installed; it is threaded, which is all a test needs). Its settings are
  ``graphite.settings`` reading a ``local_settings`` module of ours through
  ``GRAPHITE_SETTINGS_MODULE``, which graphite-web supports for exactly this. The render API
  (``/render?target=...&format=json``) needs no database, so none is migrated.

Both run under Debian's ``/usr/bin/python3`` (the packages install into its dist-packages), never
the virtualenv's interpreter, and are stopped by pid.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from e2e.cluster.localcluster import free_port

SYSTEM_PYTHON = "/usr/bin/python3"
CARBON_CACHE = "carbon-cache"
RETENTIONS = "1s:1h"
"""Every series: one point per second, for an hour."""

_LOCAL_SETTINGS = "flaggerpy_graphite_settings"


def _carbon_cache() -> str:
    found = shutil.which(CARBON_CACHE) or (
        "/usr/bin/carbon-cache" if Path("/usr/bin/carbon-cache").exists() else None)
    graphite_web = Path("/usr/lib/python3/dist-packages/graphite/wsgi.py")
    if not found or not graphite_web.exists():
        raise FileNotFoundError(
            "graphite not found: install Debian's graphite-carbon and graphite-web"
            " (make debian-deps)")
    return found


class LocalGraphite:
    """carbon-cache and graphite-web on free loopback ports; ``with`` starts and stops both."""

    def __init__(self) -> None:
        self.line_port = 0
        self.web_port = 0
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """graphite-web's address, what a MetricTemplate's ``provider.address`` names."""
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def folder(self) -> Path:
        assert self._dir is not None, "not started"
        return Path(self._dir.name)

    def start(self, *, timeout: float = 60.0) -> LocalGraphite:
        carbon = _carbon_cache()
        self._dir = tempfile.TemporaryDirectory(prefix="flaggerpy-graphite-")
        folder = self.folder
        for sub in ("whisper", "log/carbon", "log/webapp"):
            (folder / sub).mkdir(parents=True)
        self.line_port, self.web_port = free_port(), free_port()
        pickle_port, query_port = free_port(), free_port()
        (folder / "carbon.conf").write_text(_carbon_conf(
            folder, line_port=self.line_port, pickle_port=pickle_port, query_port=query_port))
        (folder / "storage-schemas.conf").write_text(
            f"[everything]\npattern = .*\nretentions = {RETENTIONS}\n")
        (folder / f"{_LOCAL_SETTINGS}.py").write_text(_local_settings(folder, query_port))
        try:
            self._spawn("carbon", [
                carbon, f"--config={folder / 'carbon.conf'}", f"--pidfile={folder / 'carbon.pid'}",
                f"--logdir={folder / 'log/carbon'}", "--nodaemon", "start",
            ])
            self._spawn("web", [
                SYSTEM_PYTHON, "-m", "django", "runserver", "--noreload",
                "--settings=graphite.settings", f"127.0.0.1:{self.web_port}",
            ], env={"PYTHONPATH": str(folder), "GRAPHITE_SETTINGS_MODULE": _LOCAL_SETTINGS})
            deadline = time.monotonic() + timeout
            while not (self._listening(self.line_port) and self._listening(query_port)
                       and self._web_ready()):
                for process in self._processes:
                    if process.poll() is not None:
                        raise RuntimeError(f"graphite exited:\n{self.logs()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"graphite did not become ready:\n{self.logs()}")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        # A clean environment: nothing of the test's virtualenv reaches Debian's Python.
        base = {k: v for k, v in os.environ.items()
                if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
        log = (self.folder / f"{name}.out").open("wb")
        self._processes.append(subprocess.Popen(
            argv, cwd=self.folder, env={**base, **(env or {})},
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        ))
        log.close()

    @staticmethod
    def _listening(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    def _web_ready(self) -> bool:
        try:
            self.render("target=flaggerpy.ready")
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return True

    def logs(self) -> str:
        """What both processes wrote, for a failing test's message."""
        if self._dir is None:
            return ""
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
                         for path in sorted(self.folder.glob("*.out")))

    def render_requests(self) -> list[str]:
        """The query strings of the ``/render`` requests graphite-web answered, from its log."""
        log = self.folder / "web.out"
        text = log.read_text(errors="replace") if log.exists() else ""
        return re.findall(r'"GET /render\?(\S*) HTTP/1\.[01]"', text)

    def send(self, points: Iterable[tuple[str, float, float | None]]) -> None:
        """Sends ``(path, value, timestamp or None for now)`` over carbon's plaintext protocol."""
        now = time.time()
        lines = "".join(f"{path} {value} {int(now if at is None else at)}\n"
                        for path, value, at in points)
        with socket.create_connection(("127.0.0.1", self.line_port), timeout=5) as sock:
            sock.sendall(lines.encode())

    def render(self, query: str) -> list[dict[str, object]]:
        """graphite-web's JSON answer to ``/render?<query>&format=json``, read directly."""
        with urllib.request.urlopen(f"{self.url}/render?{query}&format=json",
                                    timeout=10) as response:
            answer: list[dict[str, object]] = json.load(response)
        return answer

    def wait_for(self, path: str, value: float, *, timeout: float = 15.0) -> None:
        """Waits until the render API's last non-null point of ``path`` is ``value``."""
        deadline = time.monotonic() + timeout
        while True:
            answer = self.render(f"target={path}&from=-5min")
            points = [p[0] for t in answer for p in t["datapoints"]  # type: ignore[attr-defined]
                      if p[0] is not None]
            if points and points[-1] == value:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"graphite never answered {value} for {path}: {answer}")
            time.sleep(0.1)

    def stop(self) -> None:
        for process in reversed(self._processes):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes = []
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> LocalGraphite:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _carbon_conf(folder: Path, *, line_port: int, pickle_port: int, query_port: int) -> str:
    return f"""[cache]
STORAGE_DIR = {folder}/
LOCAL_DATA_DIR = {folder}/whisper/
CONF_DIR = {folder}/
LOG_DIR = {folder}/log/carbon/
PID_DIR = {folder}/
USER =
DATABASE = whisper
ENABLE_TAGS = False
MAX_CACHE_SIZE = inf
MAX_UPDATES_PER_SECOND = 500
MAX_CREATES_PER_MINUTE = inf
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = {line_port}
ENABLE_UDP_LISTENER = False
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = {pickle_port}
CACHE_QUERY_INTERFACE = 127.0.0.1
CACHE_QUERY_PORT = {query_port}
LOG_LISTENER_CONN_SUCCESS = False
"""


def _local_settings(folder: Path, query_port: int) -> str:
    return f"""# graphite-web settings for one test run (read through GRAPHITE_SETTINGS_MODULE)
SECRET_KEY = "flaggerpy-tests-only"
STORAGE_DIR = {str(folder)!r}
WHISPER_DIR = {str(folder / "whisper")!r}
LOG_DIR = {str(folder / "log/webapp")!r}
INDEX_FILE = {str(folder / "index")!r}
CARBONLINK_HOSTS = ["127.0.0.1:{query_port}"]
DATABASES = {{"default": {{"NAME": {str(folder / "graphite.db")!r},
                           "ENGINE": "django.db.backends.sqlite3"}}}}
TAGDB = ""
DEFAULT_XFILES_FACTOR = 0
"""
