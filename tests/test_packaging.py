"""Packaging: declared plugins load and keep their contract; the folder mapping does not leak.

These tests read pyproject.toml, so a plugin declared there but missing from
the installed metadata (an editable install not refreshed after editing
pyproject) is reported with the fix, and a subpackage left out of
``[tool.setuptools] packages`` (which still imports in development but is
missing from the wheel, style.md §8) is caught here rather than in production.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from flaggerpy import plugins

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
REGISTRIES = {r.group: r for r in (plugins.routers, plugins.metrics, plugins.notifiers,
                                   plugins.observers)}
FAMILIES = {"flaggerpy.providers": "providers", "flaggerpy.metrics": "metrics",
            "flaggerpy.notifiers": "notifiers"}


def declared_entry_points() -> dict[str, dict[str, str]]:
    groups: dict[str, dict[str, str]] = PYPROJECT["project"].get("entry-points", {})
    return {group: names for group, names in groups.items() if group.startswith("flaggerpy.")}


def entry_point_params() -> list[Any]:
    params = [
        pytest.param(group, name, value, id=f"{group}:{name}")
        for group, names in sorted(declared_entry_points().items())
        for name, value in sorted(names.items())
    ]
    return params or [
        pytest.param(None, None, None, id="none-declared",
                     marks=pytest.mark.skip(reason="no plugin entry points declared yet")),
    ]


def test_every_declared_group_has_a_registry() -> None:
    assert set(declared_entry_points()) <= set(REGISTRIES), "a group nothing reads"


@pytest.mark.parametrize(("group", "name", "value"), entry_point_params())
def test_declared_entry_point_is_installed_loads_and_keeps_its_contract(
        group: str, name: str, value: str,
) -> None:
    assert ":" not in name, "entry point names never contain ':' (it starts the variant)"
    installed = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=group)}
    assert installed.get(name) == value, (
        f"{group}:{name} is declared in pyproject.toml but not installed as {value!r};"
        " re-run `pip install -e '.[test,lint]'`"
    )
    registry = REGISTRIES[group]
    registry.refresh()
    factory = registry.load(name)  # imports it and checks the family's Protocol
    assert callable(factory)


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    setuptools = PYPROJECT["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    for package, folder in setuptools["package-dir"].items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            relative = init.parent.relative_to(ROOT / folder)
            dotted = ".".join([package, *relative.parts])
            if "__pycache__" in relative.parts:
                continue
            assert dotted in listed, f"{dotted} would be missing from the wheel"


def test_families_import_under_flaggerpy() -> None:
    for package, folder in FAMILIES.items():
        module = importlib.import_module(package)
        assert module.__file__ is not None
        assert Path(module.__file__).parent == ROOT / folder


def test_no_top_level_aliases() -> None:
    # Import every family and every declared plugin first, so anything that
    # reaches a plugin through `import providers` (two copies of each class)
    # would show up here.
    for package in FAMILIES:
        importlib.import_module(package)
    for group, names in declared_entry_points().items():
        for name in names:
            if group in REGISTRIES:
                REGISTRIES[group].load(name)
    leaked = {m for m in sys.modules if m.split(".")[0] in FAMILIES.values()}
    assert not leaked, f"imported through the top-level folder name: {sorted(leaked)}"
