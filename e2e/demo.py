"""``make demo``: a canary release and an A/B test on Istio, good version then bad, live.

Everything runs on this machine: the local control plane (built on first use), the mesh traffic
simulator standing in for the mesh's data plane, a real Prometheus scraping it, the load tester
and ``flaggerpy controller``. A ``backend`` gets a canary release (weighted steps, builtin and
MetricTemplate metrics, a load-test webhook); a ``frontend`` gets an A/B test on a header where
the mesh routes by header (Istio), a blue/green release where it does not (Linkerd's
TrafficSplit). A good version is promoted, then a bad one (half its responses are 500s) is rolled
back. The terminal shows each canary's phase, weight, metrics against their thresholds and a
progress bar; a summary table closes the run. Ctrl-C, an error or the end stops every process it
started. ``--mesh`` (``make demo MESH=linkerd``) picks the mesh; Istio is the default.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from e2e.cluster.localcluster import LocalCluster
from e2e.cluster.pytest_plugin import FLAGGERPY_CRDS
from e2e.processes import RUN_TAG, ControllerProcess, LoadTesterProcess, wait_until_gone
from e2e.prometheus import LocalPrometheus, ScrapeJob
from e2e.simulator.process import SimulatorProcess

NAMESPACE = "demo"
TERMINAL_PHASES = ("Succeeded", "Failed")


def workload(name: str, *, image: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    labels = {"app": name}
    container: dict[str, Any] = {
        "name": name, "image": image, "ports": [{"name": "http", "containerPort": 9898}],
        "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 2, "progressDeadlineSeconds": 60,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


@dataclass(frozen=True, slots=True)
class DemoMesh:
    """What the demo does differently per mesh: the provider, the namespace's injection
    marker, the error-rate query over the mesh's own series, and the frontend's strategy."""

    provider: str
    injection: tuple[str, str, str]
    """``kubectl`` verb, key and value that enrol the namespace in the mesh."""
    error_rate_query: str
    """Percent of the canary's responses that were 5xx, with ``variables.reporter``."""
    reporter: str
    """The proxy side whose counts the query reads: the one beside the canary's pods."""
    header_routing: bool
    """Whether the mesh routes by header: the frontend gets an A/B test, else blue/green."""


MESHES: dict[str, DemoMesh] = {
    "istio": DemoMesh(
        provider="istio",
        injection=("label", "istio-injection", "enabled"),
        error_rate_query=(
            '100 - sum(rate(istio_requests_total{reporter="{{ variables.reporter }}",'
            'destination_workload_namespace="{{ namespace }}",'
            'destination_workload="{{ target }}",response_code!~"5.*"}[{{ interval }}]))'
            ' / sum(rate(istio_requests_total{reporter="{{ variables.reporter }}",'
            'destination_workload_namespace="{{ namespace }}",'
            'destination_workload="{{ target }}"}[{{ interval }}])) * 100'),
        reporter="destination",
        header_routing=True,
    ),
    "linkerd": DemoMesh(
        provider="linkerd",
        injection=("annotate", "linkerd.io/inject", "enabled"),
        error_rate_query=(
            '100 - sum(rate(response_total{direction="{{ variables.reporter }}",'
            'namespace="{{ namespace }}",deployment="{{ target }}",'
            'classification!="failure"}[{{ interval }}]))'
            ' / sum(rate(response_total{direction="{{ variables.reporter }}",'
            'namespace="{{ namespace }}",deployment="{{ target }}"}[{{ interval }}])) * 100'),
        reporter="inbound",
        header_routing=False,
    ),
}
"""``--mesh`` → what the demo runs on it; each mesh is one the traffic simulator knows."""


def error_rate_template(prometheus_url: str, mesh: DemoMesh) -> dict[str, Any]:
    """A MetricTemplate with templateVariables: the canary's share of 5xx, in percent."""
    query = mesh.error_rate_query
    return {
        "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
        "metadata": {"name": "error-rate"},
        "spec": {"provider": {"type": "prometheus", "address": prometheus_url}, "query": query},
    }


def backend_canary(*, mesh: DemoMesh, interval: str, load_test_cmd: str,
                   loadtester: str) -> dict[str, Any]:
    return {
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "backend"},
        "spec": {
            "provider": mesh.provider,
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "backend"},
            "progressDeadlineSeconds": 60,
            "service": {"port": 9898, "retries": {"attempts": 3, "perTryTimeout": "1s"}},
            "analysis": {
                "interval": interval, "threshold": 2, "maxWeight": 60, "stepWeight": 20,
                "metrics": [
                    {"name": "request-success-rate", "thresholdRange": {"min": 99},
                     "interval": "30s"},
                    {"name": "request-duration", "thresholdRange": {"max": 500},
                     "interval": "30s"},
                    {"name": "error-rate", "templateRef": {"name": "error-rate"},
                     "templateVariables": {"reporter": mesh.reporter},
                     "thresholdRange": {"max": 1}, "interval": "30s"},
                ],
                "webhooks": [{
                    "name": "load-test", "type": "rollout", "url": f"{loadtester}/",
                    "timeout": "5s", "metadata": {"type": "cmd", "cmd": load_test_cmd},
                }],
            },
        },
    }


def frontend_canary(*, mesh: DemoMesh, interval: str, load_test_cmd: str,
                    loadtester: str) -> dict[str, Any]:
    """An A/B test of the insiders (``x-canary: insider``) where the mesh routes by header;
    elsewhere blue/green: the same iterations with the users all on the primary meanwhile, so
    the new version is measured on a load test sent to ``frontend-canary``, as Flagger's
    blue/green tutorials do."""
    if mesh.header_routing:
        strategy: dict[str, Any] = {"match": [{"headers": {"x-canary": {"exact": "insider"}}}]}
    else:
        strategy = {"webhooks": [{
            "name": "load-test", "type": "rollout", "url": f"{loadtester}/",
            "timeout": "5s", "metadata": {"type": "cmd", "cmd": load_test_cmd},
        }]}
    return {
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "frontend"},
        "spec": {
            "provider": mesh.provider,
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "frontend"},
            "progressDeadlineSeconds": 60,
            "service": {"port": 9898},
            "analysis": {
                "interval": interval, "threshold": 2, "iterations": 4, **strategy,
                "metrics": [
                    {"name": "request-success-rate", "thresholdRange": {"min": 99},
                     "interval": "30s"},
                ],
            },
        },
    }


# -- the live view ----------------------------------------------------------------------------


@dataclass
class Outcome:
    canary: str
    revision: str
    expected: str
    phase: str = ""
    seconds: float = 0.0
    steps: list[str] = field(default_factory=list)

    @property
    def as_expected(self) -> bool:
        return self.phase == self.expected


def parse_metrics(text: str, name: str) -> dict[str, float]:
    """The ``flagger_canary_metric_analysis`` values of one canary's target."""
    values: dict[str, float] = {}
    pattern = re.compile(r'^flagger_canary_metric_analysis\{(?P<labels>[^}]*)\} (?P<value>\S+)$')
    for line in text.splitlines():
        match = pattern.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        if labels.get("name") == name and labels.get("namespace") == NAMESPACE:
            values[labels["metric"]] = float(match["value"])
    return values


def bar(done: float, total: float, width: int = 24) -> str:
    share = 0.0 if total <= 0 else max(0.0, min(1.0, done / total))
    filled = round(share * width)
    return "[" + "#" * filled + "." * (width - filled) + f"] {share * 100:3.0f}%"


def threshold_text(metric: dict[str, Any]) -> str:
    limits = metric.get("thresholdRange") or {}
    parts = []
    if "min" in limits:
        parts.append(f">= {limits['min']}")
    if "max" in limits:
        parts.append(f"<= {limits['max']}")
    return " and ".join(parts) or "-"


def describe(canary: dict[str, Any], values: dict[str, float]) -> list[str]:
    spec, status = canary.get("spec") or {}, canary.get("status") or {}
    analysis = spec.get("analysis") or {}
    phase = status.get("phase") or "-"
    weight = int(status.get("canaryWeight") or 0)
    iterations = int(status.get("iterations") or 0)
    if analysis.get("iterations"):
        progress = bar(iterations, analysis["iterations"])
        where = f"iteration {iterations}/{analysis['iterations']}"
    else:
        progress = bar(weight, analysis.get("maxWeight") or 100)
        where = f"weight {weight}%"
    if phase == "Succeeded":
        progress = bar(1, 1)
    lines = [f"  {canary['metadata']['name']:<10} {phase:<17} {where:<16} {progress}"
             f"  failed checks {status.get('failedChecks') or 0}/{analysis.get('threshold')}"]
    for metric in analysis.get("metrics") or []:
        value = values.get(metric["name"])
        if value is not None and metric["name"] == "request-duration":
            value *= 1000  # recorded in seconds, as Flagger does; the threshold is in ms
        shown = "-" if value is None else f"{value:.2f}"
        lines.append(f"      {metric['name']:<22} {shown:>10}   threshold {threshold_text(metric)}")
    return lines


class Screen:
    """Redraws in place on a terminal; prints only changes elsewhere (CI logs, pipes)."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self._last = ""

    def show(self, title: str, lines: list[str]) -> None:
        text = "\n".join([title, *lines])
        if text == self._last:
            return
        self._last = text
        if self.tty:
            sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")
        else:
            sys.stdout.write(text + "\n\n")
        sys.stdout.flush()


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


# -- the run ------------------------------------------------------------------------------------


class Demo:
    def __init__(self, *, mesh: str, interval: str, keep: bool) -> None:
        self.mesh_name = mesh
        self.mesh = MESHES[mesh]
        self.interval = interval
        self.keep = keep
        self.cluster = LocalCluster("demo")
        self.stack: list[Callable[[], None]] = []
        self.screen = Screen()
        self.outcomes: list[Outcome] = []
        self.controller: ControllerProcess | None = None

    def started(self, stop: Callable[[], None]) -> None:
        self.stack.append(stop)

    def stop_all(self) -> None:
        while self.stack:
            stop = self.stack.pop()
            with contextlib.suppress(Exception):
                stop()

    async def kubectl(self, *args: str, input: str | None = None) -> str:
        result = await self.cluster.akubectl(*args, "-n", NAMESPACE, input=input)
        return result.stdout

    async def apply(self, *objects: dict[str, Any]) -> None:
        await self.kubectl("apply", "-f", "-", input=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": list(objects)}))

    async def canaries(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(
            await self.kubectl("get", "canaries", "-o", "json"))["items"]
        return sorted(items, key=lambda c: c["metadata"]["name"])

    async def setup(self) -> None:
        say("starting the local control plane (the first run builds it: about 10 minutes)")
        if not self.keep:
            self.started(self.cluster.down)  # before up: a stop mid-start removes it too
        starting = asyncio.ensure_future(asyncio.to_thread(self.cluster.up, install_crds=True))
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            # The thread starting it cannot be stopped: let it finish, so that what it
            # started is in the cluster's state when the stop removes it.
            with contextlib.suppress(Exception):
                await starting
            raise
        await asyncio.to_thread(self.cluster.install_crds, sorted(FLAGGERPY_CRDS.glob("*.yaml")))
        await self.cluster.akubectl("create", "namespace", NAMESPACE, check=False)
        verb, key, value = self.mesh.injection
        await self.cluster.akubectl(verb, "namespace", NAMESPACE, f"{key}={value}",
                                    "--overwrite")
        say(f"starting the {self.mesh_name} traffic simulator, the load tester and Prometheus")
        simulator = SimulatorProcess(
            kubeconfig=self.cluster.kubeconfig, namespaces=[NAMESPACE], rps=20,
            mesh=self.mesh_name,
            args=["--user-header=x-canary=insider:0.2"],
        ).start()
        self.started(simulator.stop)
        await asyncio.to_thread(simulator.wait_ready)
        self.simulator = simulator
        loadtester = LoadTesterProcess().start()
        self.started(loadtester.stop)
        self.loadtester = loadtester
        controller = ControllerProcess(
            kubeconfig=self.cluster.kubeconfig,
            args=[f"-namespace={NAMESPACE}", f"-mesh-provider={self.mesh.provider}",
                  "-min-analysis-interval=1s", "-log-level=info"],
        )
        prometheus = LocalPrometheus([
            ScrapeJob("simulator", [simulator.target]),
            ScrapeJob("flaggerpy", [f"127.0.0.1:{controller.port}"]),
        ])
        await asyncio.to_thread(prometheus.start)
        self.started(prometheus.stop)
        self.prometheus = prometheus
        controller.args.append(f"-metrics-server={prometheus.url}")
        say("starting flaggerpy controller")
        self.started(controller.stop)
        controller.start()
        await asyncio.to_thread(controller.wait_ready)
        self.controller = controller

    async def deploy(self) -> None:
        say("deploying frontend and backend v6.0.0 with their canaries")
        def load_test(workload: str) -> str:
            host = f"{workload}-canary.{NAMESPACE}"
            return f"hey -z 4s -q 5 -c 2 -host {host} {self.simulator.ingress_url}/"

        await self.apply(
            error_rate_template(self.prometheus.url, self.mesh),
            workload("frontend", image="podinfo:6.0.0"),
            workload("backend", image="podinfo:6.0.0"),
            backend_canary(mesh=self.mesh, interval=self.interval,
                           load_test_cmd=load_test("backend"), loadtester=self.loadtester.url),
            frontend_canary(mesh=self.mesh, interval=self.interval,
                            load_test_cmd=load_test("frontend"), loadtester=self.loadtester.url),
        )
        await self.watch("initialization", {"frontend": ("Initialized",),
                                            "backend": ("Initialized",)}, within=120)

    async def watch(
        self, title: str, wanted: dict[str, tuple[str, ...]], *, within: float,
        outcomes: list[Outcome] | None = None,
    ) -> None:
        """Redraws until every canary in ``wanted`` reaches one of its phases."""
        assert self.controller is not None
        started = time.monotonic()
        while True:
            canaries = await self.canaries()
            metrics_text = self.controller.get("/metrics")[1]
            lines: list[str] = []
            done = True
            for canary in canaries:
                name = canary["metadata"]["name"]
                target = canary["spec"]["targetRef"]["name"]
                lines += describe(canary, parse_metrics(metrics_text, target))
                phase = (canary.get("status") or {}).get("phase") or ""
                for outcome in outcomes or []:
                    if outcome.canary == name and (not outcome.steps or outcome.steps[-1] != phase):
                        outcome.steps.append(phase)
                if name in wanted and phase not in wanted[name]:
                    done = False
            elapsed = time.monotonic() - started
            self.screen.show(f"flaggerpy demo: {title} ({elapsed:.0f}s)", lines)
            if done:
                for outcome in outcomes or []:
                    phase_now = next((c.get("status") or {}).get("phase", "") for c in canaries
                                     if c["metadata"]["name"] == outcome.canary)
                    outcome.phase, outcome.seconds = phase_now, round(elapsed, 1)
                return
            if elapsed > within:
                raise TimeoutError(f"{title}: not done after {within:.0f}s")
            await asyncio.sleep(1)

    async def release(self, title: str, image: str, *, env: dict[str, str], expected: str) -> None:
        say(f"{title}: {image}" + (f" with {env}" if env else ""))
        outcomes = [Outcome(name, image, expected) for name in ("backend", "frontend")]
        for name in ("backend", "frontend"):
            await self.kubectl("set", "image", f"deployment/{name}", f"{name}={image}")
            if env:
                await self.kubectl("set", "env", f"deployment/{name}",
                                   *(f"{k}={v}" for k, v in env.items()))
        await asyncio.sleep(1)
        await self.watch(title, {"frontend": TERMINAL_PHASES, "backend": TERMINAL_PHASES},
                         within=300, outcomes=outcomes)
        self.outcomes += outcomes

    def summary(self) -> bool:
        rows = [("canary", "revision", "expected", "outcome", "seconds", "phases")]
        for o in self.outcomes:
            phases = " > ".join(p for p in o.steps if p)
            rows.append((o.canary, o.revision, o.expected, o.phase, f"{o.seconds:.0f}", phases))
        widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
        print()
        for index, row in enumerate(rows):
            cells = [str(c).ljust(w) for c, w in zip(row[:5], widths, strict=True)]
            print("  ".join(cells) + "  " + row[5])
            if index == 0:
                print("  ".join("-" * w for w in widths) + "  " + "-" * 6)
        ok = all(o.as_expected for o in self.outcomes)
        print("\nall canaries ended as expected" if ok
              else "\nSOME CANARIES DID NOT END AS EXPECTED")
        return ok

    async def run(self) -> bool:
        await self.setup()
        await self.deploy()
        await self.release("a good version", "podinfo:6.0.1", env={}, expected="Succeeded")
        await self.release("a bad version", "podinfo:6.0.2", env={"FAULT_RATE": "0.5"},
                           expected="Failed")
        return self.summary()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh", choices=sorted(MESHES), default="istio",
                        help="the mesh the canaries run on (default istio)")
    parser.add_argument("--interval", default="5s", help="analysis interval (default 5s)")
    parser.add_argument("--keep", action="store_true",
                        help="leave the cluster running (stop it: e2e/cluster/down --name demo)")
    args = parser.parse_args(argv)
    if not shutil.which("hey"):
        print("the load-test webhook needs `hey` (Debian package hey; make demo installs it)")
        return 2
    # Everything started from here on inherits the tag, so what is left can be found at the end.
    tag = os.environ.setdefault(RUN_TAG, secrets.token_hex(6))
    demo = Demo(mesh=args.mesh, interval=args.interval, keep=args.keep)
    loop = asyncio.new_event_loop()
    task = loop.create_task(demo.run())
    # Ctrl-C, a kill, or the terminal closing (SIGHUP): each one stops everything started.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, task.cancel)
    started = time.monotonic()
    try:
        ok = loop.run_until_complete(task)
    except asyncio.CancelledError:
        print("\ninterrupted: stopping everything")
        ok = False
    except Exception as error:
        print(f"\nthe demo failed: {error}")
        if demo.controller is not None:
            print("last controller log lines:\n" + "\n".join(
                demo.controller.output().splitlines()[-20:]))
        ok = False
    finally:
        demo.stop_all()
        loop.close()
    left = {pid: command for pid, command in wait_until_gone(tag).items()
            if not (args.keep and str(demo.cluster.state_dir) in command)}
    took = f"demo took {time.monotonic() - started:.0f}s"
    if left:
        print(f"{took}; still running:\n" + "\n".join(
            f"  {pid} {command}" for pid, command in sorted(left.items())))
        return 1
    print(f"{took}; no process left running" + (" but the cluster (--keep)" if args.keep else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
