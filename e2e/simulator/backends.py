"""Backend processes: one real HTTP server per ready Deployment version.

Pods here are fake (kwok), so each Deployment that *would* be serving gets a stand-in process
(``python -m e2e.simulator.backend``) whose behaviour comes from the pod template, the way a
test image would read its environment:

- ``FAULT_RATE``: share of requests answered 500 (0..1);
- ``LATENCY_MS`` and ``LATENCY_JITTER_MS``: added latency, plus a uniform jitter;
- the first container's image is the version it reports.

A Deployment has a backend only while it has ready replicas (``spec.replicas`` > 0 and
``status.readyReplicas`` > 0), as a Service only has endpoints then. When the template changes
(``kubectl set image``/``set env``, or Flagger promoting the canary onto the primary) the
backend is *replaced*: the new process starts, takes the traffic, and the old one is stopped once
its in-flight requests are done (or after a grace period).

No process is left behind. Each backend runs in its own process group, which is signalled on
stop; an ``atexit`` hook kills groups that are somehow still registered; and each backend exits by
itself when the pipe on its stdin closes, which the kernel does when the simulator dies in any way.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import math
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from flaggerpy.kube.keys import ObjectKey

__all__ = ["BackendPool", "BackendProcess", "BackendSpec", "backend_spec", "ready_replicas"]

log = structlog.get_logger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
FAULT_RATE_ENV = "FAULT_RATE"
LATENCY_ENV = "LATENCY_MS"
JITTER_ENV = "LATENCY_JITTER_MS"

_LIVE_GROUPS: set[int] = set()


@atexit.register
def _kill_leftovers() -> None:
    """Last resort at interpreter exit: SIGKILL every backend group still registered."""
    for pgid in list(_LIVE_GROUPS):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        _LIVE_GROUPS.discard(pgid)


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """What a backend process is started with; a change means a new process."""

    version: str
    fault_rate: float = 0.0
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0


def _number(env: Mapping[str, str], name: str, *, key: ObjectKey, low: float,
            high: float = math.inf) -> float:
    text = env.get(name)
    if text is None or text == "":
        return 0.0
    try:
        value = float(text)
    except ValueError:
        log.warning("backend_env_invalid", deployment=str(key), env=name, value=text)
        return 0.0
    if not math.isfinite(value) or not low <= value <= high:
        clamped = min(high, max(low, value)) if math.isfinite(value) else 0.0
        log.warning("backend_env_out_of_range", deployment=str(key), env=name, value=text,
                    used=clamped)
        return clamped
    return value


def ready_replicas(deployment: Mapping[str, Any]) -> int:
    """Replicas that would be endpoints: 0 when scaled to zero, else ``status.readyReplicas``."""
    spec = deployment.get("spec") or {}
    replicas = spec.get("replicas", 1)
    if replicas is not None and int(replicas) <= 0:
        return 0
    return int((deployment.get("status") or {}).get("readyReplicas") or 0)


def backend_spec(deployment: Mapping[str, Any]) -> BackendSpec:
    """The behaviour a Deployment's pod template asks for (pure; readiness not considered)."""
    metadata = deployment.get("metadata") or {}
    key = ObjectKey(str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))
    template = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = template.get("containers") or []
    env: dict[str, str] = {}
    for container in containers:
        for entry in container.get("env") or []:
            if "value" in entry:
                env.setdefault(str(entry.get("name")), str(entry.get("value")))
    version = str(containers[0].get("image") or "") if containers else ""
    return BackendSpec(
        version=version or "unknown",
        fault_rate=_number(env, FAULT_RATE_ENV, key=key, low=0.0, high=1.0),
        latency_ms=_number(env, LATENCY_ENV, key=key, low=0.0),
        latency_jitter_ms=_number(env, JITTER_ENV, key=key, low=0.0),
    )


class BackendProcess:
    """One running ``e2e.simulator.backend`` process for one Deployment version."""

    def __init__(self, key: ObjectKey, spec: BackendSpec, *, seed: int | None = None) -> None:
        self.key = key
        self.spec = spec
        self.seed = seed
        self.port = 0
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._process: asyncio.subprocess.Process | None = None

    def enter(self) -> None:
        """A request to this backend begins (a replaced backend is stopped once none is left)."""
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight <= 0:
            self._idle.set()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process is not None else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        command = [
            sys.executable, "-m", "e2e.simulator.backend", "--port", "0",
            "--version", self.spec.version, "--name", self.key.name,
            "--fault-rate", repr(self.spec.fault_rate),
            "--latency-ms", repr(self.spec.latency_ms),
            "--latency-jitter-ms", repr(self.spec.latency_jitter_ms),
            "--exit-on-stdin-eof",
        ]
        if self.seed is not None:
            command += ["--seed", str(self.seed)]
        return command

    async def start(self, *, within: float = 20.0) -> BackendProcess:
        """Starts the process and waits for the port it announces."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        self._process = await asyncio.create_subprocess_exec(
            *self.command(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=None, env=env, cwd=str(REPO_ROOT), start_new_session=True)
        _LIVE_GROUPS.add(self._process.pid)
        assert self._process.stdout is not None
        try:
            line = await asyncio.wait_for(self._process.stdout.readline(), within)
            self.port = int(json.loads(line)["port"])
        except (TimeoutError, ValueError, KeyError) as exc:
            await self.stop(grace=0)
            raise RuntimeError(f"backend for {self.key} did not start: {exc!r}") from exc
        log.info("backend_started", deployment=str(self.key), version=self.spec.version,
                 fault_rate=self.spec.fault_rate, latency_ms=self.spec.latency_ms,
                 port=self.port, pid=self.pid)
        return self

    async def stop(self, *, grace: float = 5.0) -> None:
        """Lets in-flight requests finish (up to ``grace`` s), then stops the process group."""
        process = self._process
        if process is None:
            return
        if grace > 0 and process.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if process.returncode is not None:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), wait)
        if process.stdin is not None:
            process.stdin.close()
        _LIVE_GROUPS.discard(process.pid)
        log.info("backend_stopped", deployment=str(self.key), version=self.spec.version,
                 pid=process.pid, returncode=process.returncode)

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (served on ``/backends``)."""
        return {"namespace": self.key.namespace, "deployment": self.key.name,
                "version": self.spec.version, "fault_rate": self.spec.fault_rate,
                "latency_ms": self.spec.latency_ms,
                "latency_jitter_ms": self.spec.latency_jitter_ms, "port": self.port,
                "pid": self.pid, "alive": self.alive, "in_flight": self.in_flight}


class BackendPool:
    """The running backends, brought in line with the desired set by :meth:`sync`.

    ``sync`` is called by one task at a time (the world's sync loop); readers use :meth:`get`
    from any task and always see either the old or the new process, never a gap.
    """

    def __init__(self, *, seed: int | None = None, drain_grace: float = 5.0) -> None:
        self._seed = seed
        self._drain_grace = drain_grace
        self._backends: dict[ObjectKey, BackendProcess] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._started = 0

    def get(self, key: ObjectKey) -> BackendProcess | None:
        """The live backend of a Deployment, or None (no ready replicas, or it crashed)."""
        backend = self._backends.get(key)
        return backend if backend is not None and backend.alive else None

    def all(self) -> list[BackendProcess]:
        return [self._backends[key] for key in sorted(self._backends)]

    async def sync(self, desired: Mapping[ObjectKey, BackendSpec]) -> None:
        """Starts, replaces and stops backends so each desired key runs its spec.

        New processes start concurrently; a replaced backend keeps serving until its successor
        is up, so a template change causes no gap.
        """
        for key in sorted(set(self._backends) - set(desired)):
            self._retire(self._backends.pop(key))
        starting: list[BackendProcess] = []
        for key, spec in sorted(desired.items()):
            current = self._backends.get(key)
            if current is not None and current.spec == spec and current.alive:
                continue
            if current is not None and not current.alive:
                log.warning("backend_exited", deployment=str(key), pid=current.pid,
                            returncode=current.returncode)
            seed = None if self._seed is None else self._seed + self._started
            self._started += 1
            starting.append(BackendProcess(key, spec, seed=seed))
        try:
            results = await asyncio.gather(*(b.start() for b in starting),
                                           return_exceptions=True)
        except BaseException:  # cancelled mid-start: stop what did start, then go on unwinding
            await asyncio.gather(*(b.stop(grace=0) for b in starting), return_exceptions=True)
            raise
        for backend, result in zip(starting, results, strict=True):
            if isinstance(result, BaseException):
                log.error("backend_start_failed", deployment=str(backend.key),
                          error=repr(result))
                continue
            current = self._backends.get(backend.key)
            self._backends[backend.key] = backend
            if current is not None:
                self._retire(current)

    def _retire(self, backend: BackendProcess) -> None:
        task = asyncio.create_task(backend.stop(grace=self._drain_grace))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def aclose(self) -> None:
        """Stops every backend (and waits for those already stopping)."""
        backends = list(self._backends.values())
        self._backends.clear()
        await asyncio.gather(*(b.stop(grace=0.5) for b in backends), *list(self._stopping),
                             return_exceptions=True)
