"""Language models: attention on the vectorised path, token data, weight restrictions, the
singular fluctuation, the LLC along a training run."""

import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchlangevin import posterior, slt
from torchlangevin.posterior.functional import FlatModel, next_token_loss

V, T, E = 12, 6, 16
KW = dict(num_chains=2, num_draws=3, batch_size=8, lr=1e-4, n_beta=10.0, progress=False)
FAST = {**KW, "mala_checks": 0}


def tokens(n=48, seed=0):
    return torch.randint(0, V, (n, T), generator=torch.Generator().manual_seed(seed))


class SDPA(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.qkv, self.out = nn.Embedding(V, E), nn.Linear(E, 3 * E), nn.Linear(E, V)

    def forward(self, x):
        h = self.emb(x)
        q, k, v = (t.transpose(-2, -3) for t in self.qkv(h).view(*h.shape[:-1], 3, 2, E // 2)
                   .unbind(-3))
        return self.out(self.attend(q, k, v).transpose(-2, -3).reshape(h.shape))

    def attend(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class MHA(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.out = nn.Embedding(V, E), nn.Linear(E, V)
        self.att = nn.MultiheadAttention(E, 2, batch_first=True)

    def forward(self, x):
        h = self.emb(x)
        return self.out(self.att(h, h, h, need_weights=False)[0])


class Encoder(nn.Module):
    def __init__(self, layers=1):
        super().__init__()
        self.emb, self.out = nn.Embedding(V, E), nn.Linear(E, V)
        self.layers = nn.ModuleList(nn.TransformerEncoderLayer(E, 2, 32, dropout=0.1,
                                                               batch_first=True)
                                    for _ in range(layers))

    def forward(self, x):
        h = self.emb(x)
        for layer in self.layers:
            h = layer(h)
        return self.out(h)


# ---- attention ------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [SDPA, MHA, Encoder])
def test_attention_models_sample_vectorised(cls):
    # These crashed on the first step (MHA / encoder: the inference-only fast path has no
    # derivative) or lost every draw in the Hessian's eigenvalue iteration (SDPA's fused CPU
    # kernel).
    torch.manual_seed(0)
    model = cls()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no vmap fallback, no diagnostic failure
        ds = posterior.sample(model, tokens(), **FAST).dataset
    assert ds.attrs["vectorized"] == "True" and ds.attrs["vmap_looped_ops"] == ""
    assert np.isfinite(ds["sampling_loss"].values).all()
    assert np.isfinite(ds["metrics_mala_accept"].values).all()
    # the Hessian's Lanczos iteration needs a double backward through attention: two rounds
    flat = FlatModel(model.eval(), next_token_loss)
    lam = flat.top_eigenvalue(flat.w0, (tokens()[:8],), 10.0,
                              torch.Generator().manual_seed(0), iters=2, rows=3)
    assert math.isfinite(lam) and lam > 0


def test_vectorised_attention_equals_chains_run_one_by_one():
    torch.manual_seed(0)
    model, X = Encoder(), tokens()
    flat = FlatModel(model.eval(), next_token_loss)
    W = flat.w0 + 0.01 * torch.randn(3, flat.n_params, generator=torch.Generator()
                                     .manual_seed(1))
    batch = (X[:8].expand(3, 8, T),)
    per, grad = flat.loss_and_grad(W, batch)
    for c in range(3):
        w = W[c].clone().requires_grad_(True)
        loss = flat.per_sample(w, (X[:8],))
        (g,) = torch.autograd.grad(loss.mean(), w)
        torch.testing.assert_close(per[c], loss.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad[c], g, rtol=1e-4, atol=1e-6)


def test_chains_in_chunks_give_the_same_gradients_and_the_budget_sets_the_chunk():
    # Chains are independent, so chunking changes only the order of float operations (and
    # a chunk of one runs PyTorch's fused attention): agreement to float32 rounding.
    torch.manual_seed(0)
    model, X = Encoder(), tokens()
    model.eval()
    W = FlatModel(model, next_token_loss).w0 + 0.01 * torch.randn(
        5, sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(1))
    batch = (X[:8].expand(5, 8, T),)
    ref = FlatModel(model, next_token_loss, chains_per_call=5).loss_and_grad(W, batch)
    for k in (1, 2):
        per, grad = FlatModel(model, next_token_loss, chains_per_call=k).loss_and_grad(W, batch)
        torch.testing.assert_close(per, ref[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, ref[1], rtol=1e-4, atol=1e-6)
    tiny = FlatModel(model, next_token_loss, activation_budget=1.0)  # under one chain's bytes
    torch.testing.assert_close(tiny.loss_and_grad(W, batch)[1], ref[1], rtol=1e-4, atol=1e-6)
    assert tiny.bytes_per_row > 0 and tiny.chunk_size(8, 5) == 1
    two = FlatModel(model, next_token_loss, activation_budget=2.5 * 8 * tiny.bytes_per_row)
    two.loss_and_grad(W, batch)
    assert two.chunk_size(8, 5) == 2 and two.chunk_size(16, 5) == 1
    ds = posterior.sample(model, X, chains_per_call=1, **FAST).dataset
    assert ds.attrs["chains_per_call"] == "1" and float(ds.attrs["activation_mb_per_chain"]) > 0
    with pytest.raises(ValueError, match="chains_per_call"):
        FlatModel(model, next_token_loss, chains_per_call=0)


class FusedKernel(SDPA):
    """Calls the fused CPU kernel itself: vmap loops over chains inside it (no batching
    rule), and it has no double backward, so the Hessian's Lanczos iteration fails."""

    def attend(self, q, k, v):
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True)[0]


def test_looped_operators_are_reported_and_a_failing_diagnostic_keeps_the_draws(tmp_path):
    torch.manual_seed(0)
    for store in (None, tmp_path / "run.zarr"):
        with pytest.warns(RuntimeWarning, match="Lanczos iteration failed"):
            ds = posterior.sample(FusedKernel(), tokens(), store=store,
                                  **{**KW, "mala_checks": 1}).dataset
        # with a store too: laid out before the first call, it takes these at the end
        assert ds.attrs["vectorized"] == "partial"
        assert "flash_attention" in ds.attrs["vmap_looped_ops"]
        assert math.isnan(ds.attrs["lambda_max"])
        assert "Lanczos iteration" in ds.attrs["diagnostic_errors"]
        assert np.isfinite(ds["sampling_loss"].values).all()  # the draws are all there


# ---- token data -----------------------------------------------------------------------------

def test_token_datasets_give_the_tensor_run_and_devinterp_loss():
    datasets = pytest.importorskip("datasets")
    torch.manual_seed(0)
    model, X = MHA(), tokens()
    ref = posterior.sample(model, X, **FAST).dataset
    hf = posterior.sample(model, datasets.Dataset.from_dict({"input_ids": X.tolist()}),
                          **FAST).dataset
    dicts = posterior.sample(model, [{"input_ids": r} for r in X], **FAST).dataset
    for ds in (hf, dicts):
        np.testing.assert_array_equal(ds["sampling_loss"].values, ref["sampling_loss"].values)
    assert ref["sampling_loss"].shape == (2, 3, 8, T - 1)  # per token, as devinterp
    with torch.no_grad():
        logits = model.eval()(X)
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, V), X[:, 1:].reshape(-1))
    np.testing.assert_allclose(ref["init_loss"].values.mean(), float(ce), rtol=1e-5)
    with pytest.raises(ValueError, match="loss_fn: required"):
        posterior.sample(model, torch.randn(16, 3), **FAST)
    with pytest.raises(ValueError, match="no 'input_ids'"):
        posterior.sample(model, [{"ids": r} for r in X], **FAST)


def test_huggingface_causal_lm_samples_vectorised():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=V,
                                     n_positions=T, bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config)
    est = slt.estimate_llc(model, tokens(), num_chains=2, num_draws=4, batch_size=8, lr=1e-4,
                           n_beta=10.0, mala_checks=0, progress=False)
    ds = est.tree.dataset
    assert ds.attrs["vectorized"] == "True" and ds.attrs["vmap_looped_ops"] == ""
    assert math.isfinite(est.mean)
    masks = posterior.create_param_masks(model, "l0h1")
    # GPT-2's fused c_attn (Conv1D, (in, 3E)): head 1 owns columns [8, 16) of Q, K and V
    cols = masks["transformer.h.0.attn.c_attn.weight"][0].nonzero().flatten().tolist()
    assert cols == [*range(8, 16), *range(24, 32), *range(40, 48)]
    rows = masks["transformer.h.0.attn.c_proj.weight"][:, 0].nonzero().flatten().tolist()
    assert rows == list(range(8, 16))
    # tied embedding: devinterp's 'lm_head.weight' is the shared wte weight
    assert list(posterior.create_param_masks(model, "unembed")) == ["transformer.wte.weight"]
    tree = posterior.sample(model, tokens(), param_masks={"lm_head.weight": None}, **FAST)
    assert tree.dataset.attrs["vectorized"] == "True"


# ---- weight restrictions --------------------------------------------------------------------

def test_restrictions_of_a_torch_transformer_and_only_restricted_weights_stacked():
    torch.manual_seed(0)
    model = Encoder(layers=2)
    attn = posterior.create_param_masks(model, "l1 attn")
    assert sorted(attn) == ["layers.1.self_attn.in_proj_bias", "layers.1.self_attn.in_proj_weight",
                            "layers.1.self_attn.out_proj.bias",
                            "layers.1.self_attn.out_proj.weight"]
    assert sorted(posterior.create_param_masks(model, "l0 mlp")) == [
        "layers.0.linear1.bias", "layers.0.linear1.weight", "layers.0.linear2.bias",
        "layers.0.linear2.weight"]
    assert list(posterior.create_param_masks(model, "embed")) == ["emb.weight"]
    assert sorted(posterior.create_param_masks(model, "unembed")) == ["out.bias", "out.weight"]
    head = posterior.create_param_masks(model, "l0h1")
    rows = head["layers.0.self_attn.in_proj_weight"][:, 0].nonzero().flatten().tolist()
    assert rows == [*range(8, 16), *range(24, 32), *range(40, 48)]  # Q, K, V rows of head 1
    both = posterior.create_param_masks(model, ["l0h1", "l0 attn"])
    assert both["layers.0.self_attn.in_proj_weight"] is None  # the union: all of it
    for bad, match in (("l5", "layer 5 out of range"), ("l0h7", "head 7 out of range"),
                       ("l0 foo", "expected 'full'")):
        with pytest.raises(ValueError, match=match):
            posterior.create_param_masks(model, bad)

    flat = FlatModel(model, next_token_loss, head)
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    assert flat.n_params == sizes["layers.0.self_attn.in_proj_weight"] + \
        sizes["layers.0.self_attn.in_proj_bias"] + sizes["layers.0.self_attn.out_proj.weight"]
    assert flat.mask is not None and int(flat.mask.sum()) == 3 * 8 * E + 3 * 8 + E * 8
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ds = posterior.sample(model, tokens(), param_masks=head, **FAST).dataset
    assert ds.attrs["vectorized"] == "True"
    config = json.loads(ds.attrs["config"])
    assert config["n_params"] == flat.n_params < config["n_model_params"]
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_gradient_accumulation_is_the_same_step():
    torch.manual_seed(0)
    model, X = SDPA(), tokens()
    one = posterior.sample(model, X, **{**FAST, "batch_size": 16}).dataset
    acc = posterior.sample(model, X, gradient_accumulation_steps=2, **FAST).dataset
    np.testing.assert_allclose(acc["sampling_loss"].values, one["sampling_loss"].values,
                               rtol=1e-4, atol=1e-5)
    same = posterior.sample(model, X, same_batches=True, **FAST).dataset
    assert json.loads(same.attrs["config"])["same_batches"]


# ---- singular fluctuation -------------------------------------------------------------------

class Mean(nn.Module):
    def __init__(self, mu):
        super().__init__()
        self.mu = nn.Parameter(mu.clone())

    def forward(self, x):
        return self.mu.expand_as(x)


def test_singular_fluctuation_of_a_gaussian_mean_model_is_d():
    r"""x_i ~ N(mu, I_d), loss l_i = |x_i - mu|^2 / 2 (the NLL up to a constant), w0 = xbar.

    At n_beta = n (temperature 1, no localization) the posterior is mu ~ N(xbar, s^2 I). With
    mu = xbar + s z, l_i = |x_i - xbar|^2/2 - s (x_i - xbar).z + s^2 |z|^2 / 2, whose terms
    are uncorrelated (odd moments of z vanish), so

        V_n = sum_i Var[l_i] = s^2 S + n d s^4 / 2,     S = sum_i |x_i - xbar|^2.

    The rows are scaled so that S = d (n - 1) exactly; at s^2 = 1/n this is
    d (n - 1)/n + d/(2n) -> d = 32 (nu = V/2 -> d/2). SGLD with step lr is the autoregression
    mu' = mu - (h/2)(mu - xbar) + sqrt(lr) xi (h = lr n), stationary at s^2 = 1/(n (1 - h/4)):
    2.6% above 1/n at h = 0.1, so V_n = 1.021 d here. The estimate must be within 5% of d and
    within 4 of its standard errors of the exact value. Its relative sd is about
    sqrt(2 / (d * ESS)) = 1.0%: 32 chains x 40 draws, lag-20 autocorrelation 0.95^20 = 0.36,
    so ESS ~ 0.47 per draw = 600.
    """
    n, d, h = 100, 32, 0.1
    X = torch.randn(n, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    X = X - X.mean(0)
    X = X * math.sqrt(d * (n - 1) / float(X.pow(2).sum()))
    model = Mean(X.mean(0)).double()
    tree = posterior.sample(
        model, X, lambda out, b: 0.5 * (b[0] - out).pow(2).sum(-1), lr=h / n, n_beta=float(n),
        num_chains=32, num_draws=40, num_steps_bw_draws=20, num_burnin_steps=60,
        batch_size=n, observables={"train": X}, mala_checks=0, progress=False)
    f = slt.singular_fluctuation(tree)
    s2 = 1.0 / (n * (1 - h / 4))
    exact = s2 * d * (n - 1) + n * d * s2**2 / 2
    assert abs(exact / d - 1.0206) < 1e-3
    assert abs(f.functional_variance - exact) < 4 * f.se
    assert abs(f.functional_variance - d) < 0.05 * d
    assert 4 * f.se < 0.05 * d  # precise enough for the 5% bar to mean something
    assert abs(f.singular_fluctuation - f.functional_variance / 2) < 1e-12  # beta = 1
    assert f.observed_rows == n and f.waic_penalty == pytest.approx(f.functional_variance / n)


# ---- the LLC along training -----------------------------------------------------------------

def test_llc_trajectory_resumes_without_recomputing_and_plots(tmp_path):
    torch.manual_seed(0)
    model, X = MHA(), tokens()
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for step in range(31):
        loss = next_token_loss(model(X), (X,)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0:
            torch.save(model.state_dict(), folder / f"step_{step}.pt")
    kw = dict(num_chains=2, num_draws=6, batch_size=16, lr=1e-4, n_beta=20.0, mala_checks=0)
    calls = {"n": 0, "stop": -1}

    def flaky(out, batch):  # counts its calls; raises at call number "stop"
        calls["n"] += 1
        if calls["n"] == calls["stop"]:
            raise KeyboardInterrupt
        return next_token_loss(out, batch)

    ref = slt.llc_trajectory(folder, X, flaky, model=model, **kw)
    assert ref["step"].tolist() == [0, 10, 20, 30] and not ref["reused"].any()
    assert (ref["init_loss"].diff().dropna() < 0).all()  # the training loss falls
    per_checkpoint = calls["n"] // 4
    calls.update(n=0, stop=2 * per_checkpoint + 4)  # inside the third checkpoint's run
    store = tmp_path / "traj"
    with pytest.raises(KeyboardInterrupt):
        slt.llc_trajectory(folder, X, flaky, model=model, store=store, **kw)
    done = sorted(p.name for p in store.glob("*.json"))
    assert done == ["checkpoint_0.json", "checkpoint_1.json"]
    calls["stop"] = -1  # never again
    resumed = slt.llc_trajectory(folder, X, flaky, model=model, store=store, **kw)
    assert resumed["reused"].tolist() == [True, True, False, False]
    np.testing.assert_allclose(resumed["llc"], ref["llc"], rtol=1e-6)

    from torchlangevin import viz

    path = viz.plot_llc_trajectory(resumed, tmp_path / "llc.png")
    assert path.stat().st_size > 10_000
