"""Score-based generation on the ten benchmark toys (TorchEBM's eight, moons and rings), one
recipe for all: ``torchlangevin.score.demo.run_toy`` at its defaults.

    python benchmarks/score_toys.py [--seeds 0,1,2] [--data all] [--jobs 2]
        [--json benchmarks/results/score_toys-DATE.json] [--md table.md]

For each data set and seed: a score model trained by denoising score matching, sampled by
annealed Langevin dynamics (AL) and by predictor-corrector (PC) at (about) the same number
of score evaluations per sample, each judged by ``ebm.metrics.judge`` (the multi-bandwidth
MMD, mean over 5 sets of 1,000 samples against 1,000 held-out points) as a ratio to the
floor (5 sets of 1,000 training points judged the same way). The table gives the median
over seeds of the ratios, the largest ratio of one bandwidth's term to its floor
("worst"), the binned TV ratio, the score evaluations per sample and the CPU seconds of
one run (one thread: train + both samplers + judging).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def one(job: tuple[str, int]) -> dict[str, float | str | int]:
    """One data set, one seed, in a fresh worker with one torch thread."""
    import torch

    from torchlangevin.score.demo import run_toy

    torch.set_num_threads(1)
    name, seed = job
    t0 = time.process_time()
    r = run_toy(name, seed=seed)
    return {"data": name, "seed": seed, "cpu_s": time.process_time() - t0, **r}


COLUMNS = ("mmd_ratio_al", "mmd_ratio_pc", "worst_ratio_al", "worst_ratio_pc",
           "tv_ratio_al", "tv_ratio_pc")


def _medians(mine: list[dict]) -> dict[str, float]:
    """The median over seeds of each column (and the evaluations, the same for all)."""
    keys = (*COLUMNS, "cpu_s", "evals_al", "evals_pc")
    return {"n": len(mine), **{c: statistics.median(r[c] for r in mine) for c in keys}}


def table(rows: list[dict], names: list[str]) -> str:
    """Medians over seeds, one line a data set, as Markdown."""
    head = ("| data | AL MMD/floor | PC MMD/floor | AL worst | PC worst | AL TV/floor | "
            "PC TV/floor | evals AL | evals PC | CPU s / run | seeds |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    meds = {name: _medians([r for r in rows if r["data"] == name]) for name in names}
    for name, med in meds.items():
        lines.append(f"| {name} | " + " | ".join(f"{med[c]:.2f}" for c in COLUMNS)
                     + f" | {med['evals_al']:.0f} | {med['evals_pc']:.0f} | "
                     f"{med['cpu_s']:.0f} | {med['n']:.0f} |")
    al, pc = (max(m[c] for m in meds.values()) for c in ("mmd_ratio_al", "mmd_ratio_pc"))
    lines.append(f"\nlargest median MMD/floor: AL {al:.2f}, PC {pc:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from torchlangevin.ebm.data import BENCHMARK_TOYS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--data", default="all", help="comma-separated toy names, or all")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (one thread each)")
    p.add_argument("--json", type=Path,
                   default=Path(f"benchmarks/results/score_toys-{date.today()}.json"))
    p.add_argument("--md", type=Path, default=None, help="also write the table here")
    args = p.parse_args(argv)
    names = list(BENCHMARK_TOYS) if args.data == "all" else args.data.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(n, s) for n in names for s in seeds]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        rows = []
        for r in pool.map(one, jobs):
            rows.append(r)
            print(f"{r['data']:16s} seed {r['seed']}: AL {r['mmd_ratio_al']:.2f} "
                  f"PC {r['mmd_ratio_pc']:.2f} ({r['cpu_s']:.0f} CPU s)", flush=True)
    text = table(rows, names)
    load = os.getloadavg()
    meta = {"date": str(date.today()), "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": sys.version.split()[0],
            "wall_s": time.perf_counter() - t0, "load_average": load,
            "command": "python benchmarks/score_toys.py " + " ".join(argv or sys.argv[1:])}
    print(text)
    print(f"wall {meta['wall_s']:.0f} s, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    if args.md is not None:
        args.md.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
