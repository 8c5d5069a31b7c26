"""Score-based generation of scikit-learn's 8x8 digits: a noise-conditional MLP trained by
denoising score matching on 80% of them, sampled by annealed Langevin dynamics and by
predictor-corrector; judged by classifiers trained on the same real digits (mean top-class
probability of a logistic regression and of an MLP) and the Frechet distance to the
held-out 20% in the MLP's hidden layer.

    python examples/score_digits.py [out_dir_or_png] [train_steps] [sampling_steps]

``sampling_steps``: annealed Langevin steps per sample over the 25 levels (default 1000,
40 a level); predictor-corrector gets as many score evaluations.
"""

import sys
from pathlib import Path

from torchlangevin.score.demo import run_digits

target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("score_out")
out = target.parent if target.suffix == ".png" else target
total = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
r = run_digits(out, n_train_steps=int(sys.argv[2]) if len(sys.argv) > 2 else 4000,
               n_steps_each=max(1, total // 25))
if target.suffix == ".png":
    (out / "score_digits.png").replace(target)
print(f"top-class probability (logistic regression / MLP): annealed Langevin "
      f"{r['top_prob_al']:.3f} / {r['top_prob_mlp_al']:.3f}, predictor-corrector "
      f"{r['top_prob_pc']:.3f} / {r['top_prob_mlp_pc']:.3f}, held-out real digits "
      f"{r['top_prob_held_out']:.3f} / {r['top_prob_mlp_held_out']:.3f}")
print(f"Frechet distance to held-out digits (MLP features): annealed Langevin "
      f"{r['frechet_al']:.2f}, predictor-corrector {r['frechet_pc']:.2f}, real training "
      f"digits {r['frechet_train']:.2f}")
print(f"score evaluations per sample {r['evals_al']} / {r['evals_pc']}; training "
      f"{r['train_s']:.0f} s, sampling {r['sample_s']:.0f} s")
