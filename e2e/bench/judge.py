"""Benchmark: how many samples the statistical judge needs to see a latency regression.

Pure statistics, no cluster: for each regression (0 %, 10 %, 30 %, 50 % slower) and each sample
size n, ``--runs`` simulated comparisons draw n primary latencies from a log-normal distribution
(median 100 ms, shape ``--sigma``) and n canary latencies from the same distribution scaled by
1 + regression (every quantile, p99 included, is that much slower), and judge them with
``flaggerpy.judging.judge_samples`` at 95 % confidence, direction ``increase``, tolerance 0.1.

For each cell it reports:

* ``seen``: the share of runs whose interval lies wholly above 0, i.e. the judge is 95 % sure the
  canary is slower (a Marginal or Fail verdict); at 0 % this is the false-alarm rate;
* ``fail``: the share of runs judged Fail, i.e. surely slower by more than the 10 % tolerance;
  at 0 % and 10 % this must stay near 0 (a regression within the tolerance is allowed);
* the smallest n at which ``seen`` (and ``fail``) reach 80 % and 95 % of the runs.

Usage: ``python -m e2e.bench.judge [--runs 200] [--sigma 0.5] [--json report.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from flaggerpy.judging import Comparison, Verdict, judge_samples

REGRESSIONS = (0.0, 0.1, 0.3, 0.5)
SIZES = (5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000)
MEDIAN_MS = 100.0


def simulate(
        *, regression: float, size: int, runs: int, sigma: float, rng: np.random.Generator
) -> dict[str, float]:
    """The share of ``runs`` comparisons of ``size`` values a side judged each way."""
    comparison = Comparison()
    seen = failed = no_data = 0
    started = time.perf_counter()
    for _ in range(runs):
        primary = rng.lognormal(np.log(MEDIAN_MS), sigma, size)
        canary = rng.lognormal(np.log(MEDIAN_MS), sigma, size) * (1.0 + regression)
        verdict = judge_samples(canary, primary, comparison).verdict
        seen += verdict in (Verdict.MARGINAL, Verdict.FAIL)
        failed += verdict is Verdict.FAIL
        no_data += verdict is Verdict.NO_DATA
    elapsed = time.perf_counter() - started
    return {
        "seen": seen / runs,
        "fail": failed / runs,
        "no_data": no_data / runs,
        "ms_per_judgement": 1000.0 * elapsed / runs,
    }


def smallest(cells: dict[int, dict[str, float]], key: str, share: float) -> int | None:
    """The smallest size whose ``key`` share reaches ``share`` (and stays there after)."""
    sizes = sorted(cells)
    for index, size in enumerate(sizes):
        if all(cells[later][key] >= share for later in sizes[index:]):
            return size
    return None


def run(*, runs: int, sigma: float, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    report: dict[str, Any] = {"runs": runs, "sigma": sigma, "seed": seed, "regressions": {}}
    for regression in REGRESSIONS:
        cells = {
            size: simulate(regression=regression, size=size, runs=runs, sigma=sigma, rng=rng)
            for size in SIZES
        }
        report["regressions"][f"{regression:.0%}"] = {
            "cells": cells,
            "seen_80": smallest(cells, "seen", 0.8),
            "seen_95": smallest(cells, "seen", 0.95),
            "fail_80": smallest(cells, "fail", 0.8),
            "fail_95": smallest(cells, "fail", 0.95),
        }
    return report


def markdown(report: dict[str, Any]) -> str:
    """The report as the table e2e/bench/README.md shows."""
    header = "| n per side | " + " | ".join(
        f"{name} seen / fail" for name in report["regressions"]
    ) + " |"
    lines = [header, "| --- |" + " --- |" * len(report["regressions"])]
    for size in SIZES:
        cells = [
            f"{row['cells'][size]['seen']:.0%} / {row['cells'][size]['fail']:.0%}"
            for row in report["regressions"].values()
        ]
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| regression | seen by 80 % / 95 % at n = | failed by 80 % / 95 % at n = |")
    lines.append("| --- | --- | --- |")
    for name, row in report["regressions"].items():
        seen = f"{row['seen_80']} / {row['seen_95']}"
        failed = f"{row['fail_80']} / {row['fail_95']}"
        lines.append(f"| {name} | {seen} | {failed} |")
    slowest = max(report["regressions"]["0%"]["cells"].values(),
                  key=lambda cell: cell["ms_per_judgement"])
    lines.append("")
    lines.append(f"judgement time at n = {SIZES[-1]}: {slowest['ms_per_judgement']:.1f} ms")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=200, help="simulated comparisons per cell")
    parser.add_argument("--sigma", type=float, default=0.5, help="log-normal shape of latencies")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)

    report = run(runs=args.runs, sigma=args.sigma, seed=args.seed)
    print(json.dumps(report, indent=2, default=str))
    print(markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
