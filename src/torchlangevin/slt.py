"""Singular learning theory from posterior samples: LLC, susceptibilities, influence functions.

The local learning coefficient at ``w0`` is estimated from SGLD draws of the localised,
tempered posterior ``p(w) ∝ exp(-n_beta L_n(w) - gamma/2 |w - w0|^2)``:

    llc = n_beta * (E_w[L_n(w)] - L_n(w0))

with ``E_w`` the mean of the per-draw minibatch losses over draws (burn-in excluded) and
``L_n(w0)`` the loss on the full data. Each chain gives one estimate; the trace over chains
and draws gives the R-hat and the effective sample size behind the standard error
``se = sd(trace) / sqrt(ESS)``.

By default the trace is paired: ``n_beta (L_B(w_t) - L_B(w0))`` with ``B`` the minibatch of
draw ``t``. Its mean is the same (``E_B L_B(w0) = L_n(w0)``) but the minibatch's own noise
cancels, which cuts the standard error several-fold. ``paired=False`` subtracts the full-data
``L_n(w0)`` from every draw, as devinterp does.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import diagnostics
from .posterior.sampler import sample

__all__ = ["LLC", "llc", "estimate_llc", "diagnose", "susceptibilities", "bif", "calibrate",
           "Fluctuation", "singular_fluctuation", "llc_trajectory"]

RHAT_MAX = 1.1


@dataclass
class LLC:
    """An LLC estimate with the evidence for trusting it.

    ``per_chain`` holds every chain's estimate (NaN for excluded chains); ``mean`` and ``sd``
    (ddof 1) are over the healthy chains; ``se`` is the Monte Carlo standard error of ``mean``.
    """

    mean: float
    sd: float
    se: float
    per_chain: np.ndarray
    trace: np.ndarray  # (chain, draw)
    ess: float
    rhat: float
    init_loss: float
    n_beta: float
    excluded: dict[int, int] = field(default_factory=dict)  # chain -> first non-finite step
    diagnostics: dict[str, Any] = field(default_factory=dict)
    tree: Any = None

    #: devinterp's result keys, for code that indexes ``r["llc_mean"]``
    _DEVINTERP_KEYS = {"llc_mean": "mean", "llc_std": "sd", "llc_per_chain": "per_chain",
                       "loss_trace": "trace"}

    def __getitem__(self, key: str) -> Any:
        """devinterp's names: ``llc_mean``, ``llc_std``, ``llc_per_chain``, ``loss_trace``."""
        if key not in self._DEVINTERP_KEYS:
            raise KeyError(f"{key!r}: an LLC result has {sorted(self._DEVINTERP_KEYS)} "
                           f"(devinterp's names) and the attributes mean, sd, se, ...")
        return getattr(self, self._DEVINTERP_KEYS[key])

    def to_xarray(self) -> Any:
        """An ``xarray.Dataset`` under devinterp's names: ``llc_mean``, ``llc_std``,
        ``llc_per_chain (chain)``, ``loss_trace (chain, draw)``; ``se``, ``ess``, ``rhat``,
        ``init_loss`` and ``n_beta`` as attributes. Needs xarray."""
        import xarray as xr

        return xr.Dataset(
            {"llc_mean": self.mean, "llc_std": self.sd,
             "llc_per_chain": ("chain", np.asarray(self.per_chain)),
             "loss_trace": (("chain", "draw"), np.asarray(self.trace))},
            attrs={"se": self.se, "ess": self.ess, "rhat": self.rhat,
                   "init_loss": self.init_loss, "n_beta": self.n_beta,
                   "excluded_chains": json.dumps({str(k): v for k, v in self.excluded.items()})})

    def __repr__(self) -> str:
        return (f"LLC(mean={self.mean:.4g}, sd={self.sd:.3g}, se={self.se:.3g}, "
                f"ess={self.ess:.0f}, rhat={self.rhat:.3f}, chains={len(self.per_chain)}, "
                f"excluded={self.excluded})")


def _config(tree) -> dict:
    return json.loads(tree.dataset.attrs["config"])


def _loss_trace(ds) -> np.ndarray:
    """Mean loss per (chain, draw) over the batch (and token) dims."""
    loss = ds["sampling_loss"].values
    return loss.reshape(loss.shape[0], loss.shape[1], -1).mean(axis=2).astype(np.float64)


def llc(tree: Any, init_loss: float | None = None, paired: bool = True) -> LLC:
    """LLC from a :func:`posterior.sample` result.

    Args:
        tree: the DataTree (or its root Dataset).
        init_loss: ``L_n(w0)``; by default the full-data loss stored in ``init_loss``. Giving
            it turns pairing off.
        paired: subtract ``w0``'s loss on each draw's own minibatch (see the module notes).
    """
    ds = tree.dataset if hasattr(tree, "dataset") else tree
    n_beta = float(ds["n_beta"].values)
    l0 = float(np.mean(ds["init_loss"].values)) if init_loss is None else float(init_loss)
    if paired and init_loss is None and "sampling_loss_at_init" in ds:
        trace = n_beta * (_loss_trace(ds) - ds["sampling_loss_at_init"].values)
    else:
        trace = n_beta * (_loss_trace(ds) - l0)
    healthy, excluded = _healthy_chains(ds, trace)
    per_chain = np.where(healthy, trace.mean(axis=1), np.nan)
    good = trace[healthy]
    if len(good) == 0:
        raise FloatingPointError(f"llc: every chain hit a non-finite loss (chain: step "
                                 f"{excluded}); lower lr or raise localization")
    mean = float(good.mean())
    sd = float(np.std(per_chain[healthy], ddof=1)) if len(good) > 1 else math.nan
    ess, rhat = _ess_rhat(good)
    se = float(np.std(good) / math.sqrt(max(ess, 1.0)))
    return LLC(mean=mean, sd=sd, se=se, per_chain=per_chain, trace=trace, ess=ess, rhat=rhat,
               init_loss=l0, n_beta=n_beta, excluded=excluded, tree=tree)


def _healthy_chains(ds, trace: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """Which chains stayed finite, and ``{chain: first non-finite step}`` for the others."""
    bad_steps = ds["nonfinite_step"].values
    healthy = (bad_steps < 0) & np.isfinite(trace).all(axis=1)
    excluded = {int(c): int(s)
                for c, s, ok in zip(ds["chain"].values, bad_steps, healthy, strict=True)
                if not ok}
    return healthy, excluded


def _ess_rhat(good: np.ndarray) -> tuple[float, float]:
    """ESS and R-hat of a ``(chain, draw)`` trace; with under 4 draws, every draw counts as
    independent and R-hat is NaN (as it is for one chain)."""
    if good.shape[1] < 4:
        return float(good.size), math.nan
    ess = float(diagnostics.ess(good))
    rhat = float(diagnostics.rhat(good)) if len(good) > 1 else math.nan
    return ess, rhat


def diagnose(tree: Any, estimate: LLC | None = None) -> dict[str, Any]:
    """Health of one run: R-hat and ESS of the LLC trace, MALA acceptance of the SGLD
    proposal on a fixed batch, ``eps * lambda_max(n_beta H)``, distance travelled from ``w0``,
    a drift test between the halves of the trace, and flags naming what went wrong."""
    ds = tree.dataset if hasattr(tree, "dataset") else tree
    est = estimate or llc(tree)
    ok = ds["nonfinite_step"].values < 0
    trace = est.trace[ok] if ok.any() else est.trace
    half = trace.shape[1] // 2
    first, second = trace[:, :half].mean(), trace[:, half:].mean()
    drift_z = abs(second - first) / max(est.se * 2.0, 1e-12)
    mala = ds["metrics_mala_accept"].values[ok] if ok.any() else np.array([np.nan])
    distance = ds["metrics_distance"].values[ok][:, -1] if ok.any() else np.array([np.nan])
    out = {
        "llc": est.mean, "llc_sd": est.sd, "llc_se": est.se, "rhat": est.rhat, "ess": est.ess,
        "mala_accept": float(np.nanmean(mala)) if np.isfinite(mala).any() else math.nan,
        "eps_nbeta_lambda_max": float(ds.attrs.get("eps_nbeta_lambda_max", math.nan)),
        "distance": float(np.mean(distance)),
        "drift_z": float(drift_z),
        "nonfinite_chains": len(est.excluded),
    }
    out["flags"] = ",".join(_flags(est, drift_z, out["mala_accept"]))
    return out


def _flags(est: LLC, drift_z: float, mala_accept: float) -> list[str]:
    """What went wrong in a run (see :func:`calibrate`); NaN R-hat or acceptance pass."""
    flags = []
    if est.excluded:
        flags.append("diverged")
    if drift_z > 3.0:
        flags.append("not settled")
    if est.rhat == est.rhat and est.rhat > RHAT_MAX:
        flags.append("chains disagree")
    if est.mean < 0:
        flags.append("negative")
    if mala_accept == mala_accept and mala_accept < 0.5:
        flags.append("step too large")
    return flags


def estimate_llc(model: Any, data: Any, loss_fn: Any = None, **kwargs: Any) -> LLC:
    """Sample with :func:`torchlangevin.posterior.sample` and estimate the LLC in one call.

    Keyword arguments go to ``posterior.sample`` (``lr`` is required). The result carries the
    run's ``diagnostics`` (see :func:`diagnose`) and its ``tree``.
    """
    tree = sample(model, data, loss_fn, **kwargs)
    est = llc(tree)
    est.diagnostics = diagnose(tree, est)
    return est


def susceptibilities(restricted: Any, full: Any, sampling: str,
                     observables: Sequence[str] | None = None) -> dict[str, Any]:
    """Per-sample susceptibilities of a weight restriction, as devinterp defines them.

    With ``phi = L_sampling(w) - L_n(w0)`` (per draw, mean over rows) from the restricted run,

        chi(x) = E[phi L_sampling] - E[phi l_x] - E[phi] (E_full[L_sampling] - E_full[l_x])

    for every row ``x`` of each probe observable, ``l_x`` its loss. Both runs must record
    ``sampling`` and the probes as observables. Returns ``{observable: DataArray (batch,
    [token_pos])}``.
    """
    r = restricted.dataset if hasattr(restricted, "dataset") else restricted
    f = full.dataset if hasattr(full, "dataset") else full
    names = _observable_names(r) if observables is None else list(observables)
    names = [n for n in names if n != sampling]
    for n in [sampling, *names]:
        for ds, which in ((r, "restricted"), (f, "full")):
            if f"loss_{n}" not in ds:
                raise KeyError(f"{which}: no observable {n!r}; it has {_observable_names(ds)}")
    init = float(np.mean(f["init_loss"].values))
    full_sampling = float(np.mean(f[f"loss_{sampling}"].values))
    pt = r[f"loss_{sampling}"].values
    pt_mean = pt.reshape(pt.shape[0], pt.shape[1], -1).mean(axis=2)
    phi = pt_mean - init
    e_phi, e_phi_wr = float(phi.mean()), float((phi * pt_mean).mean())
    out = {}
    for n in names:
        probe = r[f"loss_{n}"]
        extra = (None,) * (probe.ndim - 2)
        e_phi_probe = (phi[(..., *extra)] * probe.values).mean(axis=(0, 1))
        delta = full_sampling - f[f"loss_{n}"].values.mean(axis=(0, 1))
        sus = e_phi_wr - e_phi_probe - e_phi * delta
        out[n] = probe.isel(chain=0, draw=0, drop=True).copy(data=sus)
    return out


def bif(tree: Any, observables: Sequence[str] | None = None, *, per: str = "sample",
        covariance: bool = False, chains: str = "stack") -> Any:
    """Bayesian influence functions: correlations (or covariances) across posterior draws
    between the losses of every pair of observable rows (devinterp's ``compute_bif``).

    Args:
        per: ``"sample"`` (mean over tokens; devinterp's ``"sequence"``) or ``"token"``.
        chains: ``"stack"`` treats every (chain, draw) as one draw; ``"mean"`` averages chains.

    Returns a DataArray ``(row_1, row_2)`` (``per="sample"``) or ``(row_1, row_2, token_pos)``.
    """
    import xarray as xr

    ds = tree.dataset if hasattr(tree, "dataset") else tree
    names = _observable_names(ds) if observables is None else list(observables)
    _check_bif_args(names, per, chains)
    parts = [ds[f"loss_{n}"].rename({f"batch_{n}": "row"}) for n in names]
    losses = xr.concat(parts, dim="row").values.astype(np.float64)  # (chain, draw, row, [tok])
    if per == "sample" and losses.ndim == 4:
        losses = losses.mean(axis=3)
    losses = losses.mean(axis=0) if chains == "mean" else losses.reshape(-1, *losses.shape[2:])
    values = _row_covariance(losses, covariance)
    if values.ndim == 3:
        return xr.DataArray(np.moveaxis(values, 0, -1), dims=("row_1", "row_2", "token_pos"))
    return xr.DataArray(values, dims=("row_1", "row_2"))


def _check_bif_args(names: list[str], per: str, chains: str) -> None:
    if not names:
        raise ValueError("bif: the run recorded no observables; pass observables= to sample")
    if per not in ("sample", "token"):
        raise ValueError(f"per={per!r}: expected 'sample' or 'token'")
    if chains not in ("stack", "mean"):
        raise ValueError(f"chains={chains!r}: expected 'stack' or 'mean'")


def _row_covariance(losses: np.ndarray, covariance: bool) -> np.ndarray:
    """Covariances (or correlations) across draws between rows of ``losses (draws, row,
    [tok])``: ``(row, row)``, or ``(tok, row, row)`` per token."""
    x = torch.as_tensor(np.moveaxis(losses, 0, -1))  # (row, [tok], draws)
    x = x - x.mean(dim=-1, keepdim=True)
    if x.ndim == 3:
        x = x.transpose(0, 1)  # (tok, row, draws)
    cov = x @ x.transpose(-1, -2) / (x.shape[-1] - 1)
    if not covariance:
        sd = cov.diagonal(dim1=-2, dim2=-1).clamp_min(1e-300).sqrt()
        cov = cov / (sd[..., :, None] * sd[..., None, :])
    return cov.numpy()


def _observable_names(ds) -> list[str]:
    return [str(v)[5:] for v in ds.data_vars if str(v).startswith("loss_")]


def calibrate(model: Any, data: Any, loss_fn: Any, lrs: Sequence[float],
              n_betas: Sequence[float | None], localizations: Sequence[float] = (0.0,), *,
              settings: Sequence[Mapping] | None = None, **kwargs: Any) -> Any:
    """Sweep ``lr x n_beta x localization`` and tabulate each run's LLC and health.

    Returns a pandas DataFrame, one row per setting, with the LLC, its sd and se, R-hat, ESS,
    MALA acceptance, ``eps * lambda_max``, distance from ``w0`` and ``flags``: ``diverged``
    (a chain went non-finite), ``not settled`` (the two halves of the trace differ by more than
    3 standard errors), ``chains disagree`` (R-hat > 1.1), ``negative`` (the loss fell below
    ``L_n(w0)``: ``w0`` is not a local minimum) and ``step too large`` (MALA acceptance < 0.5).
    """
    import pandas as pd

    if settings is None:
        settings = [{"lr": lr, "n_beta": nb, "localization": loc}
                    for lr in lrs for nb in n_betas for loc in localizations]
    from . import distributed

    settings = list(settings)
    rank, size = distributed.world() if distributed.init() else (0, 1)
    if size > 1:  # settings are shared out over the ranks; each runs all chains of its own
        kwargs = {**kwargs, "chains": range(kwargs.get("num_chains", 4))}
    rows = [_calibration_row(model, data, loss_fn, index, settings[index], kwargs)
            for index in range(rank, len(settings), size)]
    rows = [r for part in distributed.all_gather(rows) for r in part]
    return pd.DataFrame(sorted(rows, key=lambda r: r["setting"])).drop(columns="setting")


def _calibration_row(model, data, loss_fn, index: int, setting: Mapping,
                     kwargs: dict[str, Any]) -> dict[str, Any]:
    """Sample with one setting; its LLC and health as a row of :func:`calibrate`'s table."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tree = sample(model, data, loss_fn, **{**kwargs, **setting})
    n_beta = float(tree.dataset["n_beta"].values)
    try:
        est = llc(tree)
    except FloatingPointError:  # every chain diverged: a row that says so, not a crash
        n = tree.dataset.sizes["chain"]
        return {"setting": index, **setting, "n_beta": n_beta, "llc": math.nan,
                "nonfinite_chains": n, "flags": "diverged"}
    return {"setting": index, **setting, "n_beta": n_beta, **diagnose(tree, est)}


# ---- singular fluctuation -----------------------------------------------------------------

@dataclass
class Fluctuation:
    """Watanabe's functional variance and singular fluctuation of one run.

    ``functional_variance`` is ``V_n = sum_i Var_w[log p(x_i | w)]`` over the ``n`` rows,
    ``singular_fluctuation`` is ``nu = beta V_n / 2`` with ``beta = n_beta / (n T)`` the
    inverse temperature per row (``T`` the tokens a row's loss is averaged over), and
    ``waic_penalty = V_n / n``, the term WAIC adds to the training loss. ``se`` is that of
    ``V_n`` from the spread of the chains' contributions.
    """

    functional_variance: float
    se: float
    singular_fluctuation: float
    waic_penalty: float
    per_chain: np.ndarray
    beta: float
    n_rows: int
    observed_rows: int


def singular_fluctuation(tree: Any, observable: str | None = None,
                         n_rows: int | None = None) -> Fluctuation:
    """The functional variance (WAIC's penalty) from an observable's per-row losses.

    With ``l_i(w) = -log p(x_i | w)`` the loss of row ``i`` (summed over its tokens), and the
    observable holding ``m`` of the ``n`` training rows,

        V_n = (n / m) sum_{i in obs} Var_w[l_i(w)],      nu = beta V_n / 2.

    ``Var_w`` is over every (chain, draw) around the pooled mean (all chains sample one
    posterior; pooling avoids the small-sample bias of within-chain variances); chain ``c``'s
    share ``V_c = (n / m) sum_i mean_d (l_icd - mean l_i)^2`` gives ``se = sd(V_c) / sqrt(C)``.
    For a regular model at temperature 1 (``n_beta = n``, no localization), ``V_n -> d``, the
    number of parameters, and ``nu -> d / 2`` at any temperature (Watanabe 2010).

    Args:
        tree: a :func:`posterior.sample` result with ``observable`` recorded (pass the training
            data, or a subset of its rows, as ``observables={"train": (data, m)}``).
        observable: its name; the only observable by default.
        n_rows: ``n``; the run's number of training rows by default.
    """
    ds = tree.dataset if hasattr(tree, "dataset") else tree
    names = _observable_names(ds)
    if observable is None:
        if len(names) != 1:
            raise ValueError(f"observable: name one of {names} (the run has {len(names)})")
        observable = names[0]
    if observable not in names:
        raise KeyError(f"observable={observable!r}: the run recorded {names}")
    losses = ds[f"loss_{observable}"].values.astype(np.float64)  # (chain, draw, row, [tok])
    tokens = int(np.prod(losses.shape[3:])) if losses.ndim > 3 else 1
    rows = losses.reshape(*losses.shape[:3], -1).sum(axis=3)  # l_i per (chain, draw)
    healthy = ds["nonfinite_step"].values < 0
    rows = rows[healthy & np.isfinite(rows).all(axis=(1, 2))]
    if len(rows) == 0:
        raise FloatingPointError("singular_fluctuation: no chain stayed finite")
    n = int(_config(tree)["n_rows"]) if n_rows is None else int(n_rows)
    m = rows.shape[2]
    centred = rows - rows.mean(axis=(0, 1))
    per_chain = (n / m) * (centred**2).mean(axis=1).sum(axis=1)
    draws = rows.shape[0] * rows.shape[1]
    V = float(per_chain.mean()) * draws / max(draws - 1, 1)
    se = float(per_chain.std(ddof=1) / math.sqrt(len(per_chain))) if len(per_chain) > 1 \
        else math.nan
    beta = float(ds["n_beta"].values) / (n * tokens)
    return Fluctuation(functional_variance=V, se=se, singular_fluctuation=beta * V / 2,
                       waic_penalty=V / n, per_chain=per_chain, beta=beta, n_rows=n,
                       observed_rows=m)


# ---- the LLC along a training run ---------------------------------------------------------

def llc_trajectory(checkpoints: Any, data: Any, loss_fn: Any = None, *, model: Any,
                   steps: Sequence[int] | None = None, store: Any = None,
                   progress: bool = False, **kwargs: Any) -> Any:
    """The LLC at every checkpoint of a training run, as a tidy table.

    Args:
        checkpoints: a list of state dicts, of modules, or of paths to ``torch.save``d state
            dicts, or a folder of such files (``*.pt`` / ``*.pth``, ordered by the step number
            in their names).
        data, loss_fn: as in :func:`estimate_llc`; the same hyperparameters (``kwargs``: one
            calibration, e.g. a row of :func:`calibrate`) serve every checkpoint.
        model: a module of the checkpoints' architecture; each state dict is loaded into a
            copy of it (the module itself is not changed).
        steps: each checkpoint's training step (default: the number in its file name, else its
            index).
        store: a folder. Each checkpoint samples into ``checkpoint_<i>.zarr`` there (an
            interrupted checkpoint resumes from its last write) and its row is kept in
            ``checkpoint_<i>.json``; a rerun skips every checkpoint whose row is there for the
            same weights and settings.

    Returns:
        a pandas DataFrame, one row per checkpoint: ``checkpoint``, ``step``, ``llc``,
        ``llc_se``, ``llc_sd``, ``rhat``, ``ess``, ``init_loss`` (the training loss at the
        checkpoint), ``flags`` (see :func:`calibrate`) and ``reused`` (read from ``store``).
    """
    import pandas as pd

    items, names = _checkpoint_items(checkpoints)
    if steps is None:
        steps = [_step_of(name, i) for i, name in enumerate(names)]
    steps = list(steps)
    if len(steps) != len(items):
        raise ValueError(f"steps: {len(steps)} given for {len(items)} checkpoints")
    folder = None if store is None else Path(store)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    rows = [_trajectory_row(i, steps[i], item, model, data, loss_fn, folder,
                            {**kwargs, "progress": progress})
            for i, item in enumerate(items)]
    return pd.DataFrame(rows)


def _checkpoint_items(checkpoints: Any) -> tuple[list, list[str]]:
    if isinstance(checkpoints, (str, Path)):
        folder = Path(checkpoints)
        if not folder.is_dir():
            raise ValueError(f"checkpoints={str(checkpoints)!r}: not a folder")
        files = sorted((p for p in folder.iterdir() if p.suffix in (".pt", ".pth")),
                       key=lambda p: (_step_of(p.name, 0), p.name))
        if not files:
            raise ValueError(f"checkpoints={str(checkpoints)!r}: no *.pt or *.pth files")
        return files, [p.name for p in files]
    items = list(checkpoints)
    if not items:
        raise ValueError("checkpoints: empty")
    return items, [p.name if isinstance(p, Path) else str(p) if isinstance(p, str) else ""
                   for p in items]


def _step_of(name: str, default: int) -> int:
    import re

    numbers = re.findall(r"\d+", name)
    return int(numbers[-1]) if numbers else default


def _state_of(item: Any) -> dict:
    if isinstance(item, (str, Path)):
        item = torch.load(item, map_location="cpu", weights_only=True)
    if isinstance(item, torch.nn.Module):
        item = item.state_dict()
    if not isinstance(item, Mapping):
        raise TypeError(f"checkpoints: expected state dicts, modules or paths; got "
                        f"{type(item).__name__}")
    return dict(item)


def _trajectory_row(index: int, step: int, item: Any, model: Any, data: Any, loss_fn: Any,
                    folder: Path | None, kwargs: dict) -> dict:
    """One checkpoint's LLC, read from ``folder`` when a finished row of it is there."""
    import copy

    from .posterior.data import fingerprint

    state = _state_of(item)
    key = fingerprint(*[state[k] for k in sorted(state)], sorted(state),
                      repr(sorted((k, v) for k, v in kwargs.items() if k != "progress")),
                      getattr(loss_fn, "__qualname__", repr(loss_fn)))
    row_path = None if folder is None else folder / f"checkpoint_{index}.json"
    if row_path is not None and row_path.exists():
        saved = json.loads(row_path.read_text())
        if saved.get("key") == key:
            return {**saved["row"], "reused": True}
    net = copy.deepcopy(model)
    net.load_state_dict(state)
    store = None if folder is None else folder / f"checkpoint_{index}.zarr"
    est = estimate_llc(net, data, loss_fn, store=store, **kwargs)
    d = est.diagnostics
    row = {"checkpoint": index, "step": int(step), "llc": est.mean, "llc_se": est.se,
           "llc_sd": est.sd, "rhat": est.rhat, "ess": est.ess, "init_loss": est.init_loss,
           "flags": d["flags"]}
    if row_path is not None:
        row_path.write_text(json.dumps({"key": key, "row": row}, allow_nan=True))
    return {**row, "reused": False}
