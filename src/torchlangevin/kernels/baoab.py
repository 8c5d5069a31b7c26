"""Underdamped Langevin dynamics, BAOAB splitting (Leimkuhler & Matthews 2013).

    dx = M^{-1} p dt,   dp = -grad E(x) dt - gamma p dt + sqrt(2 gamma T) M^{1/2} dW

One step of size h: half kick (B), half drift (A), exact Ornstein-Uhlenbeck on the
momentum (O) with ``c = exp(-gamma h)``, half drift (A), half kick (B):

    p <- p - h/2 grad E(x);  x <- x + h/2 M^{-1} p
    p <- c p + sqrt((1 - c^2) T) M^{1/2} xi
    x <- x + h/2 M^{-1} p;   p <- p - h/2 grad E(x)

One gradient per step. No rejection; on a Gaussian target the positions' stationary
law is exact for any stable h (BAOAB's configurational accuracy). A ``Box`` support
mirrors positions and flips the momentum of the coordinates that crossed a face.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..energy import energy_and_grad
from ..integrators import inv_root, per_chain, root
from .base import (
    NO_INFO,
    Info,
    Kernel,
    Parameter,
    diagonal_mass,
    event_noise,
    on_device,
    value_at,
)


class UnderdampedState(NamedTuple):
    """Position, cached energy (or ``None``) and gradient, step count, momentum."""

    x: Tensor
    energy: Tensor | None
    grad: Tensor
    step: int | Tensor
    momentum: Tensor


class BAOABParams(NamedTuple):
    """Step size ``h``, noise scale ``sqrt(T)``, inverse mass and friction ``gamma``."""

    step_size: Parameter
    noise_scale: Parameter = 1.0
    inv_mass: float | Tensor = 1.0
    friction: float = 1.0


def _friction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"friction must be a positive finite number; got {value!r}")
    return float(value)


class UnderdampedLangevin(Kernel):
    """BAOAB integrator for underdamped (kinetic) Langevin dynamics.

    Args:
        energy: callable ``(C, *event) -> (C,)``.
        step_size: ``h`` > 0: float, ``Schedule`` or ``(C,)`` tensor.
        friction: ``gamma`` > 0 (large: overdamped; small: nearly Hamiltonian).
        noise_scale: ``sqrt(T)`` >= 0; float, schedule or ``(C,)`` tensor.
        support: a ``Box``; positions are mirrored back, momenta flipped.
        inv_mass: ``M^{-1}``, positive float, or a tensor of the event shape or of
            ``(C, *event)``.

    The momentum starts at zero; burn-in brings it to ``N(0, T M)``.
    """

    name = "baoab"
    has_accept_step = False
    caches_energy = False
    Params = BAOABParams
    param_rules = {"friction": lambda name, v: _friction(v), "inv_mass": diagonal_mass}

    def __init__(self, energy, step_size: Parameter, friction: float = 1.0,
                 noise_scale: Parameter = 1.0, support=None,
                 inv_mass: float | Tensor = 1.0) -> None:
        super().__init__(energy, step_size, noise_scale, support, inv_mass, friction=friction)

    def init(self, x: Tensor, params: BAOABParams | None = None) -> UnderdampedState:
        x, e, g, _ = super().init(x, params)
        return UnderdampedState(x, e, g, 0, torch.zeros_like(x))

    def step(self, state: UnderdampedState, noise: Tensor, params: BAOABParams,
             batch: Any = None) -> tuple[UnderdampedState, Info]:
        x = state.x
        h = per_chain(value_at(params.step_size, state.step, x), x)
        scale = per_chain(value_at(params.noise_scale, state.step, x), x)
        inv_mass = on_device(params.inv_mass, x)
        gamma = params.friction
        c = torch.exp(-gamma * h) if isinstance(h, Tensor) else math.exp(-gamma * h)
        p = state.momentum - (h / 2) * state.grad                       # B
        x = x + (h / 2) * inv_mass * p                                  # A
        kick = root(1 - c * c) * scale * inv_root(inv_mass)
        p = c * p + kick * event_noise(noise, x)                        # O
        x = x + (h / 2) * inv_mass * p                                  # A
        if self.support is not None:
            x, flipped = self.support.reflect_with_flips(x)
            p = torch.where(flipped, -p, p)
        e, g = energy_and_grad(self.energy, x, need_energy=False)
        p = p - (h / 2) * g                                             # B
        return UnderdampedState(x, e, g, state.step + 1, p), NO_INFO
