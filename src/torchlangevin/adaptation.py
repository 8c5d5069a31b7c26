"""Warm-up that tunes step size and diagonal inverse mass for MALA and HMC.

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

import copy
import secrets
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from .compiled import NoisePlan, Packed, block_length, compile_steps, scan, unaliased
from .kernels.base import Kernel, PreDrawn, State
from .schedules import Schedule

__all__ = ["adapt", "Adapted", "DualAveraging", "mass_windows"]

TARGET_ACCEPT = {"mala": 0.574, "hmc": 0.8}


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

    @property
    def x(self) -> Tensor:
        return self.state.x


def adapt(kernel: Kernel, x0: Tensor, n_steps: int = 1000, *,
          target_accept: float | None = None, adapt_mass: bool = True,
          per_chain: bool = False, per_chain_mass: bool = False, seed: int | None = None,
          compile: bool = False) -> Adapted:  # noqa: A002 - as in sample
    """Warm up ``kernel`` from ``x0`` for ``n_steps`` and return it tuned.

    Args:
        kernel: a ``MALA`` or ``HMC`` (anything whose ``Info`` has an acceptance).
        x0: initial states ``(C, *event)``.
        n_steps: warm-up steps (they are burn-in: discard them).
        target_accept: defaults to 0.574 for MALA, 0.8 for HMC.
        adapt_mass: also tune a diagonal ``inv_mass`` in Stan's windows.
        per_chain: one step size per chain (a ``(C,)`` tensor) instead of a shared float.
        per_chain_mass: one inverse mass per chain (``(C, *event)``), each from that
            chain's own draws, instead of one from all chains' (needs ``adapt_mass``).
        seed: seeds the warm-up's generator.
        compile: run the steps between mass updates as compiled scans, as
            ``sample(..., compile=True)`` does: same noise, same result to float rounding.

    Then ``tl.sample(adapted.kernel, adapted.x, n_steps)`` samples with the tuned values.
    """
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 10:
        raise ValueError(f"n_steps must be an integer >= 10; got {n_steps!r}")
    if not getattr(kernel, "has_accept_step", False):
        raise TypeError(f"adapt needs a kernel with an accept step (MALA, HMC); "
                        f"got {type(kernel).__name__}")
    if target_accept is None:
        if kernel.name not in TARGET_ACCEPT:
            raise ValueError(f"no default target_accept for a {type(kernel).__name__}; "
                             f"pass target_accept")
        target_accept = TARGET_ACCEPT[kernel.name]
    if per_chain_mass and not adapt_mass:
        raise ValueError("per_chain_mass=True tunes the mass per chain; it needs "
                         "adapt_mass=True")
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must be in (0, 1); got {target_accept!r}")
    for name in ("step_size", "noise_scale"):
        if isinstance(getattr(kernel, name), Schedule):
            raise TypeError(f"adapt tunes a float or per-chain step_size at a fixed "
                            f"noise_scale; got the {name} schedule {getattr(kernel, name)!r}")
    gen = torch.Generator(device=x0.device).manual_seed(
        seed if seed is not None else secrets.randbits(62))
    state = kernel.init(x0)
    x = state.x
    c = x.shape[0]
    eps = torch.as_tensor(kernel.step_size, dtype=x.dtype, device=x.device).expand(c).clone()
    inv_mass = kernel.inv_mass
    if adapt_mass:  # a tensor from the start: one compiled graph for every window
        inv_mass = torch.as_tensor(inv_mass, dtype=x.dtype, device=x.device)
        inv_mass = inv_mass.expand(x.shape if per_chain_mass else x.shape[1:]).clone()
    windows = mass_windows(n_steps) if adapt_mass else []
    in_window = [False] * n_steps
    for start, end in windows:
        in_window[start:end] = [True] * (end - start)
    ends = {end: start for start, end in windows}
    # float64 sums of x and x^2 over the current mass window, per chain or pooled
    sums = _WindowSums(x, per_chain_mass)
    warm = _Warmup(state, eps, DualAveraging.start(eps))
    prob = torch.empty((n_steps, c), dtype=x.dtype, device=x.device)
    blocks = _CompiledWarmup(kernel, target_accept, per_chain, warm) if compile else None
    block = block_length(x.numel()) if compile else 0
    with torch.no_grad():
        m = 0
        while m < n_steps:
            # up to the next mass update (or the end)
            stop = min([e for e in ends if e > m] + [n_steps])
            if blocks is not None:  # cache-sized blocks, as sample's
                for i in range(m, stop, block):
                    j = min(i + block, stop)
                    warm, xs, prob[i:j] = blocks(warm, inv_mass, j - i, gen)
                    if adapt_mass:
                        sums.add(xs[torch.tensor(in_window[i:j], device=x.device)])
            else:
                for i in range(m, stop):
                    warm, prob[i] = _warmup_step(kernel, target_accept, per_chain, warm,
                                                 inv_mass, gen)
                    if in_window[i]:
                        sums.add(warm.state.x.unsqueeze(0))
            m = stop
            if m in ends:
                inv_mass = sums.variance().to(x.dtype)
                warm = _Warmup(warm.state, warm.eps, DualAveraging.start(warm.eps))
                sums = _WindowSums(x, per_chain_mass)
    final = warm.averaging.final
    step_size: float | Tensor = final if per_chain else float(final.mean())
    tuned = kernel.replace(step_size=step_size, inv_mass=inv_mass)
    return Adapted(tuned, warm.state._replace(step=0), step_size, inv_mass,
                   prob.double().mean(1))


class _Warmup(NamedTuple):
    """What a warm-up step carries: the chains, the step size in use, the dual averaging."""

    state: State
    eps: Tensor
    averaging: DualAveraging


class _WindowSums:
    """Sums of ``x`` and ``x^2`` (float64) over a mass window's ``n`` draws, per chain or
    pooled over chains, and the regularised variance they give:
    ``n/(n+5) var + 1e-3 5/(n+5)``."""

    def __init__(self, x: Tensor, per_chain: bool) -> None:
        self.dims = (0,) if per_chain else (0, 1)  # of a (steps, C, *event) stack
        shape = x.shape if per_chain else x.shape[1:]
        self.total = x.new_zeros(shape, dtype=torch.float64)
        self.sq = x.new_zeros(shape, dtype=torch.float64)
        self.n = 0

    def add(self, xs: Tensor) -> None:
        """Add a stack of draws ``(steps, C, *event)``."""
        xs = xs.double()
        self.total += xs.sum(self.dims)
        self.sq += (xs * xs).sum(self.dims)
        self.n += xs.shape[0] * (1 if len(self.dims) == 1 else xs.shape[1])

    def variance(self) -> Tensor:
        n = self.n
        var = (self.sq - self.total * self.total / n) / (n - 1)
        return n / (n + 5.0) * var + 1e-3 * 5.0 / (n + 5.0)


def _warmup_step(kernel: Kernel, target: float, per_chain: bool, warm: _Warmup, inv_mass,
                 noise) -> tuple[_Warmup, Tensor]:
    """One warm-up step at ``warm.eps``: the kernel's step, then dual averaging. Returns
    the new carry and the acceptance probabilities ``(C,)``."""
    work = copy.copy(kernel)  # no validation: the values are tensors the warm-up made
    work.step_size, work.inv_mass = warm.eps, inv_mass
    state, info = work.step(warm.state, noise)
    prob = info.acceptance_prob
    averaging, eps = warm.averaging.update(prob if per_chain else prob.mean().expand_as(prob),
                                           target)
    return _Warmup(state, eps, averaging), prob


class _CompiledWarmup:
    """Warm-up steps as one compiled ``scan`` over pre-drawn noise (see ``compiled``)."""

    def __init__(self, kernel: Kernel, target: float, per_chain: bool, warm: _Warmup) -> None:
        self.args = (kernel, target, per_chain)
        self.noise = NoisePlan(kernel, warm.state)
        self.state = Packed(warm.state._replace(step=0))
        self.fn = compile_steps(_scan_warmup, warm.state.x.device, warm.state.x.numel())

    def __call__(self, warm: _Warmup, inv_mass, k: int, generator):
        """``k`` steps: the new carry, and per step the positions ``(k, C, *event)`` and
        acceptance probabilities ``(k, C)``."""
        draws = self.noise.draw(k, generator)
        zero = torch.zeros((), dtype=torch.long, device=warm.eps.device)
        carry = _pack_warmup(self.state, warm._replace(state=warm.state._replace(step=zero)))
        carry, (xs, prob) = self.fn(*self.args, self.state, carry, inv_mass, draws)
        new = _unpack_warmup(self.state, carry)
        return new._replace(state=new.state._replace(step=warm.state.step + k)), xs, prob


def _pack_warmup(states: Packed, warm: _Warmup) -> tuple[Tensor, ...]:
    """The carry as tensors (HOP carries: tensors only): the state's, then the rest."""
    return (*states.pack(warm.state), warm.eps, *warm.averaging)


def _unpack_warmup(states: Packed, carry) -> _Warmup:
    n = len(carry) - len(DualAveraging._fields) - 1  # the state's tensors come first
    return _Warmup(states.unpack(carry[:n]), carry[n], DualAveraging(*carry[n + 1:]))


def _scan_warmup(kernel, target, per_chain, states: Packed, carry, inv_mass, draws):
    """``scan`` of warm-up steps (HOP carries: tensors only); per step the positions and
    the acceptance probabilities."""
    def one(carry, noise):
        warm, prob = _warmup_step(kernel, target, per_chain, _unpack_warmup(states, carry),
                                  inv_mass, PreDrawn(list(noise)))
        return unaliased(_pack_warmup(states, warm), carry), (warm.state.x.clone(), prob)
    return scan(one, carry, draws)
