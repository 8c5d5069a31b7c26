import math

import numpy as np
import pytest
import torch

from torchlangevin import diagnostics as D


def ar1(m, n, rho, k=2, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((m, n, k))
    e = rng.standard_normal((m, n, k))
    x[:, 0] = e[:, 0]
    for t in range(1, n):
        x[:, t] = rho * x[:, t - 1] + math.sqrt(1 - rho**2) * e[:, t]
    return x


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_ess_of_ar1_matches_theory(rho):
    # integrated autocorrelation time of AR(1): (1 + rho) / (1 - rho)
    m, n = 8, 4000
    x = ar1(m, n, rho, k=4)
    expected = m * n * (1 - rho) / (1 + rho)
    # the estimator's relative sd is about sqrt(2 * tau_window / (m n)); 10% is > 4 sd here
    got = D.ess(x)
    assert torch.allclose(got, torch.full_like(got, expected), rtol=0.10), (got, expected)
    assert torch.allclose(D.ess_bulk(x), torch.full_like(got, expected), rtol=0.10)


def test_rhat_flags_chains_that_disagree():
    x = ar1(4, 500, 0.3, seed=1)
    assert bool((D.rhat(x) < 1.01).all())
    x[0] += 2.0  # one chain 2 sd away: raw R-hat ~ sqrt(1 + var(2,0,0,0)) = 1.4
    assert bool((D.rhat(x) > 1.1).all())
    y = ar1(4, 500, 0.3, seed=2)
    y[1] *= 3.0  # same centre, different spread: only the folded (tail) R-hat sees it
    assert bool((D.rhat(y) > 1.05).all())
    assert bool((D.split_rhat(y) < 1.05).all())


def test_matches_arviz_exactly():
    az = pytest.importorskip("arviz")
    for m, n, rho in [(4, 1000, 0.9), (3, 101, 0.0), (8, 60, -0.3), (2, 9, 0.5)]:
        x = ar1(m, n, rho, k=3, seed=m)
        x[0] += 0.3
        ds = az.convert_to_dataset(x)
        for ours, method in [(D.ess_bulk, "bulk"), (D.ess_tail, "tail")]:
            np.testing.assert_allclose(ours(x).numpy(), az.ess(ds, method=method)["x"].values,
                                       rtol=1e-10)
        np.testing.assert_allclose(D.rhat(x).numpy(), az.rhat(ds)["x"].values, rtol=1e-10)


def test_axes_and_event_shape():
    x = torch.as_tensor(ar1(3, 200, 0.2, k=6)).reshape(3, 200, 2, 3)
    assert D.ess_bulk(x).shape == (2, 3)
    swapped = x.permute(1, 0, 2, 3)
    torch.testing.assert_close(D.rhat(swapped, chain_axis=1, draw_axis=0), D.rhat(x))
    assert D.autocorrelation(x).shape == x.shape
    with pytest.raises(ValueError, match="at least 4 draws"):
        D.ess(torch.zeros(2, 3))


def test_binned_tv():
    cdf = lambda e: np.clip(e, 0, 1)  # noqa: E731 - uniform on [0, 1]
    assert D.binned_tv(torch.rand(100_000, generator=torch.Generator().manual_seed(0)), cdf,
                       0, 1) < 0.03
    assert D.binned_tv(torch.full((100,), 0.05), cdf, 0, 1, bins=10) == pytest.approx(0.9)


def test_too_short_split_chains_give_nan_ess():
    # 5 draws split into halves of 2: no autocorrelation pair to sum. NaN (not an index
    # error, not ArviZ's m n log10(m n)); sample_posterior's diagnosis counts it as too low
    x = torch.randn(4, 5, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert D.ess_bulk(x).isnan().all() and D.ess_tail(x).isnan().all()
    assert D.ess(x).isfinite().all()
