"""The split ConfigMap, built and read back without a cluster: the mesh's rules, field by field."""

from __future__ import annotations

from typing import Any

import pytest
from flaggerpy_splitmap import build_split, kept_weights, read_weights, split_name

from flaggerpy import sdk


def make_canary(**service: Any) -> sdk.Canary:
    return sdk.Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test", "uid": "0c1d"},
        "spec": {
            "provider": "splitmap",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898, **service},
            "analysis": {"interval": "1s", "threshold": 2, "maxWeight": 50, "stepWeight": 25},
        },
    })


def test_a_new_split_names_the_three_services_and_carries_the_weights() -> None:
    split = build_split(make_canary(), sdk.Weights.to_canary(25), None)

    assert split["metadata"]["name"] == "podinfo-split"
    assert split["metadata"]["namespace"] == "test"
    assert split["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "flaggerpy"}
    assert split["metadata"]["annotations"] == dict(sdk.TOOLKIT_ANNOTATIONS)
    assert split["data"] == {"service": "podinfo", "primary": "podinfo-primary",
                             "canary": "podinfo-canary", "primaryWeight": "75",
                             "canaryWeight": "25"}
    assert read_weights(split) == sdk.Weights(primary=75, canary=25)


def test_the_service_name_decides_the_object_name() -> None:
    canary = make_canary(name="frontend")
    assert split_name(canary) == "frontend-split"
    assert build_split(canary, sdk.Weights.all_primary(), None)["data"]["primary"] == (
        "frontend-primary")


def test_rebuilding_the_stored_split_changes_nothing() -> None:
    """What makes a steady tick write nothing: reconcile's build over the stored object is it."""
    canary = make_canary()
    stored = build_split(canary, sdk.Weights.to_canary(50), None)
    stored["metadata"] |= {"resourceVersion": "42", "uid": "abc",
                           "labels": {**stored["metadata"]["labels"], "team": "a"}}

    assert build_split(canary, kept_weights(stored), stored) == stored


def test_a_hand_edited_split_is_an_error_not_a_guess() -> None:
    split = build_split(make_canary(), sdk.Weights.all_primary(), None)
    split["data"] |= {"primaryWeight": "50", "canaryWeight": "40"}

    with pytest.raises(sdk.RouterError, match="test/podinfo-split carries no split"):
        read_weights(split)
    assert kept_weights(split) == sdk.Weights.all_primary()  # reconcile repairs it
    assert kept_weights(None) == sdk.Weights.all_primary()
