"""Analytic targets ``p(x) = exp(-E(x)) / Z`` with closed-form energy and gradient.

Every distribution is an energy (call it on ``(C, *event)``, get ``(C,)``) with
``grad``, ``energy_and_grad``, ``log_prob`` (normalised: ``log_normalizer = log Z``),
``support`` (a ``Box`` or ``None``) and ``sample(n, generator)`` for exact draws.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .energy import Box
from .util import integer

__all__ = ["Distribution", "Gaussian", "GaussianMixture", "DoubleWell", "Rosenbrock", "Funnel",
           "Ring", "Quartic1D"]

_LOG_2PI = math.log(2 * math.pi)


class Distribution:
    """Base class. Subclasses set ``event_shape`` and ``log_normalizer`` and implement
    ``energy_and_grad`` (and, where cheaper, ``energy`` and ``grad``) and ``_sample``."""

    event_shape: tuple[int, ...] = ()
    support: Box | None = None
    log_normalizer: float = 0.0

    def __call__(self, x: Tensor) -> Tensor:
        return self.energy(x)

    def energy(self, x: Tensor) -> Tensor:
        """``E(x)``, shape ``(C,)``."""
        return self.energy_and_grad(x)[0]

    def grad(self, x: Tensor) -> Tensor:
        """``grad E(x)``, shape of ``x``."""
        return self.energy_and_grad(x)[1]

    def energy_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x) = -E(x) - log Z`` (``-inf`` outside the support)."""
        lp = -self.energy(x) - self.log_normalizer
        if self.support is not None:
            lp = lp.masked_fill(~self.support.contains(x), -math.inf)
        return lp

    def sample(self, n: int, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float32) -> Tensor:
        """``n`` exact independent draws, shape ``(n, *event_shape)``, on the generator's device."""
        n = integer("n", n, 1)
        if generator is None:  # a fresh seed; the global RNG is left alone
            generator = torch.Generator().manual_seed(secrets.randbits(62))
        return self._sample(n, generator).to(dtype)

    def _sample(self, n: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no exact sampler")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(event_shape={self.event_shape})"


def _normal(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float64, device=generator.device)


def _uniform(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return torch.rand(shape, generator=generator, dtype=torch.float64, device=generator.device)


class _Params:
    """Tensor parameters cast once per (device, dtype) and cached."""

    def __init__(self, **tensors: Tensor) -> None:
        self._master = {k: v.to(torch.float64) for k, v in tensors.items()}
        self._cache: dict[tuple, dict[str, Tensor]] = {}

    def on(self, x: Tensor) -> dict[str, Tensor]:
        key = (x.device, x.dtype)
        if key not in self._cache:
            self._cache[key] = {k: v.to(x.device, x.dtype) for k, v in self._master.items()}
        return self._cache[key]

    def __getitem__(self, name: str) -> Tensor:
        return self._master[name]


class _Grid1D:
    """Exact 1-D draws by inverse CDF on a fine grid (trapezoid CDF, linear interpolation)."""

    def __init__(self, log_density, low: float, high: float, n_grid: int = 2**16 + 1) -> None:
        xs = np.linspace(low, high, n_grid)
        lp = log_density(xs)
        dens = np.exp(lp - lp.max())
        cdf = np.concatenate([[0.0], np.cumsum((dens[1:] + dens[:-1]) / 2 * np.diff(xs))])
        self.log_mass = math.log(cdf[-1]) + float(lp.max())  # log of the integral
        self.xs, self.cdf = xs, cdf / cdf[-1]

    def __call__(self, u: Tensor) -> Tensor:
        return torch.from_numpy(np.interp(u.cpu().numpy(), self.cdf, self.xs)).to(u.device)


def _vector(name: str, value, dim: int | None = None) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite; got {value!r}")
    return t


class Gaussian(Distribution):
    """``N(mean, cov)``: ``E(x) = (x - mean)^T cov^{-1} (x - mean) / 2``.

    ``cov`` may be a scalar (isotropic), a vector (diagonal) or a ``(d, d)`` matrix;
    diagonal covariances use elementwise maths throughout.
    """

    def __init__(self, mean, cov=1.0) -> None:
        mean_t = _vector("mean", mean)
        if mean_t.ndim != 1:
            raise ValueError(f"mean must be a vector of shape (d,); "
                             f"got shape {tuple(mean_t.shape)}")
        d = mean_t.shape[0]
        cov_t = _vector("cov", cov)
        if cov_t.ndim == 2 and torch.equal(cov_t, torch.diag(torch.diagonal(cov_t))):
            cov_t = torch.diagonal(cov_t).clone()
        if cov_t.ndim <= 1:
            var = cov_t.expand(d).clone()
            if not bool((var > 0).all()):
                raise ValueError(f"cov must be positive; got {cov!r}")
            self.diagonal = True
            self._p = _Params(mean=mean_t, precision=1 / var, chol=var.sqrt())
            logdet = float(var.log().sum())
        elif cov_t.shape == (d, d):
            chol, info = torch.linalg.cholesky_ex(cov_t)
            if int(info) != 0 or not torch.allclose(cov_t, cov_t.T):
                raise ValueError("cov must be symmetric positive definite")
            self.diagonal = False
            self._p = _Params(mean=mean_t, precision=torch.cholesky_inverse(chol), chol=chol)
            logdet = 2 * float(torch.diagonal(chol).log().sum())
        else:
            raise ValueError(f"cov must be a scalar, a (d,) vector or a (d, d) matrix with "
                             f"d = {d}; got shape {tuple(cov_t.shape)}")
        self.event_shape = (d,)
        self._zero_mean = bool((mean_t == 0).all())
        self.log_normalizer = 0.5 * (d * _LOG_2PI + logdet)

    @property
    def mean(self) -> Tensor:
        return self._p["mean"]

    @property
    def cov(self) -> Tensor:
        c = self._p["chol"]
        return torch.diag(c * c) if self.diagonal else c @ c.T

    def energy_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        p = self._p.on(x)
        diff = x if self._zero_mean else x - p["mean"]
        g = diff * p["precision"] if self.diagonal else diff @ p["precision"]
        return 0.5 * (diff * g).sum(-1), g

    def grad(self, x: Tensor) -> Tensor:
        p = self._p.on(x)
        diff = x if self._zero_mean else x - p["mean"]
        return diff * p["precision"] if self.diagonal else diff @ p["precision"]

    def _sample(self, n, generator):
        z = _normal((n, *self.event_shape), generator)
        p = self._p.on(z)
        return p["mean"] + (z * p["chol"] if self.diagonal else z @ p["chol"].T)


class GaussianMixture(Distribution):
    """``p(x) = sum_k w_k N(x; mu_k, s_k^2 I)``, normalised (``log Z = 0``).

    ``grad E(x) = sum_k r_k(x) (x - mu_k) / s_k^2`` with responsibilities ``r = softmax``.
    """

    def __init__(self, means, scales=1.0, weights=None) -> None:
        mu = _vector("means", means)
        if mu.ndim != 2:
            raise ValueError(f"means must have shape (K, d); got {tuple(mu.shape)}")
        k, d = mu.shape
        s = _vector("scales", scales).expand(k).clone()
        if not bool((s > 0).all()):
            raise ValueError(f"scales must be positive; got {scales!r}")
        w = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None \
            else _vector("weights", weights)
        if w.shape != (k,) or not bool((w >= 0).all()) or float(w.sum()) <= 0:
            raise ValueError(f"weights must be {k} non-negative numbers with a positive sum; "
                             f"got {weights!r}")
        w = w / w.sum()
        self.means, self.scales, self.weights = mu, s, w
        self.event_shape = (d,)
        log_coef = torch.log(w) - d * torch.log(s) - 0.5 * d * _LOG_2PI
        self._p = _Params(means=mu, inv_var=1 / s**2, log_coef=log_coef)

    def energy_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        p = self._p.on(x)
        diff = x.unsqueeze(1) - p["means"]                        # (C, K, d)
        logits = p["log_coef"] - 0.5 * (diff * diff).sum(-1) * p["inv_var"]
        energy = -torch.logsumexp(logits, dim=1)
        r = torch.softmax(logits, dim=1) * p["inv_var"]            # (C, K)
        return energy, torch.einsum("ck,ckd->cd", r, diff)

    def _sample(self, n, generator):
        comp = torch.multinomial(self.weights.to(generator.device), n, replacement=True,
                                 generator=generator)
        z = _normal((n, self.event_shape[0]), generator)
        return self.means.to(z.device)[comp] + z * self.scales.to(z.device)[comp, None]


class DoubleWell(Distribution):
    """``E(x) = h * sum_i (x_i^2 - 1)^2``, a well at ``x_i = +-1`` in each coordinate.

    Separable, so ``Z = z1^dim`` with ``z1`` a 1-D integral (computed once by quadrature)
    and exact draws coordinate by coordinate.
    """

    def __init__(self, dim: int = 2, barrier_height: float = 2.0) -> None:
        dim = integer("dim", dim, 1)
        if not barrier_height > 0:
            raise ValueError(f"barrier_height must be > 0; got {barrier_height!r}")
        self.dim, self.barrier_height = dim, float(barrier_height)
        self.event_shape = (dim,)
        h = self.barrier_height
        reach = 1 + math.sqrt(40 / h)  # exp(-h (x^2-1)^2) < e^-40 beyond
        self._grid = _Grid1D(lambda t: -h * (t * t - 1) ** 2, -reach, reach)
        self.log_normalizer = dim * self._grid.log_mass

    def energy(self, x: Tensor) -> Tensor:
        u = x * x - 1
        return self.barrier_height * (u * u).sum(-1)

    def grad(self, x: Tensor) -> Tensor:
        return (x * x - 1).mul_(x).mul_(4 * self.barrier_height)

    def energy_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        u = x * x - 1
        return self.barrier_height * (u * u).sum(-1), (u * x).mul_(4 * self.barrier_height)

    def _sample(self, n, generator):
        return self._grid(_uniform((n, self.dim), generator))


class Rosenbrock(Distribution):
    """Banana: ``E(x) = (a - x_1)^2 + b * sum_{i>=2} (x_i - x_{i-1}^2)^2``.

    For ``dim = 2`` this is the classic Rosenbrock function. It is a chain of Gaussians
    (``x_1 ~ N(a, 1/2)``, ``x_i | x_{i-1} ~ N(x_{i-1}^2, 1/(2b))``), so
    ``Z = sqrt(pi) * (pi/b)^((dim-1)/2)`` and exact draws are direct.
    """

    def __init__(self, a: float = 1.0, b: float = 100.0, dim: int = 2) -> None:
        dim = integer("dim", dim, 2)
        if not b > 0:
            raise ValueError(f"b must be > 0; got {b!r}")
        self.a, self.b, self.dim = float(a), float(b), dim
        self.event_shape = (dim,)
        self.log_normalizer = 0.5 * math.log(math.pi) + 0.5 * (dim - 1) * math.log(math.pi / b)

    def energy_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        head, prev = x[:, 0], x[:, :-1]
        r = x[:, 1:] - prev * prev
        energy = (self.a - head) ** 2 + self.b * (r * r).sum(-1)
        g = torch.zeros_like(x)
        g[:, 0] = 2 * (head - self.a)
        g[:, 1:] += 2 * self.b * r
        g[:, :-1] -= 4 * self.b * prev * r
        return energy, g

    def _sample(self, n, generator):
        z = _normal((n, self.dim), generator)
        out = torch.empty_like(z)
        out[:, 0] = self.a + z[:, 0] / math.sqrt(2)
        for i in range(1, self.dim):
            out[:, i] = out[:, i - 1] ** 2 + z[:, i] / math.sqrt(2 * self.b)
        return out


class Funnel(Distribution):
    """Neal's funnel: ``v ~ N(0, scale^2)``, ``x_i | v ~ N(0, e^v)`` for ``i = 1..dim-1``.

    ``E = v^2 / (2 scale^2) + e^{-v} |x|^2 / 2 + (dim - 1) v / 2``; ``x[:, 0]`` is ``v``.
    """

    def __init__(self, dim: int = 10, scale: float = 3.0) -> None:
        dim = integer("dim", dim, 2)
        if not scale > 0:
            raise ValueError(f"scale must be > 0; got {scale!r}")
        self.dim, self.scale = dim, float(scale)
        self.event_shape = (dim,)
        self.log_normalizer = 0.5 * math.log(2 * math.pi * scale**2) + 0.5 * (dim - 1) * _LOG_2PI

    def energy_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # whole rows with v masked out, no slices: fewer ops, and full-width compiled loops
        v = x[:, :1]
        first = torch.arange(self.dim, device=x.device) == 0
        z = torch.where(first, 0.0, x)
        inv = torch.exp(-v)
        sq = (z * z).sum(-1, keepdim=True)
        energy = v * v / (2 * self.scale**2) + 0.5 * inv * sq + 0.5 * (self.dim - 1) * v
        g = torch.where(first, v / self.scale**2 - 0.5 * inv * sq + 0.5 * (self.dim - 1),
                        z * inv)
        return energy.squeeze(1), g

    def _sample(self, n, generator):
        z = _normal((n, self.dim), generator)
        v = self.scale * z[:, :1]
        return torch.cat([v, z[:, 1:] * torch.exp(v / 2)], dim=1)


class Ring(Distribution):
    """A 2-D ring: ``E(x) = (|x| - radius)^2 / (2 width^2)``.

    ``Z = 2 pi [w^2 e^{-r^2/2w^2} + r w sqrt(pi/2) (1 + erf(r / (w sqrt 2)))]``; exact
    draws: uniform angle, radius by inverse CDF of ``rho exp(-(rho - r)^2 / 2w^2)``.
    """

    def __init__(self, radius: float = 2.0, width: float = 0.2) -> None:
        if not radius > 0 or not width > 0:
            raise ValueError(f"radius and width must be > 0; got radius={radius!r}, "
                             f"width={width!r}")
        self.radius, self.width = float(radius), float(width)
        self.event_shape = (2,)
        r, w = self.radius, self.width
        radial = w * w * math.exp(-r * r / (2 * w * w)) + r * w * math.sqrt(math.pi / 2) * (
            1 + math.erf(r / (w * math.sqrt(2))))
        self.log_normalizer = math.log(2 * math.pi * radial)
        self._radius = _Grid1D(
            lambda t: np.log(np.maximum(t, 1e-300)) - (t - r) ** 2 / (2 * w * w),
            0.0, r + 12 * w)

    def energy_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        rho = torch.linalg.vector_norm(x, dim=-1)
        dev = (rho - self.radius) / self.width**2
        energy = 0.5 * dev * (rho - self.radius)
        g = x * (dev / rho.clamp_min(torch.finfo(x.dtype).tiny)).unsqueeze(-1)
        return energy, g

    def _sample(self, n, generator):
        rho = self._radius(_uniform((n,), generator))
        theta = 2 * math.pi * _uniform((n,), generator)
        return torch.stack([rho * torch.cos(theta), rho * torch.sin(theta)], dim=-1)


class Quartic1D(Distribution):
    """Seed 001's target on ``[-0.7, 1.5]``: ``p(x) ∝ (x - 0.4)^4 - (x - 0.2)^2 + 0.6``.

    ``E = -log p_hat``, ``grad E = -p_hat' / p_hat`` with ``p_hat' = 4 (x-0.4)^3 - 2 (x-0.2)``.
    ``Z = [(x-0.4)^5/5 - (x-0.2)^3/3 + 0.6x]`` from -0.7 to 1.5 ``= 0.98887...``
    Event shape ``(1,)``; support ``Box(-0.7, 1.5)``.
    """

    low, high = -0.7, 1.5

    def __init__(self) -> None:
        self.event_shape = (1,)
        self.support = Box([self.low], [self.high])

        def antiderivative(t: float) -> float:
            return (t - 0.4) ** 5 / 5 - (t - 0.2) ** 3 / 3 + 0.6 * t

        self.normalizer = antiderivative(self.high) - antiderivative(self.low)
        self.log_normalizer = math.log(self.normalizer)
        self._grid = _Grid1D(lambda t: np.log(self.unnormalized(t)), self.low, self.high)

    @staticmethod
    def unnormalized(x: Any) -> Any:
        """``p_hat(x) = (x - 0.4)^4 - (x - 0.2)^2 + 0.6`` (tensor or array)."""
        return (x - 0.4) ** 4 - (x - 0.2) ** 2 + 0.6

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """Exact CDF (closed form), for binned comparisons."""
        x = np.clip(np.asarray(x, dtype=np.float64), self.low, self.high)
        f = (x - 0.4) ** 5 / 5 - (x - 0.2) ** 3 / 3 + 0.6 * x
        f0 = (self.low - 0.4) ** 5 / 5 - (self.low - 0.2) ** 3 / 3 + 0.6 * self.low
        return (f - f0) / self.normalizer

    def energy_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, b = x - 0.4, x - 0.2
        p = a**4 - b * b + 0.6
        dp = 4 * a**3 - 2 * b
        return -torch.log(p[:, 0]), -dp / p

    def energy(self, x: Tensor) -> Tensor:
        return -torch.log(self.unnormalized(x[:, 0]))

    def _sample(self, n, generator):
        return self._grid(_uniform((n,), generator)).unsqueeze(-1)
