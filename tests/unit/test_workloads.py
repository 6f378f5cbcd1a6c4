"""Target controllers, pure half: primary builders, promotion, readiness, hashes, metadata."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flaggerpy import kube
from flaggerpy.canary import (
    autoscalers,
    configs,
    daemonsets,
    deployments,
    hashing,
    service_targets,
    targets,
    workloads,
)
from flaggerpy.models import Canary, CanaryStatus, ScalerReplicas
from flaggerpy.routing import canary_owner
from flaggerpy.settings import Settings

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
SELECTOR_LABELS = ("app", "name", "app.kubernetes.io/name")
OWNER = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo",
         "uid": "0c8a1d7e", "controller": True, "blockOwnerDeletion": True}


def make_canary(**spec: Any) -> Canary:
    body: dict[str, Any] = {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test", "uid": "0c8a1d7e"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {"interval": "10s", "threshold": 2, "stepWeight": 10},
            **spec,
        },
    }
    return Canary.model_validate(body)


def make_deployment(**overrides: Any) -> dict[str, Any]:
    """A target like Flagger's test fixture, as the API server returns it."""
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "podinfo", "namespace": "test", "generation": 1, "uid": "d1",
            "resourceVersion": "100",
            "labels": {"app": "podinfo", "app.kubernetes.io/managed-by": "test-label-prefix",
                       "kustomize.toolkit.fluxcd.io/name": "apps", "team": "a"},
            "annotations": {"app.kubernetes.io/instance": "test-annotation-prefix",
                            "kustomize.toolkit.fluxcd.io/checksum": "x",
                            "deployment.kubernetes.io/revision": "3"},
        },
        "spec": {
            "replicas": 3,
            "progressDeadlineSeconds": 60,
            "revisionHistoryLimit": 10,
            "minReadySeconds": 5,
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "selector": {"matchLabels": {"app": "podinfo"}},
            "template": {
                "metadata": {
                    "labels": {"app": "podinfo", "version": "v1",
                               "helm.toolkit.fluxcd.io/name": "x"},
                    "annotations": {"prometheus.io/scrape": "true",
                                    "flagger-id": "left-over",
                                    "kustomize.toolkit.fluxcd.io/reconcile": "disabled"},
                },
                "spec": {
                    "containers": [{
                        "name": "podinfod",
                        "image": "ghcr.io/stefanprodan/podinfo:6.0.0",
                        "ports": [{"name": "http", "containerPort": 9898, "protocol": "TCP"},
                                  {"name": "http-metrics", "containerPort": 9797,
                                   "protocol": "TCP"},
                                  {"containerPort": 9999, "protocol": "TCP"}],
                        "envFrom": [{"configMapRef": {"name": "podinfo-config"}}],
                        "env": [{"name": "KEY", "valueFrom": {"secretKeyRef": {
                            "name": "podinfo-secret", "key": "k"}}}],
                    }, {
                        "name": "istio-proxy", "image": "istio/proxyv2",
                        "ports": [{"name": "http-envoy-prom", "containerPort": 15090}],
                    }],
                    "volumes": [{"name": "cfg", "configMap": {"name": "podinfo-config"}},
                                {"name": "shared", "configMap": {"name": "shared-config"}}],
                    "affinity": {"podAntiAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": [{
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchExpressions": [
                                {"key": "app", "operator": "In",
                                 "values": ["other", "podinfo", "podinfo"]},
                                {"key": "tier", "operator": "In", "values": ["podinfo"]},
                            ]},
                        }],
                        "preferredDuringSchedulingIgnoredDuringExecution": [{
                            "weight": 100,
                            "podAffinityTerm": {
                                "topologyKey": "topology.kubernetes.io/zone",
                                "labelSelector": {"matchLabels": {"app": "podinfo"}},
                            },
                        }],
                    }},
                    "topologySpreadConstraints": [{
                        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "DoNotSchedule",
                        "labelSelector": {"matchLabels": {"app": "podinfo", "tier": "podinfo"}},
                    }],
                    "restartPolicy": "Always",
                    "dnsPolicy": "ClusterFirst",
                },
            },
        },
        "status": {},
    }
    deployment.update(overrides)
    return deployment


TRACKED = {"configmap/podinfo-config": "241889ca0604e333",
           "secret/podinfo-secret": "0123456789abcdef"}


def primary_template(target: dict[str, Any], *, tracked: dict[str, str] | None = None,
                     label: str = "app", value: str = "podinfo") -> dict[str, Any]:
    """What the controller builds, composed from the pure steps it takes."""
    tracked = TRACKED if tracked is None else tracked
    spec = configs.rename_tracked(workloads.pod_spec(target), tracked)
    workloads.suffix_self_selectors(
        spec, keys=SELECTOR_LABELS, values={target["metadata"]["name"], value})
    return workloads.primary_pod_template(target, spec=spec, label=label, value=value,
                                          checksums=tracked)


# --- metadata helpers ---------------------------------------------------------------------------


def test_selector_label_is_the_first_candidate_present() -> None:
    target = make_deployment()
    target["spec"]["selector"]["matchLabels"] = {"name": "n", "app.kubernetes.io/name": "k"}
    assert workloads.selector_label(target, SELECTOR_LABELS) == ("name", "n")
    assert workloads.selector_label(target, ("app",)) is None


@pytest.mark.parametrize(("prefixes", "expected"), [
    pytest.param((), {}, id="nothing-by-default"),
    pytest.param(("app.kubernetes.io",), {"app.kubernetes.io/managed-by": "test-label-prefix"},
                 id="prefix"),
    pytest.param(("*",), {"app": "podinfo", "app.kubernetes.io/managed-by": "test-label-prefix",
                          "team": "a"}, id="star-but-not-flux"),
    pytest.param(("",), {}, id="blank-prefix-copies-nothing"),
])
def test_include_by_prefix(prefixes: tuple[str, ...], expected: dict[str, str]) -> None:
    labels = make_deployment()["metadata"]["labels"]
    assert workloads.include_by_prefix(labels, prefixes) == expected


def test_primary_labels_replace_the_selector_value_and_drop_flux_keys() -> None:
    assert workloads.primary_labels(
        {"app": "podinfo", "x": "y", "helm.toolkit.fluxcd.io/name": "z"},
        label="app", value="podinfo-primary") == {"app": "podinfo-primary", "x": "y"}


def test_discover_ports_skips_the_service_port_and_sidecars() -> None:
    containers = workloads.pod_spec(make_deployment())["containers"]
    canary = make_canary(service={"port": 9898, "portDiscovery": True})
    assert workloads.discover_ports(canary.spec.service, containers) == {
        "http-metrics": 9797, "tcp-podinfod-2": 9999}
    by_number = make_canary(service={"port": 80, "targetPort": 9797, "portDiscovery": True})
    assert workloads.discover_ports(by_number.spec.service, containers) == {
        "http": 9898, "tcp-podinfod-2": 9999}
    by_name = make_canary(service={"port": 80, "targetPort": "http", "portDiscovery": True})
    assert workloads.discover_ports(by_name.spec.service, containers) == {
        "http-metrics": 9797, "tcp-podinfod-2": 9999}
    assert workloads.discover_ports(make_canary().spec.service, containers) == {}


def test_the_owner_reference_is_flaggers_and_needs_the_canary_uid() -> None:
    """What the engine stamps on generated objects: Flagger's ``NewControllerRef`` exactly."""
    assert kube.controller_reference(canary_owner(make_canary())) == OWNER
    canary = make_canary()
    assert canary.metadata is not None
    canary.metadata.uid = None
    with pytest.raises(ValueError, match=r"no metadata\.uid"):
        kube.controller_reference(canary_owner(canary))


# --- the primary Deployment ---------------------------------------------------------------------


def test_primary_deployment_is_built_as_flagger_builds_it() -> None:
    target = make_deployment()
    template = primary_template(target)
    body = deployments.build_primary_deployment(
        target, label="app", value="podinfo", template=template, owner=OWNER,
        include_label_prefix=("app.kubernetes.io",))
    assert body["metadata"] == {
        "name": "podinfo-primary",
        "namespace": "test",
        "labels": {"app": "podinfo-primary", "app.kubernetes.io/managed-by": "test-label-prefix"},
        "annotations": {"app.kubernetes.io/instance": "test-annotation-prefix",
                        "deployment.kubernetes.io/revision": "3"},
        "ownerReferences": [OWNER],
    }
    spec = body["spec"]
    assert spec["replicas"] == 3
    assert spec["selector"] == {"matchLabels": {"app": "podinfo-primary"}}
    for field in ("progressDeadlineSeconds", "minReadySeconds", "revisionHistoryLimit",
                  "strategy"):
        assert spec[field] == target["spec"][field]
    meta = spec["template"]["metadata"]
    assert meta["labels"] == {"app": "podinfo-primary", "version": "v1"}
    annotations = dict(meta["annotations"])
    flagger_id = annotations.pop("flagger-id")
    assert flagger_id != "left-over"
    assert len(flagger_id) == 36
    assert flagger_id[14] == "4", "a version-4 UUID layout"
    assert annotations == {"prometheus.io/scrape": "true"}


def test_primary_pod_spec_uses_primary_configs_and_primary_selectors() -> None:
    target = make_deployment()
    spec = primary_template(target)["spec"]
    container = spec["containers"][0]
    assert container["image"] == "ghcr.io/stefanprodan/podinfo:6.0.0"
    assert container["envFrom"] == [{"configMapRef": {"name": "podinfo-config-primary"}}]
    assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "podinfo-secret-primary"
    assert spec["volumes"] == [{"name": "cfg", "configMap": {"name": "podinfo-config-primary"}},
                               {"name": "shared", "configMap": {"name": "shared-config"}}]
    anti = spec["affinity"]["podAntiAffinity"]
    required = anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["labelSelector"]
    assert required["matchExpressions"] == [
        {"key": "app", "operator": "In", "values": ["other", "podinfo-primary", "podinfo"]},
        {"key": "tier", "operator": "In", "values": ["podinfo"]},
    ]
    preferred = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert preferred["labelSelector"] == {"matchLabels": {"app": "podinfo-primary"}}
    assert spec["topologySpreadConstraints"][0]["labelSelector"] == {
        "matchLabels": {"app": "podinfo-primary", "tier": "podinfo"}}
    assert workloads.pod_spec(target)["volumes"][0]["configMap"]["name"] == "podinfo-config"


def test_self_selectors_follow_the_label_value_when_it_differs_from_the_name() -> None:
    spec = {"topologySpreadConstraints": [
        {"labelSelector": {"matchLabels": {"app": "web"}}},
        {"labelSelector": {"matchLabels": {"app": "podinfo-v2"}}},
    ]}
    workloads.suffix_self_selectors(spec, keys=("app",), values={"podinfo-v2", "web"})
    values = [c["labelSelector"]["matchLabels"]["app"] for c in spec["topologySpreadConstraints"]]
    assert values == ["web-primary", "podinfo-v2-primary"]


@pytest.mark.parametrize(("replicas", "expected"), [
    pytest.param(3, 3, id="target-replicas"),
    pytest.param(0, 1, id="scaled-to-zero-target"),
    pytest.param(None, 1, id="unset"),
])
def test_primary_replicas(replicas: int | None, expected: int) -> None:
    target = make_deployment()
    target["spec"]["replicas"] = replicas
    body = deployments.build_primary_deployment(
        target, label="app", value="podinfo", template=primary_template(target), owner=OWNER,
        include_label_prefix=())
    assert body["spec"]["replicas"] == expected


def test_flagger_id_changes_with_the_content_only() -> None:
    def flagger_id(target: dict[str, Any], tracked: dict[str, str] | None = None) -> str:
        return str(primary_template(target, tracked=tracked)["metadata"]["annotations"][
            "flagger-id"])

    base = flagger_id(make_deployment())
    reordered = make_deployment()
    reordered["spec"]["template"]["metadata"]["labels"] = dict(
        reversed(list(reordered["spec"]["template"]["metadata"]["labels"].items())))
    assert flagger_id(reordered) == base
    new_image = make_deployment()
    workloads.pod_spec(new_image)["containers"][0]["image"] = "ghcr.io/stefanprodan/podinfo:6.0.1"
    assert flagger_id(new_image) != base
    changed_config = {**TRACKED, "configmap/podinfo-config": "ffffffffffffffff"}
    assert flagger_id(make_deployment(), changed_config) != base


def primary_from(target: dict[str, Any]) -> dict[str, Any]:
    """The primary as the server would hold it after creation (server fields added)."""
    body = deployments.build_primary_deployment(
        target, label="app", value="podinfo", template=primary_template(target), owner=OWNER,
        include_label_prefix=("app.kubernetes.io",))
    body["metadata"].update(uid="p1", resourceVersion="7", generation=1)
    body["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "1"
    body["spec"]["template"]["metadata"]["creationTimestamp"] = None
    body["status"] = {"observedGeneration": 1}
    return body


def promote(current: dict[str, Any], target: dict[str, Any], *,
            copy_replicas: bool = True) -> dict[str, Any]:
    return deployments.promoted_deployment(
        current, target, label="app", value="podinfo", template=primary_template(target),
        include_label_prefix=("app.kubernetes.io",), copy_replicas=copy_replicas)


def test_promotion_copies_the_new_template_and_spec() -> None:
    current = primary_from(make_deployment())
    target = make_deployment()
    spec = workloads.pod_spec(target)
    spec["containers"][0]["image"] = "ghcr.io/stefanprodan/podinfo:6.0.1"
    del spec["containers"][0]["env"]
    target["spec"]["replicas"] = 5
    target["spec"]["strategy"] = {"type": "Recreate"}
    del target["spec"]["minReadySeconds"]
    target["metadata"]["labels"]["app.kubernetes.io/version"] = "6.0.1"
    wanted = promote(current, target)
    container = wanted["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/stefanprodan/podinfo:6.0.1"
    assert "env" not in container, "the template is replaced, not merged"
    assert wanted["spec"]["replicas"] == 5
    assert wanted["spec"]["strategy"] == {"type": "Recreate"}
    assert "minReadySeconds" not in wanted["spec"]
    assert wanted["spec"]["selector"] == current["spec"]["selector"]
    assert wanted["metadata"]["labels"]["app.kubernetes.io/version"] == "6.0.1"
    assert wanted["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    assert wanted["metadata"]["resourceVersion"] == "7"
    assert wanted["spec"]["template"]["metadata"]["creationTimestamp"] is None
    assert (wanted["spec"]["template"]["metadata"]["annotations"]["flagger-id"]
            != current["spec"]["template"]["metadata"]["annotations"]["flagger-id"])
    assert wanted["status"] == current["status"]


def test_promotion_of_the_same_content_changes_nothing() -> None:
    target = make_deployment()
    current = primary_from(target)
    assert promote(current, target) == current
    once = promote(current, make_deployment(spec={**target["spec"], "replicas": 4}))
    assert promote(once, make_deployment(spec={**target["spec"], "replicas": 4})) == once


@pytest.mark.parametrize(("replicas", "copy_replicas", "expected"), [
    pytest.param(5, True, 5, id="copied"),
    pytest.param(5, False, 3, id="autoscaler-owns-replicas"),
    pytest.param(0, True, 3, id="never-zero"),
])
def test_promotion_replicas(replicas: int, copy_replicas: bool, expected: int) -> None:
    current = primary_from(make_deployment())
    target = make_deployment()
    target["spec"]["replicas"] = replicas
    assert promote(current, target, copy_replicas=copy_replicas)["spec"]["replicas"] == expected


# --- Deployment readiness -----------------------------------------------------------------------


def status_of(*, generation: int = 2, observed: int = 2, replicas: int = 3, spec_replicas: int = 3,
              updated: int = 3, available: int = 3, conditions: list[dict[str, Any]] | None = None,
              ) -> dict[str, Any]:
    return {
        "metadata": {"name": "podinfo", "generation": generation},
        "spec": {"replicas": spec_replicas},
        "status": {"observedGeneration": observed, "replicas": replicas,
                   "updatedReplicas": updated, "availableReplicas": available,
                   "conditions": conditions or [
                       {"type": "Progressing", "status": "True",
                        "reason": "NewReplicaSetAvailable"}]},
    }


def unavailable_since(seconds_ago: int) -> list[dict[str, Any]]:
    at = (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
             "lastUpdateTime": at}]


DEPLOYMENT_READINESS = [
    pytest.param(status_of(), 100, workloads.READY, id="ready"),
    pytest.param(status_of(generation=3), 100, workloads.not_ready(
        "waiting for rollout to finish: observed deployment generation less than desired"
        " generation"), id="generation-not-observed"),
    pytest.param(status_of(conditions=[{"type": "Progressing", "status": "False",
                                        "reason": "ProgressDeadlineExceeded"}]),
                 100, workloads.not_ready('deployment "podinfo" exceeded its progress deadline',
                                          retriable=False), id="progress-deadline-exceeded"),
    pytest.param(status_of(updated=1), 100, workloads.not_ready(
        "waiting for rollout to finish: 1 out of 3 new replicas have been updated"),
        id="updating"),
    pytest.param(status_of(replicas=5), 100, workloads.not_ready(
        "waiting for rollout to finish: 2 old replicas are pending termination"),
        id="old-pending"),
    pytest.param(status_of(available=2), 100, workloads.not_ready(
        "waiting for rollout to finish: 2 of 3 (readyThreshold 100%) updated replicas are"
        " available"), id="unavailable"),
    pytest.param(status_of(available=2), 50, workloads.READY, id="threshold-met"),
    pytest.param(status_of(updated=1, conditions=unavailable_since(120)), 100,
                 workloads.not_ready(
                     "waiting for rollout to finish: 1 out of 3 new replicas have been updated",
                     retriable=False), id="stuck-past-deadline"),
    pytest.param(status_of(updated=1, conditions=unavailable_since(30)), 100,
                 workloads.not_ready(
                     "waiting for rollout to finish: 1 out of 3 new replicas have been updated"),
                 id="stuck-within-deadline"),
    pytest.param(status_of(replicas=0, spec_replicas=0, updated=0, available=0), 100,
                 workloads.READY, id="scaled-to-zero"),
]


@pytest.mark.parametrize(("deployment", "threshold", "expected"), DEPLOYMENT_READINESS)
def test_deployment_readiness(deployment: dict[str, Any], threshold: int,
                              expected: workloads.Readiness) -> None:
    assert deployments.deployment_readiness(
        deployment, deadline_seconds=60, threshold=threshold, now=NOW) == expected


@pytest.mark.parametrize(("count", "percent", "expected"), [
    pytest.param(100, 29, 29, id="float32-rounds-up"),
    pytest.param(10, 70, 7, id="exact"),
    pytest.param(3, 50, 1, id="truncates"),
    pytest.param(3, 100, 3, id="all"),
    pytest.param(0, 100, 0, id="none"),
])
def test_ready_threshold_count_matches_go(count: int, percent: int, expected: int) -> None:
    assert workloads.ready_threshold_count(count, percent) == expected


# --- scaling decisions --------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "primary", "minimum", "autoscaler", "expected"), [
    pytest.param(4, 2, None, False, 4, id="target-replicas"),
    pytest.param(0, 2, None, False, 2, id="primary-replicas"),
    pytest.param(0, 0, None, False, 1, id="at-least-one"),
    pytest.param(0, 2, 3, True, 3, id="autoscaler-minimum"),
    pytest.param(0, 2, 1, True, 1, id="autoscaler-minimum-one"),
    pytest.param(0, 2, None, True, 1, id="autoscaler-unknown"),
])
def test_scale_from_zero_replicas(target: int, primary: int, minimum: int | None,
                                  autoscaler: bool, expected: int) -> None:
    assert deployments.scale_from_zero_replicas(
        {"spec": {"replicas": target}}, primary={"spec": {"replicas": primary}},
        autoscaler_min=minimum, has_autoscaler=autoscaler) == expected


# --- DaemonSets ---------------------------------------------------------------------------------


def make_daemonset() -> dict[str, Any]:
    deployment = make_deployment()
    spec = deployment["spec"]
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": deployment["metadata"],
        "spec": {"selector": spec["selector"], "template": spec["template"],
                 "updateStrategy": {"type": "RollingUpdate",
                                    "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
                 "revisionHistoryLimit": 10},
    }


def test_primary_daemonset_has_no_replicas_and_no_scale_to_zero_selector() -> None:
    target = make_daemonset()
    workloads.pod_spec(target)["nodeSelector"] = {"flagger.app/scale-to-zero": "true",
                                                  "disk": "ssd"}
    spec = configs.rename_tracked(workloads.pod_spec(target), TRACKED)
    daemonsets.without_scale_to_zero(spec)
    template = workloads.primary_pod_template(target, spec=spec, label="app", value="podinfo",
                                              checksums=TRACKED)
    body = daemonsets.build_primary_daemonset(
        target, label="app", value="podinfo", template=template, owner=OWNER,
        include_label_prefix=())
    assert "replicas" not in body["spec"]
    assert body["kind"] == "DaemonSet"
    assert body["spec"]["updateStrategy"] == target["spec"]["updateStrategy"]
    assert body["spec"]["selector"] == {"matchLabels": {"app": "podinfo-primary"}}
    assert body["spec"]["template"]["spec"]["nodeSelector"] == {"disk": "ssd"}
    assert body["metadata"]["labels"] == {"app": "podinfo-primary"}


def test_daemonset_hash_ignores_the_scale_to_zero_selector() -> None:
    template = workloads.pod_template(make_daemonset())
    base = hashing.template_hash(daemonsets.hashable_template(template))
    scaled = copy.deepcopy(template)
    scaled["spec"]["nodeSelector"] = dict(daemonsets.SCALE_TO_ZERO_NODE_SELECTOR)
    assert hashing.template_hash(daemonsets.hashable_template(scaled)) == base
    empty = copy.deepcopy(template)
    empty["spec"]["nodeSelector"] = {}
    assert hashing.template_hash(daemonsets.hashable_template(empty)) == base
    other = copy.deepcopy(template)
    other["spec"]["nodeSelector"] = {"disk": "ssd"}
    assert hashing.template_hash(daemonsets.hashable_template(other)) != base
    assert "nodeSelector" in scaled["spec"], "the input is not changed"


@pytest.mark.parametrize(("strategy", "problem"), [
    pytest.param(None, None, id="unset"),
    pytest.param("RollingUpdate", None, id="rolling-update"),
    pytest.param("OnDelete", "daemonset podinfo.test must have RollingUpdate strategy but have"
                             " OnDelete", id="on-delete"),
])
def test_daemonset_needs_rolling_update(strategy: str | None, problem: str | None) -> None:
    target = make_daemonset()
    target["spec"]["updateStrategy"] = {"type": strategy} if strategy else {}
    assert daemonsets.update_strategy_problem(target) == problem


def ds_status(*, desired: int = 2, updated: int = 2, available: int = 2,
              generation: int = 1, observed: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": "podinfo", "generation": generation},
            "status": {"observedGeneration": observed, "desiredNumberScheduled": desired,
                       "updatedNumberScheduled": updated, "numberAvailable": available}}


RECENT = NOW - timedelta(seconds=10)
LONG_AGO = NOW - timedelta(seconds=600)

DAEMONSET_READINESS = [
    pytest.param(ds_status(), RECENT, 100, workloads.READY, id="ready"),
    pytest.param(ds_status(updated=1), RECENT, 100, workloads.not_ready(
        "waiting for rollout to finish: 1 out of 2 new pods have been updated"), id="updating"),
    pytest.param(ds_status(available=1), RECENT, 100, workloads.not_ready(
        "waiting for rollout to finish: 1 of 2 (readyThreshold 100%) updated pods are"
        " available"), id="unavailable"),
    pytest.param(ds_status(available=1), RECENT, 50, workloads.READY, id="threshold-met"),
    pytest.param(ds_status(updated=1), LONG_AGO, 100, workloads.not_ready(
        "exceeded its progressDeadlineSeconds: 60", retriable=False), id="deadline"),
    pytest.param(ds_status(updated=1), None, 100, workloads.not_ready(
        "waiting for rollout to finish: 1 out of 2 new pods have been updated"),
        id="unknown-start"),
    pytest.param(ds_status(generation=2), RECENT, 100, workloads.not_ready(
        "waiting for rollout to finish: observed daemonset generation less than desired"
        " generation"), id="generation"),
    pytest.param(ds_status(desired=0, updated=0, available=0), LONG_AGO, 100, workloads.READY,
                 id="scaled-to-zero"),
]


@pytest.mark.parametrize(("daemonset", "since", "threshold", "expected"), DAEMONSET_READINESS)
def test_daemonset_readiness(daemonset: dict[str, Any], since: datetime | None, threshold: int,
                             expected: workloads.Readiness) -> None:
    assert daemonsets.daemonset_readiness(
        daemonset, threshold=threshold, since=since, deadline_seconds=60, now=NOW) == expected


# --- revisions ----------------------------------------------------------------------------------


def test_template_hash_is_stable_and_sees_changes() -> None:
    template = workloads.pod_template(make_deployment())
    base = hashing.template_hash(template)
    assert base == hashing.template_hash(copy.deepcopy(template))
    assert len(base) == 16
    reordered = dict(reversed(list(template.items())))
    assert hashing.template_hash(reordered) == base
    changed = copy.deepcopy(template)
    changed["spec"]["containers"][0]["image"] = "podinfo:6.0.1"
    assert hashing.template_hash(changed) != base


@pytest.mark.parametrize(("applied", "promoted", "new", "changed"), [
    pytest.param(None, None, "h1", True, id="never-applied"),
    pytest.param("h1", "h1", "h1", False, id="same"),
    pytest.param("h1", "h1", "h2", True, id="new-revision"),
    pytest.param("h2", "h1", "h1", False, id="reverted-to-promoted"),
    pytest.param("h2", "h1", "h2", False, id="still-applied"),
])
def test_spec_changed(applied: str | None, promoted: str | None, new: str, changed: bool) -> None:
    status = CanaryStatus(last_applied_spec=applied, last_promoted_spec=promoted)
    assert workloads.spec_changed(status, new) is changed
    assert workloads.spec_changed(None, new) is True


def test_our_hashes_are_told_apart_from_flaggers() -> None:
    assert hashing.is_template_hash(hashing.template_hash({"spec": {}}))
    assert not hashing.is_template_hash("5b8d9f7c4c")
    assert not hashing.is_template_hash("")


def test_same_template_ignores_only_the_flagger_id() -> None:
    template = primary_template(make_deployment())
    other_id = copy.deepcopy(template)
    other_id["metadata"]["annotations"]["flagger-id"] = "something-else"
    assert workloads.same_template(other_id, template)
    other_image = copy.deepcopy(template)
    other_image["spec"]["containers"][0]["image"] = "podinfo:6.0.1"
    assert not workloads.same_template(other_image, template)
    other_label = copy.deepcopy(template)
    other_label["metadata"]["labels"]["version"] = "v2"
    assert not workloads.same_template(other_label, template)


@pytest.mark.parametrize(("tracked", "current", "changed"), [
    pytest.param(None, {}, False, id="nothing-tracked"),
    pytest.param(None, {"configmap/a": "1"}, True, id="first-config"),
    pytest.param({}, {}, False, id="empty"),
    pytest.param({"configmap/a": "1"}, {"configmap/a": "1"}, False, id="same"),
    pytest.param({"configmap/a": "1"}, {"configmap/a": "2"}, True, id="checksum"),
    pytest.param({"configmap/a": "1"}, {}, True, id="removed"),
    pytest.param({"configmap/a": "1"}, {"configmap/b": "1"}, True, id="renamed"),
])
def test_configs_changed(tracked: dict[str, str] | None, current: dict[str, str],
                         changed: bool) -> None:
    assert workloads.configs_changed(tracked, current) is changed


# --- factory and errors -------------------------------------------------------------------------


def test_workload_controller_picks_the_kind() -> None:
    settings = Settings()
    args: dict[str, Any] = {"store": None, "settings": settings}
    deployment = targets.workload_controller(make_canary(), **args)
    assert isinstance(deployment, deployments.DeploymentController)
    daemonset = targets.workload_controller(make_canary(targetRef={
        "apiVersion": "apps/v1", "kind": "DaemonSet", "name": "podinfo"}), **args)
    assert isinstance(daemonset, daemonsets.DaemonSetController)
    service = targets.workload_controller(make_canary(targetRef={
        "apiVersion": "v1", "kind": "Service", "name": "podinfo"}), **args)
    assert isinstance(service, service_targets.ServiceTargetController)


def test_not_ready_error_carries_message_and_retriable() -> None:
    error = workloads.NotReadyError("podinfo-primary.test not ready: x", retriable=False)
    assert error.message == str(error) == "podinfo-primary.test not ready: x"
    assert error.retriable is False
    assert workloads.NotReadyError("y").retriable is True


# --- the primary HPA ----------------------------------------------------------------------------


def make_hpa() -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "podinfo", "namespace": "test", "resourceVersion": "5",
                     "labels": {"app": "podinfo", "kustomize.toolkit.fluxcd.io/name": "x"},
                     "annotations": {"app.kubernetes.io/note": "n", "other": "o"}},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "minReplicas": 2,
            "maxReplicas": 4,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 99}}}],
        },
    }


def test_primary_hpa_targets_the_primary() -> None:
    body = autoscalers.build_primary_hpa(
        make_hpa(), target_name="podinfo", replicas=None, owner=OWNER,
        include_label_prefix=("app.kubernetes.io",))
    assert body["metadata"] == {
        "name": "podinfo-primary", "namespace": "test", "labels": {"app": "podinfo"},
        "annotations": {"app.kubernetes.io/note": "n"}, "ownerReferences": [OWNER]}
    assert body["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                           "name": "podinfo-primary"},
        "minReplicas": 2, "maxReplicas": 4, "metrics": make_hpa()["spec"]["metrics"],
        "behavior": None}


def test_primary_hpa_replicas_can_be_overridden() -> None:
    body = autoscalers.build_primary_hpa(
        make_hpa(), target_name="podinfo", replicas=ScalerReplicas(min_replicas=3),
        owner=OWNER, include_label_prefix=())
    assert (body["spec"]["minReplicas"], body["spec"]["maxReplicas"]) == (3, 4)
    body = autoscalers.build_primary_hpa(
        make_hpa(), target_name="podinfo",
        replicas=ScalerReplicas(min_replicas=5, max_replicas=9), owner=OWNER,
        include_label_prefix=())
    assert (body["spec"]["minReplicas"], body["spec"]["maxReplicas"]) == (5, 9)


# --- the primary KEDA ScaledObject --------------------------------------------------------------


def make_scaled_object() -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "podinfo-so", "namespace": "test",
                     "labels": {"app": "podinfo", "kustomize.toolkit.fluxcd.io/name": "x"},
                     "annotations": {"autoscaling.keda.sh/paused-replicas": "0"}},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "pollingInterval": 10,
            "cooldownPeriod": 20,
            "minReplicaCount": 1,
            "maxReplicaCount": 3,
            "advanced": {"horizontalPodAutoscalerConfig": {"name": "podinfo-hpa"}},
            "fallback": {"failureThreshold": 3, "replicas": 2},
            "triggers": [
                {"type": "prometheus", "name": "prom-trigger", "metadata": {
                    "serverAddress": "http://prometheus:9090", "threshold": "5",
                    "query": 'sum(rate(http_requests_total{app="podinfo"}[2m]))'}},
                {"type": "prometheus", "name": "other", "metadata": {
                    "query": 'sum(rate(http_requests_total{app="podinfo-canary"}[2m]))'}},
                {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "60"}},
            ],
        },
    }


def test_primary_scaled_object_targets_the_primary_and_asks_about_its_pods() -> None:
    body = autoscalers.build_primary_scaled_object(
        make_scaled_object(), target_name="podinfo", replicas=None, queries=None, owner=OWNER,
        include_label_prefix=())
    assert body["apiVersion"] == "keda.sh/v1alpha1"
    assert body["metadata"] == {
        "name": "podinfo-so-primary", "namespace": "test", "labels": {"app": "podinfo"},
        "annotations": {}, "ownerReferences": [OWNER]}
    spec = body["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                      "name": "podinfo-primary"}
    assert (spec["pollingInterval"], spec["cooldownPeriod"]) == (10, 20)
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 3)
    assert spec["advanced"] == {"horizontalPodAutoscalerConfig": {"name": "podinfo-hpa-primary"}}
    assert spec["fallback"] == {"failureThreshold": 3, "replicas": 2}
    assert spec["idleReplicaCount"] is None
    prom, other, cpu = spec["triggers"]
    assert prom["metadata"] == {
        "serverAddress": "http://prometheus:9090", "threshold": "5",
        "query": 'sum(rate(http_requests_total{app="podinfo-primary"}[2m]))'}
    assert other["metadata"]["query"] == (
        'sum(rate(http_requests_total{app="podinfo-primary"}[2m]))')
    assert cpu == make_scaled_object()["spec"]["triggers"][2]
    # The target's own object is left as it was.
    assert make_scaled_object()["spec"]["triggers"][0]["metadata"]["query"].count("podinfo-") == 0


def test_primary_scaler_queries_replace_the_named_triggers_query() -> None:
    body = autoscalers.build_primary_scaled_object(
        make_scaled_object(), target_name="podinfo",
        replicas=ScalerReplicas(min_replicas=2, max_replicas=5),
        queries={"prom-trigger": "sum(up{job='podinfo-primary'})"}, owner=OWNER,
        include_label_prefix=("autoscaling.keda.sh",))
    assert body["metadata"]["annotations"] == {}, "the target's pause is never copied"
    prom, other, _ = body["spec"]["triggers"]
    assert prom["metadata"]["query"] == "sum(up{job='podinfo-primary'})"
    assert other["metadata"]["query"] == (
        'sum(rate(http_requests_total{app="podinfo-primary"}[2m]))')
    assert (body["spec"]["minReplicaCount"], body["spec"]["maxReplicaCount"]) == (2, 5)


@pytest.mark.parametrize(("query", "expected"), [
    pytest.param('x{app="podinfo"}', 'x{app="podinfo-primary"}', id="target"),
    pytest.param('x{app="podinfo-canary"}', 'x{app="podinfo-primary"}', id="canary"),
    pytest.param('x{app="podinfo-primary"}', 'x{app="podinfo-primary"}', id="already-primary"),
    pytest.param('x{pod=~"podinfo-[a-z0-9]+-[a-z0-9]+"}',
                 'x{pod=~"podinfo-primary-[a-z0-9]+-[a-z0-9]+"}', id="pod-regex"),
    pytest.param('x{app="podinfo2"}', 'x{app="podinfo2"}', id="longer-name"),
    pytest.param('x{app="my-podinfo"}', 'x{app="my-podinfo"}', id="other-name"),
    pytest.param('x{a="podinfo",b="podinfo-canary"}',
                 'x{a="podinfo-primary",b="podinfo-primary"}', id="both"),
])
def test_primary_query(query: str, expected: str) -> None:
    assert autoscalers.primary_query(query, "podinfo") == expected
