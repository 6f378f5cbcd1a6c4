"""The public plugin API: the one module a router, observer, metrics provider or notifier imports.

flaggerpy's plugin families are entry-point groups (``flaggerpy.routers``,
``flaggerpy.observers``, ``flaggerpy.metrics``, ``flaggerpy.notifiers``; see
:mod:`flaggerpy.plugins`). Everything a plugin is given, returns, raises or builds on is
re-exported here under one flat namespace, as httpx's ``__init__`` is a flat namespace over its
private modules::

    from flaggerpy import sdk

    class MeshyRouter:
        capabilities = sdk.Capabilities(mirroring=False)

        def __init__(self, *, ctx: sdk.ProviderContext, variant: str = "") -> None: ...
        async def set_routes(self, canary: sdk.Canary, weights: sdk.Weights) -> None: ...

    _: type[sdk.Router] = MeshyRouter

What is here, by family (docs/plugins.md walks through one example package of each):

- routers: :class:`Router` and :class:`RouterFactory`, :class:`KubernetesRouter`,
  :class:`ProviderContext` (what a factory is handed), :class:`Weights`, :class:`Capabilities`
  (what a router declares, with :class:`Traffic` and :class:`TargetKind`), :func:`canary_owner`,
  :data:`TOOLKIT_ANNOTATIONS`;
- session affinity, the cookie state machine every router shares: :class:`SessionCookies`,
  :func:`next_session_cookies`, :func:`set_cookie_value`, :func:`cookie_regex`, and
  :func:`read_cookies` / :func:`store_cookies` through the object store;
- observers: :class:`Observer`, :class:`ObserverFactory`, the shared base
  :class:`PrometheusObserver` with the query shapes :func:`ratio` and :func:`p99` (and
  :func:`request_count`, the requests ``minSamples`` counts), Flagger's
  "http" observer :class:`HttpObserver` for providers with no telemetry of their own, and the
  Go-template renderer (:func:`render`, :class:`QueryRenderer`, :class:`TemplatingError`) that
  fills Flagger's ``{{ namespace }}``, ``{{ target }}``, ``{{ interval }}``, ...;
- metrics providers: :class:`MetricsProvider`, :class:`MetricsProviderFactory`,
  :class:`MetricTemplateModel`, the optional :class:`SampleProvider` (every value over a
  window, what a ``compare`` metric needs), and :class:`ApiServerAccess` (the controller's
  own API server and credentials, given to a factory that declares a ``kube`` keyword);
- notifiers: :class:`Notifier`, :class:`NotifierFactory`, :class:`Message`, :class:`Field`,
  :class:`Severity`;
- the one object store every plugin reads and writes Kubernetes objects through
  (:class:`ObjectStore`: cache reads, our writes seen at once, writes only on a change,
  owner references, conflict retries), what it takes and returns (:class:`Resource`,
  :data:`Build`, :class:`Applied`, :class:`OperationResult`, :class:`ObjectKey`,
  :data:`JsonObject`), its owner-reference helpers and the core resources plugins touch;
- the models a plugin receives (:class:`Canary`) and the controller's :class:`Settings`;
- the errors plugins raise (:class:`RouterError`, the :class:`MetricsError` family,
  :class:`NotifierError`, :class:`PluginError`, :class:`TerminalError`) and the API errors
  they may meet (:class:`KubeError`, :class:`NotFoundError`, :class:`ConflictError`, and
  :class:`WriteFencedError`, which must pass through a plugin unchanged).

The names are imported one by one rather than with ``*``: the internal modules export more
than a plugin should reach for (the raw ``KubeClient``, the engine-side ``capabilities`` reader
and registries), and ``tests/unit/test_sdk_exported_members.py`` pins :data:`__all__`, so the
surface grows only on purpose.

``__module__`` is left alone (httpx rewrites it to ``"httpx"``; we do not): the classes are
declared with postponed annotations, which pydantic, dataclasses and ``typing.get_type_hints``
resolve in the module named by ``__module__``, and the engine imports the same objects from
their home modules. ``repr()`` and tracebacks therefore name the home module
(``flaggerpy.routing.Weights``); ``flaggerpy.sdk.Weights`` is the same object, and the
spelling plugins should use.

Importing this module imports no plugin and nothing of the engine (``flaggerpy.canary``) or
the process; ``lint-imports`` keeps it that way.
"""

from __future__ import annotations

from flaggerpy.affinity import (
    COOKIE_HEADER,
    SET_COOKIE_HEADER,
    SessionCookies,
    cookie_regex,
    next_session_cookies,
    read_cookies,
    set_cookie_value,
    store_cookies,
)
from flaggerpy.analysis import (
    MetricsProvider,
    MetricsProviderFactory,
    MetricTemplateModel,
    Observer,
    ObserverFactory,
    SampleProvider,
)
from flaggerpy.errors import (
    FlaggerError,
    MetricsError,
    MultipleValuesError,
    NotifierError,
    NoValuesFoundError,
    PluginError,
    ProviderOfflineError,
    RouterError,
    TerminalError,
)
from flaggerpy.kube import (
    CANARIES,
    CONFIGMAPS,
    SECRETS,
    SERVICES,
    Applied,
    Build,
    ConflictError,
    JsonObject,
    KubeError,
    NotFoundError,
    ObjectKey,
    ObjectStore,
    OperationResult,
    Resource,
    WriteFencedError,
    controller_reference,
    is_controlled_by,
    merge_owner_reference,
    with_spec,
)
from flaggerpy.kube.config import ApiServerAccess
from flaggerpy.models.canary import Canary
from flaggerpy.notifying import Field, Message, Notifier, NotifierFactory, Severity
from flaggerpy.observing import (
    HttpObserver,
    PrometheusObserver,
    QueryRenderer,
    p99,
    ratio,
    request_count,
)
from flaggerpy.routing import (
    TOOLKIT_ANNOTATIONS,
    TOTAL_WEIGHT,
    WORKLOAD_TARGETS,
    Capabilities,
    KubernetesRouter,
    ProviderContext,
    Router,
    RouterFactory,
    TargetKind,
    Traffic,
    Weights,
    canary_owner,
)
from flaggerpy.settings import Settings
from flaggerpy.templating import TemplatingError, render

__all__ = [
    "CANARIES",
    "CONFIGMAPS",
    "COOKIE_HEADER",
    "SECRETS",
    "SERVICES",
    "SET_COOKIE_HEADER",
    "TOOLKIT_ANNOTATIONS",
    "TOTAL_WEIGHT",
    "WORKLOAD_TARGETS",
    "ApiServerAccess",
    "Applied",
    "Build",
    "Canary",
    "Capabilities",
    "ConflictError",
    "Field",
    "FlaggerError",
    "HttpObserver",
    "JsonObject",
    "KubeError",
    "KubernetesRouter",
    "Message",
    "MetricTemplateModel",
    "MetricsError",
    "MetricsProvider",
    "MetricsProviderFactory",
    "MultipleValuesError",
    "NoValuesFoundError",
    "NotFoundError",
    "Notifier",
    "NotifierError",
    "NotifierFactory",
    "ObjectKey",
    "ObjectStore",
    "Observer",
    "ObserverFactory",
    "OperationResult",
    "PluginError",
    "PrometheusObserver",
    "ProviderContext",
    "ProviderOfflineError",
    "QueryRenderer",
    "Resource",
    "Router",
    "RouterError",
    "RouterFactory",
    "SampleProvider",
    "SessionCookies",
    "Settings",
    "Severity",
    "TargetKind",
    "TemplatingError",
    "TerminalError",
    "Traffic",
    "Weights",
    "WriteFencedError",
    "canary_owner",
    "controller_reference",
    "cookie_regex",
    "is_controlled_by",
    "merge_owner_reference",
    "next_session_cookies",
    "p99",
    "ratio",
    "read_cookies",
    "render",
    "request_count",
    "set_cookie_value",
    "store_cookies",
    "with_spec",
]
