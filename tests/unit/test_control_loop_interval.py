"""``-control-loop-interval`` is accepted, validated and has no effect: the help and docs say so.

Flagger's scheduler ticks every ``-control-loop-interval`` to start, re-time or stop each canary's
job (spec §2.1). flaggerpy has no such loop: a Canary's add or spec change enqueues it at once and
each reconcile schedules the next one at the analysis interval, so there is nothing to pace. If a
module starts reading the setting, these tests fail so the help text and docs are changed with it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from flaggerpy.settings import ConfigError, Settings, iter_flags

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = ("flaggerpy", "providers", "metrics", "notifiers")


def readers_of(attribute: str) -> list[str]:
    """``file:line`` of every ``x.<attribute>`` read outside settings.py."""
    found = []
    for folder in PACKAGE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == ROOT / "flaggerpy" / "settings.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Attribute) and node.attr == attribute:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_the_flag_is_still_parsed_and_validated() -> None:
    assert Settings.load({"control-loop-interval": "2s"}).controller.control_loop_interval == 2.0
    with pytest.raises(ConfigError, match="-control-loop-interval"):
        Settings.load({"control-loop-interval": "0s"})


def test_nothing_reads_it() -> None:
    assert readers_of("control_loop_interval") == []
    assert readers_of("min_analysis_interval"), "the scan finds a setting that is read"


def test_the_help_and_docs_say_it_has_no_effect() -> None:
    [spec] = [s for s in iter_flags() if s.name == "control-loop-interval"]
    assert "no effect" in (spec.field.description or "")
    compatibility = (ROOT / "docs" / "compatibility.md").read_text()
    [line] = [ln for ln in compatibility.splitlines() if "`-control-loop-interval`" in ln]
    assert "no effect" in line
