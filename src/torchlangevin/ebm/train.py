"""The training loop: minibatch contrastive divergence or denoising score matching."""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ..energy import check_states
from ..kernels.base import Kernel
from ..schedules import Schedule
from .losses import ContrastiveDivergence, InitFn, denoising_score_matching, uniform_init


@dataclass
class History:
    """Per optimiser step: the loss and, for CD, the energy gap ``mean E(data) - mean
    E(negatives)`` (near 0 when the sampler matches the model); per epoch: mean loss.

    ``buffer``: after persistent CD, the replay buffer's chains (a copy), which are the
    model's samples in Du & Mordatch's sense; continue them with the kernel for more.
    """

    loss: list[float] = field(default_factory=list)
    energy_gap: list[float] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)
    buffer: Tensor | None = None


def fit(energy_model: nn.Module, data: Tensor, *, kernel: Kernel | None = None,
        epochs: int = 10, batch_size: int = 128, optimizer: torch.optim.Optimizer | None = None,
        lr: float | Schedule = 1e-3, objective: str = "cd", k_steps: int = 20,
        persistent: bool = True,
        buffer_size: int = 10000, reinit_prob: float = 0.05, init: InitFn | None = None,
        energy_reg: float = 0.0, sigma: float = 0.1, clip_grad: float | None = None,
        checkpoint: str | os.PathLike | None = None, seed: int = 0, progress: bool = True,
        callback=None) -> History:
    """Train ``energy_model`` on ``data (N, *event)``.

    ``objective="cd"`` uses :class:`ContrastiveDivergence` with ``kernel`` (whose energy
    must be ``energy_model``), ``k_steps``, a replay buffer if ``persistent`` (fresh chains
    uniform over the data's range unless ``init`` is given); ``objective="dsm"`` uses
    denoising score matching at noise ``sigma``. Adam unless ``optimizer`` is given; ``lr``
    is a float or a :mod:`~torchlangevin.schedules` schedule of the epoch (e.g.
    ``Geometric(1e-3, 1e-4, epochs)``), applied to the optimizer at each epoch's start;
    ``clip_grad`` clips the global gradient norm. A non-finite loss or gradient stops
    training with ``FloatingPointError`` naming the epoch and step. With ``checkpoint``
    the run is saved after every epoch and resumed from the file if it exists.
    ``callback(epoch, history)`` runs after each epoch.
    """
    data = check_states("data", data, rows="rows", min_rows=2, min_ndim=2)
    if objective not in ("cd", "dsm"):
        raise ValueError(f"objective must be 'cd' or 'dsm'; got {objective!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1; got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    batch_size = min(batch_size, data.shape[0])
    cd = None
    if objective == "cd":
        if kernel is None:
            raise ValueError("objective='cd' needs a kernel, e.g. "
                             "Langevin(energy_model, step_size=0.01)")
        if kernel.energy is not energy_model:
            raise ValueError("the kernel's energy must be the energy_model being trained")
        if persistent and init is None:
            init = uniform_init(data.min(0).values, data.max(0).values)
        cd = ContrastiveDivergence(energy_model, kernel, k_steps, persistent,
                                   max(buffer_size, batch_size), reinit_prob, energy_reg, init,
                                   seed)
    lr_at = lr if isinstance(lr, Schedule) else None
    if lr_at is None and not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a positive number or a Schedule; got {lr!r}")
    optimizer = optimizer or torch.optim.Adam(energy_model.parameters(),
                                              lr=lr_at(0) if lr_at is not None else lr)
    gen = torch.Generator().manual_seed(seed + 1)
    history, start_epoch = History(), 0
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.exists():
        saved = torch.load(path, weights_only=False)
        energy_model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        gen.set_state(saved["generator"])
        if cd is not None:
            cd.generator.set_state(saved["cd_generator"])
            if cd.buffer is not None:
                cd.buffer.data = saved["buffer"]
        history, start_epoch = saved["history"], saved["epoch"]
    n_batches = math.ceil(data.shape[0] / batch_size)
    bar = None
    if progress and sys.stderr.isatty():
        try:
            from tqdm.auto import tqdm
            bar = tqdm(total=(epochs - start_epoch) * n_batches, desc=f"fit ({objective})",
                       leave=False)
        except ImportError:
            pass
    energy_model.train()
    for epoch in range(start_epoch, epochs):
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = float(lr_at(epoch))
        order = torch.randperm(data.shape[0], generator=gen)
        losses = []
        for b in range(n_batches):
            batch = data[order[b * batch_size:(b + 1) * batch_size]]
            if cd is not None:
                loss, _ = cd(batch)
            else:
                loss = denoising_score_matching(energy_model, batch, sigma, gen)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {float(loss.detach())} at epoch {epoch}, step {b} "
                    f"(optimiser step {len(history.loss)}); lower the learning rate or the "
                    f"sampler's step size, or add energy_reg")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = nn.utils.clip_grad_norm_(energy_model.parameters(),
                                            clip_grad if clip_grad else float("inf"))
            if not torch.isfinite(norm):
                raise FloatingPointError(f"gradient norm became {float(norm)} at epoch {epoch}, "
                                         f"step {b}; lower the learning rate or clip_grad")
            optimizer.step()
            history.loss.append(float(loss.detach()))
            if cd is not None:
                history.energy_gap.append(cd.last_energy_gap)
            losses.append(history.loss[-1])
            if bar is not None:
                bar.update()
        history.epoch_loss.append(sum(losses) / len(losses))
        if path is not None:
            state = {"model": energy_model.state_dict(), "optimizer": optimizer.state_dict(),
                     "generator": gen.get_state(), "history": history, "epoch": epoch + 1}
            if cd is not None:
                state["cd_generator"] = cd.generator.get_state()
                state["buffer"] = cd.buffer.data if cd.buffer is not None else None
            tmp = path.with_name(path.name + ".tmp")
            torch.save(state, tmp)
            os.replace(tmp, path)
        if callback is not None:
            callback(epoch, history)
    if bar is not None:
        bar.close()
    if cd is not None and cd.buffer is not None:
        history.buffer = cd.buffer.data.clone()
    energy_model.eval()
    return history
