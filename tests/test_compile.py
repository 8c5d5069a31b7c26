"""``sample(..., compile=True)``: blocks of steps as one torch.compile'd function, fed with
noise drawn eagerly, the numbers eager steps draw, so the samples equal the eager path's."""

import shutil

import pytest
import torch

import torchlangevin as tl
from torchlangevin.distributions import DoubleWell, Gaussian
from torchlangevin.kernels.base import uniforms
from torchlangevin.schedules import Linear

from .conftest import gen

needs_compiler = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                    reason="torch.compile on CPU needs a C++ compiler")
RUN = dict(burn_in=7, thin=3, seed=4, progress=False)  # 47 steps: blocks plus an eager tail


def _same(a, b, atol=1e-5):
    torch.testing.assert_close(b.samples, a.samples, atol=atol, rtol=1e-5)
    torch.testing.assert_close(b.final, a.final, atol=atol, rtol=1e-5)
    assert torch.equal(b.divergences, a.divergences)
    if a.acceptance_rate is not None:
        assert torch.equal(b.acceptance_rate, a.acceptance_rate)
        assert torch.equal(b._accepted_at_draw, a._accepted_at_draw)
    torch.testing.assert_close(b.energy, a.energy, atol=1e-4, rtol=1e-5)


def test_per_chain_seeds_make_a_chain_independent_of_the_chains_beside_it():
    # the driver draws a block's noise in one call, or per chain from a generator each: then
    # chain c's draws are the same whether it runs with 2 or 7 others
    kernel = tl.MALA(Gaussian(torch.zeros(3)), 0.3)
    x0 = torch.randn(8, 3, generator=gen(3))
    seeds = list(range(100, 108))
    full = tl.sample(kernel, x0, 30, seed=seeds, progress=False)
    part = tl.sample(kernel, x0[5:7], 30, seed=seeds[5:7], progress=False)
    assert torch.equal(full.samples[5:7], part.samples)


def test_uniforms_from_normals_are_uniform():
    z = torch.randn(200_000, generator=gen(4), dtype=torch.float64)
    u = uniforms(z).sort().values
    # Kolmogorov-Smirnov against U[0, 1]: the 0.1% critical value is 1.95 / sqrt(n)
    ecdf = torch.arange(1, u.numel() + 1, dtype=torch.float64) / u.numel()
    assert float((ecdf - u).abs().max()) < 1.95 / u.numel() ** 0.5


@needs_compiler
@pytest.mark.parametrize("case", ["ula", "mala", "hmc"])
def test_compiled_blocks_give_the_eager_samples(case):
    g = gen(0)
    kernel, x0, block = {
        "ula": (tl.Langevin(DoubleWell(2), 0.01), torch.randn(64, 2, generator=g), True),
        # per-chain step sizes, a 5-step block
        "mala": (tl.MALA(Gaussian(torch.zeros(5)), torch.linspace(0.1, 0.5, 32)),
                 torch.randn(32, 5, generator=g), 5),
        "hmc": (tl.HMC(Gaussian(torch.zeros(5), torch.linspace(0.5, 2, 5)), 0.2, 5,
                       inv_mass=torch.linspace(0.6, 1.5, 5)), torch.randn(16, 5, generator=g), 2),
    }[case]
    eager = tl.sample(kernel, x0, 40, return_trajectory=True, **RUN)
    compiled = tl.sample(kernel, x0, 40, return_trajectory=True, compile=block, **RUN)
    _same(eager, compiled)
    torch.testing.assert_close(compiled.trajectory, eager.trajectory, atol=1e-5, rtol=1e-5)


@needs_compiler
def test_compiled_run_resumes_an_eager_checkpoint_to_the_uninterrupted_result(tmp_path):
    # float64: the double well's steep gradient amplifies float32 rounding to ~1e-4 here
    kernel = tl.MALA(DoubleWell(2), 0.1)
    x0 = torch.randn(64, 2, generator=gen(1), dtype=torch.float64)
    ref = tl.sample(kernel, x0, 50, burn_in=10, thin=2, seed=3, progress=False)

    def stop(step, state, info):
        if step == 23:
            raise KeyboardInterrupt
    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        tl.sample(kernel, x0, 50, burn_in=10, thin=2, seed=3, progress=False,
                  checkpoint=path, callback=stop)
    resumed = tl.sample(kernel, x0, 50, burn_in=10, thin=2, seed=3, progress=False,
                        checkpoint=path, checkpoint_every=8, compile=4)
    _same(ref, resumed)


def test_compile_refuses_what_it_cannot_run():
    x0 = torch.randn(8, 2, generator=gen(2))
    with pytest.raises(ValueError, match="compile=True needs a float or per-chain step_size"):
        tl.sample(tl.Langevin(DoubleWell(2), Linear(0.01, 0.001, 10)), x0, 10, compile=True)
    with pytest.raises(ValueError, match="cannot call a callback"):
        tl.sample(tl.Langevin(DoubleWell(2), 0.01), x0, 10, compile=True,
                  callback=lambda *a: None)
    with pytest.raises(ValueError, match="compile must be an integer >= 1; got -2"):
        tl.sample(tl.Langevin(DoubleWell(2), 0.01), x0, 10, compile=-2)


@needs_compiler
def test_more_shapes_than_dynamo_keeps_versions_of_still_compile():
    # Dynamo keeps few compiled versions per code object and, under fullgraph, fails past
    # them; a notebook compiling many targets must go on (a fresh code object takes over)
    from torch._inductor.codegen.cpp import CppScheduling
    before = CppScheduling.MAX_FUSED_KERNEL_ARGS_NUM
    with torch._dynamo.config.patch(recompile_limit=1):
        for d in (1, 2, 3):
            kernel, x0 = tl.Langevin(DoubleWell(d), 0.01), torch.randn(8, d, generator=gen(d))
            _same(tl.sample(kernel, x0, 10, seed=1, progress=False),
                  tl.sample(kernel, x0, 10, seed=1, progress=False, compile=True))
    # our compiles' one-function-per-kernel setting does not outlive them
    assert CppScheduling.MAX_FUSED_KERNEL_ARGS_NUM == before


@needs_compiler
@pytest.mark.parametrize("per_chain_mass", [False, True], ids=["pooled-mass", "per-chain-mass"])
def test_compiled_warmup_follows_the_eager_one(per_chain_mass):
    # float64 and a short warm-up: dual averaging feeds acceptance back into the step size,
    # which amplifies rounding (exp/log differ in the last bit between the compiled and the
    # eager code) about tenfold a step; over long warm-ups the two agree in distribution
    # (test_adaptation), not bit for bit
    x0 = torch.randn(16, 5, generator=gen(5), dtype=torch.float64)
    kernel = tl.HMC(Gaussian(torch.zeros(5, dtype=torch.float64), torch.linspace(0.5, 2, 5)),
                    0.1, 3)
    run = {"seed": 6, "per_chain": True, "per_chain_mass": per_chain_mass}
    eager = tl.adapt(kernel, x0, 12, **run)  # one mass window: [1, 11)
    compiled = tl.adapt(kernel, x0, 12, compile=True, **run)
    assert eager.inv_mass.shape == ((16, 5) if per_chain_mass else (5,))
    for a, b in [(eager.step_size, compiled.step_size), (eager.inv_mass, compiled.inv_mass),
                 (eager.x, compiled.x), (eager.acceptance, compiled.acceptance)]:
        torch.testing.assert_close(b, a, atol=1e-8, rtol=1e-8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_blocks_give_the_eager_samples():
    x0 = torch.randn(256, 5, generator=gen(3)).cuda()
    kernel = tl.MALA(Gaussian(torch.zeros(5, device="cuda")), 0.3)
    _same(tl.sample(kernel, x0, 40, **RUN), tl.sample(kernel, x0, 40, compile=True, **RUN))
