"""The training loop: minibatch contrastive divergence or denoising score matching."""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import persist
from ..energy import check_states
from ..kernels.base import Kernel
from ..schedules import Schedule
from ..util import integer, progress_bar
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
        callback: Callable[[int, History], Any] | None = None) -> History:
    """Train ``energy_model`` on ``data (N, *event)``.

    ``objective="cd"`` uses :class:`ContrastiveDivergence` with ``kernel`` (whose energy
    must be ``energy_model``), ``k_steps``, a replay buffer of ``max(buffer_size, batch_size)``
    chains if ``persistent`` (fresh chains
    uniform over the data's range unless ``init`` is given); ``objective="dsm"`` uses
    denoising score matching at noise ``sigma``. Adam unless ``optimizer`` is given; ``lr``
    is a float or a :mod:`~torchlangevin.schedules` schedule of the epoch (e.g.
    ``Geometric(1e-3, 1e-4, epochs)``), applied to the optimizer at each epoch's start;
    ``clip_grad`` clips the global gradient norm. A non-finite loss or gradient stops
    training with ``FloatingPointError`` naming the epoch and step. With ``checkpoint``
    the run is saved after every epoch (plain tensors with checksums, crash-safely:
    :mod:`torchlangevin.persist`) and resumed from the file if it exists. The file records
    the call (seed, lr, batch size, a SHA-256 of the data, objective, ``k_steps``,
    ``persistent``, buffer size, ``reinit_prob``, ``energy_reg``, ``init``, ``sigma``,
    ``clip_grad``, the kernel, the optimiser's class and settings, the model's class and
    parameter shapes); a call that differs is refused, naming the fields. ``epochs`` may
    grow: a 3-epoch checkpoint resumed with ``epochs=5`` runs epochs 4 and 5, exactly as an
    uninterrupted 5-epoch run (the learning rate, if a schedule, must be the same
    schedule); ``epochs=3`` returns the finished run; ``epochs=2`` is refused.
    ``callback(epoch, history)`` runs after each epoch.
    """
    data, epochs, batch_size = _check_run(data, objective, epochs, batch_size)
    cd = None
    if objective == "cd":
        cd = _contrastive_divergence(energy_model, data, kernel, k_steps, persistent,
                                     max(integer("buffer_size", buffer_size, 1), batch_size),
                                     reinit_prob, energy_reg,
                                     init, seed)
    lr_at = _lr_schedule(lr)
    optimizer = optimizer or torch.optim.Adam(energy_model.parameters(),
                                              lr=lr_at(0) if lr_at is not None else lr)
    trainer = _Trainer(energy_model, optimizer, cd, sigma, clip_grad,
                       torch.Generator().manual_seed(seed + 1))
    path = Path(checkpoint) if checkpoint is not None else None
    config = None if path is None else _fit_config(
        trainer, data, kernel, seed=seed, lr=lr, batch_size=batch_size, objective=objective,
        k_steps=k_steps, persistent=persistent, buffer_size=buffer_size,
        reinit_prob=reinit_prob, energy_reg=energy_reg, init=init, sigma=sigma,
        clip_grad=clip_grad)
    history, start_epoch = trainer.resume(path, config, epochs)
    n_batches = math.ceil(data.shape[0] / batch_size)
    bar = progress_bar(progress, (epochs - start_epoch) * n_batches, f"fit ({objective})",
                       min_total=1)
    energy_model.train()
    for epoch in range(start_epoch, epochs):
        _set_lr(optimizer, lr_at, epoch)
        trainer.run_epoch(data, batch_size, epoch, history, bar)
        if path is not None:
            persist.save(path, _KIND, trainer.checkpoint(history, epoch + 1, epochs, config))
        if callback is not None:
            callback(epoch, history)
    trainer.finish(history, bar)
    return history


def _check_run(data: Tensor, objective: str, epochs: int,
               batch_size: int) -> tuple[Tensor, int, int]:
    """The checked data, epochs and batch size (at most the number of rows)."""
    data = check_states("data", data, rows="rows", min_rows=2, min_ndim=2)
    if objective not in ("cd", "dsm"):
        raise ValueError(f"objective must be 'cd' or 'dsm'; got {objective!r}")
    epochs = integer("epochs", epochs, 1)
    batch_size = min(integer("batch_size", batch_size, 1), data.shape[0])
    return data, epochs, batch_size


def _contrastive_divergence(energy_model: nn.Module, data: Tensor, kernel: Kernel | None,
                            k_steps: int, persistent: bool, buffer_size: int,
                            reinit_prob: float, energy_reg: float, init: InitFn | None,
                            seed: int) -> ContrastiveDivergence:
    """The CD objective; persistent chains start uniform over the data's range by default."""
    if kernel is None:
        raise ValueError("objective='cd' needs a kernel, e.g. "
                         "Langevin(energy_model, step_size=0.01)")
    if kernel.energy is not energy_model:
        raise ValueError("the kernel's energy must be the energy_model being trained")
    if persistent and init is None:
        init = uniform_init(data.min(0).values, data.max(0).values)
    return ContrastiveDivergence(energy_model, kernel, k_steps, persistent, buffer_size,
                                 reinit_prob, energy_reg, init, seed)


def _lr_schedule(lr: float | Schedule) -> Schedule | None:
    """``lr`` if it is a schedule, None for a fixed positive learning rate."""
    if isinstance(lr, Schedule):
        return lr
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a positive number or a Schedule; got {lr!r}")
    return None


def _set_lr(optimizer: torch.optim.Optimizer, lr_at: Schedule | None, epoch: int) -> None:
    if lr_at is not None:
        for group in optimizer.param_groups:
            group["lr"] = float(lr_at(epoch))


_KIND = "ebm.fit checkpoint"


#: the arguments each objective uses (and, with a replay buffer, those of the buffer)
_USED = {"cd": ("k_steps", "persistent", "energy_reg"), "dsm": ("sigma",)}
_BUFFER_ARGS = ("buffer_size", "reinit_prob", "init")


def _fit_config(trainer: _Trainer, data: Tensor, kernel: Kernel | None, *, objective: str,
                **args: Any) -> dict[str, Any]:
    """What a checkpoint records of the call (only the arguments the objective uses), so a
    resume with others is refused by name."""
    names = ["seed", "lr", "batch_size", "clip_grad", *_USED[objective]]
    if objective == "cd" and args["persistent"]:
        names += _BUFFER_ARGS
        if args["init"] is None:
            args["init"] = "uniform over the data's range"
    config = {"objective": objective, **{k: persist.fingerprint(args[k]) for k in names},
              "data": persist.fingerprint(data)}
    if kernel is not None and objective == "cd":
        config["kernel"] = persist.qualified_name(kernel)
        config.update({f"kernel.{k}": persist.fingerprint(v)
                       for k, v in kernel.params._asdict().items()})
    groups = [{k: v for k, v in g.items() if k != "params"}
              for g in trainer.optimizer.param_groups]
    config["optimizer"] = (persist.qualified_name(trainer.optimizer), persist.fingerprint(groups))
    config["model"] = (persist.qualified_name(trainer.model),
                       {k: tuple(v.shape) for k, v in trainer.model.state_dict().items()})
    return config


def _check_resume(path: Path, saved: dict[str, Any], config: dict[str, Any] | None,
                  epochs: int) -> None:
    """Refuse a checkpoint written by another call (naming the fields) or holding more
    epochs than asked for."""
    done, planned = saved["epoch"], saved["epochs"]
    where = f"checkpoint {str(path)!r}"
    state = f"a finished run of {planned} epochs" if done >= planned else \
        f"a run stopped after epoch {done} of {planned}"
    diffs = persist.differences(saved["config"], config or {})
    if diffs:
        raise ValueError(f"{where} holds {state}, written by a call that differs from this "
                         f"one: {'; '.join(diffs)}. Pass the same arguments to resume it, or "
                         f"another checkpoint path (or delete the file) to start anew")
    if done > epochs:
        raise ValueError(f"{where} holds {state}; this call asks for epochs={epochs}, fewer "
                         f"than the {done} done. Pass epochs >= {done} (a longer run continues "
                         f"it exactly), or another checkpoint path")


@dataclass
class _Trainer:
    """One run's moving parts: the model, its optimiser, the objective and the generator
    that orders the batches (and draws the noise of score matching)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    cd: ContrastiveDivergence | None
    sigma: float
    clip_grad: float | None
    gen: torch.Generator

    def loss(self, batch: Tensor) -> Tensor:
        if self.cd is not None:
            return self.cd(batch)[0]
        return denoising_score_matching(self.model, batch, self.sigma, self.gen)

    def step(self, batch: Tensor, epoch: int, b: int, history: History) -> float:
        """One optimiser step on ``batch`` (step ``b`` of ``epoch``); returns its loss."""
        loss = self.loss(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {float(loss.detach())} at epoch {epoch}, step {b} "
                f"(optimiser step {len(history.loss)}); lower the learning rate or the "
                f"sampler's step size, or add energy_reg")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = nn.utils.clip_grad_norm_(self.model.parameters(),
                                        self.clip_grad if self.clip_grad else float("inf"))
        if not torch.isfinite(norm):
            raise FloatingPointError(f"gradient norm became {float(norm)} at epoch {epoch}, "
                                     f"step {b}; lower the learning rate or clip_grad")
        self.optimizer.step()
        history.loss.append(float(loss.detach()))
        if self.cd is not None:
            history.energy_gap.append(self.cd.last_energy_gap)
        return history.loss[-1]

    def run_epoch(self, data: Tensor, batch_size: int, epoch: int, history: History,
                  bar: Any) -> None:
        """One pass over ``data`` in a fresh random order."""
        order = torch.randperm(data.shape[0], generator=self.gen)
        losses = []
        for b in range(math.ceil(data.shape[0] / batch_size)):
            batch = data[order[b * batch_size:(b + 1) * batch_size]]
            losses.append(self.step(batch, epoch, b, history))
            if bar is not None:
                bar.update()
        history.epoch_loss.append(sum(losses) / len(losses))

    def checkpoint(self, history: History, epoch: int, epochs: int,
                   config: dict[str, Any]) -> dict[str, Any]:
        """Everything :meth:`resume` needs to continue after ``epoch`` of ``epochs`` epochs,
        as plain data: tensors, numbers, strings and containers of them."""
        model = self.model.state_dict()
        metadata = getattr(model, "_metadata", None)
        state = {"config": config, "epoch": epoch, "epochs": epochs, "model": dict(model),
                 "model_metadata": None if metadata is None else
                 {k: dict(v) for k, v in metadata.items()},
                 "optimizer": self.optimizer.state_dict(), "generator": self.gen.get_state(),
                 "history": {"loss": list(history.loss),
                             "energy_gap": list(history.energy_gap),
                             "epoch_loss": list(history.epoch_loss)}}
        if self.cd is not None:
            state["cd_generator"] = self.cd.generator.get_state()
            state["buffer"] = self.cd.buffer.data if self.cd.buffer is not None else None
        return state

    def resume(self, path: Path | None, config: dict[str, Any] | None,
               epochs: int) -> tuple[History, int]:
        """The history and first epoch to run: restored from ``path`` if it exists, after
        checking that it was written by the same call (:func:`_check_resume`)."""
        if path is None or not path.exists():
            return History(), 0
        saved = persist.load(path, _KIND, label="checkpoint")
        _check_resume(path, saved, config, epochs)
        model = OrderedDict(saved["model"])
        if saved["model_metadata"] is not None:
            model._metadata = OrderedDict(saved["model_metadata"])  # type: ignore[attr-defined]
        self.model.load_state_dict(model)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.gen.set_state(saved["generator"])
        if self.cd is not None:
            self.cd.generator.set_state(saved["cd_generator"])
            if self.cd.buffer is not None:
                self.cd.buffer.data = saved["buffer"].to(self.cd.buffer.data.device)
        return History(**saved["history"]), saved["epoch"]

    def finish(self, history: History, bar: Any) -> None:
        """Close the bar, keep the replay buffer's chains, leave the model in eval mode."""
        if bar is not None:
            bar.close()
        if self.cd is not None and self.cd.buffer is not None:
            history.buffer = self.cd.buffer.data.clone()
        self.model.eval()
