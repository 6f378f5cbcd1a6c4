"""The MetricTemplate model: a reusable metric query against one metrics provider.

A Canary's ``analysis.metrics[].templateRef`` points here; the query is a Go-template-like
text rendered with the canary's name, namespace, target, service, ingress, interval and
``templateVariables`` (spec §4.1), then run by the provider named in ``provider.type``: any
``flaggerpy.metrics`` plugin, Flagger's or a third party's (the family is open; a type nothing
installed serves is reported in the template's status).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import Field

from flaggerpy.models._base import (
    PLUGIN_NAME_PATTERN,
    Crd,
    FlaggerModel,
    KubeObject,
    plugin_description,
    plugin_name,
)
from flaggerpy.models.status import ResourceStatus

__all__ = [
    "METRICS_GROUP",
    "MetricTemplate",
    "MetricTemplateProvider",
    "MetricTemplateSpec",
    "MetricsProviderType",
    "SecretReference",
]


class MetricsProviderType(StrEnum):
    """The metrics backends Flagger knows for ``spec.provider.type``, in its CRD's order.

    Documentation, not validation: the field accepts any installed ``flaggerpy.metrics``
    plugin (the CRD's description lists these names).
    """

    PROMETHEUS = "prometheus"
    INFLUXDB = "influxdb"
    DATADOG = "datadog"
    EXTERNALMETRICS = "externalmetrics"
    STACKDRIVER = "stackdriver"
    CLOUDWATCH = "cloudwatch"
    NEWRELIC = "newrelic"
    GRAPHITE = "graphite"
    DYNATRACE = "dynatrace"
    KEPTN = "keptn"
    SPLUNK = "splunk"


METRICS_GROUP = "flaggerpy.metrics"
"""The entry point group ``spec.provider.type`` names a plugin of."""


class SecretReference(FlaggerModel):
    """A Secret in the referring object's own namespace."""

    name: str = Field(description="Name of the Kubernetes secret")


class MetricTemplateProvider(FlaggerModel):
    """Where and how to run the query: backend type, address, credentials."""

    type: Annotated[str, plugin_name(METRICS_GROUP)] = Field(
        description=plugin_description(
            "Type of this provider", group=METRICS_GROUP, flaggers=MetricsProviderType
        ),
        pattern=PLUGIN_NAME_PATTERN,
    )
    address: str | None = Field(default=None, description="API address of this provider")
    headers: dict[str, list[str]] | None = Field(
        default=None, description="Headers to add to HTTP(S) requests"
    )
    secret_ref: SecretReference | None = Field(
        default=None,
        description="Kubernetes secret reference containing the provider credentials",
    )
    region: str | None = Field(default=None, description="Region of the provider")
    insecure_skip_verify: bool | None = Field(
        default=None, description="Disable SSL certificate validation for the provider address"
    )


class MetricTemplateSpec(FlaggerModel):
    """The desired state of a MetricTemplate: a provider and a query."""

    provider: MetricTemplateProvider = Field(description="Provider of this metric template")
    query: str = Field(description="Query of this metric template")


_STATUS = Crd(
    new=True,
    reason=(
        "Flagger declares the status subresource but no status schema, so the API server prunes"
        " any status; flaggerpy may report a broken MetricTemplate in status conditions"
    ),
)


class MetricTemplate(KubeObject):
    """A metric query template, referenced by Canaries through ``templateRef``."""

    crd_schema: ClassVar[Crd | None] = Crd(
        added={"required": ["spec"]},
        reason="a MetricTemplate without a spec has no provider and no query",
    )

    spec: MetricTemplateSpec = Field(
        description="MetricTemplateSpec defines the desired state of a MetricTemplate."
    )
    status: Annotated[ResourceStatus | None, _STATUS] = Field(
        default=None,
        description="MetricTemplateStatus defines the observed state of a MetricTemplate.",
    )
