"""Train a conv energy on scikit-learn's 8x8 digits by persistent contrastive divergence and
save a grid of generated digits (under two minutes on one CPU thread).

    python examples/ebm_digits.py [out_dir_or_png] [epochs] [sample_steps]
"""

import sys
from pathlib import Path

import torch

from torchlangevin.ebm.demo import run_digits

torch.set_num_threads(1)  # small layers: a second thread costs more than it gives
target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("ebm_out")
out = target.parent if target.suffix == ".png" else target
r = run_digits(out, epochs=int(sys.argv[2]) if len(sys.argv) > 2 else 25,
               sample_steps=int(sys.argv[3]) if len(sys.argv) > 3 else 200)
if target.suffix == ".png":
    (out / "digits_grid.png").replace(target)
print(f"top-class probability (logistic regression / MLP) on generated digits "
      f"{r['top_prob_generated']:.2f} / {r['top_prob_mlp_generated']:.2f} (held-out real "
      f"digits {r['top_prob_real']:.2f} / {r['top_prob_mlp_real']:.2f}); Frechet distance "
      f"to held-out digits {r['frechet_generated']:.2f} (real training digits "
      f"{r['frechet_train']:.2f}); grid written")
