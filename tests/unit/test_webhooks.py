"""The pure parts of webhooks: the revision checksum and Flagger's payload, key for key."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from typing import Any

import pytest

from flaggerpy.canary.webhooks import HookResult, WebhookCaller, checksum, payload
from flaggerpy.models import Canary, CanaryPhase, CanaryStatus, CanaryWebhook

STATUS: dict[str, Any] = {
    "phase": "Progressing",
    "canaryWeight": 10,
    "failedChecks": 1,
    "iterations": 0,
    "lastAppliedSpec": "5d8f6c9b7",
    "lastPromotedSpec": "7f9d8c6b5",
    "trackedConfigs": {"configmap/podinfo-config": "6b9c8d7e5", "secret/podinfo": "84bd9f7c"},
}


def make_canary(status: dict[str, Any] | None = STATUS, **analysis: Any) -> Canary:
    document: dict[str, Any] = {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {"interval": "1m", "threshold": 5, **analysis},
        },
    }
    if status is not None:
        document["status"] = status
    return Canary.model_validate(document)


def status(**changes: Any) -> CanaryStatus:
    return CanaryStatus.model_validate({**STATUS, **changes})


# --- checksum -----------------------------------------------------------------------------------


def test_checksum_is_pinned() -> None:
    """A restarted controller must compute the same value, or every receiver sees a new revision."""
    assert checksum(status()) == "6879e61e757ca57c"
    assert checksum(None) == "d1e5b6603640a74e"


def test_checksum_does_not_depend_on_the_process() -> None:
    program = (
        "from flaggerpy.canary.webhooks import checksum\n"
        "from flaggerpy.models import CanaryStatus\n"
        f"print(checksum(CanaryStatus.model_validate({STATUS!r})))\n"
    )
    printed = subprocess.run([sys.executable, "-c", program], check=True, capture_output=True,
                             text=True, env={"PYTHONHASHSEED": "12345"}).stdout.strip()
    assert printed == checksum(status())


def test_checksum_ignores_the_order_of_tracked_configs() -> None:
    reordered = dict(reversed(list(STATUS["trackedConfigs"].items())))
    assert checksum(status(trackedConfigs=reordered)) == checksum(status())


@pytest.mark.parametrize("changes", [
    pytest.param({"phase": "Succeeded"}, id="phase"),
    pytest.param({"canaryWeight": 50, "iterations": 3, "failedChecks": 0}, id="counters"),
    pytest.param({"lastPromotedSpec": "other"}, id="last-promoted-spec"),
])
def test_checksum_ignores_analysis_state(changes: dict[str, Any]) -> None:
    assert checksum(status(**changes)) == checksum(status())


@pytest.mark.parametrize("changes", [
    pytest.param({"lastAppliedSpec": "6c9b7d8f5"}, id="new-spec"),
    pytest.param({"trackedConfigs": {"configmap/podinfo-config": "0000"}}, id="config-changed"),
    pytest.param({"trackedConfigs": {**STATUS["trackedConfigs"], "secret/new": "1"}},
                 id="config-added"),
])
def test_checksum_changes_with_the_revision(changes: dict[str, Any]) -> None:
    assert checksum(status(**changes)) != checksum(status())


def test_no_status_no_configs_and_empty_configs_hash_alike() -> None:
    assert checksum(None) == checksum(CanaryStatus()) == checksum(CanaryStatus(tracked_configs={}))


# --- payload ------------------------------------------------------------------------------------


def test_payload_is_flaggers_canary_webhook_payload() -> None:
    body = payload(make_canary(), phase=CanaryPhase.PROGRESSING, metadata={"cmd": "hey"})

    assert body == {
        "name": "podinfo",
        "namespace": "test",
        "phase": "Progressing",
        "checksum": checksum(status()),
        "metadata": {"cmd": "hey"},
    }
    assert list(body) == ["name", "namespace", "phase", "checksum", "metadata"]
    assert json.loads(json.dumps(body)) == body


@pytest.mark.parametrize("metadata", [None, {}])
def test_payload_leaves_out_empty_metadata(metadata: dict[str, str] | None) -> None:
    body = payload(make_canary(status=None), phase="Initialized", metadata=metadata)

    assert body == {"name": "podinfo", "namespace": "test", "phase": "Initialized",
                    "checksum": checksum(None)}


@pytest.mark.parametrize(("phase", "sent"), [
    pytest.param(CanaryPhase.WAITING_PROMOTION, "WaitingPromotion", id="enum"),
    pytest.param("Succeeded", "Succeeded", id="string"),
    pytest.param(CanaryPhase.UNSET, "", id="unset"),
])
def test_payload_phase_is_the_one_given(phase: CanaryPhase | str, sent: str) -> None:
    """Not status.phase: confirm-promotion hooks, for one, are told Progressing (spec §5.1)."""
    body = payload(make_canary(), phase=phase)
    assert body["phase"] == sent
    assert type(body["phase"]) is str


def test_payload_copies_the_metadata() -> None:
    metadata = {"type": "bash"}
    body = payload(make_canary(), phase="Progressing", metadata=metadata)
    body["metadata"]["type"] = "changed"
    assert metadata == {"type": "bash"}


# --- values -------------------------------------------------------------------------------------


def test_hook_result_is_a_frozen_value() -> None:
    result = HookResult(webhook=CanaryWebhook(name="gate", url="http://gate/"), ok=True,
                        status=200, message="Approved")
    assert result.attempts == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.ok = False  # type: ignore[misc]


@pytest.mark.parametrize(("low", "high"), [(-1.0, 1.0), (2.0, 1.0)])
def test_backoff_bounds_are_checked(low: float, high: float) -> None:
    with pytest.raises(ValueError, match="backoff"):
        WebhookCaller(backoff_min=low, backoff_max=high)
