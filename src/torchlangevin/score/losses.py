"""Score-matching objectives over a range of noise levels.

With ``x~ = x + sigma z`` and the weight ``lambda(sigma) = sigma^2`` (Song & Ermon 2019),
every level contributes on the same scale. ``sigma`` is drawn log-uniformly between the
ladder's ends per sample: the continuous version of NCSN's uniform choice of level (Song
et al. 2021, VE SDE), so one model serves any ladder between them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

ScoreFn = Callable[[Tensor, Tensor], Tensor]

__all__ = ["draw_sigmas", "dsm_loss", "ssm_loss"]


def draw_sigmas(n: int, sigma_min: float, sigma_max: float, generator: torch.Generator,
                like: Tensor) -> Tensor:
    """``n`` noise levels, ``log sigma ~ U[log sigma_min, log sigma_max]``."""
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    ratio = sigma_max / sigma_min
    return (sigma_min * ratio**u).to(like)


def _noisy(batch: Tensor, sigma: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    z = torch.randn(batch.shape, generator=generator, dtype=batch.dtype)
    return batch + sigma.view(-1, *[1] * (batch.ndim - 1)) * z, z


def dsm_loss(score: ScoreFn, batch: Tensor, sigma: Tensor, generator: torch.Generator
             ) -> Tensor:
    """Denoising score matching (Vincent 2011) at per-sample noise ``sigma (B,)``:
    ``mean_b sigma_b^2 / 2 |s(x~_b, sigma_b) + z_b / sigma_b|^2``, whose minimiser is the
    score of the noised data ``q_sigma``."""
    noisy, z = _noisy(batch, sigma, generator)
    scaled = score(noisy, sigma) * sigma.view(-1, *[1] * (batch.ndim - 1))
    return 0.5 * (scaled + z).reshape(len(batch), -1).square().sum(1).mean()


def ssm_loss(score: ScoreFn, batch: Tensor, sigma: Tensor, generator: torch.Generator,
             n_projections: int = 1) -> Tensor:
    """Sliced score matching (Song et al. 2019, the variance-reduced form) on the noised
    data, weighted by ``sigma^2``: with ``v ~ N(0, I)``,
    ``mean sigma^2 (v^T grad_x (v^T s(x~)) + |s(x~)|^2 / 2)``. It needs no knowledge of the
    noise, only the data (the noising here just picks the level), at the price of a second
    backward pass."""
    noisy, _ = _noisy(batch, sigma, generator)
    noisy = noisy.detach().requires_grad_(True)
    s = score(noisy, sigma).reshape(len(batch), -1)
    trace = torch.zeros(len(batch), dtype=batch.dtype)
    for _ in range(n_projections):
        v = torch.randn(s.shape, generator=generator, dtype=batch.dtype)
        (g,) = torch.autograd.grad((s * v).sum(), noisy, create_graph=True)
        trace = trace + (g.reshape(len(batch), -1) * v).sum(1)
    per_sample = trace / n_projections + 0.5 * s.square().sum(1)
    return (sigma.square() * per_sample).mean()
