"""The ``nginx`` provider: Flagger's ``IngressRouter`` (``pkg/router/ingress.go``, spec §3) and
NGINX ingress's builtin metrics (``pkg/metrics/observers/nginx.go``, spec §4.3).

A canary behind ingress-nginx is routed by a second Ingress, ``<spec.ingressRef.name>-canary``:
a copy of the user's Ingress (``spec.ingressRef``) whose backends named ``<svc>`` point at
``<svc>-canary`` instead, marked as ingress-nginx's canary of the user's one by annotations under
``-ingress-annotations-prefix`` (``nginx.ingress.kubernetes.io`` by default):

- always ``<prefix>/canary: "true"``;
- canary and blue/green: ``<prefix>/canary-weight: "<canary percent>"``;
- A/B testing (``analysis.match``): while the canary gets traffic, a ``cookie`` header match
  becomes ``canary-by-cookie: <its exact value>`` (the cookie's *name*: ingress-nginx sends a
  request whose cookie of that name is ``always`` to the canary), any other header
  ``canary-by-header: <name>`` with ``canary-by-header-value`` (its ``exact``) or
  ``canary-by-header-pattern`` (its ``regex``); ``canary-weight`` stays ``"0"``;
- at weight 0 every ``<prefix>/canary*`` annotation goes back to ``canary: "true"`` and
  ``canary-weight: "0"``.

Only the weights live in the annotations: a reconcile updates the canary Ingress's ``spec`` (the
user's rules, re-pointed) and leaves its metadata alone, so it never resets a split in flight,
and an annotation the user's Ingress carries is copied once, when the canary Ingress is created
(its ``<prefix>/canary*`` and ``kubectl.kubernetes.io/last-applied-configuration`` ones
excepted).

Ingress-nginx routes one way at a time, so there is no mirroring and no session affinity
(Flagger's router ignores ``mirrored`` and ``sessionAffinity``), hence the capabilities.

The Ingresses are the workload cluster's, read and written through ``ctx.store`` as Flagger's
router uses its kube client (not the mesh client of ``-kubeconfig-service-mesh``); the canary
Ingress gets its ownerReference to the Canary when it is created, as in Flagger, and a user's
own ``<name>-canary`` Ingress taken over keeps the metadata it has. ``revertOnDeletion`` reverts
nothing here (Flagger's ``Finalize`` is a no-op): the canary Ingress goes with the Canary through
its ownerReference.

As every router (style §9.3) the module is pure builders -- :func:`build_canary_ingress`,
:func:`build_routes`, :func:`read_weights` -- tested field by field, and one apply path through
the object store. Where this differs from Flagger is listed in ``docs/compatibility.md`` under
"NGINX router differences from Flagger".

The module ends with :class:`NginxObserver`, which answers ``request-success-rate`` and
``request-duration`` from the ingress controller's ``nginx_ingress_controller_requests`` and
response-duration series of the canary ingress (``canary!=""``). Its duration is the average
response time in milliseconds, not a p99, as in Flagger (spec §4.3).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from flaggerpy import kube
from flaggerpy.errors import PluginError, RouterError, TerminalError
from flaggerpy.models.canary import Canary
from flaggerpy.observing import PrometheusObserver, ratio
from flaggerpy.routing import (
    TOOLKIT_ANNOTATIONS,
    TOTAL_WEIGHT,
    Capabilities,
    ProviderContext,
    Router,
    RouterFactory,
    Weights,
    canary_owner,
)

__all__ = [
    "DEFAULT_PREFIX",
    "INGRESSES",
    "AbMatch",
    "NginxObserver",
    "NginxRouter",
    "ab_match",
    "base_annotations",
    "build_canary_ingress",
    "build_routes",
    "canary_ingress_name",
    "canary_spec",
    "header_annotations",
    "read_weights",
]

INGRESSES: Final = kube.Resource("networking.k8s.io", "v1", "ingresses", "Ingress")
DEFAULT_PREFIX: Final = "nginx.ingress.kubernetes.io"
"""ingress-nginx's own annotation prefix, ``-ingress-annotations-prefix``'s default."""
LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"
COOKIE: Final = "cookie"
"""The ``analysis.match`` header that names a cookie instead of a header."""
_GO_INT = re.compile(r"[+-]?[0-9]+")


def _key(prefix: str, suffix: str) -> str:
    return f"{prefix}/{suffix}"


# -- pure builders ------------------------------------------------------------------------------


def ingress_ref_name(canary: Canary) -> str:
    """The user's Ingress, ``spec.ingressRef.name``; TerminalError without one (a spec error:
    only a change to the Canary can fix it)."""
    ref = canary.spec.ingress_ref
    if ref is None or not ref.name:
        raise TerminalError(f"Canary {canary.namespace}/{canary.name}: ingress selector is "
                            "empty; the nginx router needs spec.ingressRef")
    return ref.name


def canary_ingress_name(canary: Canary) -> str:
    """``<spec.ingressRef.name>-canary``, the Ingress the router owns."""
    return f"{ingress_ref_name(canary)}-canary"


def canary_spec(ingress: Mapping[str, Any], canary: Canary) -> dict[str, Any]:
    """The user's Ingress ``spec`` with every path backend named ``<svc>`` re-pointed at
    ``<svc>-canary``, the rest as it is. Pure.

    Raises RouterError when no backend is ``<svc>``: the user's Ingress does not route the
    canary's service (Flagger: "backend <svc> not found in ingress <name>").
    """
    names = canary.get_service_names()
    spec = copy.deepcopy(dict(ingress.get("spec") or {}))
    found = False
    for rule in spec.get("rules") or ():
        for path in (rule.get("http") or {}).get("paths") or ():
            service = (path.get("backend") or {}).get("service")
            if service is not None and service.get("name") == names.apex:
                service["name"] = names.canary
                found = True
    if not found:
        raise RouterError(f"backend {names.apex} not found in ingress "
                          f"{(ingress.get('metadata') or {}).get('name')}")
    return spec


def base_annotations(annotations: Mapping[str, str] | None, *, prefix: str) -> dict[str, str]:
    """A canary Ingress's annotations at weight 0: ``annotations`` without any
    ``<prefix>/canary*`` key nor kubectl's last-applied configuration, plus the toolkit
    annotations, ``<prefix>/canary: "true"`` and ``<prefix>/canary-weight: "0"``
    (Flagger's ``makeAnnotations``). Pure."""
    marker = _key(prefix, "canary")
    result = {k: v for k, v in {**(annotations or {}), **TOOLKIT_ANNOTATIONS}.items()
              if marker not in k and LAST_APPLIED not in k}
    result[marker] = "true"
    result[_key(prefix, "canary-weight")] = "0"
    return result


@dataclass(frozen=True, slots=True)
class AbMatch:
    """What ``analysis.match`` says to ingress-nginx: one header (with an exact value or a
    pattern) and one cookie name; "" where the match says nothing."""

    header: str = ""
    header_value: str = ""
    header_pattern: str = ""
    cookie: str = ""


def ab_match(canary: Canary) -> AbMatch:
    """``analysis.match`` as ingress-nginx's canary rules, as Flagger's ``SetRoutes`` reads it.

    ingress-nginx has room for one header and one cookie, so the last of each wins: a ``cookie``
    header gives its ``exact`` value as the cookie name; any other header its name, ``exact``
    and ``regex`` (a later header replaces all three, even with empty ones). Flagger visits a
    match's headers in Go's random map order; they are taken by name here, so the same Canary
    always builds the same Ingress. Prefix and suffix matches have no annotation (the header
    then routes by ingress-nginx's ``always``/``never`` values).
    """
    result = AbMatch()
    for match in canary.spec.analysis.match or ():
        for name, value in sorted((match.headers or {}).items()):
            if name == COOKIE:
                result = AbMatch(result.header, result.header_value, result.header_pattern,
                                 value.exact or "")
            else:
                result = AbMatch(name, value.exact or "", value.regex or "", result.cookie)
    return result


def header_annotations(
        annotations: Mapping[str, str] | None, match: AbMatch, *, prefix: str,
) -> dict[str, str]:
    """A canary Ingress's annotations while an A/B canary gets its matched traffic
    (Flagger's ``makeHeaderAnnotations``). Pure.

    What the Ingress carries stays, ``canary-weight`` (``"0"``) included, except an annotation
    whose *value* mentions ``<prefix>/canary``: Flagger filters on values here (on keys
    elsewhere), and keeping to it costs nothing. Then ``canary: "true"`` and the match's
    ``canary-by-cookie``, ``canary-by-header``, ``canary-by-header-value`` and
    ``canary-by-header-pattern``, each only when not empty.
    """
    marker = _key(prefix, "canary")
    result = {k: v for k, v in {**(annotations or {}), **TOOLKIT_ANNOTATIONS}.items()
              if marker not in v}
    result[marker] = "true"
    for suffix, value in (("canary-by-cookie", match.cookie),
                          ("canary-by-header", match.header),
                          ("canary-by-header-value", match.header_value),
                          ("canary-by-header-pattern", match.header_pattern)):
        if value:
            result[_key(prefix, suffix)] = value
    return result


def build_canary_ingress(
        canary: Canary, ingress: Mapping[str, Any], existing: Mapping[str, Any] | None, *,
        prefix: str = DEFAULT_PREFIX,
) -> dict[str, Any]:
    """The canary Ingress for the user's ``ingress``, built over ``existing`` (or None). Pure.

    A new one copies the user's labels, its annotations as :func:`base_annotations` (all
    traffic to the primary) and its re-pointed spec (:func:`canary_spec`), with a controller
    reference to the Canary. An existing one gets the spec only: its annotations carry the
    split, and Flagger never touches its metadata here.
    """
    spec = canary_spec(ingress, canary)
    if existing is not None:
        result = copy.deepcopy(dict(existing))
        result["spec"] = spec
        return result
    source = ingress.get("metadata") or {}
    metadata: dict[str, Any] = {
        "name": canary_ingress_name(canary),
        "namespace": canary.namespace,
        "annotations": base_annotations(source.get("annotations"), prefix=prefix),
        "ownerReferences": [kube.controller_reference(canary_owner(canary))],
    }
    if source.get("labels"):
        metadata["labels"] = dict(source["labels"])
    return {"apiVersion": INGRESSES.api_version, "kind": INGRESSES.kind,
            "metadata": metadata, "spec": spec}


def build_routes(
        canary: Canary, weights: Weights, existing: Mapping[str, Any] | None, *,
        prefix: str = DEFAULT_PREFIX,
) -> dict[str, Any]:
    """The canary Ingress ``existing`` routing ``weights`` (Flagger's ``SetRoutes``). Pure.

    A/B: the match annotations (:func:`header_annotations`) while the canary has weight;
    otherwise ``canary-weight``. At canary weight 0 both end as :func:`base_annotations`.
    Raises RouterError when the canary Ingress is missing (a reconcile creates it first).
    """
    if existing is None:
        raise RouterError(f"Ingress {canary.namespace}/{canary_ingress_name(canary)} not found")
    result = copy.deepcopy(dict(existing))
    metadata = result.setdefault("metadata", {})
    annotations: dict[str, str] = dict(metadata.get("annotations") or {})
    if canary.spec.analysis.match:
        annotations = header_annotations(annotations, ab_match(canary), prefix=prefix)
    else:
        annotations[_key(prefix, "canary-weight")] = str(weights.canary)
    if weights.canary > 0:
        annotations[_key(prefix, "canary")] = "true"
    else:
        annotations = base_annotations(annotations, prefix=prefix)
    metadata["annotations"] = annotations
    return result


def read_weights(
        ingress: Mapping[str, Any], canary: Canary, *, prefix: str = DEFAULT_PREFIX,
) -> Weights:
    """The split a canary Ingress carries: Flagger's ``GetRoutes``, pure.

    An A/B canary whose Ingress routes by cookie or header sends its matched traffic to the
    canary: 0/100. Otherwise the canary gets ``canary-weight`` (none: 0) and the primary the
    rest. Raises RouterError for a weight that is not a whole percentage (a hand edit).
    """
    annotations = (ingress.get("metadata") or {}).get("annotations") or {}
    if canary.spec.analysis.match and (_key(prefix, "canary-by-cookie") in annotations
                                       or _key(prefix, "canary-by-header") in annotations):
        return Weights.all_canary()
    raw = annotations.get(_key(prefix, "canary-weight"))
    if raw is None:
        return Weights.all_primary()
    label = f"Ingress {(ingress.get('metadata') or {}).get('name')}"
    if not _GO_INT.fullmatch(str(raw)):
        raise RouterError(f"{label}: failed to convert {raw} to int")
    try:
        return Weights.to_canary(int(raw))
    except ValueError as exc:
        raise RouterError(f"{label}: {exc} (total {TOTAL_WEIGHT})") from exc


# -- the router ---------------------------------------------------------------------------------


class NginxRouter:
    """Routes a canary with ingress-nginx's canary Ingress ``<ingressRef.name>-canary``.

    Built once per canary by the core (``NginxRouter(ctx=..., variant="")``). It keeps no state
    of its own: the split lives in the canary Ingress's annotations, read through the object
    store, which shows our own writes at once.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(mirroring=False, session_affinity=False)
    """Weighted, with A/B header and cookie matches; no mirroring and no sticky sessions, as
    Flagger's router (it ignores ``mirrored`` and ``sessionAffinity``)."""

    def __init__(self, *, ctx: ProviderContext, variant: str = "") -> None:
        if variant:
            raise PluginError(f"the nginx router takes no variant, got 'nginx:{variant}'")
        self._log = ctx.log
        # The workload cluster's store, not routing_store: the Ingresses are the user's, next to
        # the Canary (Flagger's router uses its kube client), so the ownerReference always holds.
        self._store = ctx.store
        self._prefix = ctx.settings.mesh.ingress_annotations_prefix

    # -- the Router contract --------------------------------------------------------------------

    async def reconcile(self, canary: Canary) -> None:
        """Creates the canary Ingress from the user's (all to the primary), or keeps its spec
        in step with the user's: a steady call writes nothing, and never moves the split."""
        source_name = ingress_ref_name(canary)
        ingress = await self._get(canary, source_name)
        if ingress is None:
            raise RouterError(f"Ingress {canary.namespace}/{source_name} not found "
                              "(spec.ingressRef)")
        applied = await self._apply(canary, lambda current: build_canary_ingress(
            canary, ingress, current, prefix=self._prefix))
        if applied.result is not kube.OperationResult.UNCHANGED:
            self._log.info(f"ingress_{applied.result.value}", router="nginx",
                           canary=_flagger_name(canary), name=canary_ingress_name(canary))

    async def set_routes(self, canary: Canary, weights: Weights) -> None:
        """Writes ``weights`` into the canary Ingress's annotations (nothing, if it carries
        them)."""
        applied = await self._apply(canary, lambda current: build_routes(
            canary, weights, current, prefix=self._prefix))
        if applied.result is not kube.OperationResult.UNCHANGED:
            self._log.info("routes_set", router="nginx", canary=_flagger_name(canary),
                           primary=weights.primary, canary_weight=weights.canary)

    async def get_routes(self, canary: Canary) -> Weights:
        """The split the canary Ingress carries now (see :func:`read_weights`)."""
        name = canary_ingress_name(canary)
        ingress = await self._get(canary, name)
        if ingress is None:
            raise RouterError(f"Ingress {canary.namespace}/{name} not found")
        return read_weights(ingress, canary, prefix=self._prefix)

    async def finalize(self, canary: Canary) -> None:
        """Nothing to give back (``revertOnDeletion``), as in Flagger: the canary Ingress goes
        with the Canary through its ownerReference, and the user's Ingress was never changed."""
        self._log.debug("ingress_finalize_skipped", router="nginx",
                        canary=_flagger_name(canary))

    # -- helpers --------------------------------------------------------------------------------

    async def _get(self, canary: Canary, name: str) -> Mapping[str, Any] | None:
        try:
            return await self._store.get(INGRESSES, namespace=canary.namespace, name=name)
        except kube.WriteFencedError:
            raise
        except kube.KubeError as exc:
            raise RouterError(str(exc)) from exc

    async def _apply(self, canary: Canary, build: kube.Build) -> kube.Applied:
        """The one write path: cache read, pure build, a write only on a change, conflicts
        retried by the store. The owner is set by the builder, on creation only."""
        try:
            return await self._store.apply(INGRESSES, namespace=canary.namespace,
                                           name=canary_ingress_name(canary), build=build)
        except kube.WriteFencedError:
            raise  # this replica is no longer the leader: not a routing failure
        except kube.KubeError as exc:  # the message names the object and the operation
            raise RouterError(str(exc)) from exc


def _flagger_name(canary: Canary) -> str:
    return f"{canary.name}.{canary.namespace}"


_factory: RouterFactory = NginxRouter
_: type[Router] = NginxRouter


# --- builtin metrics ----------------------------------------------------------------------------


class NginxObserver(PrometheusObserver):
    """NGINX ingress: the canary ingress's requests, and its average response time."""

    mesh = "nginx"
    _selector = 'namespace="{{ namespace }}",ingress="{{ ingress }}",canary!=""'
    success_rate_query = ratio("nginx_ingress_controller_requests", _selector,
                               'status!~"5.*"')
    duration_query = (
        f"sum(rate(nginx_ingress_controller_response_duration_seconds_sum{{{_selector}}}"
        f"[{{{{ interval }}}}])) / sum(rate(nginx_ingress_controller_response_duration_seconds"
        f"_count{{{_selector}}}[{{{{ interval }}}}])) * 1000"
    )
