"""Router capabilities: what a router declares decides what the engine asks of it.

The engine never compares provider names; these tests drive it with tiny routers that declare
what a third-party router could, and pin that the two in-tree routers still get Flagger's
behaviour for ``istio`` and ``kubernetes``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import pytest

from flaggerpy.canary import strategies, verify
from flaggerpy.canary.metrics_analysis import observer_provider
from flaggerpy.canary.strategies import Action
from flaggerpy.errors import PluginError
from flaggerpy.models import Canary
from flaggerpy.providers.istio import IstioRouter
from flaggerpy.providers.kubernetes import NopRouter
from flaggerpy.routing import Capabilities, TargetKind, Traffic, Weights, capabilities_of


class SwitchOnlyRouter:
    """A third-party router that can only switch all traffic at once."""

    capabilities: ClassVar[Capabilities] = Capabilities(traffic=Traffic.SWITCH)


class NoMirrorRouter:
    """A weighted router that cannot mirror (as Flagger's SMI, Contour, ... routers)."""

    capabilities: ClassVar[Capabilities] = Capabilities(mirroring=False)


class KnativeLikeRouter:
    """Routes Knative Services only, as Flagger's knative router does."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        target_kinds=frozenset({TargetKind("Service", group="serving.knative.dev")}),
    )


class SilentRouter:
    """A router written before capabilities existed: it declares nothing."""


def make_canary(
        target: dict[str, str] | None = None, *, provider: str | None = None, **analysis: Any,
) -> Canary:
    spec: dict[str, Any] = {
        "targetRef": target or {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "service": {"port": 9898},
        "analysis": {"interval": "1m", "threshold": 5, **analysis},
    }
    if provider is not None:
        spec["provider"] = provider
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": spec,
    })


KNATIVE_TARGET = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "podinfo"}
SERVICE_TARGET = {"apiVersion": "v1", "kind": "Service", "name": "podinfo"}


# -- declaring ------------------------------------------------------------------------------


def test_a_router_that_declares_nothing_is_a_weighted_mesh_router() -> None:
    declared = capabilities_of(SilentRouter())
    assert declared == Capabilities()
    assert declared.traffic is Traffic.WEIGHTED
    assert (declared.ab_matches, declared.mirroring, declared.session_affinity,
            declared.needs_services, declared.reconciles_before_workload) == (
        True, True, True, True, False)


def test_capabilities_are_read_from_the_class_or_the_router() -> None:
    assert capabilities_of(SwitchOnlyRouter) is SwitchOnlyRouter.capabilities
    assert capabilities_of(SwitchOnlyRouter()) is SwitchOnlyRouter.capabilities


def test_a_declaration_that_is_not_capabilities_fails_with_the_router_named() -> None:
    class Sloppy:
        capabilities: ClassVar[object] = {"traffic": "switch"}

    with pytest.raises(PluginError, match=r"Sloppy\.capabilities is a dict"):
        capabilities_of(Sloppy)


def test_capabilities_are_a_frozen_value() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Capabilities().mirroring = False  # type: ignore[misc]


def test_the_in_tree_routers_declare_flaggers_special_cases() -> None:
    assert capabilities_of(IstioRouter) == Capabilities()
    kubernetes = capabilities_of(NopRouter)
    assert kubernetes.traffic is Traffic.SWITCH
    assert (kubernetes.ab_matches, kubernetes.mirroring, kubernetes.session_affinity) == (
        False, False, False)
    assert kubernetes.needs_services


# -- strategies -----------------------------------------------------------------------------


def test_a_switch_only_router_runs_blue_green_with_ten_iterations_by_default() -> None:
    switch = SwitchOnlyRouter.capabilities
    canary = make_canary(stepWeight=10, mirror=True)
    assert strategies.iterations_for(canary, capabilities=switch) == 10
    first = strategies.blue_green_step(canary, done=0, mirrored=False, capabilities=switch)
    assert first.weights == Weights.all_primary()  # never asked to mirror
    assert first.event == "Advance podinfo.test canary iteration 1/10"
    last = strategies.blue_green_step(canary, done=10, mirrored=False, capabilities=switch)
    assert (last.action, last.weights, last.event) == (
        Action.CONFIRM_PROMOTION, Weights.all_canary(), "")


def test_a_switch_only_router_keeps_the_iterations_set() -> None:
    canary = make_canary(iterations=3)
    assert strategies.iterations_for(canary, capabilities=SwitchOnlyRouter.capabilities) == 3
    assert strategies.iterations_for(make_canary(), capabilities=Capabilities()) == 0


def test_a_switch_only_router_is_not_shifted_back_by_step_weight_promotion() -> None:
    canary = make_canary(stepWeight=10, stepWeightPromotion=30)
    current = Weights(primary=50, canary=50)
    switched = strategies.promotion_step(canary, current,
                                         capabilities=SwitchOnlyRouter.capabilities)
    assert switched == strategies.Step(Action.FINALISE, Weights.all_primary())
    weighted = strategies.promotion_step(canary, current, capabilities=Capabilities())
    assert (weighted.action, weighted.weights) == (Action.SET_ROUTES, Weights.to_canary(20))


def test_a_router_without_mirroring_is_never_asked_to_mirror() -> None:
    canary = make_canary(stepWeight=20, mirror=True)
    start = Weights.all_primary()
    plain = strategies.canary_step(canary, start, capabilities=NoMirrorRouter.capabilities)
    assert plain.weights == Weights.to_canary(20)
    mirrored = strategies.canary_step(canary, start, capabilities=Capabilities())
    assert mirrored.weights == Weights.all_primary(mirrored=True)
    blue_green = strategies.blue_green_step(make_canary(iterations=2, mirror=True), done=0,
                                            mirrored=False,
                                            capabilities=NoMirrorRouter.capabilities)
    assert blue_green.weights == Weights.all_primary()


# -- verify ---------------------------------------------------------------------------------


def test_a_knative_target_needs_a_router_that_routes_knative_services() -> None:
    problems = verify.problems(make_canary(KNATIVE_TARGET), provider="istio",
                               capabilities=IstioRouter.capabilities,
                               no_cross_namespace_refs=False)
    assert problems == [
        "provider 'istio' does not route a serving.knative.dev/v1 Service target "
        "(spec.targetRef); it routes DaemonSet, Deployment, Service (core)"
    ]


def test_a_knative_only_router_refuses_workloads_and_plain_services() -> None:
    knative = KnativeLikeRouter.capabilities
    assert verify.target_matches_router(make_canary(KNATIVE_TARGET), provider="knative",
                                        capabilities=knative) == []
    for target in (None, SERVICE_TARGET):
        [problem] = verify.target_matches_router(make_canary(target), provider="knative",
                                                 capabilities=knative)
        assert problem.startswith("provider 'knative' does not route a ")
        assert problem.endswith("it routes Service (serving.knative.dev)")


@pytest.mark.parametrize("target", [
    pytest.param({"apiVersion": "apps/v1", "kind": "Deployment", "name": "p"}, id="deployment"),
    pytest.param({"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "p"}, id="daemonset"),
    pytest.param({"apiVersion": "extensions/v1beta1", "kind": "Deployment", "name": "p"},
                 id="any-group-deployment-as-flagger"),
    pytest.param(SERVICE_TARGET, id="core-service"),
])
def test_a_router_that_declares_nothing_routes_workloads_and_services(
        target: dict[str, str]) -> None:
    assert verify.target_matches_router(make_canary(target), provider="custom",
                                        capabilities=capabilities_of(SilentRouter)) == []


def test_no_target_check_without_a_router() -> None:
    assert verify.problems(make_canary(KNATIVE_TARGET), provider="missing", capabilities=None,
                           no_cross_namespace_refs=False) == []


# -- observer selection ---------------------------------------------------------------------

LINKERD_MESH = Capabilities(observer="linkerd", observer_for_every_canary=True)
"""What a Linkerd router declares: its proxies measure every canary of the mesh."""
CROSSOVER_MESH = Capabilities(observer="crossover")
"""What an SMI router on Crossover declares: Crossover's metrics unless a canary says else."""


@pytest.mark.parametrize(("mesh_provider", "mesh", "spec", "expected"), [
    pytest.param("istio", Capabilities(), {}, "istio", id="mesh-provider"),
    pytest.param("istio", Capabilities(), {"provider": "nginx"}, "nginx",
                 id="spec-provider-wins"),
    pytest.param("linkerd", LINKERD_MESH, {"provider": "nginx"}, "linkerd",
                 id="linkerd-mesh-always-linkerd"),
    pytest.param("linkerd", LINKERD_MESH, {}, "linkerd", id="linkerd-mesh"),
    pytest.param("smi:crossover", CROSSOVER_MESH, {}, "crossover", id="crossover"),
    pytest.param("smi:crossover", CROSSOVER_MESH, {"provider": "nginx"}, "nginx",
                 id="crossover-spec-provider-wins"),
    pytest.param("kubernetes", NopRouter.capabilities, {"targetRef": SERVICE_TARGET},
                 "kubernetes:service", id="service-target"),
    pytest.param("knative", Capabilities(), {"targetRef": KNATIVE_TARGET}, "knative",
                 id="knative-service-is-not-a-service-target"),
])
def test_observer_selection_is_flaggers(
        mesh_provider: str, mesh: Capabilities, spec: dict[str, Any], expected: str) -> None:
    canary = make_canary(spec.get("targetRef"), provider=spec.get("provider"))
    assert observer_provider(canary, mesh_provider=mesh_provider, mesh=mesh) == expected


class _PerVariant:
    """A router whose variants differ: ``capabilities_for`` wins over ``capabilities``."""

    capabilities = Capabilities(mirroring=False)

    @classmethod
    def capabilities_for(cls, variant: str) -> Capabilities:
        return Capabilities(mirroring=variant == "mirroring")


def test_a_router_may_declare_capabilities_per_variant() -> None:
    assert capabilities_of(_PerVariant, variant="mirroring").mirroring
    assert not capabilities_of(_PerVariant, variant="").mirroring
    assert not capabilities_of(_PerVariant()).mirroring


def test_a_per_variant_declaration_of_the_wrong_type_is_refused() -> None:
    class Typo:
        @classmethod
        def capabilities_for(cls, variant: str) -> object:
            return {"mirroring": True}

    with pytest.raises(PluginError,
                       match=r"capabilities_for\(\) is a dict, not a flaggerpy\.routing\."):
        capabilities_of(Typo, variant="x")
