"""Sample posteriordb ports with ``tl.sample_posterior`` and compare with Stan's reference draws.

For every parameter: the mean's z-score against the reference with both Monte Carlo
errors, ``z = (m - m_ref) / sqrt(sd^2 / ESS + sd_ref^2 / ESS_ref)`` (the reference's 10 x
1,000 draws are near independent: ESS_ref = 10,000), passing at ``|z| < 4``, and the sd
ratio, passing within 10%. Also min bulk ESS, wall time and ESS/s.

    PYTHONPATH=src python benchmarks/posteriordb/run.py [posterior ...] [--chains 16]
        [--target-accept 0.8] [--max-tree-depth 10] [--compile] [--per-chain]
        [--json DIR]   # also write DIR/<posterior>.json, one per posterior

``python benchmarks/posteriordb/report.py DIR`` turns those files into RESULTS.md's table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torchlangevin as tl  # noqa: E402
from benchmarks.posteriordb.ports import PORTS, load  # noqa: E402

#: the reference's effective sample size (10 chains x 1,000 thinned, near-independent draws)
REFERENCE_ESS = 10_000


def stan_names(result) -> dict[str, torch.Tensor]:
    """The run's draws by Stan's names (``beta[1]``), each ``(chain, draw)``."""
    out = {}
    for name, value in result.posterior.items():
        flat = value.reshape(*value.shape[:2], -1)
        if value.ndim == 2:
            out[name] = value
        for i in range(flat.shape[-1] if value.ndim > 2 else 0):
            out[f"{name}[{i + 1}]"] = flat[..., i]
    return out


def compare(result, reference: dict[str, torch.Tensor]) -> list[dict]:
    """One row per reference parameter: mean, z, sd ratio, bulk ESS, pass."""
    ours = stan_names(result)
    rows = []
    for name, ref in reference.items():
        x = ours[name]
        ess = float(tl.diagnostics.ess_bulk(x[..., None])[0])
        sd, sd_ref = float(x.std()), float(ref.std())
        se = math.sqrt(sd**2 / ess + sd_ref**2 / REFERENCE_ESS)
        z = (float(x.mean()) - float(ref.mean())) / se
        ratio = sd / sd_ref
        rows.append({"name": name, "mean": float(x.mean()), "ref_mean": float(ref.mean()),
                     "z": z, "sd_ratio": ratio, "ess_bulk": ess,
                     "ok": abs(z) < 4 and abs(ratio - 1) < 0.1})
    return rows


def run(posterior: str, chains: int, warmup: int, draws: int, seed: int,
        **options) -> dict:
    """One run of ``tl.sample_posterior`` (``options``: its keyword arguments, e.g.
    Stan's ``adapt_delta`` as ``target_accept``) and its comparison with the reference."""
    model, reference = load(posterior)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tl.model.UntrustedRunWarning)
        result = tl.sample_posterior(model, chains, warmup, draws, seed=seed, **options)
    wall = time.perf_counter() - start
    rows = compare(result, reference)
    min_ess = min(r["ess_bulk"] for r in rows)
    d = result.diagnosis
    return {"posterior": posterior, "rows": rows, "ok": all(r["ok"] for r in rows),
            "wall_s": wall, "min_ess_bulk": min_ess, "ess_per_s": min_ess / wall,
            "diagnosis": d, "sampler": d.sampler, "divergences": d.divergences,
            "max_rhat": d.max_rhat, "mean_tree_depth": d.mean_tree_depth,
            "max_tree_depth_hits": d.max_tree_depth_hits, "min_bfmi": d.min_bfmi,
            "problems": list(d.problems), "seed": seed,
            # per chain, each reference parameter's mean: a stuck chain shows here
            "chain_means": {n: v.double().mean(1).tolist()
                            for n, v in stan_names(result).items() if n in reference}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("posteriors", nargs="*", default=list(PORTS))
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target-accept", type=float, default=0.8,
                        help="sample_posterior's target_accept (Stan's adapt_delta)")
    parser.add_argument("--max-tree-depth", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="compiled NUTS leaves")
    parser.add_argument("--per-chain", action="store_true",
                        help="one dual-averaged step size a chain (sample_posterior's per_chain)")
    parser.add_argument("--json", type=Path, default=None,
                        help="write DIR/<posterior>.json with every row and the diagnosis")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for posterior in args.posteriors:
        out = run(posterior, args.chains, args.warmup, args.draws, args.seed,
                  target_accept=args.target_accept, max_tree_depth=args.max_tree_depth,
                  compile=args.compile, per_chain=args.per_chain)
        worst_z = max(abs(r["z"]) for r in out["rows"])
        worst_sd = max(abs(r["sd_ratio"] - 1) for r in out["rows"])
        print(f"{posterior}: {'PASS' if out['ok'] else 'FAIL'}; max |z| {worst_z:.2f}, max "
              f"|sd ratio - 1| {worst_sd:.3f}; min ESS bulk {out['min_ess_bulk']:.0f}, "
              f"{out['wall_s']:.1f} s, {out['ess_per_s']:.1f} ESS/s")
        print(f"  {out['diagnosis']}", flush=True)
        if args.json is not None:
            args.json.mkdir(parents=True, exist_ok=True)
            record = {k: v for k, v in out.items() if k != "diagnosis"}
            (args.json / f"{posterior}.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
