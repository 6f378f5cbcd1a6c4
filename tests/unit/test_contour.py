"""The Contour router's pure builders against spec §3 and the golden corpus.

Each test checks one thing Flagger 1.44 writes into the HTTPProxy ``<svc>``: metadata, the
weighted route with its ``l5d-dst-override`` headers, the A/B header conditions, timeout and
retry policies, ``ingressClassName``, and reading the split back.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import structlog

from flaggerpy import kube, plugins
from flaggerpy.errors import PluginError, RouterError, TerminalError
from flaggerpy.models.canary import Canary
from flaggerpy.providers import contour
from flaggerpy.providers.contour import (
    HTTP_PROXIES,
    ContourRouter,
    build_http_proxy,
    header_conditions,
    kept_weights,
    read_weights,
    route_prefix,
)
from flaggerpy.routing import ProviderContext, Router, Weights, capabilities_of
from flaggerpy.settings import Settings

TOOLKIT = {
    "kustomize.toolkit.fluxcd.io/reconcile": "disabled",
    "helm.toolkit.fluxcd.io/driftDetection": "disabled",
}
UID = "3d8c1d47-8a7f-4a52-9a53-5b0a3cbd0c11"


def make_canary(
        *,
        service: dict[str, Any] | None = None,
        match: list[dict[str, Any]] | None = None,
) -> Canary:
    analysis: dict[str, Any] = {"interval": "10s", "threshold": 2, "stepWeight": 20,
                                "maxWeight": 40}
    if match is not None:
        analysis = {"interval": "10s", "threshold": 2, "iterations": 2, "match": match}
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test", "uid": UID},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 80, "targetPort": 9898, **(service or {})},
            "analysis": analysis,
        },
    })


def backend(name: str, weight: int) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name, "port": 80,
        "requestHeadersPolicy": {"set": [{
            "name": "l5d-dst-override", "value": f"{name}.test.svc.cluster.local:80"}]},
    }
    if weight:
        entry["weight"] = weight
    return entry


def services(primary: int, canary: int) -> list[dict[str, Any]]:
    return [backend("podinfo-primary", primary), backend("podinfo-canary", canary)]


OWNER = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo", "uid": UID,
         "controller": True, "blockOwnerDeletion": True}


def test_a_new_http_proxy_is_flaggers_golden_object() -> None:
    # contour/bluegreen, initialized.yaml, with the namespace "test".
    assert build_http_proxy(make_canary(), None, existing=None) == {
        "apiVersion": "projectcontour.io/v1",
        "kind": "HTTPProxy",
        "metadata": {"name": "podinfo", "namespace": "test", "annotations": TOOLKIT,
                     "ownerReferences": [OWNER]},
        "spec": {"routes": [{"conditions": [{"prefix": "/"}], "services": services(100, 0)}]},
    }


def test_the_weights_are_written_and_a_zero_weight_is_left_out() -> None:
    spec = build_http_proxy(make_canary(), Weights.to_canary(20), existing=None)["spec"]
    assert spec["routes"][0]["services"] == services(80, 20)
    spec = build_http_proxy(make_canary(), Weights.all_canary(), existing=None)["spec"]
    assert "weight" not in spec["routes"][0]["services"][0]
    assert spec["routes"][0]["services"][1]["weight"] == 100


def test_timeout_retries_prefix_and_ingress_class_as_in_the_golden_case() -> None:
    # contour/timeout-retries-ingressclass with -ingress-class=contour.
    canary = make_canary(service={
        "match": [{"uri": {"prefix": "/api"}}],
        "timeout": "15s",
        "retries": {"attempts": 3, "perTryTimeout": "5s", "retryOn": "5xx,gateway-error"},
    })
    spec = build_http_proxy(canary, Weights.to_canary(40), existing=None,
                            ingress_class="contour")["spec"]
    assert spec == {
        "ingressClassName": "contour",
        "routes": [{
            "conditions": [{"prefix": "/api"}],
            "timeoutPolicy": {"response": "15s", "idle": "5m"},
            "retryPolicy": {"count": 3, "perTryTimeout": "5s",
                            "retryOn": ["5xx", "gateway-error"]},
            "services": services(60, 40),
        }],
    }


def test_no_ingress_class_no_timeout_no_retries_write_none_of_them() -> None:
    spec = build_http_proxy(make_canary(), None, existing=None, ingress_class="")["spec"]
    assert "ingressClassName" not in spec
    assert set(spec["routes"][0]) == {"conditions", "services"}


def test_retries_without_conditions_write_a_count_only() -> None:
    canary = make_canary(service={"retries": {"attempts": 0}})
    route = build_http_proxy(canary, None, existing=None)["spec"]["routes"][0]
    assert route["retryPolicy"] == {"count": 0}


def test_retry_conditions_are_trimmed_and_empty_ones_dropped() -> None:
    # Flagger's plain split would write " reset", which the CRD's enum refuses.
    canary = make_canary(service={"retries": {"attempts": 2, "retryOn": "5xx, reset,"}})
    route = build_http_proxy(canary, None, existing=None)["spec"]["routes"][0]
    assert route["retryPolicy"] == {"count": 2, "retryOn": ["5xx", "reset"]}


def test_only_the_first_service_match_uri_prefix_is_the_prefix() -> None:
    assert route_prefix(make_canary(service={"match": [{"uri": {"exact": "/x"}},
                                                       {"uri": {"prefix": "/y"}}]})) == "/"
    assert route_prefix(make_canary(service={"match": [{"uri": {"prefix": "/y"}}]})) == "/y"
    assert route_prefix(make_canary()) == "/"


AB_MATCH = [
    {"headers": {"x-canary": {"exact": "insider"}}},
    {"headers": {"user-agent": {"suffix": "Firefox"}}},
    {"headers": {"cookie": {"prefix": "canary"}}},
]


def test_ab_header_conditions_as_in_the_golden_case() -> None:
    # contour/ab-header: exact stays exact, suffix and prefix become contains.
    assert header_conditions(make_canary(match=AB_MATCH)) == [
        {"prefix": "/", "header": {"name": "x-canary", "exact": "insider"}},
        {"prefix": "/", "header": {"name": "user-agent", "contains": "Firefox"}},
        {"prefix": "/", "header": {"name": "cookie", "contains": "canary"}},
    ]


def test_a_regex_header_match_is_written_as_a_bare_name_as_flagger_does() -> None:
    canary = make_canary(match=[{"headers": {"x-user": {"regex": "^a.*"}}}])
    assert header_conditions(canary) == [{"prefix": "/", "header": {"name": "x-user"}}]


def test_ab_routes_the_matches_by_weight_and_the_rest_to_the_primary() -> None:
    canary = make_canary(match=AB_MATCH, service={"match": [{"uri": {"prefix": "/api"}}]})
    routes = build_http_proxy(canary, Weights.all_canary(), existing=None)["spec"]["routes"]
    assert len(routes) == 2
    assert [c["prefix"] for c in routes[0]["conditions"]] == ["/api"] * 3
    assert routes[0]["services"] == services(0, 100)
    assert routes[1] == {"conditions": [{"prefix": "/api"}], "services": services(100, 0)}


def test_a_match_without_headers_gives_a_route_without_conditions() -> None:
    canary = make_canary(match=[{"queryParams": {"a": {"exact": "b"}}}])
    routes = build_http_proxy(canary, None, existing=None)["spec"]["routes"]
    assert "conditions" not in routes[0]
    assert routes[1]["conditions"] == [{"prefix": "/"}]


def test_apex_metadata_go_on_a_new_proxy_and_owner_refs_can_be_left_off() -> None:
    canary = make_canary(service={"apex": {"labels": {"team": "a"},
                                           "annotations": {"note": "x"}}})
    meta = build_http_proxy(canary, None, existing=None, set_owner_refs=False)["metadata"]
    assert meta == {"name": "podinfo", "namespace": "test", "labels": {"team": "a"},
                    "annotations": {"note": "x", **TOOLKIT}}


def test_service_name_names_the_proxy_and_its_services() -> None:
    canary = make_canary(service={"name": "web"})
    proxy = build_http_proxy(canary, None, existing=None)
    assert proxy["metadata"]["name"] == "web"
    assert [s["name"] for s in proxy["spec"]["routes"][0]["services"]] == [
        "web-primary", "web-canary"]


def test_a_reconcile_of_the_stored_object_changes_nothing_mid_run() -> None:
    canary = make_canary()
    stored = build_http_proxy(canary, Weights.to_canary(40), existing=None)
    stored["metadata"]["resourceVersion"] = "7"
    stored["status"] = {"currentStatus": "valid"}
    assert build_http_proxy(canary, None, existing=stored) == stored
    assert build_http_proxy(canary, Weights.to_canary(40), existing=stored) == stored


def test_a_reconcile_of_a_changed_spec_keeps_the_split_and_the_metadata() -> None:
    stored = build_http_proxy(make_canary(), Weights.to_canary(40), existing=None)
    stored["metadata"]["labels"] = {"user": "own"}
    changed = make_canary(service={"timeout": "5s"})
    rebuilt = build_http_proxy(changed, None, existing=stored)
    assert rebuilt["metadata"] == stored["metadata"]
    assert rebuilt["spec"]["routes"][0]["timeoutPolicy"] == {"response": "5s", "idle": "5m"}
    assert rebuilt["spec"]["routes"][0]["services"] == services(60, 40)


def test_a_users_proxy_is_taken_over_in_place_without_an_owner() -> None:
    user = {"apiVersion": "projectcontour.io/v1", "kind": "HTTPProxy",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"virtualhost": {"fqdn": "app.example.com"},
                     "routes": [{"services": [{"name": "podinfo", "port": 80}]}]}}
    taken = build_http_proxy(make_canary(), None, existing=copy.deepcopy(user))
    assert taken["metadata"] == user["metadata"]
    assert taken["spec"] == {"routes": [{"conditions": [{"prefix": "/"}],
                                         "services": services(100, 0)}]}


@pytest.mark.parametrize(("primary", "canary_weight"), [(100, 0), (80, 20), (0, 100)])
def test_the_weights_read_back_are_those_written(primary: int, canary_weight: int) -> None:
    canary = make_canary()
    weights = Weights(primary=primary, canary=canary_weight)
    assert read_weights(build_http_proxy(canary, weights, existing=None), canary) == weights
    ab = make_canary(match=AB_MATCH)
    assert read_weights(build_http_proxy(ab, weights, existing=None), ab) == weights


def test_the_canary_gets_what_the_primary_does_not_as_in_flagger() -> None:
    proxy = {"spec": {"routes": [{"services": [
        {"name": "podinfo-primary", "weight": 70}, {"name": "podinfo-canary", "weight": 5}]}]}}
    assert read_weights(proxy, make_canary()) == Weights(primary=70, canary=30)


def test_a_proxy_without_a_split_is_refused_and_a_reconcile_starts_over() -> None:
    canary = make_canary()
    one = {"spec": {"routes": [{"services": [{"name": "podinfo-primary", "weight": 100}]}]}}
    with pytest.raises(RouterError, match="services not found"):
        read_weights(one, canary)
    with pytest.raises(RouterError, match="services not found"):
        read_weights({"spec": {}}, canary)
    other = {"spec": {"routes": [{"services": [{"name": "a"}, {"name": "b"}]}]}}
    with pytest.raises(RouterError, match="does not contain routes for podinfo-primary"):
        read_weights(other, canary)
    too_much = {"spec": {"routes": [{"services": [
        {"name": "podinfo-primary", "weight": 150}, {"name": "podinfo-canary"}]}]}}
    with pytest.raises(RouterError, match=r"HTTPProxy podinfo\.test"):
        read_weights(too_much, canary)
    assert kept_weights(other, canary) == Weights.all_primary()
    assert kept_weights(None, canary) == Weights.all_primary()


def test_a_canary_without_a_service_is_a_spec_error() -> None:
    canary = make_canary()
    canary.spec.service = None
    with pytest.raises(TerminalError, match=r"spec\.service"):
        build_http_proxy(canary, None, existing=None)


def test_the_router_is_registered_with_ab_matches_only_and_refuses_a_variant() -> None:
    assert HTTP_PROXIES.path(name="podinfo", namespace="test") == (
        "/apis/projectcontour.io/v1/namespaces/test/httpproxies/podinfo")
    ctx = ProviderContext(store=kube.ObjectStore(None), settings=Settings(),  # no I/O here
                          log=structlog.get_logger("test"))
    plugin = plugins.routers.get("contour")
    router = plugin.factory(ctx=ctx, variant=plugin.variant)
    assert isinstance(router, ContourRouter)
    assert isinstance(router, Router)
    caps = capabilities_of(router)
    assert (caps.ab_matches, caps.mirroring, caps.session_affinity) == (True, False, False)
    assert caps.needs_services
    with pytest.raises(PluginError, match="contour:v1"):
        contour.ContourRouter(ctx=ctx, variant="v1")
