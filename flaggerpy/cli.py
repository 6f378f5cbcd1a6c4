"""The ``flaggerpy`` command.

Subcommands::

    flaggerpy controller [flags]   run the operator (Flagger's ``flagger`` binary)
    flaggerpy version              print the version
    flaggerpy crds                 print the CustomResourceDefinitions as YAML

``controller`` takes every flag of Flagger's ``cmd/flagger`` in Go's
spelling, so a Helm chart's ``args`` work unchanged: ``-mesh-provider=istio``,
``-metrics-server http://prometheus:9090``, ``-threadiness 4``, a bare boolean
``-enable-leader-election`` or ``-enable-leader-election=true``. The usual
``--long-option`` spelling works too. Invoked with flags and no subcommand
(``flaggerpy -log-level=info ...``), it runs the controller, as Flagger's
image does. klog's flags, which Flagger registers, are accepted and ignored.

Flags take precedence over ``FLAGGER_*`` variables, which take precedence
over the defaults (``flaggerpy.settings`` has the details and the one
exception Flagger made for notifier URLs).

Exit status: 0 on a clean stop; 2 for an unknown flag, an invalid value or
any other ``ConfigError`` (as Go's ``flag`` package exits 2); 1 if the
controller fails; 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, NoReturn

import structlog

from flaggerpy import __version__, logs
from flaggerpy.errors import ConfigError
from flaggerpy.settings import FlagSpec, Settings, iter_flags

__all__ = ["main", "run_controller", "version_text"]

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

REVISION_ENV: Final = "FLAGGERPY_REVISION"
"""Set by the image build to the source revision ``version`` prints."""

# Go's flag package accepts -name, -name=value and --name forms alike.
_GO_FLAG = re.compile(r"^-(?P<name>[A-Za-z][\w.-]*)(?P<value>=.*)?$", re.DOTALL)

# klog's flags: registered by Flagger's binary, meaningless here (logs go
# through flaggerpy.logs). Accepted so an existing command line still starts.
_KLOG_FLAGS: Final[Mapping[str, bool]] = {  # name -> is boolean
    "v": False,
    "vmodule": False,
    "logtostderr": True,
    "alsologtostderr": True,
    "log_dir": False,
    "log_file": False,
    "log_file_max_size": False,
    "log_backtrace_at": False,
    "skip_headers": True,
    "skip_log_headers": True,
    "stderrthreshold": False,
    "one_output": True,
    "add_dir_header": True,
}
_KLOG_DEST: Final = "klog:"
_FLAG_DEST: Final = "flag:"

_log = structlog.get_logger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line ``argv`` (default ``sys.argv[1:]``) and returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0].startswith("-") and args[0] not in ("-h", "--help"):
        args = ["controller", *args]  # Flagger's `flagger -flag ...` invocation
    parser = _build_parser()
    try:
        namespace, extra = parser.parse_known_args(_normalise(args))
        if extra:
            _fail_unknown(parser, namespace, extra, args)
        command: Callable[[argparse.Namespace], int] = namespace.handler
        return command(namespace)
    except SystemExit as exc:  # argparse's --help and usage errors
        return _exit_status(exc)
    except ConfigError as exc:
        print(f"flaggerpy: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception:
        _log.exception("command_failed", command=args[0] if args else None)
        return EXIT_FAILURE


def run_controller(settings: Settings) -> int:
    """Runs the operator until it is stopped; returns the exit status.

    The application module is imported here, not at the top, so that
    ``flaggerpy version`` and ``--help`` do not import the Kubernetes client
    and every router.
    """
    app = importlib.import_module("flaggerpy.canary.app")
    status = app.run(settings)
    return status if isinstance(status, int) else EXIT_OK


def version_text() -> str:
    """``flaggerpy version <v> revision <r>``, shaped like Flagger's ``-version`` output."""
    revision = os.environ.get(REVISION_ENV) or "unknown"
    return f"flaggerpy version {__version__} revision {revision}"


# --- subcommands -------------------------------------------------------------------------------


def _controller(namespace: argparse.Namespace) -> int:
    values = vars(namespace)
    if values.get("version"):
        print(version_text())
        return EXIT_OK
    flags = {key.removeprefix(_FLAG_DEST): value for key, value in values.items()
             if key.startswith(_FLAG_DEST)}
    settings = Settings.load(flags)
    telemetry = settings.telemetry
    logs.configure(json=logs.wants_json(telemetry.log_encoding), level=telemetry.log_level)
    for key in sorted(k for k in values if k.startswith(_KLOG_DEST)):
        _log.warning("flag_ignored", flag="-" + key.removeprefix(_KLOG_DEST),
                     reason="klog flags have no effect; use -log-level")
    _log.info(
        "controller_starting",
        version=__version__,
        mesh_provider=settings.mesh.provider,
        metrics_server=logs.safe_url(settings.metrics.server),
        namespace=settings.controller.namespace or "*",
        workers=settings.controller.workers,
        leader_election=settings.controller.enable_leader_election,
    )
    return run_controller(settings)


def _version(namespace: argparse.Namespace) -> int:
    print(version_text())
    return EXIT_OK


def _crds(namespace: argparse.Namespace) -> int:
    from flaggerpy.models import crds  # late: only this command needs the CRD renderer

    text = crds.render_crds_yaml()
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


# --- parsing -----------------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flaggerpy",
        description="Progressive delivery operator for Kubernetes, compatible with Flagger.",
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    controller = commands.add_parser(
        "controller",
        usage="flaggerpy controller [-h] [-flag[=value] ...]",
        help="run the operator (takes Flagger's flags)",
        description="Run the operator. Flags may be written -flag or --flag, with =value or "
                    "a separate value; booleans may be given bare. Each flag can also be set "
                    "by the environment variable shown.",
        allow_abbrev=False,
    )
    controller.set_defaults(handler=_controller, parser=controller)
    _add_settings_flags(controller)
    controller.add_argument(
        "--version", action="store_true", default=False,
        help="print the version and exit (Flagger's -version)")
    klog = controller.add_argument_group(
        "klog flags", "accepted for compatibility with Flagger's command line; no effect")
    for name, is_bool in _KLOG_FLAGS.items():
        options = ["-v", "--v"] if name == "v" else ["--" + name]
        kwargs: dict[str, Any] = {"nargs": "?", "const": "true"} if is_bool else {}
        klog.add_argument(*options, dest=_KLOG_DEST + name, default=argparse.SUPPRESS,
                          metavar="VALUE", help=argparse.SUPPRESS, **kwargs)

    version = commands.add_parser("version", help="print the version", allow_abbrev=False)
    version.set_defaults(handler=_version, parser=version)

    crds = commands.add_parser(
        "crds", help="print the CustomResourceDefinitions as YAML", allow_abbrev=False)
    crds.set_defaults(handler=_crds, parser=crds)
    # Reserved for later: `loadtester` (Flagger's flagger-loadtester) and `gate` (its gate API).
    return parser


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    groups: dict[str, argparse._ArgumentGroup] = {}
    for spec in iter_flags():
        group_name = spec.path[0]
        group = groups.get(group_name)
        if group is None:
            group = groups[group_name] = parser.add_argument_group(f"{group_name} settings")
        group.add_argument("--" + spec.name, dest=_FLAG_DEST + spec.name,
                           default=argparse.SUPPRESS, help=_help(spec), **_value_kwargs(spec))


def _value_kwargs(spec: FlagSpec) -> dict[str, Any]:
    if spec.is_bool:
        # Go's booleans: bare means true, =false turns off.
        return {"nargs": "?", "const": "true", "metavar": "BOOL"}
    return {"metavar": spec.value_kind.upper()}  # as Go's usage: -threadiness int


def _help(spec: FlagSpec) -> str:
    envs = [*spec.flag.legacy_env, spec.env]
    default = spec.default_text
    shown = f"default {default!r}" if default else "default empty"
    extension = "; flaggerpy only" if not spec.flag.flagger else ""
    text = f"{spec.description} ({shown}; env {', '.join(envs)}{extension})"
    return text.replace("%", "%%")


def _normalise(args: Sequence[str]) -> list[str]:
    """Rewrites Go's single-dash long flags to argparse's double dash.

    ``-mesh-provider=istio`` becomes ``--mesh-provider=istio``; ``-h`` and
    ``-v`` stay short, values (``-1``) are left alone, and nothing after
    ``--`` is touched.
    """
    out: list[str] = []
    passthrough = False
    for arg in args:
        if passthrough or arg == "--":
            passthrough = True
            out.append(arg)
            continue
        match = _GO_FLAG.match(arg)
        if match and match["name"] not in ("h", "v"):
            out.append("-" + arg)
        else:
            out.append(arg)
    return out


def _fail_unknown(parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                  extra: Sequence[str], original: Sequence[str]) -> NoReturn:
    """Reports the first unknown argument as the user typed it, Go style."""
    first = extra[0]
    spelled = next((arg for arg in original if _normalise([arg]) == [first]), first)
    target: argparse.ArgumentParser = getattr(namespace, "parser", parser)
    if first.startswith("-"):
        target.error(f"flag provided but not defined: {spelled.split('=', 1)[0]}")
    target.error(f"unexpected argument: {spelled}")


def _exit_status(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return EXIT_FAILURE
