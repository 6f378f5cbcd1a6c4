"""The installed package registers its router as flaggerpy loads it, and keeps the contract."""

from __future__ import annotations

import flaggerpy_splitmap
from flaggerpy_splitmap import SplitmapRouter

from flaggerpy import sdk
from flaggerpy.testing import check_plugin_package


def test_it_is_a_flaggerpy_plugin_as_installed() -> None:
    plugin = check_plugin_package(flaggerpy_splitmap, group="flaggerpy.routers", name="splitmap",
                                  contract=sdk.Router)
    assert plugin is SplitmapRouter


def test_it_declares_what_it_can_do() -> None:
    assert SplitmapRouter.capabilities == sdk.Capabilities(
        ab_matches=False, mirroring=False, session_affinity=False)
