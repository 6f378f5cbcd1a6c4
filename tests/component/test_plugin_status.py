"""The Ready condition of MetricTemplates and AlertProviders: what it says, and when it changes.

The reconciler against the real API server is in tests/integration/test_plugin_status.py; here
the decision itself, with registries holding real entry points of a fake distribution.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flaggerpy.canary import plugin_status
from flaggerpy.canary.plugin_status import Readiness, readiness, ready_patch
from flaggerpy.plugins import Registry

GROUP = "flaggerpy.tests.plugin_status"


@pytest.fixture
def kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[plugin_status.TypedKind]:
    """The MetricTemplate kind over a registry with one good and one broken entry point."""
    (tmp_path / "fp_status_good.py").write_text(
        "class Provider:\n"
        "    async def run_query(self, query): return 1.0\n"
        "    async def is_online(self): return True\n"
        "    async def aclose(self): pass\n")
    dist_info = tmp_path / "flaggerpy_status_plugins-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: flaggerpy-status-plugins\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        f"[{GROUP}]\nvictoriametrics = fp_status_good:Provider\n"
        "honeycomb = fp_status_missing:Provider\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry: Registry[Any] = Registry(GROUP, protocol="flaggerpy.analysis:MetricsProvider")
    yield dataclasses.replace(plugin_status.METRIC_TEMPLATES, registry=registry)
    sys.modules.pop("fp_status_good", None)


def test_an_installed_type_is_ready(kind: plugin_status.TypedKind) -> None:
    assert readiness("victoriametrics", kind=kind) == Readiness(
        "True", "ProviderInstalled", 'metrics provider type "victoriametrics" is installed')


def test_an_uninstalled_type_lists_the_installed_names(kind: plugin_status.TypedKind) -> None:
    assert readiness("datadog", kind=kind) == Readiness(
        "False", "ProviderNotInstalled",
        'metrics provider type "datadog" is not installed; installed: honeycomb, victoriametrics')


def test_a_type_whose_plugin_does_not_import_says_so(kind: plugin_status.TypedKind) -> None:
    status, reason, message = readiness("honeycomb", kind=kind)
    assert (status, reason) == ("False", "ProviderNotLoadable")
    assert message.startswith('metrics provider type "honeycomb" cannot be used: ')
    assert "fp_status_missing" in message


def obj(*conditions: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "vm", "namespace": "test", "resourceVersion": "42"},
            "status": {"conditions": list(conditions)}}


WANTED = Readiness("False", "ProviderNotInstalled", 'metrics provider type "x" is not installed')
OTHER = {"type": "Reviewed", "status": "True", "reason": "ByHand", "message": "ok"}


def test_the_first_condition_is_added_beside_others_with_a_precondition() -> None:
    patch = ready_patch(obj(OTHER), WANTED)
    assert patch is not None
    assert patch["metadata"] == {"resourceVersion": "42"}
    other, ready = patch["status"]["conditions"]
    assert other == OTHER
    assert (ready["type"], ready["status"], ready["reason"], ready["message"]) == (
        "Ready", *WANTED)
    assert ready["lastTransitionTime"] == ready["lastUpdateTime"]


def test_an_unchanged_condition_is_not_written() -> None:
    current = {"type": "Ready", "status": WANTED.status, "reason": WANTED.reason,
               "message": WANTED.message, "lastUpdateTime": "2026-01-01T00:00:00Z",
               "lastTransitionTime": "2026-01-01T00:00:00Z"}
    assert ready_patch(obj(OTHER, current), WANTED) is None


def test_the_transition_time_moves_only_with_the_status() -> None:
    old = {"type": "Ready", "status": "False", "reason": "ProviderNotInstalled",
           "message": "older words", "lastUpdateTime": "2026-01-01T00:00:00Z",
           "lastTransitionTime": "2026-01-01T00:00:00Z"}
    reworded = ready_patch(obj(old), WANTED)
    assert reworded is not None
    [condition] = reworded["status"]["conditions"]
    assert condition["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert condition["lastUpdateTime"] > "2026-01-01T00:00:00Z"

    flipped = ready_patch(obj(old), Readiness("True", "ProviderInstalled", "installed"))
    assert flipped is not None
    [condition] = flipped["status"]["conditions"]
    assert condition["lastTransitionTime"] > "2026-01-01T00:00:00Z"


def test_an_edited_spec_gets_ready_again_with_its_generation() -> None:
    current = {"type": "Ready", "status": WANTED.status, "reason": WANTED.reason,
               "message": WANTED.message, "lastUpdateTime": "2026-01-01T00:00:00Z",
               "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}
    edited = obj(OTHER, current)
    edited["metadata"]["generation"] = 1
    assert ready_patch(edited, WANTED) is None
    edited["metadata"]["generation"] = 2
    patch = ready_patch(edited, WANTED)
    assert patch is not None
    _other, ready = patch["status"]["conditions"]
    assert ready["observedGeneration"] == 2
    assert ready["lastTransitionTime"] == "2026-01-01T00:00:00Z"
