"""ChEES-HMC's warm-up: the step size and the trajectory length, tuned across many chains.

Hoffman, Radul & Sountsov (2021), "An Adaptive MCMC Scheme for Setting Trajectory Lengths
in Hamiltonian Monte Carlo" (AISTATS). Every warm-up step runs :class:`ChEESHMC` on all
chains with one shared step size ``eps`` and one mean trajectory length ``T``, then:

* **Step size**: dual averaging (:class:`~torchlangevin.adaptation.DualAveraging`) on the
  harmonic mean of the chains' acceptance probabilities, ``a_H = n / sum_c 1/a_c`` over
  the ``n`` non-divergent chains, towards ``0.651`` (the optimum of Beskos et al. 2013).
  The harmonic mean is dragged down by the worst chains, so no chain is left stuck.
* **Trajectory length**: gradient ascent on the ChEES criterion (Change in the Estimator
  of the Expected Square)

      ChEES(T) = 1/4 E[(|x' - E x|^2 - |x - E x|^2)^2],

  the expected change of the centred squared norm over one transition. Its estimator per
  chain, from the current ``x``, the proposal ``x'`` (the trajectory's end, before the
  accept) and its velocity ``v' = M^{-1} p' = dx'/dt``, with ``t = 2 u T``::

      g_c = t_c (|x'_c - m'|^2 - |x_c - m|^2) (x'_c - m') . v'_c   (= d ChEES_c / d log T)

  ``m`` the chains' mean of ``x``, ``m'`` their acceptance-weighted mean of ``x'``; the
  step's gradient is ``g = sum_c a_c g_c / sum_c a_c`` (divergent chains weigh 0), and
  ``log T`` takes an Adam step without momentum (``beta1 = 0``, ``beta2 = 0.95``, learning
  rate ``0.025``, the move clipped to ``+-0.35``), kept below ``L_max eps / 2``.
  The tuned ``T`` is the iterate average ``log T_bar <- w log T + (1 - w) log T_bar``,
  ``w = k^-0.5`` at update ``k`` (TFP's ``GradientBasedTrajectoryLengthAdaptation``, from
  the paper's authors; BlackJAX's ``chees_adaptation``).
* **Inverse mass** (``adapt_mass=True``): Stan's windows
  (:func:`~torchlangevin.adaptation.mass_windows`); at each window's end ``M^{-1}`` becomes
  the regularised variance of the positions in it, pooled over chains,
  ``n/(n+5) var + 1e-3 5/(n+5)``, and the dual averaging and the ``T`` average restart.

For a Gaussian with largest standard deviation ``s_max`` (in the metric of ``M``) the
criterion peaks at ``T`` of order ``s_max``: the centred squared norm along the widest
direction decorrelates in a quarter period ``pi s_max / 2`` of its oscillation, and the
jitter averages ``t`` over ``(0, 2T)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .adaptation import Adapted, DualAveraging, chains_energy, chains_x, mass_windows
from .blocks import NoiseStream, block_length, run_block
from .kernels.base import State
from .kernels.chees import ChEESHMC, Proposal
from .schedules import Schedule
from .util import in_range, integer, positive, seeded_generator

__all__ = ["chees_adapt", "ChEESAdapted", "ChEESWarmup", "chees_gradient",
           "harmonic_mean", "OPTIMAL_ACCEPTANCE"]

#: the harmonic-mean acceptance the step size aims at (Beskos et al. 2013; the paper)
OPTIMAL_ACCEPTANCE = 0.651
_BETA2 = 0.95  # Adam's second-moment decay (its first moment is off: beta1 = 0)
_MAX_MOVE = 0.35  # the largest change of log T in one update (about log(2) / 2)
_TINY = 1e-20


@dataclass
class ChEESAdapted(Adapted):
    """Result of :func:`chees_adapt`: :class:`~torchlangevin.adaptation.Adapted` plus the
    tuned trajectory length, and the trajectory length and step size in use at each
    warm-up step (``n_grads``: the warm-up's gradient evaluations per chain)."""

    trajectory_length: float
    trajectory_lengths: Tensor  # (n_steps,)
    step_sizes: Tensor  # (n_steps,)


class ChEESState(NamedTuple):
    """What a ChEES warm-up step carries (0-dim float64 tensors but the chains)."""

    chains: State
    eps: Tensor  # the step size in use
    averaging: DualAveraging
    log_length: Tensor  # log T in use
    log_length_bar: Tensor  # its iterate average
    sq_grad: Tensor  # Adam's second moment of the gradient of log T
    count: Tensor  # updates of log T since the last restart

    x = chains_x
    energy = chains_energy

    def restart(self) -> ChEESState:
        """After a mass update: dual averaging from the current step size, and the ``T``
        average and Adam's moment from the current ``T``."""
        zero = torch.zeros_like(self.count)
        return self._replace(averaging=DualAveraging.start(self.eps),
                             log_length_bar=self.log_length.clone(),
                             sq_grad=torch.zeros_like(self.sq_grad), count=zero)


class ChEESWarmupInfo(NamedTuple):
    """Per warm-up step: acceptance probabilities and gradient evaluations ``(C,)``, and
    the step size and trajectory length the step ran with (0-dim)."""

    acceptance_prob: Tensor
    n_grads: Tensor
    step_size: Tensor
    trajectory_length: Tensor


def harmonic_mean(prob: Tensor, ok: Tensor) -> Tensor:
    """``n / sum_c 1/a_c`` over the ``n`` chains where ``ok`` (float64; 0 if none is, or
    if one has ``a_c = 0``)."""
    p = prob.double()
    inv = torch.where(ok, 1.0 / p, torch.zeros_like(p)).sum()
    h = ok.sum().double() / inv
    return torch.where(torch.isfinite(h), h, torch.zeros_like(h))


def chees_gradient(x: Tensor, proposal: Proposal, prob: Tensor, ok: Tensor) -> Tensor:
    """The ChEES criterion's gradient in ``log T`` (float64, 0-dim): the acceptance-weighted
    mean over chains of ``t_c (|x'_c - m'|^2 - |x_c - m|^2) (x'_c - m') . v'_c``."""
    x0 = x.double().flatten(1)
    y, v = proposal.x.double().flatten(1), proposal.velocity.double().flatten(1)
    finite = ok & torch.isfinite(y).all(1) & torch.isfinite(v).all(1)
    w = torch.where(finite, prob.double(), torch.zeros_like(y[:, 0]))
    y = torch.where(finite[:, None], y, torch.zeros_like(y))
    v = torch.where(finite[:, None], v, torch.zeros_like(v))
    x_c = x0 - x0.mean(0)
    y_c = y - (w[:, None] * y).sum(0) / (w.sum() + _TINY)
    g = proposal.time.double() * ((y_c * y_c).sum(1) - (x_c * x_c).sum(1)) * (y_c * v).sum(1)
    g = torch.where(finite, g, torch.zeros_like(g))
    return (w * g).sum() / (w.sum() + _TINY)


class ChEESWarmup:
    """The ChEES warm-up as a kernel: one :class:`ChEESHMC` step of every chain at the
    carried step size and trajectory length, then one update of each."""

    has_accept_step = False
    couples_chains = True
    needs_batch = False
    compilable = True

    def __init__(self, kernel: ChEESHMC, target: float, learning_rate: float,
                 decay_rate: float) -> None:
        self.kernel, self.target = kernel, target
        self.learning_rate, self.decay_rate = learning_rate, decay_rate

    def noise_size(self, state: ChEESState) -> int:
        return self.kernel.noise_size(state.chains)

    def step(self, state: ChEESState, noise: Tensor, params: Any, batch: Any = None
             ) -> tuple[ChEESState, ChEESWarmupInfo]:
        x = state.x
        c = x.shape[0]
        length = torch.exp(state.log_length)
        run = params._replace(step_size=state.eps.to(x.dtype).expand(c),
                              trajectory_length=length.to(x.dtype).expand(c))
        chains, info, proposal = self.kernel.transition(state.chains, noise, run)
        prob = info.acceptance_prob
        ok = ~info.divergent
        averaging, eps = state.averaging.update(harmonic_mean(prob, ok), self.target)
        new = self._update_length(state, chains, averaging, eps, x, proposal, prob, ok,
                                  params.max_leapfrog_steps)
        return new, ChEESWarmupInfo(prob, info.n_grads, state.eps, length)

    def _update_length(self, state: ChEESState, chains: State, averaging: DualAveraging,
                       eps: Tensor, x: Tensor, proposal: Proposal, prob: Tensor, ok: Tensor,
                       max_steps: int) -> ChEESState:
        """Adam (``beta1 = 0``) on ``log T`` along the ChEES gradient; the iterate average."""
        grad = chees_gradient(x, proposal, prob, ok)
        count = state.count + 1
        sq = _BETA2 * state.sq_grad + (1 - _BETA2) * grad * grad
        sq_hat = sq / (1 - _BETA2 ** count)  # Adam's bias correction
        move = (self.learning_rate * grad / (sq_hat.sqrt() + _TINY)).clamp(-_MAX_MOVE,
                                                                           _MAX_MOVE)
        # 2T within the cap on the steps; no floor at eps: dual averaging's first steps try
        # large step sizes, and a floor would drag T up with them (the kernel takes at
        # least one leapfrog step anyway)
        log_length = torch.minimum(state.log_length + move,
                                   torch.log(eps) + math.log(max_steps / 2))
        w = count ** -self.decay_rate
        log_bar = w * log_length + (1 - w) * state.log_length_bar
        return ChEESState(chains, eps, averaging, log_length, log_bar, sq, count)


class _Moments:
    """Sums of ``x`` and ``x^2`` (float64) over a window's draws, pooled over chains."""

    def __init__(self, x: Tensor) -> None:
        self.total = x.new_zeros(x.shape[1:], dtype=torch.float64)
        self.sq = torch.zeros_like(self.total)
        self.n = 0

    def add(self, xs: Tensor) -> None:
        """Add a stack of draws ``(steps, C, *event)``."""
        xs = xs.double()
        self.total += xs.sum((0, 1))
        self.sq += (xs * xs).sum((0, 1))
        self.n += xs.shape[0] * xs.shape[1]

    def variance(self) -> Tensor:
        """Stan's regularised variance, ``n/(n+5) var + 1e-3 5/(n+5)``."""
        n = self.n
        var = (self.sq - self.total * self.total / n) / (n - 1)
        return n / (n + 5.0) * var + 1e-3 * 5.0 / (n + 5.0)


def _check(kernel: Any, x0: Any, n_steps: int, target_accept: float, learning_rate: float,
           decay_rate: float) -> None:
    """Fail clearly on what :func:`chees_adapt` cannot do."""
    if not isinstance(kernel, ChEESHMC):
        raise TypeError(f"kernel must be a torchlangevin.ChEESHMC; got {type(kernel).__name__}")
    integer("n_steps", n_steps, 10)
    if not isinstance(x0, Tensor) or x0.ndim < 2 or x0.shape[0] < 2:
        shape = tuple(x0.shape) if isinstance(x0, Tensor) else type(x0).__name__
        raise ValueError(f"x0 must be a tensor (C, *event) with C >= 2 chains (ChEES averages "
                         f"over chains); got {shape}")
    in_range("target_accept", target_accept, 0.0, 1.0)
    if not target_accept > 0:
        raise ValueError(f"target_accept must be in (0, 1); got {target_accept!r}")
    positive("learning_rate", learning_rate)
    in_range("decay_rate", decay_rate, 0.0, 1.0, closed=True)
    for name in ("step_size", "trajectory_length", "noise_scale"):
        value = getattr(kernel.params, name)
        if isinstance(value, (Schedule, Tensor)):
            raise TypeError(f"chees_adapt tunes one {name} shared by all chains from a float; "
                            f"got {name}={value!r}")


def chees_adapt(kernel: ChEESHMC, x0: Tensor, n_steps: int = 1000, *,
                target_accept: float = OPTIMAL_ACCEPTANCE, learning_rate: float = 0.025,
                decay_rate: float = 0.5, adapt_mass: bool = False,
                initial_trajectory_length: float | None = None, seed: int | None = None,
                compile: bool = False) -> ChEESAdapted:  # noqa: A002 - as in sample
    """Warm up a :class:`ChEESHMC` from ``x0`` for ``n_steps``: step size by dual averaging
    on the harmonic-mean acceptance, trajectory length by Adam on the ChEES criterion.

    Args:
        kernel: a ``ChEESHMC``; its float ``step_size`` is where the tuning starts.
        x0: initial states ``(C, *event)``, ``C >= 2`` (many: the criterion is estimated
            across chains).
        n_steps: warm-up steps (burn-in: discard them).
        target_accept: the harmonic-mean acceptance to aim at (0.651).
        learning_rate: Adam's rate on ``log T`` (0.025, the paper's).
        decay_rate: ``T``'s iterate average weighs update ``k`` by ``k^-decay_rate``.
        adapt_mass: also tune a diagonal ``inv_mass`` in Stan's windows.
        initial_trajectory_length: where ``T`` starts; default the step size (one leapfrog
            step, as TFP and BlackJAX). Start short: on a near-isotropic target the
            criterion oscillates in ``T`` with the period, and a long start can settle on a
            later, lower peak.
        seed: seeds the warm-up's generator.
        compile: run the warm-up's blocks compiled (``torch.compile``, as ``adapt``):
            same noise, same result to float rounding.

    Returns:
        :class:`ChEESAdapted`; ``tl.sample(adapted.kernel, adapted.x, n)`` samples with the
        tuned values.
    """
    _check(kernel, x0, n_steps, target_accept, learning_rate, decay_rate)
    start = float(kernel.params.step_size) if initial_trajectory_length is None else \
        positive("initial_trajectory_length", initial_trajectory_length)
    params = kernel.params
    gen = seeded_generator(seed, x0.device)
    with torch.no_grad():
        chains = kernel.init(x0, params)
        x = chains.x
        if adapt_mass:  # a tensor from the start: one compiled graph for every window
            inv = torch.as_tensor(params.inv_mass, dtype=x.dtype, device=x.device)
            params = params._replace(inv_mass=inv.expand(x.shape[1:]).clone())
        eps = torch.tensor(float(params.step_size), dtype=torch.float64, device=x.device)
        log_length = torch.tensor(math.log(start), dtype=torch.float64, device=x.device)
        warm = ChEESState(chains, eps, DualAveraging.start(eps), log_length,
                          log_length.clone(), torch.zeros_like(eps), torch.zeros_like(eps))
        warmup = ChEESWarmup(kernel, float(target_accept), float(learning_rate),
                             float(decay_rate))
        run = _ChEESRun(warmup, warm, n_steps, adapt_mass, gen, compile)
        warm, params = run.loop(params)
    step_size = float(warm.averaging.final)
    length = min(max(math.exp(float(warm.log_length_bar)), step_size),
                 params.max_leapfrog_steps * step_size / 2)
    tuned = kernel.replace(step_size=step_size, trajectory_length=length,
                           inv_mass=params.inv_mass)
    return ChEESAdapted(tuned, warm.chains._replace(step=0), step_size, params.inv_mass,
                        run.prob.mean(1), run.n_grads, length, run.lengths,
                        run.step_sizes)


class _ChEESRun:
    """The warm-up's blocks of the block runner, up to each mass update, and what they
    record."""

    def __init__(self, warmup: ChEESWarmup, warm: ChEESState, n_steps: int, adapt_mass: bool,
                 generator: torch.Generator, compile: bool) -> None:  # noqa: A002
        self.warmup, self.warm, self.n_steps = warmup, warm, n_steps
        x = warm.x
        self.windows = mass_windows(n_steps) if adapt_mass else []
        self.in_window = torch.zeros(n_steps, dtype=torch.bool, device=x.device)
        for start, end in self.windows:
            self.in_window[start:end] = True
        self.length = block_length(x.numel())
        self.noise = NoiseStream([generator], x.shape[0], warmup.noise_size(warm), x,
                                 self.length, n_steps)
        self.blocks = None
        if compile:
            from .compiled import CompiledBlocks  # private torch parts: only when asked

            self.blocks = CompiledBlocks(x.device, x.numel())
        self.prob = torch.empty((n_steps, x.shape[0]), dtype=torch.float64, device=x.device)
        self.lengths = torch.empty(n_steps, dtype=torch.float64, device=x.device)
        self.step_sizes = torch.empty_like(self.lengths)
        self.n_grads = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)

    def _block(self, warm: ChEESState, params: Any, i: int, j: int) -> tuple[ChEESState, Any]:
        noise = self.noise.take(j - i)
        if self.blocks is not None:
            warm, trace = self.blocks(self.warmup, warm, params, noise)
        else:
            warm, trace = run_block(self.warmup, warm, params, noise)
        info = trace.info
        self.prob[i:j] = info.acceptance_prob
        self.lengths[i:j] = info.trajectory_length
        self.step_sizes[i:j] = info.step_size
        self.n_grads += info.n_grads.sum(0)  # (steps, C): per chain
        return warm, trace

    def loop(self, params: Any) -> tuple[ChEESState, Any]:
        warm, x = self.warm, self.warm.x
        ends = {end for _, end in self.windows}
        moments = _Moments(x)
        m = 0
        while m < self.n_steps:
            stop = min([e for e in ends if e > m] + [self.n_steps])  # the next mass update
            for i in range(m, stop, self.length):
                j = min(i + self.length, stop)
                warm, trace = self._block(warm, params, i, j)
                if self.windows:
                    moments.add(trace.x[self.in_window[i:j]])
            m = stop
            if m in ends:
                params = params._replace(inv_mass=moments.variance().to(x.dtype))
                warm = warm.restart()
                moments = _Moments(x)
        return warm, params

