"""Throughput of workload (a) on 1 process against 2 processes (torchrun, gloo), one thread each.

    python benchmarks/distributed.py [--repeats 5] [--chains 20000] [--steps 5000]

Workload (a) of ``benchmarks/core.py``: ULA on the 2-D double well. The one-process run uses
``chain_blocks=2`` so that both runs compute the same samples; each process times only its
sampling call, gather included (after a barrier), and throughput is chains x steps / the
slowest rank's time.
Medians over repeats, alternating sides.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

import torchlangevin as tl
from torchlangevin import distributed
from torchlangevin.distributions import DoubleWell


def worker(chains: int, steps: int) -> None:
    torch.set_num_threads(1)
    distributed.init()
    x0 = torch.randn(chains, 2, generator=torch.Generator().manual_seed(0))
    kernel = tl.Langevin(DoubleWell(2), 0.01)
    tl.sample(kernel, x0, 20, seed=0, chain_blocks=2, progress=False)  # warm-up
    distributed.barrier()
    t = time.perf_counter()
    chains_out = tl.sample(kernel, x0, steps, seed=0, thin=steps, chain_blocks=2,
                           progress=False)  # each rank its block, then the gather
    seconds = time.perf_counter() - t
    rank = distributed.world()[0]
    assert chains_out.samples.shape[0] == chains
    times = distributed.all_gather(seconds)
    if rank == 0:
        print(json.dumps({"seconds": max(times)}))


def run(nproc: int, chains: int, steps: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, __file__, "--worker", "--chains", str(chains), "--steps", str(steps)]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(nproc), *cmd[1:]]
    for _attempt in range(3):  # a standalone rendezvous can lose its port to a neighbour
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode == 0:
            return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
    raise RuntimeError(out.stderr[-3000:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--chains", type=int, default=20_000)
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--worker", action="store_true")
    args = ap.parse_args()
    if args.worker:
        worker(args.chains, args.steps)
        return
    one, two = [], []
    for _ in range(args.repeats):
        one.append(run(1, args.chains, args.steps))
        two.append(run(2, args.chains, args.steps))
    work = args.chains * args.steps / 1e6
    r1, r2 = work / statistics.median(one), work / statistics.median(two)
    print(f"(a) ULA double well, {args.chains} chains x {args.steps} steps, 1 thread/process")
    print(f"1 process : {r1:7.1f} M chain-steps/s (median of {args.repeats})")
    print(f"2 processes: {r2:7.1f} M chain-steps/s  -> {r2 / r1:.2f}x")


if __name__ == "__main__":
    main()
