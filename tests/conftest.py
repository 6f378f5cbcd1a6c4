"""Shared test configuration (no cluster here: see tests/integration/conftest.py)."""

from __future__ import annotations

import asyncio

import pytest


def pytest_sessionstart(session: pytest.Session) -> None:
    # looptime asks the event loop policy for the current loop before every test,
    # sync ones included. Before any loop was ever set, asyncio answers by creating
    # one that nobody closes, and a later async test drops it: "ResourceWarning:
    # unclosed event loop", an error under filterwarnings=error. Declaring "no
    # current loop" up front makes that question raise instead, which looptime
    # expects; pytest-asyncio still sets a loop for every async test.
    asyncio.set_event_loop(None)
