"""The routing contracts: how traffic is shifted between a canary's primary and canary.

Ports of Flagger's ``pkg/router`` interfaces, as ``typing.Protocol`` so a
router need not inherit from anything of ours (style §9.3):

- :class:`Router` owns the mesh or ingress objects that split traffic
  (Istio VirtualService, SMI TrafficSplit, Gateway API HTTPRoute, ...);
- :class:`KubernetesRouter` owns the ClusterIP Services every canary gets
  (``<svc>``, ``<svc>-primary``, ``<svc>-canary``).

Weights travel as one :class:`Weights` value instead of Flagger's
``(primaryWeight, canaryWeight, mirrored)`` tuple, so a swapped pair cannot
type-check and an impossible split cannot be built.

Routers are made by a :class:`RouterFactory`, found through the
``flaggerpy.routers`` entry-point group, and called with keyword arguments
only: ``factory(ctx=ProviderContext(...), variant="v1beta1")``. The context
replaces Flagger's router Factory struct, which handed every client to every
router whether it needed it or not.

A conformance line at the end of each router module lets mypy check the
whole signature, where ``isinstance`` only checks that the methods exist::

    _: type[Router] = IstioRouter

What a router can do is declared, not guessed from its provider name: a
router class may set ``capabilities = Capabilities(...)`` (see
:class:`Capabilities`), and the engine reads it through
:func:`capabilities_of`. The attribute is optional, so a router written
before it existed still loads and is treated as a weighted mesh router.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from flaggerpy.errors import PluginError
from flaggerpy.models import API_VERSION

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from flaggerpy import kube
    from flaggerpy.models.canary import Canary
    from flaggerpy.settings import Settings

__all__ = [
    "TOOLKIT_ANNOTATIONS",
    "TOTAL_WEIGHT",
    "WORKLOAD_TARGETS",
    "Capabilities",
    "KubernetesRouter",
    "ProviderContext",
    "Router",
    "RouterFactory",
    "TargetKind",
    "Traffic",
    "Weights",
    "canary_owner",
    "capabilities_of",
]

TOTAL_WEIGHT = 100
"""Flagger splits traffic in whole percent; primary and canary always add up to this."""

TOOLKIT_ANNOTATIONS: Mapping[str, str] = MappingProxyType({
    "kustomize.toolkit.fluxcd.io/reconcile": "disabled",
    "helm.toolkit.fluxcd.io/driftDetection": "disabled",
})
"""Put on every Service and routing object Flagger generates (its ``filterMetadata``), so Flux
does not undo the weights the analysis writes."""


@dataclass(frozen=True, slots=True)
class Weights:
    """A traffic split: percent to the primary, percent to the canary, and mirroring.

    Flagger's weights are whole percentages that always add up to 100
    (``SetRoutes`` is called with ``100 - canary`` and the analysis clamps
    both ends), so anything else is a bug and fails here, at construction.
    ``mirrored`` means the canary also receives a copy of the primary's
    traffic (blue/green and canary mirroring); it is independent of the split.

    A router reading weights back from an object someone edited by hand
    (say 50/40) should raise ``RouterError`` rather than guess.
    """

    primary: int
    canary: int
    mirrored: bool = False

    def __post_init__(self) -> None:
        for name in ("primary", "canary"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} weight must be an int, not {type(value).__name__}")
            if not 0 <= value <= TOTAL_WEIGHT:
                raise ValueError(f"{name} weight {value} is outside 0..{TOTAL_WEIGHT}")
        if self.primary + self.canary != TOTAL_WEIGHT:
            raise ValueError(f"weights {self.primary}/{self.canary} do not add up to "
                             f"{TOTAL_WEIGHT}")
        if not isinstance(self.mirrored, bool):
            raise TypeError(f"mirrored must be a bool, not {type(self.mirrored).__name__}")

    @classmethod
    def to_canary(cls, canary: int, *, mirrored: bool = False) -> Weights:
        """The split that sends ``canary`` percent to the canary and the rest to the primary."""
        return cls(primary=TOTAL_WEIGHT - canary, canary=canary, mirrored=mirrored)

    @classmethod
    def all_primary(cls, *, mirrored: bool = False) -> Weights:
        """100/0: where every canary starts and where a rollback returns."""
        return cls(primary=TOTAL_WEIGHT, canary=0, mirrored=mirrored)

    @classmethod
    def all_canary(cls) -> Weights:
        """0/100: A/B iterations and the last blue/green step before promotion."""
        return cls(primary=0, canary=TOTAL_WEIGHT)

    def __str__(self) -> str:
        mirror = " mirrored" if self.mirrored else ""
        return f"{self.primary}/{self.canary}{mirror}"


class Traffic(enum.Enum):
    """How a router moves traffic, which decides the strategies a canary can run on it."""

    WEIGHTED = "weighted"
    """Splits by percent: canary, A/B testing and blue/green all run (every mesh and ingress)."""
    SWITCH = "switch"
    """Only switches, all at once, at promotion: blue/green is the only strategy, as with
    Flagger's ``kubernetes`` provider. The engine then warns about A/B and progressive traffic,
    runs blue/green whatever the spec asks, counts 10 iterations when none are set, never asks
    for mirroring or ``stepWeightPromotion``, and records no "Routing all traffic" Events."""


@dataclass(frozen=True, slots=True)
class TargetKind:
    """A ``targetRef`` a router accepts: its kind and API group.

    ``group`` is the part of ``apiVersion`` before the ``/`` (``""`` for the core group,
    ``"apps"``, ``"serving.knative.dev"``); None accepts the kind from any group, as Flagger
    reads only the kind of a Deployment or DaemonSet target.
    """

    kind: str
    group: str | None = None

    def accepts(self, *, api_version: str, kind: str) -> bool:
        """Whether a ``targetRef`` with this ``apiVersion`` and ``kind`` is one of these."""
        group = api_version.rpartition("/")[0]
        return kind == self.kind and (self.group is None or self.group == group)

    def __str__(self) -> str:
        if self.group is None:
            return self.kind
        return f"{self.kind} ({self.group or 'core'})"


WORKLOAD_TARGETS: frozenset[TargetKind] = frozenset({
    TargetKind("Deployment"), TargetKind("DaemonSet"), TargetKind("Service", group=""),
})
"""The targets of every router but Knative's: workloads and plain Kubernetes Services."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """What a router can do, so the engine never has to know which provider it is.

    A router declares it as a class attribute (``capabilities = Capabilities(...)``). The
    defaults describe a weighted mesh router that is handed everything the Canary asks for,
    which is how Flagger treats every provider it has no special case for; a router that
    declares nothing is run that way. A ``False`` makes the engine stop asking: a canary that
    asks anyway is told so in a Warning Event where Flagger has no behaviour of its own (A/B
    matches excepted, see :attr:`ab_matches`).
    """

    traffic: Traffic = Traffic.WEIGHTED
    """Weighted split or switch only; a switch-only router runs every canary as blue/green."""
    ab_matches: bool = True
    """Whether ``analysis.match`` (header, cookie, query matches) is honoured. Without it an
    A/B canary still runs its iterations, with all traffic on the canary, as Flagger's SMI and
    Traefik routers do; the engine only logs it, since Flagger records no Event."""
    mirroring: bool = True
    """Whether ``Weights.mirrored`` is honoured. Without it the engine never asks for mirroring,
    so ``analysis.mirror`` cannot hold a canary at weight 0 waiting for a mirror that the
    router will never report."""
    session_affinity: bool = True
    """Whether ``analysis.sessionAffinity`` is honoured (sticky canary cookies)."""
    needs_services: bool = True
    """Whether the engine generates the apex, ``-primary`` and ``-canary`` ClusterIP Services the
    routing objects point at. A router that addresses pods otherwise can do without them."""
    reconciles_before_workload: bool = False
    """Whether the routing objects must exist before the primary workload is created, because
    the workload's pods need them to start (Flagger's App Mesh virtual nodes)."""
    target_kinds: frozenset[TargetKind] = field(default=WORKLOAD_TARGETS)
    """The ``targetRef`` kinds the router can route; any other target fails the Canary's spec.
    Knative's router accepts only Knative Services, and is the only one that does."""
    observer: str | None = None
    """The observer (builtin metrics) of canaries without ``spec.provider`` while this router
    is the controller's mesh (``-mesh-provider``); None: the mesh provider string picks it
    (Flagger: an SMI mesh on Crossover reads Crossover's metrics)."""
    observer_for_every_canary: bool = False
    """Whether :attr:`observer` also overrides a canary's own ``spec.provider`` (Flagger: a
    Linkerd mesh measures every canary with Linkerd's metrics, as its proxies see all traffic)."""


DEFAULT_CAPABILITIES = Capabilities()
"""What a router that declares nothing can do."""


def capabilities_of(router: object, *, variant: str = "") -> Capabilities:
    """What ``router`` (a router, or its class) declares for the provider string's ``variant``
    (``v1alpha3:linkerd`` of ``smi:v1alpha3:linkerd``); the defaults if it declares nothing.

    A router whose variants differ in what they can do declares a classmethod
    ``capabilities_for(variant) -> Capabilities``, which wins over its ``capabilities``
    attribute: an SMI router on Linkerd measures with Linkerd's observer, on another mesh not.
    Raises PluginError when the declaration is not a :class:`Capabilities`, so a typo in a
    plugin fails its canaries with a message instead of running them on guesses.
    """
    per_variant = getattr(router, "capabilities_for", None)
    declared = (per_variant(variant) if callable(per_variant)
                else getattr(router, "capabilities", None))
    if declared is None:
        return DEFAULT_CAPABILITIES
    if not isinstance(declared, Capabilities):
        owner = router if isinstance(router, type) else type(router)
        member = "capabilities_for()" if callable(per_variant) else "capabilities"
        raise PluginError(f"{owner.__module__}.{owner.__qualname__}.{member} is a "
                          f"{type(declared).__name__}, not a flaggerpy.routing.Capabilities")
    return declared


@runtime_checkable
class Router(Protocol):
    """Shifts traffic between primary and canary. Port of Flagger's ``router.Interface``.

    Every method is idempotent and level-based: it is given the Canary as it
    is now and makes the world match, so a restart at any point is safe.

    A router may also declare ``capabilities: ClassVar[Capabilities]``. It is
    not a member of this Protocol, so a router without it still satisfies it
    and runs with the defaults (:func:`capabilities_of`).
    """

    async def reconcile(self, canary: Canary) -> None:
        """Creates or updates the routing objects, keeping the weights already in them.

        Flagger compares desired and existing specs ignoring weights, so a
        reconcile in the middle of an analysis never resets traffic.
        """
        ...

    async def set_routes(self, canary: Canary, weights: Weights) -> None:
        """Writes ``weights`` into the routing objects (Flagger's ``SetRoutes``)."""
        ...

    async def get_routes(self, canary: Canary) -> Weights:
        """Reads the weights the routing objects currently carry (Flagger's ``GetRoutes``)."""
        ...

    async def finalize(self, canary: Canary) -> None:
        """Reverts the routing objects when a canary with ``revertOnDeletion`` is deleted."""
        ...


@runtime_checkable
class KubernetesRouter(Protocol):
    """Owns the apex, ``-primary`` and ``-canary`` Services. Port of ``router.KubernetesRouter``."""

    async def initialize(self, canary: Canary) -> None:
        """Creates the ``-primary`` and ``-canary`` Services before the primary workload exists."""
        ...

    async def reconcile(self, canary: Canary) -> None:
        """Creates or updates the apex Service and keeps the others' ports and selectors in step."""
        ...

    async def finalize(self, canary: Canary) -> None:
        """Points the apex Service back at the target's own pods on deletion."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderContext:
    """What the core hands a plugin when it builds one: the object store, settings, a logger.

    One value instead of Flagger's Factory struct: a plugin takes what it needs from it and
    nothing is injected field by field. Plugins read and write Kubernetes objects only through
    :attr:`store` / :attr:`routing_store` (``kube.ObjectStore``): cache reads, our own writes
    seen at once, writes only on a change, owner references and conflict retries come with it.
    """

    store: kube.ObjectStore
    """The object store of the cluster the workloads and the Canary live in."""
    settings: Settings
    """The controller's settings; ``settings.mesh`` holds the router options."""
    log: FilteringBoundLogger
    """A structlog logger already bound to the plugin's name."""
    mesh_store: kube.ObjectStore | None = None
    """The object store of the mesh cluster when ``-kubeconfig-service-mesh`` names another."""
    set_owner_refs: bool = True
    """Whether mesh objects get an ownerReference to the Canary.

    False when the mesh objects live on another API server: an ownerReference
    there would name an object that does not exist, and that cluster's
    garbage collector would delete the mesh object (Flagger's rule).
    """

    @property
    def api(self) -> kube.KubeClient:
        """The client of :attr:`store`, for what the store does not do (lists, watches)."""
        return self.store.client

    @property
    def routing_store(self) -> kube.ObjectStore:
        """Where routers keep mesh objects: :attr:`mesh_store` if set, else :attr:`store`."""
        return self.store if self.mesh_store is None else self.mesh_store


def canary_owner(canary: Canary) -> dict[str, Any]:
    """The stored Canary's identity, as ``kube.controller_reference`` and
    ``kube.ObjectStore.apply(owner=...)`` take an owner.

    Raises ValueError for a Canary that was never stored (no uid): an owner reference to it
    would be rejected or, worse, point at nothing.
    """
    uid = canary.metadata.uid if canary.metadata else None
    if not uid:
        raise ValueError(f"Canary {canary.namespace}/{canary.name} has no metadata.uid; "
                         "owner references need the stored object")
    return {"apiVersion": API_VERSION, "kind": "Canary",
            "metadata": {"name": canary.name, "namespace": canary.namespace, "uid": uid}}


class RouterFactory(Protocol):
    """Builds a router for one provider string; registered under ``flaggerpy.routers``.

    ``variant`` is what follows the entry-point name in Flagger's provider
    string: ``""`` for ``istio``, ``"v1beta1"`` for ``gatewayapi:v1beta1``,
    ``"v1alpha3:linkerd"`` for ``smi:v1alpha3:linkerd``. A router class whose
    ``__init__`` takes ``*, ctx, variant`` is a factory as it stands.
    """

    def __call__(self, *, ctx: ProviderContext, variant: str) -> Router: ...
