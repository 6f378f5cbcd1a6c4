"""The real ``flaggerpy loadtester`` process: start-up, the ``gate`` CLI against it, SIGTERM.

Both commands run as subprocesses (``python -m flaggerpy``), as a pod and an
operator's shell would run them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

ENV_PREFIX = "FLAGGERPY_LOADTESTER_"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    return {**env, **extra}


def recorded_pid(path: Path) -> int | None:
    text = path.read_text().strip() if path.exists() else ""
    return int(text) if text else None


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@dataclass
class Process:
    process: asyncio.subprocess.Process
    url: str
    lines: list[dict[str, Any]]

    async def read_until(self, event: str, *, within: float = 10.0) -> dict[str, Any]:
        """Reads JSON log lines from stderr until one with ``msg == event``."""
        assert self.process.stderr is not None
        async with asyncio.timeout(within):
            while True:
                raw = await self.process.stderr.readline()
                if not raw:
                    raise AssertionError(f"stderr closed before {event}: {self.lines}")
                line = json.loads(raw)
                self.lines.append(line)
                if line.get("msg") == event:
                    return line


@pytest.fixture
async def loadtester() -> AsyncIterator[Process]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flaggerpy", "loadtester", "-host=127.0.0.1", "-port=0",
        "-zap-encoding=json", "-log-level", "info", "-zap-replace-globals",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env=clean_env(FLAGGERPY_LOADTESTER_TOKEN="t0ken"))
    running = Process(process, "", [])
    try:
        started = await running.read_until("loadtester_started")
        running.url = f"http://127.0.0.1:{started['port']}"
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def gate(*args: str, url: str, token: str = "t0ken") -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flaggerpy", "gate", *args, "--url", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=clean_env(FLAGGERPY_LOADTESTER_TOKEN=token))
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_gate_cli_against_the_running_service(loadtester: Process) -> None:
    url = loadtester.url
    assert await gate("check", "podinfo.test", url=url) == (1, "gate podinfo.test closed\n", "")
    assert await gate("open", "podinfo.test", url=url) == (0, "gate podinfo.test opened\n", "")
    assert await gate("check", "podinfo.test", url=url) == (0, "gate podinfo.test open\n", "")
    assert (await gate("open", "--rollback", "my.app.prod", url=url))[1] == \
        "rollback my.app.prod opened\n"
    assert await gate("close", "podinfo.test", url=url) == (0, "gate podinfo.test closed\n", "")
    status, out, _ = await gate("list", url=url)
    assert status == 0
    assert out.splitlines() == [
        "CANARY        GATE      STATE",
        "my.app.prod   rollback  open",  # sorted by namespace, then name
        "podinfo.test  gate      closed",
    ]

    status, _, err = await gate("open", "podinfo.test", url=url, token="wrong")
    assert status == 1
    assert err.strip() == f"flaggerpy: error: POST {url}/gate/open: 401 invalid token"
    status, _, err = await gate("open", "podinfo", url=url)
    assert status == 2
    assert "'podinfo' is not <name>.<namespace>" in err
    status, _, err = await gate("list", url="http://127.0.0.1:1")
    assert status == 1
    assert err.startswith("flaggerpy: error: GET http://127.0.0.1:1/gate/list: ")


async def test_sigterm_stops_tasks_and_exits_cleanly(loadtester: Process, tmp_path: Path) -> None:
    record = tmp_path / "pids"
    headers = {"Authorization": "Bearer t0ken"}
    payload = {"name": "podinfo", "namespace": "test",
               "metadata": {"cmd": f"bash -c 'echo $$ > {record}; exec sleep 300'"}}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(loadtester.url + "/healthz") as response:
            assert response.status == 200
        async with http.post(loadtester.url + "/", json=payload) as response:
            assert response.status == 202
    await loadtester.read_until("task_started")
    for _ in range(200):
        if recorded_pid(record):
            break
        await asyncio.sleep(0.05)
    task_pid = recorded_pid(record)
    assert task_pid is not None
    assert alive(task_pid)

    loadtester.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(15):
        await loadtester.read_until("manager_stopped")
        assert await loadtester.process.wait() == 0

    events = [line["msg"] for line in loadtester.lines]
    assert events.index("signal_received") < events.index("task_stopped") < events.index(
        "loadtester_stopped")
    for _ in range(100):  # SIGKILL is delivered at once; the exit is seen a moment later
        if not alive(task_pid):
            break
        await asyncio.sleep(0.05)
    assert not alive(task_pid), "the task's process group was killed"
    started = next(line for line in loadtester.lines if line["msg"] == "loadtester_started")
    assert started["token_set"] is True
    assert "t0ken" not in json.dumps(loadtester.lines)
