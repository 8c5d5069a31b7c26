"""What every module shares: argument checks, progress bars, atomic file writes and the
memory a request may use.

Each check returns the value it accepted and otherwise raises ``ValueError`` (``TypeError``
for the wrong kind of value) with one message format: ``"{name} must be {expected}; got
{value!r}"``, so an error names the argument, the value and what was expected.
"""

from __future__ import annotations

import math
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["integer", "positive", "non_negative", "in_range", "progress_bar", "atomic_write",
           "atomic_save", "seeded_generator", "available_memory", "check_fits"]


def seeded_generator(seed: int | None, device: Any = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (checked: an integer >= 0),
    or from fresh entropy when ``seed`` is ``None``."""
    value = integer("seed", seed, 0) if seed is not None else secrets.randbits(62)
    return torch.Generator(device=device).manual_seed(value)


def integer(name: str, value: Any, minimum: int = 0) -> int:
    """An ``int`` (not a ``bool``; NumPy integers accepted) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def boolean(name: str, value: Any) -> bool:
    """``True`` or ``False`` itself (not a truthy value)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return value


def _real(name: str, value: Any, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be {expected}; got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be {expected}; got {value!r}")
    return v


def positive(name: str, value: Any) -> float:
    """A finite number ``> 0``."""
    v = _real(name, value, "a finite number > 0")
    if not v > 0:
        raise ValueError(f"{name} must be > 0; got {value!r}")
    return v


def non_negative(name: str, value: Any) -> float:
    """A finite number ``>= 0``."""
    v = _real(name, value, "a finite number >= 0")
    if not v >= 0:
        raise ValueError(f"{name} must be >= 0; got {value!r}")
    return v


def in_range(name: str, value: Any, low: float, high: float, closed: bool = False) -> float:
    """A number in ``[low, high)`` (``[low, high]`` with ``closed=True``)."""
    interval = f"[{low:g}, {high:g}]" if closed else f"[{low:g}, {high:g})"
    v = _real(name, value, f"a number in {interval}")
    if not (low <= v <= high if closed else low <= v < high):
        raise ValueError(f"{name} must be a number in {interval}; got {value!r}")
    return v


def progress_bar(enabled: bool, total: int, desc: str, unit: str = "step",
                 min_total: int = 200):
    """A tqdm bar for ``total`` units, or ``None``: when disabled, for short runs, when
    stderr is not a terminal, or without tqdm."""
    if not enabled or total < min_total or not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit=unit, leave=False, mininterval=0.25)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, fsync it, rename it over ``path``
    and fsync the directory: a reader, or a run killed at any instant (even the machine
    losing power), sees the old file or the new one, never a part. A failed write removes
    the temporary file and leaves ``path`` as it was."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_folder(path.parent)  # the rename itself made durable


def sync_folder(folder: str | os.PathLike) -> None:
    """fsync a folder, so the names created in it survive a power loss (POSIX only:
    Windows cannot open a folder)."""
    if os.name == "posix":
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def sync_tree(root: str | os.PathLike, since_ns: int) -> None:
    """fsync every file under ``root`` modified at or after ``since_ns`` (``time.time_ns``),
    then the folders holding them: what a library (Zarr) wrote there is on disk. A file
    that is gone by the time it is reached was another writer's temporary one (another
    rank's chunk, renamed into place), which that writer syncs itself: it is skipped."""
    folders = set()
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            try:
                if os.stat(path).st_mtime_ns < since_ns:
                    continue
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
            except FileNotFoundError:
                continue
            folders.add(folder)
    for folder in sorted(folders, key=len, reverse=True):
        sync_folder(folder)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` through :func:`atomic_write`."""
    import torch

    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def available_memory(device: Any = "cpu") -> int | None:
    """Bytes that can still be allocated on ``device``: on CUDA the free memory
    (``torch.cuda.mem_get_info``), on the CPU ``MemAvailable`` of ``/proc/meminfo`` (else
    the free physical pages, ``os.sysconf``); ``None`` where the device does not say."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(parts: dict[str, int], device: Any, advice: str) -> None:
    """Fail before allocating unless ``parts`` (what -> bytes) fit in the memory available
    on ``device``; the message gives each part's size in GB and ``advice``."""
    need = sum(parts.values())
    have = available_memory(device)
    if have is None or need <= have:
        return
    listing = " + ".join(f"{what} {n / 1e9:.3g} GB" for what, n in parts.items() if n)
    raise ValueError(f"this request needs {need / 1e9:.3g} GB ({listing}) but "
                     f"{have / 1e9:.3g} GB of memory is available on {torch.device(device)}; "
                     f"{advice}")
