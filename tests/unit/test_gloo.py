"""The Gloo router's pure builders against spec §3 and the golden corpus, and the traffic
simulator's reading of what they write.

Each test checks one thing Flagger 1.44 writes: the Upstreams' names, Service references and
copied config, the RouteTable's metadata, destinations (a weight of 0 left out) and A/B header
matchers, and reading the split back.
"""

from __future__ import annotations

import copy
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from e2e.simulator.meshes import MESHES
from e2e.simulator.metrics import Exchange, Peer
from e2e.simulator.routing import Request, ServiceKey
from e2e.simulator.routing_gloo import (
    GlooAdapter,
    GlooSource,
    cluster_name,
    route_table,
    upstream_service,
)
from flaggerpy import kube, plugins
from flaggerpy.analysis import MetricTemplateModel
from flaggerpy.errors import PluginError, RouterError, TerminalError
from flaggerpy.models.canary import Canary
from flaggerpy.providers import gloo
from flaggerpy.providers.gloo import (
    GlooObserver,
    GlooRouter,
    build_route_table,
    build_upstream,
    header_matchers,
    kept_weights,
    read_weights,
    upstream_name,
)
from flaggerpy.routing import ProviderContext, Router, Weights, capabilities_of
from flaggerpy.settings import Settings
from flaggerpy.templating import render

TOOLKIT = {
    "kustomize.toolkit.fluxcd.io/reconcile": "disabled",
    "helm.toolkit.fluxcd.io/driftDetection": "disabled",
}
GOLDEN = Path(__file__).resolve().parents[3] / "shared" / "reference" / "golden" / "gloo"
NS = "gloo-upstream-ref"


def make_canary(
        *,
        namespace: str = NS,
        service: dict[str, Any] | None = None,
        analysis: dict[str, Any] | None = None,
        upstream_ref: dict[str, Any] | None = None,
) -> Canary:
    spec: dict[str, Any] = {
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "service": {"port": 9898, "targetPort": 9898, **(service or {})},
        "analysis": analysis or {"interval": "10s", "threshold": 2, "stepWeight": 20,
                                 "maxWeight": 40},
    }
    if upstream_ref is not None:
        spec["upstreamRef"] = upstream_ref
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": namespace,
                     "uid": "3d8c1d47-8a7f-4a52-9a53-5b0a3cbd0c11"},
        "spec": spec,
    })


def golden(case: str, snapshot: str, kind: str, name: str) -> dict[str, Any]:
    """One object of a golden snapshot, ownerReferences removed (the store adds them)."""
    path = GOLDEN / case / snapshot
    if not path.exists():
        pytest.skip(f"golden corpus not found at {path}")
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc["kind"] == kind and doc["metadata"]["name"] == name:
            doc["metadata"].pop("ownerReferences", None)
            return dict(doc)
    raise AssertionError(f"{kind} {name} not in {path}")


CONFIG_UPSTREAM: dict[str, Any] = {
    "apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
    "metadata": {"name": "config-upstream", "namespace": NS},
    "spec": {
        "circuitBreakers": {"maxConnections": 50},
        "connectionConfig": {"connectTimeout": "2s", "maxRequestsPerConnection": 100},
        "kube": {"serviceName": "placeholder", "serviceNamespace": NS, "servicePort": 9898},
        "loadBalancerConfig": {"roundRobin": {}},
        "useHttp2": False,
    },
}


# -- Upstreams -----------------------------------------------------------------------------------


def test_upstream_names_carry_namespace_service_and_port() -> None:
    canary = make_canary(namespace="test", service={"port": 80})
    assert upstream_name(canary, canary_side=False) == "test-podinfo-primaryupstream-80"
    assert upstream_name(canary, canary_side=True) == "test-podinfo-canaryupstream-80"
    named = make_canary(namespace="test", service={"port": 80, "name": "web"})
    assert upstream_name(named, canary_side=True) == "test-web-canaryupstream-80"


@pytest.mark.parametrize(("canary_side", "selector"), [
    (False, {"app": "podinfo-primary"}), (True, {"app": "podinfo"})])
def test_new_upstreams_are_flaggers_golden_objects_with_the_config_copied(
        canary_side: bool, selector: dict[str, str]) -> None:
    canary = make_canary(upstream_ref={"apiVersion": "gloo.solo.io/v1", "kind": "Upstream",
                                       "name": "config-upstream", "namespace": NS})
    name = upstream_name(canary, canary_side=canary_side)
    built = build_upstream(canary, canary_side=canary_side, selector=selector,
                           config=CONFIG_UPSTREAM, existing=None)
    assert built == golden("upstream-ref", "initialized.yaml", "Upstream", name)


def test_without_upstream_ref_an_upstream_has_only_its_kube_service() -> None:
    canary = make_canary(namespace="gloo-canary-stepweight")
    name = upstream_name(canary, canary_side=False)
    built = build_upstream(canary, canary_side=False, selector={"app": "podinfo-primary"},
                           config=None, existing=None)
    assert built == golden("canary-stepweight", "initialized.yaml", "Upstream", name)
    assert built is not None
    assert built["spec"] == {"kube": {
        "serviceName": "podinfo-primary", "serviceNamespace": "gloo-canary-stepweight",
        "servicePort": 9898, "selector": {"app": "podinfo-primary"}}}
    assert "labels" not in built["metadata"]
    assert "annotations" not in built["metadata"]


def test_only_flaggers_fields_are_copied_and_zero_values_are_left_out() -> None:
    config = copy.deepcopy(CONFIG_UPSTREAM)
    config["spec"].update(useHttp2=True, initialStreamWindowSize=0, httpProxyHostname="proxy",
                          healthChecks=[{"timeout": "1s"}], static={"hosts": []})
    built = build_upstream(make_canary(), canary_side=True, selector=None, config=config,
                           existing=None)
    assert built is not None
    assert set(built["spec"]) == {"circuitBreakers", "connectionConfig", "loadBalancerConfig",
                                  "useHttp2", "httpProxyHostname", "kube"}
    assert "selector" not in built["spec"]["kube"]


def test_an_existing_upstream_is_left_alone_without_a_config() -> None:
    existing = golden("canary-stepweight", "initialized.yaml", "Upstream",
                      "gloo-canary-stepweight-podinfo-canaryupstream-9898")
    existing["spec"]["connectionConfig"] = {"maxRequestsPerConnection": 7}  # a hand edit
    assert build_upstream(make_canary(namespace="gloo-canary-stepweight"), canary_side=True,
                          selector={"app": "other"}, config=None, existing=existing) is None


def test_an_existing_upstream_follows_the_config_load_balancer_only() -> None:
    canary = make_canary()
    existing = build_upstream(canary, canary_side=True, selector={"app": "podinfo"},
                              config=CONFIG_UPSTREAM, existing=None)
    assert existing is not None
    assert build_upstream(canary, canary_side=True, selector={"app": "podinfo"},
                          config=CONFIG_UPSTREAM, existing=existing) is None
    config = copy.deepcopy(CONFIG_UPSTREAM)
    slow = {"roundRobin": {"slowStartConfig": {"slowStartWindow": "2m", "minWeightPercent": 20}}}
    config["spec"]["loadBalancerConfig"] = slow
    config["spec"]["circuitBreakers"] = {"maxConnections": 1}
    synced = build_upstream(canary, canary_side=True, selector={"app": "podinfo"},
                            config=config, existing=existing)
    assert synced is not None
    assert synced["spec"]["loadBalancerConfig"] == slow
    assert synced["spec"]["circuitBreakers"] == {"maxConnections": 50}  # set at creation only
    assert synced["metadata"] == existing["metadata"]
    del config["spec"]["loadBalancerConfig"]
    cleared = build_upstream(canary, canary_side=True, selector=None, config=config,
                             existing=synced)
    assert cleared is not None
    assert "loadBalancerConfig" not in cleared["spec"]


# -- RouteTable ----------------------------------------------------------------------------------


def test_a_new_route_table_is_flaggers_golden_object() -> None:
    canary = make_canary()
    built = build_route_table(canary, Weights.all_primary(), None)
    assert built == golden("upstream-ref", "initialized.yaml", "RouteTable", "podinfo")


def test_a_weight_of_zero_is_left_out_of_the_destination() -> None:
    destinations = build_route_table(make_canary(), Weights.all_canary(), None)[
        "spec"]["routes"][0]["routeAction"]["multi"]["destinations"]
    assert "weight" not in destinations[0]
    assert destinations[1]["weight"] == 100
    assert [d["destination"]["upstream"]["name"] for d in destinations] == [
        f"{NS}-podinfo-primaryupstream-9898", f"{NS}-podinfo-canaryupstream-9898"]
    assert {d["destination"]["upstream"]["namespace"] for d in destinations} == {NS}


def test_a_step_is_the_golden_step() -> None:
    path = GOLDEN / "upstream-ref" / "steps" / "05.yaml"
    if not path.exists():
        pytest.skip("golden corpus not found")
    step = yaml.safe_load(path.read_text())
    stored = next(o for o in step["objects"] if o["kind"] == "RouteTable")
    stored["metadata"].pop("ownerReferences")
    assert build_route_table(make_canary(), Weights.to_canary(20), None) == stored


def test_the_route_table_gets_apex_labels_and_annotations_at_creation() -> None:
    canary = make_canary(service={"apex": {"labels": {"team": "a"},
                                           "annotations": {"note": "x"}}})
    metadata = build_route_table(canary, Weights.all_primary(), None)["metadata"]
    assert metadata["labels"] == {"team": "a"}
    assert metadata["annotations"] == {"note": "x", **TOOLKIT}


def test_an_existing_route_table_gets_the_spec_and_keeps_its_metadata() -> None:
    canary = make_canary()
    existing = build_route_table(canary, Weights.all_primary(), None)
    existing["metadata"]["labels"] = {"added": "by-someone"}
    existing["spec"]["routes"][0]["matchers"] = [{"prefix": "/hand-edit"}]
    rebuilt = build_route_table(canary, Weights.to_canary(40), existing)
    assert rebuilt["metadata"] == existing["metadata"]
    assert "matchers" not in rebuilt["spec"]["routes"][0]
    assert read_weights(rebuilt, canary) == Weights.to_canary(40)


def test_rebuilding_the_stored_object_with_its_own_weights_changes_nothing() -> None:
    canary = make_canary()
    stored = build_route_table(canary, Weights.to_canary(20), None)
    assert build_route_table(canary, kept_weights(stored, canary), stored) == stored


def test_ab_matchers_map_exact_and_regex_headers() -> None:
    canary = make_canary(analysis={"interval": "10s", "threshold": 2, "iterations": 2, "match": [
        {"headers": {"x-canary": {"exact": "insider"}, "a-user": {"regex": "^bob.*"}}},
        {"headers": {"cookie": {"prefix": "canary"}}},
    ]})
    assert header_matchers(canary) == [
        {"name": "a-user", "value": "^bob.*", "regex": True},
        {"name": "x-canary", "value": "insider"},
        {"name": "cookie"},  # Gloo has no prefix match: Flagger writes no value
    ]
    route = build_route_table(canary, Weights.all_canary(), None)["spec"]["routes"][0]
    assert route["matchers"] == [{"headers": header_matchers(canary)}]
    assert route["inheritablePathMatchers"] is True


def test_without_match_there_are_no_matchers() -> None:
    route = build_route_table(make_canary(), Weights.all_primary(), None)["spec"]["routes"][0]
    assert "matchers" not in route


@pytest.mark.parametrize(("primary", "canary_weight"), [(100, 0), (80, 20), (0, 100)])
def test_the_weights_read_back_are_those_written(primary: int, canary_weight: int) -> None:
    canary = make_canary()
    weights = Weights(primary=primary, canary=canary_weight)
    assert read_weights(build_route_table(canary, weights, None), canary) == weights


def test_a_route_table_without_two_destinations_or_the_primary_is_refused() -> None:
    canary = make_canary()
    table = build_route_table(canary, Weights.to_canary(20), None)
    one = copy.deepcopy(table)
    del one["spec"]["routes"][0]["routeAction"]["multi"]["destinations"][1]
    with pytest.raises(RouterError, match="destinations not found"):
        read_weights(one, canary)
    with pytest.raises(RouterError, match="destinations not found"):
        read_weights({"spec": {"routes": []}}, canary)
    other = copy.deepcopy(table)
    other["spec"]["routes"][0]["routeAction"]["multi"]["destinations"][0]["destination"][
        "upstream"]["name"] = "elsewhere"
    with pytest.raises(RouterError, match="primaryupstream"):
        read_weights(other, canary)
    assert kept_weights(other, canary) == Weights.all_primary()
    assert kept_weights(None, canary) == Weights.all_primary()


def test_a_canary_without_a_service_is_a_spec_error() -> None:
    canary = make_canary()
    canary.spec.service = None
    with pytest.raises(TerminalError, match=r"spec\.service"):
        build_route_table(canary, Weights.all_primary(), None)


def test_the_router_is_registered_declares_ab_without_mirroring_and_refuses_a_variant() -> None:
    ctx = ProviderContext(store=kube.ObjectStore(None), settings=Settings(),  # no I/O here
                          log=structlog.get_logger("test"))
    plugin = plugins.routers.get("gloo")
    router = plugin.factory(ctx=ctx, variant=plugin.variant)
    assert isinstance(router, GlooRouter)
    assert isinstance(router, Router)
    caps = capabilities_of(router)
    assert (caps.ab_matches, caps.mirroring, caps.session_affinity) == (True, False, False)
    assert caps.needs_services
    with pytest.raises(PluginError, match="gloo:v1"):
        gloo.GlooRouter(ctx=ctx, variant="v1")


# -- the traffic simulator's Gloo: RouteTable routing and the gateway's Envoy series -----------


def _route(spec: dict[str, Any], *, headers: dict[str, str] | None = None, path: str = "/",
           seed: int = 1) -> str | None:
    decision = route_table(spec, Request(host="podinfo.test", path=path, headers=headers or {}),
                           random.Random(seed))
    if decision is None:
        return "404"
    return decision.destination.host if decision.destination else "503"


def test_the_simulator_splits_by_the_route_tables_weights() -> None:
    canary = make_canary(namespace="test")
    spec = build_route_table(canary, Weights.to_canary(30), None)["spec"]
    rng = random.Random(7)
    hosts = Counter(
        route_table(spec, Request(host="podinfo.test"), rng).destination.host  # type: ignore[union-attr]
        for _ in range(4000))
    assert set(hosts) == {"podinfo-primary.test.svc.cluster.local",
                          "podinfo-canary.test.svc.cluster.local"}
    assert abs(hosts["podinfo-canary.test.svc.cluster.local"] / 4000 - 0.3) < 0.03
    # A weight left out is 0: all to the canary.
    spec = build_route_table(canary, Weights.all_canary(), None)["spec"]
    assert {_route(spec, seed=s) for s in range(50)} == {"podinfo-canary.test.svc.cluster.local"}


def test_the_simulator_routes_only_matching_requests_on_an_ab_route_table() -> None:
    canary = make_canary(namespace="test", analysis={
        "interval": "10s", "threshold": 2, "iterations": 2,
        "match": [{"headers": {"x-canary": {"exact": "insider"}}},
                  {"headers": {"x-user": {"regex": "bob-[0-9]+"}}}]})
    spec = build_route_table(canary, Weights.all_canary(), None)["spec"]
    # Flagger puts the headers of every match item into one matcher: all of them must match.
    assert _route(spec, headers={"x-canary": "insider"}) == "404"
    assert _route(spec, headers={"x-canary": "insider", "x-user": "bob-1"}) == (
        "podinfo-canary.test.svc.cluster.local")
    # Two matchers: either one routes.
    spec["routes"][0]["matchers"] = [{"headers": [{"name": "x-canary", "value": "insider"}]},
                                     {"headers": [{"name": "x-user", "value": "bob-[0-9]+",
                                                   "regex": True}]}]
    assert _route(spec, headers={"x-user": "bob-12"}) == "podinfo-canary.test.svc.cluster.local"
    assert _route(spec, headers={"x-user": "bob-x"}) == "404"  # no route: Gloo's 404
    assert _route(spec) == "404"
    spec["routes"][0]["matchers"] = [{"prefix": "/api", "headers": [{"name": "x-canary"}]}]
    assert _route(spec, headers={"x-canary": "any"}, path="/api/info") != "404"
    assert _route(spec, headers={"x-canary": "any"}, path="/other") == "404"


def test_the_simulator_resolves_upstreams_by_flaggers_and_discoverys_names() -> None:
    assert upstream_service("test-podinfo-canaryupstream-9898", "test") == ServiceKey(
        "test", "podinfo-canary")
    assert upstream_service("test-my-app-primaryupstream-80", "test") == ServiceKey(
        "test", "my-app-primary")
    assert upstream_service("test-podinfo-9898", "test") == ServiceKey("test", "podinfo")
    assert upstream_service("elsewhere-podinfo-9898", "test") is None
    assert cluster_name(ServiceKey("test", "podinfo-canary"), 9898) == (
        "test-podinfo-canaryupstream-9898_test")
    source = GlooSource()
    table = build_route_table(make_canary(namespace="test"), Weights.all_primary(), None)
    assert source.claims(table, "podinfo.test", namespace="other", namespaces=["test"])
    assert source.claims(table, "podinfo", namespace="test", namespaces=["test"])
    assert not source.claims(table, "podinfo-canary.test", namespace="test", namespaces=["test"])
    assert source.stream_host(table) == "podinfo.test"


def test_the_observers_queries_read_the_gateways_canary_cluster() -> None:
    registry = CollectorRegistry()
    adapter = GlooAdapter(registry)
    source = Peer("traffic-simulator", "simulator", {"app": "traffic-simulator"})
    canary, primary = (Peer("podinfo", "test", {}), Peer("podinfo-primary", "test", {}))

    def seen(peer: Peer | None, service: str, code: int) -> Exchange:
        return Exchange(source, "podinfo.test", ServiceKey("test", service), peer, code, 20.0,
                        service_port=9898)

    for item in (seen(canary, "podinfo-canary", 200), seen(canary, "podinfo-canary", 500),
                 *(seen(primary, "podinfo-primary", 500) for _ in range(3)),
                 seen(None, "podinfo-canary", 503)):
        adapter.observe(item)
    text = generate_latest(registry).decode()
    series = [(s.name, dict(s.labels), s.value)
              for family in text_string_to_metric_families(text) for s in family.samples]
    model = MetricTemplateModel(name="podinfo", namespace="test", target="podinfo",
                                service="podinfo", ingress="podinfo", route="podinfo",
                                interval="1m")
    observer = GlooObserver(client=None, render=render)  # type: ignore[arg-type]
    query = observer.render_success_rate(model)
    cluster = re.search(r'envoy_cluster_name=~"([^"]+)"', query)
    assert cluster is not None

    def picked(name: str, extra: str = "") -> list[tuple[str, dict[str, str], float]]:
        return [s for s in series if s[0] == name
                and re.fullmatch(cluster[1], s[1].get("envoy_cluster_name", ""))
                and (not extra or not re.fullmatch(extra, s[1]["envoy_response_code"]))]

    ok = sum(v for _, _, v in picked("envoy_cluster_upstream_rq", "5.*"))
    total = sum(v for _, _, v in picked("envoy_cluster_upstream_rq"))
    assert (ok, total) == (1, 2)  # the primary's errors and the unrouted 503 are not counted
    assert "envoy_cluster_upstream_rq_time_bucket" in observer.render_duration(model)
    infinite = [v for _, labels, v in picked("envoy_cluster_upstream_rq_time_bucket")
                if labels.get("le") == "+Inf"]
    assert infinite == [2]
    assert MESHES["gloo"].adapter is GlooAdapter
    assert MESHES["gloo"].source is GlooSource
