"""The LLC demo: train a small MLP, then estimate its local learning coefficient.

The network is the 1,185-parameter 2-32-32-1 tanh MLP of devinterp's benchmark config, fitted
by Adam to ``y = sin(2 x1) x2 + 0.1 noise`` on 1,000 generated rows. The same function builds
the benchmark's workload (``benchmarks/llc.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# SGLD settings of the demo and the benchmark (n_beta = n / log n for n = 1000). At the
# trained weights they give eps * lambda_max(n_beta H) = 1.4 and a MALA acceptance of 0.93;
# lr = 1e-3 with localization 100 gave 4.6 and 0.40, and `diagnose` flags it.
LLC_CONFIG = dict(lr=3e-4, n_beta=144.76, localization=300.0, batch_size=64, num_draws=200,
                  num_burnin_steps=100)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                         nn.Linear(32, 1))


def half_squared_error(out: Tensor, batch: tuple[Tensor, ...]) -> Tensor:
    """Per-row loss ``(f(x) - y)^2 / 2``: the Gaussian negative log-likelihood up to a constant."""
    return 0.5 * (out - batch[1]).pow(2).sum(-1)


def trained_mlp(seed: int = 0, n: int = 1000, epochs: int = 2000):
    """A fitted MLP and its data ``(X, y)``, deterministic for a given seed."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 2, generator=g)
    y = torch.sin(2 * X[:, :1]) * X[:, 1:] + 0.1 * torch.randn(n, 1, generator=g)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        opt.zero_grad()
        half_squared_error(model(X), (X, y)).mean().backward()
        opt.step()
    return model, X, y


def run_llc_demo(num_chains: int = 4, num_draws: int = 200, seed: int = 0,
                 store: str | None = None, epochs: int = 2000):
    """Train, sample and estimate: returns the :class:`~torchlangevin.slt.LLC`."""
    from .. import slt

    model, X, y = trained_mlp(seed, epochs=epochs)
    config = {**LLC_CONFIG, "num_draws": num_draws}
    return slt.estimate_llc(model, (X, y), half_squared_error, num_chains=num_chains,
                            observables={"train": ((X, y), 64)}, seed=seed, store=store,
                            **config)
