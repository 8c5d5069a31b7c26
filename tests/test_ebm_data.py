"""The toy data sets and the multi-bandwidth judge (ebm.data, ebm.metrics)."""

import math

import pytest
import torch

from torchlangevin.ebm import data, metrics


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", sorted(data.TOYS))
def test_every_toy_is_seeded_finite_and_2d(name):
    a, b = data.toy(name, 500, _gen(3)), data.toy(name, 500, _gen(3))
    assert a.shape == (500, 2) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.equal(a, data.toy(name, 500, _gen(4)))


def test_the_ten_benchmark_sets_are_torchebms_eight_and_ours():
    assert len(data.BENCHMARK_TOYS) == 10 and set(data.TORCHEBM_TOYS) < set(data.BENCHMARK_TOYS)
    with pytest.raises(ValueError, match="data must be one of"):
        data.toy("spiral", 10, _gen())


# n = 20,000 points: a mean's se is sd / 141, so 5 se is under 4% of an sd
N = 20_000


def test_shapes_follow_torchebms_definitions():
    circle = data.toy("circle", N, _gen())
    r = circle.norm(dim=1)
    assert abs(float(r.mean()) - 1.0) < 5 * 0.05 / math.sqrt(N) + 2e-3  # noise sd 0.05
    board = data.toy("checkerboard", N, _gen())
    assert float(board.abs().max()) < 4.1
    odd = (board.floor().sum(1) % 2 != 0).double().mean()
    assert odd > 0.98  # noise sd 0.01 moves ~0.8% of points over an edge
    grid = data.toy("grid", N, _gen())
    lattice = torch.linspace(-1, 1, 10)
    off = (grid[:, :, None] - lattice).abs().min(2).values
    assert float(off.max()) < 0.06 and abs(float(off.square().mean().sqrt()) - 0.01) < 1e-3
    eight = data.toy("eight_gaussians", N, _gen())
    assert abs(float(eight.norm(dim=1).mean()) - 2.0) < 2e-3  # sd 0.02 about radius 2
    roll = data.toy("swiss_roll", N, _gen())
    assert roll.mean(0).abs().max() < 5 * 0.5 / math.sqrt(N)  # centred, sd ~0.5
    assert abs(float(roll.std(0).mean()) - 0.5) < 0.02
    moons = data.toy("two_moons", N, _gen())  # scikit-learn's make_moons law
    assert -1.3 < float(moons[:, 0].min()) and float(moons[:, 0].max()) < 2.3
    wheel = data.toy("pinwheel", N, _gen())
    assert float(wheel.norm(dim=1).max()) < 2.4


def test_judge_puts_fresh_data_near_the_floor_and_a_shift_far_above():
    train, held = data.toy("pinwheel", 2000, _gen(1)), data.toy("pinwheel", 1000, _gen(2))
    same = data.toy("pinwheel", 2000, _gen(3))
    j = metrics.judge(same, train, held, n_sets=2)
    # a mean of V-statistics of identical laws: seeds give ratios 0.6-1.4; TV 0.9-1.1
    assert 0.5 < j.mmd_ratio < 2.0 and 0.8 < j.tv_ratio < 1.25
    assert len(j.bandwidths) == 5 and min(j.bandwidths) < 0.2 * max(j.bandwidths)
    shifted = metrics.judge(same + 0.15, train, held, n_sets=2)  # about a blade's width
    assert shifted.mmd_ratio > 2 and shifted.tv_ratio > 1.3 and shifted.worst_ratio > 3
    with pytest.raises(ValueError, match="judge needs"):
        metrics.judge(same[:100], train, held)
    with pytest.raises(ValueError, match="bandwidths"):
        metrics.mmd_multi(same, held, [0.1, -1.0])


def test_mmd_multi_sees_fine_structure_the_median_bandwidth_misses():
    # TorchEBM's eight Gaussians (sd 0.02) against the same blurred to sd 0.1: the
    # median-bandwidth MMD stays at its floor, the sum with narrow kernels does not
    held, train = data.toy("eight_gaussians", 1000, _gen(1)), data.toy("eight_gaussians",
                                                                       1000, _gen(2))
    blurred = data.eight_gaussians(1000, _gen(3), scale=0.1)
    assert metrics.mmd(blurred, held) < 2 * metrics.mmd(train, held)
    hs = [f * metrics.data_scale(held) for f in metrics.BANDWIDTH_FRACTIONS]
    assert metrics.mmd_multi(blurred, held, hs) > 2 * metrics.mmd_multi(train, held, hs)


def test_frechet_distance_of_two_gaussians_matches_the_formula():
    g = _gen()
    x = torch.randn(20000, 2, generator=g, dtype=torch.float64)
    y = 2 * torch.randn(20000, 2, generator=g, dtype=torch.float64) + torch.tensor([1.0, 0])
    # |dmu|^2 + tr(I + 4I - 2 * 2I) = 1 + 2 = 3; sample covariances err by ~1/sqrt(n)
    assert metrics.frechet_distance(x, y) == pytest.approx(3.0, abs=0.1)


def test_the_cli_offers_every_toy():
    from torchlangevin.cli import TOY_NAMES

    assert sorted(TOY_NAMES) == sorted(data.TOYS)
