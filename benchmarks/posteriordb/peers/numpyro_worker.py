"""NumPyro's side of ``benchmarks/ess_per_second.py``: a worker in its own venv
(``.bench/numpyro``) that takes one run at a time as a JSON line on stdin and answers on
stdout with a line starting ``@@`` (everything else it prints goes to stderr).

A request ``{"name", "chains", "warmup", "draws", "seed", "out"}`` runs NumPyro's NUTS
(its defaults: diagonal mass, ``target_accept_prob`` 0.8, ``max_tree_depth`` 10) with
``chain_method="vectorized"`` in float64, one CPU thread. The first request for a
``(name, chains, warmup, draws)`` first makes one untimed run of the same shapes, so that
JAX has compiled the warm-up and the sampling loops before the clock starts (and
:func:`_memoised_jit` keeps them compiled). Warm-up
(``MCMC.warmup``, including initialisation and the first step-size search) and sampling
(``MCMC.run``) are timed apart, each until its results are ready. The draws of the
latent sites, ``(chain, draw, *shape)``, go to the ``.npz`` at ``out``; the reply has the
times, the gradients per chain (``num_steps``: one gradient per leapfrog step) and the
divergences.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1 "
                      "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.util  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpyro_models  # noqa: E402

numpyro.enable_x64()

_JITS: dict = {}


def _memoised_jit(fn, *args, **kwargs):
    """``jax.jit`` that returns the same wrapper for the same function and options.

    NumPyro 0.22's ``fori_collect`` wraps its (cached) loop body in a new ``jax.jit`` on
    every call and hands it to its jitted loop as a static argument: a new object each
    run, so every ``MCMC.run`` re-traced and re-compiled the whole sampling loop (~25 s
    here on the eight schools). With one wrapper per function the loops compile once and
    the timed runs reuse them. (NumPyro's initialisation still re-compiles one small scan
    per run, ~4 s: that lands in the warm-up time, not the sampling time.)"""
    key = (fn, args, tuple(sorted(kwargs.items())))
    try:
        if key not in _JITS:
            _JITS[key] = jax.jit(fn, *args, **kwargs)
        return _JITS[key]
    except TypeError:  # unhashable options: as NumPyro does
        return jax.jit(fn, *args, **kwargs)


numpyro.util.maybe_jit = _memoised_jit


class Runner:
    """One ``MCMC`` per ``(name, chains, warmup, draws)``, kept so its compiled loops are
    reused across runs."""

    def __init__(self) -> None:
        self.mcmcs: dict[tuple, tuple[MCMC, dict]] = {}

    def _mcmc(self, req: dict) -> tuple[MCMC, dict]:
        key = (req["name"], req["chains"], req["warmup"], req["draws"])
        if key not in self.mcmcs:
            model, kwargs = numpyro_models.load(req["name"])
            mcmc = MCMC(NUTS(model), num_warmup=req["warmup"], num_samples=req["draws"],
                        num_chains=req["chains"], chain_method="vectorized",
                        progress_bar=False)
            self.mcmcs[key] = (mcmc, kwargs)
            self._timed(mcmc, kwargs, seed=10_000 + req["seed"])  # compiles; discarded
        return self.mcmcs[key]

    @staticmethod
    def _timed(mcmc: MCMC, kwargs: dict, seed: int) -> dict:
        k_warm, k_run = jax.random.split(jax.random.PRNGKey(seed))
        start = time.perf_counter()
        mcmc.warmup(k_warm, collect_warmup=True, extra_fields=("num_steps",), **kwargs)
        warm_steps = np.asarray(mcmc.get_extra_fields()["num_steps"])
        warm = time.perf_counter() - start
        start = time.perf_counter()
        mcmc.run(k_run, extra_fields=("num_steps", "diverging"), **kwargs)
        fields = mcmc.get_extra_fields(group_by_chain=True)
        samples = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
        sample = time.perf_counter() - start
        chains = mcmc.num_chains
        return {"warmup_s": warm, "sample_s": sample, "samples": samples,
                "grads_warmup": float(warm_steps.sum()) / chains,
                "grads_sample": float(np.asarray(fields["num_steps"]).sum()) / chains,
                "divergences": int(np.asarray(fields["diverging"]).sum())}

    def run(self, req: dict) -> dict:
        mcmc, kwargs = self._mcmc(req)
        out = self._timed(mcmc, kwargs, seed=req["seed"])
        samples = out.pop("samples")
        # latent and deterministic sites; the orchestrator keeps the model's parameters
        np.savez(req["out"], **{k: np.asarray(v) for k, v in samples.items()})
        return out


def main() -> None:
    runner = Runner()
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # library prints must not reach the reply channel
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = runner.run(json.loads(line))
        except Exception as exc:  # the orchestrator shows it and stops
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        real_stdout.write("@@" + json.dumps(reply) + "\n")
        real_stdout.flush()


if __name__ == "__main__":
    main()
