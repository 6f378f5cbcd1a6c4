"""The ``kubectl-flaggerpy`` entry: the user's kubeconfig, then one subcommand.

The read-only views live in :mod:`flaggerpy.kubectl.view` and the steering commands in
:mod:`flaggerpy.kubectl.steer`; each registers its subcommands on the parser built here, with a
``handler`` that takes the parsed arguments and the connected client and returns the exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import yaml

from flaggerpy import kube, logs
from flaggerpy.errors import ConfigError
from flaggerpy.kubectl import dashboard, steer, view

__all__ = ["Handler", "main"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
TLS_CLOSE_GRACE: Final = 0.25
"""Seconds for closed connections to finish their TLS shutdown before the loop ends."""

Handler = Callable[[argparse.Namespace, kube.KubeClient], Awaitable[int]]
"""What a subcommand runs: its arguments and a client of the user's API server; the exit status."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl flaggerpy",
        description="Look at flaggerpy (Flagger) canaries and steer them.")
    _connection_options(parser, default=None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    view.register(commands)
    steer.register(commands)
    dashboard.register(commands)
    # kubectl users put -n after the command as often as before it: each subcommand takes the
    # same options, and leaves the value given before it alone when they are absent.
    for subparser in commands.choices.values():
        _connection_options(subparser, default=argparse.SUPPRESS)
    return parser


def _connection_options(parser: argparse.ArgumentParser, *, default: str | None) -> None:
    parser.add_argument("--kubeconfig", default=default,
                        help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
    parser.add_argument("--context", default=default, help="kubeconfig context to use")
    parser.add_argument("-n", "--namespace", default=default,
                        help="namespace (default: the context's, else 'default')")


def _kubeconfig_paths(kubeconfig: str | None) -> list[pathlib.Path]:
    if kubeconfig:
        return [pathlib.Path(kubeconfig)]
    env = os.environ.get("KUBECONFIG")
    if env:
        return [pathlib.Path(p) for p in env.split(os.pathsep) if p]
    return [pathlib.Path.home() / ".kube" / "config"]


def context_namespace(kubeconfig: str | None, context: str | None) -> str:
    """The namespace kubectl would use: the context's ``namespace``, else ``default``.

    The context is ``context`` or the kubeconfig's ``current-context``; with several files in
    ``$KUBECONFIG`` the first to set a value wins, as kubectl merges them. An unreadable file
    counts as one that sets nothing: connecting will say what is wrong with it.
    """
    documents: list[dict[str, Any]] = []
    for path in _kubeconfig_paths(kubeconfig):
        try:
            loaded = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(loaded, dict):
            documents.append(loaded)
    name = context or next(
        (str(d["current-context"]) for d in documents if d.get("current-context")), None)
    for document in documents:
        for entry in document.get("contexts") or ():
            if isinstance(entry, dict) and entry.get("name") == name:
                namespace = (entry.get("context") or {}).get("namespace")
                if namespace:
                    return str(namespace)
    return "default"


async def _run(args: argparse.Namespace) -> int:
    handler: Handler = args.handler
    if not args.namespace:
        args.namespace = context_namespace(args.kubeconfig, args.context)
    client = await kube.KubeClient.connect(kubeconfig=args.kubeconfig, context=args.context,
                                           user_agent="kubectl-flaggerpy")
    try:
        async with client:
            return await handler(args, client)
    finally:
        # A watch stopped mid-stream closes its own TLS connection, outside the pool that the
        # client's close waits for; the TLS goodbye takes a round trip. Let it finish before
        # asyncio.run closes the loop, or the socket is left for the garbage collector.
        await asyncio.sleep(TLS_CLOSE_GRACE)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``kubectl flaggerpy`` with ``argv`` (default ``sys.argv[1:]``); the exit status."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    # Warnings only, on stderr: stdout is the command's output, and the informers and the
    # client log their routine reconnects at info.
    logs.configure(json=False, level="warning")
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 130
    except (ConfigError, kube.KubeError) as exc:
        print(f"kubectl flaggerpy: {exc}", file=sys.stderr)
        return EXIT_FAILED
