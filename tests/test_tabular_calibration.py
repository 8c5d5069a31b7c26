"""Decoder calibration (``tabular.calibration``): continuous columns at the class's smoothed
real marginal, shares kept under rejection constraints, warm-up on a subset of chains."""

import numpy as np
import pandas as pd
import pytest

from torchlangevin.tabular import TabularGenerator
from torchlangevin.tabular.calibration import apply_marginal, fit_marginal
from torchlangevin.tabular.constraints import Custom

FAST = dict(n_steps=30, warmup=20, epochs=5, hidden=32, seed=0)

pytestmark = pytest.mark.usefixtures("tabular_quiet")


def test_marginal_map_gives_the_real_mean_and_spread_and_keeps_ranks():
    rng = np.random.default_rng(0)
    real = 1.0 + rng.standard_normal(400)
    z = 3.0 * rng.standard_normal(2000)  # three times too wide, centred wrong
    knots = fit_marginal(z, real)
    out = apply_marginal(z, {"marginal": knots})
    # 2,000 interpolated quantiles of 400 real values: mean and sd those of the real values
    # up to the interpolation (well under 1%)
    assert abs(out.mean() - real.mean()) < 0.01 and abs(out.std() / real.std() - 1) < 0.02
    assert (np.argsort(out) == np.argsort(z)).all()  # a monotone map: ranks kept
    assert np.isin(out, real).mean() < 0.01  # between order statistics, not copies of them
    atoms = apply_marginal(z, {"marginal": fit_marginal(z, np.round(real))})
    assert np.isin(atoms, np.round(real)).mean() > 0.9  # a column's atoms stay atoms
    wide = apply_marginal(z, {"marginal": fit_marginal(z, real, temperature=4.0)})
    assert abs(wide.std() / out.std() - 2.0) < 0.05  # sqrt(T) times the spread
    assert fit_marginal(z[:1], real) is None and fit_marginal(z, np.ones(5)) is None
    assert (apply_marginal(z, {}) == z).all()


def test_a_small_class_comes_out_at_its_own_spread():
    rng = np.random.default_rng(1)
    big, small = 200, 40
    df = pd.DataFrame({"kind": ["big"] * big + ["small"] * small,
                       "x": np.r_[rng.standard_normal(big), 3.0 + 0.3 * rng.standard_normal(small)],
                       "y": rng.standard_normal(big + small)})
    gen = TabularGenerator(**FAST).fit(df, target="kind")
    syn = gen.sample(480)
    # ~80 synthetic rows of the small class: the sd of their x within 20% of the real 40
    # rows' (the two sample sds' sampling error is ~12% and ~8%); uncalibrated draws of a
    # 40-row class come out wider than it
    real_sd = df.loc[df.kind == "small", "x"].std()
    assert abs(syn.loc[syn.kind == "small", "x"].std() / real_sd - 1) < 0.2
    assert set(gen.diagnostics_["spread"]["small"]) == {"x", "y"}


def test_rejection_constraints_keep_the_real_shares():
    rng = np.random.default_rng(2)
    n = 800
    level = rng.choice([0, 1, 2, 3], n, p=[.4, .3, .2, .1])
    x = level + rng.standard_normal(n)
    keep = x + level <= 4.0  # the rule ties the level to x: high levels break it most
    df = pd.DataFrame({"level": level, "x": x})[keep].reset_index(drop=True)
    rule = Custom(lambda d: (d["x"] + d["level"] <= 4.0).to_numpy(), ["x", "level"], "x+l<=4")
    gen = TabularGenerator(**FAST).fit(df, constraints=[rule])
    syn = gen.sample(len(df))
    assert rule.is_valid(syn).all()
    assert gen.diagnostics_["constraints"]["redraw_rate"] > 0.02  # the rule did bite
    real = df["level"].value_counts(normalize=True)
    got = syn["level"].value_counts(normalize=True)
    # the decoder, refitted until the valid draws settle, gives every batch's valid draws
    # the real quotas, so only quota rounding is left: within two rows' worth of TV (a
    # decoder refitted once: TV 0.005-0.011, 3-7 rows, on this data's seeds 0-3)
    assert 0.5 * real.subtract(got, fill_value=0).abs().sum() <= 2 / len(df)
    refits = gen.diagnostics_["calibration_refits"][None]
    assert refits["settled"] and 1 <= refits["refits"] <= 10


def test_a_refit_loop_that_does_not_settle_is_reported(monkeypatch):
    # with a limit of one refit the valid set of the rule above is still changing
    import torchlangevin.tabular.generator as generator

    monkeypatch.setattr(generator, "_REFITS", 1)
    rng = np.random.default_rng(2)
    level = rng.choice([0, 1, 2, 3], 800, p=[.4, .3, .2, .1])
    x = level + rng.standard_normal(800)
    keep = x + level <= 4.0
    df = pd.DataFrame({"level": level, "x": x})[keep].reset_index(drop=True)
    rule = Custom(lambda d: (d["x"] + d["level"] <= 4.0).to_numpy(), ["x", "level"], "x+l<=4")
    gen = TabularGenerator(**FAST).fit(df, constraints=[rule])
    with pytest.warns(RuntimeWarning, match="refitted 1 times"):
        gen.sample(len(df))
    assert gen.diagnostics_["calibration_refits"][None] == {"refits": 1, "settled": False}
