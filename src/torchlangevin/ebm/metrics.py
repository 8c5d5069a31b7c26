"""Two-sample distances for judging generated samples against held-out data."""

from __future__ import annotations

import torch
from torch import Tensor


def _flat(x: Tensor) -> Tensor:
    return torch.as_tensor(x).detach().reshape(len(x), -1).double()


def mmd(x: Tensor, y: Tensor, bandwidth: float | None = None, unbiased: bool = False) -> float:
    """Squared MMD with a Gaussian kernel ``exp(-|a-b|^2 / (2 h^2))``; ``h`` is the median
    pairwise distance of the pooled samples unless given (Gretton et al. 2012).

    The default V-statistic is positive with an ``O(1/n)`` floor, so a model's value can be
    compared with the floor of two samples of the data; ``unbiased=True`` gives the
    U-statistic (mean 0 when the laws agree, may be negative)."""
    x, y = _flat(x), _flat(y)
    pooled = torch.cat([x, y])
    d2 = torch.cdist(pooled, pooled).square()
    if bandwidth is None:
        bandwidth = float(d2[d2 > 0].median().sqrt())
    k = torch.exp(-d2 / (2 * bandwidth**2))
    n, m = len(x), len(y)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    if not unbiased:
        return float(kxx.mean() + kyy.mean() - 2 * kxy.mean())
    return float((kxx.sum() - kxx.trace()) / (n * (n - 1))
                 + (kyy.sum() - kyy.trace()) / (m * (m - 1)) - 2 * kxy.mean())


def energy_distance(x: Tensor, y: Tensor) -> float:
    """``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (Székely & Rizzo), V-statistic."""
    x, y = _flat(x), _flat(y)
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean()
                 - torch.cdist(y, y).mean())
