"""devinterp 2.0's quick-start code on torchlangevin with only the import line changed."""

import math

import numpy as np
import pytest
import torch

datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")

VOCAB, LENGTH = 16, 7


def gpt2(seed=0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=VOCAB,
                                     n_positions=LENGTH, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)


def token_data(n=48, seed=0):
    ids = torch.randint(0, VOCAB, (n, LENGTH), generator=torch.Generator().manual_seed(seed))
    return datasets.Dataset.from_dict({"input_ids": ids.tolist()})


def quickstart(model, train_data, code_data):
    """devinterp's README quick start (sizes cut down), after its one import line:
    ``from devinterp.slt.sampling import sample`` etc. become the line below."""
    from torchlangevin.compat.devinterp import compute_llc, create_param_masks, llc, sample

    tree = sample(
        model=model,
        dataset=train_data,
        observables={"train": train_data, "code": (code_data, 2)},
        lr=0.001,
        n_beta=30,
        num_chains=2,
        num_draws=4,
        batch_size=8,
        param_masks=create_param_masks(model, "l0 attn"),
    )
    result = compute_llc(tree)
    full = llc(model=model, dataset=train_data, observables={"train": train_data}, lr=0.001,
               n_beta=30, num_chains=2, num_draws=4, batch_size=8)
    return tree, result, full


def check_result(tree, result, full):
    ds = tree.dataset
    assert ds["loss_code"].shape == (2, 4, 16, LENGTH - 1)  # 2 batches of 8 rows per draw
    for r in (result, full):
        assert math.isfinite(float(r["llc_mean"])) and math.isfinite(float(r["llc_std"]))
        assert r["llc_per_chain"].shape == (2,) and r["loss_trace"].shape == (2, 4)
        np.testing.assert_allclose(float(r["llc_mean"]), r["llc_per_chain"].values.mean())
    config = ds.attrs["config"]
    assert '"n_beta": 30.0' in config


def test_devinterp_quickstart_on_a_huggingface_gpt2():
    model = gpt2()
    tree, result, full = quickstart(model, token_data(), token_data(32, seed=1))
    check_result(tree, result, full)
    assert tree.dataset.attrs["vectorized"] == "True"
    assert tree.dataset.attrs["config"].count('"n_params"') == 1
    n_attn = sum(p.numel() for n, p in model.named_parameters()
                 if n.startswith("transformer.h.0.attn."))
    assert f'"n_params": {n_attn},' in tree.dataset.attrs["config"]  # only l0 attn stacked


def test_devinterp_quickstart_on_a_transformer_lens_model():
    tl = pytest.importorskip("transformer_lens")
    if not hasattr(tl, "HookedTransformerConfig"):
        pytest.skip("TransformerLens 4 removed HookedTransformer")
    cfg = tl.HookedTransformerConfig(n_layers=2, d_model=16, n_ctx=LENGTH, d_head=8,
                                     n_heads=2, d_vocab=VOCAB, act_fn="gelu", device="cpu",
                                     seed=0)
    with pytest.warns(DeprecationWarning):
        model = tl.HookedTransformer(cfg)
    tree, result, full = quickstart(model, token_data(), token_data(32, seed=1))
    check_result(tree, result, full)
    assert tree.dataset.attrs["vectorized"] == "True"


def test_devinterp_arguments_are_accepted_and_mapped():
    from torchlangevin.compat import devinterp as di

    model, data = gpt2(), token_data()

    def per_token(m, ids):  # devinterp's loss_fn: (model, input_ids) -> (batch, seq - 1)
        logits = m(ids).logits[:, :-1]
        return torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:],
                                                 reduction="none")

    common = dict(lr=1e-3, n_beta=30.0, num_chains=2, num_draws=3, batch_size=8)
    default = di.sample(model, data, {}, **common, init_seed=3)
    custom = di.sample(model, data, {}, **common, init_seed=3, loss_fn=per_token, device="cpu",
                       llc_weight_decay=0.0, gradient_accumulation_steps=1,
                       sampling_method="sgmcmc_sgld", sampling_method_kwargs={},
                       save_metrics=True, num_init_loss_batches=4, obs_seed=1)
    np.testing.assert_allclose(custom.dataset["sampling_loss"].values,
                               default.dataset["sampling_loss"].values, rtol=1e-5, atol=1e-6)
    rms = di.sample(model, data, {"train": (data, 1)}, **common, sampling_method="rmsprop_sgld",
                    rmsprop_alpha=0.9, llc_weight_decay=0.1, gradient_accumulation_steps=2)
    config = rms.dataset.attrs["config"]
    for text in ('"method": "rmsprop_sgld"', '"alpha": 0.9', '"weight_decay": 0.1',
                 '"gradient_accumulation_steps": 2', '"batch_size": 16'):
        assert text in config
    influences = di.compute_bif(rms, correlation_method="sequence")["influences"]
    assert influences.shape == (8, 8)
    with pytest.raises(ValueError, match="sampling_method='sgld_x'"):
        di.sample(model, data, {}, **common, sampling_method="sgld_x")
    with pytest.raises(ValueError, match="rmsprop_eps: only with"):
        di.sample(model, data, {}, **common, rmsprop_eps=0.1)
    with pytest.raises(ValueError, match="shuffle=False"):
        di.sample(model, data, {}, **common, shuffle=False)


def test_susceptibilities_through_the_compat_layer(tmp_path):
    from torchlangevin.compat import devinterp as di

    model, train, code = gpt2(), token_data(), token_data(16, seed=2)
    common = dict(lr=1e-3, n_beta=30.0, num_chains=2, num_draws=4, batch_size=8,
                  observables={"train": (train, 1), "code": (code, 1)})
    out = di.susceptibilities(model, train, weight_restrictions={
        "full": None, "l0h1": di.create_param_masks(model, "l0h1")}, sampling_task="train",
        output_path=None, **common)
    chi = out["susceptibilities/l0h1"].dataset["chi_code"]
    assert chi.shape == (8, LENGTH - 1) and np.isfinite(chi.values).all()
    stored = di.sample(model, train, common["observables"], lr=1e-3, n_beta=30.0,
                       num_chains=2, num_draws=4, batch_size=8,
                       output_path=tmp_path / "run.zarr")
    again = di.sample(model, train, common["observables"], lr=1e-3, n_beta=30.0,
                      num_chains=2, num_draws=4, batch_size=8,
                      output_path=tmp_path / "run.zarr")
    np.testing.assert_array_equal(stored.dataset["sampling_loss"].values,
                                  again.dataset["sampling_loss"].values)
