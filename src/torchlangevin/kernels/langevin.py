"""Unadjusted Langevin algorithm (ULA; SGLD when the gradient is a minibatch estimate).

    x' = x - eps * grad E(x) + noise_scale * sqrt(2 eps) * xi,    xi ~ N(0, I)

With ``noise_scale = 1`` the chain samples ``exp(-E)`` up to an O(eps) bias (on a
standard Gaussian the stationary variance is ``1 / (1 - eps/2)``); ``noise_scale**2``
is the temperature. On a ``Box`` support the move is mirrored back inside.
Roberts & Tweedie (1996), Welling & Teh (2011).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..energy import energy_and_grad
from ..integrators import langevin_move
from .base import NO_INFO, Info, Kernel, Params, State, event_noise, on_device, value_at


class Langevin(Kernel):
    """Unadjusted Langevin kernel: one gradient per step, no rejection.

    Args:
        energy: callable ``(C, *event) -> (C,)``, optionally with ``grad``.
        step_size: ``eps`` > 0: a float, a ``Schedule`` or a ``(C,)`` tensor.
        noise_scale: ``>= 0`` (0 is gradient descent); float, schedule or ``(C,)`` tensor.
        support: a ``Box``; defaults to ``energy.support``. Moves are reflected into it.
        inv_mass: preconditioner ``M^{-1}`` (positive float, or a tensor of the event shape
            or of ``(C, *event)``).
    """

    name = "langevin"
    has_accept_step = False
    caches_energy = False
    in_place = True

    def step(self, state: State, noise: Tensor, params: Params, batch: Any = None,
             donate: bool = False) -> tuple[State, Info]:
        """One move; with ``donate=True`` the new position is written into ``state.x``."""
        x = state.x
        eps = value_at(params.step_size, state.step, x)
        scale = value_at(params.noise_scale, state.step, x)
        x = langevin_move(x, state.grad, event_noise(noise, x), eps, scale,
                          on_device(params.inv_mass, x), out=x if donate else None)
        if self.support is not None:
            x = self.support.reflect(x)
        e, g = energy_and_grad(self.energy, x, need_energy=False)
        return State(x, e, g, state.step + 1), NO_INFO
