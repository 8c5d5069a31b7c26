"""Posterior sampling of weights and the LLC: known answers, exactness, resumption, bad input.

Tolerances: every LLC comparison allows 4 Monte Carlo standard errors (the estimate's own
ESS-based ``se``) on top of the relative bar the issue sets.
"""

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from torchlangevin import posterior, slt
from torchlangevin.posterior.optim import Hyper, sgmcmc_update_


def mse(out, batch):
    return 0.5 * (out - batch[1]).pow(2).sum(-1)


def regression(n=1000, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    y = X @ torch.randn(d, 1, generator=g) + 0.5 + torch.randn(n, 1, generator=g)
    Xt = torch.cat([X, torch.ones(n, 1)], 1).double()
    sol = torch.linalg.lstsq(Xt, y.double()).solution
    model = nn.Linear(d, 1)
    with torch.no_grad():
        model.weight.copy_(sol[:d].T)
        model.bias.copy_(sol[d])
    return model, X, y, Xt


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))


def toy(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 2, generator=g)
    return X, torch.sin(X[:, :1]) + 0.1 * torch.randn(n, 1, generator=g)


# ---- the update itself ----------------------------------------------------------------------

def hand_step(w, g, w0, xi, lr, nb, loc, wd, box, mask, V=None, alpha=0.99, eps=0.1):
    """devinterp's formula, written out."""
    G = torch.ones_like(w)
    if V is not None:
        V = alpha * V + (1 - alpha) * g * g
        G = 1 / (V.sqrt() + eps)
    drift = G * (nb * g + loc * (w - w0) + wd * w) * mask
    new = w - lr / 2 * drift + lr**0.5 * G.sqrt() * xi * mask
    return torch.clamp(new, w0 - box, w0 + box), V


@pytest.mark.parametrize("cls", [posterior.SGLD, posterior.RMSpropSGLD])
def test_optimizer_step_equals_devinterp_formula(cls):
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(3, 4, generator=g)
    p = nn.Parameter(w0.clone())
    mask = (torch.rand(3, 4, generator=g) > 0.3).float()
    kw = dict(lr=1e-2, n_beta=50.0, localization=3.0, weight_decay=0.5, noise_level=1.0,
              bounding_box_size=0.2, mask=mask)
    opt = cls([p], **kw)
    w, V = w0.clone(), torch.zeros(3, 4) if cls is posterior.RMSpropSGLD else None
    for step in range(3):
        grad = torch.randn(3, 4, generator=g)
        p.grad = grad.clone()
        opt.step(generator=torch.Generator().manual_seed(step))
        xi = torch.randn(3, 4, generator=torch.Generator().manual_seed(step))
        w, V = hand_step(w, grad, w0, xi, 1e-2, 50.0, 3.0, 0.5, 0.2, mask, V)
        torch.testing.assert_close(p.detach(), w, atol=1e-6, rtol=0)


def test_sghmc_with_full_friction_is_sgld():
    g = torch.Generator().manual_seed(1)
    w0, grad, xi = (torch.randn(10, generator=g) for _ in range(3))
    a, b = w0.clone(), w0.clone()
    sgmcmc_update_(a, grad, xi.clone(), w0, Hyper(lr=1e-2, n_beta=10.0, localization=1.0))
    sgmcmc_update_(b, grad, xi.clone(), w0, Hyper(lr=1e-2, n_beta=10.0, localization=1.0,
                                                     method="sghmc", friction=1.0),
                   state=torch.zeros(10))
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_sampler_update_equals_hand_written_loop():
    """Two steps of posterior.sample equal a hand-written loop with the same batches/noise."""
    X, y = toy()
    model = mlp()
    tree = posterior.sample(model, (X, y), mse, lr=1e-3, n_beta=100.0, localization=2.0,
                            num_chains=2, num_draws=2, batch_size=32, seed=3, mala_checks=0)
    w0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    for c in range(2):
        sb, sn = posterior.chain_seeds(3, c)
        gb, gn = torch.Generator().manual_seed(sb), torch.Generator().manual_seed(sn)
        perm = torch.randperm(256, generator=gb)
        noise = torch.randn(2, 33, generator=gn)  # the run's one block: (steps, params)
        m = mlp()
        for step in range(2):
            idx = perm[32 * step:32 * (step + 1)]
            per = mse(m(X[idx]), (X[idx], y[idx]))
            torch.testing.assert_close(
                torch.as_tensor(tree.dataset["sampling_loss"].values[c, step]), per.detach(),
                atol=1e-6, rtol=1e-5)
            m.zero_grad()
            per.mean().backward()
            flat = torch.cat([p.detach().reshape(-1) for p in m.parameters()])
            grad = torch.cat([p.grad.reshape(-1) for p in m.parameters()])
            xi = noise[step]
            new, _ = hand_step(flat, grad, w0, xi, 1e-3, 100.0, 2.0, 0.0, math.inf, 1.0)
            torch.nn.utils.vector_to_parameters(new, m.parameters())


# ---- known answers --------------------------------------------------------------------------

def test_regular_model_gives_half_the_dimension_after_discretisation():
    model, X, y, Xt = regression()
    n, lr = X.shape[0], 1e-3
    nb = posterior.default_n_beta(n)
    a = torch.linalg.eigvalsh(nb * (Xt.T @ Xt / n)).float()
    expected = 0.5 * (1 / (1 - lr * a / 4)).sum().item()  # d/2 = 2.5 as lr -> 0
    est = slt.estimate_llc(model, (X, y), lambda o, b: 0.5 * (o - b[1]).pow(2).squeeze(-1),
                           lr=lr, num_chains=48, num_draws=300, num_burnin_steps=100,
                           batch_size=n, seed=1)
    assert abs(est.mean - expected) < 0.05 * expected
    assert abs(est.mean - expected) < 4 * est.se
    assert abs(expected - 2.5) < 0.05 * 2.5
    assert est.diagnostics["flags"] == ""


class NormalCrossing(nn.Module):
    """f(x) = (w1 w2)^k x: K(w) = (w1 w2)^{2k} / 2. Its zero set is the two axes; the
    learning coefficient is 1/(2k) at every point of it, with multiplicity 2 at the crossing
    (the origin) and 1 elsewhere on the axes."""

    def __init__(self, k, w0=(0.0, 0.0)):
        super().__init__()
        self.k = k
        self.w = nn.Parameter(torch.tensor(w0))

    def forward(self, x):
        return (self.w[0] * self.w[1]) ** self.k * x


def expected_sk(w1, w2, k, s, gamma, m2, a=0.0):
    """E[s K] under p(w) ∝ exp(-s m2 (w1 w2)^{2k} / 2 - gamma |w - (a, 0)|^2 / 2), by the
    trapezoid rule on the grid ``w1 x w2``."""
    v1, v2 = np.meshgrid(w1, w2, indexing="ij")
    sk = s * 0.5 * m2 * (v1 * v2) ** (2 * k)
    logp = -sk - gamma * ((v1 - a) ** 2 + v2**2) / 2
    p = np.exp(logp - logp.max())
    z = np.trapezoid(np.trapezoid(p, w2, axis=1), w1)
    return float(np.trapezoid(np.trapezoid(p * sk, w2, axis=1), w1) / z)


def exact_normal_crossing(k, s, gamma, m2):
    """At the crossing (w0 = 0): one quadrant (the posterior is symmetric), on a grid
    geometric towards the singular origin."""
    g = np.concatenate([[0.0], np.geomspace(1e-8, 8 / math.sqrt(gamma), 4000)])
    return expected_sk(g, g, k, s, gamma, m2)


@pytest.mark.parametrize("k", [1, 2])
def test_normal_crossing_matches_the_exact_finite_temperature_value(k):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(100, 1, generator=g)
    y = torch.zeros(100, 1)
    s, gamma = 200.0, 1.0
    est = slt.estimate_llc(NormalCrossing(k), (X, y), mse, lr=5e-4, n_beta=s,
                           localization=gamma, num_chains=32, num_draws=300,
                           num_steps_bw_draws=10, num_burnin_steps=1000, batch_size=100)
    exact = exact_normal_crossing(k, s, gamma, float(X.pow(2).mean()))
    # With multiplicity 2 the finite-temperature value approaches 1/(2k) only like 1/log(s):
    # here it is 0.73 (k=1) and 0.62 (k=2) of it; the sampler must hit the exact value.
    assert abs(est.mean - exact) < 4 * est.se + 0.03 * exact


def exact_on_axis(k, s, gamma, m2, a):
    """At w0 = (a, 0): 8 sd of the localisation around it, narrower in w2 where K confines."""
    w1 = np.linspace(a - 8 / math.sqrt(gamma), a + 8 / math.sqrt(gamma), 1601)
    half = 8 * min(1 / math.sqrt(gamma), 3 * (s * m2 / 2) ** (-1 / (4 * k)))
    return expected_sk(w1, np.linspace(-half, half, 2001), k, s, gamma, m2, a)


@pytest.mark.parametrize("k, lr", [(1, 3e-5), (2, 1e-4)])
def test_normal_crossing_gives_one_over_2k_away_from_the_crossing(k, lr):
    # At w0 = (2, 0) the model is locally c(w1) w2^{2k} with c > 0: lambda = 1/(2k) with
    # multiplicity 1, so the finite-temperature value is close to it (0.4986 and 0.2397 by
    # quadrature at n_beta 1000, localization 10) and the estimate must land within the
    # issue's 15% of 1/(2k). The discretisation adds ~3% (k=1) and ~1% (k=2), measured by
    # long ULA runs of the same update.
    g = torch.Generator().manual_seed(0)
    X = torch.randn(100, 1, generator=g)
    y = torch.zeros(100, 1)
    s, gamma = 1000.0, 10.0
    est = slt.estimate_llc(NormalCrossing(k, (2.0, 0.0)), (X, y), mse, lr=lr, n_beta=s,
                           localization=gamma, num_chains=64, num_draws=500,
                           num_steps_bw_draws=10, num_burnin_steps=1000, batch_size=100)
    exact = exact_on_axis(k, s, gamma, float(X.pow(2).mean()), 2.0)
    assert abs(exact * 2 * k - 1) < 0.05
    assert abs(est.mean - exact) < 4 * est.se + 0.05 * exact
    assert 4 * est.se < 0.1 / (2 * k)  # precise enough for the 15% bar to mean something
    assert abs(est.mean * 2 * k - 1) < 0.15
    assert est.diagnostics["flags"] == ""


def test_reduced_rank_regression_matches_aoyagi_watanabe():
    # M = N = H = 3, true rank 1: M + H + N + r = 10 is even, so
    # lambda = (2 (H + r)(M + N) - (M - N)^2 - (H + r)^2) / 8 = 4 (multiplicity 1).
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 3, generator=g)
    a, b = torch.randn(3, generator=g), torch.randn(3, generator=g)
    y = X @ torch.outer(b, a).T
    model = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].weight[0] = a
        model[1].weight.zero_()
        model[1].weight[:, 0] = b
    est = slt.estimate_llc(model, (X, y), mse, lr=1e-4, n_beta=1000.0, localization=1.0,
                           num_chains=16, num_draws=150, num_steps_bw_draws=10,
                           num_burnin_steps=1500, batch_size=200)
    assert abs(est.mean - 4.0) < 0.2 * 4.0
    assert est.rhat < 1.1


# ---- chains, seeds, data forms --------------------------------------------------------------

def test_a_chain_does_not_depend_on_how_many_run_beside_it():
    X, y = toy()
    kw = dict(lr=1e-3, num_draws=5, batch_size=32, seed=7, mala_checks=0, num_chains=4)
    full = posterior.sample(mlp(), (X, y), mse, **kw).dataset
    part = posterior.sample(mlp(), (X, y), mse, chains=range(2, 4), **kw).dataset
    np.testing.assert_array_equal(full["sampling_loss"].values[2:], part["sampling_loss"].values)
    assert part["chain"].values.tolist() == [2, 3]


def test_tensor_dataset_and_dataloader_give_the_same_run():
    X, y = toy()
    kw = dict(lr=1e-3, num_draws=3, batch_size=32, num_chains=2, mala_checks=0)
    a = posterior.sample(mlp(), (X, y), mse, **kw).dataset["sampling_loss"].values
    b = posterior.sample(mlp(), TensorDataset(X, y), mse, **kw).dataset["sampling_loss"].values
    loader = DataLoader(TensorDataset(X, y), batch_size=50, shuffle=False)
    c = posterior.sample(mlp(), loader, mse, **kw).dataset["sampling_loss"].values
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_param_masks_freeze_what_they_leave_out():
    X, y = toy()
    model = mlp()
    first = model[0].weight.detach().clone()
    mask = torch.zeros_like(model[2].weight)
    mask[0, :4] = 1
    tree = posterior.sample(model, (X, y), mse, lr=1e-3, num_draws=5, num_chains=2,
                            param_masks={"2.weight": mask}, mala_checks=0)
    assert torch.equal(model[0].weight, first)  # the user's model is never touched
    # only 4 of the weights move, so the distance is that of a 4-dimensional walk
    assert tree.dataset["metrics_distance"].values[:, -1].max() < 0.5


def test_vmap_fallback_is_reported_and_gives_the_same_draws():
    class ItemModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = mlp()

        def forward(self, x):
            if float(x.abs().sum()) < 0:  # .item(): vmap cannot run this
                raise AssertionError
            return self.lin(x)

    X, y = toy()
    kw = dict(lr=1e-3, num_draws=4, batch_size=32, num_chains=3, mala_checks=0)
    with pytest.warns(UserWarning, match="one after another"):
        slow = posterior.sample(ItemModel(), (X, y), mse, **kw)
    fast = posterior.sample(mlp(), (X, y), mse, **kw)
    assert slow.dataset.attrs["vectorized"] == "False"
    np.testing.assert_allclose(slow.dataset["sampling_loss"].values,
                               fast.dataset["sampling_loss"].values, rtol=1e-5, atol=1e-6)


def test_non_finite_chains_are_named_and_excluded():
    class Sqrt(nn.Module):  # NaN once a chain wanders below w = 0
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([0.3]))

        def forward(self, x):
            return torch.sqrt(self.w) * x

    X = torch.randn(64, 1, generator=torch.Generator().manual_seed(0))
    data = (X, torch.zeros(64, 1))
    with pytest.warns(RuntimeWarning, match=r"chain \d+ at step \d+"):
        est = slt.estimate_llc(Sqrt(), data, mse, lr=1e-2, n_beta=1.0, num_chains=8,
                               num_draws=50, batch_size=64)
    assert 0 < len(est.excluded) < 8
    assert all(np.isnan(est.per_chain[c]) for c in est.excluded)
    assert math.isfinite(est.mean)
    assert "diverged" in est.diagnostics["flags"]


# ---- store: resume and cache ----------------------------------------------------------------

def test_interrupted_store_resumes_to_the_uninterrupted_result(tmp_path):
    X, y = toy()
    kw = dict(lr=1e-3, num_draws=30, num_burnin_steps=5, batch_size=32, num_chains=3,
              method="rmsprop_sgld", observables={"probe": ((X, y), 16)}, seed=2)
    reference = posterior.sample(mlp(), (X, y), mse, **kw).dataset

    calls = {"n": 0}

    def flaky(out, batch):
        calls["n"] += 1
        if calls["n"] == 60:
            raise KeyboardInterrupt
        return mse(out, batch)

    flaky.__qualname__ = mse.__qualname__  # the same loss, as far as the cache key goes
    store = tmp_path / "run.zarr"
    with pytest.raises(KeyboardInterrupt):
        posterior.sample(mlp(), (X, y), flaky, store=store, checkpoint_every=4, **kw)
    resumed = posterior.sample(mlp(), (X, y), flaky, store=store, checkpoint_every=4, **kw)
    for name in ("sampling_loss", "loss_probe", "metrics_loss", "metrics_mala_accept"):
        np.testing.assert_array_equal(resumed.dataset[name].values, reference[name].values)
    before = calls["n"]
    cached = posterior.sample(mlp(), (X, y), flaky, store=store, **kw)
    assert calls["n"] - before < 5  # only the shape probe ran: no sampling
    np.testing.assert_array_equal(cached.dataset["sampling_loss"].values,
                                  reference["sampling_loss"].values)
    with pytest.raises(ValueError, match="different configuration"):
        posterior.sample(mlp(), (X, y), flaky, store=store, **{**kw, "lr": 2e-3})


# ---- susceptibilities and influence ---------------------------------------------------------

def test_bif_and_susceptibilities_follow_their_definitions():
    X, y = toy()
    kw = dict(lr=1e-3, num_draws=40, batch_size=32, num_chains=2, mala_checks=0,
              observables={"train": ((X, y), 32), "probe": ((X[:8], y[:8]), 8)})
    full = posterior.sample(mlp(), (X, y), mse, **kw)
    masks = {"2.weight": None, "2.bias": None}
    part = posterior.sample(mlp(), (X, y), mse, param_masks=masks, **kw)
    infl = slt.bif(full, ["probe"])
    assert infl.shape == (8, 8)
    np.testing.assert_allclose(np.diag(infl.values), 1.0, atol=1e-9)
    losses = full.dataset["loss_probe"].values.reshape(-1, 8).astype(np.float64)
    np.testing.assert_allclose(infl.values, np.corrcoef(losses.T), atol=1e-9)
    chi = slt.susceptibilities(part, full, sampling="train")["probe"]
    r, f = part.dataset, full.dataset
    pt = r["loss_train"].values.mean(axis=2)
    phi = pt - f["init_loss"].values.mean()
    delta = f["loss_train"].values.mean() - f["loss_probe"].values.mean(axis=(0, 1))
    hand = ((phi * pt).mean() - (phi[..., None] * r["loss_probe"].values).mean(axis=(0, 1))
            - phi.mean() * delta)
    np.testing.assert_allclose(chi.values, hand, rtol=1e-5)


def test_calibrate_flags_a_diverging_setting():
    X, y = toy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        table = slt.calibrate(mlp(), (X, y), mse, lrs=[1e-4, 3.0], n_betas=[50.0],
                              num_chains=2, num_draws=30, batch_size=64)
    assert len(table) == 2
    # an untrained w0 is no minimum: the loss falls, and the table says so ("negative")
    assert "diverged" not in table.loc[0, "flags"] and "negative" in table.loc[0, "flags"]
    assert "diverged" in table.loc[1, "flags"] or "step too large" in table.loc[1, "flags"]


# ---- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=-1.0), r"lr must be > 0; got -1.0"),
    (dict(lr=1e-3, batch_size=10_000), "batch_size=10000"),
    (dict(lr=1e-3, num_chains=0), "num_chains"),
    (dict(lr=1e-3, method="nuts"), "method='nuts'"),
    (dict(lr=1e-3, param_masks={"nope": None}), "unknown parameter names"),
    (dict(lr=1e-3, localization=-1.0), r"localization must be >= 0; got -1.0"),
    (dict(lr=1e-3, seed=-1), r"seed must be an integer >= 0; got -1"),
])
def test_bad_arguments_are_named(kwargs, match):
    X, y = toy()
    with pytest.raises(ValueError, match=match):
        posterior.sample(mlp(), (X, y), mse, **kwargs)


def test_bad_data_and_loss_are_named():
    X, y = toy()
    with pytest.raises(ValueError, match="same number of rows"):
        posterior.sample(mlp(), (X, y[:10]), mse, lr=1e-3)
    with pytest.raises(ValueError, match="one loss per row"):
        posterior.sample(mlp(), (X, y), lambda o, b: mse(o, b).mean(), lr=1e-3)
    with pytest.raises(TypeError, match="data: expected"):
        posterior.sample(mlp(), "data.csv", mse, lr=1e-3)


def test_paired_llc_has_the_same_mean_and_a_smaller_error():
    model, X, y, _ = regression()
    tree = posterior.sample(model, (X, y), lambda o, b: 0.5 * (o - b[1]).pow(2).squeeze(-1),
                            lr=1e-3, num_chains=16, num_draws=300, num_burnin_steps=100,
                            batch_size=100, mala_checks=0)
    paired, plain = slt.llc(tree), slt.llc(tree, paired=False)
    assert abs(paired.mean - plain.mean) < 4 * math.hypot(paired.se, plain.se)
    assert paired.se < plain.se
    # devinterp's keys, for code written against it
    assert paired["llc_mean"] == paired.mean and paired["llc_std"] == paired.sd
    assert paired["llc_per_chain"] is paired.per_chain
    with pytest.raises(KeyError, match="llc_mean"):
        paired["llc"]


def test_top_hessian_eigenvalue_is_exact_on_a_linear_model():
    # The mean of 0.5 (x.w + b - y)^2 over n rows has Hessian Xt^T Xt / n (Xt = [X, 1]),
    # the same at every w; with a mask, the principal submatrix of the masked entries.
    # Lanczos' Ritz value on a 5-dimensional Krylov space is the exact top eigenvalue
    # (in float32: a relative 1e-4), and the micro-batched products (rows=3 of 10,
    # uneven parts) are the same Hessian.
    from torchlangevin.posterior.functional import FlatModel

    model, X, y, Xt = regression(n=10, d=4)
    H = Xt.T @ Xt / 10  # parameter order: weight (4), then bias
    for masks, keep in ((None, slice(None)), ({"weight": torch.tensor([[1., 0, 1, 1]])},
                                               [0, 2, 3])):
        flat = FlatModel(model, mse, masks)
        expected = 7.0 * torch.linalg.eigvalsh(H[keep][:, keep])[-1].item()
        for rows in (None, 3):
            lam = flat.top_eigenvalue(flat.w0, (X, y), 7.0, torch.Generator().manual_seed(0),
                                      rows=rows)
            assert lam == pytest.approx(expected, rel=1e-4)


def test_blocks_of_chains_share_one_progress_bar(monkeypatch):
    # chains_per_call=1 runs 3 blocks of one chain: one bar over all of them, a tick a step
    import torchlangevin.posterior.sampler as sampler

    class Bar:
        def __init__(self, enabled, total, desc):
            self.total, self.desc, self.n, self.closed = total, desc, 0, False

        def update(self, k):
            self.n += k

        def close(self):
            self.closed = True

    bars = []
    monkeypatch.setattr(sampler, "progress_bar", lambda *a: bars.append(Bar(*a)) or bars[-1])
    model, X, y, _ = regression(n=64, d=2)
    ds = posterior.sample(model, (X, y), mse, lr=1e-3, num_chains=3, num_draws=5,
                          num_burnin_steps=2, batch_size=8, chains_per_call=1,
                          mala_checks=0).dataset
    assert ds.attrs["chains_per_block"] == "1" and ds.sizes["chain"] == 3
    (bar,) = bars
    assert bar.total == bar.n == 3 * 7 and bar.closed and "3 blocks of 1 chains" in bar.desc
