"""``kubectl flaggerpy list`` and ``status --watch`` against the local control plane and a
running controller, through a whole blue/green run."""

from __future__ import annotations

import asyncio

import pytest

from e2e.cluster.pytest_plugin import eventually
from e2e.scenario import Scenario, canary, deployment
from flaggerpy.kubectl import main

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds", "cli_logging")]




def frames(output: str) -> list[str]:
    """The frames ``status --watch`` wrote (without a terminal: one after another)."""
    return [frame for frame in output.split("\n\nCanary:") if frame.strip()]


async def test_list_and_watch_a_run_to_succeeded(
        scenario: Scenario, capsys: pytest.CaptureFixture[str]) -> None:
    ns = scenario.namespace
    connection = ["--kubeconfig", str(scenario.cluster.kubeconfig), "-n", ns]
    analysis = {
        "interval": "2s", "threshold": 2, "iterations": 3,
        "metrics": [{"name": "app-success-rate", "templateRef": {"name": "app-success-rate"},
                     "thresholdRange": {"min": 90}, "interval": "30s"}],
    }
    await scenario.start_controller()
    await scenario.set_success_rate("podinfo", 99)
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"),
                         canary("podinfo", analysis=analysis))
    await scenario.wait_phase("podinfo", "Initialized", within=60)

    assert await asyncio.to_thread(main.main, ["list", *connection]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].split() == ["NAME", "STATUS", "WEIGHT", "FAILEDCHECKS",
                                 "LASTTRANSITIONTIME", "STEP", "STEERING"]
    assert listed[1].split()[:4] == ["podinfo", "Initialized", "0", "0"]
    assert listed[1].split()[-2:] == ["-", "-"]

    watch = asyncio.create_task(asyncio.to_thread(
        main.main, ["status", "podinfo", "--watch", "--until-done", *connection]))
    await asyncio.sleep(1)  # let the watch draw the Initialized canary first
    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")
    assert await asyncio.wait_for(watch, timeout=120) == 0, capsys.readouterr()

    drawn = frames(capsys.readouterr().out)
    assert "Phase:          Initialized" in drawn[0]
    phases = [line.split()[-1] for frame in drawn for line in frame.splitlines()
              if line.startswith("Phase:")]
    assert "Progressing" in phases, phases
    assert phases[-1] == "Succeeded", phases
    steps = {line.split(":", 1)[1].strip() for frame in drawn for line in frame.splitlines()
             if line.startswith("Step:")}
    assert steps & {"iteration 1/3", "iteration 2/3"}, steps
    last = drawn[-1].splitlines()
    assert "Weight:         [........................................] canary 0% / primary 100%" \
        in last
    checks = last[last.index("Checks:") + 1:last.index("Conditions:") - 1]
    assert checks[0].split()[:6] == ["TIME", "METRIC", "VALUE", "THRESHOLD", "VERDICT", "ACTION"]
    assert len(checks) >= 4  # three iterations, each checked
    assert all(row.split()[1:6] == ["app-success-rate", "99", ">=", "90", "Pass"]
               for row in checks[1:]), checks
    messages = timeline_messages(last)
    assert messages[0] == f"New revision detected! Scaling up podinfo.{ns}"
    assert messages.index(f"Starting canary analysis for podinfo.{ns}") < messages.index(
        f"Copying podinfo.{ns} template spec to podinfo-primary.{ns}")
    assert not any(m.startswith("Initialization done!") for m in messages)  # not this run

    # The phase may be written just before the run's last Event: a plain status shows it.
    async def promotion_completed() -> bool:
        assert await asyncio.to_thread(main.main, ["status", "podinfo", *connection]) == 0
        shown = timeline_messages(capsys.readouterr().out.splitlines())
        return f"Promotion completed! Scaling down podinfo.{ns}" in shown
    await eventually(promotion_completed, within=20, what="the run's last Event in status")

    assert await asyncio.to_thread(main.main, ["list", *connection]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["podinfo", "Succeeded"]


def timeline_messages(lines: list[str]) -> list[str]:
    """The MESSAGE column of the status' timeline (every Event here has reason Synced)."""
    rows = lines[lines.index("Timeline:") + 2:]
    return [row.split("Synced", 1)[1].strip() for row in rows]
