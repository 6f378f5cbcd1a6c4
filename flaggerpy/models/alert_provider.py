"""The AlertProvider model: a chat destination for a Canary's alerts.

``analysis.alerts[].providerRef`` points here. The webhook address comes from ``address`` or,
so it need not sit in a manifest, from the ``address`` key of the Secret in ``secretRef``
(which then wins); the Secret may also hold a ``token``.
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
from flaggerpy.models.metric_template import SecretReference
from flaggerpy.models.status import ResourceStatus

__all__ = [
    "DEFAULT_CHANNEL",
    "DEFAULT_USERNAME",
    "NOTIFIERS_GROUP",
    "TEMPLATES_DESCRIPTION",
    "AlertKind",
    "AlertProvider",
    "AlertProviderSpec",
    "AlertProviderType",
]

DEFAULT_CHANNEL = "general"
DEFAULT_USERNAME = "flagger"
NOTIFIERS_GROUP = "flaggerpy.notifiers"
"""The entry point group ``spec.type`` names a plugin of."""


class AlertProviderType(StrEnum):
    """The chat services Flagger knows for ``spec.type``, in its CRD's order.

    Documentation, not validation: the field accepts any installed ``flaggerpy.notifiers``
    plugin (the CRD's description lists these names).
    """

    SLACK = "slack"
    MSTEAMS = "msteams"
    DISCORD = "discord"
    ROCKET = "rocket"
    GCHAT = "gchat"


class AlertKind(StrEnum):
    """The events an alert template can be written for: the keys of ``templates``.

    Flagger sends the first group (with its own texts) and flaggerpy keeps sending them with those
    texts when no template is given. ``step``, ``failedCheck`` and ``webhookFailure`` happen on
    many ticks of a run, so they are sent only to alerts that have a template for them.
    """

    INITIALIZED = "initialized"
    NEW_REVISION = "newRevision"
    WAITING = "waiting"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolledBack"
    PROMOTION_FAILED = "promotionFailed"
    READINESS_TIMEOUT = "readinessTimeout"
    STEP = "step"
    FAILED_CHECK = "failedCheck"
    WEBHOOK_FAILURE = "webhookFailure"


TEMPLATES_DESCRIPTION = (
    "flaggerpy: Jinja2 templates of the alert text by event kind (" + ", ".join(AlertKind)
    + "); a kind without one keeps the default text"
)
_TEMPLATES = Crd(
    new=True,
    reason="alert texts by event kind; optional, without it Flagger's texts are sent",
)


class AlertProviderSpec(FlaggerModel):
    """The desired state of an AlertProvider: its type and how to reach it."""

    crd_schema: ClassVar[Crd | None] = Crd(
        schema={"oneOf": [{"required": ["type", "address"]}, {"required": ["type", "secretRef"]}]},
        added={"required": ["type"]},
        reason=(
            "both branches of Flagger's oneOf require type, so nothing more is rejected; it is"
            " spelled out because the model requires it"
        ),
    )

    type: Annotated[str, plugin_name(NOTIFIERS_GROUP)] = Field(
        description=plugin_description(
            "Type of this provider", group=NOTIFIERS_GROUP, flaggers=AlertProviderType
        ),
        pattern=PLUGIN_NAME_PATTERN,
    )
    channel: str | None = Field(default=None, description="Alert channel for this provider")
    username: str | None = Field(default=None, description="Bot username for this provider")
    address: str | None = Field(default=None, description="Hook URL address of this provider")
    proxy: str | None = Field(default=None, description="Http/s proxy of this provider")
    secret_ref: SecretReference | None = Field(
        default=None,
        description="Kubernetes secret reference containing the provider address",
    )
    templates: Annotated[dict[str, str] | None, _TEMPLATES] = Field(
        default=None, description=TEMPLATES_DESCRIPTION
    )

    def get_channel(self) -> str:
        """The channel alerts go to; Flagger defaults it to ``general``."""
        return self.channel or DEFAULT_CHANNEL

    def get_username(self) -> str:
        """The bot name alerts are posted as; Flagger defaults it to ``flagger``."""
        return self.username or DEFAULT_USERNAME


_STATUS = Crd(
    new=True,
    reason=(
        "Flagger declares the status subresource but no status schema, so the API server prunes"
        " any status; flaggerpy may report a broken AlertProvider in status conditions"
    ),
)


class AlertProvider(KubeObject):
    """A destination for alerts: Slack, Teams, Discord, Rocket.Chat, Google Chat or a plugin's."""

    crd_schema: ClassVar[Crd | None] = Crd(
        added={"required": ["spec"]},
        reason="an AlertProvider without a spec has no type and no address",
    )

    spec: AlertProviderSpec = Field(
        description="AlertProviderSpec defines the desired state of a AlertProvider."
    )
    status: Annotated[ResourceStatus | None, _STATUS] = Field(
        default=None,
        description="AlertProviderStatus defines the observed state of an AlertProvider.",
    )
