"""The Gateway API router's pure builders, field by field (spec §3, golden gatewayapi-v1*).

The shapes asserted here are what Flagger 1.44 wrote in the golden corpus
(``../shared/reference/golden/gatewayapi-v1*/``); the router itself runs against the real CRD
in tests/integration/test_gatewayapi.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from flaggerpy import kube, plugins
from flaggerpy.affinity import SessionCookies
from flaggerpy.errors import PluginError, RouterError
from flaggerpy.models.canary import Canary
from flaggerpy.providers import gatewayapi
from flaggerpy.providers.gatewayapi import (
    build_http_route,
    kept_weights,
    map_matches,
    next_session_cookies,
    read_weights,
    route_not_ready,
)
from flaggerpy.routing import ProviderContext, Router, Weights
from flaggerpy.settings import Settings

UID = "3d8c1d47-8a7f-4a52-9a53-5b0a3cbd0c11"
TOOLKIT = {
    "kustomize.toolkit.fluxcd.io/reconcile": "disabled",
    "helm.toolkit.fluxcd.io/driftDetection": "disabled",
}
GATEWAY = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gateway",
           "namespace": "test"}
ROOT = {"path": {"type": "PathPrefix", "value": "/"}}


def make_canary(
        *,
        service: dict[str, Any] | None = None,
        analysis: dict[str, Any] | None = None,
        status: dict[str, Any] | None = None,
) -> Canary:
    obj: dict[str, Any] = {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test", "uid": UID},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898, "gatewayRefs": [GATEWAY], **(service or {})},
            "analysis": {"interval": "10s", "threshold": 2, "stepWeight": 20,
                         **(analysis or {})},
        },
    }
    if status is not None:
        obj["status"] = status
    return Canary.model_validate(obj)


def backend(name: str, weight: int, **extra: Any) -> dict[str, Any]:
    return {"group": "", "kind": "Service", "name": f"podinfo-{name}", "port": 9898,
            "weight": weight, **extra}


def split(primary: int, canary: int) -> list[dict[str, Any]]:
    return [backend("primary", primary), backend("canary", canary)]


def tokens(*values: str) -> Any:
    it: Iterator[str] = iter(values)
    return lambda: next(it)


def rules(route: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = route["spec"]["rules"]
    return result


# -- the route ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_defaults(version: str) -> None:
    route = build_http_route(make_canary(service={"hosts": ["www.example.com"]}),
                             Weights.all_primary(), version=version)

    assert route["apiVersion"] == f"gateway.networking.k8s.io/{version}"
    assert route["kind"] == "HTTPRoute"
    assert route["metadata"] == {
        "name": "podinfo", "namespace": "test", "annotations": TOOLKIT,
        "ownerReferences": [{"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
                             "name": "podinfo", "uid": UID, "controller": True,
                             "blockOwnerDeletion": True}]}
    assert route["spec"] == {
        "parentRefs": [GATEWAY],
        "hostnames": ["www.example.com"],
        "rules": [{"matches": [ROOT], "backendRefs": split(100, 0)}],
    }


def test_gamma_parent_service_and_no_hosts_or_owner() -> None:
    parent = {"group": "core", "kind": "Service", "name": "podinfo", "port": 9898}
    canary = make_canary(service={"gatewayRefs": [parent], "name": "web",
                                  "apex": {"labels": {"team": "a"}}})

    route = build_http_route(canary, Weights.to_canary(30), set_owner_refs=False)

    assert route["metadata"] == {"name": "web", "namespace": "test", "annotations": TOOLKIT,
                                 "labels": {"team": "a"}}
    assert route["spec"]["parentRefs"] == [parent]
    assert "hostnames" not in route["spec"]
    assert rules(route)[0]["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "web-primary", "port": 9898, "weight": 70},
        {"group": "", "kind": "Service", "name": "web-canary", "port": 9898, "weight": 30}]


def test_gateway_refs_are_required() -> None:
    canary = make_canary(service={"gatewayRefs": []})
    with pytest.raises(RouterError, match="GatewayRefs must be specified"):
        build_http_route(canary, Weights.all_primary())


def test_filters_in_flaggers_order_with_timeouts() -> None:
    """The golden case filters-rewrite-headers-cors, plus both timeouts."""
    canary = make_canary(service={
        "timeout": "15s", "backendTimeout": "5s",
        "headers": {"request": {"add": {"x-b": "2", "x-a": "1"}, "set": {"x-set": "s"},
                                "remove": ["x-remove"]},
                    "response": {"add": {"x-resp": "r"}, "remove": ["server"]}},
        "rewrite": {"authority": "backend.example.com", "type": "ReplacePrefixMatch",
                    "uri": "/"},
        "mirror": [{"backendRef": {"group": "", "kind": "Service", "name": "podinfo-shadow",
                                   "port": 9898}}],
        "corsPolicy": {"allowCredentials": True, "allowHeaders": ["x-custom"],
                       "allowMethods": ["GET", "POST"], "allowOrigin": ["https://example.com"],
                       "exposeHeaders": ["x-exposed"], "maxAge": "24h"},
    })

    [rule] = rules(build_http_route(canary, Weights.all_primary()))

    assert rule["filters"] == [
        {"type": "RequestHeaderModifier", "requestHeaderModifier": {
            "add": [{"name": "x-a", "value": "1"}, {"name": "x-b", "value": "2"}],
            "set": [{"name": "x-set", "value": "s"}], "remove": ["x-remove"]}},
        {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
            "add": [{"name": "x-resp", "value": "r"}], "remove": ["server"]}},
        {"type": "URLRewrite", "urlRewrite": {
            "hostname": "backend.example.com",
            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}},
        {"type": "RequestMirror", "requestMirror": {"backendRef": {
            "group": "", "kind": "Service", "name": "podinfo-shadow", "port": 9898}}},
        {"type": "CORS", "cors": {
            "allowCredentials": True, "allowHeaders": ["x-custom"],
            "allowMethods": ["GET", "POST"], "allowOrigins": ["https://example.com"],
            "exposeHeaders": ["x-exposed"], "maxAge": 86400}},
    ]
    assert rule["timeouts"] == {"request": "15s", "backendRequest": "5s"}


def test_rewrite_replaces_the_full_path_unless_asked_for_the_prefix() -> None:
    [rule] = rules(build_http_route(make_canary(service={"rewrite": {"uri": "/v2"}}),
                                    Weights.all_primary()))
    assert rule["filters"] == [{"type": "URLRewrite", "urlRewrite": {
        "path": {"type": "ReplaceFullPath", "replaceFullPath": "/v2"}}}]


def test_map_matches() -> None:
    canary = make_canary(service={"match": [
        {"uri": {"regex": "/api/v[0-9]+/.*"}},
        {"uri": {"exact": "/x"}, "method": {"exact": "GET"},
         "headers": {"x-b": {"regex": "b.*"}, "x-a": {"exact": "a"}},
         "queryParams": {"q": {"exact": "1"}}},
        {"sourceLabels": {"app": "x"}},  # nothing Gateway API can match: dropped
    ]})
    assert map_matches(canary.spec.service.match or ()) == [  # type: ignore[union-attr]
        {"path": {"type": "RegularExpression", "value": "/api/v[0-9]+/.*"}},
        {"path": {"type": "Exact", "value": "/x"}, "method": "GET",
         "headers": [{"name": "x-a", "type": "Exact", "value": "a"},
                     {"name": "x-b", "type": "RegularExpression", "value": "b.*"}],
         "queryParams": [{"name": "q", "type": "Exact", "value": "1"}]},
    ]


@pytest.mark.parametrize("match", [
    {"method": {"prefix": "G"}},
    {"headers": {"x": {"prefix": "a"}}},
    {"queryParams": {"q": {"prefix": "a"}}},
])
def test_matches_gateway_api_cannot_express_are_refused(match: dict[str, Any]) -> None:
    with pytest.raises(RouterError, match="Gateway API doesn't support"):
        build_http_route(make_canary(service={"match": [match]}), Weights.all_primary())


def test_ab_merges_the_analysis_conditions_into_each_service_match() -> None:
    """The golden case ab-header-cookie-query."""
    service_match = {"method": "GET", "path": {"type": "PathPrefix", "value": "/api"}}
    canary = make_canary(
        service={"match": [{"method": {"exact": "GET"}, "uri": {"prefix": "/api"}}],
                 "timeout": "5s"},
        analysis={"iterations": 2, "match": [
            {"headers": {"x-canary": {"exact": "insider"}}},
            {"headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}},
            {"queryParams": {"canary": {"exact": "true"}}},
            {"headers": {"x-user": {"suffix": ".a"}, "x-beta": {"prefix": "b"}}},
        ]})

    ab, default = rules(build_http_route(canary, Weights.all_canary()))

    assert ab["matches"] == [
        {**service_match, "headers": [{"name": "x-canary", "type": "Exact",
                                       "value": "insider"}]},
        {**service_match, "headers": [{"name": "cookie", "type": "RegularExpression",
                                       "value": "^(.*?;)?(canary=always)(;.*)?$"}]},
        {**service_match, "queryParams": [{"name": "canary", "type": "Exact",
                                           "value": "true"}]},
        {**service_match, "headers": [
            {"name": "x-beta", "type": "RegularExpression", "value": "^b.*"},
            {"name": "x-user", "type": "RegularExpression", "value": ".*\\.a$"}]},
    ]
    assert ab["backendRefs"] == split(0, 100)
    assert default == {"matches": [service_match], "backendRefs": [backend("primary", 100)],
                       "timeouts": {"request": "5s"}}


@pytest.mark.parametrize(("mirror_weight", "mirror"), [
    (None, {"backendRef": {"group": "", "kind": "Service", "name": "podinfo-canary",
                           "port": 9898}}),
    (50, {"backendRef": {"group": "", "kind": "Service", "name": "podinfo-canary",
                         "port": 9898}, "percent": 50}),
])
def test_mirror_goes_to_the_canary_after_the_service_filters(
        mirror_weight: int | None, mirror: dict[str, Any]) -> None:
    analysis: dict[str, Any] = {"mirror": True}
    if mirror_weight is not None:
        analysis["mirrorWeight"] = mirror_weight
    canary = make_canary(service={"rewrite": {"uri": "/"}}, analysis=analysis)

    route = build_http_route(canary, Weights.all_primary(mirrored=True))

    assert [f["type"] for f in rules(route)[0]["filters"]] == ["URLRewrite", "RequestMirror"]
    assert rules(route)[0]["filters"][1]["requestMirror"] == mirror
    assert read_weights(route, canary) == Weights.all_primary(mirrored=True)


# -- session affinity ---------------------------------------------------------------------------

AFFINITY = {"cookieName": "flagger-cookie", "maxAge": 120, "primaryCookieName": "primary-cookie"}


def set_cookie(value: str) -> dict[str, Any]:
    return {"type": "ResponseHeaderModifier",
            "responseHeaderModifier": {"add": [{"name": "Set-Cookie", "value": value}]}}


def cookie_match(name: str, value: str) -> dict[str, Any]:
    return {**ROOT, "headers": [{"name": "Cookie", "type": "RegularExpression",
                                 "value": f".*{name}.*{value}.*"}]}


def test_cookies_are_made_kept_and_expired() -> None:
    canary = make_canary(analysis={"sessionAffinity": AFFINITY})
    made = next_session_cookies(canary, Weights.to_canary(20), current=SessionCookies(),
                                token=tokens("AAA", "PPP"))
    assert made == SessionCookies(canary="flagger-cookie=AAA", primary="primary-cookie=PPP")
    assert next_session_cookies(canary, Weights.to_canary(40), current=made) == made
    assert next_session_cookies(canary, Weights.all_primary(), current=made) == SessionCookies(
        previous="flagger-cookie=AAA")
    beta = next_session_cookies(canary, Weights.to_canary(20), current=SessionCookies(),
                                version="v1beta1", token=tokens("BBB"))
    assert beta == SessionCookies(canary="flagger-cookie=BBB")


def test_v1beta1_session_affinity_matches_flagger() -> None:
    """The golden case gatewayapi-v1beta1/session-affinity: no primary cookie on v1beta1."""
    canary = make_canary(analysis={"sessionAffinity": AFFINITY})
    cookies = SessionCookies(canary="flagger-cookie=AAA")

    sticky, weighted = rules(build_http_route(canary, Weights.to_canary(20), version="v1beta1",
                                              cookies=cookies))

    assert sticky == {"matches": [cookie_match("flagger-cookie", "AAA")],
                      "backendRefs": split(0, 100)}
    assert weighted == {"matches": [ROOT], "backendRefs": [
        backend("primary", 80),
        backend("canary", 20, filters=[set_cookie("flagger-cookie=AAA; Max-Age=120")])]}

    expire, after = rules(build_http_route(canary, Weights.all_primary(), version="v1beta1",
                                           cookies=SessionCookies(previous="flagger-cookie=AAA")))
    assert expire == {"matches": [cookie_match("flagger-cookie", "AAA")],
                      "filters": [set_cookie("flagger-cookie=AAA; Max-Age=-1")],
                      "backendRefs": split(100, 0)}
    assert after == {"matches": [ROOT], "backendRefs": split(100, 0)}


def test_v1_session_affinity_has_a_primary_cookie_for_one_interval() -> None:
    canary = make_canary(analysis={"sessionAffinity": {**AFFINITY, "path": "/", "secure": True}})
    cookies = SessionCookies(canary="flagger-cookie=AAA", primary="primary-cookie=PPP")

    route = build_http_route(canary, Weights.to_canary(20), cookies=cookies, interval=10)
    sticky_canary, sticky_primary, weighted = rules(route)

    assert sticky_canary["backendRefs"] == split(0, 100)
    assert sticky_primary == {"matches": [cookie_match("primary-cookie", "PPP")],
                              "backendRefs": split(100, 0)}
    assert weighted["backendRefs"] == [
        backend("primary", 80, filters=[
            set_cookie("primary-cookie=PPP; Max-Age=10; Path=/; Secure")]),
        backend("canary", 20, filters=[
            set_cookie("flagger-cookie=AAA; Max-Age=120; Path=/; Secure")])]
    assert read_weights(route, canary) == Weights.to_canary(20)


# -- reading it back ----------------------------------------------------------------------------


@pytest.mark.parametrize("weights", [Weights.all_primary(), Weights.to_canary(40),
                                     Weights.all_canary()])
def test_weights_round_trip_and_are_kept(weights: Weights) -> None:
    canary = make_canary(analysis={"iterations": 2, "match": [
        {"headers": {"x-canary": {"exact": "insider"}}}]})
    route = build_http_route(canary, weights)

    assert read_weights(route, canary) == weights
    assert kept_weights(route, canary) == weights
    assert build_http_route(canary, kept_weights(route, canary), existing=route) == route


def test_a_route_without_the_split_is_an_error() -> None:
    canary = make_canary()
    route = build_http_route(canary, Weights.all_primary())
    rules(route)[0]["backendRefs"] = [backend("primary", 100)]
    with pytest.raises(RouterError, match="does not contain routes for podinfo-primary"):
        read_weights(route, canary)
    assert kept_weights(route, canary) == Weights.all_primary()
    assert kept_weights(None, canary) == Weights.all_primary()


def status(accepted: str, observed: int) -> dict[str, Any]:
    return {"parents": [{"parentRef": GATEWAY, "controllerName": "example.com/gw",
                         "conditions": [{"type": "Accepted", "status": accepted,
                                         "observedGeneration": observed}]}]}


@pytest.mark.parametrize(("route_status", "ready"), [
    ({}, True),
    (status("True", 3), True),
    (status("True", 2), False),
    (status("False", 3), False),
])
def test_a_parent_that_has_not_accepted_the_generation_holds_the_weights(
        route_status: dict[str, Any], ready: bool) -> None:
    canary = make_canary()
    route = build_http_route(canary, Weights.to_canary(20))
    route["metadata"]["generation"] = 3
    route["status"] = route_status

    assert (route_not_ready(route) == "") is ready
    if ready:
        assert read_weights(route, canary) == Weights.to_canary(20)
    else:
        with pytest.raises(RouterError, match="parent gateway is not ready"):
            read_weights(route, canary)


# -- an existing route --------------------------------------------------------------------------


def test_a_users_route_is_taken_over_in_place() -> None:
    """Spec, labels and annotations are ours; other annotations stay; no owner is added."""
    user = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "podinfo", "namespace": "test", "resourceVersion": "7",
                         "labels": {"old": "x"}, "annotations": {"other/controller": "y"}},
            "spec": {"parentRefs": [GATEWAY], "rules": [{"backendRefs": [
                {"name": "podinfo", "port": 9898}]}]}}

    route = build_http_route(make_canary(), Weights.all_primary(), existing=user)

    assert route["metadata"] == {"name": "podinfo", "namespace": "test",
                                 "resourceVersion": "7",
                                 "annotations": {"other/controller": "y", **TOOLKIT}}
    assert rules(route) == [{"matches": [ROOT], "backendRefs": split(100, 0)}]


# -- the plugin ---------------------------------------------------------------------------------


def context() -> ProviderContext:
    return ProviderContext(store=kube.ObjectStore(None), settings=Settings(),  # no I/O here
                           log=structlog.get_logger())


def test_router_is_registered_and_conforms() -> None:
    plugin = plugins.routers.get("gatewayapi:v1beta1")
    assert plugin.variant == "v1beta1"
    router = plugin.factory(ctx=context(), variant=plugin.variant)
    assert isinstance(router, gatewayapi.GatewayAPIRouter)
    assert isinstance(router, Router)


@pytest.mark.parametrize("variant", ["", "v2", "v1alpha2"])
def test_router_needs_a_known_version(variant: str) -> None:
    with pytest.raises(PluginError, match="gatewayapi:v1"):
        gatewayapi.GatewayAPIRouter(ctx=context(), variant=variant)


def test_the_expiring_cookie_joins_the_services_response_header_filter() -> None:
    """The CRD allows one ResponseHeaderModifier per rule: Set-Cookie goes into the user's."""
    canary = make_canary(service={"headers": {"response": {"add": {"x-resp": "r"}}}},
                         analysis={"sessionAffinity": AFFINITY})
    expire, weighted = rules(build_http_route(
        canary, Weights.all_primary(), cookies=SessionCookies(previous="flagger-cookie=AAA")))
    assert expire["filters"] == [{"type": "ResponseHeaderModifier", "responseHeaderModifier": {
        "add": [{"name": "x-resp", "value": "r"},
                {"name": "Set-Cookie", "value": "flagger-cookie=AAA; Max-Age=-1"}]}}]
    assert weighted["filters"] == [{"type": "ResponseHeaderModifier", "responseHeaderModifier": {
        "add": [{"name": "x-resp", "value": "r"}]}}]
