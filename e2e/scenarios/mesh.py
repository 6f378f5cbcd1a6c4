"""What the Istio scenarios share: a Canary manifest, the routes a VirtualService holds, and
what traffic did, measured two ways.

- :func:`settled_share` asks Prometheus which share of the simulated requests reached a
  workload, from the ``istio_requests_total`` series the simulator exports: the same numbers the
  controller's builtin metrics are computed from.
- :class:`Client` sends requests through the simulator's ingress port as a user would (by
  ``Host``), keeping its own cookies, and tells which version answered (``X-Version``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from e2e.scenario import Scenario
from e2e.simulator.users import CookieJar

__all__ = [
    "ROLLBACK_THRESHOLD",
    "Client",
    "MeshStarter",
    "Reply",
    "canary_share",
    "gateway",
    "istio_canary",
    "mesh_canary",
    "routes",
    "settled_share",
]

MeshStarter = Callable[..., Awaitable[Scenario]]
"""The ``start_mesh`` fixture: starts the scenario with the simulator options it is given."""

SHARE_QUERY = (
    'sum(rate(istio_requests_total{{reporter="destination",'
    'destination_workload_namespace="{ns}",destination_workload="{workload}"}}[10s]))'
    ' / sum(rate(istio_requests_total{{reporter="destination",'
    'destination_workload_namespace="{ns}",destination_workload=~"{workload}|{workload}-primary"'
    '}}[10s]))'
)
"""The share of requests (reported by the destination proxies) that reached ``workload``
rather than its primary, over the last 10 s."""

SHARE_QUERIES = {
    "istio": SHARE_QUERY,
    "linkerd": (
        'sum(rate(response_total{{direction="inbound",namespace="{ns}",deployment="{workload}"'
        '}}[10s])) / sum(rate(response_total{{direction="inbound",namespace="{ns}",'
        'deployment=~"{workload}|{workload}-primary"}}[10s]))'),
    "osm": (
        'sum(rate(osm_request_total{{destination_namespace="{ns}",destination_kind="Deployment",'
        'destination_name="{workload}"}}[10s])) / sum(rate(osm_request_total{{'
        'destination_namespace="{ns}",destination_kind="Deployment",'
        'destination_name=~"{workload}|{workload}-primary"}}[10s]))'),
    "kuma": (
        'sum(rate(envoy_cluster_upstream_rq{{service=~"{workload}-canary_{ns}_svc_[0-9]+"'
        '}}[10s])) / sum(rate(envoy_cluster_upstream_rq{{'
        'service=~"{workload}-(canary|primary)_{ns}_svc_[0-9]+"}}[10s]))'),
    # Knative: the share of the second revision (the canary until it is promoted) among the
    # Service's revisions, from the Envoy clusters <namespace>/<revision>.
    "knative": (
        'sum(rate(envoy_cluster_upstream_rq{{envoy_cluster_name="{ns}/{workload}-00002"'
        '}}[10s])) / sum(rate(envoy_cluster_upstream_rq{{'
        'envoy_cluster_name=~"{ns}/{workload}-[0-9]+"}}[10s]))'),
    "contour": (
        'sum(rate(envoy_cluster_upstream_rq{{envoy_cluster_name=~"{ns}_{workload}-canary_[0-9]+"'
        '}}[10s])) / sum(rate(envoy_cluster_upstream_rq{{'
        'envoy_cluster_name=~"{ns}_{workload}-(canary|primary)_[0-9]+"}}[10s]))'),
    "gloo": (
        'sum(rate(envoy_cluster_upstream_rq{{'
        'envoy_cluster_name=~"{ns}-{workload}-canaryupstream-[0-9]+_{ns}"}}[10s]))'
        ' / sum(rate(envoy_cluster_upstream_rq{{'
        'envoy_cluster_name=~"{ns}-{workload}-(canary|primary)upstream-[0-9]+_{ns}"}}[10s]))'),
    "gatewayapi": (
        'sum(rate(http_request_duration_seconds_count{{kubernetes_namespace="{ns}",'
        'kubernetes_pod_name=~"{workload}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}}[10s]))'
        ' / sum(rate(http_request_duration_seconds_count{{kubernetes_namespace="{ns}",'
        'kubernetes_pod_name=~"{workload}(-primary)?-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}}[10s]))'),
    "apisix": (
        'sum(rate(apisix_http_status{{route=~"{ns}_.+",node=~"{workload}-[0-9a-f]+-[0-9a-f]+"'
        '}}[10s])) / sum(rate(apisix_http_status{{route=~"{ns}_.+",'
        'node=~"{workload}(-primary)?-[0-9a-f]+-[0-9a-f]+"}}[10s]))'),
    "traefik": (
        'sum(rate(traefik_service_requests_total{{'
        'service=~"{ns}-{workload}-canary-[0-9]+@kubernetescrd"}}[10s]))'
        ' / sum(rate(traefik_service_requests_total{{'
        'service=~"{ns}-{workload}-(canary|primary)-[0-9]+@kubernetescrd"}}[10s]))'),
    "nginx": (
        'sum(rate(nginx_ingress_controller_requests{{namespace="{ns}",ingress="{workload}",'
        'canary!=""}}[10s])) / sum(rate(nginx_ingress_controller_requests{{'
        'namespace="{ns}",ingress="{workload}"}}[10s]))'),
    # Skipper's route ids carry the namespace and names with "-" turned into "_": the Ingress
    # is named after the workload, and the workload's name must have no "-" for this query.
    "skipper": (
        'sum(rate(skipper_serve_route_duration_seconds_count{{'
        'route=~"kube(ew)?_.+__{workload}_canary__.*__{workload}_canary(_[0-9]+)?"}}[10s]))'
        ' / sum(rate(skipper_serve_route_duration_seconds_count{{'
        'route=~"kube(ew)?_.+__{workload}_canary__.*__{workload}_(canary|primary)(_[0-9]+)?"'
        '}}[10s]))'),
}
"""The same share from each simulated mesh's own series (``--mesh``): Linkerd's inbound
``response_total``, Kuma's inbound Envoy counters by service tag, and for Gateway API the
application's own request counts per pod, for APISIX its requests by the upstream node (pod)
that answered."""


def istio_canary(name: str, *, service: dict[str, Any] | None = None,
                 **analysis: Any) -> dict[str, Any]:
    """A Canary of Deployment ``name`` on Istio, analysed every 2 s, threshold 3."""
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name},
        "spec": {
            "provider": "istio",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "progressDeadlineSeconds": 60,
            "service": service or {"port": 9898},
            "analysis": {"interval": "2s", "threshold": 3, **analysis},
        },
    }


def mesh_canary(name: str, *, provider: str, service: dict[str, Any] | None = None,
                **analysis: Any) -> dict[str, Any]:
    """A Canary of Deployment ``name`` on ``provider``, analysed every 2 s, threshold 3."""
    manifest = istio_canary(name, service=service, **analysis)
    manifest["spec"]["provider"] = provider
    return manifest


def routes(virtual_service: dict[str, Any] | None, *, rule: int = -1) -> dict[str, int]:
    """``{destination host: weight}`` of one http rule (the last, weighted one by default)."""
    assert virtual_service is not None, "the VirtualService does not exist"
    http = virtual_service["spec"]["http"]
    return {r["destination"]["host"]: r.get("weight", 100) for r in http[rule]["route"]}


def gateway() -> dict[str, Any]:
    """Gateway ``public-gateway`` on the ingress gateway's port 80, for every host."""
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "Gateway",
        "metadata": {"name": "public-gateway"},
        "spec": {"selector": {"istio": "ingressgateway"},
                 "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"},
                              "hosts": ["*"]}]},
    }


async def canary_share(scenario: Scenario, workload: str, *, mesh: str = "istio") -> float | None:
    """``workload``'s share of its and its primary's requests over the last 10 s, if any."""
    assert scenario.prometheus is not None
    query = SHARE_QUERIES[mesh].format(ns=scenario.namespace, workload=workload)
    result = await asyncio.to_thread(scenario.prometheus.query, query)
    return float(result[0]["value"][1]) if result else None  # type: ignore[index]


async def window_requests(scenario: Scenario, workload: str, *, mesh: str = "istio") -> float:
    """How many requests the share's 10 s window holds (its denominator's rate times 10)."""
    assert scenario.prometheus is not None
    query = SHARE_QUERIES[mesh].format(ns=scenario.namespace, workload=workload)
    _, _, denominator = query.partition(")) / sum(")
    result = await asyncio.to_thread(scenario.prometheus.query, f"sum({denominator} * 10")
    return float(result[0]["value"][1]) if result else 0.0  # type: ignore[index]


def sampling_tolerance(expected: float, requests: float, *, floor: float) -> float:
    """``floor``, or 2.5 standard deviations of a share over ``requests`` draws if wider.

    The users' traffic is random: at 40 requests a second the floor holds, but on a machine too
    busy for that rate a right route's share strays further. A wrong route (another split, or
    every request on one side) stays outside even so.
    """
    if requests < 1:
        return floor
    return max(floor, min(SAMPLING_CAP, 2.5 * math.sqrt(expected * (1 - expected) / requests)))


SAMPLING_CAP = 0.12
"""The widest :func:`sampling_tolerance`: a route twice off its split never passes."""

ROLLBACK_THRESHOLD = 5
"""Failed checks that roll back a faulty canary in the scenarios: 10 s of 2 s ticks.

The first check comes one tick after the weight leaves 0. On a busy machine the canary's first
requests may not be scraped by then, and "no values found" counts as a failed check, as in
Flagger; two such ticks would roll the canary back before its error rate is ever measured.
"""

SETTLED_FOR = 5.0
"""Seconds the share must stay within tolerance: one lucky window is not a route."""


async def settled_share(scenario: Scenario, workload: str, expected: float,
                        *, tolerance: float = 0.06, mesh: str = "istio") -> float:
    """The share once a 10 s window lies entirely after the route change, and stays within
    ``tolerance`` of ``expected`` for :data:`SETTLED_FOR` seconds; fails if it does not for 45 s.

    Held to a route, not to a moment: a controller that flaps between two splits (a router
    that writes one split and reads back another) averages out near the expected share in
    some windows, never in all of them. At 40 requests a second a 10 s window's share has a
    standard deviation under 0.03, so a right route stays within 0.06; fewer requests widen
    the tolerance by :func:`sampling_tolerance`.
    """
    deadline = time.monotonic() + 45
    share = None
    since: float | None = None
    await asyncio.sleep(12)
    while time.monotonic() < deadline:
        share = await canary_share(scenario, workload, mesh=mesh)
        allowed = sampling_tolerance(
            expected, await window_requests(scenario, workload, mesh=mesh), floor=tolerance)
        if share is None or abs(share - expected) > allowed:
            since = None
        elif since is None:
            since = time.monotonic()
        elif time.monotonic() - since >= SETTLED_FOR:
            return share
        await asyncio.sleep(1)
    raise AssertionError(f"{workload} got {share} of the requests, expected {expected}"
                         f" (within {tolerance} for {SETTLED_FOR:.0f} s)")


@dataclass(frozen=True)
class Reply:
    """One response through the ingress: status, the version that answered, its cookies."""

    status: int
    version: str
    set_cookies: list[str]


@dataclass
class Client:
    """A user calling ``host`` through the simulator's ingress, with a browser's cookie jar
    (the simulated users' own: ``Max-Age`` honoured, 0 or less deletes)."""

    scenario: Scenario
    host: str
    jar: CookieJar = field(default_factory=CookieJar)

    def cookie(self, name: str) -> str | None:
        """The jar's ``name=value`` for cookie ``name``, if it holds one."""
        stored = self.jar.cookies.get(name)
        return f"{name}={stored[0]}" if stored is not None else None

    async def get(self, path: str = "/", *, cookie: str | None = None) -> Reply:
        """One GET; ``cookie`` replaces the jar's ``Cookie`` line for this request."""
        assert self.scenario.simulator is not None
        line = cookie if cookie is not None else self.jar.header(now=time.monotonic())
        headers = {"Host": self.host, **({"Cookie": line} if line else {})}
        async with aiohttp.ClientSession() as session, session.get(
            self.scenario.simulator.ingress_url + path, headers=headers,
            timeout=aiohttp.ClientTimeout(total=10),
        ) as response:
            await response.read()
            reply = Reply(response.status, response.headers.get("X-Version", ""),
                          list(response.headers.getall("Set-Cookie", [])))
        for value in reply.set_cookies:
            self.jar.receive(value, now=time.monotonic())
        return reply

    async def get_served(self, *, version: str | None = None, within: float = 60) -> Reply:
        """The first 200 answer (from ``version``, if given), asking again until ``within`` s.

        Right after a rollout the simulator may not have started the new pods' backend yet
        (it starts one when it sees the Deployment ready), and a request then finds no
        endpoint (503 UH), as it briefly would in a cluster. A 503 sets no cookie, so retrying
        leaves the jar as it was.
        """
        deadline = time.monotonic() + within
        while True:
            reply = await self.get()
            if reply.status == 200 and version in (None, reply.version):
                return reply
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.host}: no 200 answer from {version or 'any version'}"
                                     f" within {within}s; last {reply}")
            await asyncio.sleep(0.5)
