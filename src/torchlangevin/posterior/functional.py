"""A network as a function of one flat weight vector, evaluated for many chains at once.

Chains are the leading dimension, as everywhere in torchlangevin: the weights of ``C`` chains
are one ``(C, P)`` matrix. ``torch.func.functional_call`` runs the user's module with weights
taken from a row, and ``torch.func.vmap`` runs all rows together. Models that vmap cannot take
(data-dependent control flow, in-place buffer updates, ``.item()``) fall back to a loop over
chains, chosen at the first call and reported.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

LossFn = Callable[[Tensor, tuple[Tensor, ...]], Tensor]


class FlatModel:
    """``model`` with its trainable parameters packed into one flat vector.

    ``per_sample(w, batch)`` returns ``loss_fn(model(batch[0]), batch)``: one loss per row,
    shape ``(B,)``, or per token, ``(B, T)``.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        self.model = model
        self.loss_fn = loss_fn
        named = [(n, p) for n, p in model.named_parameters()]
        if not named:
            raise ValueError("model: has no parameters to sample")
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.buffers = dict(model.named_buffers())
        # functional_call unties shared weights on every call unless told there are none
        self.tied = len(list(model.named_parameters(remove_duplicate=False))) != len(named)
        self.w0 = torch.cat([p.detach().reshape(-1) for _, p in named])
        self.vectorized: bool | None = None  # decided at the first batched call
        self.fallback_reason = ""
        self._vmapped = vmap(self.per_sample)
        self._vmapped_shared = vmap(self.per_sample, in_dims=(0, None))

    @property
    def n_params(self) -> int:
        return self.w0.numel()

    def unflatten(self, w: Tensor) -> dict[str, Tensor]:
        parts = w.split(self.sizes)
        return {n: t.view(s) for n, t, s in zip(self.names, parts, self.shapes, strict=True)}

    def flatten_masks(self, param_masks: dict[str, Tensor | None] | None) -> Tensor | None:
        """devinterp's ``param_masks``: parameters not named are frozen, ``None`` = all free."""
        if param_masks is None:
            return None
        unknown = sorted(set(param_masks) - set(self.names))
        if unknown:
            raise ValueError(f"param_masks: unknown parameter names {unknown}; "
                             f"the model has {self.names}")
        parts = []
        for name, shape in zip(self.names, self.shapes, strict=True):
            if name not in param_masks:
                parts.append(torch.zeros(shape))
            elif param_masks[name] is None:
                parts.append(torch.ones(shape))
            else:
                m = torch.as_tensor(param_masks[name])
                if m.shape != shape:
                    raise ValueError(f"param_masks[{name!r}]: shape {tuple(m.shape)} does not "
                                     f"match the parameter's {tuple(shape)}")
                parts.append(m.float())
        return torch.cat([p.reshape(-1) for p in parts]).to(self.w0)

    def per_sample(self, w: Tensor, batch: Sequence[Tensor]) -> Tensor:
        out = functional_call(self.model, {**self.unflatten(w), **self.buffers}, (batch[0],),
                              tie_weights=self.tied)
        return self.loss_fn(out, tuple(batch))

    def batched(self, W: Tensor, batch: Sequence[Tensor], shared: bool = False) -> Tensor:
        """Per-sample losses of every chain: ``(C, B, ...)``.

        ``batch`` holds one minibatch per chain (tensors ``(C, B, ...)``), or with
        ``shared=True`` one minibatch for all chains.
        """
        if self.vectorized is not False:
            try:
                fn = self._vmapped_shared if shared else self._vmapped
                out = fn(W, tuple(batch))
                self.vectorized = True
                return out
            except Exception as err:  # noqa: BLE001 - any vmap failure means: loop instead
                if self.vectorized:  # it worked before, so this is a real error
                    raise
                self.vectorized = False
                self.fallback_reason = f"{type(err).__name__}: {err}".splitlines()[0][:200]
                warnings.warn(
                    "posterior.sample: torch.func.vmap cannot run this model "
                    f"({self.fallback_reason}); running chains one after another instead",
                    stacklevel=3,
                )
        rows = [
            self.per_sample(W[c], batch if shared else tuple(b[c] for b in batch))
            for c in range(W.shape[0])
        ]
        return torch.stack(rows)

    def loss_and_grad(self, W: Tensor, batch: Sequence[Tensor],
                      rows: int | None = None) -> tuple[Tensor, Tensor]:
        """Per-sample losses ``(C, B, ...)`` and the gradient of each chain's mean loss over
        its first ``rows`` rows (all by default)."""
        Wr = W.detach().requires_grad_(True)
        with torch.enable_grad():
            per = self.batched(Wr, batch)
            used = per if rows is None else per[:, :rows]
            (grad,) = torch.autograd.grad(used.flatten(1).mean(1).sum(), Wr)
        return per.detach(), grad

    @torch.no_grad()
    def full_loss(self, w: Tensor, tensors: Sequence[Tensor], chunk: int = 4096) -> Tensor:
        """Per-sample losses of one weight vector over a whole dataset, in chunks."""
        n = tensors[0].shape[0]
        parts = [self.per_sample(w, [t[i:i + chunk] for t in tensors]) for i in range(0, n, chunk)]
        return torch.cat(parts)

    def hvp_power(self, w: Tensor, batch: Sequence[Tensor], scale: float,
                  generator: torch.Generator, iters: int = 50, rtol: float = 1e-3) -> float:
        """Largest eigenvalue of ``scale * Hessian`` of the mean loss, by power iteration
        (stopped once it changes by less than ``rtol`` relative)."""
        v = torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device)
        v /= v.norm()
        lam = 0.0
        for _ in range(iters):
            wr = w.detach().requires_grad_(True)
            with torch.enable_grad():
                loss = self.per_sample(wr, batch).mean()
                (g,) = torch.autograd.grad(loss, wr, create_graph=True)
                (hv,) = torch.autograd.grad(g @ v, wr)
            prev, lam = lam, float(v @ hv) * scale
            if abs(lam - prev) <= rtol * abs(lam):
                break
            norm = hv.norm()
            if not torch.isfinite(norm) or norm == 0:
                break
            v = hv / norm
        return lam


def check_per_sample(out: Tensor, batch_size: int) -> None:
    if out.ndim < 1 or out.shape[0] != batch_size:
        raise ValueError(
            f"loss_fn: must return one loss per row, shape ({batch_size},) or "
            f"({batch_size}, tokens); got shape {tuple(out.shape)}"
        )
