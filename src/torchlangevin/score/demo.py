"""Score-based generation on the 2-D toys and the 8x8 digits (``torchlangevin
score-demo``): train a :class:`ScoreMLP` by denoising score matching, sample it by annealed
Langevin dynamics and by predictor-corrector at (about) the same number of score
evaluations, and judge both against held-out data; and the energy-based recipe
(:func:`run_energy_toy`): a :class:`NoiseConditionalEnergy` trained the same way, sampled
by annealed MALA."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..ebm.data import TOYS, digits, toy
from ..ebm.metrics import judge
from .models import NoiseConditionalEnergy, ScoreMLP, noise_ladder
from .sampling import ScoreSamples, annealed_langevin, annealed_mala, predictor_corrector
from .train import fit_score

__all__ = ["run_toy", "run_energy_toy", "run_digits"]


def _samplers(model: ScoreMLP, data: torch.Tensor, x0: torch.Tensor, n_levels: int,
              n_steps_each: int, step_lr: float, sigma_min: float, seed: int,
              progress: bool) -> tuple[ScoreSamples, ScoreSamples]:
    """Annealed Langevin (annealed MALA, with the denoising step, for an energy) on
    ``n_levels`` levels, and predictor-corrector (one corrector step, two evaluations a
    level) on as many levels as give the same evaluations."""
    ladder = noise_ladder(data, n_levels, sigma_min)
    if isinstance(model, NoiseConditionalEnergy):
        al = annealed_mala(model.energy, x0, ladder, n_steps_each, step_lr, denoise=True,
                           seed=seed, progress=progress)
    else:
        al = annealed_langevin(model, x0, ladder, n_steps_each, step_lr, seed=seed,
                               progress=progress)
    pc_ladder = noise_ladder(data, max(2, al.n_evals // 2), sigma_min)
    pc = predictor_corrector(model, x0, pc_ladder, seed=seed + 1, progress=progress)
    return al, pc


def run_toy(name: str = "checkerboard", out: str | Path | None = None,
            n_train_steps: int = 4000, n_levels: int = 10, n_steps_each: int = 100,
            step_lr: float = 2e-5, sigma_min: float = 0.01, n_sets: int = 5,
            seed: int = 0, progress: bool = False, model: str = "score") -> dict[str, float]:
    """Fit a score model to 10,000 points of the toy ``name`` (DSM, ``n_train_steps``
    Adam steps of 512, weights averaged (EMA 0.999); a :class:`ScoreMLP` with five octaves
    of Fourier features of the state, which the sharp edges of the toys need), then draw
    ``n_sets * 1000`` samples by each sampler from ``N(0, sigma_1^2)`` and judge them
    (:func:`~torchlangevin.ebm.metrics.judge`: the mean over ``n_sets`` sets of 1,000
    against 1,000 held-out points, and the floor).

    Writes ``score_<name>.png`` (data, annealed Langevin, predictor-corrector) into ``out``.
    Returns the MMD and TV of both samplers with the floors and ratios, the score
    evaluations per sample and the seconds spent training and sampling.

    ``model="energy"``: the score is ``-grad_x E`` of a :class:`NoiseConditionalEnergy`
    (a conservative field), the ``"al"`` sampler annealed MALA with the denoising step."""
    if model not in ("score", "energy"):
        raise ValueError(f"model must be 'score' or 'energy'; got {model!r}")
    cls = ScoreMLP if model == "score" else NoiseConditionalEnergy
    train, held, net, ladder, g, t0 = _fit_toy(cls, name, n_train_steps, n_levels,
                                               sigma_min, seed, progress)
    t1 = time.perf_counter()
    x0 = float(ladder[0]) * torch.randn(n_sets * 1000, 2, generator=g)
    al, pc = _samplers(net, train, x0, n_levels, n_steps_each, step_lr, sigma_min,
                       seed + 1, progress)
    t2 = time.perf_counter()
    result = {"train_s": t1 - t0, "sample_s": t2 - t1,
              "evals_al": al.n_evals, "evals_pc": pc.n_evals}
    _judge_into(result, {"al": al.final, "pc": pc.final}, train, held, n_sets)
    if out is not None:
        _toy_figure(name, train, al.final, pc.final, result, Path(out), model)
    return result


def _fit_toy(cls: type[ScoreMLP], name: str, n_train_steps: int, n_levels: int,
             sigma_min: float, seed: int, progress: bool) -> tuple:
    """10,000 training and 1,000 held-out points of the toy ``name``, and a ``cls`` model
    (five octaves of Fourier features of the state) fitted by DSM on them over the ladder:
    ``(train, held, model, ladder, generator, start time)``."""
    if name not in TOYS:
        raise ValueError(f"data must be one of {sorted(TOYS)}; got {name!r}")
    g = torch.Generator().manual_seed(seed)
    train, held = toy(name, 10000, g), toy(name, 1000, g)
    torch.manual_seed(seed)
    model = cls((2,), data_std=float(train.std()), n_input_frequencies=5)
    t0 = time.perf_counter()
    ladder = noise_ladder(train, n_levels, sigma_min)
    fit_score(model, train, ladder, n_steps=n_train_steps, batch_size=512, seed=seed,
              progress=progress)
    model.requires_grad_(False)
    return train, held, model, ladder, g, t0


def run_energy_toy(name: str = "checkerboard", out: str | Path | None = None,
                   n_train_steps: int = 4000, n_levels: int = 10, n_steps_each: int = 100,
                   step_lr: float = 2e-5, sigma_min: float = 0.01, long_steps: int = 1000,
                   n_sets: int = 5, seed: int = 0, progress: bool = False) -> dict[str, float]:
    """The energy-based model recipe, the same for every data set: a
    :class:`NoiseConditionalEnergy` ``E(x, sigma)`` fitted as :func:`run_toy` fits its score
    model (DSM over the ladder; the score is ``-grad_x E``), whose density is
    ``exp(-E(x, sigma_min))``.

    Fresh chains: ``n_sets * 1000`` from ``N(0, sigma_1^2)``, annealed down the ladder by
    MALA (:func:`annealed_mala`, ``n_steps_each`` steps a level, no denoising step), so
    they are exact draws of each level's density once mixed; long-run chains: the same
    chains after ``long_steps`` more MALA steps at ``sigma_min`` (at the last level's step),
    which would drift away if the annealed samples were not the density's (Nijkamp et al.
    2020's convergence check). Both judged by
    :func:`~torchlangevin.ebm.metrics.judge`. The masses of well-separated modes are set
    at the wide levels, where the modes overlap: at ``sigma_min`` no data lies between
    them, so DSM leaves the energy offset between two such modes free, and a chain that
    could cross would not find the data's weights there (the annealing does).

    Writes ``energy_<name>.png`` (the data, the fresh chains on the learned energy's
    contours) into ``out``. Returns the ratios to the floor, each level's MALA acceptance
    (its minimum), the gradient evaluations per sample and the seconds spent."""
    train, held, model, ladder, g, t0 = _fit_toy(NoiseConditionalEnergy, name,
                                                 n_train_steps, n_levels, sigma_min, seed,
                                                 progress)
    t1 = time.perf_counter()
    x0 = float(ladder[0]) * torch.randn(n_sets * 1000, 2, generator=g)
    fresh = annealed_mala(model.energy, x0, ladder, n_steps_each, step_lr, seed=seed + 1,
                          progress=progress)
    # the long run is annealed MALA on the last level alone: its step is the last level's
    long_run = annealed_mala(model.energy, fresh.final, ladder[-1:], long_steps, step_lr,
                             seed=seed + 2, progress=progress)
    t2 = time.perf_counter()
    result = {"train_s": t1 - t0, "sample_s": t2 - t1, "evals_fresh": fresh.n_evals,
              "evals_long": fresh.n_evals + long_steps,
              "acceptance_min": float(fresh.acceptance.min()),
              "acceptance_long": float(long_run.acceptance[0])}
    _judge_into(result, {"fresh": fresh.final, "long": long_run.final}, train, held, n_sets)
    if out is not None:
        _energy_figure(name, train, fresh.final, model, float(ladder[-1]), result, Path(out))
    return result


def _judge_into(result: dict[str, float], samples: dict[str, torch.Tensor],
                train: torch.Tensor, held: torch.Tensor, n_sets: int) -> None:
    """Judge each named sample set (:func:`~torchlangevin.ebm.metrics.judge`) and put its
    MMD, TV, their ratios to the floor and the worst bandwidth's ratio into ``result``
    under ``<measure>_<name>``, with the floors."""
    for key, x in samples.items():
        j = judge(x, train, held, n_sets=n_sets)
        result.update({f"mmd_{key}": j.mmd, f"mmd_ratio_{key}": j.mmd_ratio,
                       f"worst_ratio_{key}": j.worst_ratio,
                       f"tv_{key}": j.tv, f"tv_ratio_{key}": j.tv_ratio,
                       "mmd_floor": j.mmd_floor, "tv_floor": j.tv_floor})


def _energy_figure(name: str, train: torch.Tensor, samples: torch.Tensor,
                   model: NoiseConditionalEnergy, sigma: float, result: dict[str, float],
                   out: Path) -> Path:
    """The data, and the fresh chains over the contours of ``E(x, sigma_min)``."""
    from ..viz.plots import pyplot

    plt = pyplot()
    out.mkdir(parents=True, exist_ok=True)
    lo, hi = train.min(0).values - 0.2 * train.std(0), train.max(0).values + 0.2 * train.std(0)
    xs, ys = (torch.linspace(float(lo[i]), float(hi[i]), 200) for i in range(2))
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        energy = model.energy(grid, sigma).reshape(200, 200)
    log_density = (energy.min() - energy).clamp_min(-12).numpy()
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    axes[0].scatter(train[:5000, 0].numpy(), train[:5000, 1].numpy(), s=1, alpha=0.5)
    axes[0].set_title("data (5,000 training points)", fontsize=9)
    axes[1].imshow(log_density, origin="lower", extent=(float(lo[0]), float(hi[0]), float(lo[1]),
                   float(hi[1])), cmap="viridis", aspect="auto")
    axes[1].set_title(f"learned log density -E(x, {sigma:g}) (12 nats shown)", fontsize=9)
    axes[2].scatter(samples[:5000, 0].numpy(), samples[:5000, 1].numpy(), s=1, alpha=0.5)
    axes[2].set_title(f"fresh chains (annealed MALA): MMD {result['mmd_ratio_fresh']:.2f}x "
                      f"floor\n{result['evals_fresh']} gradients / sample", fontsize=9)
    return _save(plt, fig, axes, lo, hi, f"{name}: noise-conditional energy by denoising "
                 f"score matching", out / f"energy_{name}.png")


def _save(plt, fig, axes, lo: torch.Tensor, hi: torch.Tensor, title: str, path: Path) -> Path:
    """Give the 2-D panels the box ``[lo, hi]`` and equal axes, title the figure, write it."""
    for ax in axes:
        ax.set_xlim(float(lo[0]), float(hi[0]))
        ax.set_ylim(float(lo[1]), float(hi[1]))
        ax.set_aspect("equal")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _toy_figure(name: str, train: torch.Tensor, al: torch.Tensor, pc: torch.Tensor,
                result: dict[str, float], out: Path, model: str = "score") -> Path:
    """Three scatter plots side by side: the data, annealed Langevin, predictor-corrector."""
    from ..viz.plots import pyplot

    plt = pyplot()
    out.mkdir(parents=True, exist_ok=True)
    lo, hi = train.min(0).values - 0.2 * train.std(0), train.max(0).values + 0.2 * train.std(0)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    panels = [(train[:5000], "data (5,000 training points)"),
              (al[:5000], f"annealed {'Langevin' if model == 'score' else 'MALA'}: MMD "
                          f"{result['mmd_ratio_al']:.2f}x floor\n"
                          f"{result['evals_al']} score evaluations / sample"),
              (pc[:5000], f"predictor-corrector: MMD {result['mmd_ratio_pc']:.2f}x floor\n"
                          f"{result['evals_pc']} score evaluations / sample")]
    for ax, (pts, title) in zip(axes, panels, strict=True):
        ax.scatter(pts[:, 0].numpy(), pts[:, 1].numpy(), s=1, alpha=0.5)
        ax.set_title(title, fontsize=9)
    kind = "score model" if model == "score" else "energy-parameterised score"
    return _save(plt, fig, axes, lo, hi, f"{name}: {kind} by denoising score matching",
                 out / f"score_{name}.png")


def run_digits(out: str | Path | None = None, n_train_steps: int = 4000,
               n_levels: int = 25, n_steps_each: int = 40, step_lr: float = 1.2e-5,
               sigma_min: float = 0.01, n_generated: int = 500, seed: int = 0,
               progress: bool = False, model: str = "score") -> dict[str, float]:
    """Fit a score model to 80% of scikit-learn's 8x8 digits (pixels in [-1, 1]; DSM,
    ``n_train_steps`` Adam steps of 256, EMA weights), draw ``n_generated`` images by
    annealed Langevin and by predictor-corrector at the same evaluations, and judge them
    against the held-out 20%.

    The ladder follows Song & Ermon 2020 for ``D = 64``: neighbouring levels a ratio
    ``gamma ~ 1.35`` apart (technique 2: 25 levels from the largest pairwise distance
    to 0.01), and ``step_lr`` near their technique 4's optimum for ``gamma`` and 40
    steps a level.

    Two judges, both fitted on the same 80% of real digits: a logistic regression (the EBM
    digits demo's judge) and a one-hidden-layer MLP
    (:class:`~torchlangevin.ebm.metrics.FeatureClassifier`): the mean probability of
    their top class, and the Frechet distance to the held-out digits in the MLP's hidden
    (penultimate) layer, next to the held-out digits' own values (real training digits
    for the distance). Writes ``score_digits.png`` (64 images of each sampler).

    ``model="energy"``: the same with a :class:`NoiseConditionalEnergy` (the energy-based
    recipe), sampled by annealed MALA (``"al"`` keys; ``"pc"``: predictor-corrector on its
    score) and written to ``energy_digits.png``."""
    if model not in ("score", "energy"):
        raise ValueError(f"model must be 'score' or 'energy'; got {model!r}")
    from ..ebm.metrics import DigitsJudge

    g = torch.Generator().manual_seed(seed)
    judges = DigitsJudge(*digits(), g, seed=seed)  # g goes on to draw the starts
    train, held, mlp, top = judges.train, judges.held, judges.mlp, judges.top_logistic
    torch.manual_seed(seed)
    cls = ScoreMLP if model == "score" else NoiseConditionalEnergy
    net = cls((1, 8, 8), width=256, data_std=float(train.std()))
    t0 = time.perf_counter()
    ladder = noise_ladder(train, n_levels, sigma_min)
    fit_score(net, train, ladder, n_steps=n_train_steps, batch_size=256, seed=seed,
              progress=progress)
    net.requires_grad_(False)
    t1 = time.perf_counter()
    x0 = float(ladder[0]) * torch.randn(n_generated, 1, 8, 8, generator=g)
    al, pc = _samplers(net, train, x0, n_levels, n_steps_each, step_lr, sigma_min,
                       seed + 1, progress)
    t2 = time.perf_counter()
    result = {"train_s": t1 - t0, "sample_s": t2 - t1, "evals_al": al.n_evals,
              "evals_pc": pc.n_evals, "top_prob_held_out": top(held),
              "top_prob_mlp_held_out": mlp.top_prob(held),
              "frechet_train": judges.frechet_train(n_generated)}
    for key, samples in (("al", al.final.clamp(-1, 1)), ("pc", pc.final.clamp(-1, 1))):
        result.update({f"top_prob_{key}": top(samples),
                       f"top_prob_mlp_{key}": mlp.top_prob(samples),
                       f"frechet_{key}": mlp.frechet(samples, held)})
    if al.acceptance is not None:
        result["acceptance_min"] = float(al.acceptance.min())
    if out is not None:
        _digits_figure(al.final, pc.final, result, Path(out), model)
    return result


def _digits_figure(al: torch.Tensor, pc: torch.Tensor, result: dict[str, float],
                   out: Path, model: str = "score") -> Path:
    """The first 64 images of each sampler, two 8 x 8 grids."""
    from ..viz.plots import pyplot

    plt = pyplot()
    out.mkdir(parents=True, exist_ok=True)
    fig = plt.figure(figsize=(10, 5.4))
    for k, (imgs, label) in enumerate(((al, "al"), (pc, "pc"))):
        for i, img in enumerate(imgs[:64]):
            ax = fig.add_subplot(8, 17, (i // 8) * 17 + i % 8 + 1 + 9 * k)
            ax.imshow(img[0].clamp(-1, 1).numpy(), cmap="gray_r", vmin=-1, vmax=1)
            ax.axis("off")
        name = "predictor-corrector" if label == "pc" else \
            "annealed Langevin" if model == "score" else "annealed MALA"
        fig.text(0.08 + 0.5 * k, 0.94, f"{name}: top-class p {result['top_prob_' + label]:.2f}"
                 f" (logistic) / {result['top_prob_mlp_' + label]:.2f} (MLP), Frechet "
                 f"{result['frechet_' + label]:.1f}", fontsize=9)
    path = out / f"{model}_digits.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
