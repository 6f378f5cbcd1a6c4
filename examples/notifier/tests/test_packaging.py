"""The installed package registers its notifier as flaggerpy loads it, and keeps the contract."""

from __future__ import annotations

import flaggerpy_jsonhook
from flaggerpy_jsonhook import JsonHookNotifier

from flaggerpy import sdk
from flaggerpy.testing import check_plugin_package


def test_it_is_a_flaggerpy_plugin_as_installed() -> None:
    plugin = check_plugin_package(flaggerpy_jsonhook, group="flaggerpy.notifiers", name="jsonhook",
                                  contract=sdk.Notifier)
    assert plugin is JsonHookNotifier
