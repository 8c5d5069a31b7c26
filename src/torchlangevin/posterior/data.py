"""Data for posterior sampling: tensors, a TensorDataset, a DataLoader or a dataset of token
dicts (a HuggingFace ``datasets.Dataset`` with ``input_ids``), held as tensors.

Each chain draws its own minibatches without replacement: a fresh permutation of the rows per
epoch from the chain's own generator (incomplete last batches are dropped, as with
``DataLoader(drop_last=True)``). All chains start an epoch together, so one position counter
serves them all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor


def as_tensors(data: Any, name: str = "data") -> tuple[Tensor, ...]:
    """``X``, ``(X, y, ...)``, a ``TensorDataset``, a ``DataLoader`` or a map-style dataset
    of dicts with ``input_ids`` (a HuggingFace ``datasets.Dataset``) -> a tuple of tensors.

    The first tensor is the model's input (``input_ids`` for token data); ``loss_fn``
    receives the whole tuple.
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
    if _is_token_dataset(data):
        return (_token_ids(data, name),)
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        from torch.utils.data import default_collate

        batch = default_collate([data[i] for i in range(len(data))])
        return tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
    raise TypeError(
        f"{name}: expected a tensor, a tuple of tensors, a TensorDataset, a DataLoader or a "
        f"dataset of dicts with 'input_ids'; got {type(data).__name__}"
    )


def _is_token_dataset(data: Any) -> bool:
    """A HuggingFace ``datasets.Dataset`` or a map-style dataset whose items are dicts."""
    if hasattr(data, "column_names") and hasattr(data, "with_format"):
        return True
    if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")) or isinstance(data, Tensor):
        return False
    try:
        return len(data) > 0 and isinstance(data[0], Mapping)
    except (KeyError, IndexError, TypeError):
        return False


def _token_ids(data: Any, name: str) -> Tensor:
    """``input_ids`` of every row as one ``(rows, T)`` integer tensor."""
    columns = getattr(data, "column_names", None)
    if columns is not None:  # HuggingFace: the column in one call, no per-row Python
        if "input_ids" not in columns:
            raise ValueError(f"{name}: the dataset has no 'input_ids' column; it has {columns}")
        ids = data.with_format("torch", columns=["input_ids"])[:]["input_ids"]
        return _as_ids(ids, name)
    if len(data) == 0:
        raise ValueError(f"{name}: has no rows")
    rows = []
    for i in range(len(data)):
        item = data[i]
        if "input_ids" not in item:
            raise ValueError(f"{name}: row {i} has no 'input_ids'; its keys are {sorted(item)}")
        rows.append(torch.as_tensor(item["input_ids"]))
    return _as_ids(rows, name)


def _as_ids(ids: Any, name: str) -> Tensor:
    if isinstance(ids, (list, tuple)):
        lengths = sorted({len(r) for r in ids})
        if len(lengths) > 1:
            raise ValueError(f"{name}: input_ids rows have different lengths {lengths[:5]}; "
                             "pad or chunk them to one length")
        ids = torch.stack([torch.as_tensor(r) for r in ids]) if ids else torch.empty(0, 0)
    if ids.dtype.is_floating_point or ids.ndim != 2:
        raise ValueError(f"{name}: input_ids must be integer token ids of shape (rows, T); got "
                         f"{ids.dtype} of shape {tuple(ids.shape)}")
    return ids.long()


def _loader_tensors(loader: Any, name: str) -> tuple[Tensor, ...]:
    from torch.utils.data import TensorDataset

    if isinstance(loader.dataset, TensorDataset):
        return tuple(loader.dataset.tensors)
    batches = [_loader_batch(b, name) for b in loader]
    if not batches:
        raise ValueError(f"{name}: the DataLoader yields no batches")
    return tuple(torch.cat(parts) for parts in zip(*batches, strict=True))


def _loader_batch(batch: Any, name: str) -> tuple[Tensor, ...]:
    if isinstance(batch, Mapping):  # a DataLoader over a dataset of token dicts
        if "input_ids" not in batch:
            raise ValueError(f"{name}: the DataLoader yields dicts without 'input_ids'; "
                             f"keys {sorted(batch)}")
        ids = batch["input_ids"]
        if isinstance(ids, (list, tuple)):  # default_collate of lists: one tensor a position
            ids = torch.stack(list(ids), dim=1)
        return (ids,)
    return batch if isinstance(batch, (tuple, list)) else (batch,)


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
