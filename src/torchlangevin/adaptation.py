"""Warm-up that tunes step size and inverse mass (diagonal, dense or low-rank) for MALA,
HMC and NUTS.

Step size: dual averaging (Nesterov 2009; Hoffman & Gelman 2014, Alg. 5) towards a
target acceptance (MALA 0.574, HMC 0.8), on ``log eps`` per chain:

    H_m = (1 - 1/(m + t0)) H_{m-1} + (delta - alpha_m) / (m + t0)
    log eps_m = mu - sqrt(m) / gamma * H_m,   mu = log(10 eps_0)
    log eps_bar_m = m^-kappa log eps_m + (1 - m^-kappa) log eps_bar_{m-1}

With ``per_chain=False`` every chain uses the acceptance averaged over chains.

Inverse mass: Stan's windows (a fast initial buffer, slow windows doubling in length,
a fast terminal buffer). At the end of each slow window ``M^{-1}`` becomes the
regularised variance of the positions seen in it, ``n/(n+5) var + 1e-3 * 5/(n+5)``, and
dual averaging restarts. The variance is pooled over chains, or with
``per_chain_mass=True`` each chain's own: with ``per_chain=True`` too, every chain runs
its own window adaptation, as BlackJAX's ``window_adaptation`` vmapped over chains does.
A chain's own window variance needs a chain that crosses its target within the window:
HMC's does (on a 100-D Gaussian with sds 0.1-10 the per-chain estimates are within 6% on
average over 64 chains), MALA's does not (a factor of 4 low on the widest coordinates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .blocks import NoiseStream, block_length, run_block
from .kernels.base import Kernel, State
from .mass import DenseMass, LowRankMass
from .schedules import Schedule
from .util import integer, seeded_generator

__all__ = ["adapt", "Adapted", "DualAveraging", "mass_windows", "reasonable_step_size"]


class DualAveraging(NamedTuple):
    """Dual averaging of ``log eps`` per chain: ``(C,)`` tensors and the count ``m``
    (a 0-dim tensor), updated functionally so a compiled warm-up can carry it."""

    mu: Tensor
    h_bar: Tensor
    log_bar: Tensor
    m: Tensor

    @classmethod
    def start(cls, step_size: Tensor) -> DualAveraging:
        """Start (or restart) at ``step_size``: ``mu = log(10 eps_0)``."""
        return cls(torch.log(10 * step_size), torch.zeros_like(step_size),
                   torch.log(step_size), step_size.new_zeros((), dtype=torch.float64))

    def update(self, accept_prob: Tensor, target: float, gamma: float = 0.05,
               t0: float = 10.0, kappa: float = 0.75) -> tuple[DualAveraging, Tensor]:
        """Feed this step's acceptance probabilities; returns the new state and the next
        step size ``exp(log eps_m)``."""
        m = self.m + 1
        w = 1.0 / (m + t0)
        h_bar = (1 - w) * self.h_bar + w * (target - accept_prob)
        log_eps = self.mu - m.sqrt() / gamma * h_bar
        eta = m ** -kappa
        log_bar = eta * log_eps + (1 - eta) * self.log_bar
        return DualAveraging(self.mu, h_bar, log_bar, m), torch.exp(log_eps)

    @property
    def final(self) -> Tensor:
        """The averaged step size, ``exp(log eps_bar)``."""
        return torch.exp(self.log_bar)


def mass_windows(n_steps: int, initial: int = 75, terminal: int = 50,
                 base: int = 25) -> list[tuple[int, int]]:
    """Slow windows ``[start, end)`` as in Stan: sizes ``base, 2 base, ...``; the last one
    stretches to ``n_steps - terminal``. Short runs scale the buffers to 15% / 10%."""
    if n_steps < initial + terminal + base:
        initial, terminal = int(0.15 * n_steps), int(0.1 * n_steps)
        base = n_steps - initial - terminal
    windows, start, size = [], initial, base
    while start < n_steps - terminal:
        end = start + size
        if end + 2 * size > n_steps - terminal:
            end = n_steps - terminal
        windows.append((start, end))
        start, size = end, 2 * size
    return windows


@dataclass
class Adapted:
    """Result of :func:`adapt`: the tuned kernel and where the chains are."""

    kernel: Kernel
    state: State
    step_size: float | Tensor
    inv_mass: float | Tensor
    acceptance: Tensor  # mean acceptance probability at each warm-up step, (n_steps,)
    #: gradient evaluations per chain ``(C,)`` the warm-up spent, for kernels that report
    #: them (``None`` for the others)
    n_grads: Tensor | None

    @property
    def x(self) -> Tensor:
        return self.state.x

    @property
    def params(self) -> Any:
        """The tuned parameters (``kernel.params``)."""
        return self.kernel.params


#: ``state.x`` and ``state.energy`` of a warm-up state that carries the chains' state as
#: ``state.chains`` (what the block runner records of each step)
chains_x = property(lambda self: self.chains.x, doc="The chains' positions.")
chains_energy = property(lambda self: self.chains.energy, doc="The chains' energies.")


class WarmupState(NamedTuple):
    """What a warm-up step carries: the chains, the step size in use, the dual averaging."""

    chains: Any
    eps: Tensor
    averaging: DualAveraging

    x = chains_x
    energy = chains_energy


class WarmupInfo(NamedTuple):
    """Per step of the warm-up: the chains' acceptance probabilities ``(C,)`` and, for
    kernels that report them, their gradient evaluations."""

    acceptance_prob: Tensor
    n_grads: Tensor | None = None


class Warmup:
    """The warm-up as a kernel: ``kernel``'s step at the carried step size, then one dual
    averaging update of it (towards ``target`` acceptance, per chain or on the mean)."""

    has_accept_step = False
    couples_chains = False

    def __init__(self, kernel: Any, target: float, per_chain: bool) -> None:
        self.kernel, self.target, self.per_chain = kernel, target, per_chain
        self.needs_batch = getattr(kernel, "needs_batch", False)
        self.compilable = getattr(kernel, "compilable", True)

    def noise_size(self, state: WarmupState) -> int:
        return self.kernel.noise_size(state.chains)

    def step(self, state: WarmupState, noise: Tensor, params: Any, batch: Any = None
             ) -> tuple[WarmupState, WarmupInfo]:
        chains, info = self.kernel.step(state.chains, noise, params._replace(step_size=state.eps),
                                        batch)
        prob = info.acceptance_prob
        averaging, eps = state.averaging.update(
            prob if self.per_chain else prob.mean().expand_as(prob), self.target)
        return WarmupState(chains, eps, averaging), WarmupInfo(prob,
                                                               getattr(info, "n_grads", None))


MASS_KINDS = ("diag", "dense", "low_rank")


def _mass_kind(adapt_mass: bool | str, per_chain_mass: bool) -> str | None:
    """``adapt_mass`` as one of :data:`MASS_KINDS`, or ``None`` for no mass tuning."""
    if adapt_mass is True:
        return "diag"
    if adapt_mass is False:
        return None
    if adapt_mass not in MASS_KINDS:
        raise ValueError(f"adapt_mass must be True, False or one of {MASS_KINDS}; got "
                         f"{adapt_mass!r}")
    if per_chain_mass and adapt_mass != "diag":
        raise ValueError(f"per_chain_mass=True tunes a diagonal mass per chain; got "
                         f"adapt_mass={adapt_mass!r}")
    return adapt_mass


def _check(kernel: Any, n_steps: int, target_accept: float | None, adapt_mass: bool | str,
           per_chain_mass: bool) -> float:
    """Fail clearly on what ``adapt`` cannot do; returns the target acceptance."""
    integer("n_steps", n_steps, 10)
    _mass_kind(adapt_mass, per_chain_mass)
    if not getattr(kernel, "has_accept_step", False):
        raise TypeError(f"adapt needs a kernel with an accept step (MALA, HMC); "
                        f"got {type(kernel).__name__}")
    params = getattr(kernel, "params", None)
    fields = getattr(params, "_fields", ())
    if "step_size" not in fields or "inv_mass" not in fields:
        raise TypeError(f"adapt tunes params.step_size and params.inv_mass; "
                        f"{type(kernel).__name__}'s parameters are {fields}")
    for name in ("step_size", "noise_scale"):
        if isinstance(getattr(params, name, None), Schedule):
            raise TypeError(f"adapt tunes a float or per-chain step_size at a fixed "
                            f"noise_scale; got the {name} schedule {getattr(params, name)!r}")
    if per_chain_mass and not adapt_mass:
        raise ValueError("per_chain_mass=True tunes the mass per chain; it needs "
                         "adapt_mass=True")
    if target_accept is None:
        target_accept = getattr(kernel, "target_accept", None)
        if target_accept is None:
            raise ValueError(f"no default target_accept for a {type(kernel).__name__}; "
                             f"pass target_accept")
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must be in (0, 1); got {target_accept!r}")
    return float(target_accept)


def adapt(kernel: Kernel, x0: Tensor, n_steps: int = 1000, *,
          target_accept: float | None = None, adapt_mass: bool | str = True,
          per_chain: bool = False, per_chain_mass: bool = False, mass_rank: int = 10,
          find_step_size: bool = True, seed: int | None = None,
          compile: bool = False) -> Adapted:  # noqa: A002
    """Warm up ``kernel`` from ``x0`` for ``n_steps`` and return it tuned.

    Args:
        kernel: a ``MALA``, ``HMC`` or ``NUTS`` (any kernel whose ``Info`` has an
            acceptance and whose params have ``step_size`` and ``inv_mass``).
        x0: initial states ``(C, *event)``.
        n_steps: warm-up steps (they are burn-in: discard them).
        target_accept: defaults to the kernel's ``target_accept`` (MALA 0.574, HMC 0.8).
        adapt_mass: also tune ``inv_mass`` in Stan's windows: ``True`` or ``"diag"`` for a
            diagonal, ``"dense"`` for a :class:`~torchlangevin.mass.DenseMass` (the
            window's covariance), ``"low_rank"`` for a
            :class:`~torchlangevin.mass.LowRankMass` (the diagonal and the ``mass_rank``
            eigenvectors of the window's correlation furthest from 1, as nutpie).
        per_chain: one step size per chain (a ``(C,)`` tensor) instead of a shared float.
        per_chain_mass: one inverse mass per chain (``(C, *event)``), each from that
            chain's own draws, instead of one from all chains' (needs ``adapt_mass``).
        mass_rank: the rank of a ``"low_rank"`` mass.
        find_step_size: first move the starting step size by factors of 2 until one short
            move's acceptance (one leapfrog step, one NUTS leaf; the median over chains)
            crosses 1/2 (Hoffman & Gelman 2014, Alg. 4), as Stan and BlackJAX do: a start
            far too small otherwise costs NUTS deep trees for the first hundred steps.
        seed: seeds the warm-up's generator.
        compile: run the warm-up's blocks compiled, as ``sample(..., compile=True)``
            does: same noise, same result to float rounding.

    Then ``tl.sample(adapted.kernel, adapted.x, n_steps)`` samples with the tuned values.
    """
    target = _check(kernel, n_steps, target_accept, adapt_mass, per_chain_mass)
    params = kernel.params
    gen = seeded_generator(seed, x0.device)
    with torch.no_grad():
        state = kernel.init(x0, params)
        _check_finite_somewhere(state)
        x = state.x
        c = x.shape[0]
        eps = torch.as_tensor(params.step_size, dtype=x.dtype, device=x.device).expand(c).clone()
        if find_step_size:
            eps = eps * reasonable_step_size(kernel, state, params, gen) / eps.mean()
        kind = _mass_kind(adapt_mass, per_chain_mass)
        inv_mass = params.inv_mass
        if kind == "diag":  # a tensor from the start: one compiled graph for every window
            inv_mass = torch.as_tensor(inv_mass, dtype=x.dtype, device=x.device)
            inv_mass = inv_mass.expand(x.shape if per_chain_mass else x.shape[1:]).clone()
        warm = WarmupState(state, eps, DualAveraging.start(eps))
        run = _WarmupRun(Warmup(kernel, target, per_chain), warm, n_steps, kind,
                         per_chain_mass, gen, compile, integer("mass_rank", mass_rank, 1))
        warm, inv_mass, prob, grads = run.loop(params, inv_mass)
    final = warm.averaging.final
    step_size: float | Tensor = final if per_chain else float(final.mean())
    tuned = kernel.replace(step_size=step_size, inv_mass=inv_mass)
    return Adapted(tuned, warm.chains._replace(step=0), step_size, inv_mass,
                   prob.double().mean(1), grads)


def reasonable_step_size(kernel: Any, state: Any, params: Any, generator: torch.Generator,
                         max_halvings: int = 50) -> float:
    """Hoffman & Gelman (2014), Alg. 4: from ``params.step_size``, double (or halve) ``eps``
    while the acceptance of one short move, ``a(eps)`` (the median over chains), stays
    above (below) 1/2; the first ``eps`` across is returned. A short move is the kernel's
    step with one leapfrog step (``n_leapfrog_steps = 1``, ``max_tree_depth = 1``, no
    jitter), one fixed draw of noise for all tries."""
    short = {name: value for name, value in (("n_leapfrog_steps", 1), ("max_tree_depth", 1),
                                             ("jitter", 0.0)) if name in params._fields}
    probe = params._replace(**short)
    x = state.x
    noise = torch.randn(x.shape[0], kernel.noise_size(state), generator=generator,
                        dtype=x.dtype, device=x.device)

    def accept(eps: float) -> float:
        _, info = kernel.step(state, noise, probe._replace(step_size=eps))
        return float(info.acceptance_prob.nan_to_num(0.0).median())

    eps = start = float(torch.as_tensor(params.step_size, dtype=torch.float64).mean())
    up = accept(eps) > 0.5
    for _ in range(max_halvings):
        eps = eps * 2.0 if up else eps / 2.0
        if (accept(eps) > 0.5) != up:
            return eps
    if not up:  # no move is ever accepted: the energy or its gradient is not finite there
        raise ValueError(f"adapt: no step size down to {eps:.3g} (from {start:g}, halved "
                         f"{max_halvings} times) has one short move accepted for half the "
                         f"chains: the energy or its gradient is NaN/Inf, or jumps, wherever "
                         f"the chains step; check the energy near the starting points")
    return eps


def _check_finite_somewhere(state: Any) -> None:
    """Fail if the energy (or its gradient) is NaN/Inf at every starting point: there is
    nothing to tune on (dual averaging would drive the step size to 0)."""
    energy, grad = getattr(state, "energy", None), getattr(state, "grad", None)
    if energy is None:
        return
    ok = torch.isfinite(energy)
    if grad is not None:
        ok &= torch.isfinite(grad.reshape(grad.shape[0], -1)).all(1)
    if not bool(ok.any()):
        raise ValueError(f"adapt: the energy or its gradient is NaN/Inf at all "
                         f"{energy.shape[0]} starting points (energy of chain 0: "
                         f"{float(energy[0])}); start the chains where the target is defined")


class _WarmupRun:
    """The warm-up's blocks: up to each mass update, blocks of the block runner."""

    def __init__(self, warmup: Warmup, warm: WarmupState, n_steps: int, kind: str | None,
                 per_chain_mass: bool, generator: torch.Generator, compile: bool,  # noqa: A002
                 rank: int) -> None:
        self.warmup, self.warm, self.n_steps = warmup, warm, n_steps
        self.kind, self.rank = kind, rank
        x = warm.x
        self.windows = mass_windows(n_steps) if kind is not None else []
        self.in_window = torch.zeros(n_steps, dtype=torch.bool, device=x.device)
        for start, end in self.windows:
            self.in_window[start:end] = True
        self.per_chain_mass = per_chain_mass
        self.length = block_length(x.numel(), x.shape[0] * warmup.noise_size(warm))
        self.noise = NoiseStream([generator], x.shape[0], warmup.noise_size(warm), x,
                                 self.length, n_steps)
        self.blocks = None
        if compile:
            from .compiled import CompiledBlocks  # private torch parts: only when asked

            self.blocks = CompiledBlocks(x.device, x.numel())

    def loop(self, params: Any, inv_mass: float | Tensor):
        warm, x = self.warm, self.warm.x
        prob = torch.empty((self.n_steps, x.shape[0]), dtype=x.dtype, device=x.device)
        ends = {end for _, end in self.windows}
        sums = _WindowSums(x, self.per_chain_mass, self.kind)
        grads = None
        m = 0
        while m < self.n_steps:
            stop = min([e for e in ends if e > m] + [self.n_steps])  # the next mass update
            for i in range(m, stop, self.length):
                j = min(i + self.length, stop)
                noise = self.noise.take(j - i)
                block_params = params._replace(inv_mass=inv_mass)
                if self.blocks is not None:
                    warm, trace = self.blocks(self.warmup, warm, block_params, noise)
                else:
                    warm, trace = run_block(self.warmup, warm, block_params, noise)
                prob[i:j] = trace.info.acceptance_prob
                if trace.info.n_grads is not None:
                    block_grads = trace.info.n_grads.sum(0)
                    grads = block_grads if grads is None else grads + block_grads
                if self.windows:
                    sums.add(trace.x[self.in_window[i:j]])
            m = stop
            if m in ends:
                inv_mass = sums.estimate(self.rank, x.dtype)
                warm = WarmupState(warm.chains, warm.eps, DualAveraging.start(warm.eps))
                sums = _WindowSums(x, self.per_chain_mass, self.kind)
        return warm, inv_mass, prob, grads


class _WindowSums:
    """Sums of ``x`` and ``x^2`` (float64) over a mass window's ``n`` draws, per chain or
    pooled over chains (and of ``x x^T``, pooled, for a dense or low-rank mass), and the
    regularised estimates they give: ``n/(n+5) var + 1e-3 5/(n+5)``, the same shrinkage
    towards ``1e-3 I`` for a covariance (Stan)."""

    def __init__(self, x: Tensor, per_chain: bool, kind: str | None = "diag") -> None:
        self.dims = (0,) if per_chain else (0, 1)  # of a (steps, C, *event) stack
        shape = x.shape if per_chain else x.shape[1:]
        self.total = x.new_zeros(shape, dtype=torch.float64)
        self.sq = x.new_zeros(shape, dtype=torch.float64)
        self.kind = kind
        d = x[0].numel()
        self.cross = x.new_zeros((d, d), dtype=torch.float64) if kind != "diag" else None
        self.n = 0

    def add(self, xs: Tensor) -> None:
        """Add a stack of draws ``(steps, C, *event)``."""
        xs = xs.double()
        self.total += xs.sum(self.dims)
        self.sq += (xs * xs).sum(self.dims)
        if self.cross is not None:
            rows = xs.reshape(-1, self.cross.shape[0])
            self.cross += rows.mT @ rows
        self.n += xs.shape[0] * (1 if len(self.dims) == 1 else xs.shape[1])

    def variance(self) -> Tensor:
        n = self.n
        var = (self.sq - self.total * self.total / n) / (n - 1)
        return n / (n + 5.0) * var + 1e-3 * 5.0 / (n + 5.0)

    def covariance(self) -> Tensor:
        n, mean = self.n, self.total.reshape(-1) / self.n
        cov = (self.cross - n * torch.outer(mean, mean)) / (n - 1)
        eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
        return n / (n + 5.0) * cov + 1e-3 * 5.0 / (n + 5.0) * eye

    def estimate(self, rank: int, dtype: torch.dtype) -> Tensor | DenseMass | LowRankMass:
        """The window's inverse mass of this kind, in ``dtype``."""
        if self.kind == "diag":
            return self.variance().to(dtype)
        cov = self.covariance()
        if self.kind == "dense":
            return DenseMass.of(cov.to(dtype))
        sigma = cov.diagonal().sqrt()
        values, vectors = torch.linalg.eigh(cov / torch.outer(sigma, sigma))
        keep = values.clamp(min=1e-10).log().abs().argsort(descending=True)[:rank]
        return LowRankMass(sigma.to(dtype), vectors[:, keep].to(dtype),
                           values[keep].clamp(min=1e-10).to(dtype))
