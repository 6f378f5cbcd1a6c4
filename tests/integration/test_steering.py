"""Steering canaries with ``kubectl flaggerpy``: every command against the real controller process.

Each test drives the CLI's ``main()`` as a user would, against the local control plane, and
checks what the command did to the Canary; promote, abort, retry and approve are then checked
to survive a ``kubectl apply`` of the original Canary manifest (GitOps re-applying it). A
ServiceAccount bound only to the chart's steering ClusterRole steers, and is refused an update
of the Canary. Analyses tick every 2 s; runs are long (30 iterations) so a command always lands
in the middle of one.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.scenario import Scenario, canary, deployment
from flaggerpy import kube
from flaggerpy.kubectl import main as kubectl_main
from flaggerpy.testing import free_port

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds", "cli_logging"),
              pytest.mark.timeout(300)]

CHART = Path(__file__).resolve().parents[2] / "charts" / "flaggerpy"
LONG_RUN = {"interval": "2s", "threshold": 2, "iterations": 30}
"""A Blue/Green run of a minute, no metrics: nothing but a command ends it early."""




async def steer(scenario: Scenario, *args: str, kubeconfig: Path | None = None) -> int:
    """``kubectl flaggerpy -n <ns> <args>``, through the CLI's own entry point."""
    argv = ["--kubeconfig", str(kubeconfig or scenario.cluster.kubeconfig),
            "-n", scenario.namespace, *args, "--timeout", "60"]
    return await asyncio.to_thread(kubectl_main.main, argv)


async def new_revision(scenario: Scenario, name: str, tag: str) -> None:
    await scenario.kubectl("set", "image", f"deployment/{name}", f"{name}=podinfo:{tag}")
    await scenario.wait_phase(name, "Progressing", within=60)


async def events(scenario: Scenario, name: str) -> str:
    return "\n".join(str(e.get("message")) for e in await scenario.events(name))


async def still(scenario: Scenario, name: str, phase: str, *, seconds: float = 5) -> None:
    """The Canary stays in ``phase`` for a few analysis ticks."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        assert (await scenario.status(name)).get("phase") == phase
        await asyncio.sleep(0.5)


async def primary_image(scenario: Scenario, name: str) -> str:
    obj = await scenario.get("deployment", f"{name}-primary")
    assert obj is not None
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


async def test_promote_skips_the_analysis_and_survives_a_reapply(scenario: Scenario) -> None:
    await scenario.start_controller()
    manifest = canary("podinfo", analysis=LONG_RUN)
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"), manifest)
    await scenario.wait_phase("podinfo", "Initialized", within=90)
    await new_revision(scenario, "podinfo", "6.0.1")

    assert await steer(scenario, "promote", "podinfo", "--reason", "hotfix") == 0

    await scenario.wait_phase("podinfo", "Succeeded", within=60)
    assert await primary_image(scenario, "podinfo") == "podinfo:6.0.1"
    said = await events(scenario, "podinfo")
    assert "promote applied" in said
    assert "Promotion of podinfo." in said
    assert "Promotion completed!" in said
    await scenario.apply(manifest)  # GitOps applies the manifest again: nothing is undone
    await still(scenario, "podinfo", "Succeeded")
    assert await primary_image(scenario, "podinfo") == "podinfo:6.0.1"
    # Nothing runs now: a second promote is rejected, and says why.
    assert await steer(scenario, "promote", "podinfo") == 1


async def test_abort_then_retry_and_pause_resume(scenario: Scenario) -> None:
    await scenario.start_controller()
    manifest = canary("podinfo", analysis=LONG_RUN)
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"), manifest)
    await scenario.wait_phase("podinfo", "Initialized", within=90)
    await new_revision(scenario, "podinfo", "6.0.1")

    # pause: no iteration counted while paused; resume: the run goes on.
    assert await steer(scenario, "pause", "podinfo") == 0
    await asyncio.sleep(1)  # a tick already under way when the pause arrived may finish
    paused = await scenario.status("podinfo")
    assert paused["steering"]["paused"] is True
    await still(scenario, "podinfo", "Progressing", seconds=5)
    assert (await scenario.status("podinfo"))["iterations"] == paused["iterations"]
    condition = (await scenario.status("podinfo"))["conditions"][0]["message"]
    assert condition.startswith("Paused by CanaryCommand"), condition
    assert await steer(scenario, "resume", "podinfo") == 0
    assert await steer(scenario, "resume", "podinfo") == 1  # not paused any more

    async def moved() -> bool:
        return int((await scenario.status("podinfo")).get("iterations") or 0) > int(
            paused["iterations"] or 0)
    for _ in range(40):
        if await moved():
            break
        await asyncio.sleep(0.5)
    assert await moved()

    # abort: rolled back as a failed analysis is, with the reason.
    revision = (await scenario.status("podinfo"))["lastAppliedSpec"]
    assert await steer(scenario, "abort", "podinfo", "--reason", "error budget") == 0
    failed = await scenario.wait_phase("podinfo", "Failed", within=60)
    assert "aborted by CanaryCommand" in failed["conditions"][0]["message"]
    assert "error budget" in failed["conditions"][0]["message"]
    assert await primary_image(scenario, "podinfo") == "podinfo:6.0.0"
    assert "Rolling back podinfo." in await events(scenario, "podinfo")
    await scenario.apply(manifest)
    await still(scenario, "podinfo", "Failed")

    # retry: the same revision runs again; the pod template is not touched.
    assert await steer(scenario, "retry", "podinfo") == 0
    status = await scenario.wait_phase("podinfo", "Progressing", within=60)
    assert status["lastAppliedSpec"] == revision
    target = await scenario.get("deployment", "podinfo")
    assert target is not None
    assert target["spec"]["template"]["spec"]["containers"][0]["image"] == "podinfo:6.0.1"
    await scenario.apply(manifest)
    await still(scenario, "podinfo", "Progressing")
    assert "Retrying podinfo." in await events(scenario, "podinfo")


def gated(name: str, url: str, gate: str = "confirm-promotion") -> dict[str, Any]:
    """A short run with a manual gate nothing opens (the hook's address is dead)."""
    analysis = {"interval": "2s", "threshold": 2, "iterations": 2,
                "webhooks": [{"name": "gate", "type": gate, "url": url}]}
    return canary(name, analysis=analysis)


async def test_approve_opens_the_gate_and_deny_rolls_back(scenario: Scenario) -> None:
    await scenario.start_controller()
    dead = f"http://127.0.0.1:{free_port()}/gate"
    manifests = [gated("approved", dead), gated("denied", dead),
                 gated("started", dead, gate="confirm-rollout")]
    names = [m["metadata"]["name"] for m in manifests]
    await scenario.apply(*(deployment(name, image="podinfo:6.0.0") for name in names),
                         *manifests)
    for name in names:
        await scenario.wait_phase(name, "Initialized", within=90)
        await scenario.kubectl("set", "image", f"deployment/{name}", f"{name}=podinfo:6.0.1")
    for name in ("approved", "denied"):
        await scenario.wait_phase(name, "WaitingPromotion", within=60)
    await scenario.wait_phase("started", "Waiting", within=60)

    assert await steer(scenario, "approve", "approved") == 0
    assert await steer(scenario, "deny", "denied", "--reason", "not today") == 0
    # Approved at confirm-rollout: the run starts, and its approval goes with it.
    assert await steer(scenario, "approve", "started") == 0

    for name in ("approved", "started"):
        await scenario.wait_phase(name, "Succeeded", within=60)
        assert await primary_image(scenario, name) == "podinfo:6.0.1"
    denied = await scenario.wait_phase("denied", "Failed", within=60)
    assert "denied by CanaryCommand" in denied["conditions"][0]["message"]
    await scenario.apply(manifests[0])
    await still(scenario, "approved", "Succeeded")


async def test_commands_that_do_not_apply_are_rejected(scenario: Scenario) -> None:
    await scenario.start_controller()
    await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"),
                         canary("podinfo", analysis=LONG_RUN))
    await scenario.wait_phase("podinfo", "Initialized", within=90)

    assert await steer(scenario, "retry", "podinfo") == 1
    # A command for no canary at all, and one for a revision that is not the canary's.
    for name, spec in (("orphan", {"canary": "nothing-here", "action": "promote"}),
                       ("stale", {"canary": "podinfo", "action": "pause", "revision": "0ld"})):
        await scenario.apply({"apiVersion": "flaggerpy.dev/v1alpha1", "kind": "CanaryCommand",
                              "metadata": {"name": name}, "spec": spec})
    for name, words in (("orphan", "no canary named nothing-here"),
                        ("stale", "meant for revision 0ld")):
        for _ in range(60):
            obj = await scenario.get("canarycommand", name)
            if obj and (obj.get("status") or {}).get("phase"):
                break
            await asyncio.sleep(0.5)
        assert obj is not None
        assert obj["status"]["phase"] == "Rejected"
        assert words in obj["status"]["message"]


async def test_a_service_account_with_the_steering_role_steers_but_cannot_edit(
        scenario: Scenario, tmp_path: Path) -> None:
    cluster = scenario.cluster
    role = f"steering-{secrets.token_hex(3)}"
    rendered = await asyncio.to_thread(subprocess.run, [
        str(cluster.bin_dir / "helm"), "template", role, str(CHART),
        "-s", "templates/steering-rbac.yaml"], capture_output=True, text=True, check=True)
    [cluster_role] = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    # Cluster-wide: named after this test's release, without the edit aggregation (the other
    # tests' users must not gain it).
    del cluster_role["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"]
    role_name = cluster_role["metadata"]["name"]
    await cluster.akubectl("apply", "-f", "-", input=json.dumps(cluster_role))
    try:
        await scenario.kubectl("create", "serviceaccount", "release-bot")
        await scenario.kubectl("create", "rolebinding", "release-bot",
                               f"--clusterrole={role_name}",
                               f"--serviceaccount={scenario.namespace}:release-bot")
        token = (await scenario.kubectl("create", "token", "release-bot")).strip()
        kubeconfig = tmp_path / "bot.kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "local", "cluster": {
                "server": cluster.server,
                "certificate-authority": str(cluster.pki_dir / "ca.crt")}}],
            "users": [{"name": "bot", "user": {"token": token}}],
            "contexts": [{"name": "bot", "context": {"cluster": "local", "user": "bot",
                                                     "namespace": scenario.namespace}}],
            "current-context": "bot",
        }))
        kubeconfig.chmod(0o600)

        await scenario.start_controller()
        await scenario.apply(deployment("podinfo", image="podinfo:6.0.0"),
                             canary("podinfo", analysis=LONG_RUN))
        await scenario.wait_phase("podinfo", "Initialized", within=90)
        await new_revision(scenario, "podinfo", "6.0.1")

        assert await steer(scenario, "abort", "podinfo", kubeconfig=kubeconfig) == 0
        await scenario.wait_phase("podinfo", "Failed", within=60)
        bot = await kube.KubeClient.connect(kubeconfig=kubeconfig)
        async with bot:
            with pytest.raises(kube.ForbiddenError):
                await bot.patch(kube.CANARIES, "podinfo", {"spec": {"skipAnalysis": True}},
                                namespace=scenario.namespace)
            with pytest.raises(kube.ForbiddenError):
                await bot.patch_status(kube.CANARIES, "podinfo",
                                       {"status": {"steering": {"paused": True}}},
                                       namespace=scenario.namespace)
    finally:
        await cluster.akubectl("delete", "clusterrole", role_name, check=False)
