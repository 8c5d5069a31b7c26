"""Synthetic rows by Langevin sampling of a learned, smooth energy.

The energy of each class (or of the whole table, for regression and X-only data) is learned
TabEBM-style, by discrimination: an MLP ``f`` learns to tell real rows, blurred by Gaussian
noise of scale ``sigma``, from draws of a Gaussian ``q`` fitted to them. The optimal logit is
``log p_sigma(x) - log q(x)``, so

    E(x) = -(f(x) + log q(x)) / T

is the negative log-density of the blurred data at temperature ``T``. The blur is the privacy
dial: the energy has no well narrower than ``sigma`` around any training row, so chains do not
collapse onto rows (TabPFGen's energy, distance to the nearest row at T = 1e-4, copies them).
Chains start from ``q`` and run MALA with a step size tuned to 0.574 acceptance.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from .. import MALA, adapt
from .. import sample as langevin_sample
from ..util import integer, progress_bar
from .encoding import TableEncoder

__all__ = ["TabularGenerator", "generate_classification", "generate_regression",
           "balance_dataset"]


@dataclass
class _ClassEnergy:
    """``E(x) = -(f(x) + log q(x)) / T`` for one class."""

    net: nn.Module
    mean: Tensor
    chol: Tensor  # Cholesky factor of q's covariance
    temperature: float

    def log_q(self, x: Tensor) -> Tensor:
        z = torch.linalg.solve_triangular(self.chol, (x - self.mean).T, upper=False).T
        return -0.5 * z.pow(2).sum(-1) - self.chol.diagonal().log().sum()

    def __call__(self, x: Tensor) -> Tensor:
        return -(self.net(x).squeeze(-1) + self.log_q(x)) / self.temperature

    def sample_q(self, n: int, generator: torch.Generator) -> Tensor:
        eps = torch.randn(n, self.mean.numel(), generator=generator)
        return self.mean + eps @ self.chol.T


def _fit_energy(x: Tensor, sigma: float, temperature: float, epochs: int, hidden: int,
                generator: torch.Generator) -> _ClassEnergy:
    n, d = x.shape
    mean = x.mean(0)
    cov = torch.cov(x.T).reshape(d, d) if n > 1 else torch.eye(d)
    cov = cov + (sigma**2 + 1e-3) * torch.eye(d)  # the blurred data's covariance, kept regular
    chol = torch.linalg.cholesky(cov)
    torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
    net = nn.Sequential(nn.Linear(d, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                        nn.Linear(hidden, 1))
    energy = _ClassEnergy(net, mean, chol, temperature)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
    batch = min(512, max(64, n))
    steps = max(200, epochs * math.ceil(n / batch))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    bce = nn.BCEWithLogitsLoss()
    labels = torch.cat([torch.ones(batch), torch.zeros(batch)])
    for _ in range(steps):
        idx = torch.randint(n, (batch,), generator=generator)
        real = x[idx] + sigma * torch.randn(batch, d, generator=generator)
        fake = energy.sample_q(batch, generator)
        logits = net(torch.cat([real, fake])).squeeze(-1)
        loss = bce(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    for p in net.parameters():
        p.requires_grad_(False)
    return energy


class TabularGenerator:
    """Learn a table's distribution, then sample new rows by Langevin dynamics.

    Args:
        energy: ``"ebm"``: the discriminative energy above (one per class).
        sampler: ``"mala"`` (Metropolis-adjusted, step size tuned in warm-up) or ``"ula"``.
        n_steps: Langevin steps per sample after ``warmup`` tuning steps.
        temperature: ``T`` in ``exp(-E / T)``; above 1 spreads samples, below 1 sharpens.
        sigma: blur of the real rows, in normal-score units; by default half the median
            distance between a row and its nearest neighbour, divided by sqrt(D).
        epochs: passes over each class's rows when fitting its energy.
        seed: seeds fitting and sampling.
        progress: a tqdm bar over classes (on a terminal).
        labeller: ``"tabpfn"`` relabels class-conditional samples with a TabPFN classifier fitted
            on the real rows, as TabPFGen does; it needs the ``tabpfn`` package and its model
            weights (a gated download), which ``fit`` checks before any sampling.
    """

    def __init__(self, energy: str = "ebm", sampler: str = "mala", n_steps: int = 200,
                 temperature: float = 1.0, sigma: float | None = None, warmup: int = 100,
                 epochs: int = 60, hidden: int = 128, seed: int = 0,
                 progress: bool = False, labeller: str | None = None) -> None:
        _check_choices(energy, sampler, labeller)
        for name, value in (("n_steps", n_steps), ("warmup", warmup), ("epochs", epochs),
                            ("hidden", hidden)):
            integer(name, value, 1)
        if not temperature > 0:
            raise ValueError(f"temperature={temperature!r}: expected a positive number")
        if sigma is not None and not sigma > 0:
            raise ValueError(f"sigma={sigma!r}: expected a positive number")
        self.labeller = labeller
        self.sampler, self.n_steps, self.temperature = sampler, n_steps, temperature
        self.sigma, self.warmup, self.epochs, self.hidden = sigma, warmup, epochs, hidden
        self.seed, self.progress = seed, progress
        self.diagnostics_: dict[str, Any] = {}

    # ---- fitting ---------------------------------------------------------------------------
    def fit(self, data: Any, target: Any = None, task: str | None = None) -> TabularGenerator:
        """Fit on ``data`` (a DataFrame or an array). ``target`` names a column of ``data``,
        or is a separate array of labels / values. ``task`` is ``"classification"`` (one energy
        per class, labels kept exactly as given) or ``"regression"`` (the target is modelled
        jointly with the features); by default it is inferred from the target's type."""
        df, y, self.target_name = _frame(data, target)
        self.columns_ = list(df.columns)
        self.input_kind_ = "frame" if isinstance(data, pd.DataFrame) else "array"
        self.task_ = _task(y, task)
        gen = torch.Generator().manual_seed(self.seed)
        if self.task_ == "regression":
            df = df.assign(**{self.target_name: y.to_numpy()})
        self.encoder_ = TableEncoder().fit(df)
        x = self.encoder_.encode(df)
        labels = _class_labels(y) if self.task_ == "classification" else None
        groups = self._group_rows(x, labels)
        self.sigma_ = self.sigma if self.sigma is not None else _default_sigma(x, gen)
        self.energies_ = {c: _fit_energy(rows, self.sigma_, self.temperature, self.epochs,
                                         self.hidden, gen)
                          for c, rows in _progress(groups.items(), self.progress, "fit")}
        self.label_dtype_ = None if y is None else y.dtype
        if self.labeller == "tabpfn":
            if self.task_ != "classification":
                raise ValueError("labeller='tabpfn': only for classification targets")
            self.tabpfn_ = _tabpfn_classifier(x.numpy(), labels.astype(str).to_numpy())
        return self

    def _group_rows(self, x: Tensor, labels: pd.Series | None) -> dict[Any, Tensor]:
        """The encoded rows of each class (one group, ``None``, without class labels); sets
        ``classes_`` and ``class_counts_``."""
        if labels is None:
            self.classes_ = [None]
            groups = {None: x}
        else:
            self.classes_ = list(pd.unique(labels))
            groups = {c: x[(labels == c).to_numpy()] for c in self.classes_}
        self.class_counts_ = {c: len(g) for c, g in groups.items()}
        return groups

    # ---- sampling --------------------------------------------------------------------------
    def sample(self, n: int, balance_classes: bool = False,
               counts: dict | None = None) -> Any:
        """Exactly ``n`` new rows, in the input's types (a DataFrame for a DataFrame).

        For classification, classes come in their training proportions, or equally with
        ``balance_classes=True``, or as ``counts`` (``{label: rows}``). The target is the last
        column (DataFrame input) or returned separately as ``(X, y)`` (array input).
        """
        if not hasattr(self, "energies_"):
            raise RuntimeError("sample: call fit first")
        n = integer("n", n, 1)
        counts = _split_counts(n, self.class_counts_, balance_classes) if counts is None \
            else _check_counts(counts, n, self.classes_)
        gen = torch.Generator().manual_seed(self.seed + 1)
        frames, labels, accept = [], [], {}
        for c, m in _progress(counts.items(), self.progress, "sample"):
            if m == 0:
                continue
            x, accept[c] = self._langevin(self.energies_[c], m, gen)
            frames.append(self.encoder_.decode(x))
            labels.extend(self._labels(x, c))
        self.diagnostics_ = {"acceptance": accept, "sigma": self.sigma_}
        out, y = self._split_target(pd.concat(frames, ignore_index=True), labels)
        return self._shape_output(out, y)

    def _labels(self, x: Tensor, c: Any) -> list:
        """The labels of rows ``x`` sampled for class ``c``: ``c`` itself, or TabPFN's."""
        if self.labeller != "tabpfn":
            return [c] * len(x)
        names = {str(k): k for k in self.classes_}
        return [names[v] for v in self.tabpfn_.predict(x.numpy())]

    def _split_target(self, out: pd.DataFrame,
                      labels: list) -> tuple[pd.DataFrame, pd.Series | None]:
        """The sampled features and the target: class labels in the training dtype, rows
        shuffled (so classes are not in blocks); a regression target popped from ``out``."""
        if self.task_ == "regression":
            y = out.pop(self.target_name)
            return out, y
        if self.task_ != "classification":
            return out, None
        y = pd.Series(labels, name=self.target_name)
        if self.label_dtype_ is not None and self.label_dtype_ != np.dtype(object):
            y = y.astype(self.label_dtype_)
        perm = np.random.default_rng(self.seed).permutation(len(out))
        return out.iloc[perm].reset_index(drop=True), y.iloc[perm].reset_index(drop=True)

    def _langevin(self, energy: _ClassEnergy, m: int, gen: torch.Generator):
        x0 = energy.sample_q(m, gen)
        step = 0.5 * float(energy.chol.diagonal().min()) ** 2
        seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
        if self.sampler == "ula":
            from .. import Langevin

            chains = langevin_sample(Langevin(energy, step * 0.1), x0, self.n_steps,
                                     thin=self.n_steps, seed=seed, progress=False)
            return chains.final, math.nan
        kernel = MALA(energy, step)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            tuned = adapt(kernel, x0, self.warmup, adapt_mass=False, seed=seed)
        chains = langevin_sample(tuned.kernel, tuned.state.x, self.n_steps, thin=self.n_steps,
                                 seed=seed + 1, progress=False)
        bad = chains.nonfinite_step
        if bad is not None and (bad >= 0).any():
            raise FloatingPointError(f"sample: chains {torch.nonzero(bad >= 0).flatten()[:5]} "
                                     "went non-finite; lower the temperature or n_steps")
        return chains.final, float(chains.acceptance_rate.mean())

    def _shape_output(self, X: pd.DataFrame, y):
        if self.input_kind_ == "frame":
            if y is not None:
                X = X.assign(**{self.target_name: y.to_numpy()})
            return X
        arr = X.to_numpy()
        return (arr, y.to_numpy()) if y is not None else arr


# ---- TabPFGen-compatible entry points -----------------------------------------------------

def generate_classification(X: Any, y: Any, n_samples: int, balance_classes: bool = True,
                            **kwargs: Any) -> tuple[Any, Any]:
    """TabPFGen's ``generate_classification``: ``(X_synth, y_synth)`` with exactly
    ``n_samples`` rows, labels as given (any type)."""
    gen = TabularGenerator(**kwargs).fit(X, y, task="classification")
    out = gen.sample(n_samples, balance_classes=balance_classes)
    return _split_xy(out, gen)


def generate_regression(X: Any, y: Any, n_samples: int, **kwargs: Any) -> tuple[Any, Any]:
    """TabPFGen's ``generate_regression``: features and targets generated jointly."""
    gen = TabularGenerator(**kwargs).fit(X, y, task="regression")
    return _split_xy(gen.sample(n_samples), gen)


def balance_dataset(X: Any, y: Any, **kwargs: Any) -> tuple[Any, Any]:
    """Top every class up to the size of the largest with synthetic rows; returns the real
    rows followed by the new ones."""
    gen = TabularGenerator(**kwargs).fit(X, y, task="classification")
    top = max(gen.class_counts_.values())
    need = {c: top - k for c, k in gen.class_counts_.items()}
    if sum(need.values()) == 0:
        return X, y
    Xs, ys = _split_xy(gen.sample(sum(need.values()), counts=need), gen)
    if isinstance(X, pd.DataFrame):
        return (pd.concat([X, Xs], ignore_index=True),
                pd.concat([pd.Series(y).reset_index(drop=True), pd.Series(ys)],
                          ignore_index=True))
    return np.concatenate([np.asarray(X), Xs]), np.concatenate([np.asarray(y), ys])


def _split_xy(out, gen: TabularGenerator):
    if isinstance(out, tuple):
        return out
    if gen.target_name is None or gen.target_name not in out:
        return out, None
    return out.drop(columns=[gen.target_name]), out[gen.target_name]


# ---- helpers ------------------------------------------------------------------------------

def _check_choices(energy: str, sampler: str, labeller: str | None) -> None:
    if labeller not in (None, "tabpfn"):
        raise ValueError(f"labeller={labeller!r}: expected None or 'tabpfn'")
    if energy != "ebm":
        raise ValueError(f"energy={energy!r}: expected 'ebm'")
    if sampler not in ("mala", "ula"):
        raise ValueError(f"sampler={sampler!r}: expected 'mala' or 'ula'")


def _frame(data: Any, target: Any) -> tuple[pd.DataFrame, pd.Series | None, str | None]:
    """The features as a DataFrame, the target values and the target's name."""
    df = _features(data)
    if target is None:
        return df, None, None
    if isinstance(target, str) and isinstance(data, pd.DataFrame):
        if target not in df.columns:
            raise ValueError(f"target={target!r}: not a column; columns are "
                             f"{list(df.columns)[:10]}")
        return df.drop(columns=[target]), df[target], target
    y = pd.Series(np.asarray(target) if not isinstance(target, pd.Series) else target.values)
    if len(y) != len(df):
        raise ValueError(f"target: {len(y)} values for {len(df)} rows")
    name = getattr(target, "name", None) or "target"
    return df, y.reset_index(drop=True), str(name)


def _features(data: Any) -> pd.DataFrame:
    """``data`` as a DataFrame with a fresh index; an array's columns are named x0, x1, ..."""
    if isinstance(data, pd.DataFrame):
        return data.reset_index(drop=True)
    arr = np.asarray(data)
    if arr.ndim != 2:
        raise ValueError(f"data: expected a 2-D array or a DataFrame; got shape {arr.shape}")
    return pd.DataFrame(arr, columns=[f"x{i}" for i in range(arr.shape[1])])


def _task(y: pd.Series | None, task: str | None) -> str | None:
    """The task as given or inferred from the target; None without a target."""
    inferred = None if y is None else (task or _infer_task(y))
    if inferred not in (None, "classification", "regression"):
        raise ValueError(f"task={task!r}: expected 'classification' or 'regression'")
    return inferred


def _class_labels(y: pd.Series) -> pd.Series:
    labels = pd.Series(y).reset_index(drop=True)
    if labels.isna().any():
        raise ValueError("target: has missing labels; drop or fill those rows")
    return labels


def _tabpfn_classifier(x: np.ndarray, y: np.ndarray):
    """A fitted TabPFN classifier, or a clear error when the package or weights are absent."""
    try:
        from tabpfn import TabPFNClassifier
    except ImportError as err:
        raise ImportError("labeller='tabpfn' needs the tabpfn package: pip install tabpfn") \
            from err
    try:
        return TabPFNClassifier(device="cpu").fit(x, y)
    except Exception as err:  # noqa: BLE001 - the weights download is what usually fails
        raise RuntimeError(
            "labeller='tabpfn': TabPFN could not load its model weights (they are a gated "
            f"download; offline they must already be in TabPFN's cache): {err}") from err


def _infer_task(y: pd.Series) -> str:
    if pd.api.types.is_float_dtype(y) and y.nunique() > 20:
        return "regression"
    if pd.api.types.is_integer_dtype(y) and y.nunique() > 20:
        return "regression"
    return "classification"


def _default_sigma(x: Tensor, gen: torch.Generator) -> float:
    """Half the median nearest-neighbour distance over sqrt(D), on at most 2,000 rows."""
    idx = torch.randperm(len(x), generator=gen)[:2000]
    sub = x[idx]
    d = torch.cdist(sub, sub)
    d.fill_diagonal_(math.inf)
    nn_dist = d.min(1).values
    return max(0.5 * float(nn_dist.median()) / math.sqrt(x.shape[1]), 0.02)


def _check_counts(counts: Any, n: int, classes: list) -> dict:
    """``counts`` checked: a dict of known classes to rows (integers >= 0) adding up to ``n``."""
    if not isinstance(counts, dict):
        raise TypeError(f"counts must be a dict {{class: rows}}; got {type(counts).__name__}")
    unknown = [c for c in counts if c not in classes]
    if unknown:
        raise ValueError(f"counts: unknown class {unknown[0]!r}; classes are {classes}")
    checked = {c: integer(f"counts[{c!r}]", m, 0) for c, m in counts.items()}
    if sum(checked.values()) != n:
        raise ValueError(f"counts must add up to n={n}; got {counts} (sum "
                         f"{sum(checked.values())})")
    return checked


def _split_counts(n: int, class_counts: dict, balance: bool) -> dict:
    keys = list(class_counts)
    weights = np.ones(len(keys)) if balance else np.array([class_counts[k] for k in keys], float)
    share = weights / weights.sum() * n
    base = np.floor(share).astype(int)
    for i in np.argsort(-(share - base))[: n - base.sum()]:
        base[i] += 1
    return dict(zip(keys, base.tolist(), strict=True))


def _progress(items: Iterable, enabled: bool, desc: str) -> Iterator:
    """``items``, with a progress bar over them (one unit a class) on a terminal."""
    items = list(items)
    bar = progress_bar(enabled, len(items), desc, unit="class", min_total=1)
    try:
        for item in items:
            yield item
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
