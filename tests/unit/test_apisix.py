"""The APISIX router's pure builders against spec §3 and the golden corpus.

Each test checks one thing Flagger 1.44 writes: the canary ApisixRoute's name, metadata (the
user route's labels and annotations, the ownerReference), the one http route it copies, its
priority and websocket flag, the two weighted backends, and reading the split back.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import structlog

from flaggerpy import kube, plugins
from flaggerpy.errors import PluginError, RouterError
from flaggerpy.models.canary import Canary
from flaggerpy.providers import apisix
from flaggerpy.providers.apisix import (
    APISIX_ROUTES,
    ApisixRouter,
    build_canary_route,
    canary_route_name,
    kept_weights,
    read_weights,
    target_http_route,
    with_weights,
)
from flaggerpy.routing import ProviderContext, Router, Weights, capabilities_of
from flaggerpy.settings import Settings

UID = "3d8c1d47-8a7f-4a52-9a53-5b0a3cbd0c11"
OWNER = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo", "uid": UID,
         "controller": True, "blockOwnerDeletion": True}
PROMETHEUS = {"config": {"disable": False, "prefer_name": True}, "enable": True,
              "name": "prometheus"}
MATCH = {"hosts": ["app.example.com"], "methods": ["GET"], "paths": ["/*"]}


def make_canary(*, route: str | None = "podinfo", service_name: str | None = None) -> Canary:
    spec: dict[str, Any] = {
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "service": {"port": 80, "targetPort": "http",
                    **({"name": service_name} if service_name else {})},
        "analysis": {"interval": "10s", "threshold": 2, "stepWeight": 20, "maxWeight": 40},
    }
    if route is not None:
        spec["routeRef"] = {"apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute",
                            "name": route}
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test", "uid": UID}, "spec": spec})


def user_route(*http: dict[str, Any], labels: dict[str, str] | None = None,
               annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """The golden cases' input route (``apisix/*/input.yaml``), with ``http`` routes if given."""
    metadata: dict[str, Any] = {"name": "podinfo", "namespace": "test", "resourceVersion": "3",
                                "uid": "u-1", "labels": {"app": "podinfo"}
                                if labels is None else labels}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute", "metadata": metadata,
            "spec": {"http": list(http) or [{
                "backends": [{"serviceName": "podinfo", "servicePort": 80}],
                "match": copy.deepcopy(MATCH), "name": "method",
                "plugins": [copy.deepcopy(PROMETHEUS)]}]}}


def backends(primary: int, canary: int, *, svc: str = "podinfo") -> list[dict[str, Any]]:
    return [{"serviceName": f"{svc}-primary", "servicePort": 80, "weight": primary},
            {"serviceName": f"{svc}-canary", "servicePort": 80, "weight": canary}]


def test_a_new_canary_route_is_flaggers_golden_object() -> None:
    # apisix/canary-stepweight, initialized.yaml, with the namespace "test".
    assert build_canary_route(make_canary(), user_route(), Weights.all_primary(), None) == {
        "apiVersion": "apisix.apache.org/v2",
        "kind": "ApisixRoute",
        "metadata": {"labels": {"app": "podinfo"}, "name": "podinfo-podinfo-canary",
                     "namespace": "test", "ownerReferences": [OWNER]},
        "spec": {"http": [{
            "backends": backends(100, 0),
            "match": MATCH,
            "name": "method",
            "plugins": [PROMETHEUS],
            "priority": 10000,
            "websocket": False,
        }]},
    }


def test_the_canary_route_is_named_after_the_route_and_the_service() -> None:
    canary = make_canary(route="edge", service_name="frontend")
    assert canary_route_name(canary) == "edge-frontend-canary"
    route = user_route({"name": "r", "match": {"paths": ["/*"]},
                        "backends": [{"serviceName": "frontend", "servicePort": 80}]})
    built = build_canary_route(canary, route, Weights.all_primary(), None)
    assert built["metadata"]["name"] == "edge-frontend-canary"
    assert built["spec"]["http"][0]["backends"] == backends(100, 0, svc="frontend")


def test_labels_and_annotations_are_the_user_routes_and_no_toolkit_ones() -> None:
    route = user_route(labels={"team": "a"}, annotations={"note": "x"})
    built = build_canary_route(make_canary(), route, Weights.all_primary(), None)
    assert built["metadata"]["labels"] == {"team": "a"}
    assert built["metadata"]["annotations"] == {"note": "x"}
    bare = build_canary_route(make_canary(), user_route(labels={}), Weights.all_primary(), None)
    assert "labels" not in bare["metadata"]
    assert "annotations" not in bare["metadata"]


def test_no_owner_reference_when_the_routes_live_on_another_api_server() -> None:
    built = build_canary_route(make_canary(), user_route(), Weights.all_primary(), None,
                               set_owner_refs=False)
    assert "ownerReferences" not in built["metadata"]


def test_only_the_http_route_that_sends_to_the_apex_service_is_copied() -> None:
    other = {"name": "other", "match": {"paths": ["/other"]},
             "backends": [{"serviceName": "backend", "servicePort": 8080}]}
    mine = {"name": "mine", "match": {"paths": ["/api/*"], "hosts": ["a.example.com"]},
            "backends": [{"serviceName": "podinfo", "servicePort": "http",
                          "resolveGranularity": "service", "subset": "v1"}],
            "timeout": {"read": "30s"}, "websocket": True, "plugin_config_name": "cfg"}
    built = build_canary_route(make_canary(), user_route(other, mine), Weights.to_canary(20),
                               None)
    assert built["spec"]["http"] == [{
        "name": "mine",
        "match": {"paths": ["/api/*"], "hosts": ["a.example.com"]},
        "backends": [
            {"serviceName": "podinfo-primary", "servicePort": "http",
             "resolveGranularity": "service", "subset": "v1", "weight": 80},
            {"serviceName": "podinfo-canary", "servicePort": "http",
             "resolveGranularity": "service", "subset": "v1", "weight": 20},
        ],
        "timeout": {"read": "30s"},
        "websocket": True,
        "plugin_config_name": "cfg",
        "priority": 10000,
    }]


def test_the_user_route_is_never_changed_by_a_build() -> None:
    route = user_route()
    before = copy.deepcopy(route)
    build_canary_route(make_canary(), route, Weights.to_canary(40), None)
    assert route == before


@pytest.mark.parametrize(("http", "message"), [
    ([], r"APISIX route podinfo\.test's spec\.http is empty"),
    ([{"name": "x", "backends": [{"serviceName": "other", "servicePort": 80}]}],
     r"Can not find podinfo backend on apisix route podinfo\.test"),
    ([{"name": "two", "backends": [{"serviceName": "podinfo", "servicePort": 80},
                                   {"serviceName": "other", "servicePort": 80}]}],
     r"http route two only one http backend is supported"),
])
def test_a_route_flagger_cannot_copy_is_refused_with_its_message(
        http: list[dict[str, Any]], message: str) -> None:
    route = user_route()
    route["spec"]["http"] = http
    with pytest.raises(RouterError, match=message):
        target_http_route(make_canary(), route)


def test_a_canary_without_route_ref_is_refused() -> None:
    with pytest.raises(RouterError, match="apisix route selector is empty"):
        build_canary_route(make_canary(route=None), user_route(), Weights.all_primary(), None)


def test_an_existing_canary_route_gets_the_spec_and_keeps_its_metadata() -> None:
    canary = make_canary()
    stored = build_canary_route(canary, user_route(), Weights.to_canary(40), None)
    stored["metadata"].update(resourceVersion="7", labels={"kept": "yes"})
    changed = user_route(labels={"new": "label"})
    changed["spec"]["http"][0]["match"]["paths"] = ["/v2/*"]
    built = build_canary_route(canary, changed, Weights.to_canary(40), copy.deepcopy(stored))
    assert built["metadata"] == stored["metadata"]
    assert built["spec"]["http"][0]["match"]["paths"] == ["/v2/*"]
    assert built["spec"]["http"][0]["backends"] == backends(60, 40)


def test_rebuilding_the_stored_object_with_its_own_weights_changes_nothing() -> None:
    canary = make_canary()
    stored = build_canary_route(canary, user_route(), Weights.to_canary(20), None)
    stored["metadata"]["resourceVersion"] = "9"
    assert build_canary_route(canary, user_route(), kept_weights(stored, canary),
                              stored) == stored


def test_with_weights_changes_only_the_two_backends_weights() -> None:
    canary = make_canary()
    stored = build_canary_route(canary, user_route(), Weights.all_primary(), None)
    stored["spec"]["http"][0]["match"]["paths"] = ["/by-hand"]
    updated = with_weights(canary, stored, Weights.to_canary(40))
    assert updated["spec"]["http"][0]["backends"] == backends(60, 40)
    assert updated["spec"]["http"][0]["match"]["paths"] == ["/by-hand"]
    assert stored["spec"]["http"][0]["backends"] == backends(100, 0)  # a copy was changed
    with pytest.raises(RouterError, match="Can not find podinfo-primary backend"):
        with_weights(canary, user_route(), Weights.to_canary(40))


@pytest.mark.parametrize(("primary", "canary_weight"), [(100, 0), (80, 20), (0, 100)])
def test_the_weights_read_back_are_those_written(primary: int, canary_weight: int) -> None:
    canary = make_canary()
    route = build_canary_route(canary, user_route(),
                               Weights(primary=primary, canary=canary_weight), None)
    assert read_weights(route, canary) == Weights(primary=primary, canary=canary_weight)


def test_the_canary_gets_what_the_primary_does_not_as_in_flagger() -> None:
    canary = make_canary()
    route = {"spec": {"http": [{"name": "x", "backends": [
        {"serviceName": "podinfo-primary", "servicePort": 80, "weight": 70}]}]}}
    assert read_weights(route, canary) == Weights(primary=70, canary=30)


@pytest.mark.parametrize("route", [
    {},
    {"spec": {"http": [{"name": "x", "backends": [
        {"serviceName": "podinfo-canary", "servicePort": 80, "weight": 50}]}]}},
    {"spec": {"http": [{"name": "x", "backends": [
        {"serviceName": "podinfo-primary", "servicePort": 80, "weight": 150}]}]}},
    {"spec": {"http": [{"name": "x", "backends": [
        {"serviceName": "podinfo-primary", "servicePort": 80}]}]}},
])
def test_a_route_without_a_primary_weight_is_refused_and_a_reconcile_starts_over(
        route: dict[str, Any]) -> None:
    canary = make_canary()
    with pytest.raises(RouterError, match="podinfo"):
        read_weights(route, canary)
    assert kept_weights(route, canary) == Weights.all_primary()
    assert kept_weights(None, canary) == Weights.all_primary()


def test_the_router_is_registered_declares_weights_only_and_refuses_a_variant() -> None:
    assert APISIX_ROUTES.path(namespace="test", name="r") == (
        "/apis/apisix.apache.org/v2/namespaces/test/apisixroutes/r")
    ctx = ProviderContext(store=kube.ObjectStore(None), settings=Settings(),  # no I/O here
                          log=structlog.get_logger("test"))
    plugin = plugins.routers.get("apisix")
    router = plugin.factory(ctx=ctx, variant=plugin.variant)
    assert isinstance(router, ApisixRouter)
    assert isinstance(router, Router)
    caps = capabilities_of(router)
    assert (caps.ab_matches, caps.mirroring, caps.session_affinity) == (False, False, False)
    assert caps.needs_services
    with pytest.raises(PluginError, match="apisix:v1"):
        apisix.ApisixRouter(ctx=ctx, variant="v1")
