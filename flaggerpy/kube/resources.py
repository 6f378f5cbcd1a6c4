"""Resource descriptors: which URL serves a kind of object.

The client works on plain JSON objects, so the only thing it needs to know
about a type is where it lives: group, version, plural and whether it is
namespaced. One small value type covers core types, ``apps/v1``, Flagger's
own CRDs and every mesh's CRDs alike, and needs no discovery round trip.

The well-known resources flaggerpy itself reads and writes are listed at the
bottom; a router module declares the resources of its mesh next to its code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote


@dataclass(frozen=True, slots=True)
class Resource:
    """One API resource, e.g. ``Resource("apps", "v1", "deployments", "Deployment")``.

    ``group`` is ``""`` for the core (legacy) group.
    """

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        """The ``apiVersion`` of the objects: ``v1`` or ``group/version``."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def base_path(self) -> str:
        """The API prefix the resource hangs under: ``/api/v1`` or ``/apis/<group>/<version>``."""
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def path(
            self,
            *,
            namespace: str | None = None,
            name: str | None = None,
            subresource: str | None = None,
    ) -> str:
        """The URL path for a collection (no ``name``) or one object.

        A namespaced resource without a namespace addresses all namespaces,
        which is valid for list and watch only. ``namespace`` is ignored for a
        cluster-scoped resource so callers may pass an object's (empty) namespace blindly.
        """
        parts = [self.base_path]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{quote(namespace, safe='')}")
        parts.append(self.plural)
        if name is not None:
            if not name:
                raise ValueError(f"{self}: an empty name cannot be addressed")
            parts.append(quote(name, safe=""))
            if subresource:
                parts.append(subresource)
        return "/".join(parts)

    def stamp(self, body: dict[str, Any]) -> dict[str, Any]:
        """Fills ``apiVersion`` and ``kind`` when missing, as server-side apply requires."""
        body.setdefault("apiVersion", self.api_version)
        body.setdefault("kind", self.kind)
        return body

    def __str__(self) -> str:
        return f"{self.plural}.{self.version}.{self.group}" if self.group else f"{self.plural}.v1"


# Core and built-in types flaggerpy reads or writes.
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
PODS = Resource("", "v1", "pods", "Pod")
SERVICES = Resource("", "v1", "services", "Service")
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
SECRETS = Resource("", "v1", "secrets", "Secret")
EVENTS = Resource("", "v1", "events", "Event")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
DAEMONSETS = Resource("apps", "v1", "daemonsets", "DaemonSet")
HORIZONTAL_POD_AUTOSCALERS = Resource(
    "autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler")
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
SCALED_OBJECTS = Resource("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject")
"""KEDA's; its CRD is only installed where KEDA is."""
CUSTOM_RESOURCE_DEFINITIONS = Resource(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
    namespaced=False)

# Flagger's own API.
CANARIES = Resource("flagger.app", "v1beta1", "canaries", "Canary")
METRIC_TEMPLATES = Resource("flagger.app", "v1beta1", "metrictemplates", "MetricTemplate")
ALERT_PROVIDERS = Resource("flagger.app", "v1beta1", "alertproviders", "AlertProvider")

# flaggerpy's own additions (see docs/steering.md).
CANARY_COMMANDS = Resource("flaggerpy.dev", "v1alpha1", "canarycommands", "CanaryCommand")
