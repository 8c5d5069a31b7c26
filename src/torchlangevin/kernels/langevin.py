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
from .base import NO_INFO, Info, Kernel, State, draw_size, normal_like, value_at


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
        the noise drawn into the state's scratch buffer (the caller promises nothing else
        reads that state again): the same numbers as a fresh draw, no allocation."""
        x = state.x
        eps = value_at(self.step_size, state.step, x)
        scale = value_at(self.noise_scale, state.step, x)
        scratch = None
        if donate:
            scratch = state.scratch if state.scratch is not None else \
                x.new_empty(draw_size(x.numel()))
            noise = scratch.normal_(generator=generator)[:x.numel()].view_as(x)
        else:
            noise = normal_like(x, generator)
        x = langevin_move(x, state.grad, noise, eps, scale, self._inv_mass(x),
                          out=x if donate else None)
        if self.support is not None:
            x = self.support.reflect(x)
        e, g = energy_and_grad(self.energy, x, need_energy=False)
        return State(x, e, g, state.step + 1, scratch), NO_INFO
