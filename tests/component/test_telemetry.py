"""Metric names and labels (Flagger's and controller-runtime's), and the probe/metrics server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flaggerpy.telemetry import Recorder
from flaggerpy.telemetry_server import TelemetryServer

# name -> (type, label names), as Flagger's recorder.go and controller-runtime define them
EXPECTED = {
    "flagger_info": ("gauge", {"version", "mesh_provider"}),
    "flagger_canary_total": ("gauge", {"namespace"}),
    "flagger_canary_status": ("gauge", {"name", "namespace"}),
    "flagger_canary_weight": ("gauge", {"workload", "namespace"}),
    "flagger_canary_duration_seconds": ("histogram", {"name", "namespace"}),
    "flagger_canary_metric_analysis": ("gauge", {"name", "namespace", "metric"}),
    "flagger_canary_successes": (
        "counter", {"name", "namespace", "deployment_strategy", "analysis_status"}),
    "flagger_canary_failures": (
        "counter", {"name", "namespace", "deployment_strategy", "analysis_status"}),
    "controller_runtime_reconcile": ("counter", {"controller", "result"}),
    "controller_runtime_reconcile_errors": ("counter", {"controller"}),
    "controller_runtime_terminal_reconcile_errors": ("counter", {"controller"}),
    "controller_runtime_reconcile_time_seconds": ("histogram", {"controller"}),
    "controller_runtime_max_concurrent_reconciles": ("gauge", {"controller"}),
    "controller_runtime_active_workers": ("gauge", {"controller"}),
    "workqueue_depth": ("gauge", {"name"}),
    "workqueue_adds": ("counter", {"name"}),
    "workqueue_retries": ("counter", {"name"}),
    "workqueue_queue_duration_seconds": ("histogram", {"name"}),
    "workqueue_work_duration_seconds": ("histogram", {"name"}),
}


def families(recorder: Recorder) -> dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]:
    body, _ = recorder.render()
    return {
        family.name: (family.type, [(s.name, s.labels, s.value) for s in family.samples])
        for family in text_string_to_metric_families(body.decode())
    }


def exercise(recorder: Recorder) -> None:
    """Sets every metric once, as the controller would."""
    recorder.set_info(version="0.1.0", mesh_provider="istio")
    recorder.set_total(namespace="test", total=3)
    recorder.set_status(name="podinfo", namespace="test", phase="Progressing")
    recorder.set_weight(name="podinfo", namespace="test", primary=90, canary=10)
    recorder.set_duration(name="podinfo", namespace="test", seconds=0.2)
    recorder.set_analysis(name="podinfo", namespace="test", metric="request-success-rate",
                          value=99.5)
    recorder.inc_successes(name="podinfo", namespace="test", deployment_strategy="canary",
                           analysis_status="completed")
    recorder.inc_failures(name="podinfo", namespace="test", deployment_strategy="blue-green",
                          analysis_status="completed")
    recorder.controller_metrics("canary", workers=2)
    recorder.queue_metrics("canary")


def test_every_metric_is_declared_with_its_type_before_any_value() -> None:
    found = families(Recorder(process_collectors=False))
    for name, (kind, _) in EXPECTED.items():
        assert name in found, name
        assert found[name][0] == kind, name


def test_every_metric_has_exactly_flaggers_labels() -> None:
    recorder = Recorder(process_collectors=False)
    exercise(recorder)
    found = families(recorder)
    for name, (_, labels) in EXPECTED.items():
        samples = found[name][1]
        assert samples, f"{name} has no sample"
        for sample_name, sample_labels, _ in samples:
            assert set(sample_labels) - {"le"} == labels, sample_name


def test_counters_are_exposed_with_total_and_without_created_series() -> None:
    recorder = Recorder(process_collectors=False)
    exercise(recorder)
    body, _ = recorder.render()
    text = body.decode()
    assert "flagger_canary_successes_total{" in text
    assert "controller_runtime_reconcile_total{" in text
    assert "workqueue_adds_total{" in text
    assert "_created" not in text


def test_flagger_values() -> None:
    recorder = Recorder(process_collectors=False)
    exercise(recorder)
    value = recorder.registry.get_sample_value
    assert value("flagger_info", {"version": "0.1.0", "mesh_provider": "istio"}) == 1
    assert value("flagger_canary_total", {"namespace": "test"}) == 3
    weight = "flagger_canary_weight"
    assert value(weight, {"workload": "podinfo-primary", "namespace": "test"}) == 90
    assert value(weight, {"workload": "podinfo", "namespace": "test"}) == 10
    assert value("flagger_canary_metric_analysis", {
        "name": "podinfo", "namespace": "test", "metric": "request-success-rate"}) == 99.5
    assert value("flagger_canary_duration_seconds_bucket", {
        "name": "podinfo", "namespace": "test", "le": "0.25"}) == 1
    assert value("flagger_canary_successes_total", {
        "name": "podinfo", "namespace": "test", "deployment_strategy": "canary",
        "analysis_status": "completed"}) == 1


def test_duration_buckets_are_gos_defaults() -> None:
    recorder = Recorder(process_collectors=False)
    recorder.set_duration(name="p", namespace="t", seconds=1)
    buckets = [
        labels["le"] for name, labels, _ in families(recorder)["flagger_canary_duration_seconds"][1]
        if name.endswith("_bucket")
    ]
    assert buckets == ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5",
                       "5.0", "10.0", "+Inf"]


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        pytest.param("Progressing", 0, id="progressing"),
        pytest.param("Failed", 2, id="failed"),
        pytest.param("Succeeded", 1, id="succeeded"),
        pytest.param("Initialized", 1, id="initialized"),
        pytest.param("WaitingPromotion", 1, id="waiting-promotion"),
    ],
)
def test_status_encoding(phase: str, expected: int) -> None:
    recorder = Recorder(process_collectors=False)
    recorder.set_status(name="podinfo", namespace="test", phase=phase)
    labels = {"name": "podinfo", "namespace": "test"}
    assert recorder.registry.get_sample_value("flagger_canary_status", labels) == expected


def test_runtime_metrics_start_at_zero() -> None:
    recorder = Recorder(process_collectors=False)
    recorder.controller_metrics("canary", workers=2)
    recorder.queue_metrics("canary")
    value = recorder.registry.get_sample_value
    for result in ("success", "error", "requeue", "requeue_after"):
        labels = {"controller": "canary", "result": result}
        assert value("controller_runtime_reconcile_total", labels) == 0
    for name in ("controller_runtime_reconcile_errors_total",
                 "controller_runtime_terminal_reconcile_errors_total",
                 "controller_runtime_active_workers",
                 "controller_runtime_reconcile_time_seconds_count"):
        assert value(name, {"controller": "canary"}) == 0, name
    assert value("controller_runtime_max_concurrent_reconciles", {"controller": "canary"}) == 2
    for name in ("workqueue_depth", "workqueue_adds_total", "workqueue_retries_total",
                 "workqueue_queue_duration_seconds_count", "workqueue_work_duration_seconds_count"):
        assert value(name, {"name": "canary"}) == 0, name


def test_recorders_are_isolated() -> None:
    first = Recorder(process_collectors=False)
    second = Recorder(process_collectors=False)
    first.set_total(namespace="test", total=1)
    assert second.registry.get_sample_value("flagger_canary_total", {"namespace": "test"}) is None


def test_process_collectors_are_included_by_default() -> None:
    assert "process_cpu_seconds_total" in Recorder().render()[0].decode()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[TelemetryServer], asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []

    def start(server: TelemetryServer) -> asyncio.Task[None]:
        tasks.append(asyncio.create_task(server.start()))
        return tasks[-1]

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_server_endpoints(serve: Callable[[TelemetryServer], asyncio.Task[None]]) -> None:
    recorder = Recorder(process_collectors=False)
    recorder.set_info(version="0.1.0", mesh_provider="kubernetes")
    ready = False
    server = TelemetryServer(recorder, host="127.0.0.1", port=0, ready=lambda: ready)
    assert TelemetryServer.needs_leader_election is False
    _ = serve(server)
    await asyncio.wait_for(server.serving.wait(), 5)
    base = f"http://127.0.0.1:{server.port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/healthz") as response:
            assert response.status == 200
            assert await response.text() == "OK"
        async with http.get(f"{base}/readyz") as response:
            assert response.status == 503
        ready = True
        async with http.get(f"{base}/readyz") as response:
            assert response.status == 200
        async with http.get(f"{base}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
        assert 'flagger_info{mesh_provider="kubernetes",version="0.1.0"} 1.0' in text
        async with http.get(
            f"{base}/metrics", headers={"Accept": "application/openmetrics-text"}
        ) as response:
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
            assert (await response.text()).endswith("# EOF\n")
        async with http.get(f"{base}/nothing") as response:
            assert response.status == 404


async def test_server_closes_its_socket_when_cancelled(
        serve: Callable[[TelemetryServer], asyncio.Task[None]],
) -> None:
    server = TelemetryServer(Recorder(process_collectors=False), host="127.0.0.1", port=0)
    task = serve(server)
    await asyncio.wait_for(server.serving.wait(), 5)
    port = server.port
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not server.serving.is_set()
    with pytest.raises(RuntimeError):
        _ = server.port
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
