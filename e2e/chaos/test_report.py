"""The chaos report's judgement, without a cluster: what counts as lost, duplicated, stuck."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from e2e.chaos.outcome import AuditWindow, Outcome, primary_writes
from e2e.chaos.report import main, summarise


def outcome(**changes: object) -> Outcome:
    base: dict[str, object] = {
        "phase": "Succeeded", "routes": {"podinfo-primary": 100, "podinfo-canary": 0},
        "primary_image": "podinfo:6.0.1", "canary_replicas": 0, "primary_writes": 2}
    return Outcome(**{**base, **changes})  # type: ignore[arg-type]


def test_an_equal_end_has_no_differences_and_each_field_is_named_when_it_differs() -> None:
    assert outcome().differences(outcome()) == []
    found = outcome(phase="Failed", primary_writes=3).differences(outcome())
    assert found == ["phase: 'Failed', undisturbed 'Succeeded'",
                     "primary_writes: 3, undisturbed 2"]
    asked = outcome(gates_asked_after_passing={"/confirm-promotion": 1})
    assert asked.differences(outcome()) == [
        "gate /confirm-promotion asked 1 time(s) after it had passed"]


def test_summary_counts_lost_duplicated_and_stuck_promotions() -> None:
    expected = outcome().as_json()
    entries: list[dict[str, Any]] = [
        {"fault": "f", "outcome": outcome().as_json(), "differences": [], "stuck": False,
         "expected": expected},
        {"fault": "f", "outcome": outcome(primary_image="podinfo:6.0.0").as_json(),
         "differences": ["x"], "stuck": False, "expected": expected},
        {"fault": "f", "outcome": outcome(primary_writes=3, conflicts=4).as_json(),
         "differences": ["y"], "stuck": False, "expected": expected},
        {"fault": "f", "outcome": None, "differences": ["z"], "stuck": True,
         "expected": expected},
    ]
    [row] = summarise(entries)
    assert row["runs"] == 4
    assert row["differing"] == 3
    assert row["promotions lost"] == 1
    assert row["promotions duplicated"] == 1
    assert row["stuck"] == 1
    assert row["409s met"] == 4


def test_report_command_prints_the_table_and_each_difference(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "chaos.jsonl"
    runs.write_text(json.dumps({"fault": "f", "outcome": outcome().as_json(),
                                "differences": ["phase: 'Failed'"], "stuck": False,
                                "expected": outcome().as_json()}) + "\n")
    assert main([str(runs)]) == 0
    printed = capsys.readouterr().out
    assert "| f | 1 | 1 | 0 | 0 | 0 | 0 | 0 |" in printed
    assert "- f: phase: 'Failed'" in printed


def test_primary_writes_are_counted_from_the_window_only(tmp_path: Path) -> None:
    def line(audit_id: str, verb: str, subresource: str = "", code: int = 200) -> str:
        ref = {"resource": "deployments", "namespace": "ns", "name": "app-primary"}
        if subresource:
            ref["subresource"] = subresource
        return json.dumps({"auditID": audit_id, "stage": "ResponseComplete", "verb": verb,
                           "userAgent": "flaggerpy/1", "objectRef": ref,
                           "responseStatus": {"code": code}}, separators=(",", ":")) + "\n"

    log = tmp_path / "audit.log"
    log.write_text(line("before", "patch"))
    window = AuditWindow.open(log, "ns")
    with log.open("a") as more:
        more.write(line("a", "patch") + line("a", "patch") + line("b", "patch", "status")
                   + line("c", "update", code=409) + line("d", "get") + line("e", "update"))
    assert primary_writes(window.events(), primary="app-primary", user_agent="flaggerpy/") == 2
