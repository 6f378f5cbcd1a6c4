"""Plain-dict Kubernetes objects, and the pure half of a write: is it already what we want?

Objects are JSON objects (``dict[str, Any]``) exactly as the API server sends
them: no model classes here, so one client serves built-in types and any CRD,
and fields we do not know survive a read-modify-write untouched.

A write must not happen when nothing changed (design rule 3), yet
a freshly read object never equals the one we built: the server fills
defaults (``protocol: TCP``, ``clusterIP``, ``imagePullPolicy``...), plus
``metadata.resourceVersion``, ``uid``, ``managedFields`` and ``status``. So the
question "does it already look like what we want?" is asked with
:func:`satisfies` -- every value we specified is present and equal; values the
server added are not our concern -- and only the fields we own are compared:
``spec``-like top-level fields, ``metadata.labels``/``annotations``
(ours merged over theirs) and ``ownerReferences``.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Mapping
from typing import Any

from flaggerpy.kube.keys import ObjectKey

JsonObject = dict[str, Any]
"""A Kubernetes object as decoded JSON."""

SERVER_OWNED_TOP_LEVEL = frozenset({"apiVersion", "kind", "metadata", "status"})
"""Top-level fields :func:`merge_owned` never copies from the desired object."""

EXACT_TOP_LEVEL = frozenset({"data", "binaryData"})
"""Top-level fields compared exactly: the server adds no defaults to ConfigMap/Secret data,
and a key we dropped must be dropped from the object too."""

KUBECTL_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
"""Where ``kubectl apply`` keeps the user's manifest: what a revert restores first."""

MERGED_METADATA = ("labels", "annotations")
REPLACED_METADATA = ("ownerReferences", "finalizers")


class OperationResult(enum.StrEnum):
    """What :meth:`flaggerpy.kube.store.ObjectStore.apply` did (controller-runtime's)."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


def key_of(obj: Mapping[str, Any]) -> ObjectKey:
    """The cache/queue key of an object: its namespace ("" if cluster-scoped) and name."""
    meta = obj.get("metadata") or {}
    return ObjectKey(str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def resource_version(obj: Mapping[str, Any]) -> str:
    """``metadata.resourceVersion``, or ``""`` for an object never stored."""
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _empty(value: Any) -> bool:
    # JSON omitempty: a missing field, null, {} and [] all read back as "absent".
    return value is None or value == {} or value == []


def satisfies(actual: Any, desired: Any) -> bool:
    """True if ``actual`` already has every value ``desired`` specifies.

    Mappings: every key of ``desired`` must be satisfied in ``actual``; extra
    keys in ``actual`` (server defaults) are ignored. Lists: same length and
    each element satisfied pairwise, so a removed port or container is a
    change. Scalars: equal. An empty desired value matches an absent one.

    The limit, stated once: a key removed from a desired mapping is not seen
    as a change (it cannot be told apart from a server default). Owners of
    such maps compare them exactly (:data:`EXACT_TOP_LEVEL`) or set them in
    their own ``build`` (see :meth:`flaggerpy.kube.store.ObjectStore.apply`).
    """
    if isinstance(desired, Mapping):
        if not isinstance(actual, Mapping):
            return _empty(desired) and _empty(actual)
        return all(
            satisfies(actual.get(k), v) if k in actual else _empty(v)
            for k, v in desired.items()
        )
    if isinstance(desired, list):
        if not isinstance(actual, list):
            return _empty(desired) and _empty(actual)
        return len(actual) == len(desired) and all(
            satisfies(a, d) for a, d in zip(actual, desired, strict=True))
    if desired is None:
        return _empty(actual)
    if isinstance(desired, bool) or isinstance(actual, bool):
        return type(actual) is type(desired) and actual == desired
    return bool(actual == desired)


def merge_owned(current: Mapping[str, Any], desired: Mapping[str, Any]) -> JsonObject:
    """Returns a copy of ``current`` carrying the fields of ``desired`` that we own.

    A field that already satisfies the desired value is left exactly as the
    server has it, so an unchanged object merges to an equal dict and no write
    happens; a field that differs gets the desired value laid over it (see
    :func:`_merged`: nested mappings merge, lists are replaced, the server
    re-applies list element defaults on update). Labels and annotations are
    merged key by key so that those set by others (kubectl, other controllers)
    stay. ``status`` is never touched: it has its own subresource.
    """
    merged = copy.deepcopy(dict(current))
    for field, value in desired.items():
        if field in SERVER_OWNED_TOP_LEVEL:
            continue
        if field in EXACT_TOP_LEVEL:
            if not _exactly_equal(merged.get(field), value):
                _set_or_drop(merged, field, copy.deepcopy(value))
        elif not satisfies(merged.get(field), value):
            _set_or_drop(merged, field, _merged(merged.get(field), value))

    want_meta: Mapping[str, Any] = desired.get("metadata") or {}
    meta: dict[str, Any] = merged.setdefault("metadata", {})
    for field in MERGED_METADATA:
        wanted = want_meta.get(field)
        if not wanted:
            continue
        have = dict(meta.get(field) or {})
        if any(have.get(k) != v for k, v in wanted.items()):
            have.update(wanted)
            meta[field] = have
    for field in REPLACED_METADATA:
        if field in want_meta and not _exactly_equal(meta.get(field), want_meta[field]):
            _set_or_drop(meta, field, copy.deepcopy(want_meta[field]))
    return merged


def _merged(current: Any, desired: Any) -> Any:
    """``desired`` laid over ``current``: mappings merge key by key, anything else is replaced.

    Keeping the keys we do not specify keeps what the server allocated or
    defaulted (a Service's ``clusterIP``, say), some of which cannot be
    changed once set. Lists are replaced whole: their elements have no stable
    identity to merge by, and the server re-applies element defaults.
    """
    if not isinstance(desired, Mapping) or not isinstance(current, Mapping):
        return copy.deepcopy(desired)
    result = dict(current)
    for key, value in desired.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merged(current.get(key), value)
    return result


def _exactly_equal(a: Any, b: Any) -> bool:
    return (_empty(a) and _empty(b)) or bool(a == b)


def _set_or_drop(target: dict[str, Any], field: str, value: Any) -> None:
    if _empty(value):
        target.pop(field, None)
    else:
        target[field] = value


def strip_for_create(obj: Mapping[str, Any]) -> JsonObject:
    """A copy fit for POST: no status and none of the server-populated metadata."""
    body = copy.deepcopy(dict(obj))
    body.pop("status", None)
    meta = body.get("metadata") or {}
    for field in ("resourceVersion", "uid", "creationTimestamp", "generation",
                  "managedFields", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds"):
        meta.pop(field, None)
    return body


def with_spec(current: Mapping[str, Any], desired: Mapping[str, Any]) -> JsonObject:
    """``current`` with its ``spec`` replaced by the desired one, metadata untouched. Pure.

    The update rule of objects whose metadata is not ours to manage (Flagger updates a
    DestinationRule's spec only).
    """
    result = copy.deepcopy(dict(current))
    result["spec"] = copy.deepcopy(desired.get("spec"))
    return result
