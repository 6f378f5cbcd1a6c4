"""The command line: Flagger's flag spellings, precedence, errors and subcommands."""

from __future__ import annotations

import subprocess
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs

from flaggerpy import __version__, cli, logs
from flaggerpy.settings import Settings, iter_flags


@dataclass
class Recorder:
    """Stands in for the controller and the log set-up, which are not this module's to test."""

    settings: list[Settings] = field(default_factory=list)
    log_calls: list[dict[str, Any]] = field(default_factory=list)
    status: int = 0

    def run(self, settings: Settings) -> int:
        self.settings.append(settings)
        return self.status

    def configure(self, **kwargs: Any) -> None:
        self.log_calls.append(kwargs)

    @property
    def last(self) -> Settings:
        return self.settings[-1]


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(cli, "run_controller", recorder.run)
    monkeypatch.setattr(logs, "configure", recorder.configure)
    for spec in iter_flags():
        monkeypatch.delenv(spec.env, raising=False)
        for name in spec.flag.legacy_env:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(cli.REVISION_ENV, raising=False)
    return recorder


def run(*argv: str) -> int:
    return cli.main(list(argv))


# --- flag spellings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["-mesh-provider=linkerd"], id="go-equals"),
        pytest.param(["-mesh-provider", "linkerd"], id="go-separate"),
        pytest.param(["--mesh-provider=linkerd"], id="gnu-equals"),
        pytest.param(["--mesh-provider", "linkerd"], id="gnu-separate"),
    ],
)
def test_single_and_double_dash_spellings(recorder: Recorder, argv: list[str]) -> None:
    assert run("controller", *argv) == 0
    assert recorder.last.mesh.provider == "linkerd"


def test_every_flag_is_accepted_in_go_spelling(recorder: Recorder) -> None:
    values = {"duration": "30s", "int": "7", "float": "20", "bool": "true", "list": "a,b"}
    urls = {"metrics-server", "slack-url", "msteams-url", "event-webhook"}
    argv = []
    for spec in iter_flags():
        value = "http://example:1" if spec.name in urls else values.get(spec.value_kind, "x")
        if spec.name == "log-level":
            value = "info"
        elif spec.name == "zap-encoding":
            value = "console"
        elif spec.name in {"leader-election-lease-duration"}:
            value = "2m"
        elif spec.name in {"leader-election-renew-deadline"}:
            value = "1m"
        elif spec.name == "shard":
            value = "1/2"
        elif spec.name == "analysis-jitter":
            value = "0.2"
        elif spec.name == "dashboard-listen-address":
            value = "127.0.0.1:8421"
        argv.append(f"-{spec.name}={value}")
    assert run("controller", *argv) == 0
    settings = recorder.last
    assert settings.controller.workers == 7
    assert settings.controller.control_loop_interval == 30.0
    assert settings.controller.selector_labels == ("a", "b")
    assert settings.notifications.slack.url.get_secret_value() == "http://example:1"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(["-enable-leader-election"], True, id="bare"),
        pytest.param(["-enable-leader-election=true"], True, id="equals-true"),
        pytest.param(["-enable-leader-election=false"], False, id="equals-false"),
        pytest.param(["-enable-leader-election", "false"], False, id="separate"),
        pytest.param(["--enable-leader-election"], True, id="gnu-bare"),
        pytest.param(["-enable-leader-election", "-namespace=apps"], True, id="bare-then-flag"),
    ],
)
def test_boolean_flags(recorder: Recorder, argv: list[str], expected: bool) -> None:
    assert run("controller", *argv) == 0
    assert recorder.last.controller.enable_leader_election is expected


def test_helm_chart_arguments_work_unchanged(recorder: Recorder) -> None:
    # The args charts/flagger/templates/deployment.yaml renders with most values set.
    args = [
        "-log-level=info", "-mesh-provider=istio", "-metrics-server=http://prometheus:9090",
        "-selector-labels=app,name,app.kubernetes.io/name", "-enable-config-tracking=true",
        "-namespace=", "-slack-url=https://hooks.slack.com/services/T/B/X",
        "-slack-proxy-url=http://proxy:3128", "-slack-user=flagger", "-slack-channel=general",
        "-msteams-url=https://acme.webhook.office.com/x", "-msteams-proxy-url=http://proxy:3128",
        "-enable-leader-election=true", "-leader-election-namespace=flagger-system",
        "-ingress-annotations-prefix=custom.ingress.kubernetes.io",
        "-include-label-prefix=app.kubernetes.io", "-ingress-class=contour",
        "-event-webhook=http://events/", "-kubeconfig-qps=200", "-kubeconfig-burst=300",
        "-kubeconfig-service-mesh=/tmp/controlplane/kubeconfig", "-threadiness=4",
        "-cluster-name=prod-eu", "-no-cross-namespace-refs=true",
    ]
    assert run("controller", *args) == 0
    settings = recorder.last
    assert settings.telemetry.log_level == "info"
    assert settings.controller.namespace == ""
    assert settings.controller.enable_leader_election is True
    assert settings.controller.election_namespace == "flagger-system"
    assert settings.controller.include_label_prefix == ("app.kubernetes.io",)
    assert settings.controller.workers == 4
    assert settings.controller.no_cross_namespace_refs is True
    assert settings.kube.qps == 200.0
    assert settings.kube.service_mesh_kubeconfig == "/tmp/controlplane/kubeconfig"
    assert settings.mesh.ingress_class == "contour"
    assert settings.notifications.slack.channel == "general"


def test_flaggers_invocation_without_subcommand(recorder: Recorder) -> None:
    assert run("-mesh-provider=kubernetes", "-threadiness", "3") == 0
    assert recorder.last.mesh.provider == "kubernetes"
    assert recorder.last.controller.workers == 3


def test_klog_flags_are_accepted_and_reported(recorder: Recorder) -> None:
    with capture_logs() as captured:
        assert run("controller", "-v=4", "-logtostderr", "-log_dir=/tmp", "-vmodule=x=2") == 0
    ignored = [entry["flag"] for entry in captured if entry["event"] == "flag_ignored"]
    assert ignored == ["-log_dir", "-logtostderr", "-v", "-vmodule"]


# --- precedence --------------------------------------------------------------------------------


def test_flags_win_over_environment(recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAGGER_MESH_PROVIDER", "linkerd")
    monkeypatch.setenv("FLAGGER_THREADINESS", "9")
    assert run("controller", "-threadiness=3") == 0
    assert recorder.last.mesh.provider == "linkerd"
    assert recorder.last.controller.workers == 3


def test_defaults_when_nothing_is_given(recorder: Recorder) -> None:
    assert run("controller") == 0
    assert recorder.last == Settings()


def test_logs_are_configured_from_settings(recorder: Recorder) -> None:
    assert run("controller", "-log-level=warn", "-zap-encoding=json") == 0
    assert recorder.log_calls == [{"json": True, "level": "warn"}]


def test_controller_status_is_the_exit_status(recorder: Recorder) -> None:
    recorder.status = 1
    assert run("controller") == 1


# --- errors ------------------------------------------------------------------------------------


def test_unknown_flag_exits_2_naming_it_as_typed(recorder: Recorder,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert run("controller", "-mesh-provider=istio", "-no-such-flag=1") == 2
    err = capsys.readouterr().err
    assert "flag provided but not defined: -no-such-flag" in err
    assert "usage: flaggerpy controller" in err
    assert recorder.settings == []


def test_abbreviations_are_not_accepted(recorder: Recorder,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert run("controller", "-mesh=istio") == 2
    assert "-mesh" in capsys.readouterr().err


def test_unexpected_positional_argument(recorder: Recorder,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert run("controller", "istio") == 2
    assert "unexpected argument: istio" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["-threadiness=many"], "invalid value 'many' for -threadiness", id="int"),
        pytest.param(["-threadiness", "-1"], "-threadiness", id="negative"),
        pytest.param(["-control-loop-interval=10"], "missing unit", id="duration"),
        pytest.param(["-enable-leader-election=maybe"], "-enable-leader-election", id="bool"),
        pytest.param(["-log-level=trace"], "-log-level", id="level"),
        pytest.param(["-metrics-server=prometheus"], "-metrics-server", id="url"),
    ],
)
def test_invalid_values_exit_2_with_a_readable_message(
        recorder: Recorder, capsys: pytest.CaptureFixture[str], argv: list[str],
        message: str) -> None:
    assert run("controller", *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("flaggerpy: error: ")
    assert message in err
    assert "Traceback" not in err
    assert recorder.settings == []


def test_invalid_environment_value(recorder: Recorder, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FLAGGER_HTTP_PORT", "eighty")
    assert run("controller") == 2
    assert "$FLAGGER_HTTP_PORT" in capsys.readouterr().err


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("deploy") == 2
    assert "invalid choice: 'deploy'" in capsys.readouterr().err


def test_no_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert run() == 2
    assert "COMMAND" in capsys.readouterr().err


def test_controller_failure_is_logged_and_exits_1(monkeypatch: pytest.MonkeyPatch,
                                                  recorder: Recorder) -> None:
    def explode(settings: Settings) -> int:
        raise RuntimeError("informer cache never synced")

    monkeypatch.setattr(cli, "run_controller", explode)
    with capture_logs() as captured:
        assert run("controller") == 1
    assert captured[-1]["event"] == "command_failed"
    assert captured[-1]["log_level"] == "error"


def test_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch, recorder: Recorder) -> None:
    def interrupted(settings: Settings) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_controller", interrupted)
    assert run("controller") == 130


# --- help, version, crds -----------------------------------------------------------------------


def test_help_lists_every_flag_with_its_variable(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("controller", "-h") == 0
    out = capsys.readouterr().out
    for spec in iter_flags():
        assert f"--{spec.name}" in out
        assert spec.env in out
    assert "--threadiness INT" in out
    assert "SLACK_URL" in out


def test_top_level_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--help") == 0
    out = capsys.readouterr().out
    for command in ("controller", "version", "crds"):
        assert command in out


@pytest.mark.parametrize("argv", [["version"], ["-version"], ["controller", "-version"],
                                  ["controller", "--version"]])
def test_version(recorder: Recorder, capsys: pytest.CaptureFixture[str],
                 argv: list[str]) -> None:
    assert run(*argv) == 0
    assert capsys.readouterr().out == f"flaggerpy version {__version__} revision unknown\n"
    assert recorder.settings == []


def test_version_revision_from_the_image_build(recorder: Recorder,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cli.REVISION_ENV, "abc1234")
    assert cli.version_text().endswith("revision abc1234")


def test_crds_prints_the_rendered_yaml(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from flaggerpy.models import crds

    monkeypatch.setattr(crds, "render_crds_yaml", lambda: "kind: CustomResourceDefinition")
    assert run("crds") == 0
    assert capsys.readouterr().out == "kind: CustomResourceDefinition\n"


def test_crds_are_the_real_definitions(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("crds") == 0
    out = capsys.readouterr().out
    for name in ("canaries.flagger.app", "metrictemplates.flagger.app",
                 "alertproviders.flagger.app"):
        assert f"name: {name}" in out


def test_run_controller_imports_the_application_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Settings] = []
    app = types.ModuleType("flaggerpy.app")

    def fake_run(settings: Settings) -> None:
        seen.append(settings)

    app.run = fake_run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "flaggerpy.app", app)
    settings = Settings()
    assert cli.run_controller(settings) == 0
    assert seen == [settings]


def test_python_dash_m() -> None:
    result = subprocess.run([sys.executable, "-m", "flaggerpy", "version"], capture_output=True,
                            text=True, check=False, timeout=60)
    assert result.returncode == 0
    assert result.stdout.startswith(f"flaggerpy version {__version__}")
