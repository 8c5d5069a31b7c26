"""LLC sampling speed and agreement: torchlangevin against devinterp 2.0.1, in one run.

    python benchmarks/llc.py [--repeats 5] [--devinterp .bench/devinterp/bin/python]

The workload is devinterp's 1,185-parameter MLP config: a 2-32-32-1 tanh network trained on
a synthetic regression (1,000 rows), SGLD with batch 64, 100 burn-in steps then 200 draws,
chains 4 and 16, one observable of 64 rows evaluated at every draw (settings in
``torchlangevin.posterior.demo.LLC_CONFIG``). devinterp averages the loss over burn-in too;
torchlangevin over the draws only. Each side runs in its own process (devinterp in
its own virtual environment) on the same weights and data, one thread, and reports the median
wall time of ``--repeats`` runs after one warm-up. devinterp only takes language-model data,
so it gets ``input_ids = [row, 0]`` and a loss that looks the row up: the same arithmetic.
A long torchlangevin run (16 chains x 2,000 draws after 1,000 burn-in steps) is the reference
both estimates are compared with; each repeat uses a new seed, so the mean over repeats shows
each side's bias and the spread its noise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # the devinterp environment has torch, not this package

from torchlangevin.posterior.demo import LLC_CONFIG as CONFIG  # noqa: E402
from torchlangevin.posterior.demo import half_squared_error, mlp, trained_mlp  # noqa: E402


def setup(path: Path) -> None:
    """Train the network once and save weights and data for every side."""
    model, X, y = trained_mlp()
    torch.save({"state": model.state_dict(), "X": X, "y": y}, path)


def load(path: Path):
    blob = torch.load(path, weights_only=True)
    model = mlp()
    model.load_state_dict(blob["state"])
    return model, blob["X"], blob["y"]


def run_torchlangevin(path: Path, chains: int, draws: int, burnin: int | None = None,
                      seed: int = 0):
    from torchlangevin import posterior, slt

    model, X, y = load(path)
    kw = {**CONFIG, "num_draws": draws}
    if burnin is not None:
        kw["num_burnin_steps"] = burnin
    tree = posterior.sample(model, (X, y), half_squared_error, num_chains=chains,
                            observables={"train": ((X, y), 64)},
                            progress=False, seed=seed, **kw)
    return slt.llc(tree).mean


def run_devinterp(path: Path, chains: int, draws: int, seed: int = 0):
    import warnings

    from datasets import Dataset
    from devinterp.slt.llc import compute_llc
    from devinterp.slt.sampling import sample

    warnings.filterwarnings("ignore")
    model, X, y = load(path)
    ds = Dataset.from_dict({"input_ids": [[i, 0] for i in range(len(X))]})
    ds.set_format("torch")

    def loss_fn(model, input_ids):
        idx = input_ids[:, 0]
        return 0.5 * (model(X[idx]) - y[idx]).pow(2)  # (batch, 1): one "token"

    tmp = tempfile.mkdtemp()
    tree = sample(model, ds, {"train": (ds, 1)}, lr=CONFIG["lr"], n_beta=CONFIG["n_beta"],
                  localization=CONFIG["localization"], num_chains=chains, num_draws=draws,
                  batch_size=CONFIG["batch_size"], loss_fn=loss_fn,
                  num_burnin_steps=CONFIG["num_burnin_steps"],
                  device="cpu", init_seed=100 + 1000 * seed,
                  output_path=Path(tmp) / f"s{time.perf_counter_ns()}.zarr")
    return float(compute_llc(tree)["llc_mean"])


def worker(side: str, path: Path, chains: int, repeats: int) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("TQDM_DISABLE", "1")
    fn = run_torchlangevin if side == "torchlangevin" else run_devinterp
    fn(path, chains, 20)  # warm-up: imports, first vmap
    times, values = [], []
    for r in range(repeats):  # a new seed each time: the mean LLC over repeats shows the bias
        t = time.perf_counter()
        values.append(fn(path, chains, CONFIG["num_draws"], seed=r))
        times.append(time.perf_counter() - t)
    print(json.dumps({"times": times, "llc": values}))


def call(python: str, side: str, path: Path, chains: int, repeats: int) -> dict:
    env = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    out = subprocess.run([python, __file__, "--worker", side, "--setup-file", str(path),
                          "--chains", str(chains), "--repeats", str(repeats)],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"{side} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--devinterp", default=str(ROOT / ".bench/devinterp/bin/python"))
    ap.add_argument("--worker", choices=["torchlangevin", "devinterp"])
    ap.add_argument("--setup-file", type=Path)
    ap.add_argument("--chains", type=int, default=4)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.setup_file, args.chains, args.repeats)
        return
    path = Path(tempfile.mkdtemp()) / "mlp.pt"
    setup(path)
    torch.set_num_threads(1)
    reference = run_torchlangevin(path, 16, 2000, burnin=1000)
    print(f"reference LLC (torchlangevin, 16 chains x 2000 draws after 1000 burn-in): "
          f"{reference:.3f}")
    print("LLC: mean over repeats (one seed each) +- its standard error")
    print(f"{'chains':>6} {'side':>14} {'median s':>9} {'LLC':>15} {'vs ref':>7} {'speed-up':>9}")
    for chains in (4, 16):
        ours = call(sys.executable, "torchlangevin", path, chains, args.repeats)
        theirs = call(args.devinterp, "devinterp", path, chains, args.repeats)
        t_ours, t_theirs = statistics.median(ours["times"]), statistics.median(theirs["times"])
        for name, res, t in (("torchlangevin", ours, t_ours), ("devinterp", theirs, t_theirs)):
            value = statistics.mean(res["llc"])
            se = statistics.stdev(res["llc"]) / len(res["llc"]) ** 0.5 if args.repeats > 1 else 0
            speed = f"{t_theirs / t:.2f}x" if name == "torchlangevin" else ""
            print(f"{chains:>6} {name:>14} {t:>9.3f} {value:>7.3f} +- {se:<5.3f} "
                  f"{value / reference - 1:>+7.1%} {speed:>9}")


if __name__ == "__main__":
    main()
