"""``kubectl flaggerpy dashboard``: the canaries as a web page, served on localhost.

The page is served by the user's own process through the user's kubeconfig, so it shows exactly
what the user may read and steers exactly as the user may: there is no second identity to
authenticate, and the API server authorises each read and each CanaryCommand itself. It listens
on loopback only (the page acts with the user's credentials), answers only requests addressed to
a loopback name (a page elsewhere cannot reach it through DNS rebinding), and its steering forms
carry a CSRF token. Each request reads the API server afresh: one person's dashboard costs a few
reads every refresh, and needs no cache to go stale.

The pages, the chart and the steering are :mod:`flaggerpy.dashboard`'s, the same the controller
serves behind ``-dashboard-listen-address``; only where the canaries come from differs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final

from aiohttp import web

from flaggerpy import kube
from flaggerpy.dashboard import auth, commands, server, summary
from flaggerpy.models import canary_command

__all__ = ["ApiSource", "build_app", "register", "serve"]

DEFAULT_PORT: Final = 8421
DEFAULT_REFRESH: Final = server.DEFAULT_REFRESH


class ApiSource:
    """Canaries and Events read from the API server as the user."""

    def __init__(self, client: kube.KubeClient) -> None:
        self._client = client

    async def canaries(self, namespace: str | None) -> Sequence[Mapping[str, Any]]:
        return (await self._client.list(kube.CANARIES, namespace=namespace)).items

    async def canary(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        try:
            return await self._client.get(kube.CANARIES, name, namespace=namespace)
        except kube.NotFoundError:
            return None

    async def events(self, namespace: str, name: str) -> Sequence[Mapping[str, Any]]:
        return (await self._client.list(
            kube.EVENTS, namespace=namespace,
            field_selector=summary.events_selector(name))).items


def build_app(
        client: kube.KubeClient,
        *,
        namespace: str | None,
        refresh: int = DEFAULT_REFRESH,
) -> web.Application:
    """The dashboard of ``namespace`` (every namespace when None), acting as ``client``."""
    async def steer(canary: Mapping[str, Any], action: canary_command.Action,
                    user: auth.User | None) -> str:
        created = await commands.create(client, canary, action=action,
                                        reason="from kubectl flaggerpy dashboard")
        return str(created["metadata"]["name"])

    return server.build_app(
        ApiSource(client), steer=steer, reviewer=None, namespace=namespace, refresh=refresh,
        banner=f"as your kubeconfig's user, on {client.server}", events_in_timeline=True)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``dashboard`` to the ``kubectl flaggerpy`` parser."""
    parser = commands.add_parser(
        "dashboard", help="serve a web page of the canaries on localhost, to watch and steer them")
    parser.add_argument("-A", "--all-namespaces", action="store_true",
                        help="show canaries of every namespace")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on, on 127.0.0.1 (default: {DEFAULT_PORT})")
    parser.add_argument("--refresh", type=int, default=DEFAULT_REFRESH,
                        help="seconds between page updates (0: never)")
    parser.set_defaults(handler=serve)


async def serve(args: argparse.Namespace, client: kube.KubeClient) -> int:
    """Serves the dashboard until Ctrl-C."""
    namespace = None if args.all_namespaces else args.namespace
    app = build_app(client, namespace=namespace, refresh=args.refresh)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", args.port).start()
        print(f"Serving the canaries of {namespace or 'every namespace'} on "
              f"http://localhost:{args.port}/ (Ctrl-C stops)", file=sys.stderr)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
    return 0
