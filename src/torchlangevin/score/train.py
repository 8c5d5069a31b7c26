"""Train a noise-conditional score model by denoising or sliced score matching."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..energy import check_states
from ..util import integer, positive, progress_bar
from .losses import draw_sigmas, dsm_loss, ssm_loss

__all__ = ["ScoreHistory", "fit_score"]


@dataclass
class ScoreHistory:
    """The loss of every optimiser step, and the noise range trained on."""

    loss: list[float] = field(default_factory=list)
    sigma_min: float = 0.0
    sigma_max: float = 0.0


def fit_score(model: nn.Module, data: Tensor, sigmas: Tensor, *, objective: str = "dsm",
              n_steps: int = 5000, batch_size: int = 256, lr: float = 2e-3,
              lr_end: float = 1e-4, ema: float = 0.999, seed: int = 0,
              progress: bool = True) -> ScoreHistory:
    """Fit ``model(x, sigma)`` to the score of the noised data for ``sigma`` between
    ``sigmas.min()`` and ``sigmas.max()`` (log-uniform; see :mod:`.losses`).

    ``objective``: ``"dsm"`` (denoising score matching) or ``"ssm"`` (sliced score
    matching). Adam, its learning rate decaying geometrically (per step) from ``lr`` to
    ``lr_end``; minibatches drawn with replacement from ``data (N, *event)``.

    ``ema``: the model ends with the exponential moving average of its weights,
    ``theta_ema <- b_t theta_ema + (1 - b_t) theta`` after every step with
    ``b_t = min(ema, (1 + t) / (10 + t))`` (so early weights are forgotten fast), as NCSN++
    does (Song & Ermon 2020, technique 5: it removes the jitter of the last steps'
    samples); ``ema=0`` keeps the last weights."""
    data = check_states("data", data, rows="rows", min_rows=2, min_ndim=2)
    if objective not in ("dsm", "ssm"):
        raise ValueError(f"objective must be 'dsm' or 'ssm'; got {objective!r}")
    n_steps, batch_size = integer("n_steps", n_steps, 1), integer("batch_size", batch_size, 1)
    lr, lr_end = positive("lr", lr), positive("lr_end", lr_end)
    lo, hi = _noise_range(sigmas, ema)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = dsm_loss if objective == "dsm" else ssm_loss
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    decay = torch.optim.lr_scheduler.ExponentialLR(
        optimizer, (lr_end / lr) ** (1 / max(n_steps - 1, 1)))
    history = ScoreHistory(sigma_min=lo, sigma_max=hi)
    bar = progress_bar(progress, n_steps, f"fit_score ({objective})")
    average = _WeightAverage(model, ema)
    model.train()
    for step in range(n_steps):
        batch = data[torch.randint(len(data), (batch_size,), generator=gen)]
        loss = loss_fn(model, batch, draw_sigmas(batch_size, lo, hi, gen, batch), gen)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {float(loss.detach())} at step {step}; "
                                     f"lower lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        decay.step()
        average.update(step)
        history.loss.append(float(loss.detach()))
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    average.copy_to_model()
    model.eval()
    return history


def _noise_range(sigmas: Tensor, ema: float) -> tuple[float, float]:
    """``(min, max)`` of ``sigmas``, checked; and ``ema`` checked."""
    if not 0 <= ema < 1:
        raise ValueError(f"ema must be in [0, 1); got {ema!r}")
    sigmas = torch.as_tensor(sigmas)
    lo, hi = float(sigmas.min()), float(sigmas.max())
    if not hi > lo > 0:
        raise ValueError(f"sigmas must be positive and not all equal; got {sigmas.tolist()}")
    return lo, hi


class _WeightAverage:
    """The exponential moving average of a model's trainable weights."""

    def __init__(self, model: nn.Module, ema: float) -> None:
        self.ema = ema
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.averaged = [p.detach().clone() for p in self.params]

    def update(self, step: int) -> None:
        beta = min(self.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for a, p in zip(self.averaged, self.params, strict=True):
                a.lerp_(p.detach(), 1 - beta)

    def copy_to_model(self) -> None:
        with torch.no_grad():
            for p, a in zip(self.params, self.averaged, strict=True):
                p.copy_(a)
