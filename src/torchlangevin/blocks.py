"""The one block runner: ``k`` kernel steps as a scan over pre-drawn noise (and minibatches).

    state, trace = run_block(kernel, state, params, noise, batches)

``noise`` is ``(k, C, m)``, ``m = kernel.noise_size(state)``: row ``t`` is what step ``t``
consumes. The trace stacks, per step, the position, the energy and the kernel's ``Info``.
Eager sampling, ``sample(..., compile=True)`` (``torch.compile`` of this same function with
torch's ``scan`` in place of :func:`python_scan`) and the warm-up all call it, so a seed
gives the same samples eagerly and compiled. The driver draws a block's noise in one call
(:func:`draw_noise`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .trees import flatten, index_tree, map_tree, present, unflatten

__all__ = ["Trace", "run_block", "python_scan", "draw_noise", "NoiseStream", "block_length",
           "flatten", "unflatten", "present", "map_tree", "index_tree"]

Scan = Callable[..., tuple[Any, Any]]
Hook = Callable[[int, Any, Any], None]


class Trace(NamedTuple):
    """What a block records of each step, stacked along a leading step dimension."""

    x: Tensor
    energy: Tensor | None
    info: Any


def record(state: Any, info: Any) -> Trace:
    """A step's trace: the position, the energy and the info (``scan`` stacks them)."""
    return Trace(state.x, state.energy, info)


def run_block(kernel: Any, state: Any, params: Any, noise: Tensor, batches: Any = None,
              scan: Scan | None = None, hook: Hook | None = None,
              trace: Callable[[Any, Any], Trace] | None = record,
              donate: bool = False) -> tuple[Any, Trace | None]:
    """Run ``noise.shape[0]`` steps of ``kernel`` from ``state``.

    Args:
        kernel: anything with ``step(state, noise, params, batch)``.
        params: the kernel's parameters, the same for every step of the block.
        noise: ``(k, C, m)`` standard normals.
        batches: ``None``, or the steps' minibatches: a list of ``k``, or a tree of tensors
            with a leading dimension ``k``.
        scan: ``scan(body, state, xs)``; :func:`python_scan` by default.
        hook: ``hook(t, state, trace)`` after step ``t`` of the block (eager only).
        trace: what to keep of each step, ``trace(state, info)`` (default :func:`record`:
            position, energy, info), or ``None`` for nothing (eager only; ``hook`` sees
            each step).
        donate: let a kernel that updates ``in_place`` write each new state into the
            previous one's buffers (eager only; the caller's ``state`` is copied first, and
            ``hook`` must copy what it keeps).
    """
    if scan is None and trace is None:
        return _untraced_block(kernel, state, params, noise, batches, hook, donate)

    def body(carry, xs):
        new, info = kernel.step(carry, xs[0], params, xs[1] if len(xs) > 1 else None)
        return new, trace(new, info)

    xs = (noise,) if batches is None else (noise, batches)
    return python_scan(body, state, xs, hook) if scan is None else scan(body, state, xs)


def _untraced_block(kernel, state, params, noise, batches, hook, donate):
    """The eager loop without a trace: each step seen by ``hook`` only, the kernel updating
    in place where it can."""
    extra = {"donate": True} if donate and getattr(kernel, "in_place", False) else {}
    if extra:
        state = state._replace(x=state.x.clone())
    for t, row in enumerate(noise.unbind(0)):  # one unbind: cheaper than k indexings
        batch = None if batches is None else index_tree(batches, t)
        state, info = kernel.step(state, row, params, batch, **extra)
        if hook is not None:
            hook(t, state, Trace(None, None, info))
    return state, None


def python_scan(body: Callable, carry: Any, xs: Any, hook: Hook | None = None
                ) -> tuple[Any, Any]:
    """``scan`` as a Python loop: ``body(carry, xs[t])`` for each ``t``; the per-step
    outputs stacked along a new leading dimension."""
    k = _length(xs)
    stacked: list[Tensor | None] | None = None
    layout = None
    for t in range(k):
        carry, y = body(carry, index_tree(xs, t))
        leaves, layout = flatten(y)
        if stacked is None:
            stacked = [None if v is None else v.new_empty((k, *v.shape)) for v in leaves]
        for buf, v in zip(stacked, leaves, strict=True):
            if buf is not None:
                buf[t] = v
        if hook is not None:
            hook(t, carry, y)
    return carry, unflatten(layout, stacked or [])


def _length(xs: Any) -> int:
    first = xs[0]
    return first.shape[0] if isinstance(first, Tensor) else len(first)


def draw_noise(generators: Sequence[torch.Generator], k: int, c: int, m: int,
               like: Tensor) -> Tensor:
    """``(k, c, m)`` standard normals: with one generator, one draw; with one generator per
    chain, chain ``i``'s ``(k, m)`` from its own (so a chain's noise does not depend on the
    chains beside it)."""
    if len(generators) == 1:
        out = torch.empty((k, c, m), dtype=like.dtype, device=like.device)
        return out.normal_(generator=generators[0])
    if len(generators) != c:
        raise ValueError(f"seed: {len(generators)} per-chain seeds for {c} chains")
    return torch.stack([torch.empty((k, m), dtype=like.dtype, device=like.device)
                        .normal_(generator=g) for g in generators], dim=1)


class NoiseStream:
    """A run's noise, drawn ``chunk`` steps at a time (one call per chunk, see
    :func:`draw_noise`; the last chunk cut at the run's ``total`` steps) and handed out
    ``k`` steps at a time: which steps a block holds does not change the numbers, so runs
    with and without checkpoints or compiled blocks of any length see the same noise. A
    block's noise is valid until the next ``take``."""

    def __init__(self, generators: Sequence[torch.Generator], c: int, m: int, like: Tensor,
                 chunk: int, total: int) -> None:
        self.generators, self.c, self.m, self.like = generators, c, m, like
        self.chunk, self.total = chunk, total
        self.buffer: Tensor | None = None
        self.start, self.pos = 0, 0  # the current chunk's first step; steps taken from it
        self.at_chunk = [g.get_state() for g in generators]

    def _size(self) -> int:
        return self.buffer.shape[0] if self.buffer is not None else 0

    def _refill(self, start: int) -> None:
        """Draw the chunk of steps ``start .. start + chunk`` (cut at the run's end)."""
        self.at_chunk = [g.get_state() for g in self.generators]
        k = max(1, min(self.chunk, self.total - start))
        if self.buffer is not None and self.buffer.shape[0] == k and len(self.generators) == 1:
            # the same buffer again: fresh pages for every chunk cost more than the draw
            self.buffer.normal_(generator=self.generators[0])
        else:
            self.buffer = draw_noise(self.generators, k, self.c, self.m, self.like)
        self.start, self.pos = start, 0

    def take(self, k: int) -> Tensor:
        """The next ``k`` steps' noise, ``(k, c, m)``."""
        parts = []
        while k > 0:
            if self.pos == self._size():
                parts = [p.clone() for p in parts]  # the refill may reuse their buffer
                self._refill(self.start + self._size())
            n = min(k, self._size() - self.pos)
            parts.append(self.buffer[self.pos:self.pos + n])
            self.pos, k = self.pos + n, k - n
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def get_state(self) -> dict:
        """The generators' states before the current chunk, its first step and the position
        in it."""
        return {"generators": list(self.at_chunk), "start": self.start, "pos": self.pos,
                "size": self._size()}

    def set_state(self, state: dict) -> None:
        for g, s in zip(self.generators, state["generators"], strict=True):
            g.set_state(s)
        self.buffer, self.start, self.pos = None, state["start"], 0
        if state["size"]:  # redraw the chunk in use and skip what was taken
            self._refill(state["start"])
            self.pos = state["pos"]


def block_length(state_numel: int, noise_numel: int = 0) -> int:
    """Steps per block: about 2^20 numbers of state or of noise a step, whichever is more,
    so a block's noise and trace stay cache-sized, and at most 1,000 steps."""
    return max(1, min(1000, 2**20 // max(state_numel, noise_numel, 1)))
