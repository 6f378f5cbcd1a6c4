"""The chaos suite's report: per fault, runs and what went wrong, from the runs' JSON lines.

Usage: ``python -m e2e.chaos.report FILE`` (``make chaos`` writes ``build/chaos.jsonl``, one line
per run, and prints this). A promotion is *lost* when the undisturbed run promoted and the
faulted one did not (another phase, or the primary left on the old image); *duplicated* when the
primary was written more often than in the undisturbed run; a canary is *stuck* when it did not
finish the revision in time.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

COLUMNS = ("fault", "runs", "differing", "promotions lost", "promotions duplicated",
           "stuck", "409s met", "controller restarts", "seconds (max)")


def lost(outcome: dict[str, Any], expected: dict[str, Any]) -> bool:
    return bool(expected["phase"] == "Succeeded") and (
        bool(outcome["phase"] != "Succeeded")
        or bool(outcome["primary_image"] != expected["primary_image"]))


def summarise(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_fault: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        by_fault[entry["fault"]].append(entry)
    rows = []
    for fault, runs in by_fault.items():
        done = [r for r in runs if r["outcome"] is not None]
        rows.append({
            "fault": fault,
            "runs": len(runs),
            "differing": sum(1 for r in runs if r["differences"]),
            "promotions lost": sum(1 for r in done if "expected" in r
                                   and lost(r["outcome"], r["expected"])),
            "promotions duplicated": sum(
                1 for r in done if "expected" in r
                and r["outcome"]["primary_writes"] > r["expected"]["primary_writes"]),
            "stuck": sum(1 for r in runs if r["stuck"]),
            "409s met": sum(r["outcome"]["conflicts"] for r in done),
            "controller restarts": sum(r["outcome"].get("restarts", 0) for r in done),
            "seconds (max)": max((r["outcome"]["seconds"] for r in done), default=0),
        })
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(row[c]) for c in COLUMNS) + " |" for row in rows]
    faulted = [r for r in rows if not r["fault"].startswith("undisturbed")]
    lines.append("")
    lines.append(
        f"Totals: {sum(r['runs'] for r in faulted)} faulted runs of {len(faulted)} faults; "
        f"promotions lost {sum(r['promotions lost'] for r in faulted)}, duplicated "
        f"{sum(r['promotions duplicated'] for r in faulted)}; canaries stuck "
        f"{sum(r['stuck'] for r in faulted)}; runs differing from undisturbed "
        f"{sum(r['differing'] for r in faulted)}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    if not args.file.exists():
        print(f"no runs recorded in {args.file}", file=sys.stderr)
        return 1
    entries = [json.loads(line) for line in args.file.read_text().splitlines() if line.strip()]
    print(markdown(summarise(entries)))
    for entry in entries:
        for difference in entry["differences"]:
            print(f"- {entry['fault']}: {difference}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
