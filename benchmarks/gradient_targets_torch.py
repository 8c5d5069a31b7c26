"""torch energies ``E(x) = -log p(x) + const`` of ``gradient_targets``: ``(C, d) -> (C,)``.

Each is a torch callable with a ``grad``: ``torch.func.grad`` of ``E(x).sum()`` (one
reverse pass serves all chains, as the library's autograd default does, but traceable:
``sample(..., compile=True)`` compiles ``torch.func`` transforms, not
``torch.autograd.grad``), except the Gaussian, whose ``grad`` is analytic (as a user
would write it). The data arrays are those of ``gradient_targets``, cast to the
sampling dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from gradient_targets import Target
from torch import Tensor
from torch.nn.functional import softplus

Energy = Callable[[Tensor], Tensor]


class _Gaussian:
    """``E = sum x^2 / (2 sigma^2)``; ``grad = x / sigma^2``."""

    def __init__(self, var: Tensor) -> None:
        self.prec = 1.0 / var

    def __call__(self, x: Tensor) -> Tensor:
        return 0.5 * (x * x * self.prec).sum(-1)

    def grad(self, x: Tensor) -> Tensor:
        return x * self.prec


def _banana(d: dict[str, Tensor]) -> Energy:
    c = float(d["curvature"])
    return lambda x: x[:, 0] ** 2 / 200.0 + 0.5 * (x[:, 1] - c * (x[:, 0] ** 2 - 100.0)) ** 2


def _rosenbrock(d: dict[str, Tensor]) -> Energy:
    q = float(d["q"])

    def energy(x: Tensor) -> Tensor:
        a, b = x.chunk(2, dim=-1)
        return 0.5 * ((a - 1.0) ** 2).sum(-1) + ((b - a * a) ** 2).sum(-1) / (2 * q)

    return energy


def _funnel(d: dict[str, Tensor]) -> Energy:
    s2 = float(d["sigma"]) ** 2

    def energy(x: Tensor) -> Tensor:
        theta, z = x[:, -1], x[:, :-1]
        return (theta**2 / (2 * s2) + 0.5 * z.shape[-1] * theta
                + 0.5 * torch.exp(-theta) * (z * z).sum(-1))

    return energy


def _brownian(d: dict[str, Tensor]) -> Energy:
    y, obs = d["y"], d["observed"]

    def energy(x: Tensor) -> Tensor:
        u_i, u_o, locs = x[:, 0], x[:, 1], x[:, 2:]
        prev = torch.cat([torch.zeros_like(locs[:, :1]), locs[:, :-1]], 1)
        innov = ((locs - prev) ** 2).sum(-1) * torch.exp(-2 * u_i) / 2 + locs.shape[1] * u_i
        lik = (obs * (y - locs) ** 2).sum(-1) * torch.exp(-2 * u_o) / 2 + obs.sum() * u_o
        return (u_i**2 + u_o**2) / 8.0 + innov + lik

    return energy


def _item_response(d: dict[str, Tensor]) -> Energy:
    s, q, y = d["student"], d["question"], d["y"]
    n_s = int(d["n_students"])

    def energy(x: Tensor) -> Tensor:
        mu, a, b = x[:, :1], x[:, 1:1 + n_s], x[:, 1 + n_s:]
        eta = mu + a[:, s] - b[:, q]
        loglik = (y * eta - softplus(eta)).sum(-1)
        return 0.5 * ((mu[:, 0] - 0.75) ** 2 + (a * a).sum(-1) + (b * b).sum(-1)) - loglik

    return energy


def _logreg(d: dict[str, Tensor]) -> Energy:
    xt, y = d["X"].T.contiguous(), d["y"]

    def energy(w: Tensor) -> Tensor:
        eta = w @ xt
        return 0.5 * (w * w).sum(-1) - (y * eta - softplus(eta)).sum(-1)

    return energy


def _stochvol(d: dict[str, Tensor]) -> Energy:
    r = d["returns"]

    def energy(x: Tensor) -> Tensor:
        s, u_s, u_n = x[:, :-2], x[:, -2], x[:, -1]
        sigma, nu = 0.02 * torch.exp(u_s), 10.0 * torch.exp(u_n)
        prev = torch.cat([torch.zeros_like(s[:, :1]), s[:, :-1]], 1)
        walk = s.shape[1] * torch.log(sigma) + ((s - prev) ** 2).sum(-1) / (2 * sigma**2)
        # -log StudentT(r; nu, 0, e^s), its normaliser included: nu is a parameter
        z = (0.5 * torch.log(nu) + 0.5 * math.log(math.pi) + torch.lgamma(0.5 * nu)
             - torch.lgamma(0.5 * (nu + 1)))
        t = (s + 0.5 * (nu[:, None] + 1) * torch.log1p((r * torch.exp(-s)) ** 2 / nu[:, None])
             ).sum(-1) + s.shape[1] * z
        return (torch.exp(u_s) - u_s) + (torch.exp(u_n) - u_n) + walk + t

    return energy


class _WithGrad:
    """``energy`` with ``grad = torch.func.grad(lambda x: energy(x).sum())``."""

    def __init__(self, energy: Energy) -> None:
        self.energy = energy
        self.grad = torch.func.grad(lambda x: energy(x).sum())

    def __call__(self, x: Tensor) -> Tensor:
        return self.energy(x)


BUILD: dict[str, Callable[[dict[str, Tensor]], Energy]] = {
    "banana": _banana, "gaussian_k1e2": lambda d: _Gaussian(d["var"]),
    "gaussian_k1e4": lambda d: _Gaussian(d["var"]), "rosenbrock36": _rosenbrock,
    "funnel10": _funnel, "brownian": _brownian, "item_response": _item_response,
    "logreg_breast_cancer": _logreg, "stochastic_volatility": _stochvol,
}


def energy(target: Target, dtype: torch.dtype = torch.float32) -> Energy:
    """The torch energy of ``target``, its data as tensors of ``dtype`` (indices int64)."""
    data = {k: torch.as_tensor(v) if np.issubdtype(np.asarray(v).dtype, np.integer)
            else torch.as_tensor(np.asarray(v), dtype=dtype) for k, v in target.data.items()}
    built = BUILD[target.name](data)
    return built if hasattr(built, "grad") else _WithGrad(built)
