"""Train a small MLP energy on a 2-D toy set with persistent contrastive divergence and
judge its samples against held-out data (``torchlangevin ebm-demo``)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..driver import sample
from ..kernels import MALA
from ..schedules import Geometric
from .data import TOYS
from .metrics import judge, mmd
from .train import fit


def mlp_energy(width: int = 128) -> nn.Module:
    """``(B, 2) -> (B,)``: two SiLU hidden layers."""
    return nn.Sequential(nn.Linear(2, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                         nn.Linear(width, 1), nn.Flatten(0))


def run_toy(name: str = "moons", out: str | Path | None = None, epochs: int = 100,
            k_steps: int = 40, step_size: float = 0.005, seed: int = 0,
            energy_reg: float = 0.01, continue_steps: int = 200,
            sample_steps: int = 3000) -> dict[str, float]:
    """Train on 6,000 points with persistent CD whose negatives are ``k_steps`` MALA steps
    (exact for the current model; ULA's biased negatives fit worse) and a learning rate
    decaying geometrically from 1e-3 to 1e-4 (a smaller late rate fits better).

    Two sets of 5,000 samples are judged, each by the mean MMD^2 of 5 sets of 1,000 to the
    held-out points, next to the floor (the same for 5 disjoint sets of 1,000 training
    points) and a fitted Gaussian's:

    - ``mmd_model``: the persistent chains (Du & Mordatch 2019), 5,000 of the replay
      buffer's, run ``continue_steps`` more MALA steps at the final weights;
    - ``mmd_fresh``: chains from uniform starts after ``sample_steps`` MALA steps, which
      approach the learned density ``exp(-E)`` itself. Persistent CD fits the chains to the
      data, not the density (Nijkamp et al. 2020), so these may be further off.

    ``judge_model``/``judge_fresh``: the same two sets judged by the multi-bandwidth MMD
    and the binned TV (:func:`~torchlangevin.ebm.metrics.judge`), as ratios to the floor.

    Writes ``<name>_energy.png`` (contours with the persistent samples) into ``out``."""
    if name not in TOYS:
        raise ValueError(f"data must be one of {sorted(TOYS)}; got {name!r}")
    g = torch.Generator().manual_seed(seed)
    data, held = TOYS[name](6000, g).float(), TOYS[name](1000, g).float()
    torch.manual_seed(seed)
    model = mlp_energy()
    kernel = MALA(model, step_size)
    history = fit(model, data, kernel=kernel, epochs=epochs, batch_size=256,
                  lr=Geometric(1e-3, 1e-4, epochs), k_steps=k_steps, energy_reg=energy_reg,
                  clip_grad=1.0, seed=seed)
    n = 1000
    slots = torch.randperm(len(history.buffer), generator=g)[:5 * n]
    persistent = sample(kernel, history.buffer[slots], 1, burn_in=continue_steps, seed=seed + 1)
    low, high = data.min(0).values, data.max(0).values
    start = low + (high - low) * torch.rand(5 * n, 2, generator=g)
    fresh = sample(kernel, start, 1, burn_in=sample_steps, seed=seed + 2)
    gaussian = data.mean(0) + torch.randn(5 * n, 2, generator=g) @ torch.linalg.cholesky(
        torch.cov(data.T)).T

    # One draw of a wide-kernel MMD^2 is nearly chi-square with few degrees of freedom,
    # so single values vary widely: hence the mean over 5 sets.
    def mean_mmd(x: torch.Tensor) -> float:
        return sum(mmd(x[i * n:(i + 1) * n], held) for i in range(5)) / 5

    result = {"mmd_model": mean_mmd(persistent.final), "mmd_fresh": mean_mmd(fresh.final),
              "mmd_floor": mean_mmd(data[1000:6000]), "mmd_gaussian": mean_mmd(gaussian),
              "acceptance": float(fresh.acceptance_rate.mean())}
    for key, x in (("model", persistent.final), ("fresh", fresh.final)):
        j = judge(x, data, held)
        result.update({f"mmd_multi_ratio_{key}": j.mmd_ratio, f"tv_ratio_{key}": j.tv_ratio})
    if out is not None:
        from ..viz import plot_energy_contours

        Path(out).mkdir(parents=True, exist_ok=True)
        pad = 0.1 * (high - low)
        plot_energy_contours(model, xlim=(float(low[0] - pad[0]), float(high[0] + pad[0])),
                             ylim=(float(low[1] - pad[1]), float(high[1] + pad[1])),
                             points=persistent.final, path=Path(out) / f"{name}_energy.png")
    return result


def conv_energy() -> nn.Module:
    """``(B, 1, 8, 8) -> (B,)``: three SiLU convolutions (two strided) and a linear head."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.SiLU(),
        nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.SiLU(),
        nn.Conv2d(64, 64, 3, padding=1, stride=2), nn.SiLU(),
        nn.Flatten(), nn.Linear(256, 1), nn.Flatten(0))


def run_digits(out: str | Path | None = None, epochs: int = 30, seed: int = 0,
               n_generated: int = 500, sample_steps: int = 200) -> dict[str, float]:
    """Train a conv energy on 80% of scikit-learn's 8x8 digits (pixels in [-1, 1]) by
    persistent CD with low-temperature Langevin negatives reflected into the pixel box,
    then draw ``n_generated`` images by ``sample_steps`` Langevin steps from uniform noise.

    Judged as ``score.demo.run_digits`` judges (the same split for the same seed), by
    classifiers fitted on the same 80% of real digits: the mean probability of the top
    class of a logistic regression (``top_prob_generated``; ``top_prob_real`` on the
    held-out 20%) and of a one-hidden-layer MLP (``top_prob_mlp_*``), and the Frechet
    distance to the held-out digits in the MLP's hidden layer (``frechet_generated``;
    ``frechet_train`` for as many real training digits). Writes ``digits_grid.png`` into
    ``out`` if given. Needs scikit-learn.
    """
    from ..energy import Box
    from ..kernels import Langevin
    from .data import digits
    from .losses import uniform_init
    from .metrics import DigitsJudge

    judges = DigitsJudge(*digits(), torch.Generator().manual_seed(seed), seed=seed)
    train, held, mlp = judges.train, judges.held, judges.mlp
    torch.manual_seed(seed)
    model = conv_energy()
    low, high = -torch.ones(1, 8, 8), torch.ones(1, 8, 8)
    kernel = Langevin(model, 0.5, noise_scale=0.02, support=Box(low, high))
    init = uniform_init(low, high)
    fit(model, train, kernel=kernel, epochs=epochs, batch_size=128, lr=1e-4, k_steps=40,
        energy_reg=1.0, init=init, seed=seed)
    start = init(n_generated, torch.Generator().manual_seed(seed + 5))
    generated = sample(kernel, start, 1, burn_in=sample_steps, seed=seed + 3).final
    result = {"top_prob_generated": judges.top_logistic(generated),
              "top_prob_real": judges.top_logistic(held),
              "top_prob_mlp_generated": mlp.top_prob(generated),
              "top_prob_mlp_real": mlp.top_prob(held),
              "frechet_generated": mlp.frechet(generated, held),
              "frechet_train": judges.frechet_train(n_generated)}
    if out is not None:
        _save_digits_grid(generated, result, Path(out))
    return result


def _save_digits_grid(generated: torch.Tensor, result: dict[str, float], out: Path) -> None:
    """The first 128 generated images, 8 x 16, as ``out/digits_grid.png``."""
    from ..viz.plots import pyplot

    plt = pyplot()
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(8, 16, figsize=(8, 4))
    for ax, img in zip(axes.flat, generated[:128], strict=False):
        ax.imshow(img[0].numpy(), cmap="gray_r", vmin=-1, vmax=1)
        ax.axis("off")
    fig.suptitle(f"generated digits: top-class probability {result['top_prob_generated']:.2f} "
                 f"(logistic) / {result['top_prob_mlp_generated']:.2f} (MLP), held-out real "
                 f"{result['top_prob_real']:.2f} / {result['top_prob_mlp_real']:.2f}; Frechet "
                 f"{result['frechet_generated']:.1f}", fontsize=9)
    fig.savefig(out / "digits_grid.png", dpi=100)
    plt.close(fig)
