"""Istio blue/green: the new version gets no user traffic until its acceptance tests pass, or
only copies of it (mirroring).

The acceptance test is a pre-rollout webhook run by ``flaggerpy loadtester`` as a bash task: it
calls ``backend-canary`` through the simulator's ingress and checks which version answered, as
Flagger's e2e checks podinfo's ``/token``. Load comes from a rollout webhook running ``hey``
against the canary Service, so the builtin success-rate metric has requests to measure.
"""

from __future__ import annotations

import re

import pytest

from e2e.cluster.pytest_plugin import eventually
from e2e.processes import LoadTesterProcess
from e2e.scenario import Scenario, container_image, deployment, patch_workload
from e2e.scenarios.mesh import Client, istio_canary, routes

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds")]


def acceptance_test(ingress: str, version: str) -> str:
    """A bash check that ``backend-canary`` serves ``version``."""
    return (f"curl -sfi -H 'Host: backend-canary' {ingress}/token"
            f" | grep -qi '^x-version: {version}'")


def blue_green(ingress: str, loadtester: LoadTesterProcess, version: str) -> dict[str, object]:
    hooks = [
        {"name": "acceptance-test", "type": "pre-rollout", "url": f"{loadtester.url}/",
         "timeout": "15s", "metadata": {"type": "bash", "cmd": acceptance_test(ingress, version)}},
        {"name": "load-test", "type": "rollout", "url": f"{loadtester.url}/", "timeout": "5s",
         "metadata": {"cmd": f"hey -z 1m -q 10 -c 2 -host backend-canary {ingress}/"}},
    ]
    metrics = [{"name": "request-success-rate", "thresholdRange": {"min": 99},
                "interval": "15s"}]
    return istio_canary("backend", service={"port": 80, "targetPort": 9898}, iterations=5,
                        threshold=2, metrics=metrics, webhooks=hooks)


async def test_blue_green_gated_by_pre_rollout_acceptance_tests(
    mesh: Scenario, loadtester: LoadTesterProcess
) -> None:
    """Catalogue #2: a version failing its acceptance test is rolled back, the next promoted."""
    assert mesh.simulator is not None
    ingress = mesh.simulator.ingress_url
    await mesh.start_controller("-mesh-provider=istio")
    await mesh.apply(deployment("backend", image="podinfo:6.0.0"),
                     blue_green(ingress, loadtester, "podinfo:6.0.2"))
    await mesh.wait_phase("backend", "Initialized", within=60)
    apex = await mesh.get("service", "backend")
    assert apex is not None
    assert [(p["port"], p["targetPort"]) for p in apex["spec"]["ports"]] == [(80, 9898)]

    # 6.0.1 is not the version the acceptance test expects: it fails, twice, and is rolled back.
    await mesh.kubectl("set", "image", "deployment/backend", "backend=podinfo:6.0.1")
    status = await mesh.wait_phase("backend", ("Failed", "Succeeded"), within=90)
    assert status["phase"] == "Failed", status
    messages = [event["message"] for event in await mesh.events("backend")]
    assert any("pre-rollout check acceptance-test failed" in m for m in messages), messages
    assert ("Last failed check: pre-rollout check acceptance-test failed"
            in status["conditions"][0]["message"]), status
    assert container_image(await mesh.get("deployment", "backend-primary")) == "podinfo:6.0.0"

    seen: list[str] = []
    await mesh.kubectl("set", "image", "deployment/backend", "backend=podinfo:6.0.2")
    await mesh.wait_phase("backend", "Progressing", within=30, seen=seen)
    # Blue/green: while the canary is analysed, users stay on the primary.
    assert routes(await mesh.get("virtualservices.networking.istio.io", "backend")) == {
        "backend-primary": 100, "backend-canary": 0}
    status = await mesh.wait_phase("backend", ("Failed", "Succeeded"), within=120, seen=seen)
    assert status["phase"] == "Succeeded", (status, seen)
    assert container_image(await mesh.get("deployment", "backend-primary")) == "podinfo:6.0.2"


async def test_mirroring_fails_a_bad_version_that_users_never_see(mesh: Scenario) -> None:
    """Blue/green with traffic mirroring: the canary answers copies of live requests, users
    get the primary's answers only, and the copies' errors roll the new version back."""
    await mesh.start_controller("-mesh-provider=istio")
    metrics = [{"name": "request-success-rate", "thresholdRange": {"min": 95},
                "interval": "15s"}]
    await mesh.apply(deployment("backend", image="podinfo:6.0.0"),
                     istio_canary("backend", iterations=20, threshold=2, mirror=True,
                                  mirrorWeight=100, metrics=metrics))
    await mesh.wait_phase("backend", "Initialized", within=60)
    await patch_workload(mesh, "backend", {"spec": {"template": {"spec": {"containers": [
        {"name": "backend", "image": "podinfo:6.0.1",
         "env": [{"name": "FAULT_RATE", "value": "0.5"}]}]}}}})
    await mesh.wait_phase("backend", "Progressing", within=30)

    async def mirrored() -> bool:
        virtual_service = await mesh.get("virtualservices.networking.istio.io", "backend")
        rules = (virtual_service or {}).get("spec", {}).get("http") or [{}]
        return bool(rules[0].get("mirror") == {"host": "backend-canary"})
    await eventually(mirrored, within=30, what="the VirtualService to mirror to backend-canary")
    assert routes(await mesh.get("virtualservices.networking.istio.io", "backend")) == {
        "backend-primary": 100, "backend-canary": 0}
    user = Client(mesh, "backend")
    replies = [await user.get() for _ in range(30)]
    assert {(r.status, r.version) for r in replies} == {(200, "podinfo:6.0.0")}

    status = await mesh.wait_phase("backend", ("Failed", "Succeeded"), within=120)
    assert status["phase"] == "Failed", status
    # Failed on measured errors of the copies, not on missing data.
    assert re.search(r"success rate \d+\.\d+% < 95%", status["conditions"][0]["message"]), status
    assert container_image(await mesh.get("deployment", "backend-primary")) == "podinfo:6.0.0"
