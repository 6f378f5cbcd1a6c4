"""The corpus normalization (README, "Snapshots"), applied to what the replay reads back.

The expected files are already normalized; applying the same functions to them changes nothing,
which the harness's own tests check on every case, so both sides are compared in one form.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "CookieNames",
    "identity",
    "label",
    "normalize",
    "replace_strings",
    "sort_objects",
]

Json = dict[str, Any]

TIME = "<time>"
UUID = "<uuid>"

_METADATA_DROPPED = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation",
                     "selfLink")
_ANNOTATIONS_DROPPED = ("kubectl.kubernetes.io/last-applied-configuration",
                        "deployment.kubernetes.io/revision")
_SERVICE_SPEC_DROPPED = ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy",
                         "internalTrafficPolicy")


def identity(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """(kind, apiVersion, namespace, name): the snapshots' sort key and an object's identity."""
    metadata = obj.get("metadata") or {}
    return (str(obj.get("kind", "")), str(obj.get("apiVersion", "")),
            str(metadata.get("namespace", "")), str(metadata.get("name", "")))


def label(obj: Mapping[str, Any]) -> str:
    """``Kind[.group]/name`` as the corpus's ``changed`` lists name objects."""
    kind, api_version, _, name = identity(obj)
    group = api_version.rpartition("/")[0]
    return f"{kind}.{group}/{name}" if group else f"{kind}/{name}"


def sort_objects(objects: Iterable[Json]) -> list[Json]:
    return sorted(objects, key=identity)


def normalize(obj: Mapping[str, Any]) -> Json:
    """One object as the corpus stores it (a normalized copy; ``obj`` is left alone)."""
    out: Json = copy.deepcopy(dict(obj))
    metadata = out.get("metadata")
    if isinstance(metadata, dict):
        for key in _METADATA_DROPPED:
            metadata.pop(key, None)
        for owner in metadata.get("ownerReferences") or ():
            owner.pop("uid", None)
        annotations = metadata.get("annotations")
        if isinstance(annotations, dict):
            for key in _ANNOTATIONS_DROPPED:
                annotations.pop(key, None)
            if not annotations:
                del metadata["annotations"]
        if "deletionTimestamp" in metadata:
            metadata["deletionTimestamp"] = TIME
    if out.get("kind") == "Service" and out.get("apiVersion") == "v1":
        spec = out.get("spec")
        if isinstance(spec, dict):
            for key in _SERVICE_SPEC_DROPPED:
                spec.pop(key, None)
    if out.get("kind") == "Canary":
        status = out.get("status")
        if isinstance(status, dict):
            # flaggerpy's explanation of each metric check (docs/analysis.md); Flagger has no
            # such field, and its entries carry the time of each check.
            status.pop("analysisHistory", None)
            if "lastTransitionTime" in status:
                status["lastTransitionTime"] = TIME
            for condition in status.get("conditions") or ():
                for key in ("lastTransitionTime", "lastUpdateTime"):
                    if key in condition:
                        condition[key] = TIME
    else:
        out.pop("status", None)
    _replace_flagger_ids(out)
    return out


def _replace_flagger_ids(value: Any) -> None:
    """Every ``flagger-id`` annotation value, wherever a pod template carries it."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "annotations" and isinstance(item, dict) and "flagger-id" in item:
                item["flagger-id"] = UUID
            else:
                _replace_flagger_ids(item)
    elif isinstance(value, list):
        for item in value:
            _replace_flagger_ids(item)


class CookieNames:
    """Session-affinity cookie values -> ``<random-N>``, numbered once for a whole case.

    Values are found in the Canary status cookie fields (``<name>=<value>``). The corpus numbers
    them "in order of first appearance, everywhere in the case"; Flagger's first appearance is a
    VirtualService write holding both cookies, canary cookie first. So the order is: the first step
    a value appears in, then the canary cookie (``cookieName``) before the others, so that one
    write or two, status first or routes first, number the values alike.
    """

    FIELDS = ("sessionAffinityCookie", "primarySessionAffinityCookie",
              "previousSessionAffinityCookie")

    def __init__(self) -> None:
        self._names: dict[str, str] = {}

    def see(self, statuses: Iterable[Mapping[str, Any]], *, canary_cookie: str = "") -> None:
        """Registers the values of one step's Canary statuses (call in step order)."""
        found: list[tuple[int, str]] = []
        for status in statuses:
            for field in self.FIELDS:
                cookie = str(status.get(field) or "")
                name, sep, value = cookie.partition("=")
                if sep and value and not value.startswith("<random-") and value not in self._names:
                    found.append((0 if name == canary_cookie else 1, value))
        for _, value in sorted(found, key=lambda item: item[0]):
            if value not in self._names:
                self._names[value] = f"<random-{len(self._names) + 1}>"

    @property
    def replacements(self) -> dict[str, str]:
        return dict(self._names)


def replace_strings(value: Any, replacements: Mapping[str, str]) -> Any:
    """``value`` with every occurrence of each key inside its strings replaced (a copy)."""
    if not replacements:
        return value
    if isinstance(value, str):
        for old, new in replacements.items():
            value = value.replace(old, new)
        return value
    if isinstance(value, dict):
        return {k: replace_strings(v, replacements) for k, v in value.items()}
    if isinstance(value, list):
        return [replace_strings(v, replacements) for v in value]
    return value
