"""What every kernel shares: states, info, parameter handling and input checks.

A kernel is a pair of functions over tensors whose leading dimension is the chain:
``init(x) -> State`` and ``step(state, generator) -> (State, Info)``.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor

from ..energy import Box, check_energy, check_states, energy_and_grad
from ..schedules import Schedule, as_schedule

if TYPE_CHECKING:
    from ..chains import Chains

Parameter = float | Schedule | Tensor
_SQRT_HALF = math.sqrt(0.5)


class State(NamedTuple):
    """Position ``x (C, *event)``, its energy ``(C,)`` (``None`` if not computed) and
    gradient, the number of steps taken (the schedule index), and ``scratch``: a buffer
    a kernel reuses from step to step when states are donated (else ``None``)."""

    x: Tensor
    energy: Tensor | None
    grad: Tensor
    step: int = 0
    scratch: Tensor | None = None


class Info(NamedTuple):
    """Per-step diagnostics, each ``(C,)`` or ``None`` where the kernel has none (ULA).

    ``log_accept_ratio`` is ``log alpha`` after rejections (``-inf`` for a divergent or
    out-of-support proposal); ``acceptance_prob = min(1, alpha)`` is derived on demand.
    """

    log_accept_ratio: Tensor | None = None
    accepted: Tensor | None = None
    divergent: Tensor | None = None

    @property
    def acceptance_prob(self) -> Tensor | None:
        """``min(1, exp(log_accept_ratio))`` per chain."""
        r = self.log_accept_ratio
        return None if r is None else torch.exp(r.clamp(max=0.0))


def parameter(name: str, value: Any, positive: bool = True) -> Parameter:
    """Validate a float, a ``Schedule`` or a per-chain tensor; floats stay floats."""
    if isinstance(value, Tensor):
        v = value.detach()
        if v.ndim != 1 or not v.is_floating_point():
            raise ValueError(f"{name} as a tensor must be floating point of shape (C,), one "
                             f"value per chain; got dtype {v.dtype}, shape {tuple(v.shape)}")
        bad = ~torch.isfinite(v) | ((v <= 0) if positive else (v < 0))
        if bool(bad.any()):
            raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'} and finite for "
                             f"every chain; chains {bad.nonzero().flatten().tolist()[:10]} are not")
        return v
    if isinstance(value, Schedule):
        return value
    v = as_schedule(name, value).value
    if (positive and v <= 0) or v < 0:
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}; got {value!r}")
    return v


def value_at(p: Parameter, step: int, x: Tensor) -> float | Tensor:
    """A parameter's value at ``step``: a float, or a per-chain tensor on ``x``'s device."""
    if isinstance(p, float):
        return p
    if isinstance(p, Tensor):
        return p.to(device=x.device, dtype=x.dtype)
    return float(p(step))


def inverse_mass(value: Any) -> float | Tensor:
    """Validate ``M^{-1}``: a positive float or a positive tensor of the event shape."""
    if isinstance(value, Tensor):
        value = value.detach()
        ok = bool((torch.isfinite(value) & (value > 0)).all())
    else:
        value = float(value)
        ok = math.isfinite(value) and value > 0
    if not ok:
        raise ValueError(f"inv_mass must be positive and finite; got {value!r}")
    return value


class Kernel:
    """Base class: holds the energy, step size, noise scale, inverse mass and support.

    ``noise_scale`` is the square root of the temperature: the kernel targets
    ``exp(-E(x) / noise_scale**2)``. ``inv_mass`` (``M^{-1}``, scalar or diagonal: a
    tensor of the event shape, or of the state's shape ``(C, *event)`` for one per chain)
    preconditions the moves.
    """

    name = "kernel"
    #: whether ``Info`` carries an acceptance (what :func:`~torchlangevin.adapt` tunes on)
    has_accept_step = True
    #: whether the state needs the energy (an accept step does); if not, analytic energies
    #: skip it and the driver computes the energy trace only when asked
    caches_energy = True
    #: parameters that must stay > 0 (the rest >= 0)
    _positive = ("step_size",)

    def __init__(self, energy: Any, step_size: Parameter, noise_scale: Parameter = 1.0,
                 support: Box | None = None, inv_mass: float | Tensor = 1.0) -> None:
        if not callable(energy):
            raise TypeError(f"energy must be callable (C, *event) -> (C,); "
                            f"got {type(energy).__name__}")
        self.energy = energy
        self.step_size = parameter("step_size", step_size)
        self.noise_scale = parameter("noise_scale", noise_scale,
                                     positive="noise_scale" in self._positive)
        if support is None:
            support = getattr(energy, "support", None)
        if support is not None and not isinstance(support, Box):
            raise TypeError(f"support must be a torchlangevin.Box or None; "
                            f"got {type(support).__name__}")
        self.support = support
        self.inv_mass = inverse_mass(inv_mass)

    def replace(self, **changes: Any) -> Kernel:
        """A copy with some parameters changed (validated as in the constructor)."""
        new = copy.copy(self)
        for name, value in changes.items():
            if name in ("step_size", "noise_scale"):
                value = parameter(name, value, positive=name in self._positive)
            elif name == "inv_mass":
                value = inverse_mass(value)
            elif not hasattr(self, name):
                raise TypeError(f"{type(self).__name__} has no parameter {name!r}")
            setattr(new, name, value)
        return new

    def _inv_mass(self, x: Tensor) -> float | Tensor:
        m = self.inv_mass
        return m.to(device=x.device, dtype=x.dtype) if isinstance(m, Tensor) else m

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(energy={self.energy!r}, step_size={self.step_size!r}, "
                f"noise_scale={self.noise_scale!r})")

    # -- checks ---------------------------------------------------------------------------
    def check_schedules(self, n_steps: int) -> None:
        """Fail if a scheduled parameter leaves its range anywhere in ``0 .. n_steps-1``."""
        for name in ("step_size", "noise_scale"):
            p = getattr(self, name)
            if isinstance(p, Schedule):
                values = p.table(n_steps)
                positive = name in self._positive
                bad = ~((values > 0) if positive else (values >= 0)) | ~(values < math.inf)
                if bad.any():
                    t = int(bad.argmax())
                    raise ValueError(f"{name} schedule {p!r} gives {float(values[t])!r} "
                                     f"at step {t}; "
                                     f"expected {'> 0' if positive else '>= 0'} on all "
                                     f"{n_steps} steps")

    def _check_x(self, x: Any) -> Tensor:
        x = check_states("x0", x)
        if self.support is not None:
            out = ~self.support.contains(x)
            if bool(out.any()):
                idx = out.nonzero().flatten().tolist()
                raise ValueError(f"x0 lies outside the support {self.support} in chains "
                                 f"{idx[:10]}{' ...' if len(idx) > 10 else ''}")
        for name in ("step_size", "noise_scale"):
            p = getattr(self, name)
            if isinstance(p, Tensor) and p.shape[0] != x.shape[0]:
                raise ValueError(f"{name} has {p.shape[0]} per-chain values but x0 has "
                                 f"{x.shape[0]} chains")
        return x.detach()

    # -- the kernel -------------------------------------------------------------------------
    def init(self, x: Tensor) -> State:
        """Check ``x`` (shape, finiteness, support, energy shape) and cache E and grad E."""
        x = self._check_x(x)
        e, g = energy_and_grad(self.energy, x, need_energy=self.caches_energy)
        check_energy(self.energy, x, e)
        if isinstance(self.inv_mass, Tensor):
            shape, event = self.inv_mass.shape, x.shape[1:]
            try:
                fits = len(shape) <= len(event) and torch.broadcast_shapes(shape, event) == event
            except RuntimeError:
                fits = False
            if not fits and shape != x.shape:
                raise ValueError(f"inv_mass of shape {tuple(shape)} neither broadcasts to the "
                                 f"event shape {tuple(event)} nor has the state's shape "
                                 f"{tuple(x.shape)} (one per chain)")
        return State(x, e, g, 0)

    def step(self, state: State, generator: torch.Generator) -> tuple[State, Info]:
        """Advance every chain one step. Kernels that can update in place also accept
        ``donate=True`` (see :class:`Langevin`); the driver passes it when no callback
        can hold on to old states."""
        raise NotImplementedError

    def sample(self, x: Tensor, n_steps: int, **kwargs: Any) -> Chains:
        """``torchlangevin.sample(self, x, n_steps, **kwargs)``: the TorchEBM-style door."""
        from ..driver import sample

        return sample(self, x, n_steps, **kwargs)


NO_INFO = Info()  # for kernels without an accept step: nothing to report per step


class PreDrawn:
    """Noise drawn ahead of time, handed to a kernel step by step.

    ``sample(..., compile=True)`` draws a block of steps' noise eagerly from the run's
    generator (:class:`~torchlangevin.compiled.NoisePlan`), and the compiled block takes it
    through :func:`normals`: the same numbers as eager steps draw, so the same samples. With
    ``draws=None`` it records instead: each request is answered from a scratch generator
    and its ``(n, dtype, device)`` noted.
    """

    def __init__(self, draws: list[Tensor] | None = None) -> None:
        self.draws, self.i = draws, 0
        self.plan: list[tuple[int, torch.dtype, torch.device]] = []
        self._scratch: dict[torch.device, torch.Generator] = {}

    def take(self, n: int, like: Tensor) -> Tensor:
        if self.draws is not None:
            self.i += 1
            return self.draws[self.i - 1][:n].clone()  # kernels may update it in place
        self.plan.append((n, like.dtype, like.device))
        gen = self._scratch.setdefault(like.device,
                                       torch.Generator(device=like.device).manual_seed(0))
        return normals(n, like, gen)


def draw_size(n: int) -> int:
    """How many normals a step that needs ``n`` draws: ``n`` rounded up to a multiple of 16
    (at least 16). Torch's CPU ``normal_`` makes its numbers 16 at a time (Box-Muller on 16
    uniforms), so draws of such sizes concatenate: ``k`` steps' draws are the numbers of one
    draw of ``k`` times the size, which is how a compiled block draws its noise in one call."""
    return max(16, -(-n // 16) * 16)


def normals(n: int, like: Tensor, generator: torch.Generator | PreDrawn) -> Tensor:
    """A step's noise: ``n`` standard normals, flat, with ``like``'s dtype and device.

    Every kernel draws all of a step's noise with one call (uniforms are made from normals
    by :func:`uniforms`): one draw per step is what lets a compiled block draw its steps'
    noise at once (:func:`draw_size`)."""
    if isinstance(generator, PreDrawn):
        return generator.take(n, like)
    out = torch.empty(draw_size(n), dtype=like.dtype, device=like.device)
    return out.normal_(generator=generator)[:n]


def normal_like(x: Tensor, generator: torch.Generator | PreDrawn) -> Tensor:
    """Standard normal noise shaped like ``x``, as a step's one draw."""
    return normals(x.numel(), x, generator).view_as(x)


def uniforms(z: Tensor) -> Tensor:
    """``U[0, 1]`` from standard normals: ``u = Phi(z) = erfc(-z / sqrt 2) / 2`` (``erfc``
    keeps the lower tail's relative precision; ``log_ndtr`` would too, but compiled it is
    not vectorised and takes a fused step's loop with it: +30% a trajectory)."""
    return 0.5 * torch.erfc(z * -_SQRT_HALF)


def metropolis(log_alpha: Tensor, inside: Tensor | None, z: Tensor,
               max_energy_error: float | None = None) -> Info:
    """Accept with probability ``min(1, exp(log_alpha))``: where ``log u < log_alpha``,
    ``u = Phi(z)`` (:func:`uniforms`) from ``z``, standard normal per chain.

    A proposal whose ``log_alpha`` is not finite (its energy or gradient was NaN/Inf) or
    below ``-max_energy_error`` is divergent and rejected; one outside the support is
    rejected but not divergent.
    """
    divergent = ~torch.isfinite(log_alpha)
    if max_energy_error is not None:
        divergent |= log_alpha < -max_energy_error
    if inside is not None:
        divergent &= inside
        log_alpha = log_alpha.masked_fill(~inside, -math.inf)
    log_alpha = log_alpha.masked_fill(divergent, -math.inf)
    return Info(log_accept_ratio=log_alpha, accepted=torch.log(uniforms(z)) < log_alpha,
                divergent=divergent)


def select(accepted: Tensor, new: State, old: State) -> State:
    """Per chain, the proposal where accepted, else the current state."""
    mask = accepted.view(-1, *([1] * (old.x.ndim - 1)))
    return State(torch.where(mask, new.x, old.x), torch.where(accepted, new.energy, old.energy),
                 torch.where(mask, new.grad, old.grad), old.step + 1)  # no scratch: not donated
