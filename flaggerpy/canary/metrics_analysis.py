"""The metric checks of an analysis tick: Flagger's ``runBuiltinMetricChecks``/``runMetricChecks``.

The lifecycle engine calls :meth:`MetricsAnalyzer.run` on every analysis tick, after the
rollout webhooks passed, :meth:`MetricsAnalyzer.check_providers` once when a canary is
initialised (spec §2.3, steps 8 and 30), and :meth:`MetricsAnalyzer.check_run_start` on the
first tick of a run, before any traffic moves (a flaggerpy addition). None writes anything to
the cluster: they return what happened, with Flagger's event texts, and the engine records the
Events, counts the failed check and alerts.

Order and meaning (spec §4.2), as in Flagger:

1. builtin checks, metric by metric: ``request-success-rate`` and ``request-duration`` through
   the mesh's :class:`~flaggerpy.analysis.Observer` (chosen as Flagger's factory does, see
   :func:`observer_provider`), and any inline ``query`` straight through the builtin Prometheus
   (``spec.metricsServer`` or ``-metrics-server``), unrendered as in Flagger;
2. then every ``templateRef``: the MetricTemplate from the informer cache (namespace
   ``templateRef.namespace`` or the canary's), its Secret, a provider from the
   ``flaggerpy.metrics`` registry, the query rendered by :mod:`flaggerpy.templating`;
   a metric with no ``templateRef``, no ``query`` and no builtin name is an error.

A ``templateRef`` or builtin metric with ``compare`` (a flaggerpy addition) is also judged
against the primary by :mod:`flaggerpy.canary.comparison`: after its threshold, if it has one;
a Fail is a failed check, NoData a "no values found" result. ``compare`` on an inline
``query`` is an error: Flagger does not render it, so nothing names the primary.

The first metric that fails stops the tick. A value is judged by
:func:`flaggerpy.analysis.evaluate` (``thresholdRange``, or the deprecated ``threshold``);
every value obtained is set as ``flagger_canary_metric_analysis`` (request-duration in
seconds), passing or not.

"No values found" (an empty answer or NaN: the canary got no traffic) is a failed check in
Flagger. ``hold_on_no_values=True`` (a flaggerpy addition, off by default) makes it a *hold*
instead: the outcome does not pass, so the canary does not advance, but it carries
``hold=True`` so the engine does not count a failed check either; the analysis simply waits
for traffic. Builtin and template metrics are treated alike. A metric's own ``onNoData``
(``fail``, ``hold``, ``skip``), ``minSamples`` and ``dryRun`` (and ``analysis.dryRun``) take
precedence: each check becomes a :class:`~flaggerpy.canary.decisions.Decision` that says what
is done with it, and a dry-run or skipped check does not stop the tick.

Providers are expensive (a connection pool each) and cheap to keep: one is built per
MetricTemplate provider configuration and Secret ``resourceVersion``, and reused by every
canary and tick that needs the same. When the Secret changes, the next query builds a new
provider; the old one is closed a minute later, so queries still in flight on it finish.
Everything is closed by :meth:`MetricsAnalyzer.aclose`.

Reads come from caches only (design rule 3): MetricTemplates and Secrets are looked up by
key in the objects given to the constructor, never fetched from the API server. Secret data
is decoded here and handed to the provider factory; it never reaches a message or a log
line (design rule 6).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Final, TypeAlias
from urllib.parse import urlsplit

import pydantic
import structlog

from flaggerpy import plugins, templating
from flaggerpy.analysis import (
    MetricKind,
    MetricsProvider,
    MetricsProviderFactory,
    MetricTemplateModel,
    Observer,
    ObserverFactory,
    evaluate,
)
from flaggerpy.canary import decisions
from flaggerpy.canary.comparison import (
    Compared,
    ComparisonUnsupported,
    compare_builtin,
    compare_with_primary,
)
from flaggerpy.canary.decisions import Decision
from flaggerpy.canary.metric_results import MetricResult, TemplateCause
from flaggerpy.errors import FlaggerError, MetricsError, NoValuesFoundError, PluginError
from flaggerpy.judging import Comparison, Verdict
from flaggerpy.kube import ObjectReader
from flaggerpy.kube.config import ApiServerAccess, api_server_access
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.models import Canary, CanaryMetric, MetricTemplate, durations
from flaggerpy.plugins import Registry
from flaggerpy.routing import Capabilities, capabilities_of
from flaggerpy.settings import Settings
from flaggerpy.telemetry import Recorder

__all__ = [
    "BUILTIN_PROVIDER",
    "AnalysisOutcome",
    "MetricResult",
    "MetricsAnalyzer",
    "ProviderProblem",
    "SecretReader",
    "TemplateCause",
    "metric_model",
    "observer_provider",
]

log = structlog.get_logger(__name__)

BUILTIN_PROVIDER: Final = "prometheus"
"""The ``flaggerpy.metrics`` plugin behind the builtin metrics and inline queries."""

SERVICE_SUFFIX: Final = ":service"
"""Added to the observer's provider string when the target is a (non-Knative) Service."""

BUILTIN_SERVER: Final = "metrics-server"
"""How the builtin Prometheus (``-metrics-server``/``spec.metricsServer``) is named in results."""

RETIRE_GRACE: Final = 60.0
"""Seconds a replaced provider stays open, so queries already running on it can finish."""

_BUILTIN_NAMES: Final = frozenset({MetricKind.REQUEST_SUCCESS_RATE, MetricKind.REQUEST_DURATION})


@dataclass(frozen=True, slots=True)
class AnalysisOutcome:
    """What one tick's metric checks decided."""

    passed: bool
    """Every metric passed; the canary may advance."""
    results: tuple[MetricResult, ...]
    """The metrics checked, in Flagger's order, up to and including the first failure."""
    failure: MetricResult | None
    """The metric that stopped the tick, if any."""
    hold: bool = False
    """Do not advance and do not count a failed check: the failure was "no values found" (or,
    at the start of a run, a metrics provider that did not answer) and the analyzer was asked
    to hold on it (``hold_on_no_values``)."""
    fatal: bool = False
    """End the run now, whatever ``threshold`` allows: no later tick can pass (a
    MetricTemplate's ``provider.type`` that no installed plugin serves, from
    :meth:`MetricsAnalyzer.check_run_start`), or a ``critical`` compared metric failed its
    comparison (from :meth:`MetricsAnalyzer.run`)."""
    decisions: tuple[Decision, ...] = ()
    """Every check of :meth:`MetricsAnalyzer.run`, explained, with what the engine does with
    it (``onNoData``, ``minSamples``, ``dryRun``: :mod:`flaggerpy.canary.decisions`)."""


@dataclass(frozen=True, slots=True)
class ProviderProblem:
    """A metric backend a canary needs that cannot be used."""

    name: str
    """The MetricTemplate's name, or ``metrics-server`` for the builtin Prometheus."""
    message: str
    """Flagger's availability-check wording: ``prometheus not available: ...``,
    ``<type> in metric template <t>.<ns> not available: ...``, ``metric template ...``."""
    installed: bool = True
    """False: no installed plugin serves the template's ``provider.type`` (or it failed to
    load); only a controller with that plugin can change it, so waiting is pointless."""
    template: ObjectKey | None = None
    """The MetricTemplate, when the problem is one's (not the builtin Prometheus)."""
    cause: TemplateCause | None = None
    """What the template's provider did (see :class:`TemplateCause`)."""


SecretLookupResult: TypeAlias = "Mapping[str, Any] | None"
SecretReader: TypeAlias = (
    "ObjectReader | Callable[[ObjectKey], SecretLookupResult | Awaitable[SecretLookupResult]]"
)
"""Finds a Secret's JSON object by key: an informer cache (``.get``) or a function, sync or
async; None means it does not exist."""


class _Failed(Exception):
    """A check that ended before a value could be judged; carries its result."""

    def __init__(self, result: MetricResult, *, installed: bool = True) -> None:
        super().__init__(result.message)
        self.result = result
        self.installed = installed
        """False when the provider's plugin is not installed (see ProviderProblem)."""


@dataclass(slots=True)
class _Cached:
    version: str
    provider: MetricsProvider


def observer_provider(canary: Canary, *, mesh_provider: str, mesh: Capabilities) -> str:
    """The provider string the builtin metrics' observer is chosen by, as Flagger chooses it.

    ``mesh`` is what the controller's mesh router (``mesh_provider``) declares. The observer
    it names, else the mesh provider itself; a Canary's ``spec.provider`` wins, except over a
    mesh whose observer is for every canary (Flagger's Crossover and Linkerd cases); and a
    target that is a plain Service (not a Knative one) gets the ``:service`` suffix.
    """
    provider = mesh.observer or mesh_provider
    if canary.spec.provider:
        provider = canary.spec.provider
        if mesh.observer and mesh.observer_for_every_canary:
            provider = mesh.observer
    if canary.spec.target_ref.kind == "Service" and not canary.is_knative_service():
        provider += SERVICE_SUFFIX
    return provider


def _critical_failure(result: MetricResult) -> bool:
    """The comparison of a ``compare.critical`` metric failed: Kayenta's critical metric, which
    fails the whole analysis on its own (a threshold breach of the same metric is an ordinary
    failed check)."""
    judgement = result.judgement
    return (judgement is not None and judgement.critical
            and judgement.verdict is Verdict.FAIL)


def _inline_compare_refused(metric: CanaryMetric) -> MetricResult:
    """The failed check of an inline ``query`` with ``compare``, whatever its threshold: Flagger
    sends an inline query as written, so nothing in it can be pointed at the primary."""
    return replace(_error(metric, f"Metric compare failed for {metric.name}: compare is not "
                                  "available for an inline query, which is not rendered, so "
                                  "{{ target }} cannot name the primary; use a templateRef"),
                   query=decisions.redact(metric.query or ""))


def metric_model(
        canary: Canary,
        *,
        interval: str,
        variables: Mapping[str, str] | None = None,
        route: str | None = None,  # a Knative target's latest created revision
) -> MetricTemplateModel:
    """What a query may refer to for this canary (Flagger's ``toMetricModel``).

    ``service``, ``ingress`` and ``route`` default to the target's name; ``route`` is the
    latest created revision when given one (Knative Service targets).
    """
    target = canary.spec.target_ref.name
    service = canary.spec.service.name if canary.spec.service is not None else None
    ingress = canary.spec.ingress_ref.name if canary.spec.ingress_ref is not None else None
    route = route or (canary.spec.route_ref.name if canary.spec.route_ref is not None else None)
    return MetricTemplateModel(
        name=canary.name,
        namespace=canary.namespace,
        target=target,
        service=service or target,
        ingress=ingress or target,
        route=route or target,
        interval=interval,
        variables=MappingProxyType(dict(variables or {})),
    )


class MetricsAnalyzer:
    """Runs a canary's metric checks; shared by every canary of the process."""

    def __init__(
            self,
            *,
            templates: ObjectReader,  # MetricTemplates by namespace/name (an informer cache)
            secrets: SecretReader,  # Secrets by namespace/name (an informer cache or a function)
            settings: Settings,
            telemetry: Recorder,
            hold_on_no_values: bool = False,  # "no values found" holds instead of failing
            metrics_registry: Registry[plugins.Factory] = plugins.metrics,
            observer_registry: Registry[plugins.Factory] = plugins.observers,
            router_registry: Registry[plugins.Factory] = plugins.routers,  # the mesh's router
    ) -> None:
        self._templates = templates
        self._secrets = secrets
        self._settings = settings
        self._telemetry = telemetry
        self._hold_on_no_values = hold_on_no_values
        self._metrics_registry = metrics_registry
        self._observer_registry = observer_registry
        self._router_registry = router_registry
        self._mesh: Capabilities | None = None
        self._builtin: dict[str, MetricsProvider] = {}
        self._providers: dict[tuple[str, ...], _Cached] = {}
        self._retired: list[tuple[float, MetricsProvider]] = []
        self._api_access: ApiServerAccess | None = None

    # -- the two entry points -------------------------------------------------------------------

    async def run(
            self,
            canary: Canary,
            *,
            hold_on_no_values: bool | None = None,  # None: the analyzer's setting
            route: str | None = None,  # {{ route }}: a Knative target's latest revision
    ) -> AnalysisOutcome:
        """Checks ``canary.spec.analysis.metrics`` in Flagger's order, up to the first check
        that fails or holds (a dry-run or skipped check does not stop the tick)."""
        await self._close_retired()
        hold = self._hold_on_no_values if hold_on_no_values is None else hold_on_no_values
        plan = _plan(canary)
        observer: tuple[Observer, str] | MetricResult | None = None
        if any(step is _Step.BUILTIN for step, _ in plan):
            try:
                observer = self._observer(canary)
            except _Failed as exc:
                observer = exc.result
        results: list[MetricResult] = []
        made: list[Decision] = []
        counts: dict[str, int | None] = {}  # requests to the canary, by interval, for minSamples
        for step, metric in plan:
            if step is _Step.BUILTIN:
                assert observer is not None
                result = await self._builtin_check(canary, metric, observer, route=route)
            elif step is _Step.INLINE and metric.compare is not None:
                result = _inline_compare_refused(metric)  # before its threshold: always said
            elif step is _Step.INLINE:
                result = await self._inline_check(canary, metric)
            elif step is _Step.TEMPLATE:
                result = await self._template_check(canary, metric, route=route)
            else:
                result = _error(metric, "Metric query failed for no usable metrics template and "
                                        "query were configured")
            if (metric.min_samples and metric.compare is None and not result.error
                    and not result.no_values):
                result = await self._with_samples(canary, metric, result, observer, counts,
                                                  route=route)
            results.append(result)
            decision = decisions.decide(canary, metric, result, hold_on_no_values=hold)
            made.append(decision)
            self._record_decision(canary, decision)
            log.debug("metric_checked", metric=result.name, value=result.value,
                      passed=result.passed, action=decision.act.value)
            if decision.act.blocks:
                return AnalysisOutcome(
                    passed=False, results=tuple(results), failure=result,
                    hold=decision.act is decisions.Act.HOLD, decisions=tuple(made),
                    fatal=decision.act is decisions.Act.FAIL and _critical_failure(result),
                )
        return AnalysisOutcome(passed=True, results=tuple(results), failure=None,
                               decisions=tuple(made))

    async def _with_samples(
            self,
            canary: Canary,
            metric: CanaryMetric,
            result: MetricResult,
            observer: tuple[Observer, str] | MetricResult | None,
            counts: dict[str, int | None],
            *,
            route: str | None,
    ) -> MetricResult:
        """The result with the canary's request count; a check under ``minSamples`` becomes a
        check without data ("too few requests"), which ``onNoData`` then decides."""
        interval = _interval(canary, metric)
        if interval not in counts:
            counts[interval] = await self._request_count(canary, interval, observer, route=route)
        samples = counts[interval]
        if samples is None:  # said in the check's history, so an unapplied minimum is seen
            return replace(result, message=result.message or (
                f"minSamples {metric.min_samples} not applied: the requests to "
                f"{canary.spec.target_ref.name} in {interval} could not be counted (the "
                "observer has no request count, or its query failed)"))
        result = replace(result, samples=samples)
        if not decisions.under_min_samples(metric, samples):
            return result
        return replace(result, passed=False, no_values=True, message=(
            f"Halt {canary.name}.{canary.namespace} advancement {metric.name}: "
            f"{samples} requests to {canary.spec.target_ref.name} in {interval}, fewer than "
            f"minSamples {metric.min_samples}"))

    async def _request_count(
            self,
            canary: Canary,
            interval: str,
            observer: tuple[Observer, str] | MetricResult | None,
            *,
            route: str | None,
    ) -> int | None:
        """Requests the canary received over ``interval``, counted by the mesh observer
        (:func:`flaggerpy.canary.decisions.observer_count_query`); None when it cannot say or
        the count cannot be had."""
        if observer is None:
            try:
                observer = self._observer(canary)
            except _Failed:
                return None
        if isinstance(observer, MetricResult):
            return None
        model = metric_model(canary, interval=interval, route=route)
        try:
            query = decisions.observer_count_query(observer[0], model)
            if query is None:
                return None
            client = self._builtin_client(self._metrics_server(canary))
            value = await client.run_query(query)
        except NoValuesFoundError:
            return 0
        except Exception as exc:
            log.info("request_count_failed", canary=f"{canary.name}.{canary.namespace}",
                     error=_describe(exc))
            return None
        return int(value) if value == value else 0  # NaN: no requests

    def _record_decision(self, canary: Canary, decision: Decision) -> None:
        """The threshold each check was judged against, and what was done, as series.

        A request-duration limit is set in seconds, as ``flagger_canary_metric_analysis``
        holds its value, so the two can be drawn together.
        """
        name, namespace = canary.spec.target_ref.name, canary.namespace
        scale = 1000 if MetricKind.of(decision.metric) is MetricKind.REQUEST_DURATION else 1
        for bound, limit in (("min", decision.threshold_min), ("max", decision.threshold_max)):
            if limit is not None:
                limit /= scale
                self._telemetry.set_metric_threshold(name=name, namespace=namespace,
                                                     metric=decision.metric, bound=bound,
                                                     value=limit)
        self._telemetry.inc_metric_check(name=name, namespace=namespace, metric=decision.metric,
                                         verdict=decision.verdict, action=decision.act.value)

    async def check_providers(self, canary: Canary) -> list[str]:
        """Whether the metric backends answer: Flagger's ``checkMetricProviderAvailability``.

        Returns one problem per backend that cannot be used (empty when all answer): the
        builtin Prometheus if a builtin metric or an inline query needs it, and the provider
        of every MetricTemplate referenced. The engine reports them as a Warning Event
        ("Error checking metric providers: ...") without failing the canary.
        """
        return [problem.message for problem in await self.provider_problems(canary)]

    async def check_run_start(
            self,
            canary: Canary,
            *,
            hold_on_no_values: bool | None = None,  # None: the analyzer's setting
    ) -> AnalysisOutcome:
        """Whether a run may start moving traffic: every metric backend it needs is usable.

        Called on the first tick of a run (weight 0, no iteration done), where Flagger runs
        only the pre-rollout hooks and then shifts ``stepWeight`` without asking any metric
        backend (a flaggerpy addition, docs/compatibility.md "Provider availability"). The
        backends are those of :meth:`check_providers`, each asked once; the provider's own
        transport retries (a slow or dropped answer) happen inside that one question.

        - every backend answers: passed;
        - a MetricTemplate's ``provider.type`` has no installed plugin: ``fatal``, the run
          ends before its first step (nothing but another controller build can fix it);
        - otherwise (offline, an error answer, a missing template or Secret, a provider
          that cannot be built): a failed check, or a ``hold`` with ``hold_on_no_values``
          (the run waits at weight 0 for the backend, as it waits for traffic).
        """
        problems = await self.provider_problems(canary)
        if not problems:
            return AnalysisOutcome(passed=True, results=(), failure=None)
        hold = self._hold_on_no_values if hold_on_no_values is None else hold_on_no_values
        fatal = any(not problem.installed for problem in problems)
        results = tuple(_error_named(p.name, p.message) for p in problems)
        failure = _error_named(
            problems[0].name,
            f"Halt {canary.name}.{canary.namespace} advancement metrics provider check failed: "
            + "; ".join(p.message for p in problems),
        )
        return AnalysisOutcome(passed=False, results=results, failure=failure,
                               hold=hold and not fatal, fatal=fatal)

    async def provider_problems(self, canary: Canary) -> list[ProviderProblem]:
        """The metric backends of ``canary`` that cannot be used, each asked once, in order:
        the builtin Prometheus (if a builtin metric or inline query needs it), then each
        MetricTemplate referenced."""
        await self._close_retired()
        metrics = canary.spec.analysis.metrics or []
        problems: list[ProviderProblem] = []
        if any(_is_builtin(m) or m.query for m in metrics):
            server = self._metrics_server(canary)
            try:
                client = self._builtin_client(server)
            except _Failed as exc:
                problems.append(ProviderProblem(BUILTIN_SERVER,
                                                _lower_first(exc.result.message)))
            else:
                problem = await _offline_reason(
                    client, when_false="value is not 1 for query: vector(1)")
                if problem is not None:
                    problems.append(ProviderProblem(BUILTIN_SERVER,
                                                    f"prometheus not available: {problem}"))
        seen: set[ObjectKey] = set()
        for metric in metrics:
            ref = metric.template_ref
            if ref is None:
                continue
            namespace = ref.namespace or canary.namespace
            key = ObjectKey(namespace, ref.name)
            if key in seen:
                continue
            seen.add(key)
            try:
                template = self._template(key)
                provider = await self._template_provider(template, key, _interval(canary, metric))
            except _Failed as exc:
                problems.append(ProviderProblem(key.name, _lower_first(exc.result.message),
                                                installed=exc.installed, template=key,
                                                cause=exc.result.cause))
                continue
            problem = await _offline_reason(provider, when_false="it reports it is offline")
            if problem is not None:
                problems.append(ProviderProblem(
                    key.name,
                    f"{template.spec.provider.type} in metric template "
                    f"{template.name}.{template.namespace or namespace} not available: {problem}",
                    template=key, cause=TemplateCause.OFFLINE,
                ))
        return problems

    async def aclose(self) -> None:
        """Closes every provider this analyzer built."""
        providers = [*self._builtin.values(), *(c.provider for c in self._providers.values()),
                     *(p for _, p in self._retired)]
        self._builtin.clear()
        self._providers.clear()
        self._retired.clear()
        for provider in providers:
            await _close(provider)

    # -- builtin metrics ------------------------------------------------------------------------

    async def _builtin_check(
            self,
            canary: Canary,
            metric: CanaryMetric,
            observer_or_failure: tuple[Observer, str] | MetricResult,
            *,
            route: str | None = None,
    ) -> MetricResult:
        if isinstance(observer_or_failure, MetricResult):
            return _rename(observer_or_failure, metric.name)
        observer, provider = observer_or_failure
        kind = MetricKind.of(metric.name)
        model = metric_model(canary, interval=_interval(canary, metric),
                             variables=metric.template_variables, route=route)
        target = canary.spec.target_ref.name
        query = _observer_query(observer, kind, model)
        try:
            comparison = Comparison.from_metric(metric)
        except ValueError as exc:
            return replace(_error(metric, f"Metric {metric.name} compare error: {exc}"),
                           query=query)
        if comparison is None or _has_threshold(metric):  # both must pass when both are set
            try:
                if kind is MetricKind.REQUEST_SUCCESS_RATE:
                    value: float | timedelta = await observer.get_request_success_rate(model)
                else:
                    value = await observer.get_request_duration(model)
                result = replace(self._judge(canary, metric, kind, value), query=query)
            except NoValuesFoundError:
                return replace(_no_values(
                    metric, f"Halt advancement no values found for {provider} metric "
                            f"{metric.name} probably {target}.{canary.namespace} is "
                            "not receiving traffic"), query=query)
            except Exception as exc:  # a plugin may raise anything; it is this metric's failure
                _log_unexpected(exc, metric)
                return replace(_error(metric, f"Prometheus query failed: {_describe(exc)}"),
                               query=query)
            if comparison is None or not result.passed:
                return result
        compared = await self._compare_check(
            canary, metric, compare_builtin(observer, kind=kind, model=model,
                                            comparison=comparison))
        return replace(compared, query=query, cause=None)

    async def _inline_check(self, canary: Canary, metric: CanaryMetric) -> MetricResult:
        try:
            client = self._builtin_client(self._metrics_server(canary))
        except _Failed as exc:
            return _rename(exc.result, metric.name)
        assert metric.query is not None
        query = decisions.redact(metric.query)
        try:
            value = await client.run_query(metric.query)
            return replace(self._judge(canary, metric, MetricKind.CUSTOM, value), query=query)
        except NoValuesFoundError:
            return replace(_no_values(
                metric, f"Halt advancement no values found for metric: {metric.name}"),
                query=query)
        except Exception as exc:
            _log_unexpected(exc, metric)
            return replace(_error(
                metric, f"Prometheus query failed for {metric.name}: {_describe(exc)}"),
                query=query)

    def _observer(self, canary: Canary) -> tuple[Observer, str]:
        provider = observer_provider(canary, mesh_provider=self._settings.mesh.provider,
                                     mesh=self._mesh_capabilities())
        client = self._builtin_client(self._metrics_server(canary))
        try:
            plugin = self._observer_registry.get(provider)
            factory: ObserverFactory = plugin.factory
            return factory(client=client, render=templating.render, variant=plugin.variant), \
                provider
        except Exception as exc:
            raise _Failed(_error_named("request-success-rate/request-duration",
                                       f"Prometheus query failed: no observer for provider "
                                       f"{provider}: {_describe(exc)}")) from exc

    def _mesh_capabilities(self) -> Capabilities:
        """What the controller's mesh router declares, read once from its class.

        A mesh with no router installed (every canary names its own ``spec.provider``) is
        read as declaring nothing: its provider string picks the observer.
        """
        if self._mesh is None:
            mesh_provider = self._settings.mesh.provider
            try:
                plugin = self._router_registry.get(mesh_provider)
                self._mesh = capabilities_of(plugin.factory, variant=plugin.variant)
            except PluginError as exc:
                log.info("mesh_router_unavailable", provider=mesh_provider, error=str(exc))
                self._mesh = Capabilities()
        return self._mesh

    def _metrics_server(self, canary: Canary) -> str:
        return canary.spec.metrics_server or self._settings.metrics.server

    def _builtin_client(self, server: str) -> MetricsProvider:
        client = self._builtin.get(server)
        if client is not None:
            return client
        try:
            plugin = self._metrics_registry.get(BUILTIN_PROVIDER)
            factory: MetricsProviderFactory = plugin.factory
            client = factory(address=server, secret=None, headers=None,
                             insecure_skip_verify=False, region=None, interval="",
                             variant=plugin.variant)
        except Exception as exc:
            raise _Failed(_error_named(
                BUILTIN_SERVER,
                f"Error building Prometheus client for {_endpoint(server)} {_describe(exc)}",
            )) from exc
        self._builtin[server] = client
        return client

    # -- template metrics -----------------------------------------------------------------------

    async def _template_check(
            self, canary: Canary, metric: CanaryMetric, *, route: str | None = None,
    ) -> MetricResult:
        ref = metric.template_ref
        assert ref is not None
        namespace = ref.namespace or canary.namespace
        key = ObjectKey(namespace, ref.name)
        interval = _interval(canary, metric)
        try:
            template = self._template(key)
            provider = await self._template_provider(template, key, interval)
        except _Failed as exc:
            return replace(exc.result, name=metric.name, template=key)
        model = metric_model(canary, interval=interval, variables=metric.template_variables,
                             route=route)
        try:
            query = templating.render(template.spec.query, model)
        except templating.TemplatingError as exc:
            return replace(_error(metric, f"Metric template {ref.name}.{namespace} query render "
                                          f"error: {exc}"),
                           template=key, cause=TemplateCause.RENDER_FAILED)
        log.debug("metric_template_query", template=f"{ref.name}.{namespace}", query=query)
        shown = decisions.redact(query, secrets=await self._secret_values(template, key))
        try:
            comparison = Comparison.from_metric(metric)
        except ValueError as exc:
            return replace(_error(metric, f"Metric {metric.name} compare error: {exc}"),
                           template=key)
        if comparison is None or _has_threshold(metric):  # both must pass when both are set
            try:
                value = await provider.run_query(query)
                result = self._judge(canary, metric, MetricKind.CUSTOM, value)
            except NoValuesFoundError as exc:
                result = _no_values(metric, "Halt advancement no values found for custom "
                                            f"metric: {metric.name}: {exc}")
            except Exception as exc:
                _log_unexpected(exc, metric)
                return replace(_error(metric, f"Metric query failed for {metric.name}: "
                                              f"{_describe(exc)}"),
                               template=key, cause=TemplateCause.QUERY_FAILED, query=shown)
            if comparison is None or not result.passed:
                return replace(result, template=key, cause=TemplateCause.ANSWERED, query=shown)
        compare = compare_with_primary(
            provider, provider_type=template.spec.provider.type, query=template.spec.query,
            model=model, comparison=comparison)
        return replace(await self._compare_check(canary, metric, compare),
                       template=key, query=shown)

    async def _secret_values(self, template: MetricTemplate, key: ObjectKey) -> list[str]:
        """The template's Secret values as text, only to keep them out of what is shown."""
        ref = template.spec.provider.secret_ref
        if ref is None:
            return []
        try:
            data, _ = await self._secret(ObjectKey(key.namespace, ref.name), where="")
        except _Failed:
            return []
        return [value.decode(errors="replace") for value in data.values()]

    async def _compare_check(
            self,
            canary: Canary,
            metric: CanaryMetric,
            compare: Awaitable[Compared],  # compare_with_primary or compare_builtin, not awaited
    ) -> MetricResult:
        """The metric judged against the primary (:mod:`flaggerpy.canary.comparison`).

        Fail is a failed check in Flagger's "Halt ... advancement" words with the statistic;
        Pass and Marginal pass; NoData is a "no values found" result, held or failed as any.
        """
        try:
            compared = await compare
        except ComparisonUnsupported as exc:
            return _error(metric, f"Metric compare failed for {metric.name}: {exc}")
        except Exception as exc:
            _log_unexpected(exc, metric)
            return replace(_error(metric, f"Metric query failed for {metric.name}: "
                                          f"{_describe(exc)}"),
                           cause=TemplateCause.QUERY_FAILED)
        judgement = compared.judgement
        where = (f"{metric.name} compared with the primary over "
                 f"{durations.format_duration(compared.window.total_seconds())}")
        if judgement.verdict is Verdict.NO_DATA:
            return replace(
                _no_values(metric, f"Halt advancement no values found for custom metric: "
                                   f"{where}: {judgement.reason}"),
                judgement=judgement, cause=TemplateCause.ANSWERED)
        if judgement.verdict is Verdict.FAIL:
            return MetricResult(
                name=metric.name, value=judgement.estimate, passed=False,
                message=f"Halt {canary.name}.{canary.namespace} advancement {where}: "
                        f"{judgement.reason}",
                judgement=judgement, cause=TemplateCause.ANSWERED)
        if judgement.verdict is Verdict.MARGINAL:
            log.info("metric_compare_marginal", canary=f"{canary.name}.{canary.namespace}",
                     metric=metric.name, reason=judgement.reason)
        return MetricResult(name=metric.name, value=judgement.estimate, passed=True, message="",
                            judgement=judgement, cause=TemplateCause.ANSWERED)

    def _template(self, key: ObjectKey) -> MetricTemplate:
        where = f"Metric template {key.name}.{key.namespace}"
        found = self._templates.get(key)
        if found is None:
            raise _Failed(_error_named(
                key.name, f'{where} error: metrictemplate.flagger.app "{key.name}" not found',
                cause=TemplateCause.TEMPLATE_NOT_FOUND))
        try:
            return MetricTemplate.model_validate(found)
        except pydantic.ValidationError as exc:
            raise _Failed(_error_named(
                key.name, f"{where} error: invalid: {exc.error_count()} validation error(s)",
                cause=TemplateCause.TEMPLATE_INVALID,
            )) from exc

    async def _template_provider(
            self, template: MetricTemplate, key: ObjectKey, interval: str
    ) -> MetricsProvider:
        where = f"Metric template {key.name}.{key.namespace}"
        spec = template.spec.provider
        secret: dict[str, bytes] | None = None
        version = ""
        secret_name = spec.secret_ref.name if spec.secret_ref is not None else ""
        if spec.secret_ref is not None:
            secret, version = await self._secret(
                ObjectKey(key.namespace, secret_name), where=f"{where} secret {secret_name}")
        identity = (
            spec.type, spec.address or "", key.namespace, secret_name,
            json.dumps(spec.headers or {}, sort_keys=True), str(bool(spec.insecure_skip_verify)),
            spec.region or "", interval,
        )
        cached = self._providers.get(identity)
        if cached is not None and cached.version == version:
            return cached.provider
        try:
            plugin = self._metrics_registry.get(spec.type)
            factory: MetricsProviderFactory = plugin.factory
            extra: dict[str, ApiServerAccess] = {}
            if _takes_kube(plugin.factory):
                extra["kube"] = await self._api_server_access()
            provider = factory(
                address=spec.address, secret=secret, headers=spec.headers,
                insecure_skip_verify=bool(spec.insecure_skip_verify), region=spec.region,
                interval=interval, variant=plugin.variant, **extra,
            )
        except PluginError as exc:  # not installed, or it failed to load: no retry helps
            raise _Failed(_error_named(
                key.name, f"{where} provider {spec.type} error: {_describe(exc)}",
                cause=TemplateCause.NOT_INSTALLED,
            ), installed=False) from exc
        except Exception as exc:
            raise _Failed(_error_named(
                key.name, f"{where} provider {spec.type} error: {_describe(exc)}",
                cause=TemplateCause.PROVIDER_INVALID,
            )) from exc
        if cached is not None:
            self._retired.append((time.monotonic(), cached.provider))
            log.info("metrics_provider_replaced", template=f"{key.name}.{key.namespace}",
                     provider=spec.type)
        self._providers[identity] = _Cached(version=version, provider=provider)
        return provider

    async def _api_server_access(self) -> ApiServerAccess:
        """The controller's API server and credentials (``-kubeconfig``/``-master``), read once.

        Given as ``kube=`` to a metrics factory that declares that keyword (``externalmetrics``
        queries the API server as Flagger's rest config does); others never see it.
        """
        if self._api_access is None:
            kube = self._settings.kube
            self._api_access = await api_server_access(
                kubeconfig=kube.kubeconfig or None, master=kube.master or None)
        return self._api_access

    async def _secret(self, key: ObjectKey, *, where: str) -> tuple[dict[str, bytes], str]:
        """The Secret's decoded data and its version (resourceVersion, or a digest)."""
        lookup = self._secrets if callable(self._secrets) else self._secrets.get
        try:
            found = lookup(key)
            if inspect.isawaitable(found):
                found = await found
        except FlaggerError as exc:
            raise _Failed(_error_named(key.name, f"{where} error: {exc}",
                                       cause=TemplateCause.SECRET_INVALID)) from exc
        if found is None:
            raise _Failed(_error_named(key.name, f'{where} error: secrets "{key.name}" not found',
                                       cause=TemplateCause.SECRET_NOT_FOUND))
        raw = found.get("data") or {}
        try:
            data = {name: base64.b64decode(value, validate=True) for name, value in raw.items()}
        except (binascii.Error, TypeError, ValueError) as exc:
            raise _Failed(_error_named(
                key.name, f"{where} error: data is not valid base64",
                cause=TemplateCause.SECRET_INVALID)) from exc
        metadata = found.get("metadata") or {}
        version = metadata.get("resourceVersion") or _digest(data)
        return data, str(version)

    # -- judging a value ------------------------------------------------------------------------

    def _judge(
            self,
            canary: Canary,
            metric: CanaryMetric,
            kind: MetricKind,
            value: float | timedelta,
    ) -> MetricResult:
        """Records the value and compares it; raises NoValuesFoundError for NaN."""
        breach = evaluate(value, kind=kind, threshold_range=metric.threshold_range,
                          threshold=metric.threshold)
        if isinstance(value, timedelta):
            compared = float(int(value / timedelta(milliseconds=1)))
            recorded = compared / 1000
        else:
            compared = recorded = float(value)
        self._telemetry.set_analysis(
            name=canary.spec.target_ref.name, namespace=canary.namespace, metric=metric.name,
            value=recorded,
        )
        if breach is None:
            return MetricResult(name=metric.name, value=compared, passed=True, message="")
        return MetricResult(
            name=metric.name, value=compared, passed=False,
            message=(f"Halt {canary.name}.{canary.namespace} advancement "
                     f"{breach.describe(metric.name)}"),
        )

    # -- provider lifetime ----------------------------------------------------------------------

    async def _close_retired(self) -> None:
        if not self._retired:
            return
        now = time.monotonic()
        due = [p for since, p in self._retired if now - since >= RETIRE_GRACE]
        self._retired = [(since, p) for since, p in self._retired if now - since < RETIRE_GRACE]
        for provider in due:
            await _close(provider)


# --- helpers ------------------------------------------------------------------------------------


def _observer_query(observer: Observer, kind: MetricKind, model: MetricTemplateModel) -> str | None:
    """The builtin query the observer sends, when it says (``flaggerpy.observing`` ones do)."""
    name = "render_success_rate" if kind is MetricKind.REQUEST_SUCCESS_RATE else "render_duration"
    render = getattr(observer, name, None)
    if render is None:
        return None
    try:
        return decisions.redact(str(render(model)))
    except Exception:  # shown for explanation only; the check itself reports render errors
        return None


def _is_builtin(metric: CanaryMetric) -> bool:
    return MetricKind.of(metric.name) in _BUILTIN_NAMES


def _has_threshold(metric: CanaryMetric) -> bool:
    """Whether a fixed threshold applies (``thresholdRange`` or the deprecated ``threshold``)."""
    return metric.threshold_range is not None or metric.threshold is not None


def _interval(canary: Canary, metric: CanaryMetric) -> str:
    """The metric's window: its ``interval``, else 1m, for builtin and template metrics alike.

    Flagger applies the default to builtin metrics only, so a template without an interval
    renders ``[]`` and fails (spec §10.2); see docs/compatibility.md.
    """
    return metric.interval or canary.get_metric_interval()


class _Step(enum.Enum):
    BUILTIN = "builtin"  # request-success-rate or request-duration through the observer
    INLINE = "inline"  # analysis.metrics[].query through the builtin Prometheus
    TEMPLATE = "template"  # a templateRef
    UNUSABLE = "unusable"  # none of the above: an error


def _plan(canary: Canary) -> list[tuple[_Step, CanaryMetric]]:
    """The checks of a tick in Flagger's order: the builtin pass, then the template pass.

    As in Flagger, a metric with a builtin name and a ``query`` (or a ``templateRef``) is
    checked both ways.
    """
    metrics = canary.spec.analysis.metrics or []
    plan: list[tuple[_Step, CanaryMetric]] = []
    for metric in metrics:
        if _is_builtin(metric):
            plan.append((_Step.BUILTIN, metric))
        if metric.query:
            plan.append((_Step.INLINE, metric))
    for metric in metrics:
        if metric.template_ref is not None:
            plan.append((_Step.TEMPLATE, metric))
        elif not _is_builtin(metric) and not metric.query:
            plan.append((_Step.UNUSABLE, metric))
    return plan


def _no_values(metric: CanaryMetric, message: str) -> MetricResult:
    return MetricResult(name=metric.name, value=None, passed=False, message=message,
                        no_values=True)


def _error(metric: CanaryMetric, message: str) -> MetricResult:
    return _error_named(metric.name, message)


def _error_named(name: str, message: str, *, cause: TemplateCause | None = None) -> MetricResult:
    return MetricResult(name=name, value=None, passed=False, message=message, error=True,
                        cause=cause)


def _rename(result: MetricResult, name: str) -> MetricResult:
    return replace(result, name=name)


def _describe(exc: BaseException) -> str:
    """An exception as an Event's ``%v``: our own errors by message, others with their type."""
    if isinstance(exc, FlaggerError | ValueError):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _log_unexpected(exc: BaseException, metric: CanaryMetric) -> None:
    if not isinstance(exc, MetricsError | templating.TemplatingError):
        log.warning("metric_check_crashed", metric=metric.name, exc_info=exc)


def _lower_first(message: str) -> str:
    """Flagger's availability check words the same failures with a lower-case first letter."""
    return message[:1].lower() + message[1:]


def _endpoint(address: str) -> str:
    """An address as ``scheme://host[:port]``, so that no credential in it is repeated."""
    try:
        parts = urlsplit(address)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "<invalid URL>"
    if not parts.scheme or not host:
        return f'"{address}"' if "@" not in address else "<invalid URL>"
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def _digest(data: Mapping[str, bytes]) -> str:
    """A version for Secret data without a resourceVersion; never printed."""
    hasher = hashlib.sha256()
    for name in sorted(data):
        hasher.update(name.encode() + b"\0" + data[name] + b"\0")
    return "sha256:" + hasher.hexdigest()


def _takes_kube(factory: object) -> bool:
    """Whether a metrics factory declares the optional ``kube`` keyword (sdk.ApiServerAccess)."""
    try:
        return "kube" in inspect.signature(factory).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


async def _offline_reason(provider: MetricsProvider, *, when_false: str) -> str | None:
    """None if the provider is online, else why not (``when_false`` if it only says no)."""
    try:
        online = await provider.is_online()
    except Exception as exc:
        return _describe(exc)
    return None if online else when_false


async def _close(provider: MetricsProvider) -> None:
    try:
        await provider.aclose()
    except Exception as exc:
        log.warning("metrics_provider_close_failed", provider=type(provider).__name__,
                    exc_info=exc)
