"""benchmarks/gradient_metrics.py: b^2 curves and gradients-to-threshold on draws whose
answer is known by construction."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from gradient_metrics import BiasCurve, bias_curves, grads_to_threshold  # noqa: E402


def _draws(n: int, c: int = 4) -> np.ndarray:
    """Two parameters with E[x^2] = 1, Var[x^2] = 2. Parameter 0: x_1^2 = 1 + 2.5, then
    x_k^2 = 1, so the running mean is 1 + 2.5/n and b^2(n) = 6.25 / (2 n^2).
    Parameter 1: x^2 = 1 always, b^2 = 0. Every chain the same."""
    x2 = np.ones((c, n, 2))
    x2[:, 0, 0] = 3.5
    return np.sqrt(x2)


def test_curves_match_the_closed_form():
    curve = bias_curves(_draws(50), np.ones(2), 2 * np.ones(2), grads_per_step=3, block=7)
    grads, c = curve.curves()
    n = np.arange(1, 51)
    avg, worst = c["avg"], c["max"]
    np.testing.assert_allclose(c["pooled_avg"], avg)  # identical chains: pooled = per chain
    np.testing.assert_allclose(worst, 3.125 / n**2, rtol=1e-12)
    np.testing.assert_allclose(avg, 1.5625 / n**2, rtol=1e-12)
    np.testing.assert_allclose(grads, 3 * n)


def test_grads_to_threshold_known_crossings():
    # worst: 3.125/n^2 < 0.01 from n = 18 (n^2 > 312.5); avg: 1.5625/n^2 from n = 13 (> 156.25)
    out = bias_curves(_draws(50), np.ones(2), 2 * np.ones(2), 3).summary(points=10)
    assert out["grads_to_max"] == 54.0
    assert out["grads_to_avg"] == 39.0


def test_blocks_and_per_chain_grads_fold_like_one_block():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 40, 5))
    g = rng.integers(1, 20, size=(3, 40))
    g1, one = bias_curves(x, np.ones(5), 2 * np.ones(5), g, block=40).curves()
    g2, many = bias_curves(x, np.ones(5), 2 * np.ones(5), g, block=3).curves()
    np.testing.assert_allclose(g1, g2)
    for name in one:
        np.testing.assert_allclose(one[name], many[name], rtol=1e-12)
    np.testing.assert_allclose(g1, np.cumsum(g.mean(0)))


def test_the_curve_must_stay_below():
    grads = np.arange(1.0, 7.0)
    assert grads_to_threshold(grads, np.array([1, 0.001, 1, 0.001, 0.001, 0.001])) == 4.0
    assert grads_to_threshold(grads, np.array([0.0, 0, 0, 0, 0, 0])) == 1.0
    assert grads_to_threshold(grads, np.array([0.0, 0, 0, 0, 0, 1])) == np.inf
    assert grads_to_threshold(grads, np.array([0.0, 0, np.nan, 0, 0, np.nan])) == np.inf
    assert grads_to_threshold(grads, np.array([0.0, 0, np.nan, 0, 0, 0])) == 4.0


def test_streaming_matches_direct_formula():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 30, 3)) * 1.5
    e, v = np.ones(3), 2 * np.ones(3)
    curve = BiasCurve(e, v)
    curve.add(x[:, :10], 2.0)
    curve.add(x[:, 10:], 2.0)
    per_chain = np.cumsum(x**2, 1) / np.arange(1, 31)[:, None]  # (C, n, d)
    _, c = curve.curves()
    b2 = (per_chain - e) ** 2 / v
    np.testing.assert_allclose(c["avg"], np.median(b2.mean(2), 0), rtol=1e-12)
    np.testing.assert_allclose(c["max"], np.median(b2.max(2), 0), rtol=1e-12)
    pooled = (per_chain.mean(0) - e) ** 2 / v
    np.testing.assert_allclose(c["pooled_avg"], pooled.mean(1), rtol=1e-12)
    np.testing.assert_allclose(c["pooled_max"], pooled.max(1), rtol=1e-12)
    assert c["avg"][-1] == pytest.approx(np.median(b2[:, -1].mean(1)))


def test_median_over_chains_ignores_one_stuck_chain():
    """Three chains exact from the first draw, one stuck at x^2 = 5 (b^2 = 8): the median
    of the per-chain curves is 0, the pooled estimate is off by 1 (b^2 = 1/2)."""
    x2 = np.ones((4, 10, 1))
    x2[3] = 5.0
    _, c = bias_curves(np.sqrt(x2), np.ones(1), 2 * np.ones(1), 1.0).curves()
    np.testing.assert_allclose(c["avg"], 0.0, atol=1e-15)
    np.testing.assert_allclose(c["pooled_avg"], 0.5)
