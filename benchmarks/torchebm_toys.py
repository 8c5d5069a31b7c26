"""TorchEBM's contrastive-divergence recipe from its own docs on the ten benchmark toys,
judged as our recipes are (``benchmarks/score_toys.py --model energy``), on the same data.

    python benchmarks/torchebm_toys.py [--seeds 0,1,2,3,4] [--data all] [--jobs 2]
        [--json benchmarks/results/torchebm_toys-DATE.json]

TorchEBM runs in its own venv (``make bench-venv-torchebm``;
``benchmarks/peers/torchebm_cd.py``) on the first 3,000 of the 10,000 training points that
``score.demo.run_energy_toy`` draws for the same seed (its tutorial trains on 3,000); its
5,000 samples (chains from ``N(0, I)``, 200 steps of its sampler) are judged by
``ebm.metrics.judge`` against the same 1,000 held-out points and the same floor.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT / ".bench" / "torchebm" / "bin" / "python"


def one(job: tuple[str, int]) -> dict:
    """One toy and seed: TorchEBM trains and samples in its venv, we judge."""
    import torch

    from torchlangevin.ebm.data import toy
    from torchlangevin.ebm.metrics import judge

    name, seed = job
    g = torch.Generator().manual_seed(seed)
    train, held = toy(name, 10000, g), toy(name, 1000, g)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "train.npy", Path(tmp) / "samples.npy"
        np.save(src, train[:3000].numpy())
        t0 = time.perf_counter()
        subprocess.run([str(PEER), str(ROOT / "benchmarks" / "peers" / "torchebm_cd.py"),
                        str(src), str(dst), str(seed), "5000"], check=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
        wall = time.perf_counter() - t0
        samples = torch.as_tensor(np.load(dst))
    j = judge(samples, train, held)
    return {"data": name, "seed": seed, "wall_s": wall, "mmd_ratio": j.mmd_ratio,
            "worst_ratio": j.worst_ratio, "tv_ratio": j.tv_ratio,
            "finite": bool(torch.isfinite(samples).all())}


def main(argv: list[str] | None = None) -> int:
    from torchlangevin.ebm.data import BENCHMARK_TOYS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--data", default="all")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--json", type=Path,
                   default=Path(f"benchmarks/results/torchebm_toys-{date.today()}.json"))
    args = p.parse_args(argv)
    if not PEER.exists():
        sys.exit(f"{PEER} is missing: run `make bench-venv-torchebm` first")
    names = list(BENCHMARK_TOYS) if args.data == "all" else args.data.split(",")
    jobs = [(n, int(s)) for n in names for s in args.seeds.split(",")]
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        rows = []
        for r in pool.map(one, jobs):
            rows.append(r)
            print(f"{r['data']:16s} seed {r['seed']}: MMD/floor {r['mmd_ratio']:.2f} "
                  f"TV/floor {r['tv_ratio']:.2f} ({r['wall_s']:.0f} s)", flush=True)
    print("| data | TorchEBM MMD/floor | worst | TV/floor | seeds |\n|---|---|---|---|---|")
    for name in names:
        mine = [r for r in rows if r["data"] == name]
        med = {k: statistics.median(r[k] for r in mine)
               for k in ("mmd_ratio", "worst_ratio", "tv_ratio")}
        print(f"| {name} | {med['mmd_ratio']:.2f} | {med['worst_ratio']:.2f} | "
              f"{med['tv_ratio']:.2f} | {len(mine)} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"date": str(date.today()), "load_average":
                                     os.getloadavg(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
