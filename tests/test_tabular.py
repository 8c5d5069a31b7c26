"""Synthetic tables: types kept, categories real, the issue's quality bars on real data."""

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.model_selection import train_test_split

from torchlangevin.cli import main
from torchlangevin.tabular import (
    TableEncoder,
    TabularGenerator,
    balance_dataset,
    generate_classification,
    generate_regression,
    quality_report,
)
from torchlangevin.tabular.datasets import mixed_table

FAST = dict(n_steps=50, warmup=30, epochs=20, seed=0)

pytestmark = pytest.mark.usefixtures("tabular_quiet")


@pytest.fixture(scope="module")
def mixed():
    return mixed_table(600, seed=1)


def test_encoder_round_trip_keeps_values_types_and_gaps(mixed):
    enc = TableEncoder().fit(mixed)
    back = enc.decode(enc.encode(mixed))
    for c in mixed.columns:
        assert back[c].dtype == mixed[c].dtype, c
        if pd.api.types.is_float_dtype(mixed[c]):
            # float32 codes: at the extreme rows the steep quantile map keeps ~5 digits
            np.testing.assert_allclose(back[c], mixed[c], rtol=1e-4)
        else:
            assert back[c].equals(mixed[c]), c


def test_generator_keeps_types_ranges_categories_and_exact_counts(mixed):
    gen = TabularGenerator(**FAST).fit(mixed, target="label")
    syn = gen.sample(257)
    assert len(syn) == 257 and list(syn.columns) == list(mixed.columns)
    assert (syn.dtypes == mixed.dtypes).all()
    for c in ["region", "plan", "device", "channel", "member", "churned", "label"]:
        assert set(syn[c].dropna()) <= set(mixed[c].dropna()), c
    for c in ["age", "visits", "rooms", "tenure"]:
        assert syn[c].between(mixed[c].min(), mixed[c].max()).all(), c
    assert 0 < syn["income"].isna().mean() < 0.2 and 0 < syn["region"].isna().mean() < 0.2
    shares = syn["label"].value_counts(normalize=True)
    real = mixed["label"].value_counts(normalize=True)
    assert (shares - real).abs().max() < 0.01  # proportional split, rounded to rows
    balanced = gen.sample(300, balance_classes=True)["label"].value_counts()
    assert balanced.tolist() == [100, 100, 100]
    assert all(0.3 < a < 0.9 for a in gen.diagnostics_["acceptance"].values())


def test_arbitrary_labels_and_arrays_come_back_as_given():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3))
    y = np.where(X[:, 0] > 0, 2, 1)  # labels {1, 2}, not {0, 1}
    Xs, ys = generate_classification(X, y, 101, **FAST)
    assert Xs.shape == (101, 3) and set(np.unique(ys)) == {1, 2}
    strings = np.where(y == 2, "yes", "no")
    Xs, ys = generate_classification(X, strings, 50, balance_classes=True, **FAST)
    assert sorted(pd.Series(ys).value_counts().tolist()) == [25, 25]
    Xb, yb = balance_dataset(X[:150], y[:150], **FAST)
    counts = pd.Series(yb).value_counts()
    assert counts.nunique() == 1 and len(Xb) == len(yb)
    only_x = TabularGenerator(**FAST).fit(X).sample(10)
    assert only_x.shape == (10, 3)


def test_breast_cancer_meets_the_bars():
    df = load_breast_cancer(as_frame=True).frame
    train, hold = train_test_split(df, test_size=0.25, random_state=0, stratify=df["target"])
    syn = TabularGenerator(seed=0).fit(train, target="target").sample(len(train))
    rep = quality_report(train, hold, syn, target="target", verbose=False)["value"]
    assert rep["near_copy_rate"] <= 0.10          # TabPFGen: 1.00
    assert rep["tstr_over_trtr"] >= 0.95
    assert rep["c2st_auc"] <= 0.75


def test_diabetes_regression_keeps_the_target_relation():
    df = load_diabetes(as_frame=True, scaled=False).frame
    train, hold = train_test_split(df, test_size=0.25, random_state=0)
    X, y = train.drop(columns="target"), train["target"]
    # one seed's TSTR/TRTR on 331 rows ranges 0.76-1.44 over seeds (sd ~0.2): the bar holds
    # for the mean of three seeds, and every seed's near-copy rate
    ratios = []
    for seed in range(3):
        Xs, ys = generate_regression(X, y, len(train), seed=seed)
        syn = Xs.assign(target=ys.to_numpy())
        rep = quality_report(train, hold, syn, target="target", task="regression",
                             verbose=False)["value"]
        ratios.append(rep["tstr_over_trtr"])
        assert rep["near_copy_rate"] <= 0.10
    assert sum(ratios) / len(ratios) >= 0.85


def test_report_flags_copies():
    df = load_breast_cancer(as_frame=True).frame
    train, hold = train_test_split(df, test_size=0.25, random_state=0)
    rep = quality_report(train, hold, train.copy(), target="target", verbose=False)["value"]
    assert rep["near_copy_rate"] == 1.0


@pytest.mark.parametrize("frame, target, match", [
    (pd.DataFrame({"a": [1.0, 2.0], "b": [np.nan, np.nan]}), None, "column 'b' has no values"),
    (pd.DataFrame({"a": [1.0, 2.0]}), "nope", "target='nope'"),
    (pd.DataFrame({"a": []}), None, "no rows"),
])
def test_bad_tables_are_named(frame, target, match):
    with pytest.raises(ValueError, match=match):
        TabularGenerator(**FAST).fit(frame, target=target)


def test_synth_command_writes_rows_and_a_report(tmp_path, capsys):
    data = tmp_path / "data.csv"
    mixed_table(300, seed=2).to_csv(data, index=False)
    out, report = tmp_path / "synth.csv", tmp_path / "report.md"
    assert main(["synth", str(data), "--target", "label", "-n", "120", "-o", str(out),
                 "--report", str(report), "--steps", "30"]) == 0
    synth = pd.read_csv(out)
    assert len(synth) == 120 and set(synth["label"]) <= {"gold", "silver", "bronze"}
    assert "near_copy_rate" in report.read_text() and (tmp_path / "report.png").exists()


@pytest.mark.parametrize("content, args, match", [
    ("", [], "is empty"),
    ("a,b\n", [], "no rows"),
    ("a,b\n1,2\n3,4\n", ["--target", "c"], "--target 'c'"),
    ("a,b\n1,\n3,\n", [], "column 'b' has no values"),
])
def test_synth_command_rejects_bad_csvs(tmp_path, capsys, content, args, match):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    assert main(["synth", str(path), "-o", str(tmp_path / "o.csv"), *args]) == 2
    assert match in capsys.readouterr().err


def test_tabpfn_labeller_is_checked_before_sampling():
    try:
        import tabpfn  # noqa: F401
        pytest.skip("tabpfn is installed here; the missing-package error cannot be shown")
    except ImportError:
        pass
    X = np.random.default_rng(0).standard_normal((50, 2))
    with pytest.raises(ImportError, match="labeller='tabpfn' needs the tabpfn package"):
        TabularGenerator(labeller="tabpfn", **FAST).fit(X, (X[:, 0] > 0).astype(int))
