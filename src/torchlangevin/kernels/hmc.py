"""Hamiltonian Monte Carlo with a leapfrog integrator.

Draw ``p ~ N(0, M)``, run ``L`` leapfrog steps on ``H(x, p) = E(x)/T + p^T M^{-1} p / 2``,
accept with ``min(1, exp(H(x, p) - H(x', p')))``. The gradient at the current point is
cached, so a trajectory costs ``L`` new gradients (``L + 1`` counting the cached one)
and one energy. A trajectory whose energy error exceeds ``max_energy_error`` or turns
non-finite is counted as divergent and rejected. Duane et al. (1987), Neal (2011).

The step size is jittered by default: each chain draws ``eps (1 + j (2u - 1))``,
``u ~ U[0, 1)``, per trajectory (``j = 0.15``, PyMC's default; ``u = frac(1024 z)`` from a
standard normal ``z``, uniform up to float rounding: the fractional part of a smooth
density spread over a thousand units). With a fixed ``L`` a chain
whose ``eps L`` lands near a period of its target (``eps L ~ pi`` on a unit Gaussian) nearly
repeats itself and stops mixing; jitter breaks that (Neal 2011, sec. 5.4.2.2). The chain
still targets ``exp(-E/T)`` exactly: ``eps`` is drawn independently of the state.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..integrators import kinetic, leapfrog, per_chain
from ..mass import Mass, momentum
from ..util import in_range
from .base import (
    Info,
    Kernel,
    Parameter,
    State,
    event_noise,
    metropolis,
    on_device,
    select,
    value_at,
)


class HMCParams(NamedTuple):
    """HMC's parameters: those of :class:`~torchlangevin.kernels.base.Params`, the number
    of leapfrog steps ``L``, the step-size jitter ``j`` and the divergence threshold."""

    step_size: Parameter
    noise_scale: Parameter = 1.0
    inv_mass: Mass = 1.0
    n_leapfrog_steps: int = 10
    jitter: float = 0.15
    max_energy_error: float = 1000.0


class HMC(Kernel):
    """Hamiltonian Monte Carlo kernel.

    Args:
        energy: callable ``(C, *event) -> (C,)``, optionally with ``grad``.
        step_size: leapfrog ``eps`` > 0: float, ``Schedule`` or ``(C,)`` tensor.
        n_leapfrog_steps: ``L >= 1``.
        inv_mass: ``M^{-1}``: a positive float, a diagonal (a tensor of the event shape,
            or ``(C, *event)`` for one per chain), a ``DenseMass`` or a ``LowRankMass``.
        noise_scale: ``sqrt(T)`` > 0.
        support: a ``Box``; defaults to ``energy.support``. Endpoints outside are rejected.
        max_energy_error: energy error above which a trajectory counts as divergent.
        jitter: ``j`` in ``[0, 1)``: each trajectory's step size is uniform on
            ``eps [1 - j, 1 + j)``, per chain; 0 for a fixed step size.
    """

    name = "hmc"
    target_accept = 0.8
    positive_params = ("step_size", "noise_scale")
    Params = HMCParams
    param_rules = {"jitter": lambda name, v: in_range(name, v, 0.0, 1.0)}

    def __init__(self, energy, step_size: Parameter, n_leapfrog_steps: int = 10,
                 inv_mass: Mass = 1.0, noise_scale: Parameter = 1.0,
                 support=None, max_energy_error: float = 1000.0, jitter: float = 0.15) -> None:
        super().__init__(energy, step_size, noise_scale, support, inv_mass,
                         n_leapfrog_steps=n_leapfrog_steps, jitter=jitter,
                         max_energy_error=max_energy_error)

    def noise_size(self, state: State) -> int:
        # the momentum, the accept's normal, and the jitter's (unused with jitter=0)
        return super().noise_size(state) + 2

    def step(self, state: State, noise: Tensor, params: HMCParams, batch: Any = None
             ) -> tuple[State, Info]:
        x = state.x
        n = x[0].numel()
        eps = value_at(params.step_size, state.step, x)
        if params.jitter:
            # u = frac(1024 z): uniform on [0, 1) up to float rounding, in three flops (an
            # erfc here would be recomputed wherever the compiled leapfrog uses eps)
            t = noise[:, n + 1] * 1024.0
            eps = eps * (1 + params.jitter * (2 * (t - torch.floor(t)) - 1))
        scale = value_at(params.noise_scale, state.step, x)
        inv_mass = on_device(params.inv_mass, x)
        # may be a view of the noise: the leapfrog's first kick writes a new tensor
        p = momentum(event_noise(noise, x), inv_mass)
        inv_t = 1.0 / (scale * scale)
        unit_t = not isinstance(inv_t, Tensor) and inv_t == 1.0
        h0 = (state.energy if unit_t else state.energy * inv_t) + kinetic(p, inv_mass)
        y, p, e_y, g_y = leapfrog(self.energy, x, p, state.grad, eps, inv_mass,
                                  params.n_leapfrog_steps, grad_scale=per_chain(inv_t, x))
        log_alpha = h0 - (e_y if unit_t else e_y * inv_t) - kinetic(p, inv_mass)
        inside = self.support.contains(y) if self.support is not None else None
        info = metropolis(log_alpha, inside, noise[:, n], params.max_energy_error)
        return select(info.accepted, State(y, e_y, g_y), state), info
