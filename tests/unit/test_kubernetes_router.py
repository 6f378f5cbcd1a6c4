"""The ``kubernetes`` provider (Flagger's NopRouter): weights from the status, no writes."""

from __future__ import annotations

from typing import Any

import pytest
import structlog

from flaggerpy import kube, plugins
from flaggerpy.errors import PluginError
from flaggerpy.models.canary import Canary
from flaggerpy.providers.kubernetes import NopRouter
from flaggerpy.routing import ProviderContext, Router, Weights
from flaggerpy.settings import Settings


def make_canary(status: dict[str, Any] | None = None) -> Canary:
    obj: dict[str, Any] = {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test", "uid": "u"},
        "spec": {
            "provider": "kubernetes",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {"interval": "1m", "threshold": 5, "iterations": 10},
        },
    }
    if status is not None:
        obj["status"] = status
    return Canary.model_validate(obj)


@pytest.fixture
def router() -> NopRouter:
    ctx = ProviderContext(store=kube.ObjectStore(None), settings=Settings(),  # no I/O here
                           log=structlog.get_logger("test"))
    return NopRouter(ctx=ctx, variant="")


@pytest.mark.parametrize(
    ("status", "weights"),
    [
        pytest.param(None, Weights(100, 0), id="no-status"),
        pytest.param({}, Weights(100, 0), id="empty-status"),
        pytest.param({"phase": "Progressing", "iterations": 0}, Weights(100, 0), id="zero"),
        pytest.param({"phase": "Progressing", "iterations": 1}, Weights(0, 100), id="first"),
        pytest.param({"phase": "Progressing", "iterations": 9}, Weights(0, 100), id="later"),
        pytest.param({"phase": "Succeeded", "iterations": 0}, Weights(100, 0), id="promoted"),
    ],
)
async def test_get_routes_follows_status_iterations(
        router: NopRouter, status: dict[str, Any] | None, weights: Weights,
) -> None:
    got = await router.get_routes(make_canary(status))
    assert got == weights
    assert got.mirrored is False


async def test_writes_nothing_and_changes_nothing(router: NopRouter) -> None:
    canary = make_canary({"phase": "Progressing", "iterations": 3})
    before = canary.to_dict()
    await router.reconcile(canary)
    await router.set_routes(canary, Weights.all_canary())
    await router.set_routes(canary, Weights.all_primary(mirrored=True))
    await router.finalize(canary)
    assert canary.to_dict() == before
    # set_routes does not change what get_routes reports: the status does.
    assert await router.get_routes(canary) == Weights(0, 100)


def test_a_variant_is_refused() -> None:
    ctx = ProviderContext(store=kube.ObjectStore(None), settings=Settings(),  # no I/O here
                           log=structlog.get_logger("test"))
    with pytest.raises(PluginError, match="kubernetes:v1"):
        NopRouter(ctx=ctx, variant="v1")


def test_registered_as_the_kubernetes_router() -> None:
    plugin = plugins.routers.get("kubernetes")
    assert plugin.factory is NopRouter
    assert plugin.variant == ""
    assert issubclass(NopRouter, Router)
