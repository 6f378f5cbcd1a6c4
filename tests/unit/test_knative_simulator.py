"""The simulated Knative data plane: routing by ``status.traffic``, and the Envoy series the
knative observer selects; the stand-in's Revisions workloads and status, from pure functions.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from prometheus_client import CollectorRegistry

from e2e.knative_standin import pruned, resolved_traffic, revision_workload, service_status
from e2e.simulator.metrics import Exchange, Peer
from e2e.simulator.routing import Request, ServiceKey
from e2e.simulator.routing_knative import KnativeAdapter, KnativeSource, route_traffic
from flaggerpy.analysis import MetricTemplateModel
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.providers.knative import KnativeObserver
from flaggerpy.templating import render
from tests.unit.test_simulator_mesh_metrics import samples, selected

SOURCE = Peer("traffic-simulator", "simulator", {"app": "traffic-simulator"})
MODEL = MetricTemplateModel(name="podinfo", namespace="test", target="podinfo",
                            service="podinfo", ingress="podinfo", route="podinfo-00002",
                            interval="1m")


def knative_service(traffic: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "status": {"traffic": traffic}}


def test_requests_follow_the_resolved_percentages() -> None:
    service = knative_service([
        {"latestRevision": True, "percent": 30, "revisionName": "podinfo-00002"},
        {"latestRevision": False, "percent": 70, "revisionName": "podinfo-00001"},
    ])
    rng = random.Random(7)
    source = KnativeSource()
    request = Request(host="podinfo.test")
    hosts = Counter(
        decision.destination.host
        for decision in (source.route(service, request, rng, lookup=lambda _: None)
                         for _ in range(4000))
        if decision is not None and decision.destination is not None)
    assert set(hosts) == {"podinfo-00001", "podinfo-00002"}
    assert abs(hosts["podinfo-00002"] / 4000 - 0.3) < 0.03


def test_a_revision_at_zero_gets_nothing_and_no_traffic_routes_nowhere() -> None:
    only_primary = [{"latestRevision": True, "percent": 0, "revisionName": "podinfo-00002"},
                    {"latestRevision": False, "percent": 100, "revisionName": "podinfo-00001"}]
    rng = random.Random(1)
    for _ in range(200):
        decision = route_traffic({"traffic": only_primary}, rng)
        assert decision.destination is not None
        assert decision.destination.host == "podinfo-00001"
    assert route_traffic({}, rng).destination is None


def test_the_service_claims_its_own_host_and_streams_to_it() -> None:
    source, service = KnativeSource(), knative_service([])
    assert source.claims(service, "podinfo.test", namespace="other", namespaces=["test"])
    assert source.claims(service, "podinfo", namespace="test", namespaces=["test"])
    assert not source.claims(service, "podinfo-00001", namespace="test", namespaces=["test"])
    assert source.stream_host(service) == "podinfo.test"


def test_the_observer_reads_the_canary_revisions_requests_only() -> None:
    registry = CollectorRegistry()
    adapter = KnativeAdapter(registry)
    routed = ObjectKey("test", "podinfo")

    def exchange(revision: str, code: int) -> Exchange:
        return Exchange(SOURCE, "podinfo.test", ServiceKey("test", revision),
                        Peer(f"{revision}-deployment", "test"), code, 20.0, routed_by=routed)

    for item in (exchange("podinfo-00002", 200), exchange("podinfo-00002", 500),
                 *(exchange("podinfo-00001", 500) for _ in range(3)),
                 Exchange(SOURCE, "podinfo.test", ServiceKey("test", "podinfo"), None, 503,
                          0.0, routed_by=routed)):
        adapter.observe(item)
    series = samples(registry)
    observer = KnativeObserver(client=None, render=render)  # type: ignore[arg-type]
    numerator, denominator = selected(observer.render_success_rate(MODEL), series)
    assert sum(v for _, _, v in numerator) == 1
    assert sum(v for _, _, v in denominator) == 2
    [buckets] = selected(observer.render_duration(MODEL), series)
    assert sum(v for _, labels, v in buckets if labels.get("le") == "+Inf") == 2


def test_the_standin_resolves_traffic_and_reports_the_newest_revision() -> None:
    assert resolved_traffic(None, "podinfo-00002") == [
        {"latestRevision": True, "percent": 100, "revisionName": "podinfo-00002"}]
    spec = [{"latestRevision": True, "percent": 20},
            {"revisionName": "podinfo-00001", "percent": 80}]
    status = service_status({"metadata": {"generation": 3}, "spec": {"traffic": spec}},
                            "podinfo-00002")
    assert status["observedGeneration"] == 3
    assert status["latestCreatedRevisionName"] == status["latestReadyRevisionName"]
    assert status["traffic"] == [
        {"latestRevision": True, "percent": 20, "revisionName": "podinfo-00002"},
        {"latestRevision": False, "percent": 80, "revisionName": "podinfo-00001"}]


def test_the_go_zero_values_do_not_make_a_new_template() -> None:
    plain = {"spec": {"containers": [{"image": "podinfo:6.0.0"}]}}
    typed = {"metadata": {}, "spec": {"containers": [
        {"image": "podinfo:6.0.0", "name": "", "resources": {}}]}}
    assert pruned(plain) == pruned(typed)
    assert pruned(plain) != pruned({"spec": {"containers": [{"image": "podinfo:6.0.1"}]}})


def test_a_revision_runs_as_a_deployment_behind_a_service_of_its_name() -> None:
    spec = {"containers": [{"image": "podinfo:6.0.1", "ports": [{"containerPort": 9898}],
                            "env": [{"name": "FAULT_RATE", "value": "0.4"}]}]}
    deployment, service = revision_workload("test", "podinfo", "podinfo-00002", spec)
    assert deployment["metadata"]["name"] == "podinfo-00002-deployment"
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "user-container"
    assert container["env"] == spec["containers"][0]["env"]
    assert service["metadata"]["name"] == "podinfo-00002"
    assert service["spec"]["selector"] == {"serving.knative.dev/revision": "podinfo-00002"}
    assert deployment["spec"]["template"]["metadata"]["labels"][
        "serving.knative.dev/revision"] == "podinfo-00002"
    assert service["spec"]["ports"][0]["targetPort"] == 9898
