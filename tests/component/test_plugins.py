"""The plugin registry, against real entry points read by importlib.metadata.

Each test installs a throw-away distribution into a temporary folder on
sys.path (a ``*.dist-info`` with ``entry_points.txt`` and the plugin
modules), exactly what pip would leave behind, so laziness is proven on the
real lookup path.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

import pytest
from structlog.testing import capture_logs

from flaggerpy import plugins
from flaggerpy.errors import PluginError, UnknownProviderError
from flaggerpy.plugins import Plugin, Registry

GROUP = "flaggerpy.tests.greeters"


@runtime_checkable
class Greeter(Protocol):
    def greet(self) -> str: ...


class NotRuntimeCheckable(Protocol):
    def greet(self) -> str: ...


MODULES = {
    "fp_alpha": """
        class Alpha:
            def __init__(self, *, variant=""):
                self.variant = variant
            def greet(self):
                return "alpha " + self.variant
    """,
    "fp_beta": """
        class Beta:
            def greet(self):
                return "beta"
    """,
    "fp_broken": """
        raise ImportError("a dependency is missing")
    """,
    "fp_rude": """
        class Rude:
            def shout(self):
                return "!"
    """,
    "fp_factory": """
        def make_greeter(*, variant=""):
            return object()
    """,
}

ENTRY_POINTS = {
    "alpha": "fp_alpha:Alpha",
    "beta": "fp_beta:Beta",
    "broken": "fp_broken:Broken",
    "rude": "fp_rude:Rude",
    "factory": "fp_factory:make_greeter",
    "bad:name": "fp_beta:Beta",
}


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fake distribution declaring entry points in GROUP, on sys.path for this test only."""
    for module, source in MODULES.items():
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    dist_info = tmp_path / "flaggerpy_test_plugins-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: flaggerpy-test-plugins\nVersion: 1.0\n"
    )
    lines = [f"[{GROUP}]"] + [f"{name} = {value}" for name, value in ENTRY_POINTS.items()]
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for module in MODULES:
        sys.modules.pop(module, None)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param("istio", ("istio", ""), id="plain"),
        pytest.param("gatewayapi:v1beta1", ("gatewayapi", "v1beta1"), id="version"),
        pytest.param("smi:v1alpha3:linkerd", ("smi", "v1alpha3:linkerd"), id="version-and-mesh"),
        pytest.param("appmesh:v1beta2", ("appmesh", "v1beta2"), id="appmesh"),
        pytest.param("istio:service", ("istio", "service"), id="observer-suffix"),
        pytest.param("", ("", ""), id="empty"),
    ],
)
def test_resolve_parses_flagger_provider_strings(spec: str, expected: tuple[str, str]) -> None:
    assert Registry.resolve(spec) == expected


@pytest.mark.usefixtures("installed")
def test_names_are_listed_without_importing_anything() -> None:
    registry: Registry[object] = Registry(GROUP)
    assert registry.names() == ["alpha", "beta", "broken", "factory", "rude"]
    assert not any(module in sys.modules for module in MODULES)


@pytest.mark.usefixtures("installed")
def test_get_loads_only_the_plugin_asked_for() -> None:
    registry: Registry[Callable[..., Greeter]] = Registry(GROUP, protocol=Greeter)
    plugin = registry.get("alpha:v1")
    assert (plugin.name, plugin.variant, plugin.fallback_from) == ("alpha", "v1", None)
    assert plugin.factory(variant=plugin.variant).greet() == "alpha v1"
    assert "fp_alpha" in sys.modules
    assert not any(m in sys.modules for m in ("fp_beta", "fp_broken", "fp_rude", "fp_factory"))
    assert registry.get("alpha") == Plugin(name="alpha", variant="", factory=plugin.factory)


@pytest.mark.usefixtures("installed")
def test_a_broken_plugin_breaks_only_itself() -> None:
    registry: Registry[object] = Registry(GROUP, protocol=Greeter)
    with pytest.raises(PluginError, match=r"'broken'.*failed to load") as caught:
        registry.load("broken")
    assert isinstance(caught.value.__cause__, ImportError)
    assert registry.get("beta").name == "beta"


@pytest.mark.usefixtures("installed")
def test_a_plugin_that_breaks_its_contract_is_refused_at_load_time() -> None:
    registry: Registry[object] = Registry(GROUP, protocol=Greeter)
    with pytest.raises(PluginError, match=r"'rude'.*does not implement Greeter; missing: greet"):
        registry.load("rude")


@pytest.mark.usefixtures("installed")
def test_factory_functions_are_accepted_as_they_are() -> None:
    registry: Registry[object] = Registry(GROUP, protocol=Greeter)
    assert callable(registry.load("factory"))


@pytest.mark.usefixtures("installed")
def test_unknown_names_list_what_is_installed() -> None:
    registry: Registry[object] = Registry(GROUP)
    with pytest.raises(UnknownProviderError) as caught:
        registry.get("gamma:v2")
    assert caught.value.group == GROUP
    assert caught.value.name == "gamma"
    assert caught.value.available == ["alpha", "beta", "broken", "factory", "rude"]


@pytest.mark.usefixtures("installed")
def test_entry_point_names_with_a_colon_are_skipped_loudly() -> None:
    registry: Registry[object] = Registry(GROUP)
    with capture_logs() as logs:
        names = registry.names()
    assert "bad:name" not in names
    assert [e["plugin"] for e in logs if e["event"] == "plugin_name_invalid"] == ["bad:name"]


@pytest.mark.usefixtures("installed")
def test_registered_plugins_win_over_entry_points() -> None:
    class Override:
        def greet(self) -> str:
            return "override"

    registry: Registry[type[Greeter]] = Registry(GROUP, protocol=Greeter)
    registry.register("alpha", Override)
    registry.register("delta", Override)
    assert registry.get("alpha").factory is Override
    assert "fp_alpha" not in sys.modules
    assert "delta" in registry.names()
    registry.unregister("alpha")
    assert registry.get("alpha").factory is not Override


def test_register_checks_name_and_contract() -> None:
    class Rude:
        def shout(self) -> str:
            return "!"

    registry: Registry[object] = Registry(GROUP, protocol=Greeter)
    with pytest.raises(ValueError, match="':'"):
        registry.register("smi:v1alpha3", object)
    with pytest.raises(PluginError, match="does not implement Greeter"):
        registry.register("rude", Rude)


@pytest.mark.usefixtures("installed")
def test_fallback_is_explicit_and_logged_once() -> None:
    registry: Registry[object] = Registry(GROUP, fallback="beta")
    with capture_logs() as logs:
        first = registry.get("gamma:v2")
        second = registry.get("gamma:v2")
    assert first == second
    assert (first.name, first.variant, first.fallback_from) == ("beta", "", "gamma:v2")
    [warning] = [e for e in logs if e["event"] == "provider_unknown_using_fallback"]
    assert warning["log_level"] == "warning"
    assert (warning["provider"], warning["fallback"]) == ("gamma:v2", "beta")
    assert registry.get("alpha").fallback_from is None


@pytest.mark.usefixtures("installed")
def test_a_missing_fallback_is_still_an_error() -> None:
    registry: Registry[object] = Registry(GROUP, fallback="nowhere")
    with pytest.raises(UnknownProviderError, match="'gamma'"):
        registry.get("gamma")


@pytest.mark.usefixtures("installed")
def test_contract_named_by_string_is_resolved_on_first_load() -> None:
    registry: Registry[object] = Registry(GROUP, protocol=f"{__name__}:Greeter")
    registry.load("alpha")
    with pytest.raises(PluginError, match="does not implement Greeter"):
        registry.load("rude")


@pytest.mark.usefixtures("installed")
def test_contract_problems_are_plugin_errors() -> None:
    with pytest.raises(PluginError, match="cannot be imported"):
        Registry(GROUP, protocol="flaggerpy.nowhere:Router").load("alpha")
    with pytest.raises(PluginError, match="not runtime_checkable"):
        Registry(GROUP, protocol=NotRuntimeCheckable).load("alpha")


@pytest.mark.usefixtures("installed")
def test_refresh_sees_newly_installed_plugins(installed: Path) -> None:
    registry: Registry[object] = Registry(GROUP)
    assert "gamma" not in registry.names()
    (installed / "fp_gamma.py").write_text("class Gamma:\n    pass\n")
    entry_points = installed / "flaggerpy_test_plugins-1.0.dist-info" / "entry_points.txt"
    entry_points.write_text(entry_points.read_text() + "gamma = fp_gamma:Gamma\n")
    assert "gamma" not in registry.names(), "the scan is done once"
    registry.refresh()
    assert "gamma" in registry.names()
    sys.modules.pop("fp_gamma", None)


def test_module_registries_cover_the_four_families() -> None:
    assert [r.group for r in (plugins.routers, plugins.metrics, plugins.notifiers,
                              plugins.observers)] == [
        "flaggerpy.routers", "flaggerpy.metrics", "flaggerpy.notifiers", "flaggerpy.observers"
    ]
    # An unknown router or metrics provider fails its Canary instead of Flagger's silent
    # switch to Istio / Prometheus; only the builtin-metric observer keeps Istio's queries.
    assert plugins.routers.fallback is None
    assert plugins.metrics.fallback is None
    assert plugins.notifiers.fallback is None
    assert plugins.observers.fallback == "istio"


def test_importing_the_registry_imports_no_plugin() -> None:
    code = textwrap.dedent("""
        import sys
        import flaggerpy.plugins
        families = ("providers", "metrics", "notifiers")
        loaded = sorted(
            m for m in sys.modules
            if m.split(".")[0] in families
            or any(m == f"flaggerpy.{f}" or m.startswith(f"flaggerpy.{f}.") for f in families)
            or m in ("flaggerpy.routing", "flaggerpy.analysis", "flaggerpy.notifying")
        )
        print(",".join(loaded))
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
        cwd=Path(__file__).parent,  # not the project root, where `import providers` would work
    )
    assert result.stdout.strip() == ""
