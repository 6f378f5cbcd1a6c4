"""What queries and alerts met, said in the MetricTemplate's or AlertProvider's own status.

``kubectl get metrictemplate x -o yaml`` (or ``kubectl wait --for=condition=Answered``) then
shows whether the template's provider answered, and an AlertProvider whether its Secret is
usable and whether its last alert was delivered, without reading the controller's log.
Beside the ``Ready`` condition of :mod:`flaggerpy.canary.plugin_status` (is the type
installed), this module keeps:

MetricTemplate ``Answered``
    ``True``, reason ``ProviderAnswered``: the provider answered the last query or
    availability check (a value, passing or not, or no values). ``False`` with reason
    ``QueryFailed``, ``ProviderUnavailable`` (the availability check failed or said no),
    ``ProviderNotInstalled``, ``ProviderInvalid`` (it could not be built),
    ``SecretNotFound`` or ``SecretInvalid``. A query that did not render for one canary,
    or a template that is missing, says nothing about the provider and sets nothing.
AlertProvider ``SecretValid`` (only with a ``secretRef``)
    ``True``, reason ``SecretFound``; ``False``, reason ``SecretNotFound`` or
    ``SecretInvalid`` (unreadable, not base64 text, no ``address`` key).
AlertProvider ``Delivered``
    ``True``, reason ``NotificationDelivered``; ``False`` with reason ``PostFailed``,
    ``SecretNotFound``, ``SecretInvalid``, ``AddressMissing``, ``ProviderNotInstalled`` or
    ``ProviderInvalid``.
AlertProvider ``TemplatesValid`` (only with ``spec.templates``)
    ``True``, reason ``TemplatesParsed``: every template parsed and the one an alert used
    rendered; ``False``, reason ``TemplateInvalid``, naming each kind and why (an unknown
    kind, a syntax error, an undefined variable). Checked (parsing only) as soon as the
    spec is created or edited (:func:`templates_condition`, written with ``Ready`` by
    :mod:`flaggerpy.canary.plugin_status`), then set with each delivery through the
    provider; an alert whose template failed went out with the default text.

The outcomes come from what :class:`~flaggerpy.canary.metrics_analysis.MetricsAnalyzer` and
:class:`~flaggerpy.canary.alerting.Alerter` return or report (neither writes to the cluster);
this module decides and writes. Writes are rare (design rule 3): a template is asked on every
tick of every canary using it, so a condition is written only when its status or reason
changes (or the object's spec was edited since it was set: ``observedGeneration``), never per
query. The last written status and reason of each object (by uid) and
condition type are kept in memory; before the first write after a start, the object's own
conditions (from the informer cache) are compared instead, so a restart rewrites nothing that
is already right. The message is not compared: an error worded differently from tick to tick
would otherwise cost a write per tick. Canaries sharing a template may meet different answers
(one's query fails, another's is answered); so that such a template cannot cost a write per
tick either, one template is written at most once every ``MIN_INTERVAL`` seconds, the change
waiting for the next outcome after that (the next tick of a canary using it). AlertProvider
outcomes are rare enough to be written at once. Every write is
a merge patch of the status subresource through the object store, with a ``resourceVersion``
precondition so that no other writer's condition is lost; after a conflict the object is read
again once and the write retried.
A status that cannot be written is logged and never fails the tick or the alert.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, TypeAlias

import structlog

from flaggerpy import kube
from flaggerpy.canary import alert_templates
from flaggerpy.canary.alerting import Delivery, DeliveryCause
from flaggerpy.canary.metrics_analysis import (
    AnalysisOutcome,
    MetricResult,
    MetricsAnalyzer,
    ProviderProblem,
    TemplateCause,
)
from flaggerpy.canary.status import now_rfc3339
from flaggerpy.kube import ObjectKey
from flaggerpy.models import Canary

__all__ = [
    "ANSWERED",
    "DELIVERED",
    "SECRET_VALID",
    "TEMPLATES_VALID",
    "ConditionWriter",
    "ReportingAnalyzer",
    "Seen",
    "Wanted",
    "condition_changes",
    "conditions_patch",
    "delivery_conditions",
    "template_condition",
    "template_outcomes",
    "templates_condition",
]

log = structlog.get_logger(__name__)

ANSWERED: Final = "Answered"
SECRET_VALID: Final = "SecretValid"
DELIVERED: Final = "Delivered"
TEMPLATES_VALID: Final = "TemplatesValid"

WRITE_ATTEMPTS: Final = 2
"""The write, and once more after a conflict with a freshly read object."""

MIN_INTERVAL: Final = 10.0
"""Seconds between two writes of one object (see :class:`ConditionWriter`)."""


class Wanted(NamedTuple):
    """A condition as it should be: what decides a write is ``status`` and ``reason``."""

    type: str
    status: str
    reason: str
    message: str


# --- MetricTemplates ----------------------------------------------------------------------------

_TEMPLATE: Final[Mapping[TemplateCause, tuple[str, str]]] = {
    TemplateCause.ANSWERED: ("True", "ProviderAnswered"),
    TemplateCause.QUERY_FAILED: ("False", "QueryFailed"),
    TemplateCause.OFFLINE: ("False", "ProviderUnavailable"),
    TemplateCause.NOT_INSTALLED: ("False", "ProviderNotInstalled"),
    TemplateCause.PROVIDER_INVALID: ("False", "ProviderInvalid"),
    TemplateCause.SECRET_NOT_FOUND: ("False", "SecretNotFound"),
    TemplateCause.SECRET_INVALID: ("False", "SecretInvalid"),
}
"""TEMPLATE_NOT_FOUND (no object to write on), TEMPLATE_INVALID and RENDER_FAILED (nothing was
asked of the provider) are left out: they say nothing about whether it answers."""

_ANSWERED_MESSAGE: Final = "the metrics provider answered"


def template_condition(cause: TemplateCause | None, message: str) -> Wanted | None:
    """The ``Answered`` condition for what a template's provider did; None: nothing to say."""
    if cause is None or cause not in _TEMPLATE:
        return None
    status, reason = _TEMPLATE[cause]
    if cause is TemplateCause.ANSWERED:
        message = _ANSWERED_MESSAGE
    return Wanted(ANSWERED, status, reason, message)


def _referenced(canary: Canary) -> list[ObjectKey]:
    """The MetricTemplates ``canary``'s analysis refers to, each once, in order."""
    keys: list[ObjectKey] = []
    for metric in canary.spec.analysis.metrics or ():
        ref = metric.template_ref
        if ref is not None:
            key = ObjectKey(ref.namespace or canary.namespace, ref.name)
            if key not in keys:
                keys.append(key)
    return keys


def template_outcomes(
        canary: Canary,
        *,
        results: Iterable[MetricResult] = (),
        problems: Sequence[ProviderProblem] | None = None,  # an availability check's answer
) -> dict[ObjectKey, Wanted]:
    """Each template's ``Answered`` condition after a tick's ``results`` or a check's problems.

    A template the availability check found no problem with answered it. When one template
    is checked twice in a tick (two metrics), the later check wins.
    """
    outcomes: dict[ObjectKey, Wanted] = {}
    if problems is not None:
        for key in _referenced(canary):
            outcomes[key] = Wanted(ANSWERED, "True", "ProviderAnswered", _ANSWERED_MESSAGE)
        for problem in problems:
            if problem.template is None:
                continue
            wanted = template_condition(problem.cause, problem.message)
            if wanted is None:
                outcomes.pop(problem.template, None)
            else:
                outcomes[problem.template] = wanted
    for result in results:
        if result.template is None:
            continue
        wanted = template_condition(result.cause, result.message)
        if wanted is not None:
            outcomes[result.template] = wanted
    return outcomes


# --- AlertProviders ----------------------------------------------------------------------------

_DELIVERED: Final[Mapping[DeliveryCause, tuple[str, str]]] = {
    DeliveryCause.DELIVERED: ("True", "NotificationDelivered"),
    DeliveryCause.POST_FAILED: ("False", "PostFailed"),
    DeliveryCause.SECRET_NOT_FOUND: ("False", "SecretNotFound"),
    DeliveryCause.SECRET_INVALID: ("False", "SecretInvalid"),
    DeliveryCause.ADDRESS_MISSING: ("False", "AddressMissing"),
    DeliveryCause.NOT_INSTALLED: ("False", "ProviderNotInstalled"),
    DeliveryCause.PROVIDER_INVALID: ("False", "ProviderInvalid"),
}


def delivery_conditions(delivery: Delivery) -> list[Wanted]:
    """The AlertProvider's ``SecretValid`` (when its Secret was looked at), ``Delivered`` and
    ``TemplatesValid`` (when it has templates)."""
    status, reason = _DELIVERED[delivery.cause]
    wanted: list[Wanted] = []
    if delivery.secret is True:
        wanted.append(Wanted(SECRET_VALID, "True", "SecretFound", "the Secret is usable"))
    elif delivery.secret is False:
        wanted.append(Wanted(SECRET_VALID, "False", reason, delivery.message))
    wanted.append(Wanted(DELIVERED, status, reason, delivery.message))
    if delivery.templates == "":
        wanted.append(Wanted(TEMPLATES_VALID, "True", "TemplatesParsed",
                             "every alert template parsed"))
    elif delivery.templates is not None:
        wanted.append(Wanted(TEMPLATES_VALID, "False", "TemplateInvalid",
                             f"{delivery.templates}; the default text is sent instead"))
    return wanted


def templates_condition(obj: Mapping[str, Any]) -> Wanted | None:
    """An AlertProvider's ``TemplatesValid`` for a spec not yet judged; None: nothing to say.

    Only parsing is checked (rendering needs an alert). Said once per generation: a
    condition already set for this generation, by this check or by a delivery (which also
    knows whether the template rendered), is left as it is.
    """
    templates = (obj.get("spec") or {}).get("templates")
    if not isinstance(templates, Mapping) or not templates:
        return None
    generation = _generation((obj.get("metadata") or {}).get("generation"))
    current = _state((obj.get("status") or {}).get("conditions") or []).get(TEMPLATES_VALID)
    if current is not None and current[2] == generation:
        return None
    problems = alert_templates.template_problems(
        {str(k): str(v) for k, v in templates.items()})
    if problems:
        return Wanted(TEMPLATES_VALID, "False", "TemplateInvalid",
                      f"{'; '.join(problems)}; the default text is sent instead")
    return Wanted(TEMPLATES_VALID, "True", "TemplatesParsed", "every alert template parsed")


# --- the decision and the patch -----------------------------------------------------------------


Seen: TypeAlias = tuple[str, str, int | None]
"""A condition's status, reason and ``observedGeneration``: what decides a write."""


def _generation(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _state(conditions: Iterable[Mapping[str, Any]]) -> dict[str, Seen]:
    return {str(c.get("type")): (str(c.get("status")), str(c.get("reason")),
                                 _generation(c.get("observedGeneration")))
            for c in conditions if isinstance(c, Mapping)}


def condition_changes(
        wanted: Sequence[Wanted],
        *,
        remembered: Mapping[str, Seen],  # type -> what this process last wrote
        current: Sequence[Mapping[str, Any]],  # the object's conditions as last seen
        generation: int | None = None,  # the object's metadata.generation
) -> list[Wanted]:
    """The conditions of ``wanted`` whose status or reason differ from what is there, or
    that were set for another generation of the object (its spec was edited since).

    What this process last wrote counts first; a type it never wrote is compared with the
    object's own condition. A changed message alone is no change.
    """
    seen = {**_state(current), **remembered}
    return [w for w in wanted if seen.get(w.type) != (w.status, w.reason, generation)]


def conditions_patch(
        obj: Mapping[str, Any], changes: Sequence[Wanted], *, now: str | None = None,
) -> dict[str, Any]:
    """The status merge patch that sets ``changes`` beside the object's other conditions.

    ``lastTransitionTime`` moves only when a condition's status does; ``observedGeneration``
    is the object's generation. The whole list is sent (a merge patch replaces lists), so the
    patch carries the object's ``resourceVersion`` as a precondition.
    """
    timestamp = now or now_rfc3339()
    metadata = obj.get("metadata") or {}
    generation = _generation(metadata.get("generation"))
    conditions = [dict(c) for c in (obj.get("status") or {}).get("conditions") or []
                  if isinstance(c, Mapping)]
    for change in changes:
        old = next((c for c in conditions if c.get("type") == change.type), None)
        condition: dict[str, Any] = {
            "type": change.type,
            "status": change.status,
            "reason": change.reason,
            "message": change.message,
            "lastUpdateTime": timestamp,
            "lastTransitionTime": timestamp,
        }
        if old is not None and old.get("status") == change.status:
            condition["lastTransitionTime"] = old.get("lastTransitionTime") or timestamp
        if generation is not None:
            condition["observedGeneration"] = generation
        if old is None:
            conditions.append(condition)
        else:
            conditions[conditions.index(old)] = condition
    patch: dict[str, Any] = {"status": {"conditions": conditions}}
    version = kube.resource_version(obj)
    if version:
        patch["metadata"] = {"resourceVersion": version}
    return patch


# --- the writer ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Memory:
    """What this process last wrote on one object."""

    uid: str
    written: dict[str, Seen] = field(default_factory=dict)
    """Condition type -> (status, reason, observedGeneration)."""
    at: float | None = None
    """When (``clock``) it last wrote the object."""


class ConditionWriter:
    """Writes MetricTemplate and AlertProvider conditions through the object store, on change.

    One per process, shared by every canary: it remembers what it wrote, for the objects that
    still exist. ``min_interval`` bounds the writes of one template whose outcomes keep
    changing (canaries that share it but meet different answers): a change within that many
    seconds of the object's last write waits for the next outcome after it. AlertProvider
    outcomes are not paced.
    """

    def __init__(
            self,
            *,
            store: kube.ObjectStore,
            min_interval: float = MIN_INTERVAL,
            clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._min_interval = min_interval
        self._clock = clock
        self._memory: dict[tuple[str, ObjectKey], _Memory] = {}

    async def set(
            self,
            resource: kube.Resource,
            key: ObjectKey,
            wanted: Sequence[Wanted],
            *,
            paced: bool = True,  # False: write a change at once, however recent the last one
    ) -> bool:
        """Makes the object's conditions say ``wanted``; True when a patch was written.

        Raises no API error: an object that is gone, a conflict twice over, or a refused write is
        logged, and the next outcome tries again.
        """
        if not wanted:
            return False
        where = (resource.plural, key)
        try:
            obj = await self._store.get(resource, namespace=key.namespace, name=key.name)
            for attempt in range(1, WRITE_ATTEMPTS + 1):
                if obj is None:
                    self._memory.pop(where, None)
                    return False
                uid = str((obj.get("metadata") or {}).get("uid") or "")
                memory = self._memory.get(where)
                if memory is None or memory.uid != uid:  # new, or deleted and made again
                    memory = self._memory[where] = _Memory(uid)
                current = (obj.get("status") or {}).get("conditions") or []
                generation = _generation((obj.get("metadata") or {}).get("generation"))
                changes = condition_changes(wanted, remembered=memory.written, current=current,
                                            generation=generation)
                if not changes:
                    return False
                if paced and attempt == 1 and memory.at is not None and (
                        self._clock() - memory.at < self._min_interval):
                    log.debug("resource_condition_deferred", kind=resource.kind,
                              object=str(key), types=[c.type for c in changes])
                    return False
                try:
                    await self._store.patch(resource, namespace=key.namespace, name=key.name,
                                            patch=conditions_patch(obj, changes),
                                            subresource="status")
                except kube.ConflictError:
                    if attempt == WRITE_ATTEMPTS:
                        raise
                    # The cache is behind another writer: read the object as it is now.
                    obj = await kube.ignore_not_found(self._store.client.get(
                        resource, key.name, namespace=key.namespace))
                    continue
                memory.written.update(
                    {w.type: (w.status, w.reason, generation) for w in changes})
                memory.at = self._clock()
                for change in changes:
                    event = log.info if change.status == "True" else log.warning
                    event("resource_condition_written", kind=resource.kind, object=str(key),
                          type=change.type, status=change.status, reason=change.reason,
                          message=change.message)
                return True
        except kube.NotFoundError:
            self._memory.pop(where, None)
            return False
        except kube.KubeError as exc:
            log.warning("resource_condition_not_written", kind=resource.kind, object=str(key),
                        error=exc.message)
        return False

    async def templates(self, outcomes: Mapping[ObjectKey, Wanted]) -> None:
        """Sets each template's ``Answered`` condition; never raises (it runs inside a tick)."""
        for key, wanted in outcomes.items():
            try:
                await self.set(kube.METRIC_TEMPLATES, key, [wanted])
            except Exception as exc:  # a bug here must not cost the canary its tick
                log.error("resource_condition_failed", kind="MetricTemplate", object=str(key),
                          error=f"{type(exc).__name__}: {exc}")

    async def delivery(self, delivery: Delivery) -> None:
        """An :class:`~flaggerpy.canary.alerting.Alerter`'s ``on_delivery``."""
        # Not paced: alerts are few and far between, so a change held back could wait for hours.
        await self.set(kube.ALERT_PROVIDERS, delivery.provider, delivery_conditions(delivery),
                       paced=False)


class ReportingAnalyzer(MetricsAnalyzer):
    """The metrics analyzer whose outcomes also set the templates' ``Answered`` condition.

    The availability checks (at initialisation and at the start of a run) are written before
    they return, so a template whose provider does not answer says so before any traffic
    moves.
    """

    def __init__(self, *, conditions: ConditionWriter, **options: Any) -> None:
        super().__init__(**options)
        self._conditions = conditions

    async def run(
            self,
            canary: Canary,
            *,
            hold_on_no_values: bool | None = None,
            route: str | None = None,
    ) -> AnalysisOutcome:
        outcome = await super().run(canary, hold_on_no_values=hold_on_no_values, route=route)
        await self._conditions.templates(template_outcomes(canary, results=outcome.results))
        return outcome

    async def provider_problems(self, canary: Canary) -> list[ProviderProblem]:
        problems = await super().provider_problems(canary)
        await self._conditions.templates(template_outcomes(canary, problems=problems))
        return problems
