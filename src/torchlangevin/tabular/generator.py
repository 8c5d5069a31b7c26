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

Around the energy: column types are detected and editable (``metadata_``, ``fit(metadata=)``);
few-valued integers and ordered categoricals get a dequantized code that decodes to real
values only; each unconditional batch is decoded at its class's real shares (``calibrate``);
``sample(conditions=...)`` pins columns in the chains (``tabular.conditions``); declared
``constraints`` hold on every row (``tabular.constraints``); the output has the input's
column order and dtypes, the target's included.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from .. import MALA, adapt
from .. import sample as langevin_sample
from ..util import integer, progress_bar
from .conditions import Pinned, class_probabilities, condition_frame
from .constraints import Constraint
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


_MAX_FIT_STEPS = 3000  # a class of more than 25,600 rows gets fewer than `epochs` passes
_REFITS = 10  # decoder refits on the valid draws, until the valid set stops changing
_TUNE_CHAINS = 4096  # the step size is tuned on this many chains; the rest use it as tuned


def _fit_steps(n: int, epochs: int) -> int:
    """Adam steps for ``epochs`` passes over ``n`` rows in batches of 64-512, at least 200
    and at most 3,000 (full diamonds' 53,940 rows: 28 passes; the energy of ~30 inputs has
    long converged, and fitting time stays linear in the passes, not the rows)."""
    return max(200, min(_MAX_FIT_STEPS, epochs * math.ceil(n / min(512, max(64, n)))))


def _fit_energy(x: Tensor, sigma: float, temperature: float, steps: int, hidden: int,
                generator: torch.Generator, bar=None) -> _ClassEnergy:
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
        if bar is not None:
            bar.update()
    for p in net.parameters():
        p.requires_grad_(False)
    return energy


class TabularGenerator:
    """Learn a table's distribution, then sample new rows by Langevin dynamics.

    Args:
        energy: ``"ebm"``: the discriminative energy above (one per class).
        sampler: ``"mala"`` (Metropolis-adjusted, step size tuned in warm-up) or ``"ula"``.
        n_steps: Langevin steps per sample after ``warmup`` tuning steps (the tuning runs on
            at most 4,096 of a batch's chains; the others start from ``q`` with the tuned
            step size and run ``n_steps``).
        temperature: ``T`` in ``exp(-E / T)``; above 1 spreads samples, below 1 sharpens.
        sigma: blur of the real rows, in normal-score units; by default half the median
            distance between a row and its nearest neighbour, divided by sqrt(D).
        epochs: passes over each class's rows when fitting its energy.
        seed: seeds fitting and sampling.
        progress: tqdm bars over fitting steps and sampling steps (on a terminal).
        labeller: ``"tabpfn"`` relabels class-conditional samples with a TabPFN classifier fitted
            on the real rows, as TabPFGen does; it needs the ``tabpfn`` package and its model
            weights (a gated download), which ``fit`` checks before any sampling.
        calibrate: decode every ordinal, integer (up to 50 levels), categorical and
            missing-indicator column at its real shares within the class, and every other
            numeric column at the class's real marginal (interpolated quantiles), spread by
            ``sqrt(temperature)`` (``diagnostics_["spread"]``: the uncalibrated draws' sd
            over the real one, a column a class): the decoder's
            thresholds and biases (see ``encoding``) are fitted to each unconditional batch
            (each level gets its quota of the batch, ranks kept: stratified marginals), and for
            conditional sampling once per class to ``calibration_rows`` unconditional chains
            (so the condition shifts the shares as the model says); see
            ``tabular.calibration``. ``False`` keeps the uncalibrated decoder
            ``t = Phi^-1(F)``, ``b = 0``, ``z' = z``.
        calibration_rows: chains a class for the conditional decoder (default: 2x the class's
            rows, 500-2,000).
        missing_target: rows whose classification target is missing: ``"model"`` (a class of
            their own, sampled at its real share, returned as missing) or ``"drop"`` (left out
            of fitting, with a warning).
        max_levels: integer-valued columns with at most this many distinct values are ordinal.
    """

    def __init__(self, energy: str = "ebm", sampler: str = "mala", n_steps: int = 200,
                 temperature: float = 1.0, sigma: float | None = None, warmup: int = 100,
                 epochs: int = 60, hidden: int = 128, seed: int = 0,
                 progress: bool = False, labeller: str | None = None, calibrate: bool = True,
                 calibration_rows: int | None = None, missing_target: str = "model",
                 max_levels: int = 20) -> None:
        _check_choices(energy, sampler, labeller, missing_target)
        for name, value in (("n_steps", n_steps), ("warmup", warmup), ("epochs", epochs),
                            ("hidden", hidden), ("max_levels", max_levels)):
            integer(name, value, 1)
        if calibration_rows is not None:
            integer("calibration_rows", calibration_rows, 2)
        if not temperature > 0:
            raise ValueError(f"temperature={temperature!r}: expected a positive number")
        if sigma is not None and not sigma > 0:
            raise ValueError(f"sigma={sigma!r}: expected a positive number")
        self.labeller, self.calibrate, self.calibration_rows = labeller, calibrate, \
            calibration_rows
        self.sampler, self.n_steps, self.temperature = sampler, n_steps, temperature
        self.sigma, self.warmup, self.epochs, self.hidden = sigma, warmup, epochs, hidden
        self.seed, self.progress = seed, progress
        self.missing_target, self.max_levels = missing_target, max_levels
        self.diagnostics_: dict[str, Any] = {}

    # ---- fitting ---------------------------------------------------------------------------
    def fit(self, data: Any, target: Any = None, task: str | None = None, *,
            metadata: dict | None = None,
            constraints: Sequence[Constraint] | None = None) -> TabularGenerator:
        """Fit on ``data`` (a DataFrame or an array). ``target`` names a column of ``data``,
        or is a separate array of labels / values. ``task`` is ``"classification"`` (one energy
        per class, labels kept exactly as given) or ``"regression"`` (the target is modelled
        jointly with the features); by default it is inferred from the target's type.

        ``metadata`` overrides the detected column types (``{column: sdtype}`` or
        ``{column: {"sdtype": ..., "order": [...]}}``, sdtypes as in ``detect_metadata``);
        the types used are in ``metadata_`` afterwards. ``constraints`` are rules every
        sampled row obeys (``tabular.constraints``).
        """
        df, y, self.target_name = _frame(data, target)
        self.order_ = _column_order(data, df, self.target_name)
        self.input_kind_ = "frame" if isinstance(data, pd.DataFrame) else "array"
        self.task_ = _task(y, task)
        df, y = self._handle_missing_target(df, y)
        self.dtypes_ = df.dtypes.to_dict()
        self.label_dtype_ = None if y is None else y.dtype
        gen = torch.Generator().manual_seed(self.seed)
        if self.task_ == "regression":
            df = df.assign(**{self.target_name: y.to_numpy()})
            self.dtypes_[self.target_name] = y.dtype
        model_df = self._fit_constraints(df, constraints)
        self.encoder_ = TableEncoder(_model_metadata(metadata, model_df, self.target_name),
                                     self.max_levels, self.seed).fit(model_df)
        self.metadata_ = self._metadata()
        x = self.encoder_.encode(model_df)
        labels = _class_labels(y) if self.task_ == "classification" else None
        groups = self._group_rows(x, labels)
        self.sigma_ = self.sigma if self.sigma is not None else _default_sigma(x, gen)
        self._fit_energies(groups, gen)
        self.train_ = (model_df, None if labels is None else labels.to_numpy(object))
        self.calibration_: dict[Any, dict] = {}
        if self.labeller == "tabpfn":
            if self.task_ != "classification":
                raise ValueError("labeller='tabpfn': only for classification targets")
            self.tabpfn_ = _tabpfn_classifier(x.numpy(), labels.astype(str).to_numpy())
        return self

    def _handle_missing_target(self, df: pd.DataFrame, y: pd.Series | None):
        """Rows with a missing target: kept (modelled) or dropped with a warning."""
        if y is None or not y.isna().any() or self.missing_target == "model":
            return df, y
        keep = y.notna().to_numpy()
        warnings.warn(f"target {self.target_name!r}: {int((~keep).sum())} rows with a missing "
                      "value dropped (missing_target='drop')", stacklevel=3)
        return df[keep].reset_index(drop=True), y[keep].reset_index(drop=True)

    def _fit_constraints(self, df: pd.DataFrame,
                         constraints: Sequence[Constraint] | None) -> pd.DataFrame:
        """Check each constraint on the real rows and apply its rewrite, in order."""
        self.constraints_ = list(constraints or [])
        for c in self.constraints_:
            if not isinstance(c, Constraint):
                raise TypeError(f"constraints: {c!r} is not a tabular.constraints.Constraint")
            if self.task_ == "classification" and self.target_name in c.columns:
                raise ValueError(f"constraints: {c!r} uses the classification target "
                                 f"{self.target_name!r}; constraints are on features")
            c.fit(df)
            df = c.transform(df)
        return df

    def _metadata(self) -> dict[str, dict[str, Any]]:
        """The column types used, in the input's order; the classification target's too."""
        meta = dict(self.encoder_.metadata)
        if self.task_ == "classification":
            meta[self.target_name] = {"sdtype": "categorical", "role": "target"}
        elif self.task_ == "regression":
            meta[self.target_name] = {**meta[self.target_name], "role": "target"}
        return meta

    def _fit_energies(self, groups: dict[Any, Tensor], gen: torch.Generator) -> None:
        steps = {c: _fit_steps(len(rows), self.epochs) for c, rows in groups.items()}
        bar = progress_bar(self.progress, sum(steps.values()), "fit", min_total=1)
        try:
            self.energies_ = {c: _fit_energy(rows, self.sigma_, self.temperature, steps[c],
                                             self.hidden, gen, bar)
                              for c, rows in groups.items()}
        finally:
            if bar is not None:
                bar.close()

    def _class_rows(self, c: Any) -> pd.DataFrame:
        frame, labels = self.train_
        return frame if c is None else frame[labels == c]

    def _conditional_calibration(self, c: Any, gen: torch.Generator) -> dict:
        """Class ``c``'s decoder calibrated on a batch of its unconditional chains (drawn on
        first use, then kept)."""
        if not self.calibrate:
            return {}
        if c not in self.calibration_:
            rows = self._class_rows(c)
            m = self.calibration_rows or int(min(2000, max(500, 2 * len(rows))))
            x, _ = self._langevin(self.energies_[c], m, gen)
            self.calibration_[c] = self._fit_calibration(x, c, exact=False)
        return self.calibration_[c]

    def _fit_calibration(self, x: Tensor, c: Any, exact: bool) -> dict:
        """The decoder under which draws ``x`` of class ``c`` decode to its real shares and
        marginals. With constraints checked by rejection, the real shares are those of valid
        rows, so the decoder is refitted on the draws that decode valid until that set stops
        changing (at most 10 times): the redrawn rows then do not tilt the shares. A fixed
        few refits is not enough where a rule ties a coded column to the others (flchain's
        follow-up rule and ``sample.yr``; ``benchmarks/tabular_RESULTS.md``)."""
        rows = self._class_rows(c)
        cal = self.encoder_.calibration(x, rows, exact=exact, temperature=self.temperature)
        if not any(not k.rewrites for k in self.constraints_):
            return cal
        last, refits, settled = None, 0, True
        while True:
            ok = ~self._broken(self._reverse(self.encoder_.decode(x, cal)))
            if ok.all() or ok.sum() < 2 or (last is not None and (ok == last).all()):
                break
            if refits == _REFITS:
                settled = False
                warnings.warn(
                    f"TabularGenerator: class {c!r}: the decoder refitted {_REFITS} times on "
                    "the draws that decode valid, and that set still changes; the shares of "
                    "the constrained columns may lean from the real ones "
                    "(diagnostics_['calibration_refits'])", RuntimeWarning, stacklevel=4)
                break
            last, refits = ok, refits + 1
            cal = self.encoder_.calibration(x[torch.as_tensor(ok)], rows,
                                            temperature=self.temperature)
        seen = self.diagnostics_.setdefault("calibration_refits", {}).setdefault(
            c, {"refits": 0, "settled": True})  # over this sample's batches: the most refits
        seen["refits"], seen["settled"] = max(seen["refits"], refits), seen["settled"] and settled
        return cal

    def _reverse(self, out: pd.DataFrame) -> pd.DataFrame:
        """Decoded model columns back to the user's columns (constraints' rewrites undone)."""
        for k in reversed(self.constraints_):
            out = k.reverse(out)
        return out

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
    def sample(self, n: int | None = None, balance_classes: bool = False,
               counts: dict | None = None, conditions: Any = None) -> Any:
        """Exactly ``n`` new rows, in the input's types and column order (a DataFrame for a
        DataFrame; ``(X, y)`` arrays for array input).

        For classification, classes come in their training proportions, or equally with
        ``balance_classes=True``, or as ``counts`` (``{label: rows}``, summing to ``n``).

        ``conditions`` fixes columns: a dict (``{"species": "Adelie"}``: all ``n`` rows) or a
        DataFrame (one output row per row, in its order, ``n`` optional; a missing cell leaves
        that column free). A conditioned target picks the class; other conditioned columns
        are pinned in the chains (``tabular.conditions``) and come back exactly as given.
        """
        if not hasattr(self, "energies_"):
            raise RuntimeError("sample: call fit first")
        if conditions is not None:
            if counts is not None or balance_classes:
                raise ValueError("conditions: not together with counts or balance_classes")
            plan = self._condition_plan(conditions, n)
        else:
            n = integer("n", n, 1)
            plan = self._class_plan(n, balance_classes, counts)
        gen = torch.Generator().manual_seed(self.seed + 1)
        self.diagnostics_ = {"acceptance": {}, "spread": {}, "sigma": self.sigma_}
        out = self._draw_plan(plan, gen)
        out = self._enforce_constraints(out, plan, gen)
        if conditions is None and self.task_ == "classification":
            out = out.iloc[np.random.default_rng(self.seed).permutation(len(out))]
        return self._shape_output(out.reset_index(drop=True))

    def _class_plan(self, n: int, balance: bool, counts: dict | None) -> pd.DataFrame:
        """One row a sampled row: its class (``None`` without classes), no conditions."""
        counts = _split_counts(n, self.class_counts_, balance) if counts is None \
            else _check_counts(counts, n, self.classes_)
        classes = [c for c, m in counts.items() for _ in range(int(m))]
        return pd.DataFrame({_CLASS: pd.Series(classes, dtype=object)})

    def _condition_plan(self, conditions: Any, n: int | None) -> pd.DataFrame:
        """The conditions, one row a sampled row, with each row's class."""
        model_cols = list(self.train_[0].columns)
        columns = model_cols + ([self.target_name] if self.task_ == "classification" else [])
        frame = condition_frame(conditions, n, columns)
        rewritten = {c for k in self.constraints_ for c in k.rewrites} & set(frame.columns)
        if rewritten:
            raise ValueError(f"conditions: columns {sorted(rewritten)} are rewritten by a "
                             "constraint and cannot be conditioned on")
        plan = frame.copy()
        plan[_CLASS] = None if self.task_ != "classification" else self._condition_classes(
            frame, model_cols)
        return plan.drop(columns=[self.target_name]) if self.task_ == "classification" \
            and self.target_name in plan else plan

    def _condition_classes(self, frame: pd.DataFrame, model_cols: list[str]) -> list:
        """Each conditioned row's class: as given, else drawn from ``P(c | conditions)``."""
        given = frame[self.target_name] if self.target_name in frame else \
            pd.Series([None] * len(frame))
        unknown = set(given.dropna()) - set(self.classes_)
        if unknown:
            raise ValueError(f"conditions: {self.target_name}={sorted(map(str, unknown))[:5]}"
                             f" are not classes; classes are {self.classes_}")
        classes = given.astype(object).where(given.notna(), None).tolist()
        rng = np.random.default_rng(self.seed + 2)
        feats = [c for c in frame.columns if c in model_cols]
        for pattern, idx in _patterns(frame[feats], given.isna().to_numpy()):
            probs = self._class_probs(frame.loc[idx, list(pattern)])
            for i, p in zip(idx, probs, strict=True):
                classes[i] = self.classes_[rng.choice(len(self.classes_), p=p)]
        return classes

    def _class_probs(self, cond: pd.DataFrame) -> np.ndarray:
        if cond.shape[1] == 0:
            share = np.array([self.class_counts_[c] for c in self.classes_], float)
            return np.tile(share / share.sum(), (len(cond), 1))
        enc = self.encoder_
        z_of = {c: (lambda v, c=c: enc.normal_scores(c, v)) for c in cond.columns
                if enc.is_continuous(c)}
        return class_probabilities(cond, self.train_[0], self.train_[1], self.classes_, z_of)

    def _draw_plan(self, plan: pd.DataFrame, gen: torch.Generator) -> pd.DataFrame:
        """Rows for every plan row, grouped by class and set of conditioned columns."""
        cond_cols = [c for c in plan.columns if c != _CLASS]
        parts = []
        keys = plan[_CLASS].map(lambda c: self.classes_.index(c) if c in self.classes_ else -1)
        for cls_i in pd.unique(keys):
            rows = np.flatnonzero((keys == cls_i).to_numpy())
            c = self.classes_[cls_i] if cls_i >= 0 else None
            for pattern, idx in _patterns(plan.loc[rows, cond_cols]):
                frame = self._draw(c, plan.loc[idx, list(pattern)], gen)
                frame.index = idx
                parts.append(frame)
        return pd.concat(parts).sort_index()

    def _draw(self, c: Any, cond: pd.DataFrame, gen: torch.Generator) -> pd.DataFrame:
        """``len(cond)`` rows of class ``c`` with ``cond``'s columns pinned to its values."""
        energy = self.energies_[c]
        if cond.shape[1] == 0:
            x, acc = self._langevin(energy, len(cond), gen)
            cal = self._fit_calibration(x, c, exact=True) if self.calibrate else {}
        else:
            cal = self._conditional_calibration(c, gen)
            x, acc = self._langevin_pinned(energy, cond, cal, gen)
        self.diagnostics_["acceptance"][c] = acc
        self.diagnostics_["spread"][c] = {k: v["spread"] for k, v in cal.items()
                                          if "spread" in v}
        out = self.encoder_.decode(x, cal)
        for col in cond.columns:
            out[col] = cond[col].to_numpy()
        out = self._reverse(out)
        if self.task_ == "classification":
            out[self.target_name] = self._labels(x, c)
        return out

    def _langevin_pinned(self, energy: _ClassEnergy, cond: pd.DataFrame, cal: dict,
                         gen: torch.Generator) -> tuple[Tensor, float]:
        rng = np.random.default_rng(int(torch.randint(2**31 - 1, (1,), generator=gen)))
        codes = [self.encoder_.code_of(col, cond[col], cal.get(col), rng) for col in cond]
        fixed = torch.cat([torch.arange(self.encoder_.dim)[self.encoder_.slices[col]]
                           for col in cond])
        free = torch.as_tensor(np.setdiff1d(np.arange(self.encoder_.dim), fixed.numpy()))
        values = torch.as_tensor(np.concatenate(codes, 1), dtype=torch.float32)
        pinned = Pinned(energy, free, fixed, values)
        if len(free) == 0:
            return pinned.full(torch.zeros(len(cond), 0)), math.nan
        y0, step = pinned.start(gen)
        y, acc = self._run_chains(pinned, y0, step, gen)
        return pinned.full(y), acc

    def _enforce_constraints(self, out: pd.DataFrame, plan: pd.DataFrame,
                             gen: torch.Generator) -> pd.DataFrame:
        """Redraw rows that break a constraint (at most 20 rounds); report how many did."""
        redrawn = 0
        for _ in range(20):
            bad = self._broken(out)
            if not bad.any():
                break
            redrawn += int(bad.sum())
            again = self._draw_plan(plan[bad].reset_index(drop=True), gen)
            again.index = out.index[bad]
            out.loc[bad] = again[out.columns]
        else:
            bad = self._broken(out)
            if bad.any():
                raise RuntimeError(f"sample: {int(bad.sum())} rows still break "
                                   f"{self.constraints_} after 20 redraws")
        self.diagnostics_["constraints"] = {"redrawn_rows": redrawn,
                                            "redraw_rate": redrawn / len(out)}
        return out

    def _broken(self, out: pd.DataFrame) -> np.ndarray:
        bad = np.zeros(len(out), bool)
        for k in self.constraints_:
            bad |= ~k.is_valid(out)
        return bad

    def _labels(self, x: Tensor, c: Any) -> list:
        """The labels of rows ``x`` sampled for class ``c``: ``c`` itself, or TabPFN's."""
        if self.labeller != "tabpfn":
            return [c] * len(x)
        names = {str(k): k for k in self.classes_}
        return [names[v] for v in self.tabpfn_.predict(x.numpy())]

    def _langevin(self, energy: _ClassEnergy, m: int, gen: torch.Generator):
        x0 = energy.sample_q(m, gen)
        step = 0.5 * float(energy.chol.diagonal().min()) ** 2
        return self._run_chains(energy, x0, step, gen)

    def _run_chains(self, energy, x0: Tensor, step: float, gen: torch.Generator):
        seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
        if self.sampler == "ula":
            from .. import Langevin

            chains = langevin_sample(Langevin(energy, step * 0.1), x0, self.n_steps,
                                     thin=self.n_steps, seed=seed, progress=self.progress)
            return chains.final, math.nan
        kernel = MALA(energy, step)
        k = min(len(x0), _TUNE_CHAINS)  # more chains would tune the same step size
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            tuned = adapt(kernel, x0[:k], self.warmup, adapt_mass=False, seed=seed)
        start = torch.cat([tuned.state.x, x0[k:]])
        chains = langevin_sample(tuned.kernel, start, self.n_steps, thin=self.n_steps,
                                 seed=seed + 1, progress=self.progress)
        bad = chains.nonfinite_step
        if bad is not None and (bad >= 0).any():
            raise FloatingPointError(f"sample: chains {torch.nonzero(bad >= 0).flatten()[:5]} "
                                     "went non-finite; lower the temperature or n_steps")
        return chains.final, float(chains.acceptance_rate.mean())

    def _shape_output(self, out: pd.DataFrame):
        """The input's column order and dtypes; ``(X, y)`` arrays for array input."""
        if self.task_ == "classification":
            out[self.target_name] = _label_series(out[self.target_name], self.label_dtype_)
        out = _restore_dtypes(out[self.order_], self.dtypes_)
        if self.input_kind_ == "frame":
            return out
        if self.target_name is None:
            return out.to_numpy()
        return out.drop(columns=[self.target_name]).to_numpy(), out[self.target_name].to_numpy()


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

def _check_choices(energy: str, sampler: str, labeller: str | None,
                   missing_target: str) -> None:
    if missing_target not in ("model", "drop"):
        raise ValueError(f"missing_target={missing_target!r}: expected 'model' or 'drop'")
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


class _MissingLabel:
    """The class of rows whose label is missing (``missing_target="model"``)."""

    def __repr__(self) -> str:
        return "<missing>"


_MISSING_LABEL = _MissingLabel()
_CLASS = "__class__"


def _class_labels(y: pd.Series) -> pd.Series:
    """The labels as objects, a missing one as the ``<missing>`` class."""
    labels = pd.Series(y).reset_index(drop=True).astype(object)
    return labels.where(labels.notna(), _MISSING_LABEL)


def _label_series(labels: pd.Series, dtype: Any) -> pd.Series:
    """Sampled labels in the training labels' dtype (``<missing>`` back to missing)."""
    values = labels.map(lambda v: None if v is _MISSING_LABEL else v).astype(object)
    if dtype is None or dtype == np.dtype(object):
        return values
    try:
        return values.astype(dtype)
    except (TypeError, ValueError):
        return values


def _restore_dtypes(out: pd.DataFrame, dtypes: dict) -> pd.DataFrame:
    """Each column in its input dtype where it can hold the values (an integer column with
    sampled gaps stays nullable ``Int64``)."""
    out = out.copy()
    for c, want in dtypes.items():
        if out[c].dtype == want:
            continue
        s = out[c]
        if s.isna().any() and isinstance(want, np.dtype) and want.kind in "iub":
            if want.kind in "iu" and pd.api.types.is_numeric_dtype(s):
                out[c] = s.astype("Int64")
            continue
        try:
            out[c] = s.astype(want)
        except (TypeError, ValueError):
            pass
    return out


def _column_order(data: Any, df: pd.DataFrame, target_name: str | None) -> list:
    """The input's columns in its order: a target column stays where it was; a separate
    target comes last."""
    if isinstance(data, pd.DataFrame) and target_name in data.columns:
        return list(data.columns)
    return list(df.columns) + ([target_name] if target_name is not None else [])


def _model_metadata(metadata: dict | None, model_df: pd.DataFrame,
                    target_name: str | None) -> dict:
    """The user's column types for the columns the model sees (the classification target's
    entry is ignored: each class has its own energy)."""
    out = {}
    for name, spec in (metadata or {}).items():
        if name in model_df.columns:
            out[name] = spec
        elif name != target_name:
            raise ValueError(f"metadata: column {name!r} is not modelled: not a column, or "
                             f"rewritten by a constraint; modelled columns are "
                             f"{list(model_df.columns)[:10]}")
    return out


def _patterns(frame: pd.DataFrame, mask: np.ndarray | None = None):
    """``(columns, row labels)`` for each set of non-missing columns among ``frame``'s rows
    (only rows where ``mask`` is true)."""
    rows = frame if mask is None else frame[mask]
    if rows.shape[1] == 0:
        if len(rows):
            yield (), rows.index.to_numpy()
        return
    present = rows.notna().to_numpy()
    keys = pd.Series([tuple(r) for r in present], index=rows.index)
    for key in pd.unique(keys):
        idx = keys.index[(keys == key).to_numpy()].to_numpy()
        yield tuple(c for c, k in zip(rows.columns, key, strict=True) if k), idx


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
