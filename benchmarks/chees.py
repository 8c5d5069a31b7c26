"""ChEES-HMC on a 100-D Gaussian with sds log-spaced over [0.1, 1] (condition number 100),
128 chains: the gradient evaluations of the tuning, then of sampling until the squared
bias of E[x^2] stays below 0.01.

    b^2(n) = mean_c mean_i (m_ci(n) - s_i^2)^2 / (2 s_i^4)

where ``m_ci(n)`` is chain ``c``'s running average of ``x_i^2`` over its first ``n`` draws
and ``2 s_i^4 = Var_true(x_i^2)``: ``b^2 ~ 1 / ESS`` per chain, so ``b^2 < 0.01`` is
about 100 effective draws of every ``x_i^2`` in each chain. Gradients are per chain (the
sum over chains / 128).

    PYTHONPATH=src python benchmarks/chees.py [--seeds 3] [--mass]
"""

from __future__ import annotations

import argparse

import torch

import torchlangevin as tl
from torchlangevin.distributions import Gaussian


def run(seed: int, adapt_mass: bool, n_tune: int, n_sample: int, jitter: str) -> dict:
    d, c = 100, 128
    sds = torch.logspace(-1, 0, d, dtype=torch.float64)
    target = Gaussian(torch.zeros(d), sds.float() ** 2)
    x0 = torch.randn(c, d, generator=torch.Generator().manual_seed(seed))
    kernel = tl.ChEESHMC(target, 0.05, jitter=jitter)
    adapted = tl.chees_adapt(kernel, x0, n_tune, adapt_mass=adapt_mass, seed=seed)
    sq = torch.zeros(c, d, dtype=torch.float64)
    bias, grads = [], []
    total = [0]

    def book(step, state, info):
        sq.add_(state.x.double() ** 2)
        total[0] += int(info.n_grads.sum())
        est = sq / step
        bias.append(float(((est - sds**2) ** 2 / (2 * sds**4)).mean()))
        grads.append(total[0])

    tl.sample(adapted.kernel, adapted.x, n_sample, seed=seed + 100, progress=False,
              keep_draws=False, callback=book)
    b = torch.tensor(bias)
    above = (b >= 0.01).nonzero()
    first = int(above.max()) + 1 if len(above) else 0  # after the last step above 0.01
    return {"seed": seed, "step_size": adapted.step_size,
            "trajectory_length": adapted.trajectory_length,
            "tuning_grads_per_chain": float(adapted.n_grads.double().mean()),
            "steps_to_bias": first + 1 if first < len(b) else None,
            "sampling_grads_per_chain": grads[first] / c if first < len(b) else None,
            "final_bias": bias[-1]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--mass", action="store_true")
    parser.add_argument("--tune", type=int, default=500)
    parser.add_argument("--draws", type=int, default=1500)
    parser.add_argument("--jitter", default="uniform")
    a = parser.parse_args()
    for seed in range(a.seeds):
        r = run(seed, a.mass, a.tune, a.draws, a.jitter)
        print(r)


if __name__ == "__main__":
    main()
