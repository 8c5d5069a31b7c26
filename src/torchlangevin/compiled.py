"""Many kernel steps as one compiled program (``sample(..., compile=True)``, ``adapt``).

A block of ``k`` steps is ``torch.compile`` of a ``scan`` over the steps: the step's graph
is compiled once, whatever ``k``, and the loop runs in generated code (C++ on CPU, through
Inductor's ``cpp_wrapper``), so a step costs its arithmetic, not Python dispatch. The
block's noise is drawn first, eagerly, from the run's generator (:class:`NoisePlan`): the
numbers eager steps draw, so a compiled run gives the eager run's samples to float rounding.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable

import torch
from torch import Tensor
from torch._higher_order_ops.scan import scan
from torch.utils._pytree import tree_map_only

from .kernels.base import PreDrawn, draw_size

__all__ = ["NoisePlan", "Packed", "block_length", "compile_steps", "scan", "unaliased"]


def block_length(state_numel: int) -> int:
    """Default steps per compiled block: about 2^20 state numbers (so the block's noise and
    trace stay cache-sized; 419-step blocks cost a 2-D double well a quarter of its rate),
    at most 1,000 steps."""
    return max(1, min(1000, 2**20 // max(state_numel, 1)))


class NoisePlan:
    """What one step of ``kernel`` draws, in order, recorded by a throwaway step."""

    def __init__(self, kernel, state) -> None:
        recorder = PreDrawn()
        self.example = kernel.step(state, recorder)  # (state, info): their None fields
        self.plan = recorder.plan

    def draw(self, k: int, generator: torch.Generator) -> list[Tensor]:
        """Noise for ``k`` steps: one ``(k, draw_size(n))`` tensor per draw of a step, row
        ``t`` what step ``t`` draws eagerly. The leading dim is dynamic: one compile serves
        every block length.

        A kernel draws once per step, so on CPU this is one ``normal_`` call: ``k`` rows of
        a multiple of 16 numbers are the numbers of ``k`` calls (see ``draw_size``). On
        CUDA (whose generator advances by launch, not by number) and for a kernel that
        draws more than once a step, it is filled row by row in the eager order."""
        bufs = [torch.empty((k, draw_size(n)), dtype=dtype, device=device)
                for n, dtype, device in self.plan]
        if len(bufs) == 1 and bufs[0].device.type == "cpu":
            bufs[0].normal_(generator=generator)
        else:
            for t in range(k):
                for buf in bufs:
                    buf[t].normal_(generator=generator)
        for buf in bufs:
            torch._dynamo.mark_dynamic(buf, 0)
        return bufs


class Packed:
    """A NamedTuple with ``None`` fields (``scan`` carries tensors only) as the tuple of
    its tensors, and back."""

    def __init__(self, example) -> None:
        self.cls, self.none = type(example), tuple(v is None for v in example)

    def pack(self, tree) -> tuple[Tensor, ...]:
        return tuple(v for v, none in zip(tree, self.none, strict=True) if not none)

    def unpack(self, tensors):
        it = iter(tensors)
        values = [None if none else next(it) for none in self.none]
        return tuple(values) if self.cls is tuple else self.cls(*values)


def unaliased(out: tuple[Tensor, ...], inp: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """``out`` with every tensor that is one of ``inp`` cloned: a ``scan`` step may not
    return its input carry as it is (a state a kernel left unchanged, say)."""
    ids = {id(t) for t in inp}
    return tuple(t.clone() if id(t) in ids else t for t in out)


_CODE: dict = {}  # a block function's code -> the copy new compiles go to
# (id of the code, device type) -> its torch.compile wrapper, built once; by id, as code
# objects compare by content (the fresh copy equals its original); the wrapper's function
# keeps the code alive, so the id stays its own
_COMPILED: dict = {}

# Inductor fuses a chain of pointwise ops into one kernel until it holds more than
# ``realize_cpu_opcount_threshold`` ops (50 by default on CPU). A leapfrog trajectory is
# such a chain, and below that bound the inlined expression is re-generated at every use:
# HMC with 10 leapfrog steps on a 100-D Gaussian took 2-5 minutes to compile (L=5: 27 s).
# At 30 (the GPU default) it compiles in ~16 s and runs as fast (778 vs 843 us/trajectory).
_CPU_OPTIONS = {"cpp_wrapper": True, "realize_cpu_opcount_threshold": 30}


# Up to this many state numbers a step's kernels are small and one function per kernel
# pays (allocation is most of their cost); above it each function is an OpenMP region of
# its own: on workload (c) (1e5 numbers) it was slower in both paired runs, on (a) (2e4)
# no clear difference either way.
_SPLIT_MAX_NUMEL = 2**14


@contextlib.contextmanager
def _function_per_kernel(state_numel: int):
    """Compiles started inside get one C++ function per fused kernel, for states of up to
    ``_SPLIT_MAX_NUMEL`` numbers.

    Inductor's C++ backend writes every kernel of a graph into one C++ function until it
    has 500 arguments, so their buffers are all allocated before it and live to its end.
    In a scan body that is every buffer of a step, allocated afresh each iteration: the
    funnel's HMC step made 49 mallocs for one function. One function per kernel lets the
    wrapper hand a dead buffer to the next kernel, as it does between functions (16
    mallocs): Funnel(10), 32 chains, 1,000 trajectories 39 -> 25 ms. The setting is a
    class attribute, restored on exit; a torch without it compiles as it would.
    """
    try:
        from torch._inductor.codegen.cpp import CppScheduling
        old = CppScheduling.MAX_FUSED_KERNEL_ARGS_NUM
    except (ImportError, AttributeError):  # another torch: its own default
        yield
        return
    if state_numel <= _SPLIT_MAX_NUMEL:
        CppScheduling.MAX_FUSED_KERNEL_ARGS_NUM = 0
    try:
        yield
    finally:
        CppScheduling.MAX_FUSED_KERNEL_ARGS_NUM = old


def compile_steps(fn: Callable, device: torch.device, state_numel: int) -> Callable:
    """``torch.compile`` a module-level function that scans steps: on CPU the loop in C++
    (``cpp_wrapper``), on CUDA captured as a CUDA graph (``mode="reduce-overhead"``).

    ``fn`` takes what varies from run to run (the kernel, its packers) as arguments, so one
    wrapper per function serves every run: building one costs ~1.5 ms, a run of 32 small
    chains a few ms. Dynamo keeps compiled versions per code object, at most
    ``recompile_limit`` (8), and under ``fullgraph`` fails beyond that; runs of the same
    shapes share a version. When a new shape finds the cache full, later compiles go to a
    fresh copy of the code object.
    """
    if fn.__closure__:
        raise ValueError(f"compile_steps needs a function without a closure; "
                         f"{fn.__qualname__} has one")

    def build():
        code = _CODE.get(fn.__code__, fn.__code__)
        key = (id(code), device.type)
        if key not in _COMPILED:
            f = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__)
            # static shapes but for the block length (mark_dynamic in NoisePlan.draw):
            # without dynamic=False a second chain count would make the chain dim symbolic
            _COMPILED[key] = (
                torch.compile(f, dynamic=False, mode="reduce-overhead")
                if device.type == "cuda"
                else torch.compile(f, fullgraph=True, dynamic=False, options=_CPU_OPTIONS))
        return _COMPILED[key]

    compiled = build()

    def call(*args):
        nonlocal compiled
        with _function_per_kernel(state_numel):
            try:
                out = compiled(*args)
            except torch._dynamo.exc.FailOnRecompileLimitHit:
                _CODE[fn.__code__] = fn.__code__.replace()  # a new code object: empty cache
                compiled = build()
                out = compiled(*args)
        if device.type == "cuda":  # a CUDA graph's outputs are overwritten by its next replay
            out = tree_map_only(Tensor, torch.clone, out)
        return out
    return call
