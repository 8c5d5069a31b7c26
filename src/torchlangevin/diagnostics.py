"""Convergence diagnostics over draws laid out ``(chain, draw, *event)``.

Effective sample size with Geyer's initial monotone sequence and split,
rank-normalised R-hat, after Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021),
"Rank-normalization, folding, and localization: an improved R-hat". Computed in
float64 on the draws' device, vectorised over every coordinate of the event.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["autocorrelation", "ess", "ess_bulk", "ess_tail", "rhat", "split_rhat", "binned_tv"]


def _as_draws(x: Any, chain_axis: int = 0, draw_axis: int = 1) -> Tensor:
    """``(chain, draw, K)`` float64 with every event coordinate flattened into ``K``."""
    t = torch.as_tensor(x).to(torch.float64)
    t = torch.movedim(t, (chain_axis, draw_axis), (0, 1))
    if t.ndim < 2:
        raise ValueError(f"draws need a chain and a draw axis; got shape {tuple(t.shape)}")
    if t.shape[1] < 4:
        raise ValueError(f"need at least 4 draws per chain; got {t.shape[1]}")
    return t.reshape(t.shape[0], t.shape[1], -1)


def _event_shape(x, chain_axis: int, draw_axis: int) -> tuple[int, ...]:
    shape = list(torch.as_tensor(x).shape)
    for axis in sorted((chain_axis % len(shape), draw_axis % len(shape)), reverse=True):
        shape.pop(axis)
    return tuple(shape)


def _autocov(x: Tensor) -> Tensor:
    """Biased autocovariance per chain and coordinate via FFT: ``(m, n, K)``."""
    n = x.shape[1]
    centred = (x - x.mean(dim=1, keepdim=True)).transpose(1, 2).contiguous()  # (m, K, n)
    power = torch.fft.rfft(centred, n=2 * n, dim=-1).abs().square()
    return (torch.fft.irfft(power, n=2 * n, dim=-1)[..., :n] / n).transpose(1, 2)


def autocorrelation(x: Any, chain_axis: int = 0, draw_axis: int = 1) -> Tensor:
    """Autocorrelation ``rho_t`` per chain: shape ``(chain, draw, *event)``."""
    t = _as_draws(x, chain_axis, draw_axis)
    acov = _autocov(t)
    rho = acov / acov[:, :1].clamp_min(torch.finfo(torch.float64).tiny)
    return rho.reshape(t.shape[0], t.shape[1], *_event_shape(x, chain_axis, draw_axis))


def _ess(x: Tensor) -> Tensor:
    """ESS of ``(m, n, K)`` draws (no split, no ranks), Geyer's initial monotone sequence.

    ``rho_t = 1 - (W - mean_chains acov_t) / var_plus``; pairs ``P_k = rho_2k + rho_2k+1``
    summed while positive, made monotone; ``tau = -1 + 2 sum P_k + rho_even_tail``;
    ``ess = m n / max(tau, 1/log10(m n))``. Under 4 draws a chain (a split chain of a
    short run) there is no pair to sum: NaN, where ArviZ's floor gives ``m n log10(m n)``.
    """
    m, n, k = x.shape
    if n < 4:
        return torch.full((k,), math.nan, dtype=torch.float64, device=x.device)
    acov = _autocov(x)
    chain_var = acov[:, 0] * n / (n - 1)
    mean_var = chain_var.mean(0)
    var_plus = mean_var * (n - 1) / n
    if m > 1:
        var_plus = var_plus + x.mean(1).var(0, unbiased=True)
    rho = 1 - (mean_var - acov.mean(0)) / var_plus              # (n, K)
    rho[0] = 1.0
    n_pairs = (n - 1) // 2                                      # pairs (2k, 2k+1) inside n-1
    even, odd = rho[0: 2 * n_pairs: 2], rho[1: 2 * n_pairs: 2]
    pairs = even + odd                                          # (n_pairs, K)
    keep = torch.cumprod((pairs > 0).to(torch.float64), dim=0)
    keep[0] = 1.0
    monotone = torch.cummin(torch.where(keep > 0, pairs, torch.inf), dim=0).values
    kept = torch.where(keep > 0, monotone, 0.0)
    n_kept = keep.sum(0).long()                                 # pairs before the first drop
    # The pair where the sequence stopped adds its even term once: the dropped pair's if
    # positive, or, when the draws ran out first, the last pair's (which then leaves the sum).
    stopped = n_kept < n_pairs
    last = torch.where(stopped, n_kept, n_kept - 1)
    tail = rho.gather(0, (2 * last).unsqueeze(0)).squeeze(0)
    tail = torch.where(stopped, tail.clamp_min(0.0), tail)
    drop_last = ~stopped & (torch.arange(n_pairs, device=x.device).unsqueeze(1) == last)
    kept = kept.masked_fill(drop_last, 0.0)
    tau = -1 + 2 * kept.sum(0) + tail
    tau = torch.maximum(tau, torch.full_like(tau, 1 / math.log10(m * n)))
    out = m * n / tau
    constant = (acov[:, 0] <= 0).all(0)
    return torch.where(constant, torch.nan, out)


def _split(x: Tensor) -> Tensor:
    """Split each chain in halves (dropping a middle draw if odd): ``(2m, n//2, K)``."""
    half = x.shape[1] // 2
    return torch.cat([x[:, :half], x[:, -half:]], dim=0)


def _rank_normalise(x: Tensor) -> Tensor:
    """``z = Phi^{-1}((r - 3/8) / (S + 1/4))`` with average ranks pooled over all chains."""
    m, n, k = x.shape
    flat = x.reshape(m * n, k).T.contiguous()                    # (K, S)
    ordered, order = flat.sort(dim=1)
    # a run of equal values shares the mean of its positions: (first + last) / 2 + 1
    pos = torch.arange(m * n, device=x.device).expand_as(flat)
    starts = torch.ones_like(flat, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, pos, 0).cummax(1).values
    last = torch.where(ends, pos, m * n).flip(1).cummin(1).values.flip(1)
    ranks = torch.empty_like(flat).scatter_(1, order, (first + last).to(flat.dtype) / 2 + 1)
    z = torch.special.ndtri((ranks - 0.375) / (m * n + 0.25))
    return z.T.reshape(m, n, k)


def _quantile(flat: Tensor, q: float) -> Tensor:
    """The ``q`` quantile of each column of ``(S, K)``, interpolated linearly between order
    statistics as ``torch.quantile`` does, ``v_(i) + f (v_(i+1) - v_(i))`` at
    ``q (S - 1) = i + f``; by ``kthvalue``, which has no limit on ``S`` (``torch.quantile``
    refuses more than 2^24 numbers)."""
    pos = q * (flat.shape[0] - 1)
    i = math.floor(pos)
    low = flat.kthvalue(i + 1, dim=0).values
    if pos == i:
        return low
    return torch.lerp(low, flat.kthvalue(i + 2, dim=0).values, pos - i)


def _rhat(x: Tensor) -> Tensor:
    n = x.shape[1]
    w = x.var(1, unbiased=True).mean(0)
    b = n * x.mean(1).var(0, unbiased=True)
    return torch.sqrt(((n - 1) / n * w + b / n) / w)


def _reshape(values: Tensor, x, chain_axis: int, draw_axis: int) -> Tensor:
    return values.reshape(_event_shape(x, chain_axis, draw_axis))


def ess(x: Any, chain_axis: int = 0, draw_axis: int = 1) -> Tensor:
    """Plain ESS (no split, no rank normalisation), per coordinate."""
    return _reshape(_ess(_as_draws(x, chain_axis, draw_axis)), x, chain_axis, draw_axis)


def ess_bulk(x: Any, chain_axis: int = 0, draw_axis: int = 1) -> Tensor:
    """Bulk ESS: ESS of the rank-normalised split chains, per coordinate."""
    t = _split(_as_draws(x, chain_axis, draw_axis))
    return _reshape(_ess(_rank_normalise(t)), x, chain_axis, draw_axis)


def ess_tail(x: Any, chain_axis: int = 0, draw_axis: int = 1) -> Tensor:
    """Tail ESS: min of the ESS of ``1{x <= q05}`` and ``1{x <= q95}`` on split chains."""
    draws = _as_draws(x, chain_axis, draw_axis)
    t = _split(draws)
    flat = draws.reshape(-1, draws.shape[2])
    low = _ess((t <= _quantile(flat, 0.05)).to(torch.float64))
    high = _ess((t <= _quantile(flat, 0.95)).to(torch.float64))
    return _reshape(torch.minimum(low, high), x, chain_axis, draw_axis)


def split_rhat(x: Any, chain_axis: int = 0, draw_axis: int = 1) -> Tensor:
    """Split R-hat without rank normalisation (Gelman et al., BDA3)."""
    return _reshape(_rhat(_split(_as_draws(x, chain_axis, draw_axis))), x, chain_axis, draw_axis)


def rhat(x: Any, chain_axis: int = 0, draw_axis: int = 1) -> Tensor:
    """Rank-normalised split R-hat: ``max(Rhat(z(x)), Rhat(z(|x - median|)))``."""
    t = _split(_as_draws(x, chain_axis, draw_axis))
    median = _quantile(t.reshape(-1, t.shape[2]), 0.5)
    bulk = _rhat(_rank_normalise(t))
    tail = _rhat(_rank_normalise((t - median).abs()))
    return _reshape(torch.maximum(bulk, tail), x, chain_axis, draw_axis)


def binned_tv(x: Any, cdf: Callable[[Any], Any], low: float, high: float, bins: int = 100) -> float:
    """Total variation ``(1/2) sum_b |n_b / N - P_b|`` between draws and a 1-D law on ``bins``
    equal bins of ``[low, high]``; ``P_b`` from the exact ``cdf`` (a NumPy function)."""
    import numpy as np

    values = torch.as_tensor(x).detach().reshape(-1).double().cpu().numpy()
    edges = np.linspace(low, high, bins + 1)
    counts, _ = np.histogram(values, bins=edges)
    outside = values.size - counts.sum()
    exact = np.diff(cdf(edges))
    return float(0.5 * (np.abs(counts / values.size - exact).sum() + outside / values.size))
