"""The ClusterIP Services of every Deployment or DaemonSet canary: apex, -primary, -canary.

Port of Flagger's ``pkg/router/kubernetes_default.go`` (``KubernetesDefaultRouter``) and
``kubernetes_noop.go``. These Services are core behaviour, not a mesh plugin: whatever the
provider, the mesh objects point at ``<svc>-primary`` and ``<svc>-canary``, and the apex
``<svc>`` is what clients call.

- apex ``<svc>``: selector ``<label>: <value>-primary``, labels ``service.apex.labels`` plus
  ``<label>: <svc>``;
- ``<svc>-primary``: selector ``<label>: <value>-primary``, labels ``service.primary.labels``
  plus ``<label>: <svc>-primary``;
- ``<svc>-canary``: selector ``<label>: <value>``, labels ``service.canary.labels`` plus
  ``<label>: <svc>-canary``.

``<label>``/``<value>`` are the target's selector label and its value, and the discovered
container ports come from the workload (``canary.workloads.get_metadata``); the router is given
all three when it is built, as Flagger's factory does, so the ``KubernetesRouter`` contract
stays "one Canary in, nothing out" and a router is cheap to build per reconcile.

The module splits into pure builders, which tests can check field by field, and the router that
applies them (style §9.3):

- :func:`build_service` is the Service Flagger would create, exactly (spec §3.1).
- :func:`updated_service` is what Flagger does to a Service that already exists: ports and
  selector follow the Canary (NodePorts kept); labels, annotations (and the ownerReference and
  ``trafficDistribution``) follow it only when the Service is controlled by this Canary, keys
  listed in ``unmanagedMetadata`` excepted. A user's own apex Service thus keeps its metadata
  and only has its traffic redirected.
- :func:`reverted_service` is what ``finalize`` does to a user's apex Service when the Canary is
  deleted with ``revertOnDeletion``.

Design rule 3: the current Services are read through the object store (the Services cache,
with our own writes on top), and a Service is written only when the rules above change it. A
second identical ``initialize``/``reconcile`` makes no request at all. Comparisons are made the
way Flagger's are (ports as a set, the selector exactly), so taking over from Flagger does not
rewrite Services that already match.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final, Literal

import structlog

from flaggerpy import kube
from flaggerpy.errors import RouterError, TerminalError
from flaggerpy.models.canary import Canary, CanaryService, CustomMetadata
from flaggerpy.routing import KubernetesRouter, canary_owner

__all__ = [
    "KUBECTL_LAST_APPLIED",
    "ROLES",
    "TOOLKIT_ANNOTATIONS",
    "KubernetesDefaultRouter",
    "KubernetesNoopRouter",
    "Role",
    "build_service",
    "controlling_canary",
    "is_owned_by",
    "new_kubernetes_router",
    "reverted_service",
    "service_ports",
    "updated_service",
]

log = structlog.get_logger(__name__)

Role = Literal["apex", "primary", "canary"]
"""Which of a Canary's three Services: the apex ``<svc>``, ``<svc>-primary`` or ``<svc>-canary``."""

ROLES: Final[tuple[Role, ...]] = ("apex", "primary", "canary")

TOOLKIT_ANNOTATIONS: Final[Mapping[str, str]] = {
    "kustomize.toolkit.fluxcd.io/reconcile": "disabled",
    "helm.toolkit.fluxcd.io/driftDetection": "disabled",
}
"""Put on every Service Flagger writes (its ``filterMetadata``), so Flux does not undo the
selector switch or the generated Services' metadata on its next sync."""

KUBECTL_LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"
"""Where ``kubectl apply`` keeps the user's manifest; ``finalize`` restores the selector from it."""

PROTOCOL: Final = "TCP"
_CANARY_KIND: Final = "Canary"


# -- pure builders ------------------------------------------------------------------------------


def _service_spec(canary: Canary) -> CanaryService:
    service = canary.spec.service
    if service is None:
        # Flagger would try to create Services on port 0, which the API server rejects.
        raise TerminalError(
            f"Canary {canary.namespace}/{canary.name}: spec.service is missing; "
            "the Services need at least spec.service.port")
    return service


def service_ports(canary: Canary, *, ports: Mapping[str, int]) -> list[dict[str, Any]]:
    """The Service ports: the Canary's port first, then the discovered container ports.

    The Canary's port is ``{name: portName or "http", protocol: TCP, port, targetPort:
    targetPort or port, appProtocol}``. ``ports`` (name → container port) is added only when
    ``service.portDiscovery`` is on, each as ``{name, TCP, port: p, targetPort: p}``, sorted by
    name (Flagger's order is Go's random map order; comparisons ignore order anyway). A
    discovered port that repeats the main port's name or number is left out, because the API
    server rejects a Service with duplicate port names or numbers.
    """
    service = _service_spec(canary)
    main: dict[str, Any] = {
        "name": service.get_port_name(),
        "protocol": PROTOCOL,
        "port": service.port,
        "targetPort": service.get_target_port(),
    }
    if service.app_protocol:
        main["appProtocol"] = service.app_protocol
    result = [main]
    if service.port_discovery:
        for name, number in sorted(ports.items()):
            if name == main["name"] or number == main["port"]:
                continue
            result.append({"name": name, "protocol": PROTOCOL, "port": number,
                           "targetPort": number})
    return result


def build_service(
        canary: Canary,
        *,
        role: Role,
        label: str,
        label_value: str,
        ports: Mapping[str, int],
) -> dict[str, Any]:
    """The Service Flagger creates for ``role`` (spec §3.1), as a JSON object. Pure.

    ``label``/``label_value`` are the target's selector label and value, ``ports`` the
    container ports discovered on the target (used only with ``portDiscovery``). The apex and
    ``-primary`` Services select ``<label>: <label_value>-primary``, the ``-canary`` Service
    ``<label>: <label_value>``.
    """
    if role not in ROLES:
        raise ValueError(f"unknown Service role {role!r}; expected one of {ROLES}")
    service = _service_spec(canary)
    name = getattr(canary.get_service_names(), role)
    selected = label_value if role == "canary" else f"{label_value}-primary"
    custom: CustomMetadata | None = getattr(service, role)
    labels = {**((custom.labels if custom else None) or {}), label: name}
    annotations = {**((custom.annotations if custom else None) or {}), **TOOLKIT_ANNOTATIONS}

    spec: dict[str, Any] = {
        "type": "ClusterIP",
        "selector": {label: selected},
        "ports": service_ports(canary, ports=ports),
    }
    if service.headless:
        spec["clusterIP"] = "None"
    if service.traffic_distribution:
        spec["trafficDistribution"] = service.traffic_distribution
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": canary.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [kube.controller_reference(canary_owner(canary))],
        },
        "spec": spec,
    }


def _controller_ref(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return ref  # type: ignore[no-any-return]
    return None


def controlling_canary(obj: Mapping[str, Any]) -> str | None:
    """The name of the Canary that controls ``obj`` (its controller ownerReference), if any."""
    ref = _controller_ref(obj)
    if ref is None or ref.get("kind") != _CANARY_KIND:
        return None
    return str(ref.get("name") or "")


def is_owned_by(obj: Mapping[str, Any], canary: Canary) -> bool:
    """Whether ``obj`` is controlled by this Canary (Flagger's ``isOwnedByCanary``).

    Matched by kind and name, as Flagger does, so Services Flagger generated are recognised
    as ours; the uid is not compared, so a Canary deleted and re-created under the same name
    adopts its predecessor's Services (see :func:`updated_service`).
    """
    return controlling_canary(obj) == canary.name


def _port_identity(port: Mapping[str, Any]) -> tuple[Any, ...]:
    # The fields of a ServicePort, as Go's cmp.Diff sees them; absent and zero compare equal.
    return (
        port.get("port"),
        port.get("name") or "",
        port.get("protocol") or PROTOCOL,
        port.get("targetPort"),
        port.get("nodePort") or 0,
        port.get("appProtocol") or "",
    )


def _same_ports(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> bool:
    return sorted(map(_port_identity, a), key=repr) == sorted(map(_port_identity, b), key=repr)


def _with_node_ports(
        wanted: Sequence[Mapping[str, Any]], existing: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """``wanted`` with the NodePorts of same-named existing ports, so an update never reallocates
    a NodePort a user's NodePort or LoadBalancer apex Service already exposes."""
    node_ports = {p.get("name"): p["nodePort"] for p in existing if p.get("nodePort")}
    result = []
    for port in wanted:
        copied = dict(port)
        if port.get("name") in node_ports:
            copied["nodePort"] = node_ports[port.get("name")]
        result.append(copied)
    return result


def _managed(
        want: Mapping[str, str], have: Mapping[str, str], unmanaged: list[str] | None,
) -> dict[str, str]:
    """``want``, except that keys listed in ``unmanaged`` keep exactly what ``have`` has."""
    result = dict(want)
    for key in unmanaged or ():
        result.pop(key, None)
        if key in have:
            result[key] = have[key]
    return result


def _set_or_drop(target: dict[str, Any], field: str, value: Any) -> None:
    if value is None or value == {} or value == []:
        target.pop(field, None)
    else:
        target[field] = value


def updated_service(
        current: Mapping[str, Any], desired: Mapping[str, Any], *, canary: Canary,
) -> dict[str, Any]:
    """``current`` with Flagger's update rules applied towards ``desired``; equal to ``current``
    (a copy) when nothing is to be written. Pure.

    - Ports and selector are replaced together when either differs (ports compared as a set,
      the selector exactly), keeping the NodePorts of same-named ports. On such a change the
      two toolkit annotations are added to whatever annotations the Service has, so Flux does
      not revert the switch (Flagger does the same).
    - Only if the Service is controlled by this Canary: labels and annotations become exactly
      the desired ones (keys in ``unmanagedMetadata`` keep their live value), the controller
      ownerReference becomes this Canary's (adopting Services left by a deleted Canary of the
      same name, whose garbage collection would otherwise take them away), and
      ``trafficDistribution`` follows the Canary.
    - Nothing else: ``type``, ``clusterIP`` (``headless``) and all other fields stay as they
      are, for a user's Service and because ``clusterIP`` cannot be changed.
    """
    result = copy.deepcopy(dict(current))
    spec: dict[str, Any] = result.setdefault("spec", {})
    meta: dict[str, Any] = result.setdefault("metadata", {})
    want_spec: Mapping[str, Any] = desired.get("spec") or {}
    want_meta: Mapping[str, Any] = desired.get("metadata") or {}

    existing_ports = list(spec.get("ports") or [])
    ports = _with_node_ports(list(want_spec.get("ports") or []), existing_ports)
    selector = dict(want_spec.get("selector") or {})
    if not _same_ports(ports, existing_ports) or dict(spec.get("selector") or {}) != selector:
        spec["ports"] = ports
        _set_or_drop(spec, "selector", selector)
        meta["annotations"] = {**(meta.get("annotations") or {}), **TOOLKIT_ANNOTATIONS}

    if not is_owned_by(current, canary):
        return result

    current_meta: Mapping[str, Any] = current.get("metadata") or {}
    unmanaged = _service_spec(canary).unmanaged_metadata
    for field in ("labels", "annotations"):
        wanted = _managed(
            want_meta.get(field) or {}, current_meta.get(field) or {},
            getattr(unmanaged, field) if unmanaged else None)
        if wanted != (meta.get(field) or {}):
            _set_or_drop(meta, field, wanted)

    ours = (want_meta.get("ownerReferences") or [None])[0]
    if ours is not None:
        refs = list(meta.get("ownerReferences") or [])
        adopted = [dict(ours) if ref.get("controller") else ref for ref in refs]
        if adopted != refs:
            meta["ownerReferences"] = adopted

    distribution = want_spec.get("trafficDistribution")
    if spec.get("trafficDistribution") != distribution:
        _set_or_drop(spec, "trafficDistribution", distribution)
    return result


def reverted_service(
        current: Mapping[str, Any],
        *,
        canary: Canary,
        label: str,
        label_value: str,
        ports: Mapping[str, int],
) -> dict[str, Any]:
    """A user's apex Service as it should be left when its Canary is deleted. Pure.

    If ``kubectl apply`` wrote it, the selector of the last applied manifest is restored (and
    nothing else: the user's tool owns the rest). Otherwise the selector goes back to the
    target's own pods, ``<label>: <label_value>``, with the Canary's ports. Flagger points it
    at ``<label>: <targetRef.name>`` instead, which selects nothing when the target's label
    value is not its name.

    Raises RouterError if the last-applied annotation is not a JSON object.
    """
    annotations = (current.get("metadata") or {}).get("annotations") or {}
    if KUBECTL_LAST_APPLIED in annotations:
        text = annotations[KUBECTL_LAST_APPLIED]
        try:
            stored = json.loads(text)
        except ValueError as exc:
            raise RouterError(
                f"Service {canary.namespace}/{(current.get('metadata') or {}).get('name')}: "
                f"annotation {KUBECTL_LAST_APPLIED} is not JSON: {exc}") from exc
        if not isinstance(stored, Mapping):
            raise RouterError(f"Service {canary.namespace}/{canary.get_service_names().apex}: "
                              f"annotation {KUBECTL_LAST_APPLIED} is not a JSON object")
        result = copy.deepcopy(dict(current))
        selector = (stored.get("spec") or {}).get("selector")
        _set_or_drop(result.setdefault("spec", {}), "selector",
                     dict(selector) if isinstance(selector, Mapping) else None)
        return result
    desired = build_service(canary, role="apex", label=label, label_value=label_value,
                            ports=ports)
    desired["spec"]["selector"] = {label: label_value}
    return updated_service(current, desired, canary=canary)


# -- the routers --------------------------------------------------------------------------------


class KubernetesDefaultRouter:
    """Creates and updates a Deployment or DaemonSet canary's three ClusterIP Services.

    Built per canary with what the workload says (``label``, ``label_value``, ``ports``), like
    Flagger's ``factory.KubernetesRouter(kind, labelSelector, labelValue, ports)``; it keeps no
    state between calls. Every read and write goes through the object store: reads come from
    the Services cache, and writes are conditional on the resourceVersion read, so a stale
    cache costs a retry, never a lost update.

    API failures are raised as RouterError naming the Service, with the KubeError chained;
    WriteFencedError (this replica is not the leader) is passed through unchanged.
    """

    def __init__(
            self,
            *,
            store: kube.ObjectStore,
            label: str,
            label_value: str,
            ports: Mapping[str, int],
    ) -> None:
        self._store = store
        self._label = label
        self._label_value = label_value
        self._ports = dict(ports)

    def build(self, canary: Canary, *, role: Role) -> dict[str, Any]:
        """The Service this router wants for ``role`` (:func:`build_service`)."""
        return build_service(canary, role=role, label=self._label,
                             label_value=self._label_value, ports=self._ports)

    async def initialize(self, canary: Canary) -> None:
        """Creates or updates ``<svc>-canary`` and ``<svc>-primary`` (spec §2.3 step 7).

        They exist before the primary workload does, so the mesh objects built next have
        something to point at.
        """
        await self._apply(canary, role="canary")
        await self._apply(canary, role="primary")

    async def reconcile(self, canary: Canary) -> None:
        """Creates or updates the apex ``<svc>``, selecting the primary pods (step 13).

        Runs after the primary workload is ready, so switching a user's existing apex Service
        to the primary pods never leaves it selecting nothing.
        """
        await self._apply(canary, role="apex")

    async def finalize(self, canary: Canary) -> None:
        """Reverts a user's apex Service when the Canary is deleted (``revertOnDeletion``).

        A Service controlled by a Canary is left alone: the garbage collector deletes ours, and
        another Canary's is not ours to change. A user's Service gets its selector back (see
        :func:`reverted_service`). A missing apex Service means there is nothing to revert,
        where Flagger fails and keeps the Canary's finalizer until someone creates one.
        """
        name = canary.get_service_names().apex
        with _router_errors():
            current = await self._store.get(kube.SERVICES, namespace=canary.namespace, name=name)
        if current is None:
            log.info("service_finalize_skipped", service=name, reason="not_found")
            return
        owner = controlling_canary(current)
        if owner is not None:
            log.debug("service_finalize_skipped", service=name, reason="controlled", owner=owner)
            return

        def revert(live: dict[str, Any] | None) -> dict[str, Any] | None:
            # Built again on a fresher copy after a conflict: the same checks, on it.
            if live is None or controlling_canary(live) is not None:
                return None
            return reverted_service(live, canary=canary, label=self._label,
                                    label_value=self._label_value, ports=self._ports)

        with _router_errors():
            applied = await self._store.apply(
                kube.SERVICES, namespace=canary.namespace, name=name, build=revert)
        if applied.changed:
            log.info("service_restored", service=name,
                     selector=((applied.obj or {}).get("spec") or {}).get("selector"))

    async def _apply(self, canary: Canary, *, role: Role) -> kube.OperationResult:
        desired = self.build(canary, role=role)

        def service(current: dict[str, Any] | None) -> dict[str, Any]:
            if current is None:
                return copy.deepcopy(desired)
            return updated_service(current, desired, canary=canary)

        name = desired["metadata"]["name"]
        with _router_errors():
            applied = await self._store.apply(
                kube.SERVICES, namespace=canary.namespace, name=name, build=service)
        if applied.result is kube.OperationResult.CREATED:
            log.info("service_created", service=name, role=role)
        elif applied.result is kube.OperationResult.UPDATED:
            log.info("service_updated", service=name, role=role)
        return applied.result


@contextlib.contextmanager
def _router_errors() -> Iterator[None]:
    """An API failure raised as a RouterError (the store's message already names the Service
    and what failed), the KubeError chained; WriteFencedError passes through."""
    try:
        yield
    except kube.WriteFencedError:
        raise
    except kube.KubeError as exc:
        raise RouterError(str(exc)) from exc


class KubernetesNoopRouter:
    """The KubernetesRouter of ``Service``-kind targets (Flagger's ``KubernetesNoopRouter``).

    A Service target is copied into ``-primary`` and ``-canary`` by its target controller, and
    Knative routes by revision, so there are no Services to generate here.
    """

    async def initialize(self, canary: Canary) -> None:
        """Nothing: the target controller creates the Services."""

    async def reconcile(self, canary: Canary) -> None:
        """Nothing: the target controller updates the Services."""

    async def finalize(self, canary: Canary) -> None:
        """Nothing: there is no apex Service of ours to revert."""


def new_kubernetes_router(
        *,
        kind: str,
        store: kube.ObjectStore,
        label: str,
        label_value: str,
        ports: Mapping[str, int],
) -> KubernetesRouter:
    """The KubernetesRouter for a target kind (Flagger's ``factory.KubernetesRouter``).

    ``Service`` targets (plain or Knative) get the no-op router; Deployments and DaemonSets get
    the :class:`KubernetesDefaultRouter`.
    """
    if kind == "Service":
        return KubernetesNoopRouter()
    return KubernetesDefaultRouter(store=store, label=label, label_value=label_value,
                                   ports=ports)


_: type[KubernetesRouter] = KubernetesDefaultRouter
_noop: type[KubernetesRouter] = KubernetesNoopRouter
