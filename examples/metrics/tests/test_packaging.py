"""The installed package registers its provider as flaggerpy loads it; the controller says so."""

from __future__ import annotations

from typing import Any

import flaggerpy_jsonhttp
from flaggerpy_jsonhttp import JsonHttpProvider

from flaggerpy import sdk
from flaggerpy.testing import Sandbox, check_plugin_package, eventually


def test_it_is_a_flaggerpy_plugin_as_installed() -> None:
    plugin = check_plugin_package(flaggerpy_jsonhttp, group="flaggerpy.metrics", name="jsonhttp",
                                  contract=sdk.MetricsProvider)
    assert plugin is JsonHttpProvider


async def test_the_controller_reports_the_type_installed(flaggerpy_sandbox: Sandbox) -> None:
    """A MetricTemplate says in its own status whether its provider type is installed."""
    await flaggerpy_sandbox.start_controller()
    await flaggerpy_sandbox.apply({
        "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
        "metadata": {"name": "errors"},
        "spec": {"provider": {"type": "jsonhttp", "address": "http://metrics.example/v"},
                 "query": "errors"},
    })

    async def ready() -> dict[str, Any] | None:
        template = await flaggerpy_sandbox.get("MetricTemplate", "errors")
        conditions = ((template or {}).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c.get("type") == "Ready"), None)

    async def reported() -> bool:
        return await ready() is not None

    await eventually(reported, within=30, what="the MetricTemplate's Ready condition")
    condition = await ready()
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("True", "ProviderInstalled")
    assert condition["message"] == 'metrics provider type "jsonhttp" is installed'
