"""Objectives for energy-based models ``p_w(x) = exp(-E_w(x)) / Z(w)``.

Maximum likelihood (Bishop, Deep Learning, 14.3.2): the gradient of the mean negative
log-likelihood is ``E_data[grad_w E] - E_model[grad_w E]``; contrastive divergence
estimates the second term with Langevin samples from the model (Algorithm 14.4), so the
surrogate loss is ``mean E(data) - mean E(negatives)`` with the negatives detached.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..blocks import draw_noise, run_block
from ..kernels.base import Kernel
from ..util import integer, non_negative

__all__ = ["ReplayBuffer", "ContrastiveDivergence", "denoising_score_matching", "uniform_init",
           "gaussian_init", "batch_range_init"]

InitFn = Callable[[int, torch.Generator], Tensor]


def uniform_init(low: Tensor, high: Tensor) -> InitFn:
    """Fresh chains uniform in the box ``[low, high]`` (e.g. the data's range)."""
    def init(n: int, generator: torch.Generator) -> Tensor:
        u = torch.rand((n, *low.shape), generator=generator, device=low.device, dtype=low.dtype)
        return low + (high - low) * u
    return init


def gaussian_init(mean: Tensor, std: Tensor) -> InitFn:
    """Fresh chains ``N(mean, std^2)`` per coordinate (e.g. the data's moments)."""
    def init(n: int, generator: torch.Generator) -> Tensor:
        z = torch.randn((n, *mean.shape), generator=generator, device=mean.device,
                        dtype=mean.dtype)
        return mean + std * z
    return init


def batch_range_init(batch: Tensor, margin: float = 0.1) -> InitFn:
    """Fresh chains uniform over the batch's range widened by ``margin`` of it on each side:
    ``U[lo - m (hi - lo), hi + m (hi - lo)]`` per coordinate, ``lo, hi`` the batch's min and
    max (a coordinate with no spread gets ``[lo - 1, lo + 1]``). What a persistent
    :class:`ContrastiveDivergence` starts from when no ``init`` is given."""
    low, high = batch.detach().amin(0), batch.detach().amax(0)
    span = high - low
    pad = torch.where(span > 0, margin * span, torch.ones_like(span))
    return uniform_init(low - pad, high + pad)


class ReplayBuffer:
    """Persistent chains for contrastive divergence (Du & Mordatch 2019).

    ``sample(n)`` draws ``n`` distinct slots, restarts a ``reinit_prob`` share of them
    from ``init``, and returns the starting points with their slot indices;
    ``write(idx, x)`` puts the chains back into the slots they came from.
    """

    def __init__(self, capacity: int, init: InitFn, reinit_prob: float = 0.05,
                 generator: torch.Generator | None = None) -> None:
        capacity = integer("buffer_size", capacity, 1)
        if not 0.0 <= reinit_prob <= 1.0:
            raise ValueError(f"reinit_prob must be in [0, 1]; got {reinit_prob!r}")
        self.init, self.reinit_prob = init, float(reinit_prob)
        generator = generator or torch.Generator().manual_seed(0)
        self.data = init(capacity, generator)
        self.last_reinit: Tensor | None = None

    def __len__(self) -> int:
        return self.data.shape[0]

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        if n > len(self):
            raise ValueError(f"batch of {n} is larger than the buffer ({len(self)} slots)")
        idx = torch.randperm(len(self), generator=generator)[:n].to(self.data.device)
        x = self.data[idx].clone()
        fresh = torch.rand(n, generator=generator).to(x.device) < self.reinit_prob
        if bool(fresh.any()):
            x[fresh] = self.init(int(fresh.sum()), generator).to(x)
        self.last_reinit = fresh
        return x, idx

    def write(self, idx: Tensor, x: Tensor) -> None:
        self.data[idx] = x.detach().to(self.data)


class ContrastiveDivergence(nn.Module):
    """``loss, negatives = cd(batch)`` with ``loss = mean E(batch) - mean E(negatives)``
    ``+ energy_reg * mean(E(batch)^2 + E(negatives)^2)``.

    Negatives come from ``k_steps`` of ``kernel`` (whose energy is the model), started
    from the data batch (CD-k) or, with ``persistent=True``, from a :class:`ReplayBuffer`
    whose slots receive the chains back. Gradients reach only the model's parameters.

    Args:
        energy_model: ``nn.Module`` mapping ``(B, *event) -> (B,)``.
        kernel: e.g. ``Langevin(energy_model, step_size=..., noise_scale=...)``.
        k_steps: kernel steps per batch.
        persistent: use a replay buffer of ``buffer_size`` chains.
        reinit_prob: share of buffer chains restarted from ``init`` each batch.
        init: ``init(n, generator)`` for fresh chains; by default
            :func:`batch_range_init` of the first batch (uniform over its range widened by
            10% on each side), the buffer then filled on that batch.
        energy_reg: weight of the energy-magnitude regulariser.
        seed: seeds the generator for buffer draws and kernel noise.
    """

    def __init__(self, energy_model: nn.Module, kernel: Kernel, k_steps: int = 20,
                 persistent: bool = False, buffer_size: int = 10000,
                 reinit_prob: float = 0.05, energy_reg: float = 0.0,
                 init: InitFn | None = None, seed: int = 0) -> None:
        super().__init__()
        k_steps = integer("k_steps", k_steps, 1)
        buffer_size = integer("buffer_size", buffer_size, 1)
        energy_reg = non_negative("energy_reg", energy_reg)
        if not 0.0 <= reinit_prob <= 1.0:
            raise ValueError(f"reinit_prob must be in [0, 1]; got {reinit_prob!r}")
        self.energy_model, self.kernel, self.k_steps = energy_model, kernel, k_steps
        self.persistent, self.energy_reg = persistent, float(energy_reg)
        self.generator = torch.Generator().manual_seed(seed)
        self._buffer_args = (buffer_size, reinit_prob)
        #: the replay buffer (persistent only); without ``init`` made on the first batch
        self.buffer = ReplayBuffer(buffer_size, init, reinit_prob, self.generator) \
            if persistent and init is not None else None

    def negatives(self, batch: Tensor) -> tuple[Tensor, Tensor | None]:
        """Run the kernel from the buffer (or the batch); returns chains and buffer slots."""
        idx = None
        if self.persistent and self.buffer is None:
            size, reinit_prob = self._buffer_args
            self.buffer = ReplayBuffer(size, batch_range_init(batch), reinit_prob,
                                       self.generator)
        if self.buffer is not None:
            start, idx = self.buffer.sample(batch.shape[0], self.generator)
        else:
            start = batch.detach()
        gen = self.generator
        if start.device.type != "cpu":  # the noise is drawn on the chains' device
            gen = torch.Generator(device=start.device).manual_seed(
                int(torch.randint(2**62, (1,), generator=self.generator)))
        with torch.no_grad():
            state = self.kernel.init(start, self.kernel.params)
            noise = draw_noise([gen], self.k_steps, start.shape[0],
                               self.kernel.noise_size(state), start)
            state, _ = run_block(self.kernel, state, self.kernel.params, noise)
        if idx is not None:
            self.buffer.write(idx, state.x)
        return state.x.detach(), idx

    def forward(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        negatives, _ = self.negatives(batch)
        e_pos, e_neg = self.energy_model(batch), self.energy_model(negatives)
        gap = e_pos.mean() - e_neg.mean()
        self.last_energy_gap = float(gap.detach())
        if self.energy_reg:
            return gap + self.energy_reg * (e_pos.square().mean() + e_neg.square().mean()), \
                negatives
        return gap, negatives


def denoising_score_matching(energy_model: nn.Module, batch: Tensor, sigma: float,
                             generator: torch.Generator | None = None) -> Tensor:
    """Vincent (2011): with ``x~ = x + sigma eps`` and score ``s = -grad_x E(x~)``,
    ``loss = sigma^2 / 2 * mean |s + eps / sigma|^2`` (the ``sigma^2`` weighting)."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0; got {sigma!r}")
    if generator is None:  # a fresh seed; the global RNG is left alone
        generator = torch.Generator(device=batch.device).manual_seed(secrets.randbits(62))
    eps = torch.randn(batch.shape, generator=generator, device=batch.device, dtype=batch.dtype)
    noisy = (batch.detach() + sigma * eps).requires_grad_(True)
    (grad,) = torch.autograd.grad(energy_model(noisy).sum(), noisy, create_graph=True)
    residual = (eps / sigma - grad).reshape(batch.shape[0], -1)
    return 0.5 * sigma**2 * residual.square().sum(1).mean()
