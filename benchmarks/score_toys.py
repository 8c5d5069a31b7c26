"""Score-based generation on the ten benchmark toys (TorchEBM's eight, moons and rings), one
recipe for all: ``torchlangevin.score.demo.run_toy`` at its defaults.

    python benchmarks/score_toys.py [--seeds 0,1,2] [--data all] [--jobs 2]
        [--json benchmarks/results/score_toys-DATE.json] [--md table.md] [--model energy]

``--model energy``: the energy-based recipe instead, ``run_energy_toy`` at its defaults (a
noise-conditional energy fitted by DSM; fresh chains by annealed MALA, then long-run
chains 1,000 MALA steps further at the last level), JSON default
``benchmarks/results/ebm_toys-DATE.json``. ``--model score-energy``: ``run_toy`` with the
energy-parameterised score (``model="energy"``: annealed MALA with the denoising step, and
predictor-corrector on ``-grad_x E``).

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


def one(job: tuple[str, int, str]) -> dict[str, float | str | int]:
    """One data set, one seed, in a fresh worker with one torch thread."""
    import torch

    from torchlangevin.score import demo

    torch.set_num_threads(1)
    name, seed, model = job
    t0 = time.process_time()
    if model == "energy":
        r = demo.run_energy_toy(name, seed=seed)
    else:
        r = demo.run_toy(name, seed=seed, model="energy" if model == "score-energy" else "score")
    return {"data": name, "seed": seed, "cpu_s": time.process_time() - t0, **r}


#: per model: the two samplers' keys and names
SAMPLERS = {"score": (("al", "AL"), ("pc", "PC")),
            "score-energy": (("al", "AL (MALA)"), ("pc", "PC")),
            "energy": (("fresh", "fresh"), ("long", "long-run"))}


def _medians(mine: list[dict], keys: list[str]) -> dict[str, float]:
    """The median over seeds of each column (and the evaluations, the same for all)."""
    return {"n": len(mine), **{c: statistics.median(r[c] for r in mine)
                               for c in (*keys, "cpu_s")}}


def table(rows: list[dict], names: list[str], model: str = "score") -> str:
    """Medians over seeds, one line a data set, as Markdown."""
    (a, an), (b, bn) = SAMPLERS[model]
    columns = [f"{m}_ratio_{k}" for m in ("mmd", "worst", "tv") for k in (a, b)]
    evals = [f"evals_{a}", f"evals_{b}"]
    head = (f"| data | {an} MMD/floor | {bn} MMD/floor | {an} worst | {bn} worst | "
            f"{an} TV/floor | {bn} TV/floor | evals {an} | evals {bn} | CPU s / run | seeds |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    meds = {name: _medians([r for r in rows if r["data"] == name], columns + evals)
            for name in names}
    for name, med in meds.items():
        lines.append(f"| {name} | " + " | ".join(f"{med[c]:.2f}" for c in columns)
                     + " | " + " | ".join(f"{med[c]:.0f}" for c in evals)
                     + f" | {med['cpu_s']:.0f} | {med['n']:.0f} |")
    worst = [max(m[f"mmd_ratio_{k}"] for m in meds.values()) for k in (a, b)]
    lines.append(f"\nlargest median MMD/floor: {an} {worst[0]:.2f}, {bn} {worst[1]:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from torchlangevin.ebm.data import BENCHMARK_TOYS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--data", default="all", help="comma-separated toy names, or all")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (one thread each)")
    p.add_argument("--model", choices=("score", "energy", "score-energy"), default="score")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--md", type=Path, default=None, help="also write the table here")
    args = p.parse_args(argv)
    names = list(BENCHMARK_TOYS) if args.data == "all" else args.data.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(n, s, args.model) for n in names for s in seeds]
    (a, an), (b, bn) = SAMPLERS[args.model]
    prefix = {"score": "score_toys", "energy": "ebm_toys",
              "score-energy": "score_energy_toys"}[args.model]
    args.json = args.json or Path(f"benchmarks/results/{prefix}-{date.today()}.json")
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        rows = []
        for r in pool.map(one, jobs):
            rows.append(r)
            print(f"{r['data']:16s} seed {r['seed']}: {an} {r['mmd_ratio_' + a]:.2f} "
                  f"{bn} {r['mmd_ratio_' + b]:.2f} ({r['cpu_s']:.0f} CPU s)", flush=True)
    text = table(rows, names, args.model)
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
