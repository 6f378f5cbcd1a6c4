"""A stand-in for Keptn's metrics operator: KeptnMetric values and Analysis verdicts, nothing else.

No Keptn runs on the local control plane, but the ``keptn`` metrics provider reads what Keptn's
metrics operator writes (``metrics.keptn.sh/v1beta1``, CRDs in ``e2e/crds/keptn.yaml``):

* a KeptnMetric's ``status.value``, which the operator refreshes from its metrics provider
  every ``spec.fetchIntervalSeconds``: :meth:`KeptnStandIn.set_metric` creates the KeptnMetric
  (if missing) and writes ``status`` through the status subresource, as the operator does;
* an Analysis's verdict: the operator evaluates the AnalysisDefinition the Analysis names over
  its timeframe, then writes ``status: {state: Completed, pass, warning, raw, timeframe}``.
  Here the verdict is the test's: :attr:`KeptnStandIn.verdicts` maps an AnalysisDefinition name
  to ``True`` (pass), ``False`` (fail) or ``None`` (left ``Progressing``, never completed). An
  Analysis naming a definition not in the map is left alone, as the operator leaves one whose
  definition does not exist. ``Progressing`` is written first, and ``Completed`` after
  :attr:`KeptnStandIn.delay` seconds, so a reader sees both states as it would with Keptn.

Every Analysis seen is kept in :attr:`KeptnStandIn.created` (as created) and every deletion in
:attr:`KeptnStandIn.deleted`, so a test can check what was asked and that it was cleaned up.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any, Final

from flaggerpy import kube

__all__ = ["ANALYSES", "KEPTN_METRICS", "KeptnStandIn"]

log = logging.getLogger(__name__)

Json = dict[str, Any]

GROUP: Final = "metrics.keptn.sh"
KEPTN_METRICS: Final = kube.Resource(GROUP, "v1beta1", "keptnmetrics", "KeptnMetric")
ANALYSES: Final = kube.Resource(GROUP, "v1beta1", "analyses", "Analysis")


class KeptnStandIn:
    """Watches Analyses (in ``namespaces``, or everywhere) and completes them as Keptn would.

    ``async with KeptnStandIn(client, namespaces=[...]) as keptn:`` or ``start()`` /
    ``aclose()``.
    """

    def __init__(self, client: kube.KubeClient, *, namespaces: Collection[str] | None = None,
                 delay: float = 0.5) -> None:
        self._client = client
        self._namespaces = set(namespaces) if namespaces is not None else None
        self.delay = delay
        """Seconds between ``Progressing`` and ``Completed``."""
        self.verdicts: dict[str, bool | None] = {}
        """AnalysisDefinition name -> pass (True), fail (False), never completed (None)."""
        self.created: list[Json] = []
        self.deleted: list[str] = []
        """``<namespace>/<name>`` of each Analysis deleted, in order."""
        self._handled: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()

    async def __aenter__(self) -> KeptnStandIn:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> KeptnStandIn:
        """Starts watching; returns once the watch is open."""
        self._task = asyncio.create_task(self._run(), name="keptn stand-in")
        started = asyncio.create_task(self._started.wait())
        done, _ = await asyncio.wait({self._task, started}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            started.cancel()
            self._task.result()  # raises what stopped it
        return self

    async def aclose(self) -> None:
        for task in [*self._tasks, *([self._task] if self._task else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- KeptnMetric ----------------------------------------------------------------------------

    async def set_metric(self, namespace: str, name: str, value: str | None, *,
                         provider: str = "prometheus", query: str = "vector(1)") -> None:
        """Creates the KeptnMetric if missing and writes its status (``value: None``: none)."""
        body: Json = {
            "apiVersion": f"{GROUP}/v1beta1", "kind": "KeptnMetric",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"provider": {"name": provider}, "query": query, "fetchIntervalSeconds": 5},
        }
        with contextlib.suppress(kube.AlreadyExistsError):
            await self._client.create(KEPTN_METRICS, body, namespace=namespace)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status: Json | None = None
        if value is not None:
            status = {"value": value, "lastUpdated": now,
                      "rawValue": _base64(json.dumps({"value": value}))}
        await self._client.patch_status(KEPTN_METRICS, name, {"status": status},
                                        namespace=namespace)

    # -- Analyses -------------------------------------------------------------------------------

    async def _run(self) -> None:
        answer = await self._client.list(ANALYSES)
        for analysis in answer.items:
            self._handle(analysis)
        version = answer.resource_version
        self._started.set()
        while True:
            try:
                async with contextlib.aclosing(self._client.watch(
                        ANALYSES, resource_version=version, timeout_seconds=240)) as events:
                    async for event in events:
                        version = event.resource_version or version
                        if event.type == kube.EventType.ADDED:
                            self._handle(event.object)
                        elif event.type == kube.EventType.DELETED:
                            metadata = event.object.get("metadata") or {}
                            self.deleted.append(f"{metadata.get('namespace')}/"
                                                f"{metadata.get('name')}")
            except kube.GoneError:
                answer = await self._client.list(ANALYSES)
                for analysis in answer.items:
                    self._handle(analysis)
                version = answer.resource_version
            except kube.TransportError:
                await asyncio.sleep(0.5)

    def _handle(self, analysis: Json) -> None:
        metadata = analysis.get("metadata") or {}
        namespace, name = str(metadata.get("namespace")), str(metadata.get("name"))
        if self._namespaces is not None and namespace not in self._namespaces:
            return
        if (namespace, name) in self._handled or metadata.get("deletionTimestamp"):
            return
        self._handled.add((namespace, name))
        self.created.append(analysis)
        task = asyncio.create_task(self._complete(namespace, name, analysis))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _complete(self, namespace: str, name: str, analysis: Json) -> None:
        spec = analysis.get("spec") or {}
        definition = str((spec.get("analysisDefinition") or {}).get("name"))
        if definition not in self.verdicts:
            return
        timeframe = spec.get("timeframe") or {}
        try:
            await self._client.patch_status(ANALYSES, name, {"status": {
                "state": "Progressing", "timeframe": timeframe}}, namespace=namespace)
            await asyncio.sleep(self.delay)
            verdict = self.verdicts.get(definition)
            if verdict is None:
                return
            await self._client.patch_status(ANALYSES, name, {"status": {
                "state": "Completed", "pass": verdict, "warning": False,
                "timeframe": timeframe,
                "raw": json.dumps({"totalScore": 1.0 if verdict else 0.0,
                                   "maximumScore": 1.0, "pass": verdict})}},
                namespace=namespace)
        except kube.NotFoundError:
            pass  # deleted meanwhile: its reader gave up
        except kube.KubeError as exc:
            log.warning("keptn stand-in: %s/%s: %s", namespace, name, exc)


def _base64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
