"""Fixtures of the chaos suite: the scenarios' (cluster, namespace, mesh, receiver), a release
factory, the undisturbed outcome each fault is judged against, and the report.

``pytest_sessionstart`` is :mod:`flaggerpy.testing`'s: it declares "no current event loop"
before any test, as ``tests/conftest.py`` does. ``make chaos`` runs ``pytest e2e/chaos`` alone,
where that conftest is not loaded; without the declaration looptime's look at the current loop
before a sync test made asyncio create one that nobody closed, and its garbage collection during a
later test raised an unraisable ``ResourceWarning`` (an unclosed event loop, its two AF_UNIX
self-pipe sockets): the control-plane faults' "Open" failure in the README.

``FLAGGERPY_CHAOS_RUNS`` (default 1) repeats each fault; ``FLAGGERPY_CHAOS_REPORT`` names a
JSON-lines file each run is appended to (``python -m e2e.chaos.report`` reads it).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from e2e.chaos.outcome import Outcome
from e2e.chaos.release import Fault, Release, Stuck
from e2e.cluster.localcluster import LocalCluster
from e2e.receiver import WebhookReceiver
from e2e.scenario import Scenario
from e2e.scenarios.conftest import (
    cluster,
    flagger_crds,
    namespace,
    pytest_collection_modifyitems,
    pytest_sessionstart,
    receiver,
    start_mesh,
)
from flaggerpy.testing import receiving

__all__ = ["chaos", "cluster", "flagger_crds", "namespace", "pytest_collection_modifyitems",
           "pytest_sessionstart", "receiver", "start_mesh"]

# Every process the suite starts dumps its threads' stacks on a fatal signal: a controller that is
# not ready in time is aborted (SIGABRT) to show where it was (release.py).
os.environ.setdefault("PYTHONFAULTHANDLER", "1")

RUNS = int(os.environ.get("FLAGGERPY_CHAOS_RUNS", "1"))
REPORT = os.environ.get("FLAGGERPY_CHAOS_REPORT", "")

_undisturbed: dict[str, Outcome] = {}
"""Undisturbed outcomes by release kind, computed once per test process (files are kept to one
process by ``--dist loadfile``)."""


def runs() -> list[int]:
    """The repetitions to parametrize a fault with."""
    return list(range(RUNS))


def record(entry: dict[str, Any]) -> None:
    if REPORT:
        with Path(REPORT).open("a") as report:
            report.write(json.dumps(entry) + "\n")


async def _run_release(
    cluster: LocalCluster, namespace: str, receiver: WebhookReceiver, *,
    fault: Fault | None, **release: Any,
) -> Outcome:
    scenario = await Scenario(cluster, namespace).start(mesh=True, simulator_args=["--rps=20"])
    try:
        return await Release(scenario, receiver, **release).run(fault)
    finally:
        await scenario.aclose()


async def undisturbed(cluster: LocalCluster, kind: str, **release: Any) -> Outcome:
    """The outcome of the release without a fault, in a namespace of its own (cached)."""
    if kind not in _undisturbed:
        namespace = f"chaos-undisturbed-{secrets.token_hex(3)}"
        await cluster.akubectl("create", "namespace", namespace)
        try:
            async with receiving() as receiver:
                _undisturbed[kind] = await _run_release(cluster, namespace, receiver,
                                                        fault=None, **release)
        finally:
            await cluster.akubectl("delete", "namespace", namespace, "--wait=false",
                                   check=False)
        record({"fault": f"undisturbed/{kind}", "outcome": _undisturbed[kind].as_json(),
                "differences": [], "stuck": False})
    return _undisturbed[kind]


Chaos = Callable[..., Awaitable[tuple[Outcome, Outcome]]]


@pytest.fixture
def chaos(cluster: LocalCluster, namespace: str, receiver: WebhookReceiver) -> Chaos:
    """``await chaos("name", fault, kind=..., **release)``: the undisturbed outcome and the
    faulted one; the run is recorded in the report whatever its end (a stuck canary too)."""

    async def run(name: str, fault: Fault, *, kind: str = "promotion",
                  **release: Any) -> tuple[Outcome, Outcome]:
        expected = await undisturbed(cluster, kind, **release)
        try:
            got = await _run_release(cluster, namespace, receiver, fault=fault, **release)
        except Stuck as stuck:
            record({"fault": name, "outcome": None, "differences": [str(stuck)[:300]],
                    "stuck": True, "expected": expected.as_json()})
            raise
        except Exception as error:  # recorded, so that the report never drops a run
            record({"fault": name, "outcome": None, "differences": [repr(error)[:300]],
                    "stuck": False, "expected": expected.as_json()})
            raise
        record({"fault": name, "outcome": got.as_json(), "differences": got.differences(expected),
                "stuck": False, "expected": expected.as_json()})
        return expected, got

    return run
