"""Score-based generation: the samplers on an exact score, and score matching."""

import math

import pytest
import torch

from torchlangevin import score

MEANS = torch.tensor([[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
WEIGHTS = torch.tensor([0.2, 0.5, 0.3])


def _mixture_check(result, mix, n):
    """Each component's share within 5 se of its weight, se = sqrt(w (1 - w) / n) (the
    samples are independent), and the heaviest component's sd near the mixture's 0.3."""
    share = torch.bincount(mix.component(result.final), minlength=3).double() / n
    se = (mix.weights * (1 - mix.weights) / n).sqrt()
    assert ((share - mix.weights).abs() < 5 * se).all(), (share, mix.weights)
    sd = result.final[mix.component(result.final) == 1].double().std(0)
    assert ((sd - 0.3).abs() < 0.05).all(), sd  # an sd of ~2000 points errs by ~2%


def test_annealed_langevin_with_the_exact_mixture_score_reaches_its_weights():
    mix, n = score.MixtureScore(MEANS, WEIGHTS, 0.3), 3000
    sigmas = score.geometric_sigmas(20.0, 0.01, 20)
    x0 = 20.0 * torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    out = score.annealed_langevin(mix, x0, sigmas, n_steps_each=50, step_lr=5e-5, seed=10,
                                  progress=False)
    _mixture_check(out, mix, n)
    assert out.n_evals == 20 * 51 + 1  # each level opens with the score at its own sigma


def test_predictor_corrector_with_the_exact_mixture_score_reaches_its_weights():
    mix, n = score.MixtureScore(MEANS, WEIGHTS, 0.3), 4000
    sigmas = score.geometric_sigmas(50.0, 0.01, 200)
    x0 = 50.0 * torch.randn(n, 2, generator=torch.Generator().manual_seed(1))
    out = score.predictor_corrector(mix, x0, sigmas, seed=2, progress=False,
                                    return_trajectory=True)
    _mixture_check(out, mix, n)
    assert out.n_evals == 2 * 200 and out.trajectory.shape == (401, n, 2)
    assert torch.equal(out.trajectory[-1], out.final)


def test_annealed_mala_with_the_exact_mixture_energy_reaches_its_weights():
    mix, n = score.MixtureScore(MEANS, WEIGHTS, 0.3), 3000
    sigmas = score.geometric_sigmas(20.0, 0.01, 20)
    x0 = 20.0 * torch.randn(n, 2, generator=torch.Generator().manual_seed(4))
    out = score.annealed_mala(mix.energy, x0, sigmas, n_steps_each=50, step_lr=5e-5, seed=5,
                              progress=False, return_trajectory=True)
    _mixture_check(out, mix, n)
    assert out.n_evals == 20 * 51 and out.trajectory.shape == (20 * 50 + 2, n, 2)
    assert out.acceptance.shape == (20,) and bool((out.acceptance > 0.5).all())


def test_mixture_energy_is_minus_the_log_density():
    mix = score.MixtureScore(MEANS, WEIGHTS, 0.3)
    x = torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    sigma = 0.7
    comps = torch.distributions.Normal(mix.means, math.sqrt(0.09 + sigma**2))
    log_q = torch.logsumexp(mix.weights.log() + comps.log_prob(x[:, None]).sum(-1), 1)
    e = mix.energy(x, sigma)
    assert torch.allclose(e - e[0], -(log_q - log_q[0]), atol=1e-10)
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(mix.energy(x, sigma).sum(), x)
    assert torch.allclose(-g, mix(x.detach(), sigma).double(), atol=1e-10)


def test_noise_conditional_energy_fits_a_gaussian_by_denoising_score_matching():
    # N(1, 0.5^2) blurred by sigma: E(x, sigma) - E(1, sigma) = (x - 1)^2 / (2 (0.25 + s^2))
    g = torch.Generator().manual_seed(7)
    data = 1.0 + 0.5 * torch.randn(4000, 1, generator=g)
    sigmas = score.geometric_sigmas(3.0, 0.05, 5)
    torch.manual_seed(0)
    model = score.NoiseConditionalEnergy((1,), width=32, depth=2, data_std=0.5)
    score.fit_score(model, data, sigmas, n_steps=300, batch_size=256, lr=5e-3, lr_end=5e-4,
                    progress=False)
    x = torch.linspace(0.0, 2.0, 21)[:, None]
    with torch.no_grad():
        est = model(x, 0.5)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.energy(xg, 0.5).sum(), xg)
    assert torch.allclose(est, -grad) and not est.requires_grad
    for sigma in (2.0, 0.5, 0.1):
        with torch.no_grad():
            e = model.energy(x, sigma)
        true = (x[:, 0] - 1.0).square() / (2 * (0.25 + sigma**2))
        err = float((e - e[10] - true).abs().max())
        assert err < 0.25 * float(true.max()), (sigma, err)  # measured 0.04-0.17; untrained ~1


def test_denoising_score_matching_recovers_a_gaussians_score():
    # N(1, 0.5^2) blurred by sigma has score -(x - 1) / (0.25 + sigma^2)
    g = torch.Generator().manual_seed(0)
    data = 1.0 + 0.5 * torch.randn(4000, 1, generator=g)
    sigmas = score.geometric_sigmas(3.0, 0.05, 5)
    torch.manual_seed(0)
    model = score.ScoreMLP((1,), width=32, depth=2, data_std=0.5)
    hist = score.fit_score(model, data, sigmas, n_steps=300, batch_size=256, lr=5e-3,
                           lr_end=5e-4, progress=False)
    assert hist.loss[-1] < hist.loss[0]
    for sigma in (2.0, 0.5, 0.1):
        x = 1.0 + math.sqrt(0.25 + sigma**2) * torch.randn(2000, 1, generator=g)
        with torch.no_grad():
            est = model(x, sigma)
        true = -(x - 1.0) / (0.25 + sigma**2)
        rel = float((est - true).square().mean().sqrt() / true.square().mean().sqrt())
        assert rel < 0.2, (sigma, rel)  # measured 0.04-0.14; smallest sigma worst


def test_sliced_score_matching_recovers_a_gaussians_score():
    g = torch.Generator().manual_seed(1)
    data = 0.5 * torch.randn(4000, 1, generator=g)
    sigmas = score.geometric_sigmas(2.0, 0.1, 5)
    torch.manual_seed(1)
    model = score.ScoreMLP((1,), width=32, depth=2, data_std=0.5)
    score.fit_score(model, data, sigmas, objective="ssm", n_steps=300, batch_size=256,
                    lr=5e-3, lr_end=5e-4, progress=False)
    x = math.sqrt(0.25 + 0.25) * torch.randn(2000, 1, generator=g)
    with torch.no_grad():
        est = model(x, 0.5)
    true = -x / 0.5
    rel = float((est - true).square().mean().sqrt() / true.square().mean().sqrt())
    assert rel < 0.25, rel  # SSM's estimate of the trace term is noisier than DSM's target


def test_bad_input_is_named():
    mix = score.MixtureScore(MEANS, WEIGHTS, 0.3)
    x0 = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="decreasing"):
        score.annealed_langevin(mix, x0, torch.tensor([0.1, 1.0]), progress=False)
    with pytest.raises(ValueError, match="n_steps_each"):
        score.annealed_langevin(mix, x0, torch.tensor([1.0, 0.1]), n_steps_each=0)
    with pytest.raises(ValueError, match="snr"):
        score.predictor_corrector(mix, x0, torch.tensor([1.0, 0.1]), snr=-1.0)
    with pytest.raises(ValueError, match="objective"):
        score.fit_score(score.ScoreMLP(), x0, torch.tensor([1.0, 0.1]), objective="cd")
    with pytest.raises(TypeError, match="no energy"):
        score.ScoreField(mix, 1.0)(x0)
    with pytest.raises(ValueError, match="sigma_max must exceed"):
        score.geometric_sigmas(0.1, 1.0, 3)
    with pytest.raises(ValueError, match="ema"):
        score.fit_score(score.ScoreMLP(), x0, torch.tensor([1.0, 0.1]), ema=1.0)
    with pytest.raises(ValueError, match="n_input_frequencies"):
        score.ScoreMLP(n_input_frequencies=-1)


def test_fit_score_ends_with_the_weights_average():
    # with ema=0 the model keeps its last weights; with ema > 0 they differ from the last
    # ones (the average lags), and the input Fourier features widen the first layer
    data = torch.randn(256, 2, generator=torch.Generator().manual_seed(3))
    sigmas = torch.tensor([1.0, 0.1])
    models = []
    for ema in (0.0, 0.9):
        torch.manual_seed(0)
        m = score.ScoreMLP((2,), width=16, depth=1, n_input_frequencies=3)
        score.fit_score(m, data, sigmas, n_steps=20, batch_size=32, ema=ema, progress=False)
        models.append(m)
    assert models[0].layers[0].in_features == 2 * (1 + 2 * 3)
    last, averaged = (m.layers[0].weight for m in models)
    assert not torch.allclose(last, averaged)


def test_feature_classifier_scores_real_digits_as_real():
    from torchlangevin.ebm.data import digits
    from torchlangevin.ebm.metrics import FeatureClassifier

    images, labels = digits()
    clf = FeatureClassifier(images[:1200], labels[:1200], hidden=32)
    held = images[1200:]
    assert clf.features(held).shape == (len(held), 32)
    assert clf.top_prob(held) > 0.9
    noise = torch.rand(held.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    # two halves of the held-out digits are far closer than digits and uniform noise
    assert clf.frechet(held[:290], held[290:]) < 0.2 * clf.frechet(noise, held)


def test_digits_demo_runs_the_energy_recipe(tmp_path):
    from torchlangevin.score.demo import run_digits

    r = run_digits(tmp_path, n_train_steps=1, n_levels=2, n_steps_each=2, n_generated=80,
                   model="energy")
    assert r["evals_al"] == 2 * 3 + 1 and 0.0 <= r["acceptance_min"] <= 1.0
    assert r["frechet_al"] > r["frechet_train"]  # one training step: far from digits
    assert (tmp_path / "energy_digits.png").exists()
    with pytest.raises(ValueError, match="model must be"):
        run_digits(model="ebm")


def test_toy_demo_runs_on_an_energy_parameterised_score():
    from torchlangevin.score.demo import run_toy

    r = run_toy("grid", n_train_steps=1, n_levels=2, n_steps_each=2, n_sets=1, model="energy")
    assert r["evals_al"] == 2 * 3 + 1 and r["mmd_ratio_al"] > 0 and r["mmd_ratio_pc"] > 0
    with pytest.raises(ValueError, match="model must be"):
        run_toy("grid", model="mlp")
