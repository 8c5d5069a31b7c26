"""``posterior.sample``: SG-MCMC over network weights, all chains advancing together.

The weights of ``num_chains`` chains are one ``(chain, param)`` matrix; every step computes the
minibatch loss and gradient of all chains in one vmapped call (:class:`FlatModel`) and applies
one :func:`sgmcmc_update_`. Each chain has its own generators, seeded from ``seed`` and the
chain's index, so a chain's draws do not depend on how many chains run beside it.

At draw ``d`` (step ``num_burnin_steps + d * num_steps_bw_draws``) the sampler records the
per-sample minibatch losses of that step, evaluated before the update (``sampling_loss``), and
the losses on each observable's fixed rows (``loss_{name}``). Every step records
``metrics_loss``, ``metrics_grad_norm`` and ``metrics_distance = |w - w0|``. A MALA acceptance
estimate is taken at a few draws on a fixed batch (``metrics_mala_accept``): the Metropolis
probability the SGLD proposal would have on that batch's tempered posterior, a check that the
step size is small enough for the discretisation not to dominate.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import distributed
from ..driver import _int, _progress_bar
from .data import Minibatches, as_tensors, fingerprint
from .functional import FlatModel, LossFn, check_per_sample
from .optim import Hyper, sgmcmc_update_

STATE_GROUP = "state"


def default_n_beta(n: int) -> float:
    """The WBIC inverse temperature times n: ``n_beta = n / log n`` (Watanabe 2013)."""
    if n < 2:
        raise ValueError(f"default n_beta needs at least 2 rows; got {n}")
    return n / math.log(n)


def chain_seeds(seed: int, chain: int, stream: int = 0) -> tuple[int, int]:
    """Two independent 63-bit seeds for one chain of one run (stream 0: minibatches, noise;
    1: observable rows; 2: MALA checks)."""
    if seed < 0:
        raise ValueError(f"seed={seed!r}: expected an integer >= 0")
    a, b = np.random.SeedSequence([seed, stream, chain]).generate_state(2, dtype=np.uint64)
    return int(a) >> 1, int(b) >> 1


def sample(
    model: nn.Module,
    data: Any,
    loss_fn: LossFn,
    *,
    num_chains: int = 4,
    num_draws: int = 200,
    num_burnin_steps: int = 0,
    num_steps_bw_draws: int = 1,
    batch_size: int = 32,
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
):
    """Sample the tempered, localised posterior of ``model``'s weights.

    Args:
        model: any ``nn.Module``; its current weights are ``w0``, the centre of localization.
        data: ``X``, ``(X, y, ...)``, a ``TensorDataset`` or a ``DataLoader``; the model sees
            ``batch[0]``.
        loss_fn: ``loss_fn(model(batch[0]), batch) -> per-sample loss`` of shape ``(B,)``, or
            ``(B, T)`` per token. The gradient is that of the mean.
        lr, n_beta, localization, noise_level, weight_decay, bounding_box_size: the SGLD
            hyperparameters, as in devinterp (see :mod:`torchlangevin.posterior.optim`).
            ``n_beta`` defaults to ``n / log n`` for ``n`` rows (WBIC); devinterp's default is
            ``batch_size / log(batch_size)``.
        method: ``"sgld"``, ``"rmsprop_sgld"`` (``method_kwargs``: ``alpha``, ``eps``) or
            ``"sghmc"`` (``friction``).
        init_noise: if set, each chain starts at ``w0 + init_noise * N(0, I)``.
        param_masks: devinterp's weight restriction: ``{name: mask or None}``; parameters not
            named stay frozen.
        observables: ``{name: data}`` or ``{name: (data, n_rows)}``; losses on these rows
            (a fixed random subset of ``n_rows`` if given) are recorded at every draw.
        seed: chain ``c`` uses generators seeded from ``(seed, c)``.
        store: a Zarr directory. Draws are written every ``checkpoint_every`` draws with the
            sampler's state, so an interrupted run resumes from the last write and gives the
            same result; a finished store of the same configuration is returned as it is.
        chains: the global indices of the chains to run here (default ``range(num_chains)``);
            used to split chains across processes.

    Returns:
        an ``xarray.DataTree`` whose root holds ``init_loss (chain[, token_pos])``,
        ``sampling_loss (chain, draw, batch[, token_pos])``, ``sampling_loss_at_init (chain,
        draw)`` (the mean loss of ``w0`` on the same minibatch), ``loss_{obs}``, ``metrics_*``
        ``(chain, step)``, ``metrics_mala_accept (chain, mala_draw)``, ``nonfinite_step
        (chain,)`` (-1 for healthy chains) and ``n_beta``; the configuration is in ``attrs``.
    """
    num_chains = _int("num_chains", num_chains, 1)
    num_draws = _int("num_draws", num_draws, 1)
    num_burnin_steps = _int("num_burnin_steps", num_burnin_steps, 0)
    num_steps_bw_draws = _int("num_steps_bw_draws", num_steps_bw_draws, 1)
    batch_size = _int("batch_size", batch_size, 1)
    checkpoint_every = _int("checkpoint_every", checkpoint_every, 1)
    mala_checks = _int("mala_checks", mala_checks, 0)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module; got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn: expected a callable; got {type(loss_fn).__name__}")
    if init_noise is not None and not init_noise >= 0:
        raise ValueError(f"init_noise={init_noise!r}: expected a number >= 0")
    shared = chains is None and distributed.init()  # under torchrun: this rank's chains
    if chains is None:
        rank, size = distributed.world()
        chains = distributed.split(num_chains, rank, size)
    if not chains or chains.start < 0 or chains.stop > num_chains or chains.step != 1:
        raise ValueError(f"chains={chains!r}: expected a contiguous range inside "
                         f"range({num_chains})")

    tensors = as_tensors(data)
    n_rows = tensors[0].shape[0]
    n_beta = default_n_beta(n_rows) if n_beta is None else n_beta
    hyper = Hyper(lr=lr, n_beta=float(n_beta), localization=localization,
                  noise_level=noise_level, weight_decay=weight_decay,
                  bounding_box_size=bounding_box_size, method=method,
                  **dict(method_kwargs or {}))
    if batch_size > n_rows:
        raise ValueError(f"batch_size={batch_size}: larger than the data ({n_rows} rows)")

    flat = FlatModel(model, loss_fn)
    device, dtype = flat.w0.device, flat.w0.dtype
    tensors = tuple(t.to(device) for t in tensors)
    mask = flat.flatten_masks(param_masks)
    obs = _observables(observables, seed, device)
    num_steps = num_burnin_steps + num_draws * num_steps_bw_draws
    config = {
        "num_chains": num_chains, "num_draws": num_draws, "num_burnin_steps": num_burnin_steps,
        "num_steps_bw_draws": num_steps_bw_draws, "batch_size": batch_size, "lr": lr,
        "n_beta": float(n_beta), "localization": localization, "noise_level": noise_level,
        "weight_decay": weight_decay, "bounding_box_size": bounding_box_size,
        "init_noise": init_noise, "method": method, "method_kwargs": dict(method_kwargs or {}),
        "seed": seed, "mala_checks": mala_checks, "n_rows": n_rows,
        "observables": sorted(obs), "n_params": flat.n_params,
    }

    was_training = model.training
    model.eval()  # dropout and batch statistics are not part of the posterior
    try:
        run = _Run(flat, tensors, hyper, mask, obs, config, chains, init_noise,
                   device, dtype)
        if store is not None:
            from .store import ZarrStore

            key = fingerprint(flat.w0, mask, tensors, [obs[k] for k in sorted(obs)],
                              json.dumps(config, sort_keys=True),
                              getattr(loss_fn, "__qualname__", repr(loss_fn)), type(model))
            zs = ZarrStore(Path(store), key, config, chains)
            if shared:  # rank 0 lays the store out, every rank then fills its own chains
                if distributed.world()[0] == 0:
                    zs.create(run)
                distributed.barrier()
            done = zs.open(run)
            if done is None:
                run.loop(num_steps, progress, on_draw=zs.maybe_flush,
                         flush_every=checkpoint_every)
                zs.flush(run, final=True)
            if shared:
                distributed.barrier()
                return zs.tree(run, all_chains=True)
            return done if done is not None else zs.tree(run)
        run.loop(num_steps, progress)
        if shared:
            import xarray as xr

            parts = distributed.all_gather(run.dataset())
            return xr.DataTree(xr.concat(parts, dim="chain", data_vars="minimal",
                                         coords="minimal", compat="override"))
        return run.tree()
    finally:
        model.train(was_training)


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


class _Run:
    """The state of a sampling run over a contiguous block of chains."""

    def __init__(self, flat: FlatModel, tensors, hyper: Hyper, mask, obs, config, chains,
                 init_noise, device, dtype) -> None:
        self.flat, self.tensors, self.hyper, self.mask, self.obs = flat, tensors, hyper, mask, obs
        self.config, self.chains = config, chains
        C, P = len(chains), flat.n_params
        seeds = [chain_seeds(config["seed"], c) for c in chains]
        self.batch_gens = [torch.Generator().manual_seed(a) for a, _ in seeds]
        self.noise_gens = [torch.Generator(device).manual_seed(b) for _, b in seeds]
        self.batches = Minibatches(tensors[0].shape[0], config["batch_size"], self.batch_gens,
                                   device)
        self.W = flat.w0.expand(C, P).clone()
        self.noise = torch.empty(C, P, device=device, dtype=dtype)
        if init_noise:
            self._fill_noise()
            self.W.add_(self.noise if mask is None else self.noise * mask, alpha=init_noise)
        self.buffer = torch.zeros_like(self.W) if hyper.needs_state else None
        self.step = 0  # next step to run
        self.nonfinite = torch.full((C,), -1, dtype=torch.long, device=device)

        D, S = config["num_draws"], config["num_burnin_steps"] + config["num_draws"] * \
            config["num_steps_bw_draws"]
        fixed_rows = torch.randperm(
            tensors[0].shape[0], generator=torch.Generator().manual_seed(config["seed"])
        )[:config["batch_size"]].sort().values.to(device)
        self.fixed = tuple(t[fixed_rows] for t in tensors)
        probe = flat.per_sample(flat.w0, self.fixed)
        check_per_sample(probe, config["batch_size"])
        self.token_shape = tuple(probe.shape[1:])
        init_rows = flat.full_loss(flat.w0, tensors)  # (n, [T]): L_i(w0) for every row
        self.init_loss = init_rows.mean(0)
        self.init_row_mean = init_rows.reshape(init_rows.shape[0], -1).mean(1)
        self.sampling_loss = torch.full((C, D, config["batch_size"], *self.token_shape),
                                        math.nan, device=device)
        self.sampling_init = torch.full((C, D), math.nan, device=device, dtype=torch.float64)
        self.obs_loss = {
            k: torch.full((C, D, v[0].shape[0], *self.token_shape), math.nan, device=device)
            for k, v in obs.items()
        }
        self.metrics = {k: torch.full((C, S), math.nan, device=device)
                        for k in ("loss", "grad_norm", "distance")}
        n_checks = min(config["mala_checks"], D)
        self.mala_draws = sorted({int(round(x)) for x in np.linspace(D - 1, 0, n_checks)})
        self.mala = torch.full((C, len(self.mala_draws)), math.nan, device=device)
        self._lambda_max: float | None = None
        self.obs_joined = self._join_observables(config["batch_size"])

    @property
    def lambda_max(self) -> float:
        """Largest eigenvalue of ``n_beta`` times the Hessian at ``w0`` on the fixed batch."""
        if self._lambda_max is None:
            self._lambda_max = self.flat.hvp_power(
                self.flat.w0, self.fixed, self.hyper.n_beta,
                torch.Generator().manual_seed(self.config["seed"])
            ) if self.config["mala_checks"] else math.nan
        return self._lambda_max

    def _fill_noise(self) -> None:
        for c, g in enumerate(self.noise_gens):
            torch.randn(self.noise.shape[1], generator=g, out=self.noise[c])

    def draw_of(self, step: int) -> int | None:
        d, r = divmod(step - self.config["num_burnin_steps"], self.config["num_steps_bw_draws"])
        return d if d >= 0 and r == 0 else None

    def loop(self, num_steps: int, progress: bool, on_draw=None, flush_every: int = 1) -> None:
        bar = _progress_bar(progress, num_steps - self.step, "posterior.sample")
        try:
            while self.step < num_steps:
                i = self.step
                idx = self.batches.next()
                d = self.draw_of(i)
                batch = [t[idx] for t in self.tensors]
                joined = d is not None and self.obs_joined is not None
                if joined:  # observables ride along in the step's forward pass
                    C = self.W.shape[0]
                    batch = [torch.cat([b, o.expand(C, *o.shape)], 1)
                             for b, o in zip(batch, self.obs_joined, strict=True)]
                per, grad = self.flat.loss_and_grad(self.W, batch, rows=idx.shape[1])
                if joined:
                    per, extra = per[:, :idx.shape[1]], per[:, idx.shape[1]:]
                loss = per.flatten(1).mean(1)
                self.metrics["loss"][:, i] = loss
                self.metrics["grad_norm"][:, i] = grad.norm(dim=1)
                self.metrics["distance"][:, i] = (self.W - self.flat.w0).norm(dim=1)
                bad = ~torch.isfinite(loss) & (self.nonfinite < 0)
                self.nonfinite = torch.where(bad, torch.full_like(self.nonfinite, i),
                                             self.nonfinite)
                if d is not None:
                    self.sampling_loss[:, d] = per
                    self.sampling_init[:, d] = self.init_row_mean[idx].double().mean(1)
                    self._observe(d, extra if joined else None)
                self._fill_noise()
                sgmcmc_update_(self.W, grad, self.noise, self.flat.w0, self.hyper, self.buffer,
                               self.mask)
                self.step = i + 1
                if bar is not None:
                    bar.update(1)
                if d is not None and on_draw is not None and (d + 1) % flush_every == 0:
                    on_draw(self)
        finally:
            if bar is not None:
                bar.close()
        bad = (self.nonfinite >= 0).nonzero().flatten().tolist()
        if bad:
            where = ", ".join(f"chain {self.chains[c]} at step {int(self.nonfinite[c])}"
                              for c in bad)
            warnings.warn(f"posterior.sample: non-finite loss in {where}; these chains are "
                          "excluded from estimates (see nonfinite_step)", RuntimeWarning,
                          stacklevel=3)

    def _join_observables(self, batch_size: int):
        """Observable rows stacked like the data, when they fit beside a minibatch."""
        rows = [v for v in self.obs.values()]
        if not rows or sum(r[0].shape[0] for r in rows) > 4 * batch_size:
            return None
        like = [(t.shape[1:], t.dtype) for t in self.tensors]
        if any([(t.shape[1:], t.dtype) for t in r] != like for r in rows):
            return None
        return tuple(torch.cat(parts) for parts in zip(*rows, strict=True))

    @torch.no_grad()
    def _observe(self, d: int, joined: Tensor | None = None) -> None:
        start = 0
        for k, rows in self.obs.items():
            if joined is None:
                self.obs_loss[k][:, d] = self.flat.batched(self.W, rows, shared=True)
            else:
                n = rows[0].shape[0]
                self.obs_loss[k][:, d] = joined[:, start:start + n]
                start += n
        if d in self.mala_draws:
            self.mala[:, self.mala_draws.index(d)] = self._mala_accept(d)

    def _potential(self, W: Tensor) -> tuple[Tensor, Tensor]:
        """U = n_beta L_fixed + gamma/2 |w - w0|^2 + lambda/2 |w|^2 and its gradient, per chain."""
        h = self.hyper
        per, grad = self.flat.loss_and_grad(W, self.fixed_batched(W.shape[0]))
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

    def fixed_batched(self, C: int):
        return tuple(t.expand(C, *t.shape) for t in self.fixed)

    def _mala_accept(self, d: int) -> Tensor:
        """min(1, exp(log alpha)) of one SGLD proposal on the fixed batch, per chain."""
        eps = self.hyper.lr
        xi = torch.stack([
            torch.randn(self.W.shape[1], generator=torch.Generator().manual_seed(
                chain_seeds(self.config["seed"], c, stream=2 + d)[0]))
            for c in self.chains
        ]).to(self.W)
        if self.mask is not None:
            xi = xi * self.mask
        u0, g0 = self._potential(self.W)
        prop = self.W - 0.5 * eps * g0 + eps**0.5 * xi
        u1, g1 = self._potential(prop)
        fwd = (prop - self.W + 0.5 * eps * g0).pow(2).sum(1)
        bwd = (self.W - prop + 0.5 * eps * g1).pow(2).sum(1)
        log_alpha = u0 - u1 + (fwd - bwd) / (2 * eps)
        return torch.exp(torch.clamp(log_alpha, max=0.0))

    # ---- output -------------------------------------------------------------------------
    def dataset(self):
        import xarray as xr

        C = len(self.chains)
        tok = ("token_pos",) if self.token_shape else ()
        coords = {"chain": np.arange(self.chains.start, self.chains.stop)}
        data = {
            "init_loss": (("chain", *tok), _np(self.init_loss.expand(C, *self.token_shape))),
            "sampling_loss": (("chain", "draw", "batch", *tok), _np(self.sampling_loss)),
            "sampling_loss_at_init": (("chain", "draw"), _np(self.sampling_init)),
            "nonfinite_step": (("chain",), _np(self.nonfinite)),
            "metrics_mala_accept": (("chain", "mala_draw"), _np(self.mala)),
            "n_beta": ((), self.hyper.n_beta),
        }
        coords["mala_draw"] = np.asarray(self.mala_draws, dtype=np.int64)
        for k, v in self.obs_loss.items():
            data[f"loss_{k}"] = (("chain", "draw", f"batch_{k}", *tok), _np(v))
        for k, v in self.metrics.items():
            data[f"metrics_{k}"] = (("chain", "step"), _np(v))
        attrs = {
            "config": json.dumps(self.config, sort_keys=True),
            "vectorized": str(bool(self.flat.vectorized)),
            "vmap_fallback_reason": self.flat.fallback_reason,
            "lambda_max": self.lambda_max,
            "eps_nbeta_lambda_max": self.hyper.lr * self.lambda_max,
            "num_burnin_steps": self.config["num_burnin_steps"],
        }
        return xr.Dataset(data, coords=coords, attrs=attrs)

    def tree(self):
        import xarray as xr

        return xr.DataTree(self.dataset())


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()
