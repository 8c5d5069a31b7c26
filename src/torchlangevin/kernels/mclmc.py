"""Microcanonical samplers: MCLMC (unadjusted) and MAMS (Metropolis-adjusted).

Both move ``x`` with the isokinetic (ESH) dynamics of Robnik, De Luca, Silverstein & Seljak
(2023, JMLR 24(311), "Microcanonical Hamiltonian Monte Carlo"): the velocity ``u`` has unit
norm in the preconditioned coordinates ``y = x / s``, ``s = sqrt(diag M^{-1})``,

    dy/dt = u,   du/dt = (I - u u^T) f / (d - 1),   f = -s grad E(x),

integrated by a leapfrog or the 2-stage minimal-norm (McLachlan) scheme with the velocity
update in closed form (:func:`~torchlangevin.integrators.esh_velocity`). The conserved energy
is ``E(x) + K``, ``K`` the velocity's accumulated ``(d - 1) log`` stretch; its change per
step is what the step size is tuned on and what MAMS accepts on.

* **MCLMC** (Robnik & Seljak 2023, "Microcanonical Langevin Monte Carlo"): one step of the
  dynamics, then a partial velocity refresh that decorrelates ``u`` over a length ``L``:

      u <- (u + nu z) / |u + nu z|,   nu = sqrt((exp(2 eps / L) - 1) / d),   z ~ N(0, I).

  No accept step: its bias is set by the step size, ``Var[dE] / d ~ eps^6`` for McLachlan.
* **MAMS** (Robnik, Cohn-Gordon & Seljak 2025, arXiv:2503.01707): a full refresh
  ``u = z / |z|``, ``n`` isokinetic steps, accepted with ``min(1, exp(-dE))``,
  ``dE = E(x_n) - E(x_0) + sum dK``. ``n`` is drawn per chain and trajectory, uniform on
  ``1 .. k``, ``k = max(1, round(2 L / eps - 1))``, so ``E[n] eps ~ L``: chains advance in
  lockstep for ``max k`` steps and a chain past its ``n`` is frozen (its gradients not
  counted).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..integrators import ISOKINETIC_SCHEMES, event_sum, isokinetic_step, per_chain, root
from ..mass import Mass
from ..util import boolean
from .base import (
    CountedInfo,
    Kernel,
    Parameter,
    State,
    compile_per_call,
    diagonal_mass,
    event_noise,
    metropolis,
    on_device,
    scalar_parameter,
    select,
    traceable,
    uniforms,
    value_at,
)


class MCLMCState(NamedTuple):
    """Position, its energy and gradient, the step count, and the unit velocity ``u``
    (in the preconditioned coordinates)."""

    x: Tensor
    energy: Tensor | None
    grad: Tensor
    step: int | Tensor
    velocity: Tensor


class MCLMCParams(NamedTuple):
    """Step size ``eps``, the velocity's decoherence length ``L`` and the diagonal inverse
    mass ``M^{-1}`` (an estimate of the target's variances: ``s = sqrt(M^{-1})``)."""

    step_size: Parameter
    L: Parameter
    inv_mass: Mass = 1.0


class MAMSParams(NamedTuple):
    """Step size ``eps``, the mean trajectory length ``L``, the diagonal inverse mass and the
    energy error above which a trajectory is divergent."""

    step_size: Parameter
    L: Parameter
    inv_mass: Mass = 1.0
    max_energy_error: float = 1000.0


class MCLMCInfo(NamedTuple):
    """Per step, ``(C,)`` each: non-finite chains, the energy change ``dE`` of the step, and
    the gradient evaluations it made."""

    divergent: Tensor
    energy_change: Tensor
    n_grads: Tensor


MAMSInfo = CountedInfo  # the base fields, then the step's gradient evaluations


def _integrator(value: Any) -> str:
    if value not in ISOKINETIC_SCHEMES:
        raise ValueError(f"integrator must be one of {sorted(ISOKINETIC_SCHEMES)}; "
                         f"got {value!r}")
    return value


class _Microcanonical(Kernel):
    """What MCLMC and MAMS share: parameters, the integrator, the dimension check."""

    positive_params = ("step_size", "L")
    param_rules = {"L": scalar_parameter, "inv_mass": diagonal_mass}

    def __init__(self, energy, step_size: Parameter, L: Parameter, inv_mass: Mass = 1.0,
                 integrator: str = "mclachlan", support=None, **extra: Any) -> None:
        if not callable(energy):
            raise TypeError(f"energy must be callable (C, *event) -> (C,); "
                            f"got {type(energy).__name__}")
        if support is not None or getattr(energy, "support", None) is not None:
            raise ValueError(f"{type(self).__name__} samples unbounded targets only; "
                             f"got the support {support or energy.support}")
        self.energy, self.support = energy, None
        self.integrator = _integrator(integrator)
        self.params = self.make_params(step_size=step_size, L=L, inv_mass=inv_mass, **extra)

    @property
    def grads_per_step(self) -> int:
        """Gradient evaluations per isokinetic step: 1 (leapfrog) or 2 (McLachlan)."""
        return sum(kind == "x" for kind, _ in ISOKINETIC_SCHEMES[self.integrator])

    def check_x(self, x: Any, params: NamedTuple) -> Tensor:
        x = super().check_x(x, params)
        if x[0].numel() < 2:
            raise ValueError(f"x0 must have at least 2 coordinates per chain: the velocity "
                             f"lives on a (d - 1)-sphere; got event shape {tuple(x.shape[1:])}")
        return x


def _unit(v: Tensor) -> Tensor:
    return v / per_chain(event_sum(v * v).sqrt(), v)


class MCLMC(_Microcanonical):
    """Microcanonical Langevin Monte Carlo (unadjusted): isokinetic steps with a partial
    velocity refresh (module docstring).

    Args:
        energy: callable ``(C, *event) -> (C,)``, optionally with ``grad``; unbounded.
        step_size: ``eps`` > 0: float, ``Schedule`` or ``(C,)`` tensor.
        L: the velocity's decoherence length > 0 (about ``sqrt(d)`` times the target's scale).
        inv_mass: diagonal ``M^{-1}`` (a positive float, or a tensor of the event shape or of
            ``(C, *event)``): the target's variances, ``sqrt`` of it scales the moves.
        integrator: ``"mclachlan"`` (2 gradients per step) or ``"leapfrog"`` (1).

    The velocity starts along the force ``-s grad E``; the refreshes randomise it. Use
    :func:`torchlangevin.tune_mclmc` to set ``eps``, ``L`` and ``inv_mass``.
    """

    name = "mclmc"
    has_accept_step = False
    Params = MCLMCParams

    def __init__(self, energy, step_size: Parameter, L: Parameter, inv_mass: Mass = 1.0,
                 integrator: str = "mclachlan", support=None) -> None:
        super().__init__(energy, step_size, L, inv_mass, integrator, support)

    def init(self, x: Tensor, params: MCLMCParams | None = None) -> MCLMCState:
        x, e, g, _ = super().init(x, params)
        scale = root(on_device((self.params if params is None else params).inv_mass, x))
        force = -g * scale
        # a chain at an exact stationary point starts along the first axis
        flat = event_sum(force * force) == 0
        first = torch.zeros_like(force).reshape(x.shape[0], -1)
        first[:, 0] = 1.0
        force = torch.where(per_chain(flat, x), first.reshape(x.shape), force)
        return MCLMCState(x, e, g, 0, _unit(force))

    def step(self, state: MCLMCState, noise: Tensor, params: MCLMCParams, batch: Any = None
             ) -> tuple[MCLMCState, MCLMCInfo]:
        x = state.x
        eps = value_at(params.step_size, state.step, x)
        length = value_at(params.L, state.step, x)
        scale = root(on_device(params.inv_mass, x))
        y, u, e, g, dk = isokinetic_step(self.energy, x, state.velocity, state.grad, eps, scale,
                                         self.integrator)
        change = dk + (e - state.energy)
        ratio = 2 * eps / length
        nu = root((torch.expm1(ratio) if isinstance(ratio, Tensor) else math.expm1(ratio))
                  / x[0].numel())
        u = _unit(u + per_chain(nu, x) * event_noise(noise, x))
        n_grads = torch.full_like(change, self.grads_per_step, dtype=torch.long)
        info = MCLMCInfo(~torch.isfinite(change), change, n_grads)
        return MCLMCState(y, e, g, state.step + 1, u), info


class MAMS(_Microcanonical):
    """Metropolis-adjusted microcanonical sampler: a fully refreshed velocity, a trajectory
    of a random number of isokinetic steps (mean ``L / eps``), a Metropolis accept on the
    energy error (module docstring). Exact for any step size.

    Args:
        energy: callable ``(C, *event) -> (C,)``, optionally with ``grad``; unbounded.
        step_size: ``eps`` > 0: float or ``(C,)`` tensor (a tensor costs one host sync per
            trajectory, for the number of steps, and cannot be compiled).
        L: the mean trajectory length > 0.
        inv_mass: diagonal ``M^{-1}``, as for :class:`MCLMC`.
        integrator: ``"mclachlan"`` (default, 2 gradients per step) or ``"leapfrog"``.
        max_energy_error: energy error above which a trajectory counts as divergent.
        compile: run each isokinetic step of a trajectory (its energy and gradient
            included) as one ``torch.compile``d function, called for the chains still
            moving: the first trajectories compile (seconds), then a step costs a few
            fused kernels instead of dozens of small ops (on 128 chains of a 2-D target,
            ~120 us against ~1.8 ms). An energy without ``grad`` is differentiated by
            ``torch.func.grad_and_value``. Same draws as eager up to rounding.

    Use :func:`torchlangevin.tune_mams` to set ``eps``, ``L`` and ``inv_mass``.
    """

    name = "mams"
    target_accept = 0.9
    Params = MAMSParams

    def __init__(self, energy, step_size: Parameter, L: Parameter, inv_mass: Mass = 1.0,
                 integrator: str = "mclachlan", max_energy_error: float = 1000.0,
                 compile: bool = False) -> None:  # noqa: A002
        super().__init__(energy, step_size, L, inv_mass, integrator,
                         max_energy_error=max_energy_error)
        self.compile = boolean("compile", compile)
        self._step: Callable[..., tuple[Tensor, ...]] | None = None

    def step_fn(self) -> Callable[..., tuple[Tensor, ...]]:
        """One isokinetic step ``(x, u, grad, eps, scale) -> (x, u, E, grad, dK)`` on this
        kernel's energy: as it is, or compiled once per kernel (copies share it)."""
        if self._step is None:
            energy = traceable(self.energy) if self.compile else self.energy
            integrator = self.integrator

            def fn(x: Tensor, u: Tensor, grad: Tensor, eps: float | Tensor,
                   scale: float | Tensor) -> tuple[Tensor, ...]:
                return isokinetic_step(energy, x, u, grad, eps, scale, integrator)

            self._step = compile_per_call(fn, "mams_step") if self.compile else fn
        return self._step

    def noise_size(self, state: State) -> int:
        # the velocity, the number of steps' uniform, the accept's normal
        return super().noise_size(state) + 2

    def step(self, state: State, noise: Tensor, params: MAMSParams, batch: Any = None
             ) -> tuple[State, MAMSInfo]:
        x = state.x
        n = x[0].numel()
        eps = value_at(params.step_size, state.step, x)
        most, bound = _max_steps(eps, value_at(params.L, state.step, x))
        n_steps = 1 + torch.floor(uniforms(noise[:, n]) * most).clamp(max=most - 1)
        u = _unit(event_noise(noise, x))
        scale = root(on_device(params.inv_mass, x))
        # compiled, shapes cannot follow the chains; eagerly, a frozen chain costs nothing
        trajectory = self._masked if torch.compiler.is_compiling() else self._compacted
        end, dk = trajectory(state, u, eps, scale, n_steps, bound)
        log_alpha = -(end.energy - state.energy + dk)
        accept = metropolis(log_alpha, None, noise[:, n + 1], params.max_energy_error)
        info = MAMSInfo(accept.log_accept_ratio, accept.accepted, accept.divergent,
                        n_steps.long() * self.grads_per_step)
        return select(accept.accepted, end, state), info

    def _masked(self, state: State, u: Tensor, eps: float | Tensor, scale: float | Tensor,
                n_steps: Tensor, bound: int) -> tuple[State, Tensor]:
        """Every chain takes ``bound`` steps; a chain past its ``n`` keeps its point."""
        cur = state
        dk = torch.zeros_like(state.energy)
        for i in range(bound):
            y, v, e, g, change = isokinetic_step(self.energy, cur.x, u, cur.grad, eps, scale,
                                                 self.integrator)
            active = n_steps > i
            mask = per_chain(active, y)
            u = torch.where(mask, v, u)
            cur = State(torch.where(mask, y, cur.x), torch.where(active, e, cur.energy),
                        torch.where(mask, g, cur.grad))
            dk = dk + torch.where(active, change, 0.0)
        return cur, dk

    def _compacted(self, state: State, u: Tensor, eps: float | Tensor, scale: float | Tensor,
                   n_steps: Tensor, bound: int) -> tuple[State, Tensor]:
        """The same trajectories, the chains sorted by ``n`` (longest first) so that step
        ``i`` is computed for the first ``m_i = #{n > i}`` rows only: the gradients taken are
        the gradients counted (the lockstep's ``max n`` steps for every chain cost about
        twice as many). One host sync per trajectory, for the ``m_i``."""
        order = torch.argsort(n_steps, descending=True, stable=True)
        c = order.shape[0]
        done = torch.bincount(n_steps.long(), minlength=bound + 1).cumsum(0)
        moving = [m for m in (c - done[:bound]).tolist() if m]  # m_i > 0, i = 0, 1, ...
        x, e, g, u = (t[order] for t in (state.x, state.energy, state.grad, u))
        eps_rows = isinstance(eps, Tensor)
        scale_rows = isinstance(scale, Tensor) and scale.ndim == x.ndim  # a per-chain mass
        if eps_rows:
            eps = eps[order]
        elif self.compile:  # a float would be a constant of the graph: one per step size
            eps = x.new_tensor(eps)
        if scale_rows:
            scale = scale[order]
        move = self.step_fn()
        # compiled, one row would be a graph of its own (size 1 is specialised): a stopped
        # chain's step is computed beside it and dropped
        least = min(2, c) if self.compile else 1
        dk = torch.zeros_like(e)
        for m in moving:
            k = max(m, least)
            y, v, e_m, g_m, change = move(x[:k], u[:k], g[:k], eps[:k] if eps_rows else eps,
                                          scale[:k] if scale_rows else scale)
            x[:m], u[:m], e[:m], g[:m] = y[:m], v[:m], e_m[:m], g_m[:m]
            dk[:m] += change[:m]
        back = torch.empty_like(order)
        back[order] = torch.arange(c, device=order.device)
        return State(x[back], e[back], g[back]), dk[back]


def _max_steps(eps: float | Tensor, length: float | Tensor) -> tuple[float | Tensor, int]:
    """Per chain ``k = max(1, round(2 L / eps - 1))`` (``n`` is uniform on ``1 .. k``) and the
    trajectory's loop bound ``max k`` as a Python int."""
    ratio = 2 * length / eps - 1
    if isinstance(ratio, Tensor):
        if torch.compiler.is_compiling():
            raise ValueError("MAMS compiled needs float step_size and L (the number of steps "
                             "bounds a Python loop); got per-chain tensors: run it eagerly")
        most = torch.round(ratio).clamp(min=1.0)
        return most, int(most.max())
    most = max(1, round(ratio))
    return float(most), most
