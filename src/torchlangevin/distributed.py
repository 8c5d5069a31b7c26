"""Chains across processes with ``torch.distributed``: launch with ``torchrun``, change nothing.

Under ``torchrun --nproc-per-node N script.py`` the environment carries ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init` starts the process group (gloo on CPU, NCCL
on GPUs, one GPU per local rank) and the samplers split their chains into contiguous slices,
one per rank. Each slice has generators derived from the seed and its chains' global indices,
so results do not depend on N (see ``chain_blocks`` in :func:`torchlangevin.sample`).
"""

from __future__ import annotations

import atexit
import os
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["init", "world", "split", "device", "all_gather", "barrier", "active"]


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


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (pickled; for results, not for tensors per step)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if active():
        dist.barrier()
