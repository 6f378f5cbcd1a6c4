"""Integration tests run against the real local control plane (e2e/cluster)."""

from e2e.cluster.pytest_plugin import (
    api_client,
    cluster,
    counted_client,
    flagger_crds,
    namespace,
    pytest_collection_modifyitems,
)
from e2e.fixtures import cli_logging, loadtester, processes, receiver, scenario

__all__ = [
    "api_client",
    "cli_logging",
    "cluster",
    "counted_client",
    "flagger_crds",
    "loadtester",
    "namespace",
    "processes",
    "pytest_collection_modifyitems",
    "receiver",
    "scenario",
]
