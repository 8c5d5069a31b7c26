"""The Barker proposal: exact on a correlated Gaussian, adapted by ``adapt`` as it is, and
compiled equal to eager, with no change to either."""

import math

import torch

import torchlangevin as tl
from torchlangevin.distributions import Gaussian

from .conftest import gen
from .test_compile import _same, needs_compiler
from .test_kernels import TARGET, _within_sampling_error, _x0


def test_barker_recovers_a_correlated_gaussian():
    chains = tl.sample(tl.Barker(TARGET, step_size=0.15), _x0(), 1, burn_in=600, seed=1,
                       progress=False)
    mean_ok, cov_ok = _within_sampling_error(chains.final)  # 20,000 chains, 5 se
    assert mean_ok and cov_ok
    assert 0.2 < float(chains.acceptance_rate.mean()) < 1.0


def test_adapt_tunes_barker_to_its_target_acceptance():
    scales = torch.logspace(-0.5, 0.5, 10)  # sds 0.3 .. 3
    target = Gaussian(torch.zeros(10), scales**2)
    adapted = tl.adapt(tl.Barker(target, 0.01), torch.randn(500, 10, generator=gen(0)), 600,
                       seed=1)
    chains = tl.sample(adapted.kernel, adapted.x, 300, seed=2, progress=False)
    # 500 chains x 300 steps: the mean acceptance's se is far below 0.01
    assert abs(float(chains.acceptance_rate.mean()) - 0.4) < 0.05
    # the last window's variance from ~500 x 500 correlated draws: within 15%
    assert bool(((adapted.inv_mass / scales**2 - 1).abs() < 0.15).all())
    sd = chains.final.double().std(0)  # 500 independent chains: sd's se ~ 3%
    assert bool(((sd / scales - 1).abs() < 5 * math.sqrt(1 / (2 * 500))).all())


@needs_compiler
def test_compiled_barker_gives_the_eager_samples():
    kernel = tl.Barker(Gaussian(torch.zeros(4), torch.linspace(0.5, 2, 4)), 0.2,
                       inv_mass=torch.linspace(0.6, 1.5, 4))
    x0 = torch.randn(32, 4, generator=gen(2))
    run = dict(burn_in=7, thin=3, seed=4, progress=False)
    _same(tl.sample(kernel, x0, 40, **run), tl.sample(kernel, x0, 40, compile=True, **run))
