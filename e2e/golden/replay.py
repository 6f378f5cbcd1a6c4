"""Replays corpus cases against ``flaggerpy controller`` on the local control plane.

As the corpus README says: each case in Flagger's namespace ``<provider-dir>-<case>``; its inputs
created with ``kubectl create -f`` in order, the Canary last once the workload is available; the
controller run with the case's flags; snapshots at ``Initialized`` and at the final phase; the new
revision applied with the case's command; the step states recorded from the watches; the Canary's
Events read at the end.

Speed: the cases of a provider that share flags run at the same time against ONE controller
process watching all namespaces (Flagger ran one process per case), and providers run side by
side, so the whole replay costs about one case's duration. The process runs as a
:class:`ScopedIdentity` that may write only in the case namespaces. A provider whose routing kinds
are cluster-scoped (Kuma's TrafficRoute, one name for every case) runs its cases one after the
other instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.cluster.localcluster import LocalCluster
from e2e.golden.corpus import Case, EventLine
from e2e.golden.identity import ScopedIdentity
from e2e.golden.normalize import CookieNames, normalize, replace_strings, sort_objects
from e2e.golden.providers import GoldenProvider
from e2e.golden.recorder import CORE_KINDS, Recorder, canary_phase, names_namespace
from e2e.golden.steps import distinct_steps
from e2e.knative_standin import KnativeStandIn
from e2e.processes import ControllerProcess
from flaggerpy import kube

__all__ = ["ProviderReplay", "Replayed", "controller_args", "groups", "replay_provider",
           "replay_providers"]

Json = dict[str, Any]

HARNESS_FLAGS = frozenset({"kubeconfig", "namespace", "port", "log-level"})
"""Flagger flags the harness sets itself: ``-kubeconfig`` (the scoped identity's), ``-namespace``
(one process serves every case, so all namespaces; the case's own for a provider with
cluster-scoped routing kinds, which replays one case at a time), ``-port`` (a free one) and
``-log-level`` (debug, for the failure report). Every other flag of ``flagger-args.txt`` is
passed unchanged: flaggerpy reads Flagger's flags."""

INITIALIZED_WITHIN = 120.0
FINAL_WITHIN = 300.0
START_WITHIN = 120.0
"""A controller process's start, until ready (its caches synced)."""
CONCURRENT_STARTS = 3
"""Controller processes starting at once: a start costs a few CPU-seconds (imports, lists), and
twenty at once on two cores took longer than any single start may."""
NOT_STARTED = "not replayed: the replay stopped before this case started"
REPLAY_WITHIN = 1500.0
"""The whole replay, every provider: longer than any case's own bounds add up to, shorter than
the test's timeout, so a stuck replay still reports every case (and stops its processes)."""
WORKLOAD_KINDS = ("Deployment", "DaemonSet")


@dataclass
class Replayed:
    """What the replay of one case produced, normalized like the corpus."""

    case: Case
    snapshots: dict[str, list[Json]] = field(default_factory=dict)
    steps: list[Json] = field(default_factory=list)
    events: list[EventLine] = field(default_factory=list)
    error: str = ""
    """Why the replay stopped early (a phase never reached); what was captured is still compared."""
    log: str = ""
    """The controller's log lines about this case, when something failed."""
    seconds: float = 0.0


@dataclass
class ProviderReplay:
    provider: GoldenProvider
    cases: dict[str, Replayed]
    seconds: float
    groups: list[list[str]]

    @classmethod
    def planned(cls, provider: GoldenProvider, cases: Sequence[Case]) -> ProviderReplay:
        """Every case waiting for its turn (:data:`NOT_STARTED`), in :func:`groups`."""
        return cls(provider, {case.id: Replayed(case, error=NOT_STARTED) for case in cases},
                   0.0, [[c.id for c in group] for group in groups(provider, cases)])


def controller_args(case: Case) -> tuple[str, ...]:
    """``flagger-args.txt`` as ``flaggerpy controller`` flags, without :data:`HARNESS_FLAGS`."""
    return tuple(arg for arg in case.flagger_args
                 if arg.lstrip("-").partition("=")[0] not in HARNESS_FLAGS)


def groups(provider: GoldenProvider, cases: Sequence[Case]) -> list[list[Case]]:
    """Cases that can share one controller process: same flags (and, for cluster-scoped routing
    kinds, one case per group)."""
    if _shares_cluster_objects(provider):
        return [[case] for case in cases]
    by_args: dict[tuple[str, ...], list[Case]] = {}
    for case in cases:
        by_args.setdefault(controller_args(case), []).append(case)
    return list(by_args.values())


async def replay_providers(
        cluster: LocalCluster, work: Sequence[tuple[GoldenProvider, Sequence[Case]]], *,
        within: float = REPLAY_WITHIN,
) -> dict[str, ProviderReplay]:
    """Several providers at once (one controller process each, or more for several flag sets):
    the suite then costs about one case's duration, however many routers it covers.

    Every case gets a result, whatever happens: one still running after ``within`` seconds, or
    whose group failed to start, says so in its error, with what it captured so far.
    """
    starting = asyncio.Semaphore(CONCURRENT_STARTS)
    replays = {p.directory: ProviderReplay.planned(p, cases) for p, cases in work}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            async with asyncio.TaskGroup() as group:  # waits for every task, even cancelled
                for p, cases in work:
                    group.create_task(_replay_into(cluster, replays[p.directory], cases,
                                                   starting=starting))
    return replays


async def replay_provider(cluster: LocalCluster, provider: GoldenProvider,
                          cases: Sequence[Case]) -> ProviderReplay:
    """Replays ``cases`` (concurrently where :func:`groups` allows) and returns every result."""
    return (await replay_providers(cluster, [(provider, cases)]))[provider.directory]


def _shares_cluster_objects(provider: GoldenProvider) -> bool:
    """Cluster-scoped routing kinds: every case writes the same names, so one at a time."""
    return any(not r.namespaced for r in provider.routing)


async def _replay_into(cluster: LocalCluster, replay: ProviderReplay, cases: Sequence[Case], *,
                       starting: asyncio.Semaphore) -> None:
    started = time.monotonic()
    client = await kube.KubeClient.connect(kubeconfig=cluster.kubeconfig,
                                           user_agent="flaggerpy-golden-recorder")

    async def run(group: Sequence[Case], workdir: Path) -> None:
        try:
            await _replay_group(cluster, client, replay, group, workdir, starting=starting)
        except Exception as exc:  # its cases say why; the other groups go on
            for case in group:
                result = replay.cases[case.id]
                result.error = (f"{type(exc).__name__}: {exc}" if result.error == NOT_STARTED
                                else result.error)
            print(f"golden replay: group {[c.id for c in group]} failed: {exc!r}")

    try:
        with tempfile.TemporaryDirectory(prefix="flaggerpy-golden-") as workdir:
            if _shares_cluster_objects(replay.provider):
                for group in groups(replay.provider, cases):
                    await run(group, Path(workdir))
            else:
                async with asyncio.TaskGroup() as tasks:
                    for group in groups(replay.provider, cases):
                        tasks.create_task(run(group, Path(workdir)))
    finally:
        replay.seconds = time.monotonic() - started
        await client.aclose()


async def _replay_group(cluster: LocalCluster, client: kube.KubeClient, replay: ProviderReplay,
                        cases: Sequence[Case], workdir: Path, *,
                        starting: asyncio.Semaphore) -> None:
    provider = replay.provider
    results = replay.cases
    namespaces = [case.namespace for case in cases]
    await asyncio.gather(*(_fresh_namespace(cluster, case) for case in cases))
    identity = ScopedIdentity(cluster, namespaces=namespaces,
                              cluster_writes=[r for r in provider.routing if not r.namespaced])
    recorder: Recorder | None = None
    controller: ControllerProcess | None = None
    standin: KnativeStandIn | None = None
    try:
        kubeconfig = await identity.create(workdir)
        recorder = await Recorder(client, [*CORE_KINDS, *provider.routing], namespaces).start()
        if provider.directory == "knative":  # the capture's stand-in for Knative Serving
            standin = await KnativeStandIn(client, namespaces=namespaces).start()
        # Only the group's namespaces, as Flagger's one process per case watched only its own:
        # a process serving every namespace would also reconcile the other groups' Canaries
        # (and be refused every write there), and for cluster-scoped routing kinds it would
        # fight over the shared names.
        args = [*controller_args(cases[0]), f"-threadiness={len(cases)}",
                f"-namespace={','.join(namespaces)}"]
        controller = ControllerProcess(
            kubeconfig=kubeconfig, name=f"golden-{provider.directory}", args=args)
        async with starting:  # a process's start costs seconds of CPU: a few at a time
            controller.start()
            await asyncio.to_thread(controller.wait_ready, timeout=START_WITHIN)
        for case in cases:
            results[case.id].error = ""
        async with asyncio.TaskGroup() as tasks:
            for case in cases:
                tasks.create_task(_replay_case(cluster, client, recorder, provider, case,
                                               results[case.id]))
    finally:
        if controller is not None:
            for case in cases:
                if results[case.id].error:
                    results[case.id].log = _log_about(controller, case.namespace)
            controller.stop()
        if standin is not None:
            await standin.aclose()
        if recorder is not None:
            await _delete_cluster_scoped(cluster, provider, recorder, namespaces)
            await recorder.aclose()
        await asyncio.gather(*(_drop_namespace(cluster, ns) for ns in namespaces))
        await identity.delete()


async def _replay_case(cluster: LocalCluster, client: kube.KubeClient, recorder: Recorder,
                       provider: GoldenProvider, case: Case, out: Replayed) -> None:
    """Fills ``out`` as the case goes, so a replay stopped by its deadline keeps what it saw."""
    started = time.monotonic()
    namespace = case.namespace
    try:
        objects = [o for o in case.inputs if o.get("kind") not in ("Namespace", "Canary")]
        canaries = [o for o in case.inputs if o.get("kind") == "Canary"]
        await _create(cluster, objects)
        for obj in objects:
            if obj.get("kind") in WORKLOAD_KINDS:
                await cluster.akubectl("rollout", "status", "-n", namespace, "--timeout=90s",
                                       f"{obj['kind'].lower()}/{obj['metadata']['name']}")
        if any(_is_knative_service(obj) for obj in objects):
            # The capture created the Canary once the workload was available: for a Knative
            # Service, once Serving (here the stand-in) named its first revision.
            await recorder.wait_for(namespace, _knative_revision_named, within=60,
                                    what="Knative Service with its latest created revision")
        await _create(cluster, canaries)
        await _wait_phase(recorder, namespace, {"Initialized"}, within=INITIALIZED_WITHIN)
        await recorder.settle(namespace)
        out.snapshots["initialized"], _ = await snapshot(client, provider, namespace)

        if case.new_revision is None:  # Flagger crashed before Initialized: nothing follows,
            # so what we reach instead is the final state (skipper's crash case).
            out.snapshots[case.final_name] = out.snapshots["initialized"]
            return
        written = await cluster.akubectl(*case.new_revision, "-n", namespace, "-o", "json")
        start = int(json.loads(written.stdout)["metadata"]["resourceVersion"])
        try:
            phase = await _wait_phase(recorder, namespace, {"Succeeded", "Failed"},
                                      within=FINAL_WITHIN)
        finally:  # a run that never finishes is still compared as far as it went
            await recorder.settle(namespace)
            await recorder.catch_up(namespace)
            final, end = await snapshot(client, provider, namespace)
            out.snapshots[case.final_name] = final
            out.steps = distinct_steps(recorder.changes(namespace), start=start, end=end,
                                       provider=provider)
        if case.after_success is not None and phase == "Succeeded":
            await cluster.akubectl(*case.after_success, "-n", namespace, "--timeout=90s")
            await recorder.wait_for(namespace, lambda objs: canary_phase(objs) is None,
                                    within=90, what="Canary deletion")
            await recorder.settle(namespace)
            out.snapshots["deleted"], _ = await snapshot(client, provider, namespace)
    except Exception as exc:  # reported with the case; the other cases go on
        out.error = f"{type(exc).__name__}: {exc}"
    except asyncio.CancelledError:  # the replay's deadline: the case says so, the cancel goes on
        out.error = out.error or f"stopped by the replay's deadline after " \
                                 f"{time.monotonic() - started:.0f}s"
        raise
    finally:
        with contextlib.suppress(Exception):
            out.events = await events(client, namespace)
        _replace_cookies(out)
        out.seconds = time.monotonic() - started


def _is_knative_service(obj: Json) -> bool:
    return (obj.get("kind") == "Service"
            and str(obj.get("apiVersion", "")).startswith("serving.knative.dev/"))


def _knative_revision_named(objects: list[Json]) -> bool:
    return all((obj.get("status") or {}).get("latestCreatedRevisionName")
               for obj in objects if _is_knative_service(obj)) and any(
        _is_knative_service(obj) for obj in objects)


async def snapshot(client: kube.KubeClient, provider: GoldenProvider,
                   namespace: str) -> tuple[list[Json], int]:
    """The namespace's objects of every snapshot kind, normalized and sorted, and the
    resourceVersion the reads saw (the last write they include)."""
    resources = [*CORE_KINDS, *provider.routing]
    answers = await asyncio.gather(*(
        client.list(r, namespace=namespace if r.namespaced else None) for r in resources))
    objects = [normalize(obj) for r, answer in zip(resources, answers, strict=True)
               for obj in answer.items
               if not (obj.get("kind") == "ConfigMap"
                       and obj["metadata"].get("name") == "kube-root-ca.crt")
               and (r.namespaced or names_namespace(obj, [namespace]))]
    revision = max(int(answer.resource_version or 0) for answer in answers)
    return sort_objects(objects), revision


async def events(client: kube.KubeClient, namespace: str) -> list[EventLine]:
    """The Canary Events of the namespace, one line per emission (``count`` of them)."""
    answer = await client.list(kube.EVENTS, namespace=namespace,
                               field_selector="involvedObject.kind=Canary")

    def when(event: Json) -> str:
        return str(event.get("firstTimestamp") or event.get("eventTime")
                   or event["metadata"].get("creationTimestamp") or "")

    out = []
    for event in sorted(answer.items, key=when):
        line = EventLine(str(event.get("type")), str(event.get("reason")),
                         str(event.get("message")))
        out += [line] * max(1, int(event.get("count") or 1))
    return out


def _replace_cookies(out: Replayed) -> None:
    """Session-affinity cookie values -> ``<random-N>`` across the whole case (README)."""
    spec = next((o.get("spec") or {} for o in out.case.inputs if o.get("kind") == "Canary"), {})
    canary_cookie = str(((spec.get("analysis") or {}).get("sessionAffinity") or {})
                        .get("cookieName") or "")
    names = CookieNames()
    for snap in ("initialized",):
        names.see(_statuses(out.snapshots.get(snap, [])), canary_cookie=canary_cookie)
    for step in out.steps:
        names.see([step.get("canary") or {}], canary_cookie=canary_cookie)
    for snap in (out.case.final_name, "deleted"):
        names.see(_statuses(out.snapshots.get(snap, [])), canary_cookie=canary_cookie)
    replacements = names.replacements
    out.steps = replace_strings(out.steps, replacements)
    out.snapshots = replace_strings(out.snapshots, replacements)


def _statuses(objects: Iterable[Json]) -> list[Json]:
    return [o.get("status") or {} for o in objects if o.get("kind") == "Canary"]


async def _wait_phase(recorder: Recorder, namespace: str, phases: set[str], *,
                      within: float) -> str:
    """Until the Canary's phase is one of ``phases`` (or Failed, which ends any wait)."""
    ends = phases | {"Failed"}
    await recorder.wait_for(namespace, lambda objs: canary_phase(objs) in ends,
                            within=within, what=f"phase {'/'.join(sorted(phases))}")
    phase = canary_phase(recorder.objects(namespace)) or ""
    if phase not in phases:
        canary = next(o for o in recorder.objects(namespace) if o.get("kind") == "Canary")
        conditions = (canary.get("status") or {}).get("conditions") or []
        raise RuntimeError(f"{namespace}: Canary {phase} while waiting for "
                           f"{sorted(phases)}: {[c.get('message') for c in conditions]}")
    return phase


async def _create(cluster: LocalCluster, objects: Sequence[Json]) -> None:
    """``kubectl create -f`` of the objects, in their order."""
    if objects:
        body = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        await cluster.akubectl("create", "-f", "-", input=json.dumps(body))


async def _fresh_namespace(cluster: LocalCluster, case: Case) -> None:
    """The case's namespace, new: one left by an earlier run is removed first."""
    await _drop_namespace(cluster, case.namespace, wait=True)
    [namespace] = [o for o in case.inputs if o.get("kind") == "Namespace"] or [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": case.namespace}}]
    await _create(cluster, [namespace])


async def _drop_namespace(cluster: LocalCluster, namespace: str, *, wait: bool = False) -> None:
    """Deletes a case namespace; Canary finalizers go first, since no controller may be left to
    run them (a revertOnDeletion Canary would hold the namespace forever)."""
    names = await cluster.akubectl("get", "canaries", "-n", namespace, "-o", "name",
                                   check=False)
    for name in names.stdout.split():
        await cluster.akubectl("patch", name, "-n", namespace, "--type=merge",
                               "-p", '{"metadata":{"finalizers":null}}', check=False)
    await cluster.akubectl("delete", "namespace", namespace, "--ignore-not-found",
                           "--wait=false", check=False)
    if wait:  # a namespace controller busy with other tests' namespaces may take minutes
        await cluster.akubectl("wait", "--for=delete", f"namespace/{namespace}",
                               "--timeout=300s", check=False)


async def _delete_cluster_scoped(cluster: LocalCluster, provider: GoldenProvider,
                                 recorder: Recorder, namespaces: Sequence[str]) -> None:
    """Cluster-scoped routing objects the cases made outlive their namespaces: removed here."""
    kinds = {r.kind: r for r in provider.routing if not r.namespaced}
    seen = {(o["kind"], o["metadata"]["name"]) for ns in namespaces
            for o in recorder.objects(ns) if o.get("kind") in kinds}
    for kind, name in sorted(seen):
        resource = kinds[kind]
        await cluster.akubectl("delete", f"{resource.plural}.{resource.group}", name,
                               "--ignore-not-found", check=False)


def _log_about(controller: ControllerProcess, namespace: str, *, lines: int = 40) -> str:
    """The controller's last log lines that name ``namespace`` (JSON lines as text)."""
    about = [line for line in controller.output().splitlines() if namespace in line]
    return "\n".join(about[-lines:])
