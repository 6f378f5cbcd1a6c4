"""Simulated users: A/B traits drawn once per user, cookie jars that honour Max-Age."""

from __future__ import annotations

import random

import pytest

from e2e.simulator.users import CookieJar, Trait, UserPool, parse_set_cookie, parse_trait


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("x-canary=insider:0.1", Trait("x-canary", "insider", 0.1), id="header"),
        pytest.param("canary=always:1", Trait("canary", "always", 1.0), id="everyone"),
        pytest.param("x-url=http://a:0.5", Trait("x-url", "http://a", 0.5), id="colon-in-value"),
    ],
)
def test_parse_trait(text: str, expected: Trait) -> None:
    assert parse_trait(text) == expected


@pytest.mark.parametrize("text", ["x-canary=insider", "insider:0.1", "a=b:lots", "a=b:1.5"])
def test_parse_trait_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"NAME=VALUE:SHARE|share"):
        parse_trait(text)


def test_each_trait_is_carried_by_exactly_its_share_of_users() -> None:
    """An A/B test expecting 30 % on the canary must not fail because 43 of 100 tosses fell."""
    for seed in range(20):
        pool = UserPool(100, rng=random.Random(seed),
                        headers=[parse_trait("x-canary=insider:0.3")],
                        cookies=[parse_trait("canary=always:0.25")])
        insiders = {u.id for u in pool.users if u.headers.get("x-canary") == "insider"}
        always = {u.id for u in pool.users if u.cookies.get("canary") == "always"}
        assert (len(insiders), len(always)) == (30, 25)
    assert insiders != set(range(30)), "carriers are a random sample, not the first users"
    assert insiders != always
    user = next(u for u in pool.users if u.cookies)
    assert user.request_headers("podinfo", now=0)["cookie"] == "canary=always"


def test_a_share_is_rounded_to_whole_users() -> None:
    pool = UserPool(7, rng=random.Random(1), headers=[parse_trait("x-canary=insider:0.5")])
    assert sum(1 for u in pool.users if u.headers) == 4
    assert not any(UserPool(3, rng=random.Random(1),
                            headers=[parse_trait("x-canary=insider:0.1")]).users[i].headers
                   for i in range(3))


def test_set_cookie_parsing() -> None:
    assert parse_set_cookie("flagger-cookie=abc; Max-Age=21600; Path=/; HttpOnly") == (
        "flagger-cookie", "abc", 21600.0)
    assert parse_set_cookie("a=b") == ("a", "b", None)
    assert parse_set_cookie("a=b; Max-Age=-1") == ("a", "b", -1.0)


def test_cookie_jar_expiry_and_deletion() -> None:
    jar = CookieJar()
    jar.receive("session=1", now=0)
    jar.receive("flagger-cookie=abc; Max-Age=10", now=0)
    assert jar.header(now=5) == "session=1; flagger-cookie=abc"
    assert jar.header(now=10) == "session=1"  # expired at 0 + 10
    jar.receive("flagger-cookie=abc; Max-Age=10", now=20)
    jar.receive("flagger-cookie=abc; Max-Age=-1", now=21)  # Flagger's "previous session" reset
    assert jar.header(now=22) == "session=1"


def test_jars_are_per_host() -> None:
    pool = UserPool(1, rng=random.Random(1))
    user = pool.pick()
    user.receive("podinfo", ["flagger-cookie=abc; Max-Age=60"], now=0)
    assert user.request_headers("podinfo", now=1) == {"cookie": "flagger-cookie=abc"}
    assert user.request_headers("other", now=1) == {}
