"""The controller's watch handlers: what an informer event costs while nothing changes."""

from __future__ import annotations

from typing import Any

from flaggerpy import app
from flaggerpy.app import CanaryTotals, is_resync, template_changed
from flaggerpy.kube import ObjectKey
from flaggerpy.telemetry import Recorder


def canary(namespace: str, name: str, version: str = "1") -> dict[str, Any]:
    return {"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"namespace": namespace, "name": name, "resourceVersion": version}}


def total(recorder: Recorder, namespace: str) -> float | None:
    return recorder.registry.get_sample_value("flagger_canary_total", {"namespace": namespace})


def test_a_resync_is_the_same_object_delivered_again() -> None:
    obj = canary("test", "podinfo", "7")
    assert is_resync(obj, obj)
    assert is_resync(obj, canary("test", "podinfo", "7"))  # a relist's copy of the same version


def test_a_new_resource_version_is_not_a_resync() -> None:
    assert not is_resync(canary("test", "podinfo", "7"), canary("test", "podinfo", "8"))
    unversioned = {"metadata": {"name": "podinfo"}}
    assert not is_resync(unversioned, {"metadata": {"name": "podinfo"}})


def test_totals_follow_adds_and_deletes_per_namespace() -> None:
    recorder = Recorder(process_collectors=False)
    totals = CanaryTotals(recorder)
    for name in ("a", "b", "c"):
        totals.added(canary("test", name))
    totals.added(canary("other", "a"))
    assert total(recorder, "test") == 3
    assert total(recorder, "other") == 1
    totals.deleted(canary("test", "b"))
    totals.deleted(canary("other", "a"))
    assert total(recorder, "test") == 2
    assert total(recorder, "other") == 0  # its last canary gone: 0, not a stale 1


def test_only_a_new_pod_template_is_a_new_revision() -> None:
    old = {"spec": {"replicas": 1, "template": {"spec": {"containers": [{"image": "a:1"}]}}},
           "status": {"readyReplicas": 0}}
    scaled = {**old, "spec": {**old["spec"], "replicas": 0}}
    progressed = {**old, "status": {"readyReplicas": 1}}
    revised = {**old, "spec": {**old["spec"], "template": {
        "spec": {"containers": [{"image": "a:2"}]}}}}
    assert not template_changed(old, scaled)
    assert not template_changed(old, progressed)
    assert template_changed(old, revised)


def test_a_canary_is_found_by_every_object_it_names_and_owns() -> None:
    knative = {"metadata": {"namespace": "web", "name": "podinfo"},
               "spec": {"targetRef": {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                                      "name": "podinfo"},
                        "autoscalerRef": {"kind": "HorizontalPodAutoscaler", "name": "hpa"},
                        "upstreamRef": {"kind": "Upstream", "name": "up", "namespace": "gloo"},
                        "ingressRef": {"kind": "Ingress"}}}  # no name: nothing to find
    assert list(app.references_of(knative)) == [
        "web/Service/podinfo", "web/HorizontalPodAutoscaler/hpa", "gloo/Upstream/up"]
    hpa = {"metadata": {"namespace": "web", "name": "hpa"}}
    assert app.reference_index_value("HorizontalPodAutoscaler", hpa) == \
        "web/HorizontalPodAutoscaler/hpa"

    def owned(api_version: str, kind: str, *, namespace: str = "web") -> dict[str, Any]:
        return {"metadata": {"namespace": namespace, "name": "podinfo-primary",
                             "ownerReferences": [{"apiVersion": api_version, "kind": kind,
                                                  "name": "podinfo", "controller": True}]}}

    assert app.owning_canary(owned("flagger.app/v1beta1", "Canary")) == ObjectKey("web",
                                                                                "podinfo")
    assert app.owning_canary(owned("argoproj.io/v1alpha1", "Canary")) is None
    assert app.owning_canary(owned("apps/v1", "ReplicaSet")) is None
    assert app.owning_canary(owned("flagger.app/v1beta1", "Canary", namespace="")) is None
