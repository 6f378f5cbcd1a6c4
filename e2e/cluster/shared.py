"""Runs a command with one local control plane shared by everything it starts.

``python -m e2e.cluster.shared -- pytest -n 3 ...``: the test workers that pytest-xdist
starts are separate processes, and each would start a control plane of its own. Started
here once, before them, and named to them through ``FLAGGERPY_CLUSTER`` (which the ``cluster``
fixture reuses), they share one, each test in namespaces of its own. A cluster that
``FLAGGERPY_CLUSTER`` already names is used as it is and left running; one started here is
removed when the command ends, whatever its outcome.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import FrameType

from e2e.cluster.localcluster import LocalCluster
from e2e.cluster.pytest_plugin import CLUSTER_ENV


def run(command: list[str]) -> int:
    """``command``'s exit status, run with ``FLAGGERPY_CLUSTER`` naming a running cluster."""
    if os.environ.get(CLUSTER_ENV):
        return subprocess.call(command)
    cluster = LocalCluster(f"shared-{os.getpid()}")
    cluster.up(install_crds=True)
    try:
        env = {**os.environ, CLUSTER_ENV: str(cluster.state_dir)}
        return subprocess.call(command, env=env)
    finally:
        cluster.down()


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    sys.exit(128 + signum)  # unwinds through run()'s finally: the cluster goes too


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    command = argv[1:] if argv[:1] == ["--"] else argv
    if not command:
        print("usage: python -m e2e.cluster.shared -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    return run(command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
