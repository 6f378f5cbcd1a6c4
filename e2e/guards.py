"""Servers that insist on credentials, so a scenario proves the controller sent them.

The real Prometheus and the webhook receiver check nothing: a scenario that hands the
controller credentials through Secrets would pass as well if the controller dropped them.
These two stand in front of them and refuse any request without the right ones:

- :class:`GuardedPrometheus`, a reverse proxy in front of a real Prometheus that forwards the
  HTTP API only for the ``Authorization`` headers it accepts (a bearer token, basic auth) and
  answers everything else 401, as a Prometheus behind an authenticating proxy would;
- :class:`ForwardProxy`, an HTTP forward proxy that requires ``Proxy-Authorization`` and
  reaches the made-up hosts it is told about (``alerts.invalid`` → a local receiver), so a
  request to such a host arrives only if it went through this proxy with its credentials.

Both record what they saw (authorization headers and paths), for the scenario to assert on.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Self

import aiohttp
import yarl
from aiohttp import web

from flaggerpy.testing import serve

__all__ = ["ForwardProxy", "GuardedPrometheus", "Seen", "basic_authorization"]

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authorization", "proxy-connection",
                        "te", "trailer", "transfer-encoding", "upgrade", "host",
                        "content-length"})
"""Headers a proxy does not pass on (RFC 9110 §7.6.1), plus those the client sets itself."""


def basic_authorization(username: str, password: str) -> str:
    """``Basic base64(username:password)``, the header value basic auth sends."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


@dataclass(frozen=True)
class Seen:
    """One request a guard received: its credentials header, target and whether it passed."""

    authorization: str
    method: str
    url: str
    allowed: bool


@dataclass
class _Guard:
    """A local aiohttp server that records what it sees; a ``async with`` block runs it."""

    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _client: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def allowed(self) -> list[Seen]:
        return [seen for seen in self.seen if seen.allowed]

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # No environment proxies: the guard talks to loopback servers only.
        self._client = aiohttp.ClientSession(trust_env=False)
        self._runner, self.port = await serve(app)
        return self

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    async def _forward(self, request: web.Request, target: yarl.URL) -> web.Response:
        assert self._client is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._client.request(request.method, target, headers=headers,
                                        data=await request.read(), allow_redirects=False,
                                        timeout=aiohttp.ClientTimeout(total=30)) as answer:
            body = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP
                    and k.lower() != "content-encoding"}
            return web.Response(status=answer.status, body=body, headers=kept)


@dataclass
class GuardedPrometheus(_Guard):
    """Prometheus's HTTP API at :attr:`url`, for the ``Authorization`` values in ``accept`` only.

    ``upstream`` is the real Prometheus (``http://127.0.0.1:<port>``); a request whose header is
    not one of ``accept`` gets Prometheus's own error shape with 401 and never reaches it.
    """

    upstream: str = ""
    accept: frozenset[str] = frozenset()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        authorization = request.headers.get("Authorization", "")
        allowed = authorization in self.accept
        self.seen.append(Seen(authorization, request.method, str(request.rel_url), allowed))
        if not allowed:
            return web.json_response({"status": "error", "errorType": "unauthorized",
                                      "error": "authentication required"}, status=401)
        return await self._forward(request, yarl.URL(self.upstream + str(request.rel_url),
                                                     encoded=True))

    def authorizations(self) -> set[str]:
        """The accepted ``Authorization`` values that queries arrived with."""
        return {seen.authorization for seen in self.allowed()}


@dataclass
class ForwardProxy(_Guard):
    """An HTTP forward proxy for plain-http absolute-form requests (``POST http://h/p``).

    It requires ``Proxy-Authorization: Basic base64(username:password)`` (407 otherwise, as a
    proxy does) and reaches the hosts in ``routes`` (``"alerts.invalid"`` →
    ``"http://127.0.0.1:<port>"``) only: a request for any other host is refused (502).
    """

    username: str = ""
    password: str = ""
    routes: Mapping[str, str] = field(default_factory=dict)

    def proxy_url(self) -> str:
        """The proxy's URL with its credentials in the userinfo, as a client is given it."""
        return str(yarl.URL(self.url).with_user(self.username).with_password(self.password))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        authorization = request.headers.get("Proxy-Authorization", "")
        absolute = yarl.URL(request.raw_path, encoded=True) if "://" in request.raw_path else None
        allowed = authorization == basic_authorization(self.username, self.password)
        self.seen.append(Seen(authorization, request.method, request.raw_path, allowed))
        if not allowed:
            return web.Response(status=407, text="proxy authentication required",
                                headers={"Proxy-Authenticate": 'Basic realm="e2e"'})
        upstream = self.routes.get(absolute.host or "") if absolute is not None else None
        if absolute is None or upstream is None:
            return web.Response(status=502, text="no route to that host")
        return await self._forward(request, yarl.URL(upstream + absolute.raw_path_qs,
                                                     encoded=True))
