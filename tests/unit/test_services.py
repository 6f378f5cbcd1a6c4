"""The generated Services, field by field: what is created, what is updated, what is reverted.

The builders are pure, so each rule of Flagger's ``kubernetes_default.go`` (spec §3.1, §2.8)
is checked here on plain dicts; tests/integration/test_services.py checks the same Services as
the API server stores them.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from flaggerpy.canary import services
from flaggerpy.canary.services import (
    KUBECTL_LAST_APPLIED,
    TOOLKIT_ANNOTATIONS,
    KubernetesDefaultRouter,
    KubernetesNoopRouter,
    build_service,
    controlling_canary,
    is_owned_by,
    new_kubernetes_router,
    reverted_service,
    service_ports,
    updated_service,
)
from flaggerpy.errors import RouterError, TerminalError
from flaggerpy.models.canary import Canary

UID = "6a1c9b52-4c2d-4a57-9d3e-0f0b3c5a7e11"
TOOLKIT = dict(TOOLKIT_ANNOTATIONS)


def make_canary(*, canary_name: str = "podinfo", target: str = "podinfo",
                **service: Any) -> Canary:
    """A stored Canary (it has a uid) with ``spec.service`` = ``{"port": 9898, **service}``."""
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": canary_name, "namespace": "test", "uid": UID},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "service": {"port": 9898, **service},
            "analysis": {"interval": "1m", "threshold": 5, "stepWeight": 10},
        },
    })


def build(canary: Canary, role: services.Role, *, ports: dict[str, int] | None = None,
          label: str = "app", label_value: str = "podinfo") -> dict[str, Any]:
    return build_service(canary, role=role, label=label, label_value=label_value,
                         ports=ports or {})


OWNER = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo", "uid": UID,
         "controller": True, "blockOwnerDeletion": True}


# -- build_service ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "name", "selector"),
    [
        pytest.param("apex", "podinfo", "podinfo-primary", id="apex"),
        pytest.param("primary", "podinfo-primary", "podinfo-primary", id="primary"),
        pytest.param("canary", "podinfo-canary", "podinfo", id="canary"),
    ],
)
def test_each_role_gets_flaggers_service(role: services.Role, name: str, selector: str) -> None:
    assert build(make_canary(), role) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": "test",
            "labels": {"app": name},
            "annotations": TOOLKIT,
            "ownerReferences": [OWNER],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {"app": selector},
            "ports": [{"name": "http", "protocol": "TCP", "port": 9898, "targetPort": 9898}],
        },
    }


def test_service_name_overrides_the_target_name_and_label_value_drives_selectors() -> None:
    canary = make_canary(canary_name="web-canary", target="web", name="frontend")
    apex = build(canary, "apex", label="app.kubernetes.io/name", label_value="web-app")
    assert apex["metadata"]["name"] == "frontend"
    assert apex["metadata"]["labels"] == {"app.kubernetes.io/name": "frontend"}
    assert apex["spec"]["selector"] == {"app.kubernetes.io/name": "web-app-primary"}
    assert apex["metadata"]["ownerReferences"][0]["name"] == "web-canary"
    primary = build(canary, "primary", label="app.kubernetes.io/name", label_value="web-app")
    assert primary["metadata"]["name"] == "frontend-primary"
    assert primary["spec"]["selector"] == {"app.kubernetes.io/name": "web-app-primary"}
    preview = build(canary, "canary", label="app.kubernetes.io/name", label_value="web-app")
    assert preview["metadata"]["name"] == "frontend-canary"
    assert preview["spec"]["selector"] == {"app.kubernetes.io/name": "web-app"}


@pytest.mark.parametrize(
    ("service", "port"),
    [
        pytest.param({}, {"name": "http", "protocol": "TCP", "port": 9898, "targetPort": 9898},
                     id="defaults"),
        pytest.param({"portName": "grpc", "targetPort": 9000},
                     {"name": "grpc", "protocol": "TCP", "port": 9898, "targetPort": 9000},
                     id="name-and-int-target"),
        pytest.param({"targetPort": "http-app"},
                     {"name": "http", "protocol": "TCP", "port": 9898, "targetPort": "http-app"},
                     id="named-target"),
        pytest.param({"targetPort": 0},
                     {"name": "http", "protocol": "TCP", "port": 9898, "targetPort": 9898},
                     id="zero-target-is-unset"),
        pytest.param({"appProtocol": "http"},
                     {"name": "http", "protocol": "TCP", "port": 9898, "targetPort": 9898,
                      "appProtocol": "http"},
                     id="app-protocol"),
    ],
)
def test_main_port(service: dict[str, Any], port: dict[str, Any]) -> None:
    for role in services.ROLES:
        assert build(make_canary(**service), role)["spec"]["ports"] == [port]


def test_discovered_ports_are_added_only_with_port_discovery() -> None:
    discovered = {"metrics": 9797, "grpc": 9999}
    assert len(build(make_canary(), "apex", ports=discovered)["spec"]["ports"]) == 1
    canary = make_canary(portDiscovery=True, appProtocol="http")
    for role in services.ROLES:
        assert build(canary, role, ports=discovered)["spec"]["ports"] == [
            {"name": "http", "protocol": "TCP", "port": 9898, "targetPort": 9898,
             "appProtocol": "http"},
            {"name": "grpc", "protocol": "TCP", "port": 9999, "targetPort": 9999},
            {"name": "metrics", "protocol": "TCP", "port": 9797, "targetPort": 9797},
        ]


def test_discovered_ports_that_repeat_the_main_port_are_left_out() -> None:
    canary = make_canary(portDiscovery=True)
    ports = service_ports(canary, ports={"http": 8080, "admin": 9898, "tcp-app-1": 7000})
    assert [(p["name"], p["port"]) for p in ports] == [("http", 9898), ("tcp-app-1", 7000)]


def test_headless_and_traffic_distribution() -> None:
    spec = build(make_canary(headless=True, trafficDistribution="PreferClose"), "canary")["spec"]
    assert spec["clusterIP"] == "None"
    assert spec["trafficDistribution"] == "PreferClose"
    assert spec["type"] == "ClusterIP"
    plain = build(make_canary(headless=False), "canary")["spec"]
    assert "clusterIP" not in plain
    assert "trafficDistribution" not in plain


def test_custom_labels_and_annotations_per_role() -> None:
    canary = make_canary(
        apex={"labels": {"tier": "edge", "app": "overridden"},
              "annotations": {"a": "apex",
                              "kustomize.toolkit.fluxcd.io/reconcile": "enabled"}},
        primary={"labels": {"tier": "stable"}},
        canary={"annotations": {"c": "canary"}},
    )
    apex = build(canary, "apex")["metadata"]
    # The selector label is always the Service's own name; toolkit annotations always win.
    assert apex["labels"] == {"tier": "edge", "app": "podinfo"}
    assert apex["annotations"] == {"a": "apex", **TOOLKIT}
    primary = build(canary, "primary")["metadata"]
    assert primary["labels"] == {"tier": "stable", "app": "podinfo-primary"}
    assert primary["annotations"] == TOOLKIT
    preview = build(canary, "canary")["metadata"]
    assert preview["labels"] == {"app": "podinfo-canary"}
    assert preview["annotations"] == {"c": "canary", **TOOLKIT}


def test_builder_does_not_change_the_canary() -> None:
    canary = make_canary(apex={"labels": {"tier": "edge"}})
    before = canary.to_dict()
    build(canary, "apex")["metadata"]["labels"]["x"] = "y"
    assert canary.to_dict() == before


def test_a_canary_without_uid_or_service_cannot_own_services() -> None:
    canary = make_canary()
    assert canary.metadata is not None
    canary.metadata.uid = None
    with pytest.raises(ValueError, match="uid"):
        build(canary, "apex")
    no_service = make_canary()
    no_service.spec.service = None
    with pytest.raises(TerminalError, match=r"spec\.service"):
        build(no_service, "apex")


def test_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="role"):
        build(make_canary(), "preview")  # type: ignore[arg-type]


# -- ownership ----------------------------------------------------------------------------------


def refs(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"ownerReferences": list(entries)}}


@pytest.mark.parametrize(
    ("obj", "owner", "owned"),
    [
        pytest.param(refs(OWNER), "podinfo", True, id="ours"),
        pytest.param(refs({**OWNER, "uid": "other"}), "podinfo", True, id="same-name-new-uid"),
        pytest.param(refs({**OWNER, "name": "other"}), "other", False, id="another-canary"),
        pytest.param(refs({**OWNER, "kind": "Deployment"}), None, False, id="not-a-canary"),
        pytest.param(refs({**OWNER, "controller": False}), None, False, id="not-controller"),
        pytest.param({"metadata": {}}, None, False, id="no-owner"),
    ],
)
def test_ownership(obj: dict[str, Any], owner: str | None, owned: bool) -> None:
    assert controlling_canary(obj) == owner
    assert is_owned_by(obj, make_canary()) is owned


# -- updated_service ----------------------------------------------------------------------------


def stored(obj: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """``obj`` as the API server hands it back: defaults and server fields filled in."""
    result = copy.deepcopy(obj)
    result["metadata"].update(uid="svc-uid", resourceVersion="41", creationTimestamp="2026-01-01")
    ip = result["spec"].setdefault("clusterIP", "10.0.0.12")
    result["spec"].update(clusterIPs=[ip], ipFamilies=["IPv4"], sessionAffinity="None",
                          internalTrafficPolicy="Cluster", **spec)
    result["status"] = {"loadBalancer": {}}
    return result


@pytest.mark.parametrize("role", services.ROLES)
def test_a_stored_service_that_matches_is_not_changed(role: services.Role) -> None:
    canary = make_canary(portDiscovery=True, appProtocol="http", headless=True,
                         trafficDistribution="PreferClose",
                         apex={"labels": {"tier": "edge"}, "annotations": {"a": "b"}})
    desired = build(canary, role, ports={"metrics": 9797, "grpc": 9999})
    current = stored(desired)
    current["spec"]["ports"].reverse()  # order is not a difference
    assert updated_service(current, desired, canary=canary) == current


def test_a_changed_port_updates_ports_only() -> None:
    canary = make_canary()
    current = stored(build(canary, "primary"))
    moved = make_canary(port=8080)
    result = updated_service(current, build(moved, "primary"), canary=moved)
    assert result["spec"]["ports"] == [
        {"name": "http", "protocol": "TCP", "port": 8080, "targetPort": 8080}]
    assert result["spec"]["clusterIP"] == "10.0.0.12"
    assert result["metadata"] == current["metadata"]


def test_node_ports_of_same_named_ports_are_kept() -> None:
    canary = make_canary()
    user = stored(build(canary, "apex"), type="NodePort")
    user["spec"]["ports"][0]["nodePort"] = 30080
    user["spec"]["ports"].append({"name": "admin", "protocol": "TCP", "port": 9000,
                                  "targetPort": 9000, "nodePort": 30090})
    result = updated_service(user, build(canary, "apex"), canary=canary)
    assert result["spec"]["ports"] == [
        {"name": "http", "protocol": "TCP", "port": 9898, "targetPort": 9898, "nodePort": 30080}]
    assert result["spec"]["type"] == "NodePort"  # the type is never changed
    # And once that is stored, nothing more changes.
    assert updated_service(result, build(canary, "apex"), canary=canary) == result


def test_a_users_apex_service_keeps_its_metadata_and_gets_its_selector_switched() -> None:
    canary = make_canary(apex={"labels": {"tier": "edge"}, "annotations": {"a": "b"}})
    user = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "podinfo", "namespace": "test",
                     "labels": {"app": "podinfo", "team": "web"},
                     "annotations": {"owner": "web-team"}},
        "spec": {"type": "ClusterIP", "selector": {"app": "podinfo", "extra": "x"},
                 "ports": [{"name": "http", "protocol": "TCP", "port": 9898,
                            "targetPort": 9898}]},
    }
    current = stored(user)
    result = updated_service(current, build(canary, "apex"), canary=canary)
    assert result["spec"]["selector"] == {"app": "podinfo-primary"}  # replaced, not merged
    assert result["metadata"]["labels"] == {"app": "podinfo", "team": "web"}
    assert result["metadata"]["annotations"] == {"owner": "web-team", **TOOLKIT}
    assert "ownerReferences" not in result["metadata"]
    # Stored like that, the next tick writes nothing.
    assert updated_service(result, build(canary, "apex"), canary=canary) == result


def test_metadata_of_an_owned_service_follows_the_canary_except_unmanaged_keys() -> None:
    before = make_canary(canary={"labels": {"old": "1"}, "annotations": {"gone": "1"}})
    current = stored(build(before, "canary"))
    current["metadata"]["labels"]["added-by-someone"] = "x"
    current["metadata"]["labels"]["kept"] = "live"
    current["metadata"]["annotations"]["sidecar.example/inject"] = "true"
    after = make_canary(
        canary={"labels": {"new": "2", "kept": "from-canary"}},
        unmanagedMetadata={"labels": ["kept", "absent"],
                           "annotations": ["sidecar.example/inject"]},
    )
    result = updated_service(current, build(after, "canary"), canary=after)
    assert result["metadata"]["labels"] == {"app": "podinfo-canary", "new": "2", "kept": "live"}
    assert result["metadata"]["annotations"] == {**TOOLKIT, "sidecar.example/inject": "true"}
    assert result["spec"] == current["spec"]


def test_an_owned_service_of_a_recreated_canary_is_adopted() -> None:
    canary = make_canary()
    current = stored(build(canary, "canary"))
    other = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "cm"}
    current["metadata"]["ownerReferences"] = [other, {**OWNER, "uid": "old-uid"}]
    result = updated_service(current, build(canary, "canary"), canary=canary)
    assert result["metadata"]["ownerReferences"] == [other, OWNER]


def test_traffic_distribution_follows_an_owned_service_only() -> None:
    canary = make_canary(trafficDistribution="PreferClose")
    owned = stored(build(make_canary(), "canary"))
    assert updated_service(owned, build(canary, "canary"), canary=canary)["spec"][
        "trafficDistribution"] == "PreferClose"
    unset = updated_service(stored(build(canary, "canary")), build(make_canary(), "canary"),
                            canary=make_canary())
    assert "trafficDistribution" not in unset["spec"]
    user = stored(build(make_canary(), "apex"))
    del user["metadata"]["ownerReferences"]
    assert "trafficDistribution" not in updated_service(
        user, build(canary, "apex"), canary=canary)["spec"]


def test_another_canarys_service_is_treated_as_a_users() -> None:
    canary = make_canary(apex={"labels": {"tier": "edge"}})
    theirs = stored(build(make_canary(canary_name="other"), "apex"))
    theirs["spec"]["selector"] = {"app": "other"}
    result = updated_service(theirs, build(canary, "apex"), canary=canary)
    assert result["spec"]["selector"] == {"app": "podinfo-primary"}
    assert result["metadata"]["labels"] == {"app": "podinfo"}
    assert result["metadata"]["ownerReferences"][0]["name"] == "other"


# -- reverted_service (finalize) ----------------------------------------------------------------


def user_apex(**annotations: str) -> dict[str, Any]:
    return stored({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "podinfo", "namespace": "test", "labels": {"team": "web"},
                     "annotations": {**annotations, **TOOLKIT}},
        "spec": {"type": "ClusterIP", "selector": {"app": "podinfo-primary"},
                 "ports": [{"name": "http", "protocol": "TCP", "port": 9898,
                            "targetPort": 9898}]},
    })


def test_revert_restores_the_selector_kubectl_applied() -> None:
    applied = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "podinfo", "namespace": "test"},
               "spec": {"selector": {"app": "podinfo", "tier": "web"}, "ports": [{"port": 80}]}}
    current = user_apex(**{KUBECTL_LAST_APPLIED: json.dumps(applied)})
    result = reverted_service(current, canary=make_canary(), label="app", label_value="podinfo",
                              ports={})
    expected = copy.deepcopy(current)
    expected["spec"]["selector"] = {"app": "podinfo", "tier": "web"}
    assert result == expected  # the selector only: kubectl owns the rest


def test_revert_without_a_selector_in_the_applied_manifest_clears_it() -> None:
    applied = {"apiVersion": "v1", "kind": "Service", "spec": {"ports": [{"port": 80}]}}
    current = user_apex(**{KUBECTL_LAST_APPLIED: json.dumps(applied)})
    result = reverted_service(current, canary=make_canary(), label="app", label_value="podinfo",
                              ports={})
    assert "selector" not in result["spec"]


def test_revert_without_kubectl_points_at_the_targets_pods() -> None:
    canary = make_canary(target="podinfo")
    result = reverted_service(user_apex(), canary=canary, label="app",
                              label_value="podinfo-app", ports={})
    assert result["spec"]["selector"] == {"app": "podinfo-app"}
    assert result["metadata"]["labels"] == {"team": "web"}


@pytest.mark.parametrize("text", ["", "{not json", "[1, 2]"])
def test_revert_refuses_a_broken_annotation(text: str) -> None:
    with pytest.raises(RouterError, match="last-applied-configuration"):
        reverted_service(user_apex(**{KUBECTL_LAST_APPLIED: text}), canary=make_canary(),
                         label="app", label_value="podinfo", ports={})


# -- router selection ---------------------------------------------------------------------------


def test_service_targets_get_the_noop_router() -> None:
    kwargs: dict[str, Any] = {"store": object(), "label": "app", "label_value": "podinfo",
                              "ports": {}}
    assert isinstance(new_kubernetes_router(kind="Service", **kwargs), KubernetesNoopRouter)
    for kind in ("Deployment", "DaemonSet"):
        assert isinstance(new_kubernetes_router(kind=kind, **kwargs), KubernetesDefaultRouter)


async def test_noop_router_does_nothing() -> None:
    router = KubernetesNoopRouter()
    canary = make_canary()
    before = canary.to_dict()
    await router.initialize(canary)
    await router.reconcile(canary)
    await router.finalize(canary)
    assert canary.to_dict() == before
