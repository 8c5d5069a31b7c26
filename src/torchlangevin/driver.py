"""The one driver: runs any kernel over many chains and returns :class:`Chains`.

A run is a sequence of blocks. For each block the driver draws the block's noise from the
run's generator(s) in one call (and the block's minibatches, for kernels that need them),
hands them to the block runner (:func:`~torchlangevin.blocks.run_block`, eager or compiled)
and books the block's trace: counters, the thinned draws, the trajectory. It reads kernels'
capability flags only (``couples_chains``, ``compilable``, ``has_accept_step``).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import distributed
from .blocks import NoiseStream, block_length, flatten, run_block, unflatten
from .chains import Chains
from .kernels.base import register_runner, slice_params
from .schedules import Schedule
from .util import atomic_save, integer, progress_bar

__all__ = ["sample"]

Callback = Callable[[int, Any, Any], None]
Seed = int | Sequence[int] | None


def sample(
    kernel,
    x0: Tensor,
    n_steps: int,
    *,
    burn_in: int = 0,
    thin: int = 1,
    seed: Seed = None,
    progress: bool = True,
    return_trajectory: bool = False,
    callback: Callback | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
    chain_blocks: int | None = None,
    compile: bool | int = False,  # noqa: A002 - the issue's public name
    params: Any = None,
    batches: Any = None,
    keep_draws: bool = True,
    distribute: bool = True,
) -> Chains:
    """Run ``kernel`` from ``x0`` for ``burn_in + n_steps`` steps and collect draws.

    Args:
        kernel: a kernel (``Langevin``, ``MALA``, ``HMC``, ... or anything that follows
            :class:`~torchlangevin.kernels.base.KernelProtocol`).
        x0: initial states ``(C, *event)``, one chain per row.
        n_steps: steps after burn-in; ``n_steps // thin`` draws are kept.
        burn_in: steps run first and discarded (schedules count them).
        thin: keep every ``thin``-th state after burn-in.
        seed: seeds the ``torch.Generator`` all noise comes from; ``None`` picks one
            (recorded in ``Chains.seed``). A sequence of ``C`` seeds gives every chain a
            generator of its own, so a chain's draws do not depend on the chains beside it.
            Same seed, same device: same samples, eager or compiled.
        progress: a tqdm bar on long runs when stderr is a terminal.
        return_trajectory: also keep every state, burn-in included, in ``Chains.trajectory``.
        callback: ``callback(step, state, info)`` after every step (``step`` counts from 1).
        checkpoint: file to save the run to every ``checkpoint_every`` steps and on
            interruption; if it exists, the run resumes from it and gives the same result
            as an uninterrupted run.
        chain_blocks: split the chains into this many contiguous blocks, each with its own
            generator seeded from ``(seed, block)`` (and its own checkpoint file,
            ``checkpoint.block<b>``). Under ``torchrun`` the blocks are shared out over the
            ranks (default: one per rank) and the result is gathered on every rank, so a run
            with ``chain_blocks=k`` gives the same samples on 1 process or on any number that
            divides ``k``. Default (outside ``torchrun``): one block, the seed used as is.
        compile: run the blocks compiled: ``torch.compile`` of the block runner, a ``scan``
            over steps compiled once (the loop in C++ on CPU; a CUDA graph on CUDA). An int
            sets the block length; ``True`` picks blocks of about 2^20 state numbers (at
            most 1,000 steps). The first call compiles (seconds to a minute); it pays on
            small or analytic targets, where eager time is Python dispatch. Needs float or
            per-chain parameters (no schedules), a kernel that is ``compilable``, and no
            ``callback``.
        params: the kernel's parameters to run with (default ``kernel.params``).
        batches: for kernels that need a minibatch per step: a source with
            ``draw(k) -> the next k steps' batches``, ``get_state()`` and ``set_state(s)``.
        keep_draws: keep the thinned draws (``False``: ``Chains.samples`` has no draws and
            non-finite chains are left for the caller to report; for callers that record
            what they need in ``callback``).
        distribute: under ``torchrun``, share the chains out over the ranks; ``False`` runs
            all of ``x0``'s chains here (for callers that split them themselves).

    Returns:
        :class:`Chains`. A chain that turned NaN/Inf is reported in a warning and in
        ``Chains.nonfinite_step``; its draws are kept as they are.
    """
    rank, size = distributed.world() if distribute and distributed.init() else (0, 1)
    options = dict(burn_in=burn_in, thin=thin, progress=progress,
                   return_trajectory=return_trajectory, callback=callback,
                   checkpoint_every=checkpoint_every, compile=compile, params=params,
                   batches=batches, keep_draws=keep_draws)
    if chain_blocks is not None or size > 1:
        return _sample_blocks(kernel, x0, n_steps, chain_blocks or size, rank, size,
                              seed=seed, checkpoint=checkpoint, **options)
    return _sample(kernel, x0, n_steps, seed=seed, checkpoint=checkpoint, **options)


register_runner(sample)


def _block_seed(seed: int, block: int) -> int:
    return int(np.random.SeedSequence([seed, block]).generate_state(1, np.uint64)[0] >> 2)


def _sample_blocks(kernel, x0: Tensor, n_steps: int, blocks: int, rank: int, size: int,
                   seed: Seed, checkpoint, params=None, **kwargs) -> Chains:
    """Blocks of chains, each its own run and generator; this rank's share, then gathered."""
    blocks = integer("chain_blocks", blocks, 1)
    c = x0.shape[0] if isinstance(x0, Tensor) and x0.ndim else 0
    if blocks > max(c, 1) or blocks % size:
        raise ValueError(f"chain_blocks must be a multiple of the number of processes "
                         f"({size}) and at most the number of chains ({c}); got {blocks}")
    if getattr(kernel, "couples_chains", False):
        raise TypeError(f"{type(kernel).__name__} couples chains: it cannot be split into "
                        f"chain blocks; run it in one process")
    per_chain_seeds = seed is not None and not isinstance(seed, int)
    if seed is None:  # one seed for the whole run, chosen once and shared
        seed = distributed.all_gather(secrets.randbits(62))[0]
    if not per_chain_seeds:
        seed = integer("seed", seed, 0)
    params = kernel.params if params is None else params
    parts = []
    for b in distributed.split(blocks, rank, size):
        rows = distributed.split(c, b, blocks)
        part = slice(rows.start, rows.stop)
        block_seed = list(seed)[part] if per_chain_seeds else _block_seed(seed, b)
        path = None if checkpoint is None else f"{os.fspath(checkpoint)}.block{b}"
        parts.append(_sample(kernel, x0[part], n_steps, seed=block_seed, checkpoint=path,
                             params=slice_params(params, part, x0.ndim), **kwargs))
    local = Chains.concat(parts)
    out = distributed.gather_chains(local) if size > 1 else local
    return dataclasses.replace(out, seed=seed)


def _check_kernel(kernel) -> None:
    for name in ("init", "step", "noise_size", "params"):
        if not hasattr(kernel, name):
            raise TypeError(f"kernel must have init(x, params), step(state, noise, params, "
                            f"batch), noise_size(state) and params; "
                            f"{type(kernel).__name__} has no {name}")


def _seeds(seed: Seed, c: int) -> list[int]:
    """The run's generator seeds: one for all chains, or one per chain."""
    if seed is None:
        return [secrets.randbits(62)]
    if isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        return [integer("seed", seed, 0)]
    seeds = [integer("seed", s, 0) for s in seed]
    if len(seeds) != c:
        raise ValueError(f"seed must be an integer or one integer per chain ({c}); "
                         f"got {len(seeds)} seeds")
    return seeds


def _block_len(kernel, params, compile: bool | int, callback) -> int:  # noqa: A002
    """Steps per compiled block (0: eager; -1: by the state's size), after checking the run
    can be compiled."""
    if compile is False or compile == 0:
        return 0
    length = -1 if compile is True else integer("compile", compile, 1)
    if callback is not None:
        raise ValueError("compile=True runs blocks of steps with no Python in between, so it "
                         "cannot call a callback after each step; drop one of the two")
    if not getattr(kernel, "compilable", True):
        raise ValueError(f"compile=True needs a kernel whose steps have no Python control "
                         f"flow on the step count; {type(kernel).__name__} is not compilable: "
                         f"run it eagerly")
    for name, value in params._asdict().items():
        if isinstance(value, Schedule):
            raise ValueError(f"compile=True needs a float or per-chain {name}; got the "
                             f"schedule {value!r}: run it eagerly")
    return length


def _sample(kernel, x0: Tensor, n_steps: int, *, burn_in: int = 0, thin: int = 1,
            seed: Seed = None, progress: bool = True, return_trajectory: bool = False,
            callback: Callback | None = None, checkpoint=None,
            checkpoint_every: int = 1000, compile: bool | int = False,  # noqa: A002
            params: Any = None, batches: Any = None, keep_draws: bool = True) -> Chains:
    n_steps = integer("n_steps", n_steps, 1)
    burn_in = integer("burn_in", burn_in, 0)
    thin = integer("thin", thin, 1)
    if thin > n_steps:
        raise ValueError(f"thin must be <= n_steps ({n_steps}) to keep a draw; got {thin}")
    checkpoint_every = integer("checkpoint_every", checkpoint_every, 1)
    _check_kernel(kernel)
    params = kernel.params if params is None else params
    if getattr(kernel, "needs_batch", False) and batches is None:
        raise ValueError(f"{type(kernel).__name__} needs a minibatch per step: pass batches")
    total = burn_in + n_steps
    if hasattr(kernel, "check_schedules"):
        kernel.check_schedules(params, total)
    compiled_len = _block_len(kernel, params, compile, callback)
    with torch.no_grad():
        state = kernel.init(x0, params)
        run = _Run(kernel, state, params, n_steps, burn_in, thin, _seeds(seed, x0.shape[0]),
                   seed is not None, return_trajectory, keep_draws, batches, checkpoint,
                   checkpoint_every)
        if run.path is not None and run.path.exists():
            state = run.resume(state)
        blocks = None
        if compiled_len:
            from .compiled import CompiledBlocks  # private torch parts: only when asked

            blocks = CompiledBlocks(state.x.device, state.x.numel())
        length = compiled_len if compiled_len > 0 else \
            block_length(state.x.numel(), state.x.shape[0] * kernel.noise_size(state))
        state = run.loop(kernel, state, params, blocks, length, callback, progress)
        return run.finish(kernel, state)


class _Run:
    """A single block of chains' run: its buffers, generators, bookkeeping and checkpoint."""

    def __init__(self, kernel, state, params, n_steps: int, burn_in: int, thin: int,
                 seeds: list[int], seed_given: bool, return_trajectory: bool,
                 keep_draws: bool, batches, checkpoint, checkpoint_every: int) -> None:
        x = state.x
        c, event = x.shape[0], tuple(x.shape[1:])
        self.n_steps, self.burn_in, self.thin, self.total = n_steps, burn_in, thin,\
            burn_in + n_steps
        self.batches, self.seed_given = batches, seed_given
        generators = [torch.Generator(device=x.device).manual_seed(s) for s in seeds]
        self.noise = NoiseStream(generators, c, kernel.noise_size(state), x,
                                 block_length(x.numel(), c * kernel.noise_size(state)),
                                 burn_in + n_steps)
        self.path = Path(checkpoint) if checkpoint is not None else None
        self.checkpoint_every = checkpoint_every
        self.config = {"kernel": type(kernel).__name__, "n_steps": n_steps, "burn_in": burn_in,
                       "thin": thin, "shape": (c, *event), "seed": seeds if len(seeds) > 1
                       else seeds[0], "params": _describe(params)}
        n_draws = n_steps // thin if keep_draws else 0
        per_draw = getattr(kernel, "has_accept_step", True) and keep_draws
        counts = dict(dtype=torch.long, device=x.device)
        self.buffers: dict[str, Any] = {
            "step": 0,
            # draw-major while running (each write is one contiguous copy), chain-first at end
            "samples": x.new_empty((n_draws, c, *event)),
            "energy": x.new_full((n_draws, c), float("nan")) if state.energy is not None
            else None,
            "accepted": torch.zeros(c, **counts),
            "divergent": torch.zeros(c, **counts),
            "trajectory": x.new_empty((self.total, c, *event)) if return_trajectory else None,
            # counters after burn-in, snapshotted at each draw (per-draw stats for ArviZ)
            "accepted_at_draw": torch.zeros((n_draws, c), **counts) if per_draw else None,
            "divergent_at_draw": torch.zeros((n_draws, c), **counts) if per_draw else None,
            "has_accept": False,
        }
        self.keep_draws = keep_draws

    # -- the loop ----------------------------------------------------------------------------
    def _next_block(self, t: int, length: int) -> int:
        """Steps in the block starting at ``t``: ``length``, cut at the run's end and, with
        a checkpoint, at the next multiple of ``checkpoint_every``."""
        k = min(length, self.total - t)
        if self.path is not None:
            k = min(k, self.checkpoint_every - t % self.checkpoint_every)
        return k

    def _draw(self, k: int):
        return self.noise.take(k), (self.batches.draw(k) if self.batches is not None else None)

    def loop(self, kernel, state, params, blocks, length: int, callback, progress: bool):
        bar = progress_bar(progress, self.total, getattr(kernel, "name", "sampling"))
        if bar is not None:
            bar.update(self.buffers["step"])
        # an interruption saves the state before the block (and the generators' and batch
        # source's states from before its draw), or after its bookkeeping: never half-way
        saved, booking = None, False
        try:
            while self.buffers["step"] < self.total:
                t = self.buffers["step"]
                k = self._next_block(t, length)
                saved = (state, self._rng_state(), self._counters()) \
                    if self.path is not None else None
                noise, batches = self._draw(k)
                if blocks is not None:
                    new, trace = blocks(kernel, state, params, noise, batches)
                    booking = True
                    self._book(t, trace)
                else:  # eager: positions booked as the steps go, only those kept
                    new, _ = run_block(kernel, state, params, noise, batches,
                                       hook=self._hook(callback, t), trace=None,
                                       donate=callback is None)
                    booking = True
                state, self.buffers["step"], booking = new, t + k, False
                if bar is not None:
                    bar.update(k)
                if self.path is not None and (t + k) % self.checkpoint_every == 0 \
                        and t + k < self.total:
                    self.save(state, self._rng_state())
                    saved = None
        except BaseException:
            if self.path is not None and saved is not None and not booking:
                self.buffers.update(saved[2])  # eager steps booked in the block are redone
                self.save(saved[0], saved[1])
            raise
        finally:
            if bar is not None:
                bar.close()
        return state

    def _counters(self) -> dict:
        run = self.buffers
        grads = run.get("n_grads")
        return {"accepted": run["accepted"].clone(), "divergent": run["divergent"].clone(),
                "has_accept": run["has_accept"],
                "n_grads": None if grads is None else grads.clone()}

    def _hook(self, callback: Callback | None, t0: int):
        def hook(t, state, trace):
            self._book_step(t0 + t, state, trace.info)
            if callback is not None:
                callback(t0 + t + 1, state, trace.info)
        return hook

    def _book_step(self, t: int, state, info) -> None:
        """The bookkeeping for eager step ``t``: counters, trajectory, kept draw."""
        run = self.buffers
        accepted, divergent = getattr(info, "accepted", None), getattr(info, "divergent", None)
        extras = _extras(info)
        if t >= self.burn_in:
            if accepted is not None:
                run["accepted"] += accepted
                run["has_accept"] = True
            if divergent is not None:
                run["divergent"] += divergent
            if "n_grads" in extras:
                self._grads(extras["n_grads"])
        if run["trajectory"] is not None:
            run["trajectory"][t] = state.x
        kept = t + 1 - self.burn_in
        if kept <= 0 or kept % self.thin or not self.keep_draws:
            return
        d = kept // self.thin - 1
        for name, v in extras.items():
            self._stats(name, v)[d] = v
        run["samples"][d] = state.x
        if state.energy is not None and run["energy"] is not None:
            run["energy"][d] = state.energy
        if run["accepted_at_draw"] is not None:
            run["accepted_at_draw"][d] = run["accepted"]
            run["divergent_at_draw"][d] = run["divergent"]

    def _book(self, t0: int, trace) -> None:
        """The driver's per-step bookkeeping for steps ``t0 .. t0 + k - 1`` at once."""
        run, xs, info = self.buffers, trace.x, trace.info
        accepted, divergent = getattr(info, "accepted", None), getattr(info, "divergent", None)
        k = xs.shape[0]
        if run["trajectory"] is not None:
            run["trajectory"][t0:t0 + k] = xs
        first = max(self.burn_in - t0, 0)  # index of the block's first step after burn-in
        if first >= k:
            return
        acc_cum, div_cum = self._count(accepted, divergent, first)
        extras = _extras(info, stacked=True)
        if "n_grads" in extras:
            self._grads(extras["n_grads"][first:].sum(0))
        keep = [i for i in range(first, k) if (t0 + i + 1 - self.burn_in) % self.thin == 0]
        if not keep or not self.keep_draws:
            return
        d0 = (t0 + keep[0] + 1 - self.burn_in) // self.thin - 1
        rows, draws = slice(keep[0], keep[-1] + 1, self.thin), slice(d0, d0 + len(keep))
        for name, v in extras.items():
            self._stats(name, v[0])[draws] = v[rows]
        run["samples"][draws] = xs[rows]
        if trace.energy is not None and run["energy"] is not None:
            run["energy"][draws] = trace.energy[rows]
        if run["accepted_at_draw"] is not None and acc_cum is not None:
            cum_rows = slice(keep[0] - first, keep[-1] - first + 1, self.thin)
            run["accepted_at_draw"][draws] = acc_cum[cum_rows]
            if div_cum is not None:
                run["divergent_at_draw"][draws] = div_cum[cum_rows]

    def _count(self, accepted: Tensor | None, divergent: Tensor | None, first: int
               ) -> tuple[Tensor | None, Tensor | None]:
        """Add a block's accepts and divergences from its row ``first`` on; returns the
        running counts at each of those rows."""
        run, acc_cum, div_cum = self.buffers, None, None
        if accepted is not None:
            acc_cum = run["accepted"] + accepted[first:].long().cumsum(0)
            run["accepted"] = acc_cum[-1].clone()
            run["has_accept"] = True
        if divergent is not None:
            div_cum = run["divergent"] + divergent[first:].long().cumsum(0)
            run["divergent"] = div_cum[-1].clone()
        return acc_cum, div_cum

    def _grads(self, n_grads: Tensor) -> None:
        """Add a step's (or a block's summed) gradient evaluations per chain."""
        run = self.buffers
        total = run.get("n_grads")
        run["n_grads"] = n_grads.long().clone() if total is None else total + n_grads

    def _stats(self, name: str, like: Tensor) -> Tensor:
        """The per-draw buffer ``(draw, chain)`` of the kernel's statistic ``name``."""
        stats = self.buffers.setdefault("stats", {})
        if name not in stats:
            n_draws = self.buffers["samples"].shape[0]
            stats[name] = like.new_zeros((n_draws, *like.shape))
        return stats[name]

    # -- checkpoints -------------------------------------------------------------------------
    def _rng_state(self):
        batch_state = self.batches.get_state() if self.batches is not None else None
        return self.noise.get_state(), batch_state

    def save(self, state, rng) -> None:
        noise, batch_state = rng
        leaves, _ = flatten(state)
        atomic_save({"config": self.config, "state": leaves, "noise": noise,
                     "batches": batch_state, "run": dict(self.buffers)}, self.path)

    def resume(self, state):
        data = torch.load(self.path, weights_only=True, map_location=state.x.device)
        saved, wanted = dict(data["config"]), dict(self.config)
        if not self.seed_given:  # no seed asked for: continue with the saved run's
            saved.pop("seed", None)
            wanted.pop("seed")
        if saved != wanted:
            raise ValueError(f"checkpoint {str(self.path)!r} was written by a different run: "
                             f"it has {data['config']}, this run is {self.config}")
        self.config["seed"] = data["config"]["seed"]
        self.noise.set_state(data["noise"])
        if self.batches is not None:
            self.batches.set_state(data["batches"])
        self.buffers = data["run"]
        return unflatten(flatten(state)[1], data["state"])

    # -- the result --------------------------------------------------------------------------
    def finish(self, kernel, state) -> Chains:
        run = self.buffers
        samples, energy = _chain_first(run["samples"]), _chain_first(run["energy"])
        nonfinite_step = _nonfinite_step(samples, energy, state.x, self)
        if self.keep_draws:  # without draws the caller's callback saw every step: it reports
            _warn_nonfinite(nonfinite_step)
        accepted_share = (run["accepted"].double() / self.n_steps).to(samples.dtype)
        return Chains(
            samples=samples, final=state.x,
            acceptance_rate=accepted_share if run["has_accept"] else None,
            divergences=run["divergent"], nonfinite_step=nonfinite_step,
            trajectory=_chain_first(run["trajectory"]), final_state=state,
            seed=self.config["seed"], n_steps=self.n_steps, burn_in=self.burn_in,
            thin=self.thin, kernel=getattr(kernel, "name", ""), _energy=energy,
            _energy_fn=kernel.energy,
            _accepted_at_draw=_chain_first(run["accepted_at_draw"]),
            _divergent_at_draw=_chain_first(run["divergent_at_draw"]),
            n_grads=run.get("n_grads"),
            stats={k: _chain_first(v) for k, v in run.get("stats", {}).items()})


def _describe(params) -> dict:
    """Parameters as plain values a checkpoint can compare: floats as they are, a tensor by
    its shape and sum, a schedule by its repr."""
    out = {}
    for name, v in params._asdict().items():
        if isinstance(v, Tensor):
            out[name] = ("tensor", tuple(v.shape), float(v.double().sum()))
        elif isinstance(v, tuple) and all(isinstance(t, Tensor) for t in v):  # a mass
            out[name] = (type(v).__name__, *((tuple(t.shape), float(t.double().sum()))
                                               for t in v))
        elif isinstance(v, (bool, int, float, str)) or v is None:
            out[name] = v
        else:
            out[name] = repr(v)
    return out


#: the Info fields the driver counts itself; any other (C,) field is a per-draw statistic
_COUNTED = ("log_accept_ratio", "accepted", "divergent")


def _extras(info: Any, stacked: bool = False) -> dict[str, Tensor]:
    """A kernel's own per-chain statistics in its ``Info`` (NUTS's ``tree_depth`` and
    ``n_grads``, ...): every tensor field beyond the counted ones, ``(C,)`` per step
    (``(k, C)`` stacked over a block)."""
    fields = getattr(info, "_fields", ())
    return {name: v for name, v in zip(fields, info, strict=True)
            if name not in _COUNTED and isinstance(v, Tensor) and v.ndim == 1 + stacked}


def _warn_nonfinite(nonfinite_step: Tensor) -> None:
    bad = (nonfinite_step >= 0).nonzero().flatten().tolist()
    if not bad:
        return
    steps = nonfinite_step[bad].tolist()
    listing = ", ".join(f"chain {i} by step {s}" for i, s in zip(bad[:10], steps[:10],
                                                                 strict=True))
    warnings.warn(f"{len(bad)} of {nonfinite_step.numel()} chains turned non-finite (NaN/Inf): "
                  f"{listing}{' ...' if len(bad) > 10 else ''}. Their draws are kept as they "
                  f"are and Chains.summary() leaves them out; reduce the step size.",
                  RuntimeWarning, stacklevel=5)


def _nonfinite_step(samples: Tensor, energy: Tensor | None, final: Tensor, run: _Run) -> Tensor:
    """Per chain, the step of the first kept draw that is not finite (-1 if none).

    A non-finite position is absorbing (``x + anything`` stays non-finite; MALA and HMC
    reject such proposals), so the final state says which chains failed and only their
    draws are scanned for when.
    """
    c = final.shape[0]
    bad = ~torch.isfinite(final.reshape(c, -1)).all(1)
    if energy is not None and energy.numel():
        bad |= ~torch.isfinite(energy).all(1)
    step = torch.full((c,), -1, dtype=torch.long, device=final.device)
    chains = bad.nonzero().flatten()
    if chains.numel() and samples.shape[1]:
        draws = samples[chains].reshape(chains.numel(), samples.shape[1], -1)
        bad_draw = ~torch.isfinite(draws).all(-1)
        if energy is not None:
            bad_draw |= ~torch.isfinite(energy[chains])
        first = run.burn_in + (bad_draw.int().argmax(1) + 1) * run.thin
        step[chains] = torch.where(bad_draw.any(1), first, run.total)
    elif chains.numel():
        step[chains] = run.total
    return step


def _chain_first(t: Tensor | None) -> Tensor | None:
    """The draw-major run buffer seen chain-first: a view, no copy."""
    return None if t is None else t.movedim(0, 1)
