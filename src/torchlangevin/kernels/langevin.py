"""Unadjusted Langevin algorithm (ULA; SGLD when the gradient is a minibatch estimate).

    x' = x - eps * grad E(x) + noise_scale * sqrt(2 eps) * xi,    xi ~ N(0, I)

With ``noise_scale = 1`` the chain samples ``exp(-E)`` up to an O(eps) bias (on a
standard Gaussian the stationary variance is ``1 / (1 - eps/2)``); ``noise_scale**2``
is the temperature. On a ``Box`` support the move is mirrored back inside.
Roberts & Tweedie (1996), Welling & Teh (2011).
"""

from __future__ import annotations

import torch

from ..energy import energy_and_grad
from ..integrators import langevin_move
from .base import NO_INFO, Info, Kernel, State, normal_like, value_at


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

    def step(self, state: State, generator: torch.Generator,
             donate: bool = False) -> tuple[State, Info]:
        """One move. With ``donate=True`` the new position is written into ``state.x`` and
        the noise into the state's scratch buffer (the caller promises nothing else reads
        that state again)."""
        x = state.x
        eps = value_at(self.step_size, state.step, x)
        scale = value_at(self.noise_scale, state.step, x)
        if donate and state.scratch is not None:
            noise = state.scratch.normal_(generator=generator)
        else:
            noise = normal_like(x, generator)
        x = langevin_move(x, state.grad, noise, eps, scale, self._inv_mass(x),
                          out=x if donate else None)
        if self.support is not None:
            x = self.support.reflect(x)
        e, g = energy_and_grad(self.energy, x, need_energy=False)
        return State(x, e, g, state.step + 1, noise if donate else None), NO_INFO
