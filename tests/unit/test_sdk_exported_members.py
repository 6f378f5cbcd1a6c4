"""The plugin SDK's surface is pinned: what ``flaggerpy.sdk`` exports changes only on purpose.

As httpx's ``tests/test_exported_members.py`` does for its flat namespace: ``__all__`` is the
sorted list of the module's public names (nothing imported and forgotten, nothing listed and
missing), every name resolves, and the list itself is written down here, so adding to or
removing from the API a plugin is written against shows up in review as a change to this file.
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from flaggerpy import sdk

EXPORTED = [
    "CANARIES", "CONFIGMAPS", "COOKIE_HEADER", "SECRETS", "SERVICES", "SET_COOKIE_HEADER",
    "TOOLKIT_ANNOTATIONS", "TOTAL_WEIGHT", "WORKLOAD_TARGETS",
    "ApiServerAccess",
    "Applied", "Build", "Canary", "Capabilities", "ConflictError", "Field", "FlaggerError",
    "HttpObserver",
    "JsonObject", "KubeError", "KubernetesRouter", "Message", "MetricTemplateModel",
    "MetricsError", "MetricsProvider", "MetricsProviderFactory", "MultipleValuesError",
    "NoValuesFoundError", "NotFoundError", "Notifier", "NotifierError", "NotifierFactory",
    "ObjectKey", "ObjectStore", "Observer", "ObserverFactory", "OperationResult", "PluginError",
    "PrometheusObserver", "ProviderContext", "ProviderOfflineError", "QueryRenderer",
    "Resource", "Router", "RouterError", "RouterFactory", "SampleProvider", "SessionCookies",
    "Settings",
    "Severity", "TargetKind",
    "TemplatingError", "TerminalError", "Traffic", "Weights", "WriteFencedError",
    "canary_owner", "controller_reference", "cookie_regex", "is_controlled_by",
    "merge_owner_reference", "next_session_cookies", "p99", "ratio", "read_cookies", "render",
    "request_count",
    "set_cookie_value", "store_cookies", "with_spec",
]


def isort_style(name: str) -> tuple[int, str]:
    """Constants, then classes, then functions: the order ruff (RUF022) keeps ``__all__`` in."""
    if name.isupper():
        return 0, name
    return (1 if name[:1].isupper() else 2), name


def public_names() -> list[str]:
    # ``from __future__ import annotations`` binds ``annotations`` in every module that says it.
    return [
        name for name, value in vars(sdk).items()
        if not name.startswith("_") and value is not annotations
    ]


def test_all_is_every_public_name_sorted() -> None:
    assert sdk.__all__ == sorted(public_names(), key=isort_style)


def test_the_surface_is_the_pinned_one() -> None:
    assert sdk.__all__ == sorted(EXPORTED, key=isort_style)


@pytest.mark.parametrize("name", sdk.__all__)
def test_every_name_resolves_to_its_home_object(name: str) -> None:
    value = getattr(sdk, name)
    assert value is not None
    if inspect.isclass(value) or inspect.isfunction(value):
        # __module__ is left alone (see the module docstring): the object is found again
        # under the name its home module gives it, as pickle and get_type_hints look it up.
        assert value.__module__ != "flaggerpy.sdk"
        home = sys.modules[value.__module__]
        assert getattr(home, value.__qualname__) is value


def test_the_factory_protocols_are_the_ones_the_engine_calls() -> None:
    """One definition each: the engine types the loaded factories with the SDK's protocols."""
    from flaggerpy.canary import alerting, metrics_analysis

    assert metrics_analysis.MetricsProviderFactory is sdk.MetricsProviderFactory
    assert metrics_analysis.ObserverFactory is sdk.ObserverFactory
    assert alerting.NotifierFactory is sdk.NotifierFactory


def test_importing_the_sdk_imports_no_engine_and_no_plugin() -> None:
    probe = (
        "import sys, flaggerpy.sdk\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith(("
        "'flaggerpy.canary', 'flaggerpy.runtime', 'flaggerpy.cli', 'flaggerpy.providers', "
        "'flaggerpy.metrics', 'flaggerpy.notifiers', 'flaggerpy.testing')))))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stdout.split() == []
