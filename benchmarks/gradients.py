"""Gradient evaluations to low bias: torchlangevin's samplers against BlackJAX's.

    python benchmarks/gradients.py [--targets a,b] [--samplers hmc] [--chains 128]
                                   [--quick] [--out results.json] [--no-blackjax]
    python benchmarks/gradients.py --check      # torch and JAX densities agree
    make bench-gradients                        # builds .bench/blackjax first

For every target (``gradient_targets``) and sampler, 128 chains: the gradient evaluations
per chain until the squared bias of ``E[x^2]`` stays below 0.01 (``gradient_metrics``:
median over chains of the per-chain ``b^2``, mean over parameters and worst parameter,
as the MAMS paper scores), the tuning gradients apart, and microseconds of wall time per
gradient evaluation of all chains (ours ``compile=True``, BlackJAX ``jax.jit``; one CPU
thread each). BlackJAX runs in its own venv (``peers/blackjax_gradients.py``, one
subprocess per target, alternating with ours target by target so both sides see the
same machine load).

Our samplers come from ``SAMPLERS``: a function ``run(target, n_chains, n_warmup,
n_steps, seed) -> Result``. To add one (NUTS, MCLMC, MAMS, ChEES-HMC as they land):
write ``run_<name>`` the way :func:`run_hmc` is written (tune, sample, report the
gradients every step cost each chain), add it to ``SAMPLERS`` under its name, and, if a
BlackJAX sampler implements the same algorithm, to ``SAME_ALGORITHM`` so the table shows
the ratio.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gradient_metrics  # noqa: E402
import gradient_targets  # noqa: E402
import gradient_targets_torch  # noqa: E402

import torchlangevin as tl  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# the venv `make bench-venv-blackjax` builds; BLACKJAX_PYTHON overrides (a git worktree
# can borrow the main checkout's .bench)
BLACKJAX_PY = Path(os.environ.get("BLACKJAX_PYTHON",
                                  ROOT / ".bench" / "blackjax" / "bin" / "python"))
BLACKJAX_RUNNER = ROOT / "benchmarks" / "peers" / "blackjax_gradients.py"
BLACKJAX_SAMPLERS = ["nuts", "mclmc", "adjusted_mclmc", "chees"]
# draws per chain after tuning: enough for NUTS to reach b^2 < 0.01 on most targets
# within a few CPU minutes per (target, sampler); the warm-up is WARMUP steps.
STEPS = {"banana": 4000, "gaussian_k1e2": 2000, "gaussian_k1e4": 4000,
         "rosenbrock36": 4000, "funnel10": 4000, "brownian": 2000, "item_response": 1000,
         "logreg_breast_cancer": 2000, "stochastic_volatility": 2000}
WARMUP = 1000
BLOCK = 50  # our compiled block length (steps); STEPS are multiples of it
QUICK = {"targets": ["banana", "gaussian_k1e2"], "steps": 400, "warmup": 200}
# ours -> BlackJAX's implementation of the same algorithm, for the ratio column
SAME_ALGORITHM = {"nuts": "nuts", "mclmc": "mclmc", "mams": "adjusted_mclmc",
                  "chees": "chees"}


@dataclass
class Result:
    """One sampler's run on one target.

    Attributes:
        draws: ``(C, n, d)`` post-tuning states, unconstrained coordinates.
        grads_per_step: gradients each step cost each chain: ``(C, n)``, ``(n,)`` or a float.
        tuning_grads: gradients per chain spent tuning (mean over chains).
        seconds: wall time of the sampling (compilation excluded as far as possible).
        tuning_seconds: wall time of the tuning, compilation included.
    """

    draws: np.ndarray
    grads_per_step: np.ndarray | float
    tuning_grads: float
    seconds: float
    tuning_seconds: float = float("nan")


def run_hmc(target: gradient_targets.Target, n_chains: int, n_warmup: int, n_steps: int,
            seed: int, n_leapfrog: int = 10) -> Result:
    """``tl.HMC`` (``L = 10``, jittered step) tuned by ``tl.adapt`` (step size to 0.8
    acceptance, diagonal mass in Stan's windows), then ``tl.sample(compile=True)``.
    ``L`` gradients per step (the leapfrog reuses the last gradient)."""
    energy = gradient_targets_torch.energy(target)
    x0 = torch.as_tensor(target.x0(n_chains, seed))
    kernel = tl.HMC(energy, step_size=0.1, n_leapfrog_steps=n_leapfrog)
    t0 = time.perf_counter()
    adapted = tl.adapt(kernel, x0, n_warmup, seed=seed, compile=True)
    t_tune = time.perf_counter() - t0
    chains, seconds = _timed_sample(adapted.kernel, adapted.x, n_steps, seed, compiled=True)
    return Result(chains.samples.numpy(), float(n_leapfrog), float(n_warmup * n_leapfrog),
                  seconds, t_tune)


def _timed_sample(kernel, x: torch.Tensor, n_steps: int, seed: int, compiled: bool
                  ) -> tuple[tl.Chains, float]:
    """``tl.sample`` timed; compiled in blocks of ``BLOCK`` steps, after one untimed block
    that compiles the graph the timed run reuses (blocks of another length would compile
    again inside the timing)."""
    block = {"compile": BLOCK} if compiled else {}
    if compiled:
        tl.sample(kernel, x, BLOCK, seed=seed + 1, progress=False, **block)
    t0 = time.perf_counter()
    chains = tl.sample(kernel, x, n_steps, seed=seed, progress=False, **block)
    return chains, time.perf_counter() - t0


def _grads(chains: tl.Chains) -> np.ndarray:
    """``(C, n)`` gradients each draw's step cost each chain (``thin = 1``)."""
    return chains.stats["n_grads"].cpu().numpy().astype(np.float64)


def _tuning_per_chain(n_grads: torch.Tensor) -> float:
    """Mean tuning gradients per chain from the ``(C,)`` count every tuner returns."""
    return float(n_grads.double().mean())


def run_nuts(target: gradient_targets.Target, n_chains: int, n_warmup: int, n_steps: int,
             seed: int) -> Result:
    """``tl.NUTS(compile=True)`` tuned by ``tl.adapt`` (step size to 0.8 acceptance,
    diagonal mass in Stan's windows, as BlackJAX's ``window_adaptation``), then
    ``tl.sample``: each step one compiled graph (a loop over leaves, every chain at its
    own place in its tree; the compiling happens during the tuning, which is timed
    apart). Its own gradient counts."""
    energy = gradient_targets_torch.energy(target)
    x0 = torch.as_tensor(target.x0(n_chains, seed))
    t0 = time.perf_counter()
    adapted = tl.adapt(tl.NUTS(energy, step_size=0.1, compile=True), x0, n_warmup, seed=seed)
    t_tune = time.perf_counter() - t0
    chains, seconds = _timed_sample(adapted.kernel, adapted.x, n_steps, seed, compiled=False)
    return Result(chains.samples.numpy(), _grads(chains), _tuning_per_chain(adapted.n_grads),
                  seconds, t_tune)


def run_chees(target: gradient_targets.Target, n_chains: int, n_warmup: int, n_steps: int,
              seed: int) -> Result:
    """``tl.ChEESHMC`` tuned by ``tl.chees_adapt`` (step size to 0.651 harmonic-mean
    acceptance, ``T`` by Adam on ChEES, diagonal mass in Stan's windows as BlackJAX's
    ``mass_matrix_estimation="diagonal"``), then ``tl.sample(compile=True)``."""
    energy = gradient_targets_torch.energy(target)
    x0 = torch.as_tensor(target.x0(n_chains, seed))
    t0 = time.perf_counter()
    adapted = tl.chees_adapt(tl.ChEESHMC(energy, step_size=0.1), x0, n_warmup,
                             adapt_mass=True, seed=seed, compile=True)
    t_tune = time.perf_counter() - t0
    chains, seconds = _timed_sample(adapted.kernel, adapted.x, n_steps, seed, compiled=True)
    return Result(chains.samples.numpy(), _grads(chains), _tuning_per_chain(adapted.n_grads),
                  seconds, t_tune)


def _microcanonical(kernel: tl.MCLMC | tl.MAMS, tune: Callable[..., tl.Tuned],
                    x0: torch.Tensor, n_warmup: int, n_steps: int, seed: int,
                    compiled: bool) -> Result:
    """Tune (``n_warmup`` steps: the three stages' fractions of ``n_warmup / 0.3``, as
    BlackJAX's runner), then sample; gradients per draw from ``chains.stats``."""
    t0 = time.perf_counter()
    tuned = tune(kernel, x0, round(n_warmup / 0.3), seed=seed)  # eager, as measured so far
    t_tune = time.perf_counter() - t0
    chains, seconds = _timed_sample(tuned.kernel, tuned.x, n_steps, seed, compiled)
    return Result(chains.samples.numpy(), _grads(chains), _tuning_per_chain(tuned.n_grads),
                  seconds, t_tune)


def run_mclmc(target: gradient_targets.Target, n_chains: int, n_warmup: int, n_steps: int,
              seed: int) -> Result:
    """``tl.MCLMC`` (McLachlan) tuned by ``tl.tune_mclmc`` (diagonal preconditioning),
    then ``tl.sample(compile=True)``."""
    d = target.dim
    kernel = tl.MCLMC(gradient_targets_torch.energy(target), d**0.5 / 4, L=d**0.5)
    return _microcanonical(kernel, tl.tune_mclmc, torch.as_tensor(target.x0(n_chains, seed)),
                           n_warmup, n_steps, seed, compiled=True)


def run_mams(target: gradient_targets.Target, n_chains: int, n_warmup: int, n_steps: int,
             seed: int) -> Result:
    """``tl.MAMS(compile=True)`` (each isokinetic step compiled, the trajectory's loop
    Python) tuned by ``tl.tune_mams`` (diagonal preconditioning), then ``tl.sample``: the
    compiling happens during the tuning, which is timed apart."""
    d = target.dim
    energy = gradient_targets_torch.energy(target)
    kernel = tl.MAMS(getattr(energy, "energy", energy), d**0.5 / 5, L=d**0.5, compile=True)
    return _microcanonical(kernel, tl.tune_mams, torch.as_tensor(target.x0(n_chains, seed)),
                           n_warmup, n_steps, seed, compiled=False)


SAMPLERS: dict[str, Callable[..., Result]] = {"hmc": run_hmc, "nuts": run_nuts,
                                              "chees": run_chees, "mclmc": run_mclmc,
                                              "mams": run_mams}


def score(target: gradient_targets.Target, name: str, result: Result, n_chains: int,
          n_warmup: int) -> dict:
    """``gradient_metrics`` summary of ``result``, in the layout BlackJAX's runner emits."""
    e_x2, var_x2 = target.moments()
    curve = gradient_metrics.BiasCurve(e_x2, var_x2)
    g = np.broadcast_to(np.asarray(result.grads_per_step, np.float64), result.draws.shape[:2])
    for s in range(0, result.draws.shape[1], 250):
        curve.add(target.transform(result.draws[:, s:s + 250].astype(np.float64)),
                  g[:, s:s + 250])
    out = curve.summary()
    total = out["grads_per_step"] * out["n_draws"]
    out.update(sampler=name, target=target.name, side="torchlangevin", chains=n_chains,
               warmup=n_warmup, tuning_grads=result.tuning_grads,
               tuning_seconds=result.tuning_seconds, seconds=result.seconds,
               us_per_grad=1e6 * result.seconds / total)
    return out


def run_blackjax(target: str, samplers: list[str], n_chains: int, n_warmup: int,
                 n_steps: int, seed: int) -> list[dict]:
    """BlackJAX's runner in its venv for one target; its results."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bj.json"
        cmd = [str(BLACKJAX_PY), str(BLACKJAX_RUNNER), "--targets", target, "--samplers",
               ",".join(samplers), "--chains", str(n_chains), "--warmup", str(n_warmup),
               "--steps", str(n_steps), "--seed", str(seed), "--out", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            raise RuntimeError(f"BlackJAX runner failed on {target}:\n{done.stderr[-3000:]}")
        sys.stderr.write(done.stderr)
        return json.loads(out.read_text())["results"]


def check_densities(n: int = 5, seed: int = 0) -> dict[str, float]:
    """Torch energies at random points (float64) against BlackJAX's runner's JAX log
    densities: ``log p + E`` must be constant over the points; the relative spread."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name in gradient_targets.BUILDERS:
        target = gradient_targets.get(name)
        x = rng.standard_normal((n, target.dim))
        e = gradient_targets_torch.energy(target, torch.float64)(torch.as_tensor(x))
        arrays[f"{name}_x"], arrays[f"{name}_energy"] = x, e.numpy()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "points.npz"
        np.savez(path, **arrays)
        done = subprocess.run([str(BLACKJAX_PY), str(BLACKJAX_RUNNER), "--check", str(path)],
                              capture_output=True, text=True, timeout=600)
    if not done.stdout.strip():
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout)


def _fmt(g: float) -> str:
    if not np.isfinite(g):
        return "inf"
    return f"{g / 1e6:.2f}M" if g >= 1e6 else f"{g / 1e3:.1f}k" if g >= 1e3 else f"{g:.0f}"


def _ratio(ours: float, theirs: float) -> str:
    """``ours / theirs``; ``-`` where neither reached the threshold (both ``inf``)."""
    if not (np.isfinite(ours) or np.isfinite(theirs)):
        return "-"
    return f"{ours / theirs:.2f}" if theirs else "nan"


SIDE = {"torchlangevin": "ours", "blackjax": "bj"}


def table(rows: list[dict]) -> str:
    """One line per (target, sampler): grads to b^2 < 0.01 avg / worst (per-chain median,
    and pooled over chains), tuning grads, us per gradient, ours / BlackJAX's."""
    by_key = {(r["target"], r["side"], r["sampler"]): r for r in rows}
    head = (f"{'target':22s} {'sampler':22s} {'avg':>8s} {'worst':>8s} {'pooled':>15s} "
            f"{'tuning':>8s} {'us/grad':>8s}  ours/BlackJAX (grads avg, worst; us/grad)")
    lines = [head, "-" * len(head)]
    for r in rows:
        line = (f"{r['target']:22s} {SIDE[r['side']] + ' ' + r['sampler']:22s} "
                f"{_fmt(r['grads_to_avg']):>8s} {_fmt(r['grads_to_max']):>8s} "
                f"{_fmt(r['grads_to_pooled_avg']) + '/' + _fmt(r['grads_to_pooled_max']):>15s} "
                f"{_fmt(r['tuning_grads']):>8s} {r['us_per_grad']:8.1f}")
        peer = by_key.get((r["target"], "blackjax", SAME_ALGORITHM.get(r["sampler"], "")))
        if r["side"] == "torchlangevin" and peer is not None:
            line += "  " + ", ".join(_ratio(r[k], peer[k])
                                     for k in ("grads_to_avg", "grads_to_max", "us_per_grad"))
        lines.append(line)
    return "\n".join(lines)


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", default=",".join(gradient_targets.BUILDERS))
    p.add_argument("--samplers", default=",".join([*SAMPLERS, *BLACKJAX_SAMPLERS]),
                   help=f"ours {sorted(SAMPLERS)}, BlackJAX's {BLACKJAX_SAMPLERS}")
    p.add_argument("--chains", type=int, default=128)
    p.add_argument("--steps", type=int, help="draws per chain (default: STEPS per target)")
    p.add_argument("--warmup", type=int, default=WARMUP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    p.add_argument("--no-blackjax", action="store_true")
    p.add_argument("--check", action="store_true", help="torch vs JAX densities, then exit")
    p.add_argument("--out", help="JSON file for every result (curves included)")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="join earlier --out files (one per target), print the table, exit")
    return p.parse_args()


def merge(paths: list[str], out: str | None) -> None:
    """Join ``--out`` files of runs made target by target; print their table; write the
    joined file (the first file's meta, the targets and each file's steps added)."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    rows = [r for run in runs for r in run["results"]]
    meta = dict(runs[0]["meta"], targets=list(dict.fromkeys(r["target"] for r in rows)),
                steps={r["target"]: r["n_draws"] for r in rows if r["side"] == "blackjax"},
                parts=[Path(p).name for p in paths])
    print(table(rows))
    if out:
        Path(out).write_text(json.dumps({"meta": meta, "results": rows}))


def main() -> None:
    a = _args()
    torch.set_num_threads(1)  # one CPU thread, as BlackJAX's side
    if a.merge:
        merge(a.merge, a.out)
        return
    if a.check:
        gaps = check_densities()
        print("\n".join(f"{k:22s} relative spread of log p + E: {v:.1e}"
                        for k, v in gaps.items()))
        sys.exit(0 if max(gaps.values()) < 1e-9 else 1)
    targets = QUICK["targets"] if a.quick else a.targets.split(",")
    warmup = QUICK["warmup"] if a.quick else a.warmup
    samplers = a.samplers.split(",")
    ours = [s for s in samplers if s in SAMPLERS]
    peers = [s for s in samplers if s in BLACKJAX_SAMPLERS]
    if peers and not a.no_blackjax and not BLACKJAX_PY.exists():
        sys.exit(f"{BLACKJAX_PY} missing: `make bench-venv-blackjax`, or --no-blackjax")
    rows = []
    for name in targets:
        target = gradient_targets.get(name)
        try:
            target.moments()
        except FileNotFoundError as err:  # a reference not made yet: say so, go on
            print(f"skipping {name}: {err}", file=sys.stderr)
            continue
        steps = QUICK["steps"] if a.quick else a.steps or STEPS[name]
        if peers and not a.no_blackjax:
            rows += run_blackjax(name, peers, a.chains, warmup, steps, a.seed)
        for s in ours:
            rows.append(score(target, s, SAMPLERS[s](target, a.chains, warmup, steps, a.seed),
                              a.chains, warmup))
            print(f"{name} ours {s} done", file=sys.stderr, flush=True)
    print(f"\n{datetime.date.today()}, {platform.machine()}, {platform.node()}, torch "
          f"{torch.__version__}, {a.chains} chains, 1 thread; gradients per chain to "
          f"b^2 < 0.01 (median over chains; pooled = estimate pooled over chains)")
    print(table(rows))
    if a.out:
        meta = {"date": str(datetime.date.today()), "machine": platform.machine(),
                "torch": torch.__version__, "chains": a.chains, "warmup": warmup,
                "cpu_threads": 1, "omp": os.environ.get("OMP_NUM_THREADS")}
        Path(a.out).write_text(json.dumps({"meta": meta, "results": rows}))


if __name__ == "__main__":
    main()
