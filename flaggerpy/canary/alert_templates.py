"""Alert texts written by users: Jinja2 templates per event kind (a flaggerpy addition).

An AlertProvider's ``spec.templates`` and a Canary alert's ``analysis.alerts[].templates`` map
an event kind (:class:`~flaggerpy.models.AlertKind`) to a template of the alert's text; the
alert's own template wins over its provider's. Without a template the text is Flagger's, so
users' chat filters keep matching until they choose otherwise.

Templates run in Jinja2's sandbox (a template is written by whoever may edit an AlertProvider
or a Canary, not by the controller's operator, so it must not reach Python internals) with
``StrictUndefined``: a misspelt variable is an error, never an empty string that would go
unnoticed in a chat. A template that does not parse or does not render is never a lost
alert: the default text is sent instead, and the reason is logged and said in the
AlertProvider's ``TemplatesValid`` condition (:mod:`flaggerpy.canary.template_status`).

The variables (:func:`variables`) are plain values, documented in docs/notifiers.md::

    name, namespace, cluster, target, revision, phase, weight, kind, severity, text,
    dashboard_url, check.{name,value,threshold,message}, webhook.{name,error}, error

``check``, ``webhook`` and ``error`` are defined only for the events that have them; test with
``{% if check is defined %}``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

import jinja2
import jinja2.sandbox

from flaggerpy.models import AlertKind, Canary
from flaggerpy.models.status import AnalysisDecision

__all__ = [
    "OPT_IN_KINDS",
    "CheckInfo",
    "TemplateError",
    "WebhookInfo",
    "choose",
    "dashboard_link",
    "failed_check_from_history",
    "render",
    "template_problems",
    "variables",
    "with_threshold",
]

OPT_IN_KINDS: Final = frozenset({AlertKind.STEP, AlertKind.FAILED_CHECK, AlertKind.WEBHOOK_FAILURE})
"""Kinds Flagger never alerts on and that recur during a run: sent only where templated."""

MAX_TEXT: Final = 4000
"""Characters of a rendered text kept; chat services refuse much longer messages."""


class TemplateError(Exception):
    """A template that did not parse or render; the message says where and why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckInfo:
    """The failing check: ``check.name``, ``.value``, ``.threshold`` and ``.message``."""

    name: str
    value: float | None = None
    threshold: float | None = None
    """The limit the value crossed (``thresholdRange.min``/``max`` or ``threshold``)."""
    message: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookInfo:
    """The failing webhook: ``webhook.name`` and ``webhook.error``."""

    name: str
    error: str = ""


_ENVIRONMENT: Final = jinja2.sandbox.SandboxedEnvironment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # chat texts, not HTML; each notifier encodes its own payload as JSON
    keep_trailing_newline=False,
)


@functools.lru_cache(maxsize=256)
def _compile(source: str) -> jinja2.Template:
    """Parses once per distinct source: the same templates serve every alert of a provider."""
    return _ENVIRONMENT.from_string(source)


def _parse(source: str) -> jinja2.Template:
    try:
        return _compile(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"line {exc.lineno}: {exc.message}") from exc


def render(source: str, values: Mapping[str, Any]) -> str:
    """The text ``source`` gives with ``values``; :class:`TemplateError` when it cannot.

    Surrounding whitespace goes (a YAML block scalar ends with a newline), and an empty
    result is an error too: an alert with no text is as good as a lost one.
    """
    template = _parse(source)
    try:
        text = template.render(**values).strip()
    except jinja2.TemplateError as exc:  # UndefinedError, SecurityError, a filter's error
        raise TemplateError(f"{type(exc).__name__}: {exc.message or exc}") from exc
    except Exception as exc:  # e.g. a ZeroDivisionError in an expression
        raise TemplateError(f"{type(exc).__name__}: {exc}") from exc
    if not text:
        raise TemplateError("the template rendered an empty text")
    return text[:MAX_TEXT]


def template_problems(templates: Mapping[str, str] | None) -> list[str]:
    """What is wrong with a map of templates: unknown kinds and templates that do not parse.

    Rendering needs an alert's values, so only parsing is checked here; an empty list means
    every template parsed.
    """
    problems: list[str] = []
    for kind, source in sorted((templates or {}).items()):
        if kind not in AlertKind.__members__.values():
            known = ", ".join(AlertKind)
            problems.append(f"{kind}: not an event kind (one of {known})")
            continue
        try:
            _parse(source)
        except TemplateError as exc:
            problems.append(f"{kind}: {exc}")
    return problems


def choose(
        kind: AlertKind,
        *,
        alert: Mapping[str, str] | None,  # analysis.alerts[].templates
        provider: Mapping[str, str] | None,  # the AlertProvider's spec.templates
) -> tuple[str, str] | None:
    """The template for ``kind`` and where it came from (``alert`` or ``provider``); None: none."""
    if alert and kind.value in alert:
        return alert[kind.value], "alert"
    if provider and kind.value in provider:
        return provider[kind.value], "provider"
    return None


def dashboard_link(url_template: str, *, namespace: str, name: str) -> str:
    """``-dashboard-url`` with ``{namespace}`` and ``{name}`` filled in; empty stays empty.

    Plain replacement, not ``str.format``: any other brace in the URL stays as it is.
    """
    return url_template.replace("{namespace}", namespace).replace("{name}", name)


def with_threshold(check: CheckInfo, canary: Canary) -> CheckInfo:
    """``check`` with the limit it crossed, read from the Canary's metric of that name."""
    if check.threshold is not None:
        return check
    for metric in canary.spec.analysis.metrics or ():
        if metric.name != check.name:
            continue
        low = high = None
        if metric.threshold_range is not None:
            low, high = metric.threshold_range.min, metric.threshold_range.max
        elif metric.threshold is not None:
            high = float(metric.threshold)
        return CheckInfo(name=check.name, value=check.value, message=check.message,
                         threshold=_crossed(check.value, low, high))
    return check


def _crossed(value: float | None, low: float | None, high: float | None) -> float | None:
    """The bound ``value`` is on the wrong side of; the only bound there is, without a value."""
    if value is not None and low is not None and value < low:
        return low
    if value is not None and high is not None and value > high:
        return high
    return low if high is None else high if low is None else None


def failed_check_from_history(
        history: list[AnalysisDecision] | None, *, last_failure: str | None
) -> CheckInfo | None:
    """The check a rollback is about, from ``status.analysisHistory`` (it survives restarts).

    The newest counted failure whose message is ``last_failure`` (the rollback alert's
    ``Last failed check``); None when the last failure was no metric (a webhook) or is not
    recorded.
    """
    if not last_failure:
        return None
    for entry in reversed(history or []):
        if entry.action == "fail" and (entry.message or "") == last_failure:
            return CheckInfo(name=entry.metric, value=entry.value, message=last_failure,
                             threshold=_crossed(entry.value, entry.threshold_min,
                                                entry.threshold_max))
    return None


def variables(
        canary: Canary,
        *,
        kind: AlertKind,
        text: str,
        severity: str,
        cluster: str,
        dashboard_url: str,  # -dashboard-url as given, placeholders unfilled
        revision: str | None = None,  # default: status.lastAppliedSpec
        check: CheckInfo | None = None,
        webhook: WebhookInfo | None = None,
        error: str | None = None,
) -> dict[str, Any]:
    """The values a template sees for one alert about ``canary``."""
    status = canary.status
    target = canary.spec.target_ref
    values: dict[str, Any] = {
        "name": canary.name,
        "namespace": canary.namespace,
        "cluster": cluster,
        "target": f"{target.kind}/{target.name}",
        "revision": revision or (status.last_applied_spec if status else None) or "",
        "phase": (status.phase.value if status and status.phase else "") or "",
        "weight": int(status.canary_weight or 0) if status else 0,
        "kind": kind.value,
        "severity": severity,
        "text": text,
        "dashboard_url": dashboard_link(dashboard_url, namespace=canary.namespace,
                                        name=canary.name),
    }
    if check is not None:
        values["check"] = asdict(with_threshold(check, canary))
    if webhook is not None:
        values["webhook"] = asdict(webhook)
    if error is not None:
        values["error"] = error
    return values
