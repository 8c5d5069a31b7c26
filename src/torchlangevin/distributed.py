"""Chains across processes with ``torch.distributed``: launch with ``torchrun``, change nothing.

Under ``torchrun --nproc-per-node N script.py`` the environment carries ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init` starts the process group (gloo on CPU, NCCL
on GPUs, one GPU per local rank) and the samplers split their chains into contiguous slices,
one per rank. Each slice has generators derived from the seed and its chains' global indices,
so results do not depend on N (see ``chain_blocks`` in :func:`torchlangevin.sample`).

Results meet again through tensor collectives only: :func:`gather_chains` sends a run's
draws, energies, counters and statistics (never its kernel or energy, so a lambda or closure
energy runs under ``torchrun`` as it does in one process), :func:`all_gather_rows` joins
shares of unequal length (sizes first, then rows padded to the largest share), and
:func:`all_gather` carries plain data as JSON bytes. Nothing received is unpickled.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from .chains import Chains

__all__ = ["init", "world", "split", "device", "all_gather", "all_gather_rows",
           "all_gather_tensor", "gather_chains", "barrier", "active"]


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init(backend: str | None = None) -> bool:
    """Start the process group when launched by ``torchrun`` with ``WORLD_SIZE > 1``.

    Returns whether this process is one of several. Safe to call more than once.
    """
    if active():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if cuda else "gloo"))
        # the group we started we also close: exiting with gloo's threads alive can abort
        # the process ("terminate called without an active exception") after the work is done
        atexit.register(_shutdown)
    return dist.get_world_size() > 1


def _shutdown() -> None:
    if dist.is_initialized():  # no barrier: a peer that failed must not hang this exit
        dist.destroy_process_group()


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside a process group."""
    if active():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def device() -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` when GPUs are present, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def split(n: int, rank: int, size: int) -> range:
    """The contiguous share of ``range(n)`` that ``rank`` of ``size`` owns (sizes differ by at
    most one, larger shares first)."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


def _wire_device() -> torch.device:
    """Where the backend moves tensors: this rank's GPU under NCCL, the CPU otherwise."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


#: dtypes a gathered tensor may have, by their code in the header ranks exchange first
_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.uint8,
           torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)
_MAX_DIMS = 8


def _header(t: Tensor) -> Tensor:
    """``(rows, dtype code, ndim, trailing sizes..., 0 padding)`` of ``t``."""
    if t.dtype not in _DTYPES or not 1 <= t.ndim <= _MAX_DIMS:
        raise TypeError(f"all_gather_tensor: expected a tensor of 1 to {_MAX_DIMS} dimensions "
                        f"and a real or bool dtype; got {t.dtype} of shape {tuple(t.shape)}")
    head = [t.shape[0], _DTYPES.index(t.dtype), t.ndim, *t.shape[1:]]
    return torch.tensor(head + [0] * (2 + _MAX_DIMS - len(head)), dtype=torch.long)


def all_gather_rows(t: Tensor) -> list[Tensor]:
    """Every rank's ``t``, in rank order, as tensors; ranks may hold different numbers of
    rows (dim 0), the rest of the shape and the dtype must agree.

    Sizes travel first; each rank then sends its rows padded to the largest share, so one
    ``dist.all_gather`` of equal tensors moves them (gloo or NCCL; bools travel as bytes).
    Nothing is pickled. Outside a process group: ``[t]``.
    """
    if not active():
        return [t]
    wire, size = _wire_device(), dist.get_world_size()
    head = _header(t).to(wire)
    heads = [torch.empty_like(head) for _ in range(size)]
    dist.all_gather(heads, head)
    heads = [h.cpu() for h in heads]
    if any(not torch.equal(h[1:], heads[0][1:]) for h in heads):
        shapes = [(_DTYPES[int(h[1])], tuple(h[3:2 + int(h[2])].tolist())) for h in heads]
        raise ValueError(f"all_gather_rows: ranks hold tensors of different dtypes or row "
                         f"shapes (dtype, shape after dim 0 per rank): {shapes}")
    counts = [int(h[0]) for h in heads]
    carried = torch.uint8 if t.dtype == torch.bool else t.dtype
    padded = torch.zeros((max(counts), *t.shape[1:]), dtype=carried, device=wire)
    padded[:t.shape[0]] = t.to(wire, carried)
    parts = [torch.empty_like(padded) for _ in range(size)]
    if padded.numel():  # every rank sees the same sizes, so all skip together
        dist.all_gather(parts, padded.contiguous())
    return [p[:c].to(t.device, t.dtype) for p, c in zip(parts, counts, strict=True)]


def all_gather_tensor(t: Tensor) -> Tensor:
    """Every rank's ``t`` joined along dim 0 in rank order (see :func:`all_gather_rows`)."""
    return torch.cat(all_gather_rows(t)) if active() else t


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):  # numpy scalars: their Python value
        return value.item()
    raise TypeError(f"all_gather: expected plain data (numbers, strings, None, lists, dicts); "
                    f"got {type(value).__name__}; gather tensors with all_gather_tensor")


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, for plain data: numbers, strings, ``None`` and
    lists and dicts of them (tuples come back as lists, dict keys as strings).

    ``obj`` travels as JSON bytes in a tensor (:func:`all_gather_rows`), so nothing a peer
    sends is unpickled or run; tensors go through :func:`all_gather_tensor`.
    """
    if not active():
        return [obj]
    data = json.dumps(obj, default=_plain).encode()
    parts = all_gather_rows(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    return [json.loads(bytes(p.tolist())) for p in parts]


def gather_chains(local: Chains) -> Chains:
    """Every rank's :class:`~torchlangevin.Chains` joined along the chain dimension, in
    rank order, on every rank. The tensors travel (draws, energies, counters, statistics);
    the kernel and energy stay where they are: each rank keeps its own ``energy`` function
    for energies computed later, and ``final_state`` is dropped (as in ``Chains.concat``).
    """
    if not active():
        return local
    names = [f.name for f in dataclasses.fields(local)
             if isinstance(getattr(local, f.name), Tensor)]
    layout = {"tensors": names, "stats": sorted(local.stats)}
    if any(other != layout for other in all_gather(layout)):
        raise ValueError(f"gather_chains: ranks' Chains hold different traces; this rank has "
                         f"{layout}")
    joined = {name: all_gather_tensor(getattr(local, name)) for name in names}
    stats = {k: all_gather_tensor(local.stats[k]) for k in layout["stats"]}
    return dataclasses.replace(local, **joined, stats=stats, final_state=None)


def barrier() -> None:
    if active():
        dist.barrier()
