"""The dashboard's pages: Jinja2 templates (``templates/``) filled from the canary summaries.

One renderer for both places that serve the dashboard, the controller (``-dashboard-listen-
address``) and ``kubectl flaggerpy dashboard``: they differ in where the canaries come from and
who is allowed to do what (:mod:`flaggerpy.dashboard.server`), never in what a page shows.
Autoescaped: Event messages and condition texts come from whoever can write them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import jinja2

from flaggerpy.dashboard import summary

__all__ = ["CanaryRow", "render", "render_canary", "render_index", "render_parts"]

_ENVIRONMENT: Final = jinja2.Environment(
    loader=jinja2.PackageLoader("flaggerpy.dashboard", "templates"), autoescape=True,
    undefined=jinja2.StrictUndefined)

_PAGE_DEFAULTS: Final[Mapping[str, Any]] = {
    "root": "", "static": "/static", "banner": "", "user": "", "logout": False, "csrf": "",
    "refresh": 5,
}


@dataclass(frozen=True, slots=True)
class CanaryRow:
    """One canary as the pages show it; the same values ``kubectl flaggerpy list`` prints."""

    namespace: str
    name: str
    phase: str
    weight: int
    failed_checks: str
    step: str
    steering: str
    last_transition: str

    @classmethod
    def of(cls, canary: Mapping[str, Any]) -> CanaryRow:
        meta = summary.as_map(canary.get("metadata"))
        status = summary.status_of(canary)
        weight = summary.number(status.get("canaryWeight"))
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            phase=str(status.get("phase") or ""),
            weight=0 if weight is None else max(0, min(100, round(weight))),
            failed_checks=str(status.get("failedChecks") if "failedChecks" in status else ""),
            step=summary.step(canary),
            steering=summary.steering_state(canary),
            last_transition=str(status.get("lastTransitionTime") or ""),
        )


def render(template: str, **context: Any) -> str:
    """A page, with the frame's values (``root``, ``user``, ``csrf``, ...) defaulted."""
    return _ENVIRONMENT.get_template(template).render(**{**_PAGE_DEFAULTS, **context})


def render_index(canaries: Sequence[Mapping[str, Any]], *, namespace: str | None,
                 **frame: Any) -> str:
    """The list page: every canary (sorted by namespace, then name) with phase and weight."""
    rows = sorted((CanaryRow.of(c) for c in canaries), key=lambda r: (r.namespace, r.name))
    return render("index.html", rows=rows, namespace=namespace, **frame)


def _check_row(entry: Mapping[str, Any]) -> dict[str, str]:
    value = summary.number(entry.get("value"))
    return {
        "time": str(entry.get("time") or ""),
        "metric": str(entry.get("metric") or ""),
        "value": "-" if value is None else f"{value:g}",
        "threshold": summary.threshold_text(entry),
        "verdict": str(entry.get("verdict") or ""),
        "action": str(entry.get("action") or ""),
        "message": str(entry.get("message") or ""),
    }


def _canary_context(canary: Mapping[str, Any], started: str | None) -> dict[str, Any]:
    """What the summary and details parts show: the canary, and its checks since ``started``."""
    conditions = [c for c in summary.status_of(canary).get("conditions") or ()
                  if isinstance(c, Mapping)]
    return {
        "row": CanaryRow.of(canary), "started": started,
        "checks": [_check_row(c) for c in summary.checks(canary, since=started)],
        "conditions": [{key: c.get(key, "") for key in
                        ("type", "status", "reason", "lastTransitionTime", "message")}
                       for c in conditions],
    }


def render_canary(
        canary: Mapping[str, Any],
        events: Iterable[Mapping[str, Any]],
        *,
        actions: Sequence[str] = (),
        notice: str = "",
        **frame: Any,
) -> str:
    """One canary's page: summary, steering buttons (``actions``), the timeline chart, the
    run's checks, the conditions and the run's Events."""
    timeline, started = summary.current_run(events)
    return render("canary.html", timeline=timeline, actions=actions, notice=notice,
                  **_canary_context(canary, started), **frame)


def render_parts(canary: Mapping[str, Any], *, since: str | None) -> dict[str, str]:
    """The parts of a canary's page that its poll replaces (the summary, the checks and the
    conditions), from the canary alone: the Events stay as the page loaded them."""
    context = _canary_context(canary, since)
    return {"summary": render("summary.html", **context),
            "details": render("details.html", **context)}
