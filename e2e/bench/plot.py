"""Draws the scale benchmark's figures against N, one line per provider and workers, as a PNG.

Usage: ``python -m e2e.bench.plot build/bench/scale.json [more.json ...] docs/bench/scale.png``
(several reports, e.g. one per provider, are drawn together; a report's optional ``label``
names its lines, so runs of the same provider and workers on different code stay apart).
Needs the ``bench`` extra (matplotlib); the benchmark itself does not.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Figure = tuple[str, Callable[[dict[str, Any]], float | None]]


def _path(*keys: str) -> Callable[[dict[str, Any]], float | None]:
    def read(level: dict[str, Any]) -> float | None:
        value: Any = level
        for key in keys:
            if not isinstance(value, dict) or value.get(key) is None:
                return None
            value = value[key]
        return float(value)
    return read


FIGURES: list[Figure] = [
    ("seconds until all N are Initialized", _path("initialise_seconds")),
    ("controller CPU per initialisation (ms)", _path("cpu_ms_per_initialisation")),
    ("controller RSS (MiB)", _path("rss_mib")),
    ("idle controller CPU (% of a core)", _path("idle", "cpu_percent_of_a_core")),
    ("detection p99 (s)", _path("detection_seconds", "p99")),
    ("tick lateness p99 during a 10% wave (s)", _path("wave", "tick_lateness_seconds", "p99")),
]


def plot(report: dict[str, Any], out: Path) -> None:
    import matplotlib  # only this command needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [level for level in report["levels"] if "rss_mib" in level]

    def series(level: dict[str, Any]) -> str:
        name = f"{level['provider']}, {level.get('threadiness', 2)} workers"
        return f"{name} ({level['label']})" if level.get("label") else name

    names = sorted({series(level) for level in levels})
    figure, axes = plt.subplots(2, 3, figsize=(13, 7), constrained_layout=True)
    for axis, (title, read) in zip(axes.flat, FIGURES, strict=True):
        for name in names:
            points = [(level["n"], read(level)) for level in levels
                      if series(level) == name and read(level) is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                axis.plot(xs, ys, marker="o", label=name)
        axis.set_xscale("log")
        axis.set_xlabel("canaries (N)")
        axis.set_title(title, fontsize=10)
        axis.set_ylim(bottom=0)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(f"flaggerpy scale benchmark: interval {report['interval']}, "
                    f"{report['cpus']} CPUs", fontsize=11)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", type=Path, nargs="+")
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    reports = [json.loads(path.read_text()) for path in args.reports]
    merged = {**reports[0], "levels": [{**level, "label": r.get("label")}
                                       for r in reports for level in r["levels"]]}
    plot(merged, args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
