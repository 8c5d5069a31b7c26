"""Throughput of torchlangevin against a hand-written torch loop, in one process.

Workloads (chain-steps per second; an HMC "step" is one trajectory):
  (a) 2-D double well, ULA, 10,000 chains x 1,000 steps
  (b) 100-D standard Gaussian, MALA, 1,000 chains x 1,000 steps
  (c) 100-D standard Gaussian, HMC with 10 leapfrog steps, 1,000 chains x 100 trajectories

Both sides call the same analytic ``energy_and_grad`` / ``grad`` and keep the same
thinned draws (every 10th state, returned as a ``(chain, draw, *event)`` view);
the hand loops update in place. Runs alternate
library / hand loop, ``--repeats`` times; the table reports median rates and the
median of the paired ratios (library rate / hand-loop rate of back-to-back runs). The
last columns are the library with ``compile=True`` (timed after a warm-up run that
compiles) and its median paired ratio to the hand loop.

    python benchmarks/core.py [--repeats 7] [--json out.json] [--device cpu]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import time

import torch

import torchlangevin as tl
from torchlangevin.distributions import DoubleWell, Gaussian

THIN = 10


def hand_ula(target, x0, n_steps, step_size, seed):
    g = torch.Generator(device=x0.device).manual_seed(seed)
    x = x0.clone()
    noise = torch.empty_like(x)
    draws = []
    scale = math.sqrt(2 * step_size)
    for t in range(n_steps):
        grad = target.grad(x)
        noise.normal_(generator=g)
        x.add_(grad, alpha=-step_size).add_(noise, alpha=scale)
        if (t + 1) % THIN == 0:
            draws.append(x.clone())
    return torch.stack(draws).movedim(0, 1)


def hand_mala(target, x0, n_steps, step_size, seed):
    g = torch.Generator(device=x0.device).manual_seed(seed)
    x = x0.clone()
    e, grad = target.energy_and_grad(x)
    draws = []
    scale = math.sqrt(2 * step_size)
    for t in range(n_steps):
        xi = torch.randn(x.shape, generator=g, device=x.device)
        y = torch.add(x, grad, alpha=-step_size).add_(xi, alpha=scale)
        e_y, g_y = target.energy_and_grad(y)
        back = (x - y).add_(g_y, alpha=step_size)
        log_a = e - e_y + 0.5 * (xi * xi).sum(-1) - (back * back).sum(-1) / (4 * step_size)
        acc = torch.rand(x.shape[0], generator=g, device=x.device).log_() < log_a
        x = torch.where(acc[:, None], y, x)
        grad = torch.where(acc[:, None], g_y, grad)
        e = torch.where(acc, e_y, e)
        if (t + 1) % THIN == 0:
            draws.append(x.clone())
    return torch.stack(draws).movedim(0, 1)


def hand_hmc(target, x0, n_steps, step_size, n_leapfrog, seed):
    g = torch.Generator(device=x0.device).manual_seed(seed)
    x = x0.clone()
    e, grad = target.energy_and_grad(x)
    draws = []
    for t in range(n_steps):
        p = torch.randn(x.shape, generator=g, device=x.device)
        h0 = e + 0.5 * (p * p).sum(-1)
        y = x.clone()
        p.add_(grad, alpha=-step_size / 2)
        for i in range(n_leapfrog):
            y.add_(p, alpha=step_size)
            if i < n_leapfrog - 1:
                g_y = target.grad(y)
                p.add_(g_y, alpha=-step_size)
        e_y, g_y = target.energy_and_grad(y)
        p.add_(g_y, alpha=-step_size / 2)
        log_a = h0 - e_y - 0.5 * (p * p).sum(-1)
        acc = torch.rand(x.shape[0], generator=g, device=x.device).log_() < log_a
        x = torch.where(acc[:, None], y, x)
        grad = torch.where(acc[:, None], g_y, grad)
        e = torch.where(acc, e_y, e)
        if (t + 1) % THIN == 0:
            draws.append(x.clone())
    return torch.stack(draws).movedim(0, 1)


def workloads(device):
    gen = torch.Generator(device=device).manual_seed(0)
    well, gauss = DoubleWell(2), Gaussian(torch.zeros(100))
    xa = torch.randn(10_000, 2, generator=gen, device=device)
    xb = torch.randn(1_000, 100, generator=gen, device=device)
    def lib(kernel, x0, n, **kw):
        return lambda: tl.sample(kernel, x0, n, thin=THIN, seed=1, progress=False, **kw)

    hmc = tl.HMC(gauss, 0.2, 10, jitter=0.0)  # the hand loop's fixed step size
    return [
        ("(a) double well 2-D, ULA", 10_000 * 1_000, lib(tl.Langevin(well, 0.01), xa, 1_000),
         lambda: hand_ula(well, xa, 1_000, 0.01, 1),
         lib(tl.Langevin(well, 0.01), xa, 1_000, compile=True)),
        ("(b) Gaussian 100-D, MALA", 1_000 * 1_000, lib(tl.MALA(gauss, 0.3), xb, 1_000),
         lambda: hand_mala(gauss, xb, 1_000, 0.3, 1),
         lib(tl.MALA(gauss, 0.3), xb, 1_000, compile=True)),
        ("(c) Gaussian 100-D, HMC L=10", 1_000 * 100, lib(hmc, xb, 100),
         lambda: hand_hmc(gauss, xb, 100, 0.2, 10, 1), lib(hmc, xb, 100, compile=True)),
    ]


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.no_grad():
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    print(f"torchlangevin {tl.__version__}, torch {torch.__version__}, device {device}, "
          f"{torch.get_num_threads()} threads, {platform.machine()} "
          f"{platform.processor() or ''}, {datetime.date.today()}")
    print(f"{'workload':32} {'library M/s':>12} {'hand loop M/s':>14} {'ratio':>7} "
          f"{'compiled M/s':>13} {'ratio':>7}")
    for name, work, lib, hand, comp in workloads(device):
        timed(lib, device), timed(hand, device), timed(comp, device)  # warm-up, compile
        t_lib, t_hand, t_comp = [], [], []
        for _ in range(args.repeats):
            t_lib.append(timed(lib, device))
            t_hand.append(timed(hand, device))
            t_comp.append(timed(comp, device))
        lib_rate, hand_rate, comp_rate = (work / statistics.median(t) / 1e6
                                          for t in (t_lib, t_hand, t_comp))
        ratio = statistics.median(h / t for t, h in zip(t_lib, t_hand, strict=True))
        comp_ratio = statistics.median(h / t for t, h in zip(t_comp, t_hand, strict=True))
        rows.append({"workload": name, "library_M_per_s": lib_rate,
                     "hand_M_per_s": hand_rate, "ratio": ratio,
                     "compiled_M_per_s": comp_rate, "compiled_ratio": comp_ratio})
        print(f"{name:32} {lib_rate:12.2f} {hand_rate:14.2f} {ratio:7.2f} {comp_rate:13.2f} "
              f"{comp_ratio:7.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": str(datetime.date.today()), "device": str(device),
                       "torch": torch.__version__, "threads": torch.get_num_threads(),
                       "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
