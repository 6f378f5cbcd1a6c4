"""The step state of the corpus README ("Steps"), and the sequence of distinct step states.

A step state is what a reader of the routing cares about: the provider's routing objects plus the
core Services (normalized), the Canary's phase / weight / iterations / failed checks (and cookie
fields when present), and per workload its replicas, images, DaemonSet node selector or HPA bounds.
Each API write that changes it is one step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from e2e.golden.normalize import CookieNames, label, normalize, sort_objects
from e2e.golden.providers import GoldenProvider

__all__ = ["Change", "StepState", "distinct_steps", "step_state"]

Json = dict[str, Any]
StepState = Json
"""``{"objects": [...], "canary": {...}, "workloads": {...}}``, the corpus's ``steps/NN.yaml``
without ``step`` and ``changed``."""

_CANARY_FIELDS = ("phase", "canaryWeight", "iterations", "failedChecks", *CookieNames.FIELDS)
_COOKIE_FIELDS = set(CookieNames.FIELDS)


@dataclass(frozen=True, slots=True)
class Change:
    """One object version seen on a watch; ``obj`` None when it was deleted."""

    revision: int
    """The write's resourceVersion: one etcd, so the global order of the writes (the corpus
    orders its recording the same way)."""
    key: tuple[str, str, str, str]
    obj: Json | None


def _in_step_objects(obj: Mapping[str, Any], provider: GoldenProvider) -> bool:
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    if kind == "Service" and api_version == "v1":
        return True
    return any(r.kind == kind and r.api_version == api_version and r.kind not in
               provider.not_in_steps for r in provider.routing)


def _images(obj: Mapping[str, Any]) -> list[str]:
    pod = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    return [str(c.get("image")) for c in pod.get("containers") or ()]


def step_state(objects: Iterable[Mapping[str, Any]], provider: GoldenProvider) -> StepState:
    """The step state of one namespace's objects (raw or normalized)."""
    routing: list[Json] = []
    canary: Json = {}
    workloads: Json = {}
    for obj in objects:
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        name = (obj.get("metadata") or {}).get("name")
        spec = obj.get("spec") or {}
        if _in_step_objects(obj, provider):
            routing.append(normalize(obj))
        elif kind == "Canary" and str(api_version).startswith("flagger.app/"):
            status = obj.get("status") or {}
            canary = {f: status.get(f) for f in _CANARY_FIELDS
                      if f not in _COOKIE_FIELDS or status.get(f)}
        elif kind == "Deployment" and api_version == "apps/v1":
            workloads[f"Deployment/{name}"] = {
                "replicas": spec.get("replicas"), "images": _images(obj)}
        elif kind == "DaemonSet" and api_version == "apps/v1":
            pod = (spec.get("template") or {}).get("spec") or {}
            workloads[f"DaemonSet/{name}"] = {
                "images": _images(obj), "nodeSelector": pod.get("nodeSelector") or None}
        elif kind == "HorizontalPodAutoscaler":
            workloads[f"HorizontalPodAutoscaler/{name}"] = {
                "minReplicas": spec.get("minReplicas"), "maxReplicas": spec.get("maxReplicas"),
                "scaleTargetRef": spec.get("scaleTargetRef")}
    return {"objects": sort_objects(routing), "canary": canary, "workloads": workloads}


def changed(previous: StepState, current: StepState) -> list[str]:
    """What differs between two step states, named as the corpus's ``changed`` lists do."""
    out = []
    before = {label(o): o for o in previous["objects"]}
    after = {label(o): o for o in current["objects"]}
    out += [name for name in sorted(before.keys() | after.keys())
            if before.get(name) != after.get(name)]
    if previous["canary"] != current["canary"]:
        out.append("Canary/status")
    out += [name for name in sorted(previous["workloads"].keys() | current["workloads"].keys())
            if previous["workloads"].get(name) != current["workloads"].get(name)]
    return out


def distinct_steps(
        changes: Sequence[Change], *, start: int, end: int, provider: GoldenProvider,
) -> list[StepState]:
    """The distinct step states from the write ``start`` (the new revision) to ``end``.

    The first is the state just before ``start`` (the corpus's step 0); then one per write that
    changed the state. Each carries ``changed`` as the corpus does.
    """
    current: dict[tuple[str, str, str, str], Json] = {}
    ordered = sorted(changes, key=lambda c: c.revision)
    for change in ordered:
        if change.revision >= start:
            break
        _apply(current, change)
    steps = [{**step_state(current.values(), provider),
              "changed": ["(state when the new revision was applied)"]}]
    for change in ordered:
        if change.revision < start or change.revision > end:
            continue
        _apply(current, change)
        state = step_state(current.values(), provider)
        previous = {k: v for k, v in steps[-1].items() if k != "changed"}
        if state != previous:
            steps.append({**state, "changed": changed(previous, state)})
    return steps


def _apply(current: dict[tuple[str, str, str, str], Json], change: Change) -> None:
    if change.obj is None:
        current.pop(change.key, None)
    else:
        current[change.key] = change.obj
