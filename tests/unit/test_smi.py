"""The SMI TrafficSplit router's pure builders against spec §3 and the golden corpus.

Each test builds what Flagger writes for ``linkerd``, ``osm`` and ``smi:<version>[:<mesh>]``
and checks it field by field: the API version per provider string, weights as quantities
(v1alpha1) or numbers, ``hosts[0]`` as the apex, the Istio gateways annotation, the owner
reference on creation only, a reconcile that keeps the split, and reading the split back.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import structlog

from flaggerpy import kube, plugins
from flaggerpy.canary.metrics_analysis import observer_provider
from flaggerpy.errors import PluginError, RouterError
from flaggerpy.models.canary import Canary
from flaggerpy.providers import smi
from flaggerpy.providers.smi import (
    ISTIO_GATEWAYS_ANNOTATION,
    VERSIONS,
    build_traffic_split,
    kept_weights,
    parse_variant,
    read_weights,
)
from flaggerpy.routing import ProviderContext, Router, Weights, capabilities_of
from flaggerpy.settings import Settings

UID = "3d8c1d47-8a7f-4a52-9a53-5b0a3cbd0c11"
OWNER = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo", "uid": UID,
         "controller": True, "blockOwnerDeletion": True}
V1A1, V1A2, V1A3 = VERSIONS["v1alpha1"], VERSIONS["v1alpha2"], VERSIONS["v1alpha3"]


def make_canary(*, service: dict[str, Any] | None = None,
                analysis: dict[str, Any] | None = None) -> Canary:
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test", "uid": UID},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898, **(service or {})},
            "analysis": {"interval": "10s", "threshold": 2, **(analysis or {})},
        },
    })


def backends(canary: Any, primary: Any) -> list[dict[str, Any]]:
    return [{"service": "podinfo-canary", "weight": canary},
            {"service": "podinfo-primary", "weight": primary}]


def stored(version: smi.SmiVersion, canary: Any, primary: Any, *,
           service: str = "podinfo") -> dict[str, Any]:
    """A TrafficSplit as the API server returns it, with metadata that is not the router's."""
    return {
        "apiVersion": version.api_version, "kind": "TrafficSplit",
        "metadata": {"name": "podinfo", "namespace": "test", "resourceVersion": "7",
                     "uid": "ts-uid", "labels": {"team": "a"}, "ownerReferences": [OWNER]},
        "spec": {"service": service, "backends": backends(canary, primary)},
    }


# -- provider strings ---------------------------------------------------------------------------


@pytest.mark.parametrize(("variant", "version", "mesh"), [
    ("v1alpha1", "v1alpha1", ""),
    ("v1alpha2", "v1alpha2", ""),
    ("v1alpha3", "v1alpha3", ""),
    ("v1alpha3:linkerd", "v1alpha3", "linkerd"),
    ("v1alpha1:istio", "v1alpha1", "istio"),
])
def test_a_variant_names_the_api_version_and_the_target_mesh(
        variant: str, version: str, mesh: str) -> None:
    parsed, target = parse_variant(variant)
    assert (parsed.name, parsed.api_version, target) == (
        version, f"split.smi-spec.io/{version}", mesh)


@pytest.mark.parametrize("variant", ["", "linkerd", "v1alpha4", "v1beta1:istio"])
def test_a_variant_without_a_known_version_is_refused(variant: str) -> None:
    # Flagger would route these with Istio, silently.
    with pytest.raises(PluginError, match="needs an API version: smi:v1alpha1, smi:v1alpha2"):
        parse_variant(variant)


# -- building -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "zero", "hundred"), [
    (V1A1, "0", "100"), (V1A2, 0, 100), (V1A3, 0, 100),
])
def test_a_new_traffic_split_is_flaggers(version: smi.SmiVersion, zero: Any,
                                         hundred: Any) -> None:
    # What the corpus's initialized.yaml holds for linkerd, smi-v1alpha2/osm and smi-v1alpha3.
    built = build_traffic_split(make_canary(), None, version=version, target_mesh="linkerd",
                                existing=None)
    assert built == {
        "apiVersion": version.api_version, "kind": "TrafficSplit",
        "metadata": {"name": "podinfo", "namespace": "test", "ownerReferences": [OWNER]},
        "spec": {"service": "podinfo", "backends": backends(zero, hundred)},
    }


def test_without_owner_references_on_another_mesh_cluster() -> None:
    built = build_traffic_split(make_canary(), None, version=V1A2, existing=None,
                                set_owner_refs=False)
    assert "ownerReferences" not in built["metadata"]


def test_weights_are_quantities_in_v1alpha1_and_numbers_later() -> None:
    canary, weights = make_canary(), Weights.to_canary(30)
    v1 = build_traffic_split(canary, weights, version=V1A1, existing=None)
    v2 = build_traffic_split(canary, weights, version=V1A2, existing=None)
    assert v1["spec"]["backends"] == backends("30", "70")
    assert v2["spec"]["backends"] == backends(30, 70)


def test_the_apex_is_the_first_host_then_the_service_name() -> None:
    hosts = make_canary(service={"hosts": ["app.example.com", "other"]})
    named = make_canary(service={"name": "frontend"})
    assert build_traffic_split(hosts, None, version=V1A2, existing=None)["spec"]["service"] \
        == "app.example.com"
    built = build_traffic_split(named, None, version=V1A2, existing=None)
    assert built["metadata"]["name"] == "frontend"
    assert built["spec"] == {"service": "frontend", "backends": [
        {"service": "frontend-canary", "weight": 0}, {"service": "frontend-primary",
                                                      "weight": 100}]}


def test_the_istio_gateways_annotation_only_for_istio_with_gateways() -> None:
    gateways = make_canary(service={"gateways": ["public/gw", "mesh"]})
    istio = build_traffic_split(gateways, None, version=V1A3, target_mesh="istio",
                                existing=None)
    assert istio["metadata"]["annotations"] == {
        ISTIO_GATEWAYS_ANNOTATION: '["public/gw","mesh"]'}
    for canary, mesh in ((gateways, "linkerd"), (make_canary(), "istio")):
        built = build_traffic_split(canary, None, version=V1A3, target_mesh=mesh,
                                    existing=None)
        assert "annotations" not in built["metadata"]


def test_a_reconcile_keeps_the_split_and_writes_nothing_when_the_spec_is_the_same() -> None:
    current = stored(V1A1, "40", "60")
    rebuilt = build_traffic_split(make_canary(), None, version=V1A1, existing=current)
    assert rebuilt == current


def test_a_reconcile_of_a_changed_spec_keeps_the_split_and_the_metadata() -> None:
    current = stored(V1A2, 40, 60, service="old-host")
    rebuilt = build_traffic_split(make_canary(), None, version=V1A2, existing=current)
    assert rebuilt["spec"] == {"service": "podinfo", "backends": backends(40, 60)}
    assert rebuilt["metadata"] == current["metadata"]


def test_a_reconcile_of_a_foreign_split_starts_at_all_primary() -> None:
    current = stored(V1A2, 40, 60)
    current["spec"]["backends"] = [{"service": "v1", "weight": 50}, {"service": "v2",
                                                                     "weight": 50}]
    rebuilt = build_traffic_split(make_canary(), None, version=V1A2, existing=current)
    assert rebuilt["spec"]["backends"] == backends(0, 100)


def test_set_routes_changes_only_the_spec() -> None:
    current = stored(V1A3, 0, 100)
    current["metadata"]["annotations"] = {"note": "user"}
    rebuilt = build_traffic_split(make_canary(service={"gateways": ["gw"]}),
                                  Weights.all_canary(), version=V1A3, target_mesh="istio",
                                  existing=current)
    expected = copy.deepcopy(current)
    expected["spec"]["backends"] = backends(100, 0)
    assert rebuilt == expected


def test_the_builders_do_not_touch_what_they_are_given() -> None:
    current = stored(V1A1, "0", "100")
    snapshot = copy.deepcopy(current)
    build_traffic_split(make_canary(), Weights.to_canary(20), version=V1A1, existing=current)
    assert current == snapshot


# -- reading ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("canary", "primary", "expected"), [
    ("20", "80", Weights.to_canary(20)),
    (20, 80, Weights.to_canary(20)),
    (20.0, 80.0, Weights.to_canary(20)),
    ("100", "0", Weights.all_canary()),
    ("0", 100, Weights.all_primary()),
])
def test_the_split_is_read_back(canary: Any, primary: Any, expected: Weights) -> None:
    assert read_weights(stored(V1A1, canary, primary), make_canary()) == expected


def test_a_split_without_weights_is_flaggers_error() -> None:
    with pytest.raises(RouterError, match=re.escape(
            "TrafficSplit podinfo.test does not contain routes for podinfo-primary and "
            "podinfo-canary")):
        read_weights(stored(V1A2, 0, 0), make_canary())


def test_a_weight_that_is_not_a_whole_number_reads_as_zero() -> None:
    # Flagger's Quantity.AsInt64 fails on these and it ignores the error.
    assert read_weights(stored(V1A1, "1.5", "100"), make_canary()) == Weights.all_primary()
    assert read_weights(stored(V1A1, "many", "100"), make_canary()) == Weights.all_primary()


def test_a_hand_edited_split_is_an_error_not_a_guess() -> None:
    with pytest.raises(RouterError, match="do not add up to 100"):
        read_weights(stored(V1A2, 40, 50), make_canary())


def test_kept_weights() -> None:
    canary = make_canary()
    assert kept_weights(None, canary) == Weights.all_primary()
    assert kept_weights(stored(V1A2, 40, 50), canary) == Weights.all_primary()
    assert kept_weights(stored(V1A2, 40, 60), canary) == Weights.to_canary(40)


# -- the plugins --------------------------------------------------------------------------------


def context() -> ProviderContext:
    return ProviderContext(store=kube.ObjectStore(None), settings=Settings(),  # no I/O here
                           log=structlog.get_logger("test"))


@pytest.mark.parametrize(("provider", "cls", "version"), [
    ("linkerd", smi.LinkerdRouter, "v1alpha1"),
    ("osm", smi.OsmRouter, "v1alpha2"),
    ("smi:v1alpha1", smi.SmiRouter, "v1alpha1"),
    ("smi:v1alpha2:osm", smi.SmiRouter, "v1alpha2"),
    ("smi:v1alpha3:linkerd", smi.SmiRouter, "v1alpha3"),
])
def test_each_provider_string_gets_flaggers_traffic_split_version(
        provider: str, cls: type[smi.SmiRouter], version: str) -> None:
    plugin = plugins.routers.get(provider)
    router = plugin.factory(ctx=context(), variant=plugin.variant)
    assert type(router) is cls
    assert isinstance(router, Router)
    assert router.version.name == version


@pytest.mark.parametrize(("cls", "variant"), [
    (smi.LinkerdRouter, "v1alpha2"), (smi.OsmRouter, "v1alpha3"),
])
def test_linkerd_and_osm_take_no_variant(cls: type[smi.SmiRouter], variant: str) -> None:
    with pytest.raises(PluginError, match="takes no variant"):
        cls(ctx=context(), variant=variant)


@pytest.mark.parametrize("cls", [smi.SmiRouter, smi.LinkerdRouter, smi.OsmRouter])
def test_smi_routes_by_weight_only(cls: type[smi.SmiRouter]) -> None:
    capabilities = capabilities_of(cls)
    assert (capabilities.ab_matches, capabilities.mirroring,
            capabilities.session_affinity, capabilities.needs_services) == (
        False, False, False, True)


@pytest.mark.parametrize(("mesh", "spec_provider", "observer"), [
    ("linkerd", None, "linkerd"),
    ("linkerd", "kuma", "linkerd"),  # Linkerd measures every canary (Flagger's rule)
    ("osm", None, "osm"),
    ("osm", "kuma", "kuma"),
    ("smi:v1alpha2", None, "smi:v1alpha2"),  # no observer of its own: Istio's answers
    ("smi:v1alpha3:linkerd", None, "linkerd"),  # Flagger: "linkerd" in the mesh provider
    ("smi:v1alpha3:linkerd", "kuma", "linkerd"),
    ("smi:v1alpha1:istio", "kuma", "kuma"),
    ("smi:v9", "kuma", "kuma"),  # a bad variant: the router's build reports it, not this
])
def test_the_observer_of_a_canary_on_each_mesh(
        mesh: str, spec_provider: str | None, observer: str) -> None:
    canary = make_canary()
    if spec_provider:
        canary = canary.model_copy(update={
            "spec": canary.spec.model_copy(update={"provider": spec_provider})})
    plugin = plugins.routers.get(mesh)
    mesh_capabilities = capabilities_of(plugin.factory, variant=plugin.variant)
    assert observer_provider(canary, mesh_provider=mesh, mesh=mesh_capabilities) == observer
