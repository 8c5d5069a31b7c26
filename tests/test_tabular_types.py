"""Synthetic tables, issue 22: exact discrete columns, missing rates, dtypes and order,
conditional sampling, constraints, the privacy rows of the report."""

import numpy as np
import pandas as pd
import pytest
import torch

from torchlangevin.tabular import TableEncoder, TabularGenerator, detect_metadata, quality_report
from torchlangevin.tabular.constraints import (
    Custom,
    FixedCombinations,
    FixedIncrements,
    Formula,
    Inequality,
    Range,
)

FAST = dict(n_steps=30, warmup=20, epochs=5, hidden=32, seed=0)

pytestmark = pytest.mark.usefixtures("tabular_quiet")


def _table(n: int = 500, seed: int = 0) -> pd.DataFrame:
    """Few-valued integers (``year``: 3 levels, ``income``: 7 coded levels with 3% gaps), a
    skewed 40-level integer, a rare category, missingness that depends on ``x``, and an
    ordered categorical target placed in the middle."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    grade = pd.Categorical(np.where(x > 0.5, "high", np.where(x > -0.5, "mid", "low")),
                           categories=["low", "mid", "high"], ordered=True)
    income = rng.choice([2500, 7500, 15000, 35000, 75000, 125000, 200000], n,
                        p=[.1, .2, .25, .2, .12, .08, .05]).astype(float)
    income[rng.random(n) < 0.03] = np.nan
    late = x + 0.3 * rng.standard_normal(n)
    late[(x > 1.0) & (rng.random(n) < 0.5)] = np.nan  # missing mostly for large x
    return pd.DataFrame({
        "year": rng.choice([2007, 2008, 2009], n, p=[.31, .34, .35]),
        "x": x,
        "grade": grade,
        "income": income,
        "age": np.minimum(18 + rng.geometric(0.08, n), 57).astype(np.int64),
        "colour": rng.choice(["red", "green", "blue", "teal"], n, p=[.5, .3, .17, .03]),
        "late": late,
    })


def _tv(a: pd.Series, b: pd.Series) -> float:
    pa = a.astype(object).value_counts(normalize=True, dropna=False)
    pb = b.astype(object).value_counts(normalize=True, dropna=False)
    return 0.5 * float(pa.subtract(pb, fill_value=0).abs().sum())


@pytest.fixture(scope="module")
def fitted():
    df = _table()
    gen = TabularGenerator(**FAST).fit(df, target="grade")
    return df, gen, gen.sample(1200)


def test_metadata_is_detected_and_can_be_overridden(fitted):
    df, gen, _ = fitted
    meta = detect_metadata(df)
    assert meta["year"]["sdtype"] == "ordinal" and meta["income"]["sdtype"] == "ordinal"
    assert meta["age"]["sdtype"] == "integer" and meta["x"]["sdtype"] == "continuous"
    assert meta["grade"]["sdtype"] == "ordinal" and meta["colour"]["sdtype"] == "categorical"
    assert gen.metadata_["grade"] == {"sdtype": "categorical", "role": "target"}
    cont = TableEncoder(metadata={"year": "continuous"}).fit(df)
    assert cont.metadata["year"]["sdtype"] == "continuous"
    with pytest.raises(ValueError, match="sdtype='nope'"):
        TableEncoder(metadata={"year": "nope"}).fit(df)
    with pytest.raises(ValueError, match="needs a numeric column"):
        TableEncoder(metadata={"colour": "continuous"}).fit(df)


def test_few_valued_and_coded_columns_keep_their_values_and_frequencies(fitted):
    df, gen, syn = fitted
    for c in ["year", "income", "age", "colour"]:
        assert set(syn[c].dropna()) <= set(df[c].dropna()), c  # no unseen values
    # quota decoding: each class's batch of m_c rows holds round(m_c F_k) rows at levels
    # <= k, so TV(real, synthetic) is rounding only: at most K / (2 m_c) summed over the 3
    # classes (m_c >= 350, K <= 8: < 0.03); the 40-level `age` is uncalibrated (2% a level
    # would be too few rows), its bound is the model's, 0.08 (measured 0.02-0.04 over seeds)
    for c in ["year", "income", "colour", "grade"]:
        assert _tv(df[c], syn[c]) <= 0.03, c
    assert _tv(df["age"], syn["age"]) <= 0.08
    enc = TableEncoder().fit(df)  # uncalibrated decoding of any code: only real values
    noise = enc.encode(df) + 0.5 * torch.randn(len(df), enc.dim, generator=torch.Generator())
    plain = enc.decode(noise)
    for c in ["year", "income", "age"]:
        assert set(plain[c].dropna()) <= set(df[c].dropna()), c


def test_missing_values_come_at_their_real_rates(fitted):
    df, _, syn = fitted
    for c in ["income", "late"]:  # 3% and ~8%
        assert abs(syn[c].isna().mean() - df[c].isna().mean()) <= 0.01, c
    # conditional missingness (gaps in `late` only where x > 1) comes from the energy: the
    # rate among x > 1 is ~50% in real rows; 1,200 rows give ~190 such rows (se 0.036)
    hi = syn["x"] > 1.0
    assert syn.loc[hi, "late"].isna().mean() > 0.25
    assert syn.loc[~hi, "late"].isna().mean() < 0.05


def test_dtypes_and_column_order_round_trip(fitted):
    df, _, syn = fitted
    assert list(syn.columns) == list(df.columns)
    assert (syn.dtypes == df.dtypes).all(), syn.dtypes[syn.dtypes != df.dtypes]
    assert syn["grade"].cat.ordered and list(syn["grade"].cat.categories) == ["low", "mid",
                                                                              "high"]
    rng = np.random.default_rng(1)
    other = pd.DataFrame({
        "flag": rng.random(200) > 0.5,
        "n": pd.array(np.where(rng.random(200) < 0.1, None, rng.integers(0, 5, 200)),
                      dtype="Int64"),
        "f32": rng.standard_normal(200).astype(np.float32),
        "i32": rng.integers(0, 100, 200).astype(np.int32),
        "cat": pd.Categorical(rng.choice(["a", "b"], 200)),
        "label": rng.choice([3, 5], 200),
    })
    out = TabularGenerator(**FAST).fit(other, target="label").sample(100)
    assert list(out.columns) == list(other.columns)
    assert (out.dtypes == other.dtypes).all(), out.dtypes[out.dtypes != other.dtypes]


def test_missing_targets_are_modelled_or_dropped_with_a_warning():
    df = _table(300, seed=3)
    df["grade"] = df["grade"].astype(object)
    df.loc[df.index[::10], "grade"] = None  # 10% missing labels
    syn = TabularGenerator(**FAST).fit(df, target="grade").sample(300)
    assert syn["grade"].isna().mean() == pytest.approx(0.10, abs=0.005)  # rounding only
    with pytest.warns(UserWarning, match="30 rows with a missing value dropped"):
        gen = TabularGenerator(**FAST, missing_target="drop").fit(df, target="grade")
    assert gen.sample(50)["grade"].notna().all()


def test_conditional_sampling_fixes_columns_and_follows_the_real_conditional():
    rng = np.random.default_rng(2)
    n = 600
    group = rng.choice(["a", "b", "c"], n, p=[.5, .3, .2])
    mu = pd.Series({"a": -2.0, "b": 0.0, "c": 2.0})[group].to_numpy()
    df = pd.DataFrame({"group": group, "x": mu + rng.standard_normal(n),
                       "y": rng.standard_normal(n), "k": rng.choice([1, 2, 3], n)})
    gen = TabularGenerator(**FAST).fit(df)
    syn = gen.sample(400, conditions={"group": "c"})
    assert len(syn) == 400 and (syn["group"] == "c").all()
    # x | group=c ~ N(2, 1): the mean of 400 draws within 0.3 (4 se of 0.05 plus the
    # energy's blur and fit error on 120 real rows of c); x ~ N(0, ~2.9) unconditionally
    assert abs(syn["x"].mean() - 2.0) < 0.3 and syn["x"].std() < 1.5
    rows = pd.DataFrame({"group": ["a", None, "b"], "k": [3, 1, None]})
    out = gen.sample(conditions=rows)
    assert out["group"].iloc[[0, 2]].tolist() == ["a", "b"] and out["k"].iloc[:2].tolist() \
        == [3, 1]
    with pytest.raises(ValueError, match=r"columns \['nope'\] are not columns"):
        gen.sample(5, conditions={"nope": 1})


def test_conditioning_on_the_target_picks_the_class(fitted):
    df, gen, _ = fitted
    syn = gen.sample(60, conditions={"grade": "high", "colour": "red"})
    assert (syn["grade"] == "high").all() and (syn["colour"] == "red").all()
    assert syn["grade"].dtype == df["grade"].dtype
    by_x = gen.sample(conditions=pd.DataFrame({"x": [2.0] * 30}))
    assert (by_x["x"] == 2.0).all() and (by_x["grade"] == "high").mean() > 0.9  # x > .5


def test_constraints_hold_on_every_row():
    rng = np.random.default_rng(4)
    n = 500
    x, y = rng.uniform(3, 9, n), rng.uniform(3, 9, n)
    z = 0.3 * (x + y) + 0.1 * rng.standard_normal(n)
    city = rng.choice(["paris", "lyon", "rome"], n)
    df = pd.DataFrame({
        "x": x, "y": y, "z": z, "depth": 200 * z / (x + y),
        "low": x, "high": x + rng.exponential(1.0, n),
        "price": 5 * rng.integers(10, 60, n),
        "city": city, "country": np.where(city == "rome", "it", "fr"),
        "score": rng.uniform(0, 10, n),
    })
    constraints = [Inequality("low", "high"), FixedCombinations(["city", "country"]),
                   FixedIncrements("price", 5),
                   Formula("depth", lambda d: 200 * d["z"] / (d["x"] + d["y"])),
                   Range("score", 0.0, 9.5), Custom(lambda d: d["x"] > 3.5, ["x"], "x>3.5")]
    df = df[df["score"] <= 9.5]
    df = df[df["x"] > 3.5].reset_index(drop=True)
    gen = TabularGenerator(**FAST).fit(df, constraints=constraints)
    syn = gen.sample(400)
    assert list(syn.columns) == list(df.columns) and (syn.dtypes == df.dtypes).all()
    for k in constraints:
        assert k.is_valid(syn).all(), k
    assert set(zip(syn["city"], syn["country"], strict=True)) <= {("paris", "fr"),
                                                                  ("lyon", "fr"),
                                                                  ("rome", "it")}
    assert (syn["price"] % 5 == 0).all()
    np.testing.assert_allclose(syn["depth"], 200 * syn["z"] / (syn["x"] + syn["y"]))
    assert 0 <= gen.diagnostics_["constraints"]["redraw_rate"] < 1
    with pytest.raises(ValueError, match="real rows break it"):
        TabularGenerator(**FAST).fit(df, constraints=[Inequality("high", "low")])


def test_report_has_the_privacy_rows(fitted):
    df, _, syn = fitted
    train, hold = df.iloc[:150], _table(150, seed=9)
    rep = quality_report(train, hold, syn.iloc[:150], verbose=False)["value"]
    assert 0.0 <= rep["dcr_overfitting_protection"] <= 1.0
    copies = quality_report(train, hold, train, verbose=False)["value"]
    assert copies["dcr_overfitting_protection"] == 0.0 and copies["near_copy_rate"] == 1.0
