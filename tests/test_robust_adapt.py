import functools
import warnings

import pytest
import torch

import torchlangevin as tl
from torchlangevin.adaptation import (
    Outlier,
    OutlierChainWarning,
    _WindowSums,
    outlier_chains,
)

from .conftest import gen

D = 10
SCALES = torch.logspace(-1, 1, D, dtype=torch.float64)  # sds 0.1 .. 10


class Quartic:
    """``E(x) = sum_j z_j^2 / 2 + z_j^4 / 4``, ``z = x / s``: far out the curvature grows as
    ``3 z^2``, so a chain started at energy 1e8 (``z ~ 141``) diverges at every step size the
    other chains tune to and never moves (the stuck chain of issue 24)."""

    def __call__(self, x):
        z = x / SCALES
        return (z * z / 2 + z**4 / 4).sum(-1)

    def energy_and_grad(self, x):
        z = x / SCALES
        return (z * z / 2 + z**4 / 4).sum(-1), (z + z**3) / SCALES


def _starts():
    x0 = 0.5 * torch.randn(16, D, generator=gen(1), dtype=torch.float64) * SCALES
    bad = x0.clone()
    bad[3] = 0.0
    bad[3, 0] = SCALES[0] * 4e8**0.25  # z^4 / 4 = 1e8 on the narrowest coordinate
    return x0, bad


def _adapt(x0, **options):
    return tl.adapt(tl.HMC(Quartic(), 0.1, 10), x0, 400, seed=2, **options)


@functools.cache
def _good():
    return _adapt(_starts()[0])


def test_one_stuck_chain_of_16_changes_neither_step_size_nor_mass():
    bad = _starts()[1]
    assert float(Quartic()(bad[3:4])) == pytest.approx(1e8, rel=1e-3)
    good = _good()
    assert good.outliers == ()
    with pytest.warns(OutlierChainWarning, match=r"chain 3 at step 75 \((stuck|far)"):
        robust = _adapt(bad)
    assert robust.outlier_chains == [3] and robust.outliers[0].donor != 3
    # The same seeds without the bad chain: the other chains see the same noise, so the
    # differences are the bad chain's effect plus the run-to-run spread of the estimates
    # (another seed moves the step size by ~1% and the mass by up to ~10% here).
    assert abs(robust.step_size / good.step_size - 1) < 0.1
    ratio = robust.inv_mass / good.inv_mass
    assert bool(((ratio - 1).abs() < 0.1).all()), ratio
    # Power: kept in, the chain never moves in 400 steps, so a variance pooled across
    # chains (the estimate before issue 24) would take in its offset, 14.1^2 / 16 against
    # a variance of ~0.006 on that coordinate (on main: step size 0.03x, mass 2,566x).
    with pytest.warns(OutlierChainWarning, match="kept"):
        naive = _adapt(bad, outliers="keep")
    assert float(Quartic()(naive.x[3:4])) > 1e7
    assert {o.step for o in naive.outliers} == {75, 100, 150, 350, 400}


def test_excluded_chain_is_left_out_of_the_pooled_estimates():
    bad = _starts()[1]
    with pytest.warns(OutlierChainWarning, match="left out"):
        excluded = _adapt(bad, outliers="exclude")
    assert 3 in excluded.outlier_chains and all(o.donor == -1 for o in excluded.outliers)
    good = _good()
    assert abs(excluded.step_size / good.step_size - 1) < 0.1
    assert bool((((excluded.inv_mass / good.inv_mass) - 1).abs() < 0.1).all())


def test_pooled_variance_is_within_chain():
    # chains at offsets 0, 100, 200, ... with unit variance: the pooled estimate must not
    # see the offsets (the between-chain variance here is ~5e4)
    xs = torch.randn(400, 8, 3, generator=gen(4), dtype=torch.float64)
    xs = xs + 100.0 * torch.arange(8, dtype=torch.float64)[None, :, None]
    for kind in ("diag", "dense"):
        sums = _WindowSums(xs[0], per_chain=False, kind=kind)
        sums.add(xs)
        est = sums.estimate(2, torch.float64, torch.ones(8, dtype=torch.bool))
        var = est if kind == "diag" else est.inv_mass.diagonal()
        # 3,200 draws: the variance's relative sd is sqrt(2 / 3200) = 2.5%; 15% is 6 sd
        assert bool(((var - 1).abs() < 0.15).all()), (kind, var)


def test_outlier_rule():
    accept = torch.full((8,), 0.8, dtype=torch.float64)
    energy = torch.linspace(10, 12, 8, dtype=torch.float64)
    bad, why = outlier_chains(accept, energy, 4)
    assert not bad.any() and why == {}
    accept[2] = 0.0
    energy[5] = 1e3
    energy[6] = float("nan")
    bad, why = outlier_chains(accept, energy, 4)
    assert bad.nonzero().flatten().tolist() == [2, 5, 6]
    assert why == {2: "stuck", 5: "far", 6: "far"}
    # half the chains or more: the median is no reference, nothing is flagged
    bad, _ = outlier_chains(accept, torch.tensor([0.0] * 4 + [1e9] * 4), 4)
    assert not bad.any()
    with pytest.raises(ValueError, match="outliers must be one of"):
        _adapt(torch.zeros(4, D), outliers="drop")


def test_well_started_chains_are_never_flagged():
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutlierChainWarning)
        adapted = tl.adapt(tl.MALA(Quartic(), 0.01), _starts()[0], 400, seed=5, per_chain=True)
    assert adapted.outliers == () and Outlier._fields[:2] == ("step", "chain")
