"""`make demo` stays green: the demo runs end to end, as a user would run it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from e2e.cluster.localcluster import REPO_ROOT, LocalCluster

pytestmark = pytest.mark.e2e


def test_demo_promotes_the_good_version_and_rolls_back_the_bad_one(cluster: LocalCluster) -> None:
    # The demo starts (and removes) a cluster of its own; `cluster` only makes sure the control
    # plane binaries are built and the run is marked as needing them.
    result = subprocess.run(
        [sys.executable, "-m", "e2e.demo"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "all canaries ended as expected" in output
    assert "backend   podinfo:6.0.1  Succeeded  Succeeded" in output
    assert "backend   podinfo:6.0.2  Failed     Failed" in output
    assert "no process left running" in output
    assert not LocalCluster("demo").state_dir.exists()
