"""Stochastic-gradient MCMC updates for network weights: SGLD, RMSprop-SGLD and SGHMC.

One update rule, written once on plain tensors (:func:`sgmcmc_update_`), serves both the
``torch.optim`` optimizers below (one parameter tensor at a time) and the vectorised sampler
(all chains at once, parameters flattened to a ``(chain, param)`` matrix). With ``U`` the
tempered, localised potential

    grad U(w) = n_beta g + gamma (w - w0) + lambda w,     g = grad of the mean minibatch loss

the SGLD step is devinterp's (Lau et al. 2023):

    w <- w - (eps/2) M grad U(w) + sqrt(eps) sqrt(M) sigma xi,     xi ~ N(0, I)

then ``w`` is clamped to ``w0 +- bounding_box_size``. ``M = 1`` for SGLD; RMSprop-SGLD uses
``V <- alpha V + (1 - alpha) g^2`` (V starts at 0, no bias correction) and
``M = 1 / (sqrt(V) + eps_rms)``. A mask multiplies drift and noise, freezing masked entries.
SGHMC keeps a momentum ``v`` with friction ``a``:

    v <- (1 - a) v - (eps/2) grad U(w) + sqrt(a eps) sigma xi,     w <- w + v

which is exactly SGLD when ``a = 1``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

METHODS = ("sgld", "rmsprop_sgld", "sghmc")


@dataclass(frozen=True)
class Hyper:
    """Hyperparameters of one SG-MCMC update (names as in devinterp)."""

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

    def __post_init__(self) -> None:
        _positive("lr", self.lr)
        _positive("n_beta", self.n_beta)
        for name in ("localization", "weight_decay", "noise_level"):
            _non_negative(name, getattr(self, name))
        if self.bounding_box_size is not None:
            _positive("bounding_box_size", self.bounding_box_size)
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r}: expected one of {METHODS}")
        if not 0.0 <= self.alpha < 1.0:
            raise ValueError(f"alpha={self.alpha!r}: expected a decay in [0, 1)")
        _positive("eps", self.eps)
        if not 0.0 < self.friction <= 1.0:
            raise ValueError(f"friction={self.friction!r}: expected a value in (0, 1]")

    @property
    def needs_state(self) -> bool:
        return self.method != "sgld"


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and value > 0 and value == value):
        raise ValueError(f"{name}={value!r}: expected a positive number")


def _non_negative(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and value >= 0):
        raise ValueError(f"{name}={value!r}: expected a number >= 0")


@torch.no_grad()
def sgmcmc_update_(
    w: Tensor,
    grad: Tensor,
    noise: Tensor,
    w0: Tensor,
    hyper: Hyper,
    state: Tensor | None = None,
    mask: Tensor | None = None,
) -> None:
    """Apply one update in place. ``noise`` is standard normal and is overwritten.

    ``state`` is RMSprop's ``V`` or SGHMC's momentum (same shape as ``w``), updated in place.
    """
    h = hyper
    drift = grad.mul(h.n_beta)
    if h.localization:
        drift.add_(w - w0, alpha=h.localization)
    if h.weight_decay:
        drift.add_(w, alpha=h.weight_decay)
    noise.mul_(h.noise_level)
    if h.method == "rmsprop_sgld":
        state.mul_(h.alpha).addcmul_(grad, grad, value=1.0 - h.alpha)
        precond = state.sqrt().add_(h.eps).reciprocal_()
        drift.mul_(precond)
        noise.mul_(precond.sqrt_())
    if mask is not None:
        drift.mul_(mask)
        noise.mul_(mask)
    if h.method == "sghmc":
        state.mul_(1.0 - h.friction).add_(drift, alpha=-0.5 * h.lr)
        state.add_(noise, alpha=(h.friction * h.lr) ** 0.5)
        w.add_(state)
    else:
        w.add_(drift, alpha=-0.5 * h.lr).add_(noise, alpha=h.lr**0.5)
    if h.bounding_box_size is not None:
        torch.clamp_(w, min=w0 - h.bounding_box_size, max=w0 + h.bounding_box_size)


class _SGMCMC(torch.optim.Optimizer):
    """A ``torch.optim`` optimizer that samples instead of descending.

    Use it like SGD: ``loss.backward(); opt.step()``, where ``loss`` is the mean minibatch
    loss. The centre ``w0`` of localization and of the bounding box is the parameter value at
    construction. ``mask`` is one tensor (for a single parameter) or a list, one per parameter
    (``None`` entries leave that parameter unrestricted).
    """

    method = "sgld"

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 0.01,
        n_beta: float = 1.0,
        localization: float = 0.0,
        noise_level: float = 1.0,
        weight_decay: float = 0.0,
        bounding_box_size: float | None = None,
        mask: Tensor | list[Tensor | None] | None = None,
        **extra: float,
    ) -> None:
        hyper = Hyper(
            lr=lr, n_beta=n_beta, localization=localization, noise_level=noise_level,
            weight_decay=weight_decay, bounding_box_size=bounding_box_size,
            method=self.method, **extra,
        )
        super().__init__(params, {"hyper": hyper})
        params = [p for g in self.param_groups for p in g["params"]]
        masks = [mask] if isinstance(mask, Tensor) else list(mask or [None] * len(params))
        if len(masks) != len(params):
            raise ValueError(f"mask: got {len(masks)} masks for {len(params)} parameters")
        for p, m in zip(params, masks, strict=True):
            if m is not None and m.shape != p.shape:
                raise ValueError(
                    f"mask: shape {tuple(m.shape)} does not match parameter {tuple(p.shape)}"
                )
            self.state[p]["w0"] = p.detach().clone()
            self.state[p]["mask"] = None if m is None else m.to(p).detach()
            if hyper.needs_state:
                self.state[p]["buffer"] = torch.zeros_like(p)

    @torch.no_grad()
    def step(self, closure=None, generator: torch.Generator | None = None):  # type: ignore
        """One update of every parameter that has a gradient; noise from ``generator``."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                xi = torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype)
                sgmcmc_update_(p, p.grad, xi, st["w0"], group["hyper"], st.get("buffer"),
                               st["mask"])
        return loss


class SGLD(_SGMCMC):
    """SGLD with localization, weight decay and a bounding box (devinterp's ``sgld``)."""

    method = "sgld"


class RMSpropSGLD(_SGMCMC):
    """RMSprop-preconditioned SGLD (Li et al. 2016): extra arguments ``alpha=0.99, eps=0.1``."""

    method = "rmsprop_sgld"


class SGHMC(_SGMCMC):
    """Stochastic-gradient HMC with persistent momentum: extra argument ``friction=0.1``."""

    method = "sghmc"
