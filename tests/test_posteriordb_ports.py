"""The posteriordb ports (benchmarks/posteriordb) without sampling: every port's energy and
gradient are finite at Stan's reference draws, the ODE solver meets a known answer, the
ODE grids are fine enough, and the vectorised HMM / ARMA recursions equal their loops."""

import functools
import math

import pytest
import torch

from benchmarks.posteriordb import ports_ode
from benchmarks.posteriordb.common import OrderedTransform
from benchmarks.posteriordb.ports import PORTS, ROOT, load_data, reference_point
from benchmarks.posteriordb.ports import load as _load
from benchmarks.posteriordb.ports_timeseries import hmm_forward, linear_recurrence

pytestmark = pytest.mark.skipif(not ROOT.exists(), reason="needs the posteriordb subset")

#: reference draws per posterior at which the energy is checked (every 500th of 10,000)
EVERY = 500


@functools.cache
def load(posterior):
    """The port and its reference draws, read once per session (the JSON costs most)."""
    return _load(posterior)


@pytest.mark.parametrize("posterior", list(PORTS))
def test_energy_and_gradient_finite_at_reference_draws(posterior):
    model, reference = load(posterior)
    point = {k: v[::EVERY] for k, v in reference_point(model, reference).items()}
    x = model.unconstrain(point).requires_grad_(True)
    # the port's parameters are Stan's: the draws map back to themselves
    back = model.constrain(x.detach())
    for name, value in point.items():
        torch.testing.assert_close(back[name], value, rtol=1e-9, atol=1e-12)
    energy = model.energy(x)
    (grad,) = torch.autograd.grad(energy.sum(), x)
    assert energy.shape == (len(x),) and torch.isfinite(energy).all(), energy
    assert torch.isfinite(grad).all(), grad


def _rk4_factor(z: float) -> float:
    """RK4's one-step factor on ``dy/dt = lambda y``, ``z = lambda h``: the Taylor
    polynomial of ``e^z`` to order 4."""
    return 1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24


def test_rk4_exponential_decay_known_answer():
    # dy/dt = -k y on a uniform grid: RK4 gives exactly y0 R(-k h)^n (to rounding), and
    # |R^n - e^{-k t}| <= n |R - e^{-k h}| (both factors lie in (0, 1)); the sensitivity
    # dy/dk is d/dk [y0 R(-k h)^n] = -h n y0 R^{n-1} R'(-k h), R' the order-3 polynomial
    k, y0, t_end, step = torch.tensor([[0.7], [1.9]], dtype=torch.float64), 2.0, 3.0, 0.1
    grid, save = ports_ode.time_grid(0.0, [1.0, 2.0, t_end], step)

    def rhs(t, y, p):
        return -p * y, -p[..., None], -y[..., None]

    kk = k.clone().requires_grad_(True)
    y = ports_ode.rk4_solve(rhs, torch.full((2, 1), y0, dtype=torch.float64), kk, grid, save)
    (dy_dk,) = torch.autograd.grad(y[:, -1, 0].sum(), kk)
    n, h = len(grid) - 1, t_end / (len(grid) - 1)
    for i, ki in enumerate(k[:, 0].tolist()):
        z = -ki * h
        r = _rk4_factor(z)
        assert math.isclose(float(y[i, -1, 0]), y0 * r**n, rel_tol=1e-12)
        bound = y0 * n * abs(r - math.exp(z))
        assert abs(float(y[i, -1, 0]) - y0 * math.exp(-ki * t_end)) <= bound
        slope = -h * n * y0 * r ** (n - 1) * (1 + z + z**2 / 2 + z**3 / 6)
        assert math.isclose(float(dy_dk[i, 0]), slope, rel_tol=1e-10)


@pytest.mark.parametrize("posterior,port", list(ports_ode.PORTS.items()))
def test_ode_grid_error_below_bound_at_reference_draws(posterior, port):
    # the log density on the ports' grid against the same solver on a grid 8 times finer
    # (RK4's error falls 8^4 = 4096-fold: the finer one is exact to this check's purpose)
    model, reference = load(posterior)
    data = load_data(posterior)
    step = {"hudson_lynx_hare-lotka_volterra": ports_ode.LV_STEP}.get(
        posterior, ports_ode.PK_STEP)
    x = model.unconstrain({k: v[::100] for k, v in reference_point(model, reference).items()})
    with torch.no_grad():
        error = (model.energy(x) - port(data, step=step / 8).energy(x)).abs().max()
    assert error < ports_ode.MAX_LOG_DENSITY_ERROR, error


@pytest.mark.parametrize("posterior", list(ports_ode.PORTS))
def test_ode_gradient_matches_finite_differences(posterior):
    model, reference = load(posterior)
    x = model.unconstrain({k: v[:2] for k, v in reference_point(model, reference).items()})
    assert torch.autograd.gradcheck(model.energy, (x.requires_grad_(True),), eps=1e-6,
                                    atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("positive", [False, True])
def test_ordered_transform_jacobian(positive):
    t = OrderedTransform(positive)
    u = torch.randn(3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = t(u)
    assert bool((x.diff() > 0).all()) and (not positive or x[0] > 0)
    torch.testing.assert_close(t.inv(x), u)
    jac = torch.autograd.functional.jacobian(t, u)
    torch.testing.assert_close(t.log_abs_det_jacobian(u, x), jac.det().abs().log())


def test_hmm_forward_and_linear_recurrence_equal_their_loops():
    g = torch.Generator().manual_seed(1)
    c, n, k = 3, 7, 2
    log_theta = torch.rand(c, k, k, generator=g, dtype=torch.float64).softmax(-1).log()
    e = torch.randn(c, n, k, generator=g, dtype=torch.float64)
    gamma = e[:, 0]
    for t in range(1, n):  # Stan's loop
        gamma = torch.logsumexp(gamma[:, :, None] + log_theta, 1) + e[:, t]
    torch.testing.assert_close(hmm_forward(log_theta, e), torch.logsumexp(gamma, -1))
    a = torch.randn(c, n, generator=g, dtype=torch.float64)
    coef = torch.randn(c, generator=g, dtype=torch.float64)
    x, xs = torch.zeros(c, dtype=torch.float64), []
    for t in range(n):
        x = a[:, t] + coef * x
        xs.append(x)
    torch.testing.assert_close(linear_recurrence(a, coef), torch.stack(xs, 1))


@pytest.mark.parametrize("posterior", [p for p in PORTS if p.split("-")[0] in (
    "earnings", "kidiq_with_mom_work") or p.endswith("-nes")])
def test_flat_prior_regression_ports_have_the_references_exact_posterior(posterior):
    # y ~ normal(X beta, sigma) with flat priors on beta and on sigma > 0: integrating sigma
    # out, p(beta | y) ~ S(beta)^{-(N-1)/2}, a multivariate t with nu = N - K - 1 degrees of
    # freedom, location the least-squares fit b, covariance SSR / (nu - 2) (X^T X)^{-1}.
    # The reference's 10,000 near-independent draws estimate each mean to sd / 100 and each
    # sd to ~ 1 / sqrt(2 * 10,000) = 0.7%: |z| < 4.5 and 3.5% (5 se) catch a wrong
    # transformed-data column (a centring, an sd's divisor) of the port.
    model, reference = load(posterior)
    x, y = model.design, model.response
    n, k = x.shape
    b = torch.linalg.solve(x.T @ x, x.T @ y)
    ssr = float(((y - x @ b) ** 2).sum())
    sd = (ssr / (n - k - 3) * torch.linalg.inv(x.T @ x).diagonal()).sqrt()
    draws = torch.stack([reference[f"beta[{j + 1}]"].reshape(-1) for j in range(k)], -1)
    z = (draws.mean(0) - b) / (sd / 100)
    assert z.abs().max() < 4.5, z
    torch.testing.assert_close(draws.std(0), sd, rtol=0.035, atol=0)
