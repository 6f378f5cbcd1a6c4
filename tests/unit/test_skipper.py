"""The Skipper router's pure builders against spec §3 and the golden corpus.

Each test checks one thing Flagger 1.44 writes into the canary Ingress ``<ingressRef>-canary``:
its metadata copied from the apex Ingress, the primary and canary paths, the backend-weights
JSON, the predicate markers ``Weight(100)`` / ``False()``, and reading the split back.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import structlog

from flaggerpy import kube, plugins
from flaggerpy.errors import PluginError, RouterError, TerminalError
from flaggerpy.models.canary import Canary
from flaggerpy.providers import skipper
from flaggerpy.providers.skipper import (
    BACKEND_WEIGHTS_ANNOTATION,
    INGRESSES,
    PREDICATE_ANNOTATION,
    SkipperRouter,
    backend_weights,
    build_canary_ingress,
    build_routes,
    canary_ingress_name,
    insert_predicate,
    kept_weights,
    read_weights,
)
from flaggerpy.routing import ProviderContext, Router, Weights, capabilities_of
from flaggerpy.settings import Settings

TOOLKIT = {
    "kustomize.toolkit.fluxcd.io/reconcile": "disabled",
    "helm.toolkit.fluxcd.io/driftDetection": "disabled",
}
USER_ANNOTATIONS = {
    "zalando.org/skipper-filter": 'setRequestHeader("X-Source", "skipper")',
    "zalando.org/skipper-predicate": 'Header("X-Env", "prod")',
}


def make_canary(*, ingress: str | None = "podinfo") -> Canary:
    spec: dict[str, Any] = {
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "service": {"port": 80, "targetPort": "http"},
        "analysis": {"interval": "10s", "threshold": 2, "stepWeight": 20, "maxWeight": 40},
    }
    if ingress is not None:
        spec["ingressRef"] = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                              "name": ingress}
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test",
                     "uid": "3d8c1d47-8a7f-4a52-9a53-5b0a3cbd0c11"},
        "spec": spec,
    })


def path(service: str) -> dict[str, Any]:
    return {"backend": {"service": {"name": service, "port": {"number": 80}}},
            "path": "/", "pathType": "Prefix"}


def apex_ingress(*, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """skipper/canary-stepweight's input Ingress (the stored one: uid, resourceVersion...)."""
    metadata: dict[str, Any] = {
        "name": "podinfo", "namespace": "test", "labels": {"app": "podinfo"},
        "uid": "0e9a1c1e-1111-4c4c-8d8d-000000000001", "resourceVersion": "812",
        "generation": 1, "creationTimestamp": "2026-01-01T00:00:00Z",
        "managedFields": [{"manager": "kubectl-create"}],
    }
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": metadata,
            "spec": {"ingressClassName": "skipper",
                     "rules": [{"host": "app.example.com",
                                "http": {"paths": [path("podinfo")]}}]},
            "status": {"loadBalancer": {}}}


def weights_json(primary: int, canary: int) -> str:
    return f'{{"podinfo-canary":{canary},"podinfo-primary":{primary}}}'


def test_a_new_canary_ingress_is_flaggers_golden_object() -> None:
    # skipper/canary-stepweight, initialized.yaml (the store adds the ownerReference).
    built = build_canary_ingress(make_canary(), apex_ingress(annotations=USER_ANNOTATIONS), None)
    assert built == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "podinfo-canary", "namespace": "test", "labels": {"app": "podinfo"},
            "annotations": {
                "zalando.org/backend-weights": '{"podinfo-canary":0,"podinfo-primary":100}',
                "zalando.org/skipper-filter": 'setRequestHeader("X-Source", "skipper")',
                "zalando.org/skipper-predicate": 'Weight(100) && Header("X-Env", "prod")',
            },
        },
        "spec": {"ingressClassName": "skipper",
                 "rules": [{"host": "app.example.com",
                            "http": {"paths": [path("podinfo-primary"),
                                               path("podinfo-canary")]}}]},
    }


def test_the_apex_ingress_is_not_changed_by_building_its_copy() -> None:
    apex = apex_ingress(annotations=USER_ANNOTATIONS)
    before = copy.deepcopy(apex)
    build_canary_ingress(make_canary(), apex, None)
    assert apex == before


def test_an_apex_without_annotations_gets_only_the_router_annotations() -> None:
    # skipper/ingress-without-annotations-crash: Flagger panics here; we read none as empty.
    built = build_canary_ingress(make_canary(), apex_ingress(), None)
    assert built["metadata"]["annotations"] == {
        BACKEND_WEIGHTS_ANNOTATION: weights_json(100, 0), PREDICATE_ANNOTATION: "Weight(100)"}


def test_only_paths_to_the_apex_service_are_split_and_rules_without_http_are_kept() -> None:
    apex = apex_ingress()
    apex["spec"]["rules"] = [
        {"host": "a.example.com", "http": {"paths": [path("other"), path("podinfo")]}},
        {"host": "b.example.com"},
        {"http": {"paths": [{"backend": {"resource": {"kind": "Bucket", "name": "x"}},
                             "path": "/static", "pathType": "Prefix"}]}},
    ]
    apex["spec"]["defaultBackend"] = {"service": {"name": "podinfo", "port": {"number": 80}}}
    rules = build_canary_ingress(make_canary(), apex, None)["spec"]["rules"]
    assert rules == [
        {"host": "a.example.com", "http": {"paths": [
            path("other"), path("podinfo-primary"), path("podinfo-canary")]}},
        {"host": "b.example.com"},
        apex["spec"]["rules"][2],
    ]
    # The default backend is not a path: Flagger leaves it on the apex Service.
    spec = build_canary_ingress(make_canary(), apex, None)["spec"]
    assert spec["defaultBackend"] == apex["spec"]["defaultBackend"]


def test_owner_references_of_the_apex_are_dropped_when_the_canary_owns_the_copy() -> None:
    apex = apex_ingress()
    apex["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap",
                                            "name": "x", "uid": "u"}]
    assert "ownerReferences" not in build_canary_ingress(make_canary(), apex, None)["metadata"]
    kept = build_canary_ingress(make_canary(), apex, None, owned=False)["metadata"]
    assert kept["ownerReferences"] == apex["metadata"]["ownerReferences"]


def stored(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """The canary Ingress as the API server returns it after a create."""
    built = build_canary_ingress(make_canary(), apex_ingress(annotations=annotations), None)
    built["metadata"].update(uid="u-1", resourceVersion="900", generation=1)
    return built


def test_rebuilding_the_stored_object_changes_nothing() -> None:
    current = stored(USER_ANNOTATIONS)
    moved = build_routes(make_canary(), current, Weights.to_canary(40))
    assert build_canary_ingress(make_canary(), apex_ingress(annotations=USER_ANNOTATIONS),
                                moved) == moved


def test_an_apex_spec_change_updates_spec_and_annotations_keeping_the_split() -> None:
    current = build_routes(make_canary(), stored(USER_ANNOTATIONS), Weights.to_canary(20))
    apex = apex_ingress(annotations={**USER_ANNOTATIONS, "note": "new"})
    apex["spec"]["rules"][0]["host"] = "new.example.com"

    built = build_canary_ingress(make_canary(), apex, current)

    assert built["spec"]["rules"][0]["host"] == "new.example.com"
    assert built["spec"]["rules"][0]["http"]["paths"] == [path("podinfo-primary"),
                                                          path("podinfo-canary")]
    assert built["metadata"]["annotations"] == {
        **USER_ANNOTATIONS, "note": "new", **TOOLKIT,
        BACKEND_WEIGHTS_ANNOTATION: weights_json(80, 20),
        PREDICATE_ANNOTATION: 'Weight(100) && Header("X-Env", "prod")',
    }
    assert built["metadata"]["uid"] == "u-1"


def test_an_apex_spec_change_after_promotion_keeps_the_route_switched_off() -> None:
    current = build_routes(make_canary(), stored(), Weights.all_primary())
    apex = apex_ingress()
    apex["spec"]["ingressClassName"] = "other"
    built = build_canary_ingress(make_canary(), apex, current)
    assert built["metadata"]["annotations"][PREDICATE_ANNOTATION] == "False()"
    assert built["metadata"]["annotations"][BACKEND_WEIGHTS_ANNOTATION] == weights_json(100, 0)


@pytest.mark.parametrize(("canary_weight", "predicate"), [
    (20, 'Weight(100) && Header("X-Env", "prod")'),
    (40, 'Weight(100) && Header("X-Env", "prod")'),
    (100, 'Weight(100) && Header("X-Env", "prod")'),
    (0, 'False() && Header("X-Env", "prod")'),
])
def test_set_routes_writes_the_weights_and_the_predicate_marker(
        canary_weight: int, predicate: str) -> None:
    # skipper/canary-stepweight steps 04 (80/20), 06 (60/40) and 10 (100/0 after promotion).
    current = stored(USER_ANNOTATIONS)
    built = build_routes(make_canary(), current, Weights.to_canary(canary_weight))
    assert built["metadata"]["annotations"] == {
        "zalando.org/skipper-filter": 'setRequestHeader("X-Source", "skipper")',
        BACKEND_WEIGHTS_ANNOTATION: weights_json(100 - canary_weight, canary_weight),
        PREDICATE_ANNOTATION: predicate,
    }
    assert built["spec"] == current["spec"]
    assert {k: v for k, v in built["metadata"].items() if k != "annotations"} == {
        k: v for k, v in current["metadata"].items() if k != "annotations"}


def test_a_new_run_after_promotion_turns_the_route_back_on() -> None:
    promoted = build_routes(make_canary(), stored(USER_ANNOTATIONS), Weights.all_primary())
    again = build_routes(make_canary(), promoted, Weights.to_canary(20))
    assert again["metadata"]["annotations"][PREDICATE_ANNOTATION] == (
        'Weight(100) && Header("X-Env", "prod")')


@pytest.mark.parametrize(("raw", "insert", "expected"), [
    (None, "Weight(100)", "Weight(100)"),
    ("", "False()", "False()"),
    ("Weight(100) && A() && False()", "False()", "False() && A()"),
    ("  A()&&B()  && ", "Weight(100)", "Weight(100) && A() && B()"),
    ("False() && Weight(100)", "Weight(100)", "Weight(100)"),
])
def test_insert_predicate_puts_the_marker_first_once(
        raw: str | None, insert: str, expected: str) -> None:
    assert insert_predicate(raw, insert) == expected


def test_backend_weights_are_go_json_with_sorted_keys() -> None:
    text = backend_weights(make_canary(), Weights.to_canary(25))
    assert text == '{"podinfo-canary":25,"podinfo-primary":75}'
    assert json.loads(text) == {"podinfo-primary": 75, "podinfo-canary": 25}


@pytest.mark.parametrize(("primary", "canary_weight"), [(100, 0), (80, 20), (0, 100)])
def test_the_weights_read_back_are_those_written(primary: int, canary_weight: int) -> None:
    built = build_routes(make_canary(), stored(), Weights(primary, canary_weight))
    assert read_weights(built, make_canary()) == Weights(primary, canary_weight)


@pytest.mark.parametrize(("raw", "match"), [
    (None, "no zalando.org/backend-weights"),
    ("not json", "not JSON"),
    ("[1, 2]", "not an object"),
    ('{"podinfo-primary": 100}', "no weight for podinfo-canary"),
    ('{"podinfo-canary": 0}', "no weight for podinfo-primary"),
    ('{"podinfo-canary": 0.5, "podinfo-primary": 99.5}', "not a whole number"),
    ('{"podinfo-canary": 10, "podinfo-primary": 10}', "do not add up"),
])
def test_a_hand_edited_split_is_refused_and_a_reconcile_starts_over(
        raw: str | None, match: str) -> None:
    ingress = stored()
    annotations = ingress["metadata"]["annotations"]
    del annotations[BACKEND_WEIGHTS_ANNOTATION]
    if raw is not None:
        annotations[BACKEND_WEIGHTS_ANNOTATION] = raw
    with pytest.raises(RouterError, match=match):
        read_weights(ingress, make_canary())
    assert kept_weights(ingress, make_canary()) == Weights.all_primary()


def test_the_canary_ingress_name_comes_from_the_ingress_ref() -> None:
    assert canary_ingress_name(make_canary(ingress="web")) == "web-canary"
    built = build_canary_ingress(make_canary(ingress="web"), apex_ingress(), None)
    assert built["metadata"]["name"] == "web-canary"
    with pytest.raises(TerminalError, match="ingress selector is empty"):
        canary_ingress_name(make_canary(ingress=None))


def test_the_router_is_registered_declares_weights_only_and_refuses_a_variant() -> None:
    assert INGRESSES.path(name="p", namespace="n") == (
        "/apis/networking.k8s.io/v1/namespaces/n/ingresses/p")
    ctx = ProviderContext(store=kube.ObjectStore(None), settings=Settings(),  # no I/O here
                          log=structlog.get_logger("test"))
    plugin = plugins.routers.get("skipper")
    router = plugin.factory(ctx=ctx, variant=plugin.variant)
    assert isinstance(router, SkipperRouter)
    assert isinstance(router, Router)
    caps = capabilities_of(router)
    assert (caps.ab_matches, caps.mirroring, caps.session_affinity) == (False, False, False)
    assert caps.needs_services
    with pytest.raises(PluginError, match="skipper:v1"):
        skipper.SkipperRouter(ctx=ctx, variant="v1")
