"""The SMI TrafficSplit router: ``linkerd``, ``osm`` and ``smi:<version>[:<mesh>]``.

Flagger's ``SmiRouter``, ``Smiv1alpha2Router`` and ``Smiv1alpha3Router`` (``pkg/router/smi.go``,
``smi_v1alpha2.go``, ``smi_v1alpha3.go``, spec §3): a canary is routed by one TrafficSplit
``<svc>`` that splits the apex host between ``<svc>-canary`` and ``<svc>-primary``::

    spec: {service: <service.hosts[0] or svc>,
           backends: [{service: <svc>-canary, weight: C}, {service: <svc>-primary, weight: P}]}

Which API version is written depends on the provider string, as Flagger's router factory picks:

- ``linkerd`` and ``smi:v1alpha1[:<mesh>]``: ``split.smi-spec.io/v1alpha1``, whose weights are
  quantities, written as strings (``"90"``);
- ``osm`` and ``smi:v1alpha2[:<mesh>]``: ``split.smi-spec.io/v1alpha2``, number weights (``90``);
- ``smi:v1alpha3[:<mesh>]``: ``split.smi-spec.io/v1alpha3``, number weights.

SMI has no header matches, mirroring or session cookies: an A/B canary runs its iterations with
all traffic on the canary (Flagger's behaviour, declared as ``ab_matches=False``), blue/green
shifts 0/100 at once, and the rest is weights. A new TrafficSplit gets an ownerReference to the
Canary (unless the mesh objects live on another API server) and, for ``smi:<v>:istio`` with
``service.gateways``, Flagger's ``VirtualService.v1alpha3.networking.istio.io/spec.gateways``
annotation; no labels, no toolkit annotations (Flagger writes none here). An existing one only
ever has its ``spec`` changed. ``finalize`` has nothing to give back, as in Flagger: a
TrafficSplit the Canary created goes with it through its ownerReference.

Module layout: the whole SMI family is this one module: one TrafficSplit router for the three
names (``linkerd``, ``osm``, ``smi`` entry points of ``flaggerpy.routers``) and the builtin-metrics
observers of the two meshes that have their own (``linkerd`` and ``osm`` entry points of
``flaggerpy.observers``): :class:`LinkerdObserver` reads the Linkerd proxy's inbound
``response_total`` (by ``classification``) and ``response_latency_ms``, :class:`OsmObserver`
OSM's ``osm_request_total`` and ``osm_request_duration_ms`` (spec §4.3). The routers name their
observer by its entry-point name in their capabilities.

As everywhere, pure builders (:func:`build_traffic_split`, :func:`read_weights`,
:func:`kept_weights`, :func:`parse_variant`) carry the rules and are tested without a cluster;
the router class does the I/O through ``ctx.routing_store``. Where this differs from Flagger is
listed in ``docs/compatibility.md`` under "SMI router differences from Flagger".
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from flaggerpy import kube
from flaggerpy.errors import PluginError, RouterError
from flaggerpy.models.canary import Canary
from flaggerpy.observing import PrometheusObserver, p99, ratio, request_count
from flaggerpy.routing import (
    Capabilities,
    ProviderContext,
    Router,
    RouterFactory,
    Weights,
    canary_owner,
)

__all__ = [
    "GROUP",
    "ISTIO_GATEWAYS_ANNOTATION",
    "TRAFFIC_SPLITS",
    "VERSIONS",
    "LinkerdObserver",
    "LinkerdRouter",
    "OsmObserver",
    "OsmRouter",
    "SmiRouter",
    "SmiVersion",
    "build_traffic_split",
    "kept_weights",
    "parse_variant",
    "read_weights",
]

GROUP: Final = "split.smi-spec.io"
ISTIO_GATEWAYS_ANNOTATION: Final = "VirtualService.v1alpha3.networking.istio.io/spec.gateways"
"""Put on a new TrafficSplit for ``smi:<v>:istio`` with gateways: their JSON list (Flagger's)."""


@dataclass(frozen=True, slots=True)
class SmiVersion:
    """One TrafficSplit API version: its resource and how it spells a weight."""

    name: str
    resource: kube.Resource
    quantity_weights: bool
    """v1alpha1's weights are ``resource.Quantity`` values, which Flagger writes as strings
    (``"90"``; the CRD's ``x-kubernetes-int-or-string`` keeps them so); later versions
    write numbers."""

    @property
    def api_version(self) -> str:
        return f"{GROUP}/{self.name}"

    def weight(self, value: int) -> int | str:
        """``value`` as this version writes it."""
        return str(value) if self.quantity_weights else value


def _version(name: str, *, quantity: bool) -> SmiVersion:
    return SmiVersion(name, kube.Resource(GROUP, name, "trafficsplits", "TrafficSplit"),
                      quantity_weights=quantity)


VERSIONS: Final[Mapping[str, SmiVersion]] = {
    "v1alpha1": _version("v1alpha1", quantity=True),
    "v1alpha2": _version("v1alpha2", quantity=False),
    "v1alpha3": _version("v1alpha3", quantity=False),
}
TRAFFIC_SPLITS: Final = {name: v.resource for name, v in VERSIONS.items()}
"""The TrafficSplit resource of each API version."""


def parse_variant(variant: str) -> tuple[SmiVersion, str]:
    """The API version and target mesh of ``smi:<variant>``: ``"v1alpha3:istio"`` →
    (v1alpha3, ``"istio"``). Pure.

    Raises PluginError for anything but ``v1alpha1``, ``v1alpha2`` or ``v1alpha3`` (optionally
    followed by ``:<mesh>``). Flagger routes such a string (``smi``, ``smi:linkerd``, which
    releases before the versioned SMI routers took) with Istio instead, silently.
    """
    name, _, mesh = variant.partition(":")
    version = VERSIONS.get(name)
    if version is None:
        shown = f"smi:{variant}" if variant else "smi"
        raise PluginError(f"the smi router needs an API version: smi:v1alpha1, smi:v1alpha2 or "
                          f"smi:v1alpha3 (optionally followed by :<mesh>), got '{shown}'")
    return version, mesh


# -- pure builders ------------------------------------------------------------------------------


def _host(canary: Canary) -> str:
    service = canary.spec.service
    if service is not None and service.hosts:
        return service.hosts[0]
    return canary.get_service_names().apex


def _spec(canary: Canary, weights: Weights, version: SmiVersion) -> dict[str, Any]:
    names = canary.get_service_names()
    return {
        "service": _host(canary),
        "backends": [
            {"service": names.canary, "weight": version.weight(weights.canary)},
            {"service": names.primary, "weight": version.weight(weights.primary)},
        ],
    }


def _without_weights(spec: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(spec)
    backends = result.get("backends")
    if isinstance(backends, list):
        result["backends"] = [
            {k: v for k, v in b.items() if k != "weight"} if isinstance(b, Mapping) else b
            for b in backends
        ]
    return result


def _annotations(canary: Canary, target_mesh: str) -> dict[str, str]:
    gateways = canary.spec.service.gateways if canary.spec.service is not None else None
    if target_mesh == "istio" and gateways:
        return {ISTIO_GATEWAYS_ANNOTATION: json.dumps(list(gateways), separators=(",", ":"))}
    return {}


def build_traffic_split(
        canary: Canary,
        weights: Weights | None,
        *,
        version: SmiVersion,
        target_mesh: str = "",
        existing: Mapping[str, Any] | None,
        set_owner_refs: bool = True,
) -> dict[str, Any]:
    """The TrafficSplit ``<svc>`` routing ``weights``, built over ``existing``. Pure.

    ``weights=None`` is a reconcile: an existing TrafficSplit whose spec matches apart from
    its weights is returned as it is (Flagger compares ignoring the weights, so a run in
    flight is never reset); one whose spec differs (new hosts, a hand edit) gets the desired
    spec with the split :func:`kept_weights` reads from it. A new one carries 100/0.
    Only ``spec`` of an existing object changes; a new one gets the ownerReference (with
    ``set_owner_refs``) and the Istio gateways annotation Flagger puts on at creation.
    """
    if existing is None:
        metadata: dict[str, Any] = {"name": canary.get_service_names().apex,
                                    "namespace": canary.namespace}
        annotations = _annotations(canary, target_mesh)
        if annotations:
            metadata["annotations"] = annotations
        if set_owner_refs:
            metadata["ownerReferences"] = [kube.controller_reference(canary_owner(canary))]
        return {"apiVersion": version.api_version, "kind": "TrafficSplit",
                "metadata": metadata,
                "spec": _spec(canary, weights or Weights.all_primary(), version)}
    result = copy.deepcopy(dict(existing))
    current_spec = existing.get("spec") or {}
    if weights is None:
        unchanged = _spec(canary, Weights.all_primary(), version)
        if _without_weights(current_spec) == _without_weights(unchanged):
            return result
        weights = kept_weights(existing, canary)
    result["spec"] = _spec(canary, weights, version)
    return result


def _weight(value: Any) -> int:
    """A backend weight as an int: a number, or a quantity string (``"90"``).

    Anything that is not a whole number reads as 0, as Flagger's ``Quantity.AsInt64``
    (whose error it ignores) makes it.
    """
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else 0
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return 0
        return int(number) if number.is_integer() else 0
    return 0


def _backend_weights(ts: Mapping[str, Any], canary: Canary) -> tuple[int, int]:
    names = canary.get_service_names()
    primary = canary_weight = 0
    for backend in (ts.get("spec") or {}).get("backends") or ():
        if not isinstance(backend, Mapping):
            continue
        if backend.get("service") == names.primary:
            primary = _weight(backend.get("weight"))
        if backend.get("service") == names.canary:
            canary_weight = _weight(backend.get("weight"))
    return primary, canary_weight


def read_weights(ts: Mapping[str, Any], canary: Canary) -> Weights:
    """The split a TrafficSplit carries: Flagger's ``GetRoutes``, pure. Never mirrored.

    Raises RouterError when neither backend has weight (Flagger's "does not contain routes
    for ...") and when the two do not add up to 100, which only a hand edit can cause.
    """
    names = canary.get_service_names()
    primary, canary_weight = _backend_weights(ts, canary)
    label = f"TrafficSplit {names.apex}.{canary.namespace}"
    if primary == 0 and canary_weight == 0:
        raise RouterError(f"{label} does not contain routes for {names.primary} and "
                          f"{names.canary}")
    try:
        return Weights(primary=primary, canary=canary_weight)
    except ValueError as exc:
        raise RouterError(f"{label}: {exc}") from exc


def kept_weights(ts: Mapping[str, Any] | None, canary: Canary) -> Weights:
    """The split a reconcile keeps: what ``ts`` carries, else (none, or no valid split) 100/0."""
    if ts is None:
        return Weights.all_primary()
    try:
        return read_weights(ts, canary)
    except RouterError:
        return Weights.all_primary()


# -- the router ---------------------------------------------------------------------------------

_SMI_CAPABILITIES: Final = Capabilities(ab_matches=False, mirroring=False,
                                        session_affinity=False)
_LINKERD_CAPABILITIES: Final = Capabilities(
    ab_matches=False, mirroring=False, session_affinity=False,
    observer="linkerd", observer_for_every_canary=True)
"""On Linkerd (``linkerd``, ``smi:<version>:linkerd``) every canary's builtin metrics come from
Linkerd's observer, whatever its own ``spec.provider`` says: Linkerd's proxies see all the
traffic (Flagger's rule, which looks for ``linkerd`` in the mesh provider string)."""


class SmiRouter:
    """Routes a canary with an SMI TrafficSplit (``smi:v1alpha1|v1alpha2|v1alpha3[:<mesh>]``).

    Built once per canary by the core (``SmiRouter(ctx=..., variant="v1alpha3:linkerd")``).
    It keeps no state: the weights live in the TrafficSplit, read through the object store.
    """

    capabilities: ClassVar[Capabilities] = _SMI_CAPABILITIES
    """Weighted only: no A/B matches (an A/B canary gets all traffic during its iterations, as
    in Flagger), no mirroring, no session affinity; routes the three generated Services.
    The builtin metrics' observer is chosen by the provider string (``smi:...`` names no
    observer, so Istio's queries answer, as in Flagger)."""

    provider: ClassVar[str] = "smi"

    @classmethod
    def capabilities_for(cls, variant: str) -> Capabilities:
        """Linkerd's observer when the variant's target mesh is Linkerd; else the class's."""
        try:
            _, target_mesh = cls._select(variant)
        except PluginError:
            return cls.capabilities  # building the router reports the bad variant
        return _LINKERD_CAPABILITIES if target_mesh == "linkerd" else cls.capabilities

    def __init__(self, *, ctx: ProviderContext, variant: str = "") -> None:
        self._version, self._target_mesh = self._select(variant)
        self._ctx = ctx
        self._log = ctx.log
        self._store = ctx.routing_store

    @classmethod
    def _select(cls, variant: str) -> tuple[SmiVersion, str]:
        """The API version and target mesh this provider string asks for."""
        return parse_variant(variant)

    @property
    def version(self) -> SmiVersion:
        """The TrafficSplit API version this router writes."""
        return self._version

    # -- the Router contract --------------------------------------------------------------------

    async def reconcile(self, canary: Canary) -> None:
        """Creates the TrafficSplit (100/0), or brings its spec up to date keeping its split."""
        owners = self._ctx.set_owner_refs
        applied = await self._apply(canary, lambda current: build_traffic_split(
            canary, None, version=self._version, target_mesh=self._target_mesh,
            existing=current, set_owner_refs=owners))
        if applied.result is not kube.OperationResult.UNCHANGED:
            self._log.info("traffic_split_written", router=self.provider,
                           canary=_flagger_name(canary), result=applied.result.value,
                           api_version=self._version.api_version)

    async def set_routes(self, canary: Canary, weights: Weights) -> None:
        """Writes ``weights`` into the backends (``mirrored`` is ignored: SMI cannot mirror)."""
        owners = self._ctx.set_owner_refs
        applied = await self._apply(canary, lambda current: build_traffic_split(
            canary, weights, version=self._version, target_mesh=self._target_mesh,
            existing=current, set_owner_refs=owners))
        if applied.result is not kube.OperationResult.UNCHANGED:
            self._log.info("routes_set", router=self.provider, canary=_flagger_name(canary),
                           primary=weights.primary, canary_weight=weights.canary)

    async def get_routes(self, canary: Canary) -> Weights:
        """The split the TrafficSplit carries now (see :func:`read_weights`)."""
        apex = canary.get_service_names().apex
        ts = await self._store.get(self._version.resource, namespace=canary.namespace,
                                   name=apex)
        if ts is None:
            raise RouterError(f"TrafficSplit {apex}.{canary.namespace} not found")
        return read_weights(ts, canary)

    async def finalize(self, canary: Canary) -> None:
        """Nothing to revert, as in Flagger: the TrafficSplit the Canary created is deleted
        with it through its ownerReference."""
        self._log.debug("traffic_split_finalize_skipped", router=self.provider,
                        canary=_flagger_name(canary))

    # -- helpers --------------------------------------------------------------------------------

    async def _apply(self, canary: Canary, build: kube.Build) -> kube.Applied:
        try:
            return await self._store.apply(self._version.resource, namespace=canary.namespace,
                                           name=canary.get_service_names().apex, build=build)
        except kube.WriteFencedError:
            raise  # this replica is no longer the leader: not a routing failure
        except kube.KubeError as exc:  # the message names the object and the operation
            raise RouterError(str(exc)) from exc


class LinkerdRouter(SmiRouter):
    """``linkerd``: Flagger's ``SmiRouter`` with target mesh linkerd, TrafficSplit v1alpha1.

    While ``linkerd`` is the controller's mesh, every canary's builtin metrics come from
    Linkerd's observer (the ``linkerd`` entry point of ``flaggerpy.observers``), whatever its
    own ``spec.provider`` says: Linkerd's proxies see all the traffic (Flagger's rule).
    """

    capabilities: ClassVar[Capabilities] = _LINKERD_CAPABILITIES
    provider: ClassVar[str] = "linkerd"

    @classmethod
    def _select(cls, variant: str) -> tuple[SmiVersion, str]:
        if variant:
            raise PluginError(f"the linkerd router takes no variant, got 'linkerd:{variant}'")
        return VERSIONS["v1alpha1"], "linkerd"


class OsmRouter(SmiRouter):
    """``osm``: Open Service Mesh, Flagger's ``Smiv1alpha2Router`` with target mesh osm.

    The ``osm`` provider string also picks the ``osm`` observer for the builtin metrics.
    """

    capabilities: ClassVar[Capabilities] = _SMI_CAPABILITIES
    provider: ClassVar[str] = "osm"

    @classmethod
    def _select(cls, variant: str) -> tuple[SmiVersion, str]:
        if variant:
            raise PluginError(f"the osm router takes no variant, got 'osm:{variant}'")
        return VERSIONS["v1alpha2"], "osm"


# -- the observers ------------------------------------------------------------------------------


class LinkerdObserver(PrometheusObserver):
    """Linkerd (``pkg/metrics/observers/linkerd.go``): inbound ``response_total`` by
    classification, and the p99 of ``response_latency_ms``, of the target Deployment."""

    mesh = "linkerd"
    success_rate_query = (
        'sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",'
        'classification!="failure",direction="inbound"}[{{ interval }}]))'
        ' / sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",'
        'direction="inbound"}[{{ interval }}])) * 100'
    )
    duration_query = p99(
        "response_latency_ms_bucket",
        'namespace="{{ namespace }}",deployment=~"{{ target }}",direction="inbound"',
    )
    request_count_query = request_count(
        "response_total",
        'namespace="{{ namespace }}",deployment=~"{{ target }}",direction="inbound"',
    )
    compares_with_primary = True  # deployment is the Deployment's name


class OsmObserver(PrometheusObserver):
    """Open Service Mesh (``pkg/metrics/observers/osm.go``): ``osm_request_total`` and the p99
    of ``osm_request_duration_ms`` of the target Deployment."""

    mesh = "osm"
    _selector = ('destination_namespace="{{ namespace }}",destination_kind="Deployment",'
                 'destination_name="{{ target }}"')
    success_rate_query = ratio("osm_request_total", _selector, 'response_code!~"5.*"')
    duration_query = p99("osm_request_duration_ms_bucket", _selector)
    request_count_query = request_count("osm_request_total", _selector)
    compares_with_primary = True  # destination_name is the Deployment's name


def _flagger_name(canary: Canary) -> str:
    return f"{canary.name}.{canary.namespace}"


_factory: RouterFactory = SmiRouter
_: type[Router] = SmiRouter
_linkerd_factory: RouterFactory = LinkerdRouter
_linkerd: type[Router] = LinkerdRouter
_osm_factory: RouterFactory = OsmRouter
_osm: type[Router] = OsmRouter
