"""Sampling with a noise-conditional score ``s(x, sigma)``: annealed Langevin dynamics
(Song & Ermon 2019) and a predictor-corrector sampler for the variance-exploding SDE
(Song et al. 2021). Both move the chains with the library's Langevin kernel (a score is
``-grad E`` of the level's energy) and its Langevin move. With a noise-conditional energy
``E(x, sigma)``, annealed MALA adds the Metropolis check at every level."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..blocks import draw_noise, record, run_block
from ..energy import check_states
from ..integrators import langevin_move
from ..kernels import MALA, Langevin
from ..kernels.base import State
from ..util import integer, positive, progress_bar, seeded_generator

__all__ = ["ScoreField", "ScoreSamples", "annealed_langevin", "annealed_mala",
           "predictor_corrector"]

ScoreFn = Callable[[Tensor, float], Tensor]
EnergyFn = Callable[[Tensor, float], Tensor]


class ScoreField:
    """The score at one noise level as a kernel's energy: ``grad(x) = -s(x, sigma)``.

    There is no energy to evaluate (a score model need not be a gradient), so calling
    the field raises; kernels that only need the gradient (``Langevin``) run on it.
    ``n_evals`` counts the score evaluations (each covers all chains)."""

    def __init__(self, score: ScoreFn, sigma: float) -> None:
        self.score, self.sigma, self.n_evals = score, float(sigma), 0

    def grad(self, x: Tensor) -> Tensor:
        self.n_evals += 1
        return -self.score(x, self.sigma)

    def __call__(self, x: Tensor) -> Tensor:
        raise TypeError("a score field has a gradient (the negative score) but no energy; "
                        "use a kernel without an accept step, such as Langevin")


@dataclass
class ScoreSamples:
    """``final (C, *event)``: the samples (after the denoising step, if asked);
    ``trajectory (steps + 1, C, *event)`` when asked: the start and every move;
    ``n_evals``: score evaluations per sample; ``sigmas``: the ladder used;
    ``acceptance (L,)``: for annealed MALA, the mean acceptance probability at each level."""

    final: Tensor
    n_evals: int
    sigmas: Tensor
    trajectory: Tensor | None = None
    acceptance: Tensor | None = None


def _check(x0: Tensor, sigmas: Tensor) -> tuple[Tensor, list[float]]:
    x0 = check_states("x0", x0)
    levels = [float(s) for s in torch.as_tensor(sigmas).flatten()]
    if len(levels) < 1 or any(not s > 0 for s in levels) or \
            any(b > a for a, b in zip(levels, levels[1:], strict=False)):
        raise ValueError(f"sigmas must be positive and decreasing (largest first); "
                         f"got {levels[:5]}{'...' if len(levels) > 5 else ''}")
    return x0, levels


def annealed_langevin(score: ScoreFn, x0: Tensor, sigmas: Tensor, n_steps_each: int = 100,
                      step_lr: float = 2e-5, denoise: bool = True, seed: int | None = None,
                      progress: bool = True, return_trajectory: bool = False) -> ScoreSamples:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1): at each level
    ``sigma_i``, largest first, ``n_steps_each`` Langevin steps

        x' = x + (alpha_i / 2) s(x, sigma_i) + sqrt(alpha_i) z,
        alpha_i = step_lr * sigma_i^2 / sigma_L^2,

    i.e. the ``Langevin`` kernel with ``step_size = alpha_i / 2`` on the level's
    :class:`ScoreField`. With ``denoise`` a last step ``x + sigma_L^2 s(x, sigma_L)``
    (Tweedie's formula; Jolicoeur-Martineau et al. 2021) removes the last level's noise.

    ``score(x, sigma)`` is called under ``torch.no_grad()``. Score evaluations per sample:
    ``L (n_steps_each + 1) + denoise`` (each level starts with the score at its own
    ``sigma``)."""
    x, levels = _check(x0, sigmas)
    n_steps_each = integer("n_steps_each", n_steps_each, 1)
    step_lr = positive("step_lr", step_lr)
    gen = seeded_generator(seed, x.device)
    frames = [x.clone()] if return_trajectory else None
    n_evals = 0
    bar = progress_bar(progress, len(levels) * n_steps_each, "annealed Langevin")
    with torch.no_grad():
        for sigma in levels:
            field = ScoreField(score, sigma)
            kernel = Langevin(field, step_size=step_lr * sigma**2 / levels[-1]**2 / 2)
            state = State(x, None, field.grad(x), 0)
            noise = draw_noise([gen], n_steps_each, x.shape[0], x[0].numel(), x)
            state, trace = run_block(kernel, state, kernel.params, noise,
                                     trace=record if frames is not None else None)
            x, n_evals = state.x, n_evals + field.n_evals
            if frames is not None:
                frames.append(trace.x)
            if bar is not None:
                bar.update(n_steps_each)
        if denoise:
            x = x + levels[-1]**2 * score(x, levels[-1])
            n_evals += 1
    if bar is not None:
        bar.close()
    trajectory = torch.cat([frames[0][None], *frames[1:], x[None]]) if frames else None
    return ScoreSamples(x, n_evals, torch.tensor(levels), trajectory)


class LevelEnergy:
    """One level of a noise-conditional energy as a kernel's energy, ``x -> E(x, sigma)``;
    ``n_evals`` counts the calls (each covers all chains and, by autograd, gives the
    gradient too)."""

    def __init__(self, energy: EnergyFn, sigma: float) -> None:
        self.energy, self.sigma, self.n_evals = energy, float(sigma), 0

    def __call__(self, x: Tensor) -> Tensor:
        self.n_evals += 1
        return self.energy(x, self.sigma)


def annealed_mala(energy: EnergyFn, x0: Tensor, sigmas: Tensor, n_steps_each: int = 100,
                  step_lr: float = 2e-5, denoise: bool = False, seed: int | None = None,
                  progress: bool = True, return_trajectory: bool = False) -> ScoreSamples:
    """Annealed Langevin dynamics with a Metropolis check at every level: at
    ``sigma_i``, largest first, ``n_steps_each`` steps of the ``MALA`` kernel on
    ``exp(-E(x, sigma_i))`` with :func:`annealed_langevin`'s step ``alpha_i / 2``,
    ``alpha_i = step_lr sigma_i^2 / sigma_L^2``, so each level's chains leave that level's
    density exactly invariant and the last level's samples are the model's density
    ``exp(-E(x, sigma_L))`` (reached by annealing, which crosses between modes, where one
    long chain at ``sigma_L`` would not). ``energy(x, sigma) -> (C,)``, e.g.
    :meth:`NoiseConditionalEnergy.energy`. ``denoise``: a last Tweedie step
    ``x + sigma_L^2 s(x, sigma_L)``. Gradient evaluations per sample:
    ``L (n_steps_each + 1) + denoise``."""
    x, levels = _check(x0, sigmas)
    n_steps_each = integer("n_steps_each", n_steps_each, 1)
    step_lr = positive("step_lr", step_lr)
    gen = seeded_generator(seed, x.device)
    frames = [x.clone()] if return_trajectory else None
    n_evals, acceptance = 0, []
    bar = progress_bar(progress, len(levels) * n_steps_each, "annealed MALA")
    with torch.no_grad():
        for sigma in levels:
            field = LevelEnergy(energy, sigma)
            kernel = MALA(field, step_size=step_lr * sigma**2 / levels[-1]**2 / 2)
            state = kernel.init(x, kernel.params)
            noise = draw_noise([gen], n_steps_each, x.shape[0], kernel.noise_size(state), x)
            state, trace = run_block(kernel, state, kernel.params, noise)
            x, n_evals = state.x, n_evals + field.n_evals
            acceptance.append(float(trace.info.acceptance_prob.mean()))
            if frames is not None:
                frames.append(trace.x)
            if bar is not None:
                bar.update(n_steps_each)
        if denoise:
            x = x + levels[-1]**2 * _score_of(energy, x, levels[-1])
            n_evals += 1
    if bar is not None:
        bar.close()
    trajectory = torch.cat([frames[0][None], *frames[1:], x[None]]) if frames else None
    return ScoreSamples(x, n_evals, torch.tensor(levels), trajectory,
                        torch.tensor(acceptance))


def _score_of(energy: EnergyFn, x: Tensor, sigma: float) -> Tensor:
    """``-grad_x E(x, sigma)`` by autograd."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(energy(xg, sigma).sum(), xg)
    return -grad


def _snr_step(score: Tensor, noise: Tensor, snr: float) -> float:
    """The corrector's step ``eps = 2 (snr |z| / |s|)^2``, the norms per sample averaged
    over the chains (Song et al. 2021, Algorithm 5; diffusers' ``ScoreSdeVeScheduler``)."""
    c = score.shape[0]
    s_norm = score.reshape(c, -1).norm(dim=1).mean()
    z_norm = noise.reshape(c, -1).norm(dim=1).mean()
    return float(2 * (snr * z_norm / s_norm.clamp_min(1e-30)) ** 2)


def predictor_corrector(score: ScoreFn, x0: Tensor, sigmas: Tensor, n_correctors: int = 1,
                        snr: float = 0.15, seed: int | None = None, progress: bool = True,
                        return_trajectory: bool = False) -> ScoreSamples:
    """Predictor-corrector sampling of the variance-exploding SDE (Song et al. 2021,
    Algorithm 2) down the ladder ``sigma_1 > ... > sigma_N`` (``sigma_{N+1} = 0``). At each
    level, ``n_correctors`` Langevin corrector steps ``x' = x + eps s + sqrt(2 eps) z`` (the
    ``Langevin`` kernel, ``eps`` by the signal-to-noise rule ``2 (snr |z| / |s|)^2``), then
    the reverse-diffusion predictor

        x' = x + g_i^2 s(x, sigma_i) + g_i z,    g_i^2 = sigma_i^2 - sigma_{i+1}^2,

    the Langevin move at step ``g_i^2`` and temperature 1/2. The last predictor step is
    taken without noise (the denoising step). The defaults are diffusers'
    ``ScoreSdeVeScheduler``'s: ``snr=0.15``, one corrector step.

    Score evaluations per sample: ``N (n_correctors + 1)`` (the score after a corrector's
    move is the next move's)."""
    x, levels = _check(x0, sigmas)
    n_correctors = integer("n_correctors", n_correctors, 0)
    snr = positive("snr", snr)
    gen = seeded_generator(seed, x.device)
    frames = [x.clone()] if return_trajectory else None
    n_evals, m = 0, x[0].numel()
    bar = progress_bar(progress, len(levels), "predictor-corrector", unit="level")
    with torch.no_grad():
        for i, sigma in enumerate(levels):
            field = ScoreField(score, sigma)
            state = State(x, None, field.grad(x), 0)
            noise = draw_noise([gen], n_correctors + 1, x.shape[0], m, x)
            for j in range(n_correctors):
                z = noise[j]
                kernel = Langevin(field, step_size=_snr_step(state.grad, z, snr))
                state, _ = kernel.step(state, z, kernel.params)
                if frames is not None:
                    frames.append(state.x)
            g2 = sigma**2 - (levels[i + 1]**2 if i + 1 < len(levels) else 0.0)
            last = i + 1 == len(levels)
            x = langevin_move(state.x, state.grad, noise[-1].view_as(x), g2,
                              0.0 if last else math.sqrt(0.5))
            n_evals += field.n_evals
            if frames is not None:
                frames.append(x)
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    trajectory = torch.stack(frames) if frames else None
    return ScoreSamples(x, n_evals, torch.tensor(levels), trajectory)
