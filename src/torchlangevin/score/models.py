"""Noise-conditional score models ``s(x, sigma) ~ grad_x log q_sigma(x)``, the noise ladder,
and the exact score of a Gaussian mixture blurred by noise (for checks)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..energy import check_states
from ..util import integer, positive

__all__ = ["ScoreMLP", "NoiseConditionalEnergy", "noise_ladder", "geometric_sigmas",
           "MixtureScore"]


def geometric_sigmas(sigma_max: float, sigma_min: float, n_levels: int) -> Tensor:
    """``sigma_i = sigma_max (sigma_min / sigma_max)^((i-1)/(L-1))``, ``i = 1..L``,
    largest first (NCSN's ladder, Song & Ermon 2019)."""
    sigma_max, sigma_min = positive("sigma_max", sigma_max), positive("sigma_min", sigma_min)
    n_levels = integer("n_levels", n_levels, 2)
    if not sigma_max > sigma_min:
        raise ValueError(f"sigma_max must exceed sigma_min; got {sigma_max} <= {sigma_min}")
    return torch.logspace(math.log10(sigma_max), math.log10(sigma_min), n_levels,
                          dtype=torch.float64)


def noise_ladder(data: Tensor, n_levels: int = 10, sigma_min: float = 0.01,
                 max_points: int = 2000) -> Tensor:
    """:func:`geometric_sigmas` from the largest pairwise distance of ``data`` (its first
    ``max_points`` rows), so the widest noise covers the whole set (Song & Ermon 2020,
    technique 1), down to ``sigma_min``."""
    data = check_states("data", data, rows="rows", min_rows=2, min_ndim=2)
    flat = data[:max_points].reshape(min(len(data), max_points), -1).double()
    return geometric_sigmas(float(torch.pdist(flat).max()), sigma_min, n_levels)


class ScoreMLP(nn.Module):
    """``s(x, sigma) = f(c x, log sigma) / sigma`` with ``c = 1 / sqrt(sigma^2 + d^2)``
    (``d = data_std``): an MLP on the flattened state scaled to unit size at every level
    (Karras et al. 2022's input scaling), each hidden layer shifted by a linear map of
    Fourier features of ``log sigma``; dividing by ``sigma`` gives the score its
    ``1/sigma`` scale (Song & Ermon 2020, technique 3), so ``f`` stays of order one.

    Args:
        event_shape: the shape of one state, e.g. ``(2,)`` or ``(1, 8, 8)``.
        width: hidden units per layer.
        depth: hidden layers (SiLU).
        data_std: the data's standard deviation per coordinate (its overall scale).
        n_frequencies: Fourier features ``sin, cos(2^k log sigma / 4)``,
            ``k < n_frequencies``, and ``log sigma`` itself.
        n_input_frequencies: Fourier features of the scaled state too,
            ``sin, cos(pi 2^k c x_j)``, ``k < n_input_frequencies``, next to ``c x``
            (Tancik et al. 2020): an MLP on raw coordinates learns fine structure slowly
            (its spectral bias), and low-dimensional data with sharp edges need it.
    """

    def __init__(self, event_shape: Sequence[int] | int = (2,), width: int = 128,
                 depth: int = 3, data_std: float = 1.0, n_frequencies: int = 4,
                 n_input_frequencies: int = 0) -> None:
        super().__init__()
        self.event_shape = (event_shape,) if isinstance(event_shape, int) \
            else tuple(event_shape)
        dim = math.prod(self.event_shape)
        width, depth = integer("width", width, 1), integer("depth", depth, 1)
        self.data_std = positive("data_std", data_std)
        self.register_buffer("frequencies", 2.0 ** torch.arange(
            integer("n_frequencies", n_frequencies, 1), dtype=torch.float32) / 4)
        n_embed = 1 + 2 * n_frequencies
        n_in = integer("n_input_frequencies", n_input_frequencies, 0)
        self.register_buffer("input_frequencies", math.pi * 2.0 ** torch.arange(
            n_in, dtype=torch.float32))
        self.layers = nn.ModuleList(
            nn.Linear(dim * (1 + 2 * n_in) if i == 0 else width, width) for i in range(depth))
        self.embed = nn.ModuleList(nn.Linear(n_embed, 2 * width) for _ in range(depth))
        self.out = nn.Linear(width, dim)

    def _hidden(self, x: Tensor, sigma: float | Tensor) -> tuple[Tensor, Tensor]:
        """The last hidden layer ``(C, width)`` and ``sigma`` as a ``(C, 1)`` column."""
        c = x.shape[0]
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1)
        sigma = sigma.expand(c, 1)
        log_s = sigma.log()
        angles = log_s * self.frequencies.to(x.dtype)
        emb = torch.cat([log_s, angles.sin(), angles.cos()], 1)
        h = x.reshape(c, -1) * torch.rsqrt(sigma.square() + self.data_std**2)
        if len(self.input_frequencies):
            a = (h[:, :, None] * self.input_frequencies.to(x.dtype)).reshape(c, -1)
            h = torch.cat([h, a.sin(), a.cos()], 1)
        for layer, embed in zip(self.layers, self.embed, strict=True):
            scale, shift = embed(emb).chunk(2, dim=1)
            h = nn.functional.silu(layer(h) * (1 + scale) + shift)
        return h, sigma

    def forward(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """The score at ``x (C, *event)`` for noise ``sigma`` (a float or ``(C,)``)."""
        h, sigma = self._hidden(x, sigma)
        return (self.out(h) / sigma).reshape(x.shape)


class NoiseConditionalEnergy(ScoreMLP):
    """A noise-conditional energy-based model: ``E(x, sigma) = g(c x, log sigma) / sigma``
    with the trunk of :class:`ScoreMLP` and a scalar head ``g``; the density at each level
    is ``p_sigma(x) ~ exp(-E(x, sigma))`` and ``model(x, sigma)`` is its score
    ``-grad_x E`` (by autograd, differentiable while gradients are enabled), so
    :func:`~torchlangevin.score.fit_score` trains it by denoising score matching
    (Salimans & Ho 2021's energy-parameterised score) and every score sampler runs on it.
    Having an energy, each level can be sampled exactly, by MALA
    (:func:`~torchlangevin.score.annealed_mala`): ``exp(-E(x, sigma_min))`` is the learned
    density, reached by annealing down the ladder instead of by a long chain on one
    rugged landscape. Arguments as :class:`ScoreMLP`'s."""

    def __init__(self, event_shape: Sequence[int] | int = (2,), width: int = 128,
                 depth: int = 3, data_std: float = 1.0, n_frequencies: int = 4,
                 n_input_frequencies: int = 0) -> None:
        super().__init__(event_shape, width, depth, data_std, n_frequencies,
                         n_input_frequencies)
        self.out = nn.Linear(self.out.in_features, 1)

    def energy(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """``E(x, sigma)``, ``(C,)``."""
        h, sigma = self._hidden(x, sigma)
        return (self.out(h) / sigma).squeeze(1)

    def forward(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """The score ``-grad_x E(x, sigma)``; a graph is kept for the parameters' gradients
        only while gradients are enabled (training), else the result is detached."""
        keep = torch.is_grad_enabled()
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.energy(xg, sigma).sum(), xg, create_graph=keep)
        return -grad if keep else -grad.detach()


class MixtureScore:
    """The exact score of ``q_sigma = sum_k w_k N(mu_k, (std^2 + sigma^2) I)``: a mixture of
    isotropic Gaussians convolved with ``N(0, sigma^2 I)`` (every component widens by
    ``sigma^2``)::

        grad log q_sigma(x) = sum_k r_k(x) (mu_k - x) / (std^2 + sigma^2),

    ``r_k`` the components' posterior weights; :meth:`energy` is ``-log q_sigma``.
    ``sample(n, generator)`` draws exactly."""

    def __init__(self, means: Tensor, weights: Tensor, std: float) -> None:
        self.means = torch.as_tensor(means, dtype=torch.float64)
        w = torch.as_tensor(weights, dtype=torch.float64)
        if self.means.ndim != 2 or w.shape != self.means.shape[:1] or not bool((w > 0).all()):
            raise ValueError(f"means must be (K, d) and weights (K,) positive; got "
                             f"{tuple(self.means.shape)} and {tuple(w.shape)}")
        self.weights = w / w.sum()
        self.std = positive("std", std)

    def __call__(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        var = self.std**2 + torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1) ** 2
        xd = x.double()
        d2 = torch.cdist(xd, self.means).square()
        resp = torch.softmax(self.weights.log() - d2 / (2 * var), dim=1)
        return ((resp @ self.means - xd) / var).to(x.dtype)

    def energy(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """``-log q_sigma(x)`` up to a constant in ``x``, ``(C,)``: the mixture's energy at
        noise ``sigma`` (for :func:`~torchlangevin.score.annealed_mala`)."""
        var = self.std**2 + torch.as_tensor(sigma, dtype=torch.float64).reshape(-1) ** 2
        d2 = torch.cdist(x.double(), self.means).square()
        log_q = torch.logsumexp(self.weights.log() - d2 / (2 * var[:, None]), dim=1) \
            - 0.5 * x[0].numel() * var.log()
        return (-log_q).to(x.dtype)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        return (self.means[k] + self.std * torch.randn(n, self.means.shape[1],
                generator=generator, dtype=torch.float64)).float()

    def component(self, x: Tensor) -> Tensor:
        """The nearest mean's index of each point (for counting mass per component)."""
        return torch.cdist(x.double(), self.means).argmin(1)
