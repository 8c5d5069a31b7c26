"""A table as points in R^D and back, keeping every column's own type.

Each column has an sdtype (``detect_metadata`` guesses it; the user may override it):

- ``continuous``: a quantile transform to normal scores (one dimension); decoding inverts
  it, so values stay inside the observed range.
- ``integer`` and ``ordinal`` (an integer-valued column with at most ``max_levels`` distinct
  values, an ordered categorical, or any column marked so): the column's sorted levels
  ``v_1 < ... < v_K`` with empirical CDF ``F_0 = 0 < F_1 < ... < F_K = 1`` are coded by
  uniform dequantization under the normal quantile map,

      z = Phi^-1(u),   u ~ U(F_{k-1}, F_k)   for a value v_k,

  so the code's marginal is N(0, 1) with no point masses, and decoding returns the level
  whose interval holds z: ``v_k`` for ``t_{k-1} < z <= t_k``, ``t_k = Phi^-1(F_k)``. Only real
  values ever come back, each at its real frequency when z ~ N(0, 1). (``integer`` is the
  same code for an integer column with more levels.)
- ``categorical`` and ``boolean``: one-hot dimensions (a relaxed, continuous code); decoding
  takes the arg-max of ``block + b``, so only real categories ever come back.
- missing values: in a numeric or ordinal column, a two-way one-hot "missing" indicator next to
  the value (imputed by the median for the energy); in a categorical column, a category of its
  own. Decoding puts the missing value back wherever the indicator says so.

The thresholds ``t`` and biases ``b`` default to the values above (``t = Phi^-1(F)``, ``b = 0``)
and can be *calibrated*: ``calibration(x, real)`` fits them so that rows ``x`` drawn from a
model decode to the level / category frequencies of the real rows ``real`` (each threshold is
the sample quantile ``t_k = Q_z(F_k)``; each bias vector solves ``freq(argmax(block + b)) = p``)
and a continuous code to their marginal (``v = q_r(F_z(z))``, in the column's units); see
``tabular.calibration``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from .calibration import apply_marginal, choose, fit_choice, fit_marginal, fit_thresholds

CONTINUOUS, INTEGER, ORDINAL = "continuous", "integer", "ordinal"
CATEGORICAL, BOOLEAN = "categorical", "boolean"
NUMERIC = CONTINUOUS  # the former name of the continuous kind
SDTYPES = (CONTINUOUS, INTEGER, ORDINAL, CATEGORICAL, BOOLEAN)
LEVELLED = (INTEGER, ORDINAL)
_MISSING = "__missing__"
_CALIBRATE_MAX_LEVELS = 50  # more levels than this keep t = Phi^-1(F): too few rows per level

__all__ = ["TableEncoder", "detect_metadata", "SDTYPES"]


@dataclass
class Column:
    name: str
    kind: str
    dtype: Any
    categories: list = field(default_factory=list)  # categorical / boolean
    levels: Any = None  # integer / ordinal: the sorted real values
    cdf: Any = None  # integer / ordinal: F_0 = 0, ..., F_K = 1
    has_missing: bool = False
    low: float = 0.0
    high: float = 0.0
    quantiles: Any = None  # continuous: fitted sklearn QuantileTransformer
    width: int = 1  # dimensions in the code

    @property
    def numeric_levels(self) -> bool:
        return self.kind in LEVELLED and self.levels.dtype != object


def _is_integer_valued(s: pd.Series) -> bool:
    values = s.dropna()
    return pd.api.types.is_integer_dtype(s) or (
        len(values) > 0 and bool(np.all(np.asarray(values, dtype=float) % 1 == 0)))


def _detect(s: pd.Series, max_levels: int) -> str:
    """The sdtype of one column: booleans, ordered categoricals (ordinal), other strings and
    objects (categorical), integer-valued numbers with at most ``max_levels`` values (ordinal)
    or more (integer), other numbers (continuous)."""
    if pd.api.types.is_bool_dtype(s):
        return BOOLEAN
    if isinstance(s.dtype, pd.CategoricalDtype):
        return ORDINAL if s.dtype.ordered else CATEGORICAL
    if pd.api.types.is_numeric_dtype(s):
        if _is_integer_valued(s):
            return ORDINAL if s.nunique() <= max_levels else INTEGER
        return CONTINUOUS
    non_null = s.dropna()
    if len(non_null) and non_null.map(lambda v: isinstance(v, (bool, np.bool_))).all():
        return BOOLEAN
    return CATEGORICAL


def detect_metadata(df: pd.DataFrame, max_levels: int = 20) -> dict[str, dict[str, Any]]:
    """``{column: {"sdtype": ...}}`` for every column of ``df`` (see the module notes); edit it
    and pass it to ``TabularGenerator.fit(metadata=...)`` to override a guess, e.g.
    ``{"year": {"sdtype": "categorical"}}`` or ``{"grade": {"sdtype": "ordinal",
    "order": ["low", "mid", "high"]}}``."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df: expected a DataFrame, got {type(df).__name__}")
    return {str(c): {"sdtype": _detect(df[c], max_levels)} for c in df.columns}


def _check_metadata(meta: dict, df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """``meta`` with plain strings expanded to ``{"sdtype": s}``; unknown columns, unknown
    sdtypes and impossible ones (a number line for strings) are named."""
    out = {}
    for name, spec in meta.items():
        spec = {"sdtype": spec} if isinstance(spec, str) else dict(spec)
        if name not in df.columns:
            raise ValueError(f"metadata: column {name!r} is not in the data; columns are "
                             f"{list(df.columns)[:10]}")
        if spec.get("sdtype") not in SDTYPES:
            raise ValueError(f"metadata[{name!r}]: sdtype={spec.get('sdtype')!r}; expected "
                             f"one of {SDTYPES}")
        numeric = pd.api.types.is_numeric_dtype(df[name]) and not \
            pd.api.types.is_bool_dtype(df[name])
        if spec["sdtype"] in (CONTINUOUS, INTEGER) and not numeric:
            raise ValueError(f"metadata[{name!r}]: sdtype={spec['sdtype']!r} needs a numeric "
                             f"column; it has dtype {df[name].dtype}")
        out[name] = spec
    return out


class TableEncoder:
    """Fit on a DataFrame; ``encode`` gives a float tensor ``(n, D)``, ``decode`` a DataFrame.

    ``metadata`` overrides the detected sdtypes (``{column: sdtype or {"sdtype": ...}}``);
    ``seed`` seeds the dequantization noise of ``encode``.
    """

    def __init__(self, metadata: dict | None = None, max_levels: int = 20,
                 seed: int = 0) -> None:
        self.user_metadata = metadata or {}
        self.max_levels, self.seed = max_levels, seed

    def fit(self, df: pd.DataFrame) -> TableEncoder:
        if len(df) == 0:
            raise ValueError("data: has no rows")
        meta = detect_metadata(df, self.max_levels)
        meta.update(_check_metadata(self.user_metadata, df))
        self.metadata = meta
        self.columns: list[Column] = [_fit_column(name, df[name], meta[str(name)])
                                      for name in df.columns]
        self.names = [c.name for c in self.columns]
        self.slices = {}
        i = 0
        for c in self.columns:
            self.slices[c.name] = slice(i, i + c.width)
            i += c.width
        self.dim = i
        self._rng = np.random.default_rng(self.seed)
        return self

    def encode(self, df: pd.DataFrame) -> torch.Tensor:
        parts = []
        for col in self.columns:
            if col.kind == CONTINUOUS:
                parts.extend(_encode_continuous(col, df[col.name]))
            elif col.kind in LEVELLED:
                parts.extend(_encode_levelled(col, df[col.name], self._rng))
            else:
                parts.append(_encode_categorical(col, df[col.name]))
        return torch.as_tensor(np.concatenate(parts, axis=1), dtype=torch.float32)

    def decode(self, x: torch.Tensor, calibration: dict | None = None) -> pd.DataFrame:
        """Rows ``x`` back to a DataFrame; ``calibration`` from :meth:`calibration`."""
        a = x.detach().cpu().double().numpy()
        cal = calibration or {}
        out = {}
        for col in self.columns:
            out[col.name] = _decode_column(col, a[:, self.slices[col.name]],
                                           cal.get(col.name, {}))
        return pd.DataFrame(out)

    def calibration(self, x: torch.Tensor, real: pd.DataFrame, exact: bool = False,
                    temperature: float = 1.0) -> dict[str, dict]:
        """Thresholds and biases under which rows ``x`` (drawn from a model) decode to the
        level and category frequencies of ``real``: ``t_k`` between the ``round(m F_k)``-th and
        next sorted draw (so each level gets its quota of the ``m`` rows) for an ordinal or
        integer column of at most 50 levels, ``freq(argmax(block + b)) = p`` for a one-hot
        block (the missing indicator included), and the monotone map from a continuous (or
        many-level integer) code to the marginal of the real values, spread by
        ``sqrt(temperature)`` (``calibration.fit_marginal``). With ``exact``, the calibration
        is for decoding these very rows: each one-hot block is also assigned exactly
        ``round(m p)`` rows a category (rows in order of regret take their best category with
        quota left)."""
        a = x.detach().cpu().double().numpy()
        out: dict[str, dict] = {}
        for col in self.columns:
            block, s = a[:, self.slices[col.name]], real[col.name]
            cal = {}
            present = np.ones(len(a), bool)
            if col.has_missing and col.kind not in (CATEGORICAL, BOOLEAN):
                p = float(s.isna().mean())
                cal.update(fit_choice(block[:, 1:3], np.array([1 - p, p]), exact, "missing_"))
                present = choose(block[:, 1:3], cal, "missing_") == 0
            if col.kind in LEVELLED and len(col.levels) <= _CALIBRATE_MAX_LEVELS:
                cal["thresholds"] = fit_thresholds(_level_counts(col, s), block[present, 0])
            elif col.kind in (CATEGORICAL, BOOLEAN):
                cal.update(fit_choice(block, _category_shares(col, s), exact))
            elif col.kind == CONTINUOUS or col.numeric_levels:
                cal.update(_fit_marginal(col, block[present, 0], s, temperature))
            out[col.name] = cal
        return out

    def is_continuous(self, name: str) -> bool:
        return self.columns[self.names.index(name)].kind == CONTINUOUS

    def normal_scores(self, name: str, values: pd.Series) -> np.ndarray:
        """A continuous column's values as normal scores (NaN where missing)."""
        col = self.columns[self.names.index(name)]
        v = np.asarray(values, dtype=float)
        z = col.quantiles.transform(np.nan_to_num(v, nan=col.low).reshape(-1, 1)).ravel()
        return np.where(np.isnan(v), np.nan, z)

    def code_of(self, name: str, values: pd.Series, calibration: dict | None = None,
                rng: np.random.Generator | None = None) -> np.ndarray:
        """The code block of column ``name`` for the given (non-missing) values: the point a
        chain is pinned to when sampling conditionally on them. An ordinal level's z is drawn
        uniformly (in probability) inside its calibrated interval."""
        col = self.columns[self.names.index(name)]
        if values.isna().any():
            raise ValueError(f"conditions: column {name!r} has missing values; a condition "
                             "must be a value")
        rng = rng or np.random.default_rng(self.seed)
        if col.kind == CONTINUOUS:
            z = col.quantiles.transform(np.asarray(values, float).reshape(-1, 1))
        elif col.kind in LEVELLED:
            z = _levelled_code(col, values, rng, (calibration or {}).get("thresholds"))
        else:
            return _encode_categorical(col, values)
        parts = [z] + ([np.stack([np.ones(len(z)), np.zeros(len(z))], 1)]
                       if col.has_missing else [])
        return np.concatenate(parts, 1)


# ---- fitting ------------------------------------------------------------------------------

def _fit_column(name: Any, s: pd.Series, spec: dict) -> Column:
    """A column's code: a quantile transform, sorted levels with their CDF, or categories."""
    from sklearn.preprocessing import QuantileTransformer

    if s.isna().all():
        raise ValueError(f"data: column {name!r} has no values (all missing)")
    kind = spec["sdtype"]
    col = Column(str(name), kind, s.dtype, has_missing=bool(s.isna().any()))
    if kind == CONTINUOUS:
        v = np.asarray(s.dropna(), dtype=float).reshape(-1, 1)
        col.low, col.high = float(v.min()), float(v.max())
        col.quantiles = QuantileTransformer(
            n_quantiles=min(1000, len(v)), output_distribution="normal",
            subsample=100_000, random_state=0).fit(v)
        col.width = 1 + 2 * col.has_missing
    elif kind in LEVELLED:
        col.levels = _levels(s, spec)
        counts = pd.Series(s.dropna()).map(_index_of(col.levels, name)).value_counts()
        counts = counts.reindex(range(len(col.levels)), fill_value=0).to_numpy(float)
        col.cdf = np.r_[0.0, np.cumsum(counts) / counts.sum()]
        col.width = 1 + 2 * col.has_missing
    else:
        values = s.dropna().unique().tolist()
        try:
            values = sorted(values)
        except TypeError:
            pass
        col.categories = values + ([_MISSING] if col.has_missing else [])
        col.width = len(col.categories)
    return col


def _levels(s: pd.Series, spec: dict) -> np.ndarray:
    """The ordered levels: ``spec["order"]``, an ordered categorical's categories, or the
    sorted distinct values."""
    if "order" in spec:
        order = list(spec["order"])
        unknown = set(s.dropna().unique()) - set(order)
        if unknown:
            raise ValueError(f"metadata[{s.name!r}]: order lacks values "
                             f"{sorted(map(str, unknown))[:5]}")
        return np.array(order, dtype=object)
    if isinstance(s.dtype, pd.CategoricalDtype):
        return np.array(list(s.dtype.categories), dtype=object)
    values = s.dropna().unique()
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        return np.sort(np.asarray(values, dtype=float))
    try:
        return np.array(sorted(values.tolist()), dtype=object)
    except TypeError:
        return np.array(values.tolist(), dtype=object)


def _index_of(levels: np.ndarray, name: Any):
    """A function from a value to its level's index; an unknown value is named."""
    lookup = {v: i for i, v in enumerate(levels.tolist())}

    def index(v):
        key = float(v) if levels.dtype != object else v
        if key not in lookup:
            raise ValueError(f"data: column {name!r} has value {v!r} not seen in fit")
        return lookup[key]

    return index


# ---- encoding -----------------------------------------------------------------------------

def _missing_indicator(missing: np.ndarray) -> np.ndarray:
    return np.stack([~missing, missing], 1).astype(float)


def _encode_continuous(col: Column, s: pd.Series) -> list[np.ndarray]:
    """The normal score (missing values imputed by the median) and, for a column with
    missing values, the two-way missing indicator."""
    missing = s.isna().to_numpy()
    v = np.asarray(s, dtype=float)
    v = np.where(missing, np.nanmedian(v) if (~missing).any() else col.low, v)
    parts = [col.quantiles.transform(v.reshape(-1, 1))]
    if col.has_missing:
        parts.append(_missing_indicator(missing))
    return parts


def _levelled_code(col: Column, values: pd.Series, rng: np.random.Generator,
                   thresholds: np.ndarray | None = None) -> np.ndarray:
    """``z = Phi^-1(u)``, ``u`` uniform (trimmed by 2% at each end) inside the value's
    interval ``(F_{k-1}, F_k]``, or inside ``(Phi(t_{k-1}), Phi(t_k)]`` for given
    thresholds."""
    from scipy.special import ndtr, ndtri

    idx = values.map(_index_of(col.levels, col.name)).to_numpy(int)
    edges = col.cdf if thresholds is None else np.r_[0.0, ndtr(thresholds), 1.0]
    lo, hi = edges[idx], edges[idx + 1]
    u = lo + (hi - lo) * rng.uniform(0.02, 0.98, len(idx))
    return ndtri(np.clip(u, 1e-7, 1 - 1e-7)).reshape(-1, 1)


def _encode_levelled(col: Column, s: pd.Series, rng: np.random.Generator) -> list[np.ndarray]:
    """The dequantized normal score (missing values at the median level) and, for a column
    with missing values, the two-way missing indicator."""
    missing = s.isna().to_numpy()
    median = col.levels[int(np.searchsorted(col.cdf[1:], 0.5))]
    filled = s.astype(object).where(~missing, median)
    parts = [_levelled_code(col, filled, rng)]
    if col.has_missing:
        parts.append(_missing_indicator(missing))
    return parts


def _encode_categorical(col: Column, s: pd.Series) -> np.ndarray:
    """One-hot rows; a category not seen in fit is an error naming the column."""
    missing = s.isna().to_numpy()
    lookup = {c: i for i, c in enumerate(col.categories)}
    keys = [(_MISSING if m else v) for v, m in zip(s.tolist(), missing, strict=True)]
    unknown = {k for k in keys if k not in lookup}
    if unknown:
        raise ValueError(f"data: column {col.name!r} has categories "
                         f"{sorted(map(str, unknown))[:5]} not seen in fit")
    onehot = np.zeros((len(s), col.width))
    onehot[np.arange(len(s)), [lookup[k] for k in keys]] = 1.0
    return onehot


# ---- calibration targets ----------------------------------------------------------------

def _level_counts(col: Column, s: pd.Series) -> np.ndarray:
    """How many of the real values ``s`` fall at each of ``col``'s levels."""
    counts = s.dropna().map(_index_of(col.levels, col.name)).value_counts()
    return counts.reindex(range(len(col.levels)), fill_value=0).to_numpy(float)


def _category_shares(col: Column, s: pd.Series) -> np.ndarray:
    keys = s.astype(object).where(~s.isna(), _MISSING)
    shares = keys.value_counts(normalize=True)
    return np.array([float(shares.get(c, 0.0)) for c in col.categories])




def _fit_marginal(col: Column, z: np.ndarray, s: pd.Series, temperature: float) -> dict:
    """The marginal map of a continuous or many-level numeric column, in its own units (a
    small class in a column's tail is far from Gaussian in the column's normal scores), and
    ``spread``: the sd of the draws decoded without it over the real sd."""
    real = np.asarray(s.dropna(), float)
    knots = fit_marginal(z, real, temperature)
    if knots is None:
        return {}
    none = np.zeros(len(z), bool)
    plain = _decode_continuous(col, z, none) if col.kind == CONTINUOUS else \
        _decode_levelled(col, z, none, None)
    plain = np.asarray(plain, float)
    return {"marginal": knots, "spread": float(np.std(plain) / np.std(real))}


# ---- decoding -----------------------------------------------------------------------------

def _decode_column(col: Column, block: np.ndarray, cal: dict) -> pd.Series:
    if col.kind in (CATEGORICAL, BOOLEAN):
        return _decode_categorical(col, block, cal)
    missing = np.zeros(len(block), bool)
    if col.has_missing:
        missing = choose(block[:, 1:3], cal, "missing_") == 1
    z = block[:, 0]
    if cal.get("marginal") is not None:
        return _decode_marginal(col, apply_marginal(z, cal), missing)
    if col.kind == CONTINUOUS:
        return _decode_continuous(col, z, missing)
    return _decode_levelled(col, z, missing, cal.get("thresholds"))


def _decode_marginal(col: Column, v: np.ndarray, missing: np.ndarray) -> pd.Series:
    """Calibrated values (already in the column's units) inside the observed range; a
    many-level numeric column's at the nearest real level."""
    if col.kind == CONTINUOUS:
        return _restore_number(col, np.clip(v, col.low, col.high), missing)
    levels = col.levels.astype(float)
    i = np.clip(np.searchsorted(0.5 * (levels[1:] + levels[:-1]), v), 0, len(levels) - 1)
    return _restore_number(col, levels[i], missing)


def _default_thresholds(col: Column) -> np.ndarray:
    from scipy.special import ndtri

    return ndtri(col.cdf[1:-1])


def _decode_levelled(col: Column, z: np.ndarray, missing: np.ndarray,
                     thresholds: np.ndarray | None) -> pd.Series:
    """The level whose interval holds ``z``: ``v_k`` for ``t_{k-1} < z <= t_k``."""
    t = _default_thresholds(col) if thresholds is None else thresholds
    picked = col.levels[np.searchsorted(t, z, side="left")]
    if not col.numeric_levels:
        return _restore_object(col, picked.astype(object), missing)
    return _restore_number(col, picked.astype(float), missing)


def _decode_continuous(col: Column, z: np.ndarray, missing: np.ndarray) -> pd.Series:
    """Values inside the observed range, missing where the indicator says so."""
    v = col.quantiles.inverse_transform(z.reshape(-1, 1)).ravel()
    v = np.clip(v, col.low, col.high)
    return _restore_number(col, v, missing)


def _restore_number(col: Column, v: np.ndarray, missing: np.ndarray) -> pd.Series:
    """Numbers in the column's dtype: floats stay floats (NaN where missing); integers are
    rounded, nullable ``Int64`` when some are missing and the input was a plain integer."""
    dtype = col.dtype
    if pd.api.types.is_float_dtype(dtype) or col.kind == CONTINUOUS and \
            not pd.api.types.is_integer_dtype(dtype):
        out = pd.Series(np.where(missing, np.nan, v))
        return out.astype(dtype if pd.api.types.is_float_dtype(dtype) else float)
    series = pd.Series(np.round(v)).astype("Int64")
    series[missing] = pd.NA
    if isinstance(dtype, pd.api.extensions.ExtensionDtype):
        return series.astype(dtype)
    if not missing.any() and pd.api.types.is_integer_dtype(dtype):
        return series.astype(dtype)
    return series


def _restore_object(col: Column, picked: np.ndarray, missing: np.ndarray) -> pd.Series:
    picked = picked.copy()
    picked[missing] = np.nan  # as pandas reads a gap in a text column
    series = pd.Series(picked, dtype=object)
    return _as_dtype(col, series, missing)


def _decode_categorical(col: Column, block: np.ndarray, cal: dict) -> pd.Series:
    """The arg-max category of ``block + bias`` (or the calibrated assignment), missing for
    the missing category, in the column's dtype where it can hold the values."""
    cats = np.empty(len(col.categories), dtype=object)
    cats[:] = col.categories
    picked = cats[choose(block, cal)]
    missing = picked == _MISSING
    picked[missing] = np.nan  # as pandas reads a gap in a text column
    return _as_dtype(col, pd.Series(picked, dtype=object), missing)


def _as_dtype(col: Column, series: pd.Series, missing: np.ndarray) -> pd.Series:
    if col.kind == BOOLEAN and not missing.any() and pd.api.types.is_bool_dtype(col.dtype):
        return series.astype(bool)
    if isinstance(col.dtype, pd.CategoricalDtype):
        return series.astype(col.dtype)
    if pd.api.types.is_bool_dtype(col.dtype) and missing.any():
        return series
    if not missing.any() and col.dtype != object:
        try:
            return series.astype(col.dtype)
        except (TypeError, ValueError):
            pass
    return series
