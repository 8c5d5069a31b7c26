"""devinterp 2.0's API on torchlangevin: change the import line, keep the code.

    from torchlangevin.compat.devinterp import sample, compute_llc, create_param_masks

    tree = sample(model, dataset, {"train": dataset}, lr=1e-3, n_beta=30, num_chains=4)
    result = compute_llc(tree)          # result["llc_mean"], result["llc_per_chain"], ...

``sample`` takes devinterp's arguments by their names and maps them onto
:func:`torchlangevin.posterior.sample`: the chains run together (vmapped), or where one
gradient call takes only ``k`` of them (its activations fill the budget: a transformer LM on
CPU) in blocks of ``k``, one block after another (``attrs["chains_per_block"]``), ``init_seed`` is
``seed``, ``llc_weight_decay`` is ``weight_decay``, ``sampling_method="sgmcmc_sgld" |
"rmsprop_sgld"`` (with ``sampling_method_kwargs`` / ``rmsprop_eps`` / ``rmsprop_alpha``) is
``method``, ``output_path`` is the Zarr ``store`` (resumable), an observable ``(dataset, k)``
is ``k`` batches of ``batch_size`` rows (devinterp's ``batches_per_draw``), and
``gradient_accumulation_steps`` accumulates the gradient over that many micro-batches.

What stays different, and why:

- ``compute_llc`` excludes burn-in and pairs each draw's loss with ``w0``'s loss on the same
  minibatch (the same mean, a smaller standard error; see :mod:`torchlangevin.slt`);
  devinterp averages every step, burn-in included, against ``init_loss``. ``loss_trace`` is
  therefore ``(chain, draw)``, not ``(chain, step)``; ``llc_se`` is added.
- ``init_loss`` is the loss of ``w0`` on the whole dataset; devinterp uses
  ``num_init_loss_batches`` batches (accepted, not needed).
- The tree is torchlangevin's layout (``sampling_loss (chain, draw, batch, token_pos)``,
  ``metrics_*`` every step); devinterp's ``sampling_loss_micro`` is not written.
- ``shuffle=False`` is refused: every chain draws shuffled minibatches without replacement.
- ``device`` moves a copy of the model there; ``save_metrics`` is accepted (metrics are always
  recorded); observable rows are picked from ``init_seed``, not ``obs_seed``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..posterior import create_param_masks
from ..posterior import sample as _posterior_sample
from ..posterior.masks import ParamMasks

__all__ = ["sample", "llc", "compute_llc", "create_param_masks", "compute_bif", "bif",
           "compute_susceptibilities", "susceptibilities"]

_METHODS = {"sgmcmc_sgld": "sgld", "sgld": "sgld", "rmsprop_sgld": "rmsprop_sgld"}


def sample(
    model: nn.Module,
    dataset: Any,
    observables: Mapping[str, Any],
    *,
    lr: float,
    n_beta: float,
    param_masks: ParamMasks | None = None,
    num_chains: int = 4,
    num_draws: int = 200,
    batch_size: int = 32,
    num_burnin_steps: int = 0,
    num_steps_bw_draws: int = 1,
    num_init_loss_batches: int = 32,
    init_seed: int = 100,
    batches_per_draw: int = 3,
    obs_seed: int = 1337,
    gradient_accumulation_steps: int = 1,
    localization: float = 0.0,
    noise_level: float = 1.0,
    llc_weight_decay: float = 0.0,
    bounding_box_size: float | None = None,
    sampling_method: str = "sgmcmc_sgld",
    sampling_method_kwargs: Mapping[str, Any] | None = None,
    rmsprop_eps: float | None = None,
    rmsprop_alpha: float | None = None,
    shuffle: bool = True,
    match_sampling_input_ids_across_chains: bool = True,
    init_noise: float | None = None,
    device: str | torch.device | None = None,
    save_metrics: bool = False,
    output_path: str | Path | None = None,
    loss_fn: Any = None,
    progress: bool = False,
) -> Any:
    """devinterp's ``sample`` (same arguments) run by :func:`torchlangevin.posterior.sample`.

    ``loss_fn`` is devinterp's ``(model, input_ids) -> (batch, seq - 1)``; without it the
    loss is the next-token cross-entropy per token. Returns an ``xarray.DataTree``.
    """
    del num_init_loss_batches, save_metrics, obs_seed  # see the module notes
    if not shuffle:
        raise ValueError("shuffle=False: not supported; chains draw shuffled minibatches "
                         "without replacement (the default of devinterp too)")
    if not isinstance(observables, Mapping):
        raise TypeError(f"observables: expected a dict {{name: dataset or (dataset, "
                        f"batches_per_draw)}}; got {type(observables).__name__}")
    method, method_kwargs = _method(sampling_method, sampling_method_kwargs, rmsprop_eps,
                                    rmsprop_alpha)
    model = _on_device(model, device)
    obs = {_obs_id(name): _observable(spec, batches_per_draw, batch_size)
           for name, spec in observables.items()}
    if loss_fn is not None:
        model, param_masks, wrapped = _LossModule(model, loss_fn), _prefixed(param_masks), True
    else:
        wrapped = False
    return _posterior_sample(
        model, dataset, _identity_loss if wrapped else None, num_chains=num_chains,
        num_draws=num_draws, num_burnin_steps=num_burnin_steps,
        num_steps_bw_draws=num_steps_bw_draws, batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        same_batches=match_sampling_input_ids_across_chains, lr=lr, n_beta=n_beta,
        localization=localization, noise_level=noise_level, weight_decay=llc_weight_decay,
        bounding_box_size=bounding_box_size, init_noise=init_noise, param_masks=param_masks,
        method=method, method_kwargs=method_kwargs, observables=obs,
        seed=init_seed, store=output_path, progress=progress,
    )


def llc(model: nn.Module, dataset: Any, observables: Mapping[str, Any], *, lr: float,
        n_beta: float, param_masks: ParamMasks | None = None, loss_fn: Any = None,
        **kwargs: Any) -> Any:
    """devinterp's ``llc``: :func:`sample` then :func:`compute_llc`."""
    tree = sample(model, dataset, observables, lr=lr, n_beta=n_beta, param_masks=param_masks,
                  loss_fn=loss_fn, **kwargs)
    return compute_llc(tree)


def compute_llc(samples: Any) -> Any:
    """devinterp's result names for :func:`torchlangevin.slt.llc`: an ``xr.Dataset`` with
    ``llc_mean``, ``llc_std`` (sd over chains), ``llc_per_chain (chain,)``, ``loss_trace
    (chain, draw)`` (mean loss per draw), ``init_loss``, and ``llc_se``, ``rhat``, ``ess``."""
    import numpy as np
    import xarray as xr

    from .. import slt

    est = slt.llc(samples)
    ds = samples.dataset if hasattr(samples, "dataset") else samples
    loss = ds["sampling_loss"]
    trace = loss.mean(dim=[d for d in loss.dims if d not in ("chain", "draw")])
    return xr.Dataset({
        "llc_mean": est.mean, "llc_std": est.sd, "llc_se": est.se,
        "llc_per_chain": (("chain",), np.asarray(est.per_chain)),
        "loss_trace": trace, "init_loss": est.init_loss, "rhat": est.rhat, "ess": est.ess,
    }, coords={"chain": ds["chain"].values})


def compute_bif(samples: Any, *, correlation_method: str = "token",
                reduce_chain_dimension_method: str = "stack",
                loss_keys: str | Sequence[str] = "all", compute_covariance: bool = False,
                **ignored: Any) -> Any:
    """devinterp's ``compute_bif`` on :func:`torchlangevin.slt.bif`: an ``xr.Dataset`` with
    ``influences``; ``correlation_method="sequence"`` is our ``per="sample"``. Block-processing
    arguments (``batch_size``, ``device``) are accepted; index ranges are not."""
    import xarray as xr

    from .. import slt

    for key in ("batch_index_range_1", "batch_index_range_2"):
        if ignored.get(key, "all") != "all":
            raise ValueError(f"{key}={ignored[key]!r}: only 'all' is supported; select rows "
                             "of the result instead")
    if correlation_method not in ("token", "sequence"):
        raise ValueError(f"correlation_method={correlation_method!r}: expected 'token' or "
                         "'sequence'")
    names = None if loss_keys == "all" else [_obs_id(k) for k in loss_keys]
    per = "token" if correlation_method == "token" else "sample"
    influences = slt.bif(samples, names, per=per, covariance=compute_covariance,
                         chains=reduce_chain_dimension_method)
    if ignored.get("average_tokenwise_bif") and "token_pos" in influences.dims:
        influences = influences.mean("token_pos")
    return xr.Dataset({"influences": influences})


def bif(model: nn.Module, dataset: Any, observables: Mapping[str, Any], *, lr: float,
        n_beta: float, correlation_method: str = "token", **kwargs: Any) -> Any:
    """devinterp's ``bif``: :func:`sample` then :func:`compute_bif`."""
    bif_keys = ("reduce_chain_dimension_method", "loss_keys", "compute_covariance",
                "average_tokenwise_bif")
    bif_kwargs = {k: kwargs.pop(k) for k in bif_keys if k in kwargs}
    tree = sample(model, dataset, observables, lr=lr, n_beta=n_beta, **kwargs)
    return compute_bif(tree, correlation_method=correlation_method, **bif_kwargs)


def compute_susceptibilities(wr_map: Mapping[str, Any], sampling_task: str,
                             observable_names: Sequence[str] | None = None,
                             include_sampling_task: bool = False) -> Any:
    """devinterp's ``compute_susceptibilities`` on :func:`torchlangevin.slt.susceptibilities`:
    ``wr_map`` holds one tree per weight restriction and ``"full"``; returns a DataTree with
    ``/susceptibilities/<restriction>`` datasets of ``chi_<observable>``."""
    import xarray as xr

    from .. import slt

    if include_sampling_task:
        raise ValueError("include_sampling_task=True: not supported; the sampling task's own "
                         "susceptibility is not computed here")
    if "full" not in wr_map:
        raise KeyError(f"wr_map: needs a 'full' run; it has {sorted(wr_map)}")
    task = _obs_id(sampling_task)
    names = None if observable_names is None else [_obs_id(n) for n in observable_names]
    children = {}
    for restriction, tree in wr_map.items():
        if restriction == "full":
            continue
        chi = slt.susceptibilities(tree, wr_map["full"], task, names)
        children[f"susceptibilities/{restriction}"] = xr.Dataset(
            {f"chi_{k}": v for k, v in chi.items()})
    return xr.DataTree.from_dict(children)


def susceptibilities(model: nn.Module, dataset: Any, observables: Mapping[str, Any], *,
                     weight_restrictions: Mapping[str, ParamMasks | None], sampling_task: str,
                     lr: float, n_beta: float, **kwargs: Any) -> Any:
    """devinterp's ``susceptibilities``: one :func:`sample` per restriction, then
    :func:`compute_susceptibilities`."""
    trees = {name: sample(model, dataset, observables, lr=lr, n_beta=n_beta,
                          param_masks=masks, **kwargs)
             for name, masks in weight_restrictions.items()}
    return compute_susceptibilities(trees, sampling_task)


# ---- mapping devinterp's arguments ---------------------------------------------------------

def _method(name: str, kwargs: Mapping[str, Any] | None, eps: float | None,
            alpha: float | None) -> tuple[str, dict]:
    if name not in _METHODS:
        raise ValueError(f"sampling_method={name!r}: expected one of {sorted(_METHODS)}")
    out = dict(kwargs or {})
    for key, value in (("eps", eps), ("alpha", alpha)):
        if value is None:
            continue
        if name != "rmsprop_sgld":
            raise ValueError(f"rmsprop_{key}: only with sampling_method='rmsprop_sgld'; got "
                             f"sampling_method={name!r}")
        if key in out:
            raise ValueError(f"rmsprop_{key} is also in sampling_method_kwargs; give one")
        out[key] = value
    allowed = {"alpha", "eps"} if _METHODS[name] == "rmsprop_sgld" else set()
    unknown = sorted(set(out) - allowed)
    if unknown:
        raise ValueError(f"sampling_method_kwargs: {unknown} are not supported for "
                         f"{name!r} (supported: {sorted(allowed)})")
    return _METHODS[name], out


def _on_device(model: nn.Module, device) -> nn.Module:
    if device is None:
        return model
    here = next(model.parameters()).device
    return model if torch.device(device) == here else copy.deepcopy(model).to(device)


def _obs_id(name: str) -> str:
    """devinterp's ``to_obs_id``: a valid identifier made from a task name."""
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in str(name))
    return ("_" + out if out[:1].isdigit() else out) or "_"


def _observable(spec: Any, batches_per_draw: int, batch_size: int) -> tuple[Any, int]:
    """devinterp's ``dataset`` or ``(dataset, batches_per_draw)`` -> ours, in rows."""
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], int):
        spec, batches_per_draw = spec
    return spec, batches_per_draw * batch_size


class _LossModule(nn.Module):
    """A devinterp ``loss_fn(model, input_ids)`` as a module, so that our functional call
    swaps the weights of the model it calls."""

    def __init__(self, model: nn.Module, loss_fn: Any) -> None:
        super().__init__()
        self.inner, self.loss_fn = model, loss_fn

    def forward(self, input_ids):
        return self.loss_fn(self.inner, input_ids)


def _identity_loss(out, batch):
    return out


def _prefixed(param_masks: ParamMasks | None) -> ParamMasks | None:
    return None if param_masks is None else {f"inner.{k}": v for k, v in param_masks.items()}
