"""``flaggerpy loadtester``: the process, run as the controller is, by the runtime manager.

The manager handles SIGTERM and SIGINT: the server stops listening, running
tasks' process groups are killed, blocking requests in flight answer 503,
and the process exits 0.
"""

from __future__ import annotations

import asyncio

from flaggerpy.loadtester.config import LoadTesterSettings
from flaggerpy.loadtester.server import LoadTesterServer
from flaggerpy.runtime.manager import Manager

__all__ = ["run", "serve"]


def run(settings: LoadTesterSettings) -> int:
    """Runs the load tester until a signal stops it; returns the exit status."""
    asyncio.run(serve(settings))
    return 0


async def serve(settings: LoadTesterSettings) -> None:
    """Serves until a signal (or a failure) stops the manager."""
    manager = Manager(runnables=[LoadTesterServer(settings)])
    await manager.run()
