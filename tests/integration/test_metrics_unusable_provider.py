"""A run whose metrics provider cannot be used moves no traffic (docs/compatibility.md, Metrics).

``flaggerpy controller`` runs as a process on the local control plane with the Istio router:
the VirtualService it writes is the traffic split, so "no traffic moved" is checked on the
object itself, watched through the run, and by its ``resourceVersion``, which stays the
one it had when the canary was initialised (the object was never written during the run).

- a MetricTemplate whose ``provider.type`` no plugin serves fails the canary on the first tick;
- a provider that does not answer is a failed check at weight 0 on each first tick, rolled
  back at the threshold;
- with ``-hold-on-no-values`` the run waits at weight 0 for the provider and goes on once it
  answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from e2e.cluster.localcluster import free_port
from e2e.scenario import Scenario, canary, deployment
from e2e.scenarios.mesh import routes
from flaggerpy import kube
from flaggerpy.kube import JsonObject
from flaggerpy.providers import istio
from flaggerpy.runtime.informer import SharedInformerFactory

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]

VIRTUAL_SERVICES = "virtualservices.networking.istio.io"

ALL_PRIMARY = {"podinfo-primary": 100, "podinfo-canary": 0}




def template(name: str, *, provider_type: str, address: str) -> dict[str, Any]:
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "MetricTemplate",
        "metadata": {"name": name},
        "spec": {"provider": {"type": provider_type, "address": address},
                 "query": 'errors{namespace="{{ namespace }}"}'},
    }


def istio_canary(template_name: str, *, threshold: int) -> dict[str, Any]:
    """Two steps of 50 %, one template metric; a tick a second."""
    return canary("podinfo", provider="istio", analysis={
        "interval": "1s", "threshold": threshold, "stepWeight": 50, "maxWeight": 50,
        "metrics": [{"name": "errors", "templateRef": {"name": template_name},
                     "thresholdRange": {"max": 5}, "interval": "30s"}],
    })


@dataclass
class Watch:
    """Every version of the VirtualService's routes and of the Canary's weight the API server
    held while watched: informers, not polling, so a step that lasts one 1 s tick is seen."""

    routes: list[dict[str, int]] = field(default_factory=list)
    canary_weights: list[int] = field(default_factory=list)


@contextlib.asynccontextmanager
async def watching(scenario: Scenario) -> AsyncIterator[Watch]:
    """Informers of the namespace's VirtualServices and Canaries (the controller's own kind
    of cache, on a connection of the test's), recording every version of ``podinfo``."""
    seen = Watch()
    watcher = await kube.KubeClient.connect(kubeconfig=scenario.cluster.kubeconfig)
    caches = SharedInformerFactory(watcher, namespace=scenario.namespace)

    def follow(resource: kube.Resource, record: Callable[[JsonObject], None]) -> None:
        def added(obj: JsonObject) -> None:
            if kube.key_of(obj).name == "podinfo":
                record(obj)
        caches.informer(resource).add_handler(on_add=added,
                                              on_update=lambda _old, new: added(new))

    follow(istio.VIRTUAL_SERVICES, lambda obj: seen.routes.append(routes(obj)))
    follow(kube.CANARIES, lambda obj: seen.canary_weights.append(
        int((obj.get("status") or {}).get("canaryWeight") or 0)))
    task = asyncio.create_task(caches.start())
    try:
        async with asyncio.timeout(30):
            await caches.wait_synced()  # both hold the current versions
        yield seen
        await asyncio.sleep(0.5)  # and the last writes have reached them
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await watcher.aclose()


async def initialized(scenario: Scenario, metric_template: dict[str, Any], *,
                      threshold: int) -> str:
    """Applies the template, the target and its Canary; returns the VirtualService's
    resourceVersion once the canary is initialised."""
    await scenario.apply(metric_template, deployment("podinfo", image="podinfo:6.0.0"),
                         istio_canary(metric_template["metadata"]["name"], threshold=threshold))
    await scenario.wait_phase("podinfo", "Initialized", within=60)
    virtual_service = await scenario.get(VIRTUAL_SERVICES, "podinfo")
    assert routes(virtual_service) == ALL_PRIMARY
    assert virtual_service is not None
    return str(virtual_service["metadata"]["resourceVersion"])


async def new_revision(scenario: Scenario) -> None:
    await scenario.kubectl("set", "image", "deployment/podinfo", "podinfo=podinfo:6.0.1")


async def warnings(scenario: Scenario) -> list[str]:
    """The Warning Events' messages, one per occurrence (a repeated Event is counted)."""
    return [e["message"] for e in await scenario.events("podinfo") if e["type"] == "Warning"
            for _ in range(int(e.get("count") or 1))]


async def assert_untouched(scenario: Scenario, seen: Watch, resource_version: str) -> None:
    assert seen.routes == [ALL_PRIMARY], seen.routes  # one version: never written while watched
    assert len(seen.canary_weights) >= 2, seen  # the watch saw the run's status writes
    assert set(seen.canary_weights) == {0}, seen.canary_weights
    virtual_service = await scenario.get(VIRTUAL_SERVICES, "podinfo")
    assert routes(virtual_service) == ALL_PRIMARY
    assert virtual_service is not None
    assert virtual_service["metadata"]["resourceVersion"] == resource_version  # never written


async def test_a_provider_type_not_installed_fails_before_the_first_step(
    scenario: Scenario,
) -> None:
    await scenario.start_controller("-mesh-provider=istio")
    version = await initialized(
        scenario, template("vendor", provider_type="acme", address="http://127.0.0.1:1"),
        threshold=5)
    ns = scenario.namespace

    async with watching(scenario) as seen:
        await new_revision(scenario)
        status = await scenario.wait_phase("podinfo", ("Failed", "Succeeded"), within=60)
        await asyncio.sleep(1.5)  # a tick more: it stays failed, with the weights it had
    await assert_untouched(scenario, seen, version)

    assert status["phase"] == "Failed", status
    assert "failed checks threshold reached" not in json.dumps(await warnings(scenario))
    reason = (f"Halt podinfo.{ns} advancement metrics provider check failed: metric template "
              f"vendor.{ns} provider acme error: unknown flaggerpy.metrics provider 'acme'; "
              "installed: ")
    [condition] = status["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "Promoted", "False", "Failed")
    assert condition["message"].startswith(
        "Canary analysis failed, Deployment scaled to zero. Last failed check: " + reason)
    messages = await warnings(scenario)
    assert [m for m in messages if m.startswith(reason)], messages
    normal = [e["message"] for e in await scenario.events("podinfo") if e["type"] == "Normal"]
    assert f"New revision detected! Scaling up podinfo.{ns}" in normal  # the run did start
    assert f"Starting canary analysis for podinfo.{ns}" in normal
    assert f"Canary failed! Scaling down podinfo.{ns}" in messages
    target = await scenario.get("deployment", "podinfo")
    assert target is not None
    assert target["spec"]["replicas"] == 0


async def test_an_unreachable_provider_is_a_failed_check_at_weight_zero(
    scenario: Scenario,
) -> None:
    await scenario.start_controller("-mesh-provider=istio")
    port = free_port()  # nobody serves it
    version = await initialized(
        scenario, template("offline", provider_type="prometheus",
                           address=f"http://127.0.0.1:{port}"),
        threshold=2)
    ns = scenario.namespace

    async with watching(scenario) as seen:
        await new_revision(scenario)
        status = await scenario.wait_phase("podinfo", ("Failed", "Succeeded"), within=60)
    await assert_untouched(scenario, seen, version)

    assert status["phase"] == "Failed", status
    reason = (f"Halt podinfo.{ns} advancement metrics provider check failed: prometheus in "
              f"metric template offline.{ns} not available: running query failed: request "
              f"failed: cannot connect to http://127.0.0.1:{port}")
    [condition] = status["conditions"]
    assert condition["message"].startswith(
        "Canary analysis failed, Deployment scaled to zero. Last failed check: " + reason)
    messages = await warnings(scenario)
    halts = [m for m in messages if m.startswith(reason)]
    assert len(halts) == 2, messages  # one failed check per tick, at weight 0
    assert f"Rolling back podinfo.{ns} failed checks threshold reached 2" in messages


@dataclass
class LatePrometheus:
    """A Prometheus stand-in that starts answering when the test says so: 1 to any query."""

    port: int
    asked: list[str] = field(default_factory=list)
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.asked.append(request.query.get("query", ""))
        return web.json_response({"status": "success", "data": {
            "resultType": "vector", "result": [{"metric": {}, "value": [0, "1"]}]}})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/v1/query", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def aclose(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def test_with_hold_on_no_values_the_run_waits_at_weight_zero_for_the_provider(
    scenario: Scenario,
) -> None:
    await scenario.start_controller("-mesh-provider=istio", "-hold-on-no-values")
    late = LatePrometheus(free_port())
    version = await initialized(
        scenario, template("late", provider_type="prometheus",
                           address=f"http://127.0.0.1:{late.port}"),
        threshold=1)  # a single failed check would roll it back
    ns = scenario.namespace
    reason = (f"Halt podinfo.{ns} advancement metrics provider check failed: prometheus in "
              f"metric template late.{ns} not available: running query failed: request "
              f"failed: cannot connect to http://127.0.0.1:{late.port}")

    try:
        async with watching(scenario) as seen:
            await new_revision(scenario)
            await scenario.wait_phase("podinfo", "Progressing", within=30)
            for _ in range(100):  # three held ticks
                if len([m for m in await warnings(scenario) if m.startswith(reason)]) >= 3:
                    break
                await asyncio.sleep(0.3)
            status = await scenario.status("podinfo")
        await assert_untouched(scenario, seen, version)
        assert status["phase"] == "Progressing", status
        assert status.get("failedChecks", 0) == 0
        [condition] = status["conditions"]
        assert (condition["status"], condition["reason"]) == ("Unknown", "Progressing")
        assert condition["message"] == reason or condition["message"].startswith(reason)

        await late.start()
        async with watching(scenario) as after:
            status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=60)
        assert status["phase"] == "Succeeded", status
        assert {"podinfo-primary": 50, "podinfo-canary": 50} in after.routes, after.routes
        assert "vector(1)" in late.asked
        assert f'errors{{namespace="{ns}"}}' in late.asked
    finally:
        await late.aclose()
    events = json.dumps(await scenario.events("podinfo"))
    assert "Rolling back" not in events
