"""Faults around the controller: Prometheus, a webhook, a notifier, the leader of two replicas.

Each release must end as its undisturbed run ends (``make chaos`` only: each needs its own
undisturbed run, and together they take several minutes).
"""

from __future__ import annotations

import pytest

from e2e.chaos.conftest import Chaos, runs
from e2e.chaos.faults import hung_endpoint, kill_leader_at, prometheus_stopped
from e2e.chaos.release import NOTIFIER

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.timeout(420),
              pytest.mark.usefixtures("flagger_crds")]

ELECTION = ("-mesh-provider=istio", "-enable-leader-election",
            "-leader-election-lease-duration=6s", "-leader-election-renew-deadline=4s",
            "-leader-election-retry-period=1s")


@pytest.mark.parametrize("run", runs())
async def test_prometheus_not_answering_for_two_intervals(chaos: Chaos, run: int) -> None:
    expected, got = await chaos("Prometheus not answering for two intervals",
                                prometheus_stopped(intervals=2))
    assert got.differences(expected) == []


@pytest.mark.parametrize("run", runs())
async def test_a_rollout_webhook_that_hangs(chaos: Chaos, run: int) -> None:
    """The rollout check hangs past its 5 s timeout for two intervals: failed checks, under the
    threshold of 5, and the release goes on."""
    expected, got = await chaos("rollout webhook hangs for two intervals",
                                hung_endpoint("/check", intervals=2, hang=30))
    assert got.differences(expected) == []


@pytest.mark.parametrize("run", runs())
async def test_a_notifier_that_hangs(chaos: Chaos, run: int) -> None:
    """Every alert of the run is posted to an endpoint that answers after 15 s: the release
    ends as the undisturbed one (with the same notifier answering at once), and no slower
    than by one hang."""
    expected, got = await chaos("notifier hangs (every alert)", hung_endpoint(
        NOTIFIER, intervals=None, hang=15), kind="notified", notified=True)
    assert got.differences(expected) == []
    assert got.seconds < expected.seconds + 30, (got.seconds, expected.seconds)


@pytest.mark.parametrize("run", runs())
async def test_leader_killed_mid_promotion(chaos: Chaos, run: int) -> None:
    expected, got = await chaos(
        "SIGKILL leader of two replicas: promoting", kill_leader_at("promoting"),
        kind="two-replicas", replicas=2, controller_args=ELECTION)
    assert got.differences(expected) == []
