"""A table as points in R^D and back, keeping every column's own type.

- continuous and integer columns: a quantile transform to normal scores (one dimension);
  decoding inverts it, so values stay inside the observed range; integers are then rounded.
- categorical (strings, objects, pandas categories), boolean: one-hot dimensions (a relaxed,
  continuous code); decoding takes the arg-max, so only real categories ever come back.
- missing values: in a numeric column, a two-way one-hot "missing" indicator next to the value
  (imputed by the median for the energy); in a categorical column, a category of its own.
  Decoding puts the missing value back wherever the indicator says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

NUMERIC, INTEGER, CATEGORICAL, BOOLEAN = "continuous", "integer", "categorical", "boolean"
_MISSING = "__missing__"


@dataclass
class Column:
    name: str
    kind: str
    dtype: Any
    categories: list = field(default_factory=list)  # categorical / boolean
    has_missing: bool = False
    low: float = 0.0
    high: float = 0.0
    quantiles: Any = None  # fitted sklearn QuantileTransformer
    width: int = 1  # dimensions in the code


def _kind(s: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(s):
        return BOOLEAN
    if pd.api.types.is_numeric_dtype(s):
        values = s.dropna()
        if pd.api.types.is_integer_dtype(s) or (
                len(values) and np.all(np.asarray(values, dtype=float) % 1 == 0)):
            return INTEGER
        return NUMERIC
    non_null = s.dropna()
    if len(non_null) and non_null.map(lambda v: isinstance(v, (bool, np.bool_))).all():
        return BOOLEAN
    return CATEGORICAL


class TableEncoder:
    """Fit on a DataFrame; ``encode`` gives a float tensor ``(n, D)``, ``decode`` a DataFrame."""

    def fit(self, df: pd.DataFrame) -> TableEncoder:
        if len(df) == 0:
            raise ValueError("data: has no rows")
        self.columns: list[Column] = [_fit_column(name, df[name]) for name in df.columns]
        self.names = [c.name for c in self.columns]
        self.dim = sum(c.width for c in self.columns)
        return self

    def encode(self, df: pd.DataFrame) -> torch.Tensor:
        parts = []
        for col in self.columns:
            if col.kind in (NUMERIC, INTEGER):
                parts.extend(_encode_numeric(col, df[col.name]))
            else:
                parts.append(_encode_categorical(col, df[col.name]))
        return torch.as_tensor(np.concatenate(parts, axis=1), dtype=torch.float32)

    def decode(self, x: torch.Tensor) -> pd.DataFrame:
        a = x.detach().cpu().double().numpy()
        out, i = {}, 0
        for col in self.columns:
            block = a[:, i:i + col.width]
            i += col.width
            decode = _decode_numeric if col.kind in (NUMERIC, INTEGER) else _decode_categorical
            out[col.name] = decode(col, block)
        return pd.DataFrame(out)


def _fit_column(name: Any, s: pd.Series) -> Column:
    """A column's kind and code: a quantile transform for numbers, categories otherwise."""
    from sklearn.preprocessing import QuantileTransformer

    if s.isna().all():
        raise ValueError(f"data: column {name!r} has no values (all missing)")
    kind = _kind(s)
    col = Column(str(name), kind, s.dtype, has_missing=bool(s.isna().any()))
    if kind in (NUMERIC, INTEGER):
        v = np.asarray(s.dropna(), dtype=float).reshape(-1, 1)
        col.low, col.high = float(v.min()), float(v.max())
        col.quantiles = QuantileTransformer(
            n_quantiles=min(1000, len(v)), output_distribution="normal",
            subsample=100_000, random_state=0).fit(v)
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


def _encode_numeric(col: Column, s: pd.Series) -> list[np.ndarray]:
    """The normal score (missing values imputed by the median) and, for a column with
    missing values, the two-way missing indicator."""
    missing = s.isna().to_numpy()
    v = np.asarray(s, dtype=float)
    v = np.where(missing, np.nanmedian(v) if (~missing).any() else col.low, v)
    parts = [col.quantiles.transform(v.reshape(-1, 1))]
    if col.has_missing:
        parts.append(np.stack([~missing, missing], 1).astype(float))
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


def _decode_numeric(col: Column, block: np.ndarray) -> pd.Series:
    """Values inside the observed range, missing where the indicator says so, rounded for
    integer columns, in the column's dtype where it can hold them."""
    v = col.quantiles.inverse_transform(block[:, :1]).ravel()
    v = np.clip(v, col.low, col.high)
    missing = block[:, 2] > block[:, 1] if col.has_missing else np.zeros(len(v), bool)
    if col.kind != INTEGER:
        return pd.Series(np.where(missing, np.nan, v)).astype(
            col.dtype if pd.api.types.is_float_dtype(col.dtype) else float)
    if pd.api.types.is_float_dtype(col.dtype):
        return pd.Series(np.where(missing, np.nan, np.round(v))).astype(col.dtype)
    series = pd.Series(np.round(v)).astype("Int64" if missing.any() else "int64")
    series[missing] = pd.NA
    if not missing.any() and pd.api.types.is_integer_dtype(col.dtype):
        series = series.astype(col.dtype)
    return series


def _decode_categorical(col: Column, block: np.ndarray) -> pd.Series:
    """The arg-max category, missing for the missing category, in the column's dtype where
    it can hold the values."""
    cats = np.empty(len(col.categories), dtype=object)
    cats[:] = col.categories
    picked = cats[block.argmax(axis=1)]
    missing = picked == _MISSING
    picked[missing] = None
    series = pd.Series(picked, dtype=object)
    if col.kind == BOOLEAN and not missing.any():
        return series.astype(bool)
    if isinstance(col.dtype, pd.CategoricalDtype):
        return series.astype(col.dtype)
    if not missing.any() and col.dtype != object:
        try:
            return series.astype(col.dtype)
        except (TypeError, ValueError):
            pass
    return series
