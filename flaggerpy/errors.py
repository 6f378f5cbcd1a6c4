"""The exception tree of flaggerpy.

Library exceptions (kubernetes-asyncio, aiohttp) are converted at the boundary
where they are raised and chained as the cause of one of these, so callers
handle our failures only and never import a third-party error type::

    FlaggerError
    ├── ConfigError            bad settings or flags; raised at start-up, exits non-zero
    ├── TerminalError          a reconcile that must not be retried (invalid spec)
    ├── KubeError              an API server answer other than success (flaggerpy.kube.errors)
    │   ├── NotFoundError, ConflictError, AlreadyExistsError, ForbiddenError,
    │   │   UnauthorizedError, UnprocessableError, GoneError, ...
    ├── PluginError            a plugin could not be found or loaded
    │   └── UnknownProviderError
    ├── MetricsError           a metric query failed
    │   ├── NoValuesFoundError, MultipleValuesError
    │   └── ProviderOfflineError
    ├── RouterError            a routing object could not be reconciled
    └── NotifierError          a notification could not be delivered; never fails a reconcile
"""

from __future__ import annotations

from collections.abc import Sequence


class FlaggerError(Exception):
    """Base of every error flaggerpy raises on purpose."""


class ConfigError(FlaggerError):
    """The controller's own configuration (flags, environment) is invalid."""


class TerminalError(FlaggerError):
    """A reconcile failed in a way that retrying cannot fix, such as an invalid spec.

    The work queue forgets the key instead of backing off; the object is
    reconciled again only when it changes.
    """


class PluginError(FlaggerError):
    """A plugin could not be found, loaded or did not satisfy its contract."""


class UnknownProviderError(PluginError):
    """A Canary named a provider no installed plugin serves."""

    def __init__(self, group: str, name: str, available: Sequence[str]) -> None:
        self.group = group
        self.name = name
        self.available = sorted(available)
        installed = ", ".join(self.available) or "none"
        super().__init__(f"unknown {group} provider {name!r}; installed: {installed}")


class MetricsError(FlaggerError):
    """A metric query could not produce a value."""


class NoValuesFoundError(MetricsError):
    """The query ran but returned no sample (Flagger's ErrNoValuesFound)."""


class MultipleValuesError(MetricsError):
    """The query returned more than one series (Flagger's ErrMultipleValuesReturned)."""


class ProviderOfflineError(MetricsError):
    """The metrics server could not be reached or answered with an error."""


class RouterError(FlaggerError):
    """A routing object could not be reconciled."""


class NotifierError(FlaggerError):
    """A notification could not be delivered. Logged, never fails a reconcile."""
