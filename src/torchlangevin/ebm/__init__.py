"""Energy-based models: contrastive divergence with Langevin negatives, replay buffers,
denoising score matching, a training loop, and two-sample metrics."""

from .data import TOYS, digits, eight_gaussians, rings, two_moons
from .losses import (
    ContrastiveDivergence,
    ReplayBuffer,
    batch_range_init,
    denoising_score_matching,
    gaussian_init,
    uniform_init,
)
from .metrics import energy_distance, mmd
from .train import History, fit

__all__ = ["ContrastiveDivergence", "ReplayBuffer", "denoising_score_matching", "fit",
           "History", "uniform_init", "gaussian_init", "batch_range_init", "mmd",
           "energy_distance", "TOYS", "eight_gaussians", "two_moons", "rings", "digits"]
