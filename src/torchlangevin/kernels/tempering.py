"""Parallel tempering (replica exchange) over a temperature ladder.

Each chain carries ``K`` replicas, replica ``k`` targeting ``exp(-E / T_k)``. Every step
the inner kernel moves all ``K * C`` replicas at once (per-replica ``noise_scale =
sqrt(T_k)``); every ``swap_every`` steps neighbours ``(k, k+1)`` exchange positions with

    log r = (1/T_k - 1/T_{k+1}) (E(x_k) - E(x_{k+1})),

alternating even and odd pairs (the deterministic even-odd scheme, Okabe et al. 2001;
Syed et al. 2022). The driver sees the coldest replicas as the chains' states. A chain's
replicas only ever swap among themselves, so chains stay independent.
Swap acceptance per pair is counted in the state: ``chains.final_state.swap_rate``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..util import integer
from .base import Info, Kernel, per_chain_field, uniforms


class TemperingState(NamedTuple):
    """The coldest replicas as ``(x, energy, grad)``, plus the whole ladder.

    ``replicas`` is the inner kernel's state over ``K * C`` rows, temperature-major
    (rows ``k*C .. (k+1)*C - 1`` at ``T_k``).
    """

    x: Tensor
    energy: Tensor | None
    grad: Tensor
    step: int
    replicas: Any
    swap_proposed: Tensor  # (K-1,) proposals per neighbour pair, summed over chains
    swap_accepted: Tensor  # (K-1,)

    @property
    def swap_rate(self) -> Tensor:
        """Accepted share of proposed swaps for each neighbour pair ``(k, k+1)``."""
        return self.swap_accepted / self.swap_proposed.clamp_min(1)


class ParallelTempering(Kernel):
    """Replica exchange around any kernel; its parameters are the inner kernel's.

    Args:
        kernel: the move within each temperature (``Langevin``, ``MALA``, ``HMC``, ...);
            its ``noise_scale`` is replaced by ``sqrt(T_k)`` per replica.
        temperatures: increasing positive ladder; ``temperatures[0]`` is the target's
            (1 samples ``exp(-E)``). A geometric ladder is the usual start.
        swap_every: steps between swap rounds.
    """

    name = "tempering"
    compilable = False  # swaps on alternate steps: Python control flow on the step count

    def __init__(self, kernel: Kernel, temperatures, swap_every: int = 1) -> None:
        if not isinstance(kernel, Kernel):
            raise TypeError(f"kernel must be a torchlangevin kernel; got {type(kernel).__name__}")
        t = torch.as_tensor(temperatures, dtype=torch.float64).flatten()
        if t.numel() < 2 or not bool((t > 0).all()) or not bool((t[1:] > t[:-1]).all()):
            raise ValueError(f"temperatures must be >= 2 increasing positive numbers; "
                             f"got {temperatures!r}")
        self.kernel, self.temperatures = kernel, t
        self.swap_every = integer("swap_every", swap_every, 1)
        self.energy, self.support, self.params = kernel.energy, kernel.support, kernel.params
        self.has_accept_step = kernel.has_accept_step
        self.target_accept = kernel.target_accept
        self.Params = kernel.Params

    def __repr__(self) -> str:
        return (f"ParallelTempering({self.kernel!r}, temperatures={self.temperatures.tolist()}, "
                f"swap_every={self.swap_every})")

    def make_params(self, **values: Any) -> NamedTuple:
        return self.kernel.make_params(**values)

    def check_schedules(self, params: NamedTuple, n_steps: int) -> None:
        self.kernel.check_schedules(params, n_steps)

    def _ladder(self, params: NamedTuple, x: Tensor) -> tuple[NamedTuple, Tensor]:
        """The inner kernel's parameters over ``K * C`` replicas, and ``1 / T_k`` ``(K, 1)``."""
        c, k = x.shape[0], self.temperatures.numel()
        t = self.temperatures.to(x.device, x.dtype)
        values = {}
        for name, v in params._asdict().items():
            if per_chain_field(name, v, x.ndim):
                v = v.repeat(k, *([1] * (v.ndim - 1)))
            values[name] = v
        values["noise_scale"] = t.sqrt().repeat_interleave(c)
        return type(params)(**values), (1 / t).view(k, 1)

    def init(self, x: Tensor, params: NamedTuple | None = None) -> TemperingState:
        params = self.params if params is None else params
        x = self.kernel.check_x(x, params)
        k = self.temperatures.numel()
        replicas = self.kernel.init(x.repeat(k, *([1] * (x.ndim - 1))), self._ladder(params, x)[0])
        zeros = torch.zeros(k - 1, dtype=torch.float64, device=x.device)
        return self._wrap(replicas, x.shape[0], zeros, zeros.clone())

    def noise_size(self, state: TemperingState) -> int:
        k = self.temperatures.numel()
        return k * self.kernel.noise_size(state.replicas) + k - 1  # moves, then swaps

    def _wrap(self, replicas, c: int, proposed: Tensor, accepted: Tensor) -> TemperingState:
        e = replicas.energy
        return TemperingState(replicas.x[:c], None if e is None else e[:c], replicas.grad[:c],
                              replicas.step, replicas, proposed, accepted)

    def step(self, state: TemperingState, noise: Tensor, params: NamedTuple, batch: Any = None
             ) -> tuple[TemperingState, Info]:
        c, k = state.x.shape[0], self.temperatures.numel()
        inner, beta = self._ladder(params, state.x)
        m = self.kernel.noise_size(state.replicas)
        moves = noise[:, :k * m].reshape(c, k, m).transpose(0, 1).reshape(k * c, m)
        replicas, info = self.kernel.step(state.replicas, moves, inner, batch)
        proposed, accepted = state.swap_proposed, state.swap_accepted
        if replicas.step % self.swap_every == 0:
            parity = (replicas.step // self.swap_every) % 2
            replicas, tried, took = self._swap(replicas, beta, c, parity, noise[:, k * m:])
            proposed, accepted = proposed + tried, accepted + took
        cold = Info(*(None if f is None else f[:c] for f in info))
        return self._wrap(replicas, c, proposed, accepted), cold

    def _swap(self, replicas, beta, c, parity, z):
        """Exchange positions between pairs ``(k, k+1)``, ``k = parity, parity+2, ...``;
        ``z (C, K-1)`` are the pairs' normals."""
        k = beta.shape[0]
        energy = replicas.energy
        if energy is None:
            energy = self.kernel.energy(replicas.x)
        e = energy.view(k, c)
        lower = torch.arange(parity, k - 1, 2, device=e.device)
        tried = torch.zeros(k - 1, dtype=torch.float64, device=e.device)
        took = torch.zeros_like(tried)
        if lower.numel() == 0:
            return replicas, tried, took
        log_r = (beta[lower] - beta[lower + 1]) * (e[lower] - e[lower + 1])      # (P, C)
        swap = torch.log(uniforms(z.t()[lower])) < log_r
        source = torch.arange(k, device=e.device).view(k, 1).expand(k, c).clone()
        source[lower] = torch.where(swap, lower.view(-1, 1) + 1, source[lower])
        source[lower + 1] = torch.where(swap, lower.view(-1, 1), source[lower + 1])
        rows = (source * c + torch.arange(c, device=e.device)).flatten()
        replicas = replicas._replace(x=replicas.x[rows], grad=replicas.grad[rows],
                                     energy=None if replicas.energy is None else energy[rows])
        tried[lower] = float(c)
        took[lower] = swap.sum(1).to(took.dtype)
        return replicas, tried, took



def geometric_ladder(t_max: float, n: int) -> Tensor:
    """``n`` temperatures from 1 to ``t_max``, equally spaced in log."""
    if not t_max > 1 or n < 2:
        raise ValueError(f"need t_max > 1 and n >= 2; got t_max={t_max!r}, n={n!r}")
    return torch.logspace(0, math.log10(t_max), n, dtype=torch.float64)
