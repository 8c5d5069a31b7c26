"""Data for posterior sampling: tensors, a TensorDataset or a DataLoader, held as tensors.

Each chain draws its own minibatches without replacement: a fresh permutation of the rows per
epoch from the chain's own generator (incomplete last batches are dropped, as with
``DataLoader(drop_last=True)``). All chains start an epoch together, so one position counter
serves them all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def as_tensors(data: Any, name: str = "data") -> tuple[Tensor, ...]:
    """``X``, ``(X, y, ...)``, a ``TensorDataset`` or a ``DataLoader`` -> a tuple of tensors.

    The first tensor is the model's input; ``loss_fn`` receives the whole tuple.
    """
    tensors = _tensors_of(data, name)
    n = tensors[0].shape[0] if tensors[0].ndim else 0
    if n == 0:
        raise ValueError(f"{name}: has no rows")
    for i, t in enumerate(tensors):
        if t.ndim == 0 or t.shape[0] != n:
            raise ValueError(f"{name}: tensor {i} has shape {tuple(t.shape)}; every tensor "
                             f"needs the same number of rows ({n}) in its first dimension")
    return tensors


def _tensors_of(data: Any, name: str) -> tuple[Tensor, ...]:
    from torch.utils.data import DataLoader, Dataset, TensorDataset

    if isinstance(data, Tensor):
        return (data,)
    if isinstance(data, (tuple, list)) and data and all(isinstance(t, Tensor) for t in data):
        return tuple(data)
    if isinstance(data, TensorDataset):
        return tuple(data.tensors)
    if isinstance(data, DataLoader):
        return _loader_tensors(data, name)
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        from torch.utils.data import default_collate

        batch = default_collate([data[i] for i in range(len(data))])
        return tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
    raise TypeError(
        f"{name}: expected a tensor, a tuple of tensors, a TensorDataset or a DataLoader; "
        f"got {type(data).__name__}"
    )


def _loader_tensors(loader: Any, name: str) -> tuple[Tensor, ...]:
    from torch.utils.data import TensorDataset

    if isinstance(loader.dataset, TensorDataset):
        return tuple(loader.dataset.tensors)
    batches = [b if isinstance(b, (tuple, list)) else (b,) for b in loader]
    if not batches:
        raise ValueError(f"{name}: the DataLoader yields no batches")
    return tuple(torch.cat(parts) for parts in zip(*batches, strict=True))


def fingerprint(*parts: Any) -> str:
    """A SHA-256 over tensors (their bytes, dtype, shape) and plain values (their repr)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Tensor):
            t = part.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(part, (tuple, list)):
            h.update(fingerprint(*part).encode())
        else:
            h.update(repr(part).encode())
    return h.hexdigest()


class Minibatches:
    """Per-chain shuffled minibatch indices, ``(C, B)`` per call."""

    def __init__(self, n_rows: int, batch_size: int, generators: Sequence[torch.Generator],
                 device: torch.device) -> None:
        if batch_size > n_rows:
            raise ValueError(f"batch_size={batch_size}: larger than the data ({n_rows} rows)")
        self.n, self.b, self.gens, self.device = n_rows, batch_size, generators, device
        self.perm = torch.empty(len(generators), n_rows, dtype=torch.long)
        self.pos = n_rows  # forces a shuffle on the first call

    def _shuffle(self) -> None:
        if self.b == self.n:  # full batch: order does not matter, draw nothing
            self.perm = torch.arange(self.n).expand(len(self.gens), -1).clone()
        else:
            for c, g in enumerate(self.gens):
                self.perm[c] = torch.randperm(self.n, generator=g)
        self.pos = 0

    def next(self) -> Tensor:
        if self.pos + self.b > self.n:
            self._shuffle()
        idx = self.perm[:, self.pos:self.pos + self.b]
        self.pos += self.b
        return idx.to(self.device)
