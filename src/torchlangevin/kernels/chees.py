"""HMC with a jittered trajectory length: the kernel ChEES-HMC tunes.

Each step every chain draws its own integration time ``t = 2 u T``, ``u ~ U(0, 1)``
(mean ``T``, the ``trajectory_length``), runs ``L = ceil(t / eps)`` leapfrog steps on
``H(x, p) = E(x)/T_temp + p^T M^{-1} p / 2`` from ``p ~ N(0, M)`` and accepts with
``min(1, exp(H(x, p) - H(x', p')))`` (Hoffman, Radul & Sountsov 2021, "An Adaptive MCMC
Scheme for Setting Trajectory Lengths in Hamiltonian Monte Carlo", AISTATS; BlackJAX's
``dynamic_hmc`` and TFP draw ``t`` on ``(0, T_max]``, ``T_max = 2 T`` here). ``u`` is
drawn independently of the state, so the chain targets ``exp(-E/T_temp)`` exactly for
any law of ``u``: ``jitter="uniform"`` takes it from the step's noise, ``jitter="halton"``
from the base-2 Halton (van der Corput) sequence in the step index, shifted by
``(c + 1/2) / C`` for chain ``c``, so at every step the chains' lengths are spread evenly
over ``(0, 2T)`` (less variance in ChEES's gradient; the paper's choice, per chain).

All chains advance in lockstep for ``max_c L_c`` leapfrog steps; a chain whose own
``L_c`` steps are done is masked: it stops moving and its gradients are not counted
(``Info.n_grads``). A trajectory costs ``L_c`` gradients (the start's is cached) and one
energy evaluation at its end. Divergent trajectories (energy error above
``max_energy_error`` or non-finite) are rejected and counted.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..energy import energy_and_grad
from ..integrators import kinetic, per_chain
from ..mass import DenseMass, LowRankMass, Mass, momentum, velocity
from ..util import integer
from .base import (
    CountedInfo,
    Kernel,
    Parameter,
    State,
    event_noise,
    metropolis,
    on_device,
    scalar_parameter,
    select,
    uniforms,
    value_at,
)

JITTERS = ("uniform", "halton")
_HALTON_BITS = 30  # distinct lengths for the first 2^30 steps


class ChEESParams(NamedTuple):
    """The jittered HMC's parameters.

    Attributes:
        step_size: leapfrog ``eps > 0``: float, ``Schedule`` or ``(C,)`` tensor.
        noise_scale: ``sqrt(T_temp)``: the kernel targets ``exp(-E / noise_scale**2)``.
        inv_mass: ``M^{-1}``: float, diagonal, ``DenseMass`` or ``LowRankMass``.
        trajectory_length: ``T > 0``, the mean integration time: float, ``Schedule`` or
            ``(C,)`` tensor.
        jitter: ``"uniform"`` or ``"halton"``: the law of ``u`` in ``t = 2 u T``.
        max_leapfrog_steps: at most this many leapfrog steps per trajectory.
        max_energy_error: energy error above which a trajectory counts as divergent.
    """

    step_size: Parameter
    noise_scale: Parameter = 1.0
    inv_mass: Mass = 1.0
    trajectory_length: Parameter = 1.0
    jitter: str = "uniform"
    max_leapfrog_steps: int = 1000
    max_energy_error: float = 1000.0


ChEESInfo = CountedInfo  # the base fields, then the step's gradient evaluations


class Proposal(NamedTuple):
    """What ChEES's adaptation needs of a step besides its result: the trajectory's end
    ``x'``, its velocity ``M^{-1} p'`` (``dx'/dt``), the jitter ``u`` and the time ``t``."""

    x: Tensor
    velocity: Tensor
    jitter: Tensor
    time: Tensor


def _jitter_rule(name: str, value: Any) -> str:
    if value not in JITTERS:
        raise ValueError(f"{name} must be one of {JITTERS}; got {value!r}")
    return value


def _steps_rule(name: str, value: Any) -> int:
    return integer(name, value, 1)


def halton(index: Tensor) -> Tensor:
    """The base-2 Halton (van der Corput) number of each ``index >= 1``: its binary digits
    mirrored about the point, ``sum_b bit_b(index) 2^-(b+1)``, in ``(0, 1)``."""
    bits = torch.arange(_HALTON_BITS, device=index.device)
    digits = (index.unsqueeze(-1) >> bits) & 1
    return (digits.double() * torch.exp2(-(bits + 1).double())).sum(-1)


class ChEESHMC(Kernel):
    """HMC whose trajectory length ``T`` is a parameter, jittered per chain and per step.

    Args:
        energy: callable ``(C, *event) -> (C,)``, optionally with ``grad``.
        step_size: leapfrog ``eps`` > 0: float, ``Schedule`` or ``(C,)`` tensor.
        trajectory_length: mean integration time ``T > 0`` (``t = 2 u T``,
            ``L = ceil(t / eps)`` leapfrog steps): float, ``Schedule`` or ``(C,)`` tensor.
        inv_mass: ``M^{-1}``: a positive float, a diagonal, a ``DenseMass`` or a
            ``LowRankMass``.
        noise_scale: ``sqrt(T_temp)`` > 0.
        support: a ``Box``; defaults to ``energy.support``. Endpoints outside are rejected.
        jitter: ``"uniform"`` (``u`` from the step's noise) or ``"halton"`` (``u`` from the
            Halton sequence in the step index, spread evenly over the chains).
        max_leapfrog_steps: the cap on ``L`` (a longer ``t`` is cut to it).
        max_energy_error: energy error above which a trajectory counts as divergent.

    Eagerly a step reads ``max_c L_c`` on the host (one synchronisation per step); compiled,
    the lockstep loop is a ``while_loop`` on the device.
    """

    name = "chees_hmc"
    target_accept = 0.651
    positive_params = ("step_size", "noise_scale", "trajectory_length")
    Params = ChEESParams
    param_rules = {"jitter": _jitter_rule, "max_leapfrog_steps": _steps_rule,
                   "trajectory_length": scalar_parameter}

    def __init__(self, energy, step_size: Parameter, trajectory_length: Parameter = 1.0,
                 inv_mass: Mass = 1.0, noise_scale: Parameter = 1.0, support=None,
                 jitter: str = "uniform", max_leapfrog_steps: int = 1000,
                 max_energy_error: float = 1000.0) -> None:
        super().__init__(energy, step_size, noise_scale, support, inv_mass,
                         trajectory_length=trajectory_length, jitter=jitter,
                         max_leapfrog_steps=max_leapfrog_steps,
                         max_energy_error=max_energy_error)

    def noise_size(self, state: State) -> int:
        # the momentum, the accept's normal, and the jitter's (unused with Halton jitter)
        return super().noise_size(state) + 2

    def jitter(self, state: State, noise: Tensor, params: ChEESParams) -> Tensor:
        """``u (C,)`` in ``(0, 1)`` for this step, per chain."""
        x = state.x
        if params.jitter == "uniform":
            return uniforms(noise[:, x[0].numel() + 1])
        c = x.shape[0]
        step = torch.as_tensor(state.step, device=x.device)
        offset = (torch.arange(c, device=x.device, dtype=torch.float64) + 0.5) / c
        u = torch.frac(halton(step + 1) + offset)
        return u.to(x.dtype).clamp(min=torch.finfo(x.dtype).tiny)

    def step(self, state: State, noise: Tensor, params: ChEESParams, batch: Any = None
             ) -> tuple[State, ChEESInfo]:
        new, info, _ = self.transition(state, noise, params)
        return new, info

    def transition(self, state: State, noise: Tensor, params: ChEESParams
                   ) -> tuple[State, ChEESInfo, Proposal]:
        """One step, and the proposal it accepted or rejected (what ChEES adapts on)."""
        x = state.x
        n = x[0].numel()
        eps = value_at(params.step_size, state.step, x)
        length = value_at(params.trajectory_length, state.step, x)
        u = self.jitter(state, noise, params)
        time = 2.0 * u * length
        # ceil(t / eps), at least one step and at most the cap
        steps = torch.ceil(time / eps).clamp_(1, params.max_leapfrog_steps).long()
        scale = value_at(params.noise_scale, state.step, x)
        inv_mass = on_device(params.inv_mass, x)
        p = momentum(event_noise(noise, x), inv_mass)
        inv_t = 1.0 / (scale * scale)
        h0 = state.energy * inv_t + kinetic(p, inv_mass)
        y, p, g_y = masked_leapfrog(self.energy, x, p, state.grad, eps, inv_mass, steps,
                                    per_chain(inv_t, x))
        with torch.no_grad():
            e_y = self.energy(y)
        log_alpha = h0 - e_y * inv_t - kinetic(p, inv_mass)
        inside = self.support.contains(y) if self.support is not None else None
        acc = metropolis(log_alpha, inside, noise[:, n], params.max_energy_error)
        info = ChEESInfo(acc.log_accept_ratio, acc.accepted, acc.divergent, steps)
        new = select(acc.accepted, State(y, e_y, g_y), state)
        return new, info, Proposal(y, velocity(p, inv_mass), u, time)


def masked_leapfrog(energy: Any, x: Tensor, p: Tensor, grad: Tensor, step_size: Any,
                    inv_mass: Mass, steps: Tensor, grad_scale: Any = 1.0
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """``steps[c]`` leapfrog steps for chain ``c``, all chains in lockstep.

    At lockstep iteration ``i`` the chains with ``i < L_c`` take a leapfrog step
    (``x <- x + eps M^{-1} p``, ``g <- grad E(x)``, ``p <- p - eps g``, half a kick on
    their last step, after the first half kick ``p <- p - eps/2 g``); the others keep
    ``x``, ``p`` and ``g``. Returns ``(x', p', grad E(x'))``.
    """
    eps, scale = per_chain(step_size, x), per_chain(grad_scale, x)
    matrix = isinstance(inv_mass, (DenseMass, LowRankMass))
    drift = eps if matrix else eps * inv_mass
    shape = (-1, *([1] * (x.ndim - 1)))
    steps_b = steps.view(shape)
    p = p - (0.5 * eps * scale) * grad
    carry = (torch.zeros((), dtype=torch.long, device=x.device), x, p, grad)

    def body(i, x, p, g):
        active = i < steps_b
        moved = x + drift * (velocity(p, inv_mass) if matrix else p)
        x = torch.where(active, moved, x)
        _, g_new = energy_and_grad(energy, x, need_energy=False)
        g = torch.where(active, g_new, g)
        kick = (eps * scale) * (1.0 - 0.5 * (i == steps_b - 1).to(x.dtype))  # half on the last
        p = torch.where(active, p - kick * g, p)
        return i + 1, x, p, g

    if torch.compiler.is_compiling():  # a data-dependent trip count: a device loop
        last = steps.max()
        _, x, p, grad = torch.while_loop(lambda i, *_: i < last, body, carry)
        return x, p, grad
    for _ in range(int(steps.max())):  # one host read per trajectory
        carry = body(*carry)
    return carry[1], carry[2], carry[3]

