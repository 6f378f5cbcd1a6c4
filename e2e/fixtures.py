"""Fixtures of a scenario and the processes it talks to besides the cluster: the namespace's
:class:`~e2e.scenario.Scenario`, a webhook receiver, ``flaggerpy loadtester`` and the controller
processes a test starts. Shared by the integration tests and the end-to-end scenarios (each
conftest imports them)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest
import structlog

from e2e.cluster.localcluster import LocalCluster
from e2e.processes import ControllerProcess, LoadTesterProcess
from e2e.receiver import WebhookReceiver
from e2e.scenario import Scenario
from flaggerpy.testing import receiving

__all__ = ["cli_logging", "loadtester", "processes", "receiver", "scenario"]


@pytest.fixture
def cli_logging() -> Iterator[None]:
    """For a test that runs a command line in-process (``kubectl flaggerpy``'s ``main``): it
    configures logging for a terminal, at warning level, and that would silence the info lines
    later tests in the same worker capture; it is put back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    library_levels = {name: logging.getLogger(name).level
                      for name in ("kubernetes_asyncio", "aiohttp.access")}
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    for name, library_level in library_levels.items():
        logging.getLogger(name).setLevel(library_level)
    structlog.reset_defaults()


@pytest.fixture
async def scenario(cluster: LocalCluster, namespace: str) -> AsyncIterator[Scenario]:
    """The test's namespace as a scenario: apply, wait for phases, start controllers; every
    process it started is stopped at teardown."""
    running = await Scenario(cluster, namespace).start()
    try:
        yield running
    finally:
        await running.aclose()


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """An HTTP endpoint for webhooks whose answers a test sets (gates, post-rollout)."""
    async with receiving() as running:
        yield running


@pytest.fixture
def loadtester() -> Iterator[LoadTesterProcess]:
    """``flaggerpy loadtester`` on a free loopback port, for bash/cmd webhooks and gates."""
    running = LoadTesterProcess().start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def processes() -> Iterator[list[ControllerProcess]]:
    """Controller processes a test started; each is killed at teardown if still running."""
    started: list[ControllerProcess] = []
    yield started
    for process in started:
        process.stop()
