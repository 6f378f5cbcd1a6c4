"""Who is asking, and may they: the Kubernetes API server decides, the dashboard only asks.

A request carries a bearer token (an ``Authorization: Bearer`` header, or the cookie the login
form sets). The controller sends it to the API server in a TokenReview: the answer is the user
(name, groups) or nothing, and the dashboard never interprets a token itself -- ServiceAccount
tokens, OIDC tokens and whatever else the API server accepts work alike. Each view and each
steering action is then asked of the API server in a SubjectAccessReview for that user: the same
rule an RBAC administrator already writes for ``kubectl`` (list/get canaries, create
canarycommands) decides what the page shows and allows.

Answers are kept for a few seconds (``ttl``): a page and its chart poll would otherwise cost two
reviews a request. A token is cached under its SHA-256 only, never in the clear. The cost is
that a revoked right (or token) still works for up to ``ttl`` seconds.

Forms are protected from cross-site requests by a per-session token (:func:`csrf_token`): an
HMAC of the session (the bearer token's hash) under a key made when the process starts, put in
each form and checked on each POST, plus the cookie's ``SameSite=Strict``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import structlog

from flaggerpy import kube

__all__ = [
    "SUBJECT_ACCESS_REVIEWS",
    "TOKEN_REVIEWS",
    "Access",
    "Reviewer",
    "User",
    "csrf_matches",
    "csrf_token",
    "session_of",
]

log = structlog.get_logger(__name__)

TOKEN_REVIEWS: Final = kube.Resource(
    "authentication.k8s.io", "v1", "tokenreviews", "TokenReview", namespaced=False)
SUBJECT_ACCESS_REVIEWS: Final = kube.Resource(
    "authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", namespaced=False)

DEFAULT_TTL: Final = 10.0
"""Seconds a TokenReview or SubjectAccessReview answer is reused."""
MAX_ENTRIES: Final = 4096
"""Cached answers kept at most (oldest dropped first): a flood of bad tokens stays bounded."""


@dataclass(frozen=True, slots=True)
class User:
    """A user as the API server's TokenReview named it."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class Access:
    """One thing to ask: ``verb`` on ``group``/``resource`` in ``namespace`` ("" = all)."""

    verb: str
    resource: str
    group: str
    namespace: str = ""
    name: str = ""


def session_of(token: str) -> str:
    """A session's name: the token's SHA-256, so neither caches nor CSRF keys hold the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(key: bytes, session: str) -> str:
    """The form token of one session under the process's ``key``."""
    return hmac.new(key, session.encode(), hashlib.sha256).hexdigest()


def csrf_matches(key: bytes, session: str, given: str) -> bool:
    return hmac.compare_digest(csrf_token(key, session), given)


class _Cache:
    """Answers for ``ttl`` seconds, bounded in size."""

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> tuple[bool, Any]:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self._clock():
            self._entries.pop(key, None)
            return False, None
        return True, entry[1]

    def put(self, key: Any, value: Any) -> None:
        if len(self._entries) >= MAX_ENTRIES:
            now = self._clock()
            for old in [k for k, (until, _) in self._entries.items() if until <= now]:
                del self._entries[old]
            while len(self._entries) >= MAX_ENTRIES:
                del self._entries[next(iter(self._entries))]
        self._entries[key] = (self._clock() + self._ttl, value)


class Reviewer:
    """Asks the API server who a token is (TokenReview) and what its user may do
    (SubjectAccessReview), through the controller's own client (which needs ``create`` on both,
    granted by the chart when the dashboard is enabled)."""

    def __init__(
            self,
            client: kube.KubeClient,
            *,
            ttl: float = DEFAULT_TTL,
            clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._users = _Cache(ttl, clock)
        self._answers = _Cache(ttl, clock)

    async def authenticate(self, token: str) -> User | None:
        """The token's user, or None when the API server does not accept it."""
        session = session_of(token)
        hit, user = self._users.get(session)
        if hit:
            return user if isinstance(user, User) else None
        review = await self._client.create(TOKEN_REVIEWS, {"spec": {"token": token}})
        status = _review_status(review)
        found: User | None = None
        if status.get("authenticated"):
            info = status.get("user") or {}
            found = User(
                name=str(info.get("username") or ""),
                uid=str(info.get("uid") or ""),
                groups=tuple(str(g) for g in info.get("groups") or ()),
                extra=tuple(sorted((str(k), tuple(str(x) for x in v or ()))
                                   for k, v in (info.get("extra") or {}).items())),
            )
        else:
            log.info("dashboard_token_refused", error=str(status.get("error") or ""))
        self._users.put(session, found)
        return found

    async def allowed(self, user: User, access: Access) -> bool:
        """Whether the API server's authorizers allow ``user`` this ``access``."""
        hit, answer = self._answers.get((user, access))
        if hit:
            return bool(answer)
        attributes: dict[str, str] = {"verb": access.verb, "resource": access.resource,
                                      "group": access.group}
        if access.namespace:
            attributes["namespace"] = access.namespace
        if access.name:
            attributes["name"] = access.name
        spec: dict[str, Any] = {"user": user.name, "groups": list(user.groups),
                                "resourceAttributes": attributes}
        if user.uid:
            spec["uid"] = user.uid
        if user.extra:
            spec["extra"] = {k: list(v) for k, v in user.extra}
        review = await self._client.create(SUBJECT_ACCESS_REVIEWS, {"spec": spec})
        allowed = bool(_review_status(review).get("allowed"))
        self._answers.put((user, access), allowed)
        return allowed


def _review_status(review: Mapping[str, Any]) -> Mapping[str, Any]:
    status = review.get("status")
    return status if isinstance(status, Mapping) else {}
