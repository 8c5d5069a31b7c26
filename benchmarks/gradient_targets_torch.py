"""torch energies ``E(x) = -log p(x) + const`` of ``gradient_targets``: ``(C, d) -> (C,)``.

Each is a torch callable with a ``grad``: ``torch.func.grad`` of ``E(x).sum()`` (one
reverse pass serves all chains, as the library's autograd default does, but traceable:
``sample(..., compile=True)`` compiles ``torch.func`` transforms, not
``torch.autograd.grad``), except the Gaussian and the item response model, whose
gradients are analytic (as a user would write them). The data arrays are those of
``gradient_targets``, cast to the sampling dtype.
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


class _ItemResponse:
    """1PL IRT, ``eta_k = mu + a_{s_k} - b_{q_k}`` over the observed pairs ``k``:
    ``E = ((mu - 0.75)^2 + |a|^2 + |b|^2) / 2 - sum_k (y_k eta_k - softplus(eta_k))``, with
    the analytic gradient ``r_k = sigmoid(eta_k) - y_k`` summed per student (``+``) and per
    question (``-``) by ``index_add`` (autograd through the two gathers is ~5x slower on
    CPU: its backward sorts the indices)."""

    def __init__(self, d: dict[str, Tensor]) -> None:
        self.s, self.q, self.y = d["student"], d["question"], d["y"]
        self.n_s = int(d["n_students"])
        self.n_q = int(self.q.max()) + 1
        self.y_s = self.y.new_zeros(self.n_s).index_add_(0, self.s, self.y)
        self.y_q = self.y.new_zeros(self.n_q).index_add_(0, self.q, self.y)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        mu, a, b = x[:, :1], x[:, 1:1 + self.n_s], x[:, 1 + self.n_s:]
        eta = (mu + a.index_select(1, self.s)).sub_(b.index_select(1, self.q))
        return mu, a, b, eta

    def _energy(self, mu: Tensor, a: Tensor, b: Tensor, eta: Tensor) -> Tensor:
        linear = mu[:, 0] * self.y.sum() + a @ self.y_s - b @ self.y_q  # sum_k y_k eta_k
        prior = 0.5 * ((mu[:, 0] - 0.75) ** 2 + (a * a).sum(-1) + (b * b).sum(-1))
        return prior - linear + softplus(eta).sum(-1)

    def __call__(self, x: Tensor) -> Tensor:
        return self._energy(*self._split(x))

    def energy_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, a, b, eta = self._split(x)
        sig = torch.sigmoid(eta)
        r_a = torch.zeros_like(a).index_add_(1, self.s, sig) - self.y_s
        r_b = torch.zeros_like(b).index_add_(1, self.q, sig) - self.y_q
        g_mu = mu - 0.75 + r_a.sum(1, keepdim=True)
        return self._energy(mu, a, b, eta), torch.cat([g_mu, a + r_a, b - r_b], 1)

    def grad(self, x: Tensor) -> Tensor:
        return self.energy_and_grad(x)[1]


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
    "funnel10": _funnel, "brownian": _brownian, "item_response": _ItemResponse,
    "logreg_breast_cancer": _logreg, "stochastic_volatility": _stochvol,
}


def energy(target: Target, dtype: torch.dtype = torch.float32) -> Energy:
    """The torch energy of ``target``, its data as tensors of ``dtype`` (indices int64)."""
    data = {k: torch.as_tensor(v) if np.issubdtype(np.asarray(v).dtype, np.integer)
            else torch.as_tensor(np.asarray(v), dtype=dtype) for k, v in target.data.items()}
    built = BUILD[target.name](data)
    return built if hasattr(built, "grad") else _WithGrad(built)
