"""The simulated data plane and the traffic that goes through it.

:class:`DataPlane` is what the sidecars would do for one request: find the VirtualService for the
host, route (``routing.route``, following a rule's ``delegate`` to the delegate VirtualService in
the cache), resolve the destination host to a Service (in the delegate's namespace when a
delegate routed) and the Service's selector to the ready Deployments behind it, send the request
to that Deployment's backend process over real HTTP, copy it to mirror hosts, apply the route's
header operations to the response, and report the exchange to the mesh adapter
(``metrics.py``).

Failures look like Envoy's: no matching rule → 404 ``NR``; a route to a host with no Service →
503 ``NC``; no ready endpoint → 503 ``UH`` (reported by the source proxy only, since no
destination pod saw it); a backend that refuses the connection → 503 ``UF``; a backend slower
than the route's ``timeout`` → 504 ``UT``.

:class:`TrafficGenerator` keeps one request stream per VirtualService, at ``rps`` requests per
second each but never more than ``max_rps`` in total, sent by a pool of simulated users
(``users.py``) whose headers, cookies and received ``Set-Cookie`` values take part in routing.
A request is skipped, not queued, when ``max_in_flight`` requests are already outstanding, so a
slow backend cannot make the simulator's memory grow.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from prometheus_client import CollectorRegistry, Counter

from e2e.simulator.backends import BackendPool, BackendProcess
from e2e.simulator.metrics import Exchange, MeshAdapter, Peer
from e2e.simulator.routing import HeaderOps, Request, ServiceKey, service_key
from e2e.simulator.sources import IstioSource, object_key
from e2e.simulator.users import UserPool
from e2e.simulator.world import Workload, World
from flaggerpy.kube.keys import ObjectKey

__all__ = ["GENERATOR", "INGRESS", "DataPlane", "Response", "TrafficGenerator", "stream_host"]

log = structlog.get_logger(__name__)

GENERATOR = Peer("traffic-simulator", "simulator", {"app": "traffic-simulator"})
"""The source workload of generated traffic."""

INGRESS = Peer("istio-ingressgateway", "istio-system",
               {"app": "istio-ingressgateway", "istio": "ingressgateway"})
"""The source workload of requests that arrive on the ingress port."""

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length",
                         "upgrade", "proxy-connection", "te", "trailer", "date", "server"})


@dataclass(frozen=True, slots=True)
class Response:
    """What the caller gets back: status, headers (route operations applied) and body."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    workload: str | None = None
    flags: str = "-"

    def set_cookies(self) -> list[str]:
        return [value for name, value in self.headers if name.lower() == "set-cookie"]


class DataPlane:
    """Carries requests the way the mesh would, and reports each one to the adapter."""

    def __init__(
        self,
        world: World,
        backends: BackendPool,
        adapter: MeshAdapter,
        *,
        rng: random.Random,
        timeout: float = 15.0,
        max_in_flight: int = 200,
    ) -> None:
        self.world = world
        self.backends = backends
        self.adapter = adapter
        self.rng = rng
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._session: aiohttp.ClientSession | None = None
        self._mirrors: set[asyncio.Task[Response]] = set()

    async def __aenter__(self) -> DataPlane:
        connector = aiohttp.TCPConnector(limit=self.max_in_flight * 2, limit_per_host=0)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for task in list(self._mirrors):
            task.cancel()
        await asyncio.gather(*self._mirrors, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def drain(self) -> None:
        """Waits for the mirrored copies still in flight."""
        while self._mirrors:
            await asyncio.gather(*list(self._mirrors), return_exceptions=True)

    @property
    def busy(self) -> bool:
        """True when a new request should be skipped rather than started."""
        return self.in_flight >= self.max_in_flight

    async def send(
        self,
        request: Request,
        *,
        source: Peer,
        namespace: str,
        body: bytes = b"",
    ) -> Response:
        """Routes and sends one request from ``source`` (a caller in ``namespace``)."""
        self.in_flight += 1
        try:
            return await self._send(request, source=source, namespace=namespace, body=body)
        finally:
            self.in_flight -= 1

    async def _send(
        self, request: Request, *, source: Peer, namespace: str, body: bytes
    ) -> Response:
        vs = self.world.virtual_service_for(request.host, namespace=namespace)
        request_ops = response_ops = HeaderOps()
        timeout = self.timeout
        routed: tuple[ObjectKey, str] | None = None  # the routing object and its rule
        if vs is None:
            key = service_key(request.host, namespace=namespace, namespaces=self.world.namespaces)
            if key is None or self.world.service(key) is None:
                return self._report(request, source, None, None, 404, 0.0, "NR")
        else:
            # A cluster-scoped routing object (Kuma) names its Services by namespace itself.
            vs_namespace = str(vs["metadata"].get("namespace") or namespace)
            decision = self.world.source.route(vs, request, self.rng,
                                               lookup=self.world.virtual_service)
            own = service_key(request.host, namespace=namespace,
                              namespaces=self.world.namespaces)
            if decision is None:
                return self._report(request, source, own, None, 404, 0.0, "NR")
            routed = (object_key(vs), decision.rule_name)
            # A delegate's hosts name Services in the delegate's namespace, not the root's.
            hosts_namespace = decision.hosts_namespace(vs_namespace)
            for host in decision.mirrors:
                self._mirror(request, host, source=source, namespace=hosts_namespace, body=body)
            invalid = decision.invalid_backend_status
            if decision.destination is None:
                return self._report(request, source, own, None, invalid or 503, 0.0, "UH",
                                    routed=routed)
            key = service_key(decision.destination.host, namespace=hosts_namespace,
                              namespaces=self.world.namespaces)
            if key is None or self.world.service(key) is None:
                return self._report(request, source, key or own, None, invalid or 503, 0.0, "NC",
                                    routed=routed)
            request_ops, response_ops = decision.request_headers, decision.response_headers
            timeout = decision.timeout or timeout
            if decision.rewrite_path is not None or decision.rewrite_authority is not None:
                request = dataclasses.replace(
                    request, path=decision.rewrite_path or request.path,
                    host=decision.rewrite_authority or request.host)
        response = await self._forward(request, key, source=source, request_ops=request_ops,
                                       routed=routed,
                                       time_limit=timeout, body=body)
        if response_ops:
            return Response(response.status, response_ops.apply(response.headers),
                            response.body, response.workload, response.flags)
        return response

    def _choose(self, key: ServiceKey) -> tuple[Workload, BackendProcess] | None:
        service = self.world.service(key)
        if service is None:
            return None
        live = [(w, b) for w in self.world.endpoints(service)
                if (b := self.backends.get(w.key)) is not None]
        if not live:
            return None
        # kube-proxy spreads over pods, so a Deployment's share follows its ready replicas.
        return self.rng.choices(live, weights=[w.ready_replicas for w, _ in live])[0]

    async def _forward(
        self,
        request: Request,
        key: ServiceKey,
        *,
        source: Peer,
        request_ops: HeaderOps,
        time_limit: float,
        body: bytes,
        mirrored: bool = False,
        routed: tuple[ObjectKey, str] | None = None,
    ) -> Response:
        chosen = self._choose(key)
        if chosen is None:
            return self._report(request, source, key, None, 503, 0.0, "UH", mirrored=mirrored,
                                routed=routed)
        workload, backend = chosen
        peer = Peer(workload.key.name, workload.key.namespace, workload.labels)
        headers = request_ops.apply(
            [(k, v) for k, v in request.headers.items() if k not in _HOP_BY_HOP and k != "host"])
        authority = request.host + ("-shadow" if mirrored else "")
        assert self._session is not None, "DataPlane used outside 'async with'"
        loop = asyncio.get_running_loop()
        started = loop.time()
        backend.enter()
        try:
            async with self._session.request(
                request.method, f"http://{backend.address}{request.path}",
                headers=[("Host", authority), *headers], data=body or None,
                timeout=aiohttp.ClientTimeout(total=time_limit), allow_redirects=False,
            ) as upstream:
                payload = await upstream.read()
                status = upstream.status
                reply = [(k, v) for k, v in upstream.headers.items()
                         if k.lower() not in _HOP_BY_HOP]
                flags = "-"
        except TimeoutError:
            status, reply, payload, flags = 504, [], b"upstream request timeout", "UT"
        except aiohttp.ClientError:
            status, reply, payload, flags = 503, [], b"upstream connect error", "UF"
        finally:
            backend.leave()
        duration_ms = (loop.time() - started) * 1000.0
        self._report(request, source, key, peer, status, duration_ms, flags, mirrored=mirrored,
                     routed=routed)
        return Response(status, reply, payload, workload.key.name, flags)

    def _mirror(
        self, request: Request, host: str, *, source: Peer, namespace: str, body: bytes
    ) -> None:
        """Sends a copy to ``host`` in the background; its response is dropped."""
        key = service_key(host, namespace=namespace, namespaces=self.world.namespaces)
        if key is None or self.busy:
            return
        self.in_flight += 1

        async def shadow() -> Response:
            try:
                assert key is not None
                return await self._forward(request, key, source=source,
                                           request_ops=HeaderOps(), time_limit=self.timeout,
                                           body=body, mirrored=True)
            finally:
                self.in_flight -= 1

        task = asyncio.create_task(shadow())
        self._mirrors.add(task)
        task.add_done_callback(self._mirrors.discard)

    def _port(self, key: ServiceKey | None) -> int | None:
        """The first port of the Service addressed (Kuma names its service tags with it)."""
        service = self.world.service(key) if key is not None else None
        ports = ((service or {}).get("spec") or {}).get("ports") or []
        port = ports[0].get("port") if ports else None
        return int(port) if port is not None else None

    def _report(
        self,
        request: Request,
        source: Peer,
        service: ServiceKey | None,
        destination: Peer | None,
        status: int,
        duration_ms: float,
        flags: str,
        *,
        mirrored: bool = False,
        routed: tuple[ObjectKey, str] | None = None,
    ) -> Response:
        self.adapter.observe(Exchange(
            source=source, authority=request.host, service=service, destination=destination,
            response_code=status, duration_ms=duration_ms, response_flags=flags,
            mirrored=mirrored, service_port=self._port(service),
            method=request.method, path=request.path.partition("?")[0],
            routed_by=routed[0] if routed else None, rule=routed[1] if routed else ""))
        return Response(status, [], b"", destination.workload if destination else None, flags)


class TrafficGenerator:
    """One request stream per VirtualService, sent by simulated users.

    :meth:`sync` (called whenever the cluster changes) starts a stream for each new
    VirtualService that has a host to address (:func:`stream_host`) and stops those whose
    VirtualService is gone or lost its hosts; a host without a VirtualService gets no generated
    traffic, and neither does a delegate VirtualService (no hosts: it is reached only through
    the root that delegates to it, whose stream already covers it).
    """

    def __init__(
        self,
        world: World,
        plane: DataPlane,
        users: UserPool,
        *,
        rps: float = 20.0,
        max_rps: float = 200.0,
        path: str = "/",
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.world = world
        self.plane = plane
        self.users = users
        self.rps = rps
        self.max_rps = max_rps
        self.path = path
        self._clock = clock
        self._streams: dict[ObjectKey, asyncio.Task[None]] = {}
        self._requests: set[asyncio.Task[None]] = set()
        self._skipped = Counter(
            "simulator_requests_skipped_total",
            "Generated requests not sent because max in-flight requests were outstanding.",
            ["namespace", "virtual_service"], registry=registry)
        self._sent = Counter(
            "simulator_requests_sent_total", "Generated requests sent, by response code.",
            ["namespace", "virtual_service", "response_code"], registry=registry)

    @property
    def streams(self) -> list[ObjectKey]:
        return sorted(self._streams)

    def rate(self) -> float:
        """Requests per second of each stream: ``rps``, unless the global cap is lower."""
        if not self._streams:
            return self.rps
        return min(self.rps, self.max_rps / len(self._streams))

    def sync(self) -> None:
        """Starts and stops streams to match the cached VirtualServices (never blocks)."""
        present = {ObjectKey(vs["metadata"].get("namespace") or "", vs["metadata"]["name"])
                   for vs in self.world.virtual_services() if self._addressable(vs)}
        for key in [k for k in self._streams if k not in present]:
            self._streams.pop(key).cancel()
            log.info("traffic_stream_stopped", virtual_service=str(key))
        for key in sorted(present - set(self._streams)):
            self._streams[key] = asyncio.create_task(self._stream(key), name=f"stream {key}")
            log.info("traffic_stream_started", virtual_service=str(key))

    def _addressable(self, obj: Mapping[str, Any]) -> bool:
        """Whether ``obj`` gets a stream: it has a host to address, and a cluster-scoped one
        (Kuma's) only when that host is a Service of a watched namespace, not another's."""
        host = self.world.source.stream_host(obj)
        if host is None:
            return False
        if (obj.get("metadata") or {}).get("namespace"):
            return True
        return service_key(host, namespace=self.world.namespaces[0],
                           namespaces=self.world.namespaces) is not None

    async def aclose(self) -> None:
        tasks = [*self._streams.values(), *self._requests]
        self._streams.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _stream(self, key: ObjectKey) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += 1.0 / max(self.rate(), 0.001)
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:
                next_at = loop.time()  # fell behind by a second: do not send a burst
            vs = self.world.virtual_service(key)
            if vs is None:
                continue
            host = self.world.source.stream_host(vs)
            if host is None:
                continue
            if self.plane.busy:
                self._skipped.labels(key.namespace, key.name).inc()
                continue
            task = asyncio.create_task(self._one(key, host))
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)

    async def _one(self, key: ObjectKey, host: str) -> None:
        user = self.users.pick()
        request = Request(
            host=host, path=self.path, headers=user.request_headers(host, now=self._clock()),
            source_namespace=GENERATOR.namespace, source_labels=GENERATOR.labels)
        try:
            # A cluster-scoped routing object's hosts are qualified; any namespace will do.
            namespace = key.namespace or self.world.namespaces[0]
            response = await self.plane.send(request, source=GENERATOR, namespace=namespace)
        except Exception:
            log.exception("traffic_request_failed", virtual_service=str(key), host=host)
            return
        user.receive(host, response.set_cookies(), now=self._clock())
        self._sent.labels(key.namespace, key.name, str(response.status)).inc()


def stream_host(vs: Mapping[str, Any]) -> str | None:
    """The host generated traffic addresses for a VirtualService: its first concrete host.

    None for a VirtualService with only wildcard hosts, or none at all (a delegate). Other
    meshes' routing objects answer through their source's ``stream_host``.
    """
    return IstioSource().stream_host(vs)
