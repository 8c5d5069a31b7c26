"""A network as a function of one flat weight vector, evaluated for many chains at once.

Chains are the leading dimension, as everywhere in torchlangevin: the weights of ``C`` chains
are one ``(C, P)`` matrix. ``torch.func.functional_call`` runs the user's module with weights
taken from a row, and ``torch.func.vmap`` runs all rows together. With ``param_masks`` only the
parameters a restriction touches are in the vector (``P`` is the restricted count); the others
are shared by every chain, as constants. Models that vmap cannot take (data-dependent control
flow, in-place buffer updates, ``.item()``) fall back to a loop over chains, chosen at the first
call and reported; an operator vmap runs through its own per-chain loop is reported too.

Attention runs on its differentiable path: PyTorch's inference-only fast path for
``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer`` is picked whenever the weights do
not require grad (inside vmap they report that they do not), and the fused CPU
``scaled_dot_product_attention`` kernels have neither a vmap rule nor a double backward; the
fast path is switched off and SDPA uses its math backend around every vmapped call and the
double backward of the Hessian-vector products.

Memory: a vmapped call keeps the activations of all its chains for the backward pass, so a
gradient over ``C`` chains at once costs ``C`` times one chain's. ``loss_and_grad`` runs the
chains in chunks of ``chains_per_call``; chosen automatically, it is the most chains whose
saved activations fit in ``activation_budget`` bytes, measured at the first call (the bytes
autograd saves for one chain, per row). A chunk of one chain calls the model directly, with
no vmap and PyTorch's own attention kernels (one backward needs no math backend).
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from ..util import integer, positive

LossFn = Callable[[Tensor, tuple[Tensor, ...]], Tensor]

#: default bytes of saved activations one gradient call may hold (see the module notes)
DEFAULT_ACTIVATION_BUDGET = 64 * 2**20


@contextlib.contextmanager
def no_attention_fastpath() -> Iterator[None]:
    """``nn.MultiheadAttention``'s inference-only fast path off (it has no derivative)."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


@contextlib.contextmanager
def differentiable_attention() -> Iterator[None]:
    """Attention on the paths vmap and double backward can take (see the module notes)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with no_attention_fastpath(), sdpa_kernel(SDPBackend.MATH):
        yield


def logits_of(out) -> Tensor:
    """The logits of a model's output: a tensor, a HuggingFace output with ``.logits``, or a
    tuple whose first element is the logits."""
    if isinstance(out, Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise TypeError(f"model: output of type {type(out).__name__} has no logits (expected a "
                    "tensor, an object with .logits or a tuple starting with the logits)")


def next_token_loss(out, batch: tuple[Tensor, ...]) -> Tensor:
    """Per-token next-token cross-entropy, devinterp's default loss: ``(B, T - 1)`` with

        loss[b, t] = -log softmax(logits[b, t])[input_ids[b, t + 1]]
    """
    logits, ids = logits_of(out), batch[0]
    logp = torch.log_softmax(logits[..., :-1, :], dim=-1)
    return -logp.gather(-1, ids[..., 1:, None]).squeeze(-1)


def _model_kwargs(model: nn.Module) -> dict:
    """HuggingFace models skip their key-value cache (no use for it, and it costs memory)."""
    config = getattr(model, "config", None)
    return {"use_cache": False} if hasattr(config, "use_cache") else {}


def restriction(model: nn.Module, param_masks: Mapping[str, Tensor | None] | None
                ) -> tuple[list[str], Tensor | None]:
    """devinterp's ``param_masks`` -> the names of the sampled parameters (model order) and
    the elementwise mask over their flattened concatenation (``None`` when all entries move).
    Parameters not named, and those whose mask is all zero, are frozen; a tied weight may be
    named by any of its names (``lm_head.weight`` for GPT-2's shared embedding)."""
    named = list(model.named_parameters())
    if param_masks is None:
        return [n for n, _ in named], None
    shapes = dict((n, p.shape) for n, p in named)
    param_masks = _canonical_masks(model, param_masks)
    names, parts = [], []
    for name, shape in shapes.items():
        if name not in param_masks:
            continue
        m = param_masks[name]
        m = torch.ones(shape) if m is None else torch.as_tensor(m).float()
        if m.shape != shape:
            raise ValueError(f"param_masks[{name!r}]: shape {tuple(m.shape)} does not "
                             f"match the parameter's {tuple(shape)}")
        if bool(m.any()):
            names.append(name)
            parts.append(m.reshape(-1))
    if not names:
        raise ValueError("param_masks: selects no weights (every mask is empty)")
    mask = torch.cat(parts)
    return names, None if bool((mask == 1).all()) else mask


def _canonical_masks(model: nn.Module, param_masks: Mapping) -> dict:
    """``param_masks`` keyed by each parameter's first name (tied weights have several)."""
    if not isinstance(param_masks, Mapping):
        raise TypeError(f"param_masks: expected a dict {{name: mask or None}}; got "
                        f"{type(param_masks).__name__}")
    named = list(model.named_parameters())
    canonical = {id(p): n for n, p in named}
    aliases = {n: canonical[id(p)] for n, p in model.named_parameters(remove_duplicate=False)}
    out = {aliases.get(k, k): v for k, v in param_masks.items()}
    unknown = sorted(set(out) - set(canonical.values()))
    if unknown:
        raise ValueError(f"param_masks: unknown parameter names {unknown}; "
                         f"the model has {[n for n, _ in named]}")
    return out


class FlatModel:
    """``model`` with its sampled parameters packed into one flat vector.

    ``per_sample(w, batch)`` returns ``loss_fn(model(batch[0]), batch)``: one loss per row,
    shape ``(B,)``, or per token, ``(B, T)``. ``param_masks`` restricts the vector to the
    parameters it names (see :func:`restriction`); ``mask`` is then the elementwise mask
    over that vector, or ``None``.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn,
                 param_masks: Mapping[str, Tensor | None] | None = None,
                 chains_per_call: int | None = None,
                 activation_budget: float = DEFAULT_ACTIVATION_BUDGET) -> None:
        if chains_per_call is not None:
            integer("chains_per_call", chains_per_call, 1)
        positive("activation_budget", activation_budget)
        self.chains_per_call, self.activation_budget = chains_per_call, float(activation_budget)
        #: bytes autograd saves for one chain and one row, measured at the first gradient
        self.bytes_per_row: float | None = None
        self.model = model
        self.loss_fn = loss_fn
        named = list(model.named_parameters())
        if not named:
            raise ValueError("model: has no parameters to sample")
        self.names, mask = restriction(model, param_masks)
        params = dict(named)
        sampled = [params[n] for n in self.names]
        self.shapes = [p.shape for p in sampled]
        self.sizes = [p.numel() for p in sampled]
        self.n_model_params = sum(p.numel() for _, p in named)
        sampled_names = set(self.names)
        self.frozen = {n: p.detach() for n, p in named if n not in sampled_names}
        self.buffers = dict(model.named_buffers())
        self.kwargs = _model_kwargs(model)
        # functional_call unties shared weights on every call unless told there are none
        self.tied = len(list(model.named_parameters(remove_duplicate=False))) != len(named)
        self.w0 = torch.cat([p.detach().reshape(-1) for p in sampled])
        self.mask = None if mask is None else mask.to(self.w0)
        self.vectorized: bool | None = None  # decided at the first batched call
        self.fallback_reason = ""
        self.looped_ops: list[str] = []  # operators vmap ran chain by chain
        self._vmapped = vmap(self.per_sample)
        self._vmapped_shared = vmap(self.per_sample, in_dims=(0, None))

    @property
    def n_params(self) -> int:
        return self.w0.numel()

    def unflatten(self, w: Tensor) -> dict[str, Tensor]:
        parts = w.split(self.sizes)
        return {n: t.view(s) for n, t, s in zip(self.names, parts, self.shapes, strict=True)}

    def per_sample(self, w: Tensor, batch: Sequence[Tensor], double_backward: bool = True
                   ) -> Tensor:
        """``loss_fn(model(batch[0]), batch)`` at weights ``w``; ``double_backward=False``
        (one chain, one backward, no vmap) lets SDPA pick its fused kernels."""
        weights = {**self.unflatten(w), **self.frozen, **self.buffers}
        with differentiable_attention() if double_backward else no_attention_fastpath():
            out = functional_call(self.model, weights, (batch[0],), self.kwargs,
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
                out = fn(W, tuple(batch)) if self.vectorized else self._first_call(fn, W, batch)
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

    def _first_call(self, fn, W: Tensor, batch: Sequence[Tensor]) -> Tensor:
        """The first vmapped call, with functorch's per-chain fallback switched off: an
        operator without a batching rule then raises instead of quietly looping over chains
        inside vmap; it is noted in ``looped_ops`` and the call is made again with the fallback
        on (the run is then only partly vectorised)."""
        functorch = getattr(torch._C, "_functorch", None)
        if functorch is None or not hasattr(functorch, "_set_vmap_fallback_enabled"):
            return fn(W, tuple(batch))
        functorch._set_vmap_fallback_enabled(False)
        try:
            return fn(W, tuple(batch))
        except RuntimeError as err:
            found = re.match(r"\s*(\S+) hit the vmap fallback", str(err))
            if found is None:
                raise
            self.looped_ops.append(found[1][:120])
        finally:
            functorch._set_vmap_fallback_enabled(True)
        return fn(W, tuple(batch))

    @property
    def vectorized_label(self) -> str:
        """``"True"``, ``"False"`` (chains looped in Python) or ``"partial"`` (vmap ran, but
        looped over chains inside an operator: the first found is in ``looped_ops``)."""
        if self.vectorized and self.looped_ops:
            return "partial"
        return str(bool(self.vectorized))

    def loss_and_grad(self, W: Tensor, batch: Sequence[Tensor], rows: int | None = None,
                      micro_batches: int = 1) -> tuple[Tensor, Tensor]:
        """Per-sample losses ``(C, B, ...)`` and the gradient of each chain's mean loss over
        its first ``rows`` rows (all by default), those rows taken in ``micro_batches``
        backward passes (gradient accumulation: the same gradient, less activation memory)."""
        n = batch[0].shape[1] if rows is None else rows
        if micro_batches == 1:
            return self._chunked(W, batch, rows)
        size = -(-n // micro_batches)
        parts, grad = [], torch.zeros_like(W)
        for start in range(0, n, size):
            part = tuple(t[:, start:min(start + size, n)] for t in batch)
            per, g = self.loss_and_grad(W, part)
            grad.add_(g, alpha=per.shape[1] / n)
            parts.append(per)
        if batch[0].shape[1] > n:  # rows riding along after the gradient's: no backward
            with torch.no_grad():
                parts.append(self.batched(W, tuple(t[:, n:] for t in batch)))
        return torch.cat(parts, 1), grad

    def chunk_size(self, rows: int, chains: int) -> int:
        """Chains per gradient call for ``rows`` rows a chain: ``chains_per_call`` if set,
        else ``floor(activation_budget / (bytes_per_row * rows))`` (at least 1, at most
        ``chains``; 1 until the first call has measured ``bytes_per_row``)."""
        if self.chains_per_call is not None:
            return min(self.chains_per_call, chains)
        if self.bytes_per_row is None:
            return 1
        fit = int(self.activation_budget // max(self.bytes_per_row * rows, 1.0))
        return max(1, min(chains, fit))

    def _chunked(self, W: Tensor, batch: Sequence[Tensor], rows: int | None
                 ) -> tuple[Tensor, Tensor]:
        """The gradient of every chain's mean loss, :meth:`chunk_size` chains at a time."""
        self.measure(W, batch, rows)
        C, start, pers = W.shape[0], 0, []
        grads = W.new_empty(W.shape)  # filled chunk by chunk: no second copy from a concat
        while start < C:
            k = self.chunk_size(batch[0].shape[1], C - start)
            part = (W[start:start + k], tuple(t[start:start + k] for t in batch))
            if self.vectorized and self.chunk_size(batch[0].shape[1], C) == 1:
                # by the budget, not a last chunk of one: a chain's numbers then do not
                # depend on how many chains run beside it
                per, grad = self._direct(*part, rows)
            else:
                per, grad = self._vmapped_grad(*part, rows)
            pers.append(per)
            grads[start:start + k] = grad
            start += k
        return pers[0] if len(pers) == 1 else torch.cat(pers), grads

    def _vmapped_grad(self, W: Tensor, batch: Sequence[Tensor], rows: int | None
                      ) -> tuple[Tensor, Tensor]:
        Wr = W.detach().requires_grad_(True)
        with torch.enable_grad():
            per = self.batched(Wr, batch)
            used = per if rows is None else per[:, :rows]
            (grad,) = torch.autograd.grad(used.flatten(1).mean(1).sum(), Wr)
        return per.detach(), grad

    def _direct(self, W: Tensor, batch: Sequence[Tensor], rows: int | None
                ) -> tuple[Tensor, Tensor]:
        """One chain without vmap: the same gradient, the model's own attention kernels."""
        wr = W[0].detach().requires_grad_(True)
        with torch.enable_grad():
            per = self.per_sample(wr, tuple(t[0] for t in batch), double_backward=False)
            used = per if rows is None else per[:rows]
            (grad,) = torch.autograd.grad(used.mean(), wr)
        return per.detach()[None], grad[None]

    def measure(self, W: Tensor, batch: Sequence[Tensor], rows: int | None = None) -> None:
        """Measure ``bytes_per_row`` (once) by a vmapped gradient of the first chain, whose
        result is not used: each step's path (vmapped chunks, or one chain without vmap)
        then depends on the configuration only, not on whether this process started at step
        0 or at a checkpoint, so a resumed run gives the same numbers."""
        if self.bytes_per_row is None:
            self._measured(W[:1], tuple(t[:1] for t in batch), rows)

    def _measured(self, W: Tensor, batch: Sequence[Tensor], rows: int | None
                  ) -> tuple[Tensor, Tensor]:
        """The vmapped gradient, counting the bytes autograd saves for it: each storage
        once, the weights themselves not (they are ``W``'s)."""
        seen: dict[int, int] = {}
        unseen = [0]
        own = W.untyped_storage().data_ptr()

        def pack(t: Tensor) -> Tensor:
            try:
                storage = t.untyped_storage()
                seen.setdefault(storage.data_ptr(), storage.nbytes())
            except (RuntimeError, NotImplementedError):  # a wrapper without a storage
                unseen[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = self._vmapped_grad(W, batch, rows)
        saved = sum(v for k, v in seen.items() if k != own) + unseen[0]
        self.bytes_per_row = saved / (W.shape[0] * batch[0].shape[1])
        return out

    @torch.no_grad()
    def full_loss(self, w: Tensor, tensors: Sequence[Tensor], chunk: int = 4096) -> Tensor:
        """Per-sample losses of one weight vector over a whole dataset, in chunks."""
        n = tensors[0].shape[0]
        parts = [self.per_sample(w, [t[i:i + chunk] for t in tensors]) for i in range(0, n, chunk)]
        return torch.cat(parts)

    def hvp(self, w: Tensor, v: Tensor, batch: Sequence[Tensor], rows: int | None = None
            ) -> Tensor:
        """``H v``, ``H`` the Hessian of the mean loss over ``batch`` at ``w``, by a double
        backward over ``rows`` rows at a time (``H`` of a mean is the mean of the parts' ``H``
        weighted by their rows): a double backward saves about four gradients' activations,
        so a quarter of a gradient's rows keeps its memory at one gradient's."""
        n = batch[0].shape[0]
        rows = n if rows is None else max(1, min(rows, n))
        out = torch.zeros_like(w)
        for start in range(0, n, rows):
            part = [t[start:start + rows] for t in batch]
            wr = w.detach().requires_grad_(True)
            with torch.enable_grad():
                loss = self.per_sample(wr, part).mean()
                (g,) = torch.autograd.grad(loss, wr, create_graph=True)
                (hv,) = torch.autograd.grad(g @ v, wr)
            out.add_(hv, alpha=part[0].shape[0] / n)
        return out if self.mask is None else out * self.mask

    def top_eigenvalue(self, w: Tensor, batch: Sequence[Tensor], scale: float,
                       generator: torch.Generator, iters: int = 30, rtol: float = 1e-3,
                       rows: int | None = None) -> float:
        """Largest eigenvalue of ``scale * H`` (``H`` the Hessian of the mean loss on
        ``batch``, restricted to the masked weights) by Lanczos: ``k`` products ``H q_j``
        build the tridiagonal ``T_k = Q_k^T H Q_k`` with

            beta_j q_{j+1} = H q_j - alpha_j q_j - beta_{j-1} q_{j-1},   alpha_j = q_j^T H q_j

        and ``lambda_max(T_k)`` rises to ``lambda_max(H)`` far faster than power iteration's
        ``v^T H v`` (error ~ ``exp(-4 k sqrt(gap))`` against ``(1 - gap)^{2k}``). Stopped
        once it changes by less than ``rtol`` relative, or after ``iters`` products."""
        q = torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device)
        if self.mask is not None:
            q = q * self.mask
        q /= q.norm()
        q_prev, beta = torch.zeros_like(q), 0.0
        alphas: list[float] = []
        betas: list[float] = []
        lam = math.nan
        for _ in range(iters):
            r = self.hvp(w, q, batch, rows)
            alpha = float(q @ r)
            alphas.append(alpha)
            r.add_(q, alpha=-alpha).add_(q_prev, alpha=-beta)
            prev, lam = lam, _tridiagonal_max(alphas, betas) * scale
            if not math.isfinite(lam) or abs(lam - prev) <= rtol * abs(lam):
                break
            beta = float(r.norm())
            if beta <= 1e-12 * max(abs(a) for a in alphas):  # an invariant subspace: exact
                break
            betas.append(beta)
            q_prev, q = q, r / beta
        return lam


def _tridiagonal_max(alphas: Sequence[float], betas: Sequence[float]) -> float:
    """Largest eigenvalue of the symmetric tridiagonal matrix with diagonal ``alphas`` and
    off-diagonal ``betas``."""
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas[:len(alphas) - 1], dtype=torch.float64)
        t = t + torch.diag(off, 1) + torch.diag(off, -1)
    return float(torch.linalg.eigvalsh(t)[-1])


def check_per_sample(out: Tensor, batch_size: int) -> None:
    if out.ndim < 1 or out.shape[0] != batch_size:
        raise ValueError(
            f"loss_fn: must return one loss per row, shape ({batch_size},) or "
            f"({batch_size}, tokens); got shape {tuple(out.shape)}"
        )
