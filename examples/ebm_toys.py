"""The energy-based recipe on a 2-D toy: a noise-conditional energy E(x, sigma) fitted by
denoising score matching over a noise ladder, its density exp(-E(x, sigma_min)) sampled by
annealed MALA from noise (fresh chains) and then by 1,000 more MALA steps (long-run
chains); prints both judged against held-out data (multi-bandwidth MMD and binned TV, as
ratios to the train-vs-held-out floor) and writes the data, the learned log density and the
samples (about 90 s on one core).

    python examples/ebm_toys.py [out_dir_or_png] [train_steps] [sampling_steps] [data]

``sampling_steps``: annealed MALA steps over the 10 levels (default 1000) and the long
run's steps (the same); ``data``: any toy of ``torchlangevin.ebm.data.TOYS`` (default
two_moons).
"""

import sys
from pathlib import Path

from torchlangevin.score.demo import run_energy_toy

target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("ebm_out")
out = target.parent if target.suffix == ".png" else target
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
name = sys.argv[4] if len(sys.argv) > 4 else "two_moons"
r = run_energy_toy(name, out, n_train_steps=int(sys.argv[2]) if len(sys.argv) > 2 else 4000,
                   n_steps_each=max(1, steps // 10), long_steps=steps)
if target.suffix == ".png":
    (out / f"energy_{name}.png").replace(target)
print(f"{name}: MMD / floor: fresh chains {r['mmd_ratio_fresh']:.2f}, long-run chains "
      f"{r['mmd_ratio_long']:.2f}; TV / floor {r['tv_ratio_fresh']:.2f} / "
      f"{r['tv_ratio_long']:.2f}; {r['evals_fresh']} gradients per fresh sample, lowest "
      f"level acceptance {r['acceptance_min']:.2f}; training {r['train_s']:.0f} s, sampling "
      f"{r['sample_s']:.0f} s")
