"""Plugin registries: routers, metric providers, notifiers and observers by name.

Every plugin family is an entry-point group, and our own providers register
exactly as a third-party package would (pyproject ``[project.entry-points]``)::

    [project.entry-points."flaggerpy.routers"]
    istio = "flaggerpy.providers.istio:IstioRouter"

One :class:`Registry` per group. It is lazy and selective, as OpenTelemetry's
is: the group's entry point *names* are read once, and only the plugin a
Canary asks for is imported (``EntryPoint.load()``). A broken optional plugin
breaks only the canaries that use it, and start-up imports no SDK it does not
need. Importing this module imports no plugin at all.

Provider strings are Flagger's: ``resolve("smi:v1alpha3:linkerd")`` is
``("smi", "v1alpha3:linkerd")``; the name picks the plugin and the rest is
handed to its factory as ``variant=``. Entry point names therefore never
contain ``:``.

``register(name, factory)`` adds a plugin in-process (tests, embedding); it
wins over an entry point of the same name. An unknown name raises
:class:`~flaggerpy.errors.UnknownProviderError` listing what is installed.
Flagger's silent fallbacks (unknown router → istio, unknown metrics provider
→ prometheus, unknown observer → istio) are kept for compatibility, but only
here, through ``Registry(fallback=...)``: the fallback is logged at warning
level and reported in :attr:`Plugin.fallback_from` so the caller can put it
in the Canary's status and Events.

A registry may name the contract its plugins satisfy, as a Protocol class or
as a ``"module:Name"`` string resolved at first load (so this module does not
import the contract modules). A loaded class must satisfy it
(``issubclass`` on a ``runtime_checkable`` Protocol, which checks that the
methods exist; mypy checks their signatures). Factory functions cannot be
checked before they are called and are accepted as they are.
"""

from __future__ import annotations

import importlib.metadata
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import structlog

from flaggerpy.errors import PluginError, UnknownProviderError

log = structlog.get_logger(__name__)

F = TypeVar("F")


@dataclass(frozen=True, slots=True)
class Plugin(Generic[F]):
    """A plugin chosen for a provider string: its factory and the variant to pass it."""

    name: str
    """The plugin's registered name (``"smi"``)."""
    variant: str
    """The rest of the provider string (``"v1alpha3:linkerd"``), ``""`` if none."""
    factory: F
    """The loaded entry point (usually a class), called as ``factory(..., variant=variant)``."""
    fallback_from: str | None = None
    """The provider string that was asked for, when it was unknown and the fallback served it."""


class Registry(Generic[F]):
    """The plugins of one entry-point group, loaded one at a time on demand."""

    def __init__(
            self,
            group: str,
            *,
            protocol: type[Any] | str | None = None,  # runtime_checkable Protocol or "module:Name"
            fallback: str | None = None,  # Flagger compatibility only; logged when used
    ) -> None:
        self.group = group
        self.fallback = fallback
        self._protocol = protocol
        self._registered: dict[str, F] = {}
        self._entry_points: dict[str, importlib.metadata.EntryPoint] | None = None
        self._loaded: dict[str, F] = {}
        self._warned_fallbacks: set[str] = set()

    def __repr__(self) -> str:
        return f"Registry({self.group!r})"

    @staticmethod
    def resolve(spec: str) -> tuple[str, str]:
        """Splits a Flagger provider string into plugin name and variant.

        ``"gatewayapi:v1beta1"`` → ``("gatewayapi", "v1beta1")``,
        ``"smi:v1alpha3:linkerd"`` → ``("smi", "v1alpha3:linkerd")``,
        ``"istio"`` → ``("istio", "")``.
        """
        name, _, variant = spec.partition(":")
        return name, variant

    def register(self, name: str, factory: F) -> None:
        """Adds or replaces a plugin in-process; it wins over an entry point of the same name."""
        _check_name(name)
        self._check(name, factory, origin="registered in-process")
        self._registered[name] = factory

    def unregister(self, name: str) -> None:
        """Removes an in-process plugin (an entry point of the same name shows through again)."""
        self._registered.pop(name, None)

    def names(self) -> list[str]:
        """Every name that can be loaded, sorted: entry points and in-process plugins."""
        return sorted(self._scan().keys() | self._registered.keys())

    def load(self, name: str) -> F:
        """Returns the plugin called ``name``, importing it on first use.

        Raises UnknownProviderError if nothing has that name, PluginError if
        it fails to import or does not satisfy the registry's contract.
        """
        if name in self._registered:
            return self._registered[name]
        if name in self._loaded:
            return self._loaded[name]
        entry_point = self._scan().get(name)
        if entry_point is None:
            raise UnknownProviderError(self.group, name, self.names())
        try:
            factory = cast(F, entry_point.load())
        except Exception as exc:
            raise PluginError(
                f"{self.group} plugin {name!r} ({entry_point.value}) failed to load: {exc}"
            ) from exc
        self._check(name, factory, origin=entry_point.value)
        self._loaded[name] = factory
        log.debug("plugin_loaded", group=self.group, plugin=name, entry_point=entry_point.value)
        return factory

    def get(self, spec: str) -> Plugin[F]:
        """Resolves a provider string and loads its plugin, or the fallback if there is one."""
        name, variant = self.resolve(spec)
        try:
            return Plugin(name=name, variant=variant, factory=self.load(name))
        except UnknownProviderError as exc:
            if self.fallback is None or name == self.fallback:
                raise
            try:
                fallback = self.load(self.fallback)
            except UnknownProviderError:
                raise exc from None  # the name asked for is the news, not the missing fallback
            if spec not in self._warned_fallbacks:
                self._warned_fallbacks.add(spec)
                log.warning(
                    "provider_unknown_using_fallback",
                    group=self.group,
                    provider=spec,
                    fallback=self.fallback,
                    available=exc.available,
                )
            return Plugin(name=self.fallback, variant="", factory=fallback, fallback_from=spec)

    def refresh(self) -> None:
        """Forgets the scanned entry points and loaded plugins (after installing a package)."""
        self._entry_points = None
        self._loaded.clear()

    def _scan(self) -> dict[str, importlib.metadata.EntryPoint]:
        """Reads the group's entry point names once; imports nothing."""
        if self._entry_points is None:
            found: dict[str, importlib.metadata.EntryPoint] = {}
            for entry_point in importlib.metadata.entry_points(group=self.group):
                if not entry_point.name or ":" in entry_point.name:
                    log.warning("plugin_name_invalid", group=self.group,
                                plugin=entry_point.name, entry_point=entry_point.value)
                    continue
                kept = found.setdefault(entry_point.name, entry_point)
                if kept is not entry_point and kept.value != entry_point.value:
                    log.warning("plugin_name_conflict", group=self.group,
                                plugin=entry_point.name, kept=kept.value,
                                ignored=entry_point.value)
            self._entry_points = found
        return self._entry_points

    def _contract(self) -> type[Any] | None:
        if isinstance(self._protocol, str):
            try:
                resolved = pkgutil.resolve_name(self._protocol)
            except (ImportError, AttributeError, ValueError) as exc:
                raise PluginError(
                    f"{self.group}: contract {self._protocol} cannot be imported: {exc}"
                ) from exc
            if not isinstance(resolved, type):
                raise PluginError(f"{self.group}: contract {self._protocol} is not a class")
            self._protocol = resolved
        runtime_checkable = getattr(self._protocol, "_is_runtime_protocol", False)
        if self._protocol is not None and not runtime_checkable:
            raise PluginError(
                f"{self.group}: contract {self._protocol.__qualname__} is not runtime_checkable"
            )
        return self._protocol

    def _check(self, name: str, factory: object, *, origin: str) -> None:
        """Checks a plugin class (or instance) against the contract, once, at load time."""
        contract = self._contract()
        if contract is None:
            return
        if isinstance(factory, type):
            try:
                ok = issubclass(factory, contract)
            except TypeError:  # Protocols with data members refuse issubclass()
                ok = isinstance(factory, contract)
        elif callable(factory):
            return  # a factory function: what it returns is only known once it is called
        else:
            ok = isinstance(factory, contract)
        if not ok:
            missing = [m for m in _members(contract) if not hasattr(factory, m)]
            raise PluginError(
                f"{self.group} plugin {name!r} ({origin}) does not implement "
                f"{contract.__qualname__}; missing: {', '.join(missing) or '?'}"
            )


def _check_name(name: str) -> None:
    if not name or ":" in name:
        raise ValueError(f"plugin name must be non-empty and contain no ':', got {name!r}")


def _members(protocol: type[Any]) -> list[str]:
    annotated = getattr(protocol, "__annotations__", {})
    return sorted({m for m in dir(protocol) if not m.startswith("_")} | set(annotated))


Factory = Callable[..., Any]
"""The loose type of the module-level registries' factories; callers narrow it."""

routers: Registry[Factory] = Registry("flaggerpy.routers", protocol="flaggerpy.routing:Router")
"""Mesh and ingress routers by Flagger's ``meshProvider`` / ``spec.provider`` name.

Unlike Flagger, an unknown name is an error on that Canary, not a silent switch to Istio: a typo
in ``provider`` must not send traffic through a mesh the user did not choose.
"""

metrics: Registry[Factory] = Registry(
    "flaggerpy.metrics", protocol="flaggerpy.analysis:MetricsProvider"
)
"""MetricTemplate providers by ``spec.provider.type``; unknown types are errors, not Prometheus."""

notifiers: Registry[Factory] = Registry(
    "flaggerpy.notifiers", protocol="flaggerpy.notifying:Notifier"
)
"""AlertProvider notifiers by ``spec.type``; unknown types are errors, as in Flagger."""

observers: Registry[Factory] = Registry(
    "flaggerpy.observers", protocol="flaggerpy.analysis:Observer", fallback="istio"
)
"""Builtin-metric observers (request-success-rate, request-duration) by mesh provider."""
