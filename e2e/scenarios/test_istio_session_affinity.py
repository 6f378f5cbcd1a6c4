"""Istio session affinity: a user who drew the canary stays on it, one who drew the primary
stays there, and after the run the canary cookie is taken back.

Requests go through the simulator's ingress as a browser would send them (``Host`` plus the
cookies it was given), so what is checked is the behaviour of the VirtualService the controller
wrote: the cookie routes, the ``Set-Cookie`` response headers and their ``Max-Age``.
"""

from __future__ import annotations

import pytest

from e2e.receiver import WebhookReceiver
from e2e.scenario import Scenario, deployment
from e2e.scenarios.mesh import Client, istio_canary, routes

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("flagger_crds")]

CANARY_COOKIE = "canary-flagger-cookie"
PRIMARY_COOKIE = "primary-flagger-cookie"
OLD, NEW = "podinfo:6.0.0", "podinfo:6.0.1"


async def first_user_served_by(mesh: Scenario, version: str, *, tries: int = 200) -> Client:
    """A new user whose very first request (routed by weight) was answered by ``version``."""
    for _ in range(tries):
        client = Client(mesh, "backend")
        reply = await client.get()
        assert reply.status == 200, reply
        if reply.version == version:
            return client
    raise AssertionError(f"no new user was served by {version} in {tries} tries")


async def test_users_stick_to_the_version_they_drew(
    mesh: Scenario, receiver: WebhookReceiver
) -> None:
    """Catalogue #8: cookie affinity at weight 30, then the canary cookie expired."""
    await mesh.start_controller("-mesh-provider=istio")
    receiver.answer("/promote", 403)
    affinity = {"cookieName": CANARY_COOKIE, "primaryCookieName": PRIMARY_COOKIE,
                "maxAge": 120}
    hooks = [{"name": "hold", "type": "confirm-promotion", "url": receiver.url("/promote")}]
    await mesh.apply(deployment("backend", image=OLD),
                     istio_canary("backend", stepWeight=10, maxWeight=30,
                                  sessionAffinity=affinity, webhooks=hooks))
    await mesh.wait_phase("backend", "Initialized", within=60)
    await mesh.kubectl("set", "image", "deployment/backend", f"backend={NEW}")
    status = await mesh.wait_phase("backend", "WaitingPromotion", within=90)
    # Flagger's status shows weight 0 while waiting for promotion; the routes keep the split.
    assert routes(await mesh.get("virtualservices.networking.istio.io", "backend")) == {
        "backend-primary": 70, "backend-canary": 30}
    canary_cookie = status["sessionAffinityCookie"]
    assert canary_cookie.startswith(CANARY_COOKIE + "=")

    on_canary = await first_user_served_by(mesh, NEW)
    assert on_canary.cookie(CANARY_COOKIE) == canary_cookie
    on_primary = await first_user_served_by(mesh, OLD)
    assert on_primary.cookie(PRIMARY_COOKIE) is not None
    assert on_primary.cookie(CANARY_COOKIE) is None
    for _ in range(20):
        assert (await on_canary.get()).version == NEW
        assert (await on_primary.get()).version == OLD

    receiver.answer("/promote", 200)
    status = await mesh.wait_phase("backend", "Succeeded", within=90)
    assert status["previousSessionAffinityCookie"] == canary_cookie
    assert not status.get("sessionAffinityCookie")
    # The user who had the canary is now served by the promoted primary, and told to forget
    # the canary cookie.
    reply = await on_canary.get_served()
    assert reply.version == NEW
    assert any(value.startswith(canary_cookie) and "Max-Age=-1" in value
               for value in reply.set_cookies), reply.set_cookies
    assert on_canary.cookie(CANARY_COOKIE) is None
