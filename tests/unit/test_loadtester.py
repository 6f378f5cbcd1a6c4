"""The load tester's pure parts: payload parsing, task planning, settings, gates, output bounds."""

from __future__ import annotations

import pytest

from flaggerpy.errors import ConfigError
from flaggerpy.loadtester.config import OPTIONS, LoadTesterSettings
from flaggerpy.loadtester.gates import GATE, ROLLBACK, GateStore, split_canary
from flaggerpy.loadtester.payload import RequestRejected, WebhookPayload, parse_payload
from flaggerpy.loadtester.process import CommandResult, OutputTail
from flaggerpy.loadtester.tasks import TaskPolicy, TaskSpec, plan_task, shell_syntax


def everything_installed(name: str) -> str:
    return f"/usr/bin/{name}"


POLICY = TaskPolicy(which=everything_installed)


def payload(**metadata: str) -> WebhookPayload:
    return WebhookPayload(name="podinfo", namespace="test", checksum="abc", metadata=metadata)


def rejected(excinfo: pytest.ExceptionInfo[RequestRejected]) -> tuple[int, str]:
    return excinfo.value.status, excinfo.value.message


# --- payload -----------------------------------------------------------------------------------


def test_payload_as_flagger_sends_it() -> None:
    body = (b'{"name": "podinfo", "namespace": "test", "phase": "Progressing", '
            b'"checksum": "6d9f", "metadata": {"type": "bash", "cmd": "true"}, "extra": 1}')
    parsed = parse_payload(body)
    assert parsed == WebhookPayload(name="podinfo", namespace="test", phase="Progressing",
                                    checksum="6d9f", metadata={"type": "bash", "cmd": "true"})
    assert parsed.canary == "podinfo.test"


def test_metadata_is_optional_and_null_values_are_empty_strings() -> None:
    assert parse_payload(b'{"name": "a", "namespace": "b"}').metadata == {}
    assert parse_payload(b'{"name": "a", "namespace": "b", "metadata": {"k": null}}'
                         ).metadata == {"k": ""}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        pytest.param(b"", "empty request body", id="empty"),
        pytest.param(b"{bad", "not valid JSON", id="malformed"),
        pytest.param(b"\xff\xfe", "not UTF-8", id="not-utf8"),
        pytest.param(b"[1]", "must be a JSON object, got an array", id="array"),
        pytest.param(b'{"namespace": "test"}', '"name" is required', id="no-name"),
        pytest.param(b'{"name": "podinfo"}', '"namespace" is required', id="no-namespace"),
        pytest.param(b'{"name": "", "namespace": "t"}', '"name" is required', id="empty-name"),
        pytest.param(b'{"name": 1, "namespace": "t"}', '"name" must be a string, got a number',
                     id="numeric-name"),
        pytest.param(b'{"name": "a", "namespace": "t", "metadata": []}',
                     '"metadata" must be an object', id="metadata-array"),
        pytest.param(b'{"name": "a", "namespace": "t", "metadata": {"logCmdOutput": true}}',
                     "metadata.logCmdOutput must be a string (quote it in the Canary), "
                     "got a boolean", id="metadata-bool"),
        pytest.param(b'{"name": "a", "namespace": "t", "checksum": 5}',
                     '"checksum" must be a string', id="numeric-checksum"),
    ],
)
def test_unusable_payloads_are_400_with_a_reason(body: bytes, fragment: str) -> None:
    with pytest.raises(RequestRejected) as excinfo:
        parse_payload(body)
    status, message = rejected(excinfo)
    assert status == 400
    assert fragment in message


# --- task planning -----------------------------------------------------------------------------


def test_cmd_is_the_default_type_runs_in_the_background_under_sh_as_flaggers() -> None:
    command = 'hey -z 1m -H "X-Canary: 1" http://podinfo-canary.test:9898/'
    spec = plan_task(payload(cmd=command), POLICY)
    assert spec.kind == "cmd"
    assert not spec.blocking
    assert spec.argv == ("sh", "-c", command)
    assert not spec.log_output
    assert not spec.return_output
    assert spec.timeout == 3600


@pytest.mark.parametrize(
    ("kind", "argv"),
    [
        pytest.param("bash", ("bash", "-c", "curl -s http://x | grep ok"), id="bash"),
        pytest.param("helm", ("/opt/helm", "curl", "-s", "http://x", "|", "grep", "ok"),
                     id="helm"),
        pytest.param("helmv3", ("/opt/helm", "curl", "-s", "http://x", "|", "grep", "ok"),
                     id="helmv3"),
        pytest.param("kubectl", ("kubectl", "curl", "-s", "http://x", "|", "grep", "ok"),
                     id="kubectl"),
    ],
)
def test_blocking_types(kind: str, argv: tuple[str, ...]) -> None:
    policy = TaskPolicy(helm="/opt/helm", which=everything_installed)
    spec = plan_task(payload(type=kind, cmd="curl -s http://x | grep ok"), policy)
    assert spec.blocking
    assert spec.argv == argv  # only bash interprets the line; helm/kubectl split on spaces
    assert spec.log_output, "Flagger always logs a blocking task's output"


def test_helm_arguments_are_split_on_whitespace_like_go_fields() -> None:
    spec = plan_task(payload(type="helm", cmd="  test podinfo  -n test --timeout 3m "), POLICY)
    assert spec.argv == ("helm", "test", "podinfo", "-n", "test", "--timeout", "3m")


@pytest.mark.parametrize(
    ("metadata", "status", "fragment"),
    [
        pytest.param({}, 400, "metadata not found in payload", id="no-metadata"),
        pytest.param({"type": "bats", "cmd": "x"}, 400,
                     "unknown task type 'bats'; supported: bash, cmd, helm, helmv3, kubectl",
                     id="unknown-type"),
        pytest.param({"type": "", "cmd": "x"}, 400, "unknown task type ''", id="empty-type"),
        pytest.param({"type": "concord", "server": "http://c"}, 400,
                     "task type 'concord' is not supported", id="concord"),
        pytest.param({"type": "ngrinder", "server": "http://n"}, 400,
                     "task type 'ngrinder' is not supported", id="ngrinder"),
        pytest.param({"type": "bash"}, 400, "metadata.cmd is required for a 'bash' task",
                     id="bash-no-cmd"),
        pytest.param({"cmd": "   "}, 400, "metadata.cmd is required for a 'cmd' task",
                     id="blank-cmd"),
        pytest.param({"cmd": "hey 'unclosed"}, 400, "cannot be split into words",
                     id="unbalanced-quote"),
        pytest.param({"cmd": "hey http://x", "timeout": "5 minutes"}, 400,
                     "metadata.timeout '5 minutes' is not a duration", id="bad-timeout"),
        pytest.param({"cmd": "hey http://x", "timeout": "0s"}, 400, "must be positive",
                     id="zero-timeout"),
    ],
)
def test_refusals(metadata: dict[str, str], status: int, fragment: str) -> None:
    with pytest.raises(RequestRejected) as excinfo:
        plan_task(payload(**metadata), POLICY)
    assert rejected(excinfo)[0] == status
    assert fragment in rejected(excinfo)[1]


def test_a_cmd_line_with_shell_syntax_runs_as_written_without_an_allowlist() -> None:
    command = "curl -s http://podinfo-canary.test:9898/ | grep -q podinfo && hey -z 1m $URL"
    spec = plan_task(payload(cmd=command), TaskPolicy(which=lambda name: name if name == "sh"
                                                      else None))
    assert spec.argv == ("sh", "-c", command)  # nothing but sh is looked up: sh finds the rest


def test_a_plain_cmd_line_has_its_executable_checked_before_the_202() -> None:
    policy = TaskPolicy(which=lambda name: name if name == "sh" else None)
    with pytest.raises(RequestRejected) as excinfo:
        plan_task(payload(cmd="hey -z 1m http://x/"), policy)
    assert rejected(excinfo) == (
        400, "cannot run 'cmd' task: executable 'hey' not found on the load tester's PATH")


def test_a_line_starting_with_a_shell_builtin_needs_only_sh() -> None:
    policy = TaskPolicy(which=lambda name: name if name == "sh" else None)
    assert plan_task(payload(cmd="exec sleep 1"), policy).argv == ("sh", "-c", "exec sleep 1")


def test_under_an_allowlist_a_shell_line_runs_only_if_sh_is_allowed() -> None:
    command = "hey http://x/ | tee /tmp/out"
    with pytest.raises(RequestRejected) as excinfo:
        plan_task(payload(cmd=command),
                  TaskPolicy(allow_commands=("hey",), which=everything_installed))
    assert rejected(excinfo) == (
        403, "command not allowed: 'sh hey http://x/ | tee /tmp/out' does not start with an "
             "allowed prefix ('hey'); it uses shell syntax (|), so it runs only if 'sh' is "
             "allowed")
    allowed = TaskPolicy(allow_commands=("sh",), which=everything_installed)
    assert plan_task(payload(cmd=command), allowed).argv == ("sh", "-c", command)


def test_a_missing_executable_is_a_400_naming_it() -> None:
    policy = TaskPolicy(helm="/nowhere/helm", which=lambda name: None)
    with pytest.raises(RequestRejected) as excinfo:
        plan_task(payload(type="helm", cmd="test podinfo"), policy)
    assert rejected(excinfo) == (
        400, "cannot run 'helm' task: executable '/nowhere/helm' not found on the load tester's "
             "PATH")


@pytest.mark.parametrize(
    ("command", "found"),
    [
        pytest.param("hey -z 1m http://podinfo.test:9898/", None, id="plain"),
        pytest.param("hey -H 'X-A: a|b;c' http://x/", None, id="single-quoted"),
        pytest.param('hey -H "X-A: a|b;c" http://x/', None, id="double-quoted"),
        pytest.param(r"echo a\|b", None, id="escaped"),
        pytest.param("hey http://x/?a=1", None, id="query-question-mark"),
        pytest.param("a && b", "&&", id="and"),
        pytest.param("a || b", "||", id="or"),
        pytest.param("a; b", ";", id="semicolon"),
        pytest.param("a > out", ">", id="redirect"),
        pytest.param("a >> out", ">>", id="append"),
        pytest.param("hey http://x/?a=1&b=2", "&", id="unquoted-ampersand"),
        pytest.param("hey $URL", "$", id="variable"),
        pytest.param('hey "$URL"', "$", id="variable-in-double-quotes"),
        pytest.param("hey '$URL'", None, id="dollar-in-single-quotes"),
        pytest.param("hey $(cat url)", "$(", id="substitution"),
        pytest.param("hey `cat url`", "`", id="backquotes"),
        pytest.param("URL=http://x hey $URL", "URL=... (a variable assignment)", id="assignment"),
        pytest.param("(hey)", "(", id="subshell"),
        pytest.param("hey http://x/\nrm -rf /tmp/x", "\n", id="newline"),
        pytest.param("hey http://x/*", None, id="glob"),
    ],
)
def test_shell_syntax(command: str, found: str | None) -> None:
    assert shell_syntax(command) == found


@pytest.mark.parametrize(
    ("metadata", "allowed"),
    [
        pytest.param({"cmd": "hey -z 1m http://x/"}, True, id="hey"),
        pytest.param({"cmd": "heyx -z 1m http://x/"}, False, id="not-a-word-prefix"),
        pytest.param({"cmd": "curl http://x/"}, False, id="other-binary"),
        pytest.param({"type": "helm", "cmd": "test podinfo -n test"}, True, id="helm-test"),
        pytest.param({"type": "helmv3", "cmd": "test podinfo"}, True, id="helmv3-test"),
        pytest.param({"type": "helm", "cmd": "uninstall podinfo"}, False, id="helm-uninstall"),
        pytest.param({"type": "bash", "cmd": "hey -z 1m http://x/"}, False, id="bash-not-listed"),
        pytest.param({"type": "kubectl", "cmd": "get pods -n test"}, True, id="kubectl-get"),
        pytest.param({"type": "kubectl", "cmd": "delete ns test"}, False, id="kubectl-delete"),
        pytest.param({"cmd": "hey http://x/ && rm -rf /"}, False, id="shell-line-is-sh"),
        pytest.param({"cmd": "hey http://x/\nrm -rf /"}, False, id="newline-is-sh"),
    ],
)
def test_allowlist_compares_whole_words(metadata: dict[str, str], allowed: bool) -> None:
    policy = TaskPolicy(allow_commands=("hey", "helm test", "kubectl get"), helm="/opt/helm",
                        which=everything_installed)
    if allowed:
        plan_task(payload(**metadata), policy)
        return
    with pytest.raises(RequestRejected) as excinfo:
        plan_task(payload(**metadata), policy)
    status, message = rejected(excinfo)
    assert status == 403
    assert message.startswith("command not allowed: ")
    assert "('hey', 'helm test', 'kubectl get')" in message


def test_bash_must_be_allowed_explicitly() -> None:
    policy = TaskPolicy(allow_commands=("bash",), which=everything_installed)
    assert plan_task(payload(type="bash", cmd="rm -rf /tmp/x && true"), policy).kind == "bash"


def test_timeout_from_metadata_is_capped_by_the_load_testers() -> None:
    policy = TaskPolicy(timeout=600, which=everything_installed)
    assert plan_task(payload(cmd="hey http://x/", timeout="90s"), policy).timeout == 90
    spec = plan_task(payload(cmd="hey http://x/", timeout="2h"), policy)
    assert spec.timeout == 600
    assert spec.notes == ("metadata.timeout 2h exceeds the load tester's -timeout; using 10m0s",)


@pytest.mark.parametrize(
    ("value", "expected", "noted"),
    [
        pytest.param("true", True, False, id="true"),
        pytest.param("1", True, False, id="one"),
        pytest.param("T", True, False, id="T"),
        pytest.param("False", False, False, id="False"),
        pytest.param("yes", False, True, id="yes-is-not-go"),
    ],
)
def test_booleans_are_gos(value: str, expected: bool, noted: bool) -> None:
    spec = plan_task(payload(cmd="hey http://x/", logCmdOutput=value, returnCmdOutput=value),
                     POLICY)
    assert spec.log_output is expected
    assert spec.return_output is expected
    assert bool(spec.notes) is noted


def test_keys_dedup_background_by_command_and_blocking_by_revision() -> None:
    background = plan_task(payload(cmd="hey http://x/"), POLICY)
    assert background.key == ("background", "podinfo.test", "cmd", "hey http://x/")
    blocking = plan_task(payload(type="bash", cmd="make test"), POLICY)
    assert blocking.key == ("blocking", "podinfo.test", "bash", "make test", "abc")
    assert isinstance(blocking, TaskSpec)
    assert blocking.display == "bash make test"


# --- settings ----------------------------------------------------------------------------------


def test_defaults_are_flaggers() -> None:
    settings = LoadTesterSettings.load({}, environ={})
    assert settings.port == 9090
    assert settings.timeout == 3600
    assert settings.namespace_regexp == ""
    assert settings.token == ""
    assert settings.allow_commands == ()


def test_flags_win_over_environment() -> None:
    environ = {"FLAGGERPY_LOADTESTER_HTTP_PORT": "8080", "FLAGGERPY_LOADTESTER_TIMEOUT": "30m",
               "FLAGGERPY_LOADTESTER_ALLOW_COMMANDS": "hey, helm test",
               "FLAGGERPY_LOADTESTER_TOKEN": "s3cret", "FLAGGERPY_LOADTESTER_HELM": ""}
    settings = LoadTesterSettings.load({"timeout": "90s"}, environ=environ)
    assert settings.port == 8080
    assert settings.timeout == 90
    assert settings.allow_commands == ("hey", "helm test")
    assert settings.token == "s3cret"
    assert settings.helm == "helm", "an empty variable is unset"
    assert "s3cret" not in repr(settings)
    assert settings.describe()["token_set"] is True
    assert "token" not in settings.describe()


def test_kubernetes_service_variables_do_not_set_the_port() -> None:
    environ = {"FLAGGERPY_LOADTESTER_PORT": "tcp://10.0.0.1:80"}
    assert LoadTesterSettings.load({}, environ=environ).port == 9090


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        pytest.param({"port": "http"}, "-port: 'http' is not an integer", id="port-word"),
        pytest.param({"port": "70000"}, "is not a TCP port", id="port-range"),
        pytest.param({"timeout": "1 hour"}, "-timeout: time: unknown unit", id="timeout"),
        pytest.param({"namespace-regexp": "("}, "invalid regexp", id="regexp"),
        pytest.param({"max-body-bytes": "10"}, "at least 1024", id="tiny-body"),
        pytest.param({"nope": "1"}, "unknown loadtester flag -nope", id="unknown"),
    ],
)
def test_invalid_settings_are_config_errors(flags: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=r".") as excinfo:
        LoadTesterSettings.load(flags, environ={})
    assert fragment in str(excinfo.value)


def test_every_flagger_loadtester_flag_is_accepted() -> None:
    flagger = {o.flag for o in OPTIONS if o.flagger}
    assert flagger == {"port", "timeout", "namespace-regexp", "log-level", "zap-encoding",
                       "zap-replace-globals"}
    LoadTesterSettings.load({"zap-replace-globals": "true", "log-level": "debug"}, environ={})


# --- gates and output --------------------------------------------------------------------------


def test_gates_start_closed_and_are_listed_once_checked() -> None:
    gates = GateStore()
    assert not gates.is_open(GATE, name="podinfo", namespace="test")
    gates.open(ROLLBACK, name="podinfo", namespace="test")
    assert gates.is_open(ROLLBACK, name="podinfo", namespace="test")
    assert not gates.is_open(GATE, name="podinfo", namespace="test")
    assert [(g.key, g.open) for g in gates.list()] == [
        ("podinfo.test", False), ("rollback.podinfo.test", True)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("podinfo.test", ("podinfo", "test"), id="simple"),
        pytest.param("my.app.prod", ("my.app", "prod"), id="dotted-name"),
    ],
)
def test_split_canary(text: str, expected: tuple[str, str]) -> None:
    assert split_canary(text) == expected


@pytest.mark.parametrize("text", ["podinfo", ".test", "podinfo.", ""])
def test_split_canary_needs_both_parts(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not <name>\.<namespace>"):
        split_canary(text)


def test_output_keeps_the_tail() -> None:
    tail = OutputTail(8)
    for chunk in (b"0123", b"456789", b"ab"):
        tail.feed(chunk)
    assert tail.total == 12
    assert tail.dropped == 4
    assert tail.text() == "[... 4 earlier bytes dropped ...]\n456789ab"
    short = OutputTail(8)
    short.feed(b"ok\xff")
    assert short.text() == "ok\ufffd"


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        pytest.param(CommandResult(("x",), 3, "", 0, 0.1), "exit status 3", id="exit"),
        pytest.param(CommandResult(("x",), -9, "", 0, 0.1), "signal: killed", id="signal"),
        pytest.param(CommandResult(("x",), -15, "", 0, 1.0, timed_out=True, timeout=1.0),
                     "timed out after 1s; its process group was stopped (signal: terminated)",
                     id="timeout"),
        pytest.param(CommandResult(("x",), None, "", 0, 0, error="cannot start x: denied"),
                     "cannot start x: denied", id="not-started"),
    ],
)
def test_failure_reasons_read_like_gos(result: CommandResult, reason: str) -> None:
    assert not result.ok
    assert result.reason == reason
