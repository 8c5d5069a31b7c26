"""Plot helpers. Every function takes plain arrays or tensors and writes or returns a figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend: figures render without a display."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the extra
        raise ImportError("plotting needs matplotlib: pip install 'torchlangevin[viz]'") from err
    return plt


def _save_or_return(fig, path: str | Path | None):
    """The figure itself if ``path`` is None, else save it there, close it, return the path."""
    if path is None:
        return fig
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return Path(path)


def _density_curve(target, n: int = 400) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    low, high = float(target.support.low[0]), float(target.support.high[0])
    xs = np.linspace(low, high, n)
    dens = torch.exp(target.log_prob(torch.as_tensor(xs).unsqueeze(-1))).numpy()
    return xs, dens, (low, high)


def _draw_histogram(ax, values: np.ndarray, target, bins: int):
    """Bars centred on their bins (``align='center'`` at the bin centres), density curve."""
    xs, dens, (low, high) = _density_curve(target)
    edges = np.linspace(low, high, bins + 1)
    heights, _ = np.histogram(values, bins=edges, density=True)
    centres = (edges[:-1] + edges[1:]) / 2
    bars = ax.bar(centres, heights, width=edges[1] - edges[0], align="center",
                  color="tab:blue", alpha=0.55, label="particles")
    ax.plot(xs, dens, color="tab:red", lw=2, label="exact density")
    ax.set_xlim(low - 0.05 * (high - low), high + 0.05 * (high - low))
    ax.set_ylim(0, 1.6 * dens.max())
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.legend(loc="upper right")
    return bars, edges


def histogram_figure(values: Any, target: Any, path: str | Path | None = None, bins: int = 50,
                     title: str = "") -> Any:
    """Histogram of 1-D draws against ``target``'s exact density; saved if ``path``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    _draw_histogram(ax, np.asarray(values).reshape(-1), target, bins)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save_or_return(fig, path)


def histogram_animation(frames: list[tuple[int, np.ndarray]], target: Any, path: str | Path,
                        bins: int = 50, title: str = "", fps: int = 12) -> Path:
    """GIF of particle histograms (one frame per ``(step, values)``) over the exact density."""
    import imageio.v3 as iio

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=80)
    bars, edges = _draw_histogram(ax, frames[0][1], target, bins)
    images = []
    for step, values in frames:
        heights, _ = np.histogram(values, bins=edges, density=True)
        for bar, h in zip(bars, heights, strict=True):
            bar.set_height(h)
        ax.set_title(f"{title}  step {step}", fontsize=10)
        fig.canvas.draw()
        images.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    plt.close(fig)
    images += [images[-1]] * fps  # hold the last frame a second
    iio.imwrite(path, np.stack(images), duration=1000 / fps, loop=0)
    return Path(path)


def plot_trace(samples: Any, coords: int | list[int] = 0, path: str | Path | None = None,
               max_chains: int = 8) -> Any:
    """Trace plot: draws of the chosen coordinates against draw index, a line per chain."""
    plt = pyplot()
    s = torch.as_tensor(samples).detach().cpu()
    s = s.reshape(s.shape[0], s.shape[1], -1).numpy()
    coords = [coords] if isinstance(coords, int) else list(coords)
    fig, axes = plt.subplots(len(coords), 1, figsize=(8, 2.2 * len(coords)), squeeze=False)
    for ax, k in zip(axes[:, 0], coords, strict=True):
        for c in range(min(max_chains, s.shape[0])):
            ax.plot(s[c, :, k], lw=0.7)
        ax.set_ylabel(f"x[{k}]")
    axes[-1, 0].set_xlabel("draw")
    fig.tight_layout()
    return _save_or_return(fig, path)


def plot_energy_contours(energy: Any, xlim: tuple[float, float] = (-3, 3),
                         ylim: tuple[float, float] = (-3, 3), trajectories: Any = None,
                         points: Any = None, path: str | Path | None = None, levels: int = 40,
                         grid: int = 200) -> Any:
    """Filled contours of a 2-D energy, with optional trajectories ``(chain, step, 2)``
    and points ``(n, 2)`` on top. The energy is evaluated in one batched call."""
    plt = pyplot()
    xs, ys = np.linspace(*xlim, grid), np.linspace(*ylim, grid)
    gx, gy = np.meshgrid(xs, ys)
    pts = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], -1), dtype=torch.float32)
    with torch.no_grad():
        z = energy(pts).reshape(grid, grid).cpu().numpy()
    fig, ax = plt.subplots(figsize=(6, 5))
    # levels over the lower 90% of energies: the walls of the box would swamp the wells
    top = float(np.quantile(z, 0.9))
    cs = ax.contourf(gx, gy, np.minimum(z, top), levels=np.linspace(z.min(), top, levels),
                     cmap="viridis")
    fig.colorbar(cs, ax=ax, label="energy")
    if trajectories is not None:
        t = torch.as_tensor(trajectories).detach().cpu().numpy()
        for c in range(t.shape[0]):
            ax.plot(t[c, :, 0], t[c, :, 1], "r-", lw=0.8, alpha=0.8)
            ax.plot(t[c, 0, 0], t[c, 0, 1], "ko", ms=4)
            ax.plot(t[c, -1, 0], t[c, -1, 1], "w*", ms=8)
    if points is not None:
        p = torch.as_tensor(points).detach().cpu().numpy()
        ax.scatter(p[:, 0], p[:, 1], s=2, c="white", alpha=0.5)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    fig.tight_layout()
    return _save_or_return(fig, path)


def plot_llc_trajectory(table: Any, path: str | Path | None = None, loss: bool = True,
                        log_steps: bool = False) -> Any:
    """The LLC along a training run: ``llc`` against ``step`` with error bars of 2 ``llc_se``
    (an approximate 95% interval), over the training loss (``init_loss``, right axis).

    ``table`` is :func:`torchlangevin.slt.llc_trajectory`'s DataFrame (or any mapping of those
    columns). Checkpoints with flags are drawn as open markers and named in the legend.
    """
    plt = pyplot()
    steps = np.asarray(table["step"], dtype=float)
    llc = np.asarray(table["llc"], dtype=float)
    se = np.asarray(table["llc_se"], dtype=float)
    flags = [str(f) for f in table["flags"]] if "flags" in table else [""] * len(steps)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.errorbar(steps, llc, yerr=2 * se, color="C0", marker="o", capsize=3, lw=1.5,
                label="LLC (± 2 se)")
    bad = np.array([bool(f) for f in flags])
    if bad.any():
        ax.scatter(steps[bad], llc[bad], s=90, facecolors="none", edgecolors="C3", zorder=3,
                   label="flagged: " + ", ".join(sorted({g for f in flags
                                                          for g in f.split(",") if g})))
    ax.set_xlabel("training step")
    ax.set_ylabel("local learning coefficient", color="C0")
    if log_steps:
        ax.set_xscale("log")
    handles, labels = ax.get_legend_handles_labels()
    if loss and "init_loss" in table:
        right = ax.twinx()
        right.plot(steps, np.asarray(table["init_loss"], dtype=float), color="C1", ls="--",
                   marker="s", ms=4, label="training loss")
        right.set_ylabel("training loss L_n(w0)", color="C1")
        h2, l2 = right.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="best", fontsize=8)
    ax.set_title("LLC along training")
    fig.tight_layout()
    return _save_or_return(fig, path)
