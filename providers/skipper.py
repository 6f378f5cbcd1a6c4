"""The ``skipper`` provider: Flagger's ``SkipperRouter`` (``pkg/router/skipper.go``, spec §3) and
Skipper's builtin metrics (``pkg/metrics/observers/skipper.go``, spec §4.3).

A canary behind Skipper is routed by a second ``networking.k8s.io/v1`` Ingress,
``<ingressRef.name>-canary``, built from the user's (apex) Ingress, which is only ever read:

- every path whose backend is the apex Service is pointed at ``<svc>-primary``, and a copy of it
  pointing at ``<svc>-canary`` is appended to the rule's paths;
- ``zalando.org/backend-weights`` carries the split as JSON, keys sorted
  (``{"<svc>-canary":C,"<svc>-primary":P}``), which Skipper applies between the two backends of
  one path;
- ``zalando.org/skipper-predicate`` gets ``Weight(100)`` prepended to the user's predicate, so
  Skipper prefers the canary Ingress's routes over the apex's for the same path; once the
  canary's weight is back to 0, ``False()`` instead, which switches those routes off.

Everything else of the apex's metadata (labels, annotations such as ``skipper-filter``) is copied
when the canary Ingress is created. ``reconcile`` writes again only when the apex's ``spec`` no
longer matches (then the annotations too, plus the toolkit ones, as Flagger's update path);
``set_routes`` only touches the two annotations; ``finalize`` (``revertOnDeletion``) deletes the
canary Ingress, which sends everything back to the apex Ingress.

Skipper's router splits by weight and does nothing else: no A/B matches (Flagger's ``TODO``),
no mirroring, no session affinity, hence the capabilities. Pure builders
(:func:`build_canary_ingress`, :func:`build_routes`, :func:`read_weights`,
:func:`insert_predicate`) carry the rules and are tested field by field; the router class does
the I/O through ``ctx.routing_store``. Where this differs from Flagger (an apex Ingress without
annotations, on which Flagger panics; a reconcile that keeps the weights) is listed in
``docs/compatibility.md`` under "Skipper router differences from Flagger".

The module ends with :class:`SkipperObserver`, which answers ``request-success-rate`` and
``request-duration`` from Skipper's per-route histograms of the canary ingress route,
``kube(ew)?_<ns>__<ingress>_canary__...__<service>_canary`` (spec §4.3). Skipper names routes
after the ingress with every non-word character turned into ``_``, so the model is rewritten the
same way before the queries are rendered (Flagger's ``encodeModelForSkipper``).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar, Final

from flaggerpy import kube
from flaggerpy.analysis import MetricTemplateModel
from flaggerpy.errors import PluginError, RouterError, TerminalError
from flaggerpy.models.canary import Canary
from flaggerpy.observing import PrometheusObserver, request_count
from flaggerpy.routing import (
    TOOLKIT_ANNOTATIONS,
    Capabilities,
    ProviderContext,
    Router,
    RouterFactory,
    Weights,
    canary_owner,
)

__all__ = [
    "BACKEND_WEIGHTS_ANNOTATION",
    "INGRESSES",
    "PREDICATE_ANNOTATION",
    "ROUTE_DISABLE",
    "ROUTE_WEIGHT",
    "SkipperObserver",
    "SkipperRouter",
    "backend_weights",
    "build_canary_ingress",
    "build_routes",
    "canary_ingress_name",
    "insert_predicate",
    "kept_weights",
    "read_weights",
]

INGRESSES: Final = kube.Resource("networking.k8s.io", "v1", "ingresses", "Ingress")

BACKEND_WEIGHTS_ANNOTATION: Final = "zalando.org/backend-weights"
"""Skipper's split between the backends of one path: ``{"<service>": weight, ...}``."""
PREDICATE_ANNOTATION: Final = "zalando.org/skipper-predicate"
"""Skipper's extra route predicates of an Ingress, joined with ``&&``."""
ROUTE_WEIGHT: Final = "Weight(100)"
"""Prepended while the canary Ingress routes: its routes win over the apex Ingress's."""
ROUTE_DISABLE: Final = "False()"
"""Prepended once the canary's weight is 0: the canary Ingress's routes match nothing."""

_SERVER_FIELDS: Final = ("uid", "resourceVersion", "creationTimestamp", "managedFields",
                         "generation", "selfLink", "deletionTimestamp",
                         "deletionGracePeriodSeconds")


# -- pure builders ------------------------------------------------------------------------------


def _ingress_ref_name(canary: Canary) -> str:
    ref = canary.spec.ingress_ref
    if ref is None or not ref.name:
        raise TerminalError(f"Canary {canary.namespace}/{canary.name}: ingress selector is "
                            "empty; the skipper router needs spec.ingressRef")
    return ref.name


def canary_ingress_name(canary: Canary) -> str:
    """``<ingressRef.name>-canary``: the Ingress the router owns."""
    return f"{_ingress_ref_name(canary)}-canary"


def insert_predicate(raw: str | None, insert: str) -> str:
    """``insert`` first, then the predicates of ``raw`` (``&&``-separated) other than empty
    ones, ``Weight(100)`` and ``False()``; joined with `` && ``. Flagger's ``insertPredicate``."""
    predicates = [insert]
    for part in (raw or "").split("&&"):
        predicate = part.strip()
        if predicate and predicate not in (ROUTE_WEIGHT, ROUTE_DISABLE):
            predicates.append(predicate)
    return " && ".join(predicates)


def backend_weights(canary: Canary, weights: Weights) -> str:
    """The ``zalando.org/backend-weights`` value: JSON with sorted keys and no blanks, as Go's
    ``json.Marshal`` writes a map."""
    names = canary.get_service_names()
    return json.dumps({names.primary: weights.primary, names.canary: weights.canary},
                      sort_keys=True, separators=(",", ":"))


def _annotate(annotations: Mapping[str, str] | None, canary: Canary, weights: Weights, *,
              marker: str) -> dict[str, str]:
    """``annotations`` with the split and ``marker`` first in the predicate (Flagger's
    ``makeAnnotations``, with None read as no annotations where Flagger panics)."""
    result = dict(annotations or {})
    result[BACKEND_WEIGHTS_ANNOTATION] = backend_weights(canary, weights)
    result[PREDICATE_ANNOTATION] = insert_predicate(result.get(PREDICATE_ANNOTATION), marker)
    return result


def _marker(weights: Weights) -> str:
    return ROUTE_DISABLE if weights.canary == 0 else ROUTE_WEIGHT


def _canary_spec(canary: Canary, apex: Mapping[str, Any]) -> dict[str, Any]:
    """The apex's spec with each apex-Service path sent to the primary, plus a copy of it for
    the canary appended to the same rule. Rules without ``http`` are kept as they are."""
    names = canary.get_service_names()
    spec: dict[str, Any] = copy.deepcopy(dict(apex.get("spec") or {}))
    for rule in spec.get("rules") or ():
        http = rule.get("http") if isinstance(rule, dict) else None
        if not isinstance(http, dict):
            continue
        paths = list(http.get("paths") or ())
        for path in list(paths):
            service = (path.get("backend") or {}).get("service")
            if isinstance(service, dict) and service.get("name") == names.apex:
                service["name"] = names.primary
                twin = copy.deepcopy(path)
                twin["backend"]["service"]["name"] = names.canary
                paths.append(twin)
        http["paths"] = paths
    return spec


def build_canary_ingress(
        canary: Canary, apex: Mapping[str, Any], existing: Mapping[str, Any] | None, *,
        owned: bool = True,
) -> dict[str, Any]:
    """The canary Ingress for the apex Ingress ``apex``, over ``existing`` (or None). Pure.

    A new one is the apex with its name, the rewritten spec and the annotations of a 100/0
    split with ``Weight(100)`` (no toolkit annotations: Flagger's create path adds none); its
    ownerReferences are the apex's when ``owned`` is False (the store adds the Canary's
    otherwise). An existing one whose spec still matches is returned as it is; one whose spec
    does not gets the new spec and the apex's annotations plus the toolkit ones, with the split
    and predicate marker it carries (Flagger resets them to 100/0 there, see the module).
    """
    spec = _canary_spec(canary, apex)
    if existing is None:
        meta = copy.deepcopy(dict(apex.get("metadata") or {}))
        for key in _SERVER_FIELDS:
            meta.pop(key, None)
        if owned:
            meta.pop("ownerReferences", None)
        meta["name"] = canary_ingress_name(canary)
        meta["namespace"] = canary.namespace
        meta["annotations"] = _annotate(meta.get("annotations"), canary, Weights.all_primary(),
                                        marker=ROUTE_WEIGHT)
        return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta,
                "spec": spec}
    result = copy.deepcopy(dict(existing))
    if result.get("spec") == spec:
        return result
    weights = kept_weights(existing, canary)
    predicate = str(((existing.get("metadata") or {}).get("annotations") or {})
                    .get(PREDICATE_ANNOTATION) or "")
    marker = ROUTE_DISABLE if predicate.split("&&")[0].strip() == ROUTE_DISABLE else ROUTE_WEIGHT
    apex_annotations = (apex.get("metadata") or {}).get("annotations")
    annotations = _annotate(apex_annotations, canary, weights, marker=marker)
    annotations.update(TOOLKIT_ANNOTATIONS)
    result["spec"] = spec
    result["metadata"] = {**dict(result.get("metadata") or {}), "annotations": annotations}
    return result


def build_routes(canary: Canary, existing: Mapping[str, Any], weights: Weights) -> dict[str, Any]:
    """``existing`` (the canary Ingress) carrying ``weights``: the backend-weights JSON, and
    ``Weight(100)`` first in the predicate, or ``False()`` when the canary's weight is 0. Pure;
    nothing else changes (Flagger's ``SetRoutes``)."""
    result = copy.deepcopy(dict(existing))
    meta = dict(result.get("metadata") or {})
    meta["annotations"] = _annotate(meta.get("annotations"), canary, weights,
                                    marker=_marker(weights))
    result["metadata"] = meta
    return result


def read_weights(ingress: Mapping[str, Any], canary: Canary) -> Weights:
    """The split the canary Ingress's ``zalando.org/backend-weights`` carries. Pure.

    Raises RouterError when the annotation is missing or not a JSON object of whole numbers,
    when it has no weight for the primary or the canary, or when they are not a split of 100
    (only a hand edit makes any of these).
    """
    names = canary.get_service_names()
    label = f"Ingress {canary.namespace}/{(ingress.get('metadata') or {}).get('name')}"
    raw = ((ingress.get("metadata") or {}).get("annotations") or {}).get(
        BACKEND_WEIGHTS_ANNOTATION)
    if raw is None:
        raise RouterError(f"{label} has no {BACKEND_WEIGHTS_ANNOTATION} annotation")
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise RouterError(f"{label}: {BACKEND_WEIGHTS_ANNOTATION} is not JSON: {raw!r}") from exc
    if not isinstance(parsed, dict):
        raise RouterError(f"{label}: {BACKEND_WEIGHTS_ANNOTATION} is not an object: {raw!r}")
    found: dict[str, int] = {}
    for service in (names.primary, names.canary):
        if service not in parsed:
            raise RouterError(f"{label}: {BACKEND_WEIGHTS_ANNOTATION} has no weight for "
                              f"{service}")
        value = parsed[service]
        if isinstance(value, bool) or not isinstance(value, int):
            raise RouterError(f"{label}: the weight of {service} is not a whole number: "
                              f"{value!r}")
        found[service] = value
    try:
        return Weights(primary=found[names.primary], canary=found[names.canary])
    except ValueError as exc:
        raise RouterError(f"{label}: {exc}") from exc


def kept_weights(ingress: Mapping[str, Any] | None, canary: Canary) -> Weights:
    """The split a reconcile keeps: what ``ingress`` carries, else all to the primary."""
    if ingress is None:
        return Weights.all_primary()
    try:
        return read_weights(ingress, canary)
    except RouterError:
        return Weights.all_primary()


# -- the router ---------------------------------------------------------------------------------


class SkipperRouter:
    """Routes a canary with the Ingress ``<ingressRef.name>-canary`` (spec §3).

    Built once per canary by the core (``SkipperRouter(ctx=..., variant="")``). It keeps no
    state: the weights live in the canary Ingress's annotations, read through the object store,
    which shows our own writes at once.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(
        ab_matches=False, mirroring=False, session_affinity=False)
    """Weighted between the two backends of each path: no header or cookie matches, no
    mirroring, no sticky sessions, as Flagger's router (it ignores ``mirrored`` and
    ``analysis.match``)."""

    def __init__(self, *, ctx: ProviderContext, variant: str = "") -> None:
        if variant:
            raise PluginError(f"the skipper router takes no variant, got 'skipper:{variant}'")
        self._log = ctx.log
        self._store = ctx.routing_store
        self._set_owner_refs = ctx.set_owner_refs

    # -- the Router contract --------------------------------------------------------------------

    async def reconcile(self, canary: Canary) -> None:
        """Creates the canary Ingress from the apex one (all to the primary), or brings its spec
        up to date with the apex's, keeping its split: a steady call writes nothing."""
        apex_name = _ingress_ref_name(canary)
        apex = await self._get(canary, apex_name)
        if apex is None:
            raise RouterError(f"apex Ingress {canary.namespace}/{apex_name} not found")
        owned = self._set_owner_refs
        applied = await self._apply(canary, lambda current: build_canary_ingress(
            canary, apex, current, owned=owned))
        if applied.result is not kube.OperationResult.UNCHANGED:
            self._log.info(f"ingress_{applied.result.value}", router="skipper",
                           canary=_flagger_name(canary), name=canary_ingress_name(canary))

    async def set_routes(self, canary: Canary, weights: Weights) -> None:
        """Writes ``weights`` into the canary Ingress's annotations (nothing, if it carries
        them). RouterError when the canary Ingress does not exist: reconcile makes it."""
        name = canary_ingress_name(canary)

        def build(current: dict[str, Any] | None) -> dict[str, Any]:
            if current is None:
                raise RouterError(f"Ingress {canary.namespace}/{name} not found")
            return build_routes(canary, current, weights)

        applied = await self._apply(canary, build)
        if applied.result is not kube.OperationResult.UNCHANGED:
            self._log.info("routes_set", router="skipper", canary=_flagger_name(canary),
                           primary=weights.primary, canary_weight=weights.canary)

    async def get_routes(self, canary: Canary) -> Weights:
        """The split the canary Ingress carries now (see :func:`read_weights`)."""
        name = canary_ingress_name(canary)
        ingress = await self._get(canary, name)
        if ingress is None:
            raise RouterError(f"Ingress {canary.namespace}/{name} not found")
        return read_weights(ingress, canary)

    async def finalize(self, canary: Canary) -> None:
        """Deletes the canary Ingress (``revertOnDeletion``): the apex Ingress, which the router
        never changed, routes everything again. Already gone is done (Flagger errors)."""
        name = canary_ingress_name(canary)
        try:
            deleted = await self._store.delete(INGRESSES, namespace=canary.namespace, name=name)
        except kube.WriteFencedError:
            raise
        except kube.KubeError as exc:
            raise RouterError(str(exc)) from exc
        self._log.info("ingress_deleted" if deleted else "ingress_already_deleted",
                       router="skipper", canary=_flagger_name(canary), name=name)

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
        retried by the store."""
        owner = canary_owner(canary) if self._set_owner_refs else None
        try:
            return await self._store.apply(INGRESSES, namespace=canary.namespace,
                                           name=canary_ingress_name(canary), build=build,
                                           owner=owner)
        except kube.WriteFencedError:
            raise  # this replica is no longer the leader: not a routing failure
        except kube.KubeError as exc:  # the message names the object and the operation
            raise RouterError(str(exc)) from exc


def _flagger_name(canary: Canary) -> str:
    return f"{canary.name}.{canary.namespace}"


_factory: RouterFactory = SkipperRouter
_: type[Router] = SkipperRouter


# --- builtin metrics ----------------------------------------------------------------------------

_SKIPPER_ROUTE: Final = (
    '{{- $route := printf "kube(ew)?_%s__%s_canary__.*__%s_canary(_[0-9]+)?"'
    " namespace ingress service }}"
)
_NON_WORD: Final = re.compile(r"\W", re.ASCII)


class SkipperObserver(PrometheusObserver):
    """Skipper: route ``kube(ew)?_<ns>__<ingress>_canary__...__<service>_canary``.

    The model's name, namespace, target, service and ingress have their non-word characters
    replaced by ``_`` before rendering, as Skipper does when it names the route.
    """

    mesh = "skipper"
    success_rate_query = (
        _SKIPPER_ROUTE
        + ' sum(rate(skipper_response_duration_seconds_bucket{route=~"{{ $route }}",'
        'code!~"5..",le="+Inf"}[{{ interval }}]))'
        ' / sum(rate(skipper_response_duration_seconds_bucket{route=~"{{ $route }}",'
        'le="+Inf"}[{{ interval }}])) * 100'
    )
    duration_query = (
        _SKIPPER_ROUTE
        + ' sum(rate(skipper_serve_route_duration_seconds_sum{route=~"{{ $route }}"}'
        "[{{ interval }}]))"
        ' / sum(rate(skipper_serve_route_duration_seconds_count{route=~"{{ $route }}"}'
        "[{{ interval }}])) * 1000"
    )
    # The requests the success rate divides by: its histogram's count (its le="+Inf" bucket).
    request_count_query = _SKIPPER_ROUTE + " " + request_count(
        "skipper_response_duration_seconds_count", 'route=~"{{ $route }}"')

    def query_model(self, model: MetricTemplateModel) -> MetricTemplateModel:
        def encode(value: str) -> str:
            return _NON_WORD.sub("_", value)

        return replace(
            model, name=encode(model.name), namespace=encode(model.namespace),
            target=encode(model.target), service=encode(model.service),
            ingress=encode(model.ingress),
        )
