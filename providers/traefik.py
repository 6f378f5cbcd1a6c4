"""The ``traefik`` provider: Flagger's ``TraefikRouter`` (``pkg/router/traefik.go``, spec §3) and
Traefik's builtin metrics (``pkg/metrics/observers/traefik.go``, spec §4.3).

A canary behind Traefik is routed by one ``traefik.io/v1alpha1`` TraefikService named ``<svc>``,
a weighted round robin over the ``-primary`` and ``-canary`` Services on ``service.port``::

    spec: {weighted: {services: [{name: <svc>-primary, namespace, port, weight: P},
                                 {name: <svc>-canary, namespace, port, weight: C}]}}

The canary entry is there only while C > 0, as Flagger writes it. The user's IngressRoute
(or any Traefik route) sends its traffic to this TraefikService (``kind: TraefikService``); the
router never touches it. A new TraefikService gets the ``service.apex`` labels and annotations,
the toolkit annotations and, unless the mesh objects live on another API server, an
ownerReference to the Canary; a reconcile puts the labels and annotations back to exactly
those, as Flagger does.

One deliberate difference: a primary weight of 0 is written ``weight: 0``. Flagger's Go type
drops a zero weight (``omitempty``), and Traefik reads a missing weight as **1**
(``buildServicesLB``), so Flagger's blue/green and A/B runs send 1 request in 101 to the
primary while they mean to send none; Traefik drops a service whose weight is 0 from the round
robin. Reading back, a missing weight still counts as 0, as Flagger reads it, so a
TraefikService Flagger wrote is taken over with the split it meant.

Traefik's TraefikService has no header or cookie matches, and Flagger's router ignores mirroring
and session affinity: an A/B canary runs its iterations with all traffic on the canary, hence
the capabilities. ``finalize`` has nothing to give back (``revertOnDeletion``), as in Flagger.

As for every router (style §9.3) the module is **pure builders** -- :func:`build_traefik_service`,
:func:`read_weights`, :func:`kept_weights` -- tested field by field, and **one apply path**, the
object store (``ProviderContext.routing_store``). ``reconcile`` builds with the weights the
TraefikService carries, ``set_routes`` with the new ones. Where this differs from Flagger is
listed in ``docs/compatibility.md`` under "Traefik router differences from Flagger".

The module ends with :class:`TraefikObserver`, which answers ``request-success-rate`` and
``request-duration`` from Traefik's ``traefik_service_request_duration_seconds`` histogram of
the canary's backend, ``<namespace>-<target>-canary-<port>@kubernetescrd``; the p99 is in
seconds and multiplied by 1000 in the query.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar, Final

from flaggerpy import kube
from flaggerpy.errors import PluginError, RouterError, TerminalError
from flaggerpy.models.canary import Canary
from flaggerpy.observing import PrometheusObserver, p99, request_count
from flaggerpy.routing import (
    TOOLKIT_ANNOTATIONS,
    TOTAL_WEIGHT,
    Capabilities,
    ProviderContext,
    Router,
    RouterFactory,
    Weights,
    canary_owner,
)

__all__ = [
    "API_VERSION",
    "TRAEFIK_SERVICES",
    "TraefikObserver",
    "TraefikRouter",
    "build_traefik_service",
    "kept_weights",
    "read_weights",
    "weighted_services",
]

GROUP: Final = "traefik.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
TRAEFIK_SERVICES: Final = kube.Resource(GROUP, VERSION, "traefikservices", "TraefikService")


# -- pure builders ------------------------------------------------------------------------------


def _port(canary: Canary) -> int:
    service = canary.spec.service
    if service is None:
        raise TerminalError(f"Canary {canary.namespace}/{canary.name}: spec.service is missing; "
                            "the TraefikService needs spec.service.port")
    return service.port


def weighted_services(canary: Canary, weights: Weights) -> list[dict[str, Any]]:
    """The round robin's entries: the primary always (``weight: 0`` written out, see the module
    docstring), the canary only while its weight is above 0, as Flagger's ``SetRoutes``."""
    names = canary.get_service_names()
    port = _port(canary)

    def entry(name: str, weight: int) -> dict[str, Any]:
        return {"name": name, "namespace": canary.namespace, "port": port, "weight": weight}

    services = [entry(names.primary, weights.primary)]
    if weights.canary > 0:
        services.append(entry(names.canary, weights.canary))
    return services


def _metadata(canary: Canary) -> tuple[dict[str, str], dict[str, str]]:
    apex = canary.spec.service.apex if canary.spec.service else None
    labels = dict((apex.labels if apex else None) or {})
    annotations = {**((apex.annotations if apex else None) or {}), **TOOLKIT_ANNOTATIONS}
    return labels, annotations


def build_traefik_service(
        canary: Canary,
        weights: Weights,
        existing: Mapping[str, Any] | None,
        *,
        set_owner_refs: bool = True,
) -> dict[str, Any]:
    """The TraefikService ``<svc>`` routing ``weights``, built over ``existing`` (or None). Pure.

    A new one gets the ``service.apex`` labels and annotations (plus the toolkit ones) and,
    with ``set_owner_refs``, a controller reference to the Canary. An existing one gets its
    spec, labels and annotations replaced by those (Flagger's ``Reconcile`` replaces them
    whole); anything else it carries stays, ownerReferences included, so rebuilding the stored
    object with its own weights changes nothing.
    """
    names = canary.get_service_names()
    spec = {"weighted": {"services": weighted_services(canary, weights)}}
    labels, annotations = _metadata(canary)
    if existing is None:
        metadata: dict[str, Any] = {"name": names.apex, "namespace": canary.namespace,
                                    "annotations": annotations}
        if labels:
            metadata["labels"] = labels
        if set_owner_refs:
            metadata["ownerReferences"] = [kube.controller_reference(canary_owner(canary))]
        return {"apiVersion": API_VERSION, "kind": "TraefikService", "metadata": metadata,
                "spec": spec}
    result = copy.deepcopy(dict(existing))
    meta: dict[str, Any] = result.setdefault("metadata", {})
    if dict(meta.get("annotations") or {}) != annotations:
        meta["annotations"] = annotations
    if dict(meta.get("labels") or {}) != labels:
        if labels:
            meta["labels"] = labels
        else:
            meta.pop("labels", None)
    if result.get("spec") != spec:
        result["spec"] = spec
    return result


def read_weights(service: Mapping[str, Any], canary: Canary) -> Weights:
    """The split a TraefikService carries: Flagger's ``GetRoutes``, pure.

    The primary's weight is that of the ``<svc>-primary`` entry, 0 when it has none (as Flagger
    reads what it wrote for 0); the canary gets the rest. Raises RouterError when the round
    robin has no entries or none for the primary (Flagger answers 0/0 there and carries on),
    and when the weight is not a percentage: only a hand edit makes any of these.
    """
    names = canary.get_service_names()
    label = f"TraefikService {names.apex}.{canary.namespace}"
    entries = ((service.get("spec") or {}).get("weighted") or {}).get("services") or ()
    if not entries:
        raise RouterError(f"{label} services not found")
    for entry in entries:
        if entry.get("name") == names.primary:
            try:
                primary = int(entry.get("weight") or 0)
                return Weights.to_canary(TOTAL_WEIGHT - primary)
            except (TypeError, ValueError) as exc:
                raise RouterError(f"{label}: weight of {names.primary} is not a percentage: "
                                  f"{entry.get('weight')!r}") from exc
    raise RouterError(f"{label} does not contain a service for {names.primary}")


def kept_weights(service: Mapping[str, Any] | None, canary: Canary) -> Weights:
    """The split a reconcile keeps: what ``service`` carries, else all to the primary."""
    if service is None:
        return Weights.all_primary()
    try:
        return read_weights(service, canary)
    except RouterError:
        return Weights.all_primary()


# -- the router ---------------------------------------------------------------------------------


class TraefikRouter:
    """Routes a canary with the TraefikService ``<svc>`` (spec §3).

    Built once per canary by the core (``TraefikRouter(ctx=..., variant="")``). It keeps no
    state of its own: the weights live in the TraefikService, read through the object store,
    which shows our own writes at once.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(
        ab_matches=False, mirroring=False, session_affinity=False)
    """A weighted round robin and nothing else: no header or cookie matches (an A/B canary
    runs with all traffic on the canary, as in Flagger), no mirroring, no sticky sessions
    (Flagger's router ignores ``mirrored`` and never writes ``sticky``)."""

    def __init__(self, *, ctx: ProviderContext, variant: str = "") -> None:
        if variant:
            raise PluginError(f"the traefik router takes no variant, got 'traefik:{variant}'")
        self._log = ctx.log
        self._store = ctx.routing_store
        self._set_owner_refs = ctx.set_owner_refs

    # -- the Router contract --------------------------------------------------------------------

    async def reconcile(self, canary: Canary) -> None:
        """Creates the TraefikService (all to the primary), or keeps the one there up to date
        with the weights it carries: a steady call writes nothing."""
        applied = await self._apply(canary, lambda current: build_traefik_service(
            canary, kept_weights(current, canary), current, set_owner_refs=self._set_owner_refs))
        if applied.result is not kube.OperationResult.UNCHANGED:
            self._log.info(f"traefik_service_{applied.result.value}", router="traefik",
                           canary=_flagger_name(canary),
                           name=canary.get_service_names().apex)

    async def set_routes(self, canary: Canary, weights: Weights) -> None:
        """Writes ``weights`` into the round robin (nothing, if it carries them)."""
        applied = await self._apply(canary, lambda current: build_traefik_service(
            canary, weights, current, set_owner_refs=self._set_owner_refs))
        if applied.result is not kube.OperationResult.UNCHANGED:
            self._log.info("routes_set", router="traefik", canary=_flagger_name(canary),
                           primary=weights.primary, canary_weight=weights.canary)

    async def get_routes(self, canary: Canary) -> Weights:
        """The split the TraefikService carries now (see :func:`read_weights`)."""
        apex = canary.get_service_names().apex
        try:
            service = await self._store.get(TRAEFIK_SERVICES, namespace=canary.namespace,
                                            name=apex)
        except kube.WriteFencedError:
            raise
        except kube.KubeError as exc:
            raise RouterError(f"TraefikService {apex}.{canary.namespace} query error: "
                              f"{exc}") from exc
        if service is None:
            raise RouterError(f"TraefikService {apex}.{canary.namespace} not found")
        return read_weights(service, canary)

    async def finalize(self, canary: Canary) -> None:
        """Nothing to give back (``revertOnDeletion``), as in Flagger: the TraefikService is
        the Canary's own and goes with it through its ownerReference."""
        self._log.debug("traefik_service_finalize_skipped", router="traefik",
                        canary=_flagger_name(canary))

    # -- helpers --------------------------------------------------------------------------------

    async def _apply(self, canary: Canary, build: kube.Build) -> kube.Applied:
        """The one write path: cache read, pure build, a write only on a change, conflicts
        retried by the store. The owner reference is set by the builder, on creation only."""
        try:
            return await self._store.apply(TRAEFIK_SERVICES, namespace=canary.namespace,
                                           name=canary.get_service_names().apex, build=build)
        except kube.WriteFencedError:
            raise  # this replica is no longer the leader: not a routing failure
        except kube.KubeError as exc:  # the message names the object and the operation
            raise RouterError(str(exc)) from exc


def _flagger_name(canary: Canary) -> str:
    return f"{canary.name}.{canary.namespace}"


_factory: RouterFactory = TraefikRouter
_: type[Router] = TraefikRouter


# --- builtin metrics ----------------------------------------------------------------------------


class TraefikObserver(PrometheusObserver):
    """Traefik: the canary service's ``traefik_service_request_duration_seconds`` histogram."""

    mesh = "traefik"
    _selector = 'service=~"{{ namespace }}-{{ target }}-canary-[0-9a-zA-Z-]+@kubernetescrd"'
    success_rate_query = (
        f"sum(rate(traefik_service_request_duration_seconds_bucket{{{_selector},"
        f'code!~"5..",le="+Inf"}}[{{{{ interval }}}}]))'
        f" / sum(rate(traefik_service_request_duration_seconds_bucket{{{_selector},"
        f'le="+Inf"}}[{{{{ interval }}}}])) * 100'
    )
    duration_query = p99("traefik_service_request_duration_seconds_bucket", _selector) + " * 1000"
    # The requests the success rate divides by: its histogram's count (its le="+Inf" bucket).
    request_count_query = request_count("traefik_service_request_duration_seconds_count",
                                        _selector)
