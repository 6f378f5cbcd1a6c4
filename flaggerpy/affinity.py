"""Session affinity, the part every router shares: the cookies a Canary's status carries.

Flagger's session affinity (``analysis.sessionAffinity``) sticks a user to the version that
answered them with a cookie. Where the cookie is matched and handed out is each mesh's own
business (an Istio header match and ``headers.response``, a Gateway API RegularExpression match
and a ResponseHeaderModifier), but the cookies themselves follow one state machine on three
status fields, whatever the router:

- canary weight > 0: ``sessionAffinityCookie`` (``<cookieName>=<10 random letters>``) is kept or
  made; with a primary cookie name, ``primarySessionAffinityCookie`` too;
- canary weight 0 (promotion, rollback): the cookie moves to ``previousSessionAffinityCookie``,
  to be expired with ``Max-Age=-1``.

A router stores new cookies in the Canary status (a merge patch through the object store)
before its routing object hands them out, so a failure in between never publishes a cookie the
next call would not route; and it reads them back through the store, which shows that write at
once, where the Canary it was handed may predate it.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from structlog.typing import FilteringBoundLogger

from flaggerpy import kube
from flaggerpy.errors import RouterError
from flaggerpy.models.canary import Canary, SessionAffinity
from flaggerpy.routing import Weights

__all__ = [
    "COOKIE_HEADER",
    "COOKIE_LETTERS",
    "COOKIE_VALUE_LENGTH",
    "SET_COOKIE_HEADER",
    "SessionCookies",
    "cookie_regex",
    "next_session_cookies",
    "random_cookie_value",
    "read_cookies",
    "set_cookie_value",
    "store_cookies",
]

COOKIE_HEADER: Final = "Cookie"
SET_COOKIE_HEADER: Final = "Set-Cookie"
COOKIE_LETTERS: Final = string.ascii_letters
COOKIE_VALUE_LENGTH: Final = 10


@dataclass(frozen=True, slots=True)
class SessionCookies:
    """The session-affinity cookies a Canary's status carries (``name=value`` each, or "")."""

    canary: str = ""
    """``status.sessionAffinityCookie``: handed out by, and routed to, the canary."""
    primary: str = ""
    """``status.primarySessionAffinityCookie``: handed out by, and routed to, the primary."""
    previous: str = ""
    """``status.previousSessionAffinityCookie``: the last run's canary cookie, being expired."""

    @classmethod
    def of(cls, canary: Canary) -> SessionCookies:
        """The cookies in the Canary's status."""
        status = canary.status
        if status is None:
            return cls()
        return cls(canary=status.session_affinity_cookie or "",
                   primary=status.primary_session_affinity_cookie or "",
                   previous=status.previous_session_affinity_cookie or "")

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> SessionCookies:
        """The cookies in a stored Canary's raw ``status`` (no model parsing on every tick)."""
        return cls(canary=str(status.get("sessionAffinityCookie") or ""),
                   primary=str(status.get("primarySessionAffinityCookie") or ""),
                   previous=str(status.get("previousSessionAffinityCookie") or ""))

    def status_patch(self) -> dict[str, Any]:
        """The merge patch of ``status`` that stores these cookies ("" removes a field)."""
        return {"status": {
            "sessionAffinityCookie": self.canary or None,
            "primarySessionAffinityCookie": self.primary or None,
            "previousSessionAffinityCookie": self.previous or None,
        }}


def random_cookie_value() -> str:
    """Ten random ASCII letters, as Flagger's ``randSeq`` (from a CSPRNG here)."""
    return "".join(secrets.choice(COOKIE_LETTERS) for _ in range(COOKIE_VALUE_LENGTH))


def _named(cookie: str, name: str) -> bool:
    return cookie.partition("=")[0] == name


def next_session_cookies(
        affinity: SessionAffinity | None,
        weights: Weights,
        *,
        current: SessionCookies,
        primary_cookie_name: str,
        token: Callable[[], str] = random_cookie_value,
) -> SessionCookies:
    """The cookies after routing ``weights``: Flagger's ``SetRoutes`` status transitions. Pure.

    ``affinity`` is None where the router does not route by cookies for this canary (none
    configured, A/B testing, ...): the cookies are then left as they are. With traffic on the
    canary a missing cookie is made (``<cookieName>=<token()>``) and an existing one kept, so
    clients stay stuck for the whole run; so is the primary cookie when the router uses one
    (``primary_cookie_name`` not empty). A cookie whose name no longer matches is replaced. At
    canary weight 0 the canary cookie becomes the previous one (to be expired) and the primary
    cookie is dropped: a run is over.
    """
    if affinity is None:
        return current
    if weights.canary == 0:
        return SessionCookies(previous=current.canary or current.previous)
    cookie = current.canary
    if not cookie or not _named(cookie, affinity.cookie_name):
        cookie = f"{affinity.cookie_name}={token()}"
    primary = ""
    if primary_cookie_name:
        primary = current.primary
        if not primary or not _named(primary, primary_cookie_name):
            primary = f"{primary_cookie_name}={token()}"
    return SessionCookies(canary=cookie, primary=primary, previous=current.previous)


def set_cookie_value(affinity: SessionAffinity, cookie: str, *, max_age: int) -> str:
    """A ``Set-Cookie`` value: ``<name>=<value>; Max-Age=<n>`` and the configured attributes.

    The attributes come in Flagger's order: Domain, HttpOnly, Partitioned, Path, SameSite,
    Secure, each only when set.
    """
    parts = [cookie, f"Max-Age={max_age}"]
    if affinity.domain:
        parts.append(f"Domain={affinity.domain}")
    if affinity.http_only:
        parts.append("HttpOnly")
    if affinity.partitioned:
        parts.append("Partitioned")
    if affinity.path:
        parts.append(f"Path={affinity.path}")
    if affinity.same_site:
        parts.append(f"SameSite={affinity.same_site}")
    if affinity.secure:
        parts.append("Secure")
    return "; ".join(parts)


def cookie_regex(cookie: str) -> str:
    """Flagger's regex for a ``Cookie`` header carrying ``cookie``, unescaped as it writes it:
    ``.*<name>.*<value>.*``."""
    name, _, value = cookie.partition("=")
    return f".*{name}.*{value}.*"


async def read_cookies(store: kube.ObjectStore, canary: Canary) -> SessionCookies:
    """The status cookies as last written.

    The store shows our own status write at once, where the Canary handed in may predate it
    (set earlier in the same tick). Without session affinity nothing is routed by cookies, so
    the Canary's own status is enough and nothing is read.
    """
    if canary.spec.analysis.session_affinity is None:
        return SessionCookies.of(canary)
    stored = await store.get(kube.CANARIES, namespace=canary.namespace, name=canary.name)
    if stored is None:
        return SessionCookies.of(canary)
    return SessionCookies.from_status(stored.get("status") or {})


async def store_cookies(
        store: kube.ObjectStore,
        canary: Canary,
        cookies: SessionCookies,
        *,
        log: FilteringBoundLogger,
) -> None:
    """Stores ``cookies`` in the Canary status (a merge patch of the three cookie fields).

    Raises RouterError naming the Canary when the write fails; ``WriteFencedError`` (this
    replica is no longer the leader) passes through unchanged.
    """
    try:
        await store.patch(kube.CANARIES, namespace=canary.namespace, name=canary.name,
                          patch=cookies.status_patch(), subresource="status")
    except kube.WriteFencedError:
        raise
    except kube.KubeError as exc:
        raise RouterError(f"Canary {canary.namespace}/{canary.name}: session affinity "
                          f"cookies not stored: {exc}") from exc
    log.info("session_affinity_cookies_stored", canary=f"{canary.name}.{canary.namespace}",
             cookie_set=bool(cookies.canary), primary_cookie_set=bool(cookies.primary),
             previous_cookie_set=bool(cookies.previous))
