"""How good, and how private, is a synthetic table?

``quality_report(real_train, real_holdout, synthetic, target)`` measures

- fidelity: SDMetrics' column shapes (KS / TV complement per column) and column pair trends
  (correlation / contingency similarity), averaged as SDMetrics reports them;
- utility: TSTR (train a random forest on synthetic rows, test on the hold-out) against TRTR
  (train it on the real training rows): accuracy for classification, R^2 for regression;
- detectability: the cross-validated ROC AUC of a classifier telling hold-out rows from as
  many synthetic rows (0.5 = indistinguishable);
- privacy: each synthetic row's distance to its closest training row (DCR) against the
  hold-out's, and the near-copy rate: the share of synthetic rows closer to a training row
  than the 5th percentile of hold-out DCRs (a perfect generator scores about 5%);
  SDMetrics' DCR overfitting protection (synthetic rows no closer to the training rows than
  to the hold-out: 1 = protected, 0 = every row nearer a training row) and, when asked with
  ``disclosure=(known, sensitive)``, its disclosure protection estimate (how much harder the
  sensitive columns are to guess from the known ones with synthetic rows than by chance:
  1 = no disclosure). It is not on by default: with every other column known it scores 0
  for fresh real rows too, and it takes ~20 s on 1,000 rows.

Distances are Euclidean on numeric columns z-scored by the training rows (missing -> 0 plus
an indicator) and one-hot categories, by nearest-neighbour search (no full distance matrix).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["quality_report"]


Row = tuple[str, float, str]


def _is_number(s: pd.Series) -> bool:
    """Numeric and not boolean: the columns that are z-scored, histogrammed, correlated."""
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def _sdtype(s: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(s):
        return "boolean"
    if pd.api.types.is_numeric_dtype(s):
        return "numerical"
    return "categorical"


def _for_model(frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """Object / bool columns as shared pandas categories, so gradient boosting reads them."""
    out = [f.copy() for f in frames]
    for col in frames[0].columns:
        if not _is_number(frames[0][col]):
            cats = pd.unique(pd.concat([f[col].astype(object) for f in frames]).dropna())
            for f in out:
                f[col] = pd.Categorical(f[col].astype(object), categories=cats)
    return out


def _model(task: str, seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    cls = HistGradientBoostingClassifier if task == "classification" \
        else HistGradientBoostingRegressor
    return cls(categorical_features="from_dtype", random_state=seed)


def _forest(task: str, seed: int):
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    cls = RandomForestClassifier if task == "classification" else RandomForestRegressor
    return cls(n_estimators=200, min_samples_leaf=2, random_state=seed, n_jobs=-1)


def _z_scores(train: pd.Series, s: pd.Series) -> list[np.ndarray]:
    """``s`` z-scored by ``train``'s mean and sd, missing -> 0, plus a missing indicator
    if ``train`` has missing values."""
    v = train.astype(float)
    mu, sd = float(v.mean()), float(v.std()) or 1.0
    z = ((s.astype(float) - mu) / sd).to_numpy()
    miss = np.isnan(z)
    parts = [np.where(miss, 0.0, z)[:, None]]
    if train.isna().any():
        parts.append(miss[:, None].astype(float))
    return parts


def _one_hot(train: pd.Series, s: pd.Series) -> list[np.ndarray]:
    """``s`` one-hot over ``train``'s categories (missing is a category of its own)."""
    cats = pd.unique(train.astype(object))
    vals = s.astype(object).to_numpy()
    return [np.stack([(vals == c) | (pd.isna(vals) & pd.isna(c)) for c in cats],
                     1).astype(float)]


def _embed(train: pd.DataFrame, *frames: pd.DataFrame) -> list[np.ndarray]:
    """Each frame as points in R^D for distances: z-scores and one-hot categories."""
    parts_all = [[] for _ in frames]
    for col in train.columns:
        code = _z_scores if _is_number(train[col]) else _one_hot
        for parts, f in zip(parts_all, frames, strict=True):
            parts.extend(code(train[col], f[col]))
    return [np.concatenate(p, 1) for p in parts_all]


def quality_report(real_train: pd.DataFrame, real_holdout: pd.DataFrame,
                   synthetic: pd.DataFrame, target: str | None = None, *,
                   task: str | None = None, plot: str | Path | None = None, seed: int = 0,
                   verbose: bool = True,
                   disclosure: tuple[list[str], list[str]] | None = None) -> pd.DataFrame:
    """Fidelity, utility, detectability and privacy of ``synthetic`` (see the module notes).

    Returns a DataFrame indexed by metric with columns ``value`` and ``note``; prints it when
    ``verbose``. With ``plot="report.png"``, also writes marginal histograms and the real and
    synthetic correlation matrices.
    """
    _check_frames(real_train, real_holdout, synthetic)
    cols = list(real_train.columns)
    train, hold, syn = (df[cols].reset_index(drop=True)
                        for df in (real_train, real_holdout, synthetic))
    rows = _fidelity(train, syn)
    if target is not None:
        rows += _utility(train, hold, syn, target, task, seed)
    rows += _detectability(hold, syn, seed)
    rows += _privacy(train, hold, syn)
    rows += _sdmetrics_privacy(train, hold, syn, disclosure, seed)
    report = pd.DataFrame(rows, columns=["metric", "value", "note"]).set_index("metric")
    if verbose:
        with pd.option_context("display.max_colwidth", 80, "display.width", 140):
            print(report.to_string(float_format=lambda v: f"{v:.4f}"))
    if plot is not None:
        _plot(train, syn, Path(plot))
    return report


def _check_frames(real_train: pd.DataFrame, real_holdout: pd.DataFrame,
                  synthetic: pd.DataFrame) -> None:
    """Three non-empty DataFrames, each with every column of ``real_train``."""
    for name, df in (("real_train", real_train), ("real_holdout", real_holdout),
                     ("synthetic", synthetic)):
        if not isinstance(df, pd.DataFrame) or len(df) == 0:
            raise ValueError(f"{name}: expected a non-empty DataFrame")
        missing = set(real_train.columns) - set(df.columns)
        if missing:
            raise ValueError(f"{name}: lacks columns {sorted(missing)[:5]}")


def _fidelity(train: pd.DataFrame, syn: pd.DataFrame) -> list[Row]:
    """SDMetrics' column shapes and column pair trends."""
    from sdmetrics.reports.single_table import QualityReport

    meta = {"columns": {c: {"sdtype": _sdtype(train[c])} for c in train.columns}}
    rep = QualityReport()
    rep.generate(train, syn, meta, verbose=False)
    props = rep.get_properties().set_index("Property")["Score"]
    return [("column_shapes", float(props["Column Shapes"]), "SDMetrics, 1 = identical"),
            ("column_pair_trends", float(props["Column Pair Trends"]),
             "SDMetrics, 1 = identical")]


def _utility(train: pd.DataFrame, hold: pd.DataFrame, syn: pd.DataFrame, target: str,
             task: str | None, seed: int) -> list[Row]:
    """TSTR against TRTR: a random forest trained on synthetic or real rows, scored on the
    hold-out (accuracy for classification, R^2 for regression)."""
    from sklearn.metrics import accuracy_score, r2_score

    if target not in train.columns:
        raise ValueError(f"target={target!r}: not a column")
    task = task or _infer_task(train[target])
    score = accuracy_score if task == "classification" else r2_score
    feats = [c for c in train.columns if c != target]
    e_tr, e_ho, e_sy = _embed(train[feats], train[feats], hold[feats], syn[feats])
    kind = str if task == "classification" else float
    y_tr, y_ho, y_sy = (df[target].astype(kind) for df in (train, hold, syn))
    trtr = score(y_ho, _forest(task, seed).fit(e_tr, y_tr).predict(e_ho))
    tstr = score(y_ho, _forest(task, seed).fit(e_sy, y_sy).predict(e_ho))
    metric = "accuracy" if task == "classification" else "R^2"
    return [("trtr", trtr, f"{metric}, model trained on real train"),
            ("tstr", tstr, f"{metric}, model trained on synthetic"),
            ("tstr_over_trtr", tstr / trtr if trtr else np.nan, "1 = as useful as real")]


def _infer_task(y: pd.Series) -> str:
    """Regression for a float target of more than 20 values, classification otherwise."""
    if pd.api.types.is_float_dtype(y) and y.nunique() > 20:
        return "regression"
    return "classification"


def _detectability(hold: pd.DataFrame, syn: pd.DataFrame, seed: int) -> list[Row]:
    """Cross-validated ROC AUC of a classifier telling hold-out rows from as many synthetic."""
    from sklearn.model_selection import cross_val_score

    rng = np.random.default_rng(seed)
    k = min(len(hold), len(syn))
    both = pd.concat([hold.iloc[rng.permutation(len(hold))[:k]],
                      syn.iloc[rng.permutation(len(syn))[:k]]], ignore_index=True)
    (both_m,) = _for_model([both])
    labels = np.r_[np.zeros(k), np.ones(k)]
    folds = max(2, min(5, k // 10))
    auc = float(np.mean(cross_val_score(_model("classification", seed), both_m, labels,
                                        cv=folds, scoring="roc_auc")))
    return [("c2st_auc", auc, "hold-out vs synthetic classifier, 0.5 = indistinguishable")]


def _privacy(train: pd.DataFrame, hold: pd.DataFrame, syn: pd.DataFrame) -> list[Row]:
    """Distances to the closest training row (DCR) and the near-copy rate."""
    from sklearn.neighbors import NearestNeighbors

    e_train, e_hold, e_syn = _embed(train, train, hold, syn)
    nn_ = NearestNeighbors(n_neighbors=1).fit(e_train)
    dcr_hold = nn_.kneighbors(e_hold)[0].ravel()
    dcr_syn = nn_.kneighbors(e_syn)[0].ravel()
    q05 = float(np.quantile(dcr_hold, 0.05))
    return [("dcr_median_synthetic", float(np.median(dcr_syn)), "to closest training row"),
            ("dcr_median_holdout", float(np.median(dcr_hold)), "the same for real rows"),
            ("near_copy_rate", float(np.mean(dcr_syn < q05)),
             f"DCR < hold-out 5th percentile ({q05:.3g}); ~0.05 for fresh real rows")]


def _sdmetrics_privacy(train: pd.DataFrame, hold: pd.DataFrame, syn: pd.DataFrame,
                       disclosure: tuple[list[str], list[str]] | None,
                       seed: int) -> list[Row]:
    """SDMetrics' DCR overfitting protection (on at most 1,000 synthetic rows) and, when
    asked, its disclosure protection estimate (numbers in 10 bins)."""
    import warnings

    from sdmetrics.single_table import DCROverfittingProtection, DisclosureProtectionEstimate

    meta = {"columns": {c: {"sdtype": _sdtype(train[c])} for c in train.columns}}
    np.random.seed(seed)  # noqa: NPY002 - SDMetrics subsamples from the global generator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcr = DCROverfittingProtection.compute(
            real_training_data=train, synthetic_data=syn, real_validation_data=hold,
            metadata=meta, table_name=None,
            num_rows_subsample=_dcr_subsample(train, hold, syn))
    rows = [("dcr_overfitting_protection", float(dcr),
             "SDMetrics; 1 = synthetic rows no nearer training rows than hold-out rows")]
    if disclosure is None:
        return rows
    known, sensitive = (list(v) for v in disclosure)
    unknown = [c for c in known + sensitive if c not in train.columns]
    if unknown:
        raise ValueError(f"disclosure: columns {unknown} are not in real_train")
    numbers = [c for c in known + sensitive if _is_number(train[c])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = DisclosureProtectionEstimate.compute(
            real_data=train, synthetic_data=syn, known_column_names=known,
            sensitive_column_names=sensitive, continuous_column_names=numbers or None,
            num_rows_subsample=min(1000, len(syn)), num_iterations=3, verbose=False)
    rows.append(("disclosure_protection", float(est),
                 f"SDMetrics estimate; {sensitive} from {known}, 1 = no disclosure"))
    return rows


def _dcr_subsample(train: pd.DataFrame, hold: pd.DataFrame, syn: pd.DataFrame) -> int | None:
    """Whole frames up to 1,000 synthetic rows; past that SDMetrics subsamples all three
    frames to one size, at most 1,000 and the smallest frame's rows."""
    return None if len(syn) <= 1000 else min(1000, len(train), len(hold), len(syn))


def _plot(real: pd.DataFrame, syn: pd.DataFrame, path: Path) -> None:
    """Marginals of the first 12 columns and, below them, both correlation matrices."""
    from ..viz.plots import pyplot

    plt = pyplot()
    cols = list(real.columns)[:12]
    ncol = 4
    nrow = -(-len(cols) // ncol) + 1
    fig = plt.figure(figsize=(4 * ncol, 3 * nrow))
    for i, c in enumerate(cols):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        _plot_marginal(ax, real[c], syn[c])
        ax.set_title(str(c)[:30], fontsize=9)
        if i == 0:
            ax.legend(fontsize=7)
    numeric = [c for c in real.columns if _is_number(real[c])]
    for j, (name, df) in enumerate((("real", real), ("synthetic", syn))):
        ax = fig.add_subplot(nrow, 2, 2 * (nrow - 1) + j + 1)
        if len(numeric) > 1:
            ax.imshow(df[numeric].astype(float).corr().to_numpy(), vmin=-1, vmax=1,
                      cmap="RdBu_r")
        ax.set_title(f"{name} correlations ({len(numeric)} numeric columns)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_marginal(ax, real: pd.Series, syn: pd.Series) -> None:
    """Overlaid histograms of a numeric column, side-by-side bars of a categorical one."""
    if _is_number(real):
        lo, hi = np.nanquantile(real.astype(float), [0.005, 0.995])
        bins = np.linspace(lo, hi, 30) if hi > lo else 10
        ax.hist(real.dropna().astype(float), bins=bins, alpha=0.5, density=True, label="real")
        ax.hist(syn.dropna().astype(float), bins=bins, alpha=0.5, density=True,
                label="synthetic")
        return
    r = real.astype(str).value_counts(normalize=True)
    s = syn.astype(str).value_counts(normalize=True).reindex(r.index, fill_value=0)
    x = np.arange(len(r))
    ax.bar(x - 0.2, r.values, 0.4, label="real")
    ax.bar(x + 0.2, s.values, 0.4, label="synthetic")
    ax.set_xticks(x, [str(v)[:8] for v in r.index], rotation=45, fontsize=7)
