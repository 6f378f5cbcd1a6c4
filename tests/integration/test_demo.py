"""`make demo` stays green: the demo runs end to end, as a user would run it, and cleans up."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from e2e.cluster.localcluster import REPO_ROOT, LocalCluster
from e2e.processes import RUN_TAG, tagged_processes, wait_until_gone

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]  # a whole demo, on a busy machine


@pytest.fixture
def demo_environment() -> Iterator[tuple[str, dict[str, str]]]:
    """A tag of our own for the run, so its leftovers are found whatever the demo says.

    Whatever still carries the tag after the test is killed, so that a failing
    test does not leave a simulator or a cluster behind for the ones after it.
    """
    tag = secrets.token_hex(6)
    yield tag, {**os.environ, RUN_TAG: tag}
    for pid in tagged_processes(tag):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if LocalCluster("demo").state_dir.exists():
        LocalCluster("demo").down()


@pytest.mark.parametrize("mesh", ["istio", "linkerd"])
def test_demo_promotes_the_good_version_and_rolls_back_the_bad_one(
    cluster: LocalCluster, demo_environment: tuple[str, dict[str, str]], mesh: str
) -> None:
    # The demo starts (and removes) a cluster of its own; `cluster` only makes sure the control
    # plane binaries are built and the run is marked as needing them. On Linkerd the frontend
    # is a blue/green release (no header routing): it must be promoted and rolled back too.
    tag, env = demo_environment
    result = subprocess.run(
        [sys.executable, "-m", "e2e.demo", f"--mesh={mesh}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, check=False, env=env,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "all canaries ended as expected" in output
    assert "backend   podinfo:6.0.1  Succeeded  Succeeded" in output
    assert "backend   podinfo:6.0.2  Failed     Failed" in output
    assert "frontend  podinfo:6.0.1  Succeeded  Succeeded" in output
    assert "frontend  podinfo:6.0.2  Failed     Failed" in output
    assert f"starting the {mesh} traffic simulator" in output
    assert "no process left running" in output
    assert wait_until_gone(tag) == {}
    assert not LocalCluster("demo").state_dir.exists()


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "hangup"])
def test_ctrl_c_while_canaries_progress_leaves_nothing_behind(
    cluster: LocalCluster, demo_environment: tuple[str, dict[str, str]], sent: signal.Signals
) -> None:
    # SIGINT is Ctrl-C; SIGHUP is the terminal closing. Both go to the whole foreground group.
    tag, env = demo_environment
    demo = subprocess.Popen(
        [sys.executable, "-m", "e2e.demo"], cwd=REPO_ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    assert demo.stdout is not None
    seen: list[str] = []
    try:
        for line in demo.stdout:
            seen.append(line)
            if "a good version: podinfo:6.0.1" in line:
                break
        else:
            pytest.fail("the demo ended before rolling out a version:\n" + "".join(seen[-40:]))
        # Into the analysis: the controller, the simulator's backends, Prometheus, the load
        # tester and the hey it started are all running now.
        time.sleep(8)
        os.killpg(demo.pid, sent)
        rest, _ = demo.communicate(timeout=180)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    output = "".join(seen) + rest
    assert demo.returncode == 1, output[-6000:]
    assert "interrupted: stopping everything" in output
    assert "no process left running" in output
    assert wait_until_gone(tag) == {}
    assert not LocalCluster("demo").state_dir.exists()
