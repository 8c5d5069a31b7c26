"""Run by tests/test_distributed.py under ``torchrun --nproc-per-node 2`` (and in-process for
the one-process reference). Usage: dist_worker.py MODE OUT_DIR."""

import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

import torchlangevin as tl
from torchlangevin import distributed, posterior, slt
from torchlangevin.distributions import DoubleWell


def core():
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    chains = tl.sample(tl.MALA(DoubleWell(2), 0.05), x0, 40, seed=5, chain_blocks=2,
                       progress=False)
    return chains.samples.numpy()


def problem():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(128, 2, generator=g)
    y = torch.sin(X[:, :1])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
    return model, (X, y)


CALLS = {"n": 0}


def loss(out, batch):
    CALLS["n"] += 1
    limit = int(os.environ.get("KILL_RANK1_AFTER", "0"))
    if limit and distributed.world()[0] == 1 and CALLS["n"] > limit:
        os._exit(1)  # a rank dies mid-run, as a preempted node would
    return 0.5 * (out - batch[1]).pow(2).squeeze(-1)


KW = dict(lr=1e-3, num_chains=4, num_draws=30, batch_size=32, seed=3, checkpoint_every=5,
          progress=False)


def run_posterior(store=None):
    model, data = problem()
    return posterior.sample(model, data, loss, store=store, **KW).dataset


def calibrate():
    model, data = problem()
    return slt.calibrate(model, data, loss, lrs=[1e-4, 1e-3, 3e-3], n_betas=[50.0],
                         num_chains=2, num_draws=20, batch_size=32)


def main(mode: str, out: Path) -> None:
    rank = distributed.world()[0] if distributed.init() else 0
    if mode == "core":
        result = core()
    elif mode == "posterior":
        result = run_posterior()["sampling_loss"].values
    elif mode == "store":
        result = run_posterior(out / "run.zarr")["sampling_loss"].values
        (out / f"calls{rank}.txt").write_text(str(CALLS["n"]))
    else:
        table = calibrate()
        result = table[["lr", "llc"]].to_numpy(float)
    if rank == 0:
        np.save(out / f"{mode}.npy", result)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
