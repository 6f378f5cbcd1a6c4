"""How each deployment strategy advances one analysis tick: pure decisions, no I/O.

Flagger's ``runCanary``, ``runAB``, ``runBlueGreen`` and ``runPromotionTrafficShift`` mix the
decision with the API calls that carry it out. Here the decision is a value (:class:`Step`) that
the lifecycle engine applies, so every weight sequence of the spec (§2.4) is unit-testable and
the same logic serves every router. What a router can do comes from its
:class:`~flaggerpy.routing.Capabilities`, never from its provider name.

One deliberate difference (spec §10.4): a canary step never routes more than ``maxWeight`` to the
canary. Flagger adds ``stepWeight`` unclamped, so ``stepWeight: 20, maxWeight: 50`` goes
20, 40, 60; here it goes 20, 40, 50.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from flaggerpy.models import Canary
from flaggerpy.routing import TOTAL_WEIGHT, Capabilities, Traffic, Weights

SWITCH_DEFAULT_ITERATIONS = 10
"""Flagger's iterations for a canary on a switch-only router (its ``kubernetes`` provider) that
sets none: there is no progressive traffic to count in weights."""


class Action(enum.Enum):
    """What the engine does after the analysis of a tick passed."""

    SET_ROUTES = "set_routes"
    """Route ``weights`` and record the new weight / iteration."""
    CONFIRM_PROMOTION = "confirm_promotion"
    """Ask the confirm-promotion gates; once they pass, route ``weights`` if the step has any
    (blue/green's one tick at 100 % canary), else copy the canary to the primary (Promoting)."""
    FINALISE = "finalise"
    """Route ``weights`` (all primary) and move to Finalising."""
    NOTHING = "nothing"
    """Stay: e.g. stepWeight 0 and no stepWeights never advances."""


@dataclass(frozen=True, slots=True)
class Step:
    """One tick's decision: the action, the routes to set, and the status counters to record."""

    action: Action
    weights: Weights | None = None
    iterations: int | None = None
    event: str = ""


def next_step_weight(canary: Canary, canary_weight: int) -> int:
    """Flagger's ``nextStepWeight``: the increment from ``canary_weight``."""
    analysis = canary.spec.analysis
    step_weight = analysis.step_weight or 0
    step_weights = list(analysis.step_weights or [])
    if step_weight > 0 or not step_weights:
        return step_weight
    max_step = TOTAL_WEIGHT - canary_weight
    if max_step == 0:
        return 1
    if canary_weight == 0:
        return min(max_step, step_weights[0])
    for index, weight in enumerate(step_weights[:-1]):
        if weight == canary_weight:
            return min(max_step, step_weights[index + 1] - canary_weight)
    return max_step


def max_weight(canary: Canary) -> int:
    """The canary weight at which analysis ends and promotion begins."""
    return canary.spec.analysis.get_max_weight()


def canary_step(canary: Canary, current: Weights, *, capabilities: Capabilities) -> Step:
    """``runCanary``: one weight step, a mirror-only first step, or promotion at max weight.

    The mirror-only step is skipped on a router without mirroring: it would never report the
    mirror back, and the canary would ask for it again on every tick.
    """
    name = f"{canary.name}.{canary.namespace}"
    limit = max_weight(canary)
    if current.canary >= limit:
        return Step(Action.CONFIRM_PROMOTION)  # promotion records "Copying ... template spec"
    step = next_step_weight(canary, current.canary)
    if step <= 0:
        return Step(Action.NOTHING)
    if capabilities.mirroring and canary.spec.analysis.mirror and current.canary == 0:
        if not current.mirrored:
            weights = Weights(primary=TOTAL_WEIGHT, canary=0, mirrored=True)
        else:
            canary_weight = min(step, limit)
            weights = Weights(primary=TOTAL_WEIGHT - canary_weight, canary=canary_weight)
    else:
        canary_weight = min(current.canary + step, limit, TOTAL_WEIGHT)
        weights = Weights(primary=TOTAL_WEIGHT - canary_weight, canary=canary_weight)
    return Step(Action.SET_ROUTES, weights=weights,
                event=f"Advance {name} canary weight {weights.canary}")


def iterations_for(canary: Canary, *, capabilities: Capabilities) -> int:
    """The iteration count of A/B and blue/green; a switch-only router defaults to 10."""
    iterations = canary.spec.analysis.iterations or 0
    if capabilities.traffic is Traffic.SWITCH and iterations < 1:
        return SWITCH_DEFAULT_ITERATIONS
    return iterations


def ab_step(canary: Canary, *, done: int, capabilities: Capabilities) -> Step:
    """``runAB``: all matching traffic to the canary for N iterations, then promotion."""
    total = iterations_for(canary, capabilities=capabilities)
    if total > done:
        return Step(
            Action.SET_ROUTES,
            weights=Weights(primary=0, canary=TOTAL_WEIGHT),
            iterations=done + 1,
            event=f"Advance {canary.name}.{canary.namespace} canary iteration {done + 1}/{total}",
        )
    return Step(Action.CONFIRM_PROMOTION)


def blue_green_step(
        canary: Canary, *, done: int, mirrored: bool, capabilities: Capabilities,
) -> Step:
    """``runBlueGreen``: N iterations at 0 % (optionally mirrored), one at 100 %, then promotion.

    A switch-only router gets no Event for the switch to the canary: it routes nothing until
    promotion, so Flagger says nothing for its ``kubernetes`` provider.
    """
    total = iterations_for(canary, capabilities=capabilities)
    switch_only = capabilities.traffic is Traffic.SWITCH
    name = f"{canary.name}.{canary.namespace}"
    if total > done:
        mirror = capabilities.mirroring and not switch_only and bool(canary.spec.analysis.mirror)
        return Step(
            Action.SET_ROUTES,
            weights=Weights(primary=TOTAL_WEIGHT, canary=0, mirrored=mirror or mirrored),
            iterations=done + 1,
            event=f"Advance {name} canary iteration {done + 1}/{total}",
        )
    if total == done:
        return Step(
            Action.CONFIRM_PROMOTION,
            weights=Weights(primary=0, canary=TOTAL_WEIGHT),
            iterations=done + 1,
            event="" if switch_only else (
                "Stop traffic mirroring and route all traffic to canary" if mirrored
                else "Routing all traffic to canary"
            ),
        )
    return Step(Action.CONFIRM_PROMOTION)


def promotion_step(canary: Canary, current: Weights, *, capabilities: Capabilities) -> Step:
    """``runPromotionTrafficShift``: back to the primary at once, or by ``stepWeightPromotion``.

    A switch-only router has no weights to shift back: it finalises at once, without an Event.
    """
    name = f"{canary.name}.{canary.namespace}"
    all_primary = Weights(primary=TOTAL_WEIGHT, canary=0)
    if capabilities.traffic is Traffic.SWITCH:
        return Step(Action.FINALISE, weights=all_primary)
    step = canary.spec.analysis.step_weight_promotion or 0
    if step == 0 or current.canary == 0:
        return Step(Action.FINALISE, weights=all_primary, event="Routing all traffic to primary")
    primary = min(TOTAL_WEIGHT, current.primary + step)
    weights = Weights(primary=primary, canary=TOTAL_WEIGHT - primary)
    action = Action.FINALISE if primary == TOTAL_WEIGHT else Action.SET_ROUTES
    return Step(action, weights=weights, event=f"Advance {name} primary weight {primary}")
