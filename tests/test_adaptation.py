import math

import pytest
import torch

import torchlangevin as tl
from torchlangevin.adaptation import DualAveraging, mass_windows
from torchlangevin.distributions import Gaussian

from .conftest import gen
from .test_compile import needs_compiler

SCALES = torch.logspace(-1, 1, 100)  # sds from 0.1 to 10
TARGET = Gaussian(torch.zeros(100), SCALES**2)


@pytest.mark.parametrize("kernel, target, compiled", [
    (tl.MALA(TARGET, 0.01), 0.574, False), (tl.HMC(TARGET, 0.01, 10), 0.8, False),
    pytest.param(tl.MALA(TARGET, 0.01), 0.574, True, marks=needs_compiler)],
    ids=["mala", "hmc", "mala-compiled"])
def test_adapted_kernel_hits_target_acceptance_and_recovers_every_sd(kernel, target, compiled):
    adapted = tl.adapt(kernel, torch.randn(1000, 100, generator=gen(0)), 1000, seed=1,
                       compile=compiled)
    chains = tl.sample(adapted.kernel, adapted.x, 500, thin=10, seed=2, progress=False,
                       compile=compiled)
    assert abs(float(chains.acceptance_rate.mean()) - target) < 0.05
    sd = chains.samples.reshape(-1, 100).double().std(0)
    # 50,000 draws with a bulk ESS above 5,000 per coordinate (checked): the sd's relative
    # standard error is 1/sqrt(2 ESS) < 1%, so 5% is more than 5 se.
    assert float(tl.diagnostics.ess_bulk(chains.samples).min()) > 5_000
    assert bool(((sd / SCALES - 1).abs() < 0.05).all())
    # and the learned inverse mass is the variance
    assert bool(((adapted.inv_mass / SCALES**2 - 1).abs() < 0.1).all())


def test_without_mass_adaptation_the_step_size_is_limited_by_the_smallest_scale():
    adapted = tl.adapt(tl.MALA(TARGET, 0.01), torch.randn(500, 100, generator=gen(0)), 500,
                       adapt_mass=False, seed=1)
    assert adapted.inv_mass == 1.0
    assert adapted.step_size < 0.01  # ~ (0.1)^2 scale: preconditioning is what helps


def test_per_chain_step_sizes():
    target = Gaussian([0.0, 0.0])
    adapted = tl.adapt(tl.MALA(target, 1.0), torch.randn(64, 2, generator=gen(1)), 400,
                       per_chain=True, adapt_mass=False, seed=2)
    assert isinstance(adapted.step_size, torch.Tensor) and adapted.step_size.shape == (64,)
    chains = tl.sample(adapted.kernel, adapted.x, 400, seed=3, progress=False)
    # per-chain acceptance over 400 steps: binomial sd <= 0.025, so 0.574 +- 0.15 is 6 sd
    assert bool(((chains.acceptance_rate - 0.574).abs() < 0.15).all())


def test_per_chain_mass_is_each_chains_own_variance():
    # 64 independent window adaptations (BlackJAX's window_adaptation vmapped over chains)
    adapted = tl.adapt(tl.HMC(TARGET, 0.01, 10), torch.randn(64, 100, generator=gen(0)), 1000,
                       per_chain=True, per_chain_mass=True, seed=1)
    assert adapted.inv_mass.shape == (64, 100) and adapted.step_size.shape == (64,)
    # each chain's estimate of log var has sd ~0.13 (500 draws of the last window); the mean
    # over 64 chains has sd ~0.016, so 0.1 is 6 sd. Pooled over chains by mistake, the sums
    # would be divided by one chain's count and come out 64x too large.
    log_ratio = (adapted.inv_mass / SCALES**2).log()
    assert bool((log_ratio.mean(0).abs() < 0.1).all())
    chains = tl.sample(adapted.kernel, adapted.x, 500, thin=5, seed=2, progress=False)
    sd = chains.samples.reshape(-1, 100).double().std(0)
    assert float(tl.diagnostics.ess_bulk(chains.samples).min()) > 5_000  # sd's se < 1%
    assert bool(((sd / SCALES - 1).abs() < 0.05).all())
    with pytest.raises(ValueError, match="per_chain_mass=True .* needs adapt_mass=True"):
        tl.adapt(tl.HMC(TARGET, 0.01, 10), torch.zeros(4, 100), 20, per_chain_mass=True,
                 adapt_mass=False)


def test_dual_averaging_converges_on_a_known_curve():
    # acceptance(eps) = exp(-eps): the fixed point for target 0.6 is eps = -log 0.6
    da = DualAveraging.start(torch.tensor([1.0]))
    eps = torch.tensor([1.0])
    for _ in range(2000):
        da, eps = da.update(torch.exp(-eps), target=0.6)
    assert float(da.final) == pytest.approx(-math.log(0.6), rel=0.02)


def test_mass_windows_follow_stan():
    assert mass_windows(1000) == [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    short = mass_windows(100)
    assert short[0][0] == 15 and short[-1][1] == 90


def test_adapt_errors():
    with pytest.raises(TypeError, match="accept step"):
        tl.adapt(tl.Langevin(TARGET, 0.01), torch.zeros(4, 100), 20)
    with pytest.raises(ValueError, match="target_accept must be in"):
        tl.adapt(tl.MALA(TARGET, 0.01), torch.zeros(4, 100), 20, target_accept=1.5)
    with pytest.raises(ValueError, match="n_steps must be an integer >= 10"):
        tl.adapt(tl.MALA(TARGET, 0.01), torch.zeros(4, 100), 5)
