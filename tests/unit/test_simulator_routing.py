"""Simulated Istio routing: the VirtualServices Flagger writes send traffic where Envoy would.

Weights are checked statistically over many draws of a seeded RNG, with tolerances of about five
standard deviations: tight enough that a swapped or ignored weight fails, loose enough never to
flake (the seed makes each run identical anyway).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest

from e2e.simulator.routing import (
    HeaderOps,
    Request,
    ServiceKey,
    VirtualServiceRef,
    canonical_host,
    hosts_match,
    match_request,
    parse_duration,
    route,
    select_rule,
    service_key,
    string_matches,
)
from e2e.simulator.users import UserPool

DRAWS = 10_000


def weighted(primary: int, canary: int, **rule: Any) -> dict[str, Any]:
    """Flagger's canary VirtualService spec (spec §3.2) with the given weights."""
    return {
        "hosts": ["podinfo"],
        "gateways": ["mesh"],
        "http": [{
            **rule,
            "route": [
                {"destination": {"host": "podinfo-primary"}, "weight": primary},
                {"destination": {"host": "podinfo-canary"}, "weight": canary},
            ],
        }],
    }


def shares(spec: dict[str, Any], request: Request, *, draws: int = DRAWS,
           seed: int = 7, **routing: Any) -> dict[str, float]:
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    for _ in range(draws):
        decision = route(spec, request, rng, **routing)
        assert decision is not None
        counts[decision.destination.host if decision.destination else "-"] += 1
    return {host: n / draws for host, n in counts.items()}


def tolerance(p: float, n: int = DRAWS) -> float:
    return 5 * math.sqrt(p * (1 - p) / n) + 1e-9


# -- weights -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("primary", "canary"),
    [
        pytest.param(100, 0, id="initial"),
        pytest.param(90, 10, id="first-step"),
        pytest.param(80, 20, id="80-20"),
        pytest.param(50, 50, id="half"),
        pytest.param(20, 80, id="20-80"),
        pytest.param(0, 100, id="promoting"),
    ],
)
def test_weights_are_respected(primary: int, canary: int) -> None:
    got = shares(weighted(primary, canary), Request(host="podinfo"))
    expected = canary / 100
    assert abs(got.get("podinfo-canary", 0.0) - expected) <= tolerance(expected)
    if canary == 0:
        assert "podinfo-canary" not in got  # weight 0 is never chosen, not just rarely
    if primary == 0:
        assert "podinfo-primary" not in got


def test_swapped_weights_are_told_apart() -> None:
    right = shares(weighted(80, 20), Request(host="podinfo"))["podinfo-canary"]
    swapped = shares(weighted(20, 80), Request(host="podinfo"))["podinfo-canary"]
    assert swapped - right > 0.5


def test_single_destination_without_weight_gets_everything() -> None:
    spec = {"http": [{"route": [{"destination": {"host": "podinfo-primary"}}]}]}
    assert shares(spec, Request(host="podinfo"), draws=100) == {"podinfo-primary": 1.0}


def test_all_weights_zero_routes_nowhere() -> None:
    decision = route(weighted(0, 0), Request(host="podinfo"), random.Random(1))
    assert decision is not None
    assert decision.destination is None


def test_destination_port_and_subset_are_kept() -> None:
    spec = {"http": [{"route": [
        {"destination": {"host": "podinfo-canary", "port": {"number": 9898}, "subset": "v2"}}]}]}
    decision = route(spec, Request(host="podinfo"), random.Random(1))
    assert decision is not None
    assert decision.destination is not None
    assert (decision.destination.port, decision.destination.subset) == (9898, "v2")


# -- matches -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    [
        pytest.param({"exact": "insider"}, "insider", True, id="exact"),
        pytest.param({"exact": "insider"}, "insiders", False, id="exact-longer"),
        pytest.param({"prefix": "ins"}, "insider", True, id="prefix"),
        pytest.param({"prefix": "x"}, "insider", False, id="prefix-miss"),
        pytest.param({"regex": "ins.*"}, "insider", True, id="regex"),
        pytest.param({"regex": "sid"}, "insider", False, id="regex-is-anchored"),
        pytest.param({"regex": "("}, "(", False, id="regex-invalid"),
        pytest.param({}, "anything", True, id="presence"),
        pytest.param({"exact": "insider"}, None, False, id="absent"),
        pytest.param({}, None, False, id="presence-absent"),
    ],
)
def test_string_match(spec: dict[str, str], value: str | None, expected: bool) -> None:
    assert string_matches(spec, value) is expected


def ab_spec() -> dict[str, Any]:
    """Flagger's A/B shape: the analysis match routes to the canary, the rest to the primary."""
    return {
        "hosts": ["podinfo"],
        "http": [
            {
                "match": [
                    {"headers": {"x-canary": {"exact": "insider"}}},
                    {"headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}},
                ],
                "route": [
                    {"destination": {"host": "podinfo-primary"}, "weight": 0},
                    {"destination": {"host": "podinfo-canary"}, "weight": 100},
                ],
            },
            {"route": [{"destination": {"host": "podinfo-primary"}, "weight": 100}]},
        ],
    }


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({}, "podinfo-primary", id="nobody"),
        pytest.param({"x-canary": "insider"}, "podinfo-canary", id="header"),
        pytest.param({"x-canary": "outsider"}, "podinfo-primary", id="other-header-value"),
        pytest.param({"cookie": "canary=always"}, "podinfo-canary", id="cookie-alone"),
        pytest.param({"cookie": "a=1;canary=always;b=2"}, "podinfo-canary",
                     id="cookie-among-others"),
        # The regex sees the raw Cookie line, as Envoy's does: this one does not allow the
        # space browsers put after ';', so such a user stays on the primary in a real mesh too.
        pytest.param({"cookie": "a=1; canary=always"}, "podinfo-primary",
                     id="regex-is-applied-to-the-raw-line"),
        pytest.param({"cookie": "canary=never"}, "podinfo-primary", id="other-cookie-value"),
    ],
)
def test_ab_header_and_cookie_matches(headers: dict[str, str], expected: str) -> None:
    got = shares(ab_spec(), Request(host="podinfo", headers=headers), draws=200)
    assert got == {expected: 1.0}


def test_match_conditions_are_anded_and_entries_ored() -> None:
    match = {"uri": {"prefix": "/api"}, "method": {"exact": "POST"},
             "headers": {"X-User": {"regex": "[0-9]+"}}}
    ok = Request(host="h", path="/api/v1?x=1", method="post", headers={"x-user": "42"})
    assert match_request(match, ok)
    assert not match_request(match, Request(host="h", path="/web", method="POST",
                                            headers={"x-user": "42"}))
    assert not match_request(match, Request(host="h", path="/api", method="GET",
                                            headers={"x-user": "42"}))
    rules: list[dict[str, Any]] = [
        {"match": [match, {"uri": {"exact": "/health"}}], "name": "a"}, {"name": "b"}]
    chosen = select_rule(rules, Request(host="h", path="/health"))
    assert chosen is not None
    assert chosen[1]["name"] == "a"
    chosen = select_rule(rules, Request(host="h", path="/other"))
    assert chosen is not None
    assert chosen[1]["name"] == "b"


def test_uri_query_without_headers_and_source_matches() -> None:
    assert match_request({"uri": {"exact": "/a"}}, Request(host="h", path="/a?b=c"))
    assert match_request({"uri": {"prefix": "/API"}, "ignoreUriCase": True},
                         Request(host="h", path="/api/x"))
    assert match_request({"queryParams": {"beta": {"exact": "1"}}},
                         Request(host="h", path="/?beta=1"))
    assert not match_request({"queryParams": {"beta": {"exact": "1"}}},
                             Request(host="h", path="/?beta=0"))
    assert not match_request({"withoutHeaders": {"x-canary": {}}},
                             Request(host="h", headers={"x-canary": "1"}))
    assert match_request({"withoutHeaders": {"x-canary": {}}}, Request(host="h"))
    assert match_request({"sourceLabels": {"app": "frontend"}},
                         Request(host="h", source_labels={"app": "frontend", "v": "1"}))
    assert not match_request({"sourceLabels": {"app": "frontend"}}, Request(host="h"))


def test_no_matching_rule_is_no_route() -> None:
    spec = {"http": [{"match": [{"uri": {"prefix": "/api"}}],
                      "route": [{"destination": {"host": "podinfo-primary"}}]}]}
    assert route(spec, Request(host="podinfo", path="/web"), random.Random(1)) is None


# -- mirror ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        pytest.param({"mirror": {"host": "podinfo-canary"}}, 1.0, id="mirror-all"),
        pytest.param({"mirror": {"host": "podinfo-canary"}, "mirrorPercentage": {"value": 50}},
                     0.5, id="percentage"),
        pytest.param({"mirror": {"host": "podinfo-canary"}, "mirrorPercentage": {"value": 12.5}},
                     0.125, id="fraction"),
        pytest.param({"mirror": {"host": "podinfo-canary"}, "mirrorPercent": 30}, 0.3,
                     id="legacy-percent"),
        pytest.param({"mirror": {"host": "podinfo-canary"}, "mirrorPercentage": {"value": 0}},
                     0.0, id="zero"),
        pytest.param({"mirrors": [{"destination": {"host": "podinfo-canary"},
                                   "percentage": {"value": 25}}]}, 0.25, id="mirrors-list"),
        pytest.param({}, 0.0, id="none"),
    ],
)
def test_mirror_share(rule: dict[str, Any], expected: float) -> None:
    spec = weighted(100, 0, **rule)
    rng = random.Random(3)
    mirrored = 0
    for _ in range(DRAWS):
        decision = route(spec, Request(host="podinfo"), rng)
        assert decision is not None
        assert decision.destination is not None
        assert decision.destination.host == "podinfo-primary"  # the mirror never replaces it
        mirrored += decision.mirrors.count("podinfo-canary")
    assert abs(mirrored / DRAWS - expected) <= tolerance(expected)


# -- headers and session affinity -------------------------------------------------------------


COOKIE = "flagger-cookie"


def sticky_spec(canary_weight: int) -> dict[str, Any]:
    """Flagger's session-affinity shape (spec §3.2): sticky rule first, then the weighted one."""
    return {
        "hosts": ["podinfo"],
        "http": [
            {
                "match": [{"headers": {"Cookie": {"regex": f".*{COOKIE}.*abc123.*"}}}],
                "route": [
                    {"destination": {"host": "podinfo-primary"}, "weight": 0},
                    {"destination": {"host": "podinfo-canary"}, "weight": 100},
                ],
            },
            {
                "route": [
                    {"destination": {"host": "podinfo-primary"}, "weight": 100 - canary_weight},
                    {
                        "destination": {"host": "podinfo-canary"},
                        "weight": canary_weight,
                        "headers": {"response": {"add": {
                            "Set-Cookie": f"{COOKIE}=abc123; Max-Age=21600"}}},
                    },
                ],
            },
        ],
    }


def test_response_headers_come_from_the_chosen_destination() -> None:
    spec = sticky_spec(100)
    decision = route(spec, Request(host="podinfo"), random.Random(1))
    assert decision is not None
    assert decision.rule_index == 1
    assert decision.response_headers.apply([]) == [
        ("Set-Cookie", f"{COOKIE}=abc123; Max-Age=21600")]
    primary_only = route(sticky_spec(0), Request(host="podinfo"), random.Random(1))
    assert primary_only is not None
    assert not primary_only.response_headers


def test_session_affinity_keeps_a_user_on_the_canary_until_the_cookie_expires() -> None:
    rng = random.Random(11)
    pool = UserPool(200, rng=rng)
    spec = sticky_spec(10)
    now = 0.0
    on_canary: set[int] = set()
    for _ in range(20):  # rounds: every user sends one request per round
        now += 1
        for user in pool.users:
            decision = route(spec, Request(host="podinfo",
                                           headers=user.request_headers("podinfo", now=now)), rng)
            assert decision is not None
            assert decision.destination is not None
            if user.id in on_canary:
                assert decision.destination.host == "podinfo-canary", "a sticky user moved"
                assert decision.rule_index == 0
            if decision.destination.host == "podinfo-canary":
                on_canary.add(user.id)
            set_cookies = [v for k, v in decision.response_headers.apply([])
                           if k.lower() == "set-cookie"]
            user.receive("podinfo", set_cookies, now=now)
    # 10 % per round: after 20 rounds nearly every user (1 - 0.9**20 ≈ 88 %) is on the canary.
    assert 0.75 < len(on_canary) / len(pool) < 0.97
    # After Max-Age the cookie is gone: routing is by weight again.
    now += 21600 + 1
    hosts: Counter[str] = Counter()
    for user in pool.users:
        decision = route(spec, Request(host="podinfo",
                                       headers=user.request_headers("podinfo", now=now)), rng)
        assert decision is not None
        assert decision.destination is not None
        hosts[decision.destination.host] += 1
    assert hosts["podinfo-primary"] > 150


def test_header_ops_set_add_remove() -> None:
    ops = HeaderOps.parse({"set": {"X-A": "1"}, "add": {"Set-Cookie": "c=1"}, "remove": ["X-B"]})
    assert ops.apply([("x-a", "0"), ("X-B", "2"), ("Set-Cookie", "d=2")]) == [
        ("Set-Cookie", "d=2"), ("X-A", "1"), ("Set-Cookie", "c=1")]


def test_rule_timeout_is_parsed() -> None:
    decision = route(weighted(100, 0, timeout="1.5s"), Request(host="podinfo"), random.Random(1))
    assert decision is not None
    assert decision.timeout == 1.5
    assert parse_duration("250ms") == 0.25
    assert parse_duration("2m") == 120
    assert parse_duration("soon") is None


# -- delegation --------------------------------------------------------------------------------


class Delegates:
    """A resolver over fixed delegate specs that records every lookup."""

    def __init__(self, specs: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.specs = specs
        self.lookups: list[tuple[str, str]] = []

    def __call__(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        self.lookups.append((namespace, name))
        return self.specs.get((namespace, name))


def root_spec(*rules: dict[str, Any]) -> dict[str, Any]:
    """A root VirtualService, as a user writes it around Flagger's delegate."""
    return {"hosts": ["podinfo.example.com"], "gateways": ["public-gateway"], "http": list(rules)}


def delegate_spec(primary: int, canary: int, **rule: Any) -> dict[str, Any]:
    """What Flagger writes with ``service.delegation: true``: no hosts, no gateways."""
    return {**weighted(primary, canary, **rule), "hosts": [], "gateways": []}


@pytest.mark.parametrize(
    ("primary", "canary"),
    [pytest.param(100, 0, id="initial"), pytest.param(80, 20, id="80-20"),
     pytest.param(0, 100, id="promoting")],
)
def test_delegate_weights_are_followed(primary: int, canary: int) -> None:
    delegates = Delegates({("test", "podinfo"): delegate_spec(primary, canary)})
    # The root's own weights (0/100) would send everything to the canary: they must not count.
    root = root_spec({"delegate": {"name": "podinfo"},
                      "route": [{"destination": {"host": "podinfo-canary"}}]})
    got = shares(root, Request(host="podinfo.example.com"), namespace="test", delegates=delegates)
    expected = canary / 100
    assert abs(got.get("podinfo-canary", 0.0) - expected) <= tolerance(expected)
    if canary == 0:
        assert "podinfo-canary" not in got
    if primary == 0:
        assert "podinfo-primary" not in got
    decision = route(root, Request(host="podinfo.example.com"), random.Random(1),
                     namespace="test", delegates=delegates)
    assert decision is not None
    assert decision.delegate == VirtualServiceRef("test", "podinfo")
    assert (decision.rule_index, decision.root_rule_index) == (0, 0)
    assert decision.hosts_namespace("test") == "test"


def test_root_match_gates_the_delegate() -> None:
    delegate = {"hosts": [], "http": [
        {"name": "insiders", "match": [{"headers": {"x-canary": {"exact": "insider"}}}],
         "route": [{"destination": {"host": "podinfo-canary"}}]},
        {"name": "everyone", "route": [{"destination": {"host": "podinfo-primary"}}]},
    ]}
    delegates = Delegates({("test", "podinfo"): delegate})
    root = root_spec(
        {"name": "api", "match": [{"uri": {"prefix": "/api"}}], "delegate": {"name": "podinfo"}},
        {"name": "web", "route": [{"destination": {"host": "frontend"}}]},
    )

    def routed(path: str, **headers: str) -> tuple[str | None, int, str, VirtualServiceRef | None]:
        decision = route(root, Request(host="podinfo.example.com", path=path, headers=headers),
                         random.Random(1), namespace="test", delegates=delegates)
        assert decision is not None
        assert decision.destination is not None
        return (decision.destination.host, decision.rule_index, decision.rule_name,
                decision.delegate)

    ref = VirtualServiceRef("test", "podinfo")
    assert routed("/api/v1", **{"x-canary": "insider"}) == ("podinfo-canary", 0, "api-insiders",
                                                           ref)
    assert routed("/api/v1") == ("podinfo-primary", 1, "api-everyone", ref)
    # The delegate's first rule would take this request, but the root's match does not hold.
    assert routed("/web", **{"x-canary": "insider"}) == ("frontend", 1, "web", None)
    assert delegates.lookups == [("test", "podinfo")] * 2  # looked up only when the root matched


def test_a_delegate_with_no_matching_rule_falls_through_to_the_next_root_rule() -> None:
    delegate = {"hosts": [], "http": [{"match": [{"headers": {"x-canary": {}}}],
                                       "route": [{"destination": {"host": "podinfo-canary"}}]}]}
    root = root_spec({"delegate": {"name": "podinfo"}},
                     {"name": "fallback", "route": [{"destination": {"host": "podinfo-primary"}}]})
    decision = route(root, Request(host="podinfo.example.com"), random.Random(1),
                     namespace="test", delegates=Delegates({("test", "podinfo"): delegate}))
    assert decision is not None
    assert decision.destination is not None
    assert (decision.destination.host, decision.rule_index, decision.delegate) == (
        "podinfo-primary", 1, None)


def test_missing_delegate_is_no_route() -> None:
    root = root_spec({"delegate": {"name": "podinfo"}})
    request = Request(host="podinfo.example.com")
    delegates = Delegates({("other", "podinfo"): delegate_spec(100, 0)})
    assert route(root, request, random.Random(1), namespace="test", delegates=delegates) is None
    assert delegates.lookups == [("test", "podinfo")]  # the root's namespace, not any other
    # Without a resolver every delegate is missing.
    assert route(root, request, random.Random(1), namespace="test") is None
    # A VirtualService with hosts is a root of its own, never a delegate.
    with_hosts = Delegates({("test", "podinfo"): weighted(100, 0)})
    assert route(root, request, random.Random(1), namespace="test", delegates=with_hosts) is None
    # Istio drops the root rule, so a later rule still routes.
    fallback = root_spec({"delegate": {"name": "podinfo"}},
                         {"route": [{"destination": {"host": "podinfo-primary"}}]})
    decision = route(fallback, request, random.Random(1), namespace="test", delegates=delegates)
    assert decision is not None
    assert decision.rule_index == 1


def test_nested_delegation_is_not_followed() -> None:
    delegates = Delegates({
        ("test", "podinfo"): {"hosts": [], "http": [{"delegate": {"name": "deeper"}}]},
        ("test", "deeper"): delegate_spec(0, 100),
    })
    decision = route(root_spec({"delegate": {"name": "podinfo"}}),
                     Request(host="podinfo.example.com"), random.Random(1), namespace="test",
                     delegates=delegates)
    assert decision is not None
    assert decision.delegate == VirtualServiceRef("test", "podinfo")
    assert decision.destination is None  # the rule has no route of its own: nowhere to go
    assert delegates.lookups == [("test", "podinfo")]


def test_delegate_in_another_namespace_resolves_hosts_there() -> None:
    delegates = Delegates({("prod", "podinfo"): delegate_spec(0, 100)})
    root = root_spec({"delegate": {"name": "podinfo", "namespace": "prod"}})
    decision = route(root, Request(host="podinfo.example.com"), random.Random(1),
                     namespace="test", delegates=delegates)
    assert decision is not None
    assert decision.destination is not None
    assert decision.delegate == VirtualServiceRef("prod", "podinfo")
    assert decision.hosts_namespace("test") == "prod"
    assert service_key(decision.destination.host, namespace=decision.hosts_namespace("test")) == \
        ServiceKey("prod", "podinfo-canary")
    # A delegate without a namespace is in the root's, which then must be known.
    with pytest.raises(ValueError, match="namespace"):
        route(root_spec({"delegate": {"name": "podinfo"}}), Request(host="podinfo.example.com"),
              random.Random(1), delegates=delegates)


def test_delegate_rule_inherits_only_what_it_leaves_unset() -> None:
    """Istio's merge: the delegate rule's timeout, headers and mirrors win; the root's fill in."""
    own = {"hosts": [], "http": [{
        "match": [{"uri": {"prefix": "/own"}}], "timeout": "1s",
        "headers": {"response": {"set": {"x-from": "delegate"}}},
        "mirror": {"host": "shadow"}, "mirrorPercentage": {"value": 100},
        "route": [{"destination": {"host": "podinfo-primary"}}],
    }, {"route": [{"destination": {"host": "podinfo-primary"}}]}]}
    delegates = Delegates({("prod", "podinfo"): own})
    root = root_spec({"delegate": {"name": "podinfo", "namespace": "prod"}, "timeout": "5s",
                      "headers": {"response": {"set": {"x-from": "root"}}},
                      "mirror": {"host": "audit"}, "mirrorPercentage": {"value": 100}})

    def decide(path: str) -> Any:
        decision = route(root, Request(host="podinfo.example.com", path=path), random.Random(1),
                         namespace="test", delegates=delegates)
        assert decision is not None
        return decision

    overriding = decide("/own")
    assert overriding.timeout == 1.0
    assert overriding.response_headers.apply([]) == [("x-from", "delegate")]
    assert overriding.mirrors == ("shadow",)  # a delegate host: resolved in prod by the caller
    inheriting = decide("/other")
    assert inheriting.timeout == 5.0
    assert inheriting.response_headers.apply([]) == [("x-from", "root")]
    # The root's short mirror host means "audit" in the root's namespace, not in prod.
    assert inheriting.mirrors == ("audit.test.svc.cluster.local",)
    assert service_key(inheriting.mirrors[0], namespace=inheriting.hosts_namespace("test")) == \
        ServiceKey("test", "audit")


# -- hosts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("podinfo", ServiceKey("test", "podinfo"), id="short"),
        pytest.param("podinfo:9898", ServiceKey("test", "podinfo"), id="port"),
        pytest.param("podinfo-canary.prod", ServiceKey("prod", "podinfo-canary"),
                     id="name-namespace"),
        pytest.param("podinfo.prod.svc", ServiceKey("prod", "podinfo"), id="svc"),
        pytest.param("podinfo.prod.svc.cluster.local", ServiceKey("prod", "podinfo"), id="fqdn"),
        pytest.param("app.example.com", None, id="external"),
        pytest.param("example.com", None, id="two-labels-not-a-namespace"),
        pytest.param("*.example.com", None, id="wildcard"),
    ],
)
def test_service_key(host: str, expected: ServiceKey | None) -> None:
    assert service_key(host, namespace="test", namespaces={"test", "prod"}) == expected


def test_hosts_match_like_istio() -> None:
    def serves(vs_hosts: list[str], host: str, *, caller: str = "test") -> bool:
        return hosts_match(vs_hosts, host, vs_namespace="test", request_namespace=caller,
                           namespaces={"test", "prod"})

    assert serves(["podinfo"], "podinfo")
    assert serves(["podinfo"], "podinfo.test")
    assert serves(["podinfo"], "podinfo.test.svc.cluster.local:9898", caller="prod")
    assert not serves(["podinfo"], "podinfo", caller="prod")  # another namespace's podinfo
    assert not serves(["podinfo"], "podinfo-canary")
    assert serves(["app.example.com", "podinfo"], "app.example.com")
    assert serves(["*.example.com"], "app.example.com")
    assert canonical_host("PodInfo.Test:80", namespace="x", namespaces={"test"}) == \
        "podinfo.test.svc.cluster.local"
