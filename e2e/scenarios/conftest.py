"""Fixtures of the end-to-end scenarios: the local control plane, a namespace, the mesh.

Every scenario runs ``flaggerpy controller`` as a process against the real local control plane,
with the traffic simulator carrying requests through the routing objects the controller writes
and a real Prometheus scraping the simulator. The cluster fixtures are the integration tests'
(``e2e/cluster/pytest_plugin.py``); a scenario asks for the mesh with the traffic it needs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from e2e.cluster.localcluster import LocalCluster
from e2e.cluster.pytest_plugin import (
    cluster,
    flagger_crds,
    namespace,
    pytest_collection_modifyitems,
)
from e2e.fixtures import loadtester, receiver, scenario
from e2e.scenario import Scenario
from e2e.scenarios.mesh import MeshStarter
from flaggerpy.testing import pytest_sessionstart

__all__ = [
    "cluster",
    "flagger_crds",
    "loadtester",
    "mesh",
    "namespace",
    "pytest_collection_modifyitems",
    "pytest_sessionstart",
    "receiver",
    "scenario",
    "start_mesh",
]

@pytest.fixture
async def start_mesh(cluster: LocalCluster, namespace: str) -> AsyncIterator[MeshStarter]:
    """Starts the scenario with the simulator's options (users' headers and cookies, rate).

    ``await start_mesh("--user-cookie=type=insider:0.3")``; everything started is stopped when
    the test ends, whatever its outcome.
    """
    started: list[Scenario] = []

    async def start(*simulator_args: str) -> Scenario:
        scenario = Scenario(cluster, namespace)
        started.append(scenario)
        return await scenario.start(mesh=True, simulator_args=["--rps=40", *simulator_args])

    try:
        yield start
    finally:
        for scenario in started:
            await scenario.aclose()


@pytest.fixture
async def mesh(start_mesh: MeshStarter) -> Scenario:
    """The mesh with 30 % of the simulated users sending ``x-canary: insider``."""
    return await start_mesh("--user-header=x-canary=insider:0.3")
