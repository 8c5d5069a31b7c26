"""Run by tests/test_distributed.py under ``torchrun --nproc-per-node 2`` (and in-process for
the one-process reference). Usage: dist_worker.py MODE OUT_DIR.

MODE ``gather``: every gather at once (one launch; each costs seconds): the core sampler with
a module-level, a lambda and a closure energy, ``posterior.sample`` without and with a store,
and ``slt.calibrate``. MODE ``store``: ``posterior.sample`` into ``OUT_DIR/run.zarr``; with
``KILL_RANK1_AFTER=n`` rank 1 is SIGKILLed at its ``n+1``-th loss evaluation."""

import os
import signal
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

import torchlangevin as tl
from torchlangevin import distributed, posterior, slt
from torchlangevin.distributions import DoubleWell


def traces(chains: tl.Chains) -> dict[str, np.ndarray]:
    """Every per-chain tensor of a run, by name (what a gather must carry)."""
    out = {"samples": chains.samples, "energy": chains.energy, "final": chains.final,
           "divergences": chains.divergences, "nonfinite_step": chains.nonfinite_step}
    if chains.acceptance_rate is not None:
        out["acceptance_rate"] = chains.acceptance_rate
    return {k: v.numpy() for k, v in out.items()}


def core():
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    chains = tl.sample(tl.MALA(DoubleWell(2), 0.05), x0, 40, seed=5, chain_blocks=2,
                       progress=False)
    return traces(chains)


def lambda_energy():
    """ULA on a lambda; 63 chains, so the ranks hold 32 and 31 (unequal shares); the energy
    of the draws is computed after the gather, from each rank's own lambda."""
    x0 = torch.randn(63, 2, generator=torch.Generator().manual_seed(1))
    kernel = tl.Langevin(lambda x: 0.5 * x.pow(2).sum(-1), 0.1)
    return traces(tl.sample(kernel, x0, 30, seed=7, chain_blocks=2, progress=False))


def closure_energy():
    """MALA on a closure over a tensor (an anisotropic Gaussian)."""
    scale = torch.tensor([1.0, 3.0])

    def energy(x):
        return 0.5 * (x * scale).pow(2).sum(-1)

    x0 = torch.randn(10, 2, generator=torch.Generator().manual_seed(2))
    return traces(tl.sample(tl.MALA(energy, 0.2), x0, 30, seed=8, chain_blocks=2,
                            progress=False))


def collectives() -> dict[str, np.ndarray]:
    """The collectives on their own: shares of unequal length, bools, plain data, and the
    errors every rank raises together (so none is left waiting)."""
    rank = distributed.world()[0]
    rows = torch.arange(3 * (rank + 1), dtype=torch.float64).reshape(rank + 1, 3) + 10 * rank
    flags = torch.tensor([rank == 0, True, False][: rank + 2])
    plain = distributed.all_gather({"rank": rank, "x": np.float32(0.5), "s": [None, "a"]})
    errors = []
    for bad in (torch.zeros(2, 2, dtype=torch.float32 if rank else torch.float64),
                torch.zeros(2, 2 + rank)):
        try:
            distributed.all_gather_tensor(bad)
        except ValueError as e:
            errors.append("different dtypes or row shapes" in str(e))
    try:
        distributed.all_gather(lambda x: x)
    except TypeError as e:
        errors.append("plain data" in str(e))
    return {"rows": distributed.all_gather_tensor(rows).numpy(),
            "flags": distributed.all_gather_tensor(flags).numpy(),
            "empty": distributed.all_gather_tensor(torch.zeros(rank, 0, 2)).numpy(),
            "plain_ok": np.array(plain == [{"rank": r, "x": 0.5, "s": [None, "a"]}
                                           for r in range(2)]),
            "errors": np.array(errors)}


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
        os.kill(os.getpid(), signal.SIGKILL)  # a rank dies mid-run, as a preempted node would
    return 0.5 * (out - batch[1]).pow(2).squeeze(-1)


_HELD = torch.randn(16, 3, generator=torch.Generator().manual_seed(9)).split([2, 1], 1)
KW = dict(lr=1e-3, num_chains=5, num_draws=30, batch_size=32, seed=3, checkpoint_every=5,
          progress=False, observables={"held": _HELD})


def run_posterior(store=None):
    model, data = problem()
    return posterior.sample(model, data, loss, store=store, **KW).dataset


def arrays(ds) -> dict[str, np.ndarray]:
    """Every variable of a posterior result, coordinates included."""
    return {name: np.asarray(v.values) for name, v in ds.variables.items()}


def calibrate():
    model, data = problem()
    table = slt.calibrate(model, data, loss, lrs=[1e-4, 1e-3, 3e-3], n_betas=[50.0],
                          num_chains=2, num_draws=20, batch_size=32)
    return table[["lr", "llc"]].to_numpy(float)


def save(path: Path, results: dict[str, dict[str, np.ndarray]]) -> None:
    np.savez(path, **{f"{part}/{k}": v for part, d in results.items() for k, v in d.items()})


def main(mode: str, out: Path) -> None:
    rank = distributed.world()[0] if distributed.init() else 0
    if mode == "gather":
        results = {"collectives": collectives(), "core": core(), "lambda": lambda_energy(),
                   "closure": closure_energy(),
                   "posterior": arrays(run_posterior()),
                   "stored": arrays(run_posterior(out / "clean.zarr")),
                   "calibrate": {"table": calibrate()}}
    else:
        results = {"store": arrays(run_posterior(out / "run.zarr"))}
        (out / f"calls{rank}.txt").write_text(str(CALLS["n"]))
    if rank == 0:
        save(out / f"{mode}.npz", results)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
