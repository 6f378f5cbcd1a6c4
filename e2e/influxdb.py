"""A real InfluxDB that runs Flux, built from its Go module and started on loopback for tests.

Debian's InfluxDB (1.6) has no Flux, and Flagger's provider speaks only Flux
(``/api/v2/query``). InfluxDB 1.8 serves that endpoint with ``flux-enabled = true`` and builds
from its module with Go alone (its Flux is pure Go; 2.x needs Rust for libflux), so
``influxd`` of the pinned :data:`VERSION` is built once with ``go install`` and cached outside
the clone in ``~/.cache/flaggerpy/influxdb/<version>/`` (``FLAGGERPY_CACHE`` moves the root),
like the control plane's binaries (``e2e/cluster/build.py``). A first build takes a few
minutes; ``python -m e2e.influxdb`` builds ahead of the tests.

:class:`LocalInfluxDB` starts it on free loopback ports with a temporary data folder,
authentication on and one admin user, so a Flux query needs ``Authorization: Token
<user>:<password>`` (1.8's spelling of a token), creates databases and writes points with the
line protocol; it is stopped by pid, so nothing outlives the test that started it.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from e2e.cluster.localcluster import free_port
from e2e.processes import LocalServer

VERSION = "v1.8.3"
"""The pinned InfluxDB release: the last 1.x whose Flux builds without Rust."""

MODULE = "github.com/influxdata/influxdb/cmd/influxd"
CACHE_ROOT = Path(os.environ.get("FLAGGERPY_CACHE", Path.home() / ".cache" / "flaggerpy"))
USERNAME = "flaggerpy"
PASSWORD = "influx-test-password"


def _log(message: str) -> None:
    print(f"[e2e/influxdb] {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    return CACHE_ROOT / "influxdb" / VERSION


def ensure_binary() -> Path:
    """The cached ``influxd`` of :data:`VERSION`, built first if missing (one build at a time)."""
    target = cache_dir() / "influxd"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be building it
        if target.exists():
            return target
        started = time.monotonic()
        _log(f"go install {MODULE}@{VERSION} (a first build takes minutes)")
        env = dict(os.environ, CGO_ENABLED="0")
        with tempfile.TemporaryDirectory(dir=target.parent) as out:
            env["GOBIN"] = out
            subprocess.run(
                ["go", "install", "-trimpath", "-ldflags=-s -w", f"{MODULE}@{VERSION}"],
                env=env, check=True,
            )
            os.replace(Path(out) / "influxd", target)
        _log(f"built influxd {VERSION} in {time.monotonic() - started:.0f}s")
    return target


class LocalInfluxDB(LocalServer):
    """Starts on ``start()`` (or ``with``); :meth:`write` and :meth:`create_database` feed it."""

    def __init__(self) -> None:
        self.port = 0
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        """What ``Authorization: Token`` carries on 1.8: ``<user>:<password>``."""
        return f"{USERNAME}:{PASSWORD}"

    def _config(self, folder: Path, rpc_port: int) -> str:
        return f"""
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{folder / 'meta'}"
[data]
  dir = "{folder / 'data'}"
  wal-dir = "{folder / 'wal'}"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{self.port}"
  auth-enabled = true
  flux-enabled = true
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
"""

    def start(self, *, timeout: float = 120.0) -> LocalInfluxDB:
        binary = ensure_binary()
        self._dir = tempfile.TemporaryDirectory(prefix="flaggerpy-influxdb-")
        folder = Path(self._dir.name)
        self.port = free_port()
        (folder / "influxdb.conf").write_text(self._config(folder, free_port()))
        log = (folder / "influxd.log").open("wb")
        self._process = subprocess.Popen(
            [str(binary), "run", "-config", str(folder / "influxdb.conf")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"influxd exited: {(folder / 'influxd.log').read_text()}")
            if self._ready():
                # With auth on and no user yet, 1.x lets exactly this statement through.
                self.influxql(f"CREATE USER {USERNAME} WITH PASSWORD '{PASSWORD}'"
                              " WITH ALL PRIVILEGES", auth=False)
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError("influxd did not become ready")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as response:
                return bool(response.status == 204)
        except (urllib.error.URLError, OSError):
            return False

    def _request(self, path: str, *, data: bytes | None = None, auth: bool = True) -> bytes:
        request = urllib.request.Request(f"{self.url}{path}", data=data, method="POST")
        if auth:
            basic = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
            request.add_header("Authorization", f"Basic {basic}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                body: bytes = response.read()
                return body
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{path}: HTTP {exc.code}: {exc.read()!r}") from exc

    def influxql(self, statement: str, *, auth: bool = True) -> bytes:
        """Runs one InfluxQL statement (``CREATE DATABASE``, ``CREATE USER``, ...)."""
        return self._request("/query?" + urllib.parse.urlencode({"q": statement}), auth=auth)

    def create_database(self, name: str) -> None:
        self.influxql(f'CREATE DATABASE "{name}"')

    def write(self, database: str, lines: str, *, precision: str = "s") -> None:
        """Writes points in the line protocol (``measurement,tag=v field=1.5 <time>``)."""
        query = urllib.parse.urlencode({"db": database, "precision": precision})
        self._request(f"/write?{query}", data=lines.encode())

    def log(self) -> str:
        return (Path(self._dir.name) / "influxd.log").read_text() if self._dir else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--print-dir", action="store_true", help="only print the cache folder")
    args = parser.parse_args(argv)
    if args.print_dir:
        print(cache_dir())
        return 0
    print(ensure_binary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
