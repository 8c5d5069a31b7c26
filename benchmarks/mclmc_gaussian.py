"""Gradient evaluations until b^2 < 0.01 on a 100-D ill-conditioned Gaussian (condition
number 100, variances log-spaced on [0.1, 10], no mass matrix, 128 chains): MCLMC and MAMS,
tuned by ``tune_mclmc`` / ``tune_mams``, the tuning's gradients reported separately.

    b^2(n) = mean_i (E_n[x_i^2] - sigma_i^2)^2 / Var[x_i^2],   Var[x_i^2] = 2 sigma_i^4

with ``E_n`` the running average over the first ``n`` draws: of each chain's own (then b^2
averaged over chains, the single-chain measure of Robnik et al. 2023) and of the chains'
mean (the pooled measure). The count is the first draw after which b^2 stays below 0.01.

    PYTHONPATH=src python benchmarks/mclmc_gaussian.py
"""

import math

import torch

import torchlangevin as tl
from torchlangevin.distributions import Gaussian

D, C = 100, 128


def _first_below(b2: torch.Tensor, level: float = 0.01) -> int | None:
    above = (b2 >= level).nonzero()
    if not above.numel():
        return 1
    first = int(above[-1]) + 2  # draws are counted from 1
    return first if first <= b2.numel() else None


def _b2(samples: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x2 = samples.double().pow(2)                                     # (C, n, d)
    n = x2.shape[1]
    steps = torch.arange(1, n + 1, dtype=torch.float64)
    per_chain = x2.cumsum(1) / steps[None, :, None]
    pooled = x2.mean(0).cumsum(0) / steps[:, None]
    score = lambda m: ((m - var) ** 2 / (2 * var**2)).mean(-1)     # noqa: E731
    return score(per_chain).mean(0), score(pooled)


def main() -> None:
    var = torch.logspace(-1, 1, D, dtype=torch.float64)
    target = Gaussian(torch.zeros(D, dtype=torch.float64), var)
    x0 = torch.randn(C, D, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for name, kernel, tune, n_tune, n in [
        ("MCLMC", tl.MCLMC(target, math.sqrt(D) / 4, L=math.sqrt(D)), tl.tune_mclmc, 2000, 2000),
        ("MAMS", tl.MAMS(target, math.sqrt(D) / 5, L=math.sqrt(D)), tl.tune_mams, 400, 600),
    ]:
        tuned = tune(kernel, x0, n_tune, diagonal_preconditioning=False, seed=1)
        chains = tl.sample(tuned.kernel, tuned.x, n, seed=2, progress=False)
        per_step = tuned.kernel.grads_per_step
        if name == "MAMS":  # mean gradients per trajectory: L / eps steps of the integrator
            per_step = per_step * tuned.L / tuned.step_size
        per_chain, pooled = _b2(chains.samples, var)
        cells = []
        for label, b2 in (("per chain", per_chain), ("pooled", pooled)):
            first = _first_below(b2)
            cells.append(f"{label}: " + (f"{per_step * first:.0f} grads" if first else
                                         f"not within {n} draws") + f" (final {b2[-1]:.1e})")
        print(f"{name}: eps {tuned.step_size:.2f}, L {tuned.L:.2f}, tuning "
              f"{float(tuned.n_grads.double().mean()):.0f} grads; b^2 < 0.01 after "
              + "; ".join(cells))


if __name__ == "__main__":
    main()
