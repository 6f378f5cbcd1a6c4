"""The Knative Service target controller (Flagger's ``KnativeController``, spec §2.5).

Pure helpers field by field, then the controller on an in-memory store: what initialization,
promotion and the readiness checks read and write, and that a steady call writes nothing.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from flaggerpy import kube
from flaggerpy.canary import targets, verify
from flaggerpy.canary.knative_services import (
    KNATIVE_REVISIONS,
    KNATIVE_SERVICES,
    PRIMARY_REVISION_ANNOTATION,
    KnativeServiceController,
    initialized_service,
    promoted_service,
    revision_is_ready,
)
from flaggerpy.canary.metrics_analysis import metric_model
from flaggerpy.canary.workloads import NotReadyError, TargetNotFoundError
from flaggerpy.models.canary import Canary
from flaggerpy.settings import Settings


def knative_service(*, latest: str = "podinfo-00001",
                    annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "podinfo", "namespace": "test",
                     **({"annotations": annotations} if annotations is not None else {})},
        "spec": {"template": {"spec": {"containers": [{"image": "podinfo:6.0.0"}]}}},
        "status": {"latestCreatedRevisionName": latest} if latest else {},
    }


def revision(name: str, *, ready: str = "True", generation: int = 1,
             observed: int = 1) -> dict[str, Any]:
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Revision",
            "metadata": {"name": name, "namespace": "test", "generation": generation},
            "status": {"observedGeneration": observed,
                       "conditions": [{"type": "Ready", "status": ready}]}}


def make_canary(*, phase: str | None = None, last_applied: str | None = None) -> Canary:
    obj: dict[str, Any] = {
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test", "uid": "u-1"},
        "spec": {"provider": "knative",
                 "targetRef": {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                               "name": "podinfo"},
                 "service": {"port": 9898},
                 "analysis": {"interval": "10s", "threshold": 2}},
    }
    if phase is not None or last_applied is not None:
        obj["status"] = {"phase": phase or "", "lastAppliedSpec": last_applied}
    return Canary.model_validate(obj)


class MemoryStore:
    """Objects by (kind, name); ``apply`` builds and records writes as the ObjectStore does."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.objects = {(o["kind"], o["metadata"]["name"]): o for o in objects}
        self.writes: list[str] = []

    async def get(self, resource: kube.Resource, *, namespace: str, name: str) -> Any:
        return self.objects.get((resource.kind, name))

    async def apply(self, resource: kube.Resource, *, namespace: str, name: str,
                    build: Any, owner: Any = None) -> kube.Applied:
        current = self.objects.get((resource.kind, name))
        wanted = build(copy.deepcopy(current) if current is not None else None)
        if wanted is None or wanted == current:
            return kube.Applied(kube.OperationResult.UNCHANGED, current)
        self.objects[(resource.kind, name)] = wanted
        self.writes.append(name)
        return kube.Applied(kube.OperationResult.UPDATED, wanted)


def controller(store: MemoryStore) -> KnativeServiceController:
    return KnativeServiceController(store=store,  # type: ignore[arg-type]
                                    settings=Settings())


# -- pure helpers ---------------------------------------------------------------------------------


def test_initialization_names_the_latest_revision_primary_and_pins_all_traffic_on_it() -> None:
    built = initialized_service(knative_service(annotations={"team": "a"}))
    assert built["metadata"]["annotations"] == {"team": "a",
                                                PRIMARY_REVISION_ANNOTATION: "podinfo-00001"}
    assert built["spec"]["traffic"] == [{"latestRevision": True, "percent": 0},
                                        {"revisionName": "podinfo-00001", "percent": 100}]
    assert built["spec"]["template"] == knative_service()["spec"]["template"]


def test_promotion_moves_the_annotation_and_leaves_the_traffic() -> None:
    current = initialized_service(knative_service())
    current["status"]["latestCreatedRevisionName"] = "podinfo-00002"
    built = promoted_service(current)
    assert built["metadata"]["annotations"][PRIMARY_REVISION_ANNOTATION] == "podinfo-00002"
    assert built["spec"] == current["spec"]


@pytest.mark.parametrize(("rev", "ready"), [
    (revision("r"), True),
    (revision("r", ready="False"), False),
    (revision("r", ready="Unknown"), False),
    (revision("r", generation=2, observed=1), False),
    ({"metadata": {"name": "r", "generation": 1}}, False),
])
def test_a_revision_is_ready_when_ready_is_true_for_its_generation(
        rev: dict[str, Any], ready: bool) -> None:
    assert revision_is_ready(rev) is ready


def test_a_knative_target_gets_the_knative_controller() -> None:
    store = MemoryStore()
    chosen = targets.workload_controller(make_canary(), store=store,  # type: ignore[arg-type]
                                         settings=Settings())
    assert isinstance(chosen, KnativeServiceController)
    assert KNATIVE_SERVICES.group == KNATIVE_REVISIONS.group == "serving.knative.dev"


# -- the controller -------------------------------------------------------------------------------


async def test_initialize_writes_once_and_only_while_initializing() -> None:
    store = MemoryStore(knative_service())
    ctrl = controller(store)
    await ctrl.initialize(make_canary(), wait_primary_ready=True)
    await ctrl.initialize(make_canary(phase="Initializing"), wait_primary_ready=True)
    assert store.writes == ["podinfo"]
    service = store.objects[("Service", "podinfo")]
    assert service["metadata"]["annotations"] == {PRIMARY_REVISION_ANNOTATION: "podinfo-00001"}
    # Later phases leave the Service to the router, even with a new revision.
    service["status"]["latestCreatedRevisionName"] = "podinfo-00002"
    await ctrl.initialize(make_canary(phase="Progressing"), wait_primary_ready=False)
    assert store.writes == ["podinfo"]


async def test_initialize_waits_for_knative_to_create_a_revision() -> None:
    store = MemoryStore(knative_service(latest=""))
    with pytest.raises(NotReadyError, match="has no latest created revision yet"):
        await controller(store).initialize(make_canary(), wait_primary_ready=True)
    assert store.writes == []


async def test_a_missing_service_is_flaggers_get_error() -> None:
    with pytest.raises(TargetNotFoundError,
                       match=re.escape('Knative Service podinfo.test get query error: '
                                       'services.serving.knative.dev "podinfo" not found')):
        await controller(MemoryStore()).get_metadata(make_canary())


async def test_metadata_has_no_selector_label_and_no_ports() -> None:
    metadata = await controller(MemoryStore(knative_service())).get_metadata(make_canary())
    assert (metadata.label, metadata.label_value, metadata.ports) == ("", "", {})


async def test_primary_readiness_is_the_annotated_revisions() -> None:
    annotated = knative_service(latest="podinfo-00002",
                                annotations={PRIMARY_REVISION_ANNOTATION: "podinfo-00001"})
    ctrl = controller(MemoryStore(annotated, revision("podinfo-00001"),
                                  revision("podinfo-00002", ready="False")))
    await ctrl.is_primary_ready(make_canary())
    with pytest.raises(NotReadyError, match=r"Knative Revision podinfo-00002\.test is not ready"):
        await ctrl.is_canary_ready(make_canary())
    with pytest.raises(NotReadyError, match="primary revision annotation not found"):
        await controller(MemoryStore(knative_service())).is_primary_ready(make_canary())
    with pytest.raises(NotReadyError) as missing:
        await controller(MemoryStore(annotated)).is_primary_ready(make_canary())
    assert missing.value.retriable
    assert "Knative Revision podinfo-00001.test get query error" in missing.value.message


async def test_promote_moves_the_annotation_once() -> None:
    store = MemoryStore(knative_service(
        latest="podinfo-00002", annotations={PRIMARY_REVISION_ANNOTATION: "podinfo-00001"}))
    ctrl = controller(store)
    await ctrl.promote(make_canary(phase="Promoting"))
    await ctrl.promote(make_canary(phase="Promoting"))
    assert store.writes == ["podinfo"]
    annotations = store.objects[("Service", "podinfo")]["metadata"]["annotations"]
    assert annotations == {PRIMARY_REVISION_ANNOTATION: "podinfo-00002"}


async def test_a_new_revision_is_a_new_target_spec() -> None:
    store = MemoryStore(knative_service())
    ctrl = controller(store)
    first = await ctrl.target_hash(make_canary())
    canary = make_canary(phase="Succeeded", last_applied=first)
    assert not await ctrl.has_target_changed(canary)
    store.objects[("Service", "podinfo")]["status"]["latestCreatedRevisionName"] = "podinfo-00002"
    assert await ctrl.target_hash(canary) != first
    assert await ctrl.has_target_changed(canary)
    assert not await ctrl.have_dependencies_changed(canary)
    assert await ctrl.tracked_configs(canary) == {}


async def test_a_flagger_hash_compares_the_latest_revision_with_the_primary() -> None:
    store = MemoryStore(knative_service(
        annotations={PRIMARY_REVISION_ANNOTATION: "podinfo-00001"}))
    canary = make_canary(phase="Succeeded", last_applied="5498f4fcd6")  # Flagger's hash
    assert not await controller(store).has_target_changed(canary)
    store.objects[("Service", "podinfo")]["status"]["latestCreatedRevisionName"] = "podinfo-00002"
    assert await controller(store).has_target_changed(canary)


async def test_scaling_and_finalize_write_nothing() -> None:
    store = MemoryStore(knative_service())
    ctrl = controller(store)
    canary = make_canary(phase="Succeeded")
    await ctrl.scale_to_zero(canary)
    await ctrl.scale_from_zero(canary)
    await ctrl.finalize(canary)
    assert store.writes == []


async def test_the_metrics_route_is_the_latest_created_revision() -> None:
    store = MemoryStore(knative_service(latest="podinfo-00002"))
    canary = make_canary(phase="Progressing")
    route = await controller(store).latest_revision(canary)
    assert route == "podinfo-00002"
    assert metric_model(canary, interval="1m", route=route).route == "podinfo-00002"
    assert metric_model(canary, interval="1m").route == "podinfo"  # other targets: the name


def test_a_knative_target_takes_no_autoscaler_ref() -> None:
    plain = make_canary()
    assert verify.knative_autoscaler(plain) == []
    scaled = Canary.model_validate({**plain.model_dump(by_alias=True, exclude_none=True),
                                    "spec": {**plain.model_dump(by_alias=True,
                                                                exclude_none=True)["spec"],
                                             "autoscalerRef": {
                                                 "apiVersion": "autoscaling/v2",
                                                 "kind": "HorizontalPodAutoscaler",
                                                 "name": "podinfo"}}})
    [problem] = verify.problems(scaled, provider="knative", capabilities=None,
                                no_cross_namespace_refs=False)
    assert problem.startswith("spec.autoscalerRef cannot be used with a Knative Service target")
