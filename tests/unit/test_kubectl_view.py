"""``kubectl flaggerpy list`` / ``status``: the lines a person reads, from real-shaped objects."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from flaggerpy.kubectl import main, view

NS = "test"


def canary(name: str = "podinfo", **status: Any) -> dict[str, Any]:
    """A Canary as the API server returns it mid-run: weight 30 of max 50, step 10."""
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name, "namespace": NS, "resourceVersion": "4242"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "service": {"port": 9898},
            "analysis": {
                "interval": "1m", "threshold": 5, "maxWeight": 50, "stepWeight": 10,
                "metrics": [
                    {"name": "request-success-rate", "thresholdRange": {"min": 99},
                     "interval": "1m"},
                    {"name": "request-duration", "thresholdRange": {"max": 500},
                     "interval": "1m"},
                ],
            },
        },
        "status": {
            "phase": "Progressing",
            "canaryWeight": 30,
            "failedChecks": 1,
            "iterations": 0,
            "lastAppliedSpec": "5f8d7b9c4",
            "lastPromotedSpec": "6c9b8d7f5",
            "lastTransitionTime": "2026-12-06T10:03:00Z",
            "trackedConfigs": {},
            "conditions": [{
                "type": "Promoted", "status": "Unknown", "reason": "Progressing",
                "message": "New revision detected, progressing canary analysis.",
                "lastTransitionTime": "2026-12-06T10:00:00Z",
                "lastUpdateTime": "2026-12-06T10:03:00Z",
            }],
            "analysisHistory": [
                # a check of the previous run: not this run's
                {"time": "2026-12-05T08:00:00Z", "metric": "request-success-rate",
                 "verdict": "Pass", "action": "pass", "value": 100, "thresholdMin": 99},
                {"time": "2026-12-06T10:01:00Z", "metric": "request-success-rate",
                 "verdict": "Pass", "action": "pass", "value": 99.5, "thresholdMin": 99,
                 "samples": 120, "query": "sum(rate(...))"},
                {"time": "2026-12-06T10:01:00Z", "metric": "request-duration",
                 "verdict": "Pass", "action": "pass", "value": 212.5, "thresholdMax": 500},
                {"time": "2026-12-06T10:02:00Z", "metric": "request-success-rate",
                 "verdict": "Fail", "action": "fail", "value": 87.25, "thresholdMin": 99,
                 "samples": 118,
                 "message": "request-success-rate 87.25 < 99"},
                {"time": "2026-12-06T10:02:00Z", "metric": "request-duration",
                 "verdict": "NoData", "action": "hold", "thresholdMax": 500,
                 "message": "no values found"},
            ],
            **status,
        },
    }


def event(name: str, first: str, message: str, *, type_: str = "Normal",
          last: str | None = None, count: int = 1) -> dict[str, Any]:
    """A core/v1 Event as the controller's recorder writes it."""
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": NS},
        "involvedObject": {"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
                           "name": "podinfo", "namespace": NS},
        "type": type_, "reason": "Synced", "message": message, "count": count,
        "firstTimestamp": first, "lastTimestamp": last or first,
        "source": {"component": "flagger"},
    }


EVENTS = [
    # Listed out of order, as a list answer may come; names carry hex nanoseconds.
    event("podinfo.18a0000000000003", "2026-12-06T10:01:00Z",
          "Advance podinfo.test canary weight 10"),
    event("podinfo.17f0000000000001", "2026-12-05T08:00:00Z",
          "New revision detected! Scaling up podinfo.test"),
    event("podinfo.18a0000000000002", "2026-12-06T10:00:00Z",
          "Starting canary analysis for podinfo.test"),
    event("podinfo.18a0000000000001", "2026-12-06T10:00:00Z",
          "New revision detected! Scaling up podinfo.test"),
    event("podinfo.18a0000000000004", "2026-12-06T10:02:00Z",
          "Halt podinfo.test advancement success rate 87.25% < 99%", type_="Warning"),
    event("podinfo.17f0000000000002", "2026-12-05T08:00:30Z",
          "Promotion completed! Scaling down podinfo.test"),
]


def test_list_prints_kubectl_columns_plus_step_and_steering() -> None:
    succeeded = canary("backend", phase="Succeeded", canaryWeight=0, failedChecks=0,
                       lastTransitionTime="2026-12-05T08:01:00Z")
    paused = canary("frontend", steering={"revision": "5f8d7b9c4", "paused": True})
    text = view.render_list([canary(), succeeded, paused])

    assert text.splitlines() == [
        "NAME       STATUS        WEIGHT   FAILEDCHECKS   LASTTRANSITIONTIME     STEP       "
        "STEERING",
        "backend    Succeeded     0        0              2026-12-05T08:01:00Z   -          -",
        "frontend   Progressing   30       1              2026-12-06T10:03:00Z   step 3/5   paused",
        "podinfo    Progressing   30       1              2026-12-06T10:03:00Z   step 3/5   -",
    ]


def test_list_all_namespaces_adds_the_namespace_and_tolerates_a_fresh_canary() -> None:
    fresh = canary("new")
    del fresh["status"]
    other = copy.deepcopy(canary("api"))
    other["metadata"]["namespace"] = "a-team"
    lines = view.render_list([fresh, other], all_namespaces=True).splitlines()

    assert lines[0].split() == ["NAMESPACE", "NAME", "STATUS", "WEIGHT", "FAILEDCHECKS",
                                "LASTTRANSITIONTIME", "STEP", "STEERING"]
    assert lines[1].split() == ["a-team", "api", "Progressing", "30", "1",
                                "2026-12-06T10:03:00Z", "step", "3/5", "-"]
    assert lines[2].split() == ["test", "new", "-", "-"]  # no status yet: empty cells


@pytest.mark.parametrize(("analysis", "status", "expected"), [
    ({"iterations": 10}, {"phase": "Progressing", "iterations": 4}, "iteration 4/10"),
    ({"stepWeights": [1, 5, 25, 50]}, {"phase": "Progressing", "canaryWeight": 25}, "step 3/4"),
    ({"stepWeight": 20}, {"phase": "Waiting", "canaryWeight": 20}, "step 1/5"),
    ({"stepWeight": 30, "maxWeight": 80}, {"phase": "Progressing", "canaryWeight": 60},
     "step 2/3"),
    ({"stepWeight": 10}, {"phase": "Succeeded", "canaryWeight": 0}, "-"),
])
def test_step_follows_the_strategy(
        analysis: dict[str, Any], status: dict[str, Any], expected: str) -> None:
    obj = {"spec": {"analysis": analysis}, "status": status}
    assert view.step(obj) == expected


def test_weight_bar_shows_canary_against_primary() -> None:
    assert view.weight_bar(30, width=10) == "[###.......] canary 30% / primary 70%"
    assert view.weight_bar(None, width=4) == "[....] canary 0% / primary 100%"
    assert view.weight_bar(100, width=4) == "[####] canary 100% / primary 0%"


def test_status_shows_phase_weight_and_each_check_of_the_run_against_its_threshold() -> None:
    lines = view.render_status(canary(), EVENTS).splitlines()

    assert lines[:9] == [
        "Canary:         podinfo.test",
        "Target:         Deployment/podinfo",
        "Phase:          Progressing",
        "Step:           step 3/5",
        "Weight:         [############............................] canary 30% / primary 70%",
        "Failed checks:  1/5",
        "Steering:       -",
        "Run started:    2026-12-06T10:00:00Z",
        "",
    ]
    checks = lines[lines.index("Checks:") + 1:lines.index("Conditions:") - 1]
    assert [line.split()[:6] for line in checks] == [
        ["TIME", "METRIC", "VALUE", "THRESHOLD", "VERDICT", "ACTION"],
        ["2026-12-06T10:01:00Z", "request-success-rate", "99.5", ">=", "99", "Pass"],
        ["2026-12-06T10:01:00Z", "request-duration", "212.5", "<=", "500", "Pass"],
        ["2026-12-06T10:02:00Z", "request-success-rate", "87.25", ">=", "99", "Fail"],
        ["2026-12-06T10:02:00Z", "request-duration", "-", "<=", "500", "NoData"],
    ]
    failing = checks[3]
    assert failing.endswith("Fail      fail     request-success-rate 87.25 < 99")
    assert "2026-12-05" not in "\n".join(checks)  # the previous run's check is not shown


def test_status_shows_the_conditions_and_the_timeline_of_the_run_in_order() -> None:
    text = view.render_status(canary(), EVENTS)
    lines = text.splitlines()

    conditions = lines[lines.index("Conditions:") + 1:lines.index("Timeline:") - 1]
    assert conditions[1].split()[:4] == ["Promoted", "Unknown", "Progressing",
                                         "2026-12-06T10:00:00Z"]
    assert conditions[1].endswith("New revision detected, progressing canary analysis.")
    timeline = lines[lines.index("Timeline:") + 1:]
    assert timeline == [
        "  TIME                   TYPE      REASON   MESSAGE",
        "  2026-12-06T10:00:00Z   Normal    Synced   New revision detected! Scaling up"
        " podinfo.test",
        "  2026-12-06T10:00:00Z   Normal    Synced   Starting canary analysis for podinfo.test",
        "  2026-12-06T10:01:00Z   Normal    Synced   Advance podinfo.test canary weight 10",
        "  2026-12-06T10:02:00Z   Warning   Synced   Halt podinfo.test advancement success rate"
        " 87.25% < 99%",
    ]


def test_an_event_repeated_in_this_run_is_part_of_it_with_its_count() -> None:
    repeated = event("podinfo.17f0000000000009", "2026-12-05T09:00:00Z",
                     "Halt advancement podinfo-primary.test waiting for rollout to finish",
                     last="2026-12-06T10:01:30Z", count=7)
    run, started = view.current_run([*EVENTS, repeated])

    assert started == "2026-12-06T10:00:00Z"
    assert [entry.time for entry in run] == [
        "2026-12-06T10:00:00Z", "2026-12-06T10:00:00Z", "2026-12-06T10:01:00Z",
        "2026-12-06T10:01:30Z", "2026-12-06T10:02:00Z"]
    assert run[3].count == 7
    assert "waiting for rollout to finish (x7)" in view.render_status(canary(), [repeated, *EVENTS])


def test_status_without_a_run_start_shows_every_event_and_all_checks() -> None:
    initializing = canary(phase="Initialized", canaryWeight=0)
    events = [event("podinfo.1", "2026-12-06T09:00:00Z", "Initialization done! podinfo.test")]
    text = view.render_status(initializing, events)

    assert "Run started" not in text
    assert "Step:           -" in text
    assert "2026-12-05T08:00:00Z   request-success-rate   100" in text
    assert text.rstrip().endswith("Synced   Initialization done! podinfo.test")


def test_status_of_a_fresh_canary_says_there_is_nothing_yet() -> None:
    fresh = canary()
    del fresh["status"]
    text = view.render_status(fresh, [])

    assert "Phase:          (not yet reconciled)" in text
    assert "  (none in this run)" in text
    assert "  (no events)" in text


def test_status_shows_what_steering_left() -> None:
    steered = canary(steering={"revision": "5f8d7b9c4", "paused": True, "approved": True,
                               "request": "promote", "reason": "hotfix verified",
                               "command": "podinfo-promote-x7k2"})
    assert view.steering_state(steered) == "paused,approved,promote pending"
    assert ("Steering:       paused,approved,promote pending (last command podinfo-promote-x7k2:"
            " hotfix verified)") in view.render_status(steered, [])


def test_namespace_comes_from_the_context_as_kubectl_takes_it(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: dev\n"
        "contexts:\n"
        "- name: dev\n  context: {cluster: c, user: u, namespace: shop}\n"
        "- name: ops\n  context: {cluster: c, user: u}\n")
    assert main.context_namespace(str(config), None) == "shop"
    assert main.context_namespace(str(config), "ops") == "default"
    assert main.context_namespace(str(tmp_path / "missing"), None) == "default"


def test_connection_options_go_before_or_after_the_command() -> None:
    parser = main.build_parser()
    after = parser.parse_args(["status", "podinfo", "-n", "shop", "--watch"])
    before = parser.parse_args(["-n", "shop", "--context", "dev", "list", "-A"])
    neither = parser.parse_args(["list"])

    assert (after.namespace, after.name, after.watch, after.until_done) == (
        "shop", "podinfo", True, False)
    assert (before.namespace, before.context, before.all_namespaces) == ("shop", "dev", True)
    assert neither.namespace is None
