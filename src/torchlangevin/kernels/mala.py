"""Metropolis-adjusted Langevin algorithm (MALA).

Propose the Langevin move ``y = x - eps grad E(x) + sqrt(2 eps T) xi`` and accept with

    log alpha = -(E(y) - E(x)) / T + log q(x | y) - log q(y | x),
    q(y | x) = N(y; x - eps grad E(x), 2 eps T I),

so the chain targets ``exp(-E / T)`` exactly, ``T = noise_scale**2``. Energy and
gradient are cached in the state: one gradient per proposal. Proposals outside a
``Box`` support are rejected. Roberts & Tweedie (1996). Optimal acceptance ~0.574.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..energy import energy_and_grad
from ..integrators import langevin_log_ratio, langevin_move
from .base import (
    Info,
    Kernel,
    Params,
    State,
    event_noise,
    metropolis,
    on_device,
    select,
    value_at,
)


class MALA(Kernel):
    """Metropolis-adjusted Langevin kernel.

    Args:
        energy: callable ``(C, *event) -> (C,)``, optionally with ``grad``.
        step_size: ``eps`` > 0: a float, a ``Schedule`` or a ``(C,)`` tensor.
        noise_scale: ``sqrt(T)`` > 0; float, schedule or ``(C,)`` tensor.
        support: a ``Box``; defaults to ``energy.support``. Proposals outside are rejected.
        inv_mass: preconditioner ``M^{-1}``, a positive float or a tensor of the event
            shape or of ``(C, *event)`` (one per chain):
            ``y = x - eps M^{-1} grad E + sqrt(2 eps T) M^{-1/2} xi``.
    """

    name = "mala"
    target_accept = 0.574
    positive_params = ("step_size", "noise_scale")

    def noise_size(self, state: State) -> int:
        return super().noise_size(state) + 1  # the proposal's noise, then the accept's

    def step(self, state: State, noise: Tensor, params: Params, batch: Any = None
             ) -> tuple[State, Info]:
        x = state.x
        eps = value_at(params.step_size, state.step, x)
        scale = value_at(params.noise_scale, state.step, x)
        temperature = scale * scale
        xi = event_noise(noise, x)
        inv_mass = on_device(params.inv_mass, x)
        y = langevin_move(x, state.grad, xi, eps, scale, inv_mass)
        e_y, g_y = energy_and_grad(self.energy, y)
        drop = state.energy - e_y
        if isinstance(temperature, torch.Tensor) or temperature != 1.0:
            drop = drop / temperature
        log_alpha = drop + langevin_log_ratio(x, y, g_y, xi, eps, temperature, inv_mass)
        inside = self.support.contains(y) if self.support is not None else None
        info = metropolis(log_alpha, inside, noise[:, -1])
        return select(info.accepted, State(y, e_y, g_y), state), info
