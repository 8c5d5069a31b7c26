"""Decoder calibration: thresholds, biases and spreads under which a batch of model draws
decodes to the real rows' shares and spread (used by ``TableEncoder.calibration``).

- An ordinal / integer code ``z`` decodes to level ``k`` for ``t_{k-1} < z <= t_k``; the
  calibrated thresholds are the draws' quantiles at the real CDF, ``t_k = Q_z(F_k)``, so
  each level gets its quota ``round(m F_k)`` of ``m`` draws.
- A one-hot block decodes to ``argmax(block + b)``; ``b`` solves ``freq(argmax) = p``
  (``fit_bias``) and, for decoding the very rows it was fitted on, rows take their best
  category in order of regret until each has its quota (``quota_assign``).
- A continuous code (and an integer one with too many levels for quotas) is decoded by the
  monotone ``v = q_r(F_z(z))`` that gives the draws the real rows' marginal in the
  column's units (interpolated between order statistics, spread by ``sqrt(T)`` at
  temperature ``T``; ``fit_marginal``): the learned energy of a small class is smoother
  than its rows, so its draws come out wider than the class (penguins' Chinstrap, 51 rows:
  bill length 5-95% range 40.9-55.7 mm against 42.5-53.9 mm). The map keeps each draw's
  rank within its column, so the dependence between columns is the energy's.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["fit_bias", "quotas", "quota_assign", "fit_choice", "choose", "fit_thresholds",
           "fit_marginal", "apply_marginal"]


def fit_bias(scores: np.ndarray, p: np.ndarray, tau: float = 0.02,
              iters: int = 500) -> np.ndarray:
    """``b`` with ``freq(argmax(scores + b)) ~= p`` (a category with ``p = 0`` gets
    ``b = -inf``): the entropic relaxation ``mean_i softmax((s_i + b) / tau) = p``, solved by
    the Sinkhorn-type update ``b <- b + tau (log p - log mean_i softmax((s_i + b) / tau))``,
    whose arg-max frequencies approach ``p`` as ``tau -> 0``."""
    live = p > 0
    b = np.where(live, 0.0, -np.inf)
    if live.sum() <= 1 or len(scores) == 0:
        return b
    s = scores[:, live] / tau
    logp = np.log(p[live] / p[live].sum())
    c = np.zeros(int(live.sum()))
    for _ in range(iters):
        a = s + c
        a = a - a.max(1, keepdims=True)
        soft = np.exp(a)
        soft /= soft.sum(1, keepdims=True)
        step = logp - np.log(np.maximum(soft.mean(0), 1e-300))
        c += step
        if np.abs(step).max() < 1e-4:
            break
    b[live] = tau * (c - c.max())
    return b


def quotas(m: int, p: np.ndarray) -> np.ndarray:
    """Whole rows ``round(m p)`` summing to ``m`` (largest remainders)."""
    share = m * p / p.sum()
    q = np.floor(share).astype(int)
    q[np.argsort(-(share - q))[: m - q.sum()]] += 1
    return q


def quota_assign(scores: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Each row a category, exactly ``round(m p)`` rows a category: rows in decreasing order
    of regret (best minus second-best score) take their best category with quota left."""
    left = quotas(len(scores), p)
    prefs = np.argsort(-scores, axis=1)
    top = np.take_along_axis(scores, prefs[:, :2], 1) if scores.shape[1] > 1 else scores
    regret = top[:, 0] - (top[:, 1] if top.shape[1] > 1 else 0.0)
    regret = np.where(np.isfinite(regret), regret, np.inf)
    picked = np.empty(len(scores), int)
    for i in np.argsort(-regret, kind="stable"):
        for j in prefs[i]:
            if left[j] > 0:
                picked[i], left[j] = j, left[j] - 1
                break
    return picked


def fit_choice(block: np.ndarray, p: np.ndarray, exact: bool, prefix: str = "") -> dict:
    """The bias of a one-hot block and, with ``exact``, these rows' exact assignment."""
    bias = fit_bias(block, p)
    out = {prefix + "bias": bias}
    if exact:
        out[prefix + "picked"] = quota_assign(block + bias, p)
    return out


def choose(block: np.ndarray, cal: dict, prefix: str = "") -> np.ndarray:
    """The category index of each row: the exact assignment for these rows if there is one
    (and it fits), else the arg-max of ``block + bias``."""
    picked = cal.get(prefix + "picked")
    if picked is not None and len(picked) == len(block):
        return picked
    return (block + cal.get(prefix + "bias", 0.0)).argmax(1)


def fit_thresholds(counts: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``t_k = Q_z(F_k)`` with ``F`` the CDF of the real ``counts`` a level (a level with
    no real rows gets an empty interval)."""
    cdf = np.cumsum(counts)[:-1] / max(counts.sum(), 1.0)
    if len(z) == 0:
        from scipy.special import ndtri

        return ndtri(np.clip(cdf, 1e-12, 1 - 1e-12))
    # the first round(m F_k) sorted draws go to levels <= k: each level gets its quota
    zs = np.sort(z)
    cut = np.round(len(zs) * cdf).astype(int)
    below = zs[np.clip(cut - 1, 0, len(zs) - 1)]
    above = zs[np.clip(cut, 0, len(zs) - 1)]
    t = np.where(cut <= 0, -np.inf, np.where(cut >= len(zs), np.inf, 0.5 * (below + above)))
    t = np.maximum.accumulate(t)
    t[cdf <= 0] = -np.inf
    t[cdf >= 1] = np.inf
    return t


def fit_marginal(z: np.ndarray, real: np.ndarray,
                 temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray] | None:
    """Knots ``(q_z, q_r)`` of the monotone map ``z -> q_r(F_z(z))`` that gives the ``m``
    draws ``z`` the real marginal: ``q_z`` are the draws' sorted values (at probabilities
    ``p_i = (i + 1/2) / m``), ``q_r`` the real values' quantiles at ``p_i``, linear between
    order statistics (so a tied real value, a column's atom, stays an atom: diamonds'
    ``table`` is mostly whole numbers, and a smoothed marginal between them was detected
    at C2ST AUC 0.996), spread about the real mean by ``sqrt(T)``. ``None`` (no map) with
    fewer than two draws or real values, or a constant either side."""
    z, real = np.asarray(z, float), np.asarray(real, float)
    if len(z) < 2 or len(real) < 2 or not (np.std(z) > 0 and np.std(real) > 0):
        return None
    p = (np.arange(len(z)) + 0.5) / len(z)
    mu = float(np.mean(real))
    return np.sort(z), mu + math.sqrt(temperature) * (np.quantile(real, p) - mu)


def apply_marginal(z: np.ndarray, cal: dict) -> np.ndarray:
    """``q_r(F_z(z))`` by linear interpolation between the knots (a draw outside the
    calibration draws' range takes the end quantile), else ``z``."""
    knots = cal.get("marginal")
    return z if knots is None else np.interp(z, knots[0], knots[1])
