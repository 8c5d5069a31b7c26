"""RESULTS.md's table from ``run.py --json DIR``'s files, one row per posterior.

    python benchmarks/posteriordb/report.py DIR [--notes NOTES.json] > table.md

``NOTES.json`` maps a posterior to the reason it failed (written by whoever read the run).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HEADER = ("| posterior | result | worst mean \\|z\\| | worst sd ratio | min ESS bulk | wall s "
          "| ESS/s | divergences | max R-hat | mean tree depth | reason |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")


def row(record: dict, reason: str) -> str:
    """One table row: the worst |z| and the sd ratio furthest from 1 over the parameters."""
    rows = record["rows"]
    worst_z = max(rows, key=lambda r: abs(r["z"]))
    worst_sd = max(rows, key=lambda r: abs(r["sd_ratio"] - 1))
    verdict = "PASS" if record["ok"] else "FAIL"
    return (f"| {record['posterior']} | {verdict} | {abs(worst_z['z']):.2f} ({worst_z['name']}) "
            f"| {worst_sd['sd_ratio']:.3f} ({worst_sd['name']}) | {record['min_ess_bulk']:.0f} "
            f"| {record['wall_s']:.0f} | {record['ess_per_s']:.1f} | {record['divergences']} "
            f"| {record['max_rhat']:.3f} | {record['mean_tree_depth']:.1f} | {reason} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--notes", type=Path, default=None)
    args = parser.parse_args()
    notes = json.loads(args.notes.read_text()) if args.notes else {}
    records = [json.loads(p.read_text()) for p in sorted(args.directory.glob("*.json"))]
    print(HEADER)
    for record in records:
        print(row(record, notes.get(record["posterior"], "")))
    passed = sum(r["ok"] for r in records)
    print(f"\n{passed} of {len(records)} pass.")


if __name__ == "__main__":
    main()
