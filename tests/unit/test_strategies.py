"""Weight and iteration sequences of each strategy, as spec §2.4 walks them."""

from __future__ import annotations

from typing import Any

import pytest

from flaggerpy.canary.strategies import (
    Action,
    Step,
    ab_step,
    blue_green_step,
    canary_step,
    next_step_weight,
    promotion_step,
)
from flaggerpy.models import Canary
from flaggerpy.providers.istio import IstioRouter
from flaggerpy.providers.kubernetes import NopRouter
from flaggerpy.routing import Weights

ISTIO = IstioRouter.capabilities
KUBERNETES = NopRouter.capabilities


def make_canary(**analysis: Any) -> Canary:
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {"interval": "1m", "threshold": 5, **analysis},
        },
    })


def walk(canary: Canary, *, limit: int = 20) -> tuple[list[tuple[int, int, bool]], Step]:
    """Applies canary steps from 100/0 up to a non-routing step; returns the routes and the step."""
    current = Weights(primary=100, canary=0)
    routes = []
    for _ in range(limit):
        step = canary_step(canary, current, capabilities=ISTIO)
        if step.action is not Action.SET_ROUTES:
            return routes, step
        assert step.weights is not None
        current = step.weights
        routes.append((current.primary, current.canary, current.mirrored))
    raise AssertionError("did not finish")


@pytest.mark.parametrize(
    ("analysis", "canary_weights"),
    [
        pytest.param({"stepWeight": 10, "maxWeight": 50}, [10, 20, 30, 40, 50], id="step-10"),
        pytest.param({"stepWeight": 20, "maxWeight": 50}, [20, 40, 50], id="never-past-max-weight"),
        pytest.param({"stepWeights": [1, 2, 10, 80]}, [1, 2, 10, 80], id="step-weights"),
        pytest.param({"stepWeights": [1, 2, 10, 200]}, [1, 2, 10, 100], id="step-weights-over-100"),
        pytest.param({"stepWeight": 25}, [25, 50, 75, 100], id="max-weight-defaults-to-100"),
    ],
)
def test_canary_weights_then_promotion(analysis: dict[str, Any], canary_weights: list[int]) -> None:
    routes, last = walk(make_canary(**analysis))
    assert [canary for _, canary, _ in routes] == canary_weights
    assert all(primary + canary == 100 for primary, canary, _ in routes)
    assert last.action is Action.CONFIRM_PROMOTION
    assert last.weights is None  # promotion, not another route change


def test_stepweight_zero_never_advances() -> None:
    step = canary_step(make_canary(stepWeight=0), Weights(primary=100, canary=0),
                       capabilities=ISTIO)
    assert step == Step(Action.NOTHING)


def test_mirroring_adds_one_mirror_only_step() -> None:
    routes, _ = walk(make_canary(stepWeight=20, maxWeight=40, mirror=True))
    assert routes == [(100, 0, True), (80, 20, False), (60, 40, False)]


def test_next_step_weight_follows_step_weights() -> None:
    canary = make_canary(stepWeights=[5, 10, 50])
    assert [next_step_weight(canary, w) for w in (0, 5, 10, 50, 33, 100)] == [5, 5, 40, 50, 67, 1]


def test_canary_event_names_the_weight() -> None:
    step = canary_step(make_canary(stepWeight=10, maxWeight=50), Weights(primary=70, canary=30),
                       capabilities=ISTIO)
    assert step.event == "Advance podinfo.test canary weight 40"


def test_ab_testing_iterates_with_all_matching_traffic_on_the_canary() -> None:
    canary = make_canary(iterations=3, match=[{"headers": {"x-canary": {"exact": "insider"}}}])
    steps = [ab_step(canary, done=done, capabilities=ISTIO) for done in range(4)]
    assert [s.action for s in steps] == [Action.SET_ROUTES] * 3 + [Action.CONFIRM_PROMOTION]
    assert [s.iterations for s in steps[:3]] == [1, 2, 3]
    assert all(s.weights == Weights(primary=0, canary=100) for s in steps[:3])
    assert steps[1].event == "Advance podinfo.test canary iteration 2/3"


def test_blue_green_mirrors_then_switches_then_promotes() -> None:
    canary = make_canary(iterations=2, mirror=True)
    first = blue_green_step(canary, done=0, mirrored=False, capabilities=ISTIO)
    second = blue_green_step(canary, done=1, mirrored=True, capabilities=ISTIO)
    switch = blue_green_step(canary, done=2, mirrored=True, capabilities=ISTIO)
    promote = blue_green_step(canary, done=3, mirrored=False, capabilities=ISTIO)
    assert first.weights == second.weights == Weights(primary=100, canary=0, mirrored=True)
    assert (first.iterations, second.iterations) == (1, 2)
    assert switch.action is Action.CONFIRM_PROMOTION
    assert switch.weights == Weights(primary=0, canary=100)
    assert switch.iterations == 3
    assert switch.event == "Stop traffic mirroring and route all traffic to canary"
    assert promote == Step(Action.CONFIRM_PROMOTION)


def test_kubernetes_provider_defaults_to_ten_iterations_and_never_mirrors() -> None:
    canary = make_canary(mirror=True)
    step = blue_green_step(canary, done=0, mirrored=False, capabilities=KUBERNETES)
    assert step.weights == Weights(primary=100, canary=0, mirrored=False)
    assert step.event == "Advance podinfo.test canary iteration 1/10"
    assert blue_green_step(canary, done=10, mirrored=False, capabilities=KUBERNETES).event == ""


def test_promotion_shifts_back_by_step_weight_promotion() -> None:
    canary = make_canary(stepWeight=10, maxWeight=50, stepWeightPromotion=30)
    first = promotion_step(canary, Weights(primary=50, canary=50), capabilities=ISTIO)
    assert (first.action, first.weights) == (Action.SET_ROUTES, Weights(primary=80, canary=20))
    second = promotion_step(canary, Weights(primary=80, canary=20), capabilities=ISTIO)
    assert (second.action, second.weights) == (Action.FINALISE, Weights(primary=100, canary=0))
    assert second.event == "Advance podinfo.test primary weight 100"


def test_promotion_without_step_routes_everything_back_at_once() -> None:
    canary = make_canary(stepWeight=10, maxWeight=50)
    step = promotion_step(canary, Weights(primary=50, canary=50), capabilities=ISTIO)
    assert step == Step(Action.FINALISE, Weights(primary=100, canary=0),
                        event="Routing all traffic to primary")
    switched = promotion_step(canary, Weights(primary=50, canary=50), capabilities=KUBERNETES)
    assert switched.event == ""
