"""The ``flaggerpy`` command.

Subcommands::

    flaggerpy controller [flags]   run the operator (Flagger's ``flagger`` binary)
    flaggerpy loadtester [flags]   run the load tester (Flagger's ``flagger-loadtester``)
    flaggerpy gate ACTION [CANARY] open, close, check or list a load tester's gates
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

``loadtester`` takes the flags of Flagger's load tester the same way
(``-port=8080 -timeout=1h``), plus flaggerpy's safety options
(``flaggerpy.loadtester.config`` lists them with their variables).
``gate`` talks to a running load tester over HTTP (``--url``, default
``$FLAGGERPY_LOADTESTER_URL`` or ``http://localhost:<port>``):
``flaggerpy gate open podinfo.test``, ``gate close``, ``gate check`` (exit 0
if open, 1 if closed), ``gate list``; ``--rollback`` acts on the rollback gate.

Exit status: 0 on a clean stop; 2 for an unknown flag, an invalid value or
any other ``ConfigError`` (as Go's ``flag`` package exits 2); 1 if the
controller fails, or a gate command fails or finds its gate closed; 130 on Ctrl-C.
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
from flaggerpy.loadtester.config import (
    ENV_PREFIX as LOADTESTER_ENV_PREFIX,
    OPTIONS as LOADTESTER_OPTIONS,
    TOKEN_ENV as LOADTESTER_TOKEN_ENV,
    LoadTesterSettings,
)
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
_LOADTESTER_DEST: Final = "loadtester:"

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
    app = importlib.import_module("flaggerpy.app")
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


def _loadtester(namespace: argparse.Namespace) -> int:
    from flaggerpy.loadtester import app  # late: only this command runs the service

    flags: dict[str, str] = {}
    for key, value in vars(namespace).items():
        if key.startswith(_LOADTESTER_DEST):
            # A repeated flag (-allow-command) arrives as a list; the settings split on commas.
            flags[key.removeprefix(_LOADTESTER_DEST)] = (
                ",".join(value) if isinstance(value, list) else value)
    settings = LoadTesterSettings.load(flags)
    logs.configure(json=logs.wants_json(settings.log_encoding), level=settings.log_level)
    return app.run(settings)


def _gate(namespace: argparse.Namespace) -> int:
    import asyncio

    from flaggerpy.loadtester.client import GateClientError

    try:
        return asyncio.run(_gate_command(namespace))
    except GateClientError as exc:
        print(f"flaggerpy: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


async def _gate_command(namespace: argparse.Namespace) -> int:
    from flaggerpy.loadtester.client import GateClient
    from flaggerpy.loadtester.gates import GATE, ROLLBACK, split_canary

    action: str = namespace.gate_action
    kind = ROLLBACK if getattr(namespace, "rollback", False) else GATE
    async with GateClient(namespace.url, token=namespace.token,
                          timeout=namespace.timeout) as client:
        if action == "list":
            gates = await client.list()
            rows = [("CANARY", "GATE", "STATE")] + [
                (f"{g.name}.{g.namespace}", g.kind, "open" if g.open else "closed")
                for g in gates]
            widths = [max(len(row[i]) for row in rows) for i in range(2)]
            for row in rows:
                print(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}".rstrip())
            return EXIT_OK
        try:
            name, canary_namespace = split_canary(namespace.canary)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        where = {"name": name, "namespace": canary_namespace}
        label = f"{kind} {name}.{canary_namespace}"
        if action == "open":
            await client.open(kind, **where)
            print(f"{label} opened")
        elif action == "close":
            await client.close(kind, **where)
            print(f"{label} closed")
        else:
            is_open = await client.check(kind, **where)
            print(f"{label} {'open' if is_open else 'closed'}")
            return EXIT_OK if is_open else EXIT_FAILURE
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
    _add_loadtester_parser(commands)
    _add_gate_parser(commands)
    return parser


def _add_loadtester_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    loadtester = commands.add_parser(
        "loadtester",
        usage="flaggerpy loadtester [-h] [-flag[=value] ...]",
        help="run the load tester (takes flagger-loadtester's flags)",
        description="Run the load tester, compatible with Flagger's flagger-loadtester: "
                    "webhook tasks (cmd, bash, helm, helmv3, kubectl) and manual gates. "
                    "Flags may be written -flag or --flag; each can also be set by the "
                    "environment variable shown.",
        allow_abbrev=False,
    )
    loadtester.set_defaults(handler=_loadtester, parser=loadtester)
    for option in LOADTESTER_OPTIONS:
        kwargs: dict[str, Any] = (
            {"nargs": "?", "const": "true", "metavar": "BOOL"} if option.is_bool
            else {"metavar": "VALUE"})
        if option.repeatable:
            kwargs["action"] = "append"
        extension = "" if option.flagger else "; flaggerpy only"
        loadtester.add_argument(
            "--" + option.flag, dest=_LOADTESTER_DEST + option.flag, default=argparse.SUPPRESS,
            help=f"{option.help} (env {option.env}{extension})".replace("%", "%%"), **kwargs)


def _add_gate_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    port = os.environ.get(LOADTESTER_ENV_PREFIX + "HTTP_PORT") or "9090"
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", default=os.environ.get(LOADTESTER_ENV_PREFIX + "URL") or f"http://localhost:{port}",
        help=f"the load tester's URL (env {LOADTESTER_ENV_PREFIX}URL; default %(default)s)")
    common.add_argument(
        "--token", default=os.environ.get(LOADTESTER_TOKEN_ENV, ""),
        help=f"the load tester's token, if it requires one (env {LOADTESTER_TOKEN_ENV})")
    common.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for an answer (default %(default)s)")
    gate = commands.add_parser(
        "gate", help="open, close, check or list a load tester's manual gates",
        description="Manual gates of a running load tester (flaggerpy's or Flagger's), keyed "
                    "by canary as <name>.<namespace>. A Canary webhook pointing at "
                    "/gate/check holds its rollout until the gate is opened.",
        allow_abbrev=False)
    gate.set_defaults(handler=_gate, parser=gate)
    actions = gate.add_subparsers(title="actions", metavar="ACTION", dest="gate_action",
                                  required=True)
    helps = {"open": "open a gate: the canary's next check is approved",
             "close": "close a gate: checks are refused until it is opened",
             "check": "print whether a gate is open; exit 0 if open, 1 if closed"}
    for action, text in helps.items():
        sub = actions.add_parser(action, help=text, parents=[common], allow_abbrev=False)
        sub.set_defaults(parser=sub)
        sub.add_argument("canary", metavar="CANARY", help="<name>.<namespace>, e.g. podinfo.test")
        sub.add_argument("--rollback", action="store_true",
                         help="the rollback gate (/rollback/...) instead of the confirm gate")
    listing = actions.add_parser("list", help="list known gates and their state",
                                 parents=[common], allow_abbrev=False)
    listing.set_defaults(parser=listing)


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
