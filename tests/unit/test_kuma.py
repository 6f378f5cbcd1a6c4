"""The Kuma router's pure builders against spec §3 and the golden corpus.

Each test checks one thing Flagger 1.44 writes: the TrafficRoute's name, mesh, metadata (no
ownerReference: it is cluster-scoped), the service tags, the split, and reading the split back.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import structlog

from flaggerpy import kube, plugins
from flaggerpy.errors import PluginError, RouterError, TerminalError
from flaggerpy.models.canary import Canary
from flaggerpy.providers import kuma
from flaggerpy.providers.kuma import (
    TRAFFIC_ROUTES,
    KumaRouter,
    build_traffic_route,
    kept_weights,
    mesh_of,
    read_weights,
    service_tag,
)
from flaggerpy.routing import ProviderContext, Router, Weights, capabilities_of
from flaggerpy.settings import Settings

TOOLKIT = {
    "kustomize.toolkit.fluxcd.io/reconcile": "disabled",
    "helm.toolkit.fluxcd.io/driftDetection": "disabled",
}


def make_canary(
        *,
        namespace: str = "test",
        annotations: dict[str, str] | None = None,
        service: dict[str, Any] | None = None,
) -> Canary:
    metadata: dict[str, Any] = {"name": "podinfo", "namespace": namespace,
                                "uid": "3d8c1d47-8a7f-4a52-9a53-5b0a3cbd0c11"}
    if annotations is not None:
        metadata["annotations"] = annotations
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": metadata,
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898, **(service or {})},
            "analysis": {"interval": "10s", "threshold": 2, "stepWeight": 20, "maxWeight": 40},
        },
    })


def split(primary: int, canary: int, *, ns: str = "test", port: int = 9898) -> dict[str, Any]:
    return {"split": [
        {"weight": primary, "destination": {"kuma.io/service": f"podinfo-primary_{ns}_svc_{port}"}},
        {"weight": canary, "destination": {"kuma.io/service": f"podinfo-canary_{ns}_svc_{port}"}},
    ]}


def test_a_new_traffic_route_is_flaggers_golden_object() -> None:
    # kuma/canary-stepweight, initialized.yaml, with the namespace "test".
    assert build_traffic_route(make_canary(), Weights.all_primary(), None) == {
        "apiVersion": "kuma.io/v1alpha1",
        "kind": "TrafficRoute",
        "mesh": "default",
        "metadata": {"name": "podinfo", "annotations": TOOLKIT},
        "spec": {
            "sources": [{"match": {"kuma.io/service": "*"}}],
            "destinations": [{"match": {"kuma.io/service": "podinfo_test_svc_9898"}}],
            "conf": split(100, 0),
        },
    }


def test_the_mesh_comes_from_the_canary_annotation_and_tags_use_the_service_port() -> None:
    # kuma/mesh-annotation-port80: port 80 with targetPort http.
    canary = make_canary(namespace="kuma-mesh-annotation-port80",
                         annotations={"kuma.io/mesh": "secondary"},
                         service={"port": 80, "targetPort": "http"})
    route = build_traffic_route(canary, Weights.to_canary(20), None)
    assert route["mesh"] == "secondary"
    assert route["spec"]["destinations"] == [
        {"match": {"kuma.io/service": "podinfo_kuma-mesh-annotation-port80_svc_80"}}]
    assert route["spec"]["conf"] == split(80, 20, ns="kuma-mesh-annotation-port80", port=80)
    assert mesh_of(make_canary(annotations={"other": "x"})) == "default"


def test_the_traffic_route_is_named_after_the_service_and_has_no_owner() -> None:
    canary = make_canary(service={"name": "frontend",
                                  "apex": {"annotations": {"team": "web"},
                                           "labels": {"ignored": "yes"}}})
    route = build_traffic_route(canary, Weights.all_primary(), None)
    assert route["metadata"] == {"name": "frontend", "annotations": {"team": "web", **TOOLKIT}}
    assert "ownerReferences" not in route["metadata"]
    assert "namespace" not in route["metadata"]
    assert route["spec"]["destinations"][0]["match"]["kuma.io/service"] == (
        "frontend_test_svc_9898")
    assert route["spec"]["conf"]["split"][0]["destination"]["kuma.io/service"] == (
        "frontend-primary_test_svc_9898")
    assert service_tag("a", namespace="b", port=1) == "a_b_svc_1"


def test_an_existing_traffic_route_gets_spec_and_mesh_and_keeps_its_metadata() -> None:
    stored = build_traffic_route(make_canary(), Weights.to_canary(40), None)
    stored["metadata"].update(resourceVersion="7", labels={"user": "x"})
    stored["spec"]["conf"]["loadBalancer"] = {"roundRobin": {}}
    canary = make_canary(annotations={"kuma.io/mesh": "other"},
                         service={"apex": {"annotations": {"new": "one"}}})
    built = build_traffic_route(canary, Weights.to_canary(40), copy.deepcopy(stored))
    assert built["metadata"] == stored["metadata"]
    assert built["mesh"] == "other"
    assert built["spec"]["conf"] == split(60, 40)


def test_rebuilding_the_stored_object_with_its_own_weights_changes_nothing() -> None:
    canary = make_canary()
    stored = build_traffic_route(canary, Weights.to_canary(20), None)
    stored["metadata"]["resourceVersion"] = "9"
    assert build_traffic_route(canary, kept_weights(stored, canary), stored) == stored


@pytest.mark.parametrize(("primary", "canary_weight"), [(100, 0), (80, 20), (0, 100)])
def test_the_weights_read_back_are_those_written(primary: int, canary_weight: int) -> None:
    canary = make_canary()
    route = build_traffic_route(canary, Weights(primary=primary, canary=canary_weight), None)
    assert read_weights(route, canary) == Weights(primary=primary, canary=canary_weight)


def test_the_canary_gets_what_the_primary_does_not_as_in_flagger() -> None:
    canary = make_canary()
    route = {"spec": {"conf": {"split": [
        {"weight": 70, "destination": {"kuma.io/service": "podinfo-primary_elsewhere_svc_1"}}]}}}
    assert read_weights(route, canary) == Weights(primary=70, canary=30)


@pytest.mark.parametrize("route", [
    {},
    {"spec": {"conf": {"split": [
        {"weight": 50, "destination": {"kuma.io/service": "podinfo-canary_test_svc_9898"}}]}}},
    {"spec": {"conf": {"split": [
        {"weight": 150, "destination": {"kuma.io/service": "podinfo-primary_test_svc_9898"}}]}}},
])
def test_a_route_without_a_primary_split_is_refused_and_a_reconcile_starts_over(
        route: dict[str, Any]) -> None:
    canary = make_canary()
    with pytest.raises(RouterError, match="TrafficRoute podinfo"):
        read_weights(route, canary)
    assert kept_weights(route, canary) == Weights.all_primary()
    assert kept_weights(None, canary) == Weights.all_primary()


def test_a_canary_without_a_service_is_a_spec_error() -> None:
    canary = make_canary()
    canary.spec.service = None
    with pytest.raises(TerminalError, match=r"spec\.service"):
        build_traffic_route(canary, Weights.all_primary(), None)


def test_the_router_is_registered_declares_weights_only_and_refuses_a_variant() -> None:
    assert TRAFFIC_ROUTES.namespaced is False
    assert TRAFFIC_ROUTES.path(name="podinfo") == "/apis/kuma.io/v1alpha1/trafficroutes/podinfo"
    ctx = ProviderContext(store=kube.ObjectStore(None), settings=Settings(),  # no I/O here
                          log=structlog.get_logger("test"))
    plugin = plugins.routers.get("kuma")
    router = plugin.factory(ctx=ctx, variant=plugin.variant)
    assert isinstance(router, KumaRouter)
    assert isinstance(router, Router)
    caps = capabilities_of(router)
    assert (caps.ab_matches, caps.mirroring, caps.session_affinity) == (False, False, False)
    assert caps.needs_services
    with pytest.raises(PluginError, match="kuma:v1"):
        kuma.KumaRouter(ctx=ctx, variant="v1")
