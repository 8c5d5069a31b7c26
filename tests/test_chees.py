import math

import pytest
import torch

import torchlangevin as tl
from torchlangevin.distributions import Gaussian
from torchlangevin.mass import DenseMass

from .conftest import gen
from .test_compile import needs_compiler

MEAN = torch.tensor([1.0, -1.0, 0.5])
COV = torch.tensor([[1.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 0.5]])
CORRELATED = Gaussian(MEAN, COV)

SDS = torch.logspace(-1, 0, 100, dtype=torch.float64)  # condition number 100
ILL = Gaussian(torch.zeros(100), SDS.float() ** 2)


def _chain_estimates(samples):
    """Per chain: the mean and the second moments about the true mean, (C, 3), (C, 3, 3)."""
    x = samples.double()
    centred = x - MEAN.double()
    return x.mean(1), torch.einsum("cni,cnj->cij", centred, centred) / x.shape[1]


@pytest.mark.parametrize("kernel", [
    tl.ChEESHMC(CORRELATED, 0.25, 1.0),
    tl.ChEESHMC(CORRELATED, 0.25, 1.0, jitter="halton"),
    tl.ChEESHMC(CORRELATED, 0.2, torch.linspace(0.3, 2.0, 256),
                inv_mass=DenseMass.of(COV)),
], ids=["uniform", "halton", "per-chain-T-dense-mass"])
def test_kernel_samples_a_correlated_gaussian_exactly(kernel):
    x0 = torch.randn(256, 3, generator=gen(0))
    chains = tl.sample(kernel, x0, 200, burn_in=50, seed=1, progress=False)
    means, moments = _chain_estimates(chains.samples)
    # 256 independent chains: the standard error of an average over chains is the
    # between-chain sd / 16 (no ESS estimate needed); 4.5 se over 3 means and 6 covariance
    # entries in 3 cases fails by chance with probability < 1e-4.
    for est, truth in [(means, MEAN.double()), (moments, COV.double())]:
        se = est.std(0) / math.sqrt(est.shape[0])
        assert bool(((est.mean(0) - truth).abs() < 4.5 * se).all()), (est.mean(0), truth, se)
    # and the se is small enough for this to mean something: a few hundredths
    assert float(se.max()) < 0.03


class _Counting:
    """A unit Gaussian energy that counts its gradient calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x):
        return 0.5 * (x * x).sum(1)

    def grad(self, x):
        self.calls += 1
        return x.clone()


def test_gradient_counts_are_the_leapfrog_steps_each_chain_took():
    energy = _Counting()
    kernel = tl.ChEESHMC(energy, 0.1, 0.5)
    state = kernel.init(torch.randn(8, 2, generator=gen(3)))
    noise = torch.randn(8, kernel.noise_size(state), generator=gen(4))
    energy.calls = 0
    new, info, proposal = kernel.transition(state, noise, kernel.params)
    # L_c = ceil(2 u_c T / eps), u_c = Phi(the jitter's normal)
    u = tl.kernels.base.uniforms(noise[:, 3])
    steps = torch.ceil(2 * u * 0.5 / 0.1).long()
    assert torch.equal(info.n_grads, steps) and bool((steps > 1).any())
    assert energy.calls == int(steps.max())  # lockstep: the longest trajectory's count
    # each chain's end is HMC's with its own number of steps: a masked chain did not move
    for c in range(8):
        one = tl.HMC(energy, 0.1, int(steps[c]), jitter=0.0)
        row = state._replace(x=state.x[c:c + 1], energy=state.energy[c:c + 1],
                             grad=state.grad[c:c + 1])
        z = torch.cat([noise[c:c + 1, :2], torch.full((1, 2), -9.0)], 1)  # always accept
        end, _ = one.step(row, z, one.params)
        torch.testing.assert_close(proposal.x[c:c + 1], end.x)
    # the cap on the steps
    capped = kernel.replace(max_leapfrog_steps=2)
    _, info, _ = capped.transition(state, noise, capped.params)
    assert int(info.n_grads.max()) == 2


def test_chees_tunes_the_trajectory_length_to_the_criterions_optimum():
    x0 = torch.randn(128, 100, generator=gen(0))
    adapted = tl.chees_adapt(tl.ChEESHMC(ILL, 0.05), x0, 500, seed=1)
    # the jittered criterion for exact dynamics on N(0, diag s^2), t = 2uT, u ~ U(0, 1):
    # J(T) = sum_i s_i^4 (1/2 - s_i sin(4T/s_i) / (8T)), peaked at T* ~ 0.94 s_max here.
    # The gradient estimate is noisy (the iterates move ~10% about it, and the averaged
    # T over the last ~250 updates within a few %); leapfrog and the Metropolis weights
    # move the peak a little, so +-25% is the tolerance.
    grid = torch.linspace(0.05, 5, 20_000, dtype=torch.float64)[:, None]
    j = (SDS**4 * (0.5 - SDS * torch.sin(4 * grid / SDS) / (8 * grid))).sum(1)
    best = float(grid[j.argmax(), 0])
    assert 0.8 < best < 1.1
    assert abs(adapted.trajectory_length / best - 1) < 0.25, adapted.trajectory_length
    # the step size is bounded by the narrowest sd (0.1): leapfrog is stable below 2 s_min
    assert 0.03 < adapted.step_size < 0.2
    assert float(adapted.n_grads.sum()) == pytest.approx(
        float(128 * (2 * adapted.trajectory_lengths / adapted.step_sizes).clamp(min=1).sum() / 2),
        rel=0.2)  # on average ceil(t/eps) ~ T/eps + 1/2 per chain and step
    probs = []
    tl.sample(adapted.kernel, adapted.x, 200, seed=2, progress=False, keep_draws=False,
              callback=lambda step, state, info: probs.append(info.acceptance_prob))
    p = torch.stack(probs).double()
    harmonic = float((1 / (1 / p).mean(1)).mean())
    # dual averaging drives E[harmonic mean] to 0.651; over 200 steps of 128 chains the
    # average harmonic mean has sd < 0.005, and the averaged step size sits within a few %
    # of the fixed point (acceptance moves ~0.02 per 5% of step size): 0.03 is the room
    assert abs(harmonic - 0.651) < 0.03, harmonic


def test_chees_with_a_diagonal_mass_whitens_the_target():
    x0 = torch.randn(128, 100, generator=gen(0))
    adapted = tl.chees_adapt(tl.ChEESHMC(ILL, 0.05), x0, 1000, adapt_mass=True, seed=1)
    # the last window's variance from ~500 x 128 correlated draws: within 15% everywhere
    assert bool(((adapted.inv_mass.double() / SDS**2 - 1).abs() < 0.15).all())
    # whitened, every direction has unit period 2 pi: the peak of J for s = 1 is at
    # tan(4T) = 4T, T* = 1.12; the leapfrog at eps ~ 0.5 shortens it a little
    assert 0.7 < adapted.trajectory_length < 1.4, adapted.trajectory_length
    assert adapted.step_size > 0.3  # not limited by the narrowest sd any more


@needs_compiler
def test_compiled_chees_warmup_follows_the_eager_one():
    target = Gaussian(torch.zeros(6, dtype=torch.float64), SDS[::17] ** 2)
    x0 = torch.randn(16, 6, generator=gen(0), dtype=torch.float64)
    kernel = tl.ChEESHMC(target, 0.05)
    # float64 and 15 steps: rounding stays in the last bits, before a ceil(t/eps) or an
    # accept decision can flip on it
    eager = tl.chees_adapt(kernel, x0, 15, seed=1)
    compiled = tl.chees_adapt(kernel, x0, 15, seed=1, compile=True)
    assert torch.equal(eager.n_grads, compiled.n_grads)
    for a, b in [(eager.step_size, compiled.step_size),
                 (eager.trajectory_length, compiled.trajectory_length),
                 (eager.x, compiled.x), (eager.trajectory_lengths, compiled.trajectory_lengths)]:
        torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), rtol=1e-9,
                                   atol=1e-9)
    s1 = tl.sample(eager.kernel, eager.x, 10, seed=3, progress=False)
    s2 = tl.sample(eager.kernel, eager.x, 10, seed=3, progress=False, compile=True)
    torch.testing.assert_close(s1.samples, s2.samples)


def test_bad_input_is_refused_by_name():
    with pytest.raises(ValueError, match="trajectory_length must be > 0; got -1"):
        tl.ChEESHMC(CORRELATED, 0.1, -1.0)
    with pytest.raises(ValueError,
                       match=r"jitter must be one of \('uniform', 'halton'\); got 'sobol'"):
        tl.ChEESHMC(CORRELATED, 0.1, 1.0, jitter="sobol")
    with pytest.raises(ValueError, match="max_leapfrog_steps must be an integer >= 1; got 0"):
        tl.ChEESHMC(CORRELATED, 0.1, 1.0, max_leapfrog_steps=0)
    x0 = torch.zeros(8, 3)
    with pytest.raises(TypeError, match="kernel must be a torchlangevin.ChEESHMC; got HMC"):
        tl.chees_adapt(tl.HMC(CORRELATED, 0.1), x0, 20)
    with pytest.raises(ValueError, match=r"C >= 2 chains .* got \(1, 3\)"):
        tl.chees_adapt(tl.ChEESHMC(CORRELATED, 0.1), x0[:1], 20)
    with pytest.raises(ValueError, match="n_steps must be an integer >= 10; got 5"):
        tl.chees_adapt(tl.ChEESHMC(CORRELATED, 0.1), x0, 5)
    with pytest.raises(ValueError, match="learning_rate must be > 0; got 0"):
        tl.chees_adapt(tl.ChEESHMC(CORRELATED, 0.1), x0, 20, learning_rate=0)
    with pytest.raises(ValueError, match=r"target_accept must be a number in \[0, 1\); got 1.5"):
        tl.chees_adapt(tl.ChEESHMC(CORRELATED, 0.1), x0, 20, target_accept=1.5)
    with pytest.raises(TypeError, match="one step_size shared by all chains"):
        tl.chees_adapt(tl.ChEESHMC(CORRELATED, torch.full((8,), 0.1)), x0, 20)
    with pytest.raises(ValueError, match="initial_trajectory_length must be > 0; got -2"):
        tl.chees_adapt(tl.ChEESHMC(CORRELATED, 0.1), x0, 20, initial_trajectory_length=-2)
