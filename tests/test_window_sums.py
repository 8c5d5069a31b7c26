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
