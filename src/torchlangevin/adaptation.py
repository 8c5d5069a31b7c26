"""Warm-up that tunes step size and diagonal inverse mass for MALA and HMC.

Step size: dual averaging (Nesterov 2009; Hoffman & Gelman 2014, Alg. 5) towards a
target acceptance (MALA 0.574, HMC 0.8), on ``log eps`` per chain:

    H_m = (1 - 1/(m + t0)) H_{m-1} + (delta - alpha_m) / (m + t0)
    log eps_m = mu - sqrt(m) / gamma * H_m,   mu = log(10 eps_0)
    log eps_bar_m = m^-kappa log eps_m + (1 - m^-kappa) log eps_bar_{m-1}

With ``per_chain=False`` every chain uses the acceptance averaged over chains.

Inverse mass: Stan's windows (a fast initial buffer, slow windows doubling in length,
a fast terminal buffer). At the end of each slow window ``M^{-1}`` becomes the
regularised variance of the positions seen in it, pooled over chains:
``n/(n+5) var + 1e-3 * 5/(n+5)``, and dual averaging restarts.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import torch
from torch import Tensor

from .kernels.base import Kernel, State
from .schedules import Schedule

__all__ = ["adapt", "Adapted", "DualAveraging", "mass_windows"]

TARGET_ACCEPT = {"mala": 0.574, "hmc": 0.8}


class DualAveraging:
    """Dual averaging of ``log eps`` per chain; all state is ``(C,)`` tensors."""

    def __init__(self, step_size: Tensor, target: float, gamma: float = 0.05,
                 t0: float = 10.0, kappa: float = 0.75) -> None:
        self.target, self.gamma, self.t0, self.kappa = target, gamma, t0, kappa
        self.restart(step_size)

    def restart(self, step_size: Tensor) -> None:
        self.mu = torch.log(10 * step_size)
        self.h_bar = torch.zeros_like(step_size)
        self.log_bar = torch.log(step_size)
        self.m = 0

    def update(self, accept_prob: Tensor) -> Tensor:
        """Feed this step's acceptance probabilities; returns the next step size."""
        self.m += 1
        w = 1.0 / (self.m + self.t0)
        self.h_bar = (1 - w) * self.h_bar + w * (self.target - accept_prob)
        log_eps = self.mu - math.sqrt(self.m) / self.gamma * self.h_bar
        eta = self.m ** -self.kappa
        self.log_bar = eta * log_eps + (1 - eta) * self.log_bar
        return torch.exp(log_eps)

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
          per_chain: bool = False, seed: int | None = None) -> Adapted:
    """Warm up ``kernel`` from ``x0`` for ``n_steps`` and return it tuned.

    Args:
        kernel: a ``MALA`` or ``HMC`` (anything whose ``Info`` has an acceptance).
        x0: initial states ``(C, *event)``.
        n_steps: warm-up steps (they are burn-in: discard them).
        target_accept: defaults to 0.574 for MALA, 0.8 for HMC.
        adapt_mass: also tune a diagonal ``inv_mass`` in Stan's windows.
        per_chain: one step size per chain (a ``(C,)`` tensor) instead of a shared float.
        seed: seeds the warm-up's generator.

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
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must be in (0, 1); got {target_accept!r}")
    if isinstance(kernel.step_size, Schedule):
        raise TypeError("adapt tunes a float or per-chain step_size; got a schedule "
                        f"{kernel.step_size!r}")
    gen = torch.Generator(device=x0.device).manual_seed(
        seed if seed is not None else secrets.randbits(62))
    work = kernel.replace()
    state = work.init(x0)
    c = state.x.shape[0]
    step = torch.as_tensor(kernel.step_size, dtype=state.x.dtype, device=state.x.device)
    step = step.expand(c).clone()
    work.step_size = step
    averaging = DualAveraging(step, target_accept)
    windows = mass_windows(n_steps) if adapt_mass else []
    ends = {end: start for start, end in windows}
    total = sq = None
    trace = torch.empty(n_steps, dtype=torch.float64, device=state.x.device)
    with torch.no_grad():
        for m in range(n_steps):
            state, info = work.step(state, gen)
            prob = info.acceptance_prob
            trace[m] = prob.mean()
            if not per_chain:
                prob = prob.mean().expand(c)
            work.step_size = averaging.update(prob)
            if any(start <= m < end for start, end in windows):
                x = state.x.double()
                total = x.sum(0) if total is None else total + x.sum(0)
                sq = (x * x).sum(0) if sq is None else sq + (x * x).sum(0)
            if m + 1 in ends:
                n = c * (m + 1 - ends[m + 1])
                var = (sq - total * total / n) / (n - 1)
                reg = n / (n + 5.0) * var + 1e-3 * 5.0 / (n + 5.0)
                work.inv_mass = reg.to(state.x.dtype)
                total = sq = None
                averaging.restart(work.step_size)
    final = averaging.final
    step_size: float | Tensor = final if per_chain else float(final.mean())
    tuned = kernel.replace(step_size=step_size, inv_mass=work.inv_mass)
    return Adapted(tuned, state._replace(step=0), step_size, work.inv_mass, trace)
