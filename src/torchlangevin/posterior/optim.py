"""SG-MCMC as ``torch.optim`` optimizers: SGLD, RMSprop-SGLD and SGHMC on one parameter at
a time, a second door onto the update :func:`~torchlangevin.kernels.sgmcmc.sgmcmc_update_`
that :func:`~torchlangevin.posterior.sample` runs over all chains at once (the update and
its formulas are documented there).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from ..kernels.sgmcmc import METHODS, Hyper, sgmcmc_update_

__all__ = ["SGLD", "RMSpropSGLD", "SGHMC", "Hyper", "METHODS", "sgmcmc_update_"]


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
