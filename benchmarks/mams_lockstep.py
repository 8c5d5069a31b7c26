"""MAMS trajectories eagerly: the chains still moving only (the kernel's eager path) against
the masked lockstep (every chain takes ``max n`` steps; what a compiled block runs).

    python benchmarks/mams_lockstep.py [--targets banana,logreg_breast_cancer] \
        [--chains 128,20000] [--repeats 5]

Per target and number of chains: one MAMS trajectory (``n`` uniform on ``1 .. k``,
``k = 2 L / eps - 1 = 19``) from the same state and noise, timed alternately by
``MAMS._compacted`` and ``MAMS._masked``, ``--repeats`` pairs; the medians in ms, the
median of the paired ratios (masked / compacted: above 1, the eager path is faster), and
microseconds per gradient counted (``n`` per chain). One CPU thread. The energies are the
gradient benchmark's (``gradient_targets_torch``), differentiated by autograd where they
have no analytic gradient, as an eager run does. Both paths give the same trajectories
(``tests/test_mclmc.py``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gradient_targets  # noqa: E402
import gradient_targets_torch  # noqa: E402

import torchlangevin as tl  # noqa: E402
from torchlangevin.kernels.mclmc import _max_steps, _unit  # noqa: E402


def one(name: str, n_chains: int, repeats: int) -> dict:
    target = gradient_targets.get(name)
    energy = gradient_targets_torch.energy(target)
    energy = getattr(energy, "energy", energy)  # autograd, not torch.func, eagerly
    eps, length = 0.1, 1.0  # k = 19 steps at most, 10 on average
    kernel = tl.MAMS(energy, eps, L=length)
    x0 = torch.as_tensor(target.x0(n_chains, 0))
    state = kernel.init(x0)
    g = torch.Generator().manual_seed(1)
    u = _unit(torch.randn(x0.shape, generator=g))
    most, bound = _max_steps(eps, length)
    n_steps = 1 + torch.floor(torch.rand(n_chains, generator=g) * most).clamp(max=most - 1)
    args = (state, u, eps, 1.0, n_steps, bound)  # unit mass
    grads = float(n_steps.sum()) * kernel.grads_per_step / n_chains
    times: dict[str, list[float]] = {"compacted": [], "masked": []}
    with torch.no_grad():
        for path in times:  # warm-up
            getattr(kernel, f"_{path}")(*args)
        for _ in range(repeats):
            for path, ts in times.items():
                t0 = time.perf_counter()
                getattr(kernel, f"_{path}")(*args)
                ts.append(time.perf_counter() - t0)
    ratio = statistics.median(m / c for m, c in zip(times["masked"], times["compacted"],
                                                    strict=True))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"target": name, "chains": n_chains, "grads_per_chain": grads,
            "compacted_ms": 1e3 * med["compacted"], "masked_ms": 1e3 * med["masked"],
            "masked_over_compacted": ratio,
            "us_per_grad_compacted": 1e6 * med["compacted"] / grads,
            "us_per_grad_masked": 1e6 * med["masked"] / grads}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", default="banana,gaussian_k1e2,logreg_breast_cancer,brownian")
    p.add_argument("--chains", default="128,20000")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(1)
    print(f"{'target':22s} {'chains':>6s} {'compacted ms':>12s} {'masked ms':>10s} "
          f"{'masked/compacted':>16s} {'us/grad':>8s}")
    for name in a.targets.split(","):
        for c in (int(v) for v in a.chains.split(",")):
            r = one(name, c, a.repeats)
            print(f"{name:22s} {c:6d} {r['compacted_ms']:12.2f} {r['masked_ms']:10.2f} "
                  f"{r['masked_over_compacted']:16.2f} {r['us_per_grad_compacted']:8.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
