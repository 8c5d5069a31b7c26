"""MALA vs HMC on Neal's funnel: acceptance, divergences, ESS and R-hat, trace plot.

    python examples/funnel_diagnostics.py [trace.png]
"""

import sys

import torch

import torchlangevin as tl
from torchlangevin.distributions import Funnel
from torchlangevin.viz import plot_trace

target = Funnel(dim=10)
x0 = target.sample(64, torch.Generator().manual_seed(0))
for kernel in [tl.MALA(target, step_size=0.05), tl.HMC(target, step_size=0.1, n_leapfrog_steps=10)]:
    chains = tl.sample(kernel, x0, 1000, burn_in=200, seed=1)
    s = chains.summary()
    print(f"{kernel.name}: acceptance {float(chains.acceptance_rate.mean()):.2f}, "
          f"divergences {int(chains.divergences.sum())}, ESS bulk of v {s.ess_bulk[0]:.0f}, "
          f"R-hat of v {s.r_hat[0]:.3f}, sd of v {s.sd[0]:.2f} (exact 3)")
out = sys.argv[1] if len(sys.argv) > 1 else "funnel_trace.png"
plot_trace(chains.samples, coords=[0, 1], path=out)
print(f"wrote {out}")
