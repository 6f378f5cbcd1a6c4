"""Analysis you can trust, through simulated Istio traffic and a real Prometheus.

- ``onNoData: hold``: an A/B canary that no user reaches (nobody has the cookie it matches)
  holds with a clear reason instead of failing (``threshold: 1`` would roll it back at the first
  failed check), and is promoted once requests with the cookie arrive.
- ``dryRun``: a metric that fails every check leaves the canary promoted, with its failures in
  ``status.analysisHistory`` and in Events.
- ``onFailure: pause``: failed checks stop the canary at its weight, alerting once, until a
  person resets ``status.failedChecks`` (docs/analysis.md); then it is promoted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from e2e.scenario import Scenario, container_image, deployment
from e2e.scenarios.mesh import Client, MeshStarter, istio_canary

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds")]

INSIDER = "type=insider"
COOKIE_MATCH = [{"headers": {"cookie": {"regex": r"^(.*?;)?(type=insider)(;.*)?$"}}}]


async def until(check: Callable[[], Awaitable[bool]], *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.5)


def promoted_message(status: dict[str, Any]) -> str:
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Promoted":
            return str(condition.get("message") or "")
    return ""


async def release(mesh: Scenario, name: str) -> None:
    await mesh.kubectl("set", "image", f"deployment/{name}", f"{name}=podinfo:6.0.1")


async def insiders(client: Client) -> None:
    """Requests with the cookie the Canary matches, about 20 a second, until cancelled."""
    while True:
        with contextlib.suppress(Exception):
            await client.get(cookie=INSIDER)
        await asyncio.sleep(0.05)


async def test_a_canary_without_traffic_holds_and_proceeds_when_traffic_arrives(
        start_mesh: MeshStarter) -> None:
    mesh = await start_mesh()  # no simulated user carries the insider cookie
    await mesh.start_controller("-mesh-provider=istio")
    metrics = [{"name": "request-success-rate", "thresholdRange": {"min": 99},
                "interval": "10s", "onNoData": "hold"}]
    await mesh.apply(deployment("frontend", image="podinfo:6.0.0"),
                     istio_canary("frontend", iterations=3, threshold=1, match=COOKIE_MATCH,
                                  metrics=metrics, service={"port": 9898,
                                                            "hosts": ["frontend.example.com"]}))
    await mesh.wait_phase("frontend", "Initialized", within=60)
    await release(mesh, "frontend")

    async def holding() -> bool:
        status = await mesh.status("frontend")
        return promoted_message(status).startswith("Holding")

    await until(holding, within=90, what="the canary holds for want of traffic")
    status = await mesh.status("frontend")
    assert status["phase"] == "Progressing"
    assert status.get("failedChecks", 0) == 0
    assert "no values found for istio metric request-success-rate" in promoted_message(status)
    held = [e for e in status["analysisHistory"] if e["action"] == "hold"]
    assert held
    assert held[-1]["verdict"] == "NoData"
    assert 'destination_workload=~"frontend"' in held[-1]["query"]

    traffic = asyncio.create_task(insiders(Client(mesh, "frontend.example.com")))
    try:
        status = await mesh.wait_phase("frontend", ("Succeeded", "Failed"), within=120)
    finally:
        traffic.cancel()
    assert status["phase"] == "Succeeded", promoted_message(status)
    assert container_image(await mesh.get("deployment", "frontend-primary")) == "podinfo:6.0.1"
    passed = [e for e in status["analysisHistory"] if e["action"] == "pass"]
    assert passed
    assert passed[-1]["value"] >= 99
    assert passed[-1]["thresholdMin"] == 99


async def test_a_failing_dry_run_metric_leaves_the_canary_promoted(
        start_mesh: MeshStarter) -> None:
    mesh = await start_mesh()
    await mesh.start_controller("-mesh-provider=istio")
    metrics = [
        # Right after a step the canary may not have been scraped yet: wait for it.
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "10s",
         "onNoData": "hold"},
        {"name": "always-five", "query": "vector(5)", "thresholdRange": {"max": 1},
         "dryRun": True},
    ]
    await mesh.apply(deployment("backend", image="podinfo:6.0.0"),
                     istio_canary("backend", stepWeight=25, maxWeight=50, threshold=1,
                                  metrics=metrics))
    await mesh.wait_phase("backend", "Initialized", within=60)
    await release(mesh, "backend")
    status = await mesh.wait_phase("backend", ("Succeeded", "Failed"), within=120)
    assert status["phase"] == "Succeeded", promoted_message(status)
    assert container_image(await mesh.get("deployment", "backend-primary")) == "podinfo:6.0.1"
    dry = [e for e in status["analysisHistory"] if e["metric"] == "always-five"]
    assert dry
    assert {(e["verdict"], e["action"]) for e in dry} == {("Fail", "dry-run")}
    assert dry[-1]["value"] == 5
    assert dry[-1]["thresholdMax"] == 1
    assert dry[-1]["query"] == "vector(5)"
    said = [e["message"] for e in await mesh.events("backend")]
    assert any(m.startswith("Dry run: metric always-five Fail") for m in said), said


async def test_on_failure_pause_stops_at_the_weight_until_resumed(
        start_mesh: MeshStarter) -> None:
    mesh = await start_mesh()
    await mesh.start_controller("-mesh-provider=istio")
    metrics = [{"name": "app-success-rate", "templateRef": {"name": "app-success-rate"},
                "thresholdRange": {"min": 99}, "interval": "10s"}]
    await mesh.set_success_rate("backend", 100)
    await mesh.apply(deployment("backend", image="podinfo:6.0.0"),
                     istio_canary("backend", stepWeight=20, maxWeight=60, threshold=2,
                                  onFailure="pause", metrics=metrics))
    await mesh.wait_phase("backend", "Initialized", within=60)
    await release(mesh, "backend")

    async def weighted() -> bool:
        return int((await mesh.status("backend")).get("canaryWeight") or 0) >= 20

    await until(weighted, within=60, what="the canary gets traffic")
    await mesh.set_success_rate("backend", 50)

    async def paused() -> bool:
        return promoted_message(await mesh.status("backend")).startswith(
            "Canary analysis paused")

    await until(paused, within=60, what="the canary pauses")
    status = await mesh.status("backend")
    weight = status["canaryWeight"]
    assert status["phase"] == "Progressing"
    assert status["failedChecks"] >= 2
    await asyncio.sleep(6)  # three analysis intervals: nothing moves while paused
    later = await mesh.status("backend")
    assert later["canaryWeight"] == weight
    assert later["phase"] == "Progressing"
    assert promoted_message(later).startswith("Canary analysis paused")
    said = [e["message"] for e in await mesh.events("backend")]
    assert sum(m.startswith("Pausing backend.") for m in said) == 1, said

    # Resumed as docs/analysis.md says, once the cause is fixed.
    await mesh.set_success_rate("backend", 100)
    await mesh.kubectl("patch", "canary", "backend", "--subresource=status", "--type=merge",
                       "-p", json.dumps({"status": {"failedChecks": 0}}))
    status = await mesh.wait_phase("backend", ("Succeeded", "Failed"), within=120)
    assert status["phase"] == "Succeeded", promoted_message(status)
    assert container_image(await mesh.get("deployment", "backend-primary")) == "podinfo:6.0.1"
