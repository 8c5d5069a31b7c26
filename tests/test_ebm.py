import math

import pytest
import torch

import torchlangevin as tl
from torchlangevin import ebm

from .conftest import GaussEnergy, gen

DATA = 2.0 + 0.5 * torch.randn(4000, 1, generator=gen(1))


def test_cd_gradient_points_towards_the_data():
    model = GaussEnergy()  # mu = 0, data mean 2: descent must raise mu
    cd = ebm.ContrastiveDivergence(model, tl.MALA(model, 0.1), k_steps=5, seed=0)
    loss, negatives = cd(DATA[:500])
    loss.backward()
    assert float(model.mu.grad) < 0
    assert not negatives.requires_grad


@pytest.mark.parametrize("objective", ["cd", "dsm"])
def test_training_recovers_the_gaussian_mle(objective):
    torch.manual_seed(0)
    model = GaussEnergy()
    sigma = 0.2  # DSM's estimator variance grows like 1/sigma; CD ignores sigma
    ebm.fit(model, DATA, kernel=tl.MALA(model, 0.05), objective=objective, epochs=20,
            batch_size=200, lr=0.05, k_steps=10, sigma=sigma, progress=False)
    mean, var = float(DATA.mean()), float(DATA.var())
    # CD's fixed point is the MLE; DSM's is the law smoothed by the noise: var + sigma^2
    target_var = var if objective == "cd" else var + sigma**2
    assert float(model.mu.detach()) == pytest.approx(mean, rel=0.10)
    assert float(model.log_sd.detach().exp()) ** 2 == pytest.approx(target_var, rel=0.10)


def test_buffer_writes_chains_back_to_their_slots():
    model = GaussEnergy()
    init = ebm.uniform_init(torch.tensor([-1.0]), torch.tensor([1.0]))
    cd = ebm.ContrastiveDivergence(model, tl.Langevin(model, 0.01), k_steps=3, persistent=True,
                                   buffer_size=100, reinit_prob=0.0, init=init, seed=0)
    before = cd.buffer.data.clone()
    negatives, idx = cd.negatives(DATA[:40])
    assert torch.equal(cd.buffer.data[idx], negatives)
    untouched = torch.ones(100, dtype=torch.bool)
    untouched[idx] = False
    assert torch.equal(cd.buffer.data[untouched], before[untouched])
    assert len(set(idx.tolist())) == 40  # distinct slots


def test_buffer_reinitialises_the_requested_share():
    init = ebm.gaussian_init(torch.zeros(2), torch.ones(2))
    buf = ebm.ReplayBuffer(5000, init, reinit_prob=0.3, generator=gen(0))
    buf.data.fill_(100.0)  # fresh chains are then recognisable
    g = gen(1)
    fresh = 0
    for _ in range(20):
        x, _ = buf.sample(1000, g)
        fresh += int((x.abs() < 50).all(1).sum())
    share = fresh / 20_000
    assert abs(share - 0.3) < 5 * math.sqrt(0.3 * 0.7 / 20_000)  # binomial, 5 se


def test_nan_loss_stops_with_a_clear_error():
    class Explodes(GaussEnergy):
        calls = 0

        def forward(self, x):
            Explodes.calls += 1
            out = super().forward(x)
            return out * math.nan if Explodes.calls > 30 else out

    model = Explodes()
    with pytest.raises(FloatingPointError, match=r"loss became nan at epoch \d+, step \d+"):
        ebm.fit(model, DATA, kernel=tl.Langevin(model, 0.01), epochs=5, batch_size=500,
                k_steps=2, progress=False)


def test_fit_checkpoint_resume_equals_an_uninterrupted_run(tmp_path):
    def run(epochs, path=None):
        torch.manual_seed(0)
        model = GaussEnergy()
        history = ebm.fit(model, DATA, kernel=tl.Langevin(model, 0.01), epochs=epochs,
                          batch_size=400, lr=0.05, k_steps=3, buffer_size=1000,
                          checkpoint=path, seed=3, progress=False)
        return model, history

    ref, ref_history = run(4)
    run(2, tmp_path / "ck.pt")
    resumed, history = run(4, tmp_path / "ck.pt")
    assert torch.equal(ref.mu, resumed.mu) and torch.equal(ref.log_sd, resumed.log_sd)
    # the persistent chains come back too, as the model's samples
    assert history.buffer.shape == (1000, 1)
    assert torch.equal(history.buffer, ref_history.buffer)


def test_fit_argument_errors():
    model = GaussEnergy()
    with pytest.raises(ValueError, match="kernel's energy must be the energy_model"):
        ebm.fit(model, DATA, kernel=tl.Langevin(GaussEnergy(), 0.01), epochs=1)
    with pytest.raises(ValueError, match="objective must be 'cd' or 'dsm'"):
        ebm.fit(model, DATA, kernel=tl.Langevin(model, 0.01), objective="ml")
    with pytest.raises(ValueError, match=r"data has non-finite entries \(NaN or Inf\) in rows \[0"):
        ebm.fit(model, torch.full((10, 1), math.nan), kernel=tl.Langevin(model, 0.01))


def test_two_sample_metrics():
    g = gen(0)
    a, b = torch.randn(800, 2, generator=g), torch.randn(800, 2, generator=g)
    shifted = torch.randn(800, 2, generator=g) + 0.5
    floor = ebm.mmd(a, b)
    assert 0 < floor < ebm.mmd(a, shifted) / 5
    assert abs(ebm.mmd(a, b, unbiased=True)) < ebm.mmd(a, shifted, unbiased=True) / 5
    assert ebm.energy_distance(a, b) < ebm.energy_distance(a, shifted) / 5


def test_learning_rate_schedule_is_applied_per_epoch():
    model = GaussEnergy()
    seen = []
    opt = torch.optim.Adam(model.parameters(), lr=1.0)
    ebm.fit(model, DATA, kernel=tl.Langevin(model, 0.01), epochs=3, batch_size=1000,
            k_steps=1, optimizer=opt, lr=tl.schedules.Geometric(1e-2, 1e-4, 3),
            progress=False, callback=lambda e, h: seen.append(opt.param_groups[0]["lr"]))
    assert seen == pytest.approx([1e-2, 1e-3, 1e-4])
    with pytest.raises(ValueError, match="lr must be a positive number or a Schedule"):
        ebm.fit(model, DATA, kernel=tl.Langevin(model, 0.01), lr=-1.0)
