"""Command line: ``torchlangevin demo | sample | ebm-demo | score-demo | llc-demo | synth``."""

from __future__ import annotations

import argparse
import sys
import time


def _demo(args: argparse.Namespace) -> int:
    from .demo import main

    t0 = time.perf_counter()
    main(out=args.out, n_particles=args.particles, n_steps=args.steps, seed=args.seed,
         gif=not args.no_gif)
    print(f"  done in {time.perf_counter() - t0:.1f} s")
    return 0


TARGETS = {
    "gaussian": lambda d: __import__("torchlangevin").distributions.Gaussian([0.0] * d),
    "double-well": lambda d: __import__("torchlangevin").distributions.DoubleWell(d),
    "funnel": lambda d: __import__("torchlangevin").distributions.Funnel(max(d, 2)),
    "rosenbrock": lambda d: __import__("torchlangevin").distributions.Rosenbrock(dim=max(d, 2)),
    "ring": lambda d: __import__("torchlangevin").distributions.Ring(),
    "quartic": lambda d: __import__("torchlangevin").distributions.Quartic1D(),
}


def _sample(args: argparse.Namespace) -> int:
    import torch

    import torchlangevin as tl

    target = TARGETS[args.target](args.dim)
    kernels = {"ula": lambda: tl.Langevin(target, args.step_size),
               "mala": lambda: tl.MALA(target, args.step_size),
               "hmc": lambda: tl.HMC(target, args.step_size, args.leapfrog)}
    kernel = kernels[args.kernel]()
    gen = torch.Generator().manual_seed(args.seed)
    if args.exact_start or target.support is not None:
        x0 = target.sample(args.chains, gen)
    else:
        x0 = torch.randn(args.chains, *target.event_shape, generator=gen)
    t0 = time.perf_counter()
    chains = tl.sample(kernel, x0, args.steps, burn_in=args.burn_in, thin=args.thin,
                       seed=args.seed)
    dt = time.perf_counter() - t0
    print(chains)
    print(chains.summary())
    print(f"{args.chains * (args.steps + args.burn_in) / dt / 1e6:.2f} M chain-steps/s "
          f"({dt:.2f} s)")
    if args.out:
        chains.save(args.out)
        print(f"wrote {args.out}")
    return 0


def _ebm_demo(args: argparse.Namespace) -> int:
    from .ebm.demo import run_digits, run_toy

    t0 = time.perf_counter()
    if args.data == "digits":
        r = run_digits(args.out, epochs=args.epochs or 30, seed=args.seed)
        print(f"digits: a logistic regression trained on real digits gives its top class mean "
              f"probability {r['top_prob_generated']:.2f} on generated images (real: "
              f"{r['top_prob_real']:.2f}); {time.perf_counter() - t0:.0f} s; grid in {args.out}")
        return 0
    r = run_toy(args.data, args.out, epochs=args.epochs or 100, seed=args.seed,
                sample_steps=args.sample_steps)
    print(f"{args.data}: MMD^2 to held-out data: persistent chains {r['mmd_model']:.5f}, "
          f"fresh chains {r['mmd_fresh']:.5f}; train-vs-held-out floor {r['mmd_floor']:.5f}; "
          f"fitted Gaussian {r['mmd_gaussian']:.5f} (MALA acceptance {r['acceptance']:.2f}, "
          f"{time.perf_counter() - t0:.0f} s); figure in {args.out}")
    print(f"  multi-bandwidth MMD / floor: persistent {r['mmd_multi_ratio_model']:.2f}, fresh "
          f"{r['mmd_multi_ratio_fresh']:.2f}; binned TV / floor: persistent "
          f"{r['tv_ratio_model']:.2f}, fresh {r['tv_ratio_fresh']:.2f}")
    return 0


def _score_demo(args: argparse.Namespace) -> int:
    from .score.demo import run_digits, run_toy

    t0 = time.perf_counter()
    if args.data == "digits":
        r = run_digits(args.out, n_train_steps=args.train_steps or 4000, seed=args.seed,
                       progress=True)
        print(f"digits: top-class probability of a logistic regression trained on real "
              f"digits: annealed Langevin {r['top_prob_al']:.2f}, predictor-corrector "
              f"{r['top_prob_pc']:.2f} (held-out real {r['top_prob_held_out']:.2f}); Frechet "
              f"distance to held-out digits {r['frechet_al']:.2f} / {r['frechet_pc']:.2f} "
              f"(real training digits {r['frechet_train']:.2f})")
    else:
        r = run_toy(args.data, args.out, n_train_steps=args.train_steps or 6000,
                    seed=args.seed, progress=True)
        print(f"{args.data}: multi-bandwidth MMD / floor: annealed Langevin "
              f"{r['mmd_ratio_al']:.2f}, predictor-corrector {r['mmd_ratio_pc']:.2f}; binned "
              f"TV / floor {r['tv_ratio_al']:.2f} / {r['tv_ratio_pc']:.2f}")
    print(f"  score evaluations per sample: annealed Langevin {r['evals_al']}, "
          f"predictor-corrector {r['evals_pc']}; training {r['train_s']:.0f} s, sampling "
          f"{r['sample_s']:.0f} s, {time.perf_counter() - t0:.0f} s in all; figures in "
          f"{args.out}")
    return 0


#: the 2-D toys of ``ebm.data.TOYS`` (listed here so ``--help`` imports nothing heavy)
TOY_NAMES = ["moons", "rings", "8gaussians", "gaussian_mixture", "eight_gaussians",
             "two_moons", "swiss_roll", "circle", "checkerboard", "pinwheel", "grid"]


def _llc_demo(args: argparse.Namespace) -> int:
    from .posterior.demo import run_llc_demo

    t0 = time.perf_counter()
    est = run_llc_demo(args.chains, args.draws, args.seed, args.store, epochs=args.epochs)
    d = est.diagnostics
    print(f"LLC of a 1,185-parameter MLP at its trained weights: {est.mean:.2f} "
          f"+- {est.se:.2f} (se), chain sd {est.sd:.2f}; per chain "
          + " ".join(f"{v:.2f}" for v in est.per_chain))
    print(f"R-hat {d['rhat']:.3f}  ESS {d['ess']:.0f}  MALA acceptance {d['mala_accept']:.2f}  "
          f"eps*lambda_max {d['eps_nbeta_lambda_max']:.2f}  distance from w0 "
          f"{d['distance']:.2f}  flags: {d['flags'] or 'none'}  "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from .tabular import TabularGenerator

    df = _read_table(args)
    if args.n < 1:
        raise ValueError(f"-n {args.n}: expected a positive number of rows")
    train, holdout = _split_for_report(df, args) if args.report else (df, None)
    t0 = time.perf_counter()
    gen = TabularGenerator(n_steps=args.steps, seed=args.seed, progress=True)
    synth = gen.fit(train, target=args.target).sample(args.n)
    synth.to_csv(args.out, index=False)
    print(f"wrote {len(synth)} rows to {args.out} ({time.perf_counter() - t0:.1f} s; "
          f"fitted on {len(train)} rows)")
    if args.report:
        _write_report(args, train, holdout, synth)
    return 0


def _read_table(args: argparse.Namespace):
    """The CSV ``args.data``, with at least one row and the ``--target`` column if given."""
    import pandas as pd

    try:
        df = pd.read_csv(args.data)
    except FileNotFoundError:
        raise ValueError(f"{args.data}: no such file") from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{args.data}: is empty (no header, no rows)") from None
    if len(df) == 0:
        raise ValueError(f"{args.data}: has a header but no rows")
    if args.target is not None and args.target not in df.columns:
        raise ValueError(f"--target {args.target!r}: not a column of {args.data}; columns are "
                         f"{list(df.columns)[:10]}")
    return df


def _split_for_report(df, args: argparse.Namespace):
    """80% to fit on, 20% to score against; stratified by a target of at most 20 values."""
    from sklearn.model_selection import train_test_split

    strat = None
    if args.target is not None and df[args.target].nunique() <= 20:
        strat = df[args.target]
    return train_test_split(df, test_size=0.2, random_state=args.seed, stratify=strat)


def _write_report(args: argparse.Namespace, train, holdout, synth) -> None:
    """``args.report`` (Markdown) and the figure beside it (same name, ``.png``)."""
    from .tabular import quality_report

    png = str(args.report).rsplit(".", 1)[0] + ".png"
    report = quality_report(train, holdout, synth, target=args.target, plot=png,
                            verbose=True)
    with open(args.report, "w") as fh:
        fh.write(f"# Synthetic data report: {args.data}\n\nFitted on 80% of the rows "
                 f"({len(train)}), scored against the other 20% ({len(holdout)}).\n\n")
        fh.write(report.to_markdown() if _has_tabulate() else report.to_string())
        fh.write(f"\n\n![marginals and correlations]({png.rsplit('/', 1)[-1]})\n")
    print(f"wrote {args.report} and {png}")


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torchlangevin", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="seed 001: annealed Langevin on Quartic1D, GIF + TV")
    demo.add_argument("--out", default="demo_out", help="output folder (default ./demo_out)")
    demo.add_argument("--particles", type=int, default=5000)
    demo.add_argument("--steps", type=int, default=3000)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-gif", action="store_true", help="skip the animation")
    demo.set_defaults(func=_demo)

    smp = sub.add_parser("sample", help="sample a built-in target and print a summary")
    smp.add_argument("target", choices=sorted(TARGETS))
    smp.add_argument("--kernel", choices=["ula", "mala", "hmc"], default="mala")
    smp.add_argument("--dim", type=int, default=2)
    smp.add_argument("--chains", type=int, default=1000)
    smp.add_argument("--steps", type=int, default=1000)
    smp.add_argument("--burn-in", type=int, default=500)
    smp.add_argument("--thin", type=int, default=1)
    smp.add_argument("--step-size", type=float, default=0.1)
    smp.add_argument("--leapfrog", type=int, default=10)
    smp.add_argument("--seed", type=int, default=0)
    smp.add_argument("--exact-start", action="store_true",
                     help="start from exact draws (always on a bounded support)")
    smp.add_argument("--out", help="save the Chains to this file")
    smp.set_defaults(func=_sample)

    toy = sub.add_parser("ebm-demo", help="train an energy by persistent CD on a toy set or digits")
    toy.add_argument("--data", choices=[*TOY_NAMES, "digits"], default="moons")
    toy.add_argument("--out", default="ebm_out")
    toy.add_argument("--epochs", type=int, help="default 100 (toys) or 30 (digits)")
    toy.add_argument("--sample-steps", type=int, default=3000,
                     help="MALA steps of the fresh chains (from uniform starts) for toys")
    toy.add_argument("--seed", type=int, default=0)
    toy.set_defaults(func=_ebm_demo)

    score = sub.add_parser("score-demo", help="train a score model by denoising score "
                           "matching; sample by annealed Langevin and predictor-corrector")
    score.add_argument("--data", choices=[*TOY_NAMES, "digits"], default="checkerboard")
    score.add_argument("--out", default="score_out")
    score.add_argument("--train-steps", type=int, help="default 6000 (toys) or 4000 (digits)")
    score.add_argument("--seed", type=int, default=0)
    score.set_defaults(func=_score_demo)

    llc = sub.add_parser("llc-demo", help="train a small MLP and print its LLC with diagnostics")
    llc.add_argument("--chains", type=int, default=4)
    llc.add_argument("--draws", type=int, default=200)
    llc.add_argument("--epochs", type=int, default=2000, help="Adam epochs before sampling")
    llc.add_argument("--seed", type=int, default=0)
    llc.add_argument("--store", help="a Zarr directory to write (and resume) the draws in")
    llc.set_defaults(func=_llc_demo)

    syn = sub.add_parser("synth", help="synthetic rows like a CSV's, by Langevin sampling")
    syn.add_argument("data", help="a CSV file with a header row")
    syn.add_argument("--target", help="the label or target column")
    syn.add_argument("-n", type=int, default=1000, help="rows to generate (default 1000)")
    syn.add_argument("-o", "--out", default="synth.csv")
    syn.add_argument("--report", help="also fit on 80%%, score on 20%%, write this .md (+ .png)")
    syn.add_argument("--steps", type=int, default=200, help="Langevin steps per row")
    syn.add_argument("--seed", type=int, default=0)
    syn.set_defaults(func=_synth)

    args = parser.parse_args(argv)
    if args.func is _synth:
        try:
            return args.func(args)
        except ValueError as err:
            print(f"torchlangevin synth: error: {err}", file=sys.stderr)
            return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
