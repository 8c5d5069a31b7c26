"""ESS per second: ``tl.sample_posterior`` against NumPyro's vectorized NUTS on the
posteriordb ports and the eight schools, and against Pyro's NUTS on the eight schools.

    python benchmarks/ess_per_second.py [name ...] [--chains 16] [--warmup 1000]
        [--draws 1000] [--runs 3] [--pyro-chains 4] [--no-pyro] [--out results.json]
    make bench-ess        # builds .bench/numpyro first

Every side runs in its own process: ours and Pyro's in this venv, NumPyro's in
``.bench/numpyro`` (``NUMPYRO_PYTHON`` overrides; ``peers/numpyro_worker.py``), each on one
CPU thread (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``, XLA's single-thread flags
and one host device). The workers stay up for the whole benchmark and take one run at a
time, so JAX compiles once per posterior (an untimed run of the same shapes first) and
the sides alternate run by run under the same machine load (who goes first alternates
too). Same chains, warm-up and draws on every side, ``--runs`` runs each with its own
seed; every figure in the table is the median over the runs.

ESS: ArviZ's bulk ESS of each coordinate of the model's parameters (constrained: Stan's
and the models' own parameters, not derived quantities), the minimum, computed here from
every side's draws alike; divided by the seconds of sampling (warm-up apart: its seconds
are reported too). Gradients per chain: NUTS's leapfrog steps as each sampler reports them
(Pyro reports none). Ours is what ``tl.sample_posterior`` runs by default (NUTS, dense mass
up to ``DENSE_UP_TO`` dimensions, ``target_accept`` 0.8); NumPyro's and Pyro's are their
NUTS defaults (diagonal mass, 0.8). Pyro has no vectorised chains: its chains run one
after another in one process (``num_chains=1`` each), which is what one thread allows.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NUMPYRO_PY = Path(os.environ.get("NUMPYRO_PYTHON",
                                 ROOT / ".bench" / "numpyro" / "bin" / "python"))
NUMPYRO_WORKER = ROOT / "benchmarks" / "posteriordb" / "peers" / "numpyro_worker.py"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "XLA_FLAGS": "--xla_force_host_platform_device_count=1 "
                           "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}
EIGHT = ("eight_schools_noncentred", "eight_schools_centred")
#: the eight schools through ``tl.from_pyro`` (the Pyro model itself): ours only
FROM_PYRO = "eight_schools_noncentred_from_pyro"
DEFAULT = ["kidiq_with_mom_work-kidscore_mom_work", "earnings-logearn_interaction_z",
           "kilpisjarvi_mod-kilpisjarvi", "nes1972-nes", *EIGHT]


# ------------------------------------------------------------------------ the models
def eight_schools_data():
    import torch

    y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0], dtype=torch.float64)
    sigma = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0],
                         dtype=torch.float64)
    return y, sigma


def eight_schools_model(centred: bool):
    """The eight schools as a :class:`~torchlangevin.model.Model`: ``mu ~ N(0, 5)``,
    ``tau ~ HalfCauchy(5)``, ``theta ~ N(mu, tau)`` (centred) or ``theta = mu + tau eta``,
    ``eta ~ N(0, 1)`` (non-centred), ``y ~ N(theta, sigma)``."""
    from torch.distributions import HalfCauchy, Normal, constraints

    from torchlangevin.model import Model, Param

    y, sigma = eight_schools_data()

    def prior(p):  # unchecked: a trajectory may reach NaN (a divergence, not an error)
        return (Normal(0.0, 5.0, validate_args=False).log_prob(p.mu)
                + HalfCauchy(5.0, validate_args=False).log_prob(p.tau))

    if centred:
        def log_joint(p):
            theta = Normal(p.mu[..., None], p.tau[..., None], validate_args=False)
            return (prior(p) + theta.log_prob(p.theta).sum(-1)
                    + Normal(p.theta, sigma, validate_args=False).log_prob(y).sum(-1))

        return Model(log_joint, {"mu": Param(), "tau": Param((), constraints.positive),
                                 "theta": Param((8,))})

    def log_joint(p):
        theta = p.mu[..., None] + p.tau[..., None] * p.eta
        return (prior(p) + Normal(0.0, 1.0, validate_args=False).log_prob(p.eta).sum(-1)
                + Normal(theta, sigma, validate_args=False).log_prob(y).sum(-1))

    return Model(log_joint, {"mu": Param(), "tau": Param((), constraints.positive),
                             "eta": Param((8,))})


def our_model(name: str):
    import torchlangevin as tl

    if name in EIGHT:
        return eight_schools_model(name == "eight_schools_centred")
    if name == FROM_PYRO:
        from tests.test_pyro_model import J, noncentred

        y, sigma = eight_schools_data()
        return tl.from_pyro(noncentred, J, sigma, y=y)
    from benchmarks.posteriordb.ports import PORTS, load

    if name not in PORTS:
        raise ValueError(f"no torch port of {name!r}; the ports are {sorted(PORTS)}")
    return load(name)[0]


# ------------------------------------------------------------------- the two workers
class _Timed:
    """Wraps one of the calls ``sample_posterior`` makes and keeps its wall time."""

    def __init__(self, fn) -> None:
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds = time.perf_counter() - start


def torch_run(req: dict, models: dict) -> dict:
    """``tl.sample_posterior`` as a user calls it; its warm-up (``adapt``) and its
    sampling (the driver's ``sample``) timed apart by wrapping the two calls it makes."""
    import torch

    import torchlangevin as tl
    from torchlangevin import model as tl_model

    if req["name"] not in models:
        models[req["name"]] = m = our_model(req["name"])
        with warnings.catch_warnings():  # a first short run: lazy initialisation
            warnings.simplefilter("ignore")
            tl.sample_posterior(m, req["chains"], 20, 20, seed=10_000,
                                compile=req.get("compile", False))
    m = models[req["name"]]
    adapt, run = _Timed(tl_model.adapt), _Timed(tl_model.run_kernel)
    tl_model.adapt, tl_model.run_kernel = adapt, run
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = tl.sample_posterior(m, req["chains"], req["warmup"], req["draws"],
                                         seed=req["seed"], compile=req.get("compile", False))
    finally:
        tl_model.adapt, tl_model.run_kernel = adapt.fn, run.fn
    draws = {k: result.posterior[k].numpy() for k in m.param_names}
    np.savez(req["out"], **draws)
    n_grads = result.adapted.n_grads
    return {"warmup_s": adapt.seconds, "sample_s": run.seconds,
            "grads_warmup": float(n_grads.double().mean()) if n_grads is not None else None,
            "grads_sample": float(result.chains.n_grads.double().mean()),
            "divergences": int(result.chains.divergences.sum()),
            "torch_threads": torch.get_num_threads()}


def pyro_run(req: dict) -> dict:
    """Pyro's NUTS (its defaults) on the Pyro eight schools of ``tests/test_pyro_model``,
    float64, the chains one after another; warm-up and sampling timed apart by the
    MCMC's hook (called after every iteration)."""
    import pyro
    import torch
    from pyro.infer import MCMC, NUTS

    from tests.test_pyro_model import J, centred, noncentred

    y, sigma = eight_schools_data()
    fn = {"eight_schools_noncentred": noncentred, "eight_schools_centred": centred}[req["name"]]
    warm = sample = 0.0
    draws: dict[str, list] = {}
    divergences = 0
    for c in range(req["chains"]):
        pyro.set_rng_seed(1000 * req["seed"] + c)
        marks: dict[str, float] = {}

        def hook(kernel, samples, stage, i, marks=marks):
            marks[stage] = time.perf_counter()

        mcmc = MCMC(NUTS(fn), num_samples=req["draws"], warmup_steps=req["warmup"],
                    num_chains=1, disable_progbar=True, hook_fn=hook)
        start = time.perf_counter()
        mcmc.run(J, sigma, y=y)
        end = time.perf_counter()
        warm += marks["Warmup"] - start
        sample += end - marks["Warmup"]
        divergences += sum(len(v) for v in mcmc.diagnostics()["divergences"].values())
        for k, v in mcmc.get_samples(group_by_chain=True).items():
            draws.setdefault(k, []).append(v[0].numpy())
    np.savez(req["out"], **{k: np.stack(v) for k, v in draws.items()})
    return {"warmup_s": warm, "sample_s": sample, "grads_warmup": None,
            "grads_sample": None, "divergences": divergences,
            "torch_threads": torch.get_num_threads()}


def serve(side: str) -> None:
    """A worker: one JSON request a line on stdin, one ``@@``-prefixed reply on stdout."""
    import torch

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    real_stdout, sys.stdout = sys.stdout, sys.stderr
    models: dict = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            reply = torch_run(req, models) if side == "torch" else pyro_run(req)
        except Exception as exc:  # shown by the orchestrator, which stops
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        real_stdout.write("@@" + json.dumps(reply) + "\n")
        real_stdout.flush()


# ---------------------------------------------------------------------- orchestrator
class Worker:
    """A worker process and its request/reply lines."""

    def __init__(self, side: str, cmd: list[str]) -> None:
        env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(ROOT / "src")}
        self.side = side
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=ROOT)

    def run(self, req: dict) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith("@@"):
                reply = json.loads(line[2:])
                if "error" in reply:
                    raise RuntimeError(f"{self.side} worker on {req['name']}: "
                                       f"{reply['error']}")
                return reply
        raise RuntimeError(f"{self.side} worker exited (code {self.proc.wait()})")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def min_ess(path: Path, names: list[str]) -> float:
    """ArviZ's bulk ESS, the minimum over every coordinate of ``names``' draws."""
    import arviz as az

    with np.load(path) as z:
        draws = {k: z[k] for k in names}
    ess = az.ess(az.from_dict(posterior=draws), method="bulk")
    return float(min(np.min(ess[k].values) for k in names))


def one(worker: Worker, name: str, params: list[str], args, chains: int, seed: int,
        tmp: Path) -> dict:
    out = tmp / f"{worker.side}-{name}-{seed}.npz"
    req = {"name": name, "chains": chains, "warmup": args.warmup, "draws": args.draws,
           "seed": seed, "out": str(out), "compile": args.compile}
    reply = worker.run(req)
    reply["ess_bulk_min"] = ess = min_ess(out, params)
    reply["ess_per_s"] = ess / reply["sample_s"]
    reply["seed"] = seed
    print(f"  {worker.side:8s} {name}: ESS {ess:7.0f}, {reply['sample_s']:7.2f} s sampling "
          f"({reply['warmup_s']:6.2f} s warm-up), {reply['ess_per_s']:8.1f} ESS/s, "
          f"{reply['divergences']} divergences", flush=True)
    return reply


def _median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarise(runs: dict[str, list[dict]]) -> dict:
    keys = ("ess_per_s", "ess_bulk_min", "sample_s", "warmup_s", "grads_warmup",
            "grads_sample", "divergences")
    return {side: {k: _median(r, k) for k in keys} for side, r in runs.items()}


def param_names(name: str) -> list[str]:
    return our_model(name).param_names


def _pairs(names: list[str], args) -> list[tuple[str, str, str, int]]:
    """(label, our model, peer side, chains) per comparison."""
    pairs = [(n, n, "numpyro", args.chains) for n in names if n != FROM_PYRO]
    if not args.no_pyro:
        pairs.append(("eight_schools_noncentred vs Pyro", "eight_schools_noncentred", "pyro",
                      args.pyro_chains))
        if args.from_pyro:
            pairs.append(("eight_schools_noncentred (from_pyro) vs Pyro", FROM_PYRO, "pyro",
                          args.pyro_chains))
    return pairs


def bench(args) -> dict:
    sides = {"torch": Worker("torch", [sys.executable, __file__, "--serve", "torch"])}
    if any(p[2] == "numpyro" for p in _pairs(args.names, args)):
        sides["numpyro"] = Worker("numpyro", [str(NUMPYRO_PY), str(NUMPYRO_WORKER)])
    if not args.no_pyro:
        sides["pyro"] = Worker("pyro", [sys.executable, __file__, "--serve", "pyro"])
    results: dict[str, dict] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.runs):
                for i, (label, ours, peer, chains) in enumerate(_pairs(args.names, args)):
                    seed = args.seed + r
                    peer_name = "eight_schools_noncentred" if ours == FROM_PYRO else ours
                    params = param_names(peer_name)
                    order = [(sides["torch"], ours), (sides[peer], peer_name)]
                    if (r + i) % 2:
                        order.reverse()
                    entry = results.setdefault(label, {"ours": [], peer: []})
                    for worker, name in order:
                        key = "ours" if worker.side == "torch" else peer
                        entry[key].append(one(worker, name, params, args, chains, seed,
                                              Path(tmp)))
                    if args.out:  # what has been measured so far, should the run be cut
                        args.out.with_suffix(".partial.json").write_text(
                            json.dumps(results, indent=1, default=str))
    finally:
        for w in sides.values():
            w.close()
    return results


def table(results: dict) -> tuple[str, dict]:
    lines = ["| comparison | ours ESS/s | peer ESS/s | ratio | ours min ESS | peer min ESS "
             "| ours sampling s | peer sampling s | ours warm-up s | peer warm-up s "
             "| ours grads/chain (warm-up + draws) | peer grads/chain | divergences ours / peer |",
             "|" + "---|" * 13]
    summary = {}
    for label, runs in results.items():
        peer = next(k for k in runs if k != "ours")
        s = summarise(runs)
        o, p = s["ours"], s[peer]
        ratio = o["ess_per_s"] / p["ess_per_s"]
        summary[label] = {"peer": peer, "ratio": ratio, **{f"ours_{k}": v for k, v in o.items()},
                          **{f"peer_{k}": v for k, v in p.items()}}

        def grads(d):
            if d["grads_warmup"] is None:
                return "n/a"
            return f"{d['grads_warmup']:.0f} + {d['grads_sample']:.0f}"

        lines.append(
            f"| {label} ({peer}) | {o['ess_per_s']:.1f} | {p['ess_per_s']:.1f} | "
            f"{ratio:.3g}x | {o['ess_bulk_min']:.0f} | {p['ess_bulk_min']:.0f} | "
            f"{o['sample_s']:.2f} | {p['sample_s']:.2f} | {o['warmup_s']:.2f} | "
            f"{p['warmup_s']:.2f} | {grads(o)} | {grads(p)} | "
            f"{o['divergences']:.0f} / {p['divergences']:.0f} |")
    return "\n".join(lines), summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=DEFAULT)
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--pyro-chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-pyro", action="store_true", help="skip the Pyro comparison")
    parser.add_argument("--compile", action="store_true",
                        help="ours with sample_posterior(compile=True) (each NUTS step compiled; "
                             "the compiling happens in the untimed first run and warm-up)")
    parser.add_argument("--from-pyro", action="store_true",
                        help="also run ours through tl.from_pyro against Pyro")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--serve", choices=["torch", "pyro"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if not NUMPYRO_PY.exists():
        raise SystemExit(f"no NumPyro venv at {NUMPYRO_PY}: run `make bench-ess` (or set "
                         f"NUMPYRO_PYTHON)")
    start = time.time()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    results = bench(args)
    text, summary = table(results)
    numpyro_ratios = [v["ratio"] for v in summary.values() if v["peer"] == "numpyro"]
    median = statistics.median(numpyro_ratios) if numpyro_ratios else math.nan
    print(text)
    print(f"median ESS/s ratio against NumPyro over {len(numpyro_ratios)} posteriors: "
          f"{median:.3g}x")
    if args.out:
        args.out.write_text(json.dumps({
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv), "machine": platform.platform(),
            "processor": platform.processor(), "cpus": os.cpu_count(),
            "settings": {k: v for k, v in vars(args).items() if k not in ("out", "serve")},
            "wall_s": time.time() - start, "median_ratio_numpyro": median,
            "summary": summary, "runs": results}, indent=1, default=str))


if __name__ == "__main__":
    main()
