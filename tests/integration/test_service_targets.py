"""A Canary of a plain Kubernetes Service (``targetRef: {apiVersion: v1, kind: Service}``).

Flagger's ServiceController: the target Service is copied into ``<target>-canary`` and
``<target>-primary``, the mesh router splits traffic between the two, and a change of the
target's spec is a new revision that, once analysed, is copied onto the primary. Here the
whole run goes through the real ``flaggerpy controller`` process on the local control plane,
with Istio's router on the real VirtualService CRD and a metric from a real Prometheus; the
objects are checked at each phase.

A router that cannot route such a target (it declares so in ``Capabilities.target_kinds``)
fails the Canary with a readable message and a Warning Event, through the real reconciler.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest

from e2e.cluster import audit
from e2e.scenario import Scenario, canary
from flaggerpy import kube, plugins
from flaggerpy.canary import targets
from flaggerpy.canary.reconciler import CanaryReconciler
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.models import Canary
from flaggerpy.routing import Capabilities, TargetKind, Weights
from flaggerpy.runtime.events import EventRecorder
from flaggerpy.settings import Settings
from flaggerpy.telemetry import Recorder

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("flagger_crds")]

VIRTUAL_SERVICE = "virtualservices.networking.istio.io"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"




def target_service(name: str, *, version: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name,
                     "labels": {"app": name, "team": "web"},
                     "annotations": {"app.example.com/owner": "team-web",
                                     "other.example.com/note": "kept off the primary"}},
        "spec": {"type": "ClusterIP",
                 "selector": {"app": name, "version": version},
                 "ports": [{"name": "http", "port": 9898, "targetPort": 9898}]},
    }


def service_canary(name: str, *, provider: str = "istio") -> dict[str, Any]:
    body = canary(name, kind="Service", provider=provider, analysis={
        "interval": "2s",
        "threshold": 2,
        "stepWeight": 50,
        "maxWeight": 50,
        "metrics": [{"name": "app-success-rate", "templateRef": {"name": "app-success-rate"},
                     "thresholdRange": {"min": 90}, "interval": "30s"}],
    })
    body["spec"]["targetRef"]["apiVersion"] = "v1"
    return body


def routes(vs: dict[str, Any] | None) -> dict[str, int]:
    assert vs is not None, "no VirtualService"
    return {r["destination"]["host"]: r.get("weight", 0) for r in vs["spec"]["http"][0]["route"]}


def controlled_by(obj: dict[str, Any], canary_obj: dict[str, Any]) -> bool:
    return [(r["kind"], r["name"], r["uid"], r.get("controller"))
            for r in obj["metadata"].get("ownerReferences") or ()] == [
        ("Canary", canary_obj["metadata"]["name"], canary_obj["metadata"]["uid"], True)]


async def get(scenario: Scenario, kind: str, name: str) -> dict[str, Any]:
    obj = await scenario.get(kind, name)
    assert obj is not None, f"{kind}/{name} does not exist"
    return obj


async def test_a_service_target_is_copied_analysed_and_promoted(scenario: Scenario) -> None:
    ns = scenario.namespace
    await scenario.start_controller("-include-label-prefix=app")
    await scenario.set_success_rate("podinfo", 99)
    await scenario.apply(target_service("podinfo", version="v1"), service_canary("podinfo"))
    await scenario.wait_phase("podinfo", "Initialized", within=60)

    # Initialized: both copies, owned by the Canary, the target left as the user wrote it.
    canary_obj = await get(scenario, "canary", "podinfo")
    target = await get(scenario, "service", "podinfo")
    assert target["spec"]["selector"] == {"app": "podinfo", "version": "v1"}
    assert set(target["metadata"]["annotations"]) == {
        LAST_APPLIED, "app.example.com/owner", "other.example.com/note"}  # nothing of ours
    assert not target["metadata"].get("ownerReferences")
    for name in ("podinfo-canary", "podinfo-primary"):
        copy = await get(scenario, "service", name)
        assert controlled_by(copy, canary_obj), copy["metadata"]
        assert copy["spec"]["selector"] == {"app": "podinfo", "version": "v1"}
        assert copy["spec"]["ports"] == target["spec"]["ports"]
        assert copy["spec"]["clusterIP"] not in ("", target["spec"]["clusterIP"])
        assert copy["metadata"]["labels"] == {"app": "podinfo", "team": "web"}
        assert copy["metadata"]["annotations"] == {
            "app.example.com/owner": "team-web", "other.example.com/note": "kept off the primary"}
    primary_ip = (await get(scenario, "service", "podinfo-primary"))["spec"]["clusterIP"]
    assert routes(await scenario.get(VIRTUAL_SERVICE, "podinfo")) == {
        "podinfo-primary": 100, "podinfo-canary": 0}
    status = await scenario.status("podinfo")
    assert status["lastAppliedSpec"] == status["lastPromotedSpec"]
    assert status["conditions"][0]["message"] == "Service initialization completed."

    # A new revision: the target's spec changes. The canary copy follows at once, the primary
    # stays until promotion.
    run_started = datetime.now(UTC)
    await scenario.kubectl("patch", "service/podinfo", "--type=merge",
                           "-p", json.dumps({"spec": {"selector": {"version": "v2"}}}))
    seen: list[str] = []
    await scenario.wait_phase("podinfo", "Progressing", within=20, seen=seen)
    assert (await get(scenario, "service", "podinfo-canary"))["spec"]["selector"] == {
        "app": "podinfo", "version": "v2"}
    assert (await get(scenario, "service", "podinfo-primary"))["spec"]["selector"] == {
        "app": "podinfo", "version": "v1"}

    status = await scenario.wait_phase("podinfo", ("Succeeded", "Failed"), within=90, seen=seen)
    assert status["phase"] == "Succeeded", status
    run_ended = datetime.now(UTC)
    assert seen[-4:] == ["Progressing", "Promoting", "Finalising", "Succeeded"], seen

    # Succeeded: the primary carries the new spec and the prefixed metadata, keeps its IP.
    primary = await get(scenario, "service", "podinfo-primary")
    assert primary["spec"]["selector"] == {"app": "podinfo", "version": "v2"}
    assert primary["spec"]["clusterIP"] == primary_ip
    assert primary["metadata"]["labels"] == {"app": "podinfo"}
    assert primary["metadata"]["annotations"] == {"app.example.com/owner": "team-web"}
    assert controlled_by(primary, canary_obj), primary["metadata"]
    assert routes(await scenario.get(VIRTUAL_SERVICE, "podinfo")) == {
        "podinfo-primary": 100, "podinfo-canary": 0}
    assert status["lastPromotedSpec"] == status["lastAppliedSpec"]
    target = await get(scenario, "service", "podinfo")
    assert target["spec"]["selector"] == {"app": "podinfo", "version": "v2"}
    messages = [e["message"] for e in await scenario.events("podinfo")]
    assert f"Advance podinfo.{ns} canary weight 50" in messages, messages
    assert f"Initialization done! podinfo.{ns}" in messages
    assert not [e for e in await scenario.events("podinfo") if e["type"] == "Warning"]

    # Steady: the ticks after the run read nothing from the API server and write nothing (a
    # copy the API server stored differently from how it was built would be rewritten here).
    since = datetime.now(UTC)
    await asyncio.sleep(5)  # two analysis intervals
    until = datetime.now(UTC)
    await asyncio.sleep(1)  # let the audit log catch up
    counts = audit.count_requests(scenario.cluster.audit_log, user_agent="flaggerpy/",
                                  since=since, until=until, namespace=ns)
    assert (counts.reads, counts.writes) == (0, 0), counts.by_resource
    during_run = audit.count_requests(scenario.cluster.audit_log, user_agent="flaggerpy/",
                                      since=run_started, until=run_ended, namespace=ns)
    # the same count over the run sees the copies written: the window above was not blind
    assert during_run.by_resource["update services"] >= 2, during_run.by_resource


async def test_a_nodeport_target_is_copied_and_promoted_on_the_api_server(
        counted_client: kube.KubeClient, namespace: str) -> None:
    """The copies get node ports of their own (copying the target's is refused as already
    allocated), keep them through updates and promotion, and a repeated call writes nothing."""
    client = counted_client
    target = target_service("podinfo", version="v1")
    target["metadata"]["namespace"] = namespace
    target["spec"]["type"] = "NodePort"
    target = await client.create(kube.SERVICES, target)
    created = await client.create(kube.CANARIES, {**service_canary("podinfo"), "metadata": {
        "name": "podinfo", "namespace": namespace}})
    subject = Canary.model_validate(created)
    settings = Settings(controller={"include_label_prefix": ["app"]})
    controller = targets.workload_controller(subject, store=kube.ObjectStore(client),
                                             settings=settings)

    await controller.initialize(subject, wait_primary_ready=True)
    copies = {name: await client.get(kube.SERVICES, name, namespace=namespace)
              for name in ("podinfo-canary", "podinfo-primary")}
    target_port = target["spec"]["ports"][0]["nodePort"]
    node_ports = {name: c["spec"]["ports"][0]["nodePort"] for name, c in copies.items()}
    assert target_port not in node_ports.values()
    assert len(set(node_ports.values())) == 2, node_ports
    for copy in copies.values():
        assert copy["spec"]["type"] == "NodePort"
        assert copy["spec"]["clusterIP"] != target["spec"]["clusterIP"]

    versions = {n: c["metadata"]["resourceVersion"] for n, c in copies.items()}
    await controller.initialize(subject, wait_primary_ready=False)
    for name, version in versions.items():  # up to date: nothing written
        stored = await client.get(kube.SERVICES, name, namespace=namespace)
        assert stored["metadata"]["resourceVersion"] == version, name

    target["spec"]["selector"] = {"app": "podinfo", "version": "v2"}
    await client.replace(kube.SERVICES, target, namespace=namespace)
    await controller.initialize(subject, wait_primary_ready=False)
    await controller.promote(subject)
    for name in ("podinfo-canary", "podinfo-primary"):
        stored = await client.get(kube.SERVICES, name, namespace=namespace)
        assert stored["spec"]["selector"] == {"app": "podinfo", "version": "v2"}, name
        assert stored["spec"]["ports"][0]["nodePort"] == node_ports[name], name
    primary = await client.get(kube.SERVICES, "podinfo-primary", namespace=namespace)
    assert primary["metadata"]["labels"] == {"app": "podinfo"}
    assert primary["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]


class KnativeOnlyRouter:
    """A router that routes Knative Services only, as Knative's does."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        target_kinds=frozenset({TargetKind("Service", group="serving.knative.dev")}))

    def __init__(self, *, ctx: Any, variant: str = "") -> None:
        pass

    async def reconcile(self, canary: Canary) -> None:
        raise AssertionError("a refused canary is never routed")

    async def set_routes(self, canary: Canary, weights: Weights) -> None:
        raise AssertionError("a refused canary is never routed")

    async def get_routes(self, canary: Canary) -> Weights:
        raise AssertionError("a refused canary is never routed")

    async def finalize(self, canary: Canary) -> None:
        """Nothing to revert."""


PROVIDER = "revisions-only"


@pytest.fixture
def knative_only_router() -> Iterator[str]:
    plugins.routers.register(PROVIDER, KnativeOnlyRouter)
    try:
        yield PROVIDER
    finally:
        plugins.routers.unregister(PROVIDER)


async def test_a_router_that_cannot_route_a_service_target_fails_the_canary_readably(
        counted_client: kube.KubeClient, namespace: str, knative_only_router: str,
) -> None:
    client = counted_client
    await client.create(kube.SERVICES, {**target_service("podinfo", version="v1"),
                                        "metadata": {"name": "podinfo", "namespace": namespace}})
    body = service_canary("podinfo", provider=knative_only_router)
    body["metadata"]["namespace"] = namespace
    await client.create(kube.CANARIES, body)
    reconciler = CanaryReconciler(
        store=kube.ObjectStore(client), events=EventRecorder(client), settings=Settings(),
        telemetry=Recorder(process_collectors=False))

    await reconciler.reconcile(ObjectKey(namespace, "podinfo"))

    stored = await client.get(kube.CANARIES, "podinfo", namespace=namespace)
    status = stored["status"]
    message = (f"invalid canary spec: provider {knative_only_router!r} does not route a v1 "
               "Service target (spec.targetRef); it routes Service (serving.knative.dev)")
    assert status["phase"] == "Failed"
    assert status["conditions"][0]["message"] == message
    events = await client.list(kube.EVENTS, namespace=namespace)
    warnings = [(e["type"], e["message"]) for e in events.items
                if e["involvedObject"]["name"] == "podinfo"]
    assert warnings == [("Warning", message)]
    for name in ("podinfo-canary", "podinfo-primary"):  # nothing made for a refused canary
        assert await kube.ignore_not_found(
            client.get(kube.SERVICES, name, namespace=namespace)) is None
