"""The load tester's own Prometheus metrics, in a registry of their own.

Flagger's load tester exposes only Go's runtime and process metrics; these
are flaggerpy additions (so nothing built for Flagger expects other names):

- counter ``flaggerpy_loadtester_task_requests_total{type, outcome}``: a task
  request was accepted; outcome ``started``, ``joined`` (a blocking retry
  shared a run in progress), ``replayed`` (a retry of the same delivery got
  the finished run's result) or ``deduplicated`` (a background task already
  running)
- counter ``flaggerpy_loadtester_task_runs_total{type, result}``: a run ended;
  result ``succeeded``, ``failed``, ``timed_out`` or ``stopped`` (shutdown)
- gauge ``flaggerpy_loadtester_tasks_running{type}``
- histogram ``flaggerpy_loadtester_task_duration_seconds{type}``
- counter ``flaggerpy_loadtester_requests_rejected_total{status}``: a request
  answered 4xx (status ``400``, ``401``, ``403``, ``413``)
- counter ``flaggerpy_loadtester_gate_checks_total{gate, result}``: gate
  ``gate`` or ``rollback``, result ``approved`` or ``forbidden``

Label values are set to zero up front, so dashboards show 0 rather than no data.
"""

from __future__ import annotations

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

from flaggerpy.loadtester.tasks import TASK_TYPES

__all__ = ["LoadTesterMetrics"]

# As in flaggerpy.telemetry: no OpenMetrics ``*_created`` series, as Go's client.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

_DURATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
_REQUEST_OUTCOMES = ("started", "joined", "replayed", "deduplicated")
_RUN_RESULTS = ("succeeded", "failed", "timed_out", "stopped")
_REJECTED = ("400", "401", "403", "413")


class LoadTesterMetrics:
    """All metrics of one load tester process."""

    def __init__(
            self,
            *,
            registry: CollectorRegistry | None = None,  # None: a new, private registry
            process_collectors: bool = True,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if process_collectors:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        self.task_requests = Counter(
            "flaggerpy_loadtester_task_requests_total", "Task requests accepted, by outcome",
            ["type", "outcome"], registry=r)
        self.task_runs = Counter(
            "flaggerpy_loadtester_task_runs_total", "Task runs ended, by result",
            ["type", "result"], registry=r)
        self.tasks_running = Gauge(
            "flaggerpy_loadtester_tasks_running", "Tasks running now", ["type"], registry=r)
        self.task_duration = Histogram(
            "flaggerpy_loadtester_task_duration_seconds", "How long task runs took",
            ["type"], buckets=_DURATION_BUCKETS, registry=r)
        self.rejected = Counter(
            "flaggerpy_loadtester_requests_rejected_total", "Requests refused with a 4xx",
            ["status"], registry=r)
        self.gate_checks = Counter(
            "flaggerpy_loadtester_gate_checks_total", "Gate checks answered",
            ["gate", "result"], registry=r)
        for kind in TASK_TYPES:
            self.tasks_running.labels(type=kind).set(0)
            for outcome in _REQUEST_OUTCOMES:
                self.task_requests.labels(type=kind, outcome=outcome)
            for result in _RUN_RESULTS:
                self.task_runs.labels(type=kind, result=result)
        for status in _REJECTED:
            self.rejected.labels(status=status)
        for gate in ("gate", "rollback"):
            for result in ("approved", "forbidden"):
                self.gate_checks.labels(gate=gate, result=result)

    def requested(self, kind: str, outcome: str) -> None:
        """A task request was accepted with ``outcome``."""
        self.task_requests.labels(type=kind, outcome=outcome).inc()

    def run_started(self, kind: str) -> None:
        """A run began."""
        self.tasks_running.labels(type=kind).inc()

    def run_finished(self, kind: str, result: str, *, seconds: float | None) -> None:
        """A run ended; ``seconds`` is None when it was stopped, not finished."""
        self.tasks_running.labels(type=kind).dec()
        self.task_runs.labels(type=kind, result=result).inc()
        if seconds is not None:
            self.task_duration.labels(type=kind).observe(seconds)

    def rejected_request(self, status: int) -> None:
        """A request was answered with a 4xx."""
        self.rejected.labels(status=str(status)).inc()

    def gate_checked(self, gate: str, *, approved: bool) -> None:
        """A gate check was answered."""
        self.gate_checks.labels(gate=gate, result="approved" if approved else "forbidden").inc()

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition for an ``Accept`` header: body and content type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type
