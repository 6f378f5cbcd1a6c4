"""The dashboard as an aiohttp application, for both places that serve it.

What differs between ``kubectl flaggerpy dashboard`` and the controller's
``-dashboard-listen-address`` is passed in, never branched on by page:

- where canaries come from (a :class:`Source`: the user's API reads, or the controller's cache);
- how a steering action is carried out (a :class:`Steerer`: the user's own client, or the
  controller's client after the API server authorised the user);
- who may do what: with a :class:`~flaggerpy.dashboard.auth.Reviewer`, every request needs a
  bearer token that a TokenReview accepts (else 401 and the login page), and each view and
  action a SubjectAccessReview (else 403). Without one (``kubectl flaggerpy dashboard``), the
  process acts with the user's kubeconfig and the API server authorises every read and write
  itself; it then answers loopback names only.

Every POST carries the session's CSRF token (:mod:`flaggerpy.dashboard.auth`) and, from a
browser, an ``Origin`` of this server.
"""

from __future__ import annotations

import importlib.resources
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import quote, urlencode, urlsplit

import structlog
from aiohttp import web

from flaggerpy import kube
from flaggerpy.dashboard import auth, history, pages
from flaggerpy.models import canary_command

__all__ = [
    "ACTIONS",
    "COOKIE",
    "KEY",
    "Identity",
    "Source",
    "Steerer",
    "build_app",
]

log = structlog.get_logger(__name__)

ACTIONS: Final = tuple(action.value for action in canary_command.Action)
"""The steering actions the canary page offers, as ``kubectl flaggerpy`` names them."""
COOKIE: Final = "flaggerpy_token"
LOOPBACK_NAMES: Final = frozenset({"127.0.0.1", "localhost", "::1"})
DEFAULT_REFRESH: Final = 5
_LOCAL_SESSION: Final = "local"
_OBJECT_NAME: Final = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


class Source(Protocol):
    """Where the pages read canaries and their Events."""

    async def canaries(self, namespace: str | None) -> Sequence[Mapping[str, Any]]:
        """The canaries of ``namespace`` (every namespace when None)."""
        ...

    async def canary(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        ...

    async def events(self, namespace: str, name: str) -> Sequence[Mapping[str, Any]]:
        """The Canary's Events (shown on its page)."""
        ...


Steerer = Callable[[Mapping[str, Any], canary_command.Action, "auth.User | None"],
                   Awaitable[str]]
"""Creates the CanaryCommand for a canary, an action and the signed-in user (None: the
process's own); returns the command's name."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request is: the reviewed user (None without a reviewer) and its session."""

    user: auth.User | None
    session: str
    ambient: bool
    """Whether the browser sent the credential by itself (a cookie, or nothing at all): only
    then can another site forge the request, so only then is a CSRF token required."""


_IDENTITY: Final = web.RequestKey("identity", Identity)
KEY: Final = web.AppKey("csrf_key", bytes)
"""The application's key for CSRF tokens (made at start, never leaves the process)."""


def _static_dir() -> Any:
    return importlib.resources.files("flaggerpy.dashboard") / "static"


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def _local_path(target: str) -> str:
    """``target`` when it is a path of this server, else ``/`` (no open redirect)."""
    parts = urlsplit(target)
    if target.startswith("/") and not target.startswith("//") and not parts.netloc \
            and not parts.scheme and "\\" not in target:
        return target
    return "/"


def _notice(request: web.Request, canary: str) -> str:
    """What the page says after a steering action redirected to it: composed here from the
    command's name and action (checked), so a crafted link cannot make the page say anything."""
    command, action = request.query.get("command", ""), request.query.get("action", "")
    if action not in ACTIONS or not _OBJECT_NAME.fullmatch(command):
        return ""
    return f"canarycommand {command} created ({action} {canary})"


def _see_other(target: str) -> web.Response:
    return web.Response(status=303, headers={"Location": target})


def _html(text: str, *, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store",
                                 "X-Frame-Options": "DENY",
                                 "Content-Security-Policy":
                                     "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                     "frame-ancestors 'none'; form-action 'self'"})


def build_app(
        source: Source,
        *,
        steer: Steerer | None,
        reviewer: auth.Reviewer | None,
        namespace: str | None = None,
        refresh: int = DEFAULT_REFRESH,
        banner: str = "",
        events_in_timeline: bool = False,
        weights: history.WeightHistory | None = None,
) -> web.Application:
    """The dashboard: ``/`` lists canaries (of ``namespace``, or all when None),
    ``/canaries/{namespace}/{name}`` shows one with its steering buttons and chart, whose points
    ``/api/canaries/{namespace}/{name}/timeline`` gives.

    ``events_in_timeline``: complete the chart's weights from the canary's Events on each poll
    (a read per poll; the controller has its informer's watch instead, through ``weights``).
    """
    key = secrets.token_bytes(32)
    seen = weights if weights is not None else history.WeightHistory()

    def frame(request: web.Request) -> dict[str, Any]:
        identity = request[_IDENTITY]
        return {"banner": banner, "refresh": refresh,
                "user": identity.user.name if identity.user else "",
                "logout": reviewer is not None,
                "csrf": auth.csrf_token(key, identity.session)}

    def page(template: str, request: web.Request | None, status: int, **context: Any
             ) -> web.Response:
        values = frame(request) if request is not None and _IDENTITY in request else {
            "banner": banner}
        return _html(pages.render(template, **{**values, **context}), status=status)

    def error(request: web.Request | None, status: int, title: str, message: str
              ) -> web.Response:
        if request is not None and request.path.startswith("/api/"):
            return web.json_response({"error": title, "message": message}, status=status)
        return page("error.html", request, status, title=title, message=message)

    def login_page(request: web.Request, *, message: str = "", status: int = 401
                   ) -> web.Response:
        target = request.path_qs if request.method == "GET" else "/"
        if request.path.startswith("/api/"):
            response = web.json_response({"error": "Unauthorized", "message": message
                                          or "a bearer token is needed"}, status=status)
        else:
            response = page("login.html", None, status, message=message,
                            next=_local_path(target))
        response.headers["WWW-Authenticate"] = 'Bearer realm="flaggerpy"'
        return response

    @web.middleware
    async def identify(request: web.Request, handler: Any) -> web.StreamResponse:
        if reviewer is None:
            # The user's own process, acting with the user's kubeconfig: loopback names only,
            # so that a page elsewhere cannot reach it through DNS rebinding.
            if request.url.host not in LOOPBACK_NAMES:
                return web.Response(status=421, text="this dashboard answers on localhost only\n")
            request[_IDENTITY] = Identity(user=None, session=_LOCAL_SESSION, ambient=True)
        elif not (request.path.startswith("/static/") or request.path == "/login"):
            header = _bearer(request)
            token = header or request.cookies.get(COOKIE)
            if not token:
                return login_page(request)
            try:
                user = await reviewer.authenticate(token)
            except kube.KubeError as exc:
                log.warning("dashboard_review_failed", error=str(exc))
                return error(request, 503, "Cannot check the token", str(exc))
            if user is None:
                refused = login_page(request, message="The API server did not accept the token.")
                refused.del_cookie(COOKIE, path="/")
                return refused
            request[_IDENTITY] = Identity(user=user, session=auth.session_of(token),
                                          ambient=header is None)
        if request.method == "POST" and request.path != "/login":
            forged = await _forged(request)
            if forged:
                return error(request, 403, "Refused", forged)
        response: web.StreamResponse = await handler(request)
        return response

    async def _forged(request: web.Request) -> str | None:
        """Why a POST looks forged (another site's form), or None."""
        origin = request.headers.get("Origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.host:
            return "the request came from another site"
        identity = request[_IDENTITY]
        if not identity.ambient:
            return None
        form = await request.post()
        if not auth.csrf_matches(key, identity.session, str(form.get("csrf") or "")):
            return "the form is stale or was not made by this dashboard: reload the page"
        return None

    async def may(request: web.Request, access: auth.Access) -> bool:
        user = request[_IDENTITY].user
        if reviewer is None or user is None:
            return reviewer is None
        return await reviewer.allowed(user, access)

    def canaries_access(verb: str, namespace: str = "", name: str = "") -> auth.Access:
        return auth.Access(verb=verb, resource=kube.CANARIES.plural, group=kube.CANARIES.group,
                           namespace=namespace, name=name)

    def steer_access(namespace: str) -> auth.Access:
        return auth.Access(verb="create", resource=kube.CANARY_COMMANDS.plural,
                           group=kube.CANARY_COMMANDS.group, namespace=namespace)

    async def login_form(request: web.Request) -> web.Response:
        return login_page(request, status=200) if reviewer is not None else _see_other("/")

    async def login(request: web.Request) -> web.StreamResponse:
        if reviewer is None:
            return error(None, 404, "Not found", "this dashboard has no login")
        origin = request.headers.get("Origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.host:
            return error(None, 403, "Refused", "the request came from another site")
        form = await request.post()
        token = str(form.get("token") or "").strip()
        target = _local_path(str(form.get("next") or "/"))
        try:
            user = await reviewer.authenticate(token) if token else None
        except kube.KubeError as exc:
            return error(None, 503, "Cannot check the token", str(exc))
        if user is None:
            response = page("login.html", None, 401, next=target,
                            message="The API server did not accept the token.")
            response.headers["WWW-Authenticate"] = 'Bearer realm="flaggerpy"'
            return response
        log.info("dashboard_login", user=user.name)
        response = _see_other(target)
        response.set_cookie(COOKIE, token, path="/", httponly=True, samesite="Strict",
                            secure=request.secure)
        return response

    async def logout(request: web.Request) -> web.StreamResponse:
        response = _see_other("/login")
        response.del_cookie(COOKIE, path="/")
        return response

    async def index(request: web.Request) -> web.Response:
        try:
            if namespace is not None or await may(request, canaries_access("list")):
                if namespace is not None and not await may(
                        request, canaries_access("list", namespace)):
                    return error(request, 403, "Forbidden",
                                 f"you may not list canaries in {namespace}")
                shown = await source.canaries(namespace)
            else:
                every = await source.canaries(None)
                allowed = {}
                for ns in sorted({str((c.get("metadata") or {}).get("namespace") or "")
                                  for c in every}):
                    allowed[ns] = await may(request, canaries_access("list", ns))
                if not any(allowed.values()):
                    return error(request, 403, "Forbidden",
                                 "you may not list canaries in any namespace")
                shown = [c for c in every
                         if allowed.get(str((c.get("metadata") or {}).get("namespace") or ""))]
        except kube.ForbiddenError as exc:
            return error(request, 403, "Forbidden", str(exc))
        except kube.KubeError as exc:
            return error(request, 502, "Cannot list canaries", str(exc))
        return _html(pages.render_index(shown, namespace=namespace, **frame(request)))

    async def find(request: web.Request) -> Mapping[str, Any] | web.Response:
        """The canary of the path, once the user may get it; else the error to answer."""
        ns, name = request.match_info["namespace"], request.match_info["name"]
        if namespace is not None and ns != namespace:
            return error(request, 404, "Not served", f"this dashboard serves {namespace} only")
        try:
            if not await may(request, canaries_access("get", ns, name)):
                return error(request, 403, "Forbidden", f"you may not get canary {name} in {ns}")
            canary = await source.canary(ns, name)
        except kube.ForbiddenError as exc:
            return error(request, 403, "Forbidden", str(exc))
        except kube.KubeError as exc:
            return error(request, 502, "Cannot read the canary", str(exc))
        if canary is None:
            return error(request, 404, "Not found", f"Canary {name} not found in {ns}")
        seen.observe(canary)
        return canary

    async def one(request: web.Request) -> web.Response:
        canary = await find(request)
        if isinstance(canary, web.Response):
            return canary
        ns, name = request.match_info["namespace"], request.match_info["name"]
        try:
            events = await source.events(ns, name)
            actions = ACTIONS if steer is not None and await may(request, steer_access(ns)) \
                else ()
        except kube.KubeError as exc:
            return error(request, 502, "Cannot read the canary's Events", str(exc))
        return _html(pages.render_canary(
            canary, events, actions=actions, notice=_notice(request, name),
            **frame(request)))

    async def timeline(request: web.Request) -> web.Response:
        canary = await find(request)
        if isinstance(canary, web.Response):
            return canary
        ns, name = request.match_info["namespace"], request.match_info["name"]
        try:
            events = await source.events(ns, name) if events_in_timeline else ()
        except kube.KubeError:
            events = ()  # the observed weights still draw
        body = history.timeline(canary, observed=seen.points(ns, name), events=events)
        body.update(pages.render_parts(canary, since=request.query.get("since") or None))
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    async def act(request: web.Request) -> web.StreamResponse:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        try:
            action = canary_command.Action(request.match_info["action"])
        except ValueError:
            return error(request, 404, "No such action", request.match_info["action"])
        if steer is None:
            return error(request, 405, "Read-only", "this dashboard does not steer")
        try:
            if not await may(request, steer_access(ns)):
                return error(request, 403, "Forbidden",
                             f"you may not create canarycommands in {ns}")
        except kube.KubeError as exc:
            return error(request, 503, "Cannot check your rights", str(exc))
        canary = await find(request)
        if isinstance(canary, web.Response):
            return canary
        user = request[_IDENTITY].user
        try:
            command = await steer(canary, action, user)
        except kube.ForbiddenError as exc:
            return error(request, 403, "Forbidden", str(exc))
        except kube.KubeError as exc:
            return error(request, 502, "Cannot create the command", str(exc))
        log.info("dashboard_steered", namespace=ns, canary=name, action=action.value,
                 command=command, user=user.name if user else None)
        path = f"/canaries/{quote(ns, safe='')}/{quote(name, safe='')}"
        return _see_other(f"{path}?{urlencode({'command': command, 'action': action.value})}")

    app = web.Application(middlewares=[identify])
    app[KEY] = key
    app.router.add_get("/", index)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/canaries/{namespace}/{name}", one)
    app.router.add_post("/canaries/{namespace}/{name}/{action}", act)
    app.router.add_get("/api/canaries/{namespace}/{name}/timeline", timeline)
    app.router.add_static("/static", str(_static_dir()))
    return app
