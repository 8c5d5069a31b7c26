"""Tuning of MCLMC and MAMS: step size ``eps``, length ``L`` and a diagonal inverse mass.

**MCLMC** (:func:`tune_mclmc`; Robnik et al. 2023, JMLR 24(311), sec. 4 and app. B), in
fractions of ``n_steps``:

1. ``eps`` from the energy error: the chains step with the current ``eps`` and each step's
   ``xi = dE^2 / (d v)`` (``v = 5e-4``, the wanted ``Var[dE] / d``) predicts the step size
   ``eps xi^{-1/6}`` (``Var[dE] ∝ eps^6``). The predictions are averaged with weights
   ``w = exp(-(log xi / (6 trust))^2 / 2)`` that discount steps far from the target, decaying
   as an exponential average over ``n_eff = 150`` steps:

       eps = (sum_t r^(T-t) w_t xi_t / eps_t^6 / sum_t r^(T-t) w_t)^(-1/6),
       r = (n_eff - 1) / (n_eff + 1).

   A step that turns a chain non-finite is undone for that chain and caps ``eps`` at 0.8 of
   the step size that failed. Over the stage's second part the positions' variances
   ``sigma_i^2`` are averaged (weighted by ``eps``) and ``L = sqrt(sum_i sigma_i^2)``.
2. With ``diagonal_preconditioning``: ``M^{-1} = diag(sigma^2)``, ``L = sqrt(d)`` (the
   preconditioned target has unit scales), and ``eps`` re-tuned as in 1 for a third as long.
3. ``L`` from the autocorrelation of a run at the tuned values: ``L = l_factor eps mean_i
   tau_i``, ``tau_i = n / ESS_i`` steps per effective sample of coordinate ``i``
   (``l_factor = 0.4``).

**MAMS** (:func:`tune_mams`; Robnik, Cohn-Gordon & Seljak 2025, arXiv:2503.01707, sec. 4):
dual averaging (Hoffman & Gelman 2014) of ``eps`` towards the acceptance 0.9 with ``L / eps``
fixed, the variances collected in its second part give ``L = sqrt(sum sigma_i^2)`` (and
``M^{-1}``), dual averaging again at that ``L``; then ``L = l_factor L / mean_i ESS_i``
(ESS per trajectory) from a run at the tuned values, and a last dual averaging.

Both run every step through the block runner (MCLMC's compiled with ``compile=True``), all
chains at once; the step-size estimates are shared by the chains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .adaptation import DualAveraging, chains_energy, chains_x
from .blocks import NoiseStream, block_length, run_block
from .diagnostics import ess
from .kernels.base import State
from .kernels.mclmc import MAMS, MCLMC, MCLMCState
from .util import in_range, integer, positive, seeded_generator

__all__ = ["Tuned", "tune_mclmc", "tune_mams"]


def _per_chain(n_grads: int | Tensor, x: Tensor) -> Tensor:
    """Gradient counts per chain (zeros where no stage ran)."""
    if isinstance(n_grads, Tensor):
        return n_grads
    return torch.full((x.shape[0],), n_grads, dtype=torch.long, device=x.device)


@dataclass
class Tuned:
    """The result of :func:`tune_mclmc` / :func:`tune_mams`.

    Attributes:
        kernel: the kernel with the tuned ``step_size``, ``L`` and ``inv_mass``.
        state: the chains' state after tuning (continue from ``state.x``).
        n_grads: gradient evaluations per chain ``(C,)`` the tuning made.
    """

    kernel: Any
    state: Any
    n_grads: Tensor

    @property
    def x(self) -> Tensor:
        return self.state.x

    @property
    def step_size(self) -> float:
        return float(self.kernel.params.step_size)

    @property
    def L(self) -> float:  # noqa: N802 - the papers' name
        return float(self.kernel.params.L)

    @property
    def inv_mass(self) -> float | Tensor:
        return self.kernel.params.inv_mass


class _Runner:
    """Blocks of steps of a kernel-like object through the block runner, with the tuning's
    generator; eager or compiled."""

    def __init__(self, generator: torch.Generator, compile: bool) -> None:  # noqa: A002
        self.generator, self.compile, self.blocks = generator, compile, None

    def run(self, kernel: Any, state: Any, params: Any, n: int) -> tuple[Any, list]:
        """``n`` steps; returns the final state and the blocks' traces."""
        x = state.x
        length = block_length(x.numel())
        noise = NoiseStream([self.generator], x.shape[0], kernel.noise_size(state), x,
                            length, n)
        if self.compile and self.blocks is None:
            from .compiled import CompiledBlocks  # private torch parts: only when asked

            self.blocks = CompiledBlocks(x.device, x.numel())
        traces = []
        for t in range(0, n, length):
            z = noise.take(min(length, n - t))
            if self.blocks is not None:
                state, trace = self.blocks(kernel, state, params, z)
            else:
                state, trace = run_block(kernel, state, params, z)
            traces.append(trace)
        return state, traces


def _cat(traces: list, field: str) -> Tensor:
    return torch.cat([getattr(t.info, field) for t in traces])


# -- MCLMC stage 1: the step size from the energy error ---------------------------------------

class EnergyTuneState(NamedTuple):
    """The chains, the shared step size ``(C,)``, its cap, the weighted sums of the step-size
    prediction, and the ``eps``-weighted sums of ``x`` and ``x^2`` (event-shaped)."""

    chains: MCLMCState
    eps: Tensor
    eps_max: Tensor
    sum_pred: Tensor
    sum_weight: Tensor
    w_x: Tensor
    sum_x: Tensor
    sum_x2: Tensor

    x = chains_x
    energy = chains_energy

    @classmethod
    def start(cls, chains: MCLMCState, eps: float) -> EnergyTuneState:
        x = chains.x
        # one tensor each: a compiled scan refuses a carry whose parts alias each other
        return cls(chains, x.new_full((x.shape[0],), eps), x.new_full((), math.inf),
                   x.new_zeros(()), x.new_zeros(()), x.new_zeros(()), torch.zeros_like(x[0]),
                   torch.zeros_like(x[0]))


class EnergyTuneInfo(NamedTuple):
    """Per step: the step size used ``(C,)`` and the gradients ``(C,)``."""

    step_size: Tensor
    n_grads: Tensor


class EnergyVarianceTuner:
    """MCLMC's step with the step size carried in the state and updated from the energy
    error after each step (stage 1 of :func:`tune_mclmc`); ``collect`` adds the positions to
    the variance sums."""

    has_accept_step = False
    couples_chains = True
    needs_batch = False
    compilable = True

    def __init__(self, kernel: MCLMC, target_var: float, trust: float, n_eff: int,
                 collect: bool) -> None:
        self.kernel, self.target_var, self.trust = kernel, target_var, trust
        self.decay = (n_eff - 1.0) / (n_eff + 1.0)
        self.collect = collect

    def noise_size(self, state: EnergyTuneState) -> int:
        return self.kernel.noise_size(state.chains)

    def step(self, state: EnergyTuneState, noise: Tensor, params: Any, batch: Any = None
             ) -> tuple[EnergyTuneState, EnergyTuneInfo]:
        old, eps = state.chains, state.eps
        new, info = self.kernel.step(old, noise, params._replace(step_size=eps))
        x = new.x
        d = x[0].numel()
        ok = torch.isfinite(info.energy_change) & torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
        chains = MCLMCState(*(torch.where(ok.view(-1, *[1] * (n.ndim - 1)), n, o)
                              if isinstance(n, Tensor) else n
                              for n, o in zip(new, old, strict=True)))
        chains = chains._replace(step=new.step)
        eps_max = torch.where(ok.all(), state.eps_max, torch.minimum(state.eps_max, 0.8 * eps[0]))
        change = torch.where(ok, info.energy_change, 0.0)
        xi = change * change / (d * self.target_var) + 1e-8
        w = torch.exp(-0.5 * (torch.log(xi) / (6.0 * self.trust)) ** 2) * ok
        sum_pred = self.decay * state.sum_pred + (w * xi / eps**6).mean()
        sum_weight = self.decay * state.sum_weight + w.mean()
        # no usable step yet (all weights 0): keep the step size
        predicted = torch.where(sum_weight > 0, (sum_pred / sum_weight.clamp_min(1e-300))
                                ** (-1.0 / 6.0), eps[0])
        eps_new = torch.minimum(predicted, eps_max).expand_as(eps).clone()  # a real (C,)
        # copies, not the inputs: a compiled scan refuses outputs that alias its inputs
        w_x, sum_x, sum_x2 = state.w_x.clone(), state.sum_x.clone(), state.sum_x2.clone()
        if self.collect:
            weight = (eps * ok).view(-1, *[1] * (x.ndim - 1))
            w_x = w_x + (eps * ok).sum()
            sum_x = sum_x + (weight * chains.x).sum(0)
            sum_x2 = sum_x2 + (weight * chains.x * chains.x).sum(0)
        tuned = EnergyTuneState(chains, eps_new, eps_max, sum_pred, sum_weight, w_x, sum_x,
                                sum_x2)
        return tuned, EnergyTuneInfo(eps.clone(), info.n_grads)


def _variances(state: EnergyTuneState) -> Tensor:
    mean = state.sum_x / state.w_x
    return (state.sum_x2 / state.w_x - mean * mean).clamp_min(1e-12)


def _tau(xs: Tensor) -> Tensor:
    """Steps per effective sample per coordinate from draws ``(steps, C, *event)``:
    ``tau_i = n C / ESS_i`` (``ESS`` over all chains)."""
    draws = xs.movedim(0, 1).reshape(xs.shape[1], xs.shape[0], -1).double()
    return xs.shape[0] * xs.shape[1] / ess(draws)


def _check_common(kernel: Any, cls: type, x0: Any, n_steps: int, fractions: tuple) -> int:
    if not isinstance(kernel, cls):
        raise TypeError(f"kernel must be a torchlangevin.{cls.__name__}; "
                        f"got {type(kernel).__name__}")
    for name in ("step_size", "L"):
        if isinstance(getattr(kernel.params, name), Tensor) or \
                not isinstance(getattr(kernel.params, name), float):
            raise TypeError(f"{name} must be a float to start tuning from; got "
                            f"{getattr(kernel.params, name)!r}")
    n_steps = integer("n_steps", n_steps, 10)
    for name, value in fractions:
        in_range(name, value, 0.0, 1.0, closed=True)
    return n_steps


def tune_mclmc(kernel: MCLMC, x0: Tensor, n_steps: int, *, frac_tune1: float = 0.1,
               frac_tune2: float = 0.1, frac_tune3: float = 0.1,
               diagonal_preconditioning: bool = True, desired_energy_var: float = 5e-4,
               trust_in_estimate: float = 1.5, num_effective_samples: int = 150,
               l_factor: float = 0.4, seed: int | None = None,
               compile: bool = False) -> Tuned:  # noqa: A002 - as in sample
    """Tune an :class:`~torchlangevin.MCLMC` kernel's ``step_size``, ``L`` and ``inv_mass``
    from ``x0`` (module docstring for the three stages).

    Args:
        kernel: the kernel to tune; its float ``step_size`` and ``L`` are where tuning
            starts (BlackJAX starts at ``L = sqrt(d)``, ``eps = sqrt(d) / 4``).
        x0: initial states ``(C, *event)``.
        n_steps: the steps the tuned run will take; stage ``k`` runs ``frac_tunek * n_steps``.
        frac_tune1, frac_tune2: the step-size stage's parts without and with the variance
            collection (0 for ``frac_tune2`` keeps ``L`` and the mass as they are).
        frac_tune3: the autocorrelation stage (0: skip it).
        diagonal_preconditioning: set ``inv_mass`` to the collected variances.
        desired_energy_var: the wanted ``Var[dE] / d``.
        trust_in_estimate, num_effective_samples: the prediction's weights and memory.
        l_factor: ``L = l_factor eps tau`` in stage 3.
        seed: seeds the tuning's generator.
        compile: run the blocks compiled.

    Returns:
        :class:`Tuned`: the tuned kernel, the chains' state and the gradients used per chain.
    """
    n_steps = _check_common(kernel, MCLMC, x0, n_steps, (("frac_tune1", frac_tune1),
                                                         ("frac_tune2", frac_tune2),
                                                         ("frac_tune3", frac_tune3)))
    positive("desired_energy_var", desired_energy_var)
    positive("trust_in_estimate", trust_in_estimate)
    positive("l_factor", l_factor)
    integer("num_effective_samples", num_effective_samples, 2)
    runner = _Runner(seeded_generator(seed, x0.device), compile)
    n1, n2, n3 = (int(f * n_steps) for f in (frac_tune1, frac_tune2, frac_tune3))
    with torch.no_grad():
        state = kernel.init(x0)
        d = state.x[0].numel()
        params, n_grads = kernel.params, 0

        def energy_stage(tune, params, n, collect):
            tuner = EnergyVarianceTuner(kernel, desired_energy_var, trust_in_estimate,
                                        num_effective_samples, collect)
            tune, traces = runner.run(tuner, tune, params, n)
            grads = _cat(traces, "n_grads").sum(0)
            return tune, params._replace(step_size=float(tune.eps[0])), grads

        # the prediction's averages run on through both parts; the sums only in the second
        tune = EnergyTuneState.start(state, params.step_size)
        for n, collect in ((n1, False), (n2, True)):
            if n:
                tune, params, grads = energy_stage(tune, params, n, collect)
                state, n_grads = tune.chains, n_grads + grads
        if n2:
            var = _variances(tune)
            if diagonal_preconditioning:
                params = params._replace(inv_mass=var.to(state.x.dtype), L=math.sqrt(d))
                if n2 // 3:
                    tune, params, grads = energy_stage(
                        EnergyTuneState.start(state, params.step_size), params, n2 // 3, False)
                    state, n_grads = tune.chains, n_grads + grads
            else:
                params = params._replace(L=float(var.sum().sqrt()))
        if n3:
            tuned = kernel.replace(**params._asdict())
            state, traces = runner.run(tuned, state, tuned.params, n3)
            n_grads += _cat(traces, "n_grads").sum(0)
            tau = _tau(torch.cat([t.x for t in traces]))
            params = params._replace(L=float(l_factor * params.step_size * tau.mean()))
    return Tuned(kernel.replace(**params._asdict()), state._replace(step=0),
                 _per_chain(n_grads, state.x))


# -- MAMS: dual averaging of the step size -----------------------------------------------------

class AveragingState(NamedTuple):
    """The chains, the step size ``(C,)`` (shared), ``L / eps`` held fixed or ``L`` held
    fixed, the dual averaging, and the sums of ``x``, ``x^2`` over collected steps."""

    chains: State
    eps: Tensor
    length: Tensor
    averaging: DualAveraging
    count: Tensor
    sum_x: Tensor
    sum_x2: Tensor

    x = chains_x
    energy = chains_energy

    @classmethod
    def start(cls, chains: State, eps: float, length: float) -> AveragingState:
        x = chains.x
        e = x.new_full((x.shape[0],), eps)
        return cls(chains, e, x.new_full((), length), DualAveraging.start(e), x.new_zeros(()),
                   torch.zeros_like(x[0]), torch.zeros_like(x[0]))


class AveragingInfo(NamedTuple):
    """Per trajectory: the acceptance probabilities and the gradients, ``(C,)`` each."""

    acceptance_prob: Tensor
    n_grads: Tensor


class StepSizeAveraging:
    """MAMS's step at the carried step size, then one dual-averaging update of it towards
    ``target`` on the chains' mean acceptance; ``fix_L=False`` keeps ``L / eps`` (the
    number of steps) instead of ``L``; ``collect`` sums the positions."""

    has_accept_step = False
    couples_chains = True
    needs_batch = False
    compilable = False  # the trajectory's number of steps is read from the tuned eps

    def __init__(self, kernel: MAMS, target: float, fix_L: bool, collect: bool) -> None:  # noqa: N803
        self.kernel, self.target, self.fix_L, self.collect = kernel, target, fix_L, collect
        self.adapt = not collect  # the variances are collected at a fixed step size

    def noise_size(self, state: AveragingState) -> int:
        return self.kernel.noise_size(state.chains)

    def step(self, state: AveragingState, noise: Tensor, params: Any, batch: Any = None
             ) -> tuple[AveragingState, AveragingInfo]:
        eps = state.eps
        length = state.length if self.fix_L else state.length * eps[0]
        chains, info = self.kernel.step(state.chains, noise,
                                        params._replace(step_size=float(eps[0]),
                                                        L=float(length)))
        prob = info.acceptance_prob
        averaging, new = state.averaging, eps
        if self.adapt:
            averaging, new = averaging.update(prob.mean().expand_as(prob), self.target)
            # a step longer than the trajectory is no trajectory (as BlackJAX caps it)
            cap = length / 1.1 if self.fix_L else math.inf
            new = new.clamp(min=1e-5, max=cap)
        x = chains.x
        count, sum_x, sum_x2 = state.count, state.sum_x, state.sum_x2
        if self.collect:
            count = count + x.shape[0]
            sum_x, sum_x2 = sum_x + x.sum(0), sum_x2 + (x * x).sum(0)
        return (AveragingState(chains, new, state.length, averaging, count, sum_x, sum_x2),
                AveragingInfo(prob, info.n_grads))


def tune_mams(kernel: MAMS, x0: Tensor, n_steps: int, *, frac_tune1: float = 0.1,
              frac_tune2: float = 0.1, frac_tune3: float = 0.1,
              diagonal_preconditioning: bool = True, target_accept: float | None = None,
              l_factor: float = 0.5, seed: int | None = None) -> Tuned:
    """Tune a :class:`~torchlangevin.MAMS` kernel's ``step_size``, ``L`` and ``inv_mass``
    from ``x0`` (module docstring). Steps here are trajectories, run eagerly (a trajectory's
    number of steps follows the step size being tuned); a ``MAMS(..., compile=True)``
    kernel's isokinetic steps run compiled inside them.

    Args:
        kernel: the kernel to tune; its float ``step_size`` and ``L`` are where tuning starts.
        x0: initial states ``(C, *event)``.
        n_steps: the trajectories the tuned run will take; the stages run fractions of it.
        frac_tune1, frac_tune2: dual averaging without and with the variance collection.
        frac_tune3: the autocorrelation stage for ``L`` (0: skip it).
        diagonal_preconditioning: set ``inv_mass`` to the collected variances.
        target_accept: defaults to MAMS's 0.9.
        l_factor: ``L = l_factor L / ESS per trajectory`` in stage 3.
        seed: seeds the tuning's generator.
    """
    n_steps = _check_common(kernel, MAMS, x0, n_steps, (("frac_tune1", frac_tune1),
                                                        ("frac_tune2", frac_tune2),
                                                        ("frac_tune3", frac_tune3)))
    target = kernel.target_accept if target_accept is None else \
        in_range("target_accept", target_accept, 0.0, 1.0)
    if not target > 0:
        raise ValueError(f"target_accept must be in (0, 1); got {target_accept!r}")
    positive("l_factor", l_factor)
    runner = _Runner(seeded_generator(seed, x0.device), False)
    n1, n2, n3 = (int(f * n_steps) for f in (frac_tune1, frac_tune2, frac_tune3))
    with torch.no_grad():
        state = kernel.init(x0)
        d = state.x[0].numel()
        params, n_grads = kernel.params, 0

        def averaging(state, params, n, fix_L, collect):  # noqa: N803
            length = params.L if fix_L else params.L / params.step_size
            tuner = StepSizeAveraging(kernel, target, fix_L, collect)
            run, traces = runner.run(
                tuner, AveragingState.start(state, params.step_size, length), params, n)
            eps = float(run.averaging.final[0]) if tuner.adapt else params.step_size
            if fix_L:  # the average of capped iterates can pass the cap: cap it too
                eps = min(eps, params.L / 1.1)
            new_l = params.L if fix_L else params.L * eps / params.step_size
            grads = _cat(traces, "n_grads").sum(0)
            return run, params._replace(step_size=eps, L=new_l), grads

        if n1:
            run, params, grads = averaging(state, params, n1, False, False)
            state, n_grads = run.chains, n_grads + grads
        if n2:
            run, params, grads = averaging(state, params, n2, False, True)
            state, n_grads = run.chains, n_grads + grads
            mean = run.sum_x / run.count
            var = (run.sum_x2 / run.count - mean * mean).clamp_min(1e-12)
            change = min(max(float(var.sum().sqrt()) / params.L, 0.0), 2.0)
            params = params._replace(L=params.L * change, step_size=params.step_size * change)
            if diagonal_preconditioning:
                params = params._replace(inv_mass=var.to(state.x.dtype), L=math.sqrt(d))
            if n1:
                run, params, grads = averaging(state, params, n1, True, False)
                state, n_grads = run.chains, n_grads + grads
        if n3:
            tuned = kernel.replace(**params._asdict())
            state, traces = runner.run(tuned, state, tuned.params, n3)
            n_grads += _cat(traces, "n_grads").sum(0)
            per_trajectory = float((1.0 / _tau(torch.cat([t.x for t in traces]))).mean())
            params = params._replace(L=min(float(l_factor * params.L / per_trajectory),
                                           2.0 * params.L))
            if n1:
                run, params, grads = averaging(state, params, n1, True, False)
                state, n_grads = run.chains, n_grads + grads
    return Tuned(kernel.replace(**params._asdict()), state._replace(step=0),
                 _per_chain(n_grads, state.x))
