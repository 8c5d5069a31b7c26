"""Pyro's eight schools (centred, non-centred, and Pyro's own example) and a hierarchical
logistic regression through ``tl.from_pyro`` and ``tl.sample_posterior`` (defaults: NUTS,
dense mass, 1,000 + 1,000), printing each run's diagnosis.

    PYTHONPATH=src python benchmarks/posteriordb/pyro_models.py noncentred --chains 4
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torchlangevin as tl  # noqa: E402
from tests.test_pyro_model import (  # noqa: E402
    SIGMA,
    J,
    Y,
    _logistic_data,
    centred,
    conditioned_model,
    logistic,
    model,
    noncentred,
)

MODELS = {
    "noncentred": lambda: tl.from_pyro(noncentred, J, SIGMA, y=Y),
    "centred": lambda: tl.from_pyro(centred, J, SIGMA, y=Y),
    "pyro_example": lambda: tl.from_pyro(conditioned_model, model, SIGMA, Y),
    "logistic": lambda: tl.from_pyro(logistic, *_logistic_data()),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="+", choices=list(MODELS))
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--target-accept", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.models:
        m = MODELS[name]()
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", tl.model.UntrustedRunWarning)
            result = tl.sample_posterior(m, args.chains, args.warmup, args.draws, seed=args.seed,
                                         target_accept=args.target_accept)
        wall = time.perf_counter() - start
        print(f"{name} ({m.pyro_mode}): {wall:.1f} s; {result.diagnosis}")
        rows = {r[0]: r for r in result.summary().rows()}
        for key in ("mu", "tau", "mu_a", "sigma_a"):
            if key in rows:
                print(f"  {key}: mean {rows[key][1]:.3f} sd {rows[key][2]:.3f}")


if __name__ == "__main__":
    main()
