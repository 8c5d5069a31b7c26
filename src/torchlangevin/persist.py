"""Files that cannot run code, carry checksums and say what is wrong with them.

Every file torchlangevin writes (``tl.sample`` and ``ebm.fit`` checkpoints, ``Chains.save``)
goes through :func:`save` and comes back through :func:`load`:

* **plain data only**: the payload is a tree of dicts, lists and tuples whose leaves are
  tensors, numbers, strings and ``None``; :func:`save` refuses anything else, and
  :func:`load` reads with ``torch.load(weights_only=True)``, so a file from elsewhere that
  would build other objects (and could run code doing so) is refused, not executed;
* **checksums**: the file holds, beside the payload, the SHA-256 of every tensor
  (``sha256(dtype, shape, bytes in logical order)``) and of the rest of the tree (keys,
  numbers, strings); a flipped byte or a truncated file is a :class:`PersistError` naming
  the file and what is wrong, never a half-loaded or silently altered state;
* **crash-safe**: written to a temporary name, fsynced, renamed over the old file
  (:func:`~torchlangevin.util.atomic_write`), so a ``kill -9`` at any instant leaves the
  old file or the new one;
* **compact**: a tensor that views part of a larger buffer is written as that part only.

:func:`fingerprint` and :func:`differences` describe and compare run configurations, so a
checkpoint can refuse a resume with other arguments by naming the field.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .util import atomic_write

__all__ = ["PersistError", "save", "load", "digest", "fingerprint", "differences"]

FORMAT = "torchlangevin"
VERSION = 1
_PLAIN = (bool, int, float, str, type(None))
_CHUNK = 1 << 26  # bytes hashed at a time: a non-contiguous view is copied this much at once


class PersistError(ValueError):
    """A file that cannot be loaded as what it should be: not plain data (loading would run
    code), truncated, corrupted (a checksum fails) or of another kind."""


def digest(t: Tensor) -> str:
    """``sha256`` of a tensor's dtype, shape and bytes in logical (row-major) order, so the
    same values give the same digest whatever the device or strides."""
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    t = t.detach().reshape(1) if t.ndim == 0 else t.detach()
    rows = max(1, _CHUNK // max(1, t[0].numel() * t.element_size())) if t.shape[0] else 1
    for i in range(0, t.shape[0], rows):  # a view is copied a chunk at a time, not whole
        h.update(t[i:i + rows].cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _walk(tree: Any, name: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf of a plain tree with its path (``state[0]``, ``run.samples``)."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"cannot store the key {k!r} at {name or 'the top'}: keys "
                                f"must be strings or integers")
            child = f"{name}[{k}]" if isinstance(k, int) else f"{name}.{k}" if name else k
            yield from _walk(v, child)
    elif type(tree) in (list, tuple):
        for i, v in enumerate(tree):
            yield from _walk(v, f"{name}[{i}]")
    elif isinstance(tree, Tensor) or isinstance(tree, _PLAIN):
        yield name, tree
    else:
        raise TypeError(f"cannot store {type(tree).__qualname__} at {name or 'the top'}: a "
                        f"torchlangevin file holds only tensors, numbers, strings, None, "
                        f"lists, tuples and dicts")


def _skeleton(tree: Any) -> str:
    """The tree with every tensor as its dtype and shape: what the structure checksum
    covers (keys, numbers, strings, containers)."""
    if isinstance(tree, dict):
        return "{" + ",".join(f"{k!r}:{_skeleton(v)}" for k, v in tree.items()) + "}"
    if type(tree) in (list, tuple):
        brackets = "[]" if isinstance(tree, list) else "()"
        return brackets[0] + ",".join(_skeleton(v) for v in tree) + brackets[1]
    if isinstance(tree, Tensor):
        return f"T({tree.dtype},{tuple(tree.shape)})"
    return repr(tree)


def _compact(t: Tensor) -> Tensor:
    """``t`` itself, or a copy of just its elements when it views a larger storage
    (``torch.save`` writes a view's whole storage)."""
    if t.untyped_storage().nbytes() > t.numel() * t.element_size():
        return t.clone(memory_format=torch.contiguous_format)
    return t


def _compacted(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _compacted(v) for k, v in tree.items()}
    if type(tree) in (list, tuple):
        return type(tree)(_compacted(v) for v in tree)
    return _compact(tree) if isinstance(tree, Tensor) else tree


def save(path: str | os.PathLike, kind: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` (a plain tree) to ``path`` with its checksums, crash-safely.

    ``kind`` names what the file holds (``"tl.sample checkpoint"``); :func:`load` checks it.
    Raises ``TypeError`` naming the first value that is not plain data.
    """
    payload = _compacted(payload)
    sums = {name: digest(v) for name, v in _walk(payload) if isinstance(v, Tensor)}
    envelope = {"format": FORMAT, "version": VERSION, "kind": kind, "payload": payload,
                "checksums": sums,
                "structure": hashlib.sha256(_skeleton(payload).encode()).hexdigest()}
    atomic_write(path, lambda tmp: torch.save(envelope, tmp))


def _read(path: Path, label: str) -> Any:
    """``torch.load(weights_only=True)`` on the CPU, its failures said in one sentence."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError, MemoryError):
        raise
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):
            detail = next((line.strip() for line in str(e).splitlines()
                           if "GLOBAL" in line or "Unsupported" in line), "")
            raise PersistError(
                f"{label} {str(path)!r}: refusing to load: it holds Python objects other "
                f"than tensors, numbers and strings, and building them could run code "
                f"({detail or 'not plain data'}). torchlangevin writes plain data only: the "
                f"file was written by something else, or is corrupted") from None
        raise PersistError(f"{label} {str(path)!r}: is corrupted: its data cannot be "
                           f"unpickled ({e})") from e
    except Exception as e:  # noqa: BLE001 - torch reports a bad file in many ways
        first = str(e).splitlines()[0] if str(e) else ""
        raise PersistError(f"{label} {str(path)!r}: is truncated or corrupted: it cannot be "
                           f"read ({type(e).__name__}: {first or 'no message'})") from e


def _check_envelope(envelope: Any, path: Path, label: str, kind: str) -> dict[str, Any]:
    where = f"{label} {str(path)!r}"
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
        raise PersistError(f"{where}: has no torchlangevin checksums, so it cannot be "
                           f"verified: it was written by an older torchlangevin or by another "
                           f"program. If you trust it, torch.load(path, weights_only=True) "
                           f"reads its plain data; otherwise delete it or pass another path")
    if not isinstance(envelope.get("version"), int) or envelope["version"] > VERSION:
        raise PersistError(f"{where}: was written by a newer torchlangevin (format version "
                           f"{envelope.get('version')!r}; this one reads {VERSION})")
    if envelope.get("kind") != kind:
        raise PersistError(f"{where}: holds a {envelope.get('kind')!r}, not a {kind!r}")
    for key in ("payload", "checksums", "structure"):
        if key not in envelope:
            raise PersistError(f"{where}: is corrupted: it has no {key!r}")
    return envelope


def _verify(envelope: dict[str, Any], where: str) -> None:
    payload, sums = envelope["payload"], envelope["checksums"]
    if hashlib.sha256(_skeleton(payload).encode()).hexdigest() != envelope["structure"]:
        raise PersistError(f"{where}: is corrupted: its keys, numbers or strings fail their "
                           f"checksum")
    tensors = {name: v for name, v in _walk(payload) if isinstance(v, Tensor)}
    if set(tensors) != set(sums):
        missing = sorted(set(sums) ^ set(tensors))
        raise PersistError(f"{where}: is corrupted: its tensors do not match its checksums "
                           f"(differing: {missing[:5]})")
    for name, t in tensors.items():
        actual = digest(t)
        if actual != sums[name]:
            raise PersistError(f"{where}: is corrupted: tensor {name!r} "
                               f"({str(t.dtype).removeprefix('torch.')}, shape "
                               f"{tuple(t.shape)}) fails its checksum (sha256 stored "
                               f"{str(sums[name])[:12]}..., computed {actual[:12]}...)")


def load(path: str | os.PathLike, kind: str, label: str | None = None) -> dict[str, Any]:
    """The payload :func:`save` wrote to ``path`` as ``kind``, on the CPU, every checksum
    verified. ``label`` names the file in errors (default: ``kind``).

    Raises :class:`PersistError` (naming the file) for a file that is not plain data, is
    truncated or corrupted, was written without checksums, or holds another kind.
    """
    path, label = Path(path), label or kind
    envelope = _check_envelope(_read(path, label), path, label, kind)
    _verify(envelope, f"{label} {str(path)!r}")
    return envelope["payload"]


# -- configurations --------------------------------------------------------------------------

def qualified_name(obj: Any) -> str:
    """``module.QualName`` of a function or class (of ``type(obj)`` for other objects)."""
    target = obj if isinstance(obj, type) or hasattr(obj, "__qualname__") else type(obj)
    module = getattr(target, "__module__", None) or "?"
    return f"{module}.{getattr(target, '__qualname__', type(target).__qualname__)}"


def _tensor_print(t: Tensor) -> str:
    return (f"tensor {str(t.dtype).removeprefix('torch.')} {list(t.shape)} "
            f"sha256:{digest(t)[:16]}")


_NOT_A_LEAF = object()


def _leaf_fingerprint(value: Any) -> Any:
    """A number, string, tensor, array, dtype or device described; others not."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, Tensor):
        return _tensor_print(value)
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    return _NOT_A_LEAF


def fingerprint(value: Any, depth: int = 3) -> Any:
    """A plain, comparable description of ``value`` for a checkpoint's configuration.

    Numbers and strings as they are; a tensor (or array) as ``"tensor float32 [2]
    sha256:..."``; containers element by element (a NamedTuple by field); a function or
    class by its qualified name; any other object by its type's qualified name and its
    public attributes (to ``depth`` levels; ``energy`` attributes are left to the caller,
    which records the energy's identity itself).
    """
    leaf = _leaf_fingerprint(value)
    if leaf is not _NOT_A_LEAF:
        return leaf
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return (qualified_name(value), fingerprint(value._asdict(), depth))
    if isinstance(value, (list, tuple)):
        return tuple(fingerprint(v, depth) for v in value)
    if isinstance(value, dict):
        return {str(k): fingerprint(v, depth) for k, v in value.items()}
    return _object_fingerprint(value, depth)


def _object_fingerprint(value: Any, depth: int) -> Any:
    """A function or class by name; another object by its type and public attributes."""
    if isinstance(value, type) or callable(value) and hasattr(value, "__qualname__"):
        return qualified_name(value)
    attrs = {k: v for k, v in getattr(value, "__dict__", {}).items()
             if not k.startswith("_") and k != "energy"}
    if depth <= 0 or not attrs:
        return qualified_name(value)
    return (qualified_name(value), fingerprint(attrs, depth - 1))


def _same(old: Any, new: Any, tolerance: float) -> bool:
    if tolerance and isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return len(old) == len(new) and all(_same(a, b, tolerance) for a, b in
                                            zip(old, new, strict=True))
    if tolerance and isinstance(old, float) and isinstance(new, float):
        both_nan = math.isnan(old) and math.isnan(new)
        return both_nan or math.isclose(old, new, rel_tol=tolerance, abs_tol=tolerance)
    return old == new


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def differences(saved: dict[str, Any], wanted: dict[str, Any],
                tolerances: dict[str, float] | None = None) -> list[str]:
    """``"name: was OLD, now NEW"`` for every field on which two configurations differ
    (fields in ``tolerances`` compare floats to that relative tolerance)."""
    tolerances = tolerances or {}
    out = []
    for name in [*saved, *(k for k in wanted if k not in saved)]:
        old, new = saved.get(name, "(absent)"), wanted.get(name, "(absent)")
        if not _same(old, new, tolerances.get(name, 0.0)):
            out.append(f"{name}: was {_short(old)}, now {_short(new)}")
    return out
