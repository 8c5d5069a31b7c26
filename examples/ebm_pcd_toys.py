"""Train an MLP energy E(x) on two moons by persistent CD (MALA negatives) and plot its
energy with model samples; prints MMD to held-out data, the floor and a Gaussian's MMD.
(The recipe that works on every toy is examples/ebm_toys.py.)

    python examples/ebm_pcd_toys.py [out_dir_or_png] [epochs] [sample_steps]
"""

import sys
from pathlib import Path

import torch

from torchlangevin.ebm.demo import run_toy

torch.set_num_threads(1)  # small layers: a second thread costs more than it gives
target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("ebm_out")
out = target.parent if target.suffix == ".png" else target
r = run_toy("moons", out, epochs=int(sys.argv[2]) if len(sys.argv) > 2 else 100,
            sample_steps=int(sys.argv[3]) if len(sys.argv) > 3 else 3000)
if target.suffix == ".png":
    (out / "moons_energy.png").replace(target)
print(f"MMD^2 persistent chains {r['mmd_model']:.5f}, fresh chains {r['mmd_fresh']:.5f}, "
      f"floor {r['mmd_floor']:.5f}, Gaussian {r['mmd_gaussian']:.5f}")
