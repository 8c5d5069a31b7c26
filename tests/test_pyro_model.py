import math
import warnings

import pytest
import torch

import torchlangevin as tl
from torchlangevin.model import Model, Param

from .conftest import gen
from .test_model import _eight_schools

pyro = pytest.importorskip("pyro")
dist = pytest.importorskip("pyro.distributions")
poutine = pytest.importorskip("pyro.poutine")
from torchlangevin.pyro_model import VectorizationWarning, from_pyro  # noqa: E402

J = 8
Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


# Pyro's examples/eight_schools/mcmc.py, as written there (no plates, shape-(1,) scalars)
def model(sigma):
    eta = pyro.sample("eta", dist.Normal(torch.zeros(J), torch.ones(J)))
    mu = pyro.sample("mu", dist.Normal(torch.zeros(1), 10 * torch.ones(1)))
    tau = pyro.sample("tau", dist.HalfCauchy(scale=25 * torch.ones(1)))
    theta = mu + tau * eta
    return pyro.sample("obs", dist.Normal(theta, sigma))


def conditioned_model(model, sigma, y):
    return poutine.condition(model, data={"obs": y})(sigma)


# the centred and non-centred forms as NumPyro's and Pyro's docs write them, with plates
def centred(J, sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("J", J):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def noncentred(J, sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("J", J):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        theta = pyro.deterministic("theta", mu + tau * eta)
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def logistic(x, groups, n_groups, y=None):
    """Hierarchical logistic regression: group intercepts around mu_a with scale sigma_a,
    shared slopes."""
    mu_a = pyro.sample("mu_a", dist.Normal(0.0, 2.0))
    sigma_a = pyro.sample("sigma_a", dist.HalfNormal(1.0))
    beta = pyro.sample("beta", dist.Normal(torch.zeros(x.shape[1]), 1.0).to_event(1))
    with pyro.plate("groups", n_groups):
        a = pyro.sample("a", dist.Normal(mu_a, sigma_a))
    with pyro.plate("data", x.shape[0]):
        logits = a[..., groups] + (x * beta[..., None, :]).sum(-1)
        pyro.sample("y", dist.Bernoulli(logits=logits), obs=y)


def _logistic_data():
    g = gen(3)
    x = torch.randn(60, 2, generator=g)
    groups = torch.arange(60) % 4
    logits = torch.tensor([-1.0, 0.0, 0.5, 1.0])[groups] + x @ torch.tensor([1.0, -0.5])
    y = torch.bernoulli(torch.sigmoid(logits), generator=g)
    return x, groups, 4, y


def test_noncentred_energy_is_the_hand_written_models():
    # the same priors and likelihood written with torch.distributions (tests/test_model.py):
    # the energies, normalising constants and Jacobians included, must agree exactly
    pm = from_pyro(noncentred, J, SIGMA, y=Y)
    assert pm.param_names == ["mu", "tau", "eta"] and pm.dim == 10 and pm.pyro_mode == "plate"
    x = 1.5 * torch.randn(6, 10, generator=gen(0), dtype=torch.float64)
    assert torch.allclose(pm.energy(x), _eight_schools().energy(x), rtol=1e-6)


def test_pyro_example_runs_unmodified_and_every_way_agrees():
    pm = from_pyro(conditioned_model, model, SIGMA, Y)
    assert [(b.name, b.shape) for b in pm.blocks] == [("eta", (8,)), ("mu", (1,)), ("tau", (1,))]
    x = torch.randn(5, pm.dim, generator=gen(1), dtype=torch.float64)
    values = pm.constrain(x)
    joint = pm.log_joint
    plate = joint.plate(values)
    for way in (joint.vmap, joint.loop):
        assert torch.allclose(way(values), plate, rtol=1e-6)


def test_hierarchical_logistic_regression_log_density():
    data = _logistic_data()
    pm = from_pyro(logistic, *data)
    assert pm.param_names == ["mu_a", "sigma_a", "beta", "a"] and pm.dim == 8
    x, groups, _, y = data
    d = torch.distributions

    def log_joint(p):  # the same model by hand
        logits = p.a[..., groups] + p.beta @ x.double().T
        return (d.Normal(0.0, 2.0).log_prob(p.mu_a) + d.HalfNormal(1.0).log_prob(p.sigma_a)
                + d.Normal(0.0, 1.0).log_prob(p.beta).sum(-1)
                + d.Normal(p.mu_a[..., None], p.sigma_a[..., None]).log_prob(p.a).sum(-1)
                + d.Bernoulli(logits=logits).log_prob(y.double()).sum(-1))

    hand = Model(log_joint, {"mu_a": Param(), "sigma_a": Param((), d.constraints.positive),
                             "beta": Param((2,)), "a": Param((4,))})
    u = torch.randn(7, 8, generator=gen(2), dtype=torch.float64)
    assert torch.allclose(pm.energy(u), hand.energy(u), rtol=1e-6)


def test_short_run_gives_named_draws_and_diagnosis():
    az = pytest.importorskip("arviz")
    pm = from_pyro(noncentred, J, SIGMA, y=Y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tl.model.UntrustedRunWarning)  # too short to trust
        result = tl.sample_posterior(pm, n_chains=4, n_warmup=20, n_draws=20, seed=0,
                                     max_tree_depth=4)
    assert result["theta"].shape == (4, 20, 8) and result["tau"].shape == (4, 20)
    # theta is the deterministic site: mu + tau * eta draw by draw
    assert torch.allclose(result["theta"], result["mu"][..., None]
                          + result["tau"][..., None] * result["eta"])
    table = az.summary(result.to_arviz())
    assert {"mu", "tau", *(f"theta[{i}]" for i in range(8))} <= set(table.index)
    assert "DO NOT TRUST" in str(result.diagnosis) and not result.diagnosis.ok
    assert any("ESS" in p for p in result.diagnosis.problems)
    assert result.diagnosis.sampler.startswith("NUTS (dense mass")


def test_loop_warns_and_bad_models_are_named():
    with pytest.warns(VectorizationWarning, match="once per chain"):
        pm = from_pyro(noncentred, J, SIGMA, y=Y, vectorize="loop")
    assert pm.pyro_mode == "loop" and math.isfinite(float(pm.energy(pm.init(2, seed=0))[0]))

    def discrete():
        pyro.sample("k", dist.Categorical(torch.ones(3)))

    with pytest.raises(ValueError, match="site 'k' is discrete"):
        from_pyro(discrete)
    with pytest.raises(ValueError, match="vectorize must be"):
        from_pyro(noncentred, J, SIGMA, vectorize="jit")
