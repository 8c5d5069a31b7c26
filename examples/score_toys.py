"""Score-based generation on a 2-D toy: a noise-conditional MLP trained by denoising score
matching, sampled by annealed Langevin dynamics and by predictor-corrector at the same
number of score evaluations, both judged against held-out data (multi-bandwidth MMD and
binned TV, as ratios to the train-vs-held-out floor).

    python examples/score_toys.py [out_dir_or_png] [train_steps] [sampling_steps] [data]

``sampling_steps``: annealed Langevin steps per sample over the 10 levels (default 1000,
100 a level); predictor-corrector gets as many score evaluations.

``data`` is a name of ``torchlangevin.ebm.data.TOYS`` (default checkerboard) or ``all``
for the ten benchmark sets (TorchEBM's eight, moons and rings), printed as a table.
"""

import sys
from pathlib import Path

from torchlangevin.ebm.data import BENCHMARK_TOYS
from torchlangevin.score.demo import run_toy

target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("score_out")
out = target.parent if target.suffix == ".png" else target
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 4000
per_level = max(1, (int(sys.argv[3]) if len(sys.argv) > 3 else 1000) // 10)
which = sys.argv[4] if len(sys.argv) > 4 else "checkerboard"
names = list(BENCHMARK_TOYS) if which == "all" else [which]
print(f"{'data':16s} {'AL MMD/floor':>12s} {'PC MMD/floor':>12s} {'AL worst':>8s} "
      f"{'PC worst':>8s} {'AL TV/floor':>11s} "
      f"{'PC TV/floor':>11s} {'evals AL':>8s} {'evals PC':>8s} {'train s':>7s} {'sample s':>8s}")
for name in names:
    r = run_toy(name, out, n_train_steps=steps, n_steps_each=per_level)
    print(f"{name:16s} {r['mmd_ratio_al']:12.2f} {r['mmd_ratio_pc']:12.2f} "
          f"{r['worst_ratio_al']:8.2f} {r['worst_ratio_pc']:8.2f} "
          f"{r['tv_ratio_al']:11.2f} {r['tv_ratio_pc']:11.2f} {r['evals_al']:8d} "
          f"{r['evals_pc']:8d} {r['train_s']:7.0f} {r['sample_s']:8.0f}", flush=True)
if target.suffix == ".png":
    (out / f"score_{names[-1]}.png").replace(target)
