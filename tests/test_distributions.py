import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchlangevin import Box
from torchlangevin.distributions import (
    DoubleWell,
    Funnel,
    Gaussian,
    GaussianMixture,
    Quartic1D,
    Ring,
    Rosenbrock,
)

from .conftest import gen

ALL = [
    Gaussian([0.5, -1.0], [[1.0, 0.6], [0.6, 2.0]]),
    Gaussian(torch.zeros(3), torch.tensor([0.5, 1.0, 2.0])),
    GaussianMixture([[-2.0, 0.0], [2.0, 1.0]], [0.5, 1.0], [0.3, 0.7]),
    DoubleWell(2, barrier_height=1.5),
    Rosenbrock(a=1.0, b=5.0, dim=3),
    Funnel(4),
    Ring(radius=1.5, width=0.3),
    Quartic1D(),
]


@pytest.mark.parametrize("dist", ALL, ids=lambda d: type(d).__name__)
def test_analytic_gradient_matches_autograd(dist):
    x = dist.sample(256, gen(1)).double()
    xg = x.clone().requires_grad_(True)
    (g_auto,) = torch.autograd.grad(dist.energy(xg).sum(), xg)
    e, g = dist.energy_and_grad(x)
    assert e.shape == (256,)
    torch.testing.assert_close(g, g_auto, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dist.grad(x), g_auto, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dist(x), e)


def _grid_mass(dist, lo, hi, n=801):
    """Integral of exp(log_prob) over a 2-D box by the trapezoid rule (error << 1e-3)."""
    xs = torch.linspace(lo, hi, n, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, xs, indexing="ij")
    dens = torch.exp(dist.log_prob(torch.stack([gx.ravel(), gy.ravel()], -1))).reshape(n, n)
    return float(torch.trapezoid(torch.trapezoid(dens, xs, dim=1), xs))


@pytest.mark.parametrize("dist, lo, hi", [
    (GaussianMixture([[-2.0, 0.0], [2.0, 1.0]], [0.5, 1.0], [0.3, 0.7]), -9, 9),
    (DoubleWell(2, barrier_height=1.5), -4, 4),
    (Ring(radius=1.5, width=0.3), -4, 4),
    (Rosenbrock(a=0.5, b=2.0, dim=2), -5, 8),
    (Gaussian([0.5, -1.0], [[1.0, 0.6], [0.6, 2.0]]), -10, 10),
    (Funnel(2, scale=1.0), -8, 8),
])
def test_log_prob_is_normalised(dist, lo, hi):
    assert _grid_mass(dist, lo, hi) == pytest.approx(1.0, abs=2e-3)


def test_quartic_normaliser_and_cdf():
    q = Quartic1D()
    assert q.normalizer == pytest.approx(0.98887, abs=1e-5)  # seed 001's Z
    xs = torch.linspace(-0.7, 1.5, 20001, dtype=torch.float64).unsqueeze(-1)
    mass = torch.trapezoid(torch.exp(q.log_prob(xs)), xs[:, 0])
    assert float(mass) == pytest.approx(1.0, abs=1e-8)
    assert q.cdf(np.array([-0.7, 1.5])).tolist() == pytest.approx([0.0, 1.0])
    assert float(q.log_prob(torch.tensor([[1.6]]))) == -math.inf


@pytest.mark.parametrize("dist", [d for d in ALL if d.event_shape[0] <= 4],
                         ids=lambda d: type(d).__name__)
def test_exact_samples_match_log_prob_moments(dist):
    # E_p[grad E] = 0 for exact draws (integration by parts, no boundary terms away from
    # bounded supports): each coordinate's sample mean is within 5 standard errors of 0.
    if dist.support is not None:
        pytest.skip("boundary terms do not vanish on a bounded support")
    x = dist.sample(200_000, gen(2)).double()
    g = dist.grad(x)
    se = g.std(0) / math.sqrt(x.shape[0])
    assert bool((g.mean(0).abs() < 5 * se).all()), (g.mean(0), se)


def test_exact_samples_known_moments():
    n = 200_000
    f = Funnel(10).sample(n, gen(3)).double()
    # sd of v is 3: sample sd has standard error 3 / sqrt(2n)
    assert float(f[:, 0].std()) == pytest.approx(3.0, abs=5 * 3 / math.sqrt(2 * n))
    r = Rosenbrock(a=1.0, b=10.0, dim=2).sample(n, gen(4)).double()
    # x1 ~ N(1, 1/2); x2 | x1 ~ N(x1^2, 1/20) so E x2 = E x1^2 = 1.5
    assert float(r[:, 0].mean()) == pytest.approx(1.0, abs=5 * math.sqrt(0.5 / n))
    assert float(r[:, 1].mean()) == pytest.approx(1.5, abs=5 * float(r[:, 1].std()) / math.sqrt(n))
    q = Quartic1D()
    x = q.sample(n, gen(5)).double()[:, 0].numpy()
    ks = np.abs(np.arange(1, n + 1) / n - q.cdf(np.sort(x))).max()
    assert ks < 1.63 / math.sqrt(n)  # Kolmogorov-Smirnov at the 1% level
    g = Gaussian([1.0, 2.0], [[2.0, -0.5], [-0.5, 1.0]]).sample(n, gen(6)).double()
    cov = torch.cov(g.T)
    # sd of a sample covariance entry: sqrt((s_ii s_jj + s_ij^2) / n) <= sqrt(4.25 / n)
    torch.testing.assert_close(cov, torch.tensor([[2.0, -0.5], [-0.5, 1.0]], dtype=torch.float64),
                               rtol=0, atol=5 * math.sqrt(4.25 / n))


def test_distribution_argument_errors():
    with pytest.raises(ValueError, match="cov must be symmetric positive definite"):
        Gaussian([0.0, 0.0], [[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="cov must be a scalar"):
        Gaussian([0.0, 0.0], torch.ones(3, 3))
    with pytest.raises(ValueError, match="weights must be 2"):
        GaussianMixture([[0.0], [1.0]], 1.0, [1.0, -1.0])
    with pytest.raises(ValueError, match="dim must be an integer >= 2"):
        Funnel(1)
    with pytest.raises(ValueError, match="n must be an integer >= 1; got 0"):
        Ring().sample(0)


@settings(max_examples=200, deadline=None)
@given(st.floats(-50, 50), st.floats(-3, 3), st.floats(0.1, 5))
def test_box_reflect_lands_inside_and_fixes_inside_points(x, low, width):
    box = Box([low], [low + width])
    t = torch.tensor([[x]], dtype=torch.float64)
    y = box.reflect(t)
    assert bool(box.contains(y))
    if low <= x <= low + width:
        assert float(y) == pytest.approx(x, abs=1e-9)
    elif low - width < x < low:
        assert float(y) == pytest.approx(2 * low - x, abs=1e-9)  # one mirror image


def test_box_errors():
    with pytest.raises(ValueError, match="high > low"):
        Box([0.0], [0.0])
    with pytest.raises(ValueError, match="finite"):
        Box([0.0], [math.inf])


def test_sampling_without_a_generator_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    Gaussian([0.0]).sample(5)
    assert torch.equal(torch.rand(3), expected)
