"""Alerts about canaries: which message goes to whom, through which notifier.

Port of Flagger's ``Controller.alert`` (``pkg/controller/events.go``) and of
the global notifier set up in ``cmd/flagger/main.go`` (``initNotifier``).
The lifecycle engine makes one :class:`Alerter` at start-up and calls one
method wherever Flagger alerts::

    alerter = Alerter(settings=settings, client=client, providers=provider_cache.get,
                      registry=recorder.registry)
    await alerter.alert(canary, alerting.new_revision())
    await alerter.alert(canary, alerting.failed_checks_threshold_reached(
        3, last_failure=breach.describe("request-success-rate")))
    await alerter.alert(canary, "Anything else", severity=Severity.WARN)
    ...
    await alerter.aclose()  # at shutdown: lets pending alerts finish, briefly

The message texts and severities Flagger uses are the functions below
(:func:`new_revision`, :func:`promotion_completed`, ...), so the engine
never spells a text itself and users' chat filters keep matching.

Who receives a message (spec §6.1):

- A canary with ``analysis.alerts`` sends to those AlertProviders only.
  Each alert has a severity threshold: ``info`` receives everything,
  ``warn`` warn and error, ``error`` errors only. An empty or missing
  severity means ``info``, as Flagger's documentation says (Flagger's code
  sends such alerts nothing; spec §10.1).
- A canary without alerts sends everything to the global notifier: Slack
  from ``-slack-url`` (with ``-slack-channel``, ``-slack-user`` and
  ``-slack-token``), replaced by MS Teams when ``-msteams-url`` is set.
  Slack without a channel stays off, as in Flagger, with an error logged.

An alert's provider is read through ``providers`` (an informer cache's
``get``, or any lookup; without one, from the API server), in the
``providerRef.namespace`` or else the canary's namespace. With a
``secretRef``, the Secret in the provider's namespace must hold
``address`` (which wins over ``spec.address``) and may hold ``token``
(Slack's bearer token), as in Flagger, and ``proxy`` (a flaggerpy
addition: a proxy URL with credentials belongs in a Secret too). The
notifier is built by the ``flaggerpy.notifiers`` registry from the
provider's ``type``.

How it behaves when things go wrong (design rules 4 to 6):

- :meth:`Alerter.alert` never raises and never waits for the network: it
  builds the message, hands delivery to a background task and returns.
  Tasks are bounded (``max_pending``; beyond it an alert is dropped and
  counted) and each has a deadline; alerts of one canary are delivered in
  the order they were raised.
- Every failure (provider not found, Secret missing or without an address,
  unknown type, invalid URL, a post that failed after the notifier's own
  retries) is logged at error level with ``canary="<name>.<namespace>"``,
  the alert's name and the provider's reference, and counted in
  ``flaggerpy_notification_failures_total{provider}``. No log line carries
  a webhook URL, token or proxy: endpoints appear as ``scheme://host``.
- Retries happen inside the notifiers only (transport errors and 5xx);
  nothing here repeats a post.
- Each alert sent through an AlertProvider ends as a :class:`Delivery`
  (delivered, or why not) handed to ``on_delivery`` when one is given: the
  provider's own status is written there
  (:mod:`flaggerpy.canary.template_status`), never here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import enum
import functools
import inspect
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Self, TypeAlias

import aiohttp
import pydantic
import structlog
from prometheus_client import CollectorRegistry, Counter

from flaggerpy import kube, plugins
from flaggerpy.canary import alert_templates
from flaggerpy.canary.alert_templates import CheckInfo, WebhookInfo
from flaggerpy.errors import FlaggerError, NotifierError, PluginError
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.logs import canary_id, safe_url
from flaggerpy.models import AlertKind, AlertProvider, AlertProviderType, Canary
from flaggerpy.models.canary import CanaryAlert
from flaggerpy.notifying import Field, Message, Notifier, NotifierFactory, Severity
from flaggerpy.settings import NotificationSettings, Settings

__all__ = [
    "DEFAULT_DEADLINE",
    "DEFAULT_MAX_PENDING",
    "DEFAULT_POST_TIMEOUT",
    "AlertMessage",
    "Alerter",
    "Delivery",
    "DeliveryCause",
    "Dispatcher",
    "Lookup",
    "NotificationMetrics",
    "alert_metadata",
    "analysis_skipped",
    "failed_check",
    "failed_checks_threshold_reached",
    "initialization_completed",
    "manual_rollback",
    "metrics_providers_unusable",
    "new_revision",
    "notification_metrics",
    "progress_deadline_exceeded",
    "promotion_completed",
    "promotion_failed",
    "promotion_waiting_for_approval",
    "step_advanced",
    "traffic_increase_waiting_for_approval",
    "waiting_for_approval",
    "webhook_failed",
]

log = structlog.get_logger(__name__)

DEFAULT_POST_TIMEOUT: Final = 5.0
"""Seconds per request of a notifier (Flagger's ``postMessage`` timeout)."""

DEFAULT_DEADLINE: Final = 30.0
"""Seconds one alert may take in the background, lookups and every retry included."""

DEFAULT_MAX_PENDING: Final = 100
"""Alerts in flight at most; more are dropped (and counted) rather than queued without end."""

DEFAULT_CLOSE_GRACE: Final = 5.0
"""Seconds :meth:`Alerter.aclose` lets pending alerts finish before cancelling them."""

UNKNOWN_PROVIDER: Final = "unknown"
"""The metric's ``provider`` label when the failing provider's type is not known."""


# --- the messages Flagger sends (spec §6.2) ------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertMessage:
    """One alert as the engine raises it: text, severity, and which fields go with it."""

    text: str
    severity: Severity = Severity.INFO
    metadata: bool = False
    """Add the canary's Target, Failed checks threshold, Progress deadline and Traffic routing."""
    fields: tuple[Field, ...] = ()
    """Extra fields after the metadata (e.g. the last failed check)."""
    kind: AlertKind | None = None
    """The event, for templates (:mod:`flaggerpy.canary.alert_templates`); None: never
    templated."""
    check: CheckInfo | None = None
    """The failing check, for templates (a rollback's is read from the status when unset)."""
    webhook: WebhookInfo | None = None
    """The failing webhook, for templates."""
    error: str | None = None
    """What went wrong, for templates (a readiness or promotion failure)."""
    revision: str | None = None
    """The revision the event is about, when it is not yet ``status.lastAppliedSpec``."""


def initialization_completed(kind: str) -> AlertMessage:
    """A new canary's primary is ready: ``New Deployment detected, initialization completed.``"""
    return AlertMessage(text=f"New {kind} detected, initialization completed.", metadata=True,
                        kind=AlertKind.INITIALIZED)


def new_revision(revision: str | None = None) -> AlertMessage:
    """A changed target or tracked config starts an analysis run (``revision``: its hash)."""
    return AlertMessage(text="New revision detected, progressing canary analysis.", metadata=True,
                        kind=AlertKind.NEW_REVISION, revision=revision)


def waiting_for_approval() -> AlertMessage:
    """A confirm-rollout gate said no: sent once, on entering ``Waiting``."""
    return AlertMessage(text="Canary is waiting for approval.", severity=Severity.WARN,
                        kind=AlertKind.WAITING)


def traffic_increase_waiting_for_approval() -> AlertMessage:
    """A confirm-traffic-increase gate said no; Flagger sends it on every such tick."""
    return AlertMessage(
        text="Canary traffic increase is waiting for approval.", severity=Severity.WARN,
        kind=AlertKind.WAITING,
    )


def promotion_waiting_for_approval() -> AlertMessage:
    """A confirm-promotion gate said no: sent once, on entering ``WaitingPromotion``."""
    return AlertMessage(text="Canary promotion is waiting for approval.", severity=Severity.WARN,
                        kind=AlertKind.WAITING)


def manual_rollback() -> AlertMessage:
    """A rollback webhook asked for a rollback."""
    return AlertMessage(text="Rolling back manual webhook invoked", severity=Severity.WARN,
                        kind=AlertKind.ROLLED_BACK)


def failed_checks_threshold_reached(
        failed_checks: int,
        *,
        last_failure: str | None = None,  # e.g. ThresholdBreach.describe(metric_name)
) -> AlertMessage:
    """The analysis failed and the canary is rolled back.

    The text is Flagger's (``Failed checks threshold reached 5``), so
    existing filters keep matching. What made the last check fail, for
    example ``success rate 95.20% < 99%`` from
    :meth:`flaggerpy.analysis.ThresholdBreach.describe`, goes in a
    ``Last failed check`` field: Flagger only put it in an Event.
    """
    fields = (Field("Last failed check", last_failure),) if last_failure else ()
    return AlertMessage(
        text=f"Failed checks threshold reached {failed_checks}",
        severity=Severity.ERROR,
        fields=fields,
        kind=AlertKind.ROLLED_BACK,
    )


def metrics_providers_unusable(reason: str) -> AlertMessage:
    """A run ended before its first step: a metric backend it needs cannot be used (a
    MetricTemplate's provider type that is not installed). flaggerpy's own; Flagger would
    have shifted traffic and alerted ``Failed checks threshold reached`` later."""
    return AlertMessage(
        text="Canary analysis failed before any traffic shift: metrics provider not usable",
        severity=Severity.ERROR,
        fields=(Field("Last failed check", reason),),
        kind=AlertKind.ROLLED_BACK,
        error=reason,
    )


def progress_deadline_exceeded(error: str) -> AlertMessage:
    """The canary or primary did not become ready within ``progressDeadlineSeconds``.

    Flagger has the text but never sends it outside ``skipAnalysis`` (spec §2.4): its
    readiness rollback is silent (fluxcd/flagger#1663, #1816); flaggerpy sends it there.
    """
    return AlertMessage(text=f"Progress deadline exceeded {error}", severity=Severity.ERROR,
                        kind=AlertKind.READINESS_TIMEOUT, error=error)


def promotion_failed(error: str) -> AlertMessage:
    """The primary did not become ready after the promotion."""
    return AlertMessage(
        text=f"Promotion failed, primary not ready: {error}", severity=Severity.ERROR,
        kind=AlertKind.PROMOTION_FAILED, error=error,
    )


def promotion_completed() -> AlertMessage:
    """The analysis passed and the primary runs the new revision."""
    return AlertMessage(text="Canary analysis completed successfully, promotion finished.",
                        kind=AlertKind.PROMOTED)


def analysis_skipped() -> AlertMessage:
    """``skipAnalysis: true``: promoted without analysis."""
    return AlertMessage(text="Canary analysis was skipped, promotion finished.",
                        kind=AlertKind.PROMOTED)


# --- flaggerpy's own events, sent only to alerts with a template for them ------------------------


def step_advanced(weight: int) -> AlertMessage:
    """The canary's traffic weight moved up one step (``step``)."""
    return AlertMessage(text=f"Advance canary weight {weight}", kind=AlertKind.STEP)


def failed_check(check: CheckInfo) -> AlertMessage:
    """One metric check failed (``failedCheck``); the run goes on until the threshold."""
    return AlertMessage(text=check.message or f"Metric check {check.name} failed",
                        severity=Severity.WARN, kind=AlertKind.FAILED_CHECK, check=check)


def webhook_failed(*, name: str, hook_type: str, error: str) -> AlertMessage:
    """A pre-rollout or rollout webhook failed, which counts as a failed check, or a
    post-rollout webhook failed after the run (``webhookFailure``); Flagger only records an
    Event (fluxcd/flagger#1663)."""
    return AlertMessage(text=f"{hook_type} check {name} failed {error}", severity=Severity.WARN,
                        kind=AlertKind.WEBHOOK_FAILURE,
                        webhook=WebhookInfo(name=name, error=error))


def alert_metadata(canary: Canary) -> tuple[Field, ...]:
    """The fields Flagger adds to "detected" messages (``alertMetadata``).

    ``Target: Deployment/podinfo.test``, ``Failed checks threshold: 5``,
    ``Progress deadline: 600s`` and ``Traffic routing``: ``Weight step: 10
    max: 50``, ``Weight steps: 10,20,50 max: 50``, ``A/B Testing`` or
    ``Blue/Green``. The ``max`` shown is the weight the analysis really
    stops at; Flagger prints the raw ``maxWeight`` field (``0`` when unset,
    and ignored with ``stepWeights``).
    """
    target = canary.spec.target_ref
    analysis = canary.spec.analysis
    fields = [
        Field("Target", f"{target.kind}/{target.name}.{canary.namespace}"),
        Field("Failed checks threshold", str(canary.get_analysis_threshold())),
        Field("Progress deadline", f"{canary.get_progress_deadline_seconds()}s"),
    ]
    max_weight = analysis.get_max_weight()
    if analysis.step_weight is not None and analysis.step_weight > 0:
        routing = f"Weight step: {analysis.step_weight} max: {max_weight}"
    elif analysis.step_weights:
        steps = ",".join(str(step) for step in analysis.step_weights)
        routing = f"Weight steps: {steps} max: {max_weight}"
    elif analysis.match:
        routing = "A/B Testing"
    elif analysis.iterations is not None and analysis.iterations > 0:
        routing = "Blue/Green"
    else:
        return tuple(fields)
    fields.append(Field("Traffic routing", routing))
    return tuple(fields)


# --- metrics ------------------------------------------------------------------------------------


class NotificationMetrics:
    """``flaggerpy_notification_failures_total{provider}`` on a registry.

    Use :func:`notification_metrics` to get the one instance of a registry
    (a metric can be registered only once per registry).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.failures = Counter(
            "flaggerpy_notification_failures_total",
            "Alerts that could not be delivered, by notifier type",
            ["provider"], registry=registry,
        )
        for provider in AlertProviderType:  # start at 0, so a dashboard shows 0, not no data
            self.failures.labels(provider=provider.value)

    def failed(self, provider: str) -> None:
        """One alert to one destination was not delivered."""
        self.failures.labels(provider=provider).inc()


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, NotificationMetrics] = (
    weakref.WeakKeyDictionary()
)


def notification_metrics(registry: CollectorRegistry) -> NotificationMetrics:
    """The notification metrics of ``registry`` (e.g. ``Recorder.registry``), made once."""
    metrics = _METRICS.get(registry)
    if metrics is None:
        metrics = _METRICS[registry] = NotificationMetrics(registry)
    return metrics


# --- lookup contracts ---------------------------------------------------------------------


LookupResult: TypeAlias = "Mapping[str, Any] | AlertProvider | None"
Lookup: TypeAlias = "Callable[[ObjectKey], LookupResult | Awaitable[LookupResult]]"
"""Finds an object by key: an informer cache's ``get``, or any function, sync or async.

``None`` means "does not exist". AlertProvider lookups may return the JSON
object or the model; Secret lookups return the JSON object.
"""


# --- background delivery ----------------------------------------------------------------------


class Dispatcher:
    """Runs fire-and-forget jobs: bounded in number, ordered per key, never raising.

    A job for a key starts only when the previous job for the same key has
    finished, so one canary's alerts arrive in the order they were raised
    while different canaries' alerts go out concurrently. Jobs are expected
    to handle their own errors; anything that escapes is logged.
    """

    def __init__(self, *, limit: int = DEFAULT_MAX_PENDING, name: str = "dispatcher") -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._limit = limit
        self._name = name
        self._tasks: set[asyncio.Task[None]] = set()
        self._last: dict[str, asyncio.Task[None]] = {}

    def __len__(self) -> int:
        """Jobs submitted and not finished yet."""
        return len(self._tasks)

    def submit(self, key: str, job: Callable[[], Awaitable[None]]) -> bool:
        """Schedules ``job()`` after the key's previous job; False (not run) when full."""
        if len(self._tasks) >= self._limit:
            return False
        previous = self._last.get(key)
        task = asyncio.get_running_loop().create_task(
            self._run(previous, job), name=f"{self._name}:{key}"
        )
        self._tasks.add(task)
        self._last[key] = task
        task.add_done_callback(lambda done: self._finished(key, done))
        return True

    async def join(self, within: float | None = None) -> bool:
        """Waits until every job submitted so far has finished; False if ``within`` s passed first.

        A bound rather than ``asyncio.timeout`` around it, because running out
        of time here is an answer (some jobs still run), not an error.
        """
        pending = set(self._tasks)
        if not pending:
            return True
        _, still_running = await asyncio.wait(pending, timeout=within)
        return not still_running

    async def aclose(self, *, grace: float = DEFAULT_CLOSE_GRACE) -> None:
        """Lets running jobs finish for ``grace`` seconds, then cancels the rest."""
        if await self.join(grace):
            return
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @staticmethod
    async def _run(previous: asyncio.Task[None] | None, job: Callable[[], Awaitable[None]]) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])  # its outcome is its own business
        await job()

    def _finished(self, key: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._last.get(key) is task:
            del self._last[key]
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("background_job_failed", dispatcher=self._name, key=key,
                      error=f"{type(error).__name__}: {error}")


# --- the alerter --------------------------------------------------------------------------------


class DeliveryCause(enum.StrEnum):
    """How one alert through an AlertProvider ended, as far as the provider is concerned."""

    DELIVERED = "delivered"
    POST_FAILED = "post-failed"
    """The notifier posted and failed after its own retries, or ran out of time."""
    SECRET_NOT_FOUND = "secret-not-found"
    SECRET_INVALID = "secret-invalid"
    """The Secret could not be read, is not base64 text, or has no ``address`` key."""
    ADDRESS_MISSING = "address-missing"
    NOT_INSTALLED = "not-installed"
    """No installed notifier serves the provider's ``type``."""
    PROVIDER_INVALID = "provider-invalid"
    """The AlertProvider or its address was refused (an invalid URL, an invalid spec)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """What became of one alert sent through an AlertProvider (for the provider's status)."""

    provider: ObjectKey
    cause: DeliveryCause
    message: str
    """Why, in the words of the log line; never a URL or a token."""
    secret: bool | None = None
    """Whether the provider's Secret was found and usable; None: no ``secretRef``, or the
    alert ended before the Secret was read."""
    templates: str | None = None
    """What is wrong with the provider's ``spec.templates`` (``""``: nothing); None: it has
    none, or the alert ended before they were looked at."""


DeliverySink: TypeAlias = "Callable[[Delivery], Awaitable[None]]"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Destination:
    """A notifier ready to post, and how to name it in logs and metrics."""

    alert: str
    """The alert's name, or ``global`` for the global notifier."""
    provider: str
    """The notifier type (``slack``...): the metric label."""
    ref: str
    """``namespace/name`` of the AlertProvider, or the flag that configured the global one."""
    endpoint: str
    """``scheme://host`` only."""
    notifier: Notifier
    secret: bool | None = None
    """True when the provider has a ``secretRef`` and its Secret was usable."""
    templates: Mapping[str, str] | None = None
    """The AlertProvider's ``spec.templates``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Templating:
    """What an alert's templates need: its kind and the values they see."""

    kind: AlertKind
    values: Mapping[str, Any]

    @property
    def opt_in(self) -> bool:
        """Sent only where a template exists for it."""
        return self.kind in alert_templates.OPT_IN_KINDS


class _Skip(Exception):
    """An alert that cannot be sent; the message says why (never with a URL or token)."""

    def __init__(
            self,
            event: str,
            reason: str,
            *,
            provider: str = UNKNOWN_PROVIDER,
            cause: DeliveryCause | None = None,  # None: nothing to say on the AlertProvider
            secret: bool | None = None,  # see Delivery.secret
    ) -> None:
        super().__init__(reason)
        self.event = event
        self.reason = reason
        self.provider = provider
        self.cause = cause
        self.secret = secret


@dataclass(frozen=True, slots=True, kw_only=True)
class _GlobalConfig:
    provider: str
    flag: str
    address: str
    proxy: str
    token: str
    username: str
    channel: str


class Alerter:
    """Sends a canary's alerts to its AlertProviders, or to the global notifier.

    Build one per process. ``client`` reads AlertProviders and Secrets that
    ``providers`` and ``secrets`` (cache lookups, optional) do not serve.
    ``registry`` is where the failure counter goes (the telemetry
    ``Recorder.registry``); ``metrics`` may be given instead. Close it with
    :meth:`aclose` (or ``async with``) to let pending alerts finish.
    """

    def __init__(
            self,
            *,
            settings: Settings,
            client: kube.KubeClient | None = None,
            providers: Lookup | None = None,  # None: GET from the API server through client
            secrets: Lookup | None = None,  # None: GET from the API server through client
            notifiers: plugins.Registry[plugins.Factory] = plugins.notifiers,
            registry: CollectorRegistry | None = None,
            metrics: NotificationMetrics | None = None,  # default: notification_metrics(registry)
            post_timeout: float = DEFAULT_POST_TIMEOUT,
            deadline: float = DEFAULT_DEADLINE,
            max_pending: int = DEFAULT_MAX_PENDING,
            on_delivery: DeliverySink | None = None,  # told how each AlertProvider alert ended
    ) -> None:
        self._kube = client
        self._on_delivery = on_delivery
        self._providers = providers
        self._secrets = secrets
        self._notifiers = notifiers
        self._metrics = metrics or notification_metrics(
            registry if registry is not None else CollectorRegistry()
        )
        self._post_timeout = post_timeout
        self._deadline = deadline
        self._cluster_name = settings.controller.cluster_name
        self._dashboard_url = settings.notifications.dashboard_url
        self._no_cross_namespace_refs = settings.controller.no_cross_namespace_refs
        self._dispatcher = Dispatcher(limit=max_pending, name="alerts")
        self._session: aiohttp.ClientSession | None = None
        self._global_config = _global_config(settings.notifications)
        self._global: _Destination | None = None
        if self._global_config is not None:
            # Check the flags now, so a bad -slack-url is reported at start-up, once.
            try:
                self._build_global(session=None)
            except (FlaggerError, ValueError) as exc:
                log.error("global_notifier_disabled", provider=self._global_config.provider,
                          flag=self._global_config.flag, error=str(exc))
                self._global_config = None
            else:
                log.info("global_notifier_enabled", provider=self._global_config.provider,
                         endpoint=safe_url(self._global_config.address))

    @property
    def global_provider(self) -> str | None:
        """The global notifier's type (``slack`` or ``msteams``), None when there is none."""
        return self._global_config.provider if self._global_config else None

    async def alert(
            self,
            canary: Canary,
            message: str | AlertMessage,
            *,
            severity: Severity | None = None,  # default: the AlertMessage's, or info
            metadata: bool | None = None,  # default: the AlertMessage's, or False
            fields: Sequence[Field] = (),
    ) -> None:
        """Sends ``message`` about ``canary`` to whoever should get it; returns at once.

        ``message`` is one of this module's :class:`AlertMessage` values or a
        plain text. The fields sent are ``Cluster`` (when ``-cluster-name``
        is set), then the canary's metadata when ``metadata`` is true, then
        the message's own fields, then ``fields``. Delivery happens in the
        background; this never raises because of a notifier and never
        waits for one (see :meth:`flush`).
        """
        templating: _Templating | None = None
        if isinstance(message, AlertMessage):
            text = message.text
            severity = message.severity if severity is None else severity
            metadata = message.metadata if metadata is None else metadata
            extra = (*message.fields, *fields)
        else:
            text, extra = message, tuple(fields)
            severity = Severity.INFO if severity is None else severity
        try:
            if isinstance(message, AlertMessage) and message.kind is not None:
                templating = self._templating(canary, message, severity=severity,
                                              fields=(*message.fields, *fields))
            body = Message(
                workload=canary.name,
                namespace=canary.namespace,
                text=text,
                fields=(*self._cluster_fields(), *(alert_metadata(canary) if metadata else ()),
                        *extra),
                severity=severity,
            )
            alerts = tuple(canary.spec.analysis.alerts or ())
        except Exception as exc:  # a canary the engine should not have handed us
            log.error("alert_not_built", canary=canary_id(canary.name, canary.namespace),
                      error=f"{type(exc).__name__}: {exc}")
            self._metrics.failed(UNKNOWN_PROVIDER)
            return
        who = canary_id(body.workload, body.namespace)
        # One ordered queue per destination: a receiver that hangs delays only its own alerts,
        # never the ones to healthy receivers of the same canary.
        jobs: list[tuple[str, Callable[[], Awaitable[None]], str]]
        if alerts:
            jobs = [
                (f"{who}/{alert.name}",
                 functools.partial(self._deliver_alerts, who, [alert], body, templating),
                 UNKNOWN_PROVIDER)
                for alert in alerts if _admits(alert, body.severity, who=who)
            ]
        elif templating is not None and templating.opt_in:
            return  # the global notifier has no templates, so it never gets these
        elif self._global_config is not None:
            jobs = [(who, functools.partial(self._deliver_global, who, body),
                     self._global_config.provider)]
        else:
            return
        for key, job, label in jobs:
            if not self._dispatcher.submit(key, job):
                log.error("alert_dropped", canary=who, text=text,
                          pending=len(self._dispatcher), reason="too many alerts in flight")
                self._metrics.failed(label)

    async def flush(self, within: float | None = None) -> bool:
        """Waits for the alerts raised so far to be delivered or given up.

        False when ``within`` seconds passed first. For shutdown and tests: the
        engine never needs to wait for an alert.
        """
        return await self._dispatcher.join(within)

    async def aclose(self, *, grace: float = DEFAULT_CLOSE_GRACE) -> None:
        """Lets pending alerts finish for ``grace`` seconds, then closes the connection pool."""
        await self._dispatcher.aclose(grace=grace)
        self._global = None  # it holds the pool closed below; rebuilt if used again
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- delivery (background) -----------------------------------------------------------------

    async def _deliver_global(self, who: str, message: Message) -> None:
        when = asyncio.get_running_loop().time() + self._deadline
        try:
            destination = self._global or self._build_global(session=self._shared_session())
        except (FlaggerError, ValueError) as exc:  # checked at start-up; belt and braces
            assert self._global_config is not None
            self._failed(who, "alert_provider_invalid", str(exc),
                         provider=self._global_config.provider, alert="global")
            return
        self._global = destination
        await self._post(who, destination, message, when=when)

    async def _deliver_alerts(
            self,
            who: str,
            alerts: Sequence[CanaryAlert],
            message: Message,
            templating: _Templating | None = None,
    ) -> None:
        """Resolves and posts every alert concurrently, each within one deadline."""

        async def one(alert: CanaryAlert) -> None:
            when = asyncio.get_running_loop().time() + self._deadline
            where = {"alert": alert.name, "provider_ref": _ref_of(alert, message.namespace)}
            key = ObjectKey(alert.provider_ref.namespace or message.namespace,
                            alert.provider_ref.name)
            try:
                async with asyncio.timeout_at(when):
                    destination = await self._resolve(alert, message.namespace)
            except _Skip as skip:
                self._failed(who, skip.event, skip.reason, provider=skip.provider, **where)
                if skip.cause is not None:
                    await self._report(Delivery(provider=key, cause=skip.cause,
                                                message=skip.reason, secret=skip.secret))
                return
            except TimeoutError:
                self._failed(who, "alert_provider_timeout",
                             f"looking up the provider took over {self._deadline:g}s",
                             provider=UNKNOWN_PROVIDER, **where)
                return
            except Exception as exc:  # a lookup that broke its contract
                self._failed(who, "alert_provider_unreadable", f"{type(exc).__name__}: {exc}",
                             provider=UNKNOWN_PROVIDER, **where)
                return
            problems = (alert_templates.template_problems(destination.templates)
                        if destination.templates else None)
            if templating is not None:
                text = self._text(who, alert, destination, templating, problems)
                if text is None:
                    return  # an opt-in kind nobody wrote a template for
                message_ = dataclasses.replace(message, text=text)
            else:
                message_ = message
            error = await self._post(who, destination, message_, when=when)
            await self._report(Delivery(
                provider=key,
                cause=DeliveryCause.DELIVERED if error is None else DeliveryCause.POST_FAILED,
                message=error or f"delivered to {destination.endpoint}",
                secret=destination.secret,
                templates="; ".join(problems) if problems is not None else None,
            ))

        await asyncio.gather(*(one(alert) for alert in alerts))

    def _templating(
            self, canary: Canary, message: AlertMessage, *, severity: Severity,
            fields: Sequence[Field],
    ) -> _Templating:
        """The kind and template values of ``message`` about ``canary``."""
        assert message.kind is not None
        check = message.check
        last = next((f.value for f in fields if f.name == "Last failed check"), None)
        if check is None and last is not None:  # a rollback or a pause: the check it is about
            check = alert_templates.failed_check_from_history(
                canary.status.analysis_history if canary.status else None, last_failure=last)
        values = alert_templates.variables(
            canary, kind=message.kind, text=message.text, severity=severity.value,
            cluster=self._cluster_name, dashboard_url=self._dashboard_url,
            revision=message.revision, check=check, webhook=message.webhook,
            error=message.error,
        )
        return _Templating(kind=message.kind, values=values)

    def _text(
            self,
            who: str,
            alert: CanaryAlert,
            destination: _Destination,
            templating: _Templating,
            problems: list[str] | None,  # the provider's templates that do not parse
    ) -> str | None:
        """The alert's text for ``destination``: its template's, else the default text.

        None for an opt-in kind without a template (nothing is sent). A template that fails
        is logged (and, when it is the provider's, added to ``problems`` for its status);
        the default text goes instead, so no alert is lost to a typo.
        """
        chosen = alert_templates.choose(templating.kind, alert=alert.templates,
                                        provider=destination.templates)
        default = str(templating.values["text"])
        if chosen is None:
            return None if templating.opt_in else default
        source, origin = chosen
        try:
            return alert_templates.render(source, templating.values)
        except alert_templates.TemplateError as exc:
            log.error("alert_template_failed", canary=who, alert=alert.name,
                      provider_ref=destination.ref, kind=templating.kind.value,
                      template=origin, error=str(exc))
            if origin == "provider" and problems is not None:
                problem = f"{templating.kind.value}: {exc}"
                if problem not in problems:
                    problems.append(problem)
            return default

    async def _report(self, delivery: Delivery) -> None:
        """Hands ``delivery`` to ``on_delivery``; a failure there is logged, never raised."""
        if self._on_delivery is None:
            return
        try:
            await self._on_delivery(delivery)
        except Exception as exc:
            log.warning("alert_delivery_report_failed", provider_ref=str(delivery.provider),
                        error=f"{type(exc).__name__}: {exc}")

    async def _post(
            self, who: str, destination: _Destination, message: Message, *, when: float
    ) -> str | None:
        """Posts through the notifier (which retries); logs and counts any failure.

        Returns None when delivered, else why not (the logged reason).
        """
        where = {"alert": destination.alert, "provider_ref": destination.ref,
                 "endpoint": destination.endpoint}
        try:
            async with asyncio.timeout_at(when):
                await destination.notifier.post(message)
        except NotifierError as exc:
            error = str(exc)
        except TimeoutError:
            error = f"gave up after {self._deadline:g}s"
        except Exception as exc:  # a third-party notifier that broke its contract
            error = f"{type(exc).__name__}: {exc}"
        else:
            log.debug("alert_sent", canary=who, provider=destination.provider,
                      severity=message.severity.value, **where)
            return None
        self._failed(who, "alert_failed", error, provider=destination.provider, **where)
        return error

    def _failed(self, who: str, event: str, reason: str, *, provider: str, **fields: str) -> None:
        log.error(event, canary=who, provider=provider, error=reason, **fields)
        self._metrics.failed(provider)

    # -- resolution ----------------------------------------------------------------------------

    async def _resolve(self, alert: CanaryAlert, canary_namespace: str) -> _Destination:
        """The notifier for one alert, or _Skip saying why there is none."""
        namespace = alert.provider_ref.namespace or canary_namespace
        name = alert.provider_ref.name
        if self._no_cross_namespace_refs and namespace != canary_namespace:
            raise _Skip("alert_provider_forbidden",
                        f"providerRef {namespace}/{name} is in another namespace and"
                        " -no-cross-namespace-refs is set")
        provider = await self._provider(ObjectKey(namespace, name))
        spec = provider.spec
        kind = spec.type
        address, token, proxy = spec.address or "", "", spec.proxy or ""
        secret: bool | None = None
        if spec.secret_ref is not None:
            data = await self._secret_data(ObjectKey(namespace, spec.secret_ref.name), kind=kind)
            if "address" not in data:
                raise _Skip("alert_provider_invalid",
                            f"Secret {namespace}/{spec.secret_ref.name} has no address key",
                            provider=kind, cause=DeliveryCause.SECRET_INVALID, secret=False)
            address = data["address"]
            token = data.get("token", "")
            proxy = data.get("proxy", proxy)
            secret = True
        if not address:
            raise _Skip("alert_provider_invalid", "the provider has no address", provider=kind,
                        cause=DeliveryCause.ADDRESS_MISSING)
        try:
            notifier = self._build(kind, address=address, proxy=proxy, token=token,
                                   username=spec.get_username(), channel=spec.get_channel(),
                                   session=self._shared_session())
        except _Skip as skip:
            skip.secret = secret
            raise
        return _Destination(alert=alert.name, provider=kind, ref=f"{namespace}/{name}",
                            endpoint=safe_url(address), notifier=notifier, secret=secret,
                            templates=spec.templates)

    async def _provider(self, key: ObjectKey) -> AlertProvider:
        try:
            found = await self._lookup(self._providers, key, kube.ALERT_PROVIDERS)
        except kube.KubeError as exc:
            raise _Skip("alert_provider_unreadable", f"AlertProvider {key}: {exc}") from exc
        if found is None:
            raise _Skip("alert_provider_not_found", f"AlertProvider {key} not found")
        if isinstance(found, AlertProvider):
            return found
        try:
            return AlertProvider.model_validate(found)
        except pydantic.ValidationError as exc:
            raise _Skip("alert_provider_invalid",
                        f"AlertProvider {key} is invalid: {exc.error_count()} error(s)",
                        cause=DeliveryCause.PROVIDER_INVALID) from exc

    async def _secret_data(self, key: ObjectKey, *, kind: str) -> dict[str, str]:
        try:
            found = await self._lookup(self._secrets, key, kube.SECRETS)
        except kube.KubeError as exc:
            raise _Skip("alert_provider_secret_unreadable", f"Secret {key}: {exc}",
                        provider=kind, cause=DeliveryCause.SECRET_INVALID, secret=False) from exc
        if found is None:
            raise _Skip("alert_provider_secret_not_found", f"Secret {key} not found",
                        provider=kind, cause=DeliveryCause.SECRET_NOT_FOUND, secret=False)
        raw = found.get("data") if isinstance(found, Mapping) else None
        try:
            return _decode_secret(raw or {})
        except ValueError as exc:
            raise _Skip("alert_provider_invalid", f"Secret {key}: {exc}", provider=kind,
                        cause=DeliveryCause.SECRET_INVALID, secret=False) from exc

    async def _lookup(
            self, lookup: Lookup | None, key: ObjectKey, resource: kube.Resource
    ) -> LookupResult:
        if lookup is not None:
            result = lookup(key)
            if inspect.isawaitable(result):
                return await result
            return result
        if self._kube is None:
            raise _Skip("alert_provider_unreadable",
                        f"{resource.kind} {key}: no lookup and no Kubernetes client")
        return await kube.ignore_not_found(
            self._kube.get(resource, key.name, namespace=key.namespace))

    def _build(self, kind: str, **options: Any) -> Notifier:
        try:
            plugin = self._notifiers.get(kind)
        except PluginError as exc:
            raise _Skip("alert_provider_invalid", str(exc), provider=kind,
                        cause=DeliveryCause.NOT_INSTALLED) from exc
        factory: NotifierFactory = plugin.factory
        try:
            return factory(variant=plugin.variant, timeout=self._post_timeout, **options)
        except NotifierError as exc:
            raise _Skip("alert_provider_invalid", str(exc), provider=kind,
                        cause=DeliveryCause.PROVIDER_INVALID) from exc

    def _build_global(self, *, session: aiohttp.ClientSession | None) -> _Destination:
        config = self._global_config
        assert config is not None
        plugin = self._notifiers.get(config.provider)
        factory: NotifierFactory = plugin.factory
        notifier = factory(address=config.address, proxy=config.proxy, token=config.token,
                           username=config.username, channel=config.channel, session=session,
                           timeout=self._post_timeout, variant=plugin.variant)
        return _Destination(alert="global", provider=config.provider, ref=config.flag,
                            endpoint=safe_url(config.address), notifier=notifier)

    def _shared_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # trust_env: HTTP(S)_PROXY/NO_PROXY apply when no proxy is configured, as they
            # do for Flagger's Go client.
            self._session = aiohttp.ClientSession(trust_env=True)
        return self._session

    def _cluster_fields(self) -> tuple[Field, ...]:
        return (Field("Cluster", self._cluster_name),) if self._cluster_name else ()


def _global_config(settings: NotificationSettings) -> _GlobalConfig | None:
    """Flagger's ``initNotifier``: Slack, unless an MS Teams URL is set; None without a URL."""
    slack, teams = settings.slack, settings.msteams
    if teams.url.get_secret_value():
        return _GlobalConfig(
            provider=AlertProviderType.MSTEAMS.value, flag="-msteams-url",
            address=teams.url.get_secret_value(), proxy=teams.proxy_url, token="",
            username=slack.user, channel=slack.channel,
        )
    if slack.url.get_secret_value():
        return _GlobalConfig(
            provider=AlertProviderType.SLACK.value, flag="-slack-url",
            address=slack.url.get_secret_value(), proxy=slack.proxy_url,
            token=slack.token.get_secret_value(), username=slack.user, channel=slack.channel,
        )
    return None


def _admits(alert: CanaryAlert, severity: Severity, *, who: str) -> bool:
    """Whether ``alert``'s threshold lets a message of ``severity`` through ("" means info)."""
    raw = alert.severity.value if alert.severity is not None else None
    try:
        threshold = Severity.parse(raw)
    except ValueError:
        log.error("alert_severity_invalid", canary=who, alert=alert.name, severity=raw)
        return False
    return threshold.admits(severity)


def _ref_of(alert: CanaryAlert, canary_namespace: str) -> str:
    return f"{alert.provider_ref.namespace or canary_namespace}/{alert.provider_ref.name}"


def _decode_secret(data: Mapping[str, Any]) -> dict[str, str]:
    """A Secret's ``data``, base64-decoded, as text without surrounding whitespace.

    The whitespace goes because a Secret made with ``echo url | base64``
    carries a newline that no URL or token contains.
    """
    decoded: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(value, str):
            continue
        try:
            decoded[key] = base64.b64decode(value, validate=True).decode().strip()
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError(f"key {key} is not base64-encoded text") from None
    return decoded

