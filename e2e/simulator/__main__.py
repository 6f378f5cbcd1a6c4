"""``python -m e2e.simulator``: the traffic simulator's command line.

Example::

    python -m e2e.simulator --kubeconfig .cluster/default/kubeconfig --namespace test \\
        --metrics-port 9091 --ingress-port 8080 --rps 20 \\
        --user-header "x-canary=insider:0.1" --user-cookie "canary=always:0.1"

SIGTERM or SIGINT stops it cleanly (traffic, backends, listeners); it exits 0 then. Logs are
flaggerpy's structured lines on stderr (``--log-encoding json|console|auto``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

import prometheus_client

from e2e.simulator.meshes import MESHES
from e2e.simulator.simulator import Simulator, SimulatorConfig
from e2e.simulator.users import parse_trait
from flaggerpy import logs
from flaggerpy.errors import ConfigError

__all__ = ["main", "parse_args"]


def _trait(text: str) -> object:
    try:
        return parse_trait(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be > 0")
    return value


def parse_args(argv: Sequence[str] | None = None) -> tuple[SimulatorConfig, argparse.Namespace]:
    """The simulator's config from the command line (and the raw namespace, for logging)."""
    parser = argparse.ArgumentParser(
        prog="python -m e2e.simulator",
        description="Simulated service-mesh data plane: routes generated and ingress traffic "
                    "through the cluster's routing objects to per-Deployment backends and "
                    "exports the mesh's metrics.")
    parser.add_argument("--kubeconfig", help="kubeconfig of the cluster (default: $KUBECONFIG)")
    parser.add_argument("--namespace", "-n", action="append", required=True, dest="namespaces",
                        help="namespace to watch; repeat for more (the first is the ingress's "
                             "default for short host names)")
    parser.add_argument("--mesh", choices=sorted(MESHES), default="istio",
                        help="the routing objects to follow and the metrics to export "
                             "(default: istio)")
    parser.add_argument("--metrics-port", type=int, default=0,
                        help="port of /metrics, /healthz, /backends (default: a free port)")
    parser.add_argument("--ingress-port", type=int, default=None,
                        help="port that routes any request by its Host header (default: off; "
                             "0: a free port)")
    parser.add_argument("--listen-address", default="127.0.0.1")
    parser.add_argument("--rps", type=_positive, default=20.0,
                        help="requests per second per VirtualService (default: 20)")
    parser.add_argument("--max-rps", type=_positive, default=200.0,
                        help="cap on generated requests per second, all streams together "
                             "(default: 200)")
    parser.add_argument("--max-in-flight", type=int, default=200,
                        help="outstanding requests beyond which generated ones are skipped")
    parser.add_argument("--users", type=int, default=100, help="simulated users (default: 100)")
    parser.add_argument("--user-header", action="append", type=_trait, default=[],
                        metavar="NAME=VALUE:SHARE",
                        help="a share of users send this header, e.g. x-canary=insider:0.1")
    parser.add_argument("--user-cookie", action="append", type=_trait, default=[],
                        metavar="NAME=VALUE:SHARE",
                        help="a share of users carry this cookie, e.g. canary=always:0.1")
    parser.add_argument("--path", default="/", help="path of generated requests (default: /)")
    parser.add_argument("--request-timeout", type=_positive, default=15.0,
                        help="seconds before a request without a route timeout gets a 504")
    parser.add_argument("--resync-period", type=_positive, default=5.0,
                        help="seconds between backend resyncs (restarts crashed backends)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed every random draw (routing, users, faults)")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-encoding", default="auto", choices=["json", "console", "auto"])
    args = parser.parse_args(argv)
    config = SimulatorConfig(
        namespaces=tuple(args.namespaces), kubeconfig=args.kubeconfig, mesh=args.mesh,
        listen_address=args.listen_address, metrics_port=args.metrics_port,
        ingress_port=args.ingress_port, rps=args.rps, max_rps=args.max_rps,
        max_in_flight=args.max_in_flight, users=args.users,
        user_headers=tuple(args.user_header), user_cookies=tuple(args.user_cookie),
        path=args.path, request_timeout=args.request_timeout,
        resync_period=args.resync_period, seed=args.seed)
    return config, args


async def _run(config: SimulatorConfig) -> None:
    """Runs the simulator until SIGTERM/SIGINT cancels it (it cleans up on its way out)."""
    runner = asyncio.create_task(Simulator(config).run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runner.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await runner


def main(argv: Sequence[str] | None = None) -> int:
    config, args = parse_args(argv)
    try:
        logs.configure(json=logs.wants_json(args.log_encoding), level=args.log_level)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Istio's proxies export no ``*_created`` series; neither should their stand-in.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    # A process started in the background by a non-interactive shell inherits SIGINT ignored,
    # and Python keeps it so; take it back so an interrupt before the loop runs still stops it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        asyncio.run(_run(config))
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
