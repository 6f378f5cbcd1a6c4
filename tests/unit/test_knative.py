"""The Knative router's pure builders against spec §3 and the golden corpus.

Each test checks one thing Flagger 1.44 writes or reads: ``spec.traffic`` (the latest revision
at the canary's weight, the annotated primary revision pinned at the primary's), the annotation
``reconcile`` adds and ``finalize`` removes, and the split read back from ``status.traffic``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from flaggerpy import kube, plugins
from flaggerpy.canary import verify
from flaggerpy.errors import PluginError, RouterError
from flaggerpy.models.canary import Canary
from flaggerpy.providers.knative import (
    PRIMARY_REVISION_ANNOTATION,
    KnativeRouter,
    build_service_traffic,
    read_weights,
    with_primary_annotation,
    without_primary_annotation,
)
from flaggerpy.routing import ProviderContext, Router, TargetKind, Weights, capabilities_of
from flaggerpy.settings import Settings

GOLDEN = Path(__file__).resolve().parents[3] / "shared/reference/golden/knative"
TEMPLATE = {"spec": {"containers": [{"image": "ghcr.io/stefanprodan/podinfo:6.0.1"}]}}


def service(*, primary: str | None = "podinfo-00001", latest: str = "podinfo-00002",
            status_traffic: list[dict[str, Any]] | None = None,
            annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "podinfo", "namespace": "test",
                            "annotations": dict(annotations or {})}
    if primary is not None:
        meta["annotations"][PRIMARY_REVISION_ANNOTATION] = primary
    return {
        "apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": meta,
        "spec": {"template": copy.deepcopy(TEMPLATE)},
        "status": {"latestCreatedRevisionName": latest,
                   "traffic": status_traffic if status_traffic is not None else []},
    }


def make_canary(target: dict[str, str] | None = None) -> Canary:
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test", "uid": "u-1"},
        "spec": {
            "provider": "knative",
            "targetRef": target or {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                                    "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {"interval": "10s", "threshold": 2, "stepWeight": 20, "maxWeight": 40},
        },
    })


def golden_service(step: str) -> dict[str, Any]:
    data = yaml.safe_load((GOLDEN / "canary-stepweight/steps" / step).read_text())
    [obj] = [o for o in data["objects"] if o["kind"] == "Service"]
    return obj  # type: ignore[no-any-return]


# -- spec.traffic ---------------------------------------------------------------------------------


def test_set_routes_writes_flaggers_traffic_latest_first_then_the_pinned_primary() -> None:
    built = build_service_traffic(service(), Weights(primary=80, canary=20))
    assert built["spec"]["traffic"] == [
        {"latestRevision": True, "percent": 20},
        {"revisionName": "podinfo-00001", "percent": 80},
    ]


@pytest.mark.skipif(not GOLDEN.is_dir(), reason="golden corpus not present")
@pytest.mark.parametrize(("step", "weights"), [
    ("03.yaml", Weights(primary=80, canary=20)),
    ("05.yaml", Weights(primary=60, canary=40)),
])
def test_the_traffic_is_the_golden_one(step: str, weights: Weights) -> None:
    expected = golden_service(step)
    before = copy.deepcopy(expected)
    before["spec"]["traffic"] = [{"latestRevision": True, "percent": 0},
                                 {"revisionName": "podinfo-00001", "percent": 100}]
    assert build_service_traffic(before, weights) == expected


def test_only_the_traffic_changes_template_and_metadata_stay() -> None:
    current = service(annotations={"team": "a"})
    built = build_service_traffic(current, Weights.all_canary())
    assert built["spec"]["template"] == current["spec"]["template"]
    assert built["metadata"] == current["metadata"]
    assert "ownerReferences" not in built["metadata"]
    assert current["spec"].get("traffic") is None  # the input is left alone


def test_set_routes_needs_the_primary_annotation() -> None:
    with pytest.raises(RouterError, match=r"Knative Service podinfo\.test annotation not found"):
        build_service_traffic(service(primary=None), Weights.all_primary())


# -- the annotation -------------------------------------------------------------------------------


def test_reconcile_adds_a_missing_annotation_naming_the_latest_created_revision() -> None:
    built = with_primary_annotation(service(primary=None, annotations={"team": "a"}))
    assert built is not None
    assert built["metadata"]["annotations"] == {"team": "a",
                                                PRIMARY_REVISION_ANNOTATION: "podinfo-00002"}


def test_reconcile_keeps_an_existing_annotation_and_waits_for_a_first_revision() -> None:
    assert with_primary_annotation(service()) is None
    assert with_primary_annotation(service(primary=None, latest="")) is None


def test_finalize_removes_the_annotation_only() -> None:
    current = service(annotations={"team": "a"})
    current["spec"]["traffic"] = [{"latestRevision": True, "percent": 30},
                                  {"revisionName": "podinfo-00001", "percent": 70}]
    built = without_primary_annotation(current)
    assert built is not None
    assert built["metadata"]["annotations"] == {"team": "a"}
    assert built["spec"] == current["spec"]
    assert without_primary_annotation(built) is None


# -- status.traffic -------------------------------------------------------------------------------


@pytest.mark.parametrize("canary_weight", [0, 20, 40, 100])
def test_the_weights_read_back_are_those_knative_routes(canary_weight: int) -> None:
    traffic = [
        {"latestRevision": True, "percent": canary_weight, "revisionName": "podinfo-00002"},
        {"latestRevision": False, "percent": 100 - canary_weight,
         "revisionName": "podinfo-00001"},
    ]
    assert read_weights(service(status_traffic=traffic)) == Weights.to_canary(canary_weight)


def test_when_the_latest_revision_is_the_primary_the_canary_share_still_decides() -> None:
    # After the promotion moved the annotation: Flagger reads 100/100 here.
    traffic = [{"latestRevision": True, "percent": 100, "revisionName": "podinfo-00002"},
               {"latestRevision": False, "percent": 0, "revisionName": "podinfo-00001"}]
    promoted = service(primary="podinfo-00002", status_traffic=traffic)
    assert read_weights(promoted) == Weights.all_canary()
    # After initialization: Flagger reads 0/0.
    traffic = [{"latestRevision": True, "percent": 0, "revisionName": "podinfo-00001"},
               {"latestRevision": False, "percent": 100, "revisionName": "podinfo-00001"}]
    initialized = service(latest="podinfo-00001", status_traffic=traffic)
    assert read_weights(initialized) == Weights.all_primary()


@pytest.mark.parametrize(("traffic", "message"), [
    ([], "traffic spec invalid"),
    ([{"latestRevision": True, "percent": 0, "revisionName": "podinfo-00002"}],
     "traffic spec invalid"),
    ([{"latestRevision": False, "percent": 100, "revisionName": "podinfo-00001"}],
     "traffic spec invalid"),
    ([{"latestRevision": True, "revisionName": "podinfo-00002"},
      {"latestRevision": False, "percent": 100, "revisionName": "podinfo-00001"}],
     "canary revision traffic percent does not exist"),
    ([{"latestRevision": True, "percent": 0, "revisionName": "podinfo-00002"},
      {"latestRevision": False, "revisionName": "podinfo-00001"}],
     "primary revision traffic percent does not exist"),
    ([{"latestRevision": True, "percent": 150, "revisionName": "podinfo-00002"},
      {"latestRevision": False, "percent": 0, "revisionName": "podinfo-00001"}],
     "outside 0..100"),
])
def test_an_unreadable_split_is_a_router_error(traffic: list[dict[str, Any]],
                                                message: str) -> None:
    with pytest.raises(RouterError, match=message):
        read_weights(service(status_traffic=traffic))


def test_reading_needs_the_annotation() -> None:
    with pytest.raises(RouterError, match="annotation not found"):
        read_weights(service(primary=None))


# -- the router's declaration ---------------------------------------------------------------------


def test_the_router_is_registered_and_declares_knative_services_only() -> None:
    plugin = plugins.routers.get("knative")
    assert plugin.factory is KnativeRouter
    ctx = ProviderContext(store=kube.ObjectStore(None), settings=Settings(),  # no I/O here
                          log=structlog.get_logger())
    assert isinstance(KnativeRouter(ctx=ctx, variant=""), Router)
    with pytest.raises(PluginError, match="knative:v2"):
        KnativeRouter(ctx=ctx, variant="v2")
    capabilities = capabilities_of(KnativeRouter)
    assert capabilities.target_kinds == frozenset({TargetKind("Service",
                                                              group="serving.knative.dev")})
    assert not capabilities.needs_services
    assert not capabilities.ab_matches
    assert not capabilities.mirroring
    assert not capabilities.session_affinity


def test_the_knative_provider_and_a_knative_target_go_together() -> None:
    capabilities = capabilities_of(KnativeRouter)
    assert verify.target_matches_router(make_canary(), provider="knative",
                                        capabilities=capabilities) == []
    deployment = make_canary({"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"})
    [problem] = verify.target_matches_router(deployment, provider="knative",
                                             capabilities=capabilities)
    assert problem.startswith("provider 'knative' does not route a apps/v1 Deployment target")
