"""Steering: which CanaryCommand applies to a Canary in which state, and what it leaves there."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from flaggerpy.canary import steering
from flaggerpy.kubectl import steer
from flaggerpy.models.canary_command import Action, CanaryCommand, Phase, SteeringStatus

REVISION = "5b7c9d"


def command(action: Action, *, revision: str | None = REVISION, name: str = "cmd-1",
            reason: str | None = None) -> CanaryCommand:
    spec: dict[str, Any] = {"canary": "podinfo", "action": action.value}
    if revision is not None:
        spec["revision"] = revision
    if reason is not None:
        spec["reason"] = reason
    return CanaryCommand.model_validate(
        {"metadata": {"name": name, "namespace": "test"}, "spec": spec})


def status(phase: str, **steering_state: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"phase": phase, "lastAppliedSpec": REVISION}
    if steering_state:
        result["steering"] = {"revision": REVISION, **steering_state}
    return result


@pytest.mark.parametrize(("action", "phase", "expected"), [
    pytest.param(Action.PROMOTE, "Progressing", {"request": "promote"}, id="promote-running"),
    pytest.param(Action.PROMOTE, "WaitingPromotion", {"request": "promote"},
                 id="promote-at-the-gate"),
    pytest.param(Action.ABORT, "Progressing", {"request": "abort"}, id="abort-running"),
    pytest.param(Action.ABORT, "Waiting", {"request": "abort"}, id="abort-waiting"),
    pytest.param(Action.DENY, "WaitingPromotion", {"request": "deny"}, id="deny"),
    pytest.param(Action.RETRY, "Failed", {"request": "retry"}, id="retry-failed"),
    pytest.param(Action.PAUSE, "Progressing", {"paused": True}, id="pause"),
    pytest.param(Action.PAUSE, "Promoting", {"paused": True}, id="pause-promoting"),
    pytest.param(Action.APPROVE, "Waiting", {"approved": True}, id="approve-waiting"),
])
def test_an_applicable_command_sets_the_state_of_the_revision(
        action: Action, phase: str, expected: dict[str, Any]) -> None:
    outcome = steering.decide(command(action, reason="looks good"), status=status(phase))

    assert outcome.phase is Phase.APPLIED
    assert outcome.state is not None
    wire = outcome.state.to_dict()
    assert {k: wire[k] for k in expected} == expected
    assert wire["revision"] == REVISION
    assert wire["command"] == "cmd-1"
    assert wire["reason"] == "looks good"


@pytest.mark.parametrize(("action", "phase", "words"), [
    pytest.param(Action.PROMOTE, "Succeeded", "nothing to promote", id="promote-idle"),
    pytest.param(Action.PROMOTE, "Initializing", "nothing to promote", id="promote-init"),
    pytest.param(Action.PROMOTE, "Promoting", "nothing to promote", id="promote-promoting"),
    pytest.param(Action.ABORT, "Succeeded", "nothing to abort", id="abort-idle"),
    pytest.param(Action.RETRY, "Progressing", "only a Failed canary", id="retry-running"),
    pytest.param(Action.PAUSE, "Failed", "nothing to pause", id="pause-idle"),
    pytest.param(Action.RESUME, "Progressing", "not paused", id="resume-unpaused"),
    pytest.param(Action.APPROVE, "Succeeded", "nothing to approve", id="approve-idle"),
    pytest.param(Action.DENY, "Failed", "nothing to deny", id="deny-idle"),
])
def test_a_command_that_does_not_apply_is_rejected_with_the_reason(
        action: Action, phase: str, words: str) -> None:
    outcome = steering.decide(command(action), status=status(phase))

    assert outcome.phase is Phase.REJECTED
    assert words in outcome.message
    assert outcome.state is None


def test_a_command_for_another_revision_is_rejected() -> None:
    outcome = steering.decide(command(Action.PROMOTE, revision="0ld"),
                              status=status("Progressing"))

    assert outcome.phase is Phase.REJECTED
    assert "meant for revision 0ld" in outcome.message
    assert REVISION in outcome.message


def test_a_command_without_a_revision_is_for_the_current_one() -> None:
    outcome = steering.decide(command(Action.PAUSE, revision=None), status=status("Progressing"))

    assert outcome.phase is Phase.APPLIED


def test_pause_then_resume() -> None:
    paused = status("Progressing", paused=True, command="cmd-0")

    assert steering.decide(command(Action.PAUSE), status=paused).phase is Phase.REJECTED
    outcome = steering.decide(command(Action.RESUME), status=paused)
    assert outcome.phase is Phase.APPLIED
    assert outcome.state is not None
    assert not outcome.state.paused


def test_promoting_a_paused_run_lifts_the_pause() -> None:
    outcome = steering.decide(command(Action.PROMOTE),
                              status=status("Progressing", paused=True, command="cmd-0"))

    assert outcome.state is not None
    assert outcome.state.request is Action.PROMOTE
    assert not outcome.state.paused


def test_a_second_request_waits_for_the_first() -> None:
    busy = status("Progressing", request="promote", command="cmd-0")

    outcome = steering.decide(command(Action.ABORT), status=busy)

    assert outcome.phase is Phase.REJECTED
    assert "cmd-0" in outcome.message


def test_state_of_another_revision_is_empty_but_remembers_the_last_command() -> None:
    old = {"phase": "Progressing", "lastAppliedSpec": "new",
           "steering": {"revision": REVISION, "paused": True, "approved": True,
                        "command": "cmd-9"}}

    state = steering.state_of(old)

    assert state == SteeringStatus(command="cmd-9")
    assert steering.state_of(status("Progressing", paused=True)).paused


def test_retry_drops_pause_and_approval() -> None:
    failed = status("Failed", paused=True, approved=True)

    outcome = steering.decide(command(Action.RETRY), status=failed)

    assert outcome.state is not None
    assert (outcome.state.paused, outcome.state.approved) == (None, None)


def test_pending_commands_oldest_first_and_answered_ones_left_out() -> None:
    def raw(name: str, created: str, phase: str | None = None) -> dict[str, Any]:
        obj: dict[str, Any] = {"metadata": {"name": name, "creationTimestamp": created}}
        if phase:
            obj["status"] = {"phase": phase}
        return obj

    found = steering.pending([
        raw("c", "2026-01-01T00:00:03Z"), raw("a", "2026-01-01T00:00:02Z", "Applied"),
        raw("b", "2026-01-01T00:00:01Z", "Pending"), raw("d", "2026-01-01T00:00:00Z", "Rejected"),
    ])

    assert [c["metadata"]["name"] for c in found] == ["b", "c"]


def test_the_cleared_request_and_the_kept_approval_are_merge_patches() -> None:
    assert steering.clear_request_patch() == {
        "status": {"steering": {"request": None, "reason": None}}}
    patch = steering.with_revision(
        {"status": {"phase": "Progressing"}},
        state=SteeringStatus(revision="old", approved=True, command="cmd-1"), revision="new")
    assert patch["status"]["phase"] == "Progressing"
    assert patch["status"]["steering"]["revision"] == "new"
    assert patch["status"]["steering"]["approved"] is True
    assert patch["status"]["steering"]["request"] is None


def test_canary_index_value() -> None:
    assert steering.canary_of(
        {"metadata": {"namespace": "test"}, "spec": {"canary": "podinfo"}}) == "test/podinfo"
    assert steering.canary_of({"metadata": {"namespace": "test"}, "spec": {}}) is None


# -- the CLI's pure parts -------------------------------------------------------------------------


def test_the_cli_builds_the_command_the_controller_expects() -> None:
    body = steer.command_body(canary="podinfo", action=Action.ABORT, revision=REVISION,
                              reason="error budget")

    assert body["apiVersion"] == "flaggerpy.dev/v1alpha1"
    assert body["kind"] == "CanaryCommand"
    assert body["metadata"] == {"generateName": "podinfo-abort-"}
    assert body["spec"] == {"canary": "podinfo", "action": "abort", "revision": REVISION,
                            "reason": "error budget"}
    assert CanaryCommand.model_validate(body).spec.action is Action.ABORT
    bare = steer.command_body(canary="podinfo", action=Action.PAUSE, revision=None, reason="")
    assert bare["spec"] == {"canary": "podinfo", "action": "pause"}


@pytest.mark.parametrize(("command_status", "expected"), [
    pytest.param(None, None, id="unanswered"),
    pytest.param({"phase": "Pending"}, None, id="pending"),
    pytest.param({"phase": "Applied", "message": "ok"}, (Phase.APPLIED, "ok"), id="applied"),
    pytest.param({"phase": "Rejected", "message": "no"}, (Phase.REJECTED, "no"), id="rejected"),
])
def test_the_cli_reads_the_answer(
        command_status: dict[str, Any] | None, expected: tuple[Phase, str] | None) -> None:
    obj: dict[str, Any] = {"spec": {}}
    if command_status is not None:
        obj["status"] = command_status
    assert steer.outcome(obj) == expected


def test_every_action_is_a_subcommand() -> None:
    parser = argparse.ArgumentParser()
    steer.register(parser.add_subparsers(dest="command"))

    for action in Action:
        args = parser.parse_args([action.value, "podinfo", "--reason", "why", "--no-wait"])
        assert (args.action, args.name, args.reason, args.no_wait) == (
            action, "podinfo", "why", True)
    assert parser.parse_args(["promote", "podinfo"]).timeout == steer.DEFAULT_TIMEOUT
