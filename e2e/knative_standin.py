"""A stand-in for Knative Serving: Revisions and Service status, nothing else.

No Knative Serving runs on the local control plane, but the ``knative`` provider reads what it
writes: ``status.latestCreatedRevisionName`` and ``status.traffic`` of the Knative Service and
the ``Ready`` condition of Revisions. The golden corpus was captured with a small controller in
Knative's place (``reference/golden/_support/knative-fake-controller.md``); this is the same
controller, for the golden replay and the e2e scenarios:

* For each ``serving.knative.dev/v1`` Service it keeps one Revision per distinct
  ``spec.template``, compared after dropping empty values (Flagger's typed round trip adds
  ``metadata: {}``, ``name: ""``, ``resources: {}`` to the template). A new template creates
  the Revision ``<service>-0000N`` (labels ``serving.knative.dev/service``,
  ``.../configuration``, ``.../configurationGeneration: "N"``; ``spec`` = the template's
  ``spec``), then writes its status ``{observedGeneration: 1, conditions: [{type: Ready,
  status: "True"}]}``.
* After every Service change it writes the Service status: ``observedGeneration`` =
  ``metadata.generation``, ``latestCreatedRevisionName`` = ``latestReadyRevisionName`` = the
  newest Revision, ``conditions: [{type: Ready, status: "True"}]``, and ``traffic`` =
  ``spec.traffic`` resolved: ``{latestRevision: true, percent, revisionName: <newest>}`` for
  ``latestRevision: true`` entries, ``{latestRevision: false, percent, revisionName}`` for
  pinned ones, ``[{latestRevision: true, percent: 100, revisionName: <newest>}]`` when
  ``spec.traffic`` is empty.

It writes a status only when it differs from the one the Service has, so its own writes do not
make it write again. Templates seen before it started are learnt from the Revisions it finds.

With ``workloads=True`` (the traffic simulator's scenarios, never the golden replay, whose
snapshots hold every Deployment and Service) it also gives each new Revision what Knative runs
it with: a Deployment ``<revision>-deployment`` of the Revision's containers (one replica,
labelled ``serving.knative.dev/revision: <revision>``) and a Kubernetes Service ``<revision>``
selecting its pods, which the simulator routes a revision's share to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Mapping
from typing import Any, Final

from flaggerpy import kube

__all__ = ["KNATIVE_REVISIONS", "KNATIVE_SERVICES", "KnativeStandIn", "pruned",
           "resolved_traffic", "revision_workload", "service_status"]

log = logging.getLogger(__name__)

Json = dict[str, Any]

GROUP: Final = "serving.knative.dev"
KNATIVE_SERVICES: Final = kube.Resource(GROUP, "v1", "services", "Service")
KNATIVE_REVISIONS: Final = kube.Resource(GROUP, "v1", "revisions", "Revision")
SERVICE_LABEL: Final = f"{GROUP}/service"
CONFIGURATION_LABEL: Final = f"{GROUP}/configuration"
GENERATION_LABEL: Final = f"{GROUP}/configurationGeneration"
REVISION_LABEL: Final = f"{GROUP}/revision"
READY: Final = [{"type": "Ready", "status": "True"}]


def pruned(value: Any) -> Any:
    """``value`` without empty values (``{}``, ``[]``, ``""``, None), recursively."""
    if isinstance(value, Mapping):
        items = {k: pruned(v) for k, v in value.items()}
        return {k: v for k, v in items.items() if v not in ({}, [], "", None)}
    if isinstance(value, list):
        return [pruned(v) for v in value]
    return value


def resolved_traffic(spec_traffic: list[Mapping[str, Any]] | None, newest: str) -> list[Json]:
    """``spec.traffic`` as Knative reports it in ``status.traffic``."""
    if not spec_traffic:
        return [{"latestRevision": True, "percent": 100, "revisionName": newest}]
    out: list[Json] = []
    for entry in spec_traffic:
        latest = entry.get("latestRevision") is True
        resolved: Json = {"latestRevision": latest,
                          "revisionName": newest if latest else entry.get("revisionName")}
        if entry.get("percent") is not None:
            resolved["percent"] = entry["percent"]
        out.append(resolved)
    return out


def service_status(service: Mapping[str, Any], newest: str) -> Json:
    """The status the stand-in gives a Service whose newest Revision is ``newest``."""
    return {
        "observedGeneration": int((service.get("metadata") or {}).get("generation") or 0),
        "latestCreatedRevisionName": newest,
        "latestReadyRevisionName": newest,
        "conditions": READY,
        "traffic": resolved_traffic((service.get("spec") or {}).get("traffic"), newest),
    }


def revision_workload(namespace: str, service: str, revision: str,
                      spec: Mapping[str, Any]) -> list[Json]:
    """The Deployment ``<revision>-deployment`` and the Service ``<revision>`` Knative runs a
    Revision with (containers without a name are called ``user-container``, as Knative's)."""
    labels = {REVISION_LABEL: revision, SERVICE_LABEL: service}
    containers = [{"name": "user-container", **c} if not c.get("name") else dict(c)
                  for c in spec.get("containers") or []]
    ports = [p.get("containerPort") for c in containers for p in c.get("ports") or []]
    target = int(ports[0]) if ports and ports[0] else 8080
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": f"{revision}-deployment", "namespace": namespace,
                      "labels": labels},
         "spec": {"replicas": 1, "selector": {"matchLabels": {REVISION_LABEL: revision}},
                  "template": {"metadata": {"labels": {**labels, "app": revision}},
                               "spec": {"containers": containers}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": revision, "namespace": namespace, "labels": labels},
         "spec": {"selector": {REVISION_LABEL: revision},
                  "ports": [{"name": "http", "port": 80, "targetPort": target}]}},
    ]


class KnativeStandIn:
    """Watches Knative Services (in ``namespaces``, or everywhere) and plays Knative's part.

    ``async with KnativeStandIn(client, namespaces=[...]):`` or ``start()`` / ``aclose()``.
    """

    def __init__(self, client: kube.KubeClient, *,
                 namespaces: Collection[str] | None = None, workloads: bool = False) -> None:
        self._client = client
        self._namespaces = set(namespaces) if namespaces is not None else None
        self._workloads = workloads
        # (namespace, service) -> [(pruned template, revision name)], oldest first
        self._revisions: dict[tuple[str, str], list[tuple[Any, str]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()

    async def __aenter__(self) -> KnativeStandIn:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> KnativeStandIn:
        """Starts watching; returns once the Services there already are have been handled."""
        self._task = asyncio.create_task(self._run(), name="knative stand-in")
        started = asyncio.create_task(self._started.wait())
        done, _ = await asyncio.wait({self._task, started}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            started.cancel()
            self._task.result()  # raises what stopped it
        return self

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- the loop -------------------------------------------------------------------------------

    async def _run(self) -> None:
        answer = await self._client.list(KNATIVE_SERVICES)
        for service in answer.items:
            await self._handle(service)
        self._started.set()
        version = answer.resource_version
        while True:
            try:
                async with contextlib.aclosing(self._client.watch(
                        KNATIVE_SERVICES, resource_version=version,
                        timeout_seconds=240)) as events:
                    async for event in events:
                        version = event.resource_version or version
                        if event.type in (kube.EventType.ADDED, kube.EventType.MODIFIED):
                            await self._handle(event.object)
            except kube.GoneError:
                answer = await self._client.list(KNATIVE_SERVICES)
                for service in answer.items:
                    await self._handle(service)
                version = answer.resource_version
            except kube.TransportError:
                await asyncio.sleep(0.5)

    async def _handle(self, service: Json) -> None:
        metadata = service.get("metadata") or {}
        namespace, name = str(metadata.get("namespace")), str(metadata.get("name"))
        if self._namespaces is not None and namespace not in self._namespaces:
            return
        if metadata.get("deletionTimestamp"):
            return
        try:
            newest = await self._revision_for(namespace, name, service)
            status = service_status(service, newest)
            if service.get("status") != status:
                await self._client.patch_status(KNATIVE_SERVICES, name, {"status": status},
                                                namespace=namespace)
        except (kube.NotFoundError, kube.ConflictError):
            pass  # deleted meanwhile, or a newer event follows
        except kube.KubeError as exc:  # reported, and the next event tries again
            log.warning("knative stand-in: %s/%s: %s", namespace, name, exc)

    async def _revision_for(self, namespace: str, name: str, service: Mapping[str, Any]) -> str:
        """The Revision of the Service's template, created (and made Ready) if it is new."""
        known = self._revisions.get((namespace, name))
        if known is None:
            known = await self._existing(namespace, name)
            self._revisions[(namespace, name)] = known
        template = pruned((service.get("spec") or {}).get("template") or {})
        for seen, revision in known:
            if seen == template:
                return revision
        number = len(known) + 1
        revision = f"{name}-{number:05d}"
        body: Json = {
            "apiVersion": f"{GROUP}/v1", "kind": "Revision",
            "metadata": {"name": revision, "namespace": namespace, "labels": {
                SERVICE_LABEL: name, CONFIGURATION_LABEL: name, GENERATION_LABEL: str(number)}},
            "spec": ((service.get("spec") or {}).get("template") or {}).get("spec") or {},
        }
        with contextlib.suppress(kube.AlreadyExistsError):
            await self._client.create(KNATIVE_REVISIONS, body, namespace=namespace)
        if self._workloads:
            for obj in revision_workload(namespace, name, revision, body["spec"]):
                resource = kube.DEPLOYMENTS if obj["kind"] == "Deployment" else kube.SERVICES
                with contextlib.suppress(kube.AlreadyExistsError):
                    await self._client.create(resource, obj, namespace=namespace)
        await self._client.patch_status(
            KNATIVE_REVISIONS, revision, {"status": {"observedGeneration": 1,
                                                     "conditions": READY}},
            namespace=namespace)
        known.append((template, revision))
        return revision

    async def _existing(self, namespace: str, name: str) -> list[tuple[Any, str]]:
        """The Revisions a Service already has (the stand-in restarted), oldest first."""
        answer = await self._client.list(KNATIVE_REVISIONS, namespace=namespace,
                                         label_selector=f"{SERVICE_LABEL}={name}")
        found = sorted(answer.items, key=lambda r: int(
            ((r.get("metadata") or {}).get("labels") or {}).get(GENERATION_LABEL) or 0))
        return [(pruned({"spec": r.get("spec") or {}}), str(r["metadata"]["name"]))
                for r in found]
