"""Command line: ``torchlangevin demo | sample | ebm-demo | score-demo | llc-demo | synth``.

Errors: a problem with what was asked (an argument, a file, the data in it) prints one line,
``torchlangevin <command>: error: <what is wrong>``, on stderr and exits with code 2; it is
found before any fitting or sampling where it can be. Anything else is a bug: a traceback and
exit code 1. ``--traceback`` shows the traceback of a reported error too.
"""

from __future__ import annotations

import argparse
import codecs
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path


class UserError(Exception):
    """A problem with the user's request (an argument, a file, its data): reported in one
    line on stderr with exit code 2, never as a traceback."""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (no usage block) and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer ``>= minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}; got {text!r}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def _positive_float(text: str) -> float:
    """An argparse type: a finite number ``> 0``."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0; got {text!r}")
    return value


def _input_file(text: str) -> str:
    """An argparse type: an existing, readable regular file."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text!r}: no such file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r}: is a directory, not a file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text!r}: cannot be read (permission denied)")
    return text


def _writable_dir(path: Path, text: str) -> None:
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: {str(path)!r} is not a directory")
    if not os.access(path, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text!r}: cannot write in {str(path)!r} "
                                         f"(permission denied)")


def _output_file(text: str) -> str:
    """An argparse type: a file to write, in a directory that exists and can be written."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: is a directory; expected a file name")
    parent = path.parent
    if not parent.exists():
        raise argparse.ArgumentTypeError(f"{text!r}: the directory {str(parent)!r} does not "
                                         f"exist")
    _writable_dir(parent, text)
    return text


def _output_dir(text: str) -> str:
    """An argparse type: a directory to write in, existing or made (with its parents)
    below the nearest directory that exists."""
    path = Path(text)
    if path.exists():
        _writable_dir(path, text)
        return text
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    _writable_dir(ancestor, text)
    return text


def _encoding(text: str) -> str:
    """An argparse type: a text encoding Python knows."""
    try:
        codecs.lookup(text)
    except LookupError:
        raise argparse.ArgumentTypeError(f"unknown text encoding {text!r}") from None
    return text


_POSITIVE, _NON_NEGATIVE = _int_at_least(1), _int_at_least(0)


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

    from .driver import check_memory

    if args.thin > args.steps:
        raise UserError(f"--thin {args.thin}: must be at most --steps ({args.steps}) to keep "
                        f"a draw")
    target = TARGETS[args.target](args.dim)
    numel = math.prod(target.event_shape)
    check_memory(args.chains, target.event_shape, args.steps, burn_in=args.burn_in,
                 thin=args.thin, extra={"starting points": 4 * args.chains * numel})
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
    if args.recipe == "ladder":
        return _ebm_ladder(args, t0)
    if args.data == "digits":
        r = run_digits(args.out, epochs=args.epochs or 30, seed=args.seed)
        print(f"digits: top-class probability of classifiers trained on real digits "
              f"(logistic regression / MLP): generated {r['top_prob_generated']:.2f} / "
              f"{r['top_prob_mlp_generated']:.2f}, held-out real {r['top_prob_real']:.2f} / "
              f"{r['top_prob_mlp_real']:.2f}; Frechet distance to held-out digits "
              f"{r['frechet_generated']:.2f} (real training digits {r['frechet_train']:.2f}); "
              f"{time.perf_counter() - t0:.0f} s; grid in {args.out}")
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


def _ebm_ladder(args: argparse.Namespace, t0: float) -> int:
    """``ebm-demo --recipe ladder``: the noise-conditional energy (score.run_energy_toy,
    or score.run_digits(model="energy"))."""
    from .score.demo import run_digits, run_energy_toy

    if args.data == "digits":
        r = run_digits(args.out, n_train_steps=args.train_steps or 4000, seed=args.seed,
                       progress=True, model="energy")
        print(f"digits: top-class probability of classifiers trained on real digits "
              f"(logistic regression / MLP): annealed MALA {r['top_prob_al']:.2f} / "
              f"{r['top_prob_mlp_al']:.2f}, held-out real {r['top_prob_held_out']:.2f} / "
              f"{r['top_prob_mlp_held_out']:.2f}; Frechet distance to held-out digits "
              f"{r['frechet_al']:.2f} (real training digits {r['frechet_train']:.2f}); "
              f"{time.perf_counter() - t0:.0f} s; images in {args.out}")
        return 0
    r = run_energy_toy(args.data, args.out, n_train_steps=args.train_steps or 4000,
                       seed=args.seed, progress=True)
    print(f"{args.data}: multi-bandwidth MMD / floor: fresh chains (annealed MALA) "
          f"{r['mmd_ratio_fresh']:.2f}, after 1,000 more MALA steps {r['mmd_ratio_long']:.2f}; "
          f"binned TV / floor {r['tv_ratio_fresh']:.2f} / {r['tv_ratio_long']:.2f}")
    print(f"  {r['evals_fresh']} gradients per sample, lowest MALA acceptance of a level "
          f"{r['acceptance_min']:.2f}; training {r['train_s']:.0f} s, sampling "
          f"{r['sample_s']:.0f} s, {time.perf_counter() - t0:.0f} s in all; figure in "
          f"{args.out}")
    return 0


def _score_demo(args: argparse.Namespace) -> int:
    from .score.demo import run_digits, run_toy

    t0 = time.perf_counter()
    al = "annealed Langevin" if args.model == "score" else "annealed MALA"
    if args.data == "digits":
        r = run_digits(args.out, n_train_steps=args.train_steps or 4000, seed=args.seed,
                       progress=True, model=args.model)
        print(f"digits: top-class probability of classifiers trained on real digits "
              f"(logistic regression / MLP): {al} {r['top_prob_al']:.2f} / "
              f"{r['top_prob_mlp_al']:.2f}, predictor-corrector {r['top_prob_pc']:.2f} / "
              f"{r['top_prob_mlp_pc']:.2f} (held-out real {r['top_prob_held_out']:.2f} / "
              f"{r['top_prob_mlp_held_out']:.2f}); Frechet distance to held-out digits "
              f"{r['frechet_al']:.2f} / {r['frechet_pc']:.2f} (real training digits "
              f"{r['frechet_train']:.2f})")
    else:
        r = run_toy(args.data, args.out, n_train_steps=args.train_steps or 4000,
                    seed=args.seed, progress=True, model=args.model)
        print(f"{args.data}: multi-bandwidth MMD / floor: {al} {r['mmd_ratio_al']:.2f}, "
              f"predictor-corrector {r['mmd_ratio_pc']:.2f}; binned TV / floor "
              f"{r['tv_ratio_al']:.2f} / {r['tv_ratio_pc']:.2f}")
    print(f"  score evaluations per sample: {al} {r['evals_al']}, "
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


#: rows a generator needs to fit (one row has no spread to fit a density to); with
#: ``--report`` the 80% it fits on must have that many and the 20% held out at least one
_MIN_ROWS, _MIN_ROWS_REPORT = 2, 3


def _read_table(args: argparse.Namespace):
    """The CSV ``args.data`` as a DataFrame, checked: text, well-formed, enough rows, no
    empty column, and a ``--target`` column (if given) with at least two values."""
    import pandas as pd

    path = args.data
    with open(path, "rb") as fh:
        if b"\0" in fh.read(1 << 16):
            raise UserError(f"{path}: holds NUL bytes: a binary file, not a CSV text file")
    try:
        df = pd.read_csv(path, encoding=args.encoding)
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: is empty (no header, no rows)") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: is not {args.encoding} text ({_bad_byte(path, args.encoding)});"
                        f" give its encoding, e.g. --encoding latin-1") from None
    except pd.errors.ParserError as err:
        raise UserError(f"{path}: is not a well-formed CSV: {_one_line(err)}") from None
    _check_table(df, args)
    return df


def _bad_byte(path: str, encoding: str) -> str:
    """Where the file stops being ``encoding`` text: the byte and its line."""
    raw = Path(path).read_bytes()
    try:
        raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        return f"byte 0x{raw[err.start]:02x} on line {line}"
    return "a decoding error"


def _check_table(df, args: argparse.Namespace) -> None:
    path, least = args.data, _MIN_ROWS_REPORT if args.report else _MIN_ROWS
    if len(df) == 0:
        raise UserError(f"{path}: has a header but no rows")
    if len(df) < least:
        raise UserError(f"{path}: has {len(df)} data row{'s' * (len(df) != 1)}; at least "
                        f"{least} are needed{' with --report' if args.report else ''}")
    empty = [str(c) for c in df.columns if df[c].isna().all()]
    if empty:
        raise UserError(f"{path}: column{'s' * (len(empty) > 1)} {', '.join(map(repr, empty))}"
                        f" ha{'ve' if len(empty) > 1 else 's'} no values in any row; drop "
                        f"{'them' if len(empty) > 1 else 'it'}")
    if args.target is None:
        return
    if args.target not in df.columns:
        raise UserError(f"--target {args.target!r}: not a column of {path}; columns are "
                        f"{list(df.columns)[:10]}")
    values = df[args.target].dropna().unique()
    if len(values) < 2:
        one = values[0].item() if hasattr(values[0], "item") else values[0]
        raise UserError(f"--target {args.target!r}: has the one value {one!r} in every "
                        f"row; a target needs at least 2 values (leave --target out to model "
                        f"the table without one)")


def _split_for_report(df, args: argparse.Namespace):
    """80% to fit on, 20% to score against; stratified by a target of at most 20 values."""
    from sklearn.model_selection import train_test_split

    strat = None
    if args.target is not None and df[args.target].nunique() <= 20:
        strat = df[args.target]
    try:
        return train_test_split(df, test_size=0.2, random_state=args.seed, stratify=strat)
    except ValueError as err:
        raise UserError(f"--report: cannot hold out 20% of the {len(df)} rows of {args.data}"
                        f"{' stratified by --target' if strat is not None else ''}: "
                        f"{_one_line(err)}") from None


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


def _one_line(err: BaseException) -> str:
    """An error's message on one line."""
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    """Run a command; an error in what was asked: one line on stderr and exit code 2."""
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except (UserError, ValueError, OSError) as err:
        if args.traceback or (isinstance(err, OSError) and err.filename is None):
            raise  # an OSError naming no file is not about a path the user gave
        print(f"torchlangevin {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="torchlangevin", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traceback", action="store_true",
                        help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_demo, _add_sample, _add_ebm_demo, _add_score_demo, _add_llc_demo,
                _add_synth):
        add(sub)
    return parser


def _add_demo(sub) -> None:
    demo = sub.add_parser("demo", help="seed 001: annealed Langevin on Quartic1D, GIF + TV")
    demo.add_argument("--out", type=_output_dir, default="demo_out",
                      help="output folder (default ./demo_out)")
    demo.add_argument("--particles", type=_POSITIVE, default=5000)
    demo.add_argument("--steps", type=_POSITIVE, default=3000)
    demo.add_argument("--seed", type=_NON_NEGATIVE, default=0)
    demo.add_argument("--no-gif", action="store_true", help="skip the animation")
    demo.set_defaults(func=_demo)


def _add_sample(sub) -> None:
    smp = sub.add_parser("sample", help="sample a built-in target and print a summary")
    smp.add_argument("target", choices=sorted(TARGETS))
    smp.add_argument("--kernel", choices=["ula", "mala", "hmc"], default="mala")
    smp.add_argument("--dim", type=_POSITIVE, default=2)
    smp.add_argument("--chains", type=_POSITIVE, default=1000)
    smp.add_argument("--steps", type=_POSITIVE, default=1000)
    smp.add_argument("--burn-in", type=_NON_NEGATIVE, default=500)
    smp.add_argument("--thin", type=_POSITIVE, default=1)
    smp.add_argument("--step-size", type=_positive_float, default=0.1)
    smp.add_argument("--leapfrog", type=_POSITIVE, default=10)
    smp.add_argument("--seed", type=_NON_NEGATIVE, default=0)
    smp.add_argument("--exact-start", action="store_true",
                     help="start from exact draws (always on a bounded support)")
    smp.add_argument("--out", type=_output_file, help="save the Chains to this file")
    smp.set_defaults(func=_sample)


def _add_ebm_demo(sub) -> None:
    toy = sub.add_parser("ebm-demo", help="train an energy on a toy set or digits: a "
                         "noise-conditional energy, or persistent CD")
    toy.add_argument("--data", choices=[*TOY_NAMES, "digits"], default="moons")
    toy.add_argument("--out", type=_output_dir, default="ebm_out")
    toy.add_argument("--recipe", choices=["ladder", "pcd"], default="ladder",
                     help="'ladder' (default) fits E(x, sigma) by denoising score "
                     "matching over a noise ladder and samples by annealed MALA; 'pcd' fits "
                     "E(x) by persistent CD with MALA negatives")
    toy.add_argument("--train-steps", type=_POSITIVE, help="ladder: default 4000")
    toy.add_argument("--epochs", type=_POSITIVE, help="pcd: default 100 (toys) or 30 (digits)")
    toy.add_argument("--sample-steps", type=_POSITIVE, default=3000,
                     help="pcd: MALA steps of the fresh chains (from uniform starts)")
    toy.add_argument("--seed", type=_NON_NEGATIVE, default=0)
    toy.set_defaults(func=_ebm_demo)



def _add_score_demo(sub) -> None:
    score = sub.add_parser("score-demo", help="train a score model by denoising score "
                           "matching; sample by annealed Langevin and predictor-corrector")
    score.add_argument("--data", choices=[*TOY_NAMES, "digits"], default="checkerboard")
    score.add_argument("--out", type=_output_dir, default="score_out")
    score.add_argument("--train-steps", type=_POSITIVE,
                       help="default 4000")
    score.add_argument("--model", choices=["score", "energy"], default="score",
                       help="'energy': the score is -grad E of a noise-conditional energy "
                       "(annealed MALA instead of annealed Langevin)")
    score.add_argument("--seed", type=_NON_NEGATIVE, default=0)
    score.set_defaults(func=_score_demo)


def _add_llc_demo(sub) -> None:
    llc = sub.add_parser("llc-demo", help="train a small MLP and print its LLC with diagnostics")
    llc.add_argument("--chains", type=_POSITIVE, default=4)
    llc.add_argument("--draws", type=_POSITIVE, default=200)
    llc.add_argument("--epochs", type=_NON_NEGATIVE, default=2000,
                     help="Adam epochs before sampling")
    llc.add_argument("--seed", type=_NON_NEGATIVE, default=0)
    llc.add_argument("--store", type=_output_dir,
                     help="a Zarr directory to write (and resume) the draws in")
    llc.set_defaults(func=_llc_demo)


def _add_synth(sub) -> None:
    syn = sub.add_parser("synth", help="synthetic rows like a CSV's, by Langevin sampling")
    syn.add_argument("data", type=_input_file, help="a CSV file with a header row")
    syn.add_argument("--target", help="the label or target column")
    syn.add_argument("-n", type=_POSITIVE, default=1000, help="rows to generate (default 1000)")
    syn.add_argument("-o", "--out", type=_output_file, default="synth.csv")
    syn.add_argument("--report", type=_output_file,
                     help="also fit on 80%%, score on 20%%, write this .md (+ .png)")
    syn.add_argument("--steps", type=_POSITIVE, default=200, help="Langevin steps per row")
    syn.add_argument("--seed", type=_NON_NEGATIVE, default=0)
    syn.add_argument("--encoding", type=_encoding, default="utf-8",
                     help="the CSV's text encoding (default utf-8)")
    syn.set_defaults(func=_synth)


if __name__ == "__main__":
    sys.exit(main())
