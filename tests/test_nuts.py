"""NUTS: exact on known targets, lockstep equal to one chain at a time, honest counts."""

import math

import pytest
import torch

import torchlangevin as tl
from torchlangevin import diagnostics
from torchlangevin.kernels.base import slice_params
from torchlangevin.kernels.nuts import checkpoints
from torchlangevin.mass import DenseMass


class StdNormal:
    def __call__(self, x):
        return 0.5 * (x * x).sum(1)

    def grad(self, x):
        return x


def correlated(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    cov = a @ a.T + 0.5 * torch.eye(n, dtype=torch.float64)
    prec = torch.linalg.inv(cov)

    class Gauss:
        def __call__(self, x):
            return 0.5 * ((x @ prec) * x).sum(1)

        def grad(self, x):
            return x @ prec

    return Gauss(), cov


def test_checkpoints_match_the_iterative_scheme():
    # NumPyro's worked examples: leaf 6 checks nothing and stores at 2; 7 checks 0..2;
    # 13 checks 2 only
    assert checkpoints(6) == (3, 2)
    assert checkpoints(7) == (0, 2)
    assert checkpoints(13) == (2, 2)
    assert checkpoints(0) == (1, 0)
    assert checkpoints(1) == (0, 0)


def test_standard_normal_variance_is_one():
    x0 = torch.randn(256, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    chains = tl.sample(tl.NUTS(StdNormal(), step_size=0.9), x0, 200, burn_in=20, seed=1)
    s = chains.samples[..., 0]
    sq = s * s
    ess = float(diagnostics.ess_bulk(sq.unsqueeze(-1)))
    # Var[x^2] = 2 for a standard normal: the mean of x^2 has sd sqrt(2 / ESS)
    assert abs(float(sq.mean()) - 1.0) < 4 * math.sqrt(2.0 / ess)
    assert abs(float(s.mean())) < 4 * math.sqrt(1.0 / float(diagnostics.ess_bulk(
        s.unsqueeze(-1))))
    assert int(chains.divergences.sum()) == 0


@pytest.mark.parametrize("mass", ["unit", "dense"])
def test_correlated_gaussian_moments(mass):
    energy, cov = correlated()
    n = cov.shape[0]
    inv_mass = DenseMass.of(cov) if mass == "dense" else 1.0
    x0 = torch.randn(128, n, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    kernel = tl.NUTS(energy, step_size=0.6 if mass == "dense" else 0.25, inv_mass=inv_mass)
    chains = tl.sample(kernel, x0 @ torch.linalg.cholesky(cov).T, 150, seed=3)
    s = chains.samples
    ess = diagnostics.ess_bulk(s).clamp(max=s.shape[0] * s.shape[1])
    sd = cov.diagonal().sqrt()
    z = (s.reshape(-1, n).mean(0) / (sd / ess.sqrt())).abs()
    assert float(z.max()) < 4.0
    emp = torch.cov(s.reshape(-1, n).T)
    # sampling error of a covariance entry: sqrt((S_ii S_jj + S_ij^2) / ESS)
    se = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov * cov)
          / float(ess.min())).sqrt()
    assert float(((emp - cov).abs() / se).max()) < 4.5
    if mass == "dense":  # a perfect metric makes the target a unit sphere: short trees
        assert float(chains.stats["tree_depth"].double().mean()) < 3.0


@pytest.mark.parametrize("per_chain", [False, True])
def test_lockstep_chains_equal_chains_run_alone(per_chain):
    energy, cov = correlated()
    n = cov.shape[0]
    g = torch.Generator().manual_seed(4)
    kernel = tl.NUTS(energy, step_size=0.3, max_tree_depth=6)
    if per_chain:  # per-chain step sizes, masses and temperatures slice with the chains
        kernel = kernel.replace(
            step_size=0.2 + 0.2 * torch.rand(6, generator=g, dtype=torch.float64),
            inv_mass=0.5 + torch.rand(6, n, generator=g, dtype=torch.float64),
            noise_scale=0.8 + 0.4 * torch.rand(6, generator=g, dtype=torch.float64))
    x = torch.randn(6, n, generator=g, dtype=torch.float64)
    state = kernel.init(x, kernel.params)
    noise = torch.randn(6, kernel.noise_size(state), generator=torch.Generator().manual_seed(5),
                        dtype=torch.float64)
    together, info = kernel.step(state, noise, kernel.params)
    for i in range(6):
        params = slice_params(kernel.params, slice(i, i + 1), x.ndim)
        alone, info_i = kernel.step(kernel.init(x[i:i + 1], params), noise[i:i + 1], params)
        torch.testing.assert_close(alone.x, together.x[i:i + 1])
        assert int(info_i.n_grads) == int(info.n_grads[i])
        assert int(info_i.tree_depth) == int(info.tree_depth[i])


def test_gradient_counts_fit_the_tree_depth():
    energy, cov = correlated()
    x0 = torch.randn(64, cov.shape[0], generator=torch.Generator().manual_seed(6),
                     dtype=torch.float64)
    chains = tl.sample(tl.NUTS(energy, step_size=0.2), x0, 30, seed=7)
    depth, grads = chains.stats["tree_depth"], chains.stats["n_grads"]
    # a tree of depth d holds its first d - 1 doublings whole and part of the last one
    assert bool(((grads >= 2 ** (depth - 1)) & (grads <= 2**depth - 1)).all())
    assert torch.equal(chains.n_grads, grads.sum(1))


def test_adapt_tunes_nuts_to_its_target():
    energy, cov = correlated()
    x0 = torch.randn(64, cov.shape[0], generator=torch.Generator().manual_seed(8),
                     dtype=torch.float64)
    adapted = tl.adapt(tl.NUTS(energy, step_size=0.05), x0, 300, seed=9)
    assert 0.05 < adapted.step_size < 2.0
    # the last window's acceptance, averaged over 64 chains x 100 steps, near the target
    assert float(adapted.acceptance[-100:].mean()) == pytest.approx(0.8, abs=0.08)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="max_tree_depth"):
        tl.NUTS(StdNormal(), step_size=0.1, max_tree_depth=0)
    with pytest.raises(ValueError, match="step_size"):
        tl.NUTS(StdNormal(), step_size=-0.1)
    with pytest.raises(ValueError, match="inv_mass is a DenseMass over 3"):
        tl.NUTS(StdNormal(), step_size=0.1,
                inv_mass=DenseMass.of(torch.eye(3))).init(torch.zeros(2, 2))


def test_compiled_step_gives_the_eager_draws():
    # compiled, a step is one loop over leaves with every chain at its own depth and leaf
    # (walk); eagerly, doublings in lockstep with the chains still building compacted.
    # They must take the same trees and draws: an energy with no grad (torch.func
    # differentiates it compiled, autograd eagerly), chains stopping at different depths,
    # per-chain step sizes, a dense mass, a Box support some trajectories leave and trees
    # that hit max_tree_depth
    energy, cov = correlated(3)
    prec = torch.linalg.inv(cov)

    def autograd_energy(x):
        return 0.5 * ((x @ prec) * x).sum(1)

    g = torch.Generator().manual_seed(11)
    x0 = torch.randn(12, 3, generator=g, dtype=torch.float64)
    eps = 0.1 + 0.3 * torch.rand(12, generator=g, dtype=torch.float64)
    kw = {"step_size": eps * 2, "inv_mass": DenseMass.of(cov), "max_tree_depth": 4,
          "support": tl.Box(torch.full((3,), -1.5, dtype=torch.float64), 1.5)}
    x0 = x0.clamp(-1, 1)
    eager = tl.sample(tl.NUTS(autograd_energy, **kw), x0, 12, seed=12)
    compiled = tl.sample(tl.NUTS(autograd_energy, compile=True, **kw), x0, 12, seed=12)
    depths = eager.stats["tree_depth"]
    assert len(set(depths.flatten().tolist())) > 1 and (depths == 4).any()
    assert torch.equal(compiled.stats["n_grads"], eager.stats["n_grads"])
    assert torch.equal(compiled.stats["tree_depth"], depths)
    torch.testing.assert_close(compiled.samples, eager.samples, rtol=1e-10, atol=1e-10)
    unbounded = tl.sample(tl.NUTS(autograd_energy, **{**kw, "support": None}), x0, 12, seed=12)
    assert not torch.equal(unbounded.stats["n_grads"], eager.stats["n_grads"])  # box hit
    with pytest.raises(TypeError, match="compile must be True or False; got 'yes'"):
        tl.NUTS(autograd_energy, step_size=0.1, compile="yes")


def test_compile_true_on_the_driver_points_to_the_compiled_leaves():
    # the tree's loops stop where the chains do: no compiled block of steps, and the error
    # says what does compile (not torch's data-dependent-guard error from inside dynamo)
    x0 = torch.zeros(4, 2)
    for run in (lambda: tl.sample(tl.NUTS(StdNormal(), 0.1), x0, 5, compile=True),
                lambda: tl.adapt(tl.NUTS(StdNormal(), 0.1), x0, 50, compile=True)):
        with pytest.raises(ValueError, match=r"NUTS is not compilable: .*NUTS\(\.\.\., "
                                             r"compile=True\)"):
            run()


def test_one_uniform_a_subtree_draws_each_leaf_with_its_weight():
    # progressive sampling with the uniform recycled leaf to leaf (absorb): over 200,000
    # chains, the leaf each subtree keeps must be leaf i with probability w_i / W,
    # w_i = exp(-delta_i) (one leaf of weight 0), within 5 standard errors
    from torchlangevin.kernels.nuts import _Point, _Sums, absorb, subtree_uniform

    deltas = torch.tensor([0.3, -0.5, 2.0, math.inf, 1.0, -1.0, 4.0, 0.5], dtype=torch.float64)
    c = 200_000
    g = torch.Generator().manual_seed(5)
    u = subtree_uniform(torch.randn(c, generator=g), torch.randn(c, generator=g))
    zeros, on = torch.zeros(c, 1, dtype=torch.float64), torch.ones(c, dtype=torch.bool)
    point = _Point(zeros, zeros, zeros[:, 0], zeros)
    sums = _Sums(point, torch.full((c,), -math.inf, dtype=torch.float64), zeros,
                 zeros[:, 0], zeros[:, 0])
    for i, delta in enumerate(deltas):
        leaf = _Point(torch.full_like(zeros, i), zeros, torch.full((c,), float(delta),
                      dtype=torch.float64), zeros)
        sums, _, _, u = absorb(sums, leaf, on, on if i == 0 else ~on, u, zeros[:, 0], 1.0,
                               1.0, math.inf, None)
    freq = torch.bincount(sums.proposal.x[:, 0].long(), minlength=8).double() / c
    p = torch.exp(-deltas) / torch.exp(-deltas).sum()
    assert freq[3] == 0
    assert ((freq - p).abs() <= 5 * (p * (1 - p) / c).sqrt()).all(), (freq, p)


def test_an_energy_that_does_not_compile_in_the_loop_compiles_leaf_by_leaf():
    # torch 2.13 cannot trace a view of a captured tensor under torch.func.grad inside
    # torch.while_loop: the step warns once, compiles each leaf instead, and gives the
    # eager draws
    from torchlangevin.kernels.nuts import CompileWarning

    design = torch.randn(20, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = design @ torch.tensor([1.0, -0.5, 0.2], dtype=torch.float64)

    def energy(w):
        return 0.5 * ((w @ design.T - y) ** 2).sum(-1) + 0.5 * (w * w).sum(-1)

    x0 = torch.zeros(6, 3, dtype=torch.float64)
    eager = tl.sample(tl.NUTS(energy, 0.1, max_tree_depth=4), x0, 8, seed=3)
    kernel = tl.NUTS(energy, 0.1, max_tree_depth=4, compile=True)
    with pytest.warns(CompileWarning, match="compiling each leaf instead"):
        compiled = tl.sample(kernel, x0, 8, seed=3)
    assert torch.equal(compiled.stats["n_grads"], eager.stats["n_grads"])
    torch.testing.assert_close(compiled.samples, eager.samples, rtol=1e-10, atol=1e-10)


def test_kernels_on_one_energy_share_their_compiled_steps():
    # a function (or an energy that opts in, as a Model's does) keeps the compiled steps:
    # a second kernel on it, e.g. the next sample_posterior call, does not compile again;
    # other energies (a module would copy compiled code into its copies) keep them apart
    def energy(x):
        return 0.5 * (x * x).sum(1)

    box = tl.Box(-2.0, 2.0)
    a, b = tl.NUTS(energy, 0.1, compile=True), tl.NUTS(energy, 0.2, compile=True)
    assert a._compiled is b._compiled
    assert tl.NUTS(energy, 0.1, support=box)._compiled is not a._compiled
    assert tl.NUTS(StdNormal(), 0.1)._compiled is not tl.NUTS(StdNormal(), 0.1)._compiled
    model = tl.model.Model(lambda p: -0.5 * (p.z * p.z).sum(-1), {"z": tl.model.Param((2,))})
    assert tl.NUTS(model.energy, 0.1)._compiled is tl.NUTS(model.energy, 0.3)._compiled
