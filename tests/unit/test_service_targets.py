"""Service targets, pure half: the copies, the promotion, the revision hash; and the choice of
controller and of the engine's Services for a ``targetRef`` of kind Service."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from flaggerpy import kube
from flaggerpy.canary import services, targets
from flaggerpy.canary.service_targets import (
    KUBECTL_LAST_APPLIED,
    ServiceTargetController,
    copied_service,
    promoted_service,
    service_spec_hash,
    updated_copy,
)
from flaggerpy.canary.workloads import (
    TargetNotFoundError,
    UnsupportedTargetError,
    WorkloadMetadata,
)
from flaggerpy.kube.objects import strip_for_create
from flaggerpy.models import Canary, CanaryStatus
from flaggerpy.settings import Settings

OWNER = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo",
         "uid": "0c8a1d7e", "controller": True, "blockOwnerDeletion": True}


def make_canary(api_version: str = "v1", kind: str = "Service") -> Canary:
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test", "uid": "0c8a1d7e"},
        "spec": {
            "targetRef": {"apiVersion": api_version, "kind": kind, "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {"interval": "10s", "threshold": 2, "stepWeight": 10},
        },
    })


def make_service(**spec: Any) -> dict[str, Any]:
    """A target Service as the API server returns it: allocated fields, system metadata."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "podinfo", "namespace": "test", "uid": "s1", "resourceVersion": "100",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "managedFields": [{"manager": "kubectl"}],
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "x",
                                 "uid": "c1"}],
            "finalizers": ["example.com/keep"],
            "labels": {"app": "podinfo", "team": "a", "kustomize.toolkit.fluxcd.io/name": "x"},
            "annotations": {KUBECTL_LAST_APPLIED: '{"kind":"Service"}',
                            "app.kubernetes.io/instance": "web",
                            "prometheus.io/scrape": "true"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.0.0.10",
            "clusterIPs": ["10.0.0.10"],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "sessionAffinity": "None",
            "internalTrafficPolicy": "Cluster",
            "selector": {"app": "podinfo"},
            "ports": [{"name": "http", "port": 9898, "protocol": "TCP", "targetPort": 9898}],
            **spec,
        },
        "status": {"loadBalancer": {}},
    }


def stored_copy(name: str, target: dict[str, Any], *, cluster_ip: str) -> dict[str, Any]:
    """A copy of ``target`` as the API server stores it after creating it under ``name``."""
    body = copied_service(target, name=name, owner=OWNER)
    body["metadata"].update(uid=f"u-{name}", resourceVersion="7",
                            creationTimestamp="2026-01-02T00:00:00Z")
    body["spec"].update(clusterIP=cluster_ip, clusterIPs=[cluster_ip])
    body["status"] = {"loadBalancer": {}}
    return body


# -- copies --------------------------------------------------------------------------------------


def test_a_new_copy_is_the_target_under_its_name_owned_by_the_canary() -> None:
    target = make_service()
    body = copied_service(target, name="podinfo-canary", owner=OWNER)

    assert body["apiVersion"] == "v1"
    assert body["kind"] == "Service"
    meta = body["metadata"]
    assert meta["name"] == "podinfo-canary"
    assert meta["namespace"] == "test"
    assert meta["labels"] == target["metadata"]["labels"]  # all of them, as Flagger copies
    assert meta["annotations"] == {"app.kubernetes.io/instance": "web",
                                   "prometheus.io/scrape": "true"}  # no last-applied
    assert meta["ownerReferences"] == [OWNER]  # the target's own are not carried over
    for system in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "finalizers"):
        assert system not in meta, system
    assert "status" not in body


def test_a_new_copy_gets_its_own_cluster_ip_and_node_ports() -> None:
    target = make_service(
        type="NodePort", externalTrafficPolicy="Local", healthCheckNodePort=30500,
        ports=[{"name": "http", "port": 9898, "protocol": "TCP", "targetPort": 9898,
                "nodePort": 30080}])
    spec = copied_service(target, name="podinfo-primary", owner=OWNER)["spec"]

    for allocated in ("clusterIP", "clusterIPs", "healthCheckNodePort"):
        assert allocated not in spec, allocated
    assert spec["ports"] == [{"name": "http", "port": 9898, "protocol": "TCP",
                              "targetPort": 9898}]
    assert spec["type"] == "NodePort"
    assert spec["externalTrafficPolicy"] == "Local"
    assert spec["selector"] == {"app": "podinfo"}
    assert spec["ipFamilies"] == ["IPv4"]
    assert spec["sessionAffinity"] == "None"


def test_a_headless_target_stays_headless() -> None:
    # "None" is a choice, not an allocation: the copies are headless too, and stay so.
    target = make_service(clusterIP="None", clusterIPs=["None"])
    spec = copied_service(target, name="podinfo-canary", owner=OWNER)["spec"]
    assert (spec["clusterIP"], spec["clusterIPs"]) == ("None", ["None"])
    current = stored_copy("podinfo-canary", target, cluster_ip="None")
    assert updated_copy(current, target, owner=OWNER) == current


def test_a_copy_without_annotations_has_none() -> None:
    target = make_service()
    target["metadata"]["annotations"] = {KUBECTL_LAST_APPLIED: "{}"}
    assert "annotations" not in copied_service(target, name="c", owner=OWNER)["metadata"]


def test_an_up_to_date_canary_copy_is_left_as_it_is() -> None:
    target = make_service()
    current = stored_copy("podinfo-canary", target, cluster_ip="10.0.0.20")
    assert updated_copy(current, target, owner=OWNER) == current


def test_the_canary_copy_follows_the_target_keeping_its_own_identity() -> None:
    target = make_service()
    current = stored_copy("podinfo-canary", target, cluster_ip="10.0.0.20")
    current["metadata"]["ownerReferences"].append({"kind": "Other", "name": "o", "uid": "o1"})
    changed = copy.deepcopy(target)
    changed["spec"]["selector"] = {"app": "podinfo", "version": "v2"}
    changed["spec"]["ports"].append({"name": "grpc", "port": 9999, "protocol": "TCP",
                                     "targetPort": 9999})
    changed["metadata"]["labels"] = {"app": "podinfo", "version": "v2"}
    changed["metadata"]["annotations"] = {KUBECTL_LAST_APPLIED: "{}"}

    updated = updated_copy(current, changed, owner=OWNER)

    assert updated["spec"]["selector"] == {"app": "podinfo", "version": "v2"}
    assert [p["name"] for p in updated["spec"]["ports"]] == ["http", "grpc"]
    assert updated["spec"]["clusterIP"] == "10.0.0.20"  # immutable: the copy's own
    assert updated["spec"]["clusterIPs"] == ["10.0.0.20"]
    assert updated["metadata"]["labels"] == {"app": "podinfo", "version": "v2"}
    assert "annotations" not in updated["metadata"]
    assert updated["metadata"]["ownerReferences"] == [OWNER]  # Flagger's update replaces them
    for kept in ("name", "uid", "resourceVersion", "creationTimestamp"):
        assert updated["metadata"][kept] == current["metadata"][kept], kept
    assert updated["status"] == current["status"]
    assert current["spec"]["selector"] == {"app": "podinfo"}  # pure: the input is unchanged


def test_an_updated_copy_keeps_its_node_ports_matched_by_port() -> None:
    target = make_service(type="NodePort", ports=[
        {"name": "http", "port": 9898, "protocol": "TCP", "targetPort": 9898, "nodePort": 30080},
        {"name": "grpc", "port": 9999, "protocol": "TCP", "targetPort": 9999, "nodePort": 30081}])
    current = stored_copy("podinfo-canary", target, cluster_ip="10.0.0.20")
    current["spec"]["ports"][0]["nodePort"] = 31000
    current["spec"]["ports"][1]["nodePort"] = 31001
    changed = copy.deepcopy(target)
    changed["spec"]["ports"].append({"name": "admin", "port": 8080, "protocol": "TCP",
                                     "targetPort": 8080, "nodePort": 30082})

    ports = updated_copy(current, changed, owner=OWNER)["spec"]["ports"]

    assert [(p["name"], p.get("nodePort")) for p in ports] == [
        ("http", 31000), ("grpc", 31001), ("admin", None)]  # a new port gets its own


def test_unnamed_ports_are_matched_by_number_and_protocol() -> None:
    target = make_service(type="NodePort", ports=[
        {"port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}])
    current = stored_copy("podinfo-canary", target, cluster_ip="10.0.0.20")
    current["spec"]["ports"][0]["nodePort"] = 31000
    assert updated_copy(current, target, owner=OWNER)["spec"]["ports"][0]["nodePort"] == 31000


# -- promotion -----------------------------------------------------------------------------------


def test_promotion_copies_the_spec_and_the_prefixed_metadata_onto_the_primary() -> None:
    target = make_service()
    primary = stored_copy("podinfo-primary", target, cluster_ip="10.0.0.30")
    primary["metadata"]["labels"]["stale"] = "yes"
    changed = copy.deepcopy(target)
    changed["spec"]["selector"] = {"app": "podinfo", "version": "v2"}

    promoted = promoted_service(primary, changed, include_label_prefix=("app", "team"))

    assert promoted["spec"]["selector"] == {"app": "podinfo", "version": "v2"}
    assert promoted["spec"]["clusterIP"] == "10.0.0.30"
    assert promoted["metadata"]["name"] == "podinfo-primary"
    assert promoted["metadata"]["uid"] == "u-podinfo-primary"
    # exactly the target's that match a prefix, Flux's never: "stale" goes
    assert promoted["metadata"]["labels"] == {"app": "podinfo", "team": "a"}
    assert promoted["metadata"]["annotations"] == {"app.kubernetes.io/instance": "web"}
    assert promoted["metadata"]["ownerReferences"] == [OWNER]  # still the Canary's


def test_promotion_with_no_prefixes_copies_no_metadata() -> None:
    target = make_service()
    primary = stored_copy("podinfo-primary", target, cluster_ip="10.0.0.30")
    promoted = promoted_service(primary, target, include_label_prefix=())
    assert "labels" not in promoted["metadata"]
    assert "annotations" not in promoted["metadata"]


def test_promotion_with_star_copies_everything_but_flux_keys() -> None:
    target = make_service()
    primary = stored_copy("podinfo-primary", target, cluster_ip="10.0.0.30")
    promoted = promoted_service(primary, target, include_label_prefix=("*",))
    assert promoted["metadata"]["labels"] == {"app": "podinfo", "team": "a"}
    assert promoted["metadata"]["annotations"] == target["metadata"]["annotations"]


def test_a_promotion_already_done_changes_nothing() -> None:
    target = make_service()
    primary = stored_copy("podinfo-primary", target, cluster_ip="10.0.0.30")
    once = promoted_service(primary, target, include_label_prefix=("app",))
    assert promoted_service(once, target, include_label_prefix=("app",)) == once


# -- revision hash -------------------------------------------------------------------------------


def test_the_revision_is_the_specs_content() -> None:
    target = make_service()
    assert service_spec_hash(target) == service_spec_hash(copy.deepcopy(target))
    relabelled = copy.deepcopy(target)
    relabelled["metadata"]["labels"]["team"] = "b"
    assert service_spec_hash(relabelled) == service_spec_hash(target)  # metadata is not a revision
    recreated = make_service(clusterIP="10.0.0.99", clusterIPs=["10.0.0.99"])
    assert service_spec_hash(recreated) == service_spec_hash(target)
    changed = make_service(selector={"app": "podinfo", "version": "v2"})
    assert service_spec_hash(changed) != service_spec_hash(target)
    assert len(service_spec_hash(target)) == 16  # the form has_target_changed recognises as ours


# -- the async controller on an in-memory store ---------------------------------------------------


class MemoryStore:
    """Services by name; ``apply`` builds and records writes as the ObjectStore does."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.objects = {o["metadata"]["name"]: o for o in objects}
        self.writes: list[str] = []

    async def get(self, resource: kube.Resource, *, namespace: str, name: str) -> Any:
        return self.objects.get(name)

    async def apply(self, resource: kube.Resource, *, namespace: str, name: str,
                    build: Any, owner: Any = None) -> kube.Applied:
        current = self.objects.get(name)
        wanted = build(copy.deepcopy(current) if current is not None else None)
        if wanted is None or wanted == current:
            return kube.Applied(kube.OperationResult.UNCHANGED, current)
        if current is None:
            wanted = strip_for_create(wanted)
            wanted["metadata"]["uid"] = f"u-{name}"
            wanted["spec"]["clusterIP"] = f"10.0.0.{len(self.objects) + 20}"
        self.objects[name] = wanted
        self.writes.append(name)
        result = kube.OperationResult.CREATED if current is None else kube.OperationResult.UPDATED
        return kube.Applied(result, wanted)


def controller(store: MemoryStore, **settings: Any) -> ServiceTargetController:
    return ServiceTargetController(store=store,  # type: ignore[arg-type]
                                   settings=Settings(controller=settings))


async def test_initialize_creates_both_copies_then_writes_only_changes() -> None:
    store = MemoryStore(make_service())
    canary = make_canary()
    ctrl = controller(store)

    assert await ctrl.get_metadata(canary) == WorkloadMetadata("", "")
    await ctrl.initialize(canary, wait_primary_ready=True)
    assert store.writes == ["podinfo-canary", "podinfo-primary"]
    assert store.objects["podinfo-primary"]["metadata"]["ownerReferences"][0]["uid"] == "0c8a1d7e"

    await ctrl.initialize(canary, wait_primary_ready=False)
    assert store.writes == ["podinfo-canary", "podinfo-primary"]  # nothing changed, no write

    store.objects["podinfo"]["spec"]["selector"] = {"app": "podinfo", "version": "v2"}
    await ctrl.initialize(canary, wait_primary_ready=False)
    assert store.writes[2:] == ["podinfo-canary"]  # the primary changes at promotion only
    assert store.objects["podinfo-canary"]["spec"]["selector"]["version"] == "v2"
    assert store.objects["podinfo-primary"]["spec"]["selector"] == {"app": "podinfo"}

    await ctrl.promote(canary)
    assert store.objects["podinfo-primary"]["spec"]["selector"]["version"] == "v2"
    await ctrl.promote(canary)
    assert store.writes[3:] == ["podinfo-primary"]  # a repeated promotion writes nothing


async def test_a_new_revision_is_a_change_of_the_targets_spec() -> None:
    store = MemoryStore(make_service())
    canary = make_canary()
    ctrl = controller(store)
    applied = await ctrl.target_hash(canary)
    canary.status = CanaryStatus.model_validate(
        {"phase": "Succeeded", "lastAppliedSpec": applied, "lastPromotedSpec": applied})
    assert not await ctrl.has_target_changed(canary)
    assert not await ctrl.have_dependencies_changed(canary)
    assert await ctrl.tracked_configs(canary) == {}

    store.objects["podinfo"]["spec"]["ports"][0]["port"] = 8080
    assert await ctrl.has_target_changed(canary)


async def test_a_hash_written_by_flagger_is_judged_against_the_primary() -> None:
    store = MemoryStore(make_service())
    canary = make_canary()
    ctrl = controller(store)
    await ctrl.initialize(canary, wait_primary_ready=True)
    canary.status = CanaryStatus.model_validate(
        {"phase": "Succeeded", "lastAppliedSpec": "5d7b8f9c4", "lastPromotedSpec": "5d7b8f9c4"})
    assert not await ctrl.has_target_changed(canary)
    store.objects["podinfo"]["spec"]["selector"] = {"app": "other"}
    assert await ctrl.has_target_changed(canary)


async def test_a_missing_target_says_so_in_flaggers_words() -> None:
    ctrl = controller(MemoryStore())
    with pytest.raises(TargetNotFoundError,
                       match=r'^service podinfo\.test get query error: '
                             r'services "podinfo" not found$'):
        await ctrl.get_metadata(make_canary())


async def test_promoting_without_a_primary_fails_readably() -> None:
    ctrl = controller(MemoryStore(make_service()))
    with pytest.raises(TargetNotFoundError, match="podinfo-primary"):
        await ctrl.promote(make_canary())


# -- selection -----------------------------------------------------------------------------------


def test_a_core_service_target_gets_the_service_controller() -> None:
    chosen = targets.workload_controller(make_canary(), store=MemoryStore(),  # type: ignore[arg-type]
                                         settings=Settings())
    assert isinstance(chosen, ServiceTargetController)


def test_a_knative_service_target_does_not() -> None:
    knative = make_canary(api_version="serving.knative.dev/v1")
    try:
        chosen = targets.workload_controller(knative, store=MemoryStore(),  # type: ignore[arg-type]
                                             settings=Settings())
    except UnsupportedTargetError:
        return  # no Knative controller installed: refused, not mistaken for a core Service
    assert not isinstance(chosen, ServiceTargetController)


def test_the_engine_generates_no_services_for_a_service_target() -> None:
    router = services.new_kubernetes_router(kind="Service", store=MemoryStore(),  # type: ignore[arg-type]
                                            label="", label_value="", ports={})
    assert isinstance(router, services.KubernetesNoopRouter)
