"""Issue 22's bars as a Markdown table, from ``benchmarks/tabular.py --json`` files.

    python benchmarks/tabular_results.py ours.json sdv_*.json > table.md

(each file a ``--json`` list, or a run's log, whose JSON rows it reads)

One block per dataset: each metric for torchlangevin and every SDV method, the bar, and
whether torchlangevin meets it (C2ST AUC at most the best SDV method's; TSTR/TRTR >= 0.95,
>= 0.9 on diamonds; near-copy rate <= 5%; the largest marginal TV of a discrete column
<= 0.03; the largest missing-rate gap <= 0.01; declared constraints on 100% of rows).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OURS = "torchlangevin"
METRICS = [("c2st_auc", "C2ST AUC"), ("tstr/trtr", "TSTR/TRTR"), ("near_copy", "near-copy"),
           ("max_tv", "max TV (discrete)"), ("max_miss", "max missing gap"),
           ("rules_ok", "constraints hold"), ("seconds", "seconds (fit + sample)")]


def bar(metric: str, dataset: str, sdv: list[dict]) -> tuple[str, object]:
    """The bar's text and a test of our value (None: no bar)."""
    if metric == "c2st_auc":
        best = min(r["c2st_auc"] for r in sdv) if sdv else None
        return (f"<= {best:.3f} (best SDV)", lambda v: v <= best) if best is not None \
            else ("", None)
    if metric == "tstr/trtr":
        low = 0.9 if dataset.startswith("diamonds") else 0.95
        return f">= {low}", lambda v: v >= low
    limits = {"near_copy": 0.05, "max_tv": 0.03, "max_miss": 0.01}
    if metric in limits:
        return f"<= {limits[metric]}", lambda v, lim=limits[metric]: v <= lim
    if metric == "rules_ok":
        return "1.0", lambda v: v >= 1.0
    return "", None


def table(rows: list[dict]) -> str:
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        here = [r for r in rows if r["dataset"] == dataset and "note" not in r]
        ours = next((r for r in here if r["method"] == OURS), None)
        sdv = [r for r in here if r["method"].startswith("SDV")]
        if ours is None:
            continue
        names = [r["method"] for r in sdv]
        out += [f"**{dataset}** ({ours['rows']} synthetic rows)", "",
                "| metric | " + " | ".join([OURS, *names]) + " | bar | met |",
                "|---" * (len(names) + 4) + "|"]
        for key, label in METRICS:
            text, ok = bar(key, dataset, sdv)
            cells = [_fmt(r.get(key), key) for r in [ours, *sdv]]
            value = ours.get(key)
            met = "" if ok is None or value is None else \
                ("met" if ok(value) else "**not met**")
            out.append(f"| {label} | " + " | ".join(cells) + f" | {text} | {met} |")
        out.append("")
    return "\n".join(out)


def _fmt(v, key: str) -> str:
    if v is None:
        return "-"
    if key == "seconds":
        return f"{v:.1f}"
    return f"{v:.3f}" if isinstance(v, float) and abs(v) < 10 else f"{v}"


def main() -> None:
    rows = []
    for path in sys.argv[1:]:  # a JSON list (--json) or a log of one JSON row a line
        text = Path(path).read_text()
        rows += json.loads(text) if text.lstrip().startswith("[") else \
            [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    print(table(rows))


if __name__ == "__main__":
    sys.exit(main())
