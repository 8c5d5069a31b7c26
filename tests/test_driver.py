import math
import warnings

import pytest
import torch

import torchlangevin as tl
from torchlangevin.distributions import DoubleWell, Gaussian, Quartic1D
from torchlangevin.schedules import Linear

from .conftest import gen

TARGET = DoubleWell(2)


def x0(c=64):
    return torch.randn(c, 2, generator=gen(0))


def test_shapes_thinning_burn_in_and_trajectory():
    chains = tl.sample(tl.MALA(TARGET, 0.1), x0(), 30, burn_in=7, thin=3, seed=0,
                       return_trajectory=True, progress=False)
    assert chains.samples.shape == (64, 10, 2)
    assert chains.energy.shape == (64, 10)
    assert chains.trajectory.shape == (64, 37, 2)
    # draw d is the state after burn_in + (d + 1) * thin steps
    torch.testing.assert_close(chains.samples[:, 0], chains.trajectory[:, 7 + 3 - 1])
    torch.testing.assert_close(chains.samples[:, -1], chains.final)
    torch.testing.assert_close(chains.energy, TARGET(chains.samples.reshape(-1, 2)).reshape(64, 10))
    assert chains.acceptance_rate.shape == (64,)
    assert chains.divergences.dtype == torch.long


def test_ula_energy_trace_is_computed_at_the_draws():
    chains = tl.sample(tl.Langevin(TARGET, 0.01), x0(), 20, thin=4, seed=0, progress=False)
    assert chains.acceptance_rate is None
    torch.testing.assert_close(chains.energy, TARGET(chains.samples.reshape(-1, 2)).reshape(64, 5))


def test_callback_sees_every_step():
    seen = []
    tl.sample(tl.HMC(TARGET, 0.1, 3), x0(), 12, burn_in=3, seed=0, progress=False,
              callback=lambda step, state, info: seen.append((step, state.step)))
    assert seen == [(t, t) for t in range(1, 16)]


def test_nonfinite_chain_is_reported_by_index_and_step():
    class Blows:
        """Gradient turns NaN once a chain passes x = 3 (chain 5 starts at 2.9)."""

        def __call__(self, x):
            return 0.5 * (x * x).sum(-1)

        def grad(self, x):
            g = -x.clone()  # pushes outwards
            return torch.where(x > 3, torch.nan, g)

    start = torch.zeros(8, 1)
    start[5] = 2.9
    with pytest.warns(RuntimeWarning, match=r"1 of 8 chains turned non-finite.*chain 5 by step"):
        chains = tl.Langevin(Blows(), 0.01, noise_scale=0.0).sample(start, 40, thin=2, seed=0,
                                                                   progress=False)
    assert chains.nonfinite_chains == [5]
    step = int(chains.nonfinite_step[5])
    assert 0 < step <= 40 and step % 2 == 0
    assert torch.isnan(chains.samples[5, -1]).all()  # kept as is, not replaced
    assert torch.isfinite(chains.samples[:5]).all()
    assert chains.summary().chains_used == 7


def _interrupt_at(step_to_fail):
    def callback(step, state, info):
        if step == step_to_fail:
            raise KeyboardInterrupt
    return callback


@pytest.mark.parametrize("kernel", [tl.Langevin(TARGET, 0.01), tl.MALA(TARGET, 0.1)],
                         ids=["ula", "mala"])
def test_checkpoint_resume_gives_the_uninterrupted_result(tmp_path, kernel):
    # with warnings as errors: a diverging chain here would make the comparison vacuous
    ref = tl.sample(kernel, x0(), 50, burn_in=10, thin=2, seed=3, progress=False)
    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        tl.sample(kernel, x0(), 50, burn_in=10, thin=2, seed=3, progress=False,
                  checkpoint=path, checkpoint_every=7, callback=_interrupt_at(33))
    assert path.exists()
    resumed = tl.sample(kernel, x0(), 50, burn_in=10, thin=2, seed=3, progress=False,
                        checkpoint=path, checkpoint_every=7)
    assert torch.equal(resumed.samples, ref.samples)
    assert torch.equal(resumed.energy, ref.energy)
    if ref.acceptance_rate is not None:
        assert torch.equal(resumed.acceptance_rate, ref.acceptance_rate)


def test_interrupt_inside_a_step_resumes_exactly(tmp_path):
    class Flaky:
        def __init__(self, fail_at):
            self.calls, self.fail_at = 0, fail_at

        def __call__(self, x):
            return TARGET(x)

        def grad(self, x):
            self.calls += 1
            if self.calls == self.fail_at:
                raise KeyboardInterrupt
            return TARGET.grad(x)

    ref = tl.sample(tl.Langevin(TARGET, 0.01), x0(), 40, seed=4, progress=False)
    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        tl.sample(tl.Langevin(Flaky(25), 0.01), x0(), 40, seed=4, progress=False,
                  checkpoint=path)
    resumed = tl.sample(tl.Langevin(Flaky(-1), 0.01), x0(), 40, seed=4, progress=False,
                        checkpoint=path)
    assert torch.equal(resumed.samples, ref.samples)


def test_checkpoint_from_another_run_is_refused(tmp_path):
    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        tl.sample(tl.Langevin(TARGET, 0.05), x0(), 20, seed=3, progress=False, checkpoint=path,
                  callback=_interrupt_at(5))
    with pytest.raises(ValueError, match="written by a different run"):
        tl.sample(tl.Langevin(TARGET, 0.05), x0(), 30, seed=3, progress=False, checkpoint=path)


def test_save_load_and_summary(tmp_path):
    chains = tl.sample(tl.MALA(Gaussian([0.0, 0.0]), 0.5), x0(256), 200, seed=0, progress=False)
    chains.save(tmp_path / "c.pt")
    back = tl.Chains.load(tmp_path / "c.pt")
    assert torch.equal(back.samples, chains.samples) and back.seed == 0
    s = chains.summary()
    assert s.mean.shape == (2,) and s.r_hat.shape == (2,)
    # 256 chains x 200 draws of N(0, 1): mean within 5 se using the bulk ESS
    assert bool((abs(s.mean) < 5 / s.ess_bulk**0.5).all())
    assert "ess_bulk" in str(s) and "x[1]" in str(s)
    assert s.to_dataframe().shape == (2, 5)


BAD_INPUT = [
    (lambda: tl.Langevin(TARGET, step_size=0.0), ValueError, r"step_size must be > 0; got 0.0"),
    (lambda: tl.MALA(TARGET, step_size=-1), ValueError, r"step_size must be > 0; got -1"),
    (lambda: tl.MALA(TARGET, 0.1, noise_scale=0.0), ValueError, r"noise_scale must be > 0"),
    (lambda: tl.Langevin(TARGET, step_size=torch.tensor([0.1, -0.1])), ValueError,
     r"step_size must be > 0 and finite for every chain; chains \[1\]"),
    (lambda: tl.sample(tl.Langevin(TARGET, Linear(0.1, 0.0, 10)), x0(), 10), ValueError,
     r"step_size schedule .* gives 0.0 at step 9"),
    (lambda: tl.sample(tl.Langevin(lambda x: x, 0.1), x0(), 10), ValueError,
     r"energy returned \(64, 2\) for x of shape \(64, 2\); expected shape \(64,\)"),
    (lambda: tl.sample(tl.Langevin(TARGET, 0.1), torch.tensor([[0.0, math.nan]]), 10), ValueError,
     r"x0 has non-finite entries .* chains \[0\]"),
    (lambda: tl.sample(tl.Langevin(Quartic1D(), 0.1), torch.tensor([[0.0], [2.0]]), 10),
     ValueError, r"x0 lies outside the support Box\(low=\[-0.7\], high=\[1.5\]\) in chains \[1\]"),
    (lambda: tl.sample(tl.Langevin(TARGET, 0.1), x0(), 10, thin=0), ValueError,
     r"thin must be an integer >= 1; got 0"),
    (lambda: tl.sample(tl.Langevin(TARGET, 0.1), x0(), 10, thin=11), ValueError,
     r"thin must be <= n_steps \(10\)"),
    (lambda: tl.sample(tl.Langevin(TARGET, 0.1), x0(), 0), ValueError,
     r"n_steps must be an integer >= 1; got 0"),
    (lambda: tl.sample(tl.Langevin(TARGET, 0.1), x0(), 10, burn_in=-1), ValueError,
     r"burn_in must be an integer >= 0; got -1"),
    (lambda: tl.sample(tl.Langevin(TARGET, 0.1), [[0.0, 0.0]], 10), TypeError,
     r"x0 must be a torch.Tensor"),
    (lambda: tl.sample(object(), x0(), 10), TypeError, r"kernel must have init"),
    (lambda: tl.Langevin("energy", 0.1), TypeError, r"energy must be callable"),
    (lambda: tl.HMC(TARGET, 0.1, n_leapfrog_steps=0), ValueError, r"n_leapfrog_steps must be"),
    (lambda: tl.sample(tl.HMC(TARGET, 0.1, inv_mass=torch.ones(3)), x0(), 5), ValueError,
     r"inv_mass of shape \(3,\) neither broadcasts to the event shape \(2,\) nor has the "
     r"state's shape \(64, 2\)"),
    (lambda: tl.sample(tl.Langevin(TARGET, 0.1, inv_mass=torch.ones(3)), x0(), 5), ValueError,
     r"inv_mass of shape \(3,\) neither broadcasts to the event shape \(2,\)"),
    (lambda: tl.sample(tl.UnderdampedLangevin(TARGET, 0.1, inv_mass=torch.ones(3)), x0(), 5),
     ValueError, r"inv_mass of shape \(3,\) neither broadcasts"),
    (lambda: tl.sample(tl.MALA(TARGET, 0.1, inv_mass=torch.ones(32, 2)), x0(), 5), ValueError,
     r"inv_mass of shape \(32, 2\) neither broadcasts to the event shape \(2,\) nor has "
     r"the state's shape \(64, 2\)"),
    (lambda: tl.sample(tl.MALA(TARGET, torch.full((3,), 0.1)), x0(), 5), ValueError,
     r"step_size has 3 per-chain values but x0 has 64 chains"),
]


@pytest.mark.parametrize("call, error, message", BAD_INPUT)
def test_bad_input_gets_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_no_warning_on_a_healthy_run():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tl.sample(tl.MALA(TARGET, 0.1), x0(), 20, seed=0, progress=False)


def test_in_place_updates_never_touch_the_callers_x0():
    start = x0()
    copy = start.clone()
    chains = tl.sample(tl.Langevin(TARGET, 0.01), start, 20, seed=0, progress=False)
    assert torch.equal(start, copy)
    # donated (no callback) and pure (with a callback) runs give the same draws
    pure = tl.sample(tl.Langevin(TARGET, 0.01), start, 20, seed=0, progress=False,
                     callback=lambda *a: None)
    assert torch.equal(chains.samples, pure.samples)


def test_callback_states_stay_valid_after_later_steps():
    kept = []
    tl.sample(tl.Langevin(TARGET, 0.01), x0(), 5, seed=0, progress=False,
              callback=lambda step, state, info: kept.append((state.x.clone(), state.x)))
    assert all(torch.equal(a, b) for a, b in kept)  # no state was overwritten in place


def test_progress_bar_only_on_a_terminal(monkeypatch):
    from torchlangevin import util

    assert util.progress_bar(True, 10_000, "x") is None  # pytest's stderr is no terminal
    monkeypatch.setattr(util.sys.stderr, "isatty", lambda: True, raising=False)
    bar = util.progress_bar(True, 10_000, "x")
    assert bar is not None
    bar.close()
    assert util.progress_bar(False, 10_000, "x") is None
    assert util.progress_bar(True, 50, "x") is None  # short runs: no bar


def test_to_arviz_layout_and_stats(tmp_path):
    az = pytest.importorskip("arviz")
    chains = tl.sample(tl.HMC(Gaussian([0.0, 0.0], [1e-4, 1.0]), 0.05, 10), x0(8) * 0.01, 60,
                       thin=3, seed=0, progress=False)
    idata = chains.to_arviz()
    assert idata.posterior["x"].dims == ("chain", "draw", "x_dim_0")
    assert idata.posterior["x"].shape == (8, 20, 2)
    stats = idata.sample_stats
    assert set(stats.data_vars) >= {"energy", "lp", "acceptance_rate", "diverging"}
    # the per-draw windows add up to the per-chain totals
    accepted = (stats["acceptance_rate"].values * 3).round().sum(1)
    assert accepted.tolist() == (chains.acceptance_rate * 60).round().tolist()
    assert int(stats["diverging"].values.sum()) <= int(chains.divergences.sum())
    assert int(chains.divergences.sum()) > 0 and bool(stats["diverging"].values.any())
    assert az.summary(idata).shape[0] == 2
    chains.save(tmp_path / "c.pt")  # the extra fields survive a round trip
    assert tl.Chains.load(tmp_path / "c.pt").to_arviz().posterior["x"].shape == (8, 20, 2)
