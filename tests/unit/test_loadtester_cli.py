"""``flaggerpy loadtester`` and ``flaggerpy gate`` argument handling; the service is not run."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from flaggerpy import cli, logs
from flaggerpy.loadtester import app
from flaggerpy.loadtester.config import OPTIONS, LoadTesterSettings


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[LoadTesterSettings]:
    seen: list[LoadTesterSettings] = []

    def fake_run(settings: LoadTesterSettings) -> int:
        seen.append(settings)
        return 0

    def no_logging(**kwargs: Any) -> None:
        pass

    monkeypatch.setattr(app, "run", fake_run)
    monkeypatch.setattr(logs, "configure", no_logging)
    for option in OPTIONS:
        monkeypatch.delenv(option.env, raising=False)
    return seen


def test_flagger_loadtester_command_line_starts_the_service(
        started: list[LoadTesterSettings]) -> None:
    # charts/loadtester of Flagger: ./loadtester -port=8080 -log-level=info -timeout=1h
    assert cli.main(["loadtester", "-port=8080", "-log-level=info", "-timeout=1h",
                     "-namespace-regexp", "^test$", "-zap-replace-globals"]) == 0
    [settings] = started
    assert (settings.port, settings.timeout, settings.namespace_regexp) == (8080, 3600, "^test$")


def test_safety_flags_and_environment(started: list[LoadTesterSettings],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAGGERPY_LOADTESTER_TOKEN", "s3cret")
    monkeypatch.setenv("FLAGGERPY_LOADTESTER_MAX_BODY_BYTES", "4096")
    assert cli.main(["loadtester", "-allow-command", "hey", "--allow-command=helm test",
                     "-max-output-bytes=2048"]) == 0
    [settings] = started
    assert settings.allow_commands == ("hey", "helm test")
    assert settings.token == "s3cret"
    assert (settings.max_body_bytes, settings.max_output_bytes) == (4096, 2048)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["loadtester", "-port=http"], "-port: 'http' is not an integer", id="value"),
        pytest.param(["loadtester", "-nope"], "flag provided but not defined: -nope",
                     id="unknown-flag"),
        pytest.param(["gate", "open"], "the following arguments are required: CANARY",
                     id="gate-no-canary"),
        pytest.param(["gate", "shut", "a.b"], "invalid choice: 'shut'", id="gate-action"),
    ],
)
def test_usage_errors_exit_2(started: list[LoadTesterSettings], argv: list[str], message: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not started


def test_gate_url_defaults_to_the_local_load_tester(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLAGGERPY_LOADTESTER_URL", raising=False)
    monkeypatch.setenv("FLAGGERPY_LOADTESTER_HTTP_PORT", "8080")
    namespace = cli._build_parser().parse_args(["gate", "list"])
    assert namespace.url == "http://localhost:8080"
    monkeypatch.setenv("FLAGGERPY_LOADTESTER_URL", "http://flagger-loadtester.test")
    namespace = cli._build_parser().parse_args(["gate", "open", "podinfo.test", "--rollback"])
    assert (namespace.url, namespace.canary, namespace.rollback) == (
        "http://flagger-loadtester.test", "podinfo.test", True)


def test_the_cli_reads_loadtester_flags_without_loading_the_service() -> None:
    probe = ("import sys, flaggerpy.cli; "
             "print(sorted(m for m in ('aiohttp', 'flaggerpy.loadtester.server') "
             "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stdout.strip() == "[]"
