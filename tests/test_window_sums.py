"""The dense mass's window sums leave outlier chains out of the pooled covariance."""

import torch

from torchlangevin.adaptation import _WindowSums


def test_far_chain_left_out_of_the_dense_covariance():
    # 15 chains of N(0, S) draws and one far-away chain at ~1e200 (its squares overflow to
    # inf): with the far chain excluded, the estimate is finite and equals the 15 chains'
    # estimate alone (the far chain adds nothing, not even rounding)
    g = torch.Generator().manual_seed(0)
    s = torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=torch.float64)
    xs = torch.randn(50, 16, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(s).T
    xs[:, 0] = 1e200 * (1 + torch.rand(50, 2, generator=g, dtype=torch.float64))
    keep = torch.ones(16, dtype=torch.bool)
    keep[0] = False
    sums, alone = _WindowSums(xs[0], False, "dense"), _WindowSums(xs[0, 1:], False, "dense")
    sums.add(xs)
    alone.add(xs[:, 1:])
    cov = sums.covariance(keep)
    assert torch.isfinite(cov).all(), cov
    torch.testing.assert_close(cov, alone.covariance(torch.ones(15, dtype=torch.bool)))
    # 750 draws of a correlation 0.9: the pooled estimate is within 0.05 of it (se ~ 0.007)
    assert abs(float(cov[0, 1] / cov.diagonal().prod().sqrt()) - 0.9) < 0.05


def test_an_empty_block_of_draws_adds_nothing():
    sums = _WindowSums(torch.zeros(16, 3, dtype=torch.float64), False, "dense")
    sums.add(torch.zeros(0, 16, 3, dtype=torch.float64))
    assert sums.n == 0 and not sums.cross.any()


def test_chains_that_never_moved_give_the_regularised_identity():
    # arma11's first window: every chain stuck at its start (re-initialised chains share
    # a donor's point), so each chain's variance is rounding around 0, sometimes negative;
    # the dense estimate must be Stan's regularisation 1e-3 * 5 / (n + 5) on the diagonal,
    # finite and positive definite, not 0 / 0
    g = torch.Generator().manual_seed(1)
    start = torch.randn(16, 4, generator=g, dtype=torch.float64) * 1.7
    xs = start.expand(25, 16, 4) * (1 + 1e-16 * torch.randn(25, 16, 4, generator=g,
                                                             dtype=torch.float64))
    sums = _WindowSums(xs[0], False, "dense")
    sums.add(xs)
    keep = torch.ones(16, dtype=torch.bool)
    keep[[8, 15]] = False
    mass = sums.estimate(0, torch.float64, keep)
    n = 25 * 14
    eye = torch.eye(4, dtype=torch.float64)
    torch.testing.assert_close(mass.inv_mass, 1e-3 * 5 / (n + 5) * eye, rtol=1e-6, atol=1e-12)
    assert bool((sums.variance(keep) > 0).all())
