"""Squared bias of second moments against gradient evaluations (numpy only: both sides).

For draws ``x[c, k, i]`` (chain ``c``, draw ``k = 1..n``, parameter ``i``) in the metric's
coordinates, chain ``c``'s running estimate after ``n`` draws is
``Ê_{c,n}[x_i^2] = (1/n) sum_{k<=n} x[c, k, i]^2`` and its squared bias (Robnik et al.,
MAMS, arXiv 2503.01707)

    b^2_{c,i}(n) = (Ê_{c,n}[x_i^2] - E[x_i^2])^2 / Var[x_i^2].

The headline curves are those of the MAMS paper's code (sampler-benchmarks): per chain,
the mean over parameters ``b^2_avg`` and the max ``b^2_max``, then the median over
chains. ``b^2 = 0.01`` is then about 100 effective samples per chain, and the numbers
compare with the published ones whatever the number of chains. Also kept, as
``pooled_avg`` / ``pooled_max``: the same with the estimate averaged over all chains
first, ``Ê_n = (1/C) sum_c Ê_{c,n}`` (falls ~C times faster once the chains mix; it
is the estimate one would actually report).

Everything is plotted against ``G(n)``, the gradient evaluations spent up to draw ``n``
per chain, averaged over chains. "Gradients to b^2 < t" is ``G`` at the first draw after
which the curve stays below ``t`` for good; ``inf`` if the last point is not below.

Draws arrive in blocks (a sampler's output, or a JAX scan's chunk) and are folded into
float64 running sums, so nothing of size ``(chain, draw, d)`` is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

THRESHOLD = 0.01


CURVES = ("avg", "max", "pooled_avg", "pooled_max")


@dataclass
class BiasCurve:
    """Streaming ``b^2`` curves: feed blocks of draws and gradient counts with :meth:`add`.

    Attributes:
        e_x2, var_x2: the true ``E[x^2]`` and ``Var[x^2]``, ``(d,)``.
        parts: for each name in ``CURVES``, the curve's blocks (one value per draw).
        grads: ``G(n)``'s blocks: cumulative gradients per chain, averaged over chains.
    """

    e_x2: np.ndarray
    var_x2: np.ndarray
    parts: dict[str, list[np.ndarray]] = field(
        default_factory=lambda: {name: [] for name in CURVES})
    grads: list[np.ndarray] = field(default_factory=list)
    _sum: np.ndarray | None = None  # (C, d): each chain's sum of x^2 so far
    _n: int = 0
    _g: float = 0.0

    def add(self, draws: np.ndarray, grads_per_step: np.ndarray | float) -> None:
        """Fold in ``draws`` ``(C, k, d)`` (already in the metric's coordinates) and the
        gradients each of those ``k`` steps cost, ``(C, k)``, ``(k,)`` or a scalar."""
        sq = np.square(np.asarray(draws, dtype=np.float64))
        c, k, _ = sq.shape
        cum = np.cumsum(sq, axis=1)
        if self._sum is not None:
            cum += self._sum[:, None]
        self._sum = cum[:, -1].copy()
        n = self._n + np.arange(1, k + 1, dtype=np.float64)
        self._n += k
        est = cum / n[None, :, None]  # (C, k, d): every chain's running E[x^2]
        per_chain = np.square(est - self.e_x2) / self.var_x2
        pooled = np.square(est.mean(0) - self.e_x2) / self.var_x2
        for name, value in (("avg", np.median(per_chain.mean(2), 0)),
                            ("max", np.median(per_chain.max(2), 0)),
                            ("pooled_avg", pooled.mean(1)), ("pooled_max", pooled.max(1))):
            self.parts[name].append(value)
        g = np.broadcast_to(np.asarray(grads_per_step, dtype=np.float64), (c, k)).mean(0)
        g = self._g + np.cumsum(g)
        self._g = float(g[-1])
        self.grads.append(g)

    def curves(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(G, {name: b^2 curve})``, each ``(n,)``."""
        return (np.concatenate(self.grads),
                {name: np.concatenate(v) for name, v in self.parts.items()})

    def summary(self, threshold: float = THRESHOLD, points: int = 200) -> dict:
        """Gradients to ``threshold`` for every curve (``grads_to_avg``, ``grads_to_max``,
        ``grads_to_pooled_avg``, ...), the final values, and the curves thinned to about
        ``points`` log-spaced draws (for the JSON)."""
        grads, curves = self.curves()
        keep = np.unique(np.geomspace(1, grads.size, points).astype(int) - 1)
        out: dict = {f"grads_to_{name}": grads_to_threshold(grads, c, threshold)
                     for name, c in curves.items()}
        out.update({f"final_b2_{name}": float(c[-1]) for name, c in curves.items()})
        out.update(grads_per_step=float(grads[-1] / grads.size), n_draws=int(grads.size),
                   curve={"grads": grads[keep].tolist(),
                          **{name: c[keep].tolist() for name, c in curves.items()}})
        return out


def grads_to_threshold(grads: np.ndarray, curve: np.ndarray,
                       threshold: float = THRESHOLD) -> float:
    """``grads[i]`` for the smallest ``i`` with ``curve[j] < threshold`` for all ``j >= i``;
    ``inf`` if ``curve[-1] >= threshold`` (or is NaN: a diverged run never got there)."""
    above = ~(np.asarray(curve) < threshold)  # NaN counts as above
    if above[-1]:
        return float("inf")
    last = np.flatnonzero(above)
    return float(grads[last[-1] + 1] if last.size else grads[0])


def bias_curves(draws: np.ndarray, e_x2: np.ndarray, var_x2: np.ndarray,
                grads_per_step: np.ndarray | float, block: int = 256) -> BiasCurve:
    """:class:`BiasCurve` of all ``draws`` ``(C, n, d)``, folded in ``block`` draws at a time."""
    curve = BiasCurve(np.asarray(e_x2, np.float64), np.asarray(var_x2, np.float64))
    g = np.broadcast_to(np.asarray(grads_per_step, np.float64), draws.shape[:2])
    for s in range(0, draws.shape[1], block):
        curve.add(draws[:, s:s + block], g[:, s:s + block])
    return curve
