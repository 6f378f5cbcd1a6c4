"""``kubectl flaggerpy list`` and ``status NAME [--watch]``: what the canaries are doing.

The views read what the controller already writes -- the Canary status (phase, weight, failed
checks, conditions, ``analysisHistory``, and ``steering`` once a steering command has acted) and
the Canary's Events -- so they need nothing but read access to canaries and events, and show
the same thing whichever replica leads.

Rendering is kept apart from talking to the API server: :func:`render_list` and
:func:`render_status` take the objects as the API server returns them and give back text, so
every line they print is tested without a cluster. ``status --watch`` redraws from two
informers (the one Canary, its Events): a watch, not polling, so a change shows within the
watch's latency and an idle canary costs nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, TextIO

from flaggerpy import kube
from flaggerpy.dashboard import summary
from flaggerpy.dashboard.summary import (
    TimelineEntry,
    checks,
    current_run,
    events_selector,
    steering_state,
    step,
    threshold_text,
)
from flaggerpy.runtime.informer import Informer

__all__ = [
    "DONE_PHASES",
    "TimelineEntry",
    "checks",
    "current_run",
    "events_selector",
    "register",
    "render_list",
    "render_status",
    "steering_state",
    "step",
    "threshold_text",
    "weight_bar",
]

DONE_PHASES: Final = {"Succeeded": 0, "Failed": 1}
"""The phases that end a run, with the exit status ``status --until-done`` gives for each."""

BAR_WIDTH: Final = 40
CLEAR_SCREEN: Final = "\x1b[H\x1b[2J"


# -- reading the objects ------------------------------------------------------------------


_map = summary.as_map
_status = summary.status_of
_analysis = summary.analysis_of
_number = summary.number


def _text(value: Any) -> str:
    """A cell as ``kubectl get`` prints a JSON value: empty when unset."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _percent(value: Any) -> int:
    number = _number(value)
    return 0 if number is None else max(0, min(100, round(number)))


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], *, indent: str = "") -> list[str]:
    """Columns as kubectl aligns them: each as wide as its widest cell, three spaces apart."""
    all_rows = [list(header), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(header))]
    lines = []
    for row in all_rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append((indent + "   ".join(cells)).rstrip())
    return lines


def render_list(canaries: Sequence[Mapping[str, Any]], *, all_namespaces: bool = False) -> str:
    """``kubectl get canaries``' columns (with FAILEDCHECKS), plus the step and steering.

    Rows are sorted by namespace, then name, as kubectl sorts them.
    """
    header = ["NAME", "STATUS", "WEIGHT", "FAILEDCHECKS", "LASTTRANSITIONTIME", "STEP",
              "STEERING"]
    if all_namespaces:
        header.insert(0, "NAMESPACE")
    rows = []

    def order(canary: Mapping[str, Any]) -> tuple[str, str]:
        meta = _map(canary.get("metadata"))
        return str(meta.get("namespace") or ""), str(meta.get("name") or "")

    for canary in sorted(canaries, key=order):
        meta = _map(canary.get("metadata"))
        status = _status(canary)
        row = [
            _text(meta.get("name")),
            _text(status.get("phase")),
            _text(status.get("canaryWeight")),
            _text(status.get("failedChecks")),
            _text(status.get("lastTransitionTime")),
            step(canary),
            steering_state(canary),
        ]
        if all_namespaces:
            row.insert(0, _text(meta.get("namespace")))
        rows.append(row)
    return "\n".join(_table(header, rows)) + "\n"


def weight_bar(canary_weight: Any, *, width: int = BAR_WIDTH) -> str:
    """``[########................................] canary 20% / primary 80%``."""
    weight = _percent(canary_weight)
    filled = round(weight * width / 100)
    return f"[{'#' * filled}{'.' * (width - filled)}] canary {weight}% / primary {100 - weight}%"


def _steering_line(canary: Mapping[str, Any]) -> str:
    steering = _map(_status(canary).get("steering"))
    line = steering_state(canary)
    if steering.get("command"):
        line += f" (last command {steering['command']}"
        line += f": {steering['reason']})" if steering.get("reason") else ")"
    return line


def render_status(canary: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> str:
    """One canary: phase, weight bar, the checks and conditions, and the run's timeline."""
    meta = _map(canary.get("metadata"))
    spec = _map(canary.get("spec"))
    status = _status(canary)
    target = _map(spec.get("targetRef"))
    threshold = _number(_analysis(canary).get("threshold"))
    failed = _text(status.get("failedChecks")) or "0"
    timeline, started = current_run(events)
    lines = [
        f"Canary:         {meta.get('name', '')}.{meta.get('namespace', '')}",
        f"Target:         {target.get('kind', '')}/{target.get('name', '')}",
        f"Phase:          {status.get('phase') or '(not yet reconciled)'}",
        f"Step:           {step(canary)}",
        f"Weight:         {weight_bar(status.get('canaryWeight'))}",
        f"Failed checks:  {failed}/{int(threshold) if threshold else 1}",
        f"Steering:       {_steering_line(canary)}",
    ]
    if spec.get("suspend"):
        lines.append("Suspended:      true")
    if started:
        lines.append(f"Run started:    {started}")
    run_checks = checks(canary, since=started)
    lines += ["", "Checks:"]
    if run_checks:
        lines += _table(
            ["TIME", "METRIC", "VALUE", "THRESHOLD", "VERDICT", "ACTION", "MESSAGE"],
            ([_text(c.get("time")), _text(c.get("metric")), _text(c.get("value")) or "-",
              threshold_text(c), _text(c.get("verdict")), _text(c.get("action")),
              _text(c.get("message"))] for c in run_checks),
            indent="  ")
    else:
        lines.append("  (none in this run)")
    conditions = [c for c in status.get("conditions") or () if isinstance(c, Mapping)]
    lines += ["", "Conditions:"]
    if conditions:
        lines += _table(
            ["TYPE", "STATUS", "REASON", "LASTTRANSITIONTIME", "MESSAGE"],
            ([_text(c.get("type")), _text(c.get("status")), _text(c.get("reason")),
              _text(c.get("lastTransitionTime")), _text(c.get("message"))] for c in conditions),
            indent="  ")
    else:
        lines.append("  (none)")
    lines += ["", "Timeline:"]
    if timeline:
        lines += _table(
            ["TIME", "TYPE", "REASON", "MESSAGE"],
            ([e.time, e.type, e.reason, e.message + (f" (x{e.count})" if e.count > 1 else "")]
             for e in timeline),
            indent="  ")
    else:
        lines.append("  (no events)")
    return "\n".join(lines) + "\n"


# -- talking to the API server -----------------------------------------------------------


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``list`` and ``status`` to the ``kubectl flaggerpy`` parser."""
    listing = commands.add_parser("list", help="list canaries with phase, weight and step")
    listing.add_argument("-A", "--all-namespaces", action="store_true",
                         help="list canaries in every namespace")
    listing.set_defaults(handler=list_canaries)
    status = commands.add_parser(
        "status", help="one canary: phase, weight, checks, conditions and the run's timeline")
    status.add_argument("name", metavar="NAME", help="the Canary's name")
    status.add_argument("-w", "--watch", action="store_true",
                        help="redraw on every change of the Canary or a new Event (Ctrl-C ends)")
    status.add_argument("--until-done", action="store_true",
                        help="with --watch: end when the run ends, exit 0 if Succeeded, "
                             "1 if Failed (at once if it has already ended)")
    status.set_defaults(handler=show_status)


async def list_canaries(args: argparse.Namespace, client: kube.KubeClient) -> int:
    """``list [-A]``."""
    namespace = None if args.all_namespaces else args.namespace
    canaries = await client.list(kube.CANARIES, namespace=namespace)
    if not canaries.items:
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        print(f"No canaries found in {where}.", file=sys.stderr)
        return 0
    sys.stdout.write(render_list(canaries.items, all_namespaces=namespace is None))
    return 0


async def show_status(args: argparse.Namespace, client: kube.KubeClient) -> int:
    """``status NAME [--watch [--until-done]]``."""
    if args.watch:
        return await watch_status(client, namespace=args.namespace, name=args.name,
                                  until_done=args.until_done, out=sys.stdout)
    try:
        canary = await client.get(kube.CANARIES, args.name, namespace=args.namespace)
    except kube.NotFoundError:
        print(f"Canary {args.name} not found in namespace {args.namespace}.", file=sys.stderr)
        return 1
    events = await client.list(kube.EVENTS, namespace=args.namespace,
                               field_selector=events_selector(args.name))
    sys.stdout.write(render_status(canary, events.items))
    return 0


async def watch_status(
        client: kube.KubeClient,
        *,
        namespace: str,
        name: str,
        until_done: bool,
        out: TextIO,
) -> int:
    """Redraws the status on every change of the Canary or its Events, until cancelled.

    Two informers (the Canary by name, its Events by involved object) list once and then
    watch, resuming and relisting as the controller's own caches do. Each change sets a
    flag; the loop renders from the caches and writes a frame only when the text changed.
    On a terminal the frame replaces the previous one; elsewhere frames follow one another.
    With ``until_done`` the watch ends when the phase is Succeeded (0) or Failed (1).
    """
    changed = asyncio.Event()

    def touch(*_: kube.JsonObject) -> None:
        changed.set()

    canaries = Informer(client, kube.CANARIES, namespace=namespace,
                        field_selector=f"metadata.name={name}")
    events = Informer(client, kube.EVENTS, namespace=namespace,
                      field_selector=events_selector(name))
    for informer in (canaries, events):
        informer.add_handler(on_add=touch, on_update=lambda _old, _new: changed.set(),
                             on_delete=touch)
    clear = CLEAR_SCREEN if out.isatty() else ""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(informer.start()) for informer in (canaries, events)]
        try:
            await asyncio.gather(canaries.wait_synced(), events.wait_synced())
            shown = ""
            while True:
                changed.clear()
                canary = canaries.get(kube.ObjectKey(namespace, name))
                if canary is None:
                    frame = f"Canary {name} not found in namespace {namespace} (waiting).\n"
                else:
                    frame = render_status(canary, events.list())
                if frame != shown:
                    out.write(clear + frame if clear else ("\n" + frame if shown else frame))
                    out.flush()
                    shown = frame
                phase = _status(canary or {}).get("phase")
                if until_done and phase in DONE_PHASES:
                    return DONE_PHASES[str(phase)]
                await changed.wait()
        finally:
            for task in tasks:
                task.cancel()
