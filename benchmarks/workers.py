"""One side of the peer benchmark, run inside that side's own virtual environment.

    python benchmarks/workers.py SIDE OUT_DIR [--workloads a,b,c,ess] [--seed R]

SIDE is torchlangevin, torchlangevin-compile (the same with ``compile=True``), torchebm
or blackjax. Each workload runs once to warm up (JAX
compiles then) and once timed; the timing goes to OUT_DIR/SIDE.json and, for the ESS
workloads, the draws to OUT_DIR/SIDE_<target>.npy, laid out (chain, draw, dim), so the
orchestrator scores every side's draws with the same diagnostics.

Workloads (same as benchmarks/core.py):
  a    2-D double well E = 2 sum (x^2 - 1)^2, ULA, step 0.01, 10,000 chains x 1,000 steps
  b    100-D standard Gaussian, MALA, step 0.3, 1,000 chains x 1,000 steps
  c    100-D standard Gaussian, HMC, step 0.2, L = 10, 1,000 chains x 100 trajectories
       (ours with jitter=0: the peers' fixed step size)
  ess  HMC (L = 10) with step-size and diagonal-mass adaptation, 1,000 warm-up and 1,000
       kept steps, 32 chains and 1,000 chains, on the 100-D Gaussian and on Funnel(10);
       each library's HMC as it comes (ours jitters the step size, BlackJAX's does not).
       ``--seed R`` picks the starting points and the keys: the minimum ESS of one seed is
       a lottery (Funnel(10), 32 chains: 58-167 over 10 seeds), so the orchestrator gives
       every round its own seed and averages.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

WORK = {"a": 10_000 * 1_000, "b": 1_000 * 1_000, "c": 1_000 * 100}
ESS_CHAINS, ESS_WARMUP, ESS_DRAWS = (32, 1000), 1000, 1000


def _timed(fn, sync=lambda out: out):
    sync(fn())  # warm-up (and compilation for JAX)
    t0 = time.perf_counter()
    out = sync(fn())
    return time.perf_counter() - t0, out


def ess_cases(gaussian, funnel, seed=0):
    """``(name, target, x0)`` for every ESS workload: each target at each chain count."""
    rng = np.random.default_rng(seed)
    return [(f"{name}_{c}", target, rng.standard_normal((c, dim)).astype(np.float32))
            for c in ESS_CHAINS
            for name, target, dim in [("gaussian100", gaussian, 100), ("funnel10", funnel, 10)]]


# --------------------------------------------------------------------- torchlangevin
def run_torchlangevin(workloads, seed=0, compile=False):  # noqa: A002
    import torch

    import torchlangevin as tl
    from torchlangevin.distributions import DoubleWell, Funnel, Gaussian

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    well, gauss = DoubleWell(2, barrier_height=2.0), Gaussian(torch.zeros(100))
    xa, xb = torch.randn(10_000, 2, generator=g), torch.randn(1_000, 100, generator=g)
    runs = {
        "a": lambda: tl.sample(tl.Langevin(well, 0.01), xa, 1_000, thin=10, seed=1,
                               progress=False, compile=compile),
        "b": lambda: tl.sample(tl.MALA(gauss, 0.3), xb, 1_000, thin=10, seed=1, progress=False,
                               compile=compile),
        "c": lambda: tl.sample(tl.HMC(gauss, 0.2, 10, jitter=0.0), xb, 100, thin=10, seed=1,
                               progress=False, compile=compile),
    }
    times = {k: _timed(runs[k])[0] for k in workloads if k in runs}
    draws = {}
    if "ess" in workloads:
        for name, target, x0 in ess_cases(gauss, Funnel(10), seed):
            def run(target=target, x0=x0):
                # each chain its own step size and mass, as BlackJAX's window adaptation
                # vmapped over chains
                adapted = tl.adapt(tl.HMC(target, 0.1, 10), torch.from_numpy(x0), ESS_WARMUP,
                                   seed=2 + 10 * seed, per_chain=True, per_chain_mass=True,
                                   compile=compile)
                return tl.sample(adapted.kernel, adapted.x, ESS_DRAWS, seed=3 + 10 * seed,
                                 progress=False,
                                 compile=compile)
            times[f"ess_{name}"], chains = _timed(run)
            draws[name] = chains.samples.numpy()
    return times, draws


# ------------------------------------------------------------------------- torchebm
def run_torchebm(workloads, seed=0):
    import torch
    from torchebm.core import BaseModel, DoubleWellModel
    from torchebm.samplers import HamiltonianMonteCarlo, LangevinDynamics

    class StandardGaussian(BaseModel):
        """Elementwise: TorchEBM's GaussianModel runs a per-sample bmm against the full
        covariance (~30x slower here), which would time its model, not its sampler."""

        def forward(self, x):
            return 0.5 * (x * x).sum(-1)

    g = torch.Generator().manual_seed(0)
    xa, xb = torch.randn(10_000, 2, generator=g), torch.randn(1_000, 100, generator=g)
    ula = LangevinDynamics(model=DoubleWellModel(barrier_height=2.0), step_size=0.01,
                           noise_scale=1.0)
    hmc = HamiltonianMonteCarlo(model=StandardGaussian(), step_size=0.2, n_leapfrog_steps=10)
    runs = {
        "a": lambda: ula.sample(x=xa.clone(), n_steps=1_000),
        "c": lambda: hmc.sample(x=xb.clone(), n_steps=100),
    }  # TorchEBM has no MALA and no adaptation: (b) and ess are not run
    return {k: _timed(runs[k])[0] for k in workloads if k in runs}, {}


# ------------------------------------------------------------------------- blackjax
def run_blackjax(workloads, seed=0):
    import blackjax
    import jax
    import jax.numpy as jnp

    def double_well(x):
        return -2.0 * jnp.sum((x * x - 1) ** 2)

    def gaussian(x):
        return -0.5 * jnp.sum(x * x)

    def funnel(x):
        v, z = x[0], x[1:]
        return -(v * v / 18 + 0.5 * jnp.sum(z * z) * jnp.exp(-v) + 0.5 * z.shape[0] * v)

    def many_chains(kernel, init, x0, n_steps, key):
        """vmap over chains inside lax.scan over steps; keeps the final states."""
        step = jax.vmap(kernel.step)

        @jax.jit
        def run(x0, key):
            def body(state, k):
                state, _ = step(jax.random.split(k, x0.shape[0]), state)
                return state, None

            state, _ = jax.lax.scan(body, jax.vmap(init)(x0), jax.random.split(key, n_steps))
            return state.position
        return lambda: run(x0, key)

    key = jax.random.key(0)
    ka, kb = jax.random.split(key)
    xa = jax.random.normal(ka, (10_000, 2))
    xb = jax.random.normal(kb, (1_000, 100))
    grad_estimator = lambda x, _batch: jax.grad(double_well)(x)  # noqa: E731 - full batch
    sgld = blackjax.sgld(grad_estimator)

    @jax.jit
    def run_sgld(x0, key):
        def body(x, k):
            keys = jax.random.split(k, x.shape[0])
            return jax.vmap(lambda kk, xx: sgld.step(kk, xx, None, 0.01))(keys, x), None
        return jax.lax.scan(body, x0, jax.random.split(key, 1_000))[0]

    runs = {
        "a": lambda: run_sgld(xa, key),
        "b": many_chains(blackjax.mala(gaussian, 0.3), blackjax.mala(gaussian, 0.3).init,
                         xb, 1_000, key),
        "c": many_chains(blackjax.hmc(gaussian, 0.2, jnp.ones(100), 10),
                         blackjax.hmc(gaussian, 0.2, jnp.ones(100), 10).init, xb, 100, key),
    }
    block = lambda out: jax.block_until_ready(out)  # noqa: E731
    times = {k: _timed(runs[k], block)[0] for k in workloads if k in runs}
    draws = {}
    if "ess" in workloads:
        for name, logdensity, x0 in ess_cases(gaussian, funnel, seed):
            warmup = blackjax.window_adaptation(blackjax.hmc, logdensity,
                                                num_integration_steps=10)

            @jax.jit
            def one_chain(key, x, logdensity=logdensity, warmup=warmup):
                k1, k2 = jax.random.split(key)
                (state, params), _ = warmup.run(k1, x, num_steps=ESS_WARMUP)
                kernel = blackjax.hmc(logdensity, **params)

                def body(state, k):
                    state, _ = kernel.step(k, state)
                    return state, state.position
                return jax.lax.scan(body, state, jax.random.split(k2, ESS_DRAWS))[1]

            keys = jax.random.split(jax.random.key(2 + 10 * seed), x0.shape[0])
            run = jax.jit(jax.vmap(one_chain))
            times[f"ess_{name}"], out = _timed(
                lambda run=run, x0=x0, keys=keys: run(keys, jnp.asarray(x0)), block)
            draws[name] = np.asarray(out)
    return times, draws


def main() -> None:
    side, out_dir = sys.argv[1], Path(sys.argv[2])
    workloads = ["a", "b", "c", "ess"]
    if "--workloads" in sys.argv:
        workloads = sys.argv[sys.argv.index("--workloads") + 1].split(",")
    seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 0
    times, draws = {"torchlangevin": run_torchlangevin,
                    "torchlangevin-compile": lambda w, s: run_torchlangevin(w, s, compile=True),
                    "torchebm": run_torchebm, "blackjax": run_blackjax}[side](workloads, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, d in draws.items():
        np.save(out_dir / f"{side}_{name}.npy", d)
    (out_dir / f"{side}.json").write_text(json.dumps(times))


if __name__ == "__main__":
    main()
