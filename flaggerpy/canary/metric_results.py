"""What one metric check found: shared by the analysis that makes it and those that judge it.

Its own module so that :mod:`flaggerpy.canary.metrics_analysis` (which produces results) and
:mod:`flaggerpy.canary.decisions` (which decides what a result means for the run) both read it
without importing each other.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from flaggerpy.judging import Judgement
from flaggerpy.kube.keys import ObjectKey

__all__ = ["MetricResult", "TemplateCause"]


class TemplateCause(enum.StrEnum):
    """What a MetricTemplate's provider did when asked, for the template's own status.

    Set on the results and problems of ``templateRef`` metrics (with the template's key), so
    whoever reports on templates (:mod:`flaggerpy.canary.template_status`) need not parse
    messages.
    """

    ANSWERED = "answered"
    """The provider answered: a value (passing or not), or no values."""
    QUERY_FAILED = "query-failed"
    """The query was sent and came back as an error (or not at all)."""
    OFFLINE = "offline"
    """The availability check (``IsOnline``) failed or said no."""
    NOT_INSTALLED = "not-installed"
    """No installed plugin serves ``provider.type``, or it failed to load."""
    PROVIDER_INVALID = "provider-invalid"
    """The provider could not be built from the template and its Secret."""
    SECRET_NOT_FOUND = "secret-not-found"
    SECRET_INVALID = "secret-invalid"
    """The Secret could not be read or its data is not valid base64."""
    TEMPLATE_NOT_FOUND = "template-not-found"
    TEMPLATE_INVALID = "template-invalid"
    RENDER_FAILED = "render-failed"
    """The query did not render for this canary: nothing was asked."""


@dataclass(frozen=True, slots=True)
class MetricResult:
    """One metric's check in one tick."""

    name: str
    """``analysis.metrics[].name``."""
    value: float | None
    """The value compared: a percentage, whole milliseconds for request-duration, or the
    query's number; None when no value was obtained."""
    passed: bool
    message: str
    """On failure, the text of Flagger's Event ("Halt podinfo.test advancement success rate
    95.12% < 99%", "Halt advancement no values found for ...", "Prometheus query failed:
    ..."); empty when the check passed."""
    error: bool = False
    """The value could not be obtained at all (query, provider, template or Secret failure):
    Flagger reports these as errors rather than warnings."""
    no_values: bool = False
    """The query answered nothing (no series, or NaN): usually a canary without traffic."""
    template: ObjectKey | None = None
    """The MetricTemplate checked, for a ``templateRef`` metric."""
    cause: TemplateCause | None = None
    """What the template's provider did, for a ``templateRef`` metric."""
    judgement: Judgement | None = None
    """For a metric with ``compare``: the statistical judge's verdict against the primary
    (then ``value`` is its estimated shift canary - primary)."""
    query: str | None = None
    """The query as sent, credentials redacted (:func:`flaggerpy.canary.decisions.redact`);
    None when none was rendered."""
    samples: int | None = None
    """Requests to the canary over the metric's interval, counted for ``minSamples``."""
