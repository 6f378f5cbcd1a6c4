"""The Kubernetes API, as flaggerpy sees it: the only package that imports kubernetes-asyncio.

Import the module and qualify names (``from flaggerpy import kube`` then
``kube.KubeClient``, ``kube.NotFoundError``, ``kube.DEPLOYMENTS``): everything
callers need is re-exported here, and no library type appears in a signature.
"""

from __future__ import annotations

from flaggerpy.kube.client import (
    FIELD_MANAGER,
    KubeClient,
    Mutate,
    ObjectList,
    ObjectReader,
    PatchType,
    PropagationPolicy,
)
from flaggerpy.kube.config import default_user_agent
from flaggerpy.kube.errors import (
    AlreadyExistsError,
    BadRequestError,
    Cause,
    ConflictError,
    ForbiddenError,
    GoneError,
    KubeError,
    NotFoundError,
    ServerError,
    TooManyRequestsError,
    TransportError,
    UnauthorizedError,
    UnprocessableError,
    WriteFencedError,
    ignore_not_found,
)
from flaggerpy.kube.objects import JsonObject, OperationResult, key_of, resource_version
from flaggerpy.kube.resources import (
    ALERT_PROVIDERS,
    CANARIES,
    CONFIGMAPS,
    CUSTOM_RESOURCE_DEFINITIONS,
    DAEMONSETS,
    DEPLOYMENTS,
    EVENTS,
    HORIZONTAL_POD_AUTOSCALERS,
    LEASES,
    METRIC_TEMPLATES,
    NAMESPACES,
    PODS,
    SCALED_OBJECTS,
    SECRETS,
    SERVICES,
    Resource,
)
from flaggerpy.kube.watch import EventType, WatchEvent

__all__ = [
    "ALERT_PROVIDERS",
    "CANARIES",
    "CONFIGMAPS",
    "CUSTOM_RESOURCE_DEFINITIONS",
    "DAEMONSETS",
    "DEPLOYMENTS",
    "EVENTS",
    "FIELD_MANAGER",
    "HORIZONTAL_POD_AUTOSCALERS",
    "LEASES",
    "METRIC_TEMPLATES",
    "NAMESPACES",
    "PODS",
    "SCALED_OBJECTS",
    "SECRETS",
    "SERVICES",
    "AlreadyExistsError",
    "BadRequestError",
    "Cause",
    "ConflictError",
    "EventType",
    "ForbiddenError",
    "GoneError",
    "JsonObject",
    "KubeClient",
    "KubeError",
    "Mutate",
    "NotFoundError",
    "ObjectList",
    "ObjectReader",
    "OperationResult",
    "PatchType",
    "PropagationPolicy",
    "Resource",
    "ServerError",
    "TooManyRequestsError",
    "TransportError",
    "UnauthorizedError",
    "UnprocessableError",
    "WatchEvent",
    "WriteFencedError",
    "default_user_agent",
    "ignore_not_found",
    "key_of",
    "resource_version",
]
