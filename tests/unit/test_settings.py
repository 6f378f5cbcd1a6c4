"""Settings: Flagger's flags, defaults, environment variables and their precedence."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from flaggerpy.errors import ConfigError
from flaggerpy.settings import Settings, iter_flags, shard_index

# Spec §7.1: every flag of Flagger's controller and its default, as typed on a command line.
FLAGGER_FLAGS = {
    "kubeconfig": "",
    "master": "",
    "kubeconfig-qps": "100",
    "kubeconfig-burst": "250",
    "metrics-server": "http://prometheus:9090",
    "control-loop-interval": "10s",
    "log-level": "debug",
    "port": "8080",
    "slack-url": "",
    "slack-token": "",
    "slack-proxy-url": "",
    "slack-user": "flagger",
    "slack-channel": "",
    "msteams-url": "",
    "msteams-proxy-url": "",
    "event-webhook": "",
    "include-label-prefix": "",
    "threadiness": "2",
    "zap-replace-globals": "false",
    "namespace": "",
    "mesh-provider": "istio",
    "selector-labels": "app,name,app.kubernetes.io/name",
    "ingress-annotations-prefix": "nginx.ingress.kubernetes.io",
    "ingress-class": "",
    "enable-leader-election": "false",
    "leader-election-namespace": "kube-system",
    "enable-config-tracking": "true",
    "kubeconfig-service-mesh": "",
    "cluster-name": "",
    "no-cross-namespace-refs": "false",
}
# -zap-encoding defaults to json in Flagger; ours is auto, which is json wherever stderr is not
# a terminal (every pod), so the only difference shows on a developer's terminal.
ENCODING_DEFAULT = "auto"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for spec in iter_flags():
        monkeypatch.delenv(spec.env, raising=False)
        for name in spec.flag.legacy_env:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("FLAGGER_PORT", raising=False)


def test_every_flagger_flag_has_a_field_with_flaggers_default() -> None:
    specs = {spec.name: spec for spec in iter_flags()}
    missing = sorted((set(FLAGGER_FLAGS) | {"zap-encoding"}) - set(specs))
    assert missing == []
    for name, default in FLAGGER_FLAGS.items():
        assert specs[name].default_text == default, name
        assert specs[name].flag.flagger
    assert specs["zap-encoding"].default_text == ENCODING_DEFAULT


def test_every_field_has_a_one_line_description() -> None:
    for spec in iter_flags():
        assert spec.description, spec.dotted_path
        assert "\n" not in spec.description, spec.dotted_path


def test_flaggerpy_extensions_are_marked() -> None:
    extensions = {spec.name for spec in iter_flags() if not spec.flag.flagger}
    assert extensions == {
        "leader-election-lease-duration",
        "leader-election-renew-deadline",
        "leader-election-retry-period",
        "min-analysis-interval",
        "analysis-jitter",
        "hold-on-no-values",
        "dashboard-url",
        "dashboard-listen-address",
        "shard",
    }


def test_defaults_are_typed_values() -> None:
    settings = Settings()
    assert settings.kube.qps == 100.0
    assert settings.kube.burst == 250
    assert settings.mesh.provider == "istio"
    assert settings.metrics.server == "http://prometheus:9090"
    assert settings.controller.workers == 2
    assert settings.controller.control_loop_interval == 10.0
    assert settings.controller.selector_labels == ("app", "name", "app.kubernetes.io/name")
    assert settings.controller.include_label_prefix == ()
    assert settings.controller.enable_config_tracking is True
    assert settings.controller.enable_leader_election is False
    assert settings.controller.leader_election_lease_duration == 60.0
    assert settings.notifications.slack.user == "flagger"
    assert settings.notifications.slack.url.get_secret_value() == ""
    assert settings.telemetry.port == 8080
    assert settings.telemetry.log_level == "debug"


def test_env_names_follow_the_flag_names() -> None:
    envs = {spec.name: spec.env for spec in iter_flags()}
    assert envs["mesh-provider"] == "FLAGGER_MESH_PROVIDER"
    assert envs["kubeconfig-qps"] == "FLAGGER_KUBECONFIG_QPS"
    assert envs["threadiness"] == "FLAGGER_THREADINESS"
    # Kubernetes injects FLAGGER_PORT=tcp://... next to a Service named flagger.
    assert envs["port"] == "FLAGGER_HTTP_PORT"


def test_service_link_variable_does_not_break_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAGGER_PORT", "tcp://10.96.0.12:80")
    monkeypatch.setenv("FLAGGER_SERVICE_HOST", "10.96.0.12")
    assert Settings.load().telemetry.port == 8080


def test_flags_override_environment_which_overrides_defaults(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAGGER_MESH_PROVIDER", "linkerd")
    monkeypatch.setenv("FLAGGER_THREADINESS", "8")
    settings = Settings.load({"threadiness": "4"})
    assert settings.mesh.provider == "linkerd"  # env over default
    assert settings.controller.workers == 4  # flag over env
    assert settings.metrics.server == "http://prometheus:9090"  # default


def test_empty_environment_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAGGER_MESH_PROVIDER", "")
    assert Settings.load().mesh.provider == "istio"


def test_flaggers_legacy_notifier_variables_win_over_flags(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_URL", "https://hooks.slack.com/services/from-secret")
    monkeypatch.setenv("MSTEAMS_PROXY_URL", "http://proxy:3128")
    monkeypatch.setenv("EVENT_WEBHOOK_URL", "http://events.example/hook")
    settings = Settings.load({"slack-url": "https://hooks.slack.com/services/from-values"})
    notifications = settings.notifications
    assert notifications.slack.url.get_secret_value().endswith("from-secret")
    assert notifications.msteams.proxy_url == "http://proxy:3128"
    assert notifications.event_webhook.get_secret_value() == "http://events.example/hook"


def test_secrets_do_not_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_TOKEN", "xoxb-very-secret")
    settings = Settings.load({"msteams-url": "https://example.webhook.office.com/abc"})
    assert isinstance(settings.notifications.slack.token, SecretStr)
    text = repr(settings) + str(settings)
    assert "xoxb-very-secret" not in text
    assert "webhook.office.com" not in text


@pytest.mark.parametrize(
    ("flags", "path", "expected"),
    [
        pytest.param({"control-loop-interval": "1m30s"}, "controller.control_loop_interval",
                     90.0, id="go-duration"),
        pytest.param({"control-loop-interval": "500ms"}, "controller.control_loop_interval",
                     0.5, id="go-duration-ms"),
        pytest.param({"selector-labels": "app, app.kubernetes.io/name,"},
                     "controller.selector_labels", ("app", "app.kubernetes.io/name"),
                     id="comma-list"),
        pytest.param({"include-label-prefix": "*"}, "controller.include_label_prefix", ("*",),
                     id="include-all"),
        pytest.param({"enable-leader-election": "true"}, "controller.enable_leader_election",
                     True, id="bool-true"),
        pytest.param({"enable-config-tracking": "false"}, "controller.enable_config_tracking",
                     False, id="bool-false"),
        pytest.param({"enable-leader-election": "1"}, "controller.enable_leader_election", True,
                     id="bool-1"),
        pytest.param({"log-level": "INFO"}, "telemetry.log_level", "info", id="level-case"),
        pytest.param({"log-level": "warning"}, "telemetry.log_level", "warn", id="level-warning"),
        pytest.param({"zap-encoding": "console"}, "telemetry.log_encoding", "console",
                     id="encoding"),
        pytest.param({"kubeconfig-qps": "50.5"}, "kube.qps", 50.5, id="qps-float"),
        pytest.param({"port": "0"}, "telemetry.port", 0, id="ephemeral-port"),
    ],
)
def test_flag_values_are_parsed(flags: dict[str, str], path: str, expected: object) -> None:
    value: object = Settings.load(flags)
    for part in path.split("."):
        value = getattr(value, part)
    assert value == expected


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        pytest.param({"threadiness": "abc"}, "invalid value 'abc' for -threadiness "
                     "(from flag -threadiness): Input should be a valid integer", id="not-int"),
        pytest.param({"threadiness": "0"}, "-threadiness", id="no-workers"),
        pytest.param({"control-loop-interval": "10"}, "missing unit in duration", id="no-unit"),
        pytest.param({"control-loop-interval": "1d"}, "-control-loop-interval", id="bad-unit"),
        pytest.param({"metrics-server": "prometheus:9090"}, "is not an http(s) URL",
                     id="metrics-url"),
        pytest.param({"log-level": "trace"}, "-log-level", id="level"),
        pytest.param({"zap-encoding": "logfmt"}, "-zap-encoding", id="encoding"),
        pytest.param({"enable-leader-election": "maybe"}, "valid boolean", id="bool"),
        pytest.param({"port": "70000"}, "-port", id="port-range"),
        pytest.param({"selector-labels": ","}, "-selector-labels", id="no-labels"),
        pytest.param({"mesh-provider": ""}, "-mesh-provider", id="empty-provider"),
        pytest.param({"leader-election-renew-deadline": "2m"},
                     "must be longer than leader-election-renew-deadline", id="lease-order"),
        pytest.param({"no-such-flag": "1"}, "flag provided but not defined: -no-such-flag",
                     id="unknown"),
    ],
)
def test_invalid_values_raise_config_error(flags: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(flags)
    assert message in str(info.value)
    assert isinstance(info.value.__cause__, ValidationError | type(None))


def test_error_names_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAGGER_KUBECONFIG_BURST", "lots")
    with pytest.raises(ConfigError, match=r"-kubeconfig-burst \(from \$FLAGGER_KUBECONFIG_BURST\)"):
        Settings.load()


def test_error_does_not_echo_secret_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_URL", "https://hooks.slack.com/services/T/B/secret")
    with pytest.raises(ConfigError) as info:
        Settings.load({"threadiness": "x"})
    assert "secret" not in str(info.value)


def test_all_errors_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load({"threadiness": "x", "port": "y"})
    assert "-threadiness" in str(info.value)
    assert "-port" in str(info.value)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.mesh.provider = "linkerd"  # type: ignore[misc]


def test_keyword_construction_for_tests_and_embedding() -> None:
    settings = Settings(mesh={"provider": "gatewayapi:v1"},
                        controller={"workers": 5, "control_loop_interval": 2})
    assert settings.mesh.provider == "gatewayapi:v1"
    assert settings.controller.workers == 5
    assert settings.controller.control_loop_interval == 2.0
    with pytest.raises(ValidationError):
        Settings(mesh={"provder": "typo"})


def test_leader_election_namespace_follows_watched_namespace() -> None:
    assert Settings.load().controller.election_namespace == "kube-system"
    watched = Settings.load({"namespace": "apps", "leader-election-namespace": "flagger"})
    assert watched.controller.election_namespace == "apps"


def test_several_watched_namespaces_share_cluster_wide_caches_and_the_election_namespace() -> None:
    several = Settings.load({"namespace": "apps,web", "leader-election-namespace": "flagger"})
    assert several.controller.namespaces == {"apps", "web"}
    assert several.controller.cache_namespace is None
    assert several.controller.election_namespace == "flagger"
    assert several.controller.serves("web", "podinfo")
    assert not several.controller.serves("other", "podinfo")
    one = Settings.load({"namespace": "apps"}).controller
    assert one.cache_namespace == "apps"
    assert one.serves("apps", "a")
    assert not one.serves("web", "a")
    everything = Settings.load().controller
    assert everything.cache_namespace is None
    assert everything.serves("anything", "a")
    with pytest.raises(ConfigError, match="namespace"):
        Settings.load({"namespace": "Apps;web"})


def test_each_canary_is_in_exactly_one_shard_and_the_shards_share_the_canaries() -> None:
    shards = [Settings.load({"shard": f"{k}/3"}).controller for k in range(3)]
    keys = [(f"ns-{i % 7}", f"app-{i}") for i in range(300)]
    owners = [[k for k, shard in enumerate(shards) if shard.serves(*key)] for key in keys]
    assert all(len(owner) == 1 for owner in owners)
    sizes = [sum(1 for owner in owners if owner == [k]) for k in range(3)]
    assert min(sizes) > 60, sizes  # CRC-32 spreads them: none of the three is starved
    assert [shard_index("ns-1", "app-1", 3)] == [k for k, s in enumerate(shards)
                                                 if s.serves("ns-1", "app-1")]
    scoped = Settings.load({"shard": "0/1", "namespace": "apps"}).controller
    assert scoped.serves("apps", "x")
    assert not scoped.serves("web", "x")
    assert Settings.load().controller.shard_of is None


@pytest.mark.parametrize("shard", ["3/3", "1/0", "1", "a/b", "-1/2"])
def test_a_shard_outside_its_count_is_refused(shard: str) -> None:
    with pytest.raises(ConfigError, match="shard"):
        Settings.load({"shard": shard})
