"""The Canary reconciler: the work queue's entry into the per-canary logic.

It reads the Canary through the object store -- the informer cache, with our own last write
on top until the watch delivers it -- never from the API server, checks what the CRD
schema cannot (spec problems, an installed router for the provider), reports a problem on the
Canary itself (``Failed`` phase with a readable message, a Warning Event, a log line) and writes
the first ``Initializing`` status as Flagger's ``syncHandler`` does. The analysis itself is
scheduled by returning ``Result(requeue_after=analysis.interval)``: one scheduling path, the work
queue, instead of Flagger's per-canary tickers.
"""

from __future__ import annotations

from typing import Any

import structlog
from pydantic import ValidationError

from flaggerpy import kube, logs, plugins
from flaggerpy.canary import status as canary_status, verify
from flaggerpy.canary.lifecycle import Lifecycle
from flaggerpy.errors import PluginError
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.models import FINALIZER, Canary, CanaryPhase
from flaggerpy.routing import Capabilities, capabilities_of
from flaggerpy.runtime.controller import Result
from flaggerpy.runtime.events import EventRecorder
from flaggerpy.settings import Settings
from flaggerpy.telemetry import Recorder

log = structlog.get_logger(__name__)


def validation_summary(error: ValidationError) -> str:
    """Pydantic's errors as ``field.path: message`` pairs a user can act on."""
    parts = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"])
        parts.append(f"{path}: {item['msg']}")
    return "; ".join(parts)


class CanaryReconciler:
    """Reconciles one Canary per call, keyed by namespace/name."""

    def __init__(
        self,
        *,
        store: kube.ObjectStore,
        events: EventRecorder,
        settings: Settings,
        telemetry: Recorder,
        lifecycle: Lifecycle | None = None,  # None: validate and initialize only
    ) -> None:
        self._lifecycle = lifecycle
        self._store = store
        self._events = events
        self._settings = settings
        self._telemetry = telemetry
        self._warned: dict[ObjectKey, tuple[object, str]] = {}
        """Per canary, the spec generation and the spec warnings last said for it."""

    async def reconcile(self, key: ObjectKey) -> Result:
        stored = await self._store.get(kube.CANARIES, namespace=key.namespace, name=key.name)
        if stored is None:
            log.debug("canary_gone")
            self._warned.pop(key, None)
            if self._lifecycle is not None:
                self._lifecycle.forget(key)
                await self._lifecycle.orphaned(key)  # CanaryCommands naming no canary
            return Result()
        with logs.bound_canary(key.name, key.namespace):
            return await self._reconcile(dict(stored))

    async def _reconcile(self, obj: dict[str, Any]) -> Result:
        try:
            canary = Canary.model_validate(obj)
        except ValidationError as error:
            message = f"invalid canary spec: {validation_summary(error)}"
            if _being_deleted(obj):
                await self._release(obj, f"Nothing reverted for a Canary with an {message}")
            else:
                await self._fail(obj, message)
            return Result()
        provider = canary.spec.provider or self._settings.mesh.provider
        if _being_deleted(obj):
            # Whatever the spec says (a provider not installed here, a target deleted first):
            # deletion completes, giving back what still exists.
            return await self._finalizer(obj, canary, provider=provider) or Result()
        router_problem: str | None = None
        capabilities: Capabilities | None = None
        try:
            plugin = plugins.routers.get(provider)
            capabilities = capabilities_of(plugin.factory, variant=plugin.variant)
        except PluginError as error:
            router_problem = str(error)
        problems = verify.problems(
            canary,
            provider=provider,
            capabilities=capabilities,
            no_cross_namespace_refs=self._settings.controller.no_cross_namespace_refs,
        )
        if router_problem is not None:
            problems.append(router_problem)
        if problems:
            await self._fail(obj, "invalid canary spec: " + "; ".join(problems))
            return Result()
        deleting = await self._finalizer(obj, canary, provider=provider)
        if deleting is not None:
            return deleting
        await self._warn_spec(obj, canary, verify.unreadable_durations(canary))
        obj = await self._initialize(obj, canary)
        if self._lifecycle is None:
            return Result(requeue_after=canary.get_analysis_interval(
                minimum=self._settings.controller.min_analysis_interval
            ))
        return await self._lifecycle.advance(obj, Canary.model_validate(obj), provider=provider)

    async def _finalizer(
        self, obj: dict[str, Any], canary: Canary, *, provider: str
    ) -> Result | None:
        """revertOnDeletion (spec §2.8); the reconcile's Result when the Canary is being deleted.

        The finalizer goes once the revert is done; while it waits for the restored target the
        Result brings the Canary back after that wait, so no worker is held.
        """
        metadata = obj.get("metadata") or {}
        finalizers = list(metadata.get("finalizers") or [])
        has_finalizer = FINALIZER in finalizers
        if metadata.get("deletionTimestamp"):
            if has_finalizer and self._lifecycle is not None:
                wait = await self._lifecycle.finalize(obj, canary, provider=provider)
                if wait is not None:
                    return Result(requeue_after=wait)
                # finalize may have written the status: guard the removal with the version
                # the store shows now, not the one this reconcile started from.
                now = await self._store.get(kube.CANARIES, namespace=canary.namespace,
                                            name=canary.name)
                if now is None:
                    return Result()
                meta = now.get("metadata") or {}
                await self._set_finalizers(
                    canary, [f for f in meta.get("finalizers") or [] if f != FINALIZER],
                    version=meta.get("resourceVersion"))
            return Result()
        if canary.spec.revert_on_deletion and not has_finalizer:
            await self._set_finalizers(canary, [*finalizers, FINALIZER],
                                       version=metadata.get("resourceVersion"))
        elif not canary.spec.revert_on_deletion and has_finalizer:
            await self._set_finalizers(canary, [f for f in finalizers if f != FINALIZER],
                                       version=metadata.get("resourceVersion"))
        return None

    async def _release(self, obj: dict[str, Any], message: str) -> None:
        """Lets a Canary that cannot be read go: a Warning Event, then our finalizer removed."""
        metadata = obj.get("metadata") or {}
        finalizers = list(metadata.get("finalizers") or [])
        if FINALIZER not in finalizers:
            return
        if self._lifecycle is not None:
            await self._lifecycle.warn(obj, message)
        else:
            await self._events.warning(obj, message)
        patch: dict[str, Any] = {"metadata": {
            "finalizers": [f for f in finalizers if f != FINALIZER],
            "resourceVersion": metadata.get("resourceVersion")}}
        await self._store.patch(kube.CANARIES, namespace=metadata.get("namespace", ""),
                                name=metadata.get("name", ""), patch=patch)

    async def _set_finalizers(
        self, canary: Canary, finalizers: list[str], *, version: str | None
    ) -> None:
        """Replaces the finalizer list, guarded by resourceVersion so no one else's is lost."""
        patch: dict[str, Any] = {"metadata": {"finalizers": finalizers}}
        if version:
            patch["metadata"]["resourceVersion"] = version
        await self._store.patch(kube.CANARIES, namespace=canary.namespace, name=canary.name,
                                patch=patch)

    async def _initialize(self, obj: dict[str, Any], canary: Canary) -> dict[str, Any]:
        """Writes ``Initializing`` on first sight, or after a spec problem was fixed."""
        current = obj.get("status") or {}
        never_initialized = not current.get("lastAppliedSpec")
        if current.get("conditions") and not (
            never_initialized and current.get("phase") == CanaryPhase.FAILED
        ):
            return obj
        patch = canary_status.phase_patch(
            phase=CanaryPhase.INITIALIZING, kind=canary.spec.target_ref.kind, current=current
        )
        self._telemetry.set_status(name=canary.spec.target_ref.name, namespace=canary.namespace,
                                   phase=CanaryPhase.INITIALIZING)
        if patch is None:
            return obj
        log.info("canary_initializing")
        return await self._store.patch(
            kube.CANARIES, namespace=canary.namespace, name=canary.name, patch=patch,
            subresource="status",
        )

    async def _warn_spec(self, obj: dict[str, Any], canary: Canary, warnings: list[str]) -> None:
        """Spec warnings (a field read as its default): a Warning Event once per spec change.

        Every reconcile finds them again; only a new generation (the user edited the spec) or
        a different text is worth another Event.
        """
        key = ObjectKey(canary.namespace, canary.name)
        if not warnings:
            self._warned.pop(key, None)
            return
        message = "; ".join(warnings)
        said = ((obj.get("metadata") or {}).get("generation"), message)
        if self._warned.get(key) == said:
            return
        self._warned[key] = said
        if self._lifecycle is not None:
            await self._lifecycle.warn(obj, message)  # logged there, as every Event
        else:
            log.warning("canary_spec_warning", reason=message)
            await self._events.warning(obj, message)

    async def _fail(self, obj: dict[str, Any], message: str) -> None:
        """Makes a spec problem visible: status, Event and log; the key is not retried."""
        metadata = obj.get("metadata") or {}
        name, namespace = metadata.get("name", ""), metadata.get("namespace", "")
        kind = ((obj.get("spec") or {}).get("targetRef") or {}).get("kind") or "Deployment"
        log.error("canary_invalid", reason=message)
        patch = canary_status.phase_patch(
            phase=CanaryPhase.FAILED, kind=kind, current=obj.get("status"), message=message
        )
        if patch is not None:
            await self._store.patch(kube.CANARIES, namespace=namespace, name=name, patch=patch,
                                    subresource="status")
            if self._lifecycle is not None:
                await self._lifecycle.warn(obj, message)
            else:
                await self._events.warning(obj, message)
        self._telemetry.set_status(name=name, namespace=namespace, phase=CanaryPhase.FAILED)


def _being_deleted(obj: dict[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))
