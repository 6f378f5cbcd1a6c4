"""The simulator as one object: the world, the backends, the data plane, the traffic and ports.

``Simulator(config).run()`` runs until cancelled and always cleans up: on the way out it stops
the traffic, every backend process and both listeners, even when it is cancelled mid-start.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from e2e.simulator.backends import BackendPool
from e2e.simulator.meshes import mesh
from e2e.simulator.servers import ingress_app, metrics_app, serve
from e2e.simulator.traffic import DataPlane, TrafficGenerator
from e2e.simulator.users import Trait, UserPool
from e2e.simulator.world import World
from flaggerpy import kube

__all__ = ["Simulator", "SimulatorConfig"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatorConfig:
    """Everything the CLI can set (see ``python -m e2e.simulator --help``)."""

    namespaces: Sequence[str]
    kubeconfig: str | None = None
    mesh: str = "istio"
    listen_address: str = "127.0.0.1"
    metrics_port: int = 0
    ingress_port: int | None = None
    rps: float = 20.0
    max_rps: float = 200.0
    max_in_flight: int = 200
    users: int = 100
    user_headers: Sequence[Trait] = ()
    user_cookies: Sequence[Trait] = ()
    path: str = "/"
    request_timeout: float = 15.0
    resync_period: float = 5.0
    drain_grace: float = 5.0
    seed: int | None = None


class Simulator:
    """Runs the simulated mesh for the namespaces in its config."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.registry = CollectorRegistry(auto_describe=True)
        self.mesh = mesh(config.mesh)
        self.adapter = self.mesh.adapter(self.registry)
        self.metrics_port = 0
        self.ingress_port: int | None = None
        self.ready = asyncio.Event()
        self._changed = asyncio.Event()
        self._runners: list[web.AppRunner] = []

    async def run(self) -> None:
        """Runs until cancelled; everything started is stopped on the way out."""
        config = self.config
        rng = random.Random(config.seed)
        pool = BackendPool(seed=config.seed, drain_grace=config.drain_grace)
        client = await kube.KubeClient.connect(kubeconfig=config.kubeconfig)
        try:
            world = World.watching(client, config.namespaces, source=self.mesh.source())
            users = UserPool(config.users, rng=random.Random(rng.random()),
                             headers=config.user_headers, cookies=config.user_cookies)
            async with DataPlane(world, pool, self.adapter, rng=rng,
                                 timeout=config.request_timeout,
                                 max_in_flight=config.max_in_flight) as plane:
                generator = TrafficGenerator(
                    world, plane, users, rps=config.rps, max_rps=config.max_rps,
                    path=config.path, registry=self.registry)
                try:
                    await self._serve(pool, plane, generator)

                    def changed() -> None:
                        self._changed.set()
                        if self.ready.is_set():
                            generator.sync()

                    world.on_change(changed)
                    async with asyncio.TaskGroup() as group:
                        group.create_task(world.start())
                        group.create_task(self._sync_backends(world, pool, generator))
                finally:
                    await generator.aclose()
                    await pool.aclose()
                    for runner in self._runners:
                        await runner.cleanup()
        finally:
            await client.aclose()

    async def _serve(
        self, pool: BackendPool, plane: DataPlane, generator: TrafficGenerator
    ) -> None:
        config = self.config
        runner, self.metrics_port = await serve(
            metrics_app(self.registry, backends=pool, generator=generator,
                        ready=self.ready.is_set),
            host=config.listen_address, port=config.metrics_port)
        self._runners.append(runner)
        if config.ingress_port is not None:
            runner, self.ingress_port = await serve(
                ingress_app(plane, namespace=config.namespaces[0]),
                host=config.listen_address, port=config.ingress_port)
            self._runners.append(runner)
        log.info("simulator_listening", metrics_port=self.metrics_port,
                 ingress_port=self.ingress_port, mesh=self.adapter.name)

    async def _sync_backends(
        self, world: World, pool: BackendPool, generator: TrafficGenerator
    ) -> None:
        """Brings the backend processes in line with the Deployments, one sync at a time.

        Runs after every change (collapsed: a burst of events is one sync) and every
        ``resync_period`` seconds, which also restarts a backend that crashed. Traffic starts
        only after the first sync, so the first requests do not all fail for want of backends.
        """
        await world.wait_synced()
        while True:
            self._changed.clear()
            await pool.sync(world.desired_backends())
            if not self.ready.is_set():
                self.ready.set()
                generator.sync()
                log.info("simulator_ready", namespaces=list(world.namespaces),
                         backends=len(pool.all()), streams=len(generator.streams),
                         metrics_port=self.metrics_port, ingress_port=self.ingress_port)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.config.resync_period)
