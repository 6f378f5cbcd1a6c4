"""The Istio router's pure builders against spec §3.2, feature by feature.

Each test builds the objects Flagger would write for one Canary feature and checks them field
by field: DestinationRules, hosts and gateways, the port rule, the http fields, weights, A/B
merging, mirroring, tcp routes, delegation, the session-affinity cookie sequence, reading the
weights back, and the takeover and revert of a user's VirtualService.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from flaggerpy import kube, plugins
from flaggerpy.affinity import SessionCookies, set_cookie_value
from flaggerpy.errors import PluginError, RouterError
from flaggerpy.models.canary import Canary
from flaggerpy.providers import istio
from flaggerpy.providers.istio import (
    ORIGINAL_CONFIGURATION,
    build_destination_rule,
    build_virtual_service,
    kept_weights,
    merge_match_conditions,
    next_session_cookies,
    read_weights,
    restored_virtual_service,
)
from flaggerpy.routing import ProviderContext, Router, Weights
from flaggerpy.settings import Settings

UID = "3d8c1d47-8a7f-4a52-9a53-5b0a3cbd0c11"
TOOLKIT = {
    "kustomize.toolkit.fluxcd.io/reconcile": "disabled",
    "helm.toolkit.fluxcd.io/driftDetection": "disabled",
}
OWNER = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo", "uid": UID,
         "controller": True, "blockOwnerDeletion": True}
KUBECTL = "kubectl.kubernetes.io/last-applied-configuration"


def make_canary(
        *,
        service: dict[str, Any] | None = None,
        analysis: dict[str, Any] | None = None,
        status: dict[str, Any] | None = None,
) -> Canary:
    obj: dict[str, Any] = {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test", "uid": UID,
                     "resourceVersion": "100"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898, **(service or {})},
            "analysis": {"interval": "30s", "threshold": 5, "stepWeight": 10,
                         **(analysis or {})},
        },
    }
    if status is not None:
        obj["status"] = status
    return Canary.model_validate(obj)


def dest(host: str, weight: int, **extra: Any) -> dict[str, Any]:
    return {"destination": {"host": host, **extra}, "weight": weight}


def split(primary: int, canary: int, **extra: Any) -> list[dict[str, Any]]:
    return [dest("podinfo-primary", primary, **extra), dest("podinfo-canary", canary, **extra)]


def tokens(*values: str) -> Any:
    """A cookie-value source that hands out ``values`` in order."""
    it: Iterator[str] = iter(values)
    return lambda: next(it)


# -- DestinationRules ---------------------------------------------------------------------------

TRAFFIC_POLICY = {
    "connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE", "http1MaxPendingRequests": 10}},
    "loadBalancer": {"consistentHash": {"httpCookie": {"name": "user", "ttl": "0s"}}},
    "outlierDetection": {"consecutive5xxErrors": 3, "interval": "10s"},
    "tls": {"mode": "ISTIO_MUTUAL"},
}


@pytest.mark.parametrize("role", ["primary", "canary"])
def test_destination_rule_copies_the_traffic_policy(role: str) -> None:
    canary = make_canary(service={"trafficPolicy": TRAFFIC_POLICY})
    rule = build_destination_rule(canary, role)  # type: ignore[arg-type]
    assert rule == {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "DestinationRule",
        "metadata": {"name": f"podinfo-{role}", "namespace": "test",
                     "ownerReferences": [OWNER]},
        "spec": {"host": f"podinfo-{role}", "trafficPolicy": TRAFFIC_POLICY},
    }


def test_destination_rule_without_policy_or_owner() -> None:
    rule = build_destination_rule(make_canary(), "canary", set_owner_refs=False)
    assert rule["spec"] == {"host": "podinfo-canary"}
    assert "ownerReferences" not in rule["metadata"]
    with pytest.raises(ValueError, match="unknown DestinationRule role"):
        build_destination_rule(make_canary(), "apex")  # type: ignore[arg-type]


def test_destination_rule_follows_service_name() -> None:
    rule = build_destination_rule(make_canary(service={"name": "frontend"}), "primary")
    assert rule["metadata"]["name"] == rule["spec"]["host"] == "frontend-primary"


# -- VirtualService: shape, hosts, gateways, port -----------------------------------------------


def test_virtual_service_defaults() -> None:
    vs = build_virtual_service(make_canary(), Weights(100, 0))
    assert vs == {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "podinfo", "namespace": "test", "annotations": TOOLKIT,
                     "ownerReferences": [OWNER]},
        "spec": {
            "hosts": ["podinfo"],
            "gateways": ["mesh"],
            "http": [{"route": split(100, 0)}],
        },
    }


def test_virtual_service_apex_metadata() -> None:
    canary = make_canary(service={"apex": {"labels": {"tier": "edge"},
                                           "annotations": {"example.com/a": "b"}}})
    vs = build_virtual_service(canary, Weights(100, 0), set_owner_refs=False)
    assert vs["metadata"] == {"name": "podinfo", "namespace": "test",
                              "labels": {"tier": "edge"},
                              "annotations": {"example.com/a": "b", **TOOLKIT}}


@pytest.mark.parametrize(
    ("hosts", "expected"),
    [
        pytest.param(None, ["podinfo"], id="none"),
        pytest.param(["app.example.com"], ["app.example.com", "podinfo"], id="apex-appended"),
        pytest.param(["podinfo", "app.example.com"], ["podinfo", "app.example.com"],
                     id="apex-present"),
        pytest.param(["*"], ["*"], id="wildcard"),
    ],
)
def test_hosts(hosts: list[str] | None, expected: list[str]) -> None:
    vs = build_virtual_service(make_canary(service={"hosts": hosts}), Weights(100, 0))
    assert vs["spec"]["hosts"] == expected


@pytest.mark.parametrize(
    ("gateways", "expected"),
    [
        pytest.param(None, ["mesh"], id="default-mesh"),
        pytest.param([], ["mesh"], id="empty-mesh"),
        pytest.param(["istio-system/public"], ["istio-system/public"], id="gateway-only"),
        pytest.param(["public", "mesh"], ["public", "mesh"], id="both"),
    ],
)
def test_gateways(gateways: list[str] | None, expected: list[str]) -> None:
    vs = build_virtual_service(make_canary(service={"gateways": gateways}), Weights(100, 0))
    assert vs["spec"]["gateways"] == expected


def test_delegation_has_neither_hosts_nor_gateways() -> None:
    vs = build_virtual_service(make_canary(service={"delegation": True}), Weights(90, 10))
    assert "hosts" not in vs["spec"]
    assert "gateways" not in vs["spec"]
    assert vs["spec"]["http"] == [{"route": split(90, 10)}]


@pytest.mark.parametrize("field", ["hosts", "gateways"])
def test_delegation_refuses_hosts_and_gateways(field: str) -> None:
    canary = make_canary(service={"delegation": True, field: ["x"]})
    with pytest.raises(RouterError, match="cannot have hosts and gateways when delegation"):
        build_virtual_service(canary, Weights(100, 0))


@pytest.mark.parametrize(
    ("service", "port"),
    [
        pytest.param({"portDiscovery": True, "gateways": ["public"]}, True, id="gateway-first"),
        pytest.param({"portDiscovery": True, "gateways": ["mesh", "public"]}, False,
                     id="mesh-first"),
        pytest.param({"portDiscovery": True}, False, id="mesh-default"),
        pytest.param({"portDiscovery": True, "delegation": True}, True, id="delegation"),
        pytest.param({"gateways": ["public"]}, False, id="no-discovery"),
    ],
)
def test_destination_port_rule(service: dict[str, Any], port: bool) -> None:
    vs = build_virtual_service(make_canary(service=service), Weights(80, 20))
    extra = {"port": {"number": 9898}} if port else {}
    assert vs["spec"]["http"][0]["route"] == split(80, 20, **extra)


HTTP_FIELDS: dict[str, Any] = {
    "match": [{"uri": {"prefix": "/api"}, "headers": {"x-tenant": {"exact": "a"}}},
              {"uri": {"regex": "/v[0-9]+/.*"}}],
    "rewrite": {"uri": "/", "authority": "backend", "type": "ReplacePrefixMatch"},
    "timeout": "5s",
    "retries": {"attempts": 3, "perTryTimeout": "1s", "retryOn": "5xx,gateway-error"},
    "headers": {"request": {"add": {"x-a": "1"}, "remove": ["x-b"]},
                "response": {"set": {"x-c": "3"}}},
    "corsPolicy": {"allowOrigins": [{"exact": "https://example.com"}],
                   "allowMethods": ["GET"], "maxAge": "24h", "allowCredentials": False},
}


def test_http_route_carries_the_service_fields() -> None:
    vs = build_virtual_service(make_canary(service=HTTP_FIELDS), Weights(60, 40))
    assert vs["spec"]["http"] == [{
        "match": HTTP_FIELDS["match"],
        "rewrite": {"uri": "/", "authority": "backend"},  # Istio has no rewrite type
        "timeout": "5s",
        "retries": HTTP_FIELDS["retries"],
        "headers": HTTP_FIELDS["headers"],
        "corsPolicy": HTTP_FIELDS["corsPolicy"],
        "route": split(60, 40),
    }]


@pytest.mark.parametrize("canary_weight", [0, 1, 10, 50, 99, 100])
def test_weights(canary_weight: int) -> None:
    weights = Weights.to_canary(canary_weight)
    vs = build_virtual_service(make_canary(), weights)
    assert vs["spec"]["http"][0]["route"] == split(100 - canary_weight, canary_weight)
    assert read_weights(vs, make_canary()) == weights


# -- A/B testing --------------------------------------------------------------------------------

AB = [{"headers": {"x-canary": {"exact": "insider"}}},
      {"headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}}]


def test_ab_without_service_match_uses_the_analysis_match() -> None:
    canary = make_canary(analysis={"iterations": 10, "stepWeight": None, "match": AB})
    vs = build_virtual_service(canary, Weights(0, 100))
    assert vs["spec"]["http"] == [
        {"match": AB, "route": split(0, 100)},
        {"route": [dest("podinfo-primary", 100)]},
    ]
    assert read_weights(vs, canary) == Weights(0, 100)


def test_ab_merges_each_condition_into_each_service_match() -> None:
    service_match = [{"uri": {"prefix": "/api"}, "headers": {"x-tenant": {"exact": "a"}}},
                     {"uri": {"prefix": "/web"}}]
    canary = make_canary(
        service={"match": service_match, "timeout": "3s"},
        analysis={"iterations": 10, "stepWeight": None,
                  "match": [*AB, {"sourceLabels": {"app": "tester"},
                                  "queryParams": {"canary": {"exact": "yes"}}}]})
    vs = build_virtual_service(canary, Weights(0, 100))
    first, second = vs["spec"]["http"]
    assert first["match"] == [
        {"uri": {"prefix": "/api"}, "headers": AB[0]["headers"]},
        {"uri": {"prefix": "/web"}, "headers": AB[0]["headers"]},
        {"uri": {"prefix": "/api"}, "headers": AB[1]["headers"]},
        {"uri": {"prefix": "/web"}, "headers": AB[1]["headers"]},
        {"uri": {"prefix": "/api"}, "headers": {"x-tenant": {"exact": "a"}},
         "sourceLabels": {"app": "tester"}, "queryParams": {"canary": {"exact": "yes"}}},
        {"uri": {"prefix": "/web"}, "sourceLabels": {"app": "tester"},
         "queryParams": {"canary": {"exact": "yes"}}},
    ]
    assert first["route"] == split(0, 100)
    assert first["timeout"] == second["timeout"] == "3s"
    assert second == {"match": service_match, "timeout": "3s",
                      "route": [dest("podinfo-primary", 100)]}


def test_ab_header_suffix_becomes_a_regex() -> None:
    canary = make_canary(analysis={"iterations": 2, "stepWeight": None,
                                   "match": [{"headers": {"user-agent": {"suffix": "(Mobile)"}}}]})
    vs = build_virtual_service(canary, Weights(0, 100))
    assert vs["spec"]["http"][0]["match"] == [
        {"headers": {"user-agent": {"regex": r".*\(Mobile\)"}}}]


def test_ab_ignores_mirror_and_session_affinity() -> None:
    canary = make_canary(analysis={"iterations": 2, "stepWeight": None, "match": AB,
                                   "mirror": True, "sessionAffinity": {"cookieName": "c"}},
                         status={"sessionAffinityCookie": "c=abc"})
    vs = build_virtual_service(canary, Weights(0, 100, mirrored=True))
    assert [r.get("name") for r in vs["spec"]["http"]] == [None, None]
    assert "mirror" not in vs["spec"]["http"][0]
    assert next_session_cookies(canary, Weights(0, 100),
                                current=SessionCookies()) == SessionCookies()


def test_merge_match_conditions_without_defaults_copies() -> None:
    conditions = [{"headers": {"a": {"exact": "1"}}}]
    merged = merge_match_conditions(conditions, [])
    assert merged == conditions
    merged[0]["headers"]["a"]["exact"] = "2"
    assert conditions[0]["headers"]["a"]["exact"] == "1"


# -- mirroring ----------------------------------------------------------------------------------


def test_mirror_sets_the_canary_host() -> None:
    canary = make_canary(analysis={"mirror": True})
    vs = build_virtual_service(canary, Weights(100, 0, mirrored=True))
    assert vs["spec"]["http"] == [{"route": split(100, 0),
                                   "mirror": {"host": "podinfo-canary"}}]
    assert read_weights(vs, canary) == Weights(100, 0, mirrored=True)


def test_mirror_percentage_from_mirror_weight() -> None:
    canary = make_canary(analysis={"mirror": True, "mirrorWeight": 25})
    route = build_virtual_service(canary, Weights(100, 0, mirrored=True))["spec"]["http"][0]
    assert route["mirror"] == {"host": "podinfo-canary"}
    assert route["mirrorPercentage"] == {"value": 25}


def test_no_mirror_when_not_mirrored() -> None:
    canary = make_canary(analysis={"mirror": True, "mirrorWeight": 25})
    route = build_virtual_service(canary, Weights(90, 10))["spec"]["http"][0]
    assert "mirror" not in route
    assert "mirrorPercentage" not in route


# -- tcp ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["tcp", "TCP", "Tcp"])
def test_tcp_routes(protocol: str) -> None:
    canary = make_canary(service={"appProtocol": protocol,
                                  "match": [{"port": 9898}, {"uri": {"prefix": "/"}}],
                                  "timeout": "5s"},
                         analysis={"mirror": True})
    vs = build_virtual_service(canary, Weights(70, 30, mirrored=True))
    assert vs["spec"] == {
        "hosts": ["podinfo"],
        "gateways": ["mesh"],
        "tcp": [{"match": [{"port": 9898}, {}], "route": split(70, 30)}],
    }
    assert read_weights(vs, canary) == Weights(70, 30)  # never mirrored


def test_tcp_without_match() -> None:
    canary = make_canary(service={"appProtocol": "tcp"})
    vs = build_virtual_service(canary, Weights(100, 0))
    assert vs["spec"]["tcp"] == [{"route": split(100, 0)}]


# -- session affinity ---------------------------------------------------------------------------

AFFINITY = {"cookieName": "flagger-cookie", "maxAge": 3600, "domain": "example.com",
            "httpOnly": True, "partitioned": True, "path": "/app", "sameSite": "Lax",
            "secure": True}
ATTRIBUTES = "Domain=example.com; HttpOnly; Partitioned; Path=/app; SameSite=Lax; Secure"


def affinity_canary(status: dict[str, Any] | None = None, **extra: Any) -> Canary:
    return make_canary(analysis={"sessionAffinity": {**AFFINITY, **extra}}, status=status,
                       service={"match": [{"uri": {"prefix": "/"},
                                           "headers": {"x-tenant": {"exact": "a"}}}]})


def test_build_cookie() -> None:
    canary = affinity_canary()
    affinity = canary.spec.analysis.session_affinity
    assert affinity is not None
    assert set_cookie_value(affinity, "c=v", max_age=60) == f"c=v; Max-Age=60; {ATTRIBUTES}"
    bare = make_canary(analysis={"sessionAffinity": {"cookieName": "c"}})
    assert bare.spec.analysis.session_affinity is not None
    assert set_cookie_value(bare.spec.analysis.session_affinity, "c=v",
                        max_age=86400) == "c=v; Max-Age=86400"


def test_session_affinity_before_any_traffic_is_just_the_weighted_route() -> None:
    canary = affinity_canary()
    assert next_session_cookies(canary, Weights(100, 0),
                                current=SessionCookies()) == SessionCookies()
    vs = build_virtual_service(canary, Weights(100, 0))
    assert [r.get("name") for r in vs["spec"]["http"]] == [None]


def test_session_affinity_sequence() -> None:
    """A whole run: first step, next step, promotion, next run (spec §3.2)."""
    canary = affinity_canary()
    service_match = {"uri": {"prefix": "/"}}

    # First traffic step: a cookie is made, routed to the canary and handed out by it.
    step1 = next_session_cookies(canary, Weights(90, 10), current=SessionCookies(),
                                 token=tokens("AbCdEfGhIj"))
    assert step1 == SessionCookies(canary="flagger-cookie=AbCdEfGhIj")
    assert step1.status_patch() == {"status": {
        "sessionAffinityCookie": "flagger-cookie=AbCdEfGhIj",
        "primarySessionAffinityCookie": None, "previousSessionAffinityCookie": None}}
    http = build_virtual_service(canary, Weights(90, 10), status=step1)["spec"]["http"]
    sticky, weighted = http
    assert sticky == {
        "name": "sticky-canary",
        "match": [{**service_match,
                   "headers": {"Cookie": {"regex": ".*flagger-cookie.*AbCdEfGhIj.*"}}}],
        "route": split(0, 100),
    }
    assert "name" not in weighted
    assert weighted["route"] == [
        dest("podinfo-primary", 90),
        {**dest("podinfo-canary", 10), "headers": {"response": {"add": {
            "Set-Cookie": f"flagger-cookie=AbCdEfGhIj; Max-Age=3600; {ATTRIBUTES}"}}}},
    ]
    assert weighted["match"] == [{**service_match, "headers": {"x-tenant": {"exact": "a"}}}]

    # Next step: the same cookie, more weight.
    step2 = next_session_cookies(canary, Weights(80, 20), current=step1, token=tokens())
    assert step2 == step1
    http2 = build_virtual_service(canary, Weights(80, 20), status=step2)["spec"]["http"]
    assert http2[0] == sticky
    assert [d["weight"] for d in http2[1]["route"]] == [80, 20]

    # Promotion (or rollback): the cookie becomes the previous one and is expired.
    done = next_session_cookies(canary, Weights(100, 0), current=step2, token=tokens())
    assert done == SessionCookies(previous="flagger-cookie=AbCdEfGhIj")
    assert done.status_patch()["status"] == {
        "sessionAffinityCookie": None, "primarySessionAffinityCookie": None,
        "previousSessionAffinityCookie": "flagger-cookie=AbCdEfGhIj"}
    expire, weighted = build_virtual_service(canary, Weights(100, 0), status=done)["spec"]["http"]
    assert expire == {
        "name": "sticky-canary",
        "match": [{**service_match,
                   "headers": {"Cookie": {"regex": ".*flagger-cookie.*AbCdEfGhIj.*"}}}],
        "headers": {"response": {"add": {
            "Set-Cookie": "flagger-cookie=AbCdEfGhIj; Max-Age=-1"}}},
        "route": split(100, 0),
    }
    assert weighted["route"] == split(100, 0)

    # The next run gets a new cookie; the previous one stays recorded until it ends.
    again = next_session_cookies(canary, Weights(90, 10), current=done,
                                 token=tokens("ZyXwVuTsRq"))
    assert again == SessionCookies(canary="flagger-cookie=ZyXwVuTsRq",
                                   previous="flagger-cookie=AbCdEfGhIj")


def test_session_affinity_primary_cookie() -> None:
    canary = affinity_canary(primaryCookieName="primary-cookie")
    cookies = next_session_cookies(canary, Weights(70, 30), current=SessionCookies(),
                                   token=tokens("aaaaaaaaaa", "bbbbbbbbbb"))
    assert cookies == SessionCookies(canary="flagger-cookie=aaaaaaaaaa",
                                     primary="primary-cookie=bbbbbbbbbb")
    http = build_virtual_service(canary, Weights(70, 30), status=cookies,
                                 interval=30)["spec"]["http"]
    assert [r.get("name") for r in http] == ["sticky-canary", "sticky-primary", None]
    assert http[1]["match"] == [{"uri": {"prefix": "/"}, "headers": {
        "Cookie": {"regex": ".*primary-cookie.*bbbbbbbbbb.*"}}}]
    assert http[1]["route"] == split(100, 0)
    primary, canary_dest = http[2]["route"]
    assert primary["headers"]["response"]["add"]["Set-Cookie"] == (
        f"primary-cookie=bbbbbbbbbb; Max-Age=30; {ATTRIBUTES}")
    assert canary_dest["headers"]["response"]["add"]["Set-Cookie"].startswith(
        "flagger-cookie=aaaaaaaaaa; Max-Age=3600")
    assert read_weights(build_virtual_service(canary, Weights(70, 30), status=cookies),
                        canary) == Weights(70, 30)
    # At weight 0 the primary cookie ends with the run (it expires by itself after a tick).
    done = next_session_cookies(canary, Weights(100, 0), current=cookies)
    assert done == SessionCookies(previous="flagger-cookie=aaaaaaaaaa")


def test_session_affinity_primary_cookie_interval_defaults_to_the_analysis_interval() -> None:
    canary = affinity_canary(primaryCookieName="p")
    cookies = SessionCookies(canary="flagger-cookie=x", primary="p=y")
    http = build_virtual_service(canary, Weights(50, 50), status=cookies)["spec"]["http"]
    assert http[2]["route"][0]["headers"]["response"]["add"]["Set-Cookie"].startswith(
        "p=y; Max-Age=30;")


def test_session_affinity_status_default_and_renamed_cookie() -> None:
    canary = affinity_canary(status={"sessionAffinityCookie": "old-name=xyz"})
    assert SessionCookies.of(canary) == SessionCookies(canary="old-name=xyz")
    renewed = next_session_cookies(canary, Weights(90, 10), current=SessionCookies.of(canary),
                                   token=tokens("newvalue00"))
    assert renewed.canary == "flagger-cookie=newvalue00"
    # Built from the status when no cookies are passed.
    http = build_virtual_service(canary, Weights(90, 10))["spec"]["http"]
    assert http[0]["match"][0]["headers"] == {"Cookie": {"regex": ".*old-name.*xyz.*"}}


def test_session_affinity_previous_cookie_merges_into_service_headers() -> None:
    canary = make_canary(analysis={"sessionAffinity": {"cookieName": "c"}},
                         service={"headers": {"response": {"add": {"x-served-by": "mesh"}}}})
    http = build_virtual_service(canary, Weights(100, 0),
                                 status=SessionCookies(previous="c=old"))["spec"]["http"]
    assert http[0]["headers"] == {"response": {"add": {"x-served-by": "mesh",
                                                       "Set-Cookie": "c=old; Max-Age=-1"}}}
    assert http[1]["headers"] == {"response": {"add": {"x-served-by": "mesh"}}}


def test_session_affinity_with_mirror_mirrors_on_the_weighted_route() -> None:
    canary = make_canary(analysis={"sessionAffinity": {"cookieName": "c"}, "mirror": True})
    vs = build_virtual_service(canary, Weights(100, 0, mirrored=True),
                               status=SessionCookies(previous="c=old"))
    expire, weighted = vs["spec"]["http"]
    assert "mirror" not in expire
    assert weighted["mirror"] == {"host": "podinfo-canary"}
    assert read_weights(vs, canary) == Weights(100, 0, mirrored=True)


def test_tcp_has_no_session_affinity() -> None:
    canary = make_canary(service={"appProtocol": "tcp"},
                         analysis={"sessionAffinity": {"cookieName": "c"}})
    assert next_session_cookies(canary, Weights(90, 10),
                                current=SessionCookies()) == SessionCookies()


# -- reading weights back -----------------------------------------------------------------------


def test_read_weights_errors() -> None:
    canary = make_canary()
    empty = {"metadata": {"name": "podinfo"}, "spec": {"http": [{"route": split(0, 0)}]}}
    with pytest.raises(RouterError, match="does not contain routes for podinfo-primary and "
                                          "podinfo-canary"):
        read_weights(empty, canary)
    with pytest.raises(RouterError, match="does not contain routes"):
        read_weights({"spec": {"http": [{"route": [dest("other", 100)]}]}}, canary)
    with pytest.raises(RouterError, match="do not add up to 100"):
        read_weights({"spec": {"http": [{"route": split(50, 40)}]}}, canary)


def test_read_weights_from_a_flagger_session_affinity_virtual_service() -> None:
    """Flagger's older releases name their one sticky route ``sticky-route``."""
    canary = affinity_canary()
    vs = {"spec": {"http": [
        {"name": "sticky-route", "route": split(0, 100)},
        {"route": [dest("podinfo-primary", 60),
                   {**dest("podinfo-canary", 40),
                    "headers": {"response": {"add": {"Set-Cookie": "x"}}}}]},
    ]}}
    assert read_weights(vs, canary) == Weights(60, 40)


SHAPES = [
    pytest.param({}, {}, id="plain"),
    pytest.param({"match": [{"uri": {"prefix": "/"}}]}, {"mirror": True, "mirrorWeight": 10},
                 id="mirror"),
    pytest.param({"appProtocol": "tcp"}, {}, id="tcp"),
    pytest.param({"delegation": True, "portDiscovery": True}, {}, id="delegation"),
    pytest.param({}, {"iterations": 5, "stepWeight": None, "match": AB}, id="ab"),
    pytest.param({}, {"sessionAffinity": {"cookieName": "c", "primaryCookieName": "p"}},
                 id="session-affinity"),
]
SPLITS = [Weights(100, 0), Weights(100, 0, mirrored=True), Weights(90, 10), Weights(0, 100),
          Weights(40, 60, mirrored=True)]


@pytest.mark.parametrize(("service", "analysis"), SHAPES)
def test_reconcile_after_set_routes_keeps_everything(
        service: dict[str, Any], analysis: dict[str, Any],
) -> None:
    """What ``reconcile`` builds over what ``set_routes`` wrote is what is there: no write."""
    canary = make_canary(service=service, analysis=analysis)
    for weights in SPLITS:
        cookies = next_session_cookies(canary, weights, current=SessionCookies(),
                                       token=tokens("v1", "v2"))
        stored = build_virtual_service(canary, weights, status=cookies)
        stored["metadata"]["resourceVersion"] = "7"
        kept = kept_weights(stored, canary)
        expected = weights
        if istio.is_tcp(canary) or analysis.get("match"):
            expected = Weights(weights.primary, weights.canary)  # no mirror on tcp and A/B
        assert kept == expected
        assert read_weights(stored, canary) == expected
        rebuilt = build_virtual_service(canary, kept, existing=stored, status=cookies)
        assert rebuilt == stored


def test_kept_weights_defaults_and_protocol_switch() -> None:
    canary = make_canary()
    assert kept_weights(None, canary) == Weights(100, 0)
    assert kept_weights({"spec": {"http": [{"route": [dest("user-svc", 100)]}]}},
                        canary) == Weights(100, 0)
    tcp_vs = {"spec": {"tcp": [{"route": split(30, 70)}]}}
    assert kept_weights(tcp_vs, canary) == Weights(30, 70)  # now http: the split stays


# -- taking over a user's VirtualService, and giving it back ------------------------------------

USER_SPEC = {"hosts": ["podinfo"], "http": [{"route": [{"destination": {"host": "podinfo"}}]}]}


def user_vs(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "podinfo", "namespace": "test", "resourceVersion": "42",
                     "labels": {"team": "web"},
                     "annotations": {"owner": "web-team", **(annotations or {})}},
        "spec": copy.deepcopy(USER_SPEC),
    }


def test_takeover_records_the_original_spec_once() -> None:
    canary = make_canary(service={"apex": {"labels": {"tier": "edge"}}})
    existing = user_vs()
    taken = build_virtual_service(canary, Weights(100, 0), existing=existing)
    meta = taken["metadata"]
    assert meta["resourceVersion"] == "42"
    assert "ownerReferences" not in meta  # never made ours: deleting the Canary keeps it
    assert meta["labels"] == {"team": "web", "tier": "edge"}
    assert meta["annotations"] == {"owner": "web-team", **TOOLKIT,
                                   ORIGINAL_CONFIGURATION: json.dumps(USER_SPEC,
                                                                      separators=(",", ":"))}
    assert taken["spec"]["http"] == [{"route": split(100, 0)}]
    assert existing == user_vs()  # the input is not changed

    # Later changes keep the first recording.
    later = build_virtual_service(canary, Weights(50, 50), existing=taken)
    assert later["metadata"]["annotations"][ORIGINAL_CONFIGURATION] == \
        meta["annotations"][ORIGINAL_CONFIGURATION]
    assert build_virtual_service(canary, Weights(50, 50), existing=later) == later


def test_takeover_of_a_kubectl_applied_virtual_service_records_nothing() -> None:
    applied = json.dumps({"apiVersion": "networking.istio.io/v1beta1",
                          "kind": "VirtualService", "spec": USER_SPEC})
    taken = build_virtual_service(make_canary(), Weights(100, 0),
                                  existing=user_vs({KUBECTL: applied}))
    assert ORIGINAL_CONFIGURATION not in taken["metadata"]["annotations"]
    assert taken["metadata"]["annotations"][KUBECTL] == applied


def test_an_identical_user_virtual_service_is_not_recorded() -> None:
    canary = make_canary()
    existing = user_vs()
    existing["spec"] = build_virtual_service(canary, Weights(100, 0))["spec"]
    taken = build_virtual_service(canary, Weights(100, 0), existing=existing)
    assert ORIGINAL_CONFIGURATION not in taken["metadata"]["annotations"]


def test_our_own_virtual_service_has_its_metadata_replaced() -> None:
    canary = make_canary(service={"apex": {"labels": {"tier": "edge"}}})
    ours = build_virtual_service(canary, Weights(90, 10))
    ours["metadata"]["labels"]["stale"] = "x"
    ours["metadata"]["annotations"][KUBECTL] = "{}"
    rebuilt = build_virtual_service(canary, Weights(90, 10), existing=ours)
    assert rebuilt["metadata"]["labels"] == {"tier": "edge"}
    assert rebuilt["metadata"]["annotations"] == {**TOOLKIT, KUBECTL: "{}"}
    assert rebuilt["metadata"]["ownerReferences"] == [OWNER]
    assert ORIGINAL_CONFIGURATION not in rebuilt["metadata"]["annotations"]


def test_restore_from_the_original_configuration() -> None:
    taken = build_virtual_service(make_canary(), Weights(70, 30), existing=user_vs())
    restored = restored_virtual_service(taken)
    assert restored is not None
    assert restored["spec"] == USER_SPEC
    assert restored["metadata"] == taken["metadata"]
    assert restored_virtual_service(restored) == restored  # a second finalize writes nothing


def test_restore_prefers_kubectl() -> None:
    kubectl_spec = {"hosts": ["podinfo"], "http": [{"route": [dest("podinfo", 100)]}]}
    vs = user_vs({KUBECTL: json.dumps({"spec": kubectl_spec}),
                  ORIGINAL_CONFIGURATION: json.dumps(USER_SPEC)})
    vs["spec"] = {"hosts": ["podinfo"], "http": [{"route": split(0, 100)}]}
    restored = restored_virtual_service(vs)
    assert restored is not None
    assert restored["spec"] == kubectl_spec


def test_restore_without_record_or_object() -> None:
    assert restored_virtual_service(None) is None
    assert restored_virtual_service(user_vs()) is None
    with pytest.raises(RouterError, match="does not hold a VirtualService spec"):
        restored_virtual_service(user_vs({ORIGINAL_CONFIGURATION: "not json"}))
    with pytest.raises(RouterError, match="does not hold a VirtualService spec"):
        restored_virtual_service(user_vs({KUBECTL: json.dumps({"kind": "VirtualService"})}))


# -- the plugin ---------------------------------------------------------------------------------


def context() -> ProviderContext:
    return ProviderContext(store=kube.ObjectStore(None), settings=Settings(),  # no I/O here
                           log=structlog.get_logger("test"))


def test_router_is_registered_and_conforms() -> None:
    plugin = plugins.routers.get("istio")
    router = plugin.factory(ctx=context(), variant=plugin.variant)
    assert isinstance(router, istio.IstioRouter)
    assert isinstance(router, Router)


def test_router_refuses_a_variant() -> None:
    with pytest.raises(PluginError, match="takes no variant"):
        istio.IstioRouter(ctx=context(), variant="v1")
