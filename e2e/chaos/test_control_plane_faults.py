"""kube-apiserver restarted, etcd restarted, each mid-analysis (``make chaos`` only).

These stop parts of the control plane, so they run on a cluster of their own, started for this
module and stopped after it, never on the shared one other tests use. The undisturbed release
runs on the same private cluster.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from e2e.chaos.conftest import Chaos, runs
from e2e.chaos.faults import restarted
from e2e.cluster.localcluster import LocalCluster
from e2e.cluster.pytest_plugin import FLAGGERPY_CRDS

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.timeout(600),
              pytest.mark.usefixtures("flagger_crds")]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """A cluster of this module's own: restarting the shared one would fail other tests."""
    private = LocalCluster(f"chaos-{os.getpid()}")
    private.up(install_crds=True, timeout=300)
    try:
        yield private
    finally:
        private.down()


@pytest.fixture(scope="module")
def flagger_crds(cluster: LocalCluster) -> None:
    cluster.install_crds(sorted(FLAGGERPY_CRDS.glob("*.yaml")))


@pytest.mark.parametrize("run", runs())
@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
async def test_control_plane_component_restarted_mid_analysis(
    chaos: Chaos, component: str, run: int
) -> None:
    expected, got = await chaos(f"{component} restarted mid-analysis", restarted(component),
                                kind="promotion/private-cluster")
    assert got.differences(expected) == []
