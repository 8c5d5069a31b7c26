"""benchmarks/gradient_targets*.py: the closed-form moments against exact draws, and the
torch energies' gradients against autograd. (The JAX densities are checked against these
torch energies by ``python benchmarks/gradients.py --check``, which needs the BlackJAX venv.)"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gradient_targets  # noqa: E402
import gradient_targets_torch  # noqa: E402

EXACT = ["banana", "gaussian_k1e2", "gaussian_k1e4", "rosenbrock36", "funnel10"]


@pytest.mark.parametrize("name", EXACT)
def test_closed_form_moments_match_exact_draws(name):
    target = gradient_targets.get(name)
    n = 1_000_000 if target.dim <= 10 else 100_000
    f2 = target.transform(target.sampler(np.random.default_rng(0), n)) ** 2
    e_x2, var_x2 = target.moments()
    se = f2.std(0) / np.sqrt(n)
    z = np.abs(f2.mean(0) - e_x2) / se
    assert z.max() < 5.5, (z.max(), z.argmax())  # ~100 parameters: no 5.5-sigma miss
    # Var[x^2] needs eighth moments (heavy for Rosenbrock's b = a^2 + ...): a loose check
    np.testing.assert_allclose(f2.var(0), var_x2, rtol=0.15)


@pytest.mark.parametrize("name", list(gradient_targets.BUILDERS))
def test_energy_shapes_and_gradients(name):
    target = gradient_targets.get(name)
    energy = gradient_targets_torch.energy(target, torch.float64)
    x = torch.as_tensor(target.x0(3, seed=0), dtype=torch.float64) * 0.5
    e = energy(x)
    assert e.shape == (3,) and torch.isfinite(e).all()
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(energy(xg).sum(), xg)
    torch.testing.assert_close(energy.grad(x), g)


@pytest.mark.parametrize("name", EXACT)
def test_energy_is_minus_log_density_of_the_exact_sampler(name):
    """Energy differences between draws equal log-density ratios of the generative model;
    checked on the Gaussians and banana, whose densities are short to write here."""
    target = gradient_targets.get(name)
    energy = gradient_targets_torch.energy(target, torch.float64)
    x = target.sampler(np.random.default_rng(1), 4)
    if name == "banana":
        c = 0.03
        logp = -x[:, 0] ** 2 / 200 - 0.5 * (x[:, 1] - c * (x[:, 0] ** 2 - 100)) ** 2
    elif name.startswith("gaussian"):
        logp = -0.5 * (x**2 / target.data["var"]).sum(1)
    elif name.startswith("rosenbrock"):
        a, b = np.split(x, 2, axis=1)
        logp = -0.5 * ((a - 1) ** 2).sum(1) - ((b - a**2) ** 2).sum(1) / 0.2
    else:  # funnel: theta ~ N(0, 9), z | theta ~ N(0, e^theta) in 9 dims
        th, z = x[:, -1], x[:, :-1]
        logp = -th**2 / 18 - 4.5 * th - 0.5 * np.exp(-th) * (z**2).sum(1)
    total = logp + energy(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(total, total[0], atol=1e-9)
