"""The Splitmap router: pure builders for the ``<svc>-split`` ConfigMap, and one apply path.

The builders hold the mesh's rules and do no I/O (:func:`build_split`, :func:`read_weights`,
:func:`kept_weights`); :class:`SplitmapRouter` does the I/O, always through the object store
the controller hands it (``ctx.routing_store``): reads come from the controller's informer
cache, our own last write is seen at once, and a write happens only when the built object
differs from the stored one, so a steady analysis tick makes no request at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

from flaggerpy import sdk

SPLIT_SUFFIX: Final = "-split"
"""The ConfigMap of service ``<svc>`` is ``<svc>-split``."""

MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "flaggerpy"}


def split_name(canary: sdk.Canary) -> str:
    """The name of the canary's split ConfigMap."""
    return canary.get_service_names().apex + SPLIT_SUFFIX


def build_split(
        canary: sdk.Canary, weights: sdk.Weights, current: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The split ConfigMap for ``weights``, built over ``current`` (the stored object, or None).

    Pure. What is not ours in ``current`` (labels and annotations others added, the server's
    metadata) is kept, so building the stored split again gives the stored object back.
    """
    names = canary.get_service_names()
    built: dict[str, Any] = dict(current) if current is not None else {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": split_name(canary), "namespace": canary.namespace},
    }
    metadata = dict(built["metadata"])
    metadata["labels"] = {**(metadata.get("labels") or {}), **MANAGED_BY}
    metadata["annotations"] = {**(metadata.get("annotations") or {}), **sdk.TOOLKIT_ANNOTATIONS}
    built["metadata"] = metadata
    built["data"] = {
        "service": names.apex,
        "primary": names.primary,
        "canary": names.canary,
        "primaryWeight": str(weights.primary),
        "canaryWeight": str(weights.canary),
    }
    return built


def read_weights(split: Mapping[str, Any]) -> sdk.Weights:
    """The weights a split ConfigMap carries. Raises RouterError when they are not a split
    (edited by hand to 50/40, or not numbers): the router never guesses."""
    data = split.get("data") or {}
    meta = split.get("metadata") or {}
    try:
        return sdk.Weights(primary=int(data["primaryWeight"]), canary=int(data["canaryWeight"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise sdk.RouterError(f"ConfigMap {meta.get('namespace')}/{meta.get('name')} carries "
                              f"no split: {exc!r}") from exc


def kept_weights(current: Mapping[str, Any] | None) -> sdk.Weights:
    """What a reconcile keeps: the stored split, or all to the primary for a new or broken one.

    ``reconcile`` runs on every tick, in the middle of a run too: it must never reset traffic.
    """
    if current is None:
        return sdk.Weights.all_primary()
    try:
        return read_weights(current)
    except sdk.RouterError:
        return sdk.Weights.all_primary()


class SplitmapRouter:
    """Routes a canary by writing its ``<svc>-split`` ConfigMap.

    The class is its own factory: the controller builds one per canary as
    ``SplitmapRouter(ctx=ProviderContext(...), variant="")``. It keeps no state of its own.
    """

    capabilities: ClassVar[sdk.Capabilities] = sdk.Capabilities(
        ab_matches=False, mirroring=False, session_affinity=False)
    """Splitmap splits by weight and does nothing else: no header or cookie matches, no
    mirroring, no sticky sessions; it routes to the three Services the engine generates."""

    def __init__(self, *, ctx: sdk.ProviderContext, variant: str = "") -> None:
        if variant:
            raise sdk.PluginError(f"the splitmap router takes no variant, got 'splitmap:{variant}'")
        self._store = ctx.routing_store
        self._log = ctx.log
        self._set_owner_refs = ctx.set_owner_refs

    async def reconcile(self, canary: sdk.Canary) -> None:
        """Creates the split ConfigMap (all to the primary), or keeps the one there up to date
        with the weights it carries."""
        await self._apply(canary, lambda current: build_split(
            canary, kept_weights(current), current))

    async def set_routes(self, canary: sdk.Canary, weights: sdk.Weights) -> None:
        """Writes ``weights`` into the split ConfigMap (nothing, if it carries them already)."""
        applied = await self._apply(canary, lambda current: build_split(
            canary, weights, current))
        if applied.changed:
            self._log.info("routes_set", router="splitmap", canary=_flagger_name(canary),
                           primary=weights.primary, canary_weight=weights.canary)

    async def get_routes(self, canary: sdk.Canary) -> sdk.Weights:
        """The split the ConfigMap carries now: the object, not the Canary status, is the truth."""
        split = await self._store.get(sdk.CONFIGMAPS, namespace=canary.namespace,
                                      name=split_name(canary))
        if split is None:
            raise sdk.RouterError(f"ConfigMap {canary.namespace}/{split_name(canary)} not found")
        return read_weights(split)

    async def finalize(self, canary: sdk.Canary) -> None:
        """Reverts the mesh on deletion (``revertOnDeletion``): without its split ConfigMap,
        Splitmap sends the service's traffic to ``<svc>``, which the engine points back at the
        target's own pods."""
        try:
            deleted = await self._store.delete(sdk.CONFIGMAPS, namespace=canary.namespace,
                                               name=split_name(canary))
        except sdk.WriteFencedError:
            raise
        except sdk.KubeError as exc:
            raise sdk.RouterError(f"ConfigMap {canary.namespace}/{split_name(canary)}: "
                                  f"revert failed: {exc}") from exc
        if deleted:
            self._log.info("split_reverted", router="splitmap", canary=_flagger_name(canary))

    async def _apply(self, canary: sdk.Canary, build: sdk.Build) -> sdk.Applied:
        """The one write path: the store reads, builds, writes on a change, retries a conflict.

        The ConfigMap is the Canary's, so it goes with it (an ownerReference), unless the mesh
        objects live on another API server, where that reference would name nothing.
        """
        owner = sdk.canary_owner(canary) if self._set_owner_refs else None
        try:
            return await self._store.apply(sdk.CONFIGMAPS, namespace=canary.namespace,
                                           name=split_name(canary), build=build, owner=owner)
        except sdk.WriteFencedError:
            raise  # this replica is no longer the leader: not a routing failure
        except sdk.KubeError as exc:  # the message names the object and the operation
            raise sdk.RouterError(str(exc)) from exc


def _flagger_name(canary: sdk.Canary) -> str:
    return f"{canary.name}.{canary.namespace}"


_factory: sdk.RouterFactory = SplitmapRouter
_: type[sdk.Router] = SplitmapRouter
