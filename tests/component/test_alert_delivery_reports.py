"""How each alert through an AlertProvider ended, as the Alerter reports it to ``on_delivery``.

Against local Slack receivers (:mod:`tests.receivers`): what the AlertProvider's status is
written from (flaggerpy.canary.template_status), so every outcome the conditions name is here,
and none carries the webhook URL or token.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest

from flaggerpy.canary.alerting import Alerter, Delivery, DeliveryCause
from flaggerpy.kube.keys import ObjectKey
from flaggerpy.models import Canary
from flaggerpy.settings import Settings
from tests.receivers import ChatReceiver

SECRET_PATH = "/services/T0SECRET/B0SECRET/XyZsEcReTtOkEn"
KEY = ObjectKey("test", "chat")


class Objects:
    """A dict-backed lookup, as an informer cache's ``get`` is."""

    def __init__(self, *objects: Mapping[str, Any]) -> None:
        self.objects = {ObjectKey(o["metadata"]["namespace"], o["metadata"]["name"]): o
                        for o in objects}

    def get(self, key: ObjectKey) -> Mapping[str, Any] | None:
        return self.objects.get(key)


def provider(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "flagger.app/v1beta1", "kind": "AlertProvider",
            "metadata": {"name": "chat", "namespace": "test"},
            "spec": {"type": "slack", "channel": "deploys", **spec}}


def secret(**data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "chat-url", "namespace": "test"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def canary() -> Canary:
    return Canary.model_validate({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                 "analysis": {"interval": "1m", "threshold": 5, "alerts": [
                     {"name": "chat", "severity": "info", "providerRef": {"name": "chat"}}]}},
    })


@pytest.fixture
async def slack(aiohttp_raw_server: Any) -> tuple[ChatReceiver, str]:
    receiver = ChatReceiver("slack")
    server = await aiohttp_raw_server(receiver.handle)
    return receiver, str(server.make_url("")).rstrip("/") + SECRET_PATH


@pytest.fixture
async def deliveries() -> AsyncIterator[Callable[..., Any]]:
    """Sends one alert through an Alerter over these objects; returns what it reported."""
    made: list[Alerter] = []

    async def send(*objects: Mapping[str, Any]) -> list[Delivery]:
        reported: list[Delivery] = []

        async def on_delivery(delivery: Delivery) -> None:
            reported.append(delivery)

        lookup = Objects(*objects)
        alerter = Alerter(settings=Settings.load(), providers=lookup.get, secrets=lookup.get,
                          on_delivery=on_delivery, post_timeout=2, deadline=10)
        made.append(alerter)
        await alerter.alert(canary(), "New revision detected, progressing canary analysis.")
        assert await alerter.flush(within=15)
        return reported

    yield send
    for alerter in made:
        await alerter.aclose(grace=0)


async def test_a_delivered_alert(slack: tuple[ChatReceiver, str],
                                 deliveries: Callable[..., Any]) -> None:
    receiver, url = slack
    [delivery] = await deliveries(provider(address=url))
    assert delivery == Delivery(provider=KEY, cause=DeliveryCause.DELIVERED,
                                message=delivery.message, secret=None)
    assert SECRET_PATH not in delivery.message
    assert len(receiver.requests) == 1


async def test_a_secret_that_is_used_is_reported_valid(
        slack: tuple[ChatReceiver, str], deliveries: Callable[..., Any]) -> None:
    _, url = slack
    [delivery] = await deliveries(provider(secretRef={"name": "chat-url"}), secret(address=url))
    assert (delivery.cause, delivery.secret) == (DeliveryCause.DELIVERED, True)


async def test_a_refused_post(slack: tuple[ChatReceiver, str],
                              deliveries: Callable[..., Any]) -> None:
    receiver, url = slack
    receiver.script((400, "invalid_payload"))
    [delivery] = await deliveries(provider(secretRef={"name": "chat-url"}), secret(address=url))
    assert (delivery.cause, delivery.secret) == (DeliveryCause.POST_FAILED, True)
    assert SECRET_PATH not in delivery.message


@pytest.mark.parametrize(("objects", "cause", "message"), [
    ((provider(secretRef={"name": "chat-url"}),), DeliveryCause.SECRET_NOT_FOUND,
     "Secret test/chat-url not found"),
    ((provider(secretRef={"name": "chat-url"}), secret(token="t")), DeliveryCause.SECRET_INVALID,
     "Secret test/chat-url has no address key"),
])
async def test_a_secret_that_cannot_be_used(
        deliveries: Callable[..., Any], objects: tuple[dict[str, Any], ...],
        cause: DeliveryCause, message: str) -> None:
    assert await deliveries(*objects) == [
        Delivery(provider=KEY, cause=cause, message=message, secret=False)]


async def test_an_address_that_is_missing_or_refused(deliveries: Callable[..., Any]) -> None:
    [missing] = await deliveries(provider())
    assert (missing.cause, missing.secret) == (DeliveryCause.ADDRESS_MISSING, None)
    [refused] = await deliveries(provider(address="not a url"))
    assert refused.cause is DeliveryCause.PROVIDER_INVALID


async def test_a_type_not_installed(deliveries: Callable[..., Any]) -> None:
    [delivery] = await deliveries(provider(type="pigeon", address="https://chat.example/hook"))
    assert delivery.cause is DeliveryCause.NOT_INSTALLED


async def test_a_provider_that_does_not_exist_reports_nothing(
        deliveries: Callable[..., Any]) -> None:
    assert await deliveries() == []
