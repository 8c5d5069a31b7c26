import math

import pytest
import torch

import torchlangevin as tl
from torchlangevin.distributions import Gaussian, GaussianMixture, Quartic1D

from .conftest import gen


@pytest.mark.parametrize("h", [0.5, 1.5])
def test_baoab_positions_are_exact_on_a_gaussian(h):
    # BAOAB samples a harmonic oscillator's positions exactly for any stable h, where
    # ULA's variance is 1 / (1 - h/2) (4/3 at h = 0.5).
    n = 100_000
    chains = tl.UnderdampedLangevin(Gaussian([0.0]), h, friction=1.0).sample(
        torch.zeros(n, 1), 1, burn_in=200, seed=0, progress=False)
    assert float(chains.final.double().var()) == pytest.approx(1.0, abs=5 * math.sqrt(2 / n))


def test_baoab_momentum_is_maxwellian_at_the_temperature():
    n, temperature = 50_000, 2.0
    chains = tl.UnderdampedLangevin(Gaussian([0.0, 0.0]), 0.3, friction=2.0,
                                    noise_scale=math.sqrt(temperature)).sample(
        torch.zeros(n, 2), 1, burn_in=300, seed=1, progress=False)
    p = chains.final_state.momentum.double()
    # momentum ~ N(0, T M) with M = 1; se of a variance is T sqrt(2/n)
    assert bool(((p.var(0) - temperature).abs() < 5 * temperature * math.sqrt(2 / n)).all())


def test_baoab_reflects_on_a_box():
    q = Quartic1D()
    chains = tl.UnderdampedLangevin(q, 0.01, friction=2.0).sample(
        q.sample(20_000, gen(0)), 1, burn_in=2000, seed=1, progress=False)
    assert bool(q.support.contains(chains.final).all())
    floor = tl.diagnostics.binned_tv(q.sample(20_000, gen(1)), q.cdf, q.low, q.high)
    assert tl.diagnostics.binned_tv(chains.final, q.cdf, q.low, q.high) < 1.3 * floor


MIXTURE = GaussianMixture([[-5.0, 0.0], [5.0, 0.0]], 1.0, [0.3, 0.7])  # modes 10 sd apart


def test_parallel_tempering_finds_both_modes_with_their_weights():
    x0 = torch.tensor([[-5.0, 0.0]]).repeat(300, 1)  # every chain starts in the light mode
    pt = tl.ParallelTempering(tl.MALA(MIXTURE, 0.5), tl.geometric_ladder(30.0, 8))
    chains = tl.sample(pt, x0, 1500, burn_in=300, thin=10, seed=0, progress=False)
    weight = float((chains.samples[..., 0] > 0).double().mean())
    assert abs(weight - 0.7) < 0.05
    rates = chains.final_state.swap_rate
    assert rates.shape == (7,) and bool((rates > 0.3).all())
    assert chains.samples.shape == (300, 150, 2)  # only the coldest replicas are draws
    # plain ULA from the same start never leaves the first mode
    plain = tl.sample(tl.Langevin(MIXTURE, 0.1), x0, 1500, burn_in=300, thin=10, seed=0,
                      progress=False)
    assert float((plain.samples[..., 0] > 0).double().mean()) < 0.05


def test_parallel_tempering_with_ula_inner_and_analytic_gradient():
    x0 = torch.tensor([[5.0, 0.0]]).repeat(200, 1)
    pt = tl.ParallelTempering(tl.Langevin(MIXTURE, 0.1), tl.geometric_ladder(30.0, 8),
                              swap_every=2)
    chains = tl.sample(pt, x0, 1500, burn_in=300, thin=10, seed=1, progress=False)
    assert abs(float((chains.samples[..., 0] > 0).double().mean()) - 0.7) < 0.05


def test_tempering_errors():
    with pytest.raises(ValueError, match="temperatures must be >= 2 increasing"):
        tl.ParallelTempering(tl.MALA(MIXTURE, 0.5), [1.0, 0.5])
    with pytest.raises(ValueError, match="swap_every must be an integer >= 1"):
        tl.ParallelTempering(tl.MALA(MIXTURE, 0.5), [1.0, 2.0], swap_every=0)
    with pytest.raises(ValueError, match="friction must be a positive"):
        tl.UnderdampedLangevin(MIXTURE, 0.1, friction=0.0)
