"""Bad input against the real API server and the real controller process (issue 20).

Every input is created in a namespace watched by a running ``flaggerpy controller``. It is
either rejected by the API server with a message naming the field, or accepted and then
reported: a Canary ends ``Failed`` with a condition message or gets a Warning Event (or is
``Initialized``, when its target exists and Flagger would read the spec as valid: an analysis
interval Go cannot parse is 60 s there, silently, and here too, with a Warning naming it), a
MetricTemplate or AlertProvider gets a ``Ready`` condition, each within a bound and in a
readable message (no traceback, no Python repr, not the size of the input). Through all of it
the controller stays up, ``/healthz`` answers 200, no exception but flaggerpy's own errors
reaches its log, and a healthy canary created alongside is initialised and then promoted
after the bad input was sent.

The inputs: manifests generated with hypothesis from the CRD schemas
(:mod:`tests.fuzz_manifests`; ``FLAGGERPY_FUZZ_EXAMPLES`` per kind, 12 by default, drawn
derandomized so ``make test`` always tries the same 36), the 29 hand-written hostile
manifests of :data:`HOSTILE` (invalid durations, wrong and absent targets, a spec near and one
past the request size limit, deep nesting, link-local, metadata and non-HTTP addresses, a
missing Secret), and the 10 hostile analyses of :data:`ANALYSIS_CASES` (20 objects), which
only a running analysis reaches: query templates that nest or blow up, metrics backends,
webhooks and alert providers at link-local, metadata or non-HTTP addresses, Secrets that do
not exist. 85 inputs in ``make test``; the module prints the count when it is done. A longer run:
``FLAGGERPY_FUZZ_EXAMPLES=100`` (300 generated manifests, about three minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from e2e.cluster.localcluster import LocalCluster
from flaggerpy import kube
from flaggerpy.testing import (
    TEST_LABEL,
    ControllerProcess,
    WebhookReceiver,
    deployment,
    namespace_name,
    receiving,
)
from tests.fuzz_manifests import Generated, manifests

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds"),
              pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600)]

EXAMPLES: Final = int(os.environ.get("FLAGGERPY_FUZZ_EXAMPLES", "12"))
"""Generated manifests per kind; ``make test`` keeps the default, a longer run raises it."""

BOUND: Final = 60.0
"""Seconds an accepted input has to be reported (the controller retries with backoff)."""

IMAGE: Final = "ghcr.io/stefanprodan/podinfo:6.0.0"
RESOURCES: Final = {"Canary": kube.CANARIES, "MetricTemplate": kube.METRIC_TEMPLATES,
                    "AlertProvider": kube.ALERT_PROVIDERS}
UNREADABLE: Final = ("Traceback", "object at 0x", "<class ")
TRANSIENT: Final = "not ready: waiting for rollout to finish"
CLASS_NAMED: Final = re.compile(r"^[A-Z][A-Za-z]*(Error|Exception): ")
"""An Event text that starts with a Python class name, which Flagger's never do."""
"""A Warning every new canary gets while its primary starts: not a report about the input."""


# -- the harness --------------------------------------------------------------------------------


@dataclass
class Harness:
    """The namespace, a client, the controller and the healthy canary beside the bad input."""

    client: kube.KubeClient
    namespace: str
    controller: ControllerProcess
    tried: int = 0
    rejected: dict[str, str] = field(default_factory=dict)

    async def submit(self, manifest: dict[str, Any]) -> kube.KubeError | None:
        """Creates the object; the API server's refusal, or None when it was accepted."""
        self.tried += 1
        try:
            with large_bodies():
                await self.client.create(RESOURCES[manifest["kind"]], manifest,
                                         namespace=self.namespace)
        except kube.KubeError as error:
            if error.status == 0 or error.status >= 500:
                raise  # the API server failing is not an answer about the input
            self.rejected[manifest["metadata"]["name"]] = error.message
            return error
        return None

    async def apply(self, obj: dict[str, Any]) -> None:
        """Server-side applies a Deployment or a flagger.app object in the namespace."""
        with large_bodies():
            await self.client.apply(RESOURCES.get(obj["kind"], kube.DEPLOYMENTS), obj,
                                    namespace=self.namespace, force=True)

    async def reports(self) -> dict[tuple[str, str], str]:
        """What the controller has said so far about each object, by (kind, name): a Canary's
        ``Failed`` status, else its first Warning Event, else its ``Initialized`` phase (or any
        phase when it is suspended); a template's or provider's ``Ready`` condition."""
        said: dict[tuple[str, str], str] = {}
        for event in (await self.client.list(kube.EVENTS, namespace=self.namespace)).items:
            involved = event.get("involvedObject") or {}
            message = str(event.get("message"))
            if event.get("type") == "Warning" and TRANSIENT not in message:
                said.setdefault((involved.get("kind", ""), involved.get("name", "")),
                                "Warning Event: " + message)
        for kind, resource in RESOURCES.items():
            for obj in (await self.client.list(resource, namespace=self.namespace)).items:
                status = obj.get("status") or {}
                conditions = status.get("conditions") or []
                name = obj["metadata"]["name"]
                if kind == "Canary" and status.get("phase") == "Failed":
                    messages = [c.get("message") or "" for c in conditions]
                    said[(kind, name)] = "Failed: " + " / ".join(messages)
                elif kind == "Canary" and status.get("phase") == "Initialized":
                    # A valid spec with a target that exists: reconciled, nothing to report.
                    said.setdefault((kind, name), "Initialized")
                elif kind == "Canary" and status.get("phase") and obj["spec"].get("suspend"):
                    # Suspended: seen, and left alone as asked (Flagger skips it too).
                    said.setdefault((kind, name), f"suspended, {status['phase']}")
                elif kind != "Canary":
                    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
                    if ready is not None:
                        said[(kind, name)] = f"Ready={ready['status']}: {ready.get('message')}"
        return said

    async def wait_reported(
            self, objects: Sequence[tuple[str, str]], *, within: float = BOUND,
    ) -> dict[tuple[str, str], str]:
        """Polls until the controller reported every object; fails naming those it did not."""
        deadline = time.monotonic() + within
        while True:
            said = await self.reports()
            missing = [o for o in objects if o not in said]
            if not missing:
                return said
            if time.monotonic() > deadline:
                pytest.fail(f"not reported within {within:g}s: {missing}\n"
                            f"{self.controller.output()[-6000:]}")
            self.check_alive()
            await asyncio.sleep(1.0)

    async def wait_warning(self, name: str, says: str, *, within: float = BOUND) -> None:
        """Polls until a Warning Event of ``name`` contains ``says``."""
        deadline = time.monotonic() + within
        while True:
            events = (await self.client.list(kube.EVENTS, namespace=self.namespace)).items
            warned = [str(e.get("message")) for e in events if e.get("type") == "Warning"
                      and (e.get("involvedObject") or {}).get("name") == name]
            if any(says in w for w in warned):
                return
            if time.monotonic() > deadline:
                pytest.fail(f"{name}: no Warning saying {says!r} within {within:g}s: {warned}")
            self.check_alive()
            await asyncio.sleep(1.0)

    def check_alive(self) -> None:
        code = self.controller.exit_code()
        assert code is None, f"the controller exited {code}:\n{self.controller.output()[-6000:]}"
        assert self.controller.get("/healthz")[0] == 200, "the controller's /healthz failed"

    def unexpected(self) -> list[str]:
        """Log lines with a traceback of an exception that is not one of flaggerpy's own
        errors (a KeyError, a RecursionError, ...): a bug that bad input must never reach.
        flaggerpy's errors are how a reconcile reports a problem, retried by the queue."""
        found = []
        for line in self.controller.log_lines():
            last = str(line.get("exception") or "").strip().splitlines()[-1:]
            if line.get("level") == "critical" or (last and not last[0].startswith(
                    "flaggerpy.")):
                found.append(json.dumps(line)[:3000])
        return found

    async def phase(self, name: str) -> str:
        obj = await kube.ignore_not_found(
            self.client.get(kube.CANARIES, name, namespace=self.namespace))
        return str(((obj or {}).get("status") or {}).get("phase") or "")

    async def wait_phase(self, name: str, phases: set[str], *, within: float = 120) -> str:
        deadline = time.monotonic() + within
        while (phase := await self.phase(name)) not in phases:
            if time.monotonic() > deadline:
                pytest.fail(f"canary {name} is {phase or 'without phase'} after {within}s, "
                            f"wanted {sorted(phases)}\n{self.controller.output()[-6000:]}")
            self.check_alive()
            await asyncio.sleep(0.5)
        return phase


@contextlib.contextmanager
def large_bodies() -> Iterator[None]:
    """aiohttp warns that a body over 1 MiB "might lock the event loop": the huge specs and
    templates are sent on purpose, and only by the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        yield


def blue_green(name: str, *, target: str | None = None, **analysis: Any) -> dict[str, Any]:
    """A Canary with a one-iteration, one-failure blue/green analysis on the kubernetes router."""
    return {
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": {"name": name},
        "spec": {
            "provider": "kubernetes",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target or name},
            "progressDeadlineSeconds": 60,
            "service": {"port": 9898},
            "analysis": {"interval": "1s", "threshold": 1, "iterations": 1, **analysis},
        },
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def harness(cluster: LocalCluster) -> AsyncIterator[Harness]:
    """The controller on a namespace of this module's, with a healthy canary initialised beside
    the bad input; after all of it, the healthy canary must still be promoted and the
    controller be up. One for the module: starting it and promoting the canary is most of
    the time a test would take."""
    namespace = namespace_name("bad-input")
    await cluster.akubectl("create", "namespace", namespace)
    await cluster.akubectl("label", "namespace", namespace, f"{TEST_LABEL}=true")
    client = await kube.KubeClient.connect(kubeconfig=cluster.kubeconfig)
    controller = ControllerProcess(
        kubeconfig=cluster.kubeconfig,
        args=[f"-namespace={namespace}", "-min-analysis-interval=1s"], name="bad-input")
    try:
        for obj in (deployment("healthy", image=IMAGE, replicas=1), blue_green("healthy")):
            await client.apply(RESOURCES.get(obj["kind"], kube.DEPLOYMENTS), obj,
                               namespace=namespace, force=True)
        controller.start()
        await asyncio.to_thread(controller.wait_ready)
        harness = Harness(client, namespace, controller)
        await harness.wait_phase("healthy", {"Initialized"})
        yield harness
        # The bad input did not stop the controller: a new revision of the healthy target
        # is analysed and promoted.
        harness.check_alive()
        await client.patch(kube.DEPLOYMENTS, "healthy", {"spec": {"template": {"spec": {
            "containers": [{"name": "healthy", "image": IMAGE + "-next"}]}}}},
            namespace=namespace, patch_type=kube.PatchType.STRATEGIC)
        await harness.wait_phase("healthy", {"Progressing", "Promoting", "Finalising",
                                             "Succeeded"})
        await harness.wait_phase("healthy", {"Succeeded"})
        harness.check_alive()
        assert not harness.unexpected(), "\n".join(harness.unexpected())
        print(f"bad input: {harness.tried} inputs tried, {len(harness.rejected)} rejected "
              "by the API server, the rest reported by the controller")
    finally:
        controller.stop()
        await client.aclose()
        await cluster.akubectl("delete", "namespace", namespace, "--wait=false", check=False)


def readable(message: str, *, limit: int = 4096) -> bool:
    return bool(message.strip()) and len(message) <= limit and not any(
        marker in message for marker in UNREADABLE)


# -- generated from the CRD schemas -------------------------------------------------------------


def draw(strategy: st.SearchStrategy[Generated], count: int) -> list[Generated]:
    """``count`` examples of ``strategy``, the same ones on every run (derandomized)."""
    drawn: list[Generated] = []

    @settings(max_examples=count, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), deadline=None)
    @given(strategy)
    def collect(value: Generated) -> None:
        drawn.append(value)

    collect()
    return drawn


def renamed(generated: Generated, name: str) -> Generated:
    return Generated({**generated.manifest, "metadata": {"name": name}}, generated.breakage)


def with_target(generated: Generated) -> Generated | None:
    """A Canary meant to be valid that targets a Deployment, retargeted at one named like the
    Canary (which the test creates) and given a Service port if it has none; None for
    anything else."""
    spec = generated.manifest["spec"]
    target = spec.get("targetRef") or {}
    if generated.kind != "Canary" or generated.breakage is not None or \
            target.get("kind") != "Deployment":
        return None
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": generated.name}
    service = spec.get("service") or {"port": 9898}  # optional in the CRD, needed to go on
    return Generated({**generated.manifest, "spec": {**spec, "targetRef": target,
                                                     "service": service}}, None)


async def test_generated_manifests_are_rejected_naming_the_field_or_reported(
        harness: Harness) -> None:
    inputs = [
        renamed(generated, f"gen-{kind.lower()}-{index:03d}")
        for kind in ("Canary", "MetricTemplate", "AlertProvider")
        for index, generated in enumerate(draw(manifests(kind, "x"), EXAMPLES))
    ]
    accepted: list[tuple[str, str]] = []
    for generated in inputs:
        targeted = with_target(generated)
        if targeted is not None:
            # A Deployment target that exists, so the rest of the spec is reconciled too.
            generated = targeted
            await harness.apply(deployment(generated.name, image=IMAGE, replicas=1))
        error = await harness.submit(generated.manifest)
        if error is None:
            assert generated.breakage is None, (
                f"the API server accepted {generated.name} with {generated.breakage.how} at "
                f"{generated.breakage.field}: {json.dumps(generated.manifest)[:2000]}")
            accepted.append((generated.kind, generated.name))
            continue
        named = error.message + " " + " ".join(cause.field for cause in error.causes)
        wanted = generated.breakage.name if generated.breakage is not None else "spec"
        assert wanted in named, (generated.name, wanted, error.message)
    said = await harness.wait_reported(accepted)
    for key in accepted:
        assert readable(said[key]), (key, said[key])
        print(f"{key[0]}/{key[1]}: {said[key][:300]}")
    print(f"generated: {len(inputs)} manifests, {len(accepted)} accepted and reported, "
          f"{len(inputs) - len(accepted)} rejected naming the field")


# -- hand-written hostile manifests -------------------------------------------------------------


def canary_with(
        name: str, edit: Callable[[dict[str, Any]], None], *, existing: bool = False,
) -> dict[str, Any]:
    """A Canary of an absent Deployment (``existing``: of one named like it, which the test
    creates), edited by ``edit(spec)``."""
    manifest = blue_green(name, target=name if existing else "absent")
    edit(manifest["spec"])
    return manifest


def deep(levels: int) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for _ in range(levels):
        nested = {"n": nested}
    return nested


def template(name: str, query: str, **provider: Any) -> dict[str, Any]:
    return {"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": name},
            "spec": {"provider": {"type": "prometheus", **provider}, "query": query}}


def alert_provider(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "flagger.app/v1beta1", "kind": "AlertProvider",
            "metadata": {"name": name}, "spec": {"type": "slack", **spec}}


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return edit


@dataclass(frozen=True)
class Hostile:
    manifest: dict[str, Any]
    rejected_naming: str | None  # the API server must refuse it, naming this; None: accepted
    says: str | None = None  # accepted: a Warning Event of it must contain this

    @property
    def target(self) -> str | None:
        """The Deployment the test creates for it (a Canary not of ``absent``)."""
        spec = self.manifest["spec"]
        name = (spec.get("targetRef") or {}).get("name")
        if self.manifest["kind"] != "Canary" or name in ("absent", "", None):
            return None
        return str(name)


HUGE: Final = "x" * 1_400_000  # just under etcd's 1.5 MiB request limit, with the rest
HOSTILE: Final = [
    Hostile(canary_with("interval-1x", _set("analysis.interval", "1x")), "spec.analysis.interval"),
    Hostile(canary_with("interval-neg", _set("analysis.interval", "-5s")),
            "spec.analysis.interval"),
    Hostile(canary_with("interval-hours", _set("analysis.interval", "999999h")),
            "spec.analysis.interval"),
    # Go cannot parse these: 60 s, as in Flagger, and a Warning naming the field.
    Hostile(canary_with("interval-junk", _set("analysis.interval", "1s-5x"), existing=True), None,
            says="spec.analysis.interval '1s-5x'"),
    Hostile(canary_with("interval-overflow", _set("analysis.interval", "9" * 30 + "s"),
                        existing=True), None, says="spec.analysis.interval"),
    Hostile(canary_with("interval-zero", _set("analysis.interval", "0s"), existing=True), None),
    Hostile(canary_with("webhook-timeout", _set("analysis.webhooks", [
        {"name": "t", "url": "http://127.0.0.1:1/", "timeout": "1sx"}]), existing=True), None),
    Hostile(canary_with("deadline-huge", _set("progressDeadlineSeconds", 1e300)), None),
    Hostile(canary_with("threshold-fraction", _set("analysis.threshold", 1.5)), None),
    Hostile(canary_with("weight-negative", _set("analysis.stepWeight", -10)),
            "spec.analysis.stepWeight"),
    Hostile(canary_with("range-inverted", _set("analysis.metrics", [
        {"name": "m", "thresholdRange": {"min": 10, "max": 1}}])), "thresholdRange"),
    Hostile(canary_with("target-kind", _set("targetRef.kind", "ConfigMap")),
            "spec.targetRef.kind"),
    Hostile(canary_with("target-daemonset", _set("targetRef.kind", "DaemonSet")), None),
    Hostile(canary_with("target-service", _set("targetRef", {
        "apiVersion": "v1", "kind": "Service", "name": "absent"})), None),
    Hostile(canary_with("target-wrong-api", _set("targetRef.apiVersion", "batch/v1")), None),
    Hostile(canary_with("target-empty-name", _set("targetRef.name", "")), None),
    Hostile(canary_with("huge-spec", _set("service.apex", {"annotations": {"big": HUGE}}),
                        existing=True), None),
    Hostile(canary_with("too-huge-spec", _set("service.apex", {"annotations": {
        "a": HUGE, "b": HUGE, "c": HUGE}})), "too large"),  # past the 3 MiB request limit
    Hostile(canary_with("deep-unknown", _set("service.unknown", deep(200)), existing=True), None),
    Hostile(canary_with("metadata-server", _set(
        "metricsServer", "http://169.254.169.254/latest/meta-data/"), existing=True), None),
    # Refused by the API server for good (422): said once, no traceback, retried at the interval.
    Hostile(canary_with("service-name", _set("service.name", "Not_A_DNS_Name!"),
                        existing=True), None, says="Invalid"),
    Hostile(canary_with("apex-label", _set("service.apex", {"labels": {"bad key!": "x"}}),
                        existing=True), None, says="Invalid"),
    Hostile(canary_with("port-name", _set("service.portName", "x" * 100), existing=True), None,
            says="Invalid"),
    Hostile(template("tmpl-metadata", "vector(1)", address="http://169.254.169.254/"), None),
    Hostile(template("tmpl-file", "vector(1)", address="file:///etc/passwd"), None),
    Hostile(template("tmpl-no-secret", "vector(1)", address="http://127.0.0.1:1",
                     secretRef={"name": "absent"}), None),
    Hostile(alert_provider("alert-metadata", address="http://[fe80::1]/hooks"), None),
    Hostile(alert_provider("alert-gopher", address="gopher://127.0.0.1:70/_x"), None),
    Hostile(alert_provider("alert-no-address"), "spec"),
]


async def test_hostile_manifests_are_rejected_or_reported(harness: Harness) -> None:
    accepted: list[tuple[str, str]] = []
    for case in HOSTILE:
        manifest = case.manifest
        if case.target is not None:
            await harness.apply(deployment(case.target, image=IMAGE, replicas=1))
        error = await harness.submit(manifest)
        name = manifest["metadata"]["name"]
        if case.rejected_naming is None:
            assert error is None, f"{name} was rejected: {error}"
            accepted.append((manifest["kind"], name))
        else:
            assert error is not None, f"{name} was accepted"
            named = error.message + " " + " ".join(c.field for c in error.causes)
            assert case.rejected_naming in named, (name, error.message[:2000])
    said = await harness.wait_reported(accepted)
    for key in accepted:
        assert readable(said[key]), (key, said[key][:5000])
        print(f"{key[0]}/{key[1]}: {said[key][:300]}")
    for case in HOSTILE:
        if case.says is not None:
            await harness.wait_warning(case.manifest["metadata"]["name"], case.says)
    events = (await harness.client.list(kube.EVENTS, namespace=harness.namespace)).items
    class_named = [str(e.get("message")) for e in events
                   if CLASS_NAMED.match(str(e.get("message")))]
    assert not class_named, class_named  # Flagger's plain texts, the class name in the log
    refused = {c.manifest["metadata"]["name"] for c in HOSTILE if c.says == "Invalid"}
    tracebacks = [line for line in harness.controller.log_lines()
                  if line.get("name") in refused and line.get("exception")]
    assert not tracebacks, json.dumps(tracebacks[:2])[:3000]
    print(f"hostile: {len(HOSTILE)} manifests, {len(accepted)} accepted and reported")


# -- hostile input that only an analysis reaches ------------------------------------------------


VECTOR_OF_ONE: Final = {"status": "success", "data": {"resultType": "vector", "result": [
    {"metric": {}, "value": [0, "1"]}]}}
DOUBLING: Final = ('{{ $x := "0123456789abcdef" }}' + '{{ $x = printf "%s%s" $x $x }}' * 40
                   + "{{ $x }}")


@dataclass(frozen=True)
class AnalysisCase:
    """A canary (and its template) whose analysis meets hostile input; it must fail, and its
    Warning Events must contain ``says``."""

    name: str
    analysis: dict[str, Any]
    says: str
    query: str | None = None  # a MetricTemplate named like the case, on the fake Prometheus
    address: str | None = None  # instead of the fake Prometheus
    secret: str | None = None
    alert: dict[str, Any] | None = None  # an AlertProvider spec, told of the rollback


def metric(name: str) -> dict[str, Any]:
    return {"metrics": [{"name": "m", "templateRef": {"name": name},
                         "thresholdRange": {"min": 0}, "interval": "30s"}]}


def hook(url: str) -> dict[str, Any]:
    return {"webhooks": [{"name": "gate", "type": "pre-rollout", "url": url, "timeout": "2s"}]}


ANALYSIS_CASES: Final = [
    AnalysisCase("q-deep", metric("q-deep"), "max expression depth exceeded",
                 query="{{" + "(" * 3000 + "name" + ")" * 3000 + "}}"),
    AnalysisCase("q-wide", metric("q-wide"), "width or precision above",
                 query='{{ printf "%999999999s" name }}',
                 alert={"type": "slack", "address": "gopher://127.0.0.1:70/_alert"}),
    AnalysisCase("q-doubling", metric("q-doubling"), "value longer than", query=DOUBLING,
                 alert={"type": "msteams", "secretRef": {"name": "absent"}}),
    AnalysisCase("q-huge", metric("q-huge"), "query template longer than",
                 query="vector(1) " + " " * 1_100_000),
    AnalysisCase("q-range", metric("q-range"), "not supported in metric queries",
                 query="{{ range $i := variables }}{{ end }}"),
    # Not blocked (Flagger does not either): asked like any address, and not available.
    AnalysisCase("q-metadata", metric("q-metadata"), "not available",
                 query="vector(1)", address="http://169.254.169.254:1/"),
    AnalysisCase("q-file", metric("q-file"), "is not a valid URL", query="vector(1)",
                 address="file:///etc/passwd"),
    AnalysisCase("q-secret", metric("q-secret"), "absent", query="vector(1)", secret="absent"),
    AnalysisCase("h-link-local", hook("http://[fe80::1]:1/gate"), "fe80::1"),
    AnalysisCase("h-gopher", hook("gopher://127.0.0.1:70/_gate"), "unsupported URL scheme"),
]


async def test_hostile_input_met_during_an_analysis_fails_the_canary_readably(
        harness: Harness) -> None:
    async with receiving() as prometheus:
        prometheus.answer("/api/v1/query", json=VECTOR_OF_ONE)
        await run_analysis_cases(harness, prometheus)
    print(f"analysis: {len(ANALYSIS_CASES)} hostile analyses, each failed with its reason")


async def run_analysis_cases(harness: Harness, prometheus: WebhookReceiver) -> None:
    for case in ANALYSIS_CASES:
        objects: list[dict[str, Any]] = [deployment(case.name, image=IMAGE, replicas=1)]
        if case.query is not None:
            provider: dict[str, Any] = {"address": case.address or prometheus.url("")}
            if case.secret is not None:
                provider["secretRef"] = {"name": case.secret}
            objects.append(template(case.name, case.query, **provider))
        analysis = dict(case.analysis)
        if case.alert is not None:
            objects.append(alert_provider(case.name, **case.alert))
            analysis["alerts"] = [{"name": "a", "severity": "info",
                                   "providerRef": {"name": case.name}}]
        objects.append(blue_green(case.name, **analysis))
        for obj in objects:
            harness.tried += obj["kind"] != "Deployment"
            await harness.apply(obj)
    await asyncio.gather(*(harness.wait_phase(c.name, {"Initialized"}) for c in ANALYSIS_CASES))
    for case in ANALYSIS_CASES:
        await harness.client.patch(kube.DEPLOYMENTS, case.name, {"spec": {"template": {
            "spec": {"containers": [{"name": case.name, "image": IMAGE + "-next"}]}}}},
            namespace=harness.namespace, patch_type=kube.PatchType.STRATEGIC)
    await asyncio.gather(*(harness.wait_phase(c.name, {"Failed"}) for c in ANALYSIS_CASES))
    events = (await harness.client.list(kube.EVENTS, namespace=harness.namespace)).items
    for case in ANALYSIS_CASES:
        warnings = [str(e.get("message")) for e in events
                    if (e.get("involvedObject") or {}).get("name") == case.name
                    and e.get("type") == "Warning"]
        saying = [w for w in warnings if case.says in w]
        assert saying, (case.name, warnings)
        assert all(readable(w) for w in warnings), (case.name, warnings)
        print(f"{case.name}: {saying[0][:300]}")
