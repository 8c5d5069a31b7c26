"""Bayesian models with constrained, named parameters, sampled on one unconstrained vector.

A model is a log joint density ``log p(theta, data)`` over named parameters, each with a
shape and a ``torch.distributions.constraints`` support. Every parameter ``theta_k`` is
the image of an unconstrained block ``u_k`` under the bijection
``T_k = biject_to(constraint_k)`` (Stan's transforms: ``exp`` for ``positive``, a scaled
sigmoid for ``interval(a, b)``, stick-breaking for ``simplex``, the tanh-based map of
the LKJ literature for ``corr_cholesky``, ...), and the blocks are laid side by side in
one flat vector ``u`` of ``model.dim`` numbers per chain. The density of ``u`` is the
change of variables

    log p_u(u) = log p(T(u)) + sum_k log |det J_{T_k}(u_k)|,

so the energy any kernel samples is

    E(u) = -( log_joint(T(u)) + sum_k log |det J_{T_k}(u_k)| ),

batched over chains ``(C, dim) -> (C,)``; its gradient is one ``torch.autograd.grad``
for all chains. Draws are mapped back with ``T`` and reported by name.

::

    model = Model(log_joint, {"mu": Param(()), "tau": Param((), constraints.positive),
                              "theta": Param((8,))})
    result = tl.model.sample(model, n_chains=4, seed=0)
    result["tau"]            # (chain, draw)
    result.to_arviz()        # posterior mu, tau, theta (chain, draw, 8)
"""

from __future__ import annotations

import math
import secrets
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.distributions import biject_to, constraints
from torch.distributions.transforms import Transform

from .adaptation import Adapted, adapt
from .chains import Chains, Summary
from .driver import sample as run_kernel
from .energy import check_finite
from .kernels import NUTS
from .util import integer, positive, seeded_generator

__all__ = ["Param", "Model", "Values", "ModelChains", "ModelEnergy", "DivergenceWarning",
           "LowerCholeskyVector", "PositiveDefiniteVector", "sample", "sample_posterior",
           "Diagnosis", "UntrustedRunWarning"]

#: Stan redraws an initial point whose log density is not finite this many times
INIT_ATTEMPTS = 100


class DivergenceWarning(UserWarning):
    """Divergent transitions after warm-up: the draws may miss part of the posterior."""


class UntrustedRunWarning(UserWarning):
    """:func:`sample_posterior`'s checks failed: the draws should not be trusted as they are
    (``result.diagnosis.problems`` says why)."""


def _tril_size(shape: torch.Size) -> int:
    if len(shape) < 1:
        raise ValueError(f"a vector of lower-triangular entries needs at least one dimension; "
                         f"got shape {tuple(shape)}")
    k = (math.isqrt(8 * shape[-1] + 1) - 1) // 2
    if k * (k + 1) // 2 != shape[-1]:
        raise ValueError(f"{shape[-1]} is not a triangular number K(K+1)/2")
    return k


def _square(shape: torch.Size) -> int:
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise ValueError(f"needs a square matrix shape (..., K, K); got {tuple(shape)}")
    return shape[-1]


class LowerCholeskyVector(Transform):
    """``K(K+1)/2`` reals to a lower-triangular ``K x K`` matrix with a positive diagonal
    (Stan's ``cholesky_factor_cov``): the vector fills the lower triangle row by row and
    the diagonal is exponentiated, so ``log |det J| = sum_i u_ii`` (the diagonal's
    unconstrained entries), with respect to the ``K(K+1)/2`` lower-triangular entries."""

    domain = constraints.independent(constraints.real, 1)
    codomain = constraints.lower_cholesky
    bijective = True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LowerCholeskyVector)

    def _call(self, u: Tensor) -> Tensor:
        k = _tril_size(u.shape)
        rows, cols = torch.tril_indices(k, k, device=u.device)
        m = u.new_zeros(*u.shape[:-1], k, k)
        m[..., rows, cols] = u
        return m.tril(-1) + torch.diag_embed(m.diagonal(dim1=-2, dim2=-1).exp())

    def _inverse(self, y: Tensor) -> Tensor:
        k = _square(y.shape)
        rows, cols = torch.tril_indices(k, k, device=y.device)
        m = y.tril(-1) + torch.diag_embed(y.diagonal(dim1=-2, dim2=-1).log())
        return m[..., rows, cols]

    def log_abs_det_jacobian(self, u: Tensor, y: Tensor) -> Tensor:
        return y.diagonal(dim1=-2, dim2=-1).log().sum(-1)

    def forward_shape(self, shape: torch.Size) -> torch.Size:
        k = _tril_size(torch.Size(shape))
        return torch.Size((*shape[:-1], k, k))

    def inverse_shape(self, shape: torch.Size) -> torch.Size:
        k = _square(torch.Size(shape))
        return torch.Size((*shape[:-2], k * (k + 1) // 2))


class PositiveDefiniteVector(Transform):
    """``K(K+1)/2`` reals to a symmetric positive-definite ``S = L L^T``, ``L`` from
    :class:`LowerCholeskyVector` (Stan's ``cov_matrix``). With respect to the
    ``K(K+1)/2`` lower-triangular entries of ``S``,

        log |det J| = K log 2 + sum_{i=1}^K (K - i + 2) log L_ii.
    """

    domain = constraints.independent(constraints.real, 1)
    codomain = constraints.positive_definite
    bijective = True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PositiveDefiniteVector)

    def _call(self, u: Tensor) -> Tensor:
        chol = LowerCholeskyVector()(u)
        return chol @ chol.transpose(-1, -2)

    def _inverse(self, y: Tensor) -> Tensor:
        return LowerCholeskyVector().inv(torch.linalg.cholesky(y))

    def log_abs_det_jacobian(self, u: Tensor, y: Tensor) -> Tensor:
        k = _square(y.shape)
        log_diag = LowerCholeskyVector()(u).diagonal(dim1=-2, dim2=-1).log()
        powers = torch.arange(k + 1, 1, -1, dtype=u.dtype, device=u.device)  # K-i+2, i=1..K
        return k * math.log(2.0) + (powers * log_diag).sum(-1)

    forward_shape = LowerCholeskyVector.forward_shape
    inverse_shape = LowerCholeskyVector.inverse_shape


def transform_to_unconstrained(constraint: constraints.Constraint) -> Transform:
    """The bijection from the reals onto ``constraint``'s support: ``biject_to``, and
    :class:`LowerCholeskyVector` / :class:`PositiveDefiniteVector` for the two matrix
    constraints torch has no bijection for."""
    if isinstance(constraint, type(constraints.lower_cholesky)):
        return LowerCholeskyVector()
    if isinstance(constraint, type(constraints.positive_definite)):
        return PositiveDefiniteVector()
    return biject_to(constraint)


@dataclass(frozen=True)
class Param:
    """A named parameter's declaration: its shape (per chain) and its support.

    Args:
        shape: the parameter's shape, ``()`` for a scalar, an int for a vector.
        constraint: a ``torch.distributions.constraints`` support (``real``, ``positive``,
            ``interval(a, b)``, ``unit_interval``, ``simplex``, ``corr_cholesky``,
            ``lower_cholesky``, ``positive_definite``, ``greater_than(a)``, ...).
    """

    shape: tuple[int, ...] = ()
    constraint: constraints.Constraint = constraints.real

    def __post_init__(self) -> None:
        shape = (self.shape,) if isinstance(self.shape, (int, np.integer)) else self.shape
        if (not isinstance(shape, (tuple, list, torch.Size))
                or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                           and s >= 0 for s in shape)):
            raise ValueError(f"shape must be a tuple of non-negative integers; got {shape!r}")
        object.__setattr__(self, "shape", tuple(int(s) for s in shape))
        if not isinstance(self.constraint, constraints.Constraint):
            raise TypeError(f"constraint must be a torch.distributions.constraints "
                            f"Constraint; got {self.constraint!r}")


class Values(dict):
    """Constrained parameter values by name, as keys or attributes: ``p["tau"]``,
    ``p.tau``; each ``(*batch, *shape)``."""

    def __getattr__(self, name: str) -> Tensor:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no parameter {name!r}; the parameters are "
                                 f"{list(self)}") from None


@dataclass(frozen=True)
class _Block:
    """Where a parameter lives in the flat vector, and its bijection."""

    name: str
    shape: tuple[int, ...]
    unconstrained_shape: tuple[int, ...]
    start: int
    stop: int
    transform: Transform
    constraint: constraints.Constraint


def _block(name: str, param: Param, start: int) -> _Block:
    try:
        t = transform_to_unconstrained(param.constraint)
    except NotImplementedError:
        raise ValueError(f"params[{name!r}]: constraint {param.constraint!r} has no "
                         f"bijection from the reals (torch.distributions.biject_to knows "
                         f"none); use real, positive, interval(a, b), unit_interval, "
                         f"greater_than(a), less_than(b), simplex, corr_cholesky, "
                         f"lower_cholesky or positive_definite") from None
    try:
        ushape = tuple(t.inverse_shape(torch.Size(param.shape)))
        probe = t(torch.zeros(ushape, dtype=torch.float64))
    except (ValueError, IndexError, RuntimeError) as err:
        raise ValueError(f"params[{name!r}]: shape {param.shape} does not suit the "
                         f"constraint {param.constraint!r}: {err}") from None
    if tuple(probe.shape) != param.shape:
        raise ValueError(f"params[{name!r}]: shape {param.shape} does not suit the "
                         f"constraint {param.constraint!r} (its bijection gives "
                         f"{tuple(probe.shape)})")
    size = math.prod(ushape)
    return _Block(name, param.shape, ushape, start, start + size, t, param.constraint)


def _coordinate_names(name: str, shape: tuple[int, ...]) -> list[str]:
    if not shape:
        return [name]
    return [f"{name}[{','.join(map(str, i))}]" for i in np.ndindex(*shape)]


class Model:
    """A log joint density over named, constrained parameters, on one unconstrained vector.

    Args:
        log_joint: ``log_joint(p) -> (C,)``, the log density (up to a constant) of the
            constrained parameters ``p`` (a :class:`Values`: ``p.mu``, ``p["tau"]``, each
            ``(C, *shape)``); written with ``torch.distributions`` ``log_prob``\\ s that
            broadcast over the chain dimension.
        params: the parameters by name, each a :class:`Param`; their order is the order
            of their blocks in the unconstrained vector.
        derived: quantities computed from the parameters and reported with them (Stan's
            transformed parameters), by name: ``derived[name](p)`` of shape
            ``(*batch, *shape)`` for values ``p`` of shape ``(*batch, *param_shape)``,
            e.g. ``{"theta": lambda p: p.mu[..., None] + p.tau[..., None] * p.eta}``.
        dtype: dtype of the initial points (default float64, as Stan).
        device: device of the initial points.

    The energy a kernel samples is ``model.energy``:
    ``E(u) = -(log_joint(T(u)) + sum_k log |det J_{T_k}(u_k)|)`` over ``u`` of shape
    ``(C, model.dim)``.
    """

    def __init__(self, log_joint: Callable[[Values], Tensor], params: Mapping[str, Param],
                 *, derived: Mapping[str, Callable[[Values], Tensor]] | None = None,
                 dtype: torch.dtype = torch.float64,
                 device: torch.device | str | None = None) -> None:
        if not callable(log_joint):
            raise TypeError(f"log_joint must be callable as log_joint(params) -> (C,); "
                            f"got {log_joint!r}")
        if not isinstance(params, Mapping) or not params:
            raise ValueError(f"params must be a non-empty mapping of names to Param; "
                             f"got {params!r}")
        blocks, start = [], 0
        for name, param in params.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"params: names must be identifiers; got {name!r}")
            if not isinstance(param, Param):
                raise TypeError(f"params[{name!r}] must be a Param(shape, constraint); "
                                f"got {param!r}")
            blocks.append(_block(name, param, start))
            start = blocks[-1].stop
        derived = dict(derived or {})
        for name, fn in derived.items():
            if name in params or not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"derived: names must be identifiers other than the "
                                 f"parameters' {list(params)}; got {name!r}")
            if not callable(fn):
                raise TypeError(f"derived[{name!r}] must be callable as fn(params); "
                                f"got {fn!r}")
        self.log_joint = log_joint
        self.derived = derived
        self.blocks: tuple[_Block, ...] = tuple(blocks)
        self.dim = start
        self.dtype = dtype
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.energy = ModelEnergy(self)

    @property
    def param_names(self) -> list[str]:
        """The parameters' names, in declaration order."""
        return [b.name for b in self.blocks]

    @property
    def names(self) -> list[str]:
        """One name per constrained coordinate, ArviZ's way: ``mu``, ``theta[0]``,
        ``L[1,0]``."""
        return [n for b in self.blocks for n in _coordinate_names(b.name, b.shape)]

    def _check_vector(self, x: Any) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[-1] != self.dim:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a tensor of shape (*batch, {self.dim}): the "
                             f"unconstrained vector; got {got}")
        return x

    def transform(self, x: Tensor) -> tuple[Values, Tensor]:
        """The constrained values ``T(x)`` by name and ``sum_k log |det J_{T_k}|``, for
        ``x`` of shape ``(*batch, dim)``: values ``(*batch, *shape)``, log-Jacobian
        ``(*batch,)``."""
        x = self._check_vector(x)
        batch = x.shape[:-1]
        values, log_det = Values(), x.new_zeros(batch)
        for b in self.blocks:
            u = x[..., b.start:b.stop].reshape(*batch, *b.unconstrained_shape)
            y = b.transform(u)
            values[b.name] = y
            log_det = log_det + b.transform.log_abs_det_jacobian(u, y).reshape(
                *batch, -1).sum(-1)
        return values, log_det

    def constrain(self, x: Tensor) -> Values:
        """``T(x)`` by name, each ``(*batch, *shape)``, for ``x`` of shape
        ``(*batch, dim)``."""
        return self.transform(x)[0]

    def unconstrain(self, values: Mapping[str, Any], name: str = "values") -> Tensor:
        """``T^{-1}`` of constrained values given by name (every parameter), each
        ``(*batch, *shape)`` with one common ``batch``: the vector ``(*batch, dim)``."""
        missing = [n for n in self.param_names if n not in values]
        unknown = [n for n in values if n not in self.param_names]
        if missing or unknown:
            raise ValueError(f"{name} must give every parameter {self.param_names} and no "
                             f"other; missing {missing}, unknown {unknown}")
        parts = [self._unconstrain_block(b, values[b.name], name) for b in self.blocks]
        batch = torch.broadcast_shapes(*(p.shape[:-1] for p in parts))
        return torch.cat([p.expand(*batch, p.shape[-1]) for p in parts], -1)

    def _unconstrain_block(self, b: _Block, value: Any, name: str) -> Tensor:
        y = torch.as_tensor(value, dtype=self.dtype, device=self.device)
        if y.ndim < len(b.shape) or y.shape[y.ndim - len(b.shape):] != b.shape:
            raise ValueError(f"{name}[{b.name!r}] must have shape (*batch, "
                             f"{', '.join(map(str, b.shape))}); got {tuple(y.shape)}")
        if not bool(torch.isfinite(y).all()):
            raise ValueError(f"{name}[{b.name!r}] must be finite; got {value!r}")
        if not bool(b.constraint.check(y).all()):
            raise ValueError(f"{name}[{b.name!r}] is outside the support "
                             f"{b.constraint!r}; got {value!r}")
        batch = y.shape[:y.ndim - len(b.shape)]
        u = b.transform.inv(y).reshape(*batch, -1)
        if not bool(torch.isfinite(u).all()):
            raise ValueError(f"{name}[{b.name!r}] maps to a non-finite unconstrained value "
                             f"(on the boundary of {b.constraint!r}?); got {value!r}")
        return u

    def init(self, n_chains: int, *, seed: int | None = None,
             point: Mapping[str, Any] | None = None, radius: float = 2.0) -> Tensor:
        """Initial unconstrained points ``(n_chains, dim)``.

        Without ``point``, each coordinate is uniform in ``(-radius, radius)`` on the
        unconstrained scale (Stan's default, ``radius = 2``), from a generator seeded by
        ``seed``; a chain whose log density is not finite is redrawn (up to 100 times).
        With ``point``, the given constrained values (every parameter, shaped ``shape`` or
        ``(n_chains, *shape)``) are mapped to the unconstrained scale.
        """
        n_chains = integer("n_chains", n_chains, 1)
        radius = positive("radius", radius)
        if point is not None:
            x = self.unconstrain(point, "init").expand(n_chains, self.dim).clone()
            self._check_init(x, "init")
            return x
        gen = seeded_generator(seed, self.device)

        def draw(n: int) -> Tensor:
            u = torch.rand(n, self.dim, generator=gen, dtype=self.dtype, device=self.device)
            return radius * (2.0 * u - 1.0)

        x = draw(n_chains)
        for _ in range(INIT_ATTEMPTS):
            bad = ~torch.isfinite(self._energy_no_grad(x))
            if not bool(bad.any()):
                return x
            x[bad] = draw(int(bad.sum()))
        self._check_init(x, f"init (after {INIT_ATTEMPTS} uniform draws)")
        return x

    def _energy_no_grad(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.energy(x)

    def _check_init(self, x: Tensor, name: str) -> None:
        e = self._energy_no_grad(x)
        check_finite(f"the log density at {name}", e[:, None])

    def __repr__(self) -> str:
        params = ", ".join(f"{b.name}: {b.shape} {b.constraint}" for b in self.blocks)
        return f"Model({params}; dim={self.dim})"


class ModelEnergy:
    """``E(u) = -(log_joint(T(u)) + sum_k log |det J_{T_k}(u_k)|)``, ``(C, dim) -> (C,)``;
    the gradient is autograd's (one call for all chains)."""

    #: NUTS keeps its compiled steps on this energy: a model compiles once per process
    shares_compiled = True

    def __init__(self, model: Model) -> None:
        self.model = model

    def __call__(self, x: Tensor) -> Tensor:
        values, log_det = self.model.transform(x)
        lp = self.model.log_joint(values)
        if not isinstance(lp, Tensor) or lp.shape != x.shape[:-1]:
            got = tuple(lp.shape) if isinstance(lp, Tensor) else type(lp).__name__
            raise ValueError(f"log_joint returned {got} for {x.shape[0]} chains; expected "
                             f"shape ({x.shape[0]},): one log density per chain (sum the "
                             f"log_probs over every dimension but the chain's)")
        return -(lp + log_det)


@dataclass
class ModelChains:
    """A model's draws by name: the :class:`Chains` of the unconstrained vector and the
    model that maps them.

    Attributes:
        model: the :class:`Model`.
        chains: the run on the unconstrained vector, samples ``(chain, draw, dim)``.
        adapted: the warm-up's result, when :func:`sample` ran one.
    """

    model: Model
    chains: Chains
    adapted: Adapted | None = None
    #: :func:`sample_posterior`'s checks of the run
    diagnosis: Diagnosis | None = None
    _posterior: Values | None = field(default=None, repr=False)

    @property
    def posterior(self) -> Values:
        """Constrained draws by name, each ``(chain, draw, *shape)``, then the model's
        derived quantities."""
        if self._posterior is None:
            with torch.no_grad():
                values = self.model.constrain(self.chains.samples)
                batch = self.chains.samples.shape[:2]
                for name, fn in self.model.derived.items():
                    v = fn(values)
                    if not isinstance(v, Tensor) or v.shape[:2] != batch:
                        got = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
                        raise ValueError(f"derived[{name!r}] returned {got} for draws "
                                         f"{tuple(batch)}; expected (chain, draw, *shape): "
                                         f"index the parameters as p.mu[..., None]")
                    values[name] = v
            self._posterior = values
        return self._posterior

    def __getitem__(self, name: str) -> Tensor:
        if name not in self.posterior:
            raise KeyError(f"no parameter {name!r}; the parameters are "
                           f"{list(self.posterior)}")
        return self.posterior[name]

    @property
    def names(self) -> list[str]:
        """One name per reported coordinate: ``mu``, ``theta[0]``, ..."""
        return [n for k, v in self.posterior.items()
                for n in _coordinate_names(k, tuple(v.shape[2:]))]

    @property
    def divergences(self) -> Tensor:
        """Divergent transitions per chain after warm-up, ``(chain,)``."""
        return self.chains.divergences

    def flat(self) -> Tensor:
        """Every constrained coordinate side by side, ``(chain, draw, len(model.names))``."""
        c, d = self.chains.samples.shape[:2]
        return torch.cat([v.reshape(c, d, -1) for v in self.posterior.values()], -1)

    def summary(self) -> Summary:
        """Mean, sd, bulk and tail ESS and split R-hat of every constrained coordinate,
        one row per name (``mu``, ``theta[3]``, ...)."""
        s = replace(self.chains, samples=self.flat()).summary()
        return replace(s, names=self.names)

    def to_arviz(self) -> Any:
        """An ``arviz.InferenceData`` whose posterior has one variable per parameter,
        ``(chain, draw, *shape)``, and the run's sample_stats. Needs arviz."""
        named = {k: v.detach().cpu().numpy() for k, v in self.posterior.items()}
        return self.chains.to_arviz(posterior=named)

    def __repr__(self) -> str:
        return (f"ModelChains({', '.join(self.posterior)}; chains="
                f"{self.chains.n_chains}, draws={self.chains.n_draws}, "
                f"divergences={int(self.divergences.sum())})")


def _seeds(seed: int | None) -> list[int]:
    base = integer("seed", seed, 0) if seed is not None else secrets.randbits(62)
    return [int(s >> 2) for s in np.random.SeedSequence(base).generate_state(3, np.uint64)]


def sample(model: Model, n_chains: int = 4, n_warmup: int = 1000, n_draws: int = 1000, *,
           kernel: Callable[..., Any] | None = None, seed: int | None = None,
           init: Mapping[str, Any] | None = None, thin: int = 1,
           target_accept: float | None = None, adapt_mass: bool | str = True,
           per_chain: bool = False, step_size: float = 0.1, progress: bool = False,
           **kernel_options: Any) -> ModelChains:
    """Warm up (:func:`~torchlangevin.adapt`) and sample ``model``; the draws by name.

    Args:
        model: the :class:`Model`.
        n_chains: chains, run side by side.
        n_warmup: warm-up steps: dual-averaging step size and, in Stan's windows, the
            inverse mass (``adapt_mass``); discarded.
        n_draws: steps after warm-up; ``n_draws // thin`` draws are kept.
        kernel: a kernel class or factory called as
            ``kernel(model.energy, step_size=step_size, **kernel_options)``; default
            :class:`~torchlangevin.NUTS`.
        seed: seeds the initial points, the warm-up and the run (three seeds derived
            from it).
        init: constrained values by name to start every chain from (default: uniform in
            ``(-2, 2)`` on the unconstrained scale).
        thin, target_accept, adapt_mass, per_chain: as in :func:`~torchlangevin.sample`
            and :func:`~torchlangevin.adapt` (``per_chain``: one step size per chain).
        step_size: the step size the warm-up starts from.
        progress: progress bar on long runs.

    Divergent transitions after warm-up are reported in a :class:`DivergenceWarning`
    naming the chains, and counted in ``result.divergences``.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a torchlangevin.model.Model; got {model!r}")
    n_warmup = integer("n_warmup", n_warmup, 1)
    n_draws = integer("n_draws", n_draws, 1)
    init_seed, warm_seed, run_seed = _seeds(seed)
    x0 = model.init(n_chains, seed=init_seed, point=init)
    make = NUTS if kernel is None else kernel
    if not callable(make):
        raise TypeError(f"kernel must be a kernel class or factory, called as "
                        f"kernel(energy, step_size=...); got {kernel!r}")
    tuned = adapt(make(model.energy, step_size=step_size, **kernel_options), x0, n_warmup,
                  target_accept=target_accept, adapt_mass=adapt_mass, per_chain=per_chain,
                  seed=warm_seed)
    chains = run_kernel(tuned.kernel, tuned.x, n_draws, thin=thin, seed=run_seed,
                        progress=progress)
    _warn_divergences(chains.divergences)
    return ModelChains(model, chains, tuned)


def _warn_divergences(divergences: Tensor) -> None:
    total = int(divergences.sum())
    if total:
        where = divergences.nonzero().flatten().tolist()
        warnings.warn(f"{total} divergent transitions after warm-up in chains {where[:10]}"
                      f"{' ...' if len(where) > 10 else ''}: the draws may miss part of the "
                      f"posterior; raise target_accept or reparameterise the model",
                      DivergenceWarning, stacklevel=3)


#: a run's checks (Vehtari et al. 2021; Stan's): R-hat, bulk and tail ESS per chain, E-BFMI
MAX_RHAT, MIN_ESS_PER_CHAIN, MIN_BFMI = 1.01, 100, 0.3
#: dense inverse mass up to this many unconstrained dimensions, diagonal above
DENSE_UP_TO = 10


@dataclass(frozen=True)
class Diagnosis:
    """What :func:`sample_posterior` checked, and whether the run passed.

    Attributes:
        sampler: the sampler and its settings, in words.
        divergences: divergent transitions after warm-up, all chains.
        max_tree_depth_hits: draws whose NUTS tree reached ``max_tree_depth``.
        mean_tree_depth: the mean NUTS tree depth (doublings).
        max_rhat: the largest rank-normalised split R-hat over the reported coordinates.
        min_ess_bulk, min_ess_tail: the smallest bulk and tail ESS.
        min_bfmi: the smallest per-chain E-BFMI, ``sum (E_t - E_{t-1})^2 / sum (E_t - Ebar)^2``.
        outlier_chains: chains the warm-up found stuck or far away.
        problems: one line per failed check; empty when the run passed.
    """

    sampler: str
    divergences: int
    max_tree_depth_hits: int
    mean_tree_depth: float
    max_rhat: float
    min_ess_bulk: float
    min_ess_tail: float
    min_bfmi: float
    outlier_chains: tuple[int, ...]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether every check passed: the draws can be used as they are."""
        return not self.problems

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "DO NOT TRUST: " + "; ".join(self.problems)
        return (f"{self.sampler}: divergences {self.divergences}, max-depth hits "
                f"{self.max_tree_depth_hits}, mean depth {self.mean_tree_depth:.1f}, "
                f"max R-hat {self.max_rhat:.3f}, min ESS bulk {self.min_ess_bulk:.0f} / tail "
                f"{self.min_ess_tail:.0f}, min E-BFMI {self.min_bfmi:.2f}: {verdict}")


def _bfmi(energy: Tensor) -> Tensor:
    e = energy.double()
    return (e.diff(dim=1) ** 2).sum(1) / ((e - e.mean(1, keepdim=True)) ** 2).sum(1)


def _diagnose(result: ModelChains, sampler: str, max_tree_depth: int) -> Diagnosis:
    from .diagnostics import ess_bulk, ess_tail, rhat

    draws = result.flat()
    c = draws.shape[0]
    depth = result.chains.stats.get("tree_depth")
    hits = int((depth >= max_tree_depth).sum()) if depth is not None else 0
    d = Diagnosis(
        sampler, int(result.divergences.sum()), hits,
        float(depth.double().mean()) if depth is not None else math.nan,
        float(rhat(draws).nan_to_num(math.inf).max()), float(ess_bulk(draws).min()),
        float(ess_tail(draws).min()), float(_bfmi(result.chains.energy).min()),
        tuple(result.adapted.outlier_chains if result.adapted else ()), ())
    problems = []
    if d.divergences:
        problems.append(f"{d.divergences} divergent transitions (raise target_accept or "
                        f"reparameterise)")
    if not d.max_rhat < MAX_RHAT:
        problems.append(f"R-hat {d.max_rhat:.3f} >= {MAX_RHAT} (chains disagree: run longer)")
    for kind, value in (("bulk", d.min_ess_bulk), ("tail", d.min_ess_tail)):
        if not value >= MIN_ESS_PER_CHAIN * c:
            problems.append(f"{kind} ESS {value:.0f} < {MIN_ESS_PER_CHAIN} per chain "
                            f"({MIN_ESS_PER_CHAIN * c}): run longer")
    if not d.min_bfmi >= MIN_BFMI:
        problems.append(f"E-BFMI {d.min_bfmi:.2f} < {MIN_BFMI} (the energy explores badly: "
                        f"reparameterise)")
    if hits:
        problems.append(f"{hits} draws hit max_tree_depth={max_tree_depth} (raise it, or the "
                        f"posterior is badly scaled)")
    return replace(d, problems=tuple(problems))


def sample_posterior(model: Model, n_chains: int = 4, n_warmup: int = 1000,
                     n_draws: int = 1000, *, seed: int | None = None,
                     init: Mapping[str, Any] | None = None, target_accept: float = 0.8,
                     mass: str = "auto", max_tree_depth: int = 10, per_chain: bool = False,
                     progress: bool = False, compile: bool = False  # noqa: A002
                     ) -> ModelChains:
    """Sample ``model``'s posterior the way that works by default, and say whether to trust it.

    The sampler: NUTS (multinomial, generalised U-turn) after Stan's windowed warm-up
    (dual averaging to ``target_accept``; the inverse mass dense up to
    :data:`DENSE_UP_TO` unconstrained dimensions, diagonal above; outlier chains
    re-initialised). Then the checks (Vehtari et al. 2021; Stan's): no divergences, max
    R-hat below 1.01, bulk and tail ESS above 100 per chain, E-BFMI above 0.3 in every
    chain, no tree at ``max_tree_depth``. Their results are ``result.diagnosis``; a failed
    check warns with an :class:`UntrustedRunWarning` listing what failed.

    Args:
        model: the :class:`Model` (e.g. :func:`~torchlangevin.pyro_model.from_pyro`'s).
        n_chains, n_warmup, n_draws, seed, init, progress: as in :func:`sample`.
        target_accept: NUTS's target mean acceptance (raise it, e.g. 0.95, against
            divergences).
        mass: ``"auto"`` (dense or diagonal by dimension), ``"dense"``, ``"diag"`` or
            ``"low_rank"``.
        max_tree_depth: NUTS's most doublings.
        per_chain: dual averaging on each chain's own acceptance, one step size a chain,
            as Stan and NumPyro run their chains (default: one step size from the
            chains' mean acceptance). Each chain's noisy average ends below the step that
            meets the target: fewer divergences, longer trees (measured on the non-centred
            eight schools in ``benchmarks/README.md``).
        compile: each NUTS step one ``torch.compile``d graph (:class:`~torchlangevin.NUTS`):
            pays on long runs of small models, where Python's overhead is most of a leaf's
            time; costs 20-60 s of compiling first (per mass type, once per model in a
            process).
    """
    if mass not in ("auto", "dense", "diag", "low_rank"):
        raise ValueError(f"mass must be 'auto', 'dense', 'diag' or 'low_rank'; got {mass!r}")
    if not isinstance(model, Model):
        raise TypeError(f"model must be a torchlangevin.model.Model; got {model!r}")
    kind = ("dense" if model.dim <= DENSE_UP_TO else "diag") if mass == "auto" else mass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)  # the diagnosis reports them
        result = sample(model, n_chains, n_warmup, n_draws, seed=seed, init=init,
                        target_accept=target_accept, adapt_mass=kind, progress=progress,
                        per_chain=per_chain, max_tree_depth=max_tree_depth, compile=compile)
    sampler = (f"NUTS ({'compiled, ' if compile else ''}{kind} mass, "
               f"{'per-chain step sizes, ' if per_chain else ''}target_accept "
               f"{target_accept}, max_tree_depth {max_tree_depth}; {n_chains} chains x "
               f"{n_warmup} warm-up + {n_draws} draws)")
    result.diagnosis = _diagnose(result, sampler, max_tree_depth)
    if not result.diagnosis.ok:
        warnings.warn(f"the run should not be trusted: {'; '.join(result.diagnosis.problems)}",
                      UntrustedRunWarning, stacklevel=2)
    return result
