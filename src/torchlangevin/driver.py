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

from . import distributed, persist
from .blocks import NoiseStream, block_length, flatten, run_block, unflatten
from .chains import Chains
from .energy import check_compilable_gradient
from .kernels.base import check_compilable, register_runner, slice_params
from .schedules import Schedule
from .util import check_fits, integer, progress_bar

__all__ = ["sample", "check_memory"]

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
        checkpoint: file to save the run to every ``checkpoint_every`` steps, on
            interruption and at the end; if it exists, the run resumes from it and gives the
            same result as an uninterrupted run. The file records the call (kernel class and
            parameters, energy name and values at ``x0``, ``x0``, chains, seed, ``n_steps``,
            ``burn_in``, ``thin``, outputs): a call that differs is refused with the fields
            that differ; a finished run is returned only to the identical call (with a
            ``callback``, the last periodic checkpoint is kept instead, so a re-run replays
            the callback). It holds only what is filled, plain tensors with checksums
            (:mod:`torchlangevin.persist`): a corrupted file is refused, never run.
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
    if chain_blocks is not None:
        chain_blocks = integer("chain_blocks", chain_blocks, 1)
    rank, size = distributed.world() if distribute and distributed.init() else (0, 1)
    if isinstance(x0, Tensor) and x0.ndim >= 1:  # the kernel checks x0 itself
        check_memory(x0.shape[0], x0.shape[1:], n_steps, burn_in=burn_in, thin=thin,
                     return_trajectory=return_trajectory, keep_draws=keep_draws,
                     dtype=x0.dtype, device=x0.device,
                     copies=2 if max(chain_blocks or 1, size) > 1 else 1)
    options = dict(burn_in=burn_in, thin=thin, progress=progress,
                   return_trajectory=return_trajectory, callback=callback,
                   checkpoint_every=checkpoint_every, compile=compile, params=params,
                   batches=batches, keep_draws=keep_draws)
    if chain_blocks is not None or size > 1:
        return _sample_blocks(kernel, x0, n_steps, chain_blocks or size, rank, size,
                              seed=seed, checkpoint=checkpoint, **options)
    return _sample(kernel, x0, n_steps, seed=seed, checkpoint=checkpoint, **options)


register_runner(sample)


def check_memory(n_chains: int, event_shape: Sequence[int], n_steps: int, *,
                 burn_in: int = 0, thin: int = 1, return_trajectory: bool = False,
                 keep_draws: bool = True, dtype: torch.dtype = torch.float32,
                 device: Any = "cpu", copies: int = 1, extra: dict[str, int] | None = None
                 ) -> None:
    """Refuse, before anything is allocated, a run whose kept draws or trajectory would not
    fit in the memory available on ``device`` (:func:`~torchlangevin.util.available_memory`).

    With ``D = n_steps // thin`` draws, ``C`` chains and ``K`` numbers an event, a run keeps
    ``D C K`` numbers of draws, ``D C`` energies and two ``D C`` int64 counters (acceptances
    and divergences at each draw), and with ``return_trajectory`` ``(burn_in + n_steps) C K``
    numbers more; ``copies`` counts them again where blocks of chains are joined at the end
    (``chain_blocks``, ``torchrun``). ``extra`` adds other parts (what -> bytes).
    """
    n_steps = integer("n_steps", n_steps, 1)
    burn_in, thin = integer("burn_in", burn_in, 0), integer("thin", thin, 1)
    numel = int(np.prod(tuple(event_shape), dtype=np.int64)) if len(event_shape) else 1
    size = torch.empty((), dtype=dtype).element_size()
    draws = n_steps // thin if keep_draws else 0
    parts = dict(extra or {})
    parts["draws"] = copies * n_chains * draws * (numel * size + size + 2 * 8)
    if return_trajectory:
        parts["trajectory"] = copies * n_chains * (burn_in + n_steps) * numel * size
    shape = f"{n_chains} chains x {draws} draws x {numel} numbers"
    check_fits(parts, device,
               f"{shape} are kept: keep fewer draws with a larger thin (each chain keeps "
               f"n_steps // thin), or run fewer steps or chains, or pass keep_draws=False and "
               f"record what you need in a callback"
               + ("; return_trajectory=True keeps every step of every chain: leave it off"
                  if return_trajectory else ""))


def _block_seed(seed: int, block: int) -> int:
    return int(np.random.SeedSequence([seed, block]).generate_state(1, np.uint64)[0] >> 2)


def _sample_blocks(kernel, x0: Tensor, n_steps: int, blocks: int, rank: int, size: int,
                   seed: Seed, checkpoint, params=None, **kwargs) -> Chains:
    """Blocks of chains, each its own run and generator; this rank's share, then gathered."""
    c = _check_blocks(kernel, x0, blocks, size)
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
                             params=slice_params(params, part, x0.ndim), warn=False,
                             **kwargs))
    local = Chains.concat(parts)
    out = distributed.gather_chains(local) if size > 1 else local
    if kwargs.get("keep_draws", True) and rank == 0:  # chains by their global index
        _warn_nonfinite(out.nonfinite_step)
    return dataclasses.replace(out, seed=seed)


def _check_blocks(kernel, x0: Tensor, blocks: int, size: int) -> int:
    """Fail unless ``x0``'s chains can be split in ``blocks`` over ``size`` processes;
    returns the number of chains."""
    blocks = integer("chain_blocks", blocks, 1)
    c = x0.shape[0] if isinstance(x0, Tensor) and x0.ndim else 0
    if blocks > max(c, 1) or blocks % size:
        raise ValueError(f"chain_blocks must be a multiple of the number of processes "
                         f"({size}) and at most the number of chains ({c}); got {blocks}")
    if getattr(kernel, "couples_chains", False):
        raise TypeError(f"{type(kernel).__name__} couples chains: it cannot be split into "
                        f"chain blocks; run it in one process")
    return c


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
    check_compilable(kernel, "the run")
    for name, value in params._asdict().items():
        if isinstance(value, Schedule):
            raise ValueError(f"compile=True needs a float or per-chain {name}; got the "
                             f"schedule {value!r}: run it eagerly")
    check_compilable_gradient(kernel.energy)  # before torch's compiler is even imported
    return length


def _sample(kernel, x0: Tensor, n_steps: int, *, burn_in: int = 0, thin: int = 1,
            seed: Seed = None, progress: bool = True, return_trajectory: bool = False,
            callback: Callback | None = None, checkpoint=None,
            checkpoint_every: int = 1000, compile: bool | int = False,  # noqa: A002
            params: Any = None, batches: Any = None, keep_draws: bool = True,
            warn: bool = True) -> Chains:
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
        finished = run.buffers["step"] >= run.total
        state = run.loop(kernel, state, params, blocks, length, callback, progress)
        if run.path is not None and callback is None and not finished:
            # the finished run: returned to the same call, refused (by name) to any other.
            # With a callback the last periodic checkpoint stays, so a re-run replays the
            # callback over the steps after it.
            run.save(state, run._rng_state())
        return run.finish(kernel, state, warn)


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
        self.seed = seeds if len(seeds) > 1 else seeds[0]
        self.config = None if self.path is None else _run_config(
            kernel, params, x, self.seed, n_steps=n_steps, burn_in=burn_in, thin=thin,
            keep_draws=keep_draws, return_trajectory=return_trajectory)
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
        self._extra_names: dict[type, tuple[str, ...]] = {}

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

    def _step_extras(self, info) -> dict[str, Tensor]:
        """:func:`_extras` of a step's ``info``, its field names found once per Info type
        (a kernel's steps all fill the same fields)."""
        names = self._extra_names.get(type(info))
        if names is None:
            names = self._extra_names[type(info)] = tuple(_extras(info))
        return {name: getattr(info, name) for name in names} if names else {}

    def _book_step(self, t: int, state, info) -> None:
        """The bookkeeping for eager step ``t``: counters, trajectory, kept draw."""
        run = self.buffers
        accepted, divergent = getattr(info, "accepted", None), getattr(info, "divergent", None)
        extras = self._step_extras(info)
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
        """Write the run as it stands at ``buffers["step"]``: the configuration, the state,
        the generators' and batch source's states and the buffers as far as they are
        filled (:func:`torchlangevin.persist.save`: checksummed, crash-safe)."""
        noise, batch_state = rng
        leaves, _ = flatten(state)
        persist.save(self.path, _KIND, {"config": self.config, "state": leaves,
                                        "noise": noise, "batches": batch_state,
                                        "run": self._filled()})

    def _filled(self) -> dict[str, Any]:
        """The buffers cut to what is written at step ``t``: ``(t - burn_in) // thin`` draws
        and ``t`` trajectory rows (views; :func:`persist.save` writes just those)."""
        run, t = dict(self.buffers), self.buffers["step"]
        d = max(0, t - self.burn_in) // self.thin if self.keep_draws else 0
        for name in _DRAW_BUFFERS:
            if run[name] is not None:
                run[name] = run[name][:d]
        if run["trajectory"] is not None:
            run["trajectory"] = run["trajectory"][:t]
        if "stats" in run:
            run["stats"] = {k: v[:d] for k, v in run["stats"].items()}
        return run

    def resume(self, state):
        """Continue from the checkpoint: refused, naming each field, if it was written by a
        call with other arguments; a finished run's comes back as it ended."""
        data = persist.load(self.path, _KIND, label="checkpoint")
        self._check_config(data)
        self.seed = data["config"]["seed"]
        self.config["seed"] = self.seed
        self.noise.set_state(data["noise"])  # generator states stay on the CPU
        if self.batches is not None:
            self.batches.set_state(data["batches"])
        device = state.x.device
        self._restore(data["run"], device)
        leaves = [v.to(device) if isinstance(v, Tensor) else v for v in data["state"]]
        return unflatten(flatten(state)[1], leaves)

    def _check_config(self, data: dict[str, Any]) -> None:
        saved, wanted = dict(data["config"]), dict(self.config)
        if not self.seed_given:  # no seed asked for: continue with the saved run's
            saved.pop("seed", None)
            wanted.pop("seed")
        diffs = persist.differences(saved, wanted, {"energy_probe": _PROBE_TOLERANCE})
        if not diffs:
            return
        step = data["run"]["step"]
        total = saved.get("burn_in", 0) + saved.get("n_steps", 0)
        where = f"checkpoint {str(self.path)!r}"
        if step >= total:
            raise ValueError(f"{where} holds a finished run of {total} steps, and this call "
                             f"differs from it: {'; '.join(diffs)}. A finished run is returned "
                             f"only to the call that made it: pass another checkpoint path, or "
                             f"delete the file to run anew")
        raise ValueError(f"{where} was written by a different run (stopped at step {step} of "
                         f"{total}): {'; '.join(diffs)}. Pass the same arguments to resume "
                         f"it, or another checkpoint path (or delete the file) to start anew")

    def _restore(self, run: dict[str, Any], device) -> None:
        """The saved buffers back: each filled part copied into this run's full buffer."""
        for name, value in run.items():
            if name == "stats":
                n_draws = self.buffers["samples"].shape[0]
                self.buffers["stats"] = {k: _prefix_into(v.new_zeros(
                    (n_draws, *v.shape[1:]), device=device), v, k) for k, v in value.items()}
            elif name in _PREFIX_BUFFERS and value is not None:
                _prefix_into(self.buffers[name], value, name)
            else:
                self.buffers[name] = value.to(device) if isinstance(value, Tensor) else value

    # -- the result --------------------------------------------------------------------------
    def finish(self, kernel, state, warn: bool = True) -> Chains:
        run = self.buffers
        samples, energy = _chain_first(run["samples"]), _chain_first(run["energy"])
        nonfinite_step = _nonfinite_step(samples, energy, state, self)
        if self.keep_draws and warn:  # without draws the caller's callback saw every step
            _warn_nonfinite(nonfinite_step)
        accepted_share = (run["accepted"].double() / self.n_steps).to(samples.dtype)
        return Chains(
            samples=samples, final=state.x,
            acceptance_rate=accepted_share if run["has_accept"] else None,
            divergences=run["divergent"], nonfinite_step=nonfinite_step,
            trajectory=_chain_first(run["trajectory"]), final_state=state,
            seed=self.seed, n_steps=self.n_steps, burn_in=self.burn_in,
            thin=self.thin, kernel=getattr(kernel, "name", ""), _energy=energy,
            _energy_fn=kernel.energy,
            _accepted_at_draw=_chain_first(run["accepted_at_draw"]),
            _divergent_at_draw=_chain_first(run["divergent_at_draw"]),
            n_grads=run.get("n_grads"),
            stats={k: _chain_first(v) for k, v in run.get("stats", {}).items()})


_KIND = "tl.sample checkpoint"
#: draw-major buffers, ``(n_draws, C, ...)``; with the trajectory ``(burn_in + n_steps, C,
#: ...)``, the buffers a checkpoint writes only the filled part of
_DRAW_BUFFERS = ("samples", "energy", "accepted_at_draw", "divergent_at_draw")
_PREFIX_BUFFERS = (*_DRAW_BUFFERS, "trajectory")
#: relative difference of the energy at the start beyond which a resume's energy is another
#: (float32 energies on another device or thread count differ by ~1e-7)
_PROBE_TOLERANCE = 1e-5


def _run_config(kernel, params, x: Tensor, seed, **options: Any) -> dict[str, Any]:
    """What a checkpoint records of the call, so that a resume with other arguments is
    refused by name: the kernel (class, each parameter, its other public attributes), the energy
    (qualified name and its values at the start ``x``), the chains, the seed and the run's
    length, thinning and outputs."""
    config: dict[str, Any] = {
        "kernel": persist.qualified_name(kernel),
        "kernel_attributes": persist.fingerprint(
            {k: v for k, v in vars(kernel).items()  # private attributes are caches
             if k not in ("energy", "params") and not k.startswith("_")}),
        "energy": persist.qualified_name(kernel.energy),
        "energy_probe": _energy_probe(kernel, x),
        "n_chains": x.shape[0], "event_shape": tuple(x.shape[1:]),
        "dtype": str(x.dtype).removeprefix("torch."), "x0": persist.fingerprint(x),
        "seed": seed, **options}
    for name, value in params._asdict().items():  # step_size, noise_scale, inv_mass, ...
        config[name if name not in config else f"params.{name}"] = persist.fingerprint(value)
    return config


def _energy_probe(kernel, x: Tensor) -> Any:
    """The energy's fingerprint: its values at the start ``x`` (the first, middle and last
    chain and the mean over chains); for a minibatch kernel's potential, which needs a
    batch, the fingerprint of its reference weights ``w0``."""
    energy = kernel.energy
    if getattr(kernel, "needs_batch", False):
        return persist.fingerprint(getattr(energy, "w0", None))
    with torch.no_grad():
        e = energy(x).detach().double().reshape(-1).cpu()
    c = e.numel()
    return [float(e[0]), float(e[c // 2]), float(e[-1]), float(e.mean())]


def _prefix_into(full: Tensor, part: Tensor, name: str) -> Tensor:
    """``full`` with its first ``len(part)`` rows set to the saved ``part``."""
    if part.shape[1:] != full.shape[1:] or part.shape[0] > full.shape[0]:
        raise persist.PersistError(f"checkpoint buffer {name!r} has shape "
                                   f"{tuple(part.shape)}; this run's is {tuple(full.shape)}")
    full[:part.shape[0]].copy_(part)
    return full


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
    warnings.warn(f"{len(bad)} of {nonfinite_step.numel()} chains turned non-finite (a NaN/Inf "
                  f"position, energy or gradient): {listing}{' ...' if len(bad) > 10 else ''}."
                  f" A chain whose energy or gradient is not finite is frozen (MALA and HMC "
                  f"reject every move from it). Their draws are kept as they are and "
                  f"Chains.summary() leaves them out; reduce the step size, or look at the "
                  f"energy where they stopped (Chains.final).", RuntimeWarning, stacklevel=5)


def _nonfinite_step(samples: Tensor, energy: Tensor | None, state: Any, run: _Run) -> Tensor:
    """Per chain, the step of the first kept draw that is not finite (-1 if none).

    A non-finite position is absorbing (``x + anything`` stays non-finite; MALA and HMC
    reject such proposals), and so is a non-finite energy or gradient for MALA and HMC
    (every proposal from there is NaN and rejected: the chain is frozen where it is), so the
    final state says which chains failed and only their draws are scanned for when: the
    first non-finite draw or energy, or for a chain frozen by its gradient the first draw
    of the run of draws equal to its final position.
    """
    final = state.x
    c = final.shape[0]
    bad = ~torch.isfinite(final.reshape(c, -1)).all(1)
    if energy is not None and energy.numel():
        bad |= ~torch.isfinite(energy).all(1)
    grad = getattr(state, "grad", None)
    frozen = torch.zeros_like(bad)
    if isinstance(grad, Tensor) and grad.shape[:1] == (c,):
        frozen = ~torch.isfinite(grad.reshape(c, -1)).all(1) & ~bad
        bad |= frozen
    step = torch.full((c,), -1, dtype=torch.long, device=final.device)
    chains = bad.nonzero().flatten()
    if chains.numel() and samples.shape[1]:
        draws = samples[chains].reshape(chains.numel(), samples.shape[1], -1)
        bad_draw = ~torch.isfinite(draws).all(-1)
        if energy is not None:
            bad_draw |= ~torch.isfinite(energy[chains])
        bad_draw |= _stuck_from(draws, final[chains]) & frozen[chains].unsqueeze(1)
        first = run.burn_in + (bad_draw.int().argmax(1) + 1) * run.thin
        step[chains] = torch.where(bad_draw.any(1), first, run.total)
    elif chains.numel():
        step[chains] = run.total
    return step


def _stuck_from(draws: Tensor, final: Tensor) -> Tensor:
    """``(chains, draws)``: the draw and every later one equal the final position."""
    same = (draws == final.reshape(final.shape[0], 1, -1)).all(-1)
    return same.flip(1).int().cumprod(1).flip(1).bool()


def _chain_first(t: Tensor | None) -> Tensor | None:
    """The draw-major run buffer seen chain-first: a view, no copy."""
    return None if t is None else t.movedim(0, 1)
