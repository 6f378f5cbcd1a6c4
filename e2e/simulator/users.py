"""Simulated users: who sends the generated traffic, with which headers and cookies.

Session affinity and A/B routing only mean something if the *same* user comes back: Flagger's
session-affinity rule sends a user to the canary because an earlier response (routed by weight)
set a cookie, and an A/B rule routes the users that carry a header or cookie. So traffic is sent by
a fixed pool of users, each with

- traits given once, when the pool is built: ``--user-header "x-canary=insider:0.1"`` gives 10 % of
  users the header ``x-canary: insider``, ``--user-cookie "canary=always:0.1"`` gives 10 % a
  ``canary=always`` cookie (each trait to its own random sample of users, and to exactly its share
  of them, rounded: a test expecting 30 % of requests on an A/B canary measures the route, not
  how 100 coin tosses fell);
- a cookie jar per host honouring ``Set-Cookie`` with ``Max-Age`` (``Max-Age`` ≤ 0 deletes the
  cookie, as Flagger's "previous session" rule relies on); ``Expires`` is ignored.

Pure: time is passed in (``now``, in seconds), randomness comes from the caller's ``random.Random``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["CookieJar", "Trait", "User", "UserPool", "parse_set_cookie", "parse_trait"]


@dataclass(frozen=True, slots=True)
class Trait:
    """A header or cookie ``name=value`` carried by a ``share`` (0..1) of users."""

    name: str
    value: str
    share: float


def parse_trait(text: str) -> Trait:
    """Reads ``NAME=VALUE:SHARE`` (``SHARE`` in 0..1; the value may itself contain ``:``)."""
    assignment, sep, share_text = text.rpartition(":")
    name, eq, value = assignment.partition("=")
    if not sep or not eq or not name.strip():
        raise ValueError(f"{text!r}: expected NAME=VALUE:SHARE, e.g. x-canary=insider:0.1")
    try:
        share = float(share_text)
    except ValueError:
        raise ValueError(f"{text!r}: share {share_text!r} is not a number") from None
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"{text!r}: share must be between 0 and 1")
    return Trait(name.strip(), value.strip(), share)


def parse_set_cookie(header: str) -> tuple[str, str, float | None]:
    """``name``, ``value`` and ``Max-Age`` (None when absent) of one ``Set-Cookie`` value."""
    first, *attributes = header.split(";")
    name, _, value = first.partition("=")
    max_age: float | None = None
    for attribute in attributes:
        key, _, text = attribute.strip().partition("=")
        if key.lower() == "max-age":
            try:
                max_age = float(text.strip())
            except ValueError:
                max_age = None
    return name.strip(), value.strip(), max_age


@dataclass(slots=True)
class CookieJar:
    """Cookies by name with their expiry time (None: a session cookie, kept for the run)."""

    cookies: dict[str, tuple[str, float | None]] = field(default_factory=dict)

    def receive(self, set_cookie: str, *, now: float) -> None:
        """Applies one ``Set-Cookie`` header value received at time ``now``."""
        name, value, max_age = parse_set_cookie(set_cookie)
        if not name:
            return
        if max_age is not None and max_age <= 0:
            self.cookies.pop(name, None)
            return
        self.cookies[name] = (value, None if max_age is None else now + max_age)

    def header(self, *, now: float) -> str | None:
        """The ``Cookie`` request header at time ``now`` (expired cookies dropped), or None."""
        live = []
        for name, (value, expires) in list(self.cookies.items()):
            if expires is not None and expires <= now:
                del self.cookies[name]
                continue
            live.append(f"{name}={value}")
        return "; ".join(live) or None


@dataclass(slots=True)
class User:
    """One simulated user: fixed headers and cookies, and one cookie jar per host.

    Jars are per host as in a browser: a session cookie set by ``podinfo`` is not sent to
    another service. Trait cookies (``--user-cookie``) are sent to every host.
    """

    id: int
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)
    jars: dict[str, CookieJar] = field(default_factory=dict)

    def request_headers(self, host: str, *, now: float) -> dict[str, str]:
        """Lower-cased headers to send to ``host`` now: the user's own plus its ``Cookie`` line."""
        headers = {name.lower(): value for name, value in self.headers.items()}
        parts = [f"{name}={value}" for name, value in self.cookies.items()]
        jar = self.jars.get(host)
        cookie = jar.header(now=now) if jar is not None else None
        if cookie:
            parts.append(cookie)
        if parts:
            headers["cookie"] = "; ".join(parts)
        return headers

    def receive(self, host: str, set_cookies: Iterable[str], *, now: float) -> None:
        """Stores the ``Set-Cookie`` values of a response from ``host``."""
        for value in set_cookies:
            self.jars.setdefault(host, CookieJar()).receive(value, now=now)


class UserPool:
    """A fixed population of users; each request is sent by one drawn at random."""

    def __init__(
        self,
        size: int,
        *,
        rng: random.Random,
        headers: Sequence[Trait] = (),
        cookies: Sequence[Trait] = (),
    ) -> None:
        if size < 1:
            raise ValueError("a user pool needs at least one user")
        self._rng = rng
        self.users = [User(index) for index in range(size)]
        for trait in headers:
            for user in self._carriers(trait):
                user.headers[trait.name] = trait.value
        for trait in cookies:
            for user in self._carriers(trait):
                user.cookies[trait.name] = trait.value

    def _carriers(self, trait: Trait) -> list[User]:
        """A random sample of exactly ``trait.share`` of the users (rounded to whole users)."""
        return self._rng.sample(self.users, round(trait.share * len(self.users)))

    def pick(self) -> User:
        return self._rng.choice(self.users)

    def __len__(self) -> int:
        return len(self.users)
