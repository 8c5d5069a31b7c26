"""Energy contours of the 2-D double well with Langevin trajectories and MALA samples on top.

    python examples/double_well_trajectories.py [out.png]
"""

import sys

import torch

import torchlangevin as tl
from torchlangevin.distributions import DoubleWell
from torchlangevin.viz import plot_energy_contours

target = DoubleWell(dim=2, barrier_height=1.0)
start = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 1.5], [-1.5, 0.5]])
paths = tl.Langevin(target, step_size=0.01).sample(start, 400, seed=0, return_trajectory=True)
cloud = tl.MALA(target, step_size=0.1).sample(torch.randn(2000, 2), 1, burn_in=500, seed=1)
out = sys.argv[1] if len(sys.argv) > 1 else "double_well.png"
plot_energy_contours(target, xlim=(-2, 2), ylim=(-2, 2), trajectories=paths.trajectory,
                     points=cloud.final, path=out)
print(f"wrote {out}; MALA acceptance {float(cloud.acceptance_rate.mean()):.2f}")
