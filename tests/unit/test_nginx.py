"""The NGINX router's pure builders against spec §3 and the golden corpus (golden nginx/*).

Each test checks one thing Flagger 1.44 writes on the canary Ingress ``<ingressRef>-canary``:
its metadata copied from the user's Ingress, the re-pointed backends, and the canary annotations
under ``-ingress-annotations-prefix`` for canary, blue/green and A/B (header, pattern, cookie),
and reading the split back.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from flaggerpy import kube, plugins
from flaggerpy.errors import PluginError, RouterError, TerminalError
from flaggerpy.models.canary import Canary
from flaggerpy.providers import nginx
from flaggerpy.providers.nginx import (
    INGRESSES,
    AbMatch,
    NginxRouter,
    ab_match,
    base_annotations,
    build_canary_ingress,
    build_routes,
    canary_ingress_name,
    canary_spec,
    header_annotations,
    read_weights,
)
from flaggerpy.routing import ProviderContext, Router, Weights, capabilities_of
from flaggerpy.settings import Settings

GOLDEN = Path(__file__).resolve().parents[3] / "shared" / "reference" / "golden" / "nginx"
UID = "3d8c1d47-8a7f-4a52-9a53-5b0a3cbd0c11"
N = "nginx.ingress.kubernetes.io"
CUSTOM = "custom.ingress.kubernetes.io"
TOOLKIT = {
    "kustomize.toolkit.fluxcd.io/reconcile": "disabled",
    "helm.toolkit.fluxcd.io/driftDetection": "disabled",
}


def make_canary(
        *,
        namespace: str = "test",
        match: list[dict[str, Any]] | None = None,
        service: dict[str, Any] | None = None,
        ingress_ref: str | None = "podinfo",
) -> Canary:
    analysis: dict[str, Any] = {"interval": "10s", "threshold": 2, "stepWeight": 20,
                                "maxWeight": 40}
    if match is not None:
        analysis = {"interval": "10s", "threshold": 2, "iterations": 2, "match": match}
    spec: dict[str, Any] = {
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "service": {"port": 80, "targetPort": "http", **(service or {})},
        "analysis": analysis,
    }
    if ingress_ref is not None:
        spec["ingressRef"] = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                              "name": ingress_ref}
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": namespace, "uid": UID},
        "spec": spec,
    })


def user_ingress(*, annotations: dict[str, str] | None = None,
                 backend: str = "podinfo") -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "podinfo", "namespace": "test",
                                "labels": {"app": "podinfo"}}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": metadata,
        "spec": {"ingressClassName": "nginx", "rules": [{"host": "app.example.com", "http": {
            "paths": [{"path": "/", "pathType": "Prefix", "backend": {
                "service": {"name": backend, "port": {"number": 80}}}}]}}]},
    }


def golden(case: str, snapshot: str, name: str) -> dict[str, Any]:
    """One Ingress of a golden snapshot (``steps/NN.yaml`` or a namespace snapshot)."""
    path = GOLDEN / case / snapshot
    if not path.exists():
        pytest.skip(f"golden corpus not found at {path}")
    loaded = list(yaml.safe_load_all(path.read_text()))
    docs = loaded[0]["objects"] if snapshot.startswith("steps/") else loaded
    for doc in docs:
        if doc and doc["kind"] == "Ingress" and doc["metadata"]["name"] == name:
            return dict(doc)
    raise AssertionError(f"Ingress {name} not in {path}")


def without_owner_uid(ingress: dict[str, Any]) -> dict[str, Any]:
    """``ingress`` as the corpus normalizes it: ownerReferences without their uid."""
    result = copy.deepcopy(ingress)
    for ref in result["metadata"].get("ownerReferences", ()):
        ref.pop("uid", None)
    return result


def annotations_of(ingress: dict[str, Any]) -> dict[str, str]:
    return dict(ingress["metadata"].get("annotations") or {})


# -- the canary Ingress ----------------------------------------------------------------------


@pytest.mark.parametrize(("case", "prefix"), [
    ("annotations-prefix", CUSTOM),
    ("ab-cookie", N),
    ("canary-stepweights", N),
])
def test_a_new_canary_ingress_is_flaggers_golden_object(case: str, prefix: str) -> None:
    namespace = f"nginx-{case}"
    source = golden(case, "initialized.yaml", "podinfo")
    built = build_canary_ingress(make_canary(namespace=namespace), source, None, prefix=prefix)
    assert without_owner_uid(built) == golden(case, "initialized.yaml", "podinfo-canary")
    assert built["metadata"]["ownerReferences"][0]["uid"] == UID


def test_the_prefix_names_the_annotations_and_only_its_own_canary_ones_are_dropped() -> None:
    # golden annotations-prefix: the user's custom canary-weight '55' is not copied, the rest is.
    source = user_ingress(annotations={
        f"{CUSTOM}/canary-weight": "55", f"{CUSTOM}/rewrite-target": "/",
        f"{N}/canary-by-header": "x-other", "kubernetes.io/ingress.class": "nginx",
        "kubectl.kubernetes.io/last-applied-configuration": "{}"})
    built = build_canary_ingress(make_canary(), source, None, prefix=CUSTOM)
    assert annotations_of(built) == {
        **TOOLKIT, f"{CUSTOM}/canary": "true", f"{CUSTOM}/canary-weight": "0",
        f"{CUSTOM}/rewrite-target": "/", f"{N}/canary-by-header": "x-other",
        "kubernetes.io/ingress.class": "nginx"}
    default = build_canary_ingress(make_canary(), source, None)
    assert f"{N}/canary-by-header" not in annotations_of(default)
    assert annotations_of(default)[f"{CUSTOM}/canary-weight"] == "55"


def test_the_canary_ingress_is_named_after_the_ingress_ref_and_copies_its_labels() -> None:
    canary = make_canary(ingress_ref="public")
    assert canary_ingress_name(canary) == "public-canary"
    built = build_canary_ingress(canary, user_ingress(), None)
    assert built["metadata"]["name"] == "public-canary"
    assert built["metadata"]["namespace"] == "test"
    assert built["metadata"]["labels"] == {"app": "podinfo"}
    assert (built["apiVersion"], built["kind"]) == ("networking.k8s.io/v1", "Ingress")
    unlabelled = user_ingress()
    del unlabelled["metadata"]["labels"]
    assert "labels" not in build_canary_ingress(canary, unlabelled, None)["metadata"]


def test_every_backend_of_the_service_points_at_the_canary_and_others_stay() -> None:
    source = user_ingress()
    source["spec"]["rules"].append({"host": "api.example.com", "http": {"paths": [
        {"path": "/v1", "pathType": "Prefix",
         "backend": {"service": {"name": "podinfo", "port": {"name": "http"}}}},
        {"path": "/static", "pathType": "Prefix",
         "backend": {"service": {"name": "assets", "port": {"number": 80}}}},
        {"path": "/bucket", "pathType": "Prefix",
         "backend": {"resource": {"apiGroup": "k8s.example.com", "kind": "Bucket",
                                  "name": "podinfo"}}},
    ]}})
    source["spec"]["rules"].append({"host": "nohttp.example.com"})
    spec = canary_spec(source, make_canary())
    backends = [p["backend"] for r in spec["rules"] for p in (r.get("http") or {}).get("paths", ())]
    assert backends == [
        {"service": {"name": "podinfo-canary", "port": {"number": 80}}},
        {"service": {"name": "podinfo-canary", "port": {"name": "http"}}},
        {"service": {"name": "assets", "port": {"number": 80}}},
        {"resource": {"apiGroup": "k8s.example.com", "kind": "Bucket", "name": "podinfo"}},
    ]
    assert source["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == (
        "podinfo"), "the user's Ingress is not changed"


def test_the_service_name_is_the_backend_looked_for() -> None:
    canary = make_canary(service={"name": "web"})
    spec = canary_spec(user_ingress(backend="web"), canary)
    assert spec["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "web-canary"


def test_an_ingress_without_the_service_backend_is_refused() -> None:
    with pytest.raises(RouterError, match="backend podinfo not found in ingress podinfo"):
        build_canary_ingress(make_canary(), user_ingress(backend="other"), None)


def test_a_canary_without_ingress_ref_is_a_spec_error() -> None:
    with pytest.raises(TerminalError, match=r"spec\.ingressRef"):
        build_canary_ingress(make_canary(ingress_ref=None), user_ingress(), None)


def test_an_existing_canary_ingress_gets_the_spec_and_keeps_its_metadata() -> None:
    canary = make_canary()
    stored = build_canary_ingress(canary, user_ingress(), None)
    stored = build_routes(canary, Weights.to_canary(30), stored)
    stored["metadata"]["annotations"]["team"] = "web"
    changed = user_ingress(annotations={"new": "one"})
    changed["spec"]["rules"][0]["host"] = "www.example.com"
    changed["metadata"]["labels"] = {"app": "other"}
    rebuilt = build_canary_ingress(canary, changed, stored)
    assert rebuilt["metadata"] == stored["metadata"]
    assert rebuilt["spec"]["rules"][0]["host"] == "www.example.com"
    assert rebuilt["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == (
        "podinfo-canary")


def test_rebuilding_the_stored_object_changes_nothing() -> None:
    canary = make_canary()
    stored = build_routes(canary, Weights.to_canary(40),
                          build_canary_ingress(canary, user_ingress(), None))
    assert build_canary_ingress(canary, user_ingress(), stored) == stored
    assert build_routes(canary, Weights.to_canary(40), stored) == stored


# -- the split -------------------------------------------------------------------------------


@pytest.mark.parametrize(("weight", "step", "previous"), [
    (10, "steps/04.yaml", "steps/03.yaml"),
    (30, "steps/06.yaml", "steps/05.yaml"),
    (60, "steps/08.yaml", "steps/07.yaml"),
    (0, "steps/12.yaml", "steps/11.yaml"),
])
def test_canary_weights_are_flaggers_golden_steps(weight: int, step: str, previous: str) -> None:
    canary = make_canary(namespace="nginx-canary-stepweights")
    before = golden("canary-stepweights", previous, "podinfo-canary")
    assert build_routes(canary, Weights.to_canary(weight), before) == golden(
        "canary-stepweights", step, "podinfo-canary")


def test_blue_green_sends_everything_to_the_canary_by_weight() -> None:
    canary = make_canary(namespace="nginx-bluegreen")
    before = golden("bluegreen", "steps/05.yaml", "podinfo-canary")
    assert build_routes(canary, Weights.all_canary(), before) == golden(
        "bluegreen", "steps/06.yaml", "podinfo-canary")


@pytest.mark.parametrize(("case", "match"), [
    ("ab-header-exact", [{"headers": {"x-canary": {"exact": "insider"}}}]),
    ("ab-cookie", [{"headers": {"cookie": {"exact": "canary"}}}]),
])
def test_ab_matches_are_flaggers_golden_steps(case: str, match: list[dict[str, Any]]) -> None:
    canary = make_canary(namespace=f"nginx-{case}", match=match)
    start = golden(case, "steps/03.yaml", "podinfo-canary")
    matched = build_routes(canary, Weights.all_canary(), start)
    assert matched == golden(case, "steps/04.yaml", "podinfo-canary")
    assert annotations_of(matched)[f"{N}/canary-weight"] == "0"
    assert read_weights(matched, canary) == Weights.all_canary()
    back = build_routes(canary, Weights.all_primary(), matched)
    assert back == golden(case, "steps/09.yaml", "podinfo-canary")
    assert read_weights(back, canary) == Weights.all_primary()


def test_a_header_regex_is_the_header_pattern_under_the_prefix() -> None:
    canary = make_canary(match=[{"headers": {"x-user-type": {"regex": "^(beta|qa)$"}}}])
    stored = build_canary_ingress(canary, user_ingress(), None, prefix=CUSTOM)
    annotations = annotations_of(build_routes(canary, Weights.all_canary(), stored,
                                              prefix=CUSTOM))
    assert annotations == {**TOOLKIT, f"{CUSTOM}/canary": "true", f"{CUSTOM}/canary-weight": "0",
                           f"{CUSTOM}/canary-by-header": "x-user-type",
                           f"{CUSTOM}/canary-by-header-pattern": "^(beta|qa)$"}


def test_the_match_is_read_as_flagger_reads_it() -> None:
    assert ab_match(make_canary()) == AbMatch()
    both = make_canary(match=[{"headers": {"cookie": {"exact": "beta"},
                                           "x-canary": {"exact": "insider"}}}])
    assert ab_match(both) == AbMatch(header="x-canary", header_value="insider", cookie="beta")
    # one header fits: the last one, by name within a match, then by match order; it replaces
    # value and pattern both.
    several = make_canary(match=[
        {"headers": {"x-b": {"regex": "b.*"}, "x-a": {"exact": "a"}}},
        {"headers": {"x-c": {"prefix": "c"}}},
    ])
    assert ab_match(several) == AbMatch(header="x-c")
    assert ab_match(make_canary(match=[{"headers": {"cookie": {"regex": "x"}}}])) == AbMatch()
    assert ab_match(make_canary(match=[{"queryParams": {"v": {"exact": "2"}}}])) == AbMatch()


def test_header_annotations_keep_the_rest_and_drop_values_naming_the_prefix() -> None:
    current = {**TOOLKIT, f"{N}/canary": "true", f"{N}/canary-weight": "0", "team": "web",
               "note": f"see {N}/canary docs"}
    assert header_annotations(current, AbMatch(header="x-canary", header_value="1",
                                                cookie="beta"), prefix=N) == {
        **TOOLKIT, f"{N}/canary": "true", f"{N}/canary-weight": "0", "team": "web",
        f"{N}/canary-by-header": "x-canary", f"{N}/canary-by-header-value": "1",
        f"{N}/canary-by-cookie": "beta"}


def test_weight_zero_resets_every_canary_annotation() -> None:
    current = {**TOOLKIT, f"{N}/canary": "true", f"{N}/canary-weight": "0", "team": "web",
               f"{N}/canary-by-header": "x", f"{N}/canary-by-header-value": "1",
               f"{N}/canary-by-header-pattern": "p", f"{N}/canary-by-cookie": "c",
               f"{N}/canary-weight-total": "1000"}
    assert base_annotations(current, prefix=N) == {
        **TOOLKIT, f"{N}/canary": "true", f"{N}/canary-weight": "0", "team": "web"}


def test_set_routes_needs_the_canary_ingress() -> None:
    with pytest.raises(RouterError, match="test/podinfo-canary not found"):
        build_routes(make_canary(), Weights.to_canary(10), None)


@pytest.mark.parametrize("weight", [0, 5, 50, 100])
def test_the_weights_read_back_are_those_written(weight: int) -> None:
    canary = make_canary()
    stored = build_routes(canary, Weights.to_canary(weight),
                          build_canary_ingress(canary, user_ingress(), None, prefix=CUSTOM),
                          prefix=CUSTOM)
    assert read_weights(stored, canary, prefix=CUSTOM) == Weights.to_canary(weight)


def test_reading_weights_as_flagger_does() -> None:
    canary = make_canary()
    ingress = build_canary_ingress(canary, user_ingress(), None)
    del ingress["metadata"]["annotations"][f"{N}/canary-weight"]
    assert read_weights(ingress, canary) == Weights.all_primary()
    # a by-header annotation means the matched traffic only for an A/B canary
    ingress["metadata"]["annotations"][f"{N}/canary-by-header"] = "x"
    ingress["metadata"]["annotations"][f"{N}/canary-weight"] = "20"
    assert read_weights(ingress, canary) == Weights.to_canary(20)
    ab = make_canary(match=[{"headers": {"x": {"exact": "1"}}}])
    assert read_weights(ingress, ab) == Weights.all_canary()
    # the other prefix's annotations are not this router's
    assert read_weights(ingress, ab, prefix=CUSTOM) == Weights.all_primary()


@pytest.mark.parametrize("raw", ["ten", "1.5", "", "150", "-5"])
def test_a_weight_that_is_not_a_percentage_is_refused(raw: str) -> None:
    canary = make_canary()
    ingress = build_canary_ingress(canary, user_ingress(), None)
    ingress["metadata"]["annotations"][f"{N}/canary-weight"] = raw
    with pytest.raises(RouterError, match="Ingress podinfo-canary"):
        read_weights(ingress, canary)


# -- the plugin ------------------------------------------------------------------------------


def test_the_router_is_registered_with_its_capabilities_and_the_settings_prefix() -> None:
    assert INGRESSES.path(namespace="test", name="p") == (
        "/apis/networking.k8s.io/v1/namespaces/test/ingresses/p")
    ctx = ProviderContext(store=kube.ObjectStore(None),  # no I/O here
                          settings=Settings(mesh={"ingress_annotations_prefix": CUSTOM}),
                          log=structlog.get_logger("test"))
    plugin = plugins.routers.get("nginx")
    router = plugin.factory(ctx=ctx, variant=plugin.variant)
    assert isinstance(router, NginxRouter)
    assert isinstance(router, Router)
    assert router._prefix == CUSTOM
    caps = capabilities_of(router)
    assert (caps.ab_matches, caps.mirroring, caps.session_affinity) == (True, False, False)
    assert caps.needs_services
    with pytest.raises(PluginError, match="nginx:v1"):
        nginx.NginxRouter(ctx=ctx, variant="v1")
