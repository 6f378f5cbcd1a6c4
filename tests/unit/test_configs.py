"""Config tracking, pure half: which configs a pod spec uses, checksums, renaming, copies."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from flaggerpy.canary import configs, hashing


def pod_spec() -> dict[str, Any]:
    """Every place a ConfigMap or Secret can be named, as in Flagger's deployment fixture."""
    return {
        "initContainers": [{
            "name": "init",
            "env": [
                {"name": "C",
                 "valueFrom": {"configMapKeyRef": {"name": "cfg-init-env", "key": "c"}}},
                {"name": "S",
                 "valueFrom": {"secretKeyRef": {"name": "sec-init-env", "key": "k"}}},
            ],
            "envFrom": [{"configMapRef": {"name": "cfg-init-all"}},
                        {"secretRef": {"name": "sec-init-all"}}],
        }],
        "containers": [{
            "name": "app",
            "env": [
                {"name": "PLAIN", "value": "x"},
                {"name": "FIELD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cfg-env", "key": "c"}}},
                {"name": "S", "valueFrom": {"secretKeyRef": {"name": "sec-env", "key": "k",
                                                             "optional": True}}},
            ],
            "envFrom": [{"configMapRef": {"name": "cfg-all", "optional": False}},
                        {"secretRef": {"name": "sec-all"}}],
        }],
        "volumes": [
            {"name": "v1", "configMap": {"name": "cfg-vol"}},
            {"name": "v2", "secret": {"secretName": "sec-vol", "optional": True}},
            {"name": "v3", "projected": {"sources": [
                {"configMap": {"name": "cfg-proj"}},
                {"secret": {"name": "sec-proj"}},
                {"downwardAPI": {"items": []}},
            ]}},
            {"name": "v4", "emptyDir": {}},
        ],
    }


def test_referenced_configs_finds_every_reference_and_whether_it_is_required() -> None:
    assert configs.referenced_configs(pod_spec()) == {
        "configmap/cfg-init-env": True,
        "secret/sec-init-env": True,
        "configmap/cfg-init-all": True,
        "secret/sec-init-all": True,
        "configmap/cfg-env": True,
        "secret/sec-env": False,
        "configmap/cfg-all": True,
        "secret/sec-all": True,
        "configmap/cfg-vol": True,
        "secret/sec-vol": False,
        "configmap/cfg-proj": True,
        "secret/sec-proj": True,
    }


def test_a_config_is_required_when_any_reference_requires_it() -> None:
    spec = {
        "containers": [
            {"name": "a", "envFrom": [{"configMapRef": {"name": "c", "optional": True}}]}],
        "volumes": [{"name": "v", "configMap": {"name": "c"}}],
    }
    assert configs.referenced_configs(spec) == {"configmap/c": True}


def configmap(name: str, data: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": name, "namespace": "test", **meta}}
    if data is not None:
        obj["data"] = data
    return obj


def secret(name: str, type_: str = "Opaque", **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": type_,
            "metadata": {"name": name, "namespace": "test", **meta},
            "data": {"apiKey": base64.b64encode(b"secret").decode()}}


# Values computed with Go's json.Marshal + sha256 (Flagger's checksum), so a status written by
# Flagger and one written by flaggerpy agree.
GO_CHECKSUMS = [
    pytest.param(None, "74234e98afe7498f", id="nil-map"),
    pytest.param({"color": "red"}, "241889ca0604e333", id="plain"),
    pytest.param({"b": "x<y>&z", "a": "line1\nline2\ttab\u0001\u2028é😀", "é": "\b\f\"\\"},
                 "92fb2d4363be585a", id="escapes-and-unicode"),
    pytest.param({"apiKey": base64.b64encode(b"secret").decode(),
                  "z": base64.b64encode(bytes([0xFF, 0x00])).decode()},
                 "4c0a57ae1140007a", id="secret-bytes"),
]


@pytest.mark.parametrize(("data", "expected"), GO_CHECKSUMS)
def test_checksum_equals_flaggers(data: Any, expected: str) -> None:
    assert hashing.config_checksum(data) == expected


def test_go_json_escapes_like_go() -> None:
    assert hashing.go_json({"k": "<a&b>", "\u2029": 1}) == (
        '{"k":"\\u003ca\\u0026b\\u003e","\\u2029":1}')


def test_config_ref_of_a_configmap_uses_its_data_checksum() -> None:
    ref = configs.config_ref(configmap("cfg", {"color": "red"}), configs.CONFIGMAP)
    assert ref == configs.ConfigRef(kind="configmap", name="cfg", checksum="241889ca0604e333")
    assert ref.key == "configmap/cfg"
    empty = configs.config_ref(configmap("cfg"), configs.CONFIGMAP)
    assert empty is not None
    assert empty.checksum == "74234e98afe7498f"


@pytest.mark.parametrize(("type_", "tracked"), [
    pytest.param("Opaque", True, id="opaque"),
    pytest.param("kubernetes.io/basic-auth", True, id="basic-auth"),
    pytest.param("kubernetes.io/ssh-auth", True, id="ssh-auth"),
    pytest.param("kubernetes.io/tls", True, id="tls"),
    pytest.param("kubernetes.io/dockerconfigjson", False, id="registry"),
    pytest.param("kubernetes.io/service-account-token", False, id="token"),
])
def test_only_some_secret_types_are_tracked(type_: str, tracked: bool) -> None:
    ref = configs.config_ref(secret("sec", type_), configs.SECRET)
    assert (ref is not None) is tracked


@pytest.mark.parametrize(("value", "disabled"), [
    pytest.param("disabled", True, id="disabled"),
    pytest.param("disable", True, id="disable"),
    pytest.param("enabled", False, id="enabled"),
    pytest.param("", False, id="empty"),
])
def test_config_tracking_annotation_opts_out(value: str, disabled: bool) -> None:
    annotations = {"flagger.app/config-tracking": value}
    assert configs.tracking_disabled(annotations) is disabled
    cm = configmap("cfg", {"a": "b"}, annotations=annotations)
    assert (configs.config_ref(cm, configs.CONFIGMAP) is None) is disabled
    assert configs.tracking_disabled({"app": "disable"}) is False


def test_rename_tracked_points_every_tracked_reference_at_the_primary_copy() -> None:
    original = pod_spec()
    tracked = {"configmap/cfg-init-env", "secret/sec-init-all", "configmap/cfg-env",
               "secret/sec-all", "configmap/cfg-vol", "secret/sec-proj", "configmap/cfg-proj"}
    spec = configs.rename_tracked(original, tracked)
    assert original == pod_spec(), "the input is not changed"
    init, app = spec["initContainers"][0], spec["containers"][0]
    assert init["env"][0]["valueFrom"]["configMapKeyRef"]["name"] == "cfg-init-env-primary"
    assert init["env"][1]["valueFrom"]["secretKeyRef"]["name"] == "sec-init-env"
    assert init["envFrom"][0]["configMapRef"]["name"] == "cfg-init-all"
    assert init["envFrom"][1]["secretRef"]["name"] == "sec-init-all-primary"
    assert app["env"][0] == {"name": "PLAIN", "value": "x"}
    assert app["env"][2]["valueFrom"]["configMapKeyRef"] == {"name": "cfg-env-primary", "key": "c"}
    assert app["env"][3]["valueFrom"]["secretKeyRef"]["name"] == "sec-env"
    assert app["envFrom"][1]["secretRef"]["name"] == "sec-all-primary"
    volumes = spec["volumes"]
    assert volumes[0]["configMap"]["name"] == "cfg-vol-primary"
    assert volumes[1]["secret"]["secretName"] == "sec-vol"
    assert volumes[2]["projected"]["sources"][0]["configMap"]["name"] == "cfg-proj-primary"
    assert volumes[2]["projected"]["sources"][1]["secret"]["name"] == "sec-proj-primary"
    assert volumes[3] == {"name": "v4", "emptyDir": {}}


def test_rename_tracked_with_nothing_tracked_is_a_copy() -> None:
    assert configs.rename_tracked(pod_spec(), ()) == pod_spec()


def test_build_primary_configmap_copies_data_and_filters_labels() -> None:
    source = configmap(
        "cfg", {"color": "red"},
        labels={"app.kubernetes.io/name": "podinfo", "team": "a",
                "kustomize.toolkit.fluxcd.io/name": "apps"},
        annotations={"note": "not copied"}, resourceVersion="42", uid="u")
    source["binaryData"] = {"blob": "AAE="}
    source["immutable"] = True
    body = configs.build_primary_config(
        source, kind=configs.CONFIGMAP, include_label_prefix=("app.kubernetes.io",))
    assert body == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg-primary", "namespace": "test",
                     "labels": {"app.kubernetes.io/name": "podinfo"}},
        "data": {"color": "red"},
        "binaryData": {"blob": "AAE="},
    }


def test_build_primary_secret_keeps_its_type_and_marks_absent_data() -> None:
    source = secret("tls", "kubernetes.io/tls")
    body = configs.build_primary_config(source, kind=configs.SECRET, include_label_prefix=())
    assert body["kind"] == "Secret"
    assert body["type"] == "kubernetes.io/tls"
    assert body["data"] == source["data"]
    assert body["binaryData"] is None
    assert body["metadata"]["labels"] == {}


def owner(uid: str, name: str) -> dict[str, Any]:
    return {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": name, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}


def test_owner_references_of_a_shared_copy_keep_every_canary_one_controller() -> None:
    first = configs.merge_owner_references(None, owner("a", "one"))
    assert first == [owner("a", "one")]
    second = configs.merge_owner_references(first, owner("b", "two"))
    assert second == [{**owner("a", "one"), "controller": False}, owner("b", "two")]
    again = configs.merge_owner_references(second, owner("a", "one"))
    assert again == [owner("a", "one"), {**owner("b", "two"), "controller": False}]
    assert sum(ref["controller"] for ref in again) == 1
    assert configs.merge_owner_references(copy.deepcopy(again), owner("a", "one")) == again
