"""The controller's configuration: one frozen object built at start-up and passed down.

Every flag of Flagger's ``cmd/flagger`` is a field here, with Flagger's default,
so the Helm chart's ``args`` keep working and a value means what it meant
under Flagger. Fields are grouped by concern (kopf style) and the defaults
live here and nowhere else: constructors take a ``Settings`` (or one of its
groups) and never fill in ``or DEFAULT`` of their own.

Where a value comes from, highest first:

1. Flagger's unprefixed environment variables for notifier endpoints
   (``SLACK_URL``, ``SLACK_TOKEN``, ``SLACK_PROXY_URL``, ``MSTEAMS_URL``,
   ``MSTEAMS_PROXY_URL``, ``EVENT_WEBHOOK_URL``). Flagger lets these win over
   the flags (``fromEnv`` in ``cmd/flagger/main.go``) because they usually
   come from a Secret while the flags come from chart values; we keep that.
2. Command-line flags (``flaggerpy controller -mesh-provider=linkerd``), or
   keyword arguments to ``Settings(...)``.
3. ``FLAGGER_*`` environment variables. The name is the flag's, upper-cased
   with ``-`` as ``_``: ``-mesh-provider`` is ``FLAGGER_MESH_PROVIDER``,
   ``-kubeconfig-qps`` is ``FLAGGER_KUBECONFIG_QPS``. One exception:
   ``-port`` is ``FLAGGER_HTTP_PORT``, because Kubernetes injects
   ``FLAGGER_PORT=tcp://...`` into every pod of a namespace that has a
   Service named ``flagger``.
4. The defaults below.

Empty environment variables count as unset, as Flagger's ``fromEnv`` does.

Field paths and flags (``iter_flags()`` lists them; the variable is derived from the flag)::

    kube.kubeconfig                            -kubeconfig
    kube.master                                -master
    kube.qps                                   -kubeconfig-qps
    kube.burst                                 -kubeconfig-burst
    kube.service_mesh_kubeconfig               -kubeconfig-service-mesh
    mesh.provider                              -mesh-provider
    mesh.ingress_annotations_prefix            -ingress-annotations-prefix
    mesh.ingress_class                         -ingress-class
    metrics.server                             -metrics-server
    notifications.slack.url                    -slack-url          (also $SLACK_URL)
    notifications.slack.token                  -slack-token        (also $SLACK_TOKEN)
    notifications.slack.proxy_url              -slack-proxy-url    (also $SLACK_PROXY_URL)
    notifications.slack.user                   -slack-user
    notifications.slack.channel                -slack-channel
    notifications.msteams.url                  -msteams-url        (also $MSTEAMS_URL)
    notifications.msteams.proxy_url            -msteams-proxy-url  (also $MSTEAMS_PROXY_URL)
    notifications.event_webhook                -event-webhook      (also $EVENT_WEBHOOK_URL)
    notifications.dashboard_url                -dashboard-url                   (flaggerpy only)
    controller.workers                         -threadiness
    controller.control_loop_interval           -control-loop-interval
    controller.namespace                       -namespace
    controller.selector_labels                 -selector-labels
    controller.include_label_prefix            -include-label-prefix
    controller.enable_config_tracking          -enable-config-tracking
    controller.enable_leader_election          -enable-leader-election
    controller.leader_election_namespace       -leader-election-namespace
    controller.leader_election_lease_duration  -leader-election-lease-duration  (flaggerpy only)
    controller.leader_election_renew_deadline  -leader-election-renew-deadline  (flaggerpy only)
    controller.leader_election_retry_period    -leader-election-retry-period    (flaggerpy only)
    controller.min_analysis_interval           -min-analysis-interval           (flaggerpy only)
    controller.analysis_jitter                 -analysis-jitter                 (flaggerpy only)
    controller.hold_on_no_values               -hold-on-no-values               (flaggerpy only)
    controller.no_cross_namespace_refs         -no-cross-namespace-refs
    controller.shard                           -shard                           (flaggerpy only)
    controller.cluster_name                    -cluster-name
    telemetry.port                             -port               ($FLAGGER_HTTP_PORT)
    telemetry.log_level                        -log-level
    telemetry.log_encoding                     -zap-encoding
    telemetry.zap_replace_globals              -zap-replace-globals
    telemetry.dashboard_listen_address         -dashboard-listen-address        (flaggerpy only)

Secrets (webhook URLs, the Slack token) are ``SecretStr``: they print as
``**********`` in a repr, a log line or a traceback, and callers ask for
``.get_secret_value()`` at the one place that sends a request.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from flaggerpy.errors import ConfigError
from flaggerpy.models import durations

__all__ = [
    "ControllerSettings",
    "Flag",
    "FlagSpec",
    "KubeSettings",
    "LogEncoding",
    "LogLevel",
    "MSTeamsSettings",
    "MeshSettings",
    "MetricsSettings",
    "NotificationSettings",
    "Seconds",
    "Settings",
    "SlackSettings",
    "TelemetrySettings",
    "iter_flags",
    "shard_index",
]

ENV_PREFIX = "FLAGGER_"

LogLevel = Literal["debug", "info", "warn", "error", "fatal", "panic"]
"""Zap's level names, which ``-log-level`` takes. ``warning`` is read as ``warn``."""

LogEncoding = Literal["auto", "json", "console"]
"""``-zap-encoding``: Flagger's ``json`` or ``console``, plus ``auto`` (json unless on a TTY)."""


# --- flag metadata -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Flag:
    """Marks a settings field as set by a command-line flag and an environment variable.

    It rides in the field's ``Annotated`` metadata so that the flag name sits
    next to the field it sets: the CLI, the environment source and the docs
    are all generated from the model and cannot drift from it.
    """

    name: str
    """Flagger's flag name without dashes, e.g. ``mesh-provider``."""
    env: str | None = None
    """The ``FLAGGER_*`` variable, when it is not derived from the name."""
    legacy_env: tuple[str, ...] = ()
    """Flagger's unprefixed variables for this value; they win over the flag, as in Flagger."""
    flagger: bool = True
    """False for flags Flagger does not have (flaggerpy extensions)."""


@dataclass(frozen=True, slots=True)
class FlagSpec:
    """One leaf of the settings tree, with the flag and variables that set it."""

    flag: Flag
    path: tuple[str, ...]
    field: FieldInfo

    @property
    def name(self) -> str:
        """The flag name without dashes (``mesh-provider``)."""
        return self.flag.name

    @property
    def env(self) -> str:
        """The ``FLAGGER_*`` environment variable."""
        return self.flag.env or ENV_PREFIX + self.flag.name.upper().replace("-", "_")

    @property
    def dotted_path(self) -> str:
        """The attribute path from ``Settings``, e.g. ``mesh.provider``."""
        return ".".join(self.path)

    @property
    def description(self) -> str:
        return self.field.description or ""

    @property
    def is_bool(self) -> bool:
        """Boolean flags may be given bare (``-enable-leader-election``), as in Go."""
        return self.field.annotation is bool

    @property
    def is_duration(self) -> bool:
        """Seconds in the model, a Go duration (``10s``) on the command line."""
        return _DURATION in self.field.metadata

    @property
    def value_kind(self) -> str:
        """What the flag takes, as Go's usage shows it: ``int``, ``duration``, ``list``..."""
        if self.is_duration:
            return "duration"
        return _VALUE_KINDS.get(self.field.annotation, "string")

    @property
    def default(self) -> Any:
        return self.field.get_default(call_default_factory=True)

    @property
    def default_text(self) -> str:
        """The default as it would be typed on the command line (``10s``, ``true``, ``a,b``)."""
        value = self.default
        if self.is_duration:
            return durations.format_duration(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        if isinstance(value, tuple):
            return ",".join(str(item) for item in value)
        if isinstance(value, SecretStr):
            return "**********" if value.get_secret_value() else ""
        return str(value)


_VALUE_KINDS: dict[Any, str] = {bool: "bool", int: "int", float: "float", tuple[str, ...]: "list"}


# --- value parsing -----------------------------------------------------------------------------

def _duration(value: Any) -> Any:
    """Reads Go durations (``10s``, ``1m30s``) as Flagger's flags do; numbers are seconds."""
    if isinstance(value, str):
        return durations.parse_duration(value.strip())
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


def _comma_list(value: Any) -> Any:
    """Reads Flagger's comma-separated list flags; blanks are dropped."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


_LEVEL_ALIASES = {"warning": "warn"}


def _log_level(value: Any) -> Any:
    if isinstance(value, str):
        lowered = value.strip().lower()
        return _LEVEL_ALIASES.get(lowered, lowered)
    return value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _http_url(value: str) -> str:
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http(s) URL, for example http://prometheus:9090")
    return value


_DURATION: Final = "go-duration"  # marks Seconds fields in their metadata

Seconds = Annotated[float, BeforeValidator(_duration), Field(allow_inf_nan=False), _DURATION]
"""A duration in seconds (the runtime's unit), written as a Go duration on the command line."""
CommaList = Annotated[tuple[str, ...], BeforeValidator(_comma_list)]


# --- the groups --------------------------------------------------------------------------------


class _Group(BaseModel):
    """A group of settings: frozen, and strict about unknown names so typos fail loudly."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class KubeSettings(_Group):
    """How to reach the Kubernetes API server (``flaggerpy.kube``)."""

    kubeconfig: Annotated[str, Flag("kubeconfig")] = Field(
        "", description="Path to a kubeconfig; empty means in-cluster config or $KUBECONFIG.")
    master: Annotated[str, Flag("master")] = Field(
        "", description="API server URL; overrides the server of the kubeconfig.")
    qps: Annotated[float, Flag("kubeconfig-qps")] = Field(
        100.0, gt=0, allow_inf_nan=False,
        description="Client-side limit on requests to the API server, per second; beyond "
                    "the burst, requests wait their turn (a watch counts once, when opened).")
    burst: Annotated[int, Flag("kubeconfig-burst")] = Field(
        250, ge=1, description="Requests sent at once before the QPS limit makes them wait.")
    service_mesh_kubeconfig: Annotated[str, Flag("kubeconfig-service-mesh")] = Field(
        "", description="Kubeconfig of the cluster holding the mesh objects; empty means this one.")


class MeshSettings(_Group):
    """Which router and builtin-metrics observer canaries use unless their spec says otherwise."""

    provider: Annotated[str, Flag("mesh-provider")] = Field(
        "istio", min_length=1,
        description="Default mesh/ingress provider (istio, linkerd, gatewayapi:v1, nginx, ...).")
    ingress_annotations_prefix: Annotated[str, Flag("ingress-annotations-prefix")] = Field(
        "nginx.ingress.kubernetes.io", min_length=1,
        description="Annotation prefix the NGINX router writes on canary Ingresses.")
    ingress_class: Annotated[str, Flag("ingress-class")] = Field(
        "", description="ingressClassName set on Contour HTTPProxy objects.")


class MetricsSettings(_Group):
    """The Prometheus server behind the builtin metrics."""

    server: Annotated[str, Flag("metrics-server"), AfterValidator(_http_url)] = Field(
        "http://prometheus:9090",
        description="Prometheus URL for builtin metrics (request-success-rate, request-duration).")


class SlackSettings(_Group):
    """The global Slack notifier, used by canaries without ``analysis.alerts``."""

    url: Annotated[SecretStr, Flag("slack-url", legacy_env=("SLACK_URL",))] = Field(
        SecretStr(""), description="Slack incoming-webhook URL; empty disables Slack.")
    token: Annotated[SecretStr, Flag("slack-token", legacy_env=("SLACK_TOKEN",))] = Field(
        SecretStr(""), description="Slack bot token; posts through chat.postMessage when set.")
    proxy_url: Annotated[str, Flag("slack-proxy-url", legacy_env=("SLACK_PROXY_URL",))] = Field(
        "", description="HTTP proxy for Slack requests.")
    user: Annotated[str, Flag("slack-user")] = Field(
        "flagger", description="User name Slack messages are posted as.")
    channel: Annotated[str, Flag("slack-channel")] = Field(
        "", description="Slack channel; Slack needs one or the notifier stays off.")


class MSTeamsSettings(_Group):
    """The global Microsoft Teams notifier; when set it replaces Slack, as in Flagger."""

    url: Annotated[SecretStr, Flag("msteams-url", legacy_env=("MSTEAMS_URL",))] = Field(
        SecretStr(""), description="MS Teams incoming-webhook URL; replaces Slack when set.")
    proxy_url: Annotated[str, Flag("msteams-proxy-url", legacy_env=("MSTEAMS_PROXY_URL",))] = Field(
        "", description="HTTP proxy for MS Teams requests.")


class NotificationSettings(_Group):
    """Where alerts and events go when a canary does not name its own providers."""

    slack: SlackSettings = Field(default_factory=SlackSettings)
    msteams: MSTeamsSettings = Field(default_factory=MSTeamsSettings)
    event_webhook: Annotated[
        SecretStr, Flag("event-webhook", legacy_env=("EVENT_WEBHOOK_URL",))] = Field(
        SecretStr(""), description="URL that receives every canary event as a webhook.")
    dashboard_url: Annotated[str, Flag("dashboard-url", flagger=False)] = Field(
        "", description="Link to a canary's page for alert templates (dashboard_url); "
                        "{namespace} and {name} are replaced. Empty: no link.")


def shard_index(namespace: str, name: str, shards: int) -> int:
    """The shard of ``namespace/name`` among ``shards``: CRC-32 of the key, modulo the count.

    Stable across processes, restarts and Python versions (``hash()`` is salted per process),
    so every replica agrees on the owner of each canary without talking to the others.
    """
    return zlib.crc32(f"{namespace}/{name}".encode()) % shards


class ControllerSettings(_Group):
    """What the controller watches and how it works through canaries."""

    workers: Annotated[int, Flag("threadiness")] = Field(
        2, ge=1, description="Number of canaries reconciled concurrently (work queue workers).")
    control_loop_interval: Annotated[Seconds, Flag("control-loop-interval")] = Field(
        10.0, gt=0,
        description="Accepted for Flagger compatibility; no effect: a canary is scheduled on "
                    "every change at once, then every analysis interval, with no loop to pace.")
    namespace: Annotated[str, Flag("namespace")] = Field(
        "", pattern=r"^[a-z0-9.,-]*$",
        description="Watch canaries in this namespace only; empty means all namespaces. "
                    "Several, comma-separated (flaggerpy only): canaries in those namespaces "
                    "only, read through cluster-wide caches (cluster-wide read access needed).")
    selector_labels: Annotated[CommaList, Flag("selector-labels")] = Field(
        ("app", "name", "app.kubernetes.io/name"), min_length=1,
        description="Pod labels tried, in order, to build the primary's selector.")
    include_label_prefix: Annotated[CommaList, Flag("include-label-prefix")] = Field(
        (), description="Label/annotation prefixes copied to primary objects; * copies all.")
    enable_config_tracking: Annotated[bool, Flag("enable-config-tracking")] = Field(
        True, description="Restart analysis when a referenced ConfigMap or Secret changes.")
    enable_leader_election: Annotated[bool, Flag("enable-leader-election")] = Field(
        False, description="Run as one active replica elected through a Lease.")
    leader_election_namespace: Annotated[str, Flag("leader-election-namespace")] = Field(
        "kube-system", min_length=1,
        description="Namespace of the leader-election Lease; -namespace overrides it when set.")
    leader_election_lease_duration: Annotated[
        Seconds, Flag("leader-election-lease-duration", flagger=False)] = Field(
        60.0, gt=0,
        description="How long a leader's Lease is valid without renewal (Flagger: fixed 60s).")
    leader_election_renew_deadline: Annotated[
        Seconds, Flag("leader-election-renew-deadline", flagger=False)] = Field(
        15.0, gt=0,
        description="How long the leader retries renewing before giving up (Flagger: fixed 15s).")
    leader_election_retry_period: Annotated[
        Seconds, Flag("leader-election-retry-period", flagger=False)] = Field(
        5.0, gt=0,
        description="How often candidates try to acquire or renew the Lease (Flagger: fixed 5s).")
    min_analysis_interval: Annotated[
        Seconds, Flag("min-analysis-interval", flagger=False)] = Field(
        10.0, gt=0,
        description="Shortest analysis tick, whatever a Canary asks for (Flagger: fixed 10s).")
    analysis_jitter: Annotated[float, Flag("analysis-jitter", flagger=False)] = Field(
        0.1, ge=0, le=1,
        description="The second tick of a run comes after the interval plus up to this share "
                    "of it, at random, so canaries revised together do not tick together "
                    "(0: exactly the interval).")
    hold_on_no_values: Annotated[bool, Flag("hold-on-no-values", flagger=False)] = Field(
        False, description="A metric with no values holds the canary instead of failing a check.")
    no_cross_namespace_refs: Annotated[bool, Flag("no-cross-namespace-refs")] = Field(
        False, description="Reject templateRef/providerRef/upstreamRef into other namespaces.")
    shard: Annotated[str, Flag("shard", flagger=False)] = Field(
        "", pattern=r"^([0-9]+/[0-9]+)?$",
        description="K/N: serve only the canaries whose namespace/name falls in shard K of N "
                    "(0-based), elected through a Lease of that shard's own; empty: all.")
    cluster_name: Annotated[str, Flag("cluster-name")] = Field(
        "", description="Cluster name added as a Cluster field to every alert.")

    @model_validator(mode="after")
    def _check_shard(self) -> ControllerSettings:
        if self.shard_of is not None and not 0 <= self.shard_of[0] < self.shard_of[1]:
            raise ValueError(f"shard {self.shard}: K must be below N (shards are 0 to N-1)")
        return self

    @model_validator(mode="after")
    def _check_leader_election_timing(self) -> ControllerSettings:
        # client-go refuses LeaseDuration <= RenewDeadline <= RetryPeriod * 1.2 (JitterFactor).
        if self.leader_election_lease_duration <= self.leader_election_renew_deadline:
            raise ValueError("leader-election-lease-duration must be longer than "
                             "leader-election-renew-deadline")
        if self.leader_election_renew_deadline <= self.leader_election_retry_period * 1.2:
            raise ValueError("leader-election-renew-deadline must be longer than 1.2 x "
                             "leader-election-retry-period")
        return self

    @property
    def namespaces(self) -> frozenset[str]:
        """The namespaces whose canaries this process serves; empty for all of them."""
        return frozenset(name for name in self.namespace.split(",") if name)

    @property
    def cache_namespace(self) -> str | None:
        """The one namespace the caches may be limited to; None to cache every namespace.

        Several namespaces are cached cluster-wide and filtered by :meth:`serves`: one informer
        per namespace and resource would multiply watches (and the store's write bookkeeping)
        by the number of namespaces.
        """
        return next(iter(self.namespaces)) if len(self.namespaces) == 1 else None

    @property
    def shard_of(self) -> tuple[int, int] | None:
        """``-shard=K/N`` as ``(K, N)``; None when this process serves every shard."""
        if not self.shard:
            return None
        index, _, count = self.shard.partition("/")
        return int(index), int(count)

    def serves(self, namespace: str, name: str) -> bool:
        """Whether this process reconciles the object ``namespace/name``: in a namespace of
        ``-namespace`` (if set) and in its ``-shard`` (if set)."""
        if self.namespaces and namespace not in self.namespaces:
            return False
        shard = self.shard_of
        return shard is None or shard_index(namespace, name, shard[1]) == shard[0]

    @property
    def election_namespace(self) -> str:
        """Where the Lease lives: the watched namespace if only one, as Flagger does."""
        return self.cache_namespace or self.leader_election_namespace


class TelemetrySettings(_Group):
    """The HTTP endpoint (``/metrics``, ``/healthz``) and the logs."""

    port: Annotated[int, Flag("port", env="FLAGGER_HTTP_PORT")] = Field(
        8080, ge=0, le=65535, description="Port of the HTTP server for /metrics and /healthz.")
    log_level: Annotated[LogLevel, Flag("log-level"), BeforeValidator(_log_level)] = Field(
        "debug", description="Log level: debug, info, warn, error, fatal or panic.")
    log_encoding: Annotated[LogEncoding, Flag("zap-encoding"), BeforeValidator(_lower)] = Field(
        "auto", description="Log format: json, console, or auto (json unless stderr is a TTY).")
    zap_replace_globals: Annotated[bool, Flag("zap-replace-globals")] = Field(
        False, description="Accepted for compatibility with Flagger; has no effect.")
    dashboard_listen_address: Annotated[
        str, Flag("dashboard-listen-address", flagger=False)] = Field(
        "", pattern=r"^(.*:[0-9]+)?$",
        description="host:port of the web dashboard (docs/dashboard.md), authenticated and "
                    "authorised by the API server (TokenReview, SubjectAccessReview); "
                    "empty: no dashboard.")


class Settings(BaseSettings):
    """Everything the controller is configured with; see the module docstring for sources.

    Build it with :meth:`load` (which turns validation errors into
    ``ConfigError``) or ``Settings()`` for defaults plus the environment.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", validate_default=True)

    kube: KubeSettings = Field(default_factory=KubeSettings)
    mesh: MeshSettings = Field(default_factory=MeshSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    controller: ControllerSettings = Field(default_factory=ControllerSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)

    @classmethod
    def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flagger's legacy variables, then flags/arguments, then ``FLAGGER_*`` variables."""
        return (
            _FlagEnvironment(settings_cls, legacy=True),
            init_settings,
            _FlagEnvironment(settings_cls, legacy=False),
        )

    @classmethod
    def load(cls, flags: Mapping[str, Any] | None = None) -> Settings:
        """Builds settings from flag values keyed by flag name (``{"mesh-provider": "linkerd"}``).

        Values may be strings as typed on a command line. Unknown flag names
        and invalid values raise ``ConfigError`` with one readable line per
        problem, naming the flag and the variable that could have set it.
        """
        flags = dict(flags or {})
        specs = {spec.name: spec for spec in iter_flags()}
        nested: dict[str, Any] = {}
        for name, value in flags.items():
            spec = specs.get(name)
            if spec is None:
                raise ConfigError(f"flag provided but not defined: -{name}")
            _set_path(nested, spec.path, value)
        try:
            return cls(**nested)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, flags=flags)) from exc


# --- sources and errors ------------------------------------------------------------------------


def iter_flags(model: type[BaseModel] = Settings) -> Iterator[FlagSpec]:
    """Every leaf setting with its flag, depth first in declaration order."""
    yield from _walk(model, ())


def _walk(model: type[BaseModel], prefix: tuple[str, ...]) -> Iterator[FlagSpec]:
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _walk(annotation, path)
            continue
        flag = next((m for m in field.metadata if isinstance(m, Flag)), None)
        if flag is None:
            raise TypeError(f"settings field {'.'.join(path)} has no Flag")
        yield FlagSpec(flag=flag, path=path, field=field)


def _set_path(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value


class _FlagEnvironment(PydanticBaseSettingsSource):
    """Reads one environment variable per flag into the nested shape of ``Settings``.

    pydantic-settings' own source would want ``FLAGGER_MESH__PROVIDER``;
    users of Flagger expect one flat name per flag, so the names come from
    the ``Flag`` metadata instead.
    """

    def __init__(self, settings_cls: type[BaseSettings], *, legacy: bool) -> None:
        super().__init__(settings_cls)
        self._legacy = legacy

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads whole paths

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for spec in iter_flags(self.settings_cls):
            names = spec.flag.legacy_env if self._legacy else (spec.env,)
            for env_name in names:
                value = os.environ.get(env_name)
                if value:
                    _set_path(values, spec.path, value)
                    break
        return values


def _describe(exc: ValidationError, *, flags: Mapping[str, Any]) -> str:
    """One line per error: which flag, which variable, which value, and what is wrong."""
    specs = list(iter_flags())
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(str(part) for part in error["loc"])
        spec = next((s for s in specs if loc[:len(s.path)] == s.path), None)
        message = error["msg"].removeprefix("Value error, ")
        if spec is None:
            where = ".".join(loc) or "settings"
            lines.append(f"invalid {where}: {message}")
            continue
        value = error.get("input")
        origin = _origin(spec, flags)
        shown = "" if _is_secret(spec) or isinstance(value, dict) else f" {value!r}"
        lines.append(f"invalid value{shown} for -{spec.name} ({origin}): {message}")
    return "; ".join(lines)


def _origin(spec: FlagSpec, flags: Mapping[str, Any]) -> str:
    for env_name in spec.flag.legacy_env:
        if os.environ.get(env_name):
            return f"from ${env_name}"
    if spec.name in flags:
        return f"from flag -{spec.name}"
    if os.environ.get(spec.env):
        return f"from ${spec.env}"
    return f"flag -{spec.name} or ${spec.env}"


def _is_secret(spec: FlagSpec) -> bool:
    return spec.field.annotation is SecretStr

