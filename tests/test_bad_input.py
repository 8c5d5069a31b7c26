"""Bad input to the API gets a clear error naming the argument, the value and what was
expected; chains that fail are named by their global index and left out of summaries; a run
that cannot fit in memory is refused before it starts."""

import math
import warnings

import numpy as np
import pytest
import torch

import torchlangevin as tl
from torchlangevin import chains as chains_module
from torchlangevin import ebm
from torchlangevin.distributions import Gaussian
from torchlangevin.tabular import TabularGenerator

from .conftest import gen

TARGET = Gaussian([0.0, 0.0])


def x0(c=8):
    return torch.randn(c, 2, generator=gen(0))


class Quadratic(torch.nn.Module):
    """``E(x) = |x - mu|^2 / 2``, ``mu`` learnt."""

    def __init__(self) -> None:
        super().__init__()
        self.mu = torch.nn.Parameter(torch.zeros(2))

    def forward(self, x):
        return 0.5 * ((x - self.mu) ** 2).sum(-1)


MODEL = Quadratic()


def _nan_everywhere(x):
    return torch.full(x.shape[:1], math.nan) + 0 * x.sum(-1)


def _finite_only_at_zero(x):
    e = 0.5 * (x * x).sum(-1)
    return torch.where((x == 0).all(-1), e, torch.full_like(e, math.nan))


def _huge(c):  # a stride-0 view: a billion chains in 8 bytes
    return torch.zeros(1, 2).expand(c, 2)


BAD_INPUT = [
    ("chain_blocks=0", lambda: tl.sample(tl.MALA(TARGET, 0.1), x0(), 5, chain_blocks=0),
     ValueError, r"chain_blocks must be an integer >= 1; got 0"),
    ("chain_blocks=-1", lambda: tl.sample(tl.MALA(TARGET, 0.1), x0(), 5, chain_blocks=-1),
     ValueError, r"chain_blocks must be an integer >= 1; got -1"),
    ("chain_blocks=2.0", lambda: tl.sample(tl.MALA(TARGET, 0.1), x0(), 5, chain_blocks=2.0),
     ValueError, r"chain_blocks must be an integer >= 1; got 2.0"),
    ("chain_blocks=9 > chains", lambda: tl.sample(tl.MALA(TARGET, 0.1), x0(), 5,
                                                  chain_blocks=9),
     ValueError, r"at most the number of chains \(8\); got 9"),
    ("MALA step_size='0.1'", lambda: tl.MALA(TARGET, "0.1"), TypeError,
     r"step_size must be a number; got '0.1'"),
    ("Langevin step_size='0.1'", lambda: tl.Langevin(TARGET, "0.1"), TypeError,
     r"step_size must be a number; got '0.1'"),
    ("HMC step_size='0.1'", lambda: tl.HMC(TARGET, "0.1", 5), TypeError,
     r"step_size must be a number; got '0.1'"),
    ("step_size=True", lambda: tl.MALA(TARGET, True), TypeError,
     r"step_size must be a number; got True"),
    ("noise_scale='1'", lambda: tl.Langevin(TARGET, 0.1, noise_scale="1"), TypeError,
     r"noise_scale must be a number; got '1'"),
    ("CD buffer_size=0", lambda: ebm.ContrastiveDivergence(
        MODEL, tl.Langevin(MODEL, 0.01), persistent=True, buffer_size=0), ValueError,
     r"buffer_size must be an integer >= 1; got 0"),
    ("CD buffer_size=0, not persistent", lambda: ebm.ContrastiveDivergence(
        MODEL, tl.Langevin(MODEL, 0.01), buffer_size=0), ValueError,
     r"buffer_size must be an integer >= 1; got 0"),
    ("CD buffer_size=10.5", lambda: ebm.ContrastiveDivergence(
        MODEL, tl.Langevin(MODEL, 0.01), persistent=True, buffer_size=10.5), ValueError,
     r"buffer_size must be an integer >= 1; got 10.5"),
    ("CD reinit_prob=2", lambda: ebm.ContrastiveDivergence(
        MODEL, tl.Langevin(MODEL, 0.01), persistent=True, reinit_prob=2), ValueError,
     r"reinit_prob must be in \[0, 1\]; got 2"),
    ("fit buffer_size=0", lambda: ebm.fit(MODEL, torch.randn(20, 2), kernel=tl.Langevin(
        MODEL, 0.01), epochs=1, buffer_size=0, progress=False), ValueError,
     r"buffer_size must be an integer >= 1; got 0"),
    ("adapt: NaN everywhere", lambda: tl.adapt(tl.MALA(_nan_everywhere, 0.1), x0(), 50),
     ValueError, r"the energy or its gradient is NaN/Inf at all 8 starting points"),
    ("adapt: NaN at every move", lambda: tl.adapt(tl.MALA(_finite_only_at_zero, 0.1),
                                                  torch.zeros(8, 2), 50),
     ValueError, r"no step size down to .* has one short move accepted"),
    ("compile=True, autograd energy", lambda: tl.sample(
        tl.MALA(lambda x: 0.5 * (x * x).sum(-1), 0.1), x0(), 5, compile=True),
     ValueError, r"compile=True cannot compile the gradient of the energy <lambda>: it would "
                 r"come from torch.autograd.grad.*torch.func.grad.*or run with compile=False"),
    ("1e9 chains x 1e6 draws", lambda: tl.sample(tl.MALA(TARGET, 0.1), _huge(10**9), 10**6),
     ValueError, r"this request needs 2\.8e\+07 GB \(draws 2\.8e\+07 GB\) but .* GB of memory "
                 r"is available on cpu; 1000000000 chains x 1000000 draws x 2 numbers are "
                 r"kept: keep fewer draws with a larger thin"),
    ("trajectory of 1e12 steps", lambda: tl.sample(
        tl.MALA(TARGET, 0.1), _huge(1000), 10, thin=10, burn_in=10**12,
        return_trajectory=True), ValueError,
     r"trajectory 8e\+0[0-9] GB\).*return_trajectory=True keeps every step of every chain"),
    ("1e8 chains in 2 blocks", lambda: tl.sample(tl.MALA(TARGET, 0.1), _huge(10**8), 10**4,
                                                 chain_blocks=2),
     ValueError, r"this request needs 5\.6e\+04 GB"),
]


@pytest.mark.parametrize("call, error, message", [c[1:] for c in BAD_INPUT],
                         ids=[c[0] for c in BAD_INPUT])
def test_bad_input_gets_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.fixture(scope="module")
def fitted():
    """A generator as ``fit`` leaves it for classes 0 and 1 (counts are checked before any
    energy is used, so none is fitted here: fitting costs seconds)."""
    gen_ = TabularGenerator(n_steps=2, epochs=1, hidden=8, seed=0)
    gen_.classes_, gen_.class_counts_ = [0, 1], {0: 10, 1: 20}
    gen_.energies_ = {0: None, 1: None}
    return gen_


@pytest.mark.parametrize("counts, error, message", [
    ({0: 3, 1: 3}, ValueError, r"counts must add up to n=10; got \{0: 3, 1: 3\} \(sum 6\)"),
    ({0: -1, 1: 11}, ValueError, r"counts\[0\] must be an integer >= 0; got -1"),
    ({0: 2.5, 1: 7.5}, ValueError, r"counts\[0\] must be an integer >= 0; got 2.5"),
    ({0: "5", 1: 5}, ValueError, r"counts\[0\] must be an integer >= 0; got '5'"),
    ({2: 10}, ValueError, r"counts: unknown class 2"),
    ([5, 5], TypeError, r"counts must be a dict \{class: rows\}; got list"),
])
def test_tabular_counts_are_checked(fitted, counts, error, message):
    with pytest.raises(error, match=message):
        fitted.sample(10, counts=counts)


# -- persistent contrastive divergence without an init -------------------------------------

def test_persistent_cd_without_init_starts_uniform_over_the_first_batch_range():
    # the seed's call, as TorchEBM users type it
    cd = ebm.ContrastiveDivergence(MODEL, tl.Langevin(MODEL, 0.01), k_steps=10,
                                   persistent=True, buffer_size=1024, reinit_prob=0.0)
    assert cd.buffer is None  # made on the first batch
    batch = torch.tensor([[0.0, -1.0], [2.0, 3.0], [1.0, 1.0], [0.5, 0.0]])
    fresh = ebm.batch_range_init(batch)(1024, torch.Generator().manual_seed(0))
    loss, negatives = cd(batch)
    assert torch.isfinite(loss) and negatives.shape == batch.shape and len(cd.buffer) == 1024
    untouched = torch.ones(1024, dtype=torch.bool)
    untouched[cd.negatives(batch)[1]] = False  # a second batch: slots it did not draw
    # uniform on [lo - 0.1 w, hi + 0.1 w]: the min of ~1000 draws is within 1% of the width of
    # the bound but for a chance (0.99)^1000 = 4e-5; the mean within 5 sd (w / sqrt(12 N))
    for data in (fresh, cd.buffer.data[untouched]):
        low, high = torch.tensor([-0.2, -1.4]), torch.tensor([2.2, 3.4])
        width = high - low
        assert (data >= low).all() and (data <= high).all()
        assert (data.amin(0) < low + 0.01 * width).all()
        assert (data.amax(0) > high - 0.01 * width).all()
        se = width / math.sqrt(12 * data.shape[0])
        assert ((data.mean(0) - (low + high) / 2).abs() < 5 * se).all()


def test_batch_range_init_gives_a_constant_coordinate_a_unit_margin():
    fresh = ebm.batch_range_init(torch.tensor([[1.0], [1.0]]))(500, gen(0))
    assert fresh.min() >= 0.0 and fresh.max() <= 2.0 and fresh.std() > 0.4


# -- divergences named in full ----------------------------------------------------------------

class Cusp:
    """``E = |x|^2 / 2 + sum sqrt|x_i|``: its gradient is not finite at 0, where every
    proposal of MALA and HMC is NaN (the chain is frozen)."""

    def __call__(self, x):
        return 0.5 * (x * x).sum(-1) + x.abs().sqrt().sum(-1)


@pytest.mark.parametrize("kernel", [tl.MALA(Cusp(), 0.3), tl.HMC(Cusp(), 0.2, 3)],
                         ids=["mala", "hmc"])
def test_a_chain_frozen_by_a_nonfinite_gradient_is_named_by_global_index(kernel):
    start = x0(8)
    start[5] = 0.0
    with pytest.warns(RuntimeWarning, match=r"1 of 8 chains turned non-finite \(a NaN/Inf "
                                            r"position, energy or gradient\): chain 5 by step "
                                            r"4\. A chain whose energy or gradient"):
        chains = tl.sample(kernel, start, 30, burn_in=2, thin=2, seed=0, chain_blocks=4,
                           progress=False)
    # frozen from the start: the first kept draw (step burn_in + thin) is already stuck
    assert chains.nonfinite_chains == [5] and int(chains.nonfinite_step[5]) == 4
    assert (chains.samples[5] == 0).all()
    summary = chains.summary()
    assert summary.chains_used == 7
    assert np.allclose(summary.mean, chains.samples[[0, 1, 2, 3, 4, 6, 7]].double()
                       .reshape(-1, 2).mean(0).numpy())


def test_a_mala_chain_whose_energy_turns_infinite_mid_run_is_warned_about():
    def trap(x):  # -inf beyond x_0 > 1.5: a chain that steps in is accepted and stays
        e = 0.5 * (x * x).sum(-1)
        return torch.where(x[:, 0] > 1.5, torch.full_like(e, -math.inf), e)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chains = tl.sample(tl.MALA(trap, 0.5), x0(64), 100, seed=0, chain_blocks=2,
                           progress=False)
    trapped = (~torch.isfinite(chains.energy)).any(1).nonzero().flatten().tolist()
    assert len(trapped) >= 2 and any(i >= 32 for i in trapped)  # in both blocks
    assert chains.nonfinite_chains == trapped
    for i in trapped:  # the step reported is that of the first draw with energy -inf
        step = int(chains.nonfinite_step[i])
        energy = chains.energy[i]
        assert math.isinf(energy[step - 1]) and (step == 1 or math.isfinite(energy[step - 2]))
    messages = [str(w.message) for w in caught if w.category is RuntimeWarning]
    assert len(messages) == 1 and f"{len(trapped)} of 64 chains" in messages[0]
    assert f"chain {trapped[-1]} by step" in messages[0] or len(trapped) > 10
    assert chains.summary().chains_used == 64 - len(trapped)


# -- summary in chunks --------------------------------------------------------------------------

def test_summary_in_chunks_equals_summary_in_one_piece(monkeypatch):
    samples = torch.randn(40, 6, 12, generator=gen(1)).movedim(0, 1)  # (6 chains, 40, 12)
    samples = samples.reshape(6, 40, 3, 4)
    chains = tl.Chains(samples=samples, final=samples[:, -1], acceptance_rate=None,
                       divergences=torch.zeros(6, dtype=torch.long),
                       nonfinite_step=torch.tensor([-1, -1, 3, -1, -1, -1]))
    whole = chains.summary()
    # one coordinate a chunk: a chunk holds (chains x draws) = 200 numbers at most
    monkeypatch.setattr(chains_module, "SUMMARY_BYTES_PER_NUMBER", 10**9)
    monkeypatch.setattr(chains_module, "_MIN_CHUNK", 1)
    pieces = chains.summary()
    for name in ("mean", "sd", "ess_bulk", "ess_tail", "r_hat"):
        a, b = getattr(whole, name), getattr(pieces, name)
        # the same numbers; a reduction over fewer columns may round the last bit differently
        assert a.shape == (3, 4) and np.allclose(a, b, rtol=1e-12, atol=0), name
    assert whole.chains_used == pieces.chains_used == 5


# -- the calls users of the peers type --------------------------------------------------------

def test_llc_result_converts_to_xarray_under_devinterp_names():
    pytest.importorskip("xarray")
    from torchlangevin.slt import LLC

    trace = np.arange(12.0).reshape(3, 4)
    r = LLC(mean=5.5, sd=4.0, se=1.0, per_chain=trace.mean(1), trace=trace, ess=9.0, rhat=1.01,
            init_loss=0.3, n_beta=10.0, excluded={2: 7})
    ds = r.to_xarray()
    assert float(ds["llc_mean"]) == r["llc_mean"] == 5.5 and float(ds["llc_std"]) == 4.0
    assert ds["llc_per_chain"].dims == ("chain",)
    assert np.array_equal(ds["llc_per_chain"].values, r["llc_per_chain"])
    assert ds["loss_trace"].dims == ("chain", "draw") and ds.attrs["rhat"] == 1.01
    assert ds.attrs["excluded_chains"] == '{"2": 7}'
