"""Rules every synthetic row must obey, declared by the user (as SDV's constraints are).

Each constraint is checked on the real rows at fit (a table that breaks its own rule is an
error, naming how many rows do) and then holds on 100% of sampled rows, in one of two ways:

- by construction, a reversible rewrite of the table the model sees:
  ``Inequality(low, high)``: the model sees ``d = high - low >= 0`` and ``high = low + d``
  comes back (decoded values stay inside the observed range of ``d``, so ``d >= 0``);
  ``Range(column, low, high)`` with column bounds: the model sees the fraction
  ``f = (x - low) / (high - low)`` in [0, 1]; ``FixedCombinations``: the columns become one
  categorical column of the combinations seen; ``FixedIncrements(column, k)``: the model sees
  ``x / k``, an integer; ``Formula(column, fn)``: the column is left out and recomputed as
  ``fn(rows)``;
- by rejection: ``Range`` with number bounds and ``Custom(is_valid)``; a row that fails any
  check after decoding is drawn again (``TabularGenerator.diagnostics_["constraints"]``
  reports how many were), and sampling raises rather than return a failing row. The decoder
  is refitted on the draws that decode valid until that set settles, at most 10 times
  (``diagnostics_["calibration_refits"]``: the most refits per class, and whether it settled;
  a warning when it did not).

Constraints apply in the order given; a later one sees the columns as earlier ones rewrote
them (list a column-bounded ``Range`` before an ``Inequality`` on its bounds).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Constraint", "Inequality", "Range", "FixedCombinations", "FixedIncrements",
           "Formula", "Custom"]


def _close(a: pd.Series, b: pd.Series) -> np.ndarray:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.isclose(a, b, rtol=1e-6, atol=1e-9) | (np.isnan(a) & np.isnan(b))


class Constraint(ABC):
    """A rule on rows: ``is_valid(df)`` (one bool a row; rows with a missing value in the
    rule's columns pass), ``transform`` / ``reverse`` (the rewrite the model sees and its
    inverse; identity for a rejection-only rule) and the columns it rewrites."""

    columns: tuple[str, ...] = ()
    rewrites: tuple[str, ...] = ()

    def check_columns(self, df: pd.DataFrame) -> None:
        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            raise ValueError(f"{self!r}: columns {missing} are not in the data; columns are "
                             f"{list(df.columns)[:10]}")

    def fit(self, df: pd.DataFrame) -> None:
        """Check the columns exist and that the real rows obey the rule."""
        self.check_columns(df)
        bad = int((~self.is_valid(df)).sum())
        if bad:
            raise ValueError(f"{self!r}: {bad} of {len(df)} real rows break it; fix the data "
                             "or drop the constraint")

    @abstractmethod
    def is_valid(self, df: pd.DataFrame) -> np.ndarray:
        """One bool a row: does it obey the rule?"""

    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        return df

    def reverse(self, df: pd.DataFrame) -> pd.DataFrame:
        return df


class Inequality(Constraint):
    """``low <= high`` (``low < high`` with ``strict``), two numeric columns; by construction."""

    def __init__(self, low: str, high: str, strict: bool = False) -> None:
        self.low, self.high, self.strict = low, high, strict
        self.columns, self.rewrites = (low, high), (high,)

    def __repr__(self) -> str:
        return f"Inequality({self.low!r}, {self.high!r}, strict={self.strict})"

    def is_valid(self, df: pd.DataFrame) -> np.ndarray:
        lo, hi = df[self.low].astype(float), df[self.high].astype(float)
        ok = (lo < hi) if self.strict else (lo <= hi)
        return (ok | lo.isna() | hi.isna()).to_numpy()

    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(**{self.high: df[self.high] - df[self.low]})

    def reverse(self, df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(**{self.high: df[self.low] + df[self.high]})


class Range(Constraint):
    """``low <= column <= high``; each bound a number or a column name (``None``: no bound).
    With two column bounds the model sees the fraction ``(x - low) / (high - low)`` (by
    construction); otherwise the rule is checked, and failing rows are drawn again."""

    def __init__(self, column: str, low: float | str | None = None,
                 high: float | str | None = None) -> None:
        if low is None and high is None:
            raise ValueError(f"Range({column!r}): give low, high or both")
        self.column, self.low, self.high = column, low, high
        self.columns = (column,) + tuple(b for b in (low, high) if isinstance(b, str))
        self.by_columns = isinstance(low, str) and isinstance(high, str)
        self.rewrites = (column,) if self.by_columns else ()

    def __repr__(self) -> str:
        return f"Range({self.column!r}, low={self.low!r}, high={self.high!r})"

    def _bound(self, df: pd.DataFrame, b: float | str | None, default: float) -> pd.Series:
        if b is None:
            return pd.Series(default, index=df.index)
        return df[b].astype(float) if isinstance(b, str) else pd.Series(float(b), df.index)

    def is_valid(self, df: pd.DataFrame) -> np.ndarray:
        x = df[self.column].astype(float)
        lo, hi = self._bound(df, self.low, -np.inf), self._bound(df, self.high, np.inf)
        return ((lo <= x) & (x <= hi) | x.isna() | lo.isna() | hi.isna()).to_numpy()

    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        if not self.by_columns:
            return df
        lo, hi = df[self.low].astype(float), df[self.high].astype(float)
        width = (hi - lo).where(hi > lo, 1.0)
        return df.assign(**{self.column: (df[self.column].astype(float) - lo) / width})

    def reverse(self, df: pd.DataFrame) -> pd.DataFrame:
        if not self.by_columns:
            return df
        lo, hi = df[self.low].astype(float), df[self.high].astype(float)
        frac = df[self.column].astype(float).clip(0.0, 1.0)
        return df.assign(**{self.column: lo + frac * (hi - lo).where(hi > lo, 0.0)})


class FixedCombinations(Constraint):
    """Only the combinations of ``columns``' values seen in the real rows come back; the
    model sees one categorical column of combinations (by construction)."""

    def __init__(self, columns: Sequence[str]) -> None:
        if len(columns) < 2:
            raise ValueError(f"FixedCombinations: columns={list(columns)!r}; expected two "
                             "or more")
        self.columns = tuple(columns)
        self.rewrites = self.columns
        self.key = "|".join(map(str, self.columns))

    def __repr__(self) -> str:
        return f"FixedCombinations({list(self.columns)!r})"

    def _keys(self, df: pd.DataFrame) -> pd.Series:
        parts = df[list(self.columns)].astype(object).where(df[list(self.columns)].notna(),
                                                             None)
        return pd.Series([repr(tuple(r)) for r in parts.itertuples(index=False)], df.index)

    def fit(self, df: pd.DataFrame) -> None:
        self.check_columns(df)
        if self.key in df.columns:
            raise ValueError(f"{self!r}: the data already has a column {self.key!r}")
        keys = self._keys(df)
        first = ~keys.duplicated()
        self.table = df.loc[first, list(self.columns)].set_index(keys[first])

    def is_valid(self, df: pd.DataFrame) -> np.ndarray:
        return self._keys(df).isin(self.table.index).to_numpy()

    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        out = df.drop(columns=list(self.columns))
        out[self.key] = self._keys(df).to_numpy()
        return out

    def reverse(self, df: pd.DataFrame) -> pd.DataFrame:
        rows = self.table.loc[df[self.key].to_numpy()].reset_index(drop=True)
        rows.index = df.index
        return pd.concat([df.drop(columns=[self.key]), rows], axis=1)


class FixedIncrements(Constraint):
    """``column`` is a multiple of ``increment`` (the model sees ``x / increment``)."""

    def __init__(self, column: str, increment: float) -> None:
        if not increment > 0:
            raise ValueError(f"FixedIncrements({column!r}): increment={increment!r}; expected "
                             "a positive number")
        self.column, self.increment = column, increment
        self.columns = self.rewrites = (column,)

    def __repr__(self) -> str:
        return f"FixedIncrements({self.column!r}, {self.increment!r})"

    def is_valid(self, df: pd.DataFrame) -> np.ndarray:
        q = df[self.column].astype(float) / self.increment
        return (_close(q, q.round()) | q.isna()).to_numpy()

    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        q = (df[self.column].astype(float) / self.increment).round()
        return df.assign(**{self.column: q.astype("Int64") if q.isna().any()
                            else q.astype("int64")})

    def reverse(self, df: pd.DataFrame) -> pd.DataFrame:
        q = df[self.column].astype(float).round()
        return df.assign(**{self.column: q * self.increment})


class Formula(Constraint):
    """``column = fn(rows)``, e.g. ``Formula("depth", lambda d: 200 * d.z / (d.x + d.y))``:
    the model never sees ``column``; it is recomputed from the sampled rows (by
    construction). ``fn`` takes a DataFrame and returns one value a row."""

    def __init__(self, column: str, fn: Callable[[pd.DataFrame], Any],
                 inputs: Sequence[str] = ()) -> None:
        if not callable(fn):
            raise TypeError(f"Formula({column!r}): fn={fn!r} is not callable")
        self.column, self.fn = column, fn
        self.columns = (column, *inputs)
        self.rewrites = (column,)
        self.inputs = tuple(inputs)

    def __repr__(self) -> str:
        return f"Formula({self.column!r})"

    def fit(self, df: pd.DataFrame) -> None:
        self.check_columns(df)  # the real rows need not obey it: it is the synthetic rule

    def is_valid(self, df: pd.DataFrame) -> np.ndarray:
        return _close(df[self.column], pd.Series(self.fn(df), index=df.index))

    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        return df.drop(columns=[self.column])

    def reverse(self, df: pd.DataFrame) -> pd.DataFrame:
        value = pd.Series(np.asarray(self.fn(df)), index=df.index)
        return df.assign(**{self.column: value})


class Custom(Constraint):
    """Any rule ``is_valid(rows) -> one bool a row``; failing rows are drawn again."""

    def __init__(self, is_valid: Callable[[pd.DataFrame], Any], columns: Sequence[str] = (),
                 name: str = "custom") -> None:
        if not callable(is_valid):
            raise TypeError(f"Custom: is_valid={is_valid!r} is not callable")
        self.fn, self.columns, self.name = is_valid, tuple(columns), name

    def __repr__(self) -> str:
        return f"Custom({self.name!r})"

    def is_valid(self, df: pd.DataFrame) -> np.ndarray:
        ok = np.asarray(self.fn(df), dtype=bool)
        if ok.shape != (len(df),):
            raise ValueError(f"{self!r}: is_valid returned shape {ok.shape}; expected "
                             f"({len(df)},)")
        return ok
