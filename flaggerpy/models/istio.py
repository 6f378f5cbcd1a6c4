"""The Istio-shaped parts of ``Canary.spec.service``: match, retries, headers, CORS, traffic policy.

Flagger borrows these types from Istio's ``networking/v1beta1`` API and its CRD carries a
trimmed copy of Istio's schema for them. The Istio router passes most of them through verbatim
(``trafficPolicy`` into both DestinationRules, ``corsPolicy``, ``headers``, ``retries`` into the
VirtualService), while other routers read pieces of them: Gateway API maps ``match``,
``headers``, ``rewrite`` and ``corsPolicy`` onto HTTPRoute filters, Contour reads
``retries`` and ``match[0].uri.prefix``. So they are typed here, with ``extra="allow"`` so
Istio fields that Flagger's CRD does not list still survive where the API server keeps them.
To hand one to a router verbatim, use :meth:`~flaggerpy.models._base.FlaggerModel.to_dict`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import Field

from flaggerpy.models._base import Crd, FlaggerModel, FormatString

__all__ = [
    "ClientTLSSettings",
    "ConnectionPoolSettings",
    "ConsistentHashLB",
    "CorsPolicy",
    "HTTPCookie",
    "HTTPMatchRequest",
    "HTTPRetry",
    "HTTPRewrite",
    "HTTPSettings",
    "HeaderOperations",
    "Headers",
    "LoadBalancerSettings",
    "LocalityDistribute",
    "LocalityFailover",
    "LocalityLoadBalancerSetting",
    "OriginMatch",
    "OutlierDetection",
    "RewriteType",
    "StringMatch",
    "TrafficPolicy",
]

_RE2 = "RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)."

_ISTIO_STRING_MATCH_ONE_OF: list[dict[str, Any]] = [
    {
        "not": {
            "anyOf": [{"required": ["exact"]}, {"required": ["prefix"]}, {"required": ["regex"]}]
        }
    },
    {"required": ["exact"]},
    {"required": ["prefix"]},
    {"required": ["regex"]},
]


class StringMatch(FlaggerModel):
    """Istio's ``StringMatch``: at most one of exact, prefix or regex.

    Used for URI, scheme, method, authority, header and query parameter matches. An empty
    object is allowed (the first ``oneOf`` branch), as in Istio.
    """

    crd_schema: ClassVar[Crd | None] = Crd(schema={"oneOf": _ISTIO_STRING_MATCH_ONE_OF})

    exact: FormatString | None = None
    prefix: FormatString | None = None
    regex: FormatString | None = Field(default=None, description=_RE2)


class OriginMatch(FlaggerModel):
    """One entry of ``corsPolicy.allowOrigins``: exactly one of exact, prefix or regex."""

    crd_schema: ClassVar[Crd | None] = Crd(
        schema={
            "oneOf": [{"required": ["exact"]}, {"required": ["prefix"]}, {"required": ["regex"]}]
        }
    )

    exact: FormatString | None = None
    prefix: FormatString | None = None
    regex: FormatString | None = None


class HTTPMatchRequest(FlaggerModel):
    """Istio's ``HTTPMatchRequest``, as ``service.match`` carries it.

    Istio uses all of it; Gateway API maps uri, method, headers and queryParams (anything else
    is an error there); Contour and App Mesh read only ``match[0].uri.prefix``.
    """

    authority: StringMatch | None = None
    gateways: list[FormatString] | None = Field(
        default=None, description="Names of gateways where the rule should be applied."
    )
    headers: dict[str, StringMatch] | None = None
    ignore_uri_case: bool | None = Field(
        default=None,
        description="Flag to specify whether the URI matching should be case-insensitive.",
    )
    method: StringMatch | None = None
    name: FormatString | None = Field(default=None, description="The name assigned to a match.")
    port: int | None = Field(
        default=None, description="Specifies the ports on the host that is being addressed."
    )
    query_params: dict[str, StringMatch] | None = Field(
        default=None, description="Query parameters for matching."
    )
    scheme: StringMatch | None = None
    source_labels: dict[str, FormatString] | None = None
    source_namespace: FormatString | None = Field(
        default=None,
        description=(
            "Source namespace constraining the applicability of a rule to workloads in that"
            " namespace."
        ),
    )
    uri: StringMatch | None = None
    without_headers: dict[str, StringMatch] | None = Field(
        default=None,
        description="withoutHeader has the same syntax with the header, but has opposite meaning.",
    )


class HTTPRetry(FlaggerModel):
    """Retry policy: Istio ``retries``, Contour ``retryPolicy``, App Mesh ``retryPolicy``."""

    attempts: Annotated[int | None, Crd(schema={"format": "int32"})] = Field(
        default=None, description="Number of retries for a given request"
    )
    per_try_timeout: str | None = Field(
        default=None, description="Timeout per retry attempt for a given request"
    )
    retry_on: FormatString | None = Field(
        default=None, description="Specifies the conditions under which retry takes place"
    )


class RewriteType(StrEnum):
    """How Gateway API rewrites the path (``rewrite.type``); Istio ignores it."""

    REPLACE_FULL_PATH = "ReplaceFullPath"
    REPLACE_PREFIX_MATCH = "ReplacePrefixMatch"


class HTTPRewrite(FlaggerModel):
    """URI and authority rewrite: Istio ``rewrite`` and Gateway API's URLRewrite filter."""

    uri: FormatString | None = None
    authority: FormatString | None = None
    type: FormatString | None = None

    def get_type(self) -> RewriteType:
        """The Gateway API path modifier: ``ReplacePrefixMatch`` only if asked for, else full path.

        Port of Flagger's ``HTTPRewrite.GetType``: any other value, empty included, means
        ``ReplaceFullPath``.
        """
        if self.type == RewriteType.REPLACE_PREFIX_MATCH:
            return RewriteType.REPLACE_PREFIX_MATCH
        return RewriteType.REPLACE_FULL_PATH


class HeaderOperations(FlaggerModel):
    """Header edits for one direction: add, set (overwrite) and remove."""

    add: dict[str, FormatString] | None = None
    remove: list[FormatString] | None = None
    set: dict[str, FormatString] | None = None


class Headers(FlaggerModel):
    """Request and response header operations (Istio ``headers``, Gateway API modifiers)."""

    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class CorsPolicy(FlaggerModel):
    """Istio's ``CorsPolicy``; Gateway API maps only the ``allowOrigin`` strings to its filter."""

    allow_credentials: bool | None = None
    allow_headers: list[FormatString] | None = None
    allow_methods: list[FormatString] | None = Field(
        default=None, description="List of HTTP methods allowed to access the resource"
    )
    allow_origin: list[FormatString] | None = Field(
        default=None, description="The list of origins that are allowed to perform CORS requests."
    )
    allow_origins: list[OriginMatch] | None = Field(
        default=None, description="String patterns that match allowed origins"
    )
    expose_headers: list[FormatString] | None = None
    max_age: str | None = None


_INT32 = Crd(schema={"format": "int32"})


class HTTPSettings(FlaggerModel):
    """``trafficPolicy.connectionPool.http``."""

    h2_upgrade_policy: Annotated[
        str | None, Crd(schema={"enum": ["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"]})
    ] = Field(
        default=None,
        description=(
            "Specify if http1.1 connection should be upgraded to http2 for the associated"
            " destination."
        ),
    )
    http1_max_pending_requests: Annotated[int | None, _INT32] = Field(
        default=None, description="Maximum number of pending HTTP requests to a destination."
    )
    http2_max_requests: Annotated[int | None, _INT32] = Field(
        default=None, description="Maximum number of requests to a backend."
    )
    idle_timeout: str | None = Field(
        default=None, description="The idle timeout for upstream connection pool connections."
    )
    max_requests_per_connection: Annotated[int | None, _INT32] = Field(
        default=None, description="Maximum number of requests per connection to a backend."
    )
    max_retries: Annotated[int | None, _INT32] = None


class ConnectionPoolSettings(FlaggerModel):
    """``trafficPolicy.connectionPool`` (Flagger's CRD models only the HTTP half)."""

    http: HTTPSettings | None = Field(default=None, description="HTTP connection pool settings.")


class HTTPCookie(FlaggerModel):
    """Cookie to hash on for consistent-hash load balancing."""

    name: FormatString | None = Field(default=None, description="Name of the cookie.")
    path: FormatString | None = Field(default=None, description="Path to set for the cookie.")
    ttl: str | None = Field(default=None, description="Lifetime of the cookie.")


class ConsistentHashLB(FlaggerModel):
    """Consistent-hash load balancing: one hash key, optional ring size."""

    http_cookie: HTTPCookie | None = Field(default=None, description="Hash based on HTTP cookie.")
    http_header_name: FormatString | None = Field(
        default=None, description="Hash based on a specific HTTP header."
    )
    http_query_parameter_name: FormatString | None = Field(
        default=None, description="Hash based on a specific HTTP query parameter."
    )
    minimum_ring_size: int | None = None
    use_source_ip: bool | None = Field(
        default=None, description="Hash based on the source IP address."
    )


class LocalityDistribute(FlaggerModel):
    """Traffic distribution from one locality to weighted upstream localities."""

    from_: FormatString | None = Field(
        default=None, alias="from", description="Originating locality, '/' separated, e.g."
    )
    to: dict[str, int] | None = Field(
        default=None, description="Map of upstream localities to traffic distribution weights."
    )


class LocalityFailover(FlaggerModel):
    """Failover from one region to another."""

    from_: FormatString | None = Field(
        default=None, alias="from", description="Originating region."
    )
    to: FormatString | None = None


class LocalityLoadBalancerSetting(FlaggerModel):
    """Locality-aware load balancing: distribute or failover, not both."""

    distribute: list[LocalityDistribute] | None = Field(
        default=None, description="Optional: only one of distribute or failover can be set."
    )
    enabled: bool | None = Field(
        default=None,
        description=(
            "enable locality load balancing, this is DestinationRule-level and will override mesh"
            " wide settings in entirety."
        ),
    )
    failover: list[LocalityFailover] | None = Field(
        default=None, description="Optional: only failover or distribute can be set."
    )


class LoadBalancerSettings(FlaggerModel):
    """Load balancer algorithm: a ``simple`` one or a ``consistentHash`` (exactly one)."""

    crd_schema: ClassVar[Crd | None] = Crd(
        schema={
            "oneOf": [
                {"required": ["simple"]},
                {
                    "properties": {
                        "consistentHash": {
                            "oneOf": [
                                {"required": ["httpHeaderName"]},
                                {"required": ["httpCookie"]},
                                {"required": ["useSourceIp"]},
                                {"required": ["httpQueryParameterName"]},
                            ]
                        }
                    },
                    "required": ["consistentHash"],
                },
            ]
        }
    )

    consistent_hash: ConsistentHashLB | None = None
    locality_lb_setting: LocalityLoadBalancerSetting | None = None
    simple: Annotated[
        str | None,
        Crd(
            schema={"enum": ["ROUND_ROBIN", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "LEAST_REQUEST"]}
        ),
    ] = None
    warmup_duration_secs: str | None = Field(
        default=None, description="Represents the warmup duration of Service."
    )


class OutlierDetection(FlaggerModel):
    """Ejection of unhealthy hosts from the load-balancing pool."""

    base_ejection_time: str | None = Field(default=None, description="Minimum ejection duration.")
    consecutive5xx_errors: int | None = Field(
        default=None,
        alias="consecutive5xxErrors",
        description="Number of 5xx errors before a host is ejected from the connection pool.",
    )
    consecutive_errors: Annotated[int | None, _INT32] = None
    consecutive_gateway_errors: Annotated[int | None, _INT32] = Field(
        default=None,
        description="Number of gateway errors before a host is ejected from the connection pool.",
    )
    consecutive_local_origin_failures: Annotated[int | None, _INT32] = Field(
        default=None,
        description=(
            "Number of consecutive locally originated failures before ejection. Takes effect only"
            " when splitExternalLocalOriginErrors is set to true."
        ),
    )
    interval: str | None = Field(
        default=None, description="Time interval between ejection sweep analysis."
    )
    max_ejection_percent: Annotated[int | None, _INT32] = None
    min_health_percent: Annotated[int | None, _INT32] = None
    split_external_local_origin_errors: bool | None = Field(
        default=None,
        description="Determines whether to distinguish local origin failures from external errors.",
    )


class ClientTLSSettings(FlaggerModel):
    """TLS towards the upstream service."""

    ca_certificates: FormatString | None = None
    client_certificate: FormatString | None = Field(
        default=None, description="REQUIRED if mode is `MUTUAL`."
    )
    mode: Annotated[
        str | None, Crd(schema={"enum": ["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]})
    ] = None
    private_key: FormatString | None = Field(
        default=None, description="REQUIRED if mode is `MUTUAL`."
    )
    sni: FormatString | None = Field(
        default=None, description="SNI string to present to the server during TLS handshake."
    )
    subject_alt_names: list[FormatString] | None = None


class TrafficPolicy(FlaggerModel):
    """Istio ``TrafficPolicy``, copied verbatim into both generated DestinationRules."""

    connection_pool: ConnectionPoolSettings | None = None
    load_balancer: LoadBalancerSettings | None = Field(
        default=None, description="Settings controlling the load balancer algorithms."
    )
    outlier_detection: OutlierDetection | None = Field(
        default=None,
        description=(
            "Settings controlling eviction of unhealthy hosts from the load balancing pool."
        ),
    )
    tls: ClientTLSSettings | None = Field(
        default=None,
        description="Istio TLS related settings for connections to the upstream service",
    )
