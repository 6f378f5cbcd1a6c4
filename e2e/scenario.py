"""A canary scenario on the local control plane: workloads, metrics, the controller, and waits.

Used by the integration tests of the lifecycle and by benchmarks: it starts a gauge exporter and a
real Prometheus scraping it, runs ``flaggerpy controller`` as a process scoped to one namespace,
and offers the few verbs a scenario needs (apply, read status, wait for a phase).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from e2e.cluster.localcluster import LocalCluster
from e2e.exporter import GaugeExporter
from e2e.processes import ControllerProcess
from e2e.prometheus import LocalPrometheus, ScrapeJob
from e2e.simulator.process import SimulatorProcess
from flaggerpy.testing import deployment, wait_for_phase

__all__ = ["APP_METRIC", "Scenario", "canary", "container_image", "deployment",
           "metric_template", "patch_workload"]

APP_METRIC = "app_success_rate"


def container_image(obj: dict[str, Any] | None) -> str:
    """The first container's image of a Deployment or DaemonSet (which must exist)."""
    assert obj is not None, "the workload does not exist"
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


async def patch_workload(scenario: Scenario, name: str, patch: dict[str, Any],
                         *, kind: str = "deployment") -> None:
    """``kubectl patch <kind>/<name>`` with a strategic merge patch: image and env in one
    change, so one new revision rather than one per ``kubectl set``."""
    await scenario.kubectl("patch", f"{kind}/{name}", "--type=strategic", "-p", json.dumps(patch))


def metric_template(name: str, *, prometheus_url: str) -> dict[str, Any]:
    """A Prometheus MetricTemplate over the exporter's gauge for the canary's target."""
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "MetricTemplate",
        "metadata": {"name": name},
        "spec": {
            "provider": {"type": "prometheus", "address": prometheus_url},
            "query": APP_METRIC + '{namespace="{{ namespace }}",target="{{ target }}"}',
        },
    }


def canary(
    name: str,
    *,
    target: str | None = None,
    kind: str = "Deployment",
    provider: str = "kubernetes",
    analysis: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A Canary of ``target`` (default: ``name``) with a short blue/green analysis."""
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name},
        "spec": {
            "provider": provider,
            "targetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target or name},
            "progressDeadlineSeconds": 60,
            "service": {"port": 9898},
            "analysis": analysis or {
                "interval": "2s",
                "threshold": 2,
                "iterations": 2,
                "metrics": [{
                    "name": "app-success-rate",
                    "templateRef": {"name": "app-success-rate"},
                    "thresholdRange": {"min": 90},
                    "interval": "30s",
                }],
            },
            **spec,
        },
    }


class Scenario:
    """Everything one scenario runs, in one namespace; ``aclose()`` stops it all."""

    def __init__(self, cluster: LocalCluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.exporter = GaugeExporter()
        self.prometheus: LocalPrometheus | None = None
        self.simulator: SimulatorProcess | None = None
        self.controllers: list[ControllerProcess] = []

    async def start(self, *, mesh: bool = False, simulator_args: Sequence[str] = ()) -> Scenario:
        """Starts the exporter and Prometheus; with ``mesh``, also the traffic simulator.

        The simulator routes traffic through the VirtualServices of this namespace and exports
        Istio's metrics, which Prometheus scrapes beside the exporter's gauges.
        """
        await self.exporter.start()
        jobs = [ScrapeJob("app", [self.exporter.target])]
        if mesh:
            self.simulator = SimulatorProcess(
                kubeconfig=self.cluster.kubeconfig, namespaces=[self.namespace],
                args=list(simulator_args),
            ).start()
            await asyncio.to_thread(self.simulator.wait_ready)
            jobs.append(ScrapeJob("simulator", [self.simulator.target]))
        prometheus = LocalPrometheus(jobs)
        self.prometheus = await asyncio.to_thread(prometheus.start)
        await self.apply(metric_template("app-success-rate", prometheus_url=self.prometheus_url))
        return self

    @property
    def prometheus_url(self) -> str:
        assert self.prometheus is not None
        return self.prometheus.url

    async def set_success_rate(self, target: str, value: float, *, within: float = 30) -> None:
        """Sets the gauge and waits until Prometheus answers the new value.

        Without the wait, an analysis tick right after the change could still read the old value
        (or none yet): the scenario would test scrape timing instead of the canary.
        """
        self.exporter.set(APP_METRIC, value, namespace=self.namespace, target=target)
        assert self.prometheus is not None
        query = f'{APP_METRIC}{{namespace="{self.namespace}",target="{target}"}}'
        deadline = time.monotonic() + within
        while True:
            result = await asyncio.to_thread(self.prometheus.query, query)
            if result and float(result[0]["value"][1]) == value:  # type: ignore[index]
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Prometheus did not see {query} = {value} in {within}s")
            await asyncio.sleep(0.2)

    async def start_controller(
        self, *args: str, kubeconfig: Path | None = None
    ) -> ControllerProcess:
        """Starts ``flaggerpy controller`` for this namespace; as the cluster admin by default.

        ``kubeconfig`` runs it as someone else, e.g. the chart's ServiceAccount (its token).
        """
        controller = ControllerProcess(
            kubeconfig=kubeconfig or self.cluster.kubeconfig,
            args=[
                f"-namespace={self.namespace}",
                f"-metrics-server={self.prometheus_url}",
                "-min-analysis-interval=1s",
                *args,
            ],
            name=f"controller-{len(self.controllers)}",
        )
        self.controllers.append(controller.start())
        await asyncio.to_thread(controller.wait_ready)
        return controller

    async def apply(self, *objects: dict[str, Any]) -> None:
        body = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        await self.cluster.akubectl("apply", "-n", self.namespace, "-f", "-",
                                    input=json.dumps(body))

    async def kubectl(self, *args: str, check: bool = True) -> str:
        result = await self.cluster.akubectl(*args, "-n", self.namespace, check=check)
        return result.stdout

    async def get(self, kind: str, name: str) -> dict[str, Any] | None:
        result = await self.cluster.akubectl("get", kind, name, "-n", self.namespace,
                                             "-o", "json", check=False)
        if result.returncode != 0:
            return None
        obj: dict[str, Any] = json.loads(result.stdout)
        return obj

    async def status(self, name: str) -> dict[str, Any]:
        obj = await self.get("canary", name)
        return dict((obj or {}).get("status") or {})

    async def events(self, name: str) -> list[dict[str, Any]]:
        out = await self.kubectl("get", "events", "-o", "json",
                                 "--field-selector", f"involvedObject.name={name}")
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")

    async def wait_phase(
        self, name: str, phases: str | Sequence[str], *, within: float = 120.0,
        seen: list[str] | None = None,
    ) -> dict[str, Any]:
        """Polls the Canary until its phase is one of ``phases``; records each phase seen."""
        return await wait_for_phase(
            lambda: self.status(name), name=name, phases=phases, within=within, seen=seen,
            logs=lambda: "\n".join(c.output()[-4000:] for c in self.controllers))

    async def aclose(self) -> None:
        for controller in self.controllers:
            controller.stop()
        if self.simulator is not None:
            await asyncio.to_thread(self.simulator.stop)
        if self.prometheus is not None:
            await asyncio.to_thread(self.prometheus.stop)
        await self.exporter.aclose()
