"""The digits generators side by side: the score model, the noise-conditional energy and
persistent CD, each at its defaults, judged the same way (``score.demo.run_digits``,
``ebm.demo.run_digits``).

    python benchmarks/digits.py [--runs score:0,energy:0,pcd:0] [--json FILE]

For each ``kind:seed``: the mean top-class probability of a logistic regression and of a
one-hidden-layer MLP fitted on the same 80% of real digits, and the Frechet distance to
the held-out 20% in the MLP's hidden layer (real training digits for scale).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def run(kind: str, seed: int) -> dict:
    """One generator and seed; the keys of the two demos mapped to one naming."""
    import torch

    from torchlangevin.ebm.demo import run_digits as pcd_digits
    from torchlangevin.score.demo import run_digits

    torch.set_num_threads(1)
    t0 = time.process_time()
    if kind == "pcd":
        r = pcd_digits(seed=seed)
        out = {"top_logistic": r["top_prob_generated"], "top_mlp": r["top_prob_mlp_generated"],
               "frechet": r["frechet_generated"], "top_mlp_held_out": r["top_prob_mlp_real"]}
    else:
        r = run_digits(seed=seed, model=kind)
        out = {"top_logistic": r["top_prob_al"], "top_mlp": r["top_prob_mlp_al"],
               "frechet": r["frechet_al"], "top_logistic_pc": r["top_prob_pc"],
               "top_mlp_pc": r["top_prob_mlp_pc"], "frechet_pc": r["frechet_pc"],
               "top_mlp_held_out": r["top_prob_mlp_held_out"]}
    return {"kind": kind, "seed": seed, "cpu_s": time.process_time() - t0,
            "frechet_train": r["frechet_train"], **out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default="score:0,energy:0,pcd:0")
    p.add_argument("--json", type=Path,
                   default=Path(f"benchmarks/results/digits-{date.today()}.json"))
    args = p.parse_args(argv)
    rows = []
    for spec in args.runs.split(","):
        kind, seed = spec.split(":")
        if kind not in ("score", "energy", "pcd"):
            raise SystemExit(f"--runs: kind must be score, energy or pcd; got {kind!r}")
        rows.append(run(kind, int(seed)))
        r = rows[-1]
        print(f"{kind:6s} seed {seed}: top-class p logistic {r['top_logistic']:.3f}, MLP "
              f"{r['top_mlp']:.3f}; Frechet {r['frechet']:.2f} (real training digits "
              f"{r['frechet_train']:.2f}); {r['cpu_s']:.0f} CPU s", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"date": str(date.today()), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
