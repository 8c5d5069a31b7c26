"""Incremental Zarr storage for :func:`posterior.sample`: write as you go, resume, cache.

Layout (Zarr format 3): the root group holds the result variables at full size from the
start; every per-chain array is chunked one chain per chunk, so processes that share a store
(one rank per block of chains) never write the same chunk, and draws (steps) are chunked by
``checkpoint_every`` draws (the steps between two checkpoints). Every chunk carries a
CRC32C checksum. Group ``state`` holds the commit marker ``next_step (chain,)``: the steps
whose records are all in the store, written after the chunks it describes; a chain is
finished when it reaches ``num_steps``.

A flush writes the records of steps ``next_step .. step - 1``, fsyncs them, and then writes
(and fsyncs) ``next_step = step``, so even a power loss cannot leave a marker ahead of its
records;
it runs at every step the driver checkpoints, just before the checkpoint (the run's weights,
generators and minibatch order, a file per block of chains beside the store). A run killed at
any moment therefore resumes from a checkpoint at or before ``next_step`` and re-records the
steps after it, unchanged; a checkpoint ahead of the store (an interrupt that saved the
checkpoint but not the flush) is discarded and the chains start over. A store is laid out
under a temporary name (``<store>.creating-<host>-<pid>``) and renamed into place: it exists
whole or not at all.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import socket
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ..util import sync_folder, sync_tree

STATE = "state"
NEXT_STEP = f"{STATE}/next_step"
#: the root attribute that marks a store as this module's, with its layout version
MARK = "torchlangevin_store"
FORMAT = 2
#: chunks equal to the fill value are written as well (Zarr's default drops them)
_WRITE_ALL = {"write_empty_chunks": True}


def _zarr():
    import zarr

    return zarr


class StoreDamaged(ValueError):
    """A store's chunk or metadata is missing or fails its checksum."""


class CheckpointAhead(Exception):
    """A block's checkpoint is further on than the records in the store."""

    def __init__(self, step: int) -> None:
        super().__init__(step)
        self.step = step


class ZarrStore:
    """One block of chains' view of a store: lay out, open, flush, read back."""

    def __init__(self, path: Path, key: str, config: dict, chains: range) -> None:
        self.path, self.key, self.config, self.chains = path, key, config, chains
        self.block = slice(chains.start, chains.stop)
        self.committed = 0  # this block's next_step: records before it are in the store
        self._group = None
        self._arrays: dict = {}  # opened once: each opening reads the array's metadata

    @property
    def checkpoint_path(self) -> Path:
        """The driver's checkpoint for this block of chains."""
        name = f"{self.path.name}.chains-{self.chains.start}-{self.chains.stop}.pt"
        return self.path.with_name(name)  # beside the store: Zarr warns of foreign files

    # -- layout ------------------------------------------------------------------------------
    def _laid_out(self) -> bool:
        return (self.path / "zarr.json").exists() or (self.path / ".zgroup").exists()

    def create(self, run) -> None:
        """Lay the store out unless it exists: under a name of this process's own, renamed
        into place when whole (processes racing to create it keep the first one)."""
        if self._laid_out():
            return
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise ValueError(f"store={str(self.path)!r}: exists and is not a Zarr store")
        prefix = f"{self.path.name}.creating-{socket.gethostname()}-"
        for left in self.path.parent.glob(prefix + "*"):  # by creations that were killed
            if not _alive(left.name[len(prefix):]):
                shutil.rmtree(left, ignore_errors=True)
        partial = self.path.with_name(prefix + str(os.getpid()))
        _lay_out(partial, run, self.key)
        sync_tree(partial, 0)  # whole on disk before it has the store's name
        try:
            os.replace(partial, self.path)  # an empty directory at the path is replaced
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)
            if not self._laid_out():
                raise
        else:
            sync_folder(self.path.parent)

    def _root(self):
        if self._group is not None:
            return self._group
        try:
            root = _zarr().open_group(self.path, mode="r+")
        except Exception as e:
            raise StoreDamaged(f"store={str(self.path)!r}: cannot open its root group "
                               f"({type(e).__name__}: {e})") from e
        mark = root.attrs.get(MARK)
        if not isinstance(mark, dict) or mark.get("format") != FORMAT:
            raise ValueError(f"store={str(self.path)!r}: a Zarr store not written by this "
                             f"version of posterior.sample (format {FORMAT}); pass another "
                             "path or delete it")
        self._group = root
        return root

    def _array(self, name: str):
        if name not in self._arrays:
            try:
                # a chunk of fill values is written too: a missing chunk is damage
                self._arrays[name] = self._root()[name].with_config(_WRITE_ALL)
            except Exception as e:
                raise StoreDamaged(f"store={str(self.path)!r}: array {name!r} is missing or "
                                   f"unreadable ({type(e).__name__}: {e}); the store is "
                                   "damaged: delete it and run again") from e
        return self._arrays[name]

    # -- resume --------------------------------------------------------------------------------
    def open(self, run, load: bool = True):
        """Load a previous run's records for this view's chains into ``run`` (creating the
        store first if needed; ``load=False``: only look). Returns the finished tree when all
        of them are already done.
        """
        self.create(run)
        root = self._root()
        if root.attrs.get("fingerprint") != self.key:
            raise ValueError(
                f"store={str(self.path)!r}: holds a run with a different configuration, model "
                "or data; pass another path or delete it"
            )
        self._check_chunks(NEXT_STEP, range(run.config["num_chains"]), {})
        self.committed = int(self._read(NEXT_STEP)[self.block].min())
        if self.committed >= run.num_steps:
            return self.tree(run)
        if self.committed and load:
            self._load(run, root)
        return None

    def _load(self, run, root) -> None:
        """The records written so far, back into the observer's buffers."""
        extent = _extent(run, self.committed)
        dev = run.nonfinite.device
        for name in _per_chain(root):
            self._check_chunks(name, self.chains, extent)
        values = {name: self._read(name, self.block) for name in _per_chain(root)}
        run.nonfinite = torch.as_tensor(values["nonfinite_step"], device=dev).clone()
        for name, t in _buffers(run):
            t.copy_(torch.as_tensor(values[name], device=dev))

    # -- writing -------------------------------------------------------------------------------
    def flush(self, run) -> None:
        """Write the records of steps ``next_step .. run.step - 1``, then ``next_step``."""
        s0, s1 = self.committed, run.step
        if s1 <= s0:
            return
        d0, d1 = _draws_done(run, s0), _draws_done(run, s1)
        rows = self.block
        since = time.time_ns() - 2_000_000_000  # a coarse file clock's slack: resyncs are free
        for name, t in _buffers(run):
            array = self._array(name)
            dims = _dims(array)
            if "draw" in dims and d1 > d0:
                array[rows, d0:d1] = _np(t[:, d0:d1])
            elif "step" in dims:
                array[rows, s0:s1] = _np(t[:, s0:s1])
            elif "draw" not in dims:
                array[rows] = _np(t)
        self._array("nonfinite_step")[rows] = _np(run.nonfinite)
        sync_tree(self.path, since)  # the records on disk before the marker says they are
        done = np.full(len(self.chains), s1, dtype=np.int64)
        since = time.time_ns() - 2_000_000_000
        self._array(NEXT_STEP)[rows] = done  # the commit marker, last
        sync_tree(self.path / STATE, since)
        self.committed = s1
        if s1 >= run.num_steps:
            self.checkpoint_path.unlink(missing_ok=True)  # finished: the store says it all

    def restart(self) -> None:
        """Drop this block's checkpoint that is ahead of the store: start over."""
        warnings.warn(f"store={str(self.path)!r}: the checkpoint {self.checkpoint_path.name!r} "
                      f"is further on than the store's records (step {self.committed}); "
                      f"chains {self.chains.start}..{self.chains.stop - 1} start over",
                      RuntimeWarning, stacklevel=3)
        self.checkpoint_path.unlink()
        self.committed = 0

    # -- reading -------------------------------------------------------------------------------
    def _read(self, name: str, rows: slice | None = None) -> np.ndarray:
        try:
            return np.asarray(self._array(name)[... if rows is None else rows])
        except Exception as e:
            raise StoreDamaged(f"store={str(self.path)!r}: array {name!r} cannot be read "
                               f"({type(e).__name__}: {e}); the store is damaged: delete it "
                               "and run again") from e

    def _check_chunks(self, name: str, chains: range, extent: dict[str, int]) -> None:
        """Raise unless every chunk of ``name`` holding recorded values of ``chains`` (draws
        and steps up to ``extent``) is present: a missing one would read as fill values."""
        array = self._array(name)
        key = _missing_chunk(self.path, array, chains, extent)
        if key is not None:
            raise StoreDamaged(f"store={str(self.path)!r}: array {name!r} has lost its chunk "
                               f"{key!r} (chains {chains.start}..{chains.stop - 1}); the store "
                               "is damaged: delete it and run again")

    def tree(self, run, all_chains: bool = False):
        """The stored result (this block's chains, or all) as an ``xarray.DataTree``; every
        chunk is checked and read here."""
        import xarray as xr

        root = self._root()
        n = run.config["num_chains"]
        chains = range(n) if all_chains else self.chains
        rows = slice(chains.start, chains.stop)
        full = _extent(run, run.num_steps)
        mark = root.attrs[MARK]
        data = {}
        for name in mark["variables"]:
            dims = _dims(self._array(name))
            per_chain = "chain" in dims
            self._check_chunks(name, chains if per_chain else range(0), full)
            data[name] = (dims, self._read(name, rows if per_chain else None))
        attrs = {**{k: v for k, v in root.attrs.items() if k != MARK}, **run.sampling_attrs()}
        coords = {k: data.pop(k) for k in mark["coords"]}
        return xr.DataTree(xr.Dataset(data, coords=coords, attrs=attrs))


def _alive(pid: str) -> bool:
    """Whether process ``pid`` of this host runs (a name that is no pid: no)."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _dims(array) -> tuple[str, ...]:
    return tuple(array.metadata.dimension_names or ())


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _buffers(run) -> list[tuple[str, torch.Tensor]]:
    """The observer's per-chain records by their names in the store."""
    return [("sampling_loss", run.sampling_loss), ("metrics_mala_accept", run.mala),
            ("sampling_loss_at_init", run.sampling_init),
            *[(f"loss_{k}", v) for k, v in run.obs_loss.items()],
            *[(f"metrics_{k}", v) for k, v in run.metrics.items()]]


def _per_chain(root) -> list[str]:
    """The arrays a run writes (per chain): all but those laid out with the store."""
    return [n for n in root.attrs[MARK]["variables"]
            if n not in root.attrs[MARK]["written_at_creation"]]


def _codecs():
    codecs = _zarr().codecs
    return (codecs.ZstdCodec(), codecs.Crc32cCodec())


def _lay_out(path: Path, run, key: str) -> None:
    """Every array at full size; coordinates, scalars and ``init_loss`` (the same for every
    chain) written now, for all chains; ``next_step`` zero."""
    zarr = _zarr()
    ds = run.dataset()
    n, every = run.config["num_chains"], run.checkpoint_every
    per_dim = {"chain": 1, "draw": every, "step": every * run.config["num_steps_bw_draws"]}
    at_creation = [*ds.coords, "init_loss", *(k for k, v in ds.data_vars.items()
                                              if "chain" not in v.dims)]
    mark = {"format": FORMAT, "variables": [*ds.data_vars, *ds.coords], "coords": [*ds.coords],
            "written_at_creation": at_creation}
    root = zarr.open_group(path, mode="w", zarr_format=3,
                           attributes={**ds.attrs, "fingerprint": key, MARK: mark})
    for name, var in ds.variables.items():
        shape = tuple(n if d == "chain" else s for d, s in zip(var.dims, var.shape,
                                                               strict=True))
        chunks = tuple(max(1, min(per_dim.get(d, s), s)) for d, s in zip(
            var.dims, shape, strict=True))
        if name == "chain":
            chunks = (n,)
        fill = -1 if name == "nonfinite_step" else math.nan \
            if np.issubdtype(var.dtype, np.floating) else 0
        array = root.create_array(name, shape=shape, chunks=chunks, dtype=var.dtype,
                                  fill_value=fill, compressors=_codecs(),
                                  dimension_names=var.dims, config=_WRITE_ALL)
        if name == "chain":
            array[...] = np.arange(n)
        elif name == "init_loss":
            array[...] = np.broadcast_to(var.values[:1], shape)
        elif name in at_creation:
            array[...] = var.values
    state = root.create_array(NEXT_STEP, shape=(n,), chunks=(1,), dtype=np.int64,
                              fill_value=0, compressors=_codecs(),
                              dimension_names=("chain",), config=_WRITE_ALL)
    state[...] = np.zeros(n, dtype=np.int64)


def _missing_chunk(path: Path, array, chains: range, extent: dict[str, int]) -> str | None:
    """The key of the first absent chunk of ``array`` in ``chains`` and, along ``draw`` and
    ``step``, up to ``extent`` (other dimensions: all of them); ``None`` if all are there."""
    spans = []
    for dim, size, chunk in zip(_dims(array), array.shape, array.chunks, strict=True):
        lo, hi = (chains.start, chains.stop) if dim == "chain" else (0, extent.get(dim, size))
        if hi <= lo:
            return None  # nothing recorded there yet
        spans.append(range(lo // chunk, (hi - 1) // chunk + 1))
    base = path / array.path
    for coords in itertools.product(*spans):
        key = array.metadata.encode_chunk_key(coords)
        if not (base / key).exists():
            return key
    return None


def _extent(run, step: int) -> dict[str, int]:
    """How far along ``draw`` and ``step`` the records of steps before ``step`` reach."""
    return {"draw": _draws_done(run, step), "step": step}


def _draws_done(run, step: int) -> int:
    """Draws taken in the first ``step`` steps."""
    c = run.config
    done = step - c["num_burnin_steps"]
    if done <= 0:
        return 0
    return min(c["num_draws"], (done - 1) // c["num_steps_bw_draws"] + 1)


def config_of(tree) -> dict:
    """The sampler configuration stored with a result."""
    return json.loads(tree.dataset.attrs["config"])
