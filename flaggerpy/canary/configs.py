"""Config tracking: the ConfigMaps and Secrets a target uses, their checksums and primary copies.

Flagger's ``config_tracker.go``. A target's pod spec names ConfigMaps and Secrets in volumes
(``configMap``, ``secret``, ``projected`` sources) and in its containers' and init containers'
``env[].valueFrom`` and ``envFrom``. Each one is *tracked*: its ``data`` checksum goes into
``status.trackedConfigs`` (so a change to it alone starts a canary run, like a new image), and
the primary gets a copy named ``<name>-primary`` that changes only at promotion -- otherwise the
primary's pods would pick up the canary's configuration the moment it is edited.

Not tracked, and so shared as-is by primary and canary: Secrets of other types than Opaque,
basic-auth, ssh-auth and tls (registry credentials belong to service accounts), objects
annotated ``flagger.app/config-tracking: disabled`` (any value starting with ``disable``), and
everything when ``-enable-config-tracking=false``. A reference marked ``optional: true`` to an
object that does not exist is skipped; any other missing reference is an error.

A ``-primary`` copy can be shared by several Canaries whose targets use the same ConfigMap: its
ownerReferences keep every such Canary, the one that wrote it last as the controller, so the
copy is garbage-collected only with the last of them.

Reads and writes go through the object store: sources come from the ConfigMap and Secret
caches, and a copy is written only when it differs from the stored one, so an unchanged copy
costs no request.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from flaggerpy import kube
from flaggerpy.canary import hashing, workloads
from flaggerpy.kube.objects import merge_owned
from flaggerpy.models import Canary
from flaggerpy.routing import canary_owner
from flaggerpy.settings import Settings

log = structlog.get_logger(__name__)

JsonObject = dict[str, Any]

CONFIGMAP = "configmap"
SECRET = "secret"

CONFIG_TRACKING_ANNOTATION = "flagger.app/config-tracking"
"""Set to ``disabled`` on a ConfigMap or Secret to share it between primary and canary."""

TRACKED_SECRET_TYPES = frozenset({
    "Opaque",
    "kubernetes.io/basic-auth",
    "kubernetes.io/ssh-auth",
    "kubernetes.io/tls",
})
"""Secret types that are tracked and copied; others (docker config, tokens) are shared."""

_RESOURCES = {CONFIGMAP: kube.CONFIGMAPS, SECRET: kube.SECRETS}


class MissingConfigError(workloads.WorkloadError):
    """A ConfigMap or Secret the target requires (not ``optional``) does not exist."""


@dataclass(frozen=True, slots=True)
class ConfigRef:
    """One tracked ConfigMap or Secret and the checksum of its data."""

    kind: str
    """``configmap`` or ``secret``."""
    name: str
    checksum: str

    @property
    def key(self) -> str:
        """Its key in ``status.trackedConfigs``: ``configmap/<name>`` or ``secret/<name>``."""
        return config_key(self.kind, self.name)


def config_key(kind: str, name: str) -> str:
    """``<kind>/<name>``, the key of ``status.trackedConfigs`` and of every map here."""
    return f"{kind}/{name}"


# ---------------------------------------------------------------------------------------------
# Pure: scanning, checksums, renaming, copies


def _containers(pod_spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [*(pod_spec.get("containers") or ()), *(pod_spec.get("initContainers") or ())]


def _volume_refs(volume: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any], str]]:
    """(kind, the reference object, the key holding its name) for each config in a volume."""
    refs: list[tuple[str, Mapping[str, Any], str]] = []
    if volume.get("configMap"):
        refs.append((CONFIGMAP, volume["configMap"], "name"))
    if volume.get("secret"):
        refs.append((SECRET, volume["secret"], "secretName"))
    for source in (volume.get("projected") or {}).get("sources") or ():
        if source.get("configMap"):
            refs.append((CONFIGMAP, source["configMap"], "name"))
        if source.get("secret"):
            refs.append((SECRET, source["secret"], "name"))
    return refs


def _container_refs(container: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any], str]]:
    refs: list[tuple[str, Mapping[str, Any], str]] = []
    for env in container.get("env") or ():
        value_from = env.get("valueFrom") or {}
        if value_from.get("configMapKeyRef"):
            refs.append((CONFIGMAP, value_from["configMapKeyRef"], "name"))
        elif value_from.get("secretKeyRef"):
            refs.append((SECRET, value_from["secretKeyRef"], "name"))
    for env_from in container.get("envFrom") or ():
        if env_from.get("configMapRef"):
            refs.append((CONFIGMAP, env_from["configMapRef"], "name"))
        elif env_from.get("secretRef"):
            refs.append((SECRET, env_from["secretRef"], "name"))
    return refs


def _all_refs(pod_spec: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any], str]]:
    refs = [ref for volume in pod_spec.get("volumes") or () for ref in _volume_refs(volume)]
    return refs + [ref for c in _containers(pod_spec) for ref in _container_refs(c)]


def referenced_configs(pod_spec: Mapping[str, Any]) -> dict[str, bool]:
    """Every ConfigMap and Secret the pod spec uses: ``<kind>/<name>`` -> required.

    A reference is required unless it says ``optional: true``; an object referenced several
    times is required if any one reference requires it (the pod cannot start without it).
    """
    found: dict[str, bool] = {}
    for kind, ref, name_key in _all_refs(pod_spec):
        name = ref.get(name_key)
        if not name:
            continue
        key = config_key(kind, str(name))
        found[key] = found.get(key, False) or ref.get("optional") is not True
    return found


def tracking_disabled(annotations: Mapping[str, str] | None) -> bool:
    """Whether ``flagger.app/config-tracking`` opts the object out (value ``disable...``)."""
    return str((annotations or {}).get(CONFIG_TRACKING_ANNOTATION, "")).startswith("disable")


def config_ref(obj: Mapping[str, Any], kind: str) -> ConfigRef | None:
    """The tracked reference to a ConfigMap or Secret, or None when it is not tracked."""
    meta = obj.get("metadata") or {}
    if kind == SECRET and obj.get("type", "Opaque") not in TRACKED_SECRET_TYPES:
        return None
    if tracking_disabled(meta.get("annotations")):
        return None
    return ConfigRef(kind=kind, name=str(meta.get("name")),
                     checksum=hashing.config_checksum(obj.get("data") or None))


def rename_tracked(pod_spec: Mapping[str, Any], tracked: Collection[str]) -> JsonObject:
    """A copy of ``pod_spec`` whose references to tracked configs name their ``-primary`` copies.

    ``tracked`` holds ``<kind>/<name>`` keys; references to anything else are left alone.
    """
    spec: JsonObject = copy.deepcopy(dict(pod_spec))
    for kind, ref, name_key in _all_refs(spec):
        name = ref.get(name_key)
        if name and config_key(kind, str(name)) in tracked:
            ref[name_key] = workloads.primary_name(str(name))  # type: ignore[index]
    return spec


def merge_owner_references(
        current: Sequence[Mapping[str, Any]] | None, ours: Mapping[str, Any],
) -> list[JsonObject]:
    """``current`` with ``ours`` as the controller and every other owner kept, not controlling.

    At most one ownerReference may be the controller. Other Canaries sharing the copy keep
    their reference, so garbage collection waits for the last one.
    """
    result: list[JsonObject] = []
    placed = False
    for ref in current or ():
        if ref.get("uid") == ours.get("uid"):
            result.append(dict(ours))
            placed = True
        else:
            result.append({**ref, "controller": False})
    if not placed:
        result.append(dict(ours))
    return result


def build_primary_config(
        source: Mapping[str, Any], *, kind: str, include_label_prefix: Sequence[str],
) -> JsonObject:
    """The ``-primary`` copy of a ConfigMap or Secret: same data (and type), filtered labels.

    ``data`` and ``binaryData`` are always present, None when absent, so a key dropped from the
    source is dropped from the copy as well. Owner references are set by the caller, which
    must merge them with those already on the copy.
    """
    meta = source.get("metadata") or {}
    body: JsonObject = {
        "apiVersion": "v1",
        "kind": "ConfigMap" if kind == CONFIGMAP else "Secret",
        "metadata": {
            "name": workloads.primary_name(str(meta.get("name"))),
            "namespace": meta.get("namespace"),
            "labels": workloads.include_by_prefix(meta.get("labels"), include_label_prefix),
        },
        "data": copy.deepcopy(source.get("data")) or None,
        "binaryData": copy.deepcopy(source.get("binaryData")) or None,
    }
    if kind == SECRET:
        body["type"] = source.get("type", "Opaque")
    return body


def primary_config_copy(
        current: Mapping[str, Any] | None, desired: Mapping[str, Any], *,
        owner: Mapping[str, Any],
) -> JsonObject:
    """The ``-primary`` copy to store: ``desired`` merged into ``current`` (the fields we own;
    see :func:`flaggerpy.kube.objects.merge_owned`), or ``desired`` itself when there is none,
    with ``owner`` merged into its owner references (:func:`merge_owner_references`). Pure.
    """
    copied = merge_owned(current, desired) if current is not None else copy.deepcopy(dict(desired))
    meta = copied.setdefault("metadata", {})
    meta["ownerReferences"] = merge_owner_references(meta.get("ownerReferences"), owner)
    return copied


# ---------------------------------------------------------------------------------------------
# Async: reading and writing through the object store


class ConfigTracker:
    """Tracks a target's ConfigMaps and Secrets through the object store.

    With ``-enable-config-tracking=false`` it tracks nothing: no checksums, no copies, and the
    primary uses the same ConfigMaps and Secrets as the target (Flagger's ``NopTracker``).
    """

    def __init__(
            self,
            *,
            store: kube.ObjectStore,
            settings: Settings,
    ) -> None:
        self._store = store
        self._settings = settings

    @property
    def enabled(self) -> bool:
        """``-enable-config-tracking``."""
        return bool(self._settings.controller.enable_config_tracking)

    async def _source(self, canary: Canary, kind: str, name: str) -> Mapping[str, Any] | None:
        return await self._store.get(_RESOURCES[kind], namespace=canary.namespace, name=name)

    async def target_configs(
            self, canary: Canary, pod_spec: Mapping[str, Any],
    ) -> dict[str, ConfigRef]:
        """The tracked configs of a pod spec, by ``<kind>/<name>``, read from the store.

        Raises :class:`MissingConfigError` for a required reference to a missing object.
        """
        if not self.enabled:
            return {}
        found: dict[str, ConfigRef] = {}
        for key, required in sorted(referenced_configs(pod_spec).items()):
            kind, name = key.split("/", 1)
            obj = await self._source(canary, kind, name)
            if obj is None:
                message = (f"{kind} {name}.{canary.namespace} get query error: "
                           f"{workloads.not_found(_RESOURCES[kind], name)}")
                if required:
                    raise MissingConfigError(message)
                log.info("optional_config_missing", kind=kind, name=name)
                continue
            ref = config_ref(obj, kind)
            if ref is not None:
                found[ref.key] = ref
        return found

    async def sync_primary_configs(self, canary: Canary, refs: Mapping[str, ConfigRef]) -> None:
        """Makes every ``<name>-primary`` copy equal to its source; writes only what differs."""
        if not refs:
            return
        owner = kube.controller_reference(canary_owner(canary))
        include = tuple(self._settings.controller.include_label_prefix)
        for ref in refs.values():
            source = await self._source(canary, ref.kind, ref.name)
            if source is None:
                raise MissingConfigError(
                    f"{ref.kind} {ref.name}.{canary.namespace} get query error: "
                    f"{workloads.not_found(_RESOURCES[ref.kind], ref.name)}")
            desired = build_primary_config(source, kind=ref.kind, include_label_prefix=include)
            name = desired["metadata"]["name"]
            applied = await self._store.apply(
                _RESOURCES[ref.kind], namespace=canary.namespace, name=name,
                build=functools.partial(primary_config_copy, desired=desired, owner=owner))
            if applied.changed:
                log.info("primary_config_synced", kind=ref.kind, name=name,
                         result=str(applied.result))

    def apply_primary_configs(
            self, pod_spec: Mapping[str, Any], refs: Mapping[str, ConfigRef],
    ) -> JsonObject:
        """A copy of ``pod_spec`` that uses the ``-primary`` copies of the tracked configs."""
        return rename_tracked(pod_spec, refs.keys())
