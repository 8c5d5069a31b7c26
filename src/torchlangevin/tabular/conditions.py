"""Conditional sampling: some coordinates of the code pinned, Langevin dynamics on the rest.

Pinning coordinates ``c`` of ``x = (x_f, x_c)`` to values ``a`` leaves the energy of the free
ones, ``E_a(x_f) = E(x_f, a)``, whose Gibbs density is ``p(x_f | x_c = a)``: chains on it
sample the other columns given the condition. They start from the conditional Gaussian of
``q = N(mu, S)``,

    x_f ~ N(mu_f + S_fc S_cc^-1 (a - mu_c),  S_ff - S_fc S_cc^-1 S_cf).

Which class a conditioned row belongs to (when the condition does not say) is drawn from the
kernel estimate ``P(c | a) ~ sum_{i in c} K(a, a_i)`` over the training rows: an exact match
on discrete columns times ``exp(-|z - z_i|^2 / 2h^2)`` on continuous ones (``h = 0.3``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

BANDWIDTH = 0.3


@dataclass
class Pinned:
    """``E(x)`` with ``x[:, fixed] = values`` (one row of values a chain)."""

    energy: object
    free: Tensor  # indices of the free coordinates
    fixed: Tensor  # indices of the pinned ones
    values: Tensor  # (chains, len(fixed))

    def __post_init__(self) -> None:
        order = torch.cat([self.free, self.fixed])
        self.inverse = torch.argsort(order)

    def full(self, y: Tensor) -> Tensor:
        return torch.cat([y, self.values], 1)[:, self.inverse]

    def __call__(self, y: Tensor) -> Tensor:
        return self.energy(self.full(y))

    def start(self, generator: torch.Generator) -> tuple[Tensor, float]:
        """Draws of ``q``'s conditional Gaussian, and a first step size (half its smallest
        variance)."""
        cov = self.energy.chol @ self.energy.chol.T
        f, c = self.free, self.fixed
        s_cc = cov[c][:, c]
        s_fc = cov[f][:, c]
        gain = torch.linalg.solve(s_cc, s_fc.T).T  # S_fc S_cc^-1
        mean = self.energy.mean[f] + (self.values - self.energy.mean[c]) @ gain.T
        cond = cov[f][:, f] - gain @ s_fc.T
        chol = torch.linalg.cholesky(0.5 * (cond + cond.T) + 1e-6 * torch.eye(len(f)))
        eps = torch.randn(len(self.values), len(f), generator=generator)
        return mean + eps @ chol.T, 0.5 * float(chol.diagonal().min()) ** 2


def condition_frame(conditions, n: int | None, columns: list[str]) -> pd.DataFrame:
    """Conditions as one row a sampled row: a dict repeats ``n`` times; a DataFrame is taken
    as it is (a missing cell leaves that column free in that row)."""
    if isinstance(conditions, dict):
        if n is None:
            raise ValueError("n: needed with a dict of conditions")
        frame = pd.DataFrame({k: [v] * n for k, v in conditions.items()})
    elif isinstance(conditions, pd.DataFrame):
        if n is not None and n != len(conditions):
            raise ValueError(f"n={n}: a DataFrame of conditions gives one row each; it has "
                             f"{len(conditions)} rows")
        frame = conditions.reset_index(drop=True)
    else:
        raise TypeError(f"conditions: expected a dict or a DataFrame, got "
                        f"{type(conditions).__name__}")
    if len(frame) == 0 or frame.shape[1] == 0:
        raise ValueError("conditions: empty")
    unknown = [c for c in frame.columns if c not in columns]
    if unknown:
        raise ValueError(f"conditions: columns {unknown} are not columns of the data; "
                         f"columns are {columns[:10]}")
    return frame


def class_probabilities(cond: pd.DataFrame, train: pd.DataFrame, labels: np.ndarray,
                        classes: list, z_of: dict) -> np.ndarray:
    """``P(c | a)`` for each row of ``cond`` (the kernel estimate above; rows matching no
    training row get the class shares). ``z_of[col]`` maps a continuous column's values to
    normal scores; other columns match exactly."""
    onehot = (labels[:, None] == np.array(classes, dtype=object)[None, :]).astype(float)
    prior = onehot.mean(0)
    out = np.empty((len(cond), len(classes)))
    for start in range(0, len(cond), 512):
        part = cond.iloc[start:start + 512]
        w = np.ones((len(part), len(train)))
        for col in part.columns:
            if col in z_of:
                d = z_of[col](part[col])[:, None] - z_of[col](train[col])[None, :]
                w *= np.where(np.isnan(d), 0.0, np.exp(-0.5 * (np.nan_to_num(d) / BANDWIDTH) ** 2))
            else:
                w *= part[col].to_numpy(object)[:, None] == train[col].to_numpy(object)[None]
        mass = w @ onehot
        total = mass.sum(1, keepdims=True)
        out[start:start + 512] = np.where(total > 0, mass / np.maximum(total, 1e-300), prior)
    return out
