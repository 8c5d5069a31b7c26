"""MCLMC and MAMS: MAMS exact on a correlated Gaussian and a banana, MCLMC's bias of the
order its integrator has, the tuning's step size and L on an ill-conditioned Gaussian,
compiled equal to eager, and clear errors."""

import math

import pytest
import torch

import torchlangevin as tl
from torchlangevin.distributions import Gaussian, Rosenbrock
from torchlangevin.integrators import root
from torchlangevin.kernels.mclmc import _max_steps

from .conftest import gen
from .test_compile import _same, needs_compiler
from .test_kernels import TARGET, _within_sampling_error, _x0


def test_mams_recovers_a_correlated_gaussian():
    chains = tl.sample(tl.MAMS(TARGET, step_size=0.3, L=1.5), _x0(), 1, burn_in=40, seed=1,
                       progress=False)
    mean_ok, cov_ok = _within_sampling_error(chains.final)  # 20,000 chains, 5 se
    assert mean_ok and cov_ok
    assert 0.5 < float(chains.acceptance_rate.mean()) <= 1.0


def test_mams_recovers_a_banana():
    # x1 ~ N(1, 1/2), x2 | x1 ~ N(x1^2, 1/(2b)): E x2 = 3/2, Var x2 = 4 a^2 / 2 + 2 / 4 + 1/(2b)
    b, n = 5.0, 20_000
    target = Rosenbrock(a=1.0, b=b, dim=2)
    x0 = torch.randn(n, 2, generator=gen(3), dtype=torch.float64)
    chains = tl.sample(tl.MAMS(target, step_size=0.15, L=1.0), x0, 1, burn_in=80, seed=2,
                       progress=False)
    x = chains.final.double()
    mean = torch.tensor([1.0, 1.5], dtype=torch.float64)
    var = torch.tensor([0.5, 2.5 + 1 / (2 * b)], dtype=torch.float64)
    # 5 standard errors of n iid draws: se(mean) = sqrt(var / n), se(var) from the fourth
    # central moment estimated from the draws themselves
    assert bool(((x.mean(0) - mean).abs() < 5 * (var / n).sqrt()).all())
    centred = (x - mean) ** 2
    se_var = (centred.var(0) / n).sqrt()
    assert bool(((centred.mean(0) - var).abs() < 5 * se_var).all())


def _second_moment_bias(integrator: str, eps: float) -> float:
    # a unit Gaussian in 4-D, 10,000 chains started exact; the bias of E[x^2] over 40 time
    # units (L = 2: ~20 independent draws per chain, se ~ 0.0014), the same noise for each eps
    target = Gaussian(torch.zeros(4, dtype=torch.float64), 1.0)
    x0 = torch.randn(10_000, 4, generator=gen(0), dtype=torch.float64)
    chains = tl.sample(tl.MCLMC(target, eps, L=2.0, integrator=integrator), x0,
                       int(40 / eps), burn_in=int(10 / eps), seed=1, progress=False)
    return float(chains.samples.double().pow(2).mean()) - 1.0


def test_mclmc_bias_shrinks_with_the_step_size_at_the_integrators_order():
    coarse, fine = _second_moment_bias("leapfrog", 2.0), _second_moment_bias("leapfrog", 1.0)
    # a second-order integrator: halving eps divides the bias by ~4 (2^2; higher-order terms
    # push it up at eps = 2); the ratio's se is ~0.3, so (3, 6) is > 4 se either side of the
    # measured ~4.7, and a first-order (2) or fourth-order (16) scaling fails
    assert coarse > 20 * 0.0014
    assert 3.0 < coarse / fine < 6.0
    # McLachlan's minimal-norm error constant is several times smaller at the same eps
    assert abs(_second_moment_bias("mclachlan", 2.0)) < coarse / 3


def _ill_conditioned(d: int = 100):
    var = torch.logspace(-1, 1, d, dtype=torch.float64)  # condition number 100
    return Gaussian(torch.zeros(d, dtype=torch.float64), var), var


def test_tune_mclmc_finds_eps_and_L_on_an_ill_conditioned_gaussian():
    target, var = _ill_conditioned()
    d = var.numel()
    x0 = torch.randn(128, d, generator=gen(0), dtype=torch.float64)
    tuned = tl.tune_mclmc(tl.MCLMC(target, math.sqrt(d) / 4, L=math.sqrt(d)), x0, 2000,
                          diagonal_preconditioning=False, seed=1)
    # L ~ sqrt(sum sigma^2) = sqrt(d) times the mean scale (14.8) times the ESS stage's
    # factor; within a factor 2
    assert 0.5 < tuned.L / float(var.sum().sqrt()) < 2.0
    assert 0 < tuned.step_size < tuned.L
    # the step size hits the target energy error: Var[dE] / d ~ 5e-4 (100 steps x 128
    # chains; the estimate of a variance of heavy-tailed dE: within a factor 3)
    chains, errors = tuned.state, []
    kernel = tuned.kernel
    noise = torch.randn(100, 128, d, generator=gen(5), dtype=torch.float64)
    for z in noise:
        chains, info = kernel.step(chains, z, kernel.params)
        errors.append(info.energy_change)
    per_dim = float(torch.stack(errors).pow(2).mean()) / d
    assert 5e-4 / 3 < per_dim < 5e-4 * 3
    # McLachlan: 2 gradients a step, three stages of 200 steps
    assert bool((tuned.n_grads == 2 * (200 + 200 + 200)).all())


def test_tune_mclmc_preconditions_with_the_variances():
    target, var = _ill_conditioned(20)
    x0 = torch.randn(256, 20, generator=gen(1), dtype=torch.float64)
    tuned = tl.tune_mclmc(tl.MCLMC(target, 1.0, L=4.0), x0, 3000, seed=2)
    # ~300 weighted steps x 256 chains of a sampler that decorrelates in ~L: within 30%
    assert bool(((tuned.inv_mass / var - 1).abs() < 0.3).all())


def test_tune_mams_reaches_its_target_acceptance():
    target, var = _ill_conditioned(20)
    x0 = torch.randn(128, 20, generator=gen(2), dtype=torch.float64)
    tuned = tl.tune_mams(tl.MAMS(target, 1.0, L=4.0), x0, 400, seed=3,
                         diagonal_preconditioning=False)
    chains = tl.sample(tuned.kernel, tuned.x, 100, seed=4, progress=False)
    # 128 chains x 100 trajectories: the mean acceptance's se is below 0.01
    assert abs(float(chains.acceptance_rate.mean()) - 0.9) < 0.05
    assert bool((tuned.n_grads > 0).all()) and tuned.L > tuned.step_size
    sd = chains.samples.double().std((0, 1))  # ~12,800 correlated draws: within 15%
    assert bool(((sd / var.sqrt() - 1).abs() < 0.15).all())


def test_tune_mams_preconditions_with_the_variances():
    target, var = _ill_conditioned(20)
    x0 = torch.randn(128, 20, generator=gen(2), dtype=torch.float64)
    tuned = tl.tune_mams(tl.MAMS(target, 1.0, L=4.0), x0, 400, seed=3)
    # 40 trajectories x 128 chains, nearly independent draws: within 30%
    assert bool(((tuned.inv_mass / var - 1).abs() < 0.3).all())
    # a perfectly preconditioned Gaussian takes long steps: capped below L
    assert tuned.step_size < tuned.L
    chains = tl.sample(tuned.kernel, tuned.x, 50, seed=4, progress=False)
    assert float(chains.acceptance_rate.mean()) > 0.8


def test_mams_counts_only_the_gradients_of_active_chains():
    target = Gaussian(torch.zeros(3, dtype=torch.float64), 1.0)
    kernel = tl.MAMS(target, 0.1, L=1.0, integrator="leapfrog")
    state = kernel.init(torch.zeros(5000, 3, dtype=torch.float64))
    _, info = kernel.step(state, torch.randn(5000, 5, generator=gen(4), dtype=torch.float64),
                          kernel.params)
    # n uniform on 1 .. 19 (k = round(2 L / eps - 1)): one gradient per leapfrog step
    assert int(info.n_grads.min()) == 1 and int(info.n_grads.max()) == 19
    assert abs(float(info.n_grads.double().mean()) - 10) < 5 * math.sqrt(30 / 5000)


@pytest.mark.parametrize("per_chain", [False, True])
def test_mams_compacted_trajectories_are_the_masked_ones(per_chain):
    # eagerly each isokinetic step is computed for the chains still moving only (sorted by
    # their number of steps); the masked lockstep (what a compiled block runs) must give
    # the same points, energies, gradients and kinetic changes, chain by chain
    target = Gaussian(torch.zeros(5, dtype=torch.float64), torch.linspace(0.5, 2, 5))
    c = 64
    eps = torch.linspace(0.05, 0.3, c, dtype=torch.float64) if per_chain else 0.1
    inv_mass = torch.linspace(0.6, 1.5, 5, dtype=torch.float64)
    if per_chain:
        inv_mass = inv_mass * torch.linspace(0.8, 1.2, c, dtype=torch.float64)[:, None]
    kernel = tl.MAMS(target, eps, L=1.0, inv_mass=inv_mass)
    state = kernel.init(torch.randn(c, 5, generator=gen(6), dtype=torch.float64))
    noise = torch.randn(c, kernel.noise_size(state), generator=gen(7), dtype=torch.float64)
    u = noise[:, :5] / noise[:, :5].norm(dim=1, keepdim=True)
    p = kernel.params
    e = eps if per_chain else float(eps)
    most, bound = _max_steps(e, p.L)
    n_steps = 1 + torch.floor(torch.rand(c, generator=gen(8), dtype=torch.float64) * most
                              ).clamp(max=most - 1)
    assert int(n_steps.min()) < int(n_steps.max())  # chains stop at different steps
    args = (state, u, e, root(inv_mass), n_steps, bound)
    (a, dk_a), (b, dk_b) = kernel._masked(*args), kernel._compacted(*args)
    for got, want in zip((*b[:3], dk_b), (*a[:3], dk_a), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@needs_compiler
@pytest.mark.parametrize("case", ["mclmc", "mams"])
def test_compiled_microcanonical_gives_the_eager_samples(case):
    target = Gaussian(torch.zeros(4), torch.linspace(0.5, 2, 4))
    kernel = tl.MCLMC(target, 0.3, L=1.5, inv_mass=torch.linspace(0.6, 1.5, 4)) \
        if case == "mclmc" else tl.MAMS(target, 0.25, L=0.6, integrator="leapfrog")
    x0 = torch.randn(32, 4, generator=gen(2))
    run = dict(burn_in=7, thin=3, seed=4, progress=False)
    _same(tl.sample(kernel, x0, 40, **run), tl.sample(kernel, x0, 40, compile=True, **run))


@needs_compiler
def test_compiled_isokinetic_steps_give_the_eager_trajectories():
    # an energy with no grad (torch.func differentiates it compiled, autograd eagerly), a
    # per-chain mass, trajectories of 1 .. 9 steps (the compiled step on ever fewer chains,
    # down to one) and a tuning run (a new step size every trajectory: no recompiles)
    scales = torch.linspace(0.5, 2, 4)

    def energy(x):
        return 0.5 * ((x / scales) ** 2).sum(-1)

    x0 = torch.randn(32, 4, generator=gen(3))
    inv_mass = torch.linspace(0.6, 1.5, 4) * torch.linspace(0.9, 1.1, 32)[:, None]
    run = dict(burn_in=3, seed=5, progress=False)
    eager = tl.sample(tl.MAMS(energy, 0.25, L=1.25, inv_mass=inv_mass), x0, 12, **run)
    compiled = tl.sample(tl.MAMS(energy, 0.25, L=1.25, inv_mass=inv_mass, compile=True), x0,
                         12, **run)
    assert torch.equal(compiled.stats["n_grads"], eager.stats["n_grads"])
    torch.testing.assert_close(compiled.samples, eager.samples, rtol=1e-5, atol=1e-5)
    tuned = [tl.tune_mams(tl.MAMS(energy, 0.5, L=2.0, compile=c), x0, 100, seed=1)
             for c in (False, True)]
    assert abs(tuned[0].kernel.step_size / tuned[1].kernel.step_size - 1) < 1e-3
    with pytest.raises(TypeError, match="compile must be True or False; got 'yes'"):
        tl.MAMS(energy, 0.1, L=1.0, compile="yes")


def test_bad_input_names_the_argument():
    target = Gaussian(torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="step_size must be > 0"):
        tl.MCLMC(target, -0.1, L=1.0)
    with pytest.raises(ValueError, match="L must be > 0"):
        tl.MAMS(target, 0.1, L=0.0)
    with pytest.raises(ValueError, match="integrator must be one of"):
        tl.MCLMC(target, 0.1, L=1.0, integrator="euler")
    with pytest.raises(ValueError, match="inv_mass must be a positive float or a diagonal"):
        tl.MAMS(target, 0.1, L=1.0, inv_mass=tl.mass.DenseMass.of(torch.eye(3)))
    with pytest.raises(ValueError, match="at least 2 coordinates"):
        tl.sample(tl.MCLMC(Gaussian(torch.zeros(1)), 0.1, L=1.0), torch.zeros(4, 1), 2,
                  progress=False)
    with pytest.raises(TypeError, match="kernel must be a torchlangevin.MCLMC"):
        tl.tune_mclmc(tl.MAMS(target, 0.1, L=1.0), torch.zeros(4, 3), 100)
    with pytest.raises(ValueError, match="frac_tune3 must be a number in"):
        tl.tune_mams(tl.MAMS(target, 0.1, L=1.0), torch.zeros(4, 3), 100, frac_tune3=1.5)
