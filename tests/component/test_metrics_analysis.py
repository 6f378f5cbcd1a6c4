"""The metric checks of an analysis tick, against a real Prometheus scraping counters we control.

A local exporter serves podinfo-style ``http_request_duration_seconds`` series whose counters
grow at set rates, and a real Prometheus scrapes it every second; the analyzer's builtin
queries (the "http" observer of the kubernetes provider) and MetricTemplates are evaluated
by Prometheus itself. The analyzer is judged by what the lifecycle engine gets back: pass or
fail, the value, Flagger's event text, the hold marker, and the
``flagger_canary_metric_analysis`` gauge.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from aiohttp import web

from e2e.prometheus import LocalPrometheus, ScrapeJob
from flaggerpy import plugins
from flaggerpy.canary.metrics_analysis import AnalysisOutcome, MetricsAnalyzer
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.metrics.prometheus import PrometheusProvider
from flaggerpy.models import Canary
from flaggerpy.settings import Settings
from flaggerpy.telemetry import Recorder
from tests.metrics_exporter import MetricsExporter

NAMESPACE = "test"


def serve_workload(exporter: MetricsExporter, target: str, *, ok: float, failed: float,
                   bucket: str) -> None:
    """Requests to ``target``'s pods: ``ok`` 2xx and ``failed`` 5xx per second, all of them
    taking between the bucket below ``bucket`` and ``bucket`` seconds."""
    pod = {"kubernetes_namespace": NAMESPACE, "kubernetes_pod_name": f"{target}-abc12-xyz34"}
    exporter.counter("http_request_duration_seconds_count", {**pod, "status": "200"},
                     per_second=ok)
    if failed:
        exporter.counter("http_request_duration_seconds_count", {**pod, "status": "500"},
                         per_second=failed)
    total = ok + failed
    for le in ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "+Inf"):
        reached = le == "+Inf" or float(le) >= float(bucket)
        exporter.counter("http_request_duration_seconds_bucket", {**pod, "le": le},
                         per_second=total if reached else 0.0)


@pytest.fixture(scope="module")
def exporter() -> Iterator[MetricsExporter]:
    with MetricsExporter() as running:
        # podinfo: 90 % success, every request between 250 and 500 ms: p99 = 497.5 ms.
        serve_workload(running, "podinfo", ok=9, failed=1, bucket="0.5")
        # healthy: 100 % success, every request between 25 and 50 ms: p99 = 49.75 ms.
        serve_workload(running, "healthy", ok=10, failed=0, bucket="0.05")
        yield running


@pytest.fixture(scope="module")
def prometheus(exporter: MetricsExporter) -> Iterator[LocalPrometheus]:
    with LocalPrometheus([ScrapeJob("exporter", [exporter.target])]) as server:
        yield server


@dataclass
class Store:
    """An informer cache stand-in: objects by namespace/name."""

    objects: dict[ObjectKey, Mapping[str, Any]] = field(default_factory=dict)

    def get(self, key: ObjectKey) -> Mapping[str, Any] | None:
        return self.objects.get(key)

    def put(self, obj: Mapping[str, Any]) -> None:
        meta = obj["metadata"]
        self.objects[ObjectKey(meta["namespace"], meta["name"])] = obj


@dataclass
class World:
    prometheus: LocalPrometheus
    templates: Store
    secrets: Store
    recorder: Recorder
    analyzer: MetricsAnalyzer
    built: list[PrometheusProvider]

    def gauge(self, metric: str, name: str = "podinfo") -> float | None:
        return self.recorder.registry.get_sample_value(
            "flagger_canary_metric_analysis",
            {"name": name, "namespace": NAMESPACE, "metric": metric},
        )


@pytest.fixture
async def world(prometheus: LocalPrometheus) -> AsyncIterator[World]:
    templates, secrets = Store(), Store()
    recorder = Recorder(process_collectors=False)
    built: list[PrometheusProvider] = []

    def counting_prometheus(**kwargs: Any) -> PrometheusProvider:
        provider = PrometheusProvider(**kwargs, backoff=0.01)
        built.append(provider)
        return provider

    registry: plugins.Registry[plugins.Factory] = plugins.Registry("flaggerpy.metrics")
    registry.register("prometheus", counting_prometheus)
    analyzer = MetricsAnalyzer(
        templates=templates, secrets=secrets.get,
        settings=Settings(metrics={"server": prometheus.url}, mesh={"provider": "kubernetes"}),
        telemetry=recorder, metrics_registry=registry,
    )
    yield World(prometheus, templates, secrets, recorder, analyzer, built)
    await analyzer.aclose()


def make_canary(*metrics: dict[str, Any], target: str = "podinfo", **spec: Any) -> Canary:
    body: dict[str, Any] = {
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
        "service": {"port": 9898},
        "analysis": {"interval": "10s", "threshold": 5, "stepWeight": 10,
                     "metrics": list(metrics)},
    }
    body.update(spec)
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": NAMESPACE}, "spec": body,
    })


def success_rate(**fields: Any) -> dict[str, Any]:
    return {"name": "request-success-rate", "interval": "10s", **fields}


def duration(**fields: Any) -> dict[str, Any]:
    return {"name": "request-duration", "interval": "10s", **fields}


def template(name: str, query: str, *, address: str, secret: str | None = None,
             provider_type: str = "prometheus") -> dict[str, Any]:
    provider: dict[str, Any] = {"type": provider_type, "address": address}
    if secret is not None:
        provider["secretRef"] = {"name": secret}
    return {"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"provider": provider, "query": query}}


def secret(name: str, version: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": NAMESPACE, "resourceVersion": version},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


async def settled(analyzer: MetricsAnalyzer, canary: Canary, *,
                  within: float = 30.0) -> AnalysisOutcome:
    """Runs the analysis until Prometheus has enough samples to answer (polls, never sleeps
    longer than needed): an outcome that is not "no values found"."""
    deadline = time.monotonic() + within
    while True:
        outcome = await analyzer.run(canary)
        if outcome.failure is None or not outcome.failure.no_values:
            return outcome
        if time.monotonic() > deadline:
            return outcome
        await asyncio.sleep(0.25)


# --- builtin metrics ------------------------------------------------------------------------------


async def test_success_rate_from_real_rates_passes(world: World) -> None:
    outcome = await settled(world.analyzer, make_canary(success_rate(thresholdRange={"min": 85})))
    assert outcome.passed, outcome.failure
    (result,) = outcome.results
    assert result.value == pytest.approx(90.0, abs=0.5)
    assert world.gauge("request-success-rate") == pytest.approx(90.0, abs=0.5)


@pytest.mark.parametrize("metric", [
    pytest.param(success_rate(thresholdRange={"min": 95}), id="threshold-range"),
    pytest.param(success_rate(threshold=95), id="deprecated-threshold"),
])
async def test_success_rate_below_the_minimum_fails(world: World, metric: dict[str, Any]) -> None:
    outcome = await settled(world.analyzer, make_canary(metric))
    assert not outcome.passed
    assert not outcome.hold
    assert outcome.failure is not None
    assert outcome.failure.message == "Halt podinfo.test advancement success rate 90.00% < 95%"
    assert not outcome.failure.error
    assert world.gauge("request-success-rate") == pytest.approx(90.0, abs=0.5)


async def test_request_duration_is_the_p99_in_whole_milliseconds(world: World) -> None:
    passing = await settled(world.analyzer, make_canary(duration(thresholdRange={"max": 500})))
    assert passing.passed, passing.failure
    assert passing.results[0].value == 497.0  # 497.5 ms truncated, as Go's Duration
    assert world.gauge("request-duration") == 0.497  # the gauge is in seconds

    failing = await world.analyzer.run(make_canary(duration(thresholdRange={"max": 400})))
    assert failing.failure is not None
    assert failing.failure.message == "Halt podinfo.test advancement request duration 497ms > 400ms"

    deprecated = await world.analyzer.run(make_canary(duration(threshold=400)))
    assert deprecated.failure is not None
    assert deprecated.failure.message == failing.failure.message


async def test_a_healthy_canary_passes_both_builtins(world: World) -> None:
    canary = make_canary(success_rate(thresholdRange={"min": 99}),
                         duration(thresholdRange={"max": 100}), target="healthy")
    outcome = await settled(world.analyzer, canary)
    assert outcome.passed, outcome.failure
    assert [r.value for r in outcome.results] == [100.0, 49.0]


async def test_no_traffic_is_flaggers_no_values_failure(world: World) -> None:
    canary = make_canary(success_rate(thresholdRange={"min": 99}), duration(threshold=500),
                         target="ghost")
    outcome = await world.analyzer.run(canary)
    assert (outcome.passed, outcome.hold) == (False, False)
    assert len(outcome.results) == 1  # the first failure stops the tick
    assert outcome.failure is not None
    assert outcome.failure.no_values
    assert outcome.failure.message == (
        "Halt advancement no values found for kubernetes metric request-success-rate probably "
        "ghost.test is not receiving traffic"
    )
    assert world.gauge("request-success-rate", name="ghost") is None


async def test_no_traffic_can_hold_instead_of_failing(world: World) -> None:
    canary = make_canary(duration(threshold=500), target="ghost")
    held = await world.analyzer.run(canary, hold_on_no_values=True)
    assert (held.passed, held.hold) == (False, True)
    assert held.failure is not None
    assert held.failure.message.startswith("Halt advancement no values found for kubernetes "
                                           "metric request-duration probably ghost.test")

    holding = MetricsAnalyzer(
        templates=world.templates, secrets=world.secrets,
        settings=Settings(metrics={"server": world.prometheus.url},
                          mesh={"provider": "kubernetes"}),
        telemetry=world.recorder, hold_on_no_values=True,
    )
    try:
        assert (await holding.run(canary)).hold
        # Any other failure still counts.
        failing = await settled(holding, make_canary(success_rate(threshold=99.5)))
        assert (failing.passed, failing.hold) == (False, False)
    finally:
        await holding.aclose()


async def test_a_service_target_keeps_its_mesh_observer(world: World) -> None:
    # Flagger picks Istio's queries for "kubernetes:service"; we keep the kubernetes ones.
    canary = make_canary(
        success_rate(thresholdRange={"min": 85}),
        targetRef={"apiVersion": "v1", "kind": "Service", "name": "podinfo"},
    )
    outcome = await settled(world.analyzer, canary)
    assert outcome.passed, outcome.failure


# --- inline queries ---------------------------------------------------------------------------


async def test_an_inline_query_is_judged_as_a_custom_metric(world: World) -> None:
    passing = await world.analyzer.run(make_canary(
        {"name": "two-and-a-half", "query": "vector(2.5)", "threshold": 3}))
    assert passing.passed
    assert world.gauge("two-and-a-half") == 2.5

    failing = await world.analyzer.run(make_canary(
        {"name": "two-and-a-half", "query": "vector(2.5)", "thresholdRange": {"max": 2}}))
    assert failing.failure is not None
    assert failing.failure.message == "Halt podinfo.test advancement two-and-a-half 2.50 > 2"


async def test_an_inline_query_answering_nan_is_no_values(world: World) -> None:
    outcome = await world.analyzer.run(make_canary(
        {"name": "nan", "query": "vector(0) / vector(0)", "threshold": 1}))
    assert outcome.failure is not None
    assert outcome.failure.message == "Halt advancement no values found for metric: nan"


async def test_an_inline_query_that_prometheus_refuses_is_an_error(world: World) -> None:
    outcome = await world.analyzer.run(make_canary({"name": "broken", "query": "sum("}))
    assert outcome.failure is not None
    assert outcome.failure.error
    assert outcome.failure.message.startswith("Prometheus query failed for broken: error response:")


# --- MetricTemplates ------------------------------------------------------------------------------


ERROR_RATIO = """
    sum(
      rate(
        http_request_duration_seconds_count{
          kubernetes_namespace="{{ namespace }}",
          kubernetes_pod_name=~"{{ target }}-.*",
          status=~"{{ variables.status }}"
        }[{{ interval }}]
      )
    )
    /
    sum(
      rate(
        http_request_duration_seconds_count{
          kubernetes_namespace="{{ namespace }}",
          kubernetes_pod_name=~"{{ target }}-.*"
        }[{{ interval }}]
      )
    )
"""


async def test_a_template_metric_renders_and_runs(world: World) -> None:
    world.templates.put(template("error-ratio", ERROR_RATIO, address=world.prometheus.url))
    ref = {"name": "error-ratio", "templateRef": {"name": "error-ratio"}, "interval": "10s",
           "templateVariables": {"status": "5.."}}
    passing = await settled(world.analyzer, make_canary({**ref, "thresholdRange": {"max": 0.2}}))
    assert passing.passed, passing.failure
    assert passing.results[0].value == pytest.approx(0.1, abs=0.01)
    assert world.gauge("error-ratio") == pytest.approx(0.1, abs=0.01)

    failing = await world.analyzer.run(make_canary({**ref, "thresholdRange": {"max": 0.05}}))
    assert failing.failure is not None
    assert failing.failure.message == "Halt podinfo.test advancement error-ratio 0.10 > 0.05"


async def test_a_template_metric_without_interval_gets_one_minute(world: World) -> None:
    # Flagger renders "[]" here, which Prometheus refuses (spec §10.2); the 1m default applies.
    world.templates.put(template("error-ratio", ERROR_RATIO, address=world.prometheus.url))
    canary = make_canary({"name": "error-ratio", "templateRef": {"name": "error-ratio"},
                          "templateVariables": {"status": "5.."}, "threshold": 0.2})
    with structlog.testing.capture_logs() as logs:
        outcome = await settled(world.analyzer, canary)
    assert outcome.passed, outcome.failure
    queries = [e["query"] for e in logs if e["event"] == "metric_template_query"]
    assert queries
    assert all("}[1m]" in q and "[]" not in q for q in queries)


async def test_template_failures_are_flaggers_errors(world: World) -> None:
    world.templates.put(template("unrenderable", "vector({{ variables.nope }})",
                                 address=world.prometheus.url))
    world.templates.put(template("no-such-type", "x", address="http://dd", provider_type="acme"))
    cases = {
        "missing": 'Metric template missing.test error: metrictemplate.flagger.app "missing" '
                   "not found",
        "unrenderable": "Metric template unrenderable.test query render error: line 1, column 8:"
                        ' variables has no entry for key "nope" (in {{ variables.nope }})',
        # Whatever else is installed in this environment is listed too (the example plugins).
        "no-such-type": "Metric template no-such-type.test provider acme error: unknown "
                        "flaggerpy.metrics provider 'acme'; installed: "
                        + ", ".join(plugins.metrics.names()),
    }
    for name, message in cases.items():
        outcome = await world.analyzer.run(make_canary(
            {"name": name, "templateRef": {"name": name}, "interval": "10s"}))
        assert outcome.failure is not None
        assert (outcome.failure.name, outcome.failure.message) == (name, message)
        assert outcome.failure.error


async def test_a_metric_with_nothing_to_run_is_an_error(world: World) -> None:
    outcome = await world.analyzer.run(make_canary({"name": "custom", "threshold": 1}))
    assert outcome.failure is not None
    assert outcome.failure.message == (
        "Metric query failed for no usable metrics template and query were configured")


async def test_builtins_run_before_templates_and_the_first_failure_stops(world: World) -> None:
    world.templates.put(template("one", "vector(1)", address=world.prometheus.url))
    canary = make_canary(
        {"name": "one", "templateRef": {"name": "one"}, "threshold": 0},  # would fail
        success_rate(thresholdRange={"min": 95}),  # fails first: builtins run first
        duration(threshold=1),  # never checked
    )
    outcome = await settled(world.analyzer, canary)
    assert [r.name for r in outcome.results] == ["request-success-rate"]


# --- credentials and provider lifetime ------------------------------------------------------------


@dataclass
class AuthPrometheus:
    """A Prometheus-compatible endpoint that answers 1 and records each Authorization header."""

    seen: list[str | None] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.BaseRequest) -> web.Response:
        self.seen.append(request.headers.get("Authorization"))
        return web.json_response({"status": "success", "data": {
            "resultType": "vector", "result": [{"metric": {}, "value": [0, "1"]}]}})


@pytest.fixture
async def auth_server(aiohttp_raw_server: Any) -> AuthPrometheus:
    fake = AuthPrometheus()
    server = await aiohttp_raw_server(fake.handle)
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_secret_credentials_reach_the_provider_and_rotate(
        world: World, auth_server: AuthPrometheus,
) -> None:
    world.templates.put(template("authed", "vector(1)", address=auth_server.url, secret="creds"))
    world.secrets.put(secret("creds", "1", username="flagger", password="first"))
    canary = make_canary({"name": "authed", "templateRef": {"name": "authed"}, "threshold": 1})

    for _ in range(3):
        assert (await world.analyzer.run(canary)).passed
    assert auth_server.seen == [basic("flagger", "first")] * 3
    assert len(world.built) == 1  # one provider per template and Secret version

    world.secrets.put(secret("creds", "2", token="rotated"))
    assert (await world.analyzer.run(canary)).passed
    assert auth_server.seen[-1] == "Bearer rotated"
    assert len(world.built) == 2
    old, new = world.built
    await world.analyzer.aclose()
    for provider in (old, new):  # the replaced one too
        with pytest.raises(Exception, match="is closed"):
            await provider.run_query("vector(1)")


async def test_secret_problems_are_reported_without_the_secret(
        world: World, auth_server: AuthPrometheus,
) -> None:
    world.templates.put(template("authed", "vector(1)", address=auth_server.url, secret="creds"))
    canary = make_canary({"name": "authed", "templateRef": {"name": "authed"}, "threshold": 1})

    missing = await world.analyzer.run(canary)
    assert missing.failure is not None
    assert missing.failure.message == (
        'Metric template authed.test secret creds error: secrets "creds" not found')

    world.secrets.put(secret("creds", "1", user="flagger", pass_word="hunter2"))
    wrong = await world.analyzer.run(canary)
    assert wrong.failure is not None
    assert wrong.failure.message == ("Metric template authed.test provider prometheus error: "
                                     "prometheus credentials does not contain a username")
    assert auth_server.seen == []


# --- provider availability (spec §2.3 step 8) ---------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_check_providers(world: World, auth_server: AuthPrometheus) -> None:
    world.templates.put(template("authed", "vector(1)", address=auth_server.url, secret="creds"))
    world.secrets.put(secret("creds", "1", token="t0ken"))
    canary = make_canary(success_rate(), {"name": "authed", "templateRef": {"name": "authed"}})
    assert await world.analyzer.check_providers(canary) == []
    assert auth_server.seen == ["Bearer t0ken"]

    port = free_port()
    broken = make_canary(
        duration(),
        {"name": "missing", "templateRef": {"name": "missing"}},
        {"name": "offline", "templateRef": {"name": "offline"}},
        metricsServer=f"http://127.0.0.1:{port}",
    )
    world.templates.put(template("offline", "x", address=f"http://127.0.0.1:{port}"))
    problems = await world.analyzer.check_providers(broken)
    assert problems == [
        "prometheus not available: running query failed: request failed: cannot connect to "
        f"http://127.0.0.1:{port} (Connect call failed ('127.0.0.1', {port}))",
        'metric template missing.test error: metrictemplate.flagger.app "missing" not found',
        "prometheus in metric template offline.test not available: running query failed: "
        f"request failed: cannot connect to http://127.0.0.1:{port} (Connect call failed "
        f"('127.0.0.1', {port}))",
    ]


async def test_an_unreachable_metrics_server_fails_the_builtin_check(world: World) -> None:
    port = free_port()
    canary = make_canary(success_rate(threshold=99), metricsServer=f"http://127.0.0.1:{port}")
    outcome = await world.analyzer.run(canary)
    assert outcome.failure is not None
    assert outcome.failure.error
    assert outcome.failure.message.startswith(
        f"Prometheus query failed: request failed: cannot connect to http://127.0.0.1:{port}")


async def test_no_metrics_passes(world: World) -> None:
    outcome = await world.analyzer.run(make_canary())
    assert (outcome.passed, outcome.results, outcome.failure) == (True, (), None)



# --- the start of a run: no traffic moves while a backend cannot be used ----------------------


async def test_a_run_starts_when_every_provider_answers(
        world: World, auth_server: AuthPrometheus,
) -> None:
    world.templates.put(template("authed", "vector(1)", address=auth_server.url, secret="creds"))
    world.secrets.put(secret("creds", "1", token="t0ken"))
    canary = make_canary(success_rate(), {"name": "authed", "templateRef": {"name": "authed"}})
    outcome = await world.analyzer.check_run_start(canary)
    assert (outcome.passed, outcome.failure, outcome.fatal) == (True, None, False)
    assert auth_server.seen == ["Bearer t0ken"]  # asked once, with the Secret's token


@pytest.mark.parametrize("hold", [False, True])
async def test_a_provider_type_not_installed_ends_the_run_at_once(
        world: World, hold: bool,
) -> None:
    world.templates.put(template("vendor", "errors", address=world.prometheus.url,
                                 provider_type="acme"))
    canary = make_canary({"name": "errors", "templateRef": {"name": "vendor"}})
    outcome = await world.analyzer.check_run_start(canary, hold_on_no_values=hold)
    assert (outcome.passed, outcome.fatal, outcome.hold) == (False, True, False)
    assert outcome.failure is not None
    problem = ("metric template vendor.test provider acme error: unknown flaggerpy.metrics "
               "provider 'acme'; installed: ")
    message = outcome.failure.message
    assert message.startswith(
        f"Halt podinfo.test advancement metrics provider check failed: {problem}"), message
    assert "prometheus" in message.rpartition("installed: ")[2].split(", ")
    # At initialisation the same problem stays Flagger's Warning text.
    [warning] = await world.analyzer.check_providers(canary)
    assert warning.startswith(problem)


async def test_an_offline_provider_fails_the_first_check_or_holds(world: World) -> None:
    port = free_port()
    world.templates.put(template("offline", "x", address=f"http://127.0.0.1:{port}"))
    canary = make_canary({"name": "errors", "templateRef": {"name": "offline"}})

    failing = await world.analyzer.check_run_start(canary)
    assert (failing.passed, failing.fatal, failing.hold) == (False, False, False)
    assert failing.failure is not None
    assert failing.failure.error
    assert failing.failure.message == (
        "Halt podinfo.test advancement metrics provider check failed: prometheus in metric "
        f"template offline.test not available: running query failed: request failed: cannot "
        f"connect to http://127.0.0.1:{port} (Connect call failed ('127.0.0.1', {port}))"
    )

    held = await world.analyzer.check_run_start(canary, hold_on_no_values=True)
    assert (held.passed, held.fatal, held.hold) == (False, False, True)
    assert held.failure == failing.failure

    # A missing template is the same kind of problem: it may still be applied.
    missing = make_canary({"name": "errors", "templateRef": {"name": "later"}})
    outcome = await world.analyzer.check_run_start(missing)
    assert (outcome.fatal, outcome.hold) == (False, False)
    assert outcome.failure is not None
    assert outcome.failure.message.endswith(
        'metric template later.test error: metrictemplate.flagger.app "later" not found')


async def test_a_provider_slow_to_answer_once_does_not_stop_the_run(
        world: World, aiohttp_raw_server: Any,
) -> None:
    """The first answer comes after the provider's timeout; its own retry gets the second."""
    answered: list[float] = []

    async def slow_once(request: web.BaseRequest) -> web.Response:
        answered.append(time.monotonic())
        if len(answered) == 1:
            await asyncio.sleep(2)
        return web.json_response({"status": "success", "data": {
            "resultType": "vector", "result": [{"metric": {}, "value": [0, "1"]}]}})

    server = await aiohttp_raw_server(slow_once)
    registry: plugins.Registry[plugins.Factory] = plugins.Registry("flaggerpy.metrics")
    registry.register("prometheus",
                      lambda **kwargs: PrometheusProvider(**kwargs, timeout=0.5, backoff=0.01))
    analyzer = MetricsAnalyzer(
        templates=world.templates, secrets=world.secrets.get,
        settings=Settings(metrics={"server": world.prometheus.url},
                          mesh={"provider": "kubernetes"}),
        telemetry=world.recorder, metrics_registry=registry,
    )
    world.templates.put(template("slow", "x", address=str(server.make_url("")).rstrip("/")))
    try:
        outcome = await analyzer.check_run_start(
            make_canary({"name": "errors", "templateRef": {"name": "slow"}}))
    finally:
        await analyzer.aclose()
    assert outcome.passed, outcome.failure
    assert len(answered) == 2
