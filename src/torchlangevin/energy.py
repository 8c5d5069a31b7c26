"""Energies, their gradients, and bounded supports.

An energy is any callable mapping a batch of states ``(C, *event)`` to ``(C,)``; the
target density is ``p(x) ∝ exp(-E(x))``. An object may also define ``grad(x)`` (the
analytic gradient) and ``energy_and_grad(x)`` (both at once, sharing work); the
built-in distributions do. Otherwise one ``torch.autograd.grad`` call serves all chains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["Energy", "Box", "energy_and_grad", "check_energy", "check_finite", "check_states",
           "check_compilable_gradient"]


@runtime_checkable
class Energy(Protocol):
    """``E: (C, *event) -> (C,)``; the target is ``exp(-E)``."""

    def __call__(self, x: Tensor) -> Tensor: ...


def energy_and_grad(
    energy: Callable[[Tensor], Tensor], x: Tensor, need_energy: bool = True
) -> tuple[Tensor | None, Tensor]:
    """Return ``(E(x), ∇E(x))`` for all chains at once.

    Uses ``energy.energy_and_grad`` or ``energy.grad`` when defined (with
    ``need_energy=False``, ``grad`` if there is one, else ``energy_and_grad``), else one
    ``torch.autograd.grad(E(x).sum(), x)``. With ``need_energy=False`` an energy with
    ``grad`` skips the energy (returns ``None``); the other ways return it, free.
    """
    fused = getattr(energy, "energy_and_grad", None)
    grad = getattr(energy, "grad", None)
    if fused is not None and (need_energy or grad is None):
        return fused(x)  # an energy with only the fused form: its gradient, never autograd
    if grad is not None:
        return (energy(x) if need_energy else None), grad(x)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        e = energy(xg)
        (g,) = torch.autograd.grad(e.sum(), xg)
    return e.detach(), g


def autograd_compile_message(energy: Any) -> str:
    """Why ``compile=True`` cannot run ``energy``, and what to do instead."""
    name = getattr(energy, "__name__", None) or type(energy).__name__
    return (f"compile=True cannot compile the gradient of the energy {name}: it would come "
            f"from torch.autograd.grad, which torch.compile's scan does not capture (torch "
            f"{torch.__version__}); give the energy a grad(x) method (an analytic gradient, or "
            f"torch.func.grad(lambda x: E(x).sum()), which compiles), or run with "
            f"compile=False")


def check_compilable_gradient(energy: Any) -> None:
    """Fail unless ``energy`` has a gradient of its own (``grad``, ``energy_and_grad`` or
    ``loss_and_grad``): :func:`energy_and_grad` would otherwise call
    ``torch.autograd.grad``, which a compiled scan of steps cannot hold."""
    if not any(hasattr(energy, name) for name in ("grad", "energy_and_grad", "loss_and_grad")):
        raise ValueError(autograd_compile_message(energy))


def check_energy(energy: Callable[[Tensor], Tensor], x: Tensor, e: Tensor | None = None) -> None:
    """Fail clearly unless ``energy(x)`` (or the given ``e``) has shape ``(C,)``."""
    if e is None:
        with torch.no_grad():
            e = energy(x)
    if not isinstance(e, Tensor) or e.shape != x.shape[:1]:
        got = tuple(e.shape) if isinstance(e, Tensor) else type(e).__name__
        raise ValueError(
            f"energy returned {got} for x of shape {tuple(x.shape)}; expected shape "
            f"({x.shape[0]},): one energy per chain (the chain is the leading dimension)"
        )


def check_finite(name: str, x: Tensor, rows: str = "chains") -> None:
    """Fail naming the argument and the rows (chains) whose entries are NaN or infinite."""
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
    if bool(bad.any()):
        idx = bad.nonzero().flatten().tolist()
        raise ValueError(f"{name} has non-finite entries (NaN or Inf) in {rows} {idx[:10]}"
                         + (f" and {len(idx) - 10} more" if len(idx) > 10 else ""))


def check_states(name: str, x: Any, rows: str = "chains", min_rows: int = 1,
                 min_ndim: int = 1) -> Tensor:
    """Fail unless ``x`` is a finite floating-point tensor ``(rows, *event)``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape ({rows}, *event); "
                        f"got {type(x).__name__}")
    if x.ndim < min_ndim or x.shape[0] < min_rows or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of shape ({rows}, *event) "
                         f"with at least {min_rows} {rows}; got dtype {x.dtype}, "
                         f"shape {tuple(x.shape)}")
    check_finite(name, x, rows)
    return x


class Box:
    """Axis-aligned box ``low <= x <= high`` (bounds broadcast to the event shape).

    ``reflect`` folds a point back in by mirror reflection, as many times as needed:
    with ``w = high - low``, ``y = (x - low) mod 2w`` and ``x' = low + min(y, 2w - y)``.
    Reflected Langevin dynamics keeps ``exp(-E)`` restricted to the box stationary;
    clamping would pile mass on the faces and is not offered.
    """

    def __init__(self, low: float | Tensor, high: float | Tensor) -> None:
        low_t = torch.as_tensor(low, dtype=torch.float64)
        high_t = torch.as_tensor(high, dtype=torch.float64)
        if not (torch.isfinite(low_t).all() and torch.isfinite(high_t).all()):
            raise ValueError(f"Box bounds must be finite; got low={low}, high={high}")
        if not bool((high_t > low_t).all()):
            raise ValueError(f"Box needs high > low everywhere; got low={low}, high={high}")
        self.low, self.high = low_t, high_t
        self._cache: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}

    def __repr__(self) -> str:
        return f"Box(low={self.low.tolist()}, high={self.high.tolist()})"

    def _bounds(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        key = (x.device, x.dtype)
        if key not in self._cache:
            lo, hi = self.low.to(x.device, x.dtype), self.high.to(x.device, x.dtype)
            self._cache[key] = (lo, hi, 2 * (hi - lo))
        return self._cache[key]

    def contains(self, x: Tensor) -> Tensor:
        """``(C,)`` bool: chain inside the closed box."""
        lo, hi, _ = self._bounds(x)
        inside = (x >= lo) & (x <= hi)
        return inside.reshape(x.shape[0], -1).all(1)

    def reflect(self, x: Tensor) -> Tensor:
        """Mirror ``x`` back into the box (any distance outside)."""
        lo, _, period = self._bounds(x)
        y = torch.remainder(x - lo, period)
        return torch.minimum(y, period - y).add_(lo)

    def reflect_with_flips(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``reflect(x)`` and, per coordinate, whether an odd number of mirrors was crossed
        (so a velocity there changes sign)."""
        lo, _, period = self._bounds(x)
        y = torch.remainder(x - lo, period)
        flipped = y > period / 2
        return torch.minimum(y, period - y).add_(lo), flipped

    def near_boundary(self, x: Tensor, rtol: float = 1e-3) -> Tensor:
        """``(C,)`` bool: some coordinate within ``rtol * (high - low)`` of a face."""
        lo, hi, period = self._bounds(x)
        tol = rtol * period / 2
        near = ((x - lo) <= tol) | ((hi - x) <= tol)
        return near.reshape(x.shape[0], -1).any(1)
