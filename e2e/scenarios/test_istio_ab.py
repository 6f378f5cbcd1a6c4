"""Istio A/B testing: only the users a match selects reach the new version.

30 % of the simulated users carry the header (or cookie) the Canary matches; the share of
requests that reaches the canary, measured in Prometheus, must be theirs and nobody else's.
"""

from __future__ import annotations

import pytest

from e2e.receiver import WebhookReceiver
from e2e.scenario import Scenario, container_image, deployment
from e2e.scenarios.mesh import MeshStarter, istio_canary, routes, settled_share

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds")]

INSIDER_COOKIE = r"^(.*?;)?(type=insider)(;.*)?$"
"""Flagger's e2e cookie regex (test/istio, part 3)."""

SUCCESS_RATE = [{"name": "request-success-rate", "thresholdRange": {"min": 99},
                 "interval": "30s"}]


async def test_header_match_sends_only_matching_users_to_the_canary(mesh: Scenario) -> None:
    await mesh.start_controller("-mesh-provider=istio")
    match = [{"headers": {"x-canary": {"exact": "insider"}}}]
    await mesh.apply(deployment("frontend", image="podinfo:6.0.0"),
                     # Iterations that outlast the measurement on a busy machine: the share
                     # is read while the run is still on, never after its promotion.
                     istio_canary("frontend", iterations=60, match=match, metrics=SUCCESS_RATE))
    await mesh.wait_phase("frontend", "Initialized", within=60)
    await mesh.kubectl("set", "image", "deployment/frontend", "frontend=podinfo:6.0.1")
    await mesh.wait_phase("frontend", "Progressing", within=30)
    share = await settled_share(mesh, "frontend", 0.3)
    print(f"A/B canary share with 30% insiders: {share:.2f}")


async def test_cookie_regex_with_confirm_promotion_and_post_rollout(
    start_mesh: MeshStarter, receiver: WebhookReceiver
) -> None:
    """Catalogue #3: insiders (by cookie) see the canary until a gate lets it be promoted."""
    mesh = await start_mesh("--user-cookie=type=insider:0.3")
    await mesh.start_controller("-mesh-provider=istio")
    receiver.answer("/gate/approve", 403)
    hooks = [
        {"name": "approve", "type": "confirm-promotion", "url": receiver.url("/gate/approve")},
        {"name": "notify", "type": "post-rollout", "url": receiver.url("/post")},
    ]
    match = [{"headers": {"cookie": {"regex": INSIDER_COOKIE}}}]
    await mesh.apply(deployment("frontend", image="podinfo:6.0.0"),
                     istio_canary("frontend", iterations=5, match=match, metrics=SUCCESS_RATE,
                                  webhooks=hooks))
    await mesh.wait_phase("frontend", "Initialized", within=60)
    await mesh.kubectl("set", "image", "deployment/frontend", "frontend=podinfo:6.0.3")

    # Five iterations pass; the closed gate holds the run with the insiders on the canary.
    await mesh.wait_phase("frontend", "WaitingPromotion", within=90)
    virtual_service = await mesh.get("virtualservices.networking.istio.io", "frontend")
    assert virtual_service is not None
    assert virtual_service["spec"]["http"][0]["match"] == match
    assert routes(virtual_service, rule=0) == {"frontend-primary": 0, "frontend-canary": 100}
    assert routes(virtual_service) == {"frontend-primary": 100}
    share = await settled_share(mesh, "frontend", 0.3)
    print(f"A/B canary share with 30% insider cookies: {share:.2f}")
    assert receiver.bodies("/post") == [], "post-rollout ran before the run ended"

    receiver.answer("/gate/approve", 200)
    await mesh.wait_phase("frontend", "Succeeded", within=90)
    assert container_image(await mesh.get("deployment", "frontend-primary")) == "podinfo:6.0.3"
    posted = receiver.bodies("/post")
    assert posted, "post-rollout was not called"
    assert posted[-1]["phase"] == "Succeeded", posted
    assert routes(await mesh.get("virtualservices.networking.istio.io", "frontend"), rule=0) == {
        "frontend-primary": 100, "frontend-canary": 0}
