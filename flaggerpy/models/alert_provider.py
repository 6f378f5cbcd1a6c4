"""The AlertProvider model: a chat destination for a Canary's alerts.

``analysis.alerts[].providerRef`` points here. The webhook address comes from ``address`` or,
so it need not sit in a manifest, from the ``address`` key of the Secret in ``secretRef``
(which then wins); the Secret may also hold a ``token``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import Field

from flaggerpy.models._base import Crd, FlaggerModel, KubeObject
from flaggerpy.models.metric_template import SecretReference
from flaggerpy.models.status import ResourceStatus

__all__ = [
    "DEFAULT_CHANNEL",
    "DEFAULT_USERNAME",
    "AlertProvider",
    "AlertProviderSpec",
    "AlertProviderType",
]

DEFAULT_CHANNEL = "general"
DEFAULT_USERNAME = "flagger"


class AlertProviderType(StrEnum):
    """The chat services Flagger's CRD accepts in ``spec.type``, in its order."""

    SLACK = "slack"
    MSTEAMS = "msteams"
    DISCORD = "discord"
    ROCKET = "rocket"
    GCHAT = "gchat"


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

    type: AlertProviderType = Field(description="Type of this provider")
    channel: str | None = Field(default=None, description="Alert channel for this provider")
    username: str | None = Field(default=None, description="Bot username for this provider")
    address: str | None = Field(default=None, description="Hook URL address of this provider")
    proxy: str | None = Field(default=None, description="Http/s proxy of this provider")
    secret_ref: SecretReference | None = Field(
        default=None,
        description="Kubernetes secret reference containing the provider address",
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
    """A Slack, Teams, Discord, Rocket.Chat or Google Chat destination for alerts."""

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
