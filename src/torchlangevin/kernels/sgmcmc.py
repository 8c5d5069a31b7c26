"""Stochastic-gradient MCMC over stacked network weights: SGLD, RMSprop-SGLD and SGHMC.

The state is ``(chain, param)`` weights; each step takes its minibatch as an input. With
``U`` the tempered, localised potential

    grad U(w) = n_beta g + gamma (w - w0) + lambda w,     g = grad of the mean minibatch loss

the SGLD step is devinterp's (Lau et al. 2023), the Langevin update with ``eps = lr / 2``:

    w <- w - (eps/2) M grad U(w) + sqrt(eps) sqrt(M) sigma xi,     xi ~ N(0, I)

then ``w`` is clamped to ``w0 +- bounding_box_size``. ``M = 1`` for SGLD; RMSprop-SGLD uses
``V <- alpha V + (1 - alpha) g^2`` (V starts at 0, no bias correction) and
``M = 1 / (sqrt(V) + eps_rms)``. A mask multiplies drift and noise, freezing masked entries.
SGHMC keeps a momentum ``v`` with friction ``a``:

    v <- (1 - a) v - (eps/2) grad U(w) + sqrt(a eps) sigma xi,     w <- w + v

which is exactly SGLD when ``a = 1``. :func:`sgmcmc_update_` is the one update; the
``torch.optim`` optimizers of :mod:`torchlangevin.posterior` are a second door onto it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..util import non_negative, positive

METHODS = ("sgld", "rmsprop_sgld", "sghmc")


class _HyperFields(NamedTuple):
    lr: float
    n_beta: float = 1.0
    localization: float = 0.0
    noise_level: float = 1.0
    weight_decay: float = 0.0
    bounding_box_size: float | None = None
    method: str = "sgld"
    alpha: float = 0.99  # RMSprop decay
    eps: float = 0.1  # RMSprop damping
    friction: float = 0.1  # SGHMC


class Hyper(_HyperFields):
    """Hyperparameters of one SG-MCMC update (names as in devinterp), checked on creation."""

    __slots__ = ()

    def __new__(cls, lr: float, n_beta: float = 1.0, localization: float = 0.0,
                noise_level: float = 1.0, weight_decay: float = 0.0,
                bounding_box_size: float | None = None, method: str = "sgld",
                alpha: float = 0.99, eps: float = 0.1, friction: float = 0.1) -> Hyper:
        positive("lr", lr)
        positive("n_beta", n_beta)
        for name, value in (("localization", localization), ("weight_decay", weight_decay),
                            ("noise_level", noise_level)):
            non_negative(name, value)
        if bounding_box_size is not None:
            positive("bounding_box_size", bounding_box_size)
        if method not in METHODS:
            raise ValueError(f"method={method!r}: expected one of {METHODS}")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must be a decay in [0, 1); got {alpha!r}")
        positive("eps", eps)
        if not 0.0 < friction <= 1.0:
            raise ValueError(f"friction must be in (0, 1]; got {friction!r}")
        return super().__new__(cls, float(lr), float(n_beta), float(localization),
                               float(noise_level), float(weight_decay), bounding_box_size,
                               method, float(alpha), float(eps), float(friction))

    @property
    def needs_state(self) -> bool:
        """RMSprop's ``V`` and SGHMC's momentum are carried from step to step."""
        return self.method != "sgld"


@torch.no_grad()
def sgmcmc_update_(w: Tensor, grad: Tensor, noise: Tensor, w0: Tensor, hyper: Hyper,
                   state: Tensor | None = None, mask: Tensor | None = None) -> None:
    """Apply one update to ``w`` in place; ``noise`` (standard normal) is left as it is.

    ``state`` is RMSprop's ``V`` or SGHMC's momentum (same shape as ``w``), updated in place.
    One temporary the size of ``w`` (the drift; RMSprop a second, its preconditioner).
    """
    h = hyper
    if h.localization:
        drift = torch.sub(w, w0).mul_(h.localization).add_(grad, alpha=h.n_beta)
    else:
        drift = grad.mul(h.n_beta)
    if h.weight_decay:
        drift.add_(w, alpha=h.weight_decay)
    scale = None  # what multiplies the noise besides sigma: sqrt(M) and the mask
    if h.method == "rmsprop_sgld":
        state.mul_(h.alpha).addcmul_(grad, grad, value=1.0 - h.alpha)
        precond = state.sqrt().add_(h.eps).reciprocal_()
        drift.mul_(precond)
        scale = precond.sqrt_()
    if mask is not None:
        drift.mul_(mask)
        scale = mask if scale is None else scale.mul_(mask)
    target, sd = (state, (h.friction * h.lr) ** 0.5) if h.method == "sghmc" else (w, h.lr**0.5)
    if h.method == "sghmc":
        state.mul_(1.0 - h.friction)
    target.add_(drift, alpha=-0.5 * h.lr)
    if scale is None:
        target.add_(noise, alpha=sd * h.noise_level)
    else:
        target.addcmul_(noise, scale, value=sd * h.noise_level)
    if h.method == "sghmc":
        w.add_(state)
    if h.bounding_box_size is not None:
        torch.clamp_(w, min=w0 - h.bounding_box_size, max=w0 + h.bounding_box_size)


class SGState(NamedTuple):
    """Stacked weights ``x (C, P)``, the step count and the method's buffer (or ``None``)."""

    x: Tensor
    energy: None
    step: int | Tensor
    buffer: Tensor | None


class SGInfo(NamedTuple):
    """Per step, evaluated at the weights before the update: each chain's mean minibatch
    loss, the gradient's norm and the distance ``|w - w0|``."""

    loss: Tensor
    grad_norm: Tensor
    distance: Tensor


class SGMCMC:
    """SGLD / RMSprop-SGLD / SGHMC over stacked weights, with the minibatch as an input.

    Args:
        potential: an object with ``w0 (P,)`` and ``loss_and_grad(x, batch) ->
            (mean loss (C,), gradient (C, P))``: the loss of each chain's weights on its
            minibatch and the gradient of that mean.
        params: a :class:`Hyper`.
        mask: ``(P,)``: 1 where weights move, 0 where they stay at ``w0``.
    """

    name = "sgmcmc"
    has_accept_step = False
    couples_chains = False
    needs_batch = True
    compilable = False  # the potential runs the user's module: Python on every step
    Params = Hyper

    def __init__(self, potential: Any, params: Hyper, mask: Tensor | None = None) -> None:
        if not isinstance(params, Hyper):
            raise TypeError(f"params must be a Hyper; got {type(params).__name__}")
        self.energy, self.params, self.mask = potential, params, mask

    def init(self, x: Tensor, params: Hyper) -> SGState:
        buffer = torch.zeros_like(x) if params.needs_state else None
        return SGState(x.detach().clone(), None, 0, buffer)

    def noise_size(self, state: SGState) -> int:
        return state.x.shape[1]

    def step(self, state: SGState, noise: Tensor, params: Hyper, batch: Any = None
             ) -> tuple[SGState, SGInfo]:
        w0 = self.energy.w0
        loss, grad = self.energy.loss_and_grad(state.x, batch)
        info = SGInfo(loss, grad.norm(dim=1), (state.x - w0).norm(dim=1))
        w = state.x.clone()
        buffer = None if state.buffer is None else state.buffer.clone()
        sgmcmc_update_(w, grad, noise, w0, params, buffer, self.mask)
        return SGState(w, None, state.step + 1, buffer), info


__all__ = ["Hyper", "METHODS", "SGMCMC", "SGInfo", "SGState", "sgmcmc_update_"]
