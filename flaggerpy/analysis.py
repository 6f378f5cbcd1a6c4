"""The metric contracts and the pure half of a canary's metric checks.

Two plugin families feed an analysis, as in Flagger's ``pkg/metrics``:

- :class:`MetricsProvider` runs one query against one backend (Prometheus,
  Datadog, CloudWatch...) for a MetricTemplate; registered under
  ``flaggerpy.metrics``;
- :class:`Observer` answers the two builtin metrics,
  ``request-success-rate`` and ``request-duration``, for one mesh; it is
  keyed by mesh like a router (``flaggerpy.observers``) and usually built on
  a Prometheus provider.

What a value *means* is decided here, without I/O, so it can be tested
exhaustively: :func:`evaluate` applies a metric's ``thresholdRange`` (or the
deprecated ``threshold``) exactly as Flagger's ``runBuiltinMetricChecks`` and
``runMetricChecks`` do, and :class:`ThresholdBreach` says why a value failed
in the words of Flagger's "Halt ... advancement" events.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Literal, Protocol, runtime_checkable

from flaggerpy.errors import NoValuesFoundError
from flaggerpy.models import durations

__all__ = [
    "MetricKind",
    "MetricTemplateModel",
    "MetricsProvider",
    "MetricsProviderFactory",
    "Observer",
    "ObserverFactory",
    "SampleProvider",
    "ThresholdBreach",
    "ThresholdRange",
    "ThresholdRangeLike",
    "evaluate",
    "format_go_float",
]


@runtime_checkable
class MetricsProvider(Protocol):
    """Runs queries against one metrics backend. Port of Flagger's ``providers.Interface``.

    A provider owns its HTTP session, so it is closed with :meth:`aclose`
    (implementations are usually async context managers too).
    """

    async def run_query(self, query: str) -> float:
        """Returns the query's single value.

        Raises ``NoValuesFoundError`` when there is no sample (or it is NaN),
        ``MultipleValuesError`` when the query returns several series, and
        another ``MetricsError`` when the backend fails.
        """
        ...

    async def is_online(self) -> bool:
        """Whether the backend answers a trivial query (Prometheus: ``vector(1)`` is 1)."""
        ...

    async def aclose(self) -> None:
        """Releases the connection pool."""
        ...


@runtime_checkable
class SampleProvider(Protocol):
    """The optional capability a ``compare`` metric needs: every value over a window.

    A metric compared with the primary (``metrics[].compare``) is judged on two samples, one
    per workload, not on one number each: the provider evaluates the query at regular steps
    over ``window`` (ending now) and answers all values of all series. Prometheus does it with
    ``/api/v1/query_range``. A provider that does not implement this method cannot serve a
    ``compare`` metric; the check then fails naming the provider type.
    """

    async def run_samples(self, query: str, *, window: timedelta) -> list[float]:
        """Every value the query takes over the last ``window``; NaNs included, in no order.

        An empty list means no data (the judge decides what too few values mean); raises a
        ``MetricsError`` when the backend fails, as :meth:`MetricsProvider.run_query` does.
        """
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricTemplateModel:
    """What a metric query may refer to. Port of Flagger's ``MetricTemplateModel``.

    These are the values of ``{{ name }}``, ``{{ namespace }}``, ``{{ target }}``,
    ``{{ service }}``, ``{{ ingress }}``, ``{{ route }}``, ``{{ interval }}`` and
    ``{{ variables.<key> }}`` when a query is rendered, and what an observer
    fills into its builtin queries.
    """

    name: str
    """The Canary's name."""
    namespace: str
    """The Canary's namespace."""
    target: str
    """``spec.targetRef.name``."""
    service: str
    """``spec.service.name``, or the target's name."""
    ingress: str
    """``spec.ingressRef.name``, or the target's name."""
    route: str
    """``spec.routeRef.name``, or the target's name (Knative: the latest created revision)."""
    interval: str
    """The metric's ``interval`` as written (a Go duration such as ``1m``), rendered verbatim."""
    variables: MappingProxyType[str, str] = field(
        default_factory=lambda: MappingProxyType({}), hash=False)
    """The metric's ``templateVariables``; read-only."""

    def __post_init__(self) -> None:
        # A read-only copy: the model is shared by every query of a tick.
        object.__setattr__(self, "variables", MappingProxyType(dict(self.variables)))


@runtime_checkable
class Observer(Protocol):
    """Answers the builtin metrics for one mesh. Port of Flagger's ``observers.Interface``."""

    async def get_request_success_rate(self, model: MetricTemplateModel) -> float:
        """The percentage (0..100) of non-5xx requests to the canary over ``model.interval``."""
        ...

    async def get_request_duration(self, model: MetricTemplateModel) -> timedelta:
        """The canary's request latency (p99 for most meshes) over ``model.interval``.

        Flagger truncates it to whole milliseconds; so should implementations.
        """
        ...


class MetricsProviderFactory(Protocol):
    """How a ``flaggerpy.metrics`` plugin is built: every provider gets these keywords.

    They come from the MetricTemplate's ``spec.provider`` (``address``, ``headers``,
    ``insecureSkipVerify``, ``region``), its Secret's decoded data (None without a
    ``secretRef``), the metric's interval and the text after ``<type>:``. A provider ignores
    what it does not use. A factory that also declares ``kube`` is given the controller's
    API server access (``sdk.ApiServerAccess``). Raises on a configuration it cannot work
    with; the message ends up in the Canary's Events, so it never quotes ``secret``.
    """

    def __call__(
            self,
            *,
            address: str | None,
            secret: Mapping[str, bytes] | None,
            headers: Mapping[str, list[str]] | None,
            insecure_skip_verify: bool,
            region: str | None,
            interval: str,
            variant: str,
    ) -> MetricsProvider: ...


class ObserverFactory(Protocol):
    """How a ``flaggerpy.observers`` plugin is built (see ``flaggerpy.observing``).

    ``client`` queries the Prometheus at ``-metrics-server`` (or the Canary's
    ``spec.metricsServer``); ``render`` fills a query template from a
    :class:`MetricTemplateModel` with Flagger's template functions; ``variant`` is what follows
    the mesh name in the provider string.
    """

    def __call__(
            self,
            *,
            client: MetricsProvider,
            render: Callable[[str, MetricTemplateModel], str],
            variant: str,
    ) -> Observer: ...


class MetricKind(enum.StrEnum):
    """How a metric's value is compared; the builtin names are Flagger's."""

    REQUEST_SUCCESS_RATE = "request-success-rate"
    """Builtin: a percentage; the deprecated ``threshold`` is a minimum."""
    REQUEST_DURATION = "request-duration"
    """Builtin: milliseconds, compared in whole milliseconds; ``threshold`` is a maximum."""
    CUSTOM = "custom"
    """An inline ``query`` or a ``templateRef``; ``threshold`` is a maximum."""

    @classmethod
    def of(cls, metric_name: str) -> MetricKind:
        """The kind of a ``spec.analysis.metrics[].name``: builtin names, else custom."""
        try:
            return cls(metric_name)
        except ValueError:
            return cls.CUSTOM


class ThresholdRangeLike(Protocol):
    """Anything with optional ``min`` and ``max``, like the Canary model's ``thresholdRange``."""

    @property
    def min(self) -> float | None: ...

    @property
    def max(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class ThresholdRange:
    """An inclusive range; either end may be open. Flagger's ``CanaryThresholdRange``."""

    min: float | None = None
    max: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ThresholdBreach:
    """Why a metric value failed its check: the value, the limit it crossed, and which side."""

    kind: MetricKind
    value: float
    """The value as compared (milliseconds for request-duration)."""
    limit: float
    """The ``min``, ``max`` or ``threshold`` that was crossed (milliseconds for durations)."""
    bound: Literal["min", "max"]
    """``min``: the value is below the limit; ``max``: above it."""

    @property
    def operator(self) -> str:
        return "<" if self.bound == "min" else ">"

    def describe(self, metric_name: str) -> str:
        """Flagger's event text after ``Halt <name>.<namespace> advancement``.

        ``success rate 95.12% < 99%``, ``request duration 612ms > 500ms`` or
        ``<metric> 1.50 > 1``, formatted as Flagger's ``%.2f`` and ``%v`` are.
        """
        if self.kind is MetricKind.REQUEST_SUCCESS_RATE:
            return (f"success rate {self.value:.2f}% {self.operator} "
                    f"{format_go_float(self.limit)}%")
        if self.kind is MetricKind.REQUEST_DURATION:
            value = durations.format_duration(self.value / 1000)
            limit = durations.format_duration(self.limit / 1000)
            return f"request duration {value} {self.operator} {limit}"
        return f"{metric_name} {self.value:.2f} {self.operator} {format_go_float(self.limit)}"


def evaluate(
        value: float | timedelta,
        *,
        kind: MetricKind,
        threshold_range: ThresholdRangeLike | None = None,
        threshold: float | None = None,
) -> ThresholdBreach | None:
    """Checks one metric value; ``None`` means it passed.

    Flagger's rules (``scheduler_metrics.go``):

    - with a ``thresholdRange`` the range is inclusive: the value fails if
      ``value < min`` or ``value > max``; a missing end is not checked, so an
      empty range passes everything;
    - without one, the deprecated ``threshold`` applies (``None`` is 0, Go's
      zero value): success rate fails if ``threshold > value``; request duration and
      custom metrics fail if ``value > threshold``;
    - request-duration values and limits are whole milliseconds: both are
      truncated towards zero before comparing (``time.Duration(ms)``). A
      ``timedelta`` value is converted to milliseconds.

    A NaN value raises ``NoValuesFoundError``, which is what Flagger's
    providers report for NaN: it is a failed check with a "no values found"
    event, never a silent pass.
    """
    number = value / timedelta(milliseconds=1) if isinstance(value, timedelta) else float(value)
    if math.isnan(number):
        raise NoValuesFoundError(f"{kind} value is NaN")
    if kind is MetricKind.REQUEST_DURATION:
        number = float(math.trunc(number))

    def limit_of(raw: float) -> float:
        return float(math.trunc(raw)) if kind is MetricKind.REQUEST_DURATION else float(raw)

    if threshold_range is not None:
        low, high = threshold_range.min, threshold_range.max
        if low is not None and number < limit_of(low):
            return ThresholdBreach(kind=kind, value=number, limit=limit_of(low), bound="min")
        if high is not None and number > limit_of(high):
            return ThresholdBreach(kind=kind, value=number, limit=limit_of(high), bound="max")
        return None
    limit = limit_of(threshold or 0.0)
    if kind is MetricKind.REQUEST_SUCCESS_RATE:
        if limit > number:
            return ThresholdBreach(kind=kind, value=number, limit=limit, bound="min")
        return None
    if number > limit:
        return ThresholdBreach(kind=kind, value=number, limit=limit, bound="max")
    return None


def format_go_float(value: float) -> str:
    """Formats a float as Go's ``%v`` does: shortest digits, ``1e+06`` from a million up.

    Flagger's event texts print limits with ``%v``; matching it keeps the
    messages users grep for identical (``99``, not ``99.0``).
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    exact = Decimal(repr(float(value))).normalize()
    sign, digits, exponent = exact.as_tuple()
    assert isinstance(exponent, int)
    exp10 = len(digits) + exponent - 1
    prefix = "-" if sign else ""
    if exp10 < -4 or exp10 >= 6:  # strconv 'g' with shortest precision decides at 6
        mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    return prefix + format(abs(exact), "f")
