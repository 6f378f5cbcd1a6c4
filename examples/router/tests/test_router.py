"""The router against a real API server, and under the real controller.

Run with ``FLAGGERPY_KUBECONFIG`` naming a disposable cluster (flaggerpy's ``e2e/cluster/up``
starts one on loopback); without it these tests are skipped.
"""

from __future__ import annotations

from typing import Any

from flaggerpy_splitmap import SplitmapRouter

from flaggerpy import sdk
from flaggerpy.testing import Sandbox, deployment, provider_context


def canary_manifest(name: str = "podinfo") -> dict[str, Any]:
    return {
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": name},
        "spec": {
            "provider": "splitmap",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "service": {"port": 9898},
            "analysis": {"interval": "1s", "threshold": 2, "maxWeight": 50, "stepWeight": 25},
        },
    }


async def stored_split(sandbox: Sandbox) -> dict[str, Any]:
    split = await sandbox.get("ConfigMap", "podinfo-split")
    assert split is not None, "the split ConfigMap does not exist"
    return split


def weights_of(split: dict[str, Any]) -> tuple[str, str]:
    return split["data"]["primaryWeight"], split["data"]["canaryWeight"]


async def test_the_split_is_written_read_back_kept_and_reverted(
        flaggerpy_sandbox: Sandbox, flaggerpy_store: sdk.ObjectStore,
) -> None:
    [stored] = await flaggerpy_sandbox.apply(canary_manifest())
    canary = sdk.Canary.model_validate(stored)
    router = SplitmapRouter(ctx=provider_context(flaggerpy_store))

    await router.reconcile(canary)
    assert await router.get_routes(canary) == sdk.Weights.all_primary()
    split = await stored_split(flaggerpy_sandbox)
    assert weights_of(split) == ("100", "0")
    [owner] = split["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "Canary", "podinfo", stored["metadata"]["uid"], True)

    await router.set_routes(canary, sdk.Weights.to_canary(25))
    assert await router.get_routes(canary) == sdk.Weights(primary=75, canary=25)
    written = await stored_split(flaggerpy_sandbox)
    assert weights_of(written) == ("75", "25")

    await router.reconcile(canary)  # in the middle of a run: keeps the split
    await router.set_routes(canary, sdk.Weights.to_canary(25))  # the same split: no write
    steady = await stored_split(flaggerpy_sandbox)
    assert weights_of(steady) == ("75", "25")
    assert steady["metadata"]["resourceVersion"] == written["metadata"]["resourceVersion"]

    await router.finalize(canary)
    assert await flaggerpy_sandbox.get("ConfigMap", "podinfo-split") is None


async def test_the_controller_creates_the_split_when_it_initializes_a_canary(
        flaggerpy_sandbox: Sandbox,
) -> None:
    await flaggerpy_sandbox.start_controller()
    await flaggerpy_sandbox.apply(deployment("podinfo", image="podinfo:6.0.0"),
                                  canary_manifest())

    status = await flaggerpy_sandbox.wait_phase("podinfo", "Initialized", within=60)

    assert status["canaryWeight"] == 0
    assert weights_of(await stored_split(flaggerpy_sandbox)) == ("100", "0")
