"""Trees of tuples and NamedTuples with tensor leaves: flattened to a list and a layout,
rebuilt from them, mapped and indexed leaf by leaf (the block runner's steps and traces,
the compiled scan's carry, NUTS's whole-trajectory loop)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["flatten", "unflatten", "map_tree", "index_tree", "present", "group", "ungroup"]


_LEAF, _NONE = "leaf", "none"


def flatten(tree: Any) -> tuple[list[Any], Any]:
    """The leaves of a tree of tuples and NamedTuples (tensors, ``None`` or other values),
    and its layout: what :func:`unflatten` rebuilds it from, and where its ``None`` are."""
    if isinstance(tree, tuple):
        leaves: list[Any] = []
        specs = []
        for v in tree:
            sub, spec = flatten(v)
            leaves += sub
            specs.append(spec)
        return leaves, (type(tree), tuple(specs))
    return [tree], (_NONE if tree is None else _LEAF)


def _count(layout: Any) -> int:
    return 1 if isinstance(layout, str) else sum(_count(s) for s in layout[1])


def unflatten(layout: Any, leaves: Sequence[Any]) -> Any:
    """The tree :func:`flatten` took apart, with ``leaves`` in place of its own."""
    if isinstance(layout, str):
        return None if layout == _NONE else leaves[0]
    cls, specs = layout
    values, i = [], 0
    for spec in specs:
        n = _count(spec)
        values.append(unflatten(spec, leaves[i:i + n]))
        i += n
    return cls(*values) if hasattr(cls, "_fields") else cls(values)


def map_tree(fn: Callable[[Any], Any], tree: Any) -> Any:
    """``tree`` with ``fn`` applied to every leaf that is not ``None``."""
    leaves, layout = flatten(tree)
    return unflatten(layout, [None if v is None else fn(v) for v in leaves])


def index_tree(tree: Any, key: int | slice) -> Any:
    """Row(s) ``key`` of every tensor and list in ``tree`` (a list holds one entry per
    step); other leaves as they are."""
    return map_tree(lambda v: v[key] if isinstance(v, (Tensor, list)) else v, tree)


def present(layout: Any) -> list[bool]:
    """Per leaf of ``layout``, whether it holds a value (not ``None``)."""
    if isinstance(layout, str):
        return [layout == _LEAF]
    return [p for spec in layout[1] for p in present(spec)]


def group(tree: Any) -> tuple[tuple[Tensor, ...], Any]:
    """The tensor leaves of ``tree`` stacked, one tensor per dtype and shape (a compiled
    loop allocates and checks every tensor it carries each iteration: fewer is faster),
    and the layout :func:`ungroup` rebuilds the tree from."""
    leaves, layout = flatten(tree)
    groups: dict[tuple[Any, ...], list[Tensor]] = {}
    slots = []
    for v in leaves:
        members = groups.setdefault((v.dtype, *v.shape), [])
        slots.append((list(groups).index((v.dtype, *v.shape)), len(members)))
        members.append(v)
    return tuple(torch.stack(m) for m in groups.values()), (layout, tuple(slots))


def ungroup(groups: Sequence[Tensor], layout: Any) -> Any:
    """The tree :func:`group` stacked, its leaves views of ``groups``."""
    tree_layout, slots = layout
    return unflatten(tree_layout, [groups[g][i] for g, i in slots])
