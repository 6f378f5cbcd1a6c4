"""The dashboard as the controller serves it (``-dashboard-listen-address``; off by default).

Canaries come from the controller's own Canary informer: a page or a chart poll costs the API
server nothing for them, and the weight timeline is recorded from the same watch
(:class:`~flaggerpy.dashboard.history.WeightHistory`). A canary's page also lists its Events,
one LIST of that canary's Events per page load (the controller caches no Events; the chart's
poll does not read them).

Everything else is the API server's to decide: each request's bearer token goes to a
TokenReview and each view and steering action to a SubjectAccessReview for that user
(:mod:`flaggerpy.dashboard.auth`). An allowed action is created as a CanaryCommand with the
controller's client -- unfenced, so a standby replica's dashboard steers too: the leader answers
the command -- naming the user in its reason and ``flaggerpy.dev/requested-by`` annotation, so
the Event says who asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

import structlog
from aiohttp import web

from flaggerpy import kube
from flaggerpy.dashboard import auth, commands, history, server, summary
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.models import canary_command

__all__ = ["CacheSource", "CanaryCache", "DashboardServer", "parse_address"]

log = structlog.get_logger(__name__)


class CanaryCache(Protocol):
    """What the dashboard reads of the controller's Canary informer."""

    def get(self, key: ObjectKey) -> Mapping[str, Any] | None: ...

    def list(self, *, namespace: str | None = None) -> list[Any]: ...


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` as Go's listeners take it (``:8421`` is every interface), or ``[::1]:8421``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"a listen address is host:port, not {address!r}")
    host = host.removeprefix("[").removesuffix("]")
    return host or "0.0.0.0", int(port)


class CacheSource:
    """Canaries from the informer; a canary's Events from the API server, when its page loads."""

    def __init__(self, cache: CanaryCache, client: kube.KubeClient, *,
                 namespaces: frozenset[str] = frozenset()) -> None:
        self._cache = cache
        self._client = client
        self._namespaces = namespaces  # -namespace=a,b: cached cluster-wide, shown these only

    def _shown(self, namespace: str) -> bool:
        return not self._namespaces or namespace in self._namespaces

    async def canaries(self, namespace: str | None) -> Sequence[Mapping[str, Any]]:
        return [c for c in self._cache.list(namespace=namespace)
                if self._shown(str((c.get("metadata") or {}).get("namespace") or ""))]

    async def canary(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self._cache.get(ObjectKey(namespace, name)) if self._shown(namespace) else None

    async def events(self, namespace: str, name: str) -> Sequence[Mapping[str, Any]]:
        return (await self._client.list(
            kube.EVENTS, namespace=namespace,
            field_selector=summary.events_selector(name))).items


class DashboardServer:
    """Serves the dashboard beside the controller, on every replica (a Runnable)."""

    needs_leader_election: ClassVar[bool] = False

    def __init__(
            self,
            *,
            client: kube.KubeClient,
            canaries: CanaryCache,
            weights: history.WeightHistory,
            address: str,
            namespaces: frozenset[str] = frozenset(),
            review_ttl: float = auth.DEFAULT_TTL,
            shutdown_timeout: float = 1.0,
    ) -> None:
        self.name = "dashboard"
        self._client = client
        self._host, self._port = parse_address(address)
        self._shutdown_timeout = shutdown_timeout
        self._bound_port: int | None = None
        self.serving = asyncio.Event()
        """Set once the socket is bound and requests are answered."""

        async def steer(canary: Mapping[str, Any], action: canary_command.Action,
                        user: auth.User | None) -> str:
            who = user.name if user is not None else "?"
            created = await commands.create(client, canary, action=action,
                                            reason=f"by {who} from the dashboard",
                                            requested_by=who)
            return str(created["metadata"]["name"])

        self.app = server.build_app(
            CacheSource(canaries, client, namespaces=namespaces), steer=steer,
            reviewer=auth.Reviewer(client, ttl=review_ttl),
            namespace=next(iter(namespaces)) if len(namespaces) == 1 else None,
            banner="flaggerpy controller", weights=weights)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0); only valid once :attr:`serving` is set."""
        if self._bound_port is None:
            raise RuntimeError("the dashboard is not serving")
        return self._bound_port

    async def start(self) -> None:
        """Serves until cancelled, then closes the socket and in-flight requests."""
        runner = web.AppRunner(self.app, access_log=None,
                               shutdown_timeout=self._shutdown_timeout)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
            self._bound_port = int(runner.addresses[0][1])
            self.serving.set()
            log.info("dashboard_started", host=self._host, port=self._bound_port)
            await asyncio.Future()  # until cancelled
        finally:
            self.serving.clear()
            self._bound_port = None
            await runner.cleanup()
