"""Checks of a Canary spec that the CRD schema cannot express (Flagger's ``verifyCanary``).

Each check returns readable problems rather than raising, so the reconciler can report all of them
at once in the status message and the Event.
"""

from __future__ import annotations

from flaggerpy.models import ANALYSIS_INTERVAL_SECONDS, Canary, format_duration, parse_duration
from flaggerpy.routing import Capabilities


def cross_namespace_refs(canary: Canary) -> list[str]:
    """References to other namespaces, which ``-no-cross-namespace-refs`` forbids."""
    namespace = canary.namespace
    problems: list[str] = []
    upstream = canary.spec.upstream_ref
    if upstream is not None and upstream.namespace and upstream.namespace != namespace:
        problems.append(
            f"spec.upstreamRef.namespace {upstream.namespace!r} is not the canary's "
            f"namespace {namespace!r}"
        )
    refs = [
        (f"spec.analysis.metrics[{i}].templateRef", m.template_ref.namespace)
        for i, m in enumerate(canary.spec.analysis.metrics or [])
        if m.template_ref is not None
    ] + [
        (f"spec.analysis.alerts[{i}].providerRef", a.provider_ref.namespace)
        for i, a in enumerate(canary.spec.analysis.alerts or [])
    ]
    for path, ref_namespace in refs:
        if ref_namespace and ref_namespace != namespace:
            problems.append(
                f"{path}.namespace {ref_namespace!r} is not the canary's namespace {namespace!r}"
            )
    return problems


def target_matches_router(
        canary: Canary, *, provider: str, capabilities: Capabilities,
) -> list[str]:
    """The target must be one the router routes (``Capabilities.target_kinds``).

    Flagger's rule that a Knative Service target needs the knative provider, and only it, is
    this check with Knative's router accepting only Knative Services and the others everything
    but them.
    """
    ref = canary.spec.target_ref
    accepted = capabilities.target_kinds
    if any(kind.accepts(api_version=ref.api_version, kind=ref.kind) for kind in accepted):
        return []
    names = ", ".join(sorted(str(kind) for kind in accepted)) or "nothing"
    return [f"provider {provider!r} does not route a {ref.api_version} {ref.kind} target "
            f"(spec.targetRef); it routes {names}"]


def knative_autoscaler(canary: Canary) -> list[str]:
    """A Knative Service scales its revisions itself: no ``autoscalerRef`` with it (Flagger's
    ``verifyKnativeCanary``)."""
    if canary.is_knative_service() and canary.spec.autoscaler_ref is not None:
        return ["spec.autoscalerRef cannot be used with a Knative Service target "
                "(serving.knative.dev): Knative scales its revisions itself"]
    return []


def session_affinity(canary: Canary) -> list[str]:
    """The primary's cookie must differ from the canary's, or sessions could not be told apart."""
    affinity = canary.spec.analysis.session_affinity
    if affinity is not None and affinity.primary_cookie_name == affinity.cookie_name:
        return ["spec.analysis.sessionAffinity.primaryCookieName must differ from cookieName"]
    return []


def unreadable_durations(canary: Canary) -> list[str]:
    """Durations that pass the CRD's pattern but Go cannot parse (``1s-5x``, thirty 9s and ``s``).

    Flagger reads such an analysis interval as its 60 s default without a word; the canary
    keeps working that way here too, so manifests that run under Flagger run the same, but
    the user is told which field was not read and what is used instead. Not a problem that
    fails the canary: a warning.
    """
    interval = canary.spec.analysis.interval
    if not interval:
        return []
    try:
        parse_duration(interval)
    except ValueError as error:
        default = format_duration(ANALYSIS_INTERVAL_SECONDS)
        return [f"spec.analysis.interval {interval!r} cannot be read as a duration ({error}); "
                f"the analysis runs every {default}, Flagger's default"]
    return []


def problems(
        canary: Canary,
        *,
        provider: str,
        capabilities: Capabilities | None,  # None: no router for provider, reported elsewhere
        no_cross_namespace_refs: bool,
) -> list[str]:
    """Every problem of the spec, in a stable order; empty when the canary can be reconciled."""
    found: list[str] = []
    if capabilities is not None:
        found += target_matches_router(canary, provider=provider, capabilities=capabilities)
    found += knative_autoscaler(canary)
    found += session_affinity(canary)
    if no_cross_namespace_refs:
        found += cross_namespace_refs(canary)
    return found
