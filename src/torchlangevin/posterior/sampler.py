"""``posterior.sample``: SG-MCMC over network weights on the driver, all chains together.

The weights of ``num_chains`` chains are one ``(chain, param)`` matrix, sampled by the
:class:`~torchlangevin.kernels.sgmcmc.SGMCMC` kernel through :func:`torchlangevin.sample`.
Each step's minibatch is an input the driver draws from :class:`Minibatches` (per-chain
shuffles), and the noise comes from one generator per chain, seeded from ``seed`` and the
chain's index, so a chain's draws do not depend on how many chains run beside it. This module
is data loading plus an observer (losses, metrics, Zarr writes) around that run.

At draw ``d`` (step ``num_burnin_steps + d * num_steps_bw_draws``) the observer records the
per-sample minibatch losses of that step, evaluated before the update (``sampling_loss``), and
the losses on each observable's fixed rows (``loss_{name}``). Every step records
``metrics_loss``, ``metrics_grad_norm`` and ``metrics_distance = |w - w0|``. A MALA acceptance
estimate is taken at a few draws on that draw's minibatch (``metrics_mala_accept``): the
Metropolis probability the SGLD proposal would have on that batch's tempered posterior, a check
that the step size is small enough for the discretisation not to dominate. The loss and
gradient at the current weights are the step's own, so a check costs one more gradient (at the
proposal).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from .. import distributed
from ..driver import sample as run_chains
from ..integrators import langevin_log_ratio, langevin_move
from ..kernels.sgmcmc import SGMCMC, Hyper
from ..util import integer, progress_bar
from .data import Minibatches, as_tensors, fingerprint
from .functional import FlatModel, LossFn, check_per_sample, next_token_loss
from .store import CheckpointAhead, StoreDamaged


def default_n_beta(n: int) -> float:
    """The WBIC inverse temperature times n: ``n_beta = n / log n`` (Watanabe 2013)."""
    if n < 2:
        raise ValueError(f"default n_beta needs at least 2 rows; got {n}")
    return n / math.log(n)


def chain_seeds(seed: int, chain: int, stream: int = 0) -> tuple[int, int]:
    """Two independent 63-bit seeds for one chain of one run (stream 0: minibatches, noise;
    1: observable rows; 2 + d: the MALA check at draw d; 3: initial noise)."""
    integer("seed", seed, 0)
    a, b = np.random.SeedSequence([seed, stream, chain]).generate_state(2, dtype=np.uint64)
    return int(a) >> 1, int(b) >> 1


def sample(
    model: nn.Module,
    data: Any,
    loss_fn: LossFn | None = None,
    *,
    num_chains: int = 4,
    num_draws: int = 200,
    num_burnin_steps: int = 0,
    num_steps_bw_draws: int = 1,
    batch_size: int = 32,
    gradient_accumulation_steps: int = 1,
    same_batches: bool = False,
    lr: float,
    n_beta: float | None = None,
    localization: float = 0.0,
    noise_level: float = 1.0,
    weight_decay: float = 0.0,
    bounding_box_size: float | None = None,
    init_noise: float | None = None,
    param_masks: Mapping[str, Tensor | None] | None = None,
    method: str = "sgld",
    method_kwargs: Mapping[str, float] | None = None,
    observables: Mapping[str, Any] | None = None,
    seed: int = 0,
    store: str | Path | None = None,
    checkpoint_every: int = 25,
    mala_checks: int = 8,
    progress: bool = True,
    chains: range | None = None,
    chains_per_call: int | None = None,
):
    """Sample the tempered, localised posterior of ``model``'s weights.

    Args:
        model: any ``nn.Module``; its current weights are ``w0``, the centre of localization.
        data: ``X``, ``(X, y, ...)``, a ``TensorDataset``, a ``DataLoader``, or a HuggingFace
            ``datasets.Dataset`` (any map-style dataset of dicts) with ``input_ids``; the
            model sees ``batch[0]``.
        loss_fn: ``loss_fn(model(batch[0]), batch) -> per-sample loss`` of shape ``(B,)``, or
            ``(B, T)`` per token. The gradient is that of the mean. ``None`` (token data
            only): the next-token cross-entropy per token ``(B, T - 1)``, as devinterp computes
            it (:func:`~torchlangevin.posterior.functional.next_token_loss`).
        batch_size, gradient_accumulation_steps: each step's minibatch is ``batch_size *
            gradient_accumulation_steps`` rows, its gradient accumulated over
            ``gradient_accumulation_steps`` backward passes of ``batch_size`` rows (devinterp's
            meaning: the same step, less activation memory).
        same_batches: every chain sees the same minibatches in the same order (devinterp's
            ``match_sampling_input_ids_across_chains``); by default each chain shuffles on its
            own.
        lr, n_beta, localization, noise_level, weight_decay, bounding_box_size: the SGLD
            hyperparameters, as in devinterp (see :mod:`torchlangevin.kernels.sgmcmc`).
            ``n_beta`` defaults to ``n / log n`` for ``n`` rows (WBIC); devinterp's default is
            ``batch_size / log(batch_size)``.
        method: ``"sgld"``, ``"rmsprop_sgld"`` (``method_kwargs``: ``alpha``, ``eps``) or
            ``"sghmc"`` (``friction``).
        init_noise: if set, each chain starts at ``w0 + init_noise * N(0, I)``.
        param_masks: devinterp's weight restriction: ``{name: mask or None}`` (e.g. from
            :func:`~torchlangevin.posterior.create_param_masks`); parameters not named stay
            frozen, and only the named ones are stacked per chain.
        observables: ``{name: data}`` or ``{name: (data, n_rows)}``; losses on these rows
            (a fixed random subset of ``n_rows`` if given) are recorded at every draw.
        seed: chain ``c`` uses generators seeded from ``(seed, c)``.
        store: a Zarr directory (format 3, needs ``zarr>=3.1``). Records are written every
            ``checkpoint_every`` draws, then the driver's checkpoint of the run beside them,
            so a run killed at any moment resumes from the last write and gives the same
            result; under ``torchrun`` every rank writes only its own chains' chunks. A
            finished store of the same configuration is returned as it is; a missing or
            corrupted chunk raises an error naming the store and the array (see
            :mod:`torchlangevin.posterior.store`).
        chains: the global indices of the chains to run here (default ``range(num_chains)``);
            used to split chains across processes.
        chains_per_call: chains whose gradient is taken in one (vmapped) model call; by
            default as many as keep the activations saved for the backward pass within 64 MiB
            (measured before the first step: one chain's bytes per row), so memory does not grow
            with ``num_chains``. A chunk of one chain calls the model without vmap. The value
            used for a step's minibatch is ``attrs["chains_per_call"]``. Chains are also run
            in blocks of that many, one block after another (``attrs["chains_per_block"]``):
            the weights, gradients and noise held at once are those of one call's chains, as
            devinterp's one chain at a time, and a chain's draws are the same either way.

    Returns:
        an ``xarray.DataTree`` whose root holds ``init_loss (chain[, token_pos])``,
        ``sampling_loss (chain, draw, batch[, token_pos])``, ``sampling_loss_at_init (chain,
        draw)`` (the mean loss of ``w0`` on the same minibatch), ``loss_{obs}``, ``metrics_*``
        ``(chain, step)``, ``metrics_mala_accept (chain, mala_draw)``, ``nonfinite_step
        (chain,)`` (-1 for healthy chains) and ``n_beta``; the configuration is in ``attrs``.
    """
    counts = {"num_chains": (num_chains, 1), "num_draws": (num_draws, 1),
              "num_burnin_steps": (num_burnin_steps, 0),
              "num_steps_bw_draws": (num_steps_bw_draws, 1), "batch_size": (batch_size, 1),
              "gradient_accumulation_steps": (gradient_accumulation_steps, 1),
              "checkpoint_every": (checkpoint_every, 1), "mala_checks": (mala_checks, 0)}
    for name, (value, minimum) in counts.items():
        integer(name, value, minimum)
    _check_args(model, loss_fn, init_noise, seed)
    shared = chains is None and distributed.init()  # under torchrun: this rank's chains
    chains = _chain_range(chains, num_chains)

    tensors = as_tensors(data)
    loss_fn = _default_loss(loss_fn, tensors[0])
    n_rows = tensors[0].shape[0]
    micro, batch_size = batch_size, batch_size * gradient_accumulation_steps
    n_beta = default_n_beta(n_rows) if n_beta is None else n_beta
    hyper = Hyper(lr=lr, n_beta=float(n_beta), localization=localization,
                  noise_level=noise_level, weight_decay=weight_decay,
                  bounding_box_size=bounding_box_size, method=method,
                  **dict(method_kwargs or {}))
    if batch_size > n_rows:
        raise ValueError(f"batch_size={batch_size}: larger than the data ({n_rows} rows)")
    flat = FlatModel(model, loss_fn, param_masks, chains_per_call)
    tensors = tuple(t.to(flat.w0.device) for t in tensors)
    mask = flat.mask
    obs = _observables(observables, seed, flat.w0.device)
    config = {
        "num_chains": num_chains, "num_draws": num_draws, "num_burnin_steps": num_burnin_steps,
        "num_steps_bw_draws": num_steps_bw_draws, "batch_size": batch_size, "lr": lr,
        "gradient_accumulation_steps": gradient_accumulation_steps, "micro_batch_size": micro,
        "same_batches": same_batches, "n_model_params": flat.n_model_params,
        "n_beta": float(n_beta), "localization": localization, "noise_level": noise_level,
        "weight_decay": weight_decay, "bounding_box_size": bounding_box_size,
        "init_noise": init_noise, "method": method, "method_kwargs": dict(method_kwargs or {}),
        "seed": seed, "mala_checks": mala_checks, "n_rows": n_rows,
        "observables": sorted(obs), "n_params": flat.n_params,
    }
    was_training = model.training
    model.eval()  # dropout and batch statistics are not part of the posterior
    bar = None
    try:
        # what every block of chains shares, computed once; the loss's shape checked first
        cache: dict[str, Any] = {"token_shape": token_shape(flat, tensors)}
        blocks = _chain_blocks(flat, tensors, micro, chains)

        def observer(block: range) -> _Observer:
            return _Observer(flat, tensors, hyper, mask, obs, config, block, checkpoint_every,
                             cache, len(blocks[0]))

        if len(blocks) > 1:  # one bar over the blocks, not one for each
            steps = num_burnin_steps + num_draws * num_steps_bw_draws
            bar = progress_bar(progress, steps * len(blocks),
                               f"{method}, {len(blocks)} blocks of {len(blocks[0])} chains")
            progress = bar if bar is not None else False
        if store is None:
            ds = _joined([_sampled(observer(b), progress) for b in blocks])
            return _gathered(ds, num_chains) if shared else _tree(ds)
        key = fingerprint(flat.w0, mask, tensors, *flat.frozen.values(),
                          [obs[k] for k in sorted(obs)], json.dumps(config, sort_keys=True),
                          getattr(loss_fn, "__qualname__", repr(loss_fn)), type(model))
        return _sample_into(observer, blocks, chains, Path(store), key, shared, progress)
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)


def _chain_blocks(flat: FlatModel, tensors: tuple[Tensor, ...], micro: int, chains: range
                  ) -> list[range]:
    """``chains`` cut into blocks run one after another, each of as many chains as one
    gradient call takes (``chains_per_call``, or by the activation budget, measured here on
    one chain and the data's first ``micro`` rows): where the model's activations let only
    ``k`` chains into a call, holding more chains' weights, gradients and noise at once buys
    no speed and costs memory ``(C / k)`` times over."""
    C = len(chains)
    if flat.chains_per_call is None and C > 1:
        flat.measure(flat.w0[None], tuple(t[:micro][None] for t in tensors))
    k = flat.chunk_size(micro, C)
    return [range(i, min(i + k, chains.stop)) for i in range(chains.start, chains.stop, k)]


def token_shape(flat: FlatModel, tensors: tuple[Tensor, ...]) -> tuple[int, ...]:
    """The per-row loss's shape beyond the row: ``()``, or ``(T,)`` per token; checked on
    two rows of the data."""
    rows = min(2, tensors[0].shape[0])
    with torch.no_grad():
        probe = flat.per_sample(flat.w0, tuple(t[:rows] for t in tensors))
    check_per_sample(probe, rows)
    return tuple(probe.shape[1:])


def _sampled(run: _Observer, progress: Any):
    run.sample(progress)
    return run.dataset()


def _joined(parts: list):
    """The blocks' datasets as one along ``chain``, with the last block's attributes (the
    diagnostics' errors are shared, so the last has them all)."""
    import xarray as xr

    if len(parts) == 1:
        return parts[0]
    ds = xr.concat(parts, dim="chain", data_vars="minimal", coords="minimal",
                   compat="override", combine_attrs="override")
    ds.attrs = dict(parts[-1].attrs)
    return ds


def _tree(ds):
    import xarray as xr

    return xr.DataTree(ds)


def _check_args(model: Any, loss_fn: Any, init_noise: float | None, seed: int) -> None:
    integer("seed", seed, 0)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module; got {type(model).__name__}")
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"loss_fn: expected a callable; got {type(loss_fn).__name__}")
    if init_noise is not None and not init_noise >= 0:
        raise ValueError(f"init_noise must be >= 0; got {init_noise!r}")


def _default_loss(loss_fn: LossFn | None, inputs: Tensor) -> LossFn:
    """The user's loss, or for token ids with none given, the next-token cross-entropy."""
    if loss_fn is not None:
        return loss_fn
    if inputs.dtype.is_floating_point or inputs.dtype == torch.bool or inputs.ndim != 2 \
            or inputs.shape[1] < 2:
        raise ValueError(
            "loss_fn: required unless the data are token ids (integer input_ids of shape "
            f"(rows, sequence length >= 2)); got {inputs.dtype} of shape {tuple(inputs.shape)}"
        )
    return next_token_loss


def _chain_range(chains: range | None, num_chains: int) -> range:
    if chains is None:
        rank, size = distributed.world()
        chains = distributed.split(num_chains, rank, size)
    if not chains or chains.start < 0 or chains.stop > num_chains or chains.step != 1:
        raise ValueError(f"chains={chains!r}: expected a contiguous range inside "
                         f"range({num_chains})")
    return chains


def _gathered(ds, num_chains: int):
    """Every rank's records joined along ``chain`` on every rank: each per-chain array
    travels as a tensor (:func:`~torchlangevin.distributed.all_gather_tensor`); the rest is
    the same on every rank."""
    import xarray as xr

    data = {}
    for name, var in ds.data_vars.items():
        if "chain" in var.dims:
            local = torch.from_numpy(np.array(var.values))
            data[name] = (var.dims, distributed.all_gather_tensor(local).numpy())
        else:
            data[name] = var
    coords = {**ds.coords, "chain": np.arange(num_chains)}
    return xr.DataTree(xr.Dataset(data, coords=coords, attrs=ds.attrs))


def _sample_into(observer, blocks: list[range], chains: range, path: Path, key: str,
                 shared: bool, progress: Any):
    """Sample with a Zarr store: lay it out, return what it holds if this process's chains
    are all finished, else resume or run each block of chains and write."""
    from .store import ZarrStore

    run = observer(blocks[0])
    whole = ZarrStore(path, key, run.config, chains)
    if shared:  # rank 0 lays the store out, every rank then fills its own chains
        if distributed.world()[0] == 0:
            whole.create(run)
        distributed.barrier()
    done = whole.open(run, load=False)
    if done is None:
        for block in blocks:
            run = run if block == run.chains else observer(block)
            zs = ZarrStore(path, key, run.config, block)
            if zs.open(run) is None:
                run.batches.resume_limit = zs.committed
                try:
                    run.sample(progress, store=zs)
                except CheckpointAhead:  # the interrupt saved the checkpoint, not the flush
                    zs.restart()
                    run.sample(progress, store=zs)
                zs.flush(run)
    if shared:
        distributed.barrier()
        return whole.tree(run, all_chains=True)
    return done if done is not None else whole.tree(run)


def _observables(observables, seed: int, device) -> dict[str, tuple[Tensor, ...]]:
    out = {}
    for i, (name, spec) in enumerate((observables or {}).items()):
        if not str(name).isidentifier():
            raise ValueError(f"observables: name {name!r} must be a Python identifier")
        rows = None
        if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], int):
            spec, rows = spec
        tensors = as_tensors(spec, f"observables[{name!r}]")
        n = tensors[0].shape[0]
        if rows is not None and rows < n:
            g = torch.Generator().manual_seed(chain_seeds(seed, i, stream=1)[0])
            pick = torch.randperm(n, generator=g)[:rows].sort().values
            tensors = tuple(t[pick] for t in tensors)
        out[name] = tuple(t.to(device) for t in tensors)
    return out


class Batch(NamedTuple):
    """One step's minibatch: per chain ``idx (C, B)`` rows of the data; ``tensors`` the rows
    themselves ``(C, B', ...)``, the first ``rows`` of them for the gradient (observable rows
    ride along after them at draw steps); ``observe`` whether it is a draw step."""

    idx: Tensor
    tensors: tuple[Tensor, ...]
    rows: int
    observe: bool


class Batches:
    """The driver's batch source: each chain's shuffled minibatches, the observables' rows
    joined to them at draw steps when they fit beside a minibatch."""

    def __init__(self, tensors, batch_size: int, generators, device, draw_of, joined) -> None:
        self.tensors, self.draw_of, self.joined = tensors, draw_of, joined
        self.minibatches = Minibatches(tensors[0].shape[0], batch_size, generators, device)
        self.generators, self.step = generators, 0
        #: the furthest step a checkpoint may resume from (the store's records end there)
        self.resume_limit: int | None = None

    def draw(self, k: int) -> list[Batch]:
        out = []
        for _ in range(k):
            idx = self.minibatches.next().clone()  # a later reshuffle rewrites the order
            batch = tuple(t[idx] for t in self.tensors)
            observe = self.draw_of(self.step) is not None
            if observe and self.joined is not None:
                c = idx.shape[0]
                batch = tuple(torch.cat([b, o.expand(c, *o.shape)], 1)
                              for b, o in zip(batch, self.joined, strict=True))
            out.append(Batch(idx, batch, idx.shape[1], observe))
            self.step += 1
        return out

    def get_state(self) -> dict:
        return {"step": self.step, "perm": self.minibatches.perm.clone(),
                "pos": self.minibatches.pos, "generators": [g.get_state() for g in
                                                           self.generators]}

    def set_state(self, state: dict) -> None:
        if self.resume_limit is not None and state["step"] > self.resume_limit:
            raise CheckpointAhead(state["step"])
        self.step, self.minibatches.pos = state["step"], state["pos"]
        self.minibatches.perm = state["perm"].clone()
        for g, s in zip(self.generators, state["generators"], strict=True):
            g.set_state(s)


class Potential:
    """``n_beta``-free loss of stacked weights on a step's minibatch, and its gradient.

    ``last`` keeps the step's evaluation ``(weights, per-sample losses, observable losses,
    rows, gradient, batch)`` for the observer: the kernel's ``Info`` holds only what every step
    has the same shape of.
    """

    def __init__(self, flat: FlatModel, obs: dict, micro_batches: int = 1) -> None:
        self.flat, self.obs, self.w0 = flat, obs, flat.w0
        self.micro_batches = micro_batches
        self.last: tuple | None = None

    def loss_and_grad(self, W: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        per, grad = self.flat.loss_and_grad(W, batch.tensors, rows=batch.rows,
                                            micro_batches=self.micro_batches)
        extra = None
        if batch.observe and per.shape[1] > batch.rows:
            extra = per[:, batch.rows:]
        elif batch.observe:  # observables that do not ride along: their own forward pass
            with torch.no_grad():
                extra = {k: self.flat.batched(W, rows, shared=True)
                         for k, rows in self.obs.items()}
        per = per[:, :batch.rows]
        self.last = (W, per, extra, batch.idx, grad, batch)
        return per.flatten(1).mean(1), grad


class _Observer:
    """A run over a contiguous block of chains: the kernel, the batches, and the observer
    that records losses and metrics after every step."""

    def __init__(self, flat: FlatModel, tensors, hyper: Hyper, mask, obs, config,
                 chains, checkpoint_every: int, cache: dict, chains_per_block: int) -> None:
        self.flat, self.tensors, self.hyper, self.mask, self.obs = flat, tensors, hyper, mask, obs
        #: shared by the blocks of one run: the loss's token shape, the initial losses,
        #: lambda_max, the diagnostics' errors and timings
        self.cache = cache
        self.config, self.chains, self.checkpoint_every = config, chains, checkpoint_every
        self.every = checkpoint_every * config["num_steps_bw_draws"]  # steps per checkpoint
        C, P, device = len(chains), flat.n_params, flat.w0.device
        seeds = [chain_seeds(config["seed"], c) for c in chains]
        self.noise_seeds = [b for _, b in seeds]
        if config["same_batches"]:  # every chain shuffles as chain 0 does
            seeds = [(chain_seeds(config["seed"], 0)[0], b) for _, b in seeds]
        self.potential = Potential(flat, obs, config["gradient_accumulation_steps"])
        self.kernel = SGMCMC(self.potential, hyper, mask)
        self.batches = Batches(tensors, config["batch_size"],
                               [torch.Generator().manual_seed(a) for a, _ in seeds], device,
                               self.draw_of, self._join_observables(config["batch_size"]))
        self.W0 = flat.w0.expand(C, P).clone()
        if config["init_noise"]:
            noise = torch.stack([torch.randn(P, generator=torch.Generator().manual_seed(
                chain_seeds(config["seed"], c, stream=3)[0])) for c in chains]).to(self.W0)
            self.W0.add_(noise if mask is None else noise * mask, alpha=config["init_noise"])
        self.num_steps = config["num_burnin_steps"] + config["num_draws"] * \
            config["num_steps_bw_draws"]
        self.step = 0  # steps recorded so far
        self.nonfinite = torch.full((C,), -1, dtype=torch.long, device=device)
        self._allocate(C, device)
        self.diagnostic_errors: dict[str, str] = self.cache.setdefault("diagnostic_errors", {})
        self.chains_per_block = chains_per_block
        self.store = None
        self.bar = None

    def _allocate(self, C: int, device) -> None:
        config, tensors = self.config, self.tensors
        D, S, B = config["num_draws"], self.num_steps, config["batch_size"]
        fixed_rows = torch.randperm(
            tensors[0].shape[0], generator=torch.Generator().manual_seed(config["seed"])
        )[:B].sort().values.to(device)
        self.fixed = tuple(t[fixed_rows] for t in tensors)
        self.token_shape = self.cache["token_shape"]
        nan = dict(fill_value=math.nan, device=device)
        self.sampling_loss = torch.full((C, D, B, *self.token_shape), **nan)
        self.sampling_init = torch.full((C, D), dtype=torch.float64, **nan)
        self.obs_loss = {k: torch.full((C, D, v[0].shape[0], *self.token_shape), **nan)
                         for k, v in self.obs.items()}
        self.metrics = {k: torch.full((C, S), **nan) for k in ("loss", "grad_norm", "distance")}
        n_checks = min(config["mala_checks"], D)
        self.mala_draws = sorted({int(round(x)) for x in np.linspace(D - 1, 0, n_checks)})
        self.mala = torch.full((C, len(self.mala_draws)), **nan)

    def _init_losses(self) -> tuple[Tensor, Tensor]:
        """``L_i(w0)`` for every row: its mean over rows and each row's mean over tokens,
        computed when first needed (a run the store already holds never needs them)."""
        if "init" not in self.cache:
            # (n, [T]), in chunks of one chain's micro-batch: a no-grad pass over C
            # micro-batches at once peaks as high as a gradient over one
            start = time.perf_counter()
            rows = self.flat.full_loss(self.flat.w0, self.tensors,
                                       chunk=self.config["micro_batch_size"])
            self._clock("the initial losses", start)
            self.cache["init"] = rows.mean(0), rows.reshape(rows.shape[0], -1).mean(1)
        return self.cache["init"]

    @property
    def init_loss(self) -> Tensor:
        return self._init_losses()[0]

    @property
    def init_row_mean(self) -> Tensor:
        return self._init_losses()[1]

    @property
    def lambda_max(self) -> float:
        """Largest eigenvalue of ``n_beta`` times the Hessian at ``w0`` on the fixed batch
        (Lanczos, a quarter of a micro-batch per double backward)."""
        if "lambda_max" not in self.cache:
            self.cache["lambda_max"] = math.nan
            if self.config["mala_checks"]:
                self.cache["lambda_max"] = self._diagnostic(
                    "the Hessian's Lanczos iteration", lambda: self.flat.top_eigenvalue(
                        self.flat.w0, self.fixed, self.hyper.n_beta,
                        torch.Generator().manual_seed(self.config["seed"]),
                        rows=max(1, self.config["micro_batch_size"] // 4)))
        return self.cache["lambda_max"]

    def _diagnostic(self, what: str, fn):
        """Run a diagnostic; a failure is a warning and NaN, never the loss of the draws."""
        start = time.perf_counter()
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - diagnostics must not lose a run's draws
            reason = f"{type(err).__name__}: {err}".splitlines()[0][:200]
            self.diagnostic_errors[what] = reason
            warnings.warn(f"posterior.sample: {what} failed ({reason}); its diagnostic is NaN "
                          "and the draws are kept", RuntimeWarning, stacklevel=4)
            return math.nan
        finally:
            self._clock(what, start)

    def _clock(self, what: str, start: float) -> None:
        """Add the seconds since ``start`` to ``what``'s (``attrs["seconds"]``)."""
        seconds = self.cache.setdefault("seconds", {})
        seconds[what] = seconds.get(what, 0.0) + time.perf_counter() - start

    def draw_of(self, step: int) -> int | None:
        d, r = divmod(step - self.config["num_burnin_steps"], self.config["num_steps_bw_draws"])
        return d if d >= 0 and r == 0 else None

    # -- the run -----------------------------------------------------------------------------
    def sample(self, progress: Any, store=None) -> None:
        """Run the kernel on the driver from wherever the observer's buffers stand;
        ``progress``: a bool, or a bar the blocks of chains share (updated every step)."""
        self.store = store
        self.bar = None if isinstance(progress, bool) else progress
        progress = progress if self.bar is None else False
        start = time.perf_counter()
        try:
            run_chains(self.kernel, self.W0, self.num_steps, seed=self.noise_seeds,
                       batches=self.batches, callback=self, progress=progress,
                       checkpoint=None if store is None else store.checkpoint_path,
                       checkpoint_every=self.every, keep_draws=False, distribute=False)
        except BaseException as e:  # the driver saved where it stopped: the records too
            if store is not None and not isinstance(e, (CheckpointAhead, StoreDamaged)):
                store.flush(self)
            raise
        finally:
            self._clock("run", start)
        self._warn_nonfinite()

    def __call__(self, step: int, state, info) -> None:
        """The driver's callback after step ``step`` (counted from 1)."""
        i = step - 1
        self.metrics["loss"][:, i] = info.loss
        self.metrics["grad_norm"][:, i] = info.grad_norm
        self.metrics["distance"][:, i] = info.distance
        bad = ~torch.isfinite(info.loss) & (self.nonfinite < 0)
        self.nonfinite = torch.where(bad, torch.full_like(self.nonfinite, i), self.nonfinite)
        d = self.draw_of(i)
        if d is not None:
            _, per, extra, idx, _, _ = self.potential.last
            self.sampling_loss[:, d] = per
            self.sampling_init[:, d] = self.init_row_mean[idx].double().mean(1)
            self._observe(d, extra)
        self.step = step
        if self.bar is not None:
            self.bar.update(1)
        self.potential.last = None  # the step's weights and gradient: not held into the next
        if self.store is not None and step % self.every == 0:
            self.store.flush(self)  # just before the driver's checkpoint at this step

    def _warn_nonfinite(self) -> None:
        bad = (self.nonfinite >= 0).nonzero().flatten().tolist()
        if bad:
            where = ", ".join(f"chain {self.chains[c]} at step {int(self.nonfinite[c])}"
                              for c in bad)
            warnings.warn(f"posterior.sample: non-finite loss in {where}; these chains are "
                          "excluded from estimates (see nonfinite_step)", RuntimeWarning,
                          stacklevel=4)

    def _join_observables(self, batch_size: int):
        """Observable rows stacked like the data, when they fit beside a minibatch."""
        rows = list(self.obs.values())
        if not rows or sum(r[0].shape[0] for r in rows) > 4 * batch_size:
            return None
        like = [(t.shape[1:], t.dtype) for t in self.tensors]
        if any([(t.shape[1:], t.dtype) for t in r] != like for r in rows):
            return None
        return tuple(torch.cat(parts) for parts in zip(*rows, strict=True))

    @torch.no_grad()
    def _observe(self, d: int, extra) -> None:
        start = 0
        for k, rows in self.obs.items():
            if isinstance(extra, dict):
                self.obs_loss[k][:, d] = extra[k]
            else:
                n = rows[0].shape[0]
                self.obs_loss[k][:, d] = extra[:, start:start + n]
                start += n
        if d in self.mala_draws and "the MALA check" not in self.diagnostic_errors:
            self.mala[:, self.mala_draws.index(d)] = self._diagnostic(
                "the MALA check", lambda: self._mala_accept(d))

    def _potential(self, W: Tensor, batch: tuple[Tensor, ...],
                   known: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """U = n_beta L_batch + gamma/2 |w - w0|^2 + lambda/2 |w|^2 and its gradient, per
        chain; ``known``: the per-sample losses and mean-loss gradient at ``W``, if taken."""
        h = self.hyper
        if known is None:
            known = self.flat.loss_and_grad(
                W, batch, micro_batches=self.config["gradient_accumulation_steps"])
        per, grad = known
        u = h.n_beta * per.flatten(1).mean(1)
        grad = grad * h.n_beta
        if h.localization:
            u = u + 0.5 * h.localization * (W - self.flat.w0).pow(2).sum(1)
            grad = grad + h.localization * (W - self.flat.w0)
        if h.weight_decay:
            u = u + 0.5 * h.weight_decay * W.pow(2).sum(1)
            grad = grad + h.weight_decay * W
        if self.mask is not None:
            grad = grad * self.mask
        return u, grad

    def _mala_accept(self, d: int) -> Tensor:
        """min(1, exp(log alpha)) of one SGLD proposal on draw ``d``'s minibatch, per chain:
        the Langevin move with step ``lr / 2`` on ``U``, and its Metropolis ratio. Chains go
        as many at a time as a gradient call takes, so the check's temporaries stay the size
        of those chains' weights."""
        W, per, _, _, grad, batch = self.potential.last
        C = W.shape[0]
        k = self.flat.chunk_size(batch.rows, C)
        return torch.cat([self._mala_chunk(d, slice(i, min(i + k, C)), W, per, grad, batch)
                          for i in range(0, C, k)])

    def _mala_chunk(self, d: int, chains: slice, W: Tensor, per: Tensor, grad: Tensor,
                    batch: Batch) -> Tensor:
        W, per, grad = W[chains], per[chains], grad[chains]
        rows = tuple(t[chains, :batch.rows] for t in batch.tensors)
        xi = torch.stack([
            torch.randn(W.shape[1], generator=torch.Generator().manual_seed(
                chain_seeds(self.config["seed"], c, stream=2 + d)[0]))
            for c in self.chains[chains]
        ]).to(W)
        if self.mask is not None:
            xi = xi * self.mask
        eps = 0.5 * self.hyper.lr
        u0, g0 = self._potential(W, rows, (per, grad))
        prop = langevin_move(W, g0, xi, eps, 1.0)
        del g0
        u1, g1 = self._potential(prop, rows)
        log_alpha = u0 - u1 + langevin_log_ratio(W, prop, g1, xi, eps, 1.0)
        return torch.exp(torch.clamp(log_alpha, max=0.0))

    # ---- output -------------------------------------------------------------------------
    def dataset(self):
        import xarray as xr

        C = len(self.chains)
        tok = ("token_pos",) if self.token_shape else ()
        coords = {"chain": np.arange(self.chains.start, self.chains.stop),
                  "mala_draw": np.asarray(self.mala_draws, dtype=np.int64)}
        data = {
            "init_loss": (("chain", *tok), _np(self.init_loss.expand(C, *self.token_shape))),
            "sampling_loss": (("chain", "draw", "batch", *tok), _np(self.sampling_loss)),
            "sampling_loss_at_init": (("chain", "draw"), _np(self.sampling_init)),
            "nonfinite_step": (("chain",), _np(self.nonfinite)),
            "metrics_mala_accept": (("chain", "mala_draw"), _np(self.mala)),
            "n_beta": ((), self.hyper.n_beta),
        }
        for k, v in self.obs_loss.items():
            data[f"loss_{k}"] = (("chain", "draw", f"batch_{k}", *tok), _np(v))
        for k, v in self.metrics.items():
            data[f"metrics_{k}"] = (("chain", "step"), _np(v))
        lambda_max = self.lambda_max  # first: a failure there is recorded just below
        attrs = {
            "config": json.dumps(self.config, sort_keys=True),
            **self._sampling_attrs(),
            "lambda_max": lambda_max,
            "eps_nbeta_lambda_max": self.hyper.lr * lambda_max,
            "num_burnin_steps": self.config["num_burnin_steps"],
        }
        return xr.Dataset(data, coords=coords, attrs=attrs)

    def tree(self):
        import xarray as xr

        return xr.DataTree(self.dataset())

    def _sampling_attrs(self) -> dict[str, str]:
        flat, micro = self.flat, self.config["micro_batch_size"]
        per_chain = math.nan if flat.bytes_per_row is None else flat.bytes_per_row * micro
        return {"vectorized": flat.vectorized_label,
                "chains_per_call": str(flat.chunk_size(micro, len(self.chains))),
                "chains_per_block": str(self.chains_per_block),
                "activation_mb_per_chain": f"{per_chain / 2**20:.4g}",
                "vmap_fallback_reason": self.flat.fallback_reason,
                "vmap_looped_ops": ",".join(self.flat.looped_ops),
                "diagnostic_errors": json.dumps(self.diagnostic_errors, sort_keys=True),
                # where the time went: "run" (the driver's, all blocks) includes the MALA
                # checks and the initial losses; the Lanczos iteration comes after it
                "seconds": json.dumps({k: round(v, 3) for k, v in
                                       self.cache.get("seconds", {}).items()})}

    def sampling_attrs(self) -> dict[str, str]:
        """What only running the model tells (whether vmap ran, which diagnostics failed):
        a store laid out before the first call takes these at the end; ``{}`` if this
        process never called the model (a finished store opened again keeps its own)."""
        return {} if self.flat.vectorized is None else self._sampling_attrs()


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()
