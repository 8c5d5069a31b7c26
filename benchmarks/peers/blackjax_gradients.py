"""BlackJAX side of the gradient benchmark; runs in its own venv (``.bench/blackjax``).

    python benchmarks/peers/blackjax_gradients.py --targets banana,funnel10 \
        --samplers nuts,mclmc,adjusted_mclmc,chees --chains 128 --steps 2000 --out bj.json
    python benchmarks/peers/blackjax_gradients.py --check points.npz  # see gradients.py --check
    python benchmarks/peers/blackjax_gradients.py --reference brownian --chains 128 ...

For every target and sampler: 128 chains, ``jax.jit``, one CPU thread. NUTS and both
MCLMCs tune every chain on its own (``vmap`` over the tuners); ChEES tunes the ensemble.
Gradients are counted from what the kernels report: NUTS, ChEES and adjusted MCLMC from
``info.num_integration_steps`` (one gradient per velocity-Verlet step; two per
isokinetic McLachlan step for the MCLMCs), unadjusted MCLMC two per step. Wall time is
the sampling scan's, compiled ahead of time so compilation is excluded; under ``vmap``
a NUTS step lasts as long as its chains' deepest tree, so NUTS's time per gradient
includes that lockstep waiting (as it would on any batched device).

``--reference NAME`` makes the stored ground truth of a target without a closed form
(float64, NUTS; see ``benchmarks/reference/README.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# one CPU thread, before jax is imported (XLA reads the flags once)
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                      "intra_op_parallelism_threads=1 inter_op_parallelism_threads=1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
if {"--reference", "--x64", "--check"} & set(sys.argv):
    os.environ["JAX_ENABLE_X64"] = "1"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gradient_metrics  # noqa: E402
import gradient_targets  # noqa: E402

MCLACHLAN_GRADS = 2  # isokinetic McLachlan: two gradient evaluations per step (FSAL)


# ---------------------------------------------------------------------- log densities
def _banana(d):
    c = d["curvature"]
    return lambda x: -x[0] ** 2 / 200.0 - 0.5 * (x[1] - c * (x[0] ** 2 - 100.0)) ** 2


def _gaussian(d):
    prec = 1.0 / d["var"]
    return lambda x: -0.5 * jnp.sum(x * x * prec)


def _rosenbrock(d):
    q = d["q"]

    def logp(x):
        a, b = jnp.split(x, 2)
        return -0.5 * jnp.sum((a - 1.0) ** 2) - jnp.sum((b - a * a) ** 2) / (2 * q)

    return logp


def _funnel(d):
    s2 = d["sigma"] ** 2

    def logp(x):
        theta, z = x[-1], x[:-1]
        return -(theta**2 / (2 * s2) + 0.5 * z.size * theta + 0.5 * jnp.exp(-theta) * z @ z)

    return logp


def _brownian(d):
    y, obs = d["y"], d["observed"]

    def logp(x):
        u_i, u_o, locs = x[0], x[1], x[2:]
        prev = jnp.concatenate([jnp.zeros(1, x.dtype), locs[:-1]])
        innov = jnp.sum((locs - prev) ** 2) * jnp.exp(-2 * u_i) / 2 + locs.size * u_i
        lik = jnp.sum(obs * (y - locs) ** 2) * jnp.exp(-2 * u_o) / 2 + jnp.sum(obs) * u_o
        return -((u_i**2 + u_o**2) / 8.0 + innov + lik)

    return logp


def _item_response(d):
    s, q, y, n_s = d["student"], d["question"], d["y"], int(d["n_students"])

    def logp(x):
        mu, a, b = x[0], x[1:1 + n_s], x[1 + n_s:]
        eta = mu + a[s] - b[q]
        prior = 0.5 * ((mu - 0.75) ** 2 + a @ a + b @ b)
        return jnp.sum(y * eta - jax.nn.softplus(eta)) - prior

    return logp


def _logreg(d):
    xm, y = d["X"], d["y"]

    def logp(w):
        eta = xm @ w
        return jnp.sum(y * eta - jax.nn.softplus(eta)) - 0.5 * w @ w

    return logp


def _stochvol(d):
    r = d["returns"]

    def logp(x):
        s, u_s, u_n = x[:-2], x[-2], x[-1]
        sigma, nu = 0.02 * jnp.exp(u_s), 10.0 * jnp.exp(u_n)
        prev = jnp.concatenate([jnp.zeros(1, x.dtype), s[:-1]])
        walk = s.size * jnp.log(sigma) + jnp.sum((s - prev) ** 2) / (2 * sigma**2)
        z = (0.5 * jnp.log(nu) + 0.5 * jnp.log(jnp.pi) + jax.scipy.special.gammaln(0.5 * nu)
             - jax.scipy.special.gammaln(0.5 * (nu + 1)))
        t = jnp.sum(s + 0.5 * (nu + 1) * jnp.log1p((r * jnp.exp(-s)) ** 2 / nu)) + s.size * z
        return -((jnp.exp(u_s) - u_s) + (jnp.exp(u_n) - u_n) + walk + t)

    return logp


BUILD = {"banana": _banana, "gaussian_k1e2": _gaussian, "gaussian_k1e4": _gaussian,
         "rosenbrock36": _rosenbrock, "funnel10": _funnel, "brownian": _brownian,
         "item_response": _item_response, "logreg_breast_cancer": _logreg,
         "stochastic_volatility": _stochvol}


def logdensity(target: gradient_targets.Target):
    """``log p(x)`` up to a constant for one chain, ``x: (d,)``, data in JAX's float dtype."""
    dtype = jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32
    data = {k: jnp.asarray(v) if np.issubdtype(np.asarray(v).dtype, np.integer)
            else jnp.asarray(v, dtype) for k, v in target.data.items()}
    return BUILD[target.name](data)


# --------------------------------------------------------------------------- samplers
# Each tuner: (logp, x0 (C, d), n_warmup, n_steps, key) -> (state, step(key, state)
# -> (state, position, grads), tuning grads per chain (mean)). ``step`` is per chain.
def tune_nuts(logp, x0, n_warmup, n_steps, key):
    import blackjax

    warmup = blackjax.window_adaptation(blackjax.nuts, logp)
    keys = jax.random.split(key, x0.shape[0])
    (state, params), info = jax.jit(jax.vmap(
        lambda k, x: warmup.run(k, x, num_steps=n_warmup)))(keys, x0)
    tuning = float(jnp.mean(jnp.sum(info.info.num_integration_steps, 1)))
    params = {k: params[k] for k in ("step_size", "inverse_mass_matrix")}

    def step(k, st, p):
        st, inf = blackjax.nuts(logp, **p).step(k, st)
        return st, st.position, inf.num_integration_steps

    return (state, params), step, tuning


def tune_mclmc(logp, x0, n_warmup, n_steps, key):
    import blackjax
    from blackjax.mcmc import mclmc

    kernel = mclmc.build_kernel()
    k_init, k_tune = jax.random.split(key)

    def one(ki, kt, x):
        st = mclmc.init(x, logp, ki)
        # the tuner's fractions are of the sampling length: n_warmup = 0.3 * num_steps
        st, par, n = blackjax.mclmc_find_L_and_step_size(
            kernel, num_steps=n_warmup / 0.3, state=st, rng_key=kt, logdensity_fn=logp,
            frac_tune1=0.1, frac_tune2=0.1, frac_tune3=0.1, diagonal_preconditioning=True)
        return st, (par.L, par.step_size, par.inverse_mass_matrix), n

    c = x0.shape[0]
    state, params, n = jax.jit(jax.vmap(one))(jax.random.split(k_init, c),
                                              jax.random.split(k_tune, c), x0)

    def step(k, st, p):
        alg = blackjax.mclmc(logp, L=p[0], step_size=p[1], inverse_mass_matrix=p[2])
        st, _ = alg.step(k, st)
        return st, st.position, jnp.asarray(MCLACHLAN_GRADS)

    return (state, params), step, MCLACHLAN_GRADS * float(jnp.mean(n))


def tune_adjusted_mclmc(logp, x0, n_warmup, n_steps, key, target_accept=0.9):
    import blackjax
    from blackjax.mcmc import adjusted_mclmc_dynamic as amd

    steps_fn = amd.make_random_trajectory_length_fn(True)  # jittered, as blackjax advises
    kernel = amd.build_kernel(integration_steps_fn=steps_fn)
    k_init, k_tune = jax.random.split(key)

    def one(ki, kt, x):
        st = amd.init(x, logp, ki)
        st, par, n = blackjax.adjusted_mclmc_find_L_and_step_size(
            kernel, logp, num_steps=n_warmup / 0.3, state=st, rng_key=kt,
            target=target_accept, frac_tune1=0.1, frac_tune2=0.1, frac_tune3=0.1,
            diagonal_preconditioning=True)
        return st, (par.L / par.step_size, par.step_size, par.inverse_mass_matrix), n

    c = x0.shape[0]
    state, params, n = jax.jit(jax.vmap(one))(jax.random.split(k_init, c),
                                              jax.random.split(k_tune, c), x0)

    def step(k, st, p):
        alg = blackjax.adjusted_mclmc_dynamic(
            logp, step_size=p[1], inverse_mass_matrix=p[2], integration_steps_fn=steps_fn,
            integration_steps_params=(p[0],))
        st, inf = alg.step(k, st)
        return st, st.position, MCLACHLAN_GRADS * inf.num_integration_steps

    return (state, params), step, MCLACHLAN_GRADS * float(jnp.mean(n))


def tune_chees(logp, x0, n_warmup, n_steps, key):
    import blackjax
    import optax

    warmup = blackjax.chees_adaptation(logp, x0.shape[0], jitter_amount=1.0,
                                       mass_matrix_estimation="diagonal")
    (state, params), info = warmup.run(key, x0, step_size=0.1, optim=optax.adam(0.025),
                                       num_steps=n_warmup, max_sampling_steps=n_steps)
    tuning = float(jnp.mean(jnp.sum(info.info.num_integration_steps, 0)))
    alg = blackjax.dynamic_hmc(logp, **params)
    shared = {}  # one step size and trajectory for the ensemble: closed over, not vmapped

    def step(k, st, p):
        st, inf = alg.step(k, st)
        return st, st.position, inf.num_integration_steps

    return (state, shared), step, tuning


TUNERS = {"nuts": tune_nuts, "mclmc": tune_mclmc, "adjusted_mclmc": tune_adjusted_mclmc,
          "chees": tune_chees}


def _chunk_fn(step, chunk: int):
    """``(key, state, params) -> (state, positions (C, chunk, d), grads (C, chunk))``."""
    def per_chain(k, st, p):
        def body(st, kk):
            st, x, g = step(kk, st, p)
            return st, (x, g)
        st, (xs, gs) = jax.lax.scan(body, st, jax.random.split(k, chunk))
        return st, xs, gs

    def run(key, state, params):
        c = jax.tree.leaves(state)[0].shape[0]
        in_p = 0 if jax.tree.leaves(params) else None
        return jax.vmap(per_chain, in_axes=(0, 0, in_p))(jax.random.split(key, c), state,
                                                          params)

    return jax.jit(run)


def run_one(target, sampler: str, n_chains: int, n_warmup: int, n_steps: int, seed: int,
            chunk: int = 250, keep_draws: bool = False) -> dict:
    """Tune and sample one (target, sampler); the b^2 summary, timings and gradients."""
    logp = logdensity(target)
    x0 = jnp.asarray(target.x0(n_chains, seed), jnp.zeros(()).dtype)
    key_tune, key_run = jax.random.split(jax.random.key(seed))
    t0 = time.perf_counter()
    (state, params), step, tuning = TUNERS[sampler](logp, x0, n_warmup, n_steps, key_tune)
    jax.block_until_ready(state)
    t_tune = time.perf_counter() - t0
    chunk = min(chunk, n_steps)
    run = _chunk_fn(step, chunk).lower(key_run, state, params).compile()
    e_x2, var_x2 = target.moments()
    curve, seconds, kept = gradient_metrics.BiasCurve(e_x2, var_x2), 0.0, []
    for i in range(n_steps // chunk):
        t0 = time.perf_counter()
        state, xs, gs = jax.block_until_ready(run(jax.random.fold_in(key_run, i), state,
                                                  params))
        seconds += time.perf_counter() - t0
        f = target.transform(np.asarray(xs, np.float64))
        curve.add(f, np.asarray(gs, np.float64))
        if keep_draws:
            kept.append(f.astype(np.float32))
    out = curve.summary()
    grads_total = out["grads_per_step"] * out["n_draws"]
    out.update(sampler=sampler, target=target.name, side="blackjax", chains=n_chains,
               warmup=n_warmup, tuning_grads=tuning, tuning_seconds=t_tune,
               seconds=seconds, us_per_grad=1e6 * seconds / grads_total)
    if keep_draws:
        out["draws"] = np.concatenate(kept, 1)
    return out


# ------------------------------------------------------------------------ reference
def make_reference(name: str, n_chains: int, n_warmup: int, n_steps: int, seed: int) -> dict:
    """Ground truth by long float64 NUTS: ``E[f^2]``, ``Var[f^2]`` from all draws, checked
    by split R-hat < 1.01 and bulk ESS of ``f^2``, and two independent halves (chains
    ``0..C/2`` against ``C/2..C``) agreeing to well under the 0.1 sd that b^2 = 0.01
    means: ``max_i |E1 - E2| / sd_i`` is stored as ``half_gap``."""
    from blackjax.diagnostics import effective_sample_size, potential_scale_reduction

    target = gradient_targets.get(name)
    # placeholders so run_one can score as it goes; only the kept draws matter here
    target = gradient_targets.Target(target.name, target.dim, target.data, target.transform,
                                     (np.ones(target.dim), np.ones(target.dim)),
                                     target.sampler, target.note)
    out = run_one(target, "nuts", n_chains, n_warmup, n_steps, seed, keep_draws=True)
    f2 = out.pop("draws").astype(np.float64) ** 2  # (C, n, d)
    e_x2 = f2.mean((0, 1))
    var_x2 = (f2**2).mean((0, 1)) - e_x2**2
    h = n_chains // 2
    gap = np.abs(f2[:h].mean((0, 1)) - f2[h:].mean((0, 1))) / np.sqrt(var_x2)
    f2j = jnp.asarray(f2, jnp.float32)
    rhat = np.asarray(potential_scale_reduction(f2j))
    ess = np.asarray(effective_sample_size(f2j))
    meta = {"target": name, "sampler": "blackjax nuts (window_adaptation), float64",
            "chains": n_chains, "warmup": n_warmup, "draws_per_chain": n_steps, "seed": seed,
            "max_rhat": float(rhat.max()), "min_ess": float(ess.min()),
            "median_ess": float(np.median(ess)), "max_half_gap_sd": float(gap.max()),
            "grads_per_step": out["grads_per_step"], "seconds": out["seconds"]}
    gradient_targets.REFERENCE_DIR.mkdir(exist_ok=True)
    np.savez(gradient_targets.REFERENCE_DIR / f"{name}.npz", e_x2=e_x2, var_x2=var_x2,
             rhat=rhat, ess=ess, half_gap=gap, meta=json.dumps(meta))
    return meta


# ---------------------------------------------------------------------------- check
def check_densities(path: str) -> dict:
    """Every JAX log density against the torch energies that ``gradients.py --check``
    evaluated (float64) at random points stored in ``path``: ``log p(x) + E(x)`` must
    be one constant over the points. Returns the spread relative to ``max |log p|``."""
    stored = np.load(path)
    gaps = {}
    for name in gradient_targets.BUILDERS:
        x = stored[f"{name}_x"]
        lp = np.asarray(jax.vmap(logdensity(gradient_targets.get(name)))(jnp.asarray(x)))
        total = lp + stored[f"{name}_energy"]
        gaps[name] = float(np.ptp(total) / max(1.0, np.abs(lp).max()))
    return gaps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", default=",".join(gradient_targets.BUILDERS))
    p.add_argument("--samplers", default=",".join(TUNERS))
    p.add_argument("--chains", type=int, default=128)
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--steps-for", default="", help="per-target steps: name=n,name=n")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="JSON file (default: stdout)")
    p.add_argument("--reference", help="make benchmarks/reference/NAME.npz")
    p.add_argument("--check", metavar="NPZ", help="JAX vs torch densities at stored points")
    p.add_argument("--x64", action="store_true")
    a = p.parse_args()
    if a.check:
        gaps = check_densities(a.check)
        print(json.dumps(gaps, indent=1))
        sys.exit(0 if max(gaps.values()) < 1e-9 else 1)
    if a.reference:
        print(json.dumps(make_reference(a.reference, a.chains, a.warmup, a.steps, a.seed)))
        return
    steps_for = dict(kv.split("=") for kv in a.steps_for.split(",") if kv)
    results = []
    for name in a.targets.split(","):
        target = gradient_targets.get(name)
        for sampler in a.samplers.split(","):
            n = int(steps_for.get(name, a.steps))
            r = run_one(target, sampler, a.chains, a.warmup, n, a.seed)
            print(f"{name:22s} {sampler:15s} avg {r['grads_to_avg']:>10.0f} worst "
                  f"{r['grads_to_max']:>10.0f} tune {r['tuning_grads']:>8.0f} "
                  f"{r['us_per_grad']:8.1f} us/grad", file=sys.stderr, flush=True)
            results.append(r)
    text = json.dumps({"side": "blackjax", "jax": jax.__version__, "results": results})
    if a.out:
        Path(a.out).write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
