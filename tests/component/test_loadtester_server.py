"""The load tester's HTTP contract, against the real service on a local port, running real commands.

Every test starts ``LoadTesterServer`` on 127.0.0.1 (port 0) and talks to it
with a real HTTP client; tasks run real processes (``hey``, ``bash``,
``sleep``, ``helm``). Gates are tested at the HTTP level only: the canary
lifecycle engine that will call ``/gate/check`` from a confirm-rollout
webhook does not exist yet, and its integration test will come with it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from structlog.testing import capture_logs

from flaggerpy.loadtester.client import GateClient, GateClientError
from flaggerpy.loadtester.config import LoadTesterSettings
from flaggerpy.loadtester.server import DELIVERY_HEADER, LoadTesterServer
from flaggerpy.loadtester.telemetry import LoadTesterMetrics

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / "e2e" / "cluster" / "bin" / "helm"
CANARY = {"name": "podinfo", "namespace": "test"}

needs_hey = pytest.mark.skipif(shutil.which("hey") is None,
                               reason="hey is not installed (make debian-deps installs it)")


@dataclass
class Answer:
    status: int
    text: str
    headers: Any = None


@dataclass
class LoadTester:
    server: LoadTesterServer
    serving: asyncio.Task[None]  # the server's start(); cancelling it stops the server
    url: str
    http: aiohttp.ClientSession

    async def post(self, path: str = "/", *, payload: Any = None, data: bytes | None = None,
                   headers: dict[str, str] | None = None, wait: float = 30) -> Answer:
        body = data if data is not None else json.dumps(payload).encode()
        async with self.http.post(self.url + path, data=body, headers=headers,
                                  timeout=aiohttp.ClientTimeout(total=wait)) as response:
            return Answer(response.status, await response.text(), response.headers)

    async def get(self, path: str, *, headers: dict[str, str] | None = None) -> Answer:
        async with self.http.get(self.url + path, headers=headers) as response:
            return Answer(response.status, await response.text(), response.headers)

    async def task(self, metadata: dict[str, str], *, checksum: str = "rev1",
                   wait: float = 30) -> Answer:
        return await self.post(payload={**CANARY, "phase": "Progressing", "checksum": checksum,
                                        "metadata": metadata}, wait=wait)


Start = Callable[..., Awaitable[LoadTester]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    servers: list[asyncio.Task[None]] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(**settings: Any) -> LoadTester:
        values: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "kill_grace": 0.5, **settings}
        server = LoadTesterServer(LoadTesterSettings(**values),
                                  metrics=LoadTesterMetrics(process_collectors=False))
        servers.append(asyncio.create_task(server.start()))
        await asyncio.wait_for(server.serving.wait(), 5)
        sessions.append(aiohttp.ClientSession())
        return LoadTester(server, servers[-1], f"http://127.0.0.1:{server.port}", sessions[-1])

    yield start
    for session in sessions:
        await session.close()
    for task in servers:
        task.cancel()
    await asyncio.gather(*servers, return_exceptions=True)


@pytest.fixture
def logs() -> Any:
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as entries:
        yield entries


async def eventually(check: Callable[[], bool], *, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def events(entries: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in entries if entry["event"] == name]


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


# --- tasks -------------------------------------------------------------------------------------


@needs_hey
async def test_a_webhook_runs_hey_against_a_local_server(
        start: Start, aiohttp_server: Any, logs: list[dict[str, Any]]) -> None:
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("X-Canary", ""))
        return web.Response(text="podinfo")

    app = web.Application()
    app.router.add_get("/", handle)
    target = await aiohttp_server(app)
    loadtester = await start()
    command = f'hey -n 20 -c 2 -H "X-Canary: insider" http://127.0.0.1:{target.port}/'

    answer = await loadtester.task({"type": "cmd", "cmd": command, "logCmdOutput": "true"})

    assert (answer.status, answer.text) == (202, "task started")
    await eventually(lambda: bool(events(logs, "task_finished")))
    assert seen == ["insider"] * 20, "sh keeps the quoted header one argument"
    [output] = events(logs, "task_output")
    assert "Summary:" in output["output"]
    assert "[200]\t20 responses" in output["output"]
    assert output["canary"] == "podinfo.test"
    assert output["command"] == command


async def test_a_cmd_line_written_for_flaggers_sh_means_the_same(
        start: Start, tmp_path: Path, logs: list[dict[str, Any]]) -> None:
    loadtester = await start()
    out = tmp_path / "out"
    # A pipe, redirections, a list and an expansion, as a Canary written for Flagger may carry.
    command = f"echo podinfo | tr a-z A-Z > {out}; echo $((1 + 2)) >> {out}"

    answer = await loadtester.task({"cmd": command})

    assert (answer.status, answer.text) == (202, "task started")
    await eventually(lambda: bool(events(logs, "task_finished")))
    assert out.read_text() == "PODINFO\n3\n"


async def test_blocking_bash_answers_with_its_output_or_flaggers_failure_text(
        start: Start) -> None:
    loadtester = await start()
    ok = await loadtester.task({"type": "bash", "cmd": "echo ready | tr a-z A-Z",
                                "returnCmdOutput": "true"})
    assert (ok.status, ok.text) == (200, "READY\n")
    quiet = await loadtester.task({"type": "bash", "cmd": "echo ready"})
    assert (quiet.status, quiet.text) == (200, "")
    failed = await loadtester.task({"type": "bash", "cmd": "echo not ready >&2; exit 3"})
    assert (failed.status, failed.text) == (
        500, "command echo not ready >&2; exit 3 failed: not ready: exit status 3")


async def test_output_is_bounded(start: Start, logs: list[dict[str, Any]]) -> None:
    loadtester = await start(max_output_bytes=1024)
    answer = await loadtester.task({"type": "bash", "cmd": "head -c 100000 /dev/zero | tr '\\0' x; "
                                    "echo; echo the end", "returnCmdOutput": "true"})
    assert answer.status == 200
    assert answer.text.startswith("[... 98985 earlier bytes dropped ...]\n")
    assert answer.text.endswith("x\nthe end\n")
    assert len(answer.text) < 1100
    [output] = events(logs, "task_output")
    assert output["output_bytes"] == 100009
    assert len(output["output"]) < 1100


@pytest.mark.skipif(not HELM.exists(), reason="e2e/cluster/build has not built helm")
@pytest.mark.parametrize("kind", ["helm", "helmv3"])
async def test_helm_tasks_run_the_configured_binary(start: Start, kind: str) -> None:
    loadtester = await start(helm=str(HELM))
    ok = await loadtester.task({"type": kind, "cmd": "version --short",
                                "returnCmdOutput": "true"})
    assert ok.status == 200
    assert re.match(r"v\d+\.\d+\.\d+", ok.text), ok.text
    failed = await loadtester.task({"type": kind, "cmd": "no-such-command"})
    assert failed.status == 500
    assert failed.text.startswith("command no-such-command failed: ")
    assert 'unknown command "no-such-command"' in failed.text
    assert failed.text.endswith(": exit status 1")


async def test_identical_background_tasks_are_deduplicated_while_running(
        start: Start, tmp_path: Path, logs: list[dict[str, Any]]) -> None:
    loadtester = await start()
    runs = tmp_path / "runs"
    release = tmp_path / "release"
    script = f"echo run >> {runs}; while [ ! -e {release} ]; do sleep 0.05; done"
    metadata = {"cmd": f"bash -c '{script}'"}  # a cmd task: bash is only the program here

    first = await loadtester.task(metadata)
    await eventually(runs.exists)
    second = await loadtester.task(metadata, checksum="another-revision")
    other = await loadtester.task({"cmd": f"bash -c '{script}' other"})

    assert (first.status, first.text) == (202, "task started")
    assert (second.status, second.text) == (202, "task already running")
    assert (other.status, other.text) == (202, "task started"), "another command is not a dup"
    await eventually(lambda: len(runs.read_text().split()) == 2)
    release.touch()
    await eventually(lambda: len(events(logs, "task_finished")) == 2)
    assert len(events(logs, "task_already_running")) == 1

    again = await loadtester.task(metadata)  # finished: the same task may run again
    assert (again.status, again.text) == (202, "task started")
    await eventually(lambda: len(runs.read_text().split()) == 3)


async def test_a_retried_blocking_webhook_joins_the_run_in_progress(
        start: Start, tmp_path: Path, logs: list[dict[str, Any]]) -> None:
    loadtester = await start()
    runs = tmp_path / "runs"
    release = tmp_path / "release"
    metadata = {"type": "bash", "returnCmdOutput": "true",
                "cmd": f"echo run >> {runs}; while [ ! -e {release} ]; do sleep 0.05; done; "
                       f"echo passed"}

    # The controller's webhook timeout expires while the test still runs...
    with pytest.raises(TimeoutError):
        await loadtester.task(metadata, wait=0.5)
    await eventually(lambda: runs.exists() and runs.read_text() == "run\n")
    # ...so it retries: the retry waits for the same run rather than starting another.
    retry = asyncio.create_task(loadtester.task(metadata))
    await eventually(lambda: bool(events(logs, "task_joined")))
    # A new revision is a different test run.
    new_revision = asyncio.create_task(loadtester.task(metadata, checksum="rev2"))
    await eventually(lambda: len(runs.read_text().split()) == 2)
    release.touch()

    assert (await retry).text == "passed\n"
    assert (await new_revision).text == "passed\n"
    assert runs.read_text() == "run\nrun\n"
    value = loadtester.server.metrics.registry.get_sample_value
    assert value("flaggerpy_loadtester_task_requests_total",
                 {"type": "bash", "outcome": "joined"}) == 1
    assert value("flaggerpy_loadtester_task_runs_total",
                 {"type": "bash", "result": "succeeded"}) == 2


async def test_a_retry_of_the_same_delivery_gets_the_finished_runs_result(
        start: Start, tmp_path: Path, logs: list[dict[str, Any]]) -> None:
    loadtester = await start()
    runs = tmp_path / "runs"
    metadata = {"type": "bash", "cmd": f"echo run >> {runs}; echo failed; exit 1"}
    payload = {**CANARY, "phase": "Progressing", "checksum": "rev1", "metadata": metadata}
    first_call = {DELIVERY_HEADER: "5f0c3b1e9a7d4c2b8e6f1a0d3c5b7e9f"}

    first = await loadtester.post(payload=payload, headers=first_call)
    # The controller did not get that answer (say the connection dropped) and retries the call.
    retry = await loadtester.post(payload=payload, headers=first_call)
    # The next analysis interval is a new call; Flagger's controller sends no id at all.
    next_call = await loadtester.post(payload=payload,
                                      headers={DELIVERY_HEADER: "0123456789abcdef"})
    flagger = await loadtester.post(payload=payload)

    assert first.status == retry.status == next_call.status == flagger.status == 500
    assert retry.text == first.text == f"command {metadata['cmd']} failed: failed: exit status 1"
    assert runs.read_text() == "run\n" * 3, "the retry ran nothing"
    [replayed] = events(logs, "task_result_replayed")
    assert replayed["delivery"] == first_call[DELIVERY_HEADER]


def test_the_delivery_header_is_the_one_the_controller_sends() -> None:
    webhooks = pytest.importorskip("flaggerpy.canary.webhooks")
    assert webhooks.DELIVERY_HEADER == DELIVERY_HEADER


async def test_a_timeout_kills_the_whole_process_group(start: Start, tmp_path: Path) -> None:
    loadtester = await start(kill_grace=0.5)
    record = tmp_path / "pids"
    # A background job and the script itself; both must go.
    script = f"sleep 300 & echo $! >> {record}; echo $$ >> {record}; echo started; sleep 300"

    began = time.monotonic()
    answer = await loadtester.task({"type": "bash", "cmd": script, "timeout": "1s"})

    assert time.monotonic() - began < 10
    assert answer.status == 500
    assert answer.text == (f"command {script} failed: started: timed out after 1s; its process "
                           f"group was stopped (signal: terminated)")
    recorded = pids(record)
    assert len(recorded) == 2
    await eventually(lambda: not any(alive(pid) for pid in recorded), within=5)


async def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(
        start: Start, tmp_path: Path) -> None:
    loadtester = await start(kill_grace=0.5)
    record = tmp_path / "pids"
    script = f"trap '' TERM; sleep 300 & echo $! >> {record}; sleep 300"
    answer = await loadtester.task({"type": "bash", "cmd": script, "timeout": "1s"})
    assert answer.status == 500
    assert answer.text.endswith("its process group was stopped (signal: killed)")
    await eventually(lambda: not any(alive(pid) for pid in pids(record)), within=5)


async def test_a_finished_task_leaves_no_process_behind(start: Start, tmp_path: Path,
                                                        logs: list[dict[str, Any]]) -> None:
    loadtester = await start()
    record = tmp_path / "pids"
    answer = await loadtester.task({"cmd": f"bash -c 'sleep 300 & echo $! > {record}'"})
    assert answer.status == 202
    await eventually(lambda: bool(events(logs, "task_finished")))
    [orphan] = pids(record)
    await eventually(lambda: not alive(orphan), within=5)


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        pytest.param(b"{not json", 400, "request body is not valid JSON", id="malformed"),
        pytest.param(b'{"namespace": "test", "metadata": {"cmd": "hey"}}', 400,
                     '"name" is required', id="missing-name"),
        pytest.param(b'{"name": "podinfo", "namespace": "test"}', 400,
                     "metadata not found in payload", id="missing-metadata"),
        pytest.param(b'{"name": "podinfo", "namespace": "test", "metadata": {"type": "k6"}}',
                     400, "unknown task type 'k6'", id="unknown-type"),
        pytest.param(b'{"name": "podinfo", "namespace": "test", "metadata": '
                     b'{"type": "concord", "server": "http://c"}}', 400,
                     "task type 'concord' is not supported by flaggerpy loadtester",
                     id="concord"),
        pytest.param(b'{"name": "podinfo", "namespace": "test", "metadata": '
                     b'{"type": "ngrinder", "server": "http://n"}}', 400,
                     "task type 'ngrinder' is not supported by flaggerpy loadtester",
                     id="ngrinder"),
        pytest.param(b'{"name": "podinfo", "namespace": "test", "metadata": '
                     b'{"cmd": "hey http://x/ && rm -rf /"}}', 403,
                     "it uses shell syntax (&&), so it runs only if 'sh' is allowed",
                     id="shell-line-not-allowed"),
        pytest.param(b'{"name": "podinfo", "namespace": "test", "metadata": '
                     b'{"cmd": "no-such-binary-here --flag"}}', 400,
                     "executable 'no-such-binary-here' not found", id="missing-binary"),
        pytest.param(b'{"name": "podinfo", "namespace": "test", "metadata": '
                     b'{"cmd": "curl http://x/"}}', 403, "command not allowed: 'curl http://x/'",
                     id="not-allowed"),
        pytest.param(b"{" + b" " * 5000 + b"}", 413, "exceeds the limit of 4096 bytes",
                     id="oversized"),
        pytest.param(b"{bad", 400, "not valid JSON", id="gate-malformed"),
    ],
)
async def test_refusals_are_4xx_with_a_reason_while_other_requests_are_served(
        start: Start, body: bytes, status: int, fragment: str, tmp_path: Path,
        logs: list[dict[str, Any]]) -> None:
    loadtester = await start(allow_commands=("hey", "bash", "no-such-binary-here"),
                             max_body_bytes=4096)
    # A blocking task is in flight the whole time: it ends only when released.
    release = tmp_path / "release"
    slow = asyncio.create_task(loadtester.task({
        "type": "bash", "returnCmdOutput": "true",
        "cmd": f"while [ ! -e {release} ]; do sleep 0.05; done; echo slow"}))
    await eventually(lambda: bool(events(logs, "task_started")))
    path = "/gate/check" if body == b"{bad" else "/"

    answer, health = await asyncio.gather(loadtester.post(path, data=body),
                                          loadtester.get("/healthz"))

    assert answer.status == status
    assert fragment in answer.text
    assert answer.headers["Content-Type"].startswith("text/plain")
    assert (health.status, health.text) == (200, "OK")
    assert not slow.done(), "answered while the blocking task still runs"
    release.touch()
    assert (await slow).text == "slow\n"
    [rejection] = events(logs, "request_rejected")
    assert rejection["status"] == status


async def test_namespace_regexp_forbids_other_namespaces(start: Start) -> None:
    loadtester = await start(namespace_regexp="^(test|staging)$")
    gate = await loadtester.post("/gate/open", payload={"name": "podinfo", "namespace": "prod"})
    assert gate.status == 403
    assert gate.text.startswith("Forbidden: namespace 'prod' is not served")
    task = await loadtester.post(payload={"name": "podinfo", "namespace": "prod",
                                          "metadata": {"type": "bash", "cmd": "true"}})
    assert task.status == 403
    assert (await loadtester.post("/gate/open", payload=CANARY)).status == 202


async def test_token_is_required_except_for_probes(start: Start) -> None:
    loadtester = await start(token="s3cret-token")
    missing = await loadtester.post("/gate/check", payload=CANARY)
    assert missing.status == 401
    assert missing.text.startswith("missing credentials")
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = await loadtester.post("/gate/check", payload=CANARY,
                                  headers={"Authorization": "Bearer s3cret-tokeN"})
    assert (wrong.status, wrong.text) == (401, "invalid token")
    scheme = await loadtester.post("/gate/check", payload=CANARY,
                                   headers={"Authorization": "Digest x"})
    assert scheme.status == 401
    task = await loadtester.task({"type": "bash", "cmd": "true"})
    assert task.status == 401

    bearer = await loadtester.post("/gate/check", payload=CANARY,
                                   headers={"Authorization": "Bearer s3cret-token"})
    assert (bearer.status, bearer.text) == (403, "Forbidden"), "authorized; the gate is closed"
    basic = base64.b64encode(b"token:s3cret-token").decode()
    opened = await loadtester.post("/gate/open", payload=CANARY,
                                   headers={"Authorization": f"Basic {basic}"})
    assert opened.status == 202
    # Flagger's controller sends http://token:<token>@host/ as Basic auth; so does aiohttp.
    url = loadtester.url.replace("http://", "http://token:s3cret-token@")
    async with loadtester.http.post(url + "/gate/check", json=CANARY) as response:
        assert (response.status, await response.text()) == (200, "Approved")

    assert (await loadtester.get("/healthz")).status == 200
    assert (await loadtester.get("/metrics")).status == 200


# --- gates -------------------------------------------------------------------------------------


async def test_gates_opened_and_closed_over_http_change_the_check(start: Start) -> None:
    loadtester = await start()
    other = {"name": "backend", "namespace": "test"}
    webhook = {**CANARY, "phase": "Progressing", "checksum": "6d9f"}  # what the controller sends

    assert (await loadtester.post("/gate/check", payload=webhook)).text == "Forbidden"
    opened = await loadtester.post("/gate/open", payload=CANARY)
    assert opened.status == 202
    check = await loadtester.post("/gate/check", payload=webhook)
    assert (check.status, check.text) == (200, "Approved")
    assert (await loadtester.post("/gate/check", payload=other)).status == 403
    assert (await loadtester.post("/rollback/check", payload=webhook)).status == 403, \
        "the rollback gate is separate"

    assert (await loadtester.post("/gate/close", payload=CANARY)).status == 202
    assert (await loadtester.post("/gate/check", payload=webhook)).status == 403

    assert (await loadtester.post("/rollback/open", payload=CANARY)).status == 202
    rollback = await loadtester.post("/rollback/check", payload=webhook)
    assert (rollback.status, rollback.text) == (200, "Approved")
    assert (await loadtester.post("/rollback/close", payload=CANARY)).status == 202
    assert (await loadtester.post("/rollback/check", payload=webhook)).status == 403

    listing = await loadtester.get("/gate/list")
    assert json.loads(listing.text) == {"gates": [
        {"key": "backend.test", "kind": "gate", "name": "backend", "namespace": "test",
         "open": False},
        {"key": "podinfo.test", "kind": "gate", "name": "podinfo", "namespace": "test",
         "open": False},
        {"key": "rollback.podinfo.test", "kind": "rollback", "name": "podinfo",
         "namespace": "test", "open": False},
    ]}


async def test_gate_client_tells_a_closed_gate_from_a_refused_request(start: Start) -> None:
    loadtester = await start(namespace_regexp="^test$")
    async with GateClient(loadtester.url) as client:
        assert not await client.check(name="podinfo", namespace="test")
        await client.open(name="podinfo", namespace="test")
        assert await client.check(name="podinfo", namespace="test")
        with pytest.raises(GateClientError, match=r"403 Forbidden: namespace 'prod'"):
            await client.check(name="podinfo", namespace="prod")
        assert [gate.key for gate in await client.list()] == ["podinfo.test"]


async def test_constant_gates_and_any_method(start: Start) -> None:
    loadtester = await start()
    assert (await loadtester.post("/gate/approve", data=b"")).text == "OK"
    halt = await loadtester.get("/gate/halt")
    assert (halt.status, halt.text) == (403, "Forbidden")
    async with loadtester.http.put(loadtester.url + "/gate/check", json=CANARY) as response:
        assert response.status == 403, "Go's mux serves every method"


async def test_metrics_are_exposed(start: Start) -> None:
    loadtester = await start()
    await loadtester.task({"type": "bash", "cmd": "true"})
    await loadtester.post("/gate/check", payload=CANARY)
    await loadtester.post("/", data=b"nope")
    text = (await loadtester.get("/metrics")).text
    assert 'flaggerpy_loadtester_task_runs_total{result="succeeded",type="bash"} 1.0' in text
    assert 'flaggerpy_loadtester_gate_checks_total{gate="gate",result="forbidden"} 1.0' in text
    assert 'flaggerpy_loadtester_requests_rejected_total{status="400"} 1.0' in text
    assert 'flaggerpy_loadtester_tasks_running{type="bash"} 0.0' in text


async def test_stopping_kills_running_tasks_and_answers_blocking_requests(
        start: Start, tmp_path: Path, logs: list[dict[str, Any]]) -> None:
    loadtester = await start()
    record = tmp_path / "pids"
    background = await loadtester.task({"cmd": f"bash -c 'echo $$ >> {record}; sleep 300'"})
    assert background.status == 202
    blocking = asyncio.create_task(
        loadtester.task({"type": "bash", "cmd": f"echo $$ >> {record}; sleep 300"}))
    await eventually(lambda: len(pids(record)) == 2)

    loadtester.serving.cancel()
    answer = await blocking

    assert (answer.status, answer.text) == (
        503, "the load tester is shutting down; the task was stopped")
    await eventually(lambda: not any(alive(pid) for pid in pids(record)), within=5)
    # The background task says so once its process is reaped, which a busy machine may
    # deliver after the process is gone.
    await eventually(lambda: len(events(logs, "task_stopped")) >= 2, within=5)
    assert len(events(logs, "task_stopped")) == 2
