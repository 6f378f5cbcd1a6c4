"""pytest fixtures for tests that need the local control plane.

``cluster`` (session): starts one cluster for the run and stops it at the end, or reuses the running
cluster named by ``FLAGGERPY_CLUSTER`` (a state folder or a cluster name) and leaves it running.
``api_client``: a kubernetes-asyncio ApiClient for it. ``namespace``: a fresh namespace per test,
deleted afterwards. Tests that use ``cluster`` are marked ``integration`` automatically.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from e2e.cluster.localcluster import REPO_ROOT, LocalCluster
from flaggerpy import testing
from flaggerpy.testing import eventually as eventually  # re-exported for the tests

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

    from flaggerpy.kube import KubeClient

CLUSTER_ENV = "FLAGGERPY_CLUSTER"
FLAGGERPY_CRDS = REPO_ROOT / "charts" / "flaggerpy" / "crds"


def cluster_from_env(value: str) -> LocalCluster:
    """``FLAGGERPY_CLUSTER`` is either a state folder (has a ``/``) or a cluster name."""
    if "/" in value:
        path = Path(value).resolve()
        return LocalCluster(path.name, root=path.parent)
    return LocalCluster(value)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    reuse = os.environ.get(CLUSTER_ENV)
    if reuse:
        local = cluster_from_env(reuse)
        if not local.is_running():
            pytest.fail(
                f"{CLUSTER_ENV}={reuse} names no running cluster; start it with e2e/cluster/up"
            )
        local.install_upstream_crds()
        yield local
        return
    local = LocalCluster(f"pytest-{os.getpid()}")
    local.up(install_crds=True)
    try:
        yield local
    finally:
        local.down()


@pytest.fixture(scope="session")
def flagger_crds(cluster: LocalCluster) -> None:
    """flaggerpy's flagger.app CRDs (charts/flaggerpy/crds), server-side applied and Established."""
    cluster.install_crds(sorted(FLAGGERPY_CRDS.glob("*.yaml")))


@pytest.fixture
async def api_client(cluster: LocalCluster) -> AsyncIterator[ApiClient]:
    from kubernetes_asyncio import config

    client = await config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def counted_client(cluster: LocalCluster) -> AsyncIterator[KubeClient]:
    """A flaggerpy kube client with a user agent no other client shares.

    What it does can be counted exactly in the audit log
    (``audit.count_requests(cluster.audit_log, user_agent=counted_client.user_agent)``).
    """
    from flaggerpy import kube

    client = await kube.KubeClient.connect(
        kubeconfig=cluster.kubeconfig, user_agent=f"flaggerpy-test-{secrets.token_hex(6)}")
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def namespace(cluster: LocalCluster, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    name = testing.namespace_name(request.node.name)
    await cluster.akubectl("create", "namespace", name)
    await cluster.akubectl("label", "namespace", name, f"{testing.TEST_LABEL}=true")
    try:
        yield name
    finally:
        await cluster.akubectl("delete", "namespace", name, "--wait=false", check=False)
