"""The Canary model (``flagger.app/v1beta1``), field for field as Flagger's CRD has it.

A Canary names a workload (``targetRef``), says how to expose it (``service``) and how to judge
a new revision (``analysis``). Field names, types and wire spellings follow Flagger's Go types
(``pkg/apis/flagger/v1beta1/canary.go``) and CRD, so any manifest Flagger accepts parses here
and dumps back unchanged.

Defaults that Flagger applies in code are methods here, named after the Go getters so they can
be grepped across both code bases (``get_analysis_interval`` for ``GetAnalysisInterval``); they
read the spec and apply the default, never write it back.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, NamedTuple

from pydantic import Field

from flaggerpy.models._base import (
    PLUGIN_NAME_PATTERN,
    Crd,
    FlaggerModel,
    FormatString,
    KubeObject,
    Number,
    plugin_description,
    plugin_name,
)
from flaggerpy.models.alert_provider import TEMPLATES_DESCRIPTION
from flaggerpy.models.durations import parse_duration
from flaggerpy.models.istio import (
    CorsPolicy,
    Headers,
    HTTPMatchRequest,
    HTTPRetry,
    HTTPRewrite,
    StringMatch,
    TrafficPolicy,
)
from flaggerpy.models.status import CanaryStatus

__all__ = [
    "ANALYSIS_INTERVAL_SECONDS",
    "CANARY_PROVIDERS",
    "CANARY_READY_THRESHOLD",
    "FINALIZER",
    "METRIC_INTERVAL",
    "MIN_ANALYSIS_INTERVAL_SECONDS",
    "PRIMARY_READY_THRESHOLD",
    "PROGRESS_DEADLINE_SECONDS",
    "ROUTERS_GROUP",
    "SESSION_AFFINITY_MAX_AGE",
    "TARGET_KINDS",
    "WEBHOOK_TIMEOUT",
    "AlertProviderReference",
    "AlertSeverity",
    "AnalysisMatch",
    "AutoscalerReference",
    "BackendObjectReference",
    "Canary",
    "CanaryAlert",
    "CanaryAnalysis",
    "CanaryMetric",
    "CanaryService",
    "CanarySpec",
    "CanaryThresholdRange",
    "CanaryWebhook",
    "ComparisonDirection",
    "ComparisonTarget",
    "ComparisonTest",
    "CrossNamespaceObjectReference",
    "CustomMetadata",
    "DeploymentStrategy",
    "FailurePolicy",
    "HTTPRequestMirrorFilter",
    "HeaderMatch",
    "HookType",
    "LocalObjectReference",
    "MetricComparison",
    "MetricTemplateReference",
    "NoDataPolicy",
    "ParentReference",
    "ScalerReplicas",
    "ServiceNames",
    "SessionAffinity",
    "UnmanagedMetadata",
]

# Defaults and constants of pkg/apis/flagger/v1beta1/canary.go.
PROGRESS_DEADLINE_SECONDS = 600
ANALYSIS_INTERVAL_SECONDS = 60.0
MIN_ANALYSIS_INTERVAL_SECONDS = 10.0
PRIMARY_READY_THRESHOLD = 100
CANARY_READY_THRESHOLD = 100
METRIC_INTERVAL = "1m"
SESSION_AFFINITY_MAX_AGE = 86400
WEBHOOK_TIMEOUT = "10s"
FINALIZER = "finalizer.flagger.app"

CANARY_PROVIDERS: tuple[str, ...] = (
    "apisix",
    "appmesh",
    "appmesh:v1beta2",
    "contour",
    "gatewayapi:v1",
    "gatewayapi:v1beta1",
    "gloo",
    "istio",
    "knative",
    "kubernetes",
    "kuma",
    "linkerd",
    "nginx",
    "osm",
    "skipper",
    "smi:v1alpha1",
    "smi:v1alpha2",
    "smi:v1alpha3",
    "traefik",
)
"""Every ``spec.provider`` value Flagger's CRD accepts (its enum); the router registry resolves
them. flaggerpy's CRD accepts any router plugin's name and lists these in the description."""

ROUTERS_GROUP = "flaggerpy.routers"
"""The entry point group ``spec.provider`` names a plugin of (the part before the first ``:``)."""


# ---------------------------------------------------------------------------------------------
# flaggerpy's additions to Flagger's schema. Each rejects only what cannot work; each is
# listed in docs/compatibility.md (a unit test holds the two together).

_PERCENT_REASON = "a traffic or pod percentage outside 0-100 cannot be applied"


_Percent = Annotated[
    Number | None, Crd(added={"minimum": 0, "maximum": 100}, reason=_PERCENT_REASON)
]
_NonNegative = Annotated[
    Number | None, Crd(added={"minimum": 0}, reason="a negative count or duration is meaningless")
]


# ---------------------------------------------------------------------------------------------
# References


class LocalObjectReference(FlaggerModel):
    """A workload, ingress or route in the Canary's namespace (``targetRef``, ``ingressRef``...).

    Which kinds are allowed depends on the field, so the kind enum is set where it is used.
    """

    api_version: str
    kind: str
    name: str


class ScalerReplicas(FlaggerModel):
    """Replica bounds that override the target autoscaler's on the primary copy."""

    crd_schema: ClassVar[Crd | None] = Crd(
        added={
            "x-kubernetes-validations": [
                {
                    "rule": (
                        "!has(self.minReplicas) || !has(self.maxReplicas)"
                        " || self.minReplicas <= self.maxReplicas"
                    ),
                    "message": "minReplicas must not exceed maxReplicas",
                }
            ]
        },
        reason="an autoscaler with minReplicas above maxReplicas is rejected by Kubernetes later",
    )

    min_replicas: Annotated[int | None, Crd(schema={"minimum": 1})] = None
    max_replicas: Annotated[int | None, Crd(schema={"minimum": 1})] = None


class AutoscalerReference(LocalObjectReference):
    """The target's HPA or KEDA ScaledObject, cloned as ``<name>-primary`` for the primary."""

    primary_scaler_queries: dict[str, str] | None = None
    primary_scaler_replicas: ScalerReplicas | None = None


class CrossNamespaceObjectReference(LocalObjectReference):
    """An object that may live in another namespace (Gloo's ``upstreamRef``)."""

    namespace: str | None = None


class MetricTemplateReference(FlaggerModel):
    """A MetricTemplate by name; the namespace defaults to the Canary's."""

    name: str = Field(description="Name of this metric template")
    namespace: str | None = Field(default=None, description="Namespace of this metric template")


class AlertProviderReference(FlaggerModel):
    """An AlertProvider by name; the namespace defaults to the Canary's."""

    name: str = Field(description="Name of the alert provider")
    namespace: str | None = Field(default=None, description="Namespace of the alert provider")


def _kind_enum(*kinds: str) -> Crd:
    return Crd(schema={"properties": {"kind": {"enum": list(kinds)}}})


TARGET_KINDS = ("DaemonSet", "Deployment", "Service")
"""The ``targetRef.kind`` values Flagger's CRD accepts (``Service`` also covers Knative)."""


# ---------------------------------------------------------------------------------------------
# spec.service


_GROUP_PATTERN = r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_KIND_PATTERN = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"
_NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_SECTION_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_PORT = Crd(schema={"format": "int32", "minimum": 1, "maximum": 65535})


class ParentReference(FlaggerModel):
    """A Gateway API parent (``service.gatewayRefs``): a Gateway, or a Service for GAMMA."""

    group: Annotated[
        str | None,
        Crd(
            schema={
                "default": "gateway.networking.k8s.io",
                "maxLength": 253,
                "pattern": _GROUP_PATTERN,
            }
        ),
    ] = None
    kind: Annotated[
        str | None,
        Crd(
            schema={"default": "Gateway", "maxLength": 63, "minLength": 1, "pattern": _KIND_PATTERN}
        ),
    ] = None
    name: Annotated[str, Crd(schema={"maxLength": 253, "minLength": 1})]
    namespace: Annotated[
        str | None, Crd(schema={"maxLength": 63, "minLength": 1, "pattern": _NAMESPACE_PATTERN})
    ] = None
    section_name: Annotated[
        str | None, Crd(schema={"maxLength": 253, "minLength": 1, "pattern": _SECTION_PATTERN})
    ] = None
    port: Annotated[int | None, _PORT] = None


class BackendObjectReference(FlaggerModel):
    """Where mirrored requests go; a core Service needs a port (CEL rule, as in Gateway API)."""

    crd_schema: ClassVar[Crd | None] = Crd(
        schema={
            "x-kubernetes-validations": [
                {
                    "message": "Must have port for Service reference",
                    "rule": (
                        "(size(self.group) == 0 && self.kind == 'Service') ? has(self.port) : true"
                    ),
                }
            ]
        }
    )

    group: Annotated[
        str | None, Crd(schema={"default": "", "maxLength": 253, "pattern": _GROUP_PATTERN})
    ] = None
    kind: Annotated[
        str | None,
        Crd(
            schema={"default": "Service", "maxLength": 63, "minLength": 1, "pattern": _KIND_PATTERN}
        ),
    ] = None
    name: Annotated[str, Crd(schema={"maxLength": 253, "minLength": 1})]
    namespace: Annotated[
        str | None, Crd(schema={"maxLength": 63, "minLength": 1, "pattern": _NAMESPACE_PATTERN})
    ] = None
    port: Annotated[int | None, _PORT] = None


class HTTPRequestMirrorFilter(FlaggerModel):
    """An extra Gateway API ``RequestMirror`` filter (``service.mirror``)."""

    crd_schema: ClassVar[Crd | None] = Crd(
        added={"required": ["backendRef"]},
        reason=(
            "Flagger's CRD puts this `required` on the array, where it has no effect; a mirror"
            " without a backend cannot be written into an HTTPRoute"
        ),
    )

    backend_ref: BackendObjectReference


class CustomMetadata(FlaggerModel):
    """Labels and annotations to put on a generated Service (``apex``, ``primary``, ``canary``)."""

    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class UnmanagedMetadata(FlaggerModel):
    """Label and annotation keys on generated Services that Flagger must leave alone."""

    annotations: list[str] | None = None
    labels: list[str] | None = None


class ServiceNames(NamedTuple):
    """The three ClusterIP Services of a Canary: apex, ``-primary`` and ``-canary``."""

    apex: str
    primary: str
    canary: str


class CanaryService(FlaggerModel):
    """How the generated Services and the mesh or ingress routing objects look.

    Most fields are provider-specific; the table in the spec (§1.2) says which router reads
    which. Free-form Istio parts are typed in :mod:`flaggerpy.models.istio`.
    """

    name: str | None = Field(default=None, description="Kubernetes service name")
    port: Annotated[
        Number,
        Crd(
            added={"minimum": 1, "maximum": 65535},
            reason="a Service port outside 1-65535 is rejected by Kubernetes later",
        ),
    ] = Field(description="Container port number")
    port_name: str | None = Field(default=None, description="Container port name")
    app_protocol: str | None = Field(default=None, description="Application protocol of the port")
    traffic_distribution: Annotated[
        str | None, Crd(schema={"enum": ["PreferClose", "PreferSameZone", "PreferSameNode"]})
    ] = Field(default=None, description="Traffic distribution of the service")
    target_port: int | str | None = Field(default=None, description="Container target port name")
    port_discovery: bool | None = Field(default=None, description="Enable port discovery")
    headless: bool | None = Field(
        default=None,
        description="Headless if set to true, generates headless Kubernetes services.",
    )
    timeout: str | None = Field(default=None, description="HTTP or gRPC request timeout")
    backend_timeout: str | None = Field(
        default=None, description="Backend request timeout (Gateway API only)"
    )
    mesh_name: str | None = Field(default=None, description="AppMesh mesh name")
    backends: list[str] | None = Field(default=None, description="AppMesh backend array")
    hosts: list[str] | None = Field(
        default=None, description="The list of host names for this service"
    )
    delegation: bool | None = Field(
        default=None, description="enable behaving as a delegate VirtualService"
    )
    match: list[HTTPMatchRequest] | None = Field(default=None, description="URI match conditions")
    retries: HTTPRetry | None = Field(default=None, description="Retry policy for HTTP requests")
    rewrite: HTTPRewrite | None = Field(default=None, description="Rewrite HTTP URIs")
    mirror: Annotated[
        list[HTTPRequestMirrorFilter] | None, Crd(schema={"required": ["backendRef"]})
    ] = Field(
        default=None, description="Mirror defines a schema for a filter that mirrors requests."
    )
    headers: Headers | None = Field(default=None, description="Headers operations")
    gateways: list[str] | None = Field(
        default=None, description="The list of Istio gateway for this virtual service"
    )
    gateway_refs: Annotated[list[ParentReference] | None, Crd(schema={"maxItems": 32})] = Field(
        default=None, description="The list of parent Gateways for a HTTPRoute"
    )
    cors_policy: CorsPolicy | None = Field(
        default=None, description="Istio Cross-Origin Resource Sharing policy (CORS)"
    )
    traffic_policy: TrafficPolicy | None = Field(default=None, description="Istio traffic policy")
    apex: CustomMetadata | None = Field(
        default=None, description="Metadata to add to the apex service"
    )
    primary: CustomMetadata | None = Field(
        default=None, description="Metadata to add to the primary service"
    )
    canary: CustomMetadata | None = Field(
        default=None, description="Metadata to add to the canary service"
    )
    unmanaged_metadata: UnmanagedMetadata | None = Field(
        default=None,
        description=(
            "UnmanagedMetadata is a list of metadata keys that should be ignored by Flagger."
        ),
    )

    def get_port_name(self) -> str:
        """The Service port name; Flagger defaults it to ``http``."""
        return self.port_name or "http"

    def get_target_port(self) -> int | str:
        """The container port the Services target; Flagger defaults it to ``port``."""
        if self.target_port is None or self.target_port == "" or self.target_port == 0:
            return self.port
        return self.target_port


# ---------------------------------------------------------------------------------------------
# spec.analysis


class HeaderMatch(FlaggerModel):
    """An A/B header condition: exactly one of exact, prefix, suffix or regex."""

    crd_schema: ClassVar[Crd | None] = Crd(
        schema={
            "oneOf": [
                {"required": ["exact"]},
                {"required": ["prefix"]},
                {"required": ["suffix"]},
                {"required": ["regex"]},
            ]
        }
    )

    exact: FormatString | None = None
    prefix: FormatString | None = None
    suffix: FormatString | None = None
    regex: FormatString | None = Field(
        default=None,
        description="RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)",
    )


class AnalysisMatch(FlaggerModel):
    """One A/B testing condition (``analysis.match[]``): headers, query parameters, source labels.

    Flagger's Go type is Istio's ``HTTPMatchRequest``, but its CRD keeps only these three
    fields, so the API server prunes anything else.
    """

    headers: dict[str, HeaderMatch] | None = None
    query_params: dict[str, StringMatch] | None = Field(
        default=None, description="Query parameters for matching."
    )
    source_labels: dict[str, FormatString] | None = Field(
        default=None,
        description=(
            "Applicable only when the 'mesh' gateway is included in the service.gateways list"
        ),
    )


class CanaryThresholdRange(FlaggerModel):
    """The accepted range of a metric value; either bound may be open."""

    crd_schema: ClassVar[Crd | None] = Crd(
        added={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.min) || !has(self.max) || self.min <= self.max",
                    "message": "thresholdRange.min must not exceed thresholdRange.max",
                }
            ]
        },
        reason="a range whose min exceeds its max fails every check",
    )

    min: float | None = Field(default=None, description="Min value accepted for this metric")
    max: float | None = Field(default=None, description="Max value accepted for this metric")


_GO_DURATION_PATTERN = Crd(schema={"pattern": "^[0-9]+(m|s)"})


def _new(reason: str) -> Crd:
    return Crd(new=True, reason=reason)


_COMPARE_REASON = (
    "comparison with the primary (flaggerpy's statistical judge); optional, a metric without it"
    " is judged by its threshold exactly as Flagger does"
)
_ON_NO_DATA_REASON = "per-metric no-data policy; unset keeps Flagger's (a failed check)"
_MIN_SAMPLES_REASON = "per-metric minimum sample count for the no-data policy; optional"
_DRY_RUN_REASON = "evaluate and report without acting; optional, unset acts as Flagger does"
_ON_FAILURE_REASON = "what failed checks lead to; optional, unset rolls back as Flagger does"
_ALERT_TEMPLATES_REASON = (
    "this Canary's alert texts by event kind; optional, without it the AlertProvider's templates"
    " or Flagger's texts are sent"
)


class ComparisonTarget(StrEnum):
    """What a metric's canary value is compared with; only the primary for now."""

    PRIMARY = "primary"


class ComparisonTest(StrEnum):
    """How the two samples are compared (``flaggerpy.judging``)."""

    MANN_WHITNEY = "mann-whitney"
    PROPORTION = "proportion"


class ComparisonDirection(StrEnum):
    """Which change of the metric is bad."""

    INCREASE = "increase"
    DECREASE = "decrease"
    EITHER = "either"


class MetricComparison(FlaggerModel):
    """``metrics[].compare``: judge the canary against the primary (flaggerpy only).

    Defaults are applied by the judge (``flaggerpy.judging.Comparison.from_metric``), never
    written back: test ``mann-whitney``, direction ``increase``, tolerance 0.1, confidence 0.95.
    """

    with_: ComparisonTarget | None = Field(
        default=None, alias="with", description="What the canary is compared with: primary"
    )
    test: ComparisonTest | None = Field(
        default=None,
        description=(
            "mann-whitney (series of values, e.g. latencies; default) or proportion (events out"
            " of requests, e.g. errors)"
        ),
    )
    direction: ComparisonDirection | None = Field(
        default=None,
        description="Which change is bad: increase (default), decrease or either",
    )
    tolerance: Annotated[float | None, Crd(schema={"minimum": 0})] = Field(
        default=None,
        description=(
            "Acceptable change as a fraction of the primary's level (median or ratio);"
            " default 0.1"
        ),
    )
    confidence: Annotated[
        float | None,
        Crd(schema={"minimum": 0, "maximum": 1, "exclusiveMinimum": True,
                    "exclusiveMaximum": True}),
    ] = Field(default=None, description="Confidence level of the interval; default 0.95")
    critical: bool | None = Field(
        default=None,
        description="A failing critical metric fails the whole analysis, whatever the score",
    )


class NoDataPolicy(StrEnum):
    """``metrics[].onNoData``: what a check with no data (or too few samples) does."""

    FAIL = "fail"
    HOLD = "hold"
    SKIP = "skip"


class FailurePolicy(StrEnum):
    """``analysis.onFailure``: roll back (Flagger's behaviour) or pause at the current weight."""

    ROLLBACK = "rollback"
    PAUSE = "pause"


class CanaryMetric(FlaggerModel):
    """One metric check: a builtin (by name), a MetricTemplate (``templateRef``) or PromQL."""

    name: str = Field(description="Name of the metric")
    interval: Annotated[str | None, _GO_DURATION_PATTERN] = Field(
        default=None, description="Interval of the query"
    )
    threshold: float | None = Field(default=None, description="Max value accepted for this metric")
    threshold_range: CanaryThresholdRange | None = Field(
        default=None, description="Range accepted for this metric"
    )
    query: str | None = Field(default=None, description="Prometheus query")
    template_ref: MetricTemplateReference | None = Field(
        default=None, description="Metric template reference"
    )
    template_variables: dict[str, str] | None = Field(
        default=None,
        description="Additional variables to be used in the metrics query (key-value pairs)",
    )
    compare: Annotated[MetricComparison | None, _new(_COMPARE_REASON)] = Field(
        default=None,
        description=(
            "flaggerpy: judge this metric by comparing the canary with the primary (the same"
            " query rendered for each) instead of, or as well as, a fixed threshold"
        ),
    )
    on_no_data: Annotated[NoDataPolicy | None, _new(_ON_NO_DATA_REASON)] = Field(
        default=None,
        description=(
            "flaggerpy: what a check without data (or under minSamples) does: fail counts a"
            " failed check (Flagger's behaviour), hold keeps the weight, skip ignores the check"
        ),
    )
    min_samples: Annotated[
        int | None, _new(_MIN_SAMPLES_REASON), Crd(schema={"minimum": 0})
    ] = Field(
        default=None,
        description=(
            "flaggerpy: the fewest samples (values, or requests for a proportion) per side"
            " under which the check has no data"
        ),
    )
    dry_run: Annotated[bool | None, _new(_DRY_RUN_REASON)] = Field(
        default=None,
        description="flaggerpy: evaluate and report this metric, never fail the canary on it",
    )


class AlertSeverity(StrEnum):
    """Which analysis events an alert receives (``analysis.alerts[].severity``).

    Flagger's docs say an empty severity means ``info``; its code matches nothing for it
    (spec §10.1). The notifier decides; the model keeps what was written.
    """

    UNSET = ""
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


class CanaryAlert(FlaggerModel):
    """Send this Canary's events to an AlertProvider."""

    name: str = Field(description="Name of the this alert")
    severity: AlertSeverity | None = Field(
        default=None, description="Severity level can be info, warn, error (default info)"
    )
    provider_ref: AlertProviderReference = Field(description="Alert provider reference")
    templates: Annotated[dict[str, str] | None, _new(_ALERT_TEMPLATES_REASON)] = Field(
        default=None,
        description=TEMPLATES_DESCRIPTION + "; these win over the AlertProvider's",
    )


class HookType(StrEnum):
    """When a webhook runs; ``UNSET`` (the empty string) means ``ROLLOUT``."""

    UNSET = ""
    CONFIRM_ROLLOUT = "confirm-rollout"
    PRE_ROLLOUT = "pre-rollout"
    ROLLOUT = "rollout"
    CONFIRM_PROMOTION = "confirm-promotion"
    POST_ROLLOUT = "post-rollout"
    EVENT = "event"
    ROLLBACK = "rollback"
    CONFIRM_TRAFFIC_INCREASE = "confirm-traffic-increase"


class CanaryWebhook(FlaggerModel):
    """A webhook called during the analysis: a gate, a test, a load generator or an event sink."""

    name: str = Field(description="Name of the webhook")
    type: HookType | None = Field(
        default=None, description="Type of the webhook pre, post or during rollout"
    )
    mute_alert: bool | None = Field(default=None, description="Mute all alerts for the webhook")
    url: Annotated[str, Crd(schema={"format": "url"})] = Field(
        description="URL address of this webhook"
    )
    timeout: Annotated[str | None, _GO_DURATION_PATTERN] = Field(
        default=None, description="Request timeout for this webhook"
    )
    retries: _NonNegative = Field(default=None, description="Number of retries for this webhook")
    disable_tls: bool | None = Field(
        default=None, alias="disableTLS", description="Disable TLS verification for this webhook"
    )
    metadata: dict[str, str] | None = Field(
        default=None, description="Metadata (key-value pairs) for this webhook"
    )

    def get_type(self) -> HookType:
        """The hook type, with Flagger's reading of an empty or missing type as ``rollout``."""
        if self.type is None or self.type is HookType.UNSET:
            return HookType.ROLLOUT
        return self.type

    def get_timeout_seconds(self) -> float:
        """The request timeout in seconds: ``timeout``, or 10 s when shorter than two characters.

        Flagger treats a timeout of fewer than two characters as unset; anything longer must
        parse, so this raises :class:`ValueError` where Flagger's call would fail.
        """
        text = self.timeout if self.timeout and len(self.timeout) >= 2 else WEBHOOK_TIMEOUT
        return parse_duration(text)


class SessionAffinity(FlaggerModel):
    """Cookie-based stickiness: a client that reached the canary keeps reaching it."""

    crd_schema: ClassVar[Crd | None] = Crd(
        added={
            "x-kubernetes-validations": [
                {
                    "rule": (
                        "!has(self.primaryCookieName) || self.primaryCookieName != self.cookieName"
                    ),
                    "message": "primaryCookieName must differ from cookieName",
                }
            ]
        },
        reason=(
            "Flagger rejects equal cookie names when it reconciles (verifySessionAffinity);"
            " rejecting them at admission says so where the manifest is applied"
        ),
    )

    cookie_name: str = Field(
        description="CookieName is the key that will be used for the session affinity cookie."
    )
    primary_cookie_name: str | None = Field(
        default=None,
        description="CookieName is the key that will be used for the session affinity cookie.",
    )
    domain: str | None = Field(
        default=None, description="Domain defines the host to which the cookie will be sent."
    )
    http_only: bool | None = Field(
        default=None,
        description=(
            "HttpOnly forbids JavaScript from accessing the cookie, for example, through the"
            " Document.cookie property."
        ),
    )
    max_age: Annotated[Number | None, Crd(schema={"default": SESSION_AFFINITY_MAX_AGE})] = Field(
        default=None,
        description=(
            "MaxAge indicates the number of seconds until the session affinity cookie will expire."
        ),
    )
    partitioned: bool | None = Field(
        default=None,
        description=(
            "Partitioned indicates that the cookie should be stored using partitioned storage."
        ),
    )
    path: str | None = Field(
        default=None,
        description=(
            "Path indicates the path that must exist in the requested URL for the browser to send"
            " the Cookie header."
        ),
    )
    same_site: Annotated[str | None, Crd(schema={"enum": ["Strict", "Lax", "None"]})] = Field(
        default=None,
        description="SameSite controls whether or not a cookie is sent with cross-site requests.",
    )
    secure: bool | None = Field(
        default=None,
        description=(
            "Secure indicates that the cookie is sent to the server only when a request is made"
            " with the https: scheme (except on localhost)"
        ),
    )

    def get_max_age(self) -> int:
        """Cookie lifetime in seconds; 0 or unset means a day, as Flagger's ``GetMaxAge``."""
        return self.max_age or SESSION_AFFINITY_MAX_AGE


class DeploymentStrategy(StrEnum):
    """The strategy an analysis implies (``Canary.DeploymentStrategy()`` in Flagger)."""

    CANARY = "canary"
    BLUE_GREEN = "blue-green"
    AB_TESTING = "ab-testing"


class CanaryAnalysis(FlaggerModel):
    """How a new revision is judged: tick interval, traffic steps, checks, gates and alerts.

    Exactly one of ``iterations`` (Blue/Green, or A/B with ``match``), ``stepWeight`` or
    ``stepWeights`` (progressive canary) must be set: Flagger's ``oneOf``.
    """

    crd_schema: ClassVar[Crd | None] = Crd(
        schema={
            "oneOf": [
                {"required": ["interval", "threshold", "iterations"]},
                {"required": ["interval", "threshold", "stepWeight"]},
                {"required": ["interval", "threshold", "stepWeights"]},
            ]
        },
        added={"required": ["interval", "threshold"]},
        reason=(
            "every branch of Flagger's oneOf requires both, so nothing more is rejected; they"
            " are spelled out because the model requires them"
        ),
    )

    interval: Annotated[str, _GO_DURATION_PATTERN] = Field(
        description="Schedule interval for this canary"
    )
    iterations: _NonNegative = Field(
        default=None, description="Number of checks to run for A/B Testing and Blue/Green"
    )
    threshold: Annotated[
        Number,
        Crd(added={"minimum": 0}, reason="a negative failed-checks threshold is meaningless"),
    ] = Field(description="Max number of failed checks before rollback")
    max_weight: _Percent = Field(default=None, description="Max traffic weight routed to canary")
    step_weight: _Percent = Field(
        default=None, description="Incremental traffic step weight for the analysis phase"
    )
    step_weights: Annotated[
        list[Number] | None,
        Crd(
            added={"items": {"minimum": 0}},
            reason=(
                "a negative weight cannot be routed; values above 100 stay allowed, Flagger"
                " caps them (its own tests use 200 as 'the rest')"
            ),
        ),
    ] = Field(default=None, description="Incremental traffic step weights for the analysis phase")
    step_weight_promotion: _Percent = Field(
        default=None, description="Incremental traffic step weight for the promotion phase"
    )
    mirror: bool | None = Field(default=None, description="Mirror traffic to canary")
    mirror_weight: _Percent = Field(default=None, description="Weight of traffic to be mirrored")
    primary_ready_threshold: _Percent = Field(
        default=None,
        description="Percentage of pods that need to be available to consider primary as ready",
    )
    canary_ready_threshold: _Percent = Field(
        default=None,
        description="Percentage of pods that need to be available to consider canary as ready",
    )
    match: list[AnalysisMatch] | None = Field(
        default=None, description="A/B testing match conditions"
    )
    metrics: list[CanaryMetric] | None = Field(
        default=None, description="Metric check list for this canary"
    )
    alerts: list[CanaryAlert] | None = Field(
        default=None, description="Alert list for this canary analysis"
    )
    webhooks: list[CanaryWebhook] | None = Field(
        default=None, description="Webhook list for this canary"
    )
    session_affinity: SessionAffinity | None = Field(
        default=None,
        description=("SessionAffinity represents the session affinity settings for a canary run."),
    )
    dry_run: Annotated[bool | None, _new(_DRY_RUN_REASON)] = Field(
        default=None,
        description=(
            "flaggerpy: evaluate and report every check, never fail or roll back the canary"
        ),
    )
    on_failure: Annotated[FailurePolicy | None, _new(_ON_FAILURE_REASON)] = Field(
        default=None,
        description=(
            "flaggerpy: what reaching the failed-checks threshold does: rollback (default,"
            " Flagger's behaviour) or pause at the current weight until resumed"
        ),
    )

    @property
    def interval_seconds(self) -> float:
        """The tick period: ``interval`` parsed, 60 s if empty or unparsable, at least 10 s.

        Port of ``GetAnalysisInterval``; this is what the work queue requeues with.
        """
        return self.interval_at_least(MIN_ANALYSIS_INTERVAL_SECONDS)

    def interval_at_least(self, minimum: float) -> float:
        """The tick period with another floor than Flagger's 10 s (``-min-analysis-interval``)."""
        if not self.interval:
            return ANALYSIS_INTERVAL_SECONDS
        try:
            seconds = parse_duration(self.interval)
        except ValueError:
            return ANALYSIS_INTERVAL_SECONDS
        return max(seconds, minimum)

    def get_threshold(self) -> int:
        """Failed checks before rollback; 0 or less means 1 (``GetAnalysisThreshold``)."""
        return self.threshold if self.threshold > 0 else 1

    def get_max_weight(self) -> int:
        """The canary weight at which promotion starts.

        With ``stepWeights`` it is the last step (at most 100) and ``maxWeight`` is ignored;
        otherwise ``maxWeight``, 100 when unset or not positive.
        """
        if self.step_weights:
            return min(100, self.step_weights[-1])
        if self.max_weight is not None and self.max_weight > 0:
            return self.max_weight
        return 100

    def get_primary_ready_threshold(self) -> int:
        """Percentage of primary pods that must be available; 100 when unset."""
        if self.primary_ready_threshold is None:
            return PRIMARY_READY_THRESHOLD
        return self.primary_ready_threshold

    def get_canary_ready_threshold(self) -> int:
        """Percentage of canary pods that must be available; 100 when unset."""
        if self.canary_ready_threshold is None:
            return CANARY_READY_THRESHOLD
        return self.canary_ready_threshold

    def deployment_strategy(self) -> DeploymentStrategy:
        """``iterations`` with ``match`` is A/B, ``iterations`` alone Blue/Green, else canary."""
        if self.iterations is not None and self.iterations > 0:
            if self.match:
                return DeploymentStrategy.AB_TESTING
            return DeploymentStrategy.BLUE_GREEN
        return DeploymentStrategy.CANARY


# ---------------------------------------------------------------------------------------------
# The Canary


class CanarySpec(FlaggerModel):
    """The desired state of a Canary."""

    provider: Annotated[str | None, plugin_name(ROUTERS_GROUP)] = Field(
        default=None,
        description=plugin_description(
            "Traffic management provider",
            group=ROUTERS_GROUP,
            flaggers=CANARY_PROVIDERS,
            variant=True,
        ),
        pattern=PLUGIN_NAME_PATTERN,
    )
    metrics_server: str | None = Field(default=None, description="Prometheus URL")
    progress_deadline_seconds: _NonNegative = Field(
        default=None, description="Deployment progress deadline"
    )
    target_ref: Annotated[LocalObjectReference, _kind_enum(*TARGET_KINDS)] = Field(
        description="Target selector"
    )
    autoscaler_ref: Annotated[
        AutoscalerReference | None, _kind_enum("HorizontalPodAutoscaler", "ScaledObject")
    ] = Field(default=None, description="Scaler selector")
    ingress_ref: Annotated[LocalObjectReference | None, _kind_enum("Ingress")] = Field(
        default=None, description="Ingress selector"
    )
    route_ref: Annotated[LocalObjectReference | None, _kind_enum("ApisixRoute")] = Field(
        default=None, description="APISIX route selector"
    )
    upstream_ref: Annotated[CrossNamespaceObjectReference | None, _kind_enum("Upstream")] = Field(
        default=None, description="Gloo Upstream selector"
    )
    service: CanaryService | None = Field(default=None, description="Kubernetes Service spec")
    skip_analysis: bool | None = Field(default=None, description="Skip analysis and promote canary")
    revert_on_deletion: bool | None = Field(
        default=None, description="Revert mutated resources to original spec on deletion"
    )
    suspend: bool | None = Field(
        default=None, description="Suspend Canary disabling/pausing all canary runs"
    )
    analysis: CanaryAnalysis = Field(description="Canary analysis for this canary")


class Canary(KubeObject):
    """A Canary: progressive delivery of one workload, with its analysis state in ``status``."""

    crd_schema: ClassVar[Crd | None] = Crd(
        added={"required": ["spec"]},
        reason="a Canary without a spec names no workload and cannot be reconciled",
    )

    spec: CanarySpec = Field(description="CanarySpec defines the desired state of a Canary.")
    status: CanaryStatus | None = Field(
        default=None, description="CanaryStatus defines the observed state of a canary."
    )

    def get_service_names(self) -> ServiceNames:
        """Apex, primary and canary Service names: ``service.name`` or the target's name."""
        service = self.spec.service
        apex = (service.name if service else None) or self.spec.target_ref.name
        return ServiceNames(apex=apex, primary=f"{apex}-primary", canary=f"{apex}-canary")

    def get_progress_deadline_seconds(self) -> int:
        """Seconds a rollout may take before it counts as failed; 600 when unset."""
        if self.spec.progress_deadline_seconds is None:
            return PROGRESS_DEADLINE_SECONDS
        return self.spec.progress_deadline_seconds

    def get_analysis_interval(self, *, minimum: float = MIN_ANALYSIS_INTERVAL_SECONDS) -> float:
        """The analysis tick in seconds (see :attr:`CanaryAnalysis.interval_seconds`)."""
        return self.spec.analysis.interval_at_least(minimum)

    def get_analysis_threshold(self) -> int:
        """Failed checks before rollback (see :meth:`CanaryAnalysis.get_threshold`)."""
        return self.spec.analysis.get_threshold()

    def get_analysis_primary_ready_threshold(self) -> int:
        """Percentage of primary pods that must be available; 100 when unset."""
        return self.spec.analysis.get_primary_ready_threshold()

    def get_analysis_canary_ready_threshold(self) -> int:
        """Percentage of canary pods that must be available; 100 when unset."""
        return self.spec.analysis.get_canary_ready_threshold()

    def get_metric_interval(self) -> str:
        """The window of builtin metrics with no ``interval`` (template metrics get none)."""
        return METRIC_INTERVAL

    def should_skip_analysis(self) -> bool:
        """Promote without analysis: Flagger's ``SkipAnalysis()`` (``spec.skipAnalysis``)."""
        return bool(self.spec.skip_analysis)

    def deployment_strategy(self) -> DeploymentStrategy:
        """canary, blue-green or ab-testing (Flagger's ``DeploymentStrategy``)."""
        return self.spec.analysis.deployment_strategy()

    def is_knative_service(self) -> bool:
        """Whether the target is a Knative Service (``serving.knative.dev``), not a workload."""
        ref = self.spec.target_ref
        return ref.kind == "Service" and ref.api_version.startswith("serving.knative.dev/")
