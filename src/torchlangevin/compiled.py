"""The block runner compiled (``sample(..., compile=True)``, ``adapt(..., compile=True)``).

:class:`CompiledBlocks` is ``torch.compile`` of :func:`~torchlangevin.blocks.run_block` with
torch's ``scan`` in place of the Python loop: the step's graph is compiled once, whatever the
block length, and the loop runs in generated code (C++ on CPU, through Inductor's
``cpp_wrapper``; a CUDA graph on CUDA). The noise comes in as an input, drawn by the driver
as for an eager block, so compiled and eager runs of a seed give the same samples.

This module imports private parts of torch (``torch._higher_order_ops.scan`` and an
Inductor setting); only the driver and ``adapt`` import it, and only when asked to compile.
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch._higher_order_ops.scan import scan as _torch_scan

from .blocks import Trace, flatten, index_tree, map_tree, present, run_block, unflatten
from .energy import autograd_compile_message, check_compilable_gradient

__all__ = ["CompiledBlocks", "compile_steps", "check_traceable"]


class CompiledBlocks:
    """``run_block`` as one compiled program per run's shapes.

    A trace's layout (which fields are ``None``) must be known outside the compiled scan; the
    run's first step shows it, so the first block's first step runs eagerly and the rest of
    that block, and every later block, compiled.
    """

    def __init__(self, device: torch.device, state_numel: int) -> None:
        self.fn = compile_steps(_compiled_block, device, state_numel)
        self.layout: Any = None

    def __call__(self, kernel: Any, state: Any, params: Any, noise: Tensor,
                 batches: Any = None) -> tuple[Any, Trace]:
        check_traceable(kernel)
        k = noise.shape[0]
        # the trace's layout per kind of kernel and state: one instance may run several
        # (the MCLMC tuning's stages do)
        key = (type(kernel), getattr(kernel, "has_accept_step", None), flatten(state)[1])
        self.layout = _LAYOUTS.get(key)
        if self.layout is None:
            first, head = run_block(kernel, state, params, noise[:1],
                                    None if batches is None else index_tree(batches, slice(0, 1)))
            self.layout = _LAYOUTS[key] = flatten(map_tree(lambda v: v[0], head))[1]
            if k == 1:
                return first, head
            rest, tail = self(kernel, first, params, noise[1:],
                              None if batches is None else index_tree(batches, slice(1, k)))
            return rest, _concat(head, tail)
        torch._dynamo.mark_dynamic(noise, 0)  # one compile for every block length
        # step counters are ints outside and 0-dim tensors inside (scan carries tensors)
        leaves, layout = flatten(state)
        counters = {i: v for i, v in enumerate(leaves) if isinstance(v, int)}
        zero = torch.zeros((), dtype=torch.long, device=noise.device)
        carry = unflatten(layout, [zero if i in counters else v for i, v in enumerate(leaves)])
        new, trace = self.fn(kernel, carry, params, noise, batches, self.layout)
        leaves = flatten(new)[0]
        new = unflatten(layout, [counters[i] + k if i in counters else v
                                 for i, v in enumerate(leaves)])
        return new, trace


def _energy_of(kernel: Any) -> Any:
    """The energy a kernel differentiates (through wrappers such as adapt's warm-up)."""
    while not hasattr(kernel, "energy") and hasattr(kernel, "kernel"):
        kernel = kernel.kernel
    return getattr(kernel, "energy", None)


def check_traceable(kernel: Any) -> None:
    """Fail before compiling a kernel whose energy's gradient would be
    ``torch.autograd.grad`` (:func:`~torchlangevin.energy.check_compilable_gradient`)."""
    energy = _energy_of(kernel)
    if energy is not None:
        check_compilable_gradient(energy)


def _compiled_block(kernel, state, params, noise, batches, layout):
    return run_block(kernel, state, params, noise, batches,
                     scan=functools.partial(_tensor_scan, layout=layout))


def _tensor_scan(body: Callable, carry: Any, xs: Any, layout: Any) -> tuple[Any, Any]:
    """torch's ``scan`` over trees with ``None`` leaves (it takes tensors only): the carry's
    layout is its own, the per-step output's is ``layout``."""
    carry_leaves, carry_layout = flatten(carry)
    xs_leaves, xs_layout = flatten(xs)

    def tensor_body(c, x):
        new, y = body(unflatten(carry_layout, _fill(present(carry_layout), c)),
                      unflatten(xs_layout, _fill(present(xs_layout), x)))
        new_leaves = [v for v in flatten(new)[0] if v is not None]
        ids = {id(t) for t in c}  # scan forbids returning an input carry as it is
        new_leaves = [t.clone() if id(t) in ids else t for t in new_leaves]
        ids |= {id(t) for t in new_leaves}  # ... and outputs that alias each other
        return new_leaves, [v.clone() if id(v) in ids else v
                            for v in flatten(y)[0] if v is not None]

    final, ys = _torch_scan(tensor_body, [v for v in carry_leaves if v is not None],
                            [v for v in xs_leaves if v is not None])
    return (unflatten(carry_layout, _fill(present(carry_layout), final)),
            unflatten(layout, _fill(present(layout), ys)))


def _fill(mask: list[bool], tensors) -> list:
    """Per leaf, the next of ``tensors`` where one is present, else ``None``."""
    it = iter(tensors)
    return [next(it) if p else None for p in mask]


def _concat(a: Trace, b: Trace) -> Trace:
    la, layout = flatten(a)
    lb, _ = flatten(b)
    return unflatten(layout, [None if u is None else torch.cat([u, v])
                              for u, v in zip(la, lb, strict=True)])


# (kernel type, accept step, state layout) -> the layout of its steps' trace, learnt from
# the first step of the first run
_LAYOUTS: dict = {}
_CODE: dict = {}  # a block function's code -> the copy new compiles go to
# (id of the code, device type) -> its torch.compile wrapper, built once; by id, as code
# objects compare by content (the fresh copy equals its original); the wrapper's function
# keeps the code alive, so the id stays its own
_COMPILED: dict = {}

# Inductor inlines a chain of pointwise ops into one kernel until it holds more than
# ``realize_cpu_opcount_threshold`` ops, and re-generates the inlined expression at every
# use: a leapfrog trajectory is such a chain, and the CPU default (50) makes its compile
# take minutes; 30 (the GPU default) compiles it in seconds and runs as fast.
_CPU_OPTIONS = {"cpp_wrapper": True, "realize_cpu_opcount_threshold": 30}

# Up to this many state numbers a step's kernels are small and one function per kernel pays
# (allocation is most of their cost); above it each function is an OpenMP region of its own,
# which costs more than it saves.
_SPLIT_MAX_NUMEL = 2**14


@contextlib.contextmanager
def _function_per_kernel(state_numel: int):
    """Compiles started inside get one C++ function per fused kernel, for states of up to
    ``_SPLIT_MAX_NUMEL`` numbers.

    Inductor's C++ backend writes every kernel of a graph into one C++ function until it has
    500 arguments, so all their buffers are allocated before it and live to its end; in a
    scan body that is every buffer of a step, allocated afresh each iteration. One function
    per kernel lets the wrapper hand a dead buffer to the next kernel. The setting is a
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

    ``fn`` takes what varies from run to run as arguments, so one wrapper per function
    serves every run (building one is not free). Dynamo keeps compiled versions per code
    object, at most ``recompile_limit``, and under ``fullgraph`` fails beyond that; runs of
    the same shapes share a version. When a new shape finds the cache full, later compiles
    go to a fresh copy of the code object.
    """
    if fn.__closure__:
        raise ValueError(f"compile_steps needs a function without a closure; "
                         f"{fn.__qualname__} has one")

    def build():
        code = _CODE.get(fn.__code__, fn.__code__)
        key = (id(code), device.type)
        if key not in _COMPILED:
            f = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__)
            # static shapes but for the block length (mark_dynamic): without dynamic=False
            # a second chain count would make the chain dim symbolic
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
            except torch._dynamo.exc.UncapturedHigherOrderOpError as err:
                if "autograd" not in str(err):
                    raise
                # a grad(x) of the energy's own that calls torch.autograd.grad
                raise ValueError(autograd_compile_message(_energy_of(args[0]))) from None
        if device.type == "cuda":  # a CUDA graph's outputs are overwritten by its next replay
            out = map_tree(lambda v: v.clone() if isinstance(v, Tensor) else v, out)
        return out
    return call

