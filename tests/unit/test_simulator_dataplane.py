"""The simulated data plane over a fixed world: real HTTP to in-process backends, Istio's series.

The backends are the simulator's own backend application served by pytest-aiohttp, so the
requests, statuses, latencies and headers are real; only the process management is left to the
integration test.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from e2e.cluster.pytest_plugin import eventually
from e2e.simulator.backend import BackendBehaviour, make_app
from e2e.simulator.metrics import HttpAdapter, IstioAdapter, KumaAdapter, LinkerdAdapter
from e2e.simulator.routing import Request
from e2e.simulator.routing_gatewayapi import GatewayAPISource
from e2e.simulator.routing_kuma import KumaSource
from e2e.simulator.routing_smi import SmiSource
from e2e.simulator.traffic import GENERATOR, INGRESS, DataPlane, TrafficGenerator, stream_host
from e2e.simulator.users import UserPool, parse_trait
from e2e.simulator.world import World
from flaggerpy.kube.keys import ObjectKey

NS = "test"


def deployment(name: str, *, image: str, ready: int = 1, namespace: str = NS,
               **env: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"},
        "spec": {"replicas": max(ready, 1), "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                     {"name": "app", "image": image,
                      "env": [{"name": k, "value": v} for k, v in env.items()]}]}}},
        "status": {"readyReplicas": ready},
    }


def service(name: str, app: str, namespace: str = NS) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"app": app}, "ports": [{"port": 9898}]}}


def virtual_service(http: list[dict[str, Any]], name: str = "podinfo", *,
                    namespace: str = NS, delegate: bool = False,
                    created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    """A VirtualService for host ``name``; with ``delegate``, one as Flagger writes for
    ``service.delegation: true``: no hosts, no gateways."""
    hosts, gateways = ([], []) if delegate else ([name], ["mesh"])
    return {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
            "spec": {"hosts": hosts, "gateways": gateways, "http": http}}


def split(primary: int, canary: int, **rule: Any) -> list[dict[str, Any]]:
    return [{**rule, "route": [{"destination": {"host": "podinfo-primary"}, "weight": primary},
                               {"destination": {"host": "podinfo-canary"}, "weight": canary}]}]


class FakeBackend:
    """A backend process stand-in: the address of an in-process server."""

    def __init__(self, port: int) -> None:
        self.address = f"127.0.0.1:{port}"
        self.in_flight = 0

    def enter(self) -> None:
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1


class FakePool:
    def __init__(self, backends: dict[str, FakeBackend]) -> None:
        self.backends = backends

    def get(self, key: ObjectKey) -> FakeBackend | None:
        return self.backends.get(key.name)


@pytest.fixture
async def backends(aiohttp_server: Any) -> dict[str, FakeBackend]:
    primary = await aiohttp_server(make_app(BackendBehaviour(version="podinfo:1", name="primary")))
    canary = await aiohttp_server(make_app(BackendBehaviour(
        version="podinfo:2", name="canary", fault_rate=1.0, latency_ms=30)))
    return {"podinfo-primary": FakeBackend(primary.port), "podinfo": FakeBackend(canary.port)}


BASE = [
    deployment("podinfo-primary", image="podinfo:1"),
    deployment("podinfo", image="podinfo:2", FAULT_RATE="1", LATENCY_MS="30"),
    service("podinfo", "podinfo-primary"),
    service("podinfo-primary", "podinfo-primary"),
    service("podinfo-canary", "podinfo"),
]

MakePlane = Callable[..., DataPlane]


@pytest.fixture
async def plane(backends: dict[str, FakeBackend]) -> Any:
    planes: list[DataPlane] = []

    async def make(*objects: dict[str, Any], mesh: type = IstioAdapter, seed: int = 1,
                   namespaces: Sequence[str] = (NS,), source: Any = None) -> Any:
        registry = CollectorRegistry()
        world = World.of(namespaces, [*BASE, *objects], source=source)
        dp = DataPlane(world, FakePool(backends), mesh(registry),  # type: ignore[arg-type]
                       rng=random.Random(seed), timeout=5)
        await dp.__aenter__()
        planes.append(dp)
        return dp, registry

    yield make
    for dp in planes:
        await dp.__aexit__(None, None, None)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The sum of every sample of ``name`` whose labels include ``labels``."""
    total = 0.0
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def test_split_statuses_and_istio_series(plane: Any) -> None:
    dp, registry = await plane(virtual_service(split(80, 20)))
    statuses: dict[str, list[int]] = {"podinfo": [], "podinfo-primary": []}
    for _ in range(30):  # ten at a time: concurrent enough to be quick, not to queue
        responses = await asyncio.gather(*(
            dp.send(Request(host="podinfo"), source=GENERATOR, namespace=NS) for _ in range(10)))
        for response in responses:
            statuses[response.workload].append(response.status)
    assert 30 < len(statuses["podinfo"]) < 90  # 20 % of 300 = 60, sd ≈ 7
    assert set(statuses["podinfo"]) == {500}
    assert set(statuses["podinfo-primary"]) == {200}

    destination = {"reporter": "destination", "destination_workload_namespace": NS}
    canary = value(registry, "istio_requests_total", **destination, destination_workload="podinfo")
    primary = value(registry, "istio_requests_total", **destination,
                    destination_workload="podinfo-primary")
    assert (canary, primary) == (len(statuses["podinfo"]), len(statuses["podinfo-primary"]))
    assert value(registry, "istio_requests_total", **destination, destination_workload="podinfo",
                 response_code="500", destination_service="podinfo-canary.test.svc.cluster.local",
                 destination_service_name="podinfo-canary", request_protocol="http",
                 source_workload="traffic-simulator") == canary
    # The source proxy counts the same requests.
    assert value(registry, "istio_requests_total", reporter="source") == 300
    # The canary's 30 ms latency never fits the 25 ms bucket; the primary's requests do.
    assert value(registry, "istio_request_duration_milliseconds_bucket", **destination,
                 destination_workload="podinfo", le="25.0") == 0
    assert value(registry, "istio_request_duration_milliseconds_bucket", **destination,
                 destination_workload="podinfo", le="+Inf") == canary
    fast_primary = value(registry, "istio_request_duration_milliseconds_bucket", **destination,
                         destination_workload="podinfo-primary", le="25.0")
    assert fast_primary >= 0.8 * primary  # no added latency (a busy machine may delay a few)


async def test_no_route_no_service_and_no_endpoints_look_like_envoy(plane: Any) -> None:
    only_api = [{"match": [{"uri": {"prefix": "/api"}}],
                 "route": [{"destination": {"host": "podinfo-primary"}}]}]
    dp, registry = await plane(
        virtual_service(only_api),
        virtual_service([{"route": [{"destination": {"host": "missing"}}]}], name="other"),
        deployment("idle", image="idle:1", ready=0), service("idle", "idle"),
        virtual_service([{"route": [{"destination": {"host": "idle"}}]}], name="idle-vs"),
    )
    no_route = await dp.send(Request(host="podinfo", path="/web"), source=GENERATOR, namespace=NS)
    assert (no_route.status, no_route.flags) == (404, "NR")
    no_cluster = await dp.send(Request(host="other"), source=GENERATOR, namespace=NS)
    assert (no_cluster.status, no_cluster.flags) == (503, "NC")
    no_endpoint = await dp.send(Request(host="idle-vs"), source=GENERATOR, namespace=NS)
    assert (no_endpoint.status, no_endpoint.flags) == (503, "UH")
    direct_idle = await dp.send(Request(host="idle"), source=INGRESS, namespace=NS)
    assert (direct_idle.status, direct_idle.flags) == (503, "UH")
    unknown = await dp.send(Request(host="nothing.here.example"), source=INGRESS, namespace=NS)
    assert (unknown.status, unknown.flags) == (404, "NR")
    # No pod saw any of these: only the source proxy reports them.
    assert value(registry, "istio_requests_total", reporter="destination") == 0
    assert value(registry, "istio_requests_total", reporter="source",
                 destination_workload="unknown") == 5


async def test_without_virtual_service_a_host_goes_straight_to_its_service(plane: Any) -> None:
    dp, _ = await plane()
    canary = await dp.send(Request(host="podinfo-canary.test"), source=INGRESS, namespace="other")
    assert (canary.status, canary.workload) == (500, "podinfo")
    assert ("X-Version", "podinfo:2") in canary.headers
    apex = await dp.send(Request(host="podinfo"), source=INGRESS, namespace=NS)
    assert (apex.status, apex.workload) == (200, "podinfo-primary")


async def test_mirror_is_reported_but_not_returned(plane: Any) -> None:
    dp, registry = await plane(virtual_service(split(100, 0, mirror={"host": "podinfo-canary"},
                                                     mirrorPercentage={"value": 100})))
    for _ in range(20):
        response = await dp.send(Request(host="podinfo"), source=GENERATOR, namespace=NS)
        assert (response.status, response.workload) == (200, "podinfo-primary")
    await dp.drain()
    assert value(registry, "istio_requests_total", reporter="destination",
                 destination_workload="podinfo", response_code="500") == 20


async def test_set_cookie_and_session_affinity_through_the_data_plane(plane: Any) -> None:
    sticky: list[dict[str, Any]] = [
        {"match": [{"headers": {"Cookie": {"regex": ".*flagger-cookie.*xyz.*"}}}],
         "route": [{"destination": {"host": "podinfo-primary"}, "weight": 0},
                   {"destination": {"host": "podinfo-canary"}, "weight": 100}]},
        {"route": [
            {"destination": {"host": "podinfo-primary"}, "weight": 50},
            {"destination": {"host": "podinfo-canary"}, "weight": 50,
             "headers": {"response": {"add": {"Set-Cookie": "flagger-cookie=xyz; Max-Age=60"}}}},
        ]},
    ]
    dp, _ = await plane(virtual_service(sticky))
    users = UserPool(1, rng=random.Random(2))
    user = users.users[0]
    seen = []
    for now in range(30):
        response = await dp.send(Request(host="podinfo",
                                         headers=user.request_headers("podinfo", now=now)),
                                 source=GENERATOR, namespace=NS)
        user.receive("podinfo", response.set_cookies(), now=now)
        seen.append(response.workload)
    first = seen.index("podinfo")
    assert set(seen[first:]) == {"podinfo"}, "once on the canary, the user stays there"


async def test_generator_streams_follow_virtual_services(plane: Any) -> None:
    dp, registry = await plane(virtual_service(split(0, 100)))
    headers = [parse_trait("x-canary=insider:0.5")]
    generator = TrafficGenerator(dp.world, dp, UserPool(10, rng=random.Random(1), headers=headers),
                                 rps=200, max_rps=100, registry=registry)
    generator.sync()
    try:
        assert generator.streams == [ObjectKey(NS, "podinfo")]
        assert generator.rate() == 100  # the global cap wins over --rps

        async def sent() -> bool:
            return value(registry, "simulator_requests_sent_total") >= 20

        await eventually(sent, within=10, what="20 generated requests")
    finally:
        await generator.aclose()
    assert value(registry, "istio_requests_total", reporter="destination",
                 destination_workload="podinfo-primary") == 0
    assert value(registry, "simulator_requests_sent_total", response_code="500") >= 20


def test_stream_host_skips_wildcards() -> None:
    assert stream_host({"spec": {"hosts": ["*.example.com", "podinfo"]}}) == "podinfo"
    assert stream_host({"spec": {"hosts": ["*"]}}) is None


# -- delegation --------------------------------------------------------------------------------


def root(*rules: dict[str, Any], name: str = "podinfo") -> dict[str, Any]:
    """A root VirtualService for host ``name`` whose rules delegate."""
    return virtual_service(list(rules), name=name)


async def test_delegate_weights_are_followed_through_the_data_plane(plane: Any) -> None:
    dp, registry = await plane(
        root({"delegate": {"name": "podinfo-delegate"}}),
        virtual_service(split(80, 20), name="podinfo-delegate", delegate=True))
    workloads: Counter[str | None] = Counter()
    for _ in range(20):
        responses = await asyncio.gather(*(
            dp.send(Request(host="podinfo"), source=GENERATOR, namespace=NS) for _ in range(10)))
        workloads.update(response.workload for response in responses)
    assert set(workloads) == {"podinfo", "podinfo-primary"}
    assert 15 < workloads["podinfo"] < 65  # 20 % of 200 = 40, sd ≈ 5.7
    assert value(registry, "istio_requests_total", reporter="destination",
                 destination_workload="podinfo",
                 destination_service="podinfo-canary.test.svc.cluster.local") == \
        workloads["podinfo"]


async def test_root_match_gates_the_delegate_through_the_data_plane(plane: Any) -> None:
    dp, _ = await plane(
        root({"match": [{"uri": {"prefix": "/api"}}], "delegate": {"name": "podinfo-delegate"}},
             {"route": [{"destination": {"host": "podinfo-primary"}}]}),
        virtual_service(split(0, 100), name="podinfo-delegate", delegate=True))
    api = await dp.send(Request(host="podinfo", path="/api/x"), source=GENERATOR, namespace=NS)
    web = await dp.send(Request(host="podinfo", path="/web"), source=GENERATOR, namespace=NS)
    assert (api.workload, web.workload) == ("podinfo", "podinfo-primary")


async def test_missing_delegate_is_404_nr(plane: Any) -> None:
    dp, registry = await plane(
        root({"delegate": {"name": "podinfo-delegate"}}),
        # In a namespace not watched, and named as the delegate: still not found.
        virtual_service(split(0, 100), name="podinfo-delegate", namespace="elsewhere",
                        delegate=True))
    response = await dp.send(Request(host="podinfo"), source=GENERATOR, namespace=NS)
    assert (response.status, response.flags, response.workload) == (404, "NR", None)
    assert value(registry, "istio_requests_total", reporter="destination") == 0
    assert value(registry, "istio_requests_total", reporter="source", response_code="404",
                 response_flags="NR", destination_workload="unknown") == 1


async def test_nested_delegate_is_not_followed_through_the_data_plane(plane: Any) -> None:
    dp, registry = await plane(
        root({"delegate": {"name": "podinfo-delegate"}}),
        virtual_service([{"delegate": {"name": "podinfo-deeper"}}], name="podinfo-delegate",
                        delegate=True),
        virtual_service(split(0, 100), name="podinfo-deeper", delegate=True))
    response = await dp.send(Request(host="podinfo"), source=GENERATOR, namespace=NS)
    assert response.workload is None  # neither backend got it
    assert response.status == 503
    assert value(registry, "istio_requests_total", reporter="destination") == 0


async def test_delegate_in_another_namespace_resolves_hosts_there(
    plane: Any, backends: dict[str, FakeBackend]
) -> None:
    backends["podinfo-prod"] = backends["podinfo-primary"]  # prod's pods answer 200
    dp, registry = await plane(
        root({"delegate": {"name": "podinfo", "namespace": "prod"}}),
        # Short hosts of the delegate: "podinfo-canary" is prod's Service, not test's.
        virtual_service([{"mirror": {"host": "podinfo-canary"},
                          "route": [{"destination": {"host": "podinfo-canary"}}]}],
                        namespace="prod", delegate=True),
        deployment("podinfo-prod", image="podinfo:3", namespace="prod"),
        service("podinfo-canary", "podinfo-prod", namespace="prod"),
        namespaces=(NS, "prod"))
    for _ in range(10):
        response = await dp.send(Request(host="podinfo"), source=GENERATOR, namespace=NS)
        assert (response.status, response.workload) == (200, "podinfo-prod")
    await dp.drain()
    prod = {"reporter": "destination", "destination_workload": "podinfo-prod",
            "destination_service": "podinfo-canary.prod.svc.cluster.local"}
    assert value(registry, "istio_requests_total", **prod) == 20  # ten sent, ten mirrored
    assert value(registry, "istio_requests_total", reporter="destination",
                 destination_workload_namespace=NS) == 0


async def test_delegate_gets_no_stream_and_no_host(plane: Any) -> None:
    # The delegate is older than the root: were it matched by host, it would win the lookup.
    delegate = virtual_service(split(0, 100), name="podinfo-delegate", delegate=True,
                               created="2025-01-01T00:00:00Z")
    dp, registry = await plane(root({"delegate": {"name": "podinfo-delegate"}}), delegate)
    assert stream_host(delegate) is None
    world: World = dp.world
    found = world.virtual_service_for("podinfo", namespace=NS)
    assert found is not None
    assert found["metadata"]["name"] == "podinfo"
    assert world.virtual_service_for("podinfo-delegate", namespace=NS) is None
    generator = TrafficGenerator(world, dp, UserPool(1, rng=random.Random(1)), rps=50,
                                 max_rps=50, registry=registry)
    generator.sync()
    try:
        assert generator.streams == [ObjectKey(NS, "podinfo")]
        assert generator.rate() == 50  # the delegate takes no share of the cap
    finally:
        await generator.aclose()


async def test_linkerd_adapter_reports_inbound_and_outbound(plane: Any) -> None:
    dp, registry = await plane(virtual_service(split(0, 100)), mesh=LinkerdAdapter)
    for _ in range(10):
        await dp.send(Request(host="podinfo"), source=GENERATOR, namespace=NS)
    inbound = {"direction": "inbound", "namespace": NS, "deployment": "podinfo"}
    assert value(registry, "response_total", **inbound, classification="failure") == 10
    assert value(registry, "response_total", direction="outbound",
                 dst_deployment="podinfo") == 10
    assert value(registry, "response_latency_ms_bucket", **inbound, le="+Inf") == 10


# -- other meshes' routing objects through the data plane ------------------------------------


async def test_traffic_split_routes_apex_requests_by_weight(plane: Any) -> None:
    split_ = {"apiVersion": "split.smi-spec.io/v1alpha1", "kind": "TrafficSplit",
              "metadata": {"name": "podinfo", "namespace": NS},
              "spec": {"service": "podinfo", "backends": [
                  {"service": "podinfo-canary", "weight": "100"},
                  {"service": "podinfo-primary", "weight": "0"}]}}
    dp, registry = await plane(split_, mesh=LinkerdAdapter, source=SmiSource())
    for _ in range(10):
        response = await dp.send(Request(host="podinfo.test"), source=GENERATOR, namespace="x")
        assert (response.status, response.workload) == (500, "podinfo")
    inbound = {"direction": "inbound", "namespace": NS, "deployment": "podinfo"}
    assert value(registry, "response_total", **inbound, classification="failure") == 10
    # The canary Service itself is not the apex: straight to its pods, as Linkerd does.
    response = await dp.send(Request(host="podinfo-primary"), source=GENERATOR, namespace=NS)
    assert response.workload == "podinfo-primary"


async def test_httproute_rewrites_and_answers_500_for_an_invalid_backend(plane: Any) -> None:
    def route(name: str, hostname: str, backend: str) -> dict[str, Any]:
        return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"hostnames": [hostname], "parentRefs": [{"name": "gateway"}],
                         "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                                    "filters": [{"type": "URLRewrite", "urlRewrite": {"path": {
                                        "type": "ReplacePrefixMatch",
                                        "replacePrefixMatch": "/v2"}}}],
                                    "backendRefs": [{"name": backend, "port": 9898}]}]}}
    dp, _ = await plane(route("good", "www.example.com", "podinfo-primary"),
                        route("bad", "bad.example.com", "missing"),
                        source=GatewayAPISource(), mesh=HttpAdapter)
    response = await dp.send(Request(host="www.example.com", path="/api/info?a=1"),
                             source=INGRESS, namespace=NS)
    assert response.status == 200
    assert json.loads(response.body)["path"] == "/v2/info?a=1"
    response = await dp.send(Request(host="www.example.com", path="/other"),
                             source=INGRESS, namespace=NS)
    assert response.status == 404
    response = await dp.send(Request(host="bad.example.com", path="/api"),
                             source=INGRESS, namespace=NS)
    assert response.status == 500


async def test_traffic_route_sends_the_apex_to_the_split_tags(plane: Any) -> None:
    route = {"apiVersion": "kuma.io/v1alpha1", "kind": "TrafficRoute", "mesh": "default",
             "metadata": {"name": "podinfo"},
             "spec": {"sources": [{"match": {"kuma.io/service": "*"}}],
                      "destinations": [{"match": {"kuma.io/service": "podinfo_test_svc_9898"}}],
                      "conf": {"split": [
                          {"weight": 0, "destination": {
                              "kuma.io/service": "podinfo-primary_test_svc_9898"}},
                          {"weight": 100, "destination": {
                              "kuma.io/service": "podinfo-canary_test_svc_9898"}}]}}}
    dp, registry = await plane(route, source=KumaSource(), mesh=KumaAdapter)
    for _ in range(5):
        response = await dp.send(Request(host="podinfo"), source=GENERATOR, namespace=NS)
        assert response.workload == "podinfo"
    assert value(registry, "envoy_cluster_upstream_rq", service="podinfo-canary_test_svc_9898",
                 envoy_cluster_name="localhost_9898", envoy_response_code="500") == 5
    generator = TrafficGenerator(dp.world, dp, UserPool(1, rng=random.Random(1)))
    try:
        generator.sync()
        assert generator.streams == [ObjectKey("", "podinfo")]
    finally:
        await generator.aclose()
