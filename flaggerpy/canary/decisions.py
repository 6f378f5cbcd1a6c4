"""What the analysis does with each metric check, and the record that explains it.

Flagger knows one answer to a check that did not pass: count a failed check, and roll back at
``analysis.threshold``. flaggerpy's optional fields (docs/analysis.md) give a check other
outcomes, decided here per check so the analyzer and the engine stay small:

- ``metrics[].onNoData`` says what a check *without data* does: ``fail`` (Flagger's), ``hold``
  (the weight is kept and no failed check is counted: the analysis waits for data) or ``skip``
  (the metric is not judged this tick, the others decide). Unset, the controller's
  ``-hold-on-no-values`` flag decides between fail and hold, as before.
- ``metrics[].minSamples`` makes a check with too little behind it a check without data. For a
  threshold metric the count is the number of requests the canary received over the metric's
  interval, as the mesh observer counts them (:func:`observer_count_query`): one query per
  interval per tick, whatever the number of metrics that ask.
- ``metrics[].dryRun`` and ``analysis.dryRun``: a check that does not pass is reported (Event,
  history, metric series) and nothing else; it never fails or holds the canary.

Every check becomes a :class:`Decision`: the query as sent (credentials redacted, see
:func:`redact`), the value, the threshold, the sample count, the verdict, what was done and
when. The engine keeps the latest ones in ``status.analysisHistory``
(:data:`~flaggerpy.models.status.ANALYSIS_HISTORY_LIMIT`), written with the status patch the
tick makes anyway (:func:`with_history`), never in a write of its own per check.

``analysis.onFailure: pause`` is the engine's: when the failed checks reach the threshold it
keeps the weight instead of rolling back (:func:`pause_message`, :func:`pause_alert`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from flaggerpy.analysis import MetricKind, MetricTemplateModel, Observer
from flaggerpy.canary.alerting import AlertMessage
from flaggerpy.models import AlertKind, Canary, CanaryMetric
from flaggerpy.models.canary import FailurePolicy, NoDataPolicy
from flaggerpy.models.status import ANALYSIS_HISTORY_LIMIT
from flaggerpy.notifying import Field, Severity

if TYPE_CHECKING:
    from flaggerpy.canary.metric_results import MetricResult

__all__ = [
    "HOLD_PREFIX",
    "PAUSED_PREFIX",
    "Act",
    "Decision",
    "bounds",
    "decide",
    "dry_run",
    "history",
    "last_failed",
    "observer_count_query",
    "pause_alert",
    "pause_message",
    "pauses",
    "redact",
    "request_count_query",
    "under_min_samples",
    "with_history",
]

PAUSED_PREFIX: Final = "Canary analysis paused"
"""How the ``Promoted`` condition's message of a paused canary starts."""

HOLD_PREFIX: Final = "Holding"
"""How the ``Promoted`` condition's message of a canary held for want of data starts."""

REDACTED: Final = "<redacted>"


class Act(enum.StrEnum):
    """What the engine does with one check."""

    PASS = "pass"
    FAIL = "fail"
    """A failed check is counted and the canary does not advance (Flagger's)."""
    HOLD = "hold"
    """The canary does not advance; nothing is counted."""
    SKIP = "skip"
    """The metric is not judged this tick; the other metrics decide."""
    DRY_RUN = "dry-run"
    """Reported only: the canary goes on as if the check had passed."""

    @property
    def blocks(self) -> bool:
        """Whether the tick stops here (the canary does not advance)."""
        return self in (Act.FAIL, Act.HOLD)


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """One check, explained: what ``status.analysisHistory`` shows for it."""

    metric: str
    verdict: str
    """``Pass``, ``Fail``, ``NoData`` (no value, or fewer samples than ``minSamples``) or
    ``Error`` (the value could not be obtained)."""
    act: Act
    time: datetime
    value: float | None = None
    threshold_min: float | None = None
    threshold_max: float | None = None
    samples: int | None = None
    query: str | None = None
    message: str = ""

    def as_status(self) -> dict[str, Any]:
        """The entry of ``status.analysisHistory`` (camelCase, unset fields left out)."""
        entry: dict[str, Any] = {
            "time": self.time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "metric": self.metric,
            "verdict": self.verdict,
            "action": self.act.value,
        }
        optional = {
            "value": self.value, "thresholdMin": self.threshold_min,
            "thresholdMax": self.threshold_max, "samples": self.samples, "query": self.query,
            "message": self.message or None,
        }
        entry.update({key: value for key, value in optional.items() if value is not None})
        return entry

    @property
    def event(self) -> str | None:
        """The Event a person should see for this check, beyond Flagger's own; None for a
        passing check, and for a failed or held one (the engine already says why)."""
        if self.act is Act.DRY_RUN:
            return f"Dry run: metric {self.metric} {self.verdict}: {self.message}"
        if self.act is Act.SKIP:
            return f"Skipping metric {self.metric} this tick: {self.message}"
        return None


def dry_run(canary: Canary, metric: CanaryMetric) -> bool:
    """Whether a check of ``metric`` is only reported (its own ``dryRun`` or the Canary's)."""
    return bool(canary.spec.analysis.dry_run) or bool(metric.dry_run)


def _verdict(result: MetricResult) -> str:
    if result.judgement is not None and not result.error:
        return result.judgement.verdict.value  # Pass, Marginal (passes), Fail, NoData
    if result.passed:
        return "Pass"
    if result.no_values:
        return "NoData"
    if result.error:
        return "Error"
    return "Fail"


def decide(
        canary: Canary,
        metric: CanaryMetric,
        result: MetricResult,
        *,
        hold_on_no_values: bool,  # the -hold-on-no-values flag: the default of onNoData
        now: datetime | None = None,
) -> Decision:
    """What to do with one check's result, and the record that says why."""
    verdict = _verdict(result)
    if result.passed:
        act = Act.PASS
    elif dry_run(canary, metric):
        act = Act.DRY_RUN
    elif verdict == "NoData":
        policy = metric.on_no_data or (NoDataPolicy.HOLD if hold_on_no_values
                                       else NoDataPolicy.FAIL)
        act = {NoDataPolicy.FAIL: Act.FAIL, NoDataPolicy.HOLD: Act.HOLD,
               NoDataPolicy.SKIP: Act.SKIP}[policy]
    else:
        act = Act.FAIL
    low, high = (None, None) if metric.compare and not _has_threshold(metric) else bounds(metric)
    samples, message = result.samples, result.message
    if result.judgement is not None:  # the interval and the counts are in the judge's reason
        samples = min(result.judgement.canary_count, result.judgement.primary_count)
        message = message or result.judgement.reason
    return Decision(
        metric=result.name, verdict=verdict, act=act, time=now or datetime.now(UTC),
        value=result.value, threshold_min=low, threshold_max=high, samples=samples,
        query=result.query, message=message,
    )


def _has_threshold(metric: CanaryMetric) -> bool:
    return metric.threshold_range is not None or metric.threshold is not None


def bounds(metric: CanaryMetric) -> tuple[float | None, float | None]:
    """The lowest and highest value the check accepts, as :func:`flaggerpy.analysis.evaluate`
    judges them: ``thresholdRange``, else the deprecated ``threshold`` (a minimum for
    request-success-rate, a maximum otherwise; unset is Go's 0)."""
    if metric.threshold_range is not None:
        return metric.threshold_range.min, metric.threshold_range.max
    threshold = metric.threshold or 0.0
    if MetricKind.of(metric.name) is MetricKind.REQUEST_SUCCESS_RATE:
        return threshold, None
    return None, threshold


def under_min_samples(metric: CanaryMetric, samples: int | None) -> bool:
    """Whether a check has fewer samples than its ``minSamples`` (unknown counts never are)."""
    return bool(metric.min_samples) and samples is not None and samples < (metric.min_samples or 0)


# -- redaction -----------------------------------------------------------------------------------

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@'\"]+@")


def redact(text: str, *, secrets: Iterable[str] = ()) -> str:
    """``text`` without credentials: a URL's ``user:password@`` and any Secret value in it.

    Secret values shorter than 4 characters are left alone: replacing every ``1`` or ``a`` of
    a query would make it unreadable and hides nothing worth hiding.
    """
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


# -- the request count behind minSamples ---------------------------------------------------------

_RATIO = re.compile(r"^(?P<numerator>.+?)\s/\s(?P<total>sum\s*\(\s*rate\s*\(.+\)\s*\))"
                    r"(?:\s*\*\s*100)?\s*$", re.S)


def observer_count_query(observer: Observer, model: MetricTemplateModel) -> str | None:
    """The query counting the canary's requests over ``model.interval``, as the observer says:
    its own (``render_request_count``, :mod:`flaggerpy.observing`), else the denominator of its
    success-rate query (:func:`request_count_query`). None without either: ``minSamples`` is
    not applied."""
    count = getattr(observer, "render_request_count", None)
    query = count(model) if count is not None else None
    if query is not None:
        return str(query)
    render = getattr(observer, "render_success_rate", None)
    if render is None:
        return None
    return request_count_query(str(render(model)))


def request_count_query(success_rate_query: str) -> str | None:
    """The number of requests over the interval, from a rendered success-rate query.

    The count of an observer that does not say its own with ``request_count_query``
    (:mod:`flaggerpy.observing`), such as a third-party one written before it existed:
    Flagger's success-rate shape ``sum(rate(<ok requests>[i])) /
    sum(rate(<all requests>[i])) * 100`` has the count in its denominator, with ``increase``
    for ``rate``. None when the query has another shape: the count is unknown and
    ``minSamples`` is not applied.
    """
    match = _RATIO.match(success_rate_query.strip())
    if match is None:
        return None
    return re.sub(r"\brate\s*\(", "increase(", match["total"], count=1)


def success_count_queries(success_rate_query: str) -> tuple[str, str] | None:
    """``(ok requests, all requests)`` over the interval, from a rendered success-rate query.

    Both halves of Flagger's ``sum(rate(<ok>[i])) / sum(rate(<all>[i])) * 100`` with
    ``increase`` for ``rate``: the counts ``compare`` on request-success-rate judges as
    proportions. None when the query has another shape.
    """
    match = _RATIO.match(success_rate_query.strip())
    if match is None or not re.match(r"sum\s*\(\s*rate\s*\(", match["numerator"].strip()):
        return None
    return (re.sub(r"\brate\s*\(", "increase(", match["numerator"].strip(), count=1),
            re.sub(r"\brate\s*\(", "increase(", match["total"], count=1))


# -- the history in the status -------------------------------------------------------------------


def history(
        current: Mapping[str, Any] | None,
        decisions: Sequence[Decision],
        *,
        limit: int = ANALYSIS_HISTORY_LIMIT,
) -> list[dict[str, Any]]:
    """``status.analysisHistory`` with ``decisions`` appended, the oldest dropped past ``limit``."""
    previous = list((current or {}).get("analysisHistory") or [])
    entries = previous + [decision.as_status() for decision in decisions]
    return entries[-limit:]


def with_history(
        patch: dict[str, Any],
        current: Mapping[str, Any] | None,
        decisions: Sequence[Decision],
) -> dict[str, Any]:
    """A status patch that also carries ``decisions`` (unchanged when there are none)."""
    if not decisions:
        return patch
    status = dict(patch.get("status") or {})
    status["analysisHistory"] = history(current, decisions)
    return {**patch, "status": status}


# -- onFailure: pause ----------------------------------------------------------------------------


def last_failed(status: Mapping[str, Any] | None) -> str | None:
    """The reason of the latest failed check in ``status.analysisHistory``: what a pause or
    a rollback says when the controller restarted since the check (memory lost)."""
    for entry in reversed((status or {}).get("analysisHistory") or []):
        if isinstance(entry, Mapping) and entry.get("action") == Act.FAIL.value:
            return str(entry.get("message") or "") or None
    return None


def pauses(canary: Canary) -> bool:
    """Whether reaching the failed-checks threshold pauses the canary instead of rolling back."""
    return canary.spec.analysis.on_failure is FailurePolicy.PAUSE


def pause_message(*, weight: int, failed: int, last_failure: str | None, name: str) -> str:
    """The ``Promoted`` condition's message while paused: why, and what a person can do."""
    why = f": {last_failure}" if last_failure else ""
    return (
        f"{PAUSED_PREFIX} at canary weight {weight}: failed checks threshold reached "
        f"{failed}{why}. Waiting for a person: resume with kubectl patch canary {name} "
        "--subresource=status --type=merge -p '{\"status\":{\"failedChecks\":0}}', roll back "
        "with a rollback webhook or by setting spec.analysis.onFailure to rollback"
    )


def pause_alert(*, weight: int, failed: int, last_failure: str | None) -> AlertMessage:
    """The alert sent once when a canary pauses."""
    fields = (Field("Last failed check", last_failure),) if last_failure else ()
    return AlertMessage(
        text=(f"Failed checks threshold reached {failed}, analysis paused at canary weight "
              f"{weight}: waiting for a person to resume or roll back"),
        severity=Severity.ERROR,
        fields=fields,
        kind=AlertKind.WAITING,  # for alert templates: a person's move, as at a closed gate
    )
