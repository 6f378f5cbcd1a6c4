"""The Traefik router's pure builders against spec §3 and the golden corpus.

Each test checks one thing Flagger 1.44 writes: the TraefikService's name, metadata and owner,
the round robin's entries (the canary's only while it has weight), the weights, and reading
them back; and the one deliberate difference, a primary weight of 0 written out. Then the
traffic simulator's Traefik: its weighted round robin (a missing weight is 1, as Traefik reads
it) and the series it exports, as the traefik observer's queries select them.
"""

from __future__ import annotations

import copy
import random
import re
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from e2e.simulator.meshes import MESHES
from e2e.simulator.metrics import Exchange, Peer
from e2e.simulator.routing import ServiceKey
from e2e.simulator.routing_traefik import TraefikSource, weighted_round_robin
from flaggerpy import kube, plugins
from flaggerpy.analysis import MetricTemplateModel
from flaggerpy.errors import PluginError, RouterError, TerminalError
from flaggerpy.models.canary import Canary
from flaggerpy.providers import traefik
from flaggerpy.providers.traefik import (
    TRAEFIK_SERVICES,
    TraefikRouter,
    build_traefik_service,
    kept_weights,
    read_weights,
    weighted_services,
)
from flaggerpy.routing import ProviderContext, Router, Weights, capabilities_of
from flaggerpy.settings import Settings
from flaggerpy.templating import render

TOOLKIT = {
    "kustomize.toolkit.fluxcd.io/reconcile": "disabled",
    "helm.toolkit.fluxcd.io/driftDetection": "disabled",
}
OWNER = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo",
         "uid": "3d8c1d47-8a7f-4a52-9a53-5b0a3cbd0c11", "controller": True,
         "blockOwnerDeletion": True}


def make_canary(*, namespace: str = "test", service: dict[str, Any] | None = None) -> Canary:
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": namespace,
                     "uid": "3d8c1d47-8a7f-4a52-9a53-5b0a3cbd0c11"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 80, "targetPort": 9898, **(service or {})},
            "analysis": {"interval": "10s", "threshold": 2, "stepWeights": [10, 30, 60]},
        },
    })


def entry(name: str, weight: int | None, *, ns: str = "test", port: int = 80) -> dict[str, Any]:
    result: dict[str, Any] = {"name": name, "namespace": ns, "port": port}
    if weight is not None:
        result["weight"] = weight
    return result


def test_a_new_traefik_service_is_flaggers_golden_object() -> None:
    # traefik/canary-stepweights, initialized.yaml, with the namespace "test".
    assert build_traefik_service(make_canary(), Weights.all_primary(), None) == {
        "apiVersion": "traefik.io/v1alpha1",
        "kind": "TraefikService",
        "metadata": {"name": "podinfo", "namespace": "test", "annotations": TOOLKIT,
                     "ownerReferences": [OWNER]},
        "spec": {"weighted": {"services": [entry("podinfo-primary", 100)]}},
    }


@pytest.mark.parametrize(("primary", "canary_weight"), [(90, 10), (70, 30), (40, 60)])
def test_a_split_lists_primary_then_canary_with_their_weights(
        primary: int, canary_weight: int) -> None:
    # traefik/canary-stepweights, steps 04, 06, 08.
    built = build_traefik_service(make_canary(), Weights(primary=primary, canary=canary_weight),
                                  None)
    assert built["spec"]["weighted"]["services"] == [
        entry("podinfo-primary", primary), entry("podinfo-canary", canary_weight)]


def test_the_canary_entry_is_left_out_while_it_has_no_weight() -> None:
    # traefik/*, promotion steps: back to the primary alone.
    assert weighted_services(make_canary(), Weights.all_primary()) == [
        entry("podinfo-primary", 100)]


def test_all_to_the_canary_writes_the_primary_weight_of_0_out() -> None:
    # traefik/bluegreen step 06 and ab-header step 04 hold the primary without `weight`, which
    # Traefik reads as 1 (1 request in 101 to the primary): flaggerpy writes 0.
    assert weighted_services(make_canary(), Weights.all_canary()) == [
        entry("podinfo-primary", 0), entry("podinfo-canary", 100)]


def test_names_ports_and_metadata_come_from_the_service_spec() -> None:
    canary = make_canary(namespace="shop", service={
        "name": "frontend", "port": 8080,
        "apex": {"annotations": {"team": "web"}, "labels": {"tier": "edge"}}})
    built = build_traefik_service(canary, Weights.to_canary(20), None, set_owner_refs=False)
    assert built["metadata"] == {"name": "frontend", "namespace": "shop",
                                 "annotations": {"team": "web", **TOOLKIT},
                                 "labels": {"tier": "edge"}}
    assert built["spec"]["weighted"]["services"] == [
        entry("frontend-primary", 80, ns="shop", port=8080),
        entry("frontend-canary", 20, ns="shop", port=8080)]


def test_an_existing_one_gets_flaggers_spec_labels_and_annotations_back() -> None:
    stored = build_traefik_service(make_canary(), Weights.to_canary(30), None)
    stored["metadata"].update(resourceVersion="7", labels={"hand": "made"},
                              annotations={"hand": "made"})
    stored["spec"]["weighted"]["sticky"] = {"cookie": {"name": "lvl1"}}
    canary = make_canary(service={"apex": {"annotations": {"new": "one"}}})
    built = build_traefik_service(canary, Weights.to_canary(30), copy.deepcopy(stored))
    assert built["metadata"] == {"name": "podinfo", "namespace": "test", "resourceVersion": "7",
                                 "annotations": {"new": "one", **TOOLKIT},
                                 "ownerReferences": [OWNER]}
    assert built["spec"] == {"weighted": {"services": [
        entry("podinfo-primary", 70), entry("podinfo-canary", 30)]}}


def test_an_owner_reference_is_never_added_to_an_existing_one() -> None:
    stored = build_traefik_service(make_canary(), Weights.all_primary(), None,
                                   set_owner_refs=False)
    built = build_traefik_service(make_canary(), Weights.all_primary(), stored)
    assert "ownerReferences" not in built["metadata"]


def test_rebuilding_the_stored_object_with_its_own_weights_changes_nothing() -> None:
    canary = make_canary(service={"apex": {"labels": {"tier": "edge"}}})
    for weights in (Weights.all_primary(), Weights.to_canary(30), Weights.all_canary()):
        stored = build_traefik_service(canary, weights, None)
        stored["metadata"]["resourceVersion"] = "9"
        assert build_traefik_service(canary, kept_weights(stored, canary), stored) == stored


@pytest.mark.parametrize(("primary", "canary_weight"), [(100, 0), (90, 10), (0, 100)])
def test_the_weights_read_back_are_those_written(primary: int, canary_weight: int) -> None:
    canary = make_canary()
    built = build_traefik_service(canary, Weights(primary=primary, canary=canary_weight), None)
    assert read_weights(built, canary) == Weights(primary=primary, canary=canary_weight)


def test_a_primary_without_weight_reads_as_0_as_flagger_wrote_it() -> None:
    # traefik/bluegreen step 06, as Flagger stored it.
    stored = {"spec": {"weighted": {"services": [
        entry("podinfo-primary", None), entry("podinfo-canary", 100)]}}}
    assert read_weights(stored, make_canary()) == Weights.all_canary()
    assert kept_weights(stored, make_canary()) == Weights.all_canary()


def test_the_canary_gets_what_the_primary_does_not_as_in_flagger() -> None:
    stored = {"spec": {"weighted": {"services": [entry("podinfo-primary", 70, ns="other")]}}}
    assert read_weights(stored, make_canary()) == Weights(primary=70, canary=30)


@pytest.mark.parametrize(("stored", "message"), [
    ({}, "services not found"),
    ({"spec": {"weighted": {"services": []}}}, "services not found"),
    ({"spec": {"mirroring": {"name": "x"}}}, "services not found"),
    ({"spec": {"weighted": {"services": [entry("podinfo-canary", 100)]}}},
     "does not contain a service for podinfo-primary"),
    ({"spec": {"weighted": {"services": [entry("podinfo-primary", 150)]}}},
     "not a percentage"),
])
def test_a_service_without_a_primary_split_is_refused_and_a_reconcile_starts_over(
        stored: dict[str, Any], message: str) -> None:
    canary = make_canary()
    with pytest.raises(RouterError, match=f"TraefikService podinfo.test.*{message}"):
        read_weights(stored, canary)
    assert kept_weights(stored, canary) == Weights.all_primary()
    assert kept_weights(None, canary) == Weights.all_primary()


def test_a_canary_without_a_service_is_a_spec_error() -> None:
    canary = make_canary()
    canary.spec.service = None
    with pytest.raises(TerminalError, match=r"spec\.service"):
        build_traefik_service(canary, Weights.all_primary(), None)


def test_the_router_is_registered_declares_weights_only_and_refuses_a_variant() -> None:
    assert TRAEFIK_SERVICES.namespaced
    assert TRAEFIK_SERVICES.path(namespace="test", name="podinfo") == (
        "/apis/traefik.io/v1alpha1/namespaces/test/traefikservices/podinfo")
    ctx = ProviderContext(store=kube.ObjectStore(None), settings=Settings(),  # no I/O here
                          log=structlog.get_logger("test"))
    plugin = plugins.routers.get("traefik")
    router = plugin.factory(ctx=ctx, variant=plugin.variant)
    assert isinstance(router, TraefikRouter)
    assert isinstance(router, Router)
    caps = capabilities_of(router)
    assert (caps.ab_matches, caps.mirroring, caps.session_affinity) == (False, False, False)
    assert caps.needs_services
    with pytest.raises(PluginError, match="traefik:v2"):
        traefik.TraefikRouter(ctx=ctx, variant="v2")


# -- the traffic simulator's Traefik: routing and metrics ---------------------------------------


def _ts(services: list[dict[str, Any]], *, name: str = "podinfo") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "test"},
            "spec": {"weighted": {"services": services}}}


def _hosts(obj: dict[str, Any], n: int = 2000, **lookups: dict[str, Any]) -> dict[str, int]:
    rng = random.Random(7)
    counts: dict[str, int] = {}
    for _ in range(n):
        chosen = weighted_round_robin(obj, rng, lookup=lambda key: lookups.get(key.name))
        host = chosen.host if chosen is not None else "503"
        counts[host] = counts.get(host, 0) + 1
    return counts


def test_the_simulated_round_robin_splits_by_weight_as_written() -> None:
    canary = make_canary()
    counts = _hosts(build_traefik_service(canary, Weights.to_canary(30), None))
    share = counts["podinfo-canary.test.svc.cluster.local"] / 2000
    assert 0.25 < share < 0.35, counts
    assert set(_hosts(build_traefik_service(canary, Weights.all_canary(), None))) == {
        "podinfo-canary.test.svc.cluster.local"}  # weight: 0 gets nothing


def test_a_missing_weight_is_traefiks_1_so_flaggers_all_to_the_canary_leaks() -> None:
    # traefik/bluegreen step 06 as Flagger wrote it: the primary gets 1 request in 101.
    counts = _hosts(_ts([entry("podinfo-primary", None), entry("podinfo-canary", 100)]),
                    n=20000)
    assert 100 < counts["podinfo-primary.test.svc.cluster.local"] < 300, counts


def test_nested_traefik_services_are_followed_and_an_empty_one_is_a_503() -> None:
    inner = _ts([entry("podinfo-canary", 1)], name="inner")
    outer = _ts([{"name": "inner", "kind": "TraefikService", "weight": 1}])
    assert _hosts(outer, inner=inner) == {"podinfo-canary.test.svc.cluster.local": 2000}
    assert _hosts(outer) == {"503": 2000}
    assert _hosts(_ts([entry("podinfo-primary", 0)])) == {"503": 2000}


def test_the_source_serves_the_apex_host_of_its_name() -> None:
    obj = _ts([entry("podinfo-primary", 100)])
    source = TraefikSource()
    assert source.claims(obj, "podinfo", namespace="test", namespaces={"test"})
    assert source.claims(obj, "podinfo.test.svc.cluster.local", namespace="other",
                         namespaces={"test", "other"})
    assert not source.claims(obj, "podinfo-canary", namespace="test", namespaces={"test"})
    assert source.stream_host(obj) == "podinfo.test"


def test_the_simulated_metrics_are_what_the_traefik_observer_selects() -> None:
    source = Peer("traffic-simulator", "simulator", {"app": "traffic-simulator"})
    registry = CollectorRegistry()
    adapter = MESHES["traefik"].adapter(registry)
    for workload, service, code in (("podinfo", "podinfo-canary", 200),
                                    ("podinfo", "podinfo-canary", 500),
                                    ("podinfo-primary", "podinfo-primary", 500)):
        adapter.observe(Exchange(source, "podinfo.test", ServiceKey("test", service),
                                 Peer(workload, "test", {"app": workload}), code, 20.0,
                                 service_port=9898))
    text = generate_latest(registry).decode()
    series = [(s.name, dict(s.labels), s.value)
              for family in text_string_to_metric_families(text) for s in family.samples]
    canary_label = "test-podinfo-canary-9898@kubernetescrd"
    assert {labels["service"] for name, labels, _ in series
            if name == "traefik_service_requests_total"} == {
        canary_label, "test-podinfo-primary-9898@kubernetescrd"}

    model = MetricTemplateModel(name="podinfo", namespace="test", target="podinfo",
                                service="podinfo", ingress="podinfo", route="podinfo",
                                interval="1m")
    query = render(traefik.TraefikObserver.success_rate_query, model)
    selector = query.split("{", 1)[1].split("}", 1)[0]
    regex = selector.split('service=~"', 1)[1].split('"', 1)[0]
    buckets = [(labels, value) for name, labels, value in series
               if name == "traefik_service_request_duration_seconds_bucket"
               and labels["le"] == "+Inf" and re.fullmatch(regex, labels["service"])]
    assert {labels["service"] for labels, _ in buckets} == {canary_label}
    good = sum(v for labels, v in buckets if not labels["code"].startswith("5"))
    assert good / sum(v for _, v in buckets) == 0.5
