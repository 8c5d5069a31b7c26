"""torchlangevin against TorchEBM and BlackJAX, each in its own virtual environment.

    python benchmarks/peers.py [--repeats 5] [--json out.json]

Runs benchmarks/workers.py for every side in turn, ``--repeats`` rounds (alternating
sides within a round), and reports median chain-steps per second with the ratio of
this library to each peer, plus ESS per second: the minimum bulk ESS over coordinates,
computed with torchlangevin.diagnostics on every side's draws, averaged over the rounds
(round ``r`` starts every side from seed ``r``: one seed's ESS is a lottery), over the
median wall time of adaptation + sampling. ``make bench`` builds the peer environments.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from torchlangevin import diagnostics

ROOT = Path(__file__).resolve().parents[1]
ESS_TARGETS = [f"{t}_{c}" for c in (32, 1000) for t in ("gaussian100", "funnel10")]
SIDES = {
    "torchlangevin": Path(sys.executable),
    "torchlangevin-compile": Path(sys.executable),
    "torchebm": ROOT / ".bench" / "torchebm" / "bin" / "python",
    "blackjax": ROOT / ".bench" / "blackjax" / "bin" / "python",
}
WORK = {"a": 10_000 * 1_000, "b": 1_000 * 1_000, "c": 1_000 * 100}
NAMES = {"a": "(a) double well 2-D, ULA", "b": "(b) Gaussian 100-D, MALA",
         "c": "(c) Gaussian 100-D, HMC L=10"}


def run_round(out: Path, sides: list[str], seed: int) -> dict[str, dict[str, float]]:
    """Every side's timings for one round, and its minimum bulk ESS per ESS workload under
    ``ess_<target>_min`` (the draws are scored here, then deleted: 1.6 GB a round)."""
    times = {}
    for side in sides:
        done = subprocess.run([str(SIDES[side]), str(ROOT / "benchmarks" / "workers.py"), side,
                               str(out), "--seed", str(seed)], capture_output=True, text=True,
                              timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"{side} worker failed:\n{done.stderr[-3000:]}")
        times[side] = json.loads((out / f"{side}.json").read_text())
        for target in ESS_TARGETS:
            f = out / f"{side}_{target}.npy"
            if f.exists():
                times[side][f"ess_{target}_min"] = float(diagnostics.ess_bulk(np.load(f)).min())
                f.unlink()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    sides = [s for s, py in SIDES.items() if py.exists()]
    missing = sorted(set(SIDES) - set(sides))
    if missing:
        print(f"missing peer environments {missing}: run `make bench` to build them")
    rounds, tmp = [], Path(tempfile.mkdtemp(prefix="tl-peers-"))
    for r in range(args.repeats):
        rounds.append(run_round(tmp / f"round{r}", sides, seed=r))
        print(f"round {r + 1}/{args.repeats} done", file=sys.stderr)
    med = {s: {w: statistics.median(rd[s][w] for rd in rounds) for w in rounds[0][s]}
           for s in sides}

    print(f"\n{datetime.date.today()}, {platform.machine()}, {platform.node()}, median of "
          f"{args.repeats} rounds; chain-steps per second (M/s)")
    ours = [s for s in sides if s.startswith("torchlangevin")]
    peers = [s for s in sides if s not in ours]
    table = []
    for w, work in WORK.items():
        rates = {s: work / med[s][w] / 1e6 for s in sides if w in med[s]}
        print(f"{NAMES[w]}: " + ", ".join(f"{s} {r:.2f}" for s, r in rates.items()))
        for o in ours:
            print(f"    {o:22}" + "".join(f"  {rates[o] / rates[p]:.2f}x {p}" for p in peers
                                          if p in rates))
        table.append({"workload": NAMES[w], "M_per_s": rates})

    print(f"\nESS per second, HMC L=10 with adaptation (1,000 warm-up + 1,000 draws): mean "
          f"minimum bulk ESS over the {args.repeats} rounds' seeds [range], median time")
    ess_rows = []
    for target in ESS_TARGETS:
        row = {}
        for s in sides:
            key = f"ess_{target}_min"
            if key in rounds[0][s]:
                values = [rd[s][key] for rd in rounds]
                ess = statistics.mean(values)
                row[s] = {"min_ess_bulk": ess, "range": [min(values), max(values)],
                          "seconds": med[s][f"ess_{target}"],
                          "ess_per_s": ess / med[s][f"ess_{target}"]}
        line = f"{target:18}" + "".join(
            f"  {s}: ESS {v['min_ess_bulk']:.0f} [{v['range'][0]:.0f}-{v['range'][1]:.0f}] in "
            f"{v['seconds']:.2f} s = {v['ess_per_s']:.0f}/s" for s, v in row.items())
        if "blackjax" in row:
            bj = row["blackjax"]["ess_per_s"]
            line += "".join(f"  {o}/blackjax {row[o]['ess_per_s'] / bj:.2f}x"
                            for o in ours if o in row)
        print(line)
        ess_rows.append({"target": target, **row})
    if args.json:
        Path(args.json).write_text(json.dumps({"date": str(datetime.date.today()),
                                               "throughput": table, "ess": ess_rows}, indent=2))


if __name__ == "__main__":
    main()
