"""LLC of a small causal transformer LM at 3 training checkpoints: torchlangevin vs devinterp.

A GPT-2-style model (HuggingFace ``GPT2LMHeadModel`` built from a config, nothing downloaded)
is trained here on generated sequences (a random prefix, then the prefix again: the second
half is predictable only by attending back). At each checkpoint both libraries estimate the
LLC with the same hyperparameters (lr, n_beta, localization, batch size, draws, chains):

- devinterp 2.0.1 runs in its own venv (``.bench/devinterp``, ``make bench-llc``), as a
  subprocess of that venv's Python, chains one after another (its ``slt/sampling.py``);
- torchlangevin runs in a subprocess of this venv, all chains vmapped together.

Each run is its own process, so its peak memory (``ru_maxrss``) and CPU time (user + system)
are its own; the two sides' runs alternate (ours, devinterp, ours, ...), so a load from other
processes on a shared machine falls on both alike, and the load average is printed with each
row. Reported per (checkpoint, chains): median wall and CPU time, peak RSS, LLC mean and
standard error (devinterp: sd over chains / sqrt(chains); ours: the ESS-based ``se``), the
speed ratio and the agreement in combined standard errors. Also masked runs of ours
("l0 attn") alternating with unmasked ones at the last checkpoint.

    OMP_NUM_THREADS=1 python benchmarks/llc_lm.py                   # the issue's setting
    OMP_NUM_THREADS=1 python benchmarks/llc_lm.py --draws 50 --repeats 1   # reduced
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
DEVINTERP_PY = ROOT / ".bench" / "devinterp" / "bin" / "python"


def model_config(args):
    from transformers import GPT2Config

    return GPT2Config(n_layer=args.layers, n_embd=args.d_model, n_head=args.heads,
                      vocab_size=args.vocab, n_positions=args.length, bos_token_id=0,
                      eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def build_model(args, seed: int = 0):
    import torch
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(model_config(args))


def copy_task(n: int, length: int, vocab: int, seed: int):
    """Rows ``[p, p]`` with ``p`` a random prefix of ``length // 2`` tokens."""
    import torch

    g = torch.Generator().manual_seed(seed)
    prefix = torch.randint(1, vocab, (n, length // 2), generator=g)
    return torch.cat([prefix, prefix], 1)[:, :length]


def train(args, folder: Path) -> list[tuple[int, Path]]:
    """Adam on the copy task; the state dict saved at the checkpoint steps."""
    import torch

    torch.set_num_threads(1)
    model = build_model(args)
    ids = copy_task(args.rows, args.length, args.vocab, seed=1)
    torch.save(ids, folder / "ids.pt")
    opt = torch.optim.Adam(model.parameters(), lr=args.train_lr)
    g = torch.Generator().manual_seed(2)
    saved, steps = [], sorted(args.checkpoints)
    for step in range(steps[-1] + 1):
        if step in steps:
            path = folder / f"step_{step}.pt"
            torch.save(model.state_dict(), path)
            saved.append((step, path))
        batch = ids[torch.randint(0, len(ids), (64,), generator=g)]
        loss = model(batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return saved


# ---- workers: one sampling run in this process ---------------------------------------------

def worker(args) -> dict:
    import torch

    torch.set_num_threads(1)
    model = build_model(args)
    model.load_state_dict(torch.load(args.ckpt, weights_only=True))
    ids = torch.load(Path(args.ckpt).parent / "ids.pt", weights_only=True)
    import datasets

    data = datasets.Dataset.from_dict({"input_ids": ids.tolist()}).with_format("torch")
    hyper = dict(lr=args.lr, n_beta=args.n_beta, localization=args.localization,
                 num_chains=args.chains, num_draws=args.draws, batch_size=args.batch_size)
    start = time.perf_counter()
    if args.worker == "devinterp":
        out = run_devinterp(model, data, hyper, args)
    else:
        out = run_ours(model, data, hyper, args)
    out["wall_s"] = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_s"] = usage.ru_utime + usage.ru_stime  # the whole process, imports included
    out["peak_rss_mb"] = usage.ru_maxrss / 1024
    return out


def run_devinterp(model, data, hyper, args) -> dict:
    import math
    import warnings

    from devinterp.slt.llc import compute_llc
    from devinterp.slt.sampling import sample
    from devinterp.slt.weight_restrictions import create_param_masks

    masks = create_param_masks(model, args.restriction) if args.restriction else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tempfile.TemporaryDirectory() as tmp:
            tree = sample(model, data, {}, param_masks=masks, device="cpu",
                          output_path=Path(tmp) / "s.zarr", **hyper)
            r = compute_llc(tree)
            per_chain = [float(x) for x in r["llc_per_chain"].values]
    sd = statistics.stdev(per_chain)
    return {"llc": float(r["llc_mean"]), "se": sd / math.sqrt(len(per_chain)),
            "per_chain": per_chain}


def run_ours(model, data, hyper, args) -> dict:
    sys.path.insert(0, str(ROOT / "src"))
    from torchlangevin import posterior, slt

    masks = posterior.create_param_masks(model, args.restriction) if args.restriction else None
    t0 = time.perf_counter()
    tree = posterior.sample(model, data, param_masks=masks, progress=False,
                            mala_checks=args.mala_checks, **hyper)
    sampled = time.perf_counter() - t0
    est = slt.llc(tree)
    ds = tree.dataset
    return {"llc": est.mean, "se": est.se, "per_chain": [float(x) for x in est.per_chain],
            "rhat": est.rhat, "vectorized": ds.attrs["vectorized"], "sample_s": sampled,
            "chains_per_call": ds.attrs["chains_per_call"],
            "chains_per_block": ds.attrs["chains_per_block"],
            "seconds": json.loads(ds.attrs["seconds"]),
            "lambda_max": ds.attrs["lambda_max"],
            "distance": float(ds["metrics_distance"].values[:, -1].mean())}


def spawn(python: Path, which: str, ckpt: Path, chains: int, args, restriction: str = ""
          ) -> dict:
    cmd = [str(python), str(HERE), "--worker", which, "--ckpt", str(ckpt),
           "--chains", str(chains), "--restriction", restriction]
    for name in ("layers", "d_model", "heads", "vocab", "length", "draws", "batch_size",
                 "lr", "n_beta", "localization", "mala_checks"):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{which} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def median(runs: list[dict]) -> dict:
    """The first run's estimates with the median wall time, CPU time and peak memory."""
    best = dict(runs[0])
    for key in ("wall_s", "cpu_s", "peak_rss_mb"):
        best[key] = statistics.median(r[key] for r in runs)
        best[f"{key}_runs"] = [r[key] for r in runs]
    return best


def paired_runs(sides: list[tuple], repeats: int) -> list[dict]:
    """``repeats`` runs of each side ``(python, which, ckpt, chains, args, restriction)``,
    alternating between the sides; the median of each."""
    runs: list[list[dict]] = [[] for _ in sides]
    for _ in range(repeats):
        for i, side in enumerate(sides):
            runs[i].append(spawn(*side))
    return [median(r) for r in runs]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=["devinterp", "ours"], default=None)
    p.add_argument("--ckpt", default="")
    p.add_argument("--restriction", default="")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=64)
    p.add_argument("--length", type=int, default=32)
    p.add_argument("--rows", type=int, default=2048)
    p.add_argument("--checkpoints", type=int, nargs="+", default=[50, 200, 800])
    p.add_argument("--train-lr", type=float, default=3e-3)
    p.add_argument("--chains", type=int, nargs="+", default=[4, 8])
    p.add_argument("--draws", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--n-beta", type=float, default=30.0)
    p.add_argument("--localization", type=float, default=100.0)
    p.add_argument("--mala-checks", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-devinterp", action="store_true")
    p.add_argument("--reuse", default="", help="a folder of checkpoints (step_N.pt, ids.pt) "
                   "trained before with the same model arguments: no training")
    p.add_argument("--devinterp-python", default=str(DEVINTERP_PY),
                   help="the devinterp venv's python (default: .bench/devinterp/bin/python)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "llc_lm.json"))
    args = p.parse_args()
    if args.worker is not None:
        args.chains = args.chains[0]
        print(json.dumps(worker(args)))
        return
    run_all(args)


def run_all(args) -> None:
    devinterp_py = Path(args.devinterp_python)
    if not args.skip_devinterp and not devinterp_py.exists():
        raise SystemExit(f"{devinterp_py} missing: run `make bench-venv-devinterp` or "
                         "`make bench-llc` first, or pass --skip-devinterp")
    t0 = time.perf_counter()
    if args.reuse:  # checkpoints trained before with the same model and steps
        folder = Path(args.reuse)
        saved = [(s, folder / f"step_{s}.pt") for s in sorted(args.checkpoints)]
        missing = [str(p) for _, p in saved if not p.exists()]
        if missing or not (folder / "ids.pt").exists():
            raise SystemExit(f"--reuse {folder}: missing {missing or 'ids.pt'}")
    else:
        folder = Path(tempfile.mkdtemp(prefix="llc_lm_"))
        saved = train(args, folder)
    n_params = sum(q.numel() for q in build_model(args).parameters())
    print(f"model: GPT-2 layers={args.layers} d_model={args.d_model} heads={args.heads} "
          f"vocab={args.vocab} length={args.length}: {n_params:,} parameters; trained "
          f"{args.checkpoints[-1]} steps in {time.perf_counter() - t0:.0f} s; draws "
          f"{args.draws}, batch {args.batch_size}, lr {args.lr}, n_beta {args.n_beta}, "
          f"localization {args.localization}, repeats {args.repeats}", flush=True)
    rows = [_row(step, ckpt, chains, devinterp_py, args)
            for step, ckpt in saved for chains in args.chains]
    step, ckpt = saved[-1]
    ours = Path(sys.executable)
    masked, full = paired_runs([(ours, "ours", ckpt, args.chains[0], args, "l0 attn"),
                                (ours, "ours", ckpt, args.chains[0], args)], args.repeats)
    print(f"masked 'l0 attn' at step {step}, {args.chains[0]} chains: {masked['wall_s']:.1f} s "
          f"(CPU {masked['cpu_s']:.1f} s) vs unmasked {full['wall_s']:.1f} s (CPU "
          f"{full['cpu_s']:.1f} s): {full['wall_s'] / masked['wall_s']:.2f}x; peak "
          f"{masked['peak_rss_mb']:.0f} vs {full['peak_rss_mb']:.0f} MB; load average "
          f"{_load()}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "n_params": n_params, "rows": rows,
                               "masked": masked, "unmasked": full}, indent=1))
    print(f"written {out}")


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _row(step: int, ckpt: Path, chains: int, devinterp_py: Path, args) -> dict:
    """Ours and devinterp's runs at one checkpoint and chain count, alternating."""
    sides = [(Path(sys.executable), "ours", ckpt, chains, args)]
    if not args.skip_devinterp:
        sides.append((devinterp_py, "devinterp", ckpt, chains, args))
    load = _load()
    medians = paired_runs(sides, args.repeats)
    ours = medians[0]
    row = {"step": step, "chains": chains, "ours": ours, "load_before": load,
           "load_after": _load()}
    if not args.skip_devinterp:
        dev = medians[1]
        combined = (ours["se"] ** 2 + dev["se"] ** 2) ** 0.5
        row.update(devinterp=dev, speedup=dev["wall_s"] / ours["wall_s"],
                   cpu_speedup=dev["cpu_s"] / ours["cpu_s"],
                   memory_ratio=ours["peak_rss_mb"] / dev["peak_rss_mb"],
                   z=abs(ours["llc"] - dev["llc"]) / combined)
    print(_line(row), flush=True)
    return row


def _line(row: dict) -> str:
    o = row["ours"]
    text = (f"step {row['step']:>5} chains {row['chains']}: ours {o['llc']:8.2f} ± "
            f"{o['se']:.2f} in {o['wall_s']:6.1f} s (CPU {o['cpu_s']:.1f} s, sampling "
            f"{o['sample_s']:.1f} s), {o['peak_rss_mb']:6.0f} MB, vectorized="
            f"{o['vectorized']}, chains_per_call={o['chains_per_call']}, chains_per_block="
            f"{o['chains_per_block']}, seconds {o['seconds']}")
    if "devinterp" in row:
        d = row["devinterp"]
        text += (f" | devinterp {d['llc']:8.2f} ± {d['se']:.2f} in {d['wall_s']:6.1f} s "
                 f"(CPU {d['cpu_s']:.1f} s), {d['peak_rss_mb']:6.0f} MB | speed "
                 f"{row['speedup']:.2f}x (CPU {row['cpu_speedup']:.2f}x), memory "
                 f"{row['memory_ratio']:.2f}x, |diff| = {row['z']:.2f} combined se")
    return text + f" | load {row['load_before']} -> {row['load_after']}"


if __name__ == "__main__":
    main()
