"""The pure half of a write: when is an object already what we want?"""

from __future__ import annotations

from typing import Any

import pytest

from flaggerpy import kube
from flaggerpy.kube import objects
from flaggerpy.kube.keys import ObjectKey

SERVER_SERVICE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {
        "name": "podinfo", "namespace": "test", "resourceVersion": "42", "uid": "u-1",
        "labels": {"app": "podinfo", "team": "x"},
        "managedFields": [{"manager": "flaggerpy"}],
    },
    "spec": {
        "clusterIP": "10.0.0.7", "type": "ClusterIP", "sessionAffinity": "None",
        "selector": {"app": "podinfo"},
        "ports": [{"name": "http", "port": 80, "targetPort": 9898, "protocol": "TCP"}],
    },
    "status": {"loadBalancer": {}},
}

DESIRED_SERVICE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "podinfo", "namespace": "test", "labels": {"app": "podinfo"}},
    "spec": {
        "selector": {"app": "podinfo"},
        "ports": [{"name": "http", "port": 80, "targetPort": 9898}],
    },
}


def test_server_defaults_do_not_count_as_changes() -> None:
    assert objects.merge_owned(SERVER_SERVICE, DESIRED_SERVICE) == SERVER_SERVICE


@pytest.mark.parametrize(
    ("actual", "desired", "expected"),
    [
        pytest.param({"a": 1, "b": 2}, {"a": 1}, True, id="extra-key-is-a-default"),
        pytest.param({"a": 1}, {"a": 2}, False, id="value-differs"),
        pytest.param({}, {"a": {}}, True, id="empty-matches-absent"),
        pytest.param({"a": [1]}, {"a": []}, False, id="list-emptied"),
        pytest.param([{"x": 1, "d": 0}], [{"x": 1}], True, id="list-elements-subset"),
        pytest.param([{"x": 1}, {"x": 2}], [{"x": 1}], False, id="list-element-removed"),
        pytest.param({"a": 1}, {"a": True}, False, id="bool-is-not-int"),
        pytest.param({"a": "1"}, {"a": 1}, False, id="string-is-not-int"),
        pytest.param({"a": None}, {"a": None}, True, id="null"),
    ],
)
def test_satisfies(actual: Any, desired: Any, expected: bool) -> None:
    assert objects.satisfies(actual, desired) is expected


def test_changed_spec_is_laid_over_what_the_server_allocated() -> None:
    desired = {**DESIRED_SERVICE, "spec": {**DESIRED_SERVICE["spec"], "selector": {"app": "b"}}}
    merged = objects.merge_owned(SERVER_SERVICE, desired)
    assert merged["spec"]["selector"] == {"app": "b"}
    assert merged["spec"]["ports"] == desired["spec"]["ports"]  # lists are replaced whole
    assert merged["spec"]["clusterIP"] == "10.0.0.7"  # allocated, kept
    assert objects.satisfies(merged, desired)
    assert merged["metadata"]["resourceVersion"] == "42"
    assert merged["status"] == SERVER_SERVICE["status"]


def test_labels_and_annotations_are_merged_not_replaced() -> None:
    desired = {**DESIRED_SERVICE, "metadata": {
        **DESIRED_SERVICE["metadata"], "labels": {"app": "podinfo", "new": "1"},
        "annotations": {"a": "b"}}}
    merged = objects.merge_owned(SERVER_SERVICE, desired)
    assert merged["metadata"]["labels"] == {"app": "podinfo", "team": "x", "new": "1"}
    assert merged["metadata"]["annotations"] == {"a": "b"}


def test_configmap_data_is_compared_exactly() -> None:
    current = {"metadata": {"name": "c", "namespace": "n"}, "data": {"a": "1", "b": "2"}}
    desired = {"metadata": {"name": "c", "namespace": "n"}, "data": {"a": "1"}}
    assert objects.merge_owned(current, desired)["data"] == {"a": "1"}
    assert objects.merge_owned(current, current) == current


def test_null_in_desired_removes_a_key() -> None:
    current = {"metadata": {"name": "c"}, "spec": {"x": 1, "y": 2}}
    desired = {"metadata": {"name": "c"}, "spec": {"x": 1, "y": None}}
    assert objects.merge_owned(current, desired)["spec"] == {"x": 1}


def test_input_is_not_mutated() -> None:
    current = {"metadata": {"name": "c"}, "spec": {"x": 1}}
    desired = {"metadata": {"name": "c", "labels": {"a": "b"}}, "spec": {"x": 2}}
    objects.merge_owned(current, desired)
    assert current == {"metadata": {"name": "c"}, "spec": {"x": 1}}


def test_strip_for_create_drops_server_fields() -> None:
    body = objects.strip_for_create(SERVER_SERVICE)
    assert "status" not in body
    assert set(body["metadata"]) == {"name", "namespace", "labels"}


def test_key_of() -> None:
    assert kube.key_of(SERVER_SERVICE) == ObjectKey("test", "podinfo")
    assert kube.key_of({"metadata": {"name": "ns1"}}) == ObjectKey("", "ns1")


def test_resource_paths() -> None:
    assert kube.DEPLOYMENTS.path(namespace="a", name="b") == (
        "/apis/apps/v1/namespaces/a/deployments/b")
    assert kube.CANARIES.path() == "/apis/flagger.app/v1beta1/canaries"
    assert kube.SERVICES.path(namespace="a") == "/api/v1/namespaces/a/services"
    assert kube.NAMESPACES.path(namespace="ignored", name="x") == "/api/v1/namespaces/x"
    assert kube.CANARIES.path(namespace="a", name="b", subresource="status") == (
        "/apis/flagger.app/v1beta1/namespaces/a/canaries/b/status")
    assert kube.CANARIES.api_version == "flagger.app/v1beta1"
    assert kube.SERVICES.api_version == "v1"
