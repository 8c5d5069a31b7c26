"""The kernel protocol, and what every kernel shares: state, info, parameters, checks.

A kernel is pure functions over tensors whose leading dimension is the chain::

    state = kernel.init(x, params)
    state, info = kernel.step(state, noise, params, batch=None)

``noise`` is ``(C, kernel.noise_size(state))`` standard normals, drawn by the driver;
``params`` is the kernel's parameter NamedTuple (step size, noise scale, inverse mass, ...),
owned by the driver and by ``adapt`` and validated once by :meth:`Kernel.make_params`.
A kernel never touches a generator and never mutates itself.
"""

from __future__ import annotations

import copy
import itertools
import math
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor

from ..energy import Box, check_energy, check_states, energy_and_grad
from ..mass import DenseMass, LowRankMass, Mass, check_mass, mass_dim, mass_to
from ..schedules import Schedule, as_schedule
from ..util import integer, positive

if TYPE_CHECKING:
    from ..chains import Chains

Parameter = float | Schedule | Tensor
_SQRT_HALF = math.sqrt(0.5)


class State(NamedTuple):
    """Position ``x (C, *event)``, its energy ``(C,)`` (``None`` if not computed), its
    gradient, and the number of steps taken (the schedule index; a 0-dim tensor inside a
    compiled block)."""

    x: Tensor
    energy: Tensor | None
    grad: Tensor
    step: int | Tensor = 0


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


class CountedInfo(NamedTuple):
    """:class:`Info` and the gradient evaluations each chain made in the step, ``(C,)``
    long (the driver sums them into ``Chains.n_grads``): for kernels whose trajectories
    differ in length from chain to chain (MAMS, ChEES-HMC)."""

    log_accept_ratio: Tensor
    accepted: Tensor
    divergent: Tensor
    n_grads: Tensor

    acceptance_prob = Info.acceptance_prob


class Params(NamedTuple):
    """The parameters most kernels take. A float or ``Schedule`` is shared by all chains; a
    tensor with a leading chain dimension gives one value per chain.

    Attributes:
        step_size: ``eps > 0``: float, ``Schedule`` or ``(C,)`` tensor.
        noise_scale: ``sqrt(T)``: the kernel targets ``exp(-E / noise_scale**2)``.
        inv_mass: ``M^{-1}``: a float, a diagonal (a tensor of the event shape, or
            ``(C, *event)`` for one per chain), or a :class:`~torchlangevin.mass.DenseMass`
            or :class:`~torchlangevin.mass.LowRankMass` over the flattened event.
    """

    step_size: Parameter
    noise_scale: Parameter = 1.0
    inv_mass: Mass = 1.0


@runtime_checkable
class KernelProtocol(Protocol):
    """What the driver, ``adapt`` and the block runner need of a kernel.

    Attributes:
        energy: the target's energy ``(C, *event) -> (C,)`` (for SG-MCMC kernels, an object
            whose ``loss_and_grad(x, batch)`` takes the step's minibatch).
        params: the parameters the kernel was built with (a NamedTuple).
        has_accept_step: ``Info`` carries an acceptance (what ``adapt`` tunes on).
        couples_chains: a step mixes states of different chains, so the chains cannot be
            split into blocks or over processes.
        needs_batch: ``step`` needs the step's minibatch (``batch``).
        compilable: the step has no Python control flow on the step count, so a block of
            steps can be compiled.
    """

    energy: Any
    params: Any
    has_accept_step: bool
    couples_chains: bool
    needs_batch: bool
    compilable: bool

    def init(self, x: Tensor, params: Any) -> Any:
        """Check ``x (C, *event)`` and build the state (energy and gradient cached)."""

    def step(self, state: Any, noise: Tensor, params: Any, batch: Any = None
             ) -> tuple[Any, Info]:
        """Advance every chain one step with ``noise (C, noise_size(state))``."""

    def noise_size(self, state: Any) -> int:
        """Standard normals one step consumes per chain."""


# -- parameter checks: one rule per field name, applied in one place -------------------------

def scalar_parameter(name: str, value: Any, strict: bool = True) -> Parameter:
    """A float, a ``Schedule`` or a ``(C,)`` tensor, ``> 0`` (``>= 0`` if not ``strict``)."""
    rule = "> 0" if strict else ">= 0"
    if isinstance(value, Tensor):
        v = value.detach()
        if v.ndim != 1 or not v.is_floating_point():
            raise ValueError(f"{name} as a tensor must be floating point of shape (C,), one "
                             f"value per chain; got dtype {v.dtype}, shape {tuple(v.shape)}")
        bad = ~torch.isfinite(v) | ((v <= 0) if strict else (v < 0))
        if bool(bad.any()):
            raise ValueError(f"{name} must be {rule} and finite for every chain; chains "
                             f"{bad.nonzero().flatten().tolist()[:10]} are not")
        return v
    if isinstance(value, Schedule):
        return value
    v = as_schedule(name, value).value
    if (strict and v <= 0) or v < 0:
        raise ValueError(f"{name} must be {rule}; got {value!r}")
    return v


def diagonal_mass(name: str, value: Any) -> float | Tensor:
    """``M^{-1}`` for kernels that take a scalar or diagonal mass only."""
    if isinstance(value, (DenseMass, LowRankMass)):
        raise ValueError(f"{name} must be a positive float or a diagonal tensor for this "
                         f"kernel; got a {type(value).__name__}")
    return check_mass(name, value)


#: field name -> check, for the fields kernels share; a kernel adds its own in ``param_rules``
RULES: dict[str, Callable[[str, Any], Any]] = {
    "step_size": scalar_parameter,
    "noise_scale": scalar_parameter,
    "inv_mass": check_mass,
    "n_leapfrog_steps": lambda name, v: integer(name, v, 1),
    "max_energy_error": positive,
    "friction": positive,
}

#: fields whose shared value has the event's shape (so a per-chain one is ``(C, *event)``);
#: every other tensor field is per chain when it is ``(C,)``
EVENT_SHAPED = ("inv_mass",)


def per_chain_field(name: str, value: Any, state_ndim: int) -> bool:
    """Whether ``value`` of field ``name`` holds one value per chain (decided by its rank,
    never by a coincidence of sizes)."""
    if not isinstance(value, Tensor):
        return False
    return value.ndim == (state_ndim if name in EVENT_SHAPED else 1)


def slice_params(params: NamedTuple, rows: slice, state_ndim: int) -> NamedTuple:
    """``params`` for the chains ``rows``: every per-chain field sliced, the rest shared."""
    return type(params)(*(v[rows] if per_chain_field(k, v, state_ndim) else v
                          for k, v in zip(params._fields, params, strict=True)))


def value_at(p: Parameter, step: int | Tensor, x: Tensor) -> float | Tensor:
    """A parameter's value at ``step``: a float, or a per-chain tensor on ``x``'s device."""
    if isinstance(p, float):
        return p
    if isinstance(p, Tensor):
        return p.to(device=x.device, dtype=x.dtype)
    return float(p(int(step)))


def on_device(v: Mass, x: Tensor) -> Mass:
    """A float as is, a tensor (or a mass's tensors) on ``x``'s device and dtype."""
    return mass_to(v, x)


# -- the base class ---------------------------------------------------------------------------

#: the driver's ``sample``, set when :mod:`torchlangevin.driver` is imported (kernels never
#: import the driver; ``Kernel.sample`` is the TorchEBM-style door onto it)
_RUNNER: list[Callable[..., Chains]] = []


def check_compilable(kernel: Any, what: str) -> None:
    """Fail clearly unless ``kernel``'s steps can be compiled into blocks (``compilable``):
    ``what`` (the run or the warm-up) asked for ``compile=True``."""
    if not getattr(kernel, "compilable", True):
        advice = getattr(kernel, "compile_advice", Kernel.compile_advice)
        raise ValueError(f"compile=True runs {what} in compiled blocks of steps, which needs "
                         f"steps without Python control flow; {type(kernel).__name__} is not "
                         f"compilable: {advice}")


class FuncGrad:
    """An energy's value and gradient by ``torch.func.grad_and_value``, which
    ``torch.compile`` captures (``torch.autograd.grad`` it does not)."""

    def __init__(self, energy: Callable[[Tensor], Tensor]) -> None:
        self.energy = energy

    def __call__(self, x: Tensor) -> Tensor:
        return self.energy(x)

    def energy_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        def total(x: Tensor) -> tuple[Tensor, Tensor]:
            e = self.energy(x)
            return e.sum(), e

        g, (_, e) = torch.func.grad_and_value(total, has_aux=True)(x)
        return e, g


def traceable(energy: Any) -> Any:
    """``energy`` if it brings its own gradient, else :class:`FuncGrad` of it."""
    if any(hasattr(energy, k) for k in ("grad", "energy_and_grad")):
        return energy
    return FuncGrad(energy)


#: numbers the compiled pieces' code objects (one per kernel, shared by its copies)
_COMPILED_IDS = itertools.count()


def compile_per_call(fn: Callable[..., Any], name: str, dynamic: bool = True,
                     options: dict[str, Any] | None = None) -> Callable[..., Any]:
    """``torch.compile(fn, dynamic=dynamic)`` (dynamic: the batch shrinks as chains stop)
    under a code object of its own: dynamo's recompile limit (8) counts graphs per code
    object, and every kernel's piece (other energies, other masses) would share one, then
    silently run eager once a process had seen a few models."""
    code = fn.__code__.replace(co_name=f"{name}_{next(_COMPILED_IDS)}")
    own = types.FunctionType(code, fn.__globals__, code.co_name, None, fn.__closure__)
    return torch.compile(own, dynamic=dynamic, options=options)


def register_runner(run: Callable[..., Chains]) -> None:
    """Make ``run(kernel, x, n_steps, **kwargs)`` what :meth:`Kernel.sample` calls."""
    _RUNNER[:] = [run]


class Kernel:
    """Base class: the energy, the support and the kernel's :class:`Params`.

    ``noise_scale`` is the square root of the temperature: the kernel targets
    ``exp(-E(x) / noise_scale**2)``. ``inv_mass`` (``M^{-1}``, scalar or diagonal: a tensor
    of the event shape, or of the state's shape ``(C, *event)`` for one per chain)
    preconditions the moves.
    """

    name: ClassVar[str] = "kernel"
    has_accept_step: ClassVar[bool] = True
    couples_chains: ClassVar[bool] = False
    needs_batch: ClassVar[bool] = False
    compilable: ClassVar[bool] = True
    #: what :func:`check_compilable` tells a caller of ``compile=True`` to do instead
    compile_advice: ClassVar[str] = "run it eagerly"
    #: ``step(..., donate=True)`` may write the new state into the old one's buffers (the
    #: block runner asks for it only when nothing else holds the old state)
    in_place: ClassVar[bool] = False
    #: whether the state needs the energy (an accept step does); if not, analytic energies
    #: skip it and the driver computes the energy trace only when asked
    caches_energy: ClassVar[bool] = True
    #: the acceptance ``adapt`` aims at by default (``None``: the caller must say)
    target_accept: ClassVar[float | None] = None
    #: the parameter NamedTuple this kernel takes
    Params: ClassVar[type] = Params
    #: checks for fields beyond :data:`RULES`
    param_rules: ClassVar[dict[str, Callable[[str, Any], Any]]] = {}
    #: scalar parameters that must stay > 0 (the others >= 0)
    positive_params: ClassVar[tuple[str, ...]] = ("step_size",)

    def __init__(self, energy: Any, step_size: Parameter, noise_scale: Parameter = 1.0,
                 support: Box | None = None, inv_mass: float | Tensor = 1.0,
                 **extra: Any) -> None:
        if not callable(energy):
            raise TypeError(f"energy must be callable (C, *event) -> (C,); "
                            f"got {type(energy).__name__}")
        self.energy = energy
        if support is None:
            support = getattr(energy, "support", None)
        if support is not None and not isinstance(support, Box):
            raise TypeError(f"support must be a torchlangevin.Box or None; "
                            f"got {type(support).__name__}")
        self.support = support
        self.params = self.make_params(step_size=step_size, noise_scale=noise_scale,
                                       inv_mass=inv_mass, **extra)

    # -- parameters --------------------------------------------------------------------------
    def make_params(self, **values: Any) -> NamedTuple:
        """This kernel's ``Params`` from ``values``, every field checked by its rule."""
        unknown = set(values) - set(self.Params._fields)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no parameter {sorted(unknown)[0]!r}; "
                            f"its parameters are {self.Params._fields}")
        checked = {}
        for name, value in values.items():
            rule = self.param_rules.get(name) or RULES.get(name)
            if rule is scalar_parameter:
                checked[name] = scalar_parameter(name, value, name in self.positive_params)
            else:
                checked[name] = rule(name, value) if rule is not None else value
        return self.Params(**checked)

    def replace(self, **changes: Any) -> Kernel:
        """A copy with some parameters changed (validated as in the constructor)."""
        new = copy.copy(self)
        new.params = self.make_params(**{**self.params._asdict(), **changes})
        return new

    def __getattr__(self, name: str) -> Any:
        # ``kernel.step_size`` and friends read the parameters (they are not attributes)
        params = self.__dict__.get("params")
        if params is not None and name in type(params)._fields:
            return getattr(params, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.params._asdict().items())
        return f"{type(self).__name__}(energy={self.energy!r}, {fields})"

    # -- checks ------------------------------------------------------------------------------
    def check_schedules(self, params: NamedTuple, n_steps: int) -> None:
        """Fail if a scheduled parameter leaves its range anywhere in ``0 .. n_steps-1``."""
        for name, p in params._asdict().items():
            if isinstance(p, Schedule):
                values = p.table(n_steps)
                strict = name in self.positive_params
                bad = ~(values < math.inf) | ~((values > 0) if strict else (values >= 0))
                if bad.any():
                    t = int(bad.argmax())
                    raise ValueError(f"{name} schedule {p!r} gives {float(values[t])!r} at step "
                                     f"{t}; expected {'> 0' if strict else '>= 0'} on all "
                                     f"{n_steps} steps")

    def check_x(self, x: Any, params: NamedTuple) -> Tensor:
        """``x`` as the chains' start: shape, finiteness, support, per-chain sizes."""
        x = check_states("x0", x)
        if self.support is not None:
            out = ~self.support.contains(x)
            if bool(out.any()):
                idx = out.nonzero().flatten().tolist()
                raise ValueError(f"x0 lies outside the support {self.support} in chains "
                                 f"{idx[:10]}{' ...' if len(idx) > 10 else ''}")
        for name, v in params._asdict().items():
            if isinstance(v, Tensor) and name not in EVENT_SHAPED and v.shape[0] != x.shape[0]:
                raise ValueError(f"{name} has {v.shape[0]} per-chain values but x0 has "
                                 f"{x.shape[0]} chains")
        inv_mass = getattr(params, "inv_mass", None)
        if isinstance(inv_mass, Tensor):
            _check_inv_mass_shape(inv_mass, x)
        elif isinstance(inv_mass, (DenseMass, LowRankMass)) and \
                mass_dim(inv_mass) != _event_numel(x):
            raise ValueError(f"inv_mass is a {type(inv_mass).__name__} over "
                             f"{mass_dim(inv_mass)} coordinates but each chain has "
                             f"{_event_numel(x)}")
        return x.detach()

    # -- the protocol ------------------------------------------------------------------------
    def init(self, x: Tensor, params: NamedTuple | None = None) -> State:
        """Check ``x`` (shape, finiteness, support, energy shape) and cache E and grad E."""
        x = self.check_x(x, self.params if params is None else params)
        e, g = energy_and_grad(self.energy, x, need_energy=self.caches_energy)
        check_energy(self.energy, x, e)
        return State(x, e, g, 0)

    def noise_size(self, state: State) -> int:
        """Standard normals one step draws per chain: by default one per coordinate."""
        return _event_numel(state.x)

    def step(self, state: State, noise: Tensor, params: NamedTuple, batch: Any = None
             ) -> tuple[State, Info]:
        """Advance every chain one step."""
        raise NotImplementedError

    def sample(self, x: Tensor, n_steps: int, **kwargs: Any) -> Chains:
        """``torchlangevin.sample(self, x, n_steps, **kwargs)``: the TorchEBM-style door."""
        if not _RUNNER:
            raise RuntimeError("import torchlangevin first: it registers the driver")
        return _RUNNER[0](self, x, n_steps, **kwargs)


def _event_numel(x: Tensor) -> int:
    return math.prod(x.shape[1:])


def _check_inv_mass_shape(inv_mass: Tensor, x: Tensor) -> None:
    shape, event = inv_mass.shape, x.shape[1:]
    try:
        fits = len(shape) <= len(event) and torch.broadcast_shapes(shape, event) == event
    except RuntimeError:
        fits = False
    if not fits and shape != x.shape:
        raise ValueError(f"inv_mass of shape {tuple(shape)} neither broadcasts to the event "
                         f"shape {tuple(event)} nor has the state's shape {tuple(x.shape)} "
                         f"(one per chain)")


NO_INFO = Info()  # for kernels without an accept step: nothing to report per step


def event_noise(noise: Tensor, x: Tensor, start: int = 0) -> Tensor:
    """The columns ``start .. start + event size`` of a step's ``(C, m)`` noise, shaped like
    ``x``."""
    # views of views of a block's noise are slow to make (~10 us): make as few as possible
    if start == 0 and noise.shape == x.shape:  # the whole row, already shaped
        return noise
    part = noise[:, start:start + _event_numel(x)]
    return part if part.shape == x.shape else part.reshape(x.shape)


def uniforms(z: Tensor) -> Tensor:
    """``U[0, 1]`` from standard normals: ``u = Phi(z) = erfc(-z / sqrt 2) / 2`` (``erfc``
    keeps the lower tail's relative precision and is vectorised when compiled)."""
    return 0.5 * torch.erfc(z * -_SQRT_HALF)


def metropolis(log_alpha: Tensor, inside: Tensor | None, z: Tensor,
               max_energy_error: float | None = None) -> Info:
    """Accept with probability ``min(1, exp(log_alpha))``: where ``log u < log_alpha``,
    ``u = Phi(z)`` (:func:`uniforms`) from ``z``, standard normal per chain.

    A proposal whose ``log_alpha`` is not finite (its energy or gradient was NaN/Inf) or
    below ``-max_energy_error`` is divergent and rejected; one outside the support is
    rejected but not divergent.
    """
    # finite and not too low, in three comparisons (NaN fails every one)
    ok = log_alpha > -math.inf if max_energy_error is None else log_alpha >= -max_energy_error
    ok &= log_alpha < math.inf
    divergent = ~ok
    if inside is not None:
        divergent &= inside
        ok &= inside
    log_alpha = torch.where(ok, log_alpha, -math.inf)
    return Info(log_accept_ratio=log_alpha, accepted=torch.log(uniforms(z)) < log_alpha,
                divergent=divergent)


def select(accepted: Tensor, new: State, old: State) -> State:
    """Per chain, the proposal where accepted, else the current state."""
    mask = accepted.view(-1, *([1] * (old.x.ndim - 1)))
    return State(torch.where(mask, new.x, old.x), torch.where(accepted, new.energy, old.energy),
                 torch.where(mask, new.grad, old.grad), old.step + 1)
