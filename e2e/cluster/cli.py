"""Command line of ``e2e/cluster/up``, ``e2e/cluster/down`` and ``e2e/cluster/status``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from e2e.cluster.localcluster import DEFAULT_ROOT, LocalCluster


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"e2e/cluster/{command}")
    parser.add_argument("--name", default="default", help="cluster name (its state folder)")
    parser.add_argument(
        "--root", type=Path, default=DEFAULT_ROOT, help="folder holding state folders"
    )
    if command == "up":
        parser.add_argument(
            "--crds",
            action="store_true",
            help="install the upstream CRDs from ../shared/reference/crds (server-side apply)",
        )
        parser.add_argument(
            "--timeout", type=float, default=120.0, help="seconds to wait for readiness"
        )
    return parser


def main(command: str, argv: list[str] | None = None) -> int:
    args = _parser(command).parse_args(argv)
    cluster = LocalCluster(args.name, root=args.root)
    if command == "up":
        state = cluster.up(install_crds=args.crds, timeout=args.timeout)
        print(f"# cluster {state.name!r}: API server {state.server}, etcd {state.etcd_url}")
        print(f"# audit log: {cluster.audit_log}")
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        print(f"export FLAGGERPY_CLUSTER={cluster.state_dir}")
        print(f'export PATH="{cluster.bin_dir}:$PATH"')
    elif command == "down":
        cluster.down()
    elif command == "status":
        if not cluster.is_running():
            print(f"cluster {args.name!r} is not running")
            return 1
        print(f"cluster {args.name!r} running at {cluster.state().server}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
