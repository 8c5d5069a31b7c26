"""TorchEBM 0.8.9's own contrastive-divergence recipe (its docs, "Training EBMs" tutorial),
run unchanged in TorchEBM's venv on the points it is given; writes its samples.

    .bench/torchebm/bin/python benchmarks/peers/torchebm_cd.py IN.npy OUT.npy SEED N_SAMPLES

The recipe: an MLP 2-16-16-1 with SELU and a Tanh output; ``LangevinDynamics`` with cosine
schedules of the step (3e-2 -> 5e-3) and noise (3e-1 -> 1e-2) over 100 steps;
``ContrastiveDivergence(k_steps=10, persistent=True, buffer_size=256)``; Adam 1e-3, 200
epochs of batches of 256 (drop_last), gradient norm clipped at 1. Samples as the tutorial's
plotting helper draws them: chains from ``N(0, I)``, 200 steps of the same sampler.
"""

import sys

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchebm.core import BaseModel, CosineScheduler
from torchebm.losses import ContrastiveDivergence
from torchebm.samplers import LangevinDynamics


class MLPModel(BaseModel):
    def __init__(self, input_dim: int, hidden_dim: int = 16):
        super().__init__()
        self.network = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.SELU(),
                                     nn.Linear(hidden_dim, hidden_dim), nn.SELU(),
                                     nn.Linear(hidden_dim, 1), nn.Tanh())

    def forward(self, x):
        return self.network(x).squeeze(-1)


def main(src: str, dst: str, seed: int, n_samples: int) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    data = torch.as_tensor(np.load(src), dtype=torch.float32)
    loader = DataLoader(TensorDataset(data), batch_size=256, shuffle=True, drop_last=True)
    model = MLPModel(2, 16)
    sampler = LangevinDynamics(
        model=model, step_size=CosineScheduler(start_value=3e-2, end_value=5e-3, n_steps=100),
        noise_scale=CosineScheduler(start_value=3e-1, end_value=1e-2, n_steps=100))
    loss_fn = ContrastiveDivergence(model=model, sampler=sampler, k_steps=10,
                                    persistent=True, buffer_size=256)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(200):
        model.train()
        for (batch,) in loader:
            optimizer.zero_grad()
            loss, _ = loss_fn(batch)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            optimizer.step()
    model.eval()
    start = torch.randn(n_samples, 2)
    samples = sampler.sample(x=start, n_steps=200).detach()
    np.save(dst, samples.numpy())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
