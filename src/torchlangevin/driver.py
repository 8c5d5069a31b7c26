"""The one driver: runs any kernel over many chains and returns :class:`Chains`.

Per step it does only what the kernel does plus a handful of in-place updates of
``(C,)`` counters: no host sync, no per-chain Python. Draws are written into a
preallocated ``(chain, draw, *event)`` buffer every ``thin`` steps after burn-in.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import secrets
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import distributed
from .chains import Chains
from .compiled import NoisePlan, Packed, block_length, compile_steps, scan, unaliased
from .kernels.base import PreDrawn
from .kernels.tempering import ParallelTempering
from .schedules import Schedule

__all__ = ["sample"]

Callback = Callable[[int, Any, Any], None]


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return value


def _progress_bar(enabled: bool, total: int, desc: str):
    if not enabled or total < 200 or not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="step", leave=False, mininterval=0.25)


def sample(
    kernel,
    x0: Tensor,
    n_steps: int,
    *,
    burn_in: int = 0,
    thin: int = 1,
    seed: int | None = None,
    progress: bool = True,
    return_trajectory: bool = False,
    callback: Callback | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
    chain_blocks: int | None = None,
    compile: bool | int = False,  # noqa: A002 - the issue's public name
) -> Chains:
    """Run ``kernel`` from ``x0`` for ``burn_in + n_steps`` steps and collect draws.

    Args:
        kernel: a kernel (``Langevin``, ``MALA``, ``HMC`` or anything with ``init``/``step``).
        x0: initial states ``(C, *event)``, one chain per row.
        n_steps: steps after burn-in; ``n_steps // thin`` draws are kept.
        burn_in: steps run first and discarded (schedules count them).
        thin: keep every ``thin``-th state after burn-in.
        seed: seeds the ``torch.Generator`` all noise comes from; ``None`` picks one
            (recorded in ``Chains.seed``). Same seed, same device: same samples.
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
        compile: run the steps in blocks, each a ``scan`` over steps compiled once by
            ``torch.compile`` (the loop in C++ on CPU; a CUDA graph on CUDA). An int sets
            the block length; ``True`` picks blocks of about 2^20 state numbers (at most
            1,000 steps). The noise of a block is drawn first, eagerly, by the same calls in
            the same order as eager steps make them, so the samples equal the eager path's
            for the same seed (to float rounding). The first call compiles (10-30 s); it
            pays on small or analytic targets, where eager time is Python dispatch. Needs
            float or per-chain parameters (no schedules) and no ``callback``.

    Returns:
        :class:`Chains`. A chain that turned NaN/Inf is reported in a warning and in
        ``Chains.nonfinite_step``; its draws are kept as they are.
    """
    rank, size = distributed.world() if distributed.init() else (0, 1)
    if chain_blocks is not None or size > 1:
        return _sample_blocks(kernel, x0, n_steps, chain_blocks or size, rank, size,
                              burn_in=burn_in, thin=thin, seed=seed, progress=progress,
                              return_trajectory=return_trajectory, callback=callback,
                              checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                              compile=compile)
    return _sample(kernel, x0, n_steps, burn_in=burn_in, thin=thin, seed=seed,
                   progress=progress, return_trajectory=return_trajectory, callback=callback,
                   checkpoint=checkpoint, checkpoint_every=checkpoint_every, compile=compile)


def _sample_blocks(kernel, x0: Tensor, n_steps: int, blocks: int, rank: int, size: int,
                   seed: int | None, checkpoint, **kwargs) -> Chains:
    """Blocks of chains, each its own run and generator; this rank's share, then gathered."""
    blocks = _int("chain_blocks", blocks, 1)
    c = x0.shape[0] if isinstance(x0, Tensor) and x0.ndim else 0
    if blocks > max(c, 1) or blocks % size:
        raise ValueError(f"chain_blocks must be a multiple of the number of processes "
                         f"({size}) and at most the number of chains ({c}); got {blocks}")
    if isinstance(kernel, ParallelTempering):
        raise TypeError("ParallelTempering swaps states between chains: it cannot be split "
                        "into chain blocks; run it in one process")
    if seed is None:  # one seed for the whole run, chosen once and shared
        seed = distributed.all_gather(secrets.randbits(62))[0]
    seed = _int("seed", seed, 0)
    parts = []
    for b in distributed.split(blocks, rank, size):
        rows = distributed.split(c, b, blocks)
        block_seed = int(np.random.SeedSequence([seed, b]).generate_state(1, np.uint64)[0] >> 2)
        path = None if checkpoint is None else f"{os.fspath(checkpoint)}.block{b}"
        parts.append(_sample(_kernel_rows(kernel, rows, x0), x0[rows.start:rows.stop],
                             n_steps, seed=block_seed, checkpoint=path, **kwargs))
    local = Chains.concat(parts)
    out = Chains.concat(distributed.all_gather(local)) if size > 1 else local
    return dataclasses.replace(out, seed=seed)


def _kernel_rows(kernel, rows: range, x0: Tensor):
    """The kernel for a block of chains: per-chain step sizes ``(C,)`` and masses
    ``(C, *event)`` sliced to the block."""
    changes = {}
    for name, ndim in (("step_size", 1), ("noise_scale", 1), ("inv_mass", x0.ndim)):
        value = getattr(kernel, name, None)
        if isinstance(value, Tensor) and value.ndim == ndim and value.shape[0] == x0.shape[0]:
            changes[name] = value[rows.start:rows.stop]
    return kernel.replace(**changes) if changes else kernel


def _sample(kernel, x0: Tensor, n_steps: int, *, burn_in: int = 0, thin: int = 1,
            seed: int | None = None, progress: bool = True, return_trajectory: bool = False,
            callback: Callback | None = None, checkpoint=None,
            checkpoint_every: int = 1000, compile: bool | int = False) -> Chains:  # noqa: A002
    n_steps = _int("n_steps", n_steps, 1)
    burn_in = _int("burn_in", burn_in, 0)
    thin = _int("thin", thin, 1)
    if thin > n_steps:
        raise ValueError(f"thin must be <= n_steps ({n_steps}) to keep a draw; got {thin}")
    checkpoint_every = _int("checkpoint_every", checkpoint_every, 1)
    if not (hasattr(kernel, "init") and hasattr(kernel, "step")):
        raise TypeError(f"kernel must have init(x) and step(state, generator); "
                        f"got {type(kernel).__name__}")
    if seed is not None:
        seed = _int("seed", seed, 0)
    total = burn_in + n_steps
    if hasattr(kernel, "check_schedules"):
        kernel.check_schedules(total)
    block_len = _block_length(kernel, compile, callback)

    with torch.no_grad():
        state = kernel.init(x0)
        x = state.x
        c, event = x.shape[0], tuple(x.shape[1:])
        config = {"kernel": type(kernel).__name__, "n_steps": n_steps, "burn_in": burn_in,
                  "thin": thin, "shape": (c, *event), "seed": seed}
        n_draws = n_steps // thin
        per_draw_stats = getattr(kernel, "has_accept_step", True)
        run = {
            "step": 0,
            "seed": seed if seed is not None else secrets.randbits(62),
            # draw-major while running (each write is one contiguous copy), chain-first at the end
            "samples": x.new_empty((n_draws, c, *event)),
            "energy": x.new_full((n_draws, c), float("nan")) if state.energy is not None
            else None,
            "accepted": torch.zeros(c, dtype=torch.long, device=x.device),
            "divergent": torch.zeros(c, dtype=torch.long, device=x.device),
            "trajectory": x.new_empty((total, c, *event)) if return_trajectory else None,
            # counters after burn-in, snapshotted at each draw (per-draw stats for ArviZ)
            "accepted_at_draw": torch.zeros((n_draws, c), dtype=torch.long, device=x.device)
            if per_draw_stats else None,
            "divergent_at_draw": torch.zeros((n_draws, c), dtype=torch.long, device=x.device)
            if per_draw_stats else None,
            "has_accept": False,
        }
        generator = torch.Generator(device=x.device).manual_seed(run["seed"])
        path = Path(checkpoint) if checkpoint is not None else None
        if path is not None and path.exists():
            state, run = _resume(path, config, state, generator, run)

        # Without a callback nothing outside the loop sees a state, so a kernel that can
        # update in place may reuse the old state's buffers (x0 is copied first). Not with
        # a checkpoint: an interrupt mid-step must leave the last state intact to save.
        step_kwargs = {}
        if callback is None and path is None and \
                "donate" in inspect.signature(kernel.step).parameters:
            step_kwargs = {"donate": True}
            state = state._replace(x=state.x.clone())
        bar = _progress_bar(progress, total, getattr(kernel, "name", "sampling"))
        if bar is not None:
            bar.update(run["step"])
        # A consistent point to save on interruption: before a step (with the RNG state
        # from before it) or after one; never half-way through the bookkeeping.
        phase, rng_before = "done", None
        try:
            if block_len < 0:  # compile=True: cache-sized blocks
                block_len = block_length(state.x.numel())
            blocks = _CompiledSteps(kernel, state) if block_len else None
            while run["step"] < total:
                t = run["step"]
                compiled = blocks is not None
                k = min(block_len, total - t) if compiled else 1
                if path is not None:
                    rng_before = generator.get_state()
                phase = "step"
                if compiled:
                    new_state, trace = blocks(state, generator, k)
                else:
                    new_state, info = kernel.step(state, generator, **step_kwargs)
                phase = "book"
                if compiled:
                    _book_block(run, t, trace, burn_in, thin)
                else:
                    _book_step(run, t, new_state, info, burn_in, thin)
                state, run["step"], phase = new_state, t + k, "done"
                if callback is not None:  # never with compiled blocks (_block_length)
                    callback(t + 1, state, info)
                if bar is not None:
                    bar.update(k)
                if path is not None and (t + k) // checkpoint_every > t // checkpoint_every \
                        and t + k < total:
                    _save(path, config, state, generator.get_state(), run)
        except BaseException:
            if path is not None and phase != "book":
                _save(path, config, state,
                      rng_before if phase == "step" else generator.get_state(), run)
            raise
        finally:
            if bar is not None:
                bar.close()

        return _finish(kernel, state, run, config)


def _block_length(kernel, compile: bool | int, callback) -> int:  # noqa: A002
    """Steps per compiled block (0: eager; -1: by size), after checking the run can be
    compiled."""
    if compile is False or compile == 0:
        return 0
    if compile is True:
        length = -1  # chosen from the state's size once it is known
    else:
        length = _int("compile", compile, 1)
    if callback is not None:
        raise ValueError("compile=True runs blocks of steps with no Python in between, so it "
                         "cannot call a callback after each step; drop one of the two")
    if isinstance(kernel, ParallelTempering):
        raise ValueError("compile=True needs kernels whose steps do not depend on the step "
                         "count; ParallelTempering swaps on alternate steps: run it eagerly")
    for name in ("step_size", "noise_scale"):
        if isinstance(getattr(kernel, name, None), Schedule):
            raise ValueError(f"compile=True needs a float or per-chain {name}; got the "
                             f"schedule {getattr(kernel, name)!r}: run it eagerly")
    return length


class _CompiledSteps:
    """Kernel steps as one compiled ``scan`` fed with pre-drawn noise (see ``compiled``)."""

    def __init__(self, kernel, state) -> None:
        self.kernel = kernel
        self.noise = NoisePlan(kernel, state)
        example, info = self.noise.example
        self.state = Packed(example._replace(step=0))
        self.trace = Packed((example.x, example.energy, info.accepted, info.divergent))
        self.fn = compile_steps(_scan_steps, state.x.device, state.x.numel())

    def __call__(self, state, generator, k: int):
        draws = self.noise.draw(k, generator)
        step = torch.zeros((), dtype=torch.long, device=state.x.device)  # a tensor carry
        carry, trace = self.fn(self.kernel, self.state, self.trace,
                               self.state.pack(state._replace(step=step)), draws)
        new = self.state.unpack(carry)
        return new._replace(step=state.step + k), self.trace.unpack(trace)


def _scan_steps(kernel, states: Packed, traces: Packed, carry, draws):
    """``scan`` of kernel steps over the pre-drawn noise: the state as the carry, and per
    step the position, energy and accept/divergence flags as the trace."""
    def one(carry, noise):
        new, info = kernel.step(states.unpack(carry), PreDrawn(list(noise)))
        energy = None if new.energy is None else new.energy.clone()
        trace = (new.x.clone(), energy, info.accepted, info.divergent)
        return unaliased(states.pack(new), carry), traces.pack(trace)
    return scan(one, carry, draws)


def _book_step(run, t: int, state, info, burn_in: int, thin: int) -> None:
    """The driver's bookkeeping for eager step ``t``: counters, trajectory, kept draw."""
    if t >= burn_in:
        if info.accepted is not None:
            run["accepted"] += info.accepted
            run["has_accept"] = True
        if info.divergent is not None:
            run["divergent"] += info.divergent
    if run["trajectory"] is not None:
        run["trajectory"][t] = state.x
    kept = t + 1 - burn_in
    if kept > 0 and kept % thin == 0:
        run["samples"][kept // thin - 1] = state.x
        if state.energy is not None:
            run["energy"][kept // thin - 1] = state.energy
        if run["accepted_at_draw"] is not None:
            run["accepted_at_draw"][kept // thin - 1] = run["accepted"]
            run["divergent_at_draw"][kept // thin - 1] = run["divergent"]


def _book_block(run, t0: int, trace, burn_in: int, thin: int) -> None:
    """The driver's per-step bookkeeping for steps ``t0 .. t0 + k - 1`` at once."""
    xs, energies, accepted, divergent = trace
    k = xs.shape[0]
    if run["trajectory"] is not None:
        run["trajectory"][t0:t0 + k] = xs
    first = max(burn_in - t0, 0)  # index of the block's first step after burn-in
    if first >= k:
        return
    keep = [i for i in range(first, k) if (t0 + i + 1 - burn_in) % thin == 0]
    draws = [(t0 + i + 1 - burn_in) // thin - 1 for i in keep]
    acc_cum = div_cum = None
    if accepted is not None:
        acc_cum = run["accepted"] + accepted[first:].long().cumsum(0)
        run["accepted"] = acc_cum[-1].clone()
        run["has_accept"] = True
    if divergent is not None:
        div_cum = run["divergent"] + divergent[first:].long().cumsum(0)
        run["divergent"] = div_cum[-1].clone()
    if not keep:
        return
    run["samples"][draws[0]:draws[-1] + 1] = xs[keep[0]:keep[-1] + 1:thin]
    if energies is not None and run["energy"] is not None:
        run["energy"][draws[0]:draws[-1] + 1] = energies[keep[0]:keep[-1] + 1:thin]
    if run["accepted_at_draw"] is not None and acc_cum is not None:
        rows = slice(keep[0] - first, keep[-1] - first + 1, thin)
        run["accepted_at_draw"][draws[0]:draws[-1] + 1] = acc_cum[rows]
        if div_cum is not None:
            run["divergent_at_draw"][draws[0]:draws[-1] + 1] = div_cum[rows]


def _nonfinite_step(samples: Tensor, energy: Tensor | None, final: Tensor, config) -> Tensor:
    """Per chain, the step of the first kept draw that is not finite (-1 if none).

    A non-finite position is absorbing (``x + anything`` stays non-finite; MALA and HMC
    reject such proposals), so the final state says which chains failed and only their
    draws are scanned for when.
    """
    c = samples.shape[0]
    n_steps, burn_in, thin = config["n_steps"], config["burn_in"], config["thin"]
    bad = ~torch.isfinite(final.reshape(c, -1)).all(1)
    if energy is not None:
        bad |= ~torch.isfinite(energy).all(1)
    step = torch.full((c,), -1, dtype=torch.long, device=samples.device)
    chains = bad.nonzero().flatten()
    if chains.numel():
        draws = samples[chains].reshape(chains.numel(), samples.shape[1], -1)
        bad_draw = ~torch.isfinite(draws).all(-1)
        if energy is not None:
            bad_draw |= ~torch.isfinite(energy[chains])
        first = burn_in + (bad_draw.int().argmax(1) + 1) * thin
        step[chains] = torch.where(bad_draw.any(1), first, burn_in + n_steps)
    return step


def _chain_first(t: Tensor | None) -> Tensor | None:
    """The draw-major run buffer seen chain-first: a view, no copy."""
    return None if t is None else t.movedim(0, 1)


def _finish(kernel, state, run, config) -> Chains:
    samples, energy = _chain_first(run["samples"]), _chain_first(run["energy"])
    c = samples.shape[0]
    nonfinite_step = _nonfinite_step(samples, energy, state.x, config)
    bad = (nonfinite_step >= 0).nonzero().flatten().tolist()
    if bad:
        steps = nonfinite_step[bad].tolist()
        listing = ", ".join(f"chain {i} by step {s}" for i, s in zip(bad[:10], steps[:10],
                                                                     strict=True))
        warnings.warn(f"{len(bad)} of {c} chains turned non-finite (NaN/Inf): {listing}"
                      f"{' ...' if len(bad) > 10 else ''}. Their draws are kept as they are and "
                      f"Chains.summary() leaves them out; reduce the step size.",
                      RuntimeWarning, stacklevel=3)
    accepted_share = (run["accepted"].double() / config["n_steps"]).to(samples.dtype)
    return Chains(
        samples=samples, final=state.x,
        acceptance_rate=accepted_share if run["has_accept"] else None,
        divergences=run["divergent"], nonfinite_step=nonfinite_step,
        trajectory=_chain_first(run["trajectory"]), final_state=state, seed=run["seed"],
        n_steps=config["n_steps"], burn_in=config["burn_in"], thin=config["thin"],
        kernel=getattr(kernel, "name", ""), _energy=energy, _energy_fn=kernel.energy,
        _accepted_at_draw=_chain_first(run["accepted_at_draw"]),
        _divergent_at_draw=_chain_first(run["divergent_at_draw"]))


def _save(path: Path, config, state, rng_state: Tensor, run) -> None:
    data = {"config": config, "state": dict(state._asdict()), "generator": rng_state,
            "run": dict(run)}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(data, tmp)
    os.replace(tmp, path)


def _resume(path: Path, config, state, generator, run):
    data = torch.load(path, weights_only=False, map_location=state.x.device)
    saved = {k: v for k, v in data["config"].items() if k != "seed" or config["seed"] is not None}
    wanted = {k: v for k, v in config.items() if k != "seed" or config["seed"] is not None}
    if saved != wanted:
        raise ValueError(f"checkpoint {str(path)!r} was written by a different run: it has "
                         f"{data['config']}, this run is {config}")
    generator.set_state(data["generator"])
    return type(state)(**data["state"]), data["run"]
