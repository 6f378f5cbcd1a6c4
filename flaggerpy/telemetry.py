"""The operator's own telemetry: the Prometheus metrics the engine and the runtime record.

(Not to be confused with ``flaggerpy.metrics``, the plugin family that *queries*
metrics for canary analysis.) The process serves them with
:class:`flaggerpy.telemetry_server.TelemetryServer`; the engine only records.

Metric names and labels are Flagger's (``pkg/metrics/recorder.go``), so its
dashboards and alerts keep working, plus controller-runtime's runtime metrics
for the controller and its work queue.

Flagger's (``name`` is the canary's target name, as in Flagger):

- gauge ``flagger_info{version, mesh_provider}``
- gauge ``flagger_canary_total{namespace}``
- gauge ``flagger_canary_status{name, namespace}``: 0 Progressing, 2 Failed, 1 otherwise
- gauge ``flagger_canary_weight{workload, namespace}``: ``<name>-primary`` and ``<name>``
- histogram ``flagger_canary_duration_seconds{name, namespace}`` (Go's default buckets)
- gauge ``flagger_canary_metric_analysis{name, namespace, metric}``
- counters ``flagger_canary_successes_total`` and ``flagger_canary_failures_total``
  ``{name, namespace, deployment_strategy, analysis_status}``

flaggerpy's, beside ``flagger_canary_metric_analysis`` so a dashboard can draw the limit next
to the value (fluxcd/flagger#1304):

- gauge ``flaggerpy_canary_metric_threshold{name, namespace, metric, bound}``: the limit each
  metric is judged against (``bound`` is ``min`` or ``max``; request-duration in seconds, as
  its value in ``flagger_canary_metric_analysis``)
- counter ``flaggerpy_canary_metric_checks_total{name, namespace, metric, verdict, action}``:
  every check, with its verdict (Pass, Fail, NoData, Error, ...) and what the controller did
  (pass, fail, hold, skip, dry-run)
- histogram ``flaggerpy_canary_tick_lateness_seconds``: how long after it was due each
  analysis tick of a run started (one series for the process: with thousands of canaries, a
  series each would cost more than it tells)

controller-runtime's and client-go's:

- counter ``controller_runtime_reconcile_total{controller, result}``
  (result: success, error, requeue, requeue_after)
- counters ``controller_runtime_reconcile_errors_total{controller}`` and
  ``controller_runtime_terminal_reconcile_errors_total{controller}``
- histogram ``controller_runtime_reconcile_time_seconds{controller}``
- gauges ``controller_runtime_max_concurrent_reconciles{controller}`` and
  ``controller_runtime_active_workers{controller}``
- gauge ``workqueue_depth{name}``, counters ``workqueue_adds_total{name}`` and
  ``workqueue_retries_total{name}``, histograms
  ``workqueue_queue_duration_seconds{name}`` and ``workqueue_work_duration_seconds{name}``

Registry choice: every :class:`Recorder` owns its own ``CollectorRegistry``
(not prometheus-client's global one). ``cli.main`` builds one Recorder and
passes it down; tests build their own and stay isolated, with no metric
registered twice. The process and platform collectors Flagger gets from Go's
default registry are added to it (``process_collectors=True``).

The runtime does not import this module: the work queue and the controller
report through small protocols (``workqueue.QueueMetrics``,
``controller.ReconcileMetrics``), and :meth:`Recorder.queue_metrics` and
:meth:`Recorder.controller_metrics` return the Prometheus implementations.
Their label values are initialised to zero when created, as
controller-runtime does, so a dashboard shows 0 rather than no data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from flaggerpy.runtime.controller import Outcome, ReconcileMetrics
    from flaggerpy.runtime.workqueue import QueueMetrics

# Go's client does not export the OpenMetrics ``*_created`` series; neither do we,
# so the exposition carries exactly Flagger's and controller-runtime's series.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

GO_DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Go's ``prometheus.DefBuckets``, which Flagger's duration histogram uses."""

RECONCILE_TIME_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8,
    0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0,
    15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0,
)
"""controller-runtime's buckets for ``controller_runtime_reconcile_time_seconds``."""

WORKQUEUE_BUCKETS = tuple(1e-8 * 10**i for i in range(10))
"""client-go's ``ExponentialBuckets(10e-9, 10, 10)`` for the work queue durations."""

# controller-runtime's result labels; "requeue" exists for dashboards, our Result has no such field.
RECONCILE_RESULTS = ("success", "error", "requeue", "requeue_after")

DEPLOYMENT_STRATEGIES = ("canary", "blue-green", "ab-testing")
ANALYSIS_STATUSES = ("completed", "skipped")
TICK_LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                         60.0)
"""From a worker that picks the tick up at once to one that is a whole interval late."""


class Recorder:
    """All metrics of one process, in one registry (Flagger's ``metrics.Recorder``, and more)."""

    def __init__(
            self,
            *,
            registry: CollectorRegistry | None = None,  # None: a new, private registry
            process_collectors: bool = True,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        if process_collectors:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        r = self.registry

        self.info = Gauge(
            "flagger_info", "Flagger version and mesh provider information",
            ["version", "mesh_provider"], registry=r,
        )
        self.canary_total = Gauge(
            "flagger_canary_total", "Total number of canary object", ["namespace"], registry=r,
        )
        self.canary_status = Gauge(
            "flagger_canary_status", "Last canary analysis result",
            ["name", "namespace"], registry=r,
        )
        self.canary_weight = Gauge(
            "flagger_canary_weight", "The virtual service destination weight current value",
            ["workload", "namespace"], registry=r,
        )
        self.canary_duration = Histogram(
            "flagger_canary_duration_seconds", "Seconds spent performing canary analysis.",
            ["name", "namespace"], buckets=GO_DEFAULT_BUCKETS, registry=r,
        )
        self.canary_metric_analysis = Gauge(
            "flagger_canary_metric_analysis", "Last canary analysis result per metric",
            ["name", "namespace", "metric"], registry=r,
        )
        self.canary_metric_threshold = Gauge(
            "flaggerpy_canary_metric_threshold",
            "The limit each canary analysis metric is judged against (bound: min or max)",
            ["name", "namespace", "metric", "bound"], registry=r,
        )
        self.canary_metric_checks = Counter(
            "flaggerpy_canary_metric_checks_total",
            "Canary analysis metric checks by verdict and by what the controller did",
            ["name", "namespace", "metric", "verdict", "action"], registry=r,
        )
        self.canary_tick_lateness = Histogram(
            "flaggerpy_canary_tick_lateness_seconds",
            "Seconds between when an analysis tick was due and when it started",
            buckets=TICK_LATENESS_BUCKETS, registry=r,
        )
        self.canary_successes = Counter(
            "flagger_canary_successes_total", "Total number of canary successes",
            ["name", "namespace", "deployment_strategy", "analysis_status"], registry=r,
        )
        self.canary_failures = Counter(
            "flagger_canary_failures_total", "Total number of canary failures",
            ["name", "namespace", "deployment_strategy", "analysis_status"], registry=r,
        )

        self.reconcile_total = Counter(
            "controller_runtime_reconcile_total",
            "Total number of reconciliations per controller", ["controller", "result"], registry=r,
        )
        self.reconcile_errors = Counter(
            "controller_runtime_reconcile_errors_total",
            "Total number of reconciliation errors per controller", ["controller"], registry=r,
        )
        self.terminal_reconcile_errors = Counter(
            "controller_runtime_terminal_reconcile_errors_total",
            "Total number of terminal reconciliation errors per controller",
            ["controller"], registry=r,
        )
        self.reconcile_time = Histogram(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            ["controller"], buckets=RECONCILE_TIME_BUCKETS, registry=r,
        )
        self.max_concurrent_reconciles = Gauge(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller", ["controller"], registry=r,
        )
        self.active_workers = Gauge(
            "controller_runtime_active_workers",
            "Number of currently used workers per controller", ["controller"], registry=r,
        )

        self.workqueue_depth = Gauge(
            "workqueue_depth", "Current depth of workqueue", ["name"], registry=r,
        )
        self.workqueue_adds = Counter(
            "workqueue_adds_total", "Total number of adds handled by workqueue",
            ["name"], registry=r,
        )
        self.workqueue_retries = Counter(
            "workqueue_retries_total", "Total number of retries handled by workqueue",
            ["name"], registry=r,
        )
        self.workqueue_queue_duration = Histogram(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            ["name"], buckets=WORKQUEUE_BUCKETS, registry=r,
        )
        self.workqueue_work_duration = Histogram(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes",
            ["name"], buckets=WORKQUEUE_BUCKETS, registry=r,
        )

    # Flagger's Recorder, with plain values instead of a Canary so this module
    # depends on no model. ``name`` is the canary's target name
    # (``spec.targetRef.name``), as in Flagger.

    def set_info(self, *, version: str, mesh_provider: str) -> None:
        """Startup: ``flagger_info{version, mesh_provider} 1``."""
        self.info.labels(version=version, mesh_provider=mesh_provider).set(1)

    def set_total(self, *, namespace: str, total: int) -> None:
        """The number of canaries in ``namespace``."""
        self.canary_total.labels(namespace=namespace).set(total)

    def set_status(self, *, name: str, namespace: str, phase: str) -> None:
        """0 while Progressing, 2 once Failed, 1 in any other phase (Flagger's encoding)."""
        value = {"Progressing": 0, "Failed": 2}.get(phase, 1)
        self.canary_status.labels(name=name, namespace=namespace).set(value)

    def set_weight(self, *, name: str, namespace: str, primary: int, canary: int) -> None:
        """Traffic weights, as ``workload="<name>-primary"`` and ``workload="<name>"``."""
        self.canary_weight.labels(workload=f"{name}-primary", namespace=namespace).set(primary)
        self.canary_weight.labels(workload=name, namespace=namespace).set(canary)

    def set_duration(self, *, name: str, namespace: str, seconds: float) -> None:
        """One analysis tick took ``seconds``."""
        self.canary_duration.labels(name=name, namespace=namespace).observe(seconds)

    def observe_tick_lateness(self, seconds: float) -> None:
        """An analysis tick started ``seconds`` after it was due."""
        self.canary_tick_lateness.observe(max(0.0, seconds))

    def set_analysis(self, *, name: str, namespace: str, metric: str, value: float) -> None:
        """The last value of one analysis metric."""
        self.canary_metric_analysis.labels(name=name, namespace=namespace, metric=metric).set(value)

    def set_metric_threshold(
            self, *, name: str, namespace: str, metric: str, bound: str, value: float
    ) -> None:
        """The ``min`` or ``max`` limit one analysis metric is judged against."""
        self.canary_metric_threshold.labels(
            name=name, namespace=namespace, metric=metric, bound=bound).set(value)

    def inc_metric_check(
            self, *, name: str, namespace: str, metric: str, verdict: str, action: str
    ) -> None:
        """One metric check: its verdict and what the controller did with it."""
        self.canary_metric_checks.labels(
            name=name, namespace=namespace, metric=metric, verdict=verdict, action=action,
        ).inc()

    def inc_successes(
            self, *, name: str, namespace: str, deployment_strategy: str, analysis_status: str
    ) -> None:
        """A canary was promoted (``analysis_status`` completed or skipped)."""
        self.canary_successes.labels(
            name=name, namespace=namespace, deployment_strategy=deployment_strategy,
            analysis_status=analysis_status,
        ).inc()

    def inc_failures(
            self, *, name: str, namespace: str, deployment_strategy: str, analysis_status: str
    ) -> None:
        """A canary was rolled back."""
        self.canary_failures.labels(
            name=name, namespace=namespace, deployment_strategy=deployment_strategy,
            analysis_status=analysis_status,
        ).inc()

    def queue_metrics(self, name: str) -> PrometheusQueueMetrics:
        """The work queue ``name``'s metrics, initialised to zero."""
        return PrometheusQueueMetrics(self, name)

    def controller_metrics(self, name: str, *, workers: int) -> PrometheusReconcileMetrics:
        """The controller ``name``'s metrics, initialised to zero."""
        return PrometheusReconcileMetrics(self, name, workers=workers)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition for an ``Accept`` header: body and content type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class PrometheusQueueMetrics:
    """``workqueue.QueueMetrics`` for one queue, as client-go's metric names."""

    def __init__(self, recorder: Recorder, name: str) -> None:
        self._depth = recorder.workqueue_depth.labels(name=name)
        self._adds = recorder.workqueue_adds.labels(name=name)
        self._retries = recorder.workqueue_retries.labels(name=name)
        self._queued = recorder.workqueue_queue_duration.labels(name=name)
        self._worked = recorder.workqueue_work_duration.labels(name=name)
        self._depth.set(0)

    def added(self) -> None:
        self._adds.inc()

    def depth(self, depth: int) -> None:
        self._depth.set(depth)

    def retried(self) -> None:
        self._retries.inc()

    def queued(self, seconds: float) -> None:
        self._queued.observe(seconds)

    def worked(self, seconds: float) -> None:
        self._worked.observe(seconds)


class PrometheusReconcileMetrics:
    """``controller.ReconcileMetrics`` for one controller, as controller-runtime's names."""

    def __init__(self, recorder: Recorder, name: str, *, workers: int) -> None:
        self._total = {
            result: recorder.reconcile_total.labels(controller=name, result=result)
            for result in RECONCILE_RESULTS
        }
        self._errors = recorder.reconcile_errors.labels(controller=name)
        self._terminal = recorder.terminal_reconcile_errors.labels(controller=name)
        self._time = recorder.reconcile_time.labels(controller=name)
        self._active = recorder.active_workers.labels(controller=name)
        recorder.max_concurrent_reconciles.labels(controller=name).set(workers)
        self._active.set(0)

    def reconciled(self, outcome: Outcome, *, seconds: float) -> None:
        # controller-runtime counts a terminal error as result="error" and in both
        # error counters; a plain error in the general one only.
        if outcome in ("error", "terminal_error"):
            self._total["error"].inc()
            self._errors.inc()
            if outcome == "terminal_error":
                self._terminal.inc()
        else:
            self._total[outcome].inc()
        self._time.observe(seconds)

    def active_workers(self, count: int) -> None:
        self._active.set(count)


if TYPE_CHECKING:  # conformance, checked by mypy (style.md §9.3)
    _queue_metrics: type[QueueMetrics] = PrometheusQueueMetrics
    _reconcile_metrics: type[ReconcileMetrics] = PrometheusReconcileMetrics
