"""The notifier contract: how an alert about a canary reaches people.

Port of Flagger's ``pkg/notifier``. Flagger's
``Post(workload, namespace, message, fields, severity)`` becomes one
:class:`Message` value passed to :meth:`Notifier.post`, so a notifier cannot
mix up its string arguments and new fields do not change every signature.

Notifiers are registered under ``flaggerpy.notifiers`` (slack, msteams,
discord, rocket, gchat). A failed post raises ``NotifierError``; the caller
logs it and the reconcile carries on, as in Flagger, where an alert never
decides a canary's fate.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import aiohttp

__all__ = ["Field", "Message", "Notifier", "NotifierFactory", "Severity"]


class Severity(enum.StrEnum):
    """How bad the news is; also an AlertProvider's threshold. Flagger's ``AlertSeverity``."""

    INFO = "info"
    WARN = "warn"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def admits(self, severity: Severity) -> bool:
        """Whether an alert with this threshold sends a message of ``severity``.

        ``info`` sends everything, ``warn`` sends warn and error, ``error``
        sends errors only (Flagger's ``alert()`` filter).
        """
        return severity.rank >= self.rank

    @classmethod
    def parse(cls, value: str | None) -> Severity:
        """Reads ``analysis.alerts[].severity``; empty or missing means ``info``.

        Flagger's documentation says the default is info, but its code
        matches nothing for an empty severity, so such alerts are never sent;
        we follow the documentation. Unknown values raise ``ValueError``.
        """
        if not value:
            return cls.INFO
        return cls(value.strip().lower())


_RANKS = {Severity.INFO: 0, Severity.WARN: 1, Severity.ERROR: 2}


@dataclass(frozen=True, slots=True)
class Field:
    """One name/value pair shown under a message (Slack field, Teams fact, ...)."""

    name: str
    value: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One alert about one canary, as every notifier receives it."""

    workload: str
    """The Canary's name (Flagger passes the canary name as ``workload``)."""
    namespace: str
    """The Canary's namespace."""
    text: str
    """The message, e.g. "Canary analysis completed successfully, promotion finished."."""
    fields: tuple[Field, ...] = ()
    """Extra facts (Cluster, Target, Traffic routing, ...) in display order."""
    severity: Severity = Severity.INFO
    """Decides the colour of the message and which alerts send it."""

    @property
    def subject(self) -> str:
        """``<name>.<namespace>``: the author/summary line of every Flagger notifier payload."""
        return f"{self.workload}.{self.namespace}"


@runtime_checkable
class Notifier(Protocol):
    """Delivers messages to one chat or webhook. Port of Flagger's ``notifier.Interface``."""

    async def post(self, message: Message) -> None:
        """Sends ``message``; raises ``NotifierError`` if it could not be delivered."""
        ...


class NotifierFactory(Protocol):
    """How a ``flaggerpy.notifiers`` plugin is built: keyword arguments only.

    ``address`` is the webhook URL, ``proxy`` an HTTP proxy URL (``""`` for
    none), ``token`` a bearer token (``""`` for none; only Slack uses it),
    ``username`` and ``channel`` have the AlertProvider's defaults
    (``flagger``, ``general``) already applied, ``session`` is the shared
    connection pool (None: make your own), ``timeout`` the seconds per request and
    ``variant`` what followed ``<type>:`` in the type. It raises
    ``NotifierError`` for a configuration it cannot post to. The classes in
    ``flaggerpy.notifiers`` are such factories as they stand.
    """

    def __call__(
            self,
            *,
            address: str,
            proxy: str,
            token: str,
            username: str,
            channel: str,
            session: aiohttp.ClientSession | None,
            timeout: float,
            variant: str,
    ) -> Notifier: ...
