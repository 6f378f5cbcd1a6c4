"""SIGKILL the controller at each phase of a release and start it again.

The canary must end where the undisturbed release ends (phase, routes, what the primary runs,
the canary scaled down), with the primary written exactly as often (once per revision: a
promotion neither lost nor repeated) and no gate asked again once the Canary's status shows it
passed. ``promoting`` (with the 409 storm) runs in ``make test``; the rest in ``make chaos``.
"""

from __future__ import annotations

import random

import pytest

from e2e.chaos.conftest import Chaos, runs
from e2e.chaos.faults import (
    conflict_storm,
    kill_after_gate_approval,
    kill_after_primary_write,
    kill_at,
)
from e2e.chaos.release import INTERVAL

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420), pytest.mark.usefixtures("flagger_crds")]


def delay(run: int) -> float:
    """The first run strikes at once; the others somewhere within one analysis interval."""
    return 0.0 if run == 0 else random.Random(run).uniform(0, INTERVAL)


@pytest.mark.parametrize("run", runs())
async def test_killed_during_promoting(chaos: Chaos, run: int) -> None:
    """Killed after the primary was written, or between that write and Promoting, or while
    the routes shift back: the primary is written once, the release ends as undisturbed."""
    expected, got = await chaos("SIGKILL controller: promoting",
                                kill_at("promoting", delay=delay(run)))
    assert got.differences(expected) == []


@pytest.mark.chaos
@pytest.mark.parametrize("run", runs())
@pytest.mark.parametrize("moment", ["initializing", "weight-step", "finalising"])
async def test_killed_during_more_phases(chaos: Chaos, moment: str, run: int) -> None:
    expected, got = await chaos(f"SIGKILL controller: {moment}", kill_at(moment, delay=delay(run)))
    assert got.differences(expected) == []


@pytest.mark.chaos
@pytest.mark.parametrize("run", runs())
async def test_killed_right_after_the_primary_was_written(chaos: Chaos, run: int) -> None:
    """Killed the moment the audit log shows the promotion's write of the primary, before the
    Canary says Promoting: the restarted controller promotes again only as a no-op (no second
    write), and the release ends as undisturbed."""
    expected, got = await chaos("SIGKILL controller: primary just written",
                                kill_after_primary_write())
    assert got.differences(expected) == []


@pytest.mark.chaos
@pytest.mark.parametrize("run", runs())
async def test_killed_during_rollback(chaos: Chaos, run: int) -> None:
    expected, got = await chaos("SIGKILL controller: rollback", kill_at("rollback"),
                                kind="rollback", rollback=True)
    assert expected.phase == "Failed"
    assert got.differences(expected) == []


@pytest.mark.chaos
@pytest.mark.parametrize("run", runs())
async def test_killed_between_gate_approval_and_next_step(chaos: Chaos, run: int) -> None:
    expected, got = await chaos("SIGKILL controller: after confirm-promotion approved",
                                kill_after_gate_approval("/confirm-promotion"))
    assert got.differences(expected) == []


@pytest.mark.parametrize("run", runs())
async def test_second_writer_conflicts(chaos: Chaos, run: int) -> None:
    """A second writer patches the Canary, the VirtualService and the apex Service every 50 ms
    from the new revision to the end: the controller's conditional writes meet 409s, and the
    release ends as the undisturbed one."""
    expected, got = await chaos("409 storm: second writer on Canary and routes", conflict_storm())
    assert got.differences(expected) == []
