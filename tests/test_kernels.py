import math

import pytest
import torch

import torchlangevin as tl
from torchlangevin.demo import run_quartic
from torchlangevin.distributions import Gaussian, Quartic1D

from .conftest import gen

COV = torch.tensor([[1.0, 0.8, 0.0], [0.8, 2.0, -0.5], [0.0, -0.5, 0.5]], dtype=torch.float64)
MEAN = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
TARGET = Gaussian(MEAN, COV)
N = 20_000  # chains; the final states are N independent draws once converged


def _within_sampling_error(x: torch.Tensor, z: float = 5.0) -> tuple[bool, bool]:
    """Mean and covariance of N iid draws within z standard errors of the truth.

    se(mean_i) = sqrt(S_ii / N); se(S_ij) = sqrt((S_ii S_jj + S_ij^2) / N). z = 5 keeps
    the 3 + 9 comparisons' false-alarm chance below 1e-5.
    """
    x = x.double()
    n = x.shape[0]
    var = torch.diagonal(COV)
    mean_ok = bool(((x.mean(0) - MEAN).abs() < z * torch.sqrt(var / n)).all())
    se_cov = torch.sqrt((var[:, None] * var[None, :] + COV**2) / n)
    cov_ok = bool(((torch.cov(x.T) - COV).abs() < z * se_cov).all())
    return mean_ok, cov_ok


def _x0():
    return 2.0 * torch.randn(N, 3, generator=gen(0), dtype=torch.float64)


@pytest.mark.parametrize("kernel", [tl.MALA(TARGET, step_size=0.15),
                                    tl.HMC(TARGET, step_size=0.2, n_leapfrog_steps=8)],
                         ids=["mala", "hmc"])
def test_exact_kernels_recover_correlated_gaussian(kernel):
    chains = tl.sample(kernel, _x0(), 1, burn_in=300, seed=1, progress=False)
    mean_ok, cov_ok = _within_sampling_error(chains.final)
    assert mean_ok and cov_ok
    assert 0.5 < float(chains.acceptance_rate.mean()) <= 1.0


def test_the_covariance_check_catches_ula_bias():
    # Power check: ULA at MALA's step size is biased by O(eps), enough to fail the check.
    chains = tl.sample(tl.Langevin(TARGET, step_size=0.15), _x0(), 1, burn_in=300, seed=1,
                       progress=False)
    assert _within_sampling_error(chains.final)[1] is False


def test_ula_stationary_variance_is_one_over_one_minus_half_eps():
    # x' = (1 - eps) x + sqrt(2 eps) xi  =>  var = 2 eps / (1 - (1 - eps)^2) = 1 / (1 - eps/2)
    eps, n = 0.5, 100_000
    chains = tl.Langevin(Gaussian([0.0]), step_size=eps).sample(
        torch.zeros(n, 1), 1, burn_in=60, seed=3, progress=False)
    v = float(chains.final.double().var())
    expected = 1 / (1 - eps / 2)
    assert v == pytest.approx(expected, abs=5 * expected * math.sqrt(2 / n))  # se of a variance
    assert abs(v - 1.0) > 20 * math.sqrt(2 / n)  # and visibly not the exact target's 1


def test_quartic_tv_within_1_3x_of_exact_draw_floor():
    result = run_quartic(n_particles=20_000, seed=0, n_frames=1)
    # floor: mean TV of 20,000 exact draws over 20 replicates (about 0.026)
    assert result.tv < 1.3 * result.tv_floor, (result.tv, result.tv_floor)


def test_reflection_keeps_boundary_mass_under_one_percent():
    q = Quartic1D()
    x0 = q.sample(20_000, gen(4))
    eps = 0.02  # coarse steps: sd per step 0.2, a tenth of the interval
    chains = tl.Langevin(q, step_size=eps).sample(x0, 200, thin=200, seed=5, progress=False)
    share = float(q.support.near_boundary(chains.final).double().mean())
    assert share < 0.01
    assert bool(q.support.contains(chains.final).all())
    # Power check: the same chains clamped instead of reflected pile mass on the bounds.
    x, g = x0.clone(), torch.Generator().manual_seed(5)
    for _ in range(200):
        x = (x - eps * q.grad(x) + math.sqrt(2 * eps) * torch.randn(x.shape, generator=g))
        x = x.clamp(q.low, q.high)
    assert float(q.support.near_boundary(x).double().mean()) > 0.05


def test_mala_rejects_outside_a_box():
    q = Quartic1D()
    chains = tl.MALA(q, step_size=0.05).sample(q.sample(5000, gen(6)), 100, seed=7,
                                               progress=False)
    assert bool(q.support.contains(chains.samples.reshape(-1, 1)).all())
    assert float(chains.acceptance_rate.mean()) < 0.95  # boundary proposals were rejected


@pytest.mark.parametrize("make", [lambda e: tl.Langevin(e, 0.05), lambda e: tl.MALA(e, 0.1),
                                  lambda e: tl.HMC(e, 0.1, 5)], ids=["ula", "mala", "hmc"])
def test_any_event_shape_with_an_autograd_energy(make):
    def energy(x):  # standard Gaussian on (C, 2, 3), no analytic gradient
        return 0.5 * (x**2).sum(dim=(1, 2))

    x0 = torch.randn(4000, 2, 3, generator=gen(8))
    chains = make(energy).sample(x0, 50, burn_in=100, thin=5, seed=9, progress=False)
    assert chains.samples.shape == (4000, 10, 2, 3)
    assert chains.energy.shape == (4000, 10)
    torch.testing.assert_close(chains.energy[:, -1], energy(chains.final))
    # 4000 chains: the variance of each coordinate is 1 within 5 se (ULA: eps/4 bias at most)
    v = chains.final.double().var(0)
    assert bool(((v - 1).abs() < 5 * math.sqrt(2 / 4000) + 0.05).all())


def test_same_seed_same_samples_and_different_seed_differs():
    for kernel in [tl.Langevin(TARGET, 0.1), tl.MALA(TARGET, 0.1), tl.HMC(TARGET, 0.1, 3)]:
        a = tl.sample(kernel, _x0()[:100], 20, seed=11, progress=False)
        b = kernel.sample(_x0()[:100], 20, seed=11, progress=False)
        c = tl.sample(kernel, _x0()[:100], 20, seed=12, progress=False)
        assert torch.equal(a.samples, b.samples)
        assert not torch.equal(a.samples, c.samples)


class CountingEnergy:
    """Standard Gaussian that counts gradient and energy evaluations."""

    def __init__(self):
        self.grads = self.energies = 0

    def __call__(self, x):
        self.energies += 1
        return 0.5 * (x * x).sum(-1)

    def grad(self, x):
        self.grads += 1
        return x.clone()


def test_gradient_budget_per_step():
    e = CountingEnergy()
    tl.MALA(e, 0.1).sample(torch.zeros(10, 2), 50, thin=50, seed=0, progress=False)
    assert e.grads == 1 + 50  # init + one per proposal
    e = CountingEnergy()
    tl.HMC(e, 0.1, n_leapfrog_steps=7).sample(torch.zeros(10, 2), 20, thin=20, seed=0,
                                             progress=False)
    assert e.grads == 1 + 20 * 7  # L per trajectory after the cached one
    e = CountingEnergy()
    tl.Langevin(e, 0.1).sample(torch.zeros(10, 2), 30, thin=30, seed=0, progress=False)
    assert e.grads == 1 + 30


def test_hmc_counts_divergences_and_stays_finite():
    chains = tl.HMC(Gaussian([0.0, 0.0], [1e-4, 1.0]), step_size=0.5, n_leapfrog_steps=20).sample(
        torch.randn(200, 2, generator=gen(1)) * 0.01, 20, seed=2, progress=False)
    assert int(chains.divergences.sum()) > 0
    assert bool(torch.isfinite(chains.samples).all())
    assert chains.nonfinite_chains == []


def test_hmc_diagonal_mass_on_badly_scaled_gaussian():
    scales = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    target = Gaussian(torch.zeros(3), scales**2)
    kernel = tl.HMC(target, step_size=0.3, n_leapfrog_steps=5, inv_mass=scales**2)
    chains = kernel.sample(torch.zeros(N, 3, dtype=torch.float64), 1, burn_in=100, seed=4,
                           progress=False)
    sd = chains.final.std(0)
    # se of a sample sd is sd / sqrt(2N)
    assert bool(((sd / scales - 1).abs() < 5 / math.sqrt(2 * N)).all())


def test_hmc_jitter_breaks_a_periodic_trajectory():
    # L leapfrog steps of eps = 2 sin(pi / 2L) turn a unit Gaussian's phase by exactly pi:
    # x -> -x, so a fixed step size never changes |x|. Jittered, the chains mix.
    n, L = 2000, 10
    eps = 2 * math.sin(math.pi / (2 * L))
    x0 = torch.full((n, 1), 0.5, dtype=torch.float64)
    final = {j: tl.HMC(Gaussian([0.0]), eps, L, jitter=j).sample(
        x0, 1, burn_in=200, seed=3, progress=False).final for j in (0.0, 0.15)}
    assert bool(((final[0.0].abs() - 0.5).abs() < 1e-6).all())
    # the sample variance of n draws from N(0, 1) has se sqrt(2 / n)
    assert abs(float(final[0.15].var()) - 1) < 4 * math.sqrt(2 / n)
    with pytest.raises(ValueError, match=r"jitter must be a number in \[0, 1\); got 1.5"):
        tl.HMC(Gaussian([0.0]), eps, L, jitter=1.5)


def test_per_chain_step_sizes_and_temperatures():
    c = 4000
    temps = torch.tensor([1.0, 4.0]).repeat_interleave(c // 2)
    kernel = tl.MALA(Gaussian([0.0]), step_size=0.5 * temps, noise_scale=temps.sqrt())
    chains = kernel.sample(torch.zeros(c, 1), 1, burn_in=200, seed=5, progress=False)
    v_cold, v_hot = chains.final[: c // 2].var(), chains.final[c // 2:].var()
    # at temperature T the target is N(0, T); se of a variance with n=2000 is T sqrt(2/n)
    assert float(v_cold) == pytest.approx(1.0, abs=5 * math.sqrt(2 / 2000))
    assert float(v_hot) == pytest.approx(4.0, abs=5 * 4 * math.sqrt(2 / 2000))


def test_kernel_step_directly():
    kernel = tl.MALA(TARGET, 0.1)
    state = kernel.init(torch.zeros(5, 3), kernel.params)
    noise = torch.randn(5, kernel.noise_size(state), generator=gen(0))
    state, info = kernel.step(state, noise, kernel.params)
    assert state.step == 1 and info.accepted.shape == (5,) and info.acceptance_prob.shape == (5,)


def test_an_energy_with_only_energy_and_grad_never_goes_through_autograd():
    class Fused:  # N(0, I); calling it directly or differentiating it is a bug here
        calls = 0

        def __call__(self, x):
            raise AssertionError("energy(x) called: energy_and_grad should serve")

        def energy_and_grad(self, x):
            Fused.calls += 1
            return 0.5 * (x * x).sum(-1), x.clone()

    x0 = torch.randn(2000, 2, generator=gen(11), dtype=torch.float64)
    for kernel in (tl.Langevin(Fused(), 0.05), tl.MALA(Fused(), 0.3), tl.HMC(Fused(), 0.3, 4)):
        chains = kernel.sample(x0, 1, burn_in=100, seed=12, progress=False)
        v = chains.final.var(0)
        # 2000 draws of N(0, 1): the variance within 5 se (ULA: + its bias, 1/(1 - eps/2) - 1)
        assert bool(((v - 1).abs() < 5 * math.sqrt(2 / 2000) + 0.026).all())
    assert Fused.calls > 0
